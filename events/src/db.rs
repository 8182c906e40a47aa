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
//! statement it prepares ([`postgres_spelling`]).
//!
//! The shape is rusqlite's (`prepare_cached`, `execute`, `query_row`,
//! `query_map`, `row.get`, `optional`), so SQL code reads as it always
//! did and moving a function onto the seam changes its types, not its
//! logic. Values cross it as a borrowed [`Value`]; [`Column`] reads the
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

/// Parameters for [`Db`]: `params![tenant, id]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::db::Param]
    };
    ($($value:expr),+ $(,)?) => {
        &[$(&$value as &dyn $crate::db::Param),+] as &[&dyn $crate::db::Param]
    };
}

/// What a statement binds: `params![..]`, an array of one type, or `[]`.
pub trait Params {
    fn with<R>(&self, each: impl FnOnce(&[&dyn Param]) -> R) -> R;
}

impl Params for &[&dyn Param] {
    fn with<R>(&self, each: impl FnOnce(&[&dyn Param]) -> R) -> R {
        each(self)
    }
}

impl Params for Vec<&dyn Param> {
    fn with<R>(&self, each: impl FnOnce(&[&dyn Param]) -> R) -> R {
        each(self)
    }
}

impl Params for [&dyn Param; 0] {
    fn with<R>(&self, each: impl FnOnce(&[&dyn Param]) -> R) -> R {
        each(&[])
    }
}

// Sizes one by one, as rusqlite has them: a generic length would leave
// `[]` without a type to infer.
macro_rules! array_params {
    ($($size:literal)*) => {$(
        impl<T: Param> Params for [T; $size] {
            fn with<R>(&self, each: impl FnOnce(&[&dyn Param]) -> R) -> R {
                each(&self.each_ref().map(|param| param as &dyn Param))
            }
        }

        impl<T: Param> Params for &[T; $size] {
            fn with<R>(&self, each: impl FnOnce(&[&dyn Param]) -> R) -> R {
                (*self).with(each)
            }
        }
    )*};
}

array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// An owned parameter whose type is known only when the statement is
/// built (a filter's literal), as rusqlite's `types::Value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as Sqlite};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => Sqlite::Null,
            Value::Integer(integer) => Sqlite::Integer(*integer),
            Value::Real(real) => Sqlite::Real(*real),
            Value::Text(text) => Sqlite::Text(text.as_bytes()),
            Value::Blob(bytes) => Sqlite::Blob(bytes),
        }))
    }
}

impl tokio_postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Each variant binds as its Rust type would, so a literal of the
        // wrong type for its column is refused as a typed one would be.
        match self {
            Value::Null => Ok(tokio_postgres::types::IsNull::Yes),
            Value::Integer(integer) => integer.to_sql_checked(ty, out),
            Value::Real(real) => real.to_sql_checked(ty, out),
            Value::Text(text) => text.to_sql_checked(ty, out),
            Value::Blob(bytes) => bytes.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl From<i64> for Value {
    fn from(integer: i64) -> Value {
        Value::Integer(integer)
    }
}

impl From<f64> for Value {
    fn from(real: f64) -> Value {
        Value::Real(real)
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Value {
        Value::Blob(bytes)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// Owned values as the parameters of one statement.
pub fn values_as_params(values: &[Value]) -> Vec<&dyn Param> {
    values.iter().map(|value| value as &dyn Param).collect()
}

/// One column of a result row, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Bool(bool),
}

impl<'a> ValueRef<'a> {
    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "NULL",
            ValueRef::Integer(_) => "an integer",
            ValueRef::Real(_) => "a real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "a blob",
            ValueRef::Bool(_) => "a boolean",
        }
    }

    /// The text, or an error naming what the column held instead.
    pub fn as_str(&self) -> Result<&'a str, DbError> {
        match *self {
            ValueRef::Text(text) => Ok(text),
            other => Err(DbError::Column { index: 0, message: mismatch("text", &other) }),
        }
    }
}

