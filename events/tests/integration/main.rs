//! The log's integration tests: real SQLite files in temp dirs, real threads,
//! one binary with a module per theme.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod append;
mod changes;
mod group_commit;
mod immutability;
mod postgres;
mod upcasting;
mod util;
