//! The events table, its indexes and the triggers that make it append-only.
//!
//! Positions are the table's rowid, assigned by the writer as head + 1
//! inside the transaction that holds SQLite's write lock, so they are gapless
//! even with several processes (the server and the CLI) on one file.

use rusqlite::Connection;

use crate::LogError;

/// The layout version of the events table this build writes.
pub const EVENTS_SCHEMA_VERSION: i64 = 1;

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS rollcall_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    UNIQUE (tenant, stream, version)
) STRICT;

CREATE INDEX IF NOT EXISTS events_by_tenant ON events (tenant, position);

CREATE TRIGGER IF NOT EXISTS events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused');
END;

CREATE TRIGGER IF NOT EXISTS events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE is refused');
END;

CREATE TRIGGER IF NOT EXISTS events_append_only BEFORE INSERT ON events
WHEN NEW.position <> (SELECT COALESCE(MAX(position), 0) FROM events) + 1
  OR NEW.version <> (SELECT COALESCE(MAX(version), 0) FROM events
                     WHERE tenant = NEW.tenant AND stream = NEW.stream) + 1
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: an insert must take the next position and the next stream version');
END;
"#;

/// The triggers that keep the events table append-only. `INSERT OR
/// REPLACE` would otherwise overwrite a row without firing a DELETE
/// trigger, hence the insert guard.
pub const GUARD_TRIGGERS: [&str; 3] =
    ["events_refuse_update", "events_refuse_delete", "events_append_only"];

/// Creates the events table on a new file, or checks an existing one is a
/// layout this build understands.
pub fn migrate(connection: &Connection) -> Result<(), LogError> {
    let had_events = table_exists(connection, "events")?;
    let missing = if had_events { missing_guards(connection)? } else { Vec::new() };
    for trigger in &missing {
        // Recreating it restores the protection, but the file was open to
        // edits meanwhile: say so where an operator will see it.
        tracing::warn!(
            trigger,
            "a guard trigger of the events table was missing and is recreated; run `rollcall verify`"
        );
    }
    connection
        .execute_batch(&format!("BEGIN IMMEDIATE;{CREATE}"))
        .map_err(|error| LogError::storage("creating the events table", error))?;
    let result = check_version(connection);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    connection
        .execute_batch(end)
        .map_err(|error| LogError::storage("creating the events table", error))?;
    result
}

fn table_exists(connection: &Connection, table: &str) -> Result<bool, LogError> {
    connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get::<_, i64>(0),
        )
        .map(|count| count > 0)
        .map_err(|error| LogError::storage("reading the schema", error))
}

/// The guard triggers that are not in the file.
pub fn missing_guards(connection: &Connection) -> Result<Vec<&'static str>, LogError> {
    let mut missing = Vec::new();
    for trigger in GUARD_TRIGGERS {
        let present: i64 = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?1 AND tbl_name = 'events'",
                [trigger],
                |row| row.get(0),
            )
            .map_err(|error| LogError::storage("reading the schema", error))?;
        if present == 0 {
            missing.push(trigger);
        }
    }
    Ok(missing)
}

/// Checks, without writing, that a file holds a log this build can read.
pub fn check_readable(connection: &Connection) -> Result<(), LogError> {
    if !table_exists(connection, "rollcall_schema")? || !table_exists(connection, "events")? {
        return Err(LogError::NotALog { reason: "it has no events table".to_owned() });
    }
    match stored_version(connection)? {
        Some(found) if found == EVENTS_SCHEMA_VERSION => Ok(()),
        Some(found) => Err(LogError::UnsupportedSchema { found, known: EVENTS_SCHEMA_VERSION }),
        None => Err(LogError::NotALog { reason: "it records no events schema version".to_owned() }),
    }
}

fn stored_version(connection: &Connection) -> Result<Option<i64>, LogError> {
    connection
        .query_row("SELECT version FROM rollcall_schema WHERE component = 'events'", [], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(|error| LogError::storage("reading the schema version", error))
}

fn check_version(connection: &Connection) -> Result<(), LogError> {
    match stored_version(connection)? {
        None => connection
            .execute(
                "INSERT INTO rollcall_schema (component, version) VALUES ('events', ?1)",
                [EVENTS_SCHEMA_VERSION],
            )
            .map(drop)
            .map_err(|error| LogError::storage("recording the schema version", error)),
        Some(found) if found == EVENTS_SCHEMA_VERSION => Ok(()),
        Some(found) => Err(LogError::UnsupportedSchema { found, known: EVENTS_SCHEMA_VERSION }),
    }
}
