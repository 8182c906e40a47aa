//! The event log on PostgreSQL (issue 22): the same events, the same
//! per-tenant hash chain, for any number of rollcall nodes on one
//! database, over the synchronous connections of [`conn`] (the same
//! [`crate::db::Db`] seam the projections write through, so a command's
//! appends and its folds share one transaction).
//!
//! Order. Each tenant has a head row (its last position and hash). An
//! append takes it `FOR UPDATE` inside its transaction, writes the next
//! positions and moves it: one tenant's appends are serialised in commit
//! order on any node, gapless, while different tenants append in parallel.
//! So a later position of a tenant can never become visible before an
//! earlier one, and a reader that tails a tenant by position (the feed,
//! Synchronize, audit) never skips an event that commits late: the bug of
//! logs that take positions from a sequence. A position here is an ordinal
//! per tenant; `(tenant, position)` is the key.
//!
//! Durability is PostgreSQL's: an append returns once its commit is
//! durable (`synchronous_commit` as the server has it, on by default).
//! This module owns the `events` and `tenant_heads` tables of the
//! database it is given, and nothing else in it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::db::{Db, DbError, OptionalExtension};
use crate::hash::{CanonicalEvent, ChainHash, ZERO_HASH};
use crate::seal::KeySource;
use crate::{
    AppendError, CommandContext, ExpectedVersion, LogError, LogTransaction, Metadata, NestedError,
    NewEvent, Position, RecordedEvent, params,
};

pub mod conn;
mod read;
pub mod writer;

pub use conn::{POOL_SIZE_DEFAULT, PgConn, PgPool};
pub use writer::{PgWriter, PgWriterOptions};

/// The tables, made once per database (under an advisory lock, so two
/// nodes starting together do not race on them).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenant_heads (
    tenant TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    position BIGINT NOT NULL,
    stream TEXT NOT NULL,
    version BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (tenant, position),
    UNIQUE (tenant, stream, version)
);
-- A window of time as a range of positions (`first_position_at`).
CREATE INDEX IF NOT EXISTS events_by_time ON events (tenant, recorded_at);
";

/// The triggers that refuse every UPDATE, DELETE and TRUNCATE of
/// `events`: the log is append-only on the server itself, as on SQLite
/// (`verify` reports a guard that is missing or altered).
fn guards() -> String {
    let [row_guard, table_guard] = read::GUARDS;
    format!(
        "CREATE OR REPLACE FUNCTION rollcall_events_append_only() RETURNS trigger \
         LANGUAGE plpgsql AS $guard${body}$guard$; \
         CREATE OR REPLACE TRIGGER {row_guard} BEFORE UPDATE OR DELETE ON events \
         FOR EACH ROW EXECUTE FUNCTION rollcall_events_append_only(); \
         CREATE OR REPLACE TRIGGER {table_guard} BEFORE TRUNCATE ON events \
         FOR EACH STATEMENT EXECUTE FUNCTION rollcall_events_append_only();",
        body = read::GUARD_BODY
    )
}

/// The advisory lock key the schema is made under.
pub const SCHEMA_LOCK: i64 = 0x726f_6c6c_6361_6c6c;

