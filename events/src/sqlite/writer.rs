//! The single writer: one thread, one write connection, group commit.
//!
//! Commands arrive on a bounded channel. The writer takes the first one,
//! then whatever else is already queued (up to `batch_commands_max`), opens
//! one `BEGIN IMMEDIATE` transaction, and runs each command inside its own
//! savepoint. A command that fails, panics, or hits a storage error has its
//! savepoint rolled back; the others go on. Then the batch commits (one
//! fsync under `synchronous=FULL`), and only then is each caller answered.
//!
//! Invariants:
//! * Only this thread writes through its connection; positions are taken
//!   from the database inside the transaction, never from a cache that
//!   outlives it, so another process writing the same file between batches
//!   (the CLI beside a running server) cannot make a gap or a fork.
//! * Per-batch caches (head position, each tenant's last hash) are dropped
//!   whenever a savepoint is rolled back and reloaded from the transaction.

use crate::seal::KeySource;
use std::collections::HashMap;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::hash::CanonicalEvent;
use crate::histogram::Histogram;
use crate::log::LogTransaction;
use crate::{
    AppendError, ChainHash, CommandContext, ExecuteError, ExpectedVersion, LogError, Metadata,
    NestedError, NewEvent, Position, RecordedEvent, ZERO_HASH,
};

/// A unit of work for the writer, type-erased so one channel carries
/// commands of every result type.
pub(crate) trait Command: Send {
    /// Runs the command in its savepoint. Returns whether its effects are to
    /// be kept.
    fn run(&mut self, transaction: &mut SqliteTx<'_>) -> bool;
    /// Marks the command failed without running it (or after its batch was
    /// lost): its caller gets `error`.
    fn refuse(&mut self, error: LogError);
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), &LogError>);
}

pub(crate) enum Message {
    Run(Box<dyn Command>),
    /// Finish what is queued before this message, then exit.
    Stop,
}

/// A command built from a closure, answering through a oneshot channel.
pub(crate) struct ClosureCommand<F, T, E> {
    pub(crate) command: Option<F>,
    pub(crate) outcome: Option<Result<T, ExecuteError<E>>>,
    pub(crate) reply: oneshot::Sender<Result<T, ExecuteError<E>>>,
}

impl<F, T, E> Command for ClosureCommand<F, T, E>
where
    F: FnOnce(&mut SqliteTx<'_>) -> Result<T, E> + Send,
    T: Send,
    E: Send,
{
    fn run(&mut self, transaction: &mut SqliteTx<'_>) -> bool {
        let Some(command) = self.command.take() else {
            return false;
        };
        let outcome = caught(|| command(transaction));
        let keep = outcome.is_ok() && !transaction.poisoned;
        if outcome.is_ok() && transaction.poisoned {
            // The command swallowed a storage error; its writes are suspect.
            self.outcome = Some(Err(ExecuteError::Log(LogError::Storage {
                context: "running a command",
                message: "a storage error inside the command was ignored by it".to_owned(),
            })));
        } else {
            self.outcome = Some(outcome);
        }
        keep
    }

    fn refuse(&mut self, error: LogError) {
        self.command = None;
        self.outcome = Some(Err(ExecuteError::Log(error)));
    }

    fn finish(self: Box<Self>, commit: Result<(), &LogError>) {
        self.answer(commit);
    }
}

impl<F, T, E> ClosureCommand<F, T, E> {
    /// Answers the caller once the batch's fate is known: a command that
    /// ran well is answered with the commit's error if the batch was lost.
    pub(crate) fn answer(self, commit: Result<(), &LogError>) {
        let answer = match (self.outcome, commit) {
            (Some(Ok(_)), Err(error)) | (None, Err(error)) => Err(ExecuteError::Log(error.clone())),
            (Some(outcome), _) => outcome,
            (None, Ok(())) => Err(ExecuteError::Log(LogError::WriterStopped)),
        };
        // A caller that stopped waiting (a dropped request) is not an error.
        let _ = self.reply.send(answer);
    }
}

/// Runs a command closure, a panic caught as its error.
pub(crate) fn caught<T, E>(command: impl FnOnce() -> Result<T, E>) -> Result<T, ExecuteError<E>> {
    match catch_unwind(AssertUnwindSafe(command)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ExecuteError::Command(error)),
        Err(panic) => Err(ExecuteError::Panicked(crate::panic_message(&panic))),
    }
}

