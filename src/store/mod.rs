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
//!
//! The store runs on the embedded SQLite file or on PostgreSQL ([`log`]);
//! commands and reads are written once, against `events::db::Db` and
//! `LogTransaction`, and run on either.

pub mod keys;
pub mod log;
pub mod replay;
pub mod snapshots;

use std::path::Path;
use std::sync::Arc;

use events::db::{Db, OptionalExtension};
use events::event::UserCreated;
use events::postgres::{PgLog, PgPool, PgWriter, PgWriterOptions};
use events::seal::{KeySource, KeyState, Keyring, SealError, SubjectKey};
use events::sqlite::{LogOptions, SqliteLog};
use events::{CommandContext, Event, ExpectedVersion, LogTransaction, Pending, RecordedEvent};
use rusqlite::Connection;

use crate::error::Error;

/// The database: log and projections, on one SQLite file or on one
/// PostgreSQL database.
#[derive(Debug)]
pub struct Store {
    log: log::Log,
    key_store: Arc<keys::KeyStore>,
}

/// Advisory locks a node may hold at once on PostgreSQL (each on a
/// connection of its own, opened as needed): one per webhook endpoint it
/// delivers and per Synchronize it runs.
const LOCK_CONNECTIONS_MAX: usize = 256;

/// How a node runs on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections the node keeps open at most (writer lanes and reads).
    pub pool_size: usize,
    /// Writer lanes: tenants whose commands commit at once.
    pub lanes: usize,
    pub clock: fn() -> jiff::Timestamp,
}

