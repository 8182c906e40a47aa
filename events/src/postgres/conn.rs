//! Synchronous connections to PostgreSQL for the [`Db`] seam: what the
//! projections and the commands run their statements on, from plain
//! threads (a writer lane, a blocking read), exactly as they run them on a
//! `rusqlite::Connection`.
//!
//! The connections' sockets are driven by a small runtime of the pool's
//! own, so a statement can be waited for from any thread, also one of the
//! server's async workers (which then blocks for one round trip, as a
//! SQLite read blocks for its page reads). Statements are prepared once per
//! connection (deadpool's statement cache) under their PostgreSQL spelling.
//! This module owns no table.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use tokio_postgres::NoTls;
use tokio_postgres::types::{ToSql, Type};

use crate::db::{Db, DbError, Dialect, Param, Statement, ValueRef, postgres_spelling};

/// Connections a node keeps open by default.
pub const POOL_SIZE_DEFAULT: usize = 16;

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits for `future` on the current thread. The futures given here only
/// talk to connection tasks over channels, so they need no runtime of
/// their own.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        // A spurious wake-up polls again, which is harmless.
        std::thread::park();
    }
}

/// An error and what caused it, as one line: the pool's own message
/// ("creating a new object: db error") hides the server's reason (too many
/// connections, a password refused) in its sources.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// One node's connections to one database.
pub struct PgPool {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    /// What it connects with, for a listening connection of its own.
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgPool").field("status", &self.pool.status()).finish()
    }
}

