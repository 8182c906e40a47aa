//! The errors of the log layer: one enum per way a caller must react.
//!
//! [`LogError`] is storage trouble or a broken promise of the log itself;
//! [`AppendError`] adds the one error a well-behaved caller must expect, the
//! stream version conflict; [`ExecuteError`] wraps a command's own error;
//! [`DecodeError`] is a stored payload that no longer reads.

use crate::{ExpectedVersion, Position};

/// Trouble in the log itself. None of these is the caller's fault; an HTTP
/// layer answers them with 500 (or 503 while shutting down).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The storage engine refused an operation.
    #[error("storage error while {context}: {message}")]
    Storage { context: &'static str, message: String },
    /// The writer thread has stopped (shutdown, or it died); nothing more can
    /// be appended through this handle.
    #[error("the log writer has stopped")]
    WriterStopped,
    /// The writer's queue is full; the caller should retry later (an HTTP
    /// layer answers 503 with Retry-After).
    #[error("the log writer is overloaded ({queue_max} commands queued)")]
    Overloaded { queue_max: usize },
    /// A stored event does not hash to what the chain says: the log was
    /// edited behind the triggers' back.
    #[error("hash chain broken at position {position}: {what}")]
    HashMismatch { position: Position, what: &'static str },
    /// The log's layout is not one this build understands.
    #[error("unsupported log schema version {found} (this build knows up to {known})")]
    UnsupportedSchema { found: i64, known: i64 },
    /// The file is not a rollcall database (or not yet one).
    #[error("not a rollcall database: {reason}")]
    NotALog { reason: String },
    /// The log was opened read-only; nothing can be appended through it.
    #[error("the log was opened read-only")]
    ReadOnly,
    /// A stored event cannot be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A read ran past the time budget it was borrowed with, and SQLite
    /// interrupted it.
    #[error("a read ran past its time budget while {context}")]
    Interrupted { context: &'static str },
}

impl LogError {
    /// Wraps a storage engine error with what the log was doing.
    pub fn storage(context: &'static str, error: impl std::fmt::Display + 'static) -> LogError {
        let any = &error as &dyn std::any::Any;
        let sqlite = any.downcast_ref::<rusqlite::Error>();
        let seam = any.downcast_ref::<crate::db::DbError>();
        if sqlite.is_some_and(is_interrupt) || seam.is_some_and(crate::db::DbError::is_interrupt) {
            return LogError::Interrupted { context };
        }
        LogError::Storage { context, message: error.to_string() }
    }
}

/// Whether SQLite interrupted the statement (a read's time budget ran out).
pub fn is_interrupt(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream is not at the expected version: somebody else wrote first.
    /// Reload and decide again (an HTTP layer answers 409 or 412).
    #[error("stream {stream} of tenant {tenant} is at version {actual:?}, expected {expected:?}")]
    Conflict { tenant: String, stream: String, expected: ExpectedVersion, actual: Option<u64> },
    /// An event handed to the log is malformed (an empty type, payload that
    /// is not JSON); a programming error in the caller.
    #[error("invalid event for stream {stream}: {reason}")]
    InvalidEvent { stream: String, reason: String },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a command run by the writer produced no result for its caller.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The command decided to fail; nothing it wrote was kept.
    #[error(transparent)]
    Command(E),
    /// The command succeeded but its batch could not be committed, or the
    /// writer is gone.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The command panicked; its savepoint was rolled back and the writer
    /// went on with the rest of the batch.
    #[error("the command panicked: {0}")]
    Panicked(String),
}

/// Why a nested step of a command (`SqliteTx::nested`) was undone.
#[derive(Debug, thiserror::Error)]
pub enum NestedError<E> {
    /// The step decided to fail; its writes were undone, the command's
    /// others stand.
    #[error(transparent)]
    Step(E),
    /// Storage failed: the whole command is lost, and should give up.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The step panicked; its writes were undone, the command's others
    /// stand.
    #[error("the step panicked: {0}")]
    Panicked(String),
}

/// A stored event that cannot be turned into an [`crate::Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type:?}")]
    UnknownType { event_type: String },
    #[error(
        "{event_type} schema version {schema_version} is newer than this build knows ({known})"
    )]
    FutureVersion { event_type: String, schema_version: u32, known: u32 },
    #[error("{event_type} v{schema_version} payload does not decode: {message}")]
    Payload { event_type: String, schema_version: u32, message: String },
    #[error("metadata of position {position} does not decode: {message}")]
    Metadata { position: Position, message: String },
    /// A sealed personal value that does not open: no key store was
    /// given, its key is missing from it, or the value was edited or moved.
    #[error("{event_type} v{schema_version}: {source}")]
    Sealed {
        event_type: String,
        schema_version: u32,
        #[source]
        source: crate::seal::SealError,
    },
}
