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

/// A JSON value with every string in it folded ([`fold`]), keys and
/// structure as they were: what PostgreSQL compares case-insensitive
/// strings against, so both engines fold by this one function.
pub fn fold_value(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(fold(text)),
        Value::Array(items) => Value::Array(items.iter().map(fold_value).collect()),
        Value::Object(fields) => Value::Object(
            fields.iter().map(|(key, value)| (key.clone(), fold_value(value))).collect(),
        ),
        other => other.clone(),
    }
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
