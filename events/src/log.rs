//! The storage-neutral face of the log: what the rest of rollcall may ask of
//! it, whatever engine holds the bytes.
//!
//! [`EventLog`] is what readers and simple appenders use. [`LogTransaction`]
//! is what a command sees inside the writer: it reads stream versions and
//! appends, and its appends commit or vanish together with everything else
//! the command did. `SqliteTx` ([`crate::sqlite`]) and `PgTx`
//! ([`crate::postgres`]) both implement [`LogTransaction`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::db::Db;
use crate::seal::KeySource;
use crate::{
    AppendError, ChainHash, CommandContext, ExecuteError, ExpectedVersion, LogError, NestedError,
    NewEvent, Position, RecordedEvent,
};

/// The append-only event log.
/// What stops a walk of the log (`visit_forward` of either backend): the
/// log failed, or the visitor did.
#[derive(Debug)]
pub enum VisitError<E> {
    Log(LogError),
    Visitor(E),
}

pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` to one stream, atomically, if the stream is at
    /// `expected`. Answers once the events are durable.
    fn append(
        &self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        context: CommandContext,
    ) -> Pending<Vec<RecordedEvent>, AppendError>;

    /// Every event of one stream, in version order.
    fn read_stream(&self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError>;

    /// Every event after `after`, in position order, fetched page by page so
    /// memory stays bounded however long the log is.
    fn read_forward(
        &self,
        after: Position,
        tenant: Option<&str>,
    ) -> Box<dyn Iterator<Item = Result<RecordedEvent, LogError>> + Send + '_>;

    /// The position of the last event, 0 for an empty log.
    fn head(&self) -> Result<Position, LogError>;

    /// The position of the tenant's last event, 0 when it has none: moves
    /// only when that tenant's state does, unlike [`EventLog::head`].
    fn tenant_head(&self, tenant: &str) -> Result<Position, LogError>;

    /// Walks the hash chain and reports the first event that does not match.
    fn verify(&self, scope: VerifyScope) -> Result<VerifyReport, LogError>;
}

/// What a command may do from inside the writer's transaction, on either
/// engine: read stream versions and append, write its inline projections
/// through [`LogTransaction::db`], and run independent steps that fail
/// alone. Object-safe: commands take `&mut dyn LogTransaction`.
pub trait LogTransaction {
    /// The open transaction's connection, for inline projections and the
    /// command's own reads (they see its writes).
    fn db(&self) -> &dyn Db;

    /// The key store the log was opened with (`LogOptions::keys`): a
    /// handle of its own, so a command may hold it while it appends.
    fn keys(&self) -> Option<std::sync::Arc<dyn KeySource>>;

    /// Every event of one stream, in version order, as this transaction
    /// sees them (its own appends included), hashes checked.
    fn read_stream(&mut self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError>;

    /// Runs `step` in a savepoint of its own; see [`dyn LogTransaction::nested`],
    /// which is how callers use it. `step` answers whether it succeeded.
    fn nested_step(
        &mut self,
        step: &mut dyn FnMut(&mut dyn LogTransaction) -> bool,
    ) -> Result<(), NestedError<()>>;

    /// The version of the stream's last event, `None` if it has none.
    fn stream_version(&mut self, tenant: &str, stream: &str) -> Result<Option<u64>, LogError>;

    /// Appends `events` to one stream if it is at `expected`.
    fn append(
        &mut self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        context: &CommandContext,
    ) -> Result<Vec<RecordedEvent>, AppendError>;
}

impl dyn LogTransaction + '_ {
    /// Runs `step` in a savepoint of its own inside the command's, for a
    /// command made of independent steps (a SCIM Bulk request): an `Err`
    /// (or a panic) undoes that step's writes only, and the command goes
    /// on. A storage error inside the step still dooms the whole command,
    /// as it would anywhere else in it.
    pub fn nested<T, E>(
        &mut self,
        step: impl FnOnce(&mut dyn LogTransaction) -> Result<T, E>,
    ) -> Result<T, NestedError<E>> {
        let mut step = Some(step);
        let mut outcome = None;
        let ran = self.nested_step(&mut |tx| {
            let Some(step) = step.take() else { return false };
            let result = step(tx);
            let ok = result.is_ok();
            outcome = Some(result);
            ok
        });
        match (ran, outcome) {
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(NestedError::Log(error)), _) => Err(NestedError::Log(error)),
            (Err(NestedError::Panicked(message)), _) => Err(NestedError::Panicked(message)),
            (_, Some(Err(error))) => Err(NestedError::Step(error)),
            (_, None) | (Err(NestedError::Step(())), Some(Ok(_))) => {
                Err(NestedError::Log(LogError::Storage {
                    context: "running a step",
                    message: "the step did not run".to_owned(),
                }))
            }
        }
    }
}

/// Which chains [`EventLog::verify`] walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyScope {
    /// Every tenant's chain, and the gaplessness of global positions.
    All,
    /// One tenant's chain.
    Tenant(String),
}

/// The head of one chain: what an auditor writes down to compare later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub tenant: String,
    pub position: Position,
    pub hash: ChainHash,
    pub events: u64,
}

/// What a verify walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many events were checked.
    pub events_checked: u64,
    /// The last event of each chain walked, by tenant id.
    pub heads: Vec<ChainHead>,
    /// The first event that does not match, if any.
    pub failure: Option<VerifyFailure>,
    /// Guard triggers missing from the file: its events were open to
    /// edits (the chain still tells whether any was made).
    pub missing_guards: Vec<String>,
    /// Guard triggers present under their names that are not what rollcall
    /// wrote (one that refuses nothing, say): as open to edits as missing.
    pub altered_guards: Vec<String>,
}

impl VerifyReport {
    /// No inconsistent event and every guard in place, as written.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none() && self.missing_guards.is_empty() && self.altered_guards.is_empty()
    }
}

/// The first inconsistency a verify walk met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    pub position: Position,
    pub tenant: String,
    pub problem: VerifyProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyProblem {
    /// The stored hash is not the hash of the stored bytes: the event was
    /// edited.
    HashMismatch,
    /// The stored previous hash is not the hash of the tenant's previous
    /// event: an event was removed, inserted or reordered.
    BrokenLink,
    /// A global position is missing: an event was removed.
    PositionGap,
}

impl VerifyProblem {
    /// What is wrong with `event` in its chain, if anything: `in_order`
    /// is whether its position follows the one before it (each backend
    /// has its rule), `prev` the hash it must link to.
    pub fn of(
        event: &crate::EventRef<'_>,
        in_order: bool,
        prev: &ChainHash,
    ) -> Option<VerifyProblem> {
        if !in_order {
            Some(VerifyProblem::PositionGap)
        } else if event.prev_hash != prev {
            Some(VerifyProblem::BrokenLink)
        } else if !event.hash_is_consistent() {
            Some(VerifyProblem::HashMismatch)
        } else {
            None
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            VerifyProblem::HashMismatch => "stored hash does not match the event's bytes",
            VerifyProblem::BrokenLink => "previous hash does not match the chain",
            VerifyProblem::PositionGap => "a position before this one is missing",
        }
    }
}

/// The answer to a command handed to the writer, delivered once its batch
/// has committed. Await it from async code, or [`Pending::wait`] for it from
/// a plain thread.
#[derive(Debug)]
pub struct Pending<T, E> {
    receiver: oneshot::Receiver<Result<T, ExecuteError<E>>>,
}

impl<T, E> Pending<T, E> {
    pub(crate) fn new(receiver: oneshot::Receiver<Result<T, ExecuteError<E>>>) -> Pending<T, E> {
        Pending { receiver }
    }

    /// An answer that is already known (a command refused before queueing).
    pub fn ready(result: Result<T, ExecuteError<E>>) -> Pending<T, E> {
        let (sender, receiver) = oneshot::channel();
        // The receiver is alive in this scope, so the send cannot fail.
        let _ = sender.send(result);
        Pending { receiver }
    }

    /// Blocks the current thread until the answer arrives. Must not be called
    /// from inside an async runtime.
    pub fn wait(self) -> Result<T, ExecuteError<E>> {
        self.receiver.blocking_recv().unwrap_or(Err(ExecuteError::Log(LogError::WriterStopped)))
    }
}

impl<T, E> Future for Pending<T, E> {
    type Output = Result<T, ExecuteError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(ExecuteError::Log(LogError::WriterStopped))))
    }
}

/// Flattens an append's answer: a command error that is itself an
/// [`AppendError`] and a log error read the same to the caller.
pub fn flatten_append<T>(result: Result<T, ExecuteError<AppendError>>) -> Result<T, AppendError> {
    match result {
        Ok(value) => Ok(value),
        Err(ExecuteError::Command(error)) => Err(error),
        Err(ExecuteError::Log(error)) => Err(AppendError::Log(error)),
        Err(ExecuteError::Panicked(message)) => Err(AppendError::Log(LogError::Storage {
            context: "running an append",
            message: format!("the command panicked: {message}"),
        })),
    }
}

/// What every backend checks of an append before it writes: a tenant and
/// a stream named, each event well-formed (a type, a version, a JSON
/// payload).
pub(crate) fn check_events(
    tenant: &str,
    stream: &str,
    events: &[crate::NewEvent],
) -> Result<(), crate::AppendError> {
    let invalid = |reason: &str| crate::AppendError::InvalidEvent {
        stream: stream.to_owned(),
        reason: reason.to_owned(),
    };
    if tenant.is_empty() || stream.is_empty() {
        return Err(invalid("empty tenant or stream"));
    }
    for event in events {
        if event.event_type.is_empty() {
            return Err(invalid("empty event type"));
        }
        if event.schema_version == 0 {
            return Err(invalid("schema version 0"));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&event.payload).is_err() {
            return Err(invalid("payload is not JSON"));
        }
    }
    Ok(())
}

/// The stream's version check: a conflict names what was expected and
/// what is there.
pub(crate) fn check_expected(
    tenant: &str,
    stream: &str,
    expected: crate::ExpectedVersion,
    actual: Option<u64>,
) -> Result<(), crate::AppendError> {
    if expected.accepts(actual) {
        return Ok(());
    }
    Err(crate::AppendError::Conflict {
        tenant: tenant.to_owned(),
        stream: stream.to_owned(),
        expected,
        actual,
    })
}
