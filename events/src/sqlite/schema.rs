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
"#;

/// Creates the events table on a new file, or checks an existing one is a
/// layout this build understands.
pub fn migrate(connection: &Connection) -> Result<(), LogError> {
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

fn check_version(connection: &Connection) -> Result<(), LogError> {
    let stored: Option<i64> = connection
        .query_row(
            "SELECT version FROM rollcall_schema WHERE component = 'events'",
            [],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(|error| LogError::storage("reading the schema version", error))?;
    match stored {
        None => connection
            .execute(
                "INSERT INTO rollcall_schema (component, version) VALUES ('events', ?1)",
                [EVENTS_SCHEMA_VERSION],
            )
            .map(drop)
            .map_err(|error| LogError::storage("recording the schema version", error)),
        Some(found) if found == EVENTS_SCHEMA_VERSION => Ok(()),
        Some(found) => Err(LogError::UnsupportedSchema {
            found,
            known: EVENTS_SCHEMA_VERSION,
        }),
    }
}
