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

pub mod keys;
pub mod replay;
pub mod snapshots;

use std::path::Path;
use std::sync::Arc;

use events::seal::{KeySource, KeyState, Keyring, SealError, SubjectKey};
use events::sqlite::{LogOptions, SqliteLog, SqliteTx};
use events::{CommandContext, Event, ExpectedVersion, LogTransaction, Pending, RecordedEvent};
use rusqlite::{Connection, OptionalExtension, params};

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
        let keys = Arc::new(keys::KeyStore::new(path));
        let options = LogOptions { keys: Some(keys.clone()), ..options };
        let log = SqliteLog::open(path, with_functions(options))?;
        let (pending, identity) = log
            .execute(|tx| {
                let pending = projections::schema::migrate(tx.connection())?;
                crate::store::snapshots::ensure_key(tx.connection())?;
                let identity = ensure_identity(tx.connection())?;
                Ok::<_, Error>((pending, identity))
            })
            .wait()?;
        keys.bind(Some(&identity)).map_err(key_store)?;
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
        let keys = Arc::new(keys::KeyStore::read_only(path));
        let options = LogOptions { keys: Some(keys.clone()), ..options };
        let store = Store { log: SqliteLog::open_read_only(path, with_functions(options))? };
        keys.bind(store.read(identity)?.as_deref()).map_err(key_store)?;
        Ok(store)
    }

    /// The keys sealed personal values open with.
    pub fn keys(&self) -> &dyn Keyring {
        self.log.keys()
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

fn key_store(error: SealError) -> Error {
    Error::Internal(error.to_string())
}

/// This database's identity, made on first use (`database_identity`).
fn ensure_identity(connection: &Connection) -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::Internal(format!("no randomness for an identity: {error}")))?;
    let fresh: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    connection
        .execute("INSERT OR IGNORE INTO database_identity (id, identity) VALUES (1, ?1)", [fresh])
        .map_err(|error| Error::Internal(format!("keeping the database's identity: {error}")))?;
    identity(connection)?.ok_or_else(|| Error::Internal("the database has no identity".to_owned()))
}

