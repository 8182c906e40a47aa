//! The application's handle on the database: the event log plus the
//! projection tables beside it, and the one path by which commands record
//! events.
//!
//! [`record`] is the write path in one function: encode the typed events,
//! append them with an expected version, and fold each recorded event into
//! the inline projections, all inside the writer's transaction and the
//! command's savepoint. Commands never write projection tables any other
//! way. Folding the log into projections again (rebuild, refold checks,
//! as-of) is [`replay`], with the signed as-of cache in [`snapshots`]:
//! they belong to the store because opening a file that a later build
//! gave a new projection folds it here, before anything reads it.

pub mod replay;
pub mod snapshots;

use std::path::Path;

use events::sqlite::{LogOptions, SqliteLog, SqliteTx};
use events::{CommandContext, Event, ExpectedVersion, LogTransaction, Pending, RecordedEvent};
use rusqlite::Connection;

use crate::error::Error;

/// The database: log and projections on one SQLite file.
#[derive(Debug)]
pub struct Store {
    log: SqliteLog,
}

impl Store {
    /// Opens or creates the database file and brings the projection tables
    /// up to date.
    ///
    /// A projection that a later build added starts empty on a file that
    /// already holds events: it is folded from the log here, once, before
    /// anything can read it (an interrupted fold resumes at the next open).
    pub fn open(path: &Path, options: LogOptions) -> Result<Store, Error> {
        let log = SqliteLog::open(path, with_functions(options))?;
        let pending = log
            .execute(|tx| {
                let pending = projections::schema::migrate(tx.connection())?;
                crate::store::snapshots::ensure_key(tx.connection())?;
                Ok::<_, Error>(pending)
            })
            .wait()?;
        let store = Store { log };
        if !pending.is_empty() {
            let names: Vec<&str> = pending.iter().map(String::as_str).collect();
            tracing::info!(projections = ?names, "folding new projections from the log, once");
            let rebuilt =
                crate::store::replay::rebuild(&store, path, &names, None, &mut |_, _| {})?;
            tracing::info!(position = rebuilt.position, "new projections folded");
        }
        Ok(store)
    }

    /// Opens an existing database for reading only: nothing is created,
    /// migrated or written (for `verify`, listings, and auditors' copies).
    pub fn open_read_only(path: &Path, options: LogOptions) -> Result<Store, Error> {
        Ok(Store { log: SqliteLog::open_read_only(path, with_functions(options))? })
    }

    /// An OS lock on the file `<db><suffix>` beside the database, taken
    /// without waiting: `None` when another process (or handle) holds it.
    /// The lock goes with the file handle, and with a killed process.
    pub fn lock_beside(db: &Path, suffix: &str) -> Result<Option<std::fs::File>, Error> {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| Error::Internal(format!("opening {}: {error}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => {
                Err(Error::Internal(format!("locking {}: {error}", path.display())))
            }
        }
    }

    pub fn log(&self) -> &SqliteLog {
        &self.log
    }

    /// Now, by the log's clock (`LogOptions::clock`): every expiry and
    /// lifetime is decided against it.
    pub fn now(&self) -> jiff::Timestamp {
        self.log.now()
    }

    /// Runs a read against the projections on a pooled read connection.
    /// Synchronous: call it from a blocking context or for quick indexed
    /// lookups only.
    ///
    /// Inside [`crate::reads::HeavyReads::run`] it borrows from the heavy
    /// lane, with that read's budget; elsewhere from the quick lane.
    pub fn read<T>(&self, query: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let connection = self.reader()?;
        query(&connection)
    }

    fn reader(&self) -> Result<events::sqlite::PooledConnection<'_>, Error> {
        let (lane, budget) = crate::reads::current_lane();
        Ok(self.log.reader_in(lane, budget)?)
    }

    /// Runs several reads on one pooled connection inside one read
    /// transaction: they see one snapshot, and SQLite takes its locks once
    /// rather than once per statement. Synchronous, like [`Store::read`].
    pub fn snapshot<T>(
        &self,
        reads: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let connection = self.reader()?;
        let storage = |context| move |error| Error::from(events::LogError::storage(context, error));
        connection
            .prepare_cached("BEGIN DEFERRED")
            .and_then(|mut begin| begin.execute([]))
            .map_err(storage("beginning a read snapshot"))?;
        let outcome = reads(&connection);
        // Ending a read transaction cannot lose anything; should COMMIT
        // fail, roll back, so the pooled connection never keeps an old
        // snapshot for its next borrower.
        let ended = connection.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([]));
        if ended.is_err() && !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        outcome
    }

    /// Runs a command on the writer thread; see `SqliteLog::execute`.
    pub fn command<T, F>(&self, command: F) -> Pending<T, Error>
    where
        F: FnOnce(&mut SqliteTx<'_>) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.log.execute(command)
    }

    /// Lets queued commands finish and stops the writer.
    pub fn shutdown(&self) {
        self.log.shutdown();
    }
}

/// Every connection gets the SQL functions the projections' queries use.
fn with_functions(options: LogOptions) -> LogOptions {
    LogOptions { connection_setup: Some(projections::functions::register), ..options }
}

/// Appends `events` to one stream and folds them into the inline
/// projections, inside the current command.
pub fn record(
    tx: &mut SqliteTx<'_>,
    tenant: &str,
    stream: &str,
    expected: ExpectedVersion,
    events: &[Event],
    context: &CommandContext,
) -> Result<Vec<RecordedEvent>, Error> {
    let encoded: Vec<_> = events.iter().map(Event::encode).collect();
    let recorded = tx.append(tenant, stream, expected, &encoded, context)?;
    for (recorded, event) in recorded.iter().zip(events) {
        projections::apply(tx.connection(), recorded, event)?;
    }
    Ok(recorded)
}