impl PgPool {
    /// A pool of at most `size` connections to `url` (`postgres://...` or
    /// the key-value form). Connects lazily; [`PgPool::get`] reports a
    /// database that cannot be reached.
    pub fn new(url: &str, size: usize) -> Result<PgPool, DbError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| DbError::Connection(format!("not a PostgreSQL URL: {error}")))?;
        // The schema's `IF NOT EXISTS` notices are the server's chatter,
        // not news: only warnings reach the log, unless the URL says else.
        if config.get_options().is_none() {
            config.options("-c client_min_messages=warning");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rollcall-pg")
            .enable_all()
            .build()
            .map_err(|error| DbError::Connection(format!("starting its runtime: {error}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| DbError::Connection(error.to_string()))?;
        Ok(PgPool { pool, runtime: Some(runtime), config })
    }

    /// Calls `heard` whenever any session of the database sends a
    /// notification on `channel` (`NOTIFY`), for as long as the pool lives:
    /// a connection of its own `LISTEN`s, and is made again (calling
    /// `heard` once, for what it may have missed) when it breaks.
    pub fn listen(&self, channel: &'static str, heard: impl Fn() + Send + Sync + 'static) {
        let Some(runtime) = &self.runtime else { return };
        let config = self.config.clone();
        runtime.spawn(async move {
            loop {
                // A database that cannot be reached is tried again below.
                if let Ok((client, mut connection)) = config.connect(NoTls).await {
                    {
                        let messages = futures_util::stream::poll_fn(move |context| {
                            connection.poll_message(context)
                        });
                        let mut messages = std::pin::pin!(messages);
                        let statement = format!("LISTEN {channel}");
                        let listening = client.batch_execute(&statement);
                        // The LISTEN is answered through the same socket the
                        // messages arrive on: drive both.
                        let mut listening = std::pin::pin!(listening);
                        let mut listened = false;
                        loop {
                            tokio::select! {
                                done = &mut listening, if !listened => {
                                    listened = true;
                                    if done.is_err() {
                                        break;
                                    }
                                    heard();
                                }
                                message = futures_util::StreamExt::next(&mut messages) => match message {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => heard(),
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => break,
                                },
                            }
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    /// A connection, waiting for one to be free.
    pub fn get(&self) -> Result<PgConn, DbError> {
        let runtime = self.runtime.as_ref().ok_or_else(|| DbError::Connection("closed".into()))?;
        let pool = self.pool.clone();
        // Making a connection spawns its socket's task: on the pool's
        // runtime, whatever thread asks.
        let object = block_on(runtime.spawn(async move { pool.get().await }))
            .map_err(|error| DbError::Connection(error.to_string()))?
            .map_err(|error| DbError::Connection(with_causes(&error)))?;
        Ok(PgConn { client: Some(object) })
    }

    /// How many connections are open and how many of them are idle.
    pub fn status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }
}

impl Drop for PgPool {
    fn drop(&mut self) {
        self.pool.close();
        // Dropping a runtime may not block inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One pooled connection. Back to the pool when dropped, unless
/// [`PgConn::discard`] said it must not be reused (a transaction left
/// open by a failure).
pub struct PgConn {
    client: Option<deadpool_postgres::Object>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgConn").finish_non_exhaustive()
    }
}

/// Its statements are the seam's (`connection.query_row(..)`), as a
/// `rusqlite::Connection`'s are rusqlite's.
impl std::ops::Deref for PgConn {
    type Target = dyn Db;

    fn deref(&self) -> &Self::Target {
        self
    }
}

fn postgres_params<'p>(
    params: &'p [&'p dyn Param],
) -> impl ExactSizeIterator<Item = &'p dyn ToSql> {
    params.iter().map(|param| *param as &dyn ToSql)
}

impl PgConn {
    fn client(&self) -> Result<&deadpool_postgres::Object, DbError> {
        self.client.as_ref().ok_or_else(|| DbError::Connection("discarded".to_owned()))
    }

    /// Closes the connection instead of pooling it again: what a
    /// transaction that could not be ended cleanly needs (closing rolls
    /// it back on the server).
    pub fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    pub(crate) fn execute_prepared(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn Param],
    ) -> Result<usize, DbError> {
        let client = self.client()?;
        let changed = block_on(client.execute_raw(statement, postgres_params(params)))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(crate) fn query_prepared(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn Param],
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let client = self.client()?;
        block_on(async {
            let stream = client.query_raw(statement, postgres_params(params)).await?;
            stream.try_collect::<Vec<_>>().await
        })
        .map_err(DbError::from)
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
) -> Result<Option<T>, DbError> {
    row.try_get::<_, Option<T>>(index).map_err(DbError::from)
}

/// Column `index` of a PostgreSQL row as the seam's value: decided by the
/// column's type, as SQLite's value carries its own.
pub(crate) fn value(row: &tokio_postgres::Row, index: usize) -> Result<ValueRef<'_>, DbError> {
    let column = row.columns().get(index).ok_or_else(|| DbError::Column {
        index,
        message: "no such column in the result".to_owned(),
    })?;
    let ty = column.type_();
    let value = if *ty == Type::INT8 {
        get::<i64>(row, index)?.map(ValueRef::Integer)
    } else if *ty == Type::INT4 {
        get::<i32>(row, index)?.map(|integer| ValueRef::Integer(integer.into()))
    } else if *ty == Type::INT2 {
        get::<i16>(row, index)?.map(|integer| ValueRef::Integer(integer.into()))
    } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::BPCHAR || *ty == Type::NAME
    {
        get::<&str>(row, index)?.map(ValueRef::Text)
    } else if *ty == Type::BYTEA {
        get::<&[u8]>(row, index)?.map(ValueRef::Blob)
    } else if *ty == Type::BOOL {
        get::<bool>(row, index)?.map(ValueRef::Bool)
    } else if *ty == Type::FLOAT8 {
        get::<f64>(row, index)?.map(ValueRef::Real)
    } else if *ty == Type::FLOAT4 {
        get::<f32>(row, index)?.map(|real| ValueRef::Real(real.into()))
    } else {
        return Err(DbError::Column {
            index,
            message: format!("a column of type {ty} (select it as text or bigint)"),
        });
    };
    Ok(value.unwrap_or(ValueRef::Null))
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>, DbError> {
        let client = self.client()?;
        let sql = postgres_spelling(sql);
        let statement = block_on(client.prepare_cached(&sql))?;
        Ok(Statement::Postgres { connection: self, statement })
    }

    fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        let client = self.client()?;
        block_on(client.batch_execute(sql)).map_err(DbError::from)
    }
}