/// A result row of either engine.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Row").finish_non_exhaustive()
    }
}

/// How a column is named: by its index from 0.
pub trait ColumnIndex {
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row<'_> {
    /// Column `index` as `T` (the first type parameter is rusqlite's
    /// index type, kept so `row.get::<_, String>(0)` reads the same).
    pub fn get<I: ColumnIndex, T: Column>(&self, index: I) -> Result<T, DbError> {
        let index = index.index();
        T::read(self.get_ref(index)?).map_err(|message| DbError::Column { index, message })
    }

    /// Column `index`, borrowed from the row (no copy on SQLite).
    pub fn get_ref(&self, index: usize) -> Result<ValueRef<'_>, DbError> {
        match self {
            Row::Sqlite(row) => sqlite_value(row, index),
            Row::Postgres(row) => crate::postgres::conn::value(row, index),
        }
    }
}

fn sqlite_value<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> Result<ValueRef<'r>, DbError> {
    Ok(match row.get_ref(index)? {
        rusqlite::types::ValueRef::Null => ValueRef::Null,
        rusqlite::types::ValueRef::Integer(integer) => ValueRef::Integer(integer),
        rusqlite::types::ValueRef::Real(real) => ValueRef::Real(real),
        rusqlite::types::ValueRef::Text(bytes) => {
            ValueRef::Text(std::str::from_utf8(bytes).map_err(|error| DbError::Column {
                index,
                message: format!("text that is not UTF-8: {error}"),
            })?)
        }
        rusqlite::types::ValueRef::Blob(bytes) => ValueRef::Blob(bytes),
    })
}

fn mismatch(wanted: &str, found: &ValueRef<'_>) -> String {
    format!("expected {wanted}, found {}", found.kind())
}

/// A Rust type a column is read as.
pub trait Column: Sized {
    fn read(value: ValueRef<'_>) -> Result<Self, String>;
}

impl Column for String {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Text(text) => Ok(text.to_owned()),
            other => Err(mismatch("text", &other)),
        }
    }
}

impl Column for i64 {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Integer(integer) => Ok(integer),
            other => Err(mismatch("an integer", &other)),
        }
    }
}

macro_rules! integer_columns {
    ($($type:ty),*) => {$(
        impl Column for $type {
            fn read(value: ValueRef<'_>) -> Result<Self, String> {
                let integer = i64::read(value)?;
                <$type>::try_from(integer).map_err(|_| {
                    format!("{integer} is out of range for {}", stringify!($type))
                })
            }
        }
    )*};
}

integer_columns!(u64, u32, i32, usize, u16, u8);

impl Column for f64 {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Real(real) => Ok(real),
            // SQLite stores a whole real as an integer where it can.
            ValueRef::Integer(integer) => Ok(integer as f64),
            other => Err(mismatch("a real", &other)),
        }
    }
}

impl Column for bool {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Bool(flag) => Ok(flag),
            // SQLite has no boolean: `EXISTS` and flags are 0 or 1.
            ValueRef::Integer(integer) => Ok(integer != 0),
            other => Err(mismatch("a boolean", &other)),
        }
    }
}

impl Column for Vec<u8> {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
            other => Err(mismatch("a blob", &other)),
        }
    }
}

impl<const N: usize> Column for [u8; N] {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Blob(bytes) => <[u8; N]>::try_from(bytes)
                .map_err(|_| format!("expected {N} bytes, found {}", bytes.len())),
            other => Err(mismatch("a blob", &other)),
        }
    }
}

/// A column of any type, owned: for copying rows between databases.
impl Column for Value {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        Ok(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(integer) => Value::Integer(integer),
            ValueRef::Real(real) => Value::Real(real),
            ValueRef::Text(text) => Value::Text(text.to_owned()),
            ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
            ValueRef::Bool(truth) => Value::Integer(i64::from(truth)),
        })
    }
}

