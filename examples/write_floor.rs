//! The floor under a batch command's writes: how long this machine's
//! SQLite (the bundled one rollcall links, with the writer's pragmas)
//! takes only to store the rows a command produced, with nothing decided,
//! encoded or folded. `scripts/bench-batch.sh` runs it beside the commands
//! themselves, so both sides come from one run (BENCHMARKS.md, "Issue 20:
//! the floor under the batch writes").
//!
//!     cargo run --release --example write_floor -- sync BEFORE.db AFTER.db
//!     cargo run --release --example write_floor -- rebuild AFTER.db
//!     cargo run --release --example write_floor -- parse DB
//!     cargo run --release --example write_floor -- decode DB
//!
//! `sync`: a copy of BEFORE (a database before a Synchronize) receives
//! what AFTER (the same database after it) gained: the events after
//! BEFORE's head and every row of each projection table BEFORE holds
//! none of. `rebuild`: a new file with empty projection tables receives
//! every row of every projection table of AFTER. Both copy with
//! `INSERT ... SELECT` in key order in one durable transaction, then
//! checkpoint: the times printed are the inserts, the commit (the WAL's
//! fsync) and the checkpoint (the pages copied into the file and synced).
//! `parse`: every user's stored document read and parsed as JSON, the
//! part of deciding a user that no layout of the decision avoids.
//! `decode`: every event read forward (as a fold reads it, re-hashed
//! where the log does so) and decoded, nothing applied: the part of a
//! rebuild or a cold as-of that no layout of the projections avoids.

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("floor.db");
    let (source, events_after) = match args.as_slice() {
        [mode, before, after] if mode == "sync" => {
            std::fs::copy(before, &target)?;
            let head: i64 = Connection::open(before)?.query_row(
                "SELECT COALESCE(MAX(position), 0) FROM events",
                [],
                |row| row.get(0),
            )?;
            (after.clone(), Some(head))
        }
        [mode, db] if mode == "parse" => return parse(Path::new(db)),
        [mode, db] if mode == "decode" => return decode(Path::new(db)),
        [mode, after] if mode == "rebuild" => {
            let connection = Connection::open(&target)?;
            projections::functions::register(&connection)?;
            projections::schema::migrate(&connection)?;
            (after.clone(), None)
        }
        _ => {
            return Err(
                "usage: write_floor sync BEFORE.db AFTER.db | rebuild AFTER.db | parse DB | decode DB"
                    .into()
            );
        }
    };
    let written = copy(&target, Path::new(&source), events_after)?;
    println!(
        "{} rows, {} MiB: inserts {:.2} s, commit {:.2} s, checkpoint {:.2} s, total {:.2} s",
        written.rows,
        std::fs::metadata(&target)?.len() / (1024 * 1024),
        written.inserts,
        written.commit,
        written.checkpoint,
        written.inserts + written.commit + written.checkpoint
    );
    Ok(())
}

/// The floor under deciding every user (a preview of a first run): read
/// each user's stored document and parse it, nothing else.
fn parse(db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let connection = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement = connection.prepare(
        "SELECT document FROM scim_resources WHERE kind = 'User' ORDER BY tenant_id, id",
    )?;
    let mut rows = statement.query([])?;
    let (mut users, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        let text = row.get_ref(0)?.as_str()?;
        let document: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
        bytes += text.len();
        users += u64::from(!document.is_empty());
    }
    println!(
        "{users} user documents, {} MiB of JSON read and parsed in {:.2} s",
        bytes / (1024 * 1024),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The floor under every fold: the log read forward and each event
/// decoded, on one thread, as `replay::fold`'s reader does.
fn decode(db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use events::EventLog;
    let started = Instant::now();
    let store = rollcall::store::Store::open_read_only(db, events::sqlite::LogOptions::default())?;
    let (mut count, mut bytes) = (0u64, 0usize);
    let log = store.log().sqlite().ok_or("the write floor reads a SQLite file")?;
    for recorded in log.read_forward(0, None) {
        let recorded = recorded?;
        bytes += recorded.payload.len();
        recorded.decode(store.keys())?;
        count += 1;
    }
    println!(
        "{count} events, {} MiB of payloads read and decoded in {:.2} s",
        bytes / (1024 * 1024),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Written {
    rows: u64,
    inserts: f64,
    commit: f64,
    checkpoint: f64,
}

fn copy(
    target: &Path,
    source: &Path,
    events_after: Option<i64>,
) -> Result<Written, Box<dyn std::error::Error>> {
    let connection = Connection::open(target)?;
    projections::functions::register(&connection)?;
    // The writer's durability: WAL, synchronous=FULL, SQLite's checkpoint
    // threshold, the savepoint journal in memory.
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    connection.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;",
    )?;
    connection.execute("ATTACH DATABASE ?1 AS source", [source.to_string_lossy()])?;
    let mut tables: Vec<String> = rollcall::store::replay::all_tables()
        .into_iter()
        .filter(|table| *table != "token_usage")
        .map(str::to_owned)
        .collect();
    if events_after.is_some() {
        tables.insert(0, "events".to_owned());
    }
    let started = Instant::now();
    connection.execute_batch("BEGIN")?;
    let mut rows = 0u64;
    for table in &tables {
        let table_started = Instant::now();
        let columns = columns(&connection, table)?.join(", ");
        let filter = match events_after {
            Some(head) if table == "events" => format!("WHERE position > {head}"),
            // Only what the command added: a table the database already
            // had rows in (the SCIM directory, say) is not the command's.
            Some(_) => {
                let held: i64 = connection.query_row(
                    &format!("SELECT COUNT(*) FROM main.{table}"),
                    [],
                    |row| row.get(0),
                )?;
                if held > 0 {
                    continue;
                }
                String::new()
            }
            None => String::new(),
        };
        let copied = connection.execute(
            &format!(
                "INSERT INTO main.{table} ({columns}) SELECT {columns} FROM source.{table} {filter} ORDER BY {}",
                primary_key(&connection, table)?
            ),
            [],
        )?;
        rows += u64::try_from(copied)?;
        eprintln!("{table}: {copied} rows in {:.2} s", table_started.elapsed().as_secs_f64());
    }
    let inserts = started.elapsed().as_secs_f64();
    let started = Instant::now();
    connection.execute_batch("COMMIT")?;
    let commit = started.elapsed().as_secs_f64();
    let started = Instant::now();
    connection.query_row("PRAGMA main.wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let checkpoint = started.elapsed().as_secs_f64();
    Ok(Written { rows, inserts, commit, checkpoint })
}

fn columns(connection: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare(&format!("PRAGMA main.table_info({table})"))?;
    statement.query_map([], |row| row.get::<_, String>(1))?.collect()
}

/// The table's key columns, in key order (the rowid where it has none).
fn primary_key(connection: &Connection, table: &str) -> rusqlite::Result<String> {
    let mut statement = connection.prepare(&format!("PRAGMA main.table_info({table})"))?;
    let mut key: Vec<(i64, String)> = statement
        .query_map([], |row| Ok((row.get::<_, i64>(5)?, row.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|(rank, _)| *rank > 0)
        .collect();
    key.sort();
    Ok(if key.is_empty() {
        "rowid".to_owned()
    } else {
        key.into_iter().map(|(_, name)| name).collect::<Vec<_>>().join(", ")
    })
}
