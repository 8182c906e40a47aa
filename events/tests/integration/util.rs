//! Helpers shared by the log tests: a fresh database file per test.

use std::path::PathBuf;

use events::sqlite::{LogOptions, SqliteLog};
use events::{Actor, CommandContext, NewEvent};

/// A temp dir holding one database file, removed when dropped.
pub struct TestDb {
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("rollcall.db")
    }

    pub fn open(&self) -> SqliteLog {
        SqliteLog::open(&self.path(), LogOptions::default()).unwrap()
    }

    pub fn open_with(&self, options: LogOptions) -> SqliteLog {
        SqliteLog::open(&self.path(), options).unwrap()
    }

    /// A second, ordinary connection to the same file, as another process
    /// (or an attacker with file access) would have.
    pub fn raw_connection(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).unwrap()
    }
}

pub fn context() -> CommandContext {
    CommandContext {
        request_id: Some("req-1".to_owned()),
        user_agent: Some("tests".to_owned()),
        ..CommandContext::new(Actor::System)
    }
}

pub fn event(kind: &str, n: u64) -> NewEvent {
    NewEvent { event_type: kind.to_owned(), schema_version: 1, payload: format!(r#"{{"n":{n}}}"#) }
}
