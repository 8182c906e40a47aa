//! SQL functions the projections' queries use, registered on every
//! connection through `LogOptions::connection_setup`.
//!
//! `scim_fold(text)` folds case the way Rust's `str::to_lowercase` does, so
//! a case-insensitive comparison in SQL and the same comparison in Rust
//! agree for every script, not only ASCII (SQLite's `lower()` and `NOCASE`
//! fold ASCII only).

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

/// Folds a string for case-insensitive comparison.
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// Registers the functions on one connection.
pub fn register(connection: &Connection) -> rusqlite::Result<()> {
    connection.create_scalar_function(
        "scim_fold",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |context| {
            let value = context.get_raw(0);
            Ok(match value {
                rusqlite::types::ValueRef::Text(bytes) => Some(fold(
                    std::str::from_utf8(bytes)
                        .map_err(|error| rusqlite::Error::UserFunctionError(Box::new(error)))?,
                )),
                _ => None,
            })
        },
    )
}
