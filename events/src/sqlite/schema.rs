//! The events table, its indexes and the triggers that make it append-only.
//!
//! Positions are the table's rowid, assigned by the writer as head + 1
//! inside the transaction that holds SQLite's write lock, so they are gapless
//! even with several processes (the server and the CLI) on one file.

use rusqlite::{Connection, OptionalExtension};

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
"#;

/// The triggers that keep the events table append-only, each as its name
/// and what follows the name in its `CREATE TRIGGER` statement. `INSERT OR
/// REPLACE` would otherwise overwrite a row without firing a DELETE
/// trigger, hence the insert guard.
pub const GUARD_TRIGGERS: [(&str, &str); 3] = [
    (
        "events_refuse_update",
        "BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused');
END",
    ),
    (
        "events_refuse_delete",
        "BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE is refused');
END",
    ),
    (
        "events_append_only",
        "BEFORE INSERT ON events
WHEN NEW.position <> (SELECT COALESCE(MAX(position), 0) FROM events) + 1
  OR NEW.version <> (SELECT COALESCE(MAX(version), 0) FROM events
                     WHERE tenant = NEW.tenant AND stream = NEW.stream) + 1
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: an insert must take the next position and the next stream version');
END",
    ),
];

/// The statements that create the guards.
fn create_guards() -> String {
    GUARD_TRIGGERS
        .iter()
        .map(|(name, body)| format!("CREATE TRIGGER IF NOT EXISTS {name} {body};\n"))
        .collect()
}

/// What a guard's definition says, for comparing: SQLite keeps a trigger's
/// statement as written (but for `IF NOT EXISTS`), so runs of white space
/// are made one space and nothing else is forgiven.
fn normalised(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Creates the events table on a new file, or checks an existing one is a
/// layout this build understands.
pub fn migrate(connection: &Connection) -> Result<(), LogError> {
    let had_events = table_exists(connection, "events")?;
    let guards = if had_events { guard_check(connection)? } else { GuardCheck::default() };
    for trigger in &guards.missing {
        // Recreating it restores the protection, but the file was open to
        // edits meanwhile: say so where an operator will see it.
        tracing::warn!(
            trigger,
            "a guard trigger of the events table was missing and is recreated; run `rollcall verify`"
        );
    }
    let mut replace = String::new();
    for trigger in &guards.altered {
        tracing::warn!(
            trigger,
            "a guard trigger of the events table did not say what rollcall wrote and is replaced; run `rollcall verify`"
        );
        replace.push_str(&format!("DROP TRIGGER IF EXISTS {trigger};"));
    }
    connection
        .execute_batch(&format!("BEGIN IMMEDIATE;{replace}{CREATE}{}", create_guards()))
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

/// The guard triggers a file lacks, and those it has under their names
/// that do something else (a trigger of the same name that refuses
/// nothing passes a check by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardCheck {
    pub missing: Vec<&'static str>,
    pub altered: Vec<&'static str>,
}

/// Reads each guard's definition from the file and compares it with the
/// one this build writes.
pub fn guard_check(connection: &Connection) -> Result<GuardCheck, LogError> {
    let mut check = GuardCheck::default();
    for (trigger, body) in GUARD_TRIGGERS {
        let stored: Option<String> = connection
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1 AND tbl_name = 'events'",
                [trigger],
                |row| row.get(0),
            )
            .optional()
            .map_err(|error| LogError::storage("reading the schema", error))?;
        match stored {
            None => check.missing.push(trigger),
            Some(sql)
                if normalised(&sql) != normalised(&format!("CREATE TRIGGER {trigger} {body}")) =>
            {
                check.altered.push(trigger);
            }
            Some(_) => {}
        }
    }
    Ok(check)
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