impl<T: Column> Column for Option<T> {
    fn read(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
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

/// `Result::optional`, as rusqlite has it: no row is `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(DbError::NoRow) | Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// A connection (inside whatever transaction it is in). Object-safe:
/// projections and commands take `&dyn Db`.
pub trait Db {
    fn dialect(&self) -> Dialect;

    /// A statement, prepared once per connection and kept.
    fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>, DbError>;

    /// Runs statements without parameters, separated by semicolons
    /// (schema, transaction control).
    fn execute_batch(&self, sql: &str) -> Result<(), DbError>;
}

impl dyn Db + '_ {
    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, DbError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row read by `read`; [`DbError::NoRow`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.prepare_cached(sql)?.query_row(params, read)
    }

    /// Whether the database has a table of that name.
    pub fn table_exists(&self, table: &str) -> Result<bool, DbError> {
        let sql = match self.dialect() {
            Dialect::Sqlite => {
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)"
            }
            Dialect::Postgres => "SELECT to_regclass(?1::text) IS NOT NULL",
        };
        self.query_row(sql, [table], |row| row.get(0))
    }
}

/// A prepared statement of either engine.
pub enum Statement<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres { connection: &'c crate::postgres::PgConn, statement: tokio_postgres::Statement },
}

impl std::fmt::Debug for Statement<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Statement").finish_non_exhaustive()
    }
}

fn sqlite_params<'p>(
    params: &'p [&'p dyn Param],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = &'p dyn rusqlite::ToSql>> {
    rusqlite::params_from_iter(params.iter().map(|param| *param as &dyn rusqlite::ToSql))
}

impl<'c> Statement<'c> {
    /// Runs it; returns how many rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize, DbError> {
        match self {
            Statement::Sqlite(statement) => params
                .with(|params| statement.execute(sqlite_params(params)))
                .map_err(DbError::from),
            Statement::Postgres { connection, statement } => {
                params.with(|params| connection.execute_prepared(statement, params))
            }
        }
    }

    /// Its rows, one at a time.
    pub fn query(&mut self, params: impl Params) -> Result<Rows<'_>, DbError> {
        match self {
            Statement::Sqlite(statement) => {
                // The parameters are bound before `query` returns, so the
                // borrowed slice may end with this call.
                let rows = params.with(|params| {
                    statement.raw_bind_parameters_from(params)?;
                    Ok::<_, DbError>(())
                });
                rows?;
                Ok(Rows::Sqlite(statement.raw_query()))
            }
            Statement::Postgres { connection, statement } => {
                let rows = params.with(|params| connection.query_prepared(statement, params))?;
                Ok(Rows::Postgres { rows: rows.into_iter(), current: None })
            }
        }
    }

    /// The first row read by `read`; [`DbError::NoRow`] when there is none.
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => read(&row),
            None => Err(DbError::NoRow),
        }
    }

    /// Every row, each read by `read`, lazily.
    pub fn query_map<T, F>(
        &mut self,
        params: impl Params,
        read: F,
    ) -> Result<MappedRows<'_, F>, DbError>
    where
        F: FnMut(&Row<'_>) -> Result<T, DbError>,
    {
        Ok(MappedRows { rows: self.query(params)?, read })
    }

    /// Whether it returns any row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool, DbError> {
        Ok(self.query(params)?.next()?.is_some())
    }
}

trait BindFrom {
    fn raw_bind_parameters_from(&mut self, params: &[&dyn Param]) -> Result<(), DbError>;
}

impl BindFrom for rusqlite::CachedStatement<'_> {
    fn raw_bind_parameters_from(&mut self, params: &[&dyn Param]) -> Result<(), DbError> {
        // As rusqlite's own `query` does: a parameter left unbound would
        // silently be NULL.
        if params.len() != self.parameter_count() {
            return Err(DbError::Sqlite(rusqlite::Error::InvalidParameterCount(
                params.len(),
                self.parameter_count(),
            )));
        }
        for (index, param) in params.iter().enumerate() {
            self.raw_bind_parameter(index + 1, *param as &dyn rusqlite::ToSql)?;
        }
        Ok(())
    }
}