/// What every command's transaction is given: `LogOptions::clock` and
/// `LogOptions::keys`.
pub(crate) struct TxSettings {
    pub clock: fn() -> jiff::Timestamp,
    pub keys: Option<Arc<dyn KeySource>>,
}

/// What a command sees: the writer's open transaction.
pub struct SqliteTx<'c> {
    connection: &'c Connection,
    /// The last position written in this transaction (or found at its start).
    head: Option<Position>,
    /// Each tenant's last hash, as of this transaction.
    tenant_hashes: HashMap<String, ChainHash>,
    /// The last event's `recorded_at`, as of this transaction: a new event
    /// is never recorded earlier, so positions and times agree.
    last_recorded_at: Option<String>,
    /// Where "now" comes from (`LogOptions::clock`).
    clock: fn() -> jiff::Timestamp,
    /// The key store (`LogOptions::keys`).
    keys: Option<Arc<dyn KeySource>>,
    /// Set when a storage error happened inside the current command: its
    /// savepoint is rolled back even if the command returns `Ok`.
    poisoned: bool,
}

impl<'c> SqliteTx<'c> {
    fn new(
        connection: &'c Connection,
        clock: fn() -> jiff::Timestamp,
        keys: Option<Arc<dyn KeySource>>,
    ) -> SqliteTx<'c> {
        SqliteTx {
            connection,
            head: None,
            tenant_hashes: HashMap::new(),
            last_recorded_at: None,
            clock,
            keys,
            poisoned: false,
        }
    }

    /// The write connection, inside the open transaction and the command's
    /// savepoint, for inline projections to update their tables.
    pub fn connection(&self) -> &Connection {
        self.connection
    }

    /// Runs `step` in a savepoint of its own inside the command's
    /// (`dyn LogTransaction::nested` is how commands use it).
    fn nested_sqlite<T, E>(
        &mut self,
        step: impl FnOnce(&mut SqliteTx<'c>) -> Result<T, E>,
    ) -> Result<T, NestedError<E>> {
        let connection = self.connection;
        let opened = connection.prepare_cached("SAVEPOINT step").and_then(|mut s| s.execute([]));
        self.storage("opening a step's savepoint", opened).map_err(NestedError::Log)?;
        // A panicking step is undone alone, like a failing one; the command
        // and its other steps go on.
        let outcome = match catch_unwind(AssertUnwindSafe(|| step(self))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(NestedError::Step(error)),
            Err(panic) => Err(NestedError::Panicked(crate::panic_message(&panic))),
        };
        let closed = match &outcome {
            Ok(_) if !self.poisoned => {
                connection.prepare_cached("RELEASE step").and_then(|mut s| s.execute([]))
            }
            _ => {
                self.forget_caches();
                connection
                    .prepare_cached("ROLLBACK TO step")
                    .and_then(|mut s| s.execute([]))
                    .and_then(|_| {
                        connection.prepare_cached("RELEASE step").and_then(|mut s| s.execute([]))
                    })
            }
        };
        self.storage("closing a step's savepoint", closed).map_err(NestedError::Log)?;
        if self.poisoned {
            return Err(NestedError::Log(LogError::Storage {
                context: "running a step",
                message: "a storage error inside the step dooms its command".to_owned(),
            }));
        }
        outcome
    }

    fn forget_caches(&mut self) {
        self.head = None;
        self.last_recorded_at = None;
        self.tenant_hashes.clear();
    }

    fn storage<T>(
        &mut self,
        context: &'static str,
        result: rusqlite::Result<T>,
    ) -> Result<T, LogError> {
        result.map_err(|error| {
            self.poisoned = true;
            LogError::storage(context, error)
        })
    }

    fn head(&mut self) -> Result<Position, LogError> {
        if let Some(head) = self.head {
            return Ok(head);
        }
        // Cached: every command's first append asks (SQL parsing was 4 % of
        // the writer's time while this was `query_row`).
        let result = self
            .connection
            .prepare_cached(
                "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
                    .optional()
            });
        let (head, last_recorded_at) = match self.storage("reading the head position", result)? {
            Some((head, recorded_at)) => (Position::try_from(head).unwrap_or(0), Some(recorded_at)),
            None => (0, None),
        };
        self.head = Some(head);
        self.last_recorded_at = last_recorded_at;
        Ok(head)
    }

    fn tenant_hash(&mut self, tenant: &str) -> Result<ChainHash, LogError> {
        if let Some(hash) = self.tenant_hashes.get(tenant) {
            return Ok(*hash);
        }
        let result = self
            .connection
            .prepare_cached(
                "SELECT hash FROM events WHERE tenant = ?1 ORDER BY position DESC LIMIT 1",
            )
            .and_then(|mut statement| {
                statement.query_row([tenant], |row| row.get::<_, ChainHash>(0)).optional()
            });
        let hash = self.storage("reading the tenant's last hash", result)?.unwrap_or(ZERO_HASH);
        self.tenant_hashes.insert(tenant.to_owned(), hash);
        Ok(hash)
    }
}