fn storage(context: &'static str) -> impl FnOnce(DbError) -> LogError {
    move |error| LogError::Storage { context, message: error.to_string() }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_hash(bytes: &[u8], position: Position) -> Result<ChainHash, LogError> {
    ChainHash::try_from(bytes)
        .map_err(|_| LogError::HashMismatch { position, what: "a stored hash is not 32 bytes" })
}

const EVENT_COLUMNS: &str = "tenant, position, stream, version, event_type, schema_version, \
                             payload, metadata, recorded_at, prev_hash, hash";

/// One node's handle on the log: a pool of connections to the database.
#[derive(Clone, Debug)]
pub struct PgLog {
    pool: Arc<PgPool>,
}

fn read_event(row: &crate::db::Row<'_>) -> Result<RecordedEvent, DbError> {
    let position = row.get(1)?;
    let hash = |index: usize| {
        let bytes: Vec<u8> = row.get(index)?;
        ChainHash::try_from(bytes.as_slice()).map_err(|_| DbError::Column {
            index,
            message: format!("the hash of the event at {position} is not 32 bytes"),
        })
    };
    Ok(RecordedEvent {
        tenant: row.get(0)?,
        position,
        stream: row.get(2)?,
        version: row.get(3)?,
        event_type: row.get(4)?,
        schema_version: row.get(5)?,
        payload: row.get(6)?,
        metadata: row.get(7)?,
        recorded_at: row.get(8)?,
        prev_hash: hash(9)?,
        hash: hash(10)?,
    })
}

impl PgLog {
    /// Connects to `url` (`postgres://user:password@host:port/dbname`, or
    /// the key-value form) with at most `pool_size` connections, and makes
    /// the tables if they are missing.
    pub fn connect(url: &str, pool_size: usize) -> Result<PgLog, LogError> {
        let pool = PgPool::new(url, pool_size)
            .map_err(|error| LogError::NotALog { reason: error.to_string() })?;
        PgLog::on(Arc::new(pool))
    }

    /// The log on a pool the caller shares with the projections.
    pub fn on(pool: Arc<PgPool>) -> Result<PgLog, LogError> {
        let log = PgLog { pool };
        let connection = log.connection("making the log's tables")?;
        let made = (|| {
            connection.execute_batch("BEGIN")?;
            connection.query_row(
                "SELECT pg_advisory_xact_lock(?1)",
                params![SCHEMA_LOCK],
                |_| Ok(()),
            )?;
            connection.execute_batch(SCHEMA)?;
            connection.execute_batch(&guards())?;
            connection.execute_batch("COMMIT")
        })();
        made.map_err(storage("making the log's tables"))?;
        Ok(log)
    }

    /// The pool beneath the log.
    pub fn pool(&self) -> &Arc<PgPool> {
        &self.pool
    }

    fn connection(&self, context: &'static str) -> Result<PgConn, LogError> {
        self.pool.get().map_err(storage(context))
    }

    /// Begins a transaction: a command reads and appends in it, and its
    /// appends are durable once [`PgTx::commit`] returns.
    pub fn transaction(&self) -> Result<PgTx, LogError> {
        let connection = self.connection("beginning a transaction")?;
        PgTx::begin(connection)
    }

    /// Appends `events` to one stream in a transaction of its own.
    pub fn append(
        &self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        context: &CommandContext,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        let mut tx = self.transaction()?;
        let recorded = tx.append(tenant, stream, expected, events, context)?;
        tx.commit()?;
        Ok(recorded)
    }

    /// The events of `tenant` after `after`, in position order, at most
    /// `limit`. Only committed events: the head row lock orders commits,
    /// so no earlier position of the tenant commits after a later one.
    pub fn read_forward(
        &self,
        tenant: &str,
        after: Position,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let connection = self.connection("reading events")?;
        read_forward(&connection, tenant, after, limit)
    }

    /// The events of one stream, in version order.
    pub fn read_stream(&self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError> {
        let connection = self.connection("reading a stream")?;
        read_stream(&connection, tenant, stream)
    }

    /// The tenant's head: its last position (0 before its first event).
    pub fn tenant_head(&self, tenant: &str) -> Result<Position, LogError> {
        let connection = self.connection("reading a tenant's head")?;
        connection
            .query_row(
                "SELECT position FROM tenant_heads WHERE tenant = ?1",
                params![tenant],
                |row| row.get::<_, u64>(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(storage("reading a tenant's head"))
    }

    /// Walks the tenant's chain (`PgLog::verify`): how many events it
    /// checked, or the first break as an error naming its position.
    pub fn verify_tenant(&self, tenant: &str) -> Result<u64, LogError> {
        let report = self.verify(crate::VerifyScope::Tenant(tenant.to_owned()))?;
        match report.failure {
            None => Ok(report.events_checked),
            Some(failure) => Err(LogError::HashMismatch {
                position: failure.position,
                what: failure.problem.describe(),
            }),
        }
    }
}

/// The events of `tenant` after `after`, on a connection the caller holds
/// (inside its transaction, if it has one).
pub fn read_forward(
    db: &dyn Db,
    tenant: &str,
    after: Position,
    limit: u64,
) -> Result<Vec<RecordedEvent>, LogError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = ?1 AND position > ?2 \
         ORDER BY position LIMIT ?3"
    );
    db.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, to_i64(after), to_i64(limit)], read_event)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(storage("reading events"))
}

/// The events of one stream, in version order.
pub fn read_stream(
    db: &dyn Db,
    tenant: &str,
    stream: &str,
) -> Result<Vec<RecordedEvent>, LogError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = ?1 AND stream = ?2 ORDER BY version"
    );
    db.prepare_cached(&sql)
        .and_then(|mut statement| {
            statement.query_map(params![tenant, stream], read_event)?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(storage("reading a stream"))
}

/// One transaction of one node. Dropped without [`PgTx::commit`], it
/// rolls back (the connection is closed rather than pooled open).
pub struct PgTx {
    connection: PgConn,
    open: bool,
    /// The heads this transaction holds locked: tenant, last position,
    /// last hash, last recorded_at.
    heads: Vec<(String, Position, ChainHash, String)>,
    clock: fn() -> jiff::Timestamp,
    keys: Option<Arc<dyn KeySource>>,
}

impl std::fmt::Debug for PgTx {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgTx").field("heads", &self.heads.len()).finish_non_exhaustive()
    }
}

