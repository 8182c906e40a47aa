//! The SQL seam: one small, object-safe interface ([`Db`]) that every
//! projection and command writes its SQL against, served by SQLite (a
//! `rusqlite::Connection`) and by PostgreSQL ([`crate::postgres::PgConn`]).
//!
//! Why a seam of statements and not a trait per store: the projections and
//! the commands are thousands of lines of SQL that mean the same on both
//! engines. Written once against [`Db`], one fold, one uniqueness check,
//! one query answers the same on either; only the few places where the
//! dialects really differ (JSON functions, upserts, the schema) branch on
//! [`Db::dialect`]. SQL is written in SQLite's spelling with numbered
//! placeholders (`?1`); the PostgreSQL side rewrites them to `$1` once per
//! statement it prepares ([`postgres_placeholders`]).
//!
//! Values cross the seam as a borrowed [`Value`]; [`Column`] reads the
//! Rust types rollcall stores (text, integers, blobs, reals, booleans,
//! and `Option` of each) strictly: a column of the wrong type is an error,
//! never a silent conversion. This module owns no table.

use std::borrow::Cow;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value that binds as a parameter on both engines.
pub trait Param: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync {}

impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync> Param for T {}

/// Parameters for [`Db`]: `args![tenant, id]`.
#[macro_export]
macro_rules! args {
    () => {
        &[] as &[&dyn $crate::db::Param]
    };
    ($($value:expr),+ $(,)?) => {
        &[$(&$value as &dyn $crate::db::Param),+] as &[&dyn $crate::db::Param]
    };
}

/// One column of a result row, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Bool(bool),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
            Value::Bool(_) => "a boolean",
        }
    }
}

/// A result row.
pub trait Row {
    /// The value of column `index` (from 0).
    fn value(&self, index: usize) -> Result<Value<'_>, DbError>;
}

impl dyn Row + '_ {
    /// Column `index` as `T`.
    pub fn get<T: Column>(&self, index: usize) -> Result<T, DbError> {
        T::read(self.value(index)?).map_err(|message| DbError::Column { index, message })
    }

    /// Column `index` as text, borrowed (no copy on SQLite).
    pub fn text(&self, index: usize) -> Result<&str, DbError> {
        match self.value(index)? {
            Value::Text(text) => Ok(text),
            other => Err(DbError::Column { index, message: mismatch("text", &other) }),
        }
    }
}

fn mismatch(wanted: &str, found: &Value<'_>) -> String {
    format!("expected {wanted}, found {}", found.kind())
}

/// A Rust type a column is read as.
pub trait Column: Sized {
    fn read(value: Value<'_>) -> Result<Self, String>;
}

impl Column for String {
    fn read(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Text(text) => Ok(text.to_owned()),
            other => Err(mismatch("text", &other)),
        }
    }
}

impl Column for i64 {
    fn read(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Integer(integer) => Ok(integer),
            other => Err(mismatch("an integer", &other)),
        }
    }
}

impl Column for u64 {
    fn read(value: Value<'_>) -> Result<Self, String> {
        let integer = i64::read(value)?;
        u64::try_from(integer).map_err(|_| format!("expected a count, found {integer}"))
    }
}

impl Column for u32 {
    fn read(value: Value<'_>) -> Result<Self, String> {
        let integer = i64::read(value)?;
        u32::try_from(integer).map_err(|_| format!("expected a small count, found {integer}"))
    }
}

impl Column for f64 {
    fn read(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Real(real) => Ok(real),
            // SQLite stores a whole real as an integer where it can.
            Value::Integer(integer) => Ok(integer as f64),
            other => Err(mismatch("a real", &other)),
        }
    }
}

impl Column for bool {
    fn read(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Bool(flag) => Ok(flag),
            // SQLite has no boolean: `EXISTS` and flags are 0 or 1.
            Value::Integer(integer) => Ok(integer != 0),
            other => Err(mismatch("a boolean", &other)),
        }
    }
}

impl Column for Vec<u8> {
    fn read(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Blob(bytes) => Ok(bytes.to_vec()),
            other => Err(mismatch("a blob", &other)),
        }
    }
}

impl<T: Column> Column for Option<T> {
    fn read(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::read(other).map(Some),
        }
    }
}

/// A storage error of either engine, or a column that did not read.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("column {index}: {message}")]
    Column { index: usize, message: String },
    #[error("a query expected a row and found none")]
    NoRow,
    #[error("no database connection: {0}")]
    Connection(String),
}

/// tokio-postgres shows "db error" alone; the server's message is in the
/// source.
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

impl DbError {
    /// A UNIQUE or PRIMARY KEY constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            DbError::Postgres(error) => {
                error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }

    /// The statement names a table the database does not have (a file
    /// from an older build).
    pub fn is_missing_table(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(_, Some(message))) => {
                message.contains("no such table")
            }
            DbError::Postgres(error) => {
                error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
            }
            _ => false,
        }
    }

    /// The statement was interrupted by the read's time budget.
    pub fn is_interrupt(&self) -> bool {
        match self {
            DbError::Sqlite(error) => crate::error::is_interrupt(error),
            DbError::Postgres(error) => {
                error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
            }
            _ => false,
        }
    }
}

/// What a row visitor tells [`Db::query`]: go on or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Statements against one connection (inside whatever transaction it is
/// in). Object-safe: projections take `&dyn Db`.
pub trait Db {
    fn dialect(&self) -> Dialect;

