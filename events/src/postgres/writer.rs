//! The PostgreSQL writer of one node: lanes of threads, group commit per
//! tenant.
//!
//! Commands arrive tagged with their tenant. A free lane takes the oldest
//! queued command whose tenant no other lane of this node is writing, and
//! with it every later queued command of that tenant (up to
//! `batch_commands_max`), and runs them in one transaction, each in its own
//! savepoint, as the SQLite writer does: a command that fails or panics is
//! undone alone, and every caller is answered only after the commit (one
//! WAL flush for the batch, `synchronous_commit` on). Different tenants'
//! batches run on different lanes at once.
//!
//! Invariants:
//! * A transaction appends under one tenant's head row, taken `FOR UPDATE`
//!   by the first append (`PgTx`), so no two transactions of any nodes can
//!   wait on each other's heads in a cycle: a batch holds the head of one
//!   tenant only. (A command that appends to a second tenant, as a tenant
//!   creation records in the system tenant, may meet a deadlock that
//!   PostgreSQL breaks by failing one transaction; its callers get the
//!   storage error.)
//! * One node never runs two batches of one tenant at once, so its
//!   commands of one tenant commit in the order they were queued.
//!
//! This module owns the queue and the lanes; the SQL of appending is
//! `PgTx`'s.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{PgPool, PgTx};
use crate::log::{LogTransaction, Pending};
use crate::seal::KeySource;
use crate::sqlite::writer::{ClosureCommand, caught};
use crate::{ExecuteError, LogError, NestedError};

/// The channel every commit of every node's writer is announced on.
pub const COMMITS_CHANNEL: &str = "rollcall_commits";

/// How a node's writer runs.
#[derive(Clone)]
pub struct PgWriterOptions {
    /// Threads writing at once, each on a pooled connection of its own.
    pub lanes: usize,
    /// Commands of one tenant in one transaction, at most.
    pub batch_commands_max: usize,
    /// Commands queued, at most, before new ones are refused as overload.
    pub queue_commands_max: usize,
    /// Where "now" comes from.
    pub clock: fn() -> jiff::Timestamp,
    /// The key store commands seal with.
    pub keys: Option<Arc<dyn KeySource>>,
}

impl std::fmt::Debug for PgWriterOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgWriterOptions")
            .field("lanes", &self.lanes)
            .field("batch_commands_max", &self.batch_commands_max)
            .field("queue_commands_max", &self.queue_commands_max)
            .finish_non_exhaustive()
    }
}

impl Default for PgWriterOptions {
    fn default() -> PgWriterOptions {
        PgWriterOptions {
            lanes: 8,
            batch_commands_max: 64,
            queue_commands_max: 4096,
            clock: jiff::Timestamp::now,
            keys: None,
        }
    }
}

/// A queued command, type-erased so one queue carries every result type.
trait Command: Send {
    /// Runs it; whether it succeeded.
    fn run(&mut self, transaction: &mut dyn LogTransaction) -> bool;
    /// Its writes were undone after it ran well: answer `error`.
    fn spoil(&mut self, error: LogError);
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), &LogError>);
}

