//! The SQLite implementation of [`crate::EventLog`].
//!
//! One file in WAL mode. [`SqliteLog::open`] creates it if needed, starts the
//! writer thread ([`writer`]) and keeps a pool of read-only connections
//! ([`pool`]). Commands that must change projections in the same transaction
//! as their events go through [`SqliteLog::execute`]; plain appends through
//! [`crate::EventLog::append`].

mod changes;
mod pool;
mod read;
mod schema;
pub(crate) mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

pub use crate::log::VisitError;
pub use changes::Changes;
pub use pool::{Lane, PooledConnection};
pub use schema::EVENTS_SCHEMA_VERSION;
pub use writer::{SqliteTx, WriterStats};

use crate::log::{EventLog, LogTransaction, Pending, VerifyReport, VerifyScope};
use crate::{
    AppendError, CommandContext, EventRef, ExecuteError, ExpectedVersion, LogError, NewEvent,
    Position, RecordedEvent,
};
use writer::{ClosureCommand, Message};

/// How hard a commit works to survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: SQLite fsyncs the WAL inside every commit, and
    /// callers are answered after it. A 201 means the event survives a
    /// power cut.
    Full,
    /// The same promise as `Full`, reached faster: SQLite commits with
    /// `synchronous=NORMAL` (which still syncs around every checkpoint), and
    /// a syncer thread `fdatasync`s the WAL before answering the batch's
    /// callers, while the writer already runs the next batch. Nobody is
    /// answered before their events are on disk; a reader may see a batch
    /// a fraction of a millisecond before its fsync ends.
    Pipelined,
    /// `synchronous=NORMAL`: survives a crash of rollcall, may lose the last
    /// commits on a power cut.
    Normal,
    /// `synchronous=OFF`: for tests and bulk imports only.
    Off,
}

impl Durability {
    pub fn parse(text: &str) -> Option<Durability> {
        match text.to_ascii_lowercase().as_str() {
            "full" => Some(Durability::Full),
            "pipelined" => Some(Durability::Pipelined),
            "normal" => Some(Durability::Normal),
            "off" => Some(Durability::Off),
            _ => None,
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Pipelined | Durability::Normal => "NORMAL",
            Durability::Off => "OFF",
        }
    }
}

/// Settings of a [`SqliteLog`]; `LogOptions::default()` is what production
/// wants.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub durability: Durability,
    /// Open read connections at most; readers beyond it wait their turn.
    pub read_connections_max: usize,
    /// Commands committed in one transaction at most.
    pub batch_commands_max: usize,
    /// Commands waiting for the writer at most; beyond it a command is
    /// refused with [`LogError::Overloaded`] instead of queueing forever.
    pub queue_commands_max: usize,
    /// WAL size in pages past which a commit also checkpoints (copies the
    /// WAL back into the database file and fsyncs it). Larger means rarer
    /// but longer stalls for the writer, and a larger WAL file (pages are
    /// 4 KiB); see BENCHMARKS.md for why the default is SQLite's own.
    pub wal_checkpoint_pages: u32,
    /// How long a connection waits for another process's lock.
    pub busy_timeout_ms: u64,
    /// Events fetched per page by forward reads: bounds their memory.
    pub read_page_events: usize,
    /// Recompute each event's hash when reading it (the "pair" of the check
    /// made when writing it).
    pub verify_hashes_on_read: bool,
    /// Run on every connection the log opens (writer and readers), so the
    /// layers above can register the SQL functions their queries use. The
    /// log itself knows nothing of what they are.
    pub connection_setup: Option<fn(&Connection) -> rusqlite::Result<()>>,
    /// Where events' `recorded_at` comes from: the system clock, except in
    /// benchmarks that simulate months of history.
    pub clock: fn() -> jiff::Timestamp,
    /// The key store personal values are sealed with and opened from
    /// (`crate::seal`); commands reach it through `SqliteTx::keys`. The
    /// log itself never seals: it stores the bytes it is given.
    pub keys: Option<Arc<dyn crate::seal::KeySource>>,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            durability: Durability::Full,
            read_connections_max: 8,
            batch_commands_max: 1024,
            queue_commands_max: 16_384,
            wal_checkpoint_pages: 1_000,
            busy_timeout_ms: 10_000,
            read_page_events: 1000,
            verify_hashes_on_read: true,
            connection_setup: None,
            clock: jiff::Timestamp::now,
            keys: None,
        }
    }
}

/// The log on one SQLite file.
pub struct SqliteLog {
    path: PathBuf,
    options: LogOptions,
    /// `None` when opened read-only.
    sender: Option<SyncSender<Message>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    readers: pool::ReadPool,
    /// Last: dropped after the readers have closed (see `changes`).
    changes: changes::Changes,
}