/// This database's identity, if it has one (a file from an older build,
/// opened read-only, has none).
pub fn identity(connection: &Connection) -> Result<Option<String>, Error> {
    match connection
        .query_row("SELECT identity FROM database_identity WHERE id = 1", [], |row| row.get(0))
        .optional()
    {
        Ok(identity) => Ok(identity),
        Err(rusqlite::Error::SqliteFailure(_, Some(message)))
            if message.contains("no such table") =>
        {
            Ok(None)
        }
        Err(error) => Err(Error::Internal(format!("reading the database's identity: {error}"))),
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
    if events.iter().all(|event| event.subject().is_none()) {
        let encoded: Vec<_> = events.iter().map(Event::encode).collect();
        return fold_recorded(tx, tenant, stream, expected, events, &encoded, context);
    }
    // Personal values are sealed before the log hashes them, each bound to
    // the version its event will get (the log checks `expected` again).
    let keys = tx.keys().ok_or_else(|| {
        Error::Internal("no key store: personal values cannot be sealed".to_owned())
    })?;
    let first = match expected {
        ExpectedVersion::NoStream => 1,
        ExpectedVersion::Exact(version) => version + 1,
        ExpectedVersion::Any => tx.stream_version(tenant, stream)?.unwrap_or(0) + 1,
    };
    let mut sealing: Option<(events::Subject<'_>, Arc<SubjectKey>)> = None;
    let mut encoded = Vec::with_capacity(events.len());
    let mut body_key = None;
    for (index, event) in events.iter().enumerate() {
        let version = first + index as u64;
        let Some(subject) = event.subject() else {
            encoded.push(event.encode());
            continue;
        };
        let key = match &sealing {
            Some((sealed_for, key)) if *sealed_for == subject => Arc::clone(key),
            _ => {
                let key = subject_key(tx.connection(), keys, tenant, subject)?;
                sealing = Some((subject, Arc::clone(&key)));
                key
            }
        };
        encoded.push(event.encode_sealed(&key, tenant, stream, version).map_err(sealing_failed)?);
        if index == 0 {
            body_key = Some(key);
        }
    }
    match body_key {
        Some(key) => {
            let context =
                context.with_sealed_body(&key, tenant, stream, first).map_err(sealing_failed)?;
            fold_recorded(tx, tenant, stream, expected, events, &encoded, &context)
        }
        None => fold_recorded(tx, tenant, stream, expected, events, &encoded, context),
    }
}

fn fold_recorded(
    tx: &mut SqliteTx<'_>,
    tenant: &str,
    stream: &str,
    expected: ExpectedVersion,
    events: &[Event],
    encoded: &[events::NewEvent],
    context: &CommandContext,
) -> Result<Vec<RecordedEvent>, Error> {
    let recorded = tx.append(tenant, stream, expected, encoded, context)?;
    for (recorded, event) in recorded.iter().zip(events) {
        projections::apply(tx.connection(), recorded, event)?;
    }
    Ok(recorded)
}

fn sealing_failed(error: SealError) -> Error {
    Error::Internal(format!("sealing personal values: {error}"))
}

/// The data key of `subject` (a member's is its user's): the one the
/// subject already has, or the next id, issued now and recorded in
/// `subject_keys` in this transaction. A subject from before sealing gets
/// its key with its first event after it.
fn subject_key(
    connection: &Connection,
    keys: &dyn KeySource,
    tenant: &str,
    subject: events::Subject<'_>,
) -> Result<Arc<SubjectKey>, Error> {
    let storage = |context| move |error| Error::from(events::LogError::storage(context, error));
    let member_user;
    let user_id = match subject {
        events::Subject::User(user_id) => user_id,
        events::Subject::Member(member_id) => {
            member_user = connection
                .prepare_cached(
                    "SELECT user_id FROM members WHERE tenant_id = ?1 AND member_id = ?2",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row([tenant, member_id], |row| row.get::<_, String>(0))
                        .optional()
                })
                .map_err(storage("finding a member's user"))?
                .ok_or_else(|| {
                    Error::Internal(format!("member {member_id} has no row to seal by"))
                })?;
            member_user.as_str()
        }
    };
    let known: Option<i64> = connection
        .prepare_cached("SELECT key_id FROM subject_keys WHERE tenant_id = ?1 AND user_id = ?2")
        .and_then(|mut statement| {
            statement.query_row([tenant, user_id], |row| row.get(0)).optional()
        })
        .map_err(storage("finding a subject's key"))?;
    if let Some(id) = known {
        let id = u64::try_from(id).map_err(|_| Error::Internal(format!("key id {id}")))?;
        return match keys.key(id).map_err(sealing_failed)? {
            KeyState::Live(key) => Ok(key),
            KeyState::Erased => Err(Error::Internal(format!(
                "user {user_id} was erased: nothing more is recorded about them"
            ))),
        };
    }
    let next: i64 = connection
        .prepare_cached("SELECT COALESCE(MAX(key_id), 0) + 1 FROM subject_keys")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(storage("choosing a subject's key"))?;
    let mut id = u64::try_from(next).map_err(|_| Error::Internal(format!("key id {next}")))?;
    // Past the highest id this database handed out, the key store may
    // hold ids of a later timeline (the database restored from a backup,
    // the key store kept): an erased one is passed over.
    let key = loop {
        match keys.issue(id) {
            Err(SealError::Erased(_)) => id += 1,
            issued => break issued.map_err(sealing_failed)?,
        }
    };
    let row = i64::try_from(id).map_err(|_| Error::Internal(format!("key id {id}")))?;
    connection
        .prepare_cached("INSERT INTO subject_keys (tenant_id, user_id, key_id) VALUES (?1, ?2, ?3)")
        .and_then(|mut statement| statement.execute(params![tenant, user_id, row]))
        .map_err(storage("recording a subject's key"))?;
    Ok(key)
}