impl LogTransaction for SqliteTx<'_> {
    fn db(&self) -> &dyn crate::db::Db {
        self.connection
    }

    fn keys(&self) -> Option<Arc<dyn KeySource>> {
        self.keys.clone()
    }

    fn read_stream(&mut self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError> {
        let read = self
            .connection
            .prepare_cached(&format!(
                "SELECT {} FROM events WHERE tenant = ?1 AND stream = ?2 ORDER BY version",
                super::read::COLUMNS
            ))
            .and_then(|mut statement| {
                statement
                    .query_map([tenant, stream], super::read::from_row)?
                    .collect::<Result<Vec<_>, _>>()
            });
        let rows = self.storage("reading a stream", read)?;
        rows.into_iter().map(|event| super::read::check(event, true)).collect()
    }

    fn nested_step(
        &mut self,
        step: &mut dyn FnMut(&mut dyn LogTransaction) -> bool,
    ) -> Result<(), NestedError<()>> {
        self.nested_sqlite(|tx| if step(tx) { Ok(()) } else { Err(()) })
    }

    fn stream_version(&mut self, tenant: &str, stream: &str) -> Result<Option<u64>, LogError> {
        let result = self
            .connection
            .prepare_cached("SELECT MAX(version) FROM events WHERE tenant = ?1 AND stream = ?2")
            .and_then(|mut statement| {
                statement.query_row([tenant, stream], |row| row.get::<_, Option<i64>>(0))
            });
        let version = self.storage("reading a stream version", result)?;
        Ok(version.and_then(|version| u64::try_from(version).ok()))
    }

    fn append(
        &mut self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        context: &CommandContext,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        crate::log::check_events(tenant, stream, events)?;
        let actual = self.stream_version(tenant, stream)?;
        crate::log::check_expected(tenant, stream, expected, actual)?;
        let mut position = self.head()?;
        let mut prev_hash = self.tenant_hash(tenant)?;
        // Never earlier than the event before it, even if the clock steps
        // back: an auditor's window of time is then a range of positions.
        // (The fixed-width UTC format compares correctly as text.)
        let mut recorded_at = crate::time::format_millis((self.clock)());
        if let Some(last) = &self.last_recorded_at
            && *last > recorded_at
        {
            recorded_at.clone_from(last);
        }
        let mut recorded = Vec::with_capacity(events.len());
        let first_version = actual.unwrap_or(0) + 1;
        for (version, event) in (first_version..).zip(events) {
            position += 1;
            let with_body = version == first_version;
            let metadata = serde_json::to_string(&Metadata::for_new_event(context, with_body))
                .map_err(|error| LogError::storage("encoding metadata", error))?;
            let canonical = CanonicalEvent {
                position,
                tenant,
                stream,
                version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                metadata: &metadata,
                recorded_at: &recorded_at,
            };
            let hash = canonical.chain_hash(&prev_hash);
            let result = self.connection.prepare_cached(
                "INSERT INTO events (position, tenant, stream, version, event_type, schema_version, \
                 payload, metadata, recorded_at, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    i64::try_from(position).unwrap_or(i64::MAX),
                    tenant,
                    stream,
                    i64::try_from(version).unwrap_or(i64::MAX),
                    event.event_type,
                    event.schema_version,
                    event.payload,
                    metadata,
                    recorded_at,
                    prev_hash,
                    hash,
                ])
            });
            self.storage("inserting an event", result)?;
            recorded.push(RecordedEvent {
                position,
                tenant: tenant.to_owned(),
                stream: stream.to_owned(),
                version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata,
                recorded_at: recorded_at.clone(),
                prev_hash,
                hash,
            });
            prev_hash = hash;
        }
        self.head = Some(position);
        self.last_recorded_at = Some(recorded_at);
        self.tenant_hashes.insert(tenant.to_owned(), prev_hash);
        Ok(recorded)
    }
}

