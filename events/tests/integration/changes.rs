//! `SqliteLog::generation`: it moves after every commit, by this log's
//! writer or by another connection to the file, and only then.

use events::log::flatten_append;
use events::{EventLog, ExpectedVersion};

use crate::util::{TestDb, context, event};

#[test]
fn the_generation_moves_after_every_commit_from_anywhere_and_only_then() {
    let db = TestDb::new();
    let log = db.open();
    let first = log.generation().unwrap();
    assert_eq!(log.generation().unwrap(), first, "nothing committed, nothing moved");

    for n in 1..=3 {
        let before = log.generation().unwrap();
        let expected =
            if n == 1 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(n - 1) };
        flatten_append(log.append("t1", "user:1", expected, vec![event("A", n)], context()).wait())
            .unwrap();
        let after = log.generation().unwrap();
        assert!(after > before, "commit {n} by this log's writer: {before} -> {after}");
        assert_eq!(log.generation().unwrap(), after, "and it stays put after");
    }

    // Another connection (another process, as far as SQLite can tell).
    let raw = db.raw_connection();
    raw.execute_batch("CREATE TABLE elsewhere (x INTEGER); INSERT INTO elsewhere VALUES (1);")
        .unwrap();
    let before = log.generation().unwrap();
    raw.execute("INSERT INTO elsewhere VALUES (2)", []).unwrap();
    let after = log.generation().unwrap();
    assert!(after > before, "a commit by another connection: {before} -> {after}");
    assert_eq!(log.generation().unwrap(), after);

    // A read changes nothing.
    let _: i64 = raw.query_row("SELECT count(*) FROM elsewhere", [], |row| row.get(0)).unwrap();
    assert_eq!(log.generation().unwrap(), after);
}