impl std::fmt::Debug for SqliteLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SqliteLog").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path` and starts its writer.
    pub fn open(path: &Path, options: LogOptions) -> Result<SqliteLog, LogError> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| LogError::storage("opening the database file", error))?;
        connection
            .busy_timeout(Duration::from_millis(options.busy_timeout_ms))
            .map_err(|error| LogError::storage("configuring the write connection", error))?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(|error| LogError::storage("switching to WAL", error))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LogError::Storage {
                context: "switching to WAL",
                message: format!("the file stayed in journal mode {mode}"),
            });
        }
        connection
            .execute_batch(&format!(
                // temp_store=MEMORY keeps the savepoint journal (each
                // command's undo pages) in memory: past 64 KiB per batch
                // SQLite otherwise spills it to a temporary file, two write
                // calls per page, on the writer's critical path.
                // secure_delete: what a write frees (an old document, an
                // erased person's row) is overwritten with zeros, not left
                // readable in the file's free space (issue 21, erasure).
                "PRAGMA synchronous={}; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint={}; \
                 PRAGMA temp_store=MEMORY; PRAGMA secure_delete=ON;",
                options.durability.pragma(),
                options.wal_checkpoint_pages
            ))
            .map_err(|error| LogError::storage("configuring the write connection", error))?;
        connection.set_prepared_statement_cache_capacity(128);
        stable_query_plans(&connection)?;
        if let Some(setup) = options.connection_setup {
            setup(&connection)
                .map_err(|error| LogError::storage("setting up the write connection", error))?;
        }
        schema::migrate(&connection)?;

        let (sender, receiver) = sync_channel(options.queue_commands_max.max(1));
        let batch_commands_max = options.batch_commands_max.max(1);
        let stats = Arc::new(WriterStats::default());
        let writer_stats = stats.clone();
        let wal_sync = (options.durability == Durability::Pipelined).then(|| wal_path(path));
        let durable_at_commit = options.durability == Durability::Full;
        let clock = options.clock;
        let keys = options.keys.clone();
        let writer_thread = std::thread::Builder::new()
            .name("rollcall-log-writer".to_owned())
            .spawn(move || {
                writer::run(
                    connection,
                    receiver,
                    batch_commands_max,
                    writer_stats,
                    wal_sync,
                    durable_at_commit,
                    writer::TxSettings { clock, keys },
                )
            })
            .map_err(|error| LogError::storage("starting the writer thread", error))?;
        Ok(SqliteLog {
            path: path.to_owned(),
            readers: pool::ReadPool::for_log(path, &options),
            changes: changes::Changes::new(path),
            options,
            sender: Some(sender),
            writer_thread: Mutex::new(Some(writer_thread)),
            stats,
        })
    }

    /// Opens an existing log for reading only: no writer, no migration,
    /// nothing written to the file (so a copy handed to an auditor stays
    /// exactly as it was). A missing file or one that is not a rollcall
    /// database is an error, never created.
    pub fn open_read_only(path: &Path, options: LogOptions) -> Result<SqliteLog, LogError> {
        if !path.is_file() {
            return Err(LogError::NotALog { reason: format!("{} does not exist", path.display()) });
        }
        let log = SqliteLog {
            path: path.to_owned(),
            readers: pool::ReadPool::for_log(path, &options),
            changes: changes::Changes::new(path),
            options,
            sender: None,
            writer_thread: Mutex::new(None),
            stats: Arc::default(),
        };
        let reader = log.reader()?;
        schema::check_readable(&reader)?;
        drop(reader);
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys sealed values are opened with (`LogOptions::keys`); a log
    /// opened without a key store opens none.
    pub fn keys(&self) -> &dyn crate::seal::Keyring {
        match &self.options.keys {
            Some(keys) => keys.as_ref(),
            None => &crate::seal::NoKeys,
        }
    }

    /// Whether a write submitted now can succeed: the writer thread runs
    /// and no fsync has failed.
    pub fn is_writable(&self) -> bool {
        let running = self
            .writer_thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|thread| !thread.is_finished());
        running && !self.stats.durability_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wakes whenever this process's writer commits a batch; holds its head.
    pub fn watch_commits(&self) -> tokio::sync::watch::Receiver<Position> {
        self.stats.committed.subscribe()
    }

    /// What the writer has done since this handle opened the log.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    /// Runs `command` on the writer thread, inside the next batch's
    /// transaction and its own savepoint. `Err` from the command rolls back
    /// everything it did; `Ok` is answered only after the batch commits.
    pub fn execute<T, E, F>(&self, command: F) -> Pending<T, E>
    where
        F: FnOnce(&mut SqliteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job = ClosureCommand { command: Some(command), outcome: None, reply };
        let Some(sender) = &self.sender else {
            return Pending::ready(Err(ExecuteError::Log(LogError::ReadOnly)));
        };
        // Counted before the send, so the writer's decrement never comes
        // first.
        self.stats.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = sender.try_send(Message::Run(Box::new(job)));
        if sent.is_err() {
            self.stats.queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Pending::new(receiver),
            Err(TrySendError::Full(_)) => {
                Pending::ready(Err(ExecuteError::Log(LogError::Overloaded {
                    queue_max: self.options.queue_commands_max,
                })))
            }
            Err(TrySendError::Disconnected(_)) => {
                Pending::ready(Err(ExecuteError::Log(LogError::WriterStopped)))
            }
        }
    }

    /// Calls `visit` for every event after `after` (of one tenant, or all),
    /// in position order, without allocating per event: the fast path for
    /// replays, rebuilds and verification. Returns the last position seen.
    pub fn visit_forward<E>(
        &self,
        after: Position,
        tenant: Option<&str>,
        visit: impl FnMut(EventRef<'_>) -> Result<(), E>,
    ) -> Result<Position, VisitError<E>> {
        read::visit_forward(self, after, tenant, visit)
    }

    /// The first position recorded at or after `instant` (an RFC 3339
    /// instant in the stored format, `time::format_millis`), or head + 1:
    /// the start of a window of time as a range of positions.
    pub fn first_position_at(&self, instant: &str) -> Result<Position, LogError> {
        read::first_position_at(self, instant)
    }

    /// Now, by the clock events are recorded with: the one clock every
    /// decision about time (token and session expiry, purges) reads, so a
    /// test or a simulation that drives `LogOptions::clock` drives them all.
    pub fn now(&self) -> jiff::Timestamp {
        (self.options.clock)()
    }

    /// The clock itself, for work that runs where the log is not at hand
    /// (a command on the writer thread, say).
    pub fn clock(&self) -> fn() -> jiff::Timestamp {
        self.options.clock
    }

    /// [`SqliteLog::now`] in the events' format: a time that compares with
    /// `recorded_at` (a request's arrival, say).
    pub fn now_millis(&self) -> String {
        crate::time::format_millis(self.now())
    }

    /// The event at `position`, if the log has one.
    pub fn read_at(&self, position: Position) -> Result<Option<RecordedEvent>, LogError> {
        read::read_at(self, position)
    }

    /// Borrows a read-only connection (for projections' queries). Use it
    /// synchronously; never hold it across an `.await`.
    pub fn reader(&self) -> Result<PooledConnection<'_>, LogError> {
        self.readers.get()
    }

    /// Borrows a read-only connection in `lane`, its statements interrupted
    /// past `budget` ([`LogError::Interrupted`]). Heavy reads never take
    /// the connections kept for quick ones.
    pub fn reader_in(
        &self,
        lane: Lane,
        budget: Option<std::time::Duration>,
    ) -> Result<PooledConnection<'_>, LogError> {
        self.readers.get_in(lane, budget)
    }

    /// A number that changes whenever anything has been committed to the
    /// file since the previous call, by this process's writer or by any
    /// other process: what a cache in front of the projections checks on
    /// every request (see `changes`). Take it before the read whose answer
    /// is cached, never after.
    pub fn generation(&self) -> Result<u64, LogError> {
        self.changes.generation(|| self.readers.open_connection())
    }

    /// How many heavy reads may hold a connection at once.
    pub fn heavy_readers_max(&self) -> usize {
        self.readers.heavy_max()
    }

    /// Lets the writer finish every command queued so far, commit, and stop.
    /// Commands submitted afterwards get [`LogError::WriterStopped`].
    pub fn shutdown(&self) {
        let handle =
            self.writer_thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(handle) = handle {
            // The writer may already be gone; then there is nothing to stop.
            if let Some(sender) = &self.sender {
                let _ = sender.send(Message::Stop);
            }
            if handle.join().is_err() {
                tracing::error!("the log writer thread panicked");
            }
        }
    }
}