impl PgTx {
    /// Begins a transaction on `connection`.
    pub fn begin(connection: PgConn) -> Result<PgTx, LogError> {
        connection.execute_batch("BEGIN").map_err(storage("beginning a transaction"))?;
        Ok(PgTx {
            connection,
            open: true,
            heads: Vec::new(),
            clock: jiff::Timestamp::now,
            keys: None,
        })
    }

    /// The transaction with a clock and a key store (`LogOptions`).
    pub fn with(
        mut self,
        clock: fn() -> jiff::Timestamp,
        keys: Option<Arc<dyn KeySource>>,
    ) -> PgTx {
        self.clock = clock;
        self.keys = keys;
        self
    }

    /// The connection the transaction runs on.
    pub fn connection(&self) -> &PgConn {
        &self.connection
    }

    /// Takes the tenant's head row for this transaction (made at position
    /// 0 for a tenant's first event), waiting for any other transaction
    /// that holds it.
    fn lock_head(&mut self, tenant: &str) -> Result<usize, LogError> {
        if let Some(index) = self.heads.iter().position(|(held, ..)| held == tenant) {
            return Ok(index);
        }
        let connection = &self.connection;
        connection
            .execute(
                "INSERT INTO tenant_heads (tenant, position, hash) VALUES (?1, 0, ?2) \
                 ON CONFLICT (tenant) DO NOTHING",
                params![tenant, ZERO_HASH.as_slice()],
            )
            .map_err(storage("making a tenant's head"))?;
        let (position, hash) = connection
            .query_row(
                "SELECT position, hash FROM tenant_heads WHERE tenant = ?1 FOR UPDATE",
                params![tenant],
                |row| Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(storage("locking a tenant's head"))?;
        let hash = to_hash(&hash, position)?;
        let last_at: Option<String> = connection
            .query_row(
                "SELECT recorded_at FROM events WHERE tenant = ?1 AND position = ?2",
                params![tenant, to_i64(position)],
                |row| row.get(0),
            )
            .optional()
            .map_err(storage("reading a tenant's last event"))?;
        self.heads.push((tenant.to_owned(), position, hash, last_at.unwrap_or_default()));
        Ok(self.heads.len() - 1)
    }

    /// Puts an event of another log in as it was stored, byte for byte
    /// (position, hashes and all: `rollcall migrate` from SQLite), and
    /// moves its tenant's head to it. Events must come in position order.
    /// Nothing is hashed again: `PgLog::verify` checks them afterwards.
    pub fn import(&mut self, event: &RecordedEvent) -> Result<(), LogError> {
        let insert = format!(
            "INSERT INTO events ({EVENT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        );
        self.connection
            .execute(
                &insert,
                params![
                    event.tenant,
                    to_i64(event.position),
                    event.stream,
                    to_i64(event.version),
                    event.event_type,
                    i64::from(event.schema_version),
                    event.payload,
                    event.metadata,
                    event.recorded_at,
                    event.prev_hash.as_slice(),
                    event.hash.as_slice(),
                ],
            )
            .map_err(storage("importing an event"))?;
        self.connection
            .execute(
                "INSERT INTO tenant_heads (tenant, position, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant) DO UPDATE SET position = excluded.position, hash = excluded.hash",
                params![event.tenant, to_i64(event.position), event.hash.as_slice()],
            )
            .map_err(storage("importing an event"))?;
        Ok(())
    }

    /// Commits: every append of this transaction is durable when it
    /// returns, and the heads it held are released.
    pub fn commit(mut self) -> Result<(), LogError> {
        self.open = false;
        let committed = self.connection.execute_batch("COMMIT");
        if committed.is_err() {
            self.connection.discard();
        }
        committed.map_err(storage("committing"))
    }

    /// Rolls back: nothing this transaction appended is kept.
    pub fn rollback(mut self) -> Result<(), LogError> {
        self.open = false;
        let rolled = self.connection.execute_batch("ROLLBACK");
        if rolled.is_err() {
            self.connection.discard();
        }
        rolled.map_err(storage("rolling back"))
    }
}

impl LogTransaction for PgTx {
    fn db(&self) -> &dyn Db {
        &*self.connection
    }

    fn keys(&self) -> Option<Arc<dyn KeySource>> {
        self.keys.clone()
    }

    fn read_stream(&mut self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError> {
        read_stream(&*self.connection, tenant, stream)
    }

    /// A savepoint: a step that fails or panics is rolled back to it, and
    /// the heads it moved go back with it. A step that swallowed a storage
    /// error left the transaction aborted, so releasing the savepoint
    /// fails: it is rolled back too, and answered as a storage error.
    fn nested_step(
        &mut self,
        step: &mut dyn FnMut(&mut dyn LogTransaction) -> bool,
    ) -> Result<(), NestedError<()>> {
        let heads = self.heads.clone();
        self.connection.execute_batch("SAVEPOINT step").map_err(storage("opening a step"))?;
        let outcome = match catch_unwind(AssertUnwindSafe(|| step(self))) {
            Ok(true) => Ok(()),
            Ok(false) => Err(NestedError::Step(())),
            Err(panic) => Err(NestedError::Panicked(crate::panic_message(&panic))),
        };
        let refused = match outcome {
            Ok(()) => self.connection.execute_batch("RELEASE step").err(),
            Err(_) => None,
        };
        if outcome.is_err() || refused.is_some() {
            // Undone, so the transaction stays usable for what follows.
            self.heads = heads;
            self.connection
                .execute_batch("ROLLBACK TO step; RELEASE step")
                .map_err(storage("closing a step"))?;
        }
        match refused {
            Some(error) => Err(NestedError::Log(LogError::storage("closing a step", error))),
            None => outcome,
        }
    }

    /// The stream's last version, if it has events.
    fn stream_version(&mut self, tenant: &str, stream: &str) -> Result<Option<u64>, LogError> {
        self.connection
            .query_row(
                "SELECT MAX(version) FROM events WHERE tenant = ?1 AND stream = ?2",
                params![tenant, stream],
                |row| row.get::<_, Option<u64>>(0),
            )
            .map_err(storage("reading a stream's version"))
    }

    /// Appends `events` to one stream if it is at `expected`: the next
    /// positions of the tenant, each hashed after the one before.
    fn append(
        &mut self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        context: &CommandContext,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        crate::log::check_events(tenant, stream, events)?;
        // The head first: every version check of the tenant then runs
        // under its lock, so two racing appends cannot both pass it.
        let head = self.lock_head(tenant)?;
        let actual = self.stream_version(tenant, stream)?;
        crate::log::check_expected(tenant, stream, expected, actual)?;
        let (_, mut position, mut prev_hash, last_at) =
            self.heads.get(head).cloned().ok_or(LogError::WriterStopped)?;
        // Never earlier than the tenant's event before it, even if this
        // node's clock is behind another's: a window of time stays a range
        // of positions.
        let mut recorded_at = crate::time::format_millis((self.clock)());
        if last_at > recorded_at {
            recorded_at = last_at;
        }
        let first_version = actual.unwrap_or(0) + 1;
        let mut recorded = Vec::with_capacity(events.len());
        let insert = format!(
            "INSERT INTO events ({EVENT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        );
        for (version, event) in (first_version..).zip(events) {
            position += 1;
            let metadata =
                serde_json::to_string(&Metadata::for_new_event(context, version == first_version))
                    .map_err(|error| LogError::storage("encoding metadata", error))?;
            let hash = CanonicalEvent {
                position,
                tenant,
                stream,
                version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                metadata: &metadata,
                recorded_at: &recorded_at,
            }
            .chain_hash(&prev_hash);
            self.connection
                .execute(
                    &insert,
                    params![
                        tenant,
                        to_i64(position),
                        stream,
                        to_i64(version),
                        event.event_type,
                        i64::from(event.schema_version),
                        event.payload,
                        metadata,
                        recorded_at,
                        prev_hash.as_slice(),
                        hash.as_slice(),
                    ],
                )
                .map_err(storage("inserting an event"))?;
            recorded.push(RecordedEvent {
                position,
                tenant: tenant.to_owned(),
                stream: stream.to_owned(),
                version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata,
                recorded_at: recorded_at.clone(),
                prev_hash,
                hash,
            });
            prev_hash = hash;
        }
        self.connection
            .execute(
                "UPDATE tenant_heads SET position = ?2, hash = ?3 WHERE tenant = ?1",
                params![tenant, to_i64(position), prev_hash.as_slice()],
            )
            .map_err(storage("moving a tenant's head"))?;
        if let Some(held) = self.heads.get_mut(head) {
            *held = (tenant.to_owned(), position, prev_hash, recorded_at);
        }
        Ok(recorded)
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        // A transaction dropped open must not go back to the pool open:
        // the connection is closed, which rolls it back.
        if self.open {
            self.connection.discard();
        }
    }
}