/// Counters of the writer's work, for benchmarks, health reports and
/// metrics.
#[derive(Debug)]
pub struct WriterStats {
    /// Commands sent to the writer and not yet taken into a batch.
    pub queued: AtomicU64,
    /// Commands per committed batch.
    pub batch_commands: Histogram,
    /// Time of each batch's `COMMIT` (under `Durability::Full` it holds the
    /// WAL's fsync).
    pub commit_seconds: Histogram,
    /// Time of each `fdatasync` of the WAL by the syncer
    /// (`Durability::Pipelined` only).
    pub fsync_seconds: Histogram,
    /// Transactions committed (one per batch).
    pub batches_committed: AtomicU64,
    /// Commands whose effects were committed.
    pub commands_committed: AtomicU64,
    /// Commands rolled back alone (they failed, panicked or hit an error).
    pub commands_rolled_back: AtomicU64,
    /// Set for good when an fsync of the WAL failed: from then on no write
    /// can be promised durable, and every one is refused.
    pub durability_failed: AtomicBool,
    /// The highest position known to be on disk, set before the callers of
    /// its batch are answered: after the commit under `Durability::Full`
    /// (SQLite fsyncs the WAL inside it), after the syncer's `fdatasync`
    /// under `Pipelined`, never under `Normal` or `Off`, which promise no
    /// fsync. An answer for a position above it would be a broken promise.
    pub durable_position: AtomicU64,
    /// The head of the last batch this writer committed, for whoever waits
    /// for new events (the event feed's long polls): a reader sees it the
    /// moment it changes. Another process's commits are not in it.
    pub committed: tokio::sync::watch::Sender<Position>,
}

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            queued: AtomicU64::new(0),
            batch_commands: Histogram::counts(),
            commit_seconds: Histogram::seconds(),
            fsync_seconds: Histogram::seconds(),
            batches_committed: AtomicU64::new(0),
            commands_committed: AtomicU64::new(0),
            commands_rolled_back: AtomicU64::new(0),
            durability_failed: AtomicBool::new(false),
            durable_position: AtomicU64::new(0),
            committed: tokio::sync::watch::Sender::default(),
        }
    }
}

/// Committed batches waiting for the syncer's fsync, at most.
const SYNC_QUEUE_BATCHES_MAX: usize = 64;

/// A committed batch handed to the syncer: the log head it committed, and
/// its callers.
type Synced = (Position, Vec<Box<dyn Command>>);