impl Default for PostgresOptions {
    fn default() -> PostgresOptions {
        PostgresOptions {
            pool_size: events::postgres::POOL_SIZE_DEFAULT,
            lanes: PgWriterOptions::default().lanes,
            clock: jiff::Timestamp::now,
        }
    }
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
                let pending = projections::schema::migrate(tx.db())?;
                crate::store::snapshots::ensure_key(tx.db())?;
                let identity = ensure_identity(tx.db())?;
                Ok::<_, Error>((pending, identity))
            })
            .wait()?;
        keys.bind(Some(&identity)).map_err(key_store)?;
        let store = Store { log: log::Log::Sqlite(log), key_store: keys };
        // An erasure whose process died between its event and its keys is
        // finished here, before anything reads.
        store.finish_erasures()?;
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
        let log = SqliteLog::open_read_only(path, with_functions(options))?;
        let store = Store { log: log::Log::Sqlite(log), key_store: keys.clone() };
        keys.bind(store.read(identity)?.as_deref()).map_err(key_store)?;
        // A reader cannot finish an interrupted erasure; it honours it.
        let erased: Vec<u64> =
            store.erased_keys()?.into_iter().flat_map(|(_, keys, _)| keys).collect();
        keys.forget(&erased);
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url`, makes or migrates the
    /// log's and the projections' tables (under an advisory lock, so nodes
    /// starting together do not race), and starts this node's writer.
    pub fn open_postgres(url: &str, options: PostgresOptions) -> Result<Store, Error> {
        let pool = PgPool::new(url, options.pool_size.max(options.lanes + 1)).map_err(|error| {
            Error::from(events::LogError::NotALog { reason: error.to_string() })
        })?;
        let pool = Arc::new(pool);
        let locks = PgPool::new(url, LOCK_CONNECTIONS_MAX).map_err(|error| {
            Error::from(events::LogError::NotALog { reason: error.to_string() })
        })?;
        let log = PgLog::on(pool.clone())?;
        let identity = {
            let tx = log.transaction()?;
            let made = (|| {
                projections::schema::migrate(tx.db())?;
                crate::store::snapshots::ensure_key(tx.db())?;
                ensure_identity(tx.db())
            })();
            let identity = made?;
            tx.commit()?;
            identity
        };
        let keys = Arc::new(keys::KeyStore::postgres(pool.clone()));
        keys.bind(Some(&identity)).map_err(key_store)?;
        let source: Arc<dyn KeySource> = keys.clone();
        let writer = PgWriter::start(
            pool,
            PgWriterOptions {
                lanes: options.lanes,
                clock: options.clock,
                keys: Some(source),
                ..PgWriterOptions::default()
            },
        )?;
        // Other nodes' commits wake this node's feed readers and
        // deliverers as its own do.
        log.pool().listen(events::postgres::writer::COMMITS_CHANNEL, writer.commit_signal());
        let node = log::PgNode {
            log,
            writer,
            clock: options.clock,
            keys: keys.clone(),
            pool_size: options.pool_size,
            locks: Arc::new(locks),
        };
        let store = Store { log: log::Log::Postgres(node), key_store: keys };
        store.finish_erasures()?;
        Ok(store)
    }

    /// The key store itself: erasures destroy keys in it.
    pub fn key_store(&self) -> &keys::KeyStore {
        &self.key_store
    }

    /// Destroys the data keys of an erasure recorded in `tenant` at `at`,
    /// then drops the tenant's as-of snapshots (a cache that held the
    /// person's rows, made again from the log) and empties the WAL, so
    /// old page images holding the values leave it. Idempotent; returns
    /// how many keys it destroyed now.
    pub fn destroy_keys(&self, tenant: &str, keys: &[u64], at: &str) -> Result<usize, Error> {
        let destroyed = self.key_store.erase(keys, at).map_err(key_store)?;
        self.forget_snapshots(tenant);
        self.checkpoint_wal();
        Ok(destroyed)
    }

    /// Every erasure's tenant, key ids and time, from the `erasures`
    /// projection (none in a file from before erasures).
    pub fn erased_keys(&self) -> Result<Vec<(String, Vec<u64>, String)>, Error> {
        let rows: Vec<(String, String, String)> = self.read(|connection| {
            let found = connection
                .prepare_cached("SELECT tenant_id, keys, erased_at FROM erasures")
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                        .collect()
                });
            match found {
                Ok(rows) => Ok(rows),
                Err(error) if error.is_missing_table() => Ok(Vec::new()),
                Err(error) => {
                    Err(Error::from(events::LogError::storage("reading erasures", error)))
                }
            }
        })?;
        Ok(rows
            .into_iter()
            .map(|(tenant, keys, at)| (tenant, serde_json::from_str(&keys).unwrap_or_default(), at))
            .collect())
    }

    /// Destroys every key an erasure recorded that the key store still
    /// holds live: the erasures whose process stopped between their event
    /// and their keys (`crate::erase`). Run at every writable open.
    fn finish_erasures(&self) -> Result<(), Error> {
        for (tenant, keys, at) in self.erased_keys()? {
            let live = self.key_store.live_among(&keys).map_err(key_store)?;
            if !live.is_empty() {
                tracing::warn!(tenant, keys = live.len(), "finishing an interrupted erasure");
                self.destroy_keys(&tenant, &live, &at)?;
            }
        }
        Ok(())
    }

    /// Deletes the as-of snapshots of `tenant`.
    fn forget_snapshots(&self, tenant: &str) {
        // On PostgreSQL no as-of snapshot is kept.
        let Some(path) = self.log.path() else { return };
        let dir = snapshots::Snapshots::beside(path, 0);
        let prefix: String = tenant.chars().filter(char::is_ascii_alphanumeric).collect();
        let Ok(entries) = std::fs::read_dir(dir.dir()) else { return };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if name.to_str().is_some_and(|name| name.starts_with(&format!("{prefix}-")))
                && let Err(error) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(%error, "an as-of snapshot was not removed after an erasure");
            }
        }
    }

    /// `wal_checkpoint(TRUNCATE)` on a connection of its own: waits for
    /// the readers of older snapshots, then empties the WAL. Under constant
    /// writes it may not complete; the frames are overwritten as the WAL
    /// restarts.
    fn checkpoint_wal(&self) {
        // PostgreSQL's own WAL is not ours to empty; the key store vacuums
        // its table after an erasure.
        let Some(path) = self.log.path() else { return };
        let outcome = Connection::open(path).and_then(|connection| {
            connection.busy_timeout(std::time::Duration::from_secs(10))?;
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0))
        });
        match outcome {
            Ok(0) => {}
            Ok(_) => {
                tracing::warn!("the WAL was busy after an erasure; a later checkpoint empties it")
            }
            Err(error) => tracing::warn!(%error, "checkpointing after an erasure failed"),
        }
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

    /// Takes the lock `name` of this database without waiting: `None`
    /// when another holder (in this process, another one, or another node)
    /// has it. On SQLite it is an OS lock on `<db>.<name>.lock`; on
    /// PostgreSQL a session advisory lock, held on a connection of its own.
    /// Either goes with its holder: dropped, or killed.
    pub fn try_lock(&self, name: &str) -> Result<Option<StoreLock>, Error> {
        match &self.log {
            log::Log::Sqlite(log) => {
                Ok(Store::lock_beside(log.path(), &format!(".{name}.lock"))?.map(StoreLock::File))
            }
            log::Log::Postgres(node) => {
                let storage =
                    |error| Error::from(events::LogError::storage("taking a lock", error));
                let connection = node.locks.get().map_err(storage)?;
                let taken: bool = connection
                    .query_row(
                        "SELECT pg_try_advisory_lock(hashtextextended(?1, 0))",
                        [format!("rollcall:{name}")],
                        |row| row.get(0),
                    )
                    .map_err(storage)?;
                Ok(taken.then(|| StoreLock::Postgres(Box::new(connection))))
            }
        }
    }

    pub fn log(&self) -> &log::Log {
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
    pub fn read<T>(&self, query: impl FnOnce(&dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        match &self.log {
            log::Log::Sqlite(log) => {
                let (lane, budget) = crate::reads::current_lane();
                let connection = log.reader_in(lane, budget)?;
                query(&connection)
            }
            log::Log::Postgres(node) => {
                let storage = |error| events::LogError::storage("taking a connection", error);
                let connection = node.log.pool().get().map_err(storage)?;
                // A heavy read's budget is the server's statement timeout,
                // set for this read alone (a cancelled statement is an
                // interrupt, as SQLite's progress handler gives).
                let (_, budget) = crate::reads::current_lane();
                if let Some(budget) = budget {
                    let millis = budget.as_millis().clamp(1, i32::MAX as u128);
                    connection
                        .execute_batch(&format!("SET statement_timeout = {millis}"))
                        .map_err(storage)?;
                }
                let answer = query(&*connection);
                if budget.is_some() {
                    let mut connection = connection;
                    if connection.execute_batch("RESET statement_timeout").is_err() {
                        connection.discard();
                    }
                }
                answer
            }
        }
    }

    /// Runs several reads on one pooled connection inside one read
    /// transaction: they see one snapshot, and SQLite takes its locks once
    /// rather than once per statement. Synchronous, like [`Store::read`].
    pub fn snapshot<T>(&self, reads: impl FnOnce(&dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        let storage = |context| move |error| Error::from(events::LogError::storage(context, error));
        self.read(|connection| {
            let begin = match connection.dialect() {
                events::db::Dialect::Sqlite => "BEGIN DEFERRED",
                events::db::Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            };
            connection
                .prepare_cached(begin)
                .and_then(|mut begin| begin.execute([]))
                .map_err(storage("beginning a read snapshot"))?;
            let outcome = reads(connection);
            // Ending a read transaction cannot lose anything; should COMMIT
            // fail, roll back, so the pooled connection never keeps an old
            // snapshot for its next borrower.
            let ended =
                connection.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([]));
            if ended.is_err() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            outcome
        })
    }

    /// Runs a command inside the writer's next transaction, in a savepoint
    /// of its own (`SqliteLog::execute`, `PgWriter::execute`). `tenant` is
    /// the tenant it writes, when the caller knows it: on PostgreSQL one
    /// tenant's commands are batched together, and a command whose tenant
    /// is found only as it runs (`None`) runs alone.
    pub fn command<T, F>(&self, tenant: Option<&str>, command: F) -> Pending<T, Error>
    where
        F: FnOnce(&mut dyn LogTransaction) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        match &self.log {
            log::Log::Sqlite(log) => log.execute(move |tx| command(tx)),
            log::Log::Postgres(node) => match tenant {
                Some(tenant) => node.writer.execute(tenant, command),
                None => node.writer.execute_alone(command),
            },
        }
    }

    /// Lets queued commands finish and stops the writer.
    pub fn shutdown(&self) {
        self.log.shutdown();
    }
}

/// A lock of [`Store::try_lock`], held until dropped.
#[derive(Debug)]
pub enum StoreLock {
    File(std::fs::File),
    /// The connection whose session holds the advisory lock.
    Postgres(Box<events::postgres::PgConn>),
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Released before this returns, so the next taker (another node
        // included) finds it free at once; a session that cannot say so
        // is closed, which releases it too (later: the server notices the
        // close), and never pooled still holding it.
        if let StoreLock::Postgres(connection) = self
            && connection.execute_batch("SELECT pg_advisory_unlock_all()").is_err()
        {
            connection.discard();
        }
    }
}

fn key_store(error: SealError) -> Error {
    Error::Internal(error.to_string())
}

/// This database's identity, made on first use (`database_identity`).
fn ensure_identity(connection: &dyn Db) -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::Internal(format!("no randomness for an identity: {error}")))?;
    let fresh: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    connection
        .execute(
            "INSERT INTO database_identity (id, identity) VALUES (1, ?1) ON CONFLICT DO NOTHING",
            [fresh],
        )
        .map_err(|error| Error::Internal(format!("keeping the database's identity: {error}")))?;
    identity(connection)?.ok_or_else(|| Error::Internal("the database has no identity".to_owned()))
}

/// This database's identity, if it has one (a file from an older build,
/// opened read-only, has none).
pub fn identity(connection: &dyn Db) -> Result<Option<String>, Error> {
    match connection
        .query_row("SELECT identity FROM database_identity WHERE id = 1", [], |row| row.get(0))
        .optional()
    {
        Ok(identity) => Ok(identity),
        Err(error) if error.is_missing_table() => Ok(None),
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
    tx: &mut dyn LogTransaction,
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
    let keys_held = tx.keys().ok_or_else(|| {
        Error::Internal("no key store: personal values cannot be sealed".to_owned())
    })?;
    let keys: &dyn KeySource = &*keys_held;
    // A created user without a key gets one here (a command may choose it
    // itself, with `fresh_subject_key`).
    let keyed: std::borrow::Cow<'_, [Event]> = if events
        .iter()
        .any(|event| matches!(event, Event::UserCreated(UserCreated { key: None, .. })))
    {
        let mut owned = events.to_vec();
        for event in &mut owned {
            if let Event::UserCreated(created @ UserCreated { key: None, .. }) = event {
                created.key = Some(keys.fresh().map_err(sealing_failed)?.id);
            }
        }
        std::borrow::Cow::Owned(owned)
    } else {
        std::borrow::Cow::Borrowed(events)
    };
    let events = keyed.as_ref();
    // Personal values are sealed before the log hashes them, each bound to
    // the version its event will get (the log checks `expected` again).
    let first = match expected {
        ExpectedVersion::NoStream => 1,
        ExpectedVersion::Exact(version) => version + 1,
        ExpectedVersion::Any => tx.stream_version(tenant, stream)?.unwrap_or(0) + 1,
    };
    let mut sealing: Option<(events::Subject<'_>, Option<Arc<SubjectKey>>)> = None;
    let mut encoded = Vec::with_capacity(events.len());
    let mut body_key = None;
    for (index, event) in events.iter().enumerate() {
        let version = first + index as u64;
        let Some(subject) = event.subject() else {
            encoded.push(event.encode());
            continue;
        };
        let key = match &sealing {
            Some((sealed_for, key)) if *sealed_for == subject => key.clone(),
            _ => {
                let key = match event {
                    Event::UserCreated(UserCreated { key: Some(id), .. }) => {
                        Some(live_key(keys, *id)?)
                    }
                    _ => subject_key(tx, keys, tenant, subject)?,
                };
                sealing = Some((subject, key.clone()));
                key
            }
        };
        // A subject from before sealing has no key: its events stay in
        // clear, as its earlier ones are (ARCHITECTURE.md, "Erasure").
        match &key {
            Some(key) => encoded
                .push(event.encode_sealed(key, tenant, stream, version).map_err(sealing_failed)?),
            None => encoded.push(event.encode()),
        }
        if index == 0 {
            body_key = key;
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

/// A key for a user about to be created: the command puts its id in the
/// `UserCreated` (else `record` does).
pub fn fresh_subject_key(tx: &dyn LogTransaction) -> Result<u64, Error> {
    let keys_held = tx.keys().ok_or_else(|| {
        Error::Internal("no key store: personal values cannot be sealed".to_owned())
    })?;
    let keys: &dyn KeySource = &*keys_held;
    Ok(keys.fresh().map_err(sealing_failed)?.id)
}

fn fold_recorded(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    stream: &str,
    expected: ExpectedVersion,
    events: &[Event],
    encoded: &[events::NewEvent],
    context: &CommandContext,
) -> Result<Vec<RecordedEvent>, Error> {
    let recorded = tx.append(tenant, stream, expected, encoded, context)?;
    for (recorded, event) in recorded.iter().zip(events) {
        projections::apply(tx.db(), recorded, event)?;
    }
    Ok(recorded)
}

fn sealing_failed(error: SealError) -> Error {
    Error::Internal(format!("sealing personal values: {error}"))
}

fn live_key(keys: &dyn KeySource, id: u64) -> Result<Arc<SubjectKey>, Error> {
    match keys.key(id).map_err(sealing_failed)? {
        KeyState::Live(key) => Ok(key),
        KeyState::Erased => Err(Error::Internal(format!(
            "data key {id} was erased: nothing more is recorded about its subject"
        ))),
    }
}

/// The data key of `subject` (a member's is its user's): the id its
/// directory row holds, else (the user was deleted) the one its
/// `UserCreated` names; `None` for a user created before sealing.
fn subject_key(
    tx: &mut dyn LogTransaction,
    keys: &dyn KeySource,
    tenant: &str,
    subject: events::Subject<'_>,
) -> Result<Option<Arc<SubjectKey>>, Error> {
    let connection = tx.db();
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
    key_id_of_user(tx, keys, tenant, user_id)?.map(|id| live_key(keys, id)).transpose()
}

/// The id of a user's data key: its directory row's, else (the user was
/// deleted) the one its `UserCreated` names; `None` for a user created
/// before sealing, or one that never was.
pub fn key_id_of_user(
    tx: &mut dyn LogTransaction,
    keys: &dyn Keyring,
    tenant: &str,
    user_id: &str,
) -> Result<Option<u64>, Error> {
    let storage = |context| move |error| Error::from(events::LogError::storage(context, error));
    let row: Option<Option<i64>> = tx
        .db()
        .prepare_cached("SELECT key_id FROM scim_resources WHERE tenant_id = ?1 AND id = ?2")
        .and_then(|mut statement| {
            statement.query_row([tenant, user_id], |row| row.get(0)).optional()
        })
        .map_err(storage("finding a subject's key"))?;
    let id = match row {
        Some(id) => id.and_then(|id| u64::try_from(id).ok()),
        None => {
            // The user is gone from the directory: its first event says.
            let first = tx.read_stream(tenant, &format!("user:{user_id}"))?;
            match first.first().map(|created| created.decode(keys)) {
                Some(Ok(Event::UserCreated(UserCreated { key, .. }))) => key,
                Some(Err(error)) => return Err(error.into()),
                _ => None,
            }
        }
    };
    Ok(id)
}