impl<F, T, E> Command for ClosureCommand<F, T, E>
where
    F: FnOnce(&mut dyn LogTransaction) -> Result<T, E> + Send,
    T: Send,
    E: Send,
{
    fn run(&mut self, transaction: &mut dyn LogTransaction) -> bool {
        let Some(command) = self.command.take() else { return false };
        let outcome = caught(|| command(transaction));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn spoil(&mut self, error: LogError) {
        self.outcome = Some(Err(ExecuteError::Log(error)));
    }

    fn finish(self: Box<Self>, commit: Result<(), &LogError>) {
        self.answer(commit);
    }
}

/// A batch a lane runs: its tenant (`None` for a command alone) and its
/// commands in queue order.
type Batch = (Option<String>, Vec<Box<dyn Command>>);

struct Job {
    /// `None`: a command whose tenant is known only once it runs; it runs
    /// in a transaction of its own.
    tenant: Option<String>,
    command: Box<dyn Command>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Tenants a lane is writing now.
    busy: HashSet<String>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Moved after every commit of this node's writer: what readers that
    /// tail the log (the feed, webhook delivery) wait on.
    committed: tokio::sync::watch::Sender<u64>,
    wake: Condvar,
    pool: Arc<PgPool>,
    options: PgWriterOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A lane that panicked holding the lock left the queue consistent:
        // every change to it is a single push or drain.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next batch: the oldest job of a tenant no lane is writing, and
    /// the later jobs of that tenant. `None` once stopping and drained.
    fn take(&self) -> Option<Batch> {
        let mut queue = self.lock();
        loop {
            let free = queue.jobs.iter().position(|job| {
                job.tenant.as_ref().is_none_or(|tenant| !queue.busy.contains(tenant))
            });
            if let Some(first) = free {
                let tenant = queue.jobs.get(first).and_then(|job| job.tenant.clone());
                let Some(tenant) = tenant else {
                    let alone = queue.jobs.remove(first).map(|job| job.command);
                    return Some((None, alone.into_iter().collect()));
                };
                let mut batch = Vec::new();
                let mut index = first;
                while index < queue.jobs.len() && batch.len() < self.options.batch_commands_max {
                    if queue.jobs.get(index).is_some_and(|job| job.tenant.as_ref() == Some(&tenant))
                    {
                        if let Some(job) = queue.jobs.remove(index) {
                            batch.push(job.command);
                        }
                    } else {
                        index += 1;
                    }
                }
                queue.busy.insert(tenant.clone());
                return Some((Some(tenant), batch));
            }
            if queue.stopping && queue.jobs.is_empty() {
                return None;
            }
            queue = self.wake.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn done(&self, tenant: Option<&str>) {
        if let Some(tenant) = tenant {
            self.lock().busy.remove(tenant);
        }
        self.wake.notify_all();
    }

    /// Runs one batch in one transaction and answers its callers.
    fn run(&self, mut batch: Vec<Box<dyn Command>>) {
        let began = self
            .pool
            .get()
            .map_err(|error| LogError::storage("taking a connection", error))
            .and_then(PgTx::begin);
        let mut tx = match began {
            Ok(tx) => tx.with(self.options.clock, self.options.keys.clone()),
            Err(error) => {
                for command in batch {
                    command.finish(Err(&error));
                }
                return;
            }
        };
        for command in &mut batch {
            let stepped = tx.nested_step(&mut |transaction| command.run(transaction));
            match stepped {
                Ok(()) | Err(NestedError::Step(())) => {}
                Err(NestedError::Log(error)) => command.spoil(error),
                Err(NestedError::Panicked(message)) => {
                    command.spoil(LogError::Storage { context: "running a command", message })
                }
            }
        }
        // Every node's readers that tail the log hear of the commit
        // (`PgPool::listen`); a notification is sent only if it commits.
        let committed = tx
            .connection()
            .execute_batch(&format!("NOTIFY {COMMITS_CHANNEL}"))
            .map_err(|error| LogError::storage("announcing a commit", error))
            .and_then(|()| tx.commit());
        if committed.is_ok() {
            self.committed.send_modify(|commits| *commits = commits.wrapping_add(1));
        }
        for command in batch {
            command.finish(committed.as_ref().map(|_| ()));
        }
    }
}

/// The writer of one node on one PostgreSQL database.
pub struct PgWriter {
    shared: Arc<Shared>,
    lanes: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgWriter").field("options", &self.shared.options).finish()
    }
}

impl PgWriter {
    /// Starts `options.lanes` lanes writing through `pool`.
    pub fn start(pool: Arc<PgPool>, options: PgWriterOptions) -> Result<PgWriter, LogError> {
        let lanes = options.lanes.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            committed: tokio::sync::watch::Sender::new(0),
            wake: Condvar::new(),
            pool,
            options,
        });
        let mut handles = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("rollcall-pg-writer-{lane}"))
                .spawn(move || {
                    while let Some((tenant, batch)) = shared.take() {
                        shared.run(batch);
                        shared.done(tenant.as_deref());
                    }
                })
                .map_err(|error| LogError::storage("starting a writer lane", error))?;
            handles.push(handle);
        }
        Ok(PgWriter { shared, lanes: Mutex::new(handles) })
    }

    /// Runs `command` in the next batch of `tenant`, inside that batch's
    /// transaction and its own savepoint. `Err` from the command rolls back
    /// everything it did; `Ok` is answered only after the batch commits.
    pub fn execute<T, E, F>(&self, tenant: &str, command: F) -> Pending<T, E>
    where
        F: FnOnce(&mut dyn LogTransaction) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.queue(Some(tenant.to_owned()), command)
    }

    /// Runs `command` in a transaction of its own: for a command that
    /// finds out which tenant it writes only as it runs (a token's use, a
    /// revocation by id), which batched with one tenant's commands could
    /// hold a second tenant's head.
    pub fn execute_alone<T, E, F>(&self, command: F) -> Pending<T, E>
    where
        F: FnOnce(&mut dyn LogTransaction) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.queue(None, command)
    }

    fn queue<T, E, F>(&self, tenant: Option<String>, command: F) -> Pending<T, E>
    where
        F: FnOnce(&mut dyn LogTransaction) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job = ClosureCommand { command: Some(command), outcome: None, reply };
        {
            let mut queue = self.shared.lock();
            if queue.stopping {
                return Pending::ready(Err(ExecuteError::Log(LogError::WriterStopped)));
            }
            if queue.jobs.len() >= self.shared.options.queue_commands_max {
                return Pending::ready(Err(ExecuteError::Log(LogError::Overloaded {
                    queue_max: self.shared.options.queue_commands_max,
                })));
            }
            queue.jobs.push_back(Job { tenant, command: Box::new(job) });
        }
        self.shared.wake.notify_one();
        Pending::new(receiver)
    }

    /// Wakes whenever a batch of this node's writer commits (the value
    /// counts the commits).
    pub fn watch_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// What moves [`PgWriter::watch_commits`] from outside: another
    /// node's commit, heard on [`COMMITS_CHANNEL`].
    pub fn commit_signal(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.committed.send_modify(|commits| *commits = commits.wrapping_add(1))
    }

    /// Whether commands submitted now can run: the lanes have not been
    /// stopped.
    pub fn is_running(&self) -> bool {
        !self.shared.lock().stopping
    }

    /// Lets queued commands finish and stops the lanes.
    pub fn shutdown(&self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        let lanes = std::mem::take(
            &mut *self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for lane in lanes {
            let _ = lane.join();
        }
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}