/// The writer thread's loop: batch, run, commit, answer (directly, or
/// through the syncer under `Durability::Pipelined`); until told to stop or
/// every sender is gone.
pub(crate) fn run(
    connection: Connection,
    receiver: Receiver<Message>,
    batch_commands_max: usize,
    stats: Arc<WriterStats>,
    wal_sync: Option<PathBuf>,
    durable_at_commit: bool,
    settings: TxSettings,
) {
    let mut syncer = None;
    if let Some(wal_path) = wal_sync {
        let (sender, sync_receiver) = sync_channel::<Synced>(SYNC_QUEUE_BATCHES_MAX);
        let spawned = std::thread::Builder::new().name("rollcall-log-syncer".to_owned()).spawn({
            let stats = stats.clone();
            move || sync_loop(&wal_path, sync_receiver, &stats)
        });
        match spawned {
            Ok(handle) => syncer = Some((sender, handle)),
            Err(error) => {
                // Without a syncer nothing could be promised durable: refuse
                // every command rather than answer without an fsync.
                let error = LogError::storage("starting the syncer thread", error);
                while let Ok(message) = receiver.recv() {
                    if let Message::Run(command) = message {
                        command.finish(Err(&error));
                    }
                }
                return;
            }
        }
    }
    let mut batch: Vec<Box<dyn Command>> = Vec::with_capacity(batch_commands_max);
    let mut stopping = false;
    while !stopping {
        match receiver.recv() {
            Ok(Message::Run(command)) => {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                batch.push(command);
            }
            Ok(Message::Stop) | Err(_) => break,
        }
        while batch.len() < batch_commands_max {
            match receiver.try_recv() {
                Ok(Message::Run(command)) => {
                    stats.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push(command);
                }
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let committed = commit_batch(&connection, &mut batch, &stats, &settings);
        if let Ok(head) = &committed {
            let head = *head;
            stats.committed.send_if_modified(|last| {
                let moved = head > *last;
                *last = (*last).max(head);
                moved
            });
        }
        match (&syncer, committed) {
            (Some((sender, _)), Ok(head)) => {
                let waiting = std::mem::replace(&mut batch, Vec::with_capacity(batch_commands_max));
                if let Err(returned) = sender.send((head, waiting)) {
                    let error = LogError::storage(
                        "handing a batch to the syncer",
                        "the syncer has stopped",
                    );
                    for command in returned.0.1 {
                        command.finish(Err(&error));
                    }
                }
            }
            (_, committed) => {
                if durable_at_commit && let Ok(head) = &committed {
                    stats.durable_position.fetch_max(*head, Ordering::Release);
                }
                for command in batch.drain(..) {
                    command.finish(committed.as_ref().map(|_| ()));
                }
            }
        }
    }
    if let Some((sender, handle)) = syncer {
        // The syncer answers what it holds, then sees the channel close.
        drop(sender);
        if handle.join().is_err() {
            tracing::error!("the log syncer thread panicked");
        }
    }
    tracing::debug!("log writer stopped");
}

/// The syncer's loop: take every committed batch waiting, fsync the WAL
/// once for all of them, answer their callers.
///
/// Every batch received was committed before it was sent, so one
/// `fdatasync` begun after receiving covers all of them. Once an fsync
/// fails, nothing written since can be promised durable (the kernel may
/// have dropped the dirty pages), so every later batch is refused too.
fn sync_loop(wal_path: &Path, receiver: Receiver<Synced>, stats: &WriterStats) {
    let mut wal_file: Option<File> = None;
    let mut failed: Option<LogError> = None;
    while let Ok(first) = receiver.recv() {
        let mut batches = vec![first];
        while let Ok(more) = receiver.try_recv() {
            batches.push(more);
        }
        let synced = match &failed {
            Some(error) => Err(error.clone()),
            None => {
                let started = std::time::Instant::now();
                let synced = sync_wal(&mut wal_file, wal_path);
                stats.fsync_seconds.observe_duration(started.elapsed());
                synced
            }
        };
        match &synced {
            Ok(()) => {
                let head = batches.iter().map(|(head, _)| *head).max().unwrap_or(0);
                stats.durable_position.fetch_max(head, Ordering::Release);
            }
            Err(error) => {
                tracing::error!(%error, "fsync of the write-ahead log failed; refusing further writes");
                failed = Some(error.clone());
                stats.durability_failed.store(true, Ordering::Relaxed);
            }
        }
        for command in batches.into_iter().flat_map(|(_, commands)| commands) {
            command.finish(synced.as_ref().map(|_| ()));
        }
    }
}

fn sync_wal(wal_file: &mut Option<File>, wal_path: &Path) -> Result<(), LogError> {
    // The WAL file lives as long as any connection to the database is open,
    // and the writer's connection is open for as long as this thread runs,
    // so the handle opened once stays the file SQLite writes.
    let file =
        match wal_file {
            Some(file) => file,
            None => wal_file.insert(File::open(wal_path).map_err(|error| {
                LogError::storage("opening the write-ahead log to sync it", error)
            })?),
        };
    file.sync_data().map_err(|error| LogError::storage("syncing the write-ahead log", error))
}

/// Runs and commits one batch, and returns the log head it committed. Does
/// not answer the callers: the caller of this function does, once the
/// batch is as durable as promised.
fn commit_batch(
    connection: &Connection,
    batch: &mut [Box<dyn Command>],
    stats: &WriterStats,
    settings: &TxSettings,
) -> Result<Position, LogError> {
    // A transaction left open by an earlier failure (a ROLLBACK that failed
    // too) would make every later BEGIN fail: clear it first.
    if !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    if stats.durability_failed.load(Ordering::Relaxed) {
        return Err(LogError::Storage {
            context: "refusing writes",
            message: "an earlier fsync of the write-ahead log failed; check the disk and restart rollcall"
                .to_owned(),
        });
    }
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        return Err(LogError::storage("beginning a batch", error));
    }
    let mut transaction = SqliteTx::new(connection, settings.clock, settings.keys.clone());
    let mut kept = 0u64;
    let mut aborted: Option<LogError> = None;
    for command in batch.iter_mut() {
        if let Some(error) = &aborted {
            command.refuse(error.clone());
            continue;
        }
        if connection.is_autocommit() {
            // SQLite ended the transaction by itself (a full disk, an I/O
            // error, no memory): nothing of this batch can commit, and a
            // SAVEPOINT now would quietly start a transaction of its own.
            let error = LogError::Storage {
                context: "running a batch",
                message: "SQLite rolled the transaction back".to_owned(),
            };
            command.refuse(error.clone());
            aborted = Some(error);
            continue;
        }
        let opened = connection.prepare_cached("SAVEPOINT command").and_then(|mut s| s.execute([]));
        if let Err(error) = opened {
            // Without a savepoint the command's writes could not be undone
            // alone; give it no chance to write.
            command.refuse(LogError::storage("opening a command's savepoint", error));
            continue;
        }
        transaction.poisoned = false;
        let keep = command.run(&mut transaction);
        kept += u64::from(keep);
        let closed = if keep {
            connection.prepare_cached("RELEASE command").and_then(|mut s| s.execute([]))
        } else {
            transaction.forget_caches();
            connection
                .prepare_cached("ROLLBACK TO command")
                .and_then(|mut s| s.execute([]))
                .and_then(|_| {
                    connection.prepare_cached("RELEASE command").and_then(|mut s| s.execute([]))
                })
        };
        if let Err(error) = closed {
            // The transaction is no longer the one the commands ran in.
            tracing::error!(%error, "closing a command's savepoint failed; abandoning the batch");
            aborted = Some(LogError::storage("closing a command's savepoint", error));
        }
    }
    if aborted.is_none() && connection.is_autocommit() {
        aborted = Some(LogError::Storage {
            context: "running a batch",
            message: "SQLite rolled the transaction back".to_owned(),
        });
    }
    if let Some(error) = aborted {
        if !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        return Err(error);
    }
    // The head as committed: cached after the last append, read once when
    // a rollback at the end of the batch dropped the cache.
    let head = match transaction.head() {
        Ok(head) => head,
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            return Err(error);
        }
    };
    let started = std::time::Instant::now();
    let committed = connection.execute_batch("COMMIT").map_err(|error| {
        // Leave no half-open transaction behind for the next batch.
        let _ = connection.execute_batch("ROLLBACK");
        LogError::storage("committing a batch", error)
    });
    if committed.is_ok() {
        let total = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        stats.commit_seconds.observe_duration(started.elapsed());
        stats.batch_commands.observe_count(total);
        stats.batches_committed.fetch_add(1, Ordering::Relaxed);
        stats.commands_committed.fetch_add(kept, Ordering::Relaxed);
        stats.commands_rolled_back.fetch_add(total - kept, Ordering::Relaxed);
    }
    committed.map(|()| head)
}
