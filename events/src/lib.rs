//! rollcall's vocabulary and its append-only, hash-chained event log.
//!
//! # Brief overview
//!
//! Everything rollcall knows is a fact in this log. The crate has two halves:
//!
//! * The vocabulary: [`Event`] is the enum of every fact rollcall records, in
//!   the past tense, each variant with its own payload type and schema
//!   version. Payloads are the on-disk contract: changing one means a new
//!   schema version and an upcaster in [`event`], never an edit in place.
//! * The log: [`EventLog`] is the storage-neutral trait (append with an
//!   expected stream version, read one stream, read forward from a global
//!   position, head, verify) and [`sqlite::SqliteLog`] is its SQLite
//!   implementation. One writer thread owns the write connection and commits
//!   whatever is queued as one transaction (group commit), each command in its
//!   own savepoint, so a failing command fails alone.
//!
//! The log stores bytes ([`NewEvent`], [`RecordedEvent`]); [`Event::encode`]
//! and [`Event::decode`] turn typed events into those bytes and back,
//! upcasting older schema versions on the way in.
//!
//! This crate knows nothing of HTTP, SCIM wire formats or projections.

pub mod db;
pub mod envelope;
pub mod error;
pub mod event;
pub mod hash;
pub mod histogram;
pub mod log;
pub mod postgres;
pub mod seal;
pub mod sqlite;
pub mod time;

/// A closed set of words the log or a projection records (what started a
/// run, how it ended, ...), as an enum whose serialised form is the word
/// itself: a field that was a `String` becomes one of these without a byte
/// of stored JSON changing, and a comparison is checked by the compiler
/// instead of by spelling.
#[macro_export]
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $word:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $word)] $variant,)*
        }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word as stored.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word,)* }
            }

            /// The variant a stored word names, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($word => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    };
}

pub use envelope::{
    Actor, Cause, CommandContext, EventRef, ExpectedVersion, Metadata, NewEvent, Position,
    RecordedEvent, RequestRecord, SYSTEM_TENANT,
};
pub use error::{AppendError, DecodeError, ExecuteError, LogError, NestedError};
pub use event::{Event, Subject};
pub use hash::{ChainHash, ZERO_HASH};
pub use log::{
    ChainHead, EventLog, LogTransaction, Pending, VerifyFailure, VerifyProblem, VerifyReport,
    VerifyScope, VisitError,
};

/// The text of a caught panic, for the error a command or step answers.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}