    /// Runs one statement; returns how many rows it changed.
    fn exec(&self, sql: &str, params: &[&dyn Param]) -> Result<usize, DbError>;

    /// Runs one query, handing each row to `each` until it says stop.
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&dyn Row) -> Result<Flow, DbError>,
    ) -> Result<(), DbError>;

    /// Runs statements without parameters, separated by semicolons
    /// (schema, transaction control).
    fn batch(&self, sql: &str) -> Result<(), DbError>;
}

/// The ways of reading an answer, for every [`Db`].
pub trait DbExt: Db {
    /// The first row, if any.
    fn one<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        read: impl FnOnce(&dyn Row) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut read = Some(read);
        let mut found = None;
        self.query(sql, params, &mut |row| {
            if let Some(read) = read.take() {
                found = Some(read(row)?);
            }
            Ok(Flow::Stop)
        })?;
        Ok(found)
    }

    /// The first row, which must be there (an aggregate, say).
    fn single<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        read: impl FnOnce(&dyn Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.one(sql, params, read)?.ok_or(DbError::NoRow)
    }

    /// Every row.
    fn all<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut read: impl FnMut(&dyn Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut rows = Vec::new();
        self.query(sql, params, &mut |row| {
            rows.push(read(row)?);
            Ok(Flow::Continue)
        })?;
        Ok(rows)
    }

    /// Every row to `visit`, nothing collected.
    fn each(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut visit: impl FnMut(&dyn Row) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        self.query(sql, params, &mut |row| {
            visit(row)?;
            Ok(Flow::Continue)
        })
    }
}

impl<D: Db + ?Sized> DbExt for D {}

/// Rewrites SQLite's placeholders (`?1`, or a bare `?` counted from the
/// last) to PostgreSQL's (`$1`), leaving quoted text and identifiers alone.
pub fn postgres_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut last = 0u32;
    while let Some(c) = chars.next() {
        match quote {
            Some(open) => {
                out.push(c);
                if c == open {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(digit) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(digit);
                    chars.next();
                }
                let number = digits.parse::<u32>().unwrap_or(last + 1);
                last = number;
                out.push('$');
                out.push_str(&number.to_string());
            }
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

struct SqliteRow<'r, 's>(&'r rusqlite::Row<'s>);

impl Row for SqliteRow<'_, '_> {
    fn value(&self, index: usize) -> Result<Value<'_>, DbError> {
        use rusqlite::types::ValueRef;
        Ok(match self.0.get_ref(index)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(integer) => Value::Integer(integer),
            ValueRef::Real(real) => Value::Real(real),
            ValueRef::Text(bytes) => Value::Text(std::str::from_utf8(bytes).map_err(|error| {
                DbError::Column { index, message: format!("text that is not UTF-8: {error}") }
            })?),
            ValueRef::Blob(bytes) => Value::Blob(bytes),
        })
    }
}

fn sqlite_params<'p>(
    params: &'p [&'p dyn Param],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = &'p dyn rusqlite::ToSql>> {
    rusqlite::params_from_iter(params.iter().map(|param| *param as &dyn rusqlite::ToSql))
}

impl Db for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&self, sql: &str, params: &[&dyn Param]) -> Result<usize, DbError> {
        Ok(self.prepare_cached(sql)?.execute(sqlite_params(params))?)
    }

    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&dyn Row) -> Result<Flow, DbError>,
    ) -> Result<(), DbError> {
        let mut statement = self.prepare_cached(sql)?;
        let mut rows = statement.query(sqlite_params(params))?;
        while let Some(row) = rows.next()? {
            if each(&SqliteRow(row))? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        Ok(self.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
        assert_eq!(postgres_placeholders("VALUES (?, ?, ?)"), "VALUES ($1, $2, $3)");
        assert_eq!(postgres_placeholders("SELECT \"a?\" FROM t"), "SELECT \"a?\" FROM t");
        assert!(matches!(postgres_placeholders("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn sqlite_reads_each_type_strictly() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let db: &dyn Db = &connection;
        db.batch("CREATE TABLE t (a TEXT, b INTEGER, c BLOB, d REAL)").unwrap();
        let bytes: &[u8] = b"xy";
        assert_eq!(
            db.exec("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", args!["x", 7i64, bytes, 1.5f64])
                .unwrap(),
            1
        );
        let row = db
            .single("SELECT a, b, c, d, NULL FROM t", args![], |row| {
                Ok((
                    row.get::<String>(0)?,
                    row.get::<i64>(1)?,
                    row.get::<Vec<u8>>(2)?,
                    row.get::<f64>(3)?,
                    row.get::<Option<String>>(4)?,
                ))
            })
            .unwrap();
        assert_eq!(row, ("x".to_owned(), 7, b"xy".to_vec(), 1.5, None));
        let wrong = db.single("SELECT b FROM t", args![], |row| row.get::<String>(0));
        assert!(matches!(wrong, Err(DbError::Column { index: 0, .. })), "{wrong:?}");
        assert_eq!(
            db.one("SELECT a FROM t WHERE b = ?1", args![8i64], |row| row.get::<String>(0))
                .unwrap(),
            None
        );
        assert!(
            db.single("SELECT EXISTS (SELECT 1 FROM t)", args![], |row| row.get::<bool>(0))
                .unwrap()
        );
    }
}