/// The rows of a query.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres { rows: std::vec::IntoIter<tokio_postgres::Row>, current: Option<tokio_postgres::Row> },
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Rows").finish_non_exhaustive()
    }
}

impl Rows<'_> {
    /// The next row, `None` after the last.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>, DbError> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres { rows, current } => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Postgres))
            }
        }
    }
}

/// Rows read one by one as they are iterated.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    read: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> Result<T, DbError>,
{
    type Item = Result<T, DbError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rows.next() {
            Ok(Some(row)) => Some((self.read)(&row)),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

/// A statement as PostgreSQL spells it: SQLite's planner directives
/// (`INDEXED BY index`), which mean nothing there, dropped, and the
/// placeholders rewritten ([`postgres_placeholders`]).
pub fn postgres_spelling(sql: &str) -> String {
    let mut text = sql.to_owned();
    while let Some(at) = text.find(" INDEXED BY ") {
        let name_at = at + " INDEXED BY ".len();
        let name_len = text[name_at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len() - name_at);
        text.replace_range(at..name_at + name_len, "");
    }
    postgres_placeholders(&text).into_owned()
}

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

// A connection, and what derefs to one: a read pool's connection, a
// transaction.
macro_rules! sqlite_db {
    ($($type:ty),*) => {$(
        impl Db for $type {
            fn dialect(&self) -> Dialect {
                Dialect::Sqlite
            }

            fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>, DbError> {
                Ok(Statement::Sqlite(rusqlite::Connection::prepare_cached(self, sql)?))
            }

            fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
                Ok(rusqlite::Connection::execute_batch(self, sql)?)
            }
        }
    )*};
}

sqlite_db!(rusqlite::Connection, crate::sqlite::PooledConnection<'_>, rusqlite::Transaction<'_>);

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
        assert_eq!(
            postgres_spelling(
                "SELECT a FROM t INDEXED BY t_by_b WHERE b = ?1 AND c IN (SELECT c FROM u INDEXED BY u_2)"
            ),
            "SELECT a FROM t WHERE b = $1 AND c IN (SELECT c FROM u)"
        );
    }

    #[test]
    fn sqlite_reads_each_type_strictly() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let db: &dyn Db = &connection;
        db.execute_batch("CREATE TABLE t (a TEXT, b INTEGER, c BLOB, d REAL)").unwrap();
        let bytes: &[u8] = b"xy";
        assert_eq!(
            db.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", params!["x", 7i64, bytes, 1.5f64])
                .unwrap(),
            1
        );
        let row = db
            .query_row("SELECT a, b, c, d, NULL FROM t", [], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, f64>(3)?,
                    row.get::<_, Option<String>>(4)?,
                ))
            })
            .unwrap();
        assert_eq!(row, ("x".to_owned(), 7, b"xy".to_vec(), 1.5, None));
        let wrong = db.query_row("SELECT b FROM t", [], |row| row.get::<_, String>(0));
        assert!(matches!(wrong, Err(DbError::Column { index: 0, .. })), "{wrong:?}");
        let none = db
            .query_row("SELECT a FROM t WHERE b = ?1", [8i64], |row| row.get::<_, String>(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
        assert!(
            db.query_row("SELECT EXISTS (SELECT 1 FROM t)", [], |row| row.get::<_, bool>(0))
                .unwrap()
        );
        let all: Vec<String> = db
            .prepare_cached("SELECT a FROM t")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all, ["x"]);
        let short =
            db.prepare_cached("SELECT a FROM t WHERE b = ?1 AND a = ?2").unwrap().exists(["x"]);
        assert!(short.is_err(), "a parameter missing is an error, not a NULL");
    }
}
