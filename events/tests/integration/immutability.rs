//! The log cannot be edited: triggers refuse it, and an edit made behind
//! their back is named by verify.

use events::log::{VerifyProblem, flatten_append};
use events::sqlite::{LogOptions, SqliteLog};
use events::{EventLog, ExpectedVersion, VerifyScope};

use crate::util::{TestDb, context, event};

fn seed(db: &TestDb) {
    let log = db.open();
    for n in 0..5 {
        let tenant = if n % 2 == 0 { "a" } else { "b" };
        flatten_append(
            log.append(tenant, "s", ExpectedVersion::Any, vec![event("A", n)], context()).wait(),
        )
        .unwrap();
    }
}

#[test]
fn update_and_delete_are_refused_by_triggers() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    let update =
        raw.execute("UPDATE events SET payload = '{\"n\":99}' WHERE position = 2", []).unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = raw.execute("DELETE FROM events WHERE position = 5", []).unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");

    // REPLACE deletes a conflicting row without firing DELETE triggers; the
    // insert guard refuses it, and any insert that is not the next position
    // and the next stream version.
    let columns = "position, tenant, stream, version, event_type, schema_version, payload, \
                   metadata, recorded_at, prev_hash, hash";
    let rest = "event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash \
                FROM events WHERE position = 2";
    for statement in [
        format!(
            "INSERT OR REPLACE INTO events ({columns}) SELECT 2, tenant, stream, version, {rest}"
        ),
        format!(
            "INSERT OR REPLACE INTO events ({columns}) SELECT 6, tenant, stream, version, {rest}"
        ),
        format!("INSERT INTO events ({columns}) SELECT 9, tenant, stream, 99, {rest}"),
    ] {
        let refused = raw.execute(&statement, []).unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{statement}: {refused}");
    }
    let count: i64 = raw.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).unwrap();
    assert_eq!(count, 5);
}

#[test]
fn opening_for_writing_restores_a_dropped_guard_but_verify_reports_it_first() {
    let db = TestDb::new();
    seed(&db);
    db.raw_connection().execute_batch("DROP TRIGGER events_refuse_delete").unwrap();
    let read_only = SqliteLog::open_read_only(&db.path(), LogOptions::default()).unwrap();
    let report = read_only.verify(VerifyScope::All).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.failure, None, "no event was touched");
    assert_eq!(report.missing_guards, vec!["events_refuse_delete".to_owned()]);
    let refused = read_only.execute(|_| Ok::<(), ()>(())).wait();
    assert!(matches!(refused, Err(events::ExecuteError::Log(events::LogError::ReadOnly))));
    drop(read_only);
    let writable = db.open();
    assert!(
        writable.verify(VerifyScope::All).unwrap().is_ok(),
        "the writer's migration restored it"
    );
}

/// A guard is checked by what it does, not by its name: a trigger of the
/// same name that refuses nothing is reported, and the writer replaces it.
#[test]
fn a_guard_that_refuses_nothing_is_caught_by_its_definition() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    raw.execute_batch(
        "DROP TRIGGER events_refuse_update;
         CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events BEGIN SELECT 1; END;",
    )
    .unwrap();
    raw.execute("UPDATE events SET metadata = metadata WHERE position = 1", []).unwrap();
    let read_only = SqliteLog::open_read_only(&db.path(), LogOptions::default()).unwrap();
    let report = read_only.verify(VerifyScope::All).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.missing_guards, Vec::<String>::new());
    assert_eq!(report.altered_guards, vec!["events_refuse_update".to_owned()]);
    drop(read_only);
    let writable = db.open();
    assert!(writable.verify(VerifyScope::All).unwrap().is_ok(), "the writer replaced it");
    let refused = raw.execute("UPDATE events SET metadata = metadata WHERE position = 1", []);
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    // White space alone is not an alteration.
    raw.execute_batch(
        "DROP TRIGGER events_refuse_delete;
         CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events BEGIN
           SELECT RAISE(ABORT,   'events are append-only: DELETE is refused'); END;",
    )
    .unwrap();
    assert!(writable.verify(VerifyScope::All).unwrap().is_ok());
}

#[test]
fn read_only_opens_refuse_what_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let opened = SqliteLog::open_read_only(&missing, LogOptions::default());
    assert!(matches!(opened, Err(events::LogError::NotALog { .. })));
    assert!(!missing.exists(), "nothing was created");
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    let opened = SqliteLog::open_read_only(&other, LogOptions::default());
    assert!(matches!(opened, Err(events::LogError::NotALog { .. })));
}

#[test]
fn verify_names_an_edited_event() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    raw.execute_batch("DROP TRIGGER events_refuse_update").unwrap();
    raw.execute("UPDATE events SET payload = '{\"n\":99}' WHERE position = 3", []).unwrap();

    let log = SqliteLog::open_read_only(&db.path(), LogOptions::default()).unwrap();
    let report = log.verify(VerifyScope::All).unwrap();
    assert_eq!(report.missing_guards, vec!["events_refuse_update".to_owned()]);
    let failure = report.failure.expect("the edit is found");
    assert_eq!((failure.position, failure.problem), (3, VerifyProblem::HashMismatch));
    assert_eq!(report.events_checked, 2, "the walk stops at the first bad event");
    let tenant_report = log.verify(VerifyScope::Tenant("b".to_owned())).unwrap();
    assert_eq!(tenant_report.failure, None, "tenant b's chain is untouched");
    // Reading the edited event is refused too (the pair of the append check).
    let read: Result<Vec<_>, _> = log.read_forward(0, None).collect();
    assert!(matches!(read, Err(events::LogError::HashMismatch { position: 3, .. })), "{read:?}");
}

#[test]
fn verify_names_a_deleted_event() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    raw.execute_batch("DROP TRIGGER events_refuse_delete").unwrap();
    raw.execute("DELETE FROM events WHERE position = 3", []).unwrap();
    let log = SqliteLog::open_read_only(&db.path(), LogOptions::default()).unwrap();
    let failure = log.verify(VerifyScope::All).unwrap().failure.expect("the gap is found");
    assert_eq!((failure.position, failure.problem), (4, VerifyProblem::PositionGap));
    // Within tenant a (positions 1, 3, 5) the chain link to 5 is broken.
    let failure = log
        .verify(VerifyScope::Tenant("a".to_owned()))
        .unwrap()
        .failure
        .expect("the link is broken");
    assert_eq!((failure.position, failure.problem), (5, VerifyProblem::BrokenLink));
}