/// Where SQLite keeps the write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Turns on SQLite's query planner stability guarantee.
///
/// Without it, SQLite 3.54 marks some bound parameters "re-prepare on bind"
/// (to re-plan for each value) and a text bind then recompiles the cached
/// statement on every execution: a third of the writer's time went to the
/// SQL parser before this (see BENCHMARKS.md). Every query rollcall runs is
/// an indexed lookup whose best plan does not depend on the values bound.
pub(crate) fn stable_query_plans(connection: &Connection) -> Result<(), LogError> {
    connection
        .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
        .map_err(|error| LogError::storage("enabling stable query plans", error))
}

impl Drop for SqliteLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl EventLog for SqliteLog {
    fn append(
        &self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        context: CommandContext,
    ) -> Pending<Vec<RecordedEvent>, AppendError> {
        let tenant = tenant.to_owned();
        let stream = stream.to_owned();
        self.execute(move |transaction| {
            transaction.append(&tenant, &stream, expected, &events, &context)
        })
    }

    fn read_stream(&self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError> {
        read::read_stream(self, tenant, stream)
    }

    fn read_forward(
        &self,
        after: Position,
        tenant: Option<&str>,
    ) -> Box<dyn Iterator<Item = Result<RecordedEvent, LogError>> + Send + '_> {
        Box::new(read::Forward::new(
            self,
            after,
            tenant.map(str::to_owned),
            self.options.verify_hashes_on_read,
        ))
    }

    fn head(&self) -> Result<Position, LogError> {
        read::head(self)
    }

    fn tenant_head(&self, tenant: &str) -> Result<Position, LogError> {
        read::tenant_head(self, tenant)
    }

    fn verify(&self, scope: VerifyScope) -> Result<VerifyReport, LogError> {
        read::verify(self, scope)
    }
}
