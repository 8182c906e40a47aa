//! The event log on PostgreSQL (issue 22, first slice): the same events,
//! the same per-tenant hash chain, for any number of rollcall nodes on one
//! database. Not yet behind `--db`: the projections and the commands above
//! them get their PostgreSQL side in the slices after this one
//! (ARCHITECTURE.md, "PostgreSQL").
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

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::hash::{CanonicalEvent, ChainHash, ZERO_HASH};
use crate::{
    AppendError, CommandContext, ExpectedVersion, LogError, Metadata, NewEvent, Position,
    RecordedEvent,
};

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
    schema_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (tenant, position),
    UNIQUE (tenant, stream, version)
);
";

/// The advisory lock key the schema is made under.
const SCHEMA_LOCK: i64 = 0x726f_6c6c_6361_6c6c;

/// Connections a node keeps open by default.
pub const POOL_SIZE_DEFAULT: usize = 16;

fn storage(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LogError {
    move |error| LogError::Storage { context, message: error.to_string() }
}

fn pool_error(context: &'static str) -> impl FnOnce(deadpool_postgres::PoolError) -> LogError {
    move |error| LogError::Storage { context, message: error.to_string() }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_hash(bytes: &[u8], position: Position) -> Result<ChainHash, LogError> {
    ChainHash::try_from(bytes)
        .map_err(|_| LogError::HashMismatch { position, what: "a stored hash is not 32 bytes" })
}

/// One node's handle on the log: a pool of connections to the database.
#[derive(Clone)]
pub struct PgLog {
    pool: Pool,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgLog").finish_non_exhaustive()
    }
}

impl PgLog {
    /// Connects to `url` (`postgres://user:password@host:port/dbname`, or
    /// the key-value form) with at most `pool_size` connections, and makes
    /// the tables if they are missing.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PgLog, LogError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|error: tokio_postgres::Error| LogError::NotALog {
                reason: format!("not a PostgreSQL URL: {error}"),
            })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager).max_size(pool_size.max(1)).build().map_err(|error| {
            LogError::Storage { context: "making the connection pool", message: error.to_string() }
        })?;
        let log = PgLog { pool };
        let mut client = log.client("making the log's tables").await?;
        let transaction = client.transaction().await.map_err(storage("making the log's tables"))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(storage("making the log's tables"))?;
        transaction.batch_execute(SCHEMA).await.map_err(storage("making the log's tables"))?;
        transaction.commit().await.map_err(storage("making the log's tables"))?;
        Ok(log)
    }

    async fn client(&self, context: &'static str) -> Result<deadpool_postgres::Object, LogError> {
        self.pool.get().await.map_err(pool_error(context))
    }

    /// Begins a transaction: a command reads and appends in it, and its
    /// appends are durable once [`PgTx::commit`] returns.
    pub async fn transaction(&self) -> Result<PgTx, LogError> {
        let client = self.client("beginning a transaction").await?;
        client.batch_execute("BEGIN").await.map_err(storage("beginning a transaction"))?;
        Ok(PgTx { client: Some(client), heads: Vec::new(), clock: jiff::Timestamp::now })
    }

    /// Appends `events` to one stream in a transaction of its own.
    pub async fn append(
        &self,
        tenant: &str,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        context: &CommandContext,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        let mut tx = self.transaction().await?;
        let recorded = tx.append(tenant, stream, expected, events, context).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// The events of `tenant` after `after`, in position order, at most
    /// `limit`. Only committed events: the head row lock orders commits,
    /// so no earlier position of the tenant commits after a later one.
    pub async fn read_forward(
        &self,
        tenant: &str,
        after: Position,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let client = self.client("reading events").await?;
        let rows = client
            .query(
                "SELECT tenant, position, stream, version, event_type, schema_version, payload, \
                 metadata, recorded_at, prev_hash, hash FROM events \
                 WHERE tenant = $1 AND position > $2 ORDER BY position LIMIT $3",
                &[&tenant, &to_i64(after), &to_i64(limit)],
            )
            .await
            .map_err(storage("reading events"))?;
        rows.iter().map(recorded_from_row).collect()
    }

    /// The events of one stream, in version order.
    pub async fn read_stream(
        &self,
        tenant: &str,
        stream: &str,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let client = self.client("reading a stream").await?;
        let rows = client
            .query(
                "SELECT tenant, position, stream, version, event_type, schema_version, payload, \
                 metadata, recorded_at, prev_hash, hash FROM events \
                 WHERE tenant = $1 AND stream = $2 ORDER BY version",
                &[&tenant, &stream],
            )
            .await
            .map_err(storage("reading a stream"))?;
        rows.iter().map(recorded_from_row).collect()
    }

    /// The tenant's head: its last position (0 before its first event).
    pub async fn tenant_head(&self, tenant: &str) -> Result<Position, LogError> {
        let client = self.client("reading a tenant's head").await?;
        let row = client
            .query_opt("SELECT position FROM tenant_heads WHERE tenant = $1", &[&tenant])
            .await
            .map_err(storage("reading a tenant's head"))?;
        Ok(row.map_or(0, |row| to_u64(row.get(0))))
    }

    /// Walks the tenant's chain from its first event: every event's hash
    /// recomputed from its stored bytes and its predecessor's, positions
    /// gapless, and the head row the last event. Returns how many events
    /// it checked; the first break is an error naming its position.
    pub async fn verify_tenant(&self, tenant: &str) -> Result<u64, LogError> {
        let mut prev_hash = ZERO_HASH;
        let mut last: Position = 0;
        loop {
            let batch = self.read_forward(tenant, last, 1000).await?;
            let Some(end) = batch.last().map(|event| event.position) else { break };
            for event in &batch {
                if event.position != last + 1 {
                    return Err(LogError::HashMismatch {
                        position: event.position,
                        what: "a position is missing before it",
                    });
                }
                if event.prev_hash != prev_hash {
                    return Err(LogError::HashMismatch {
                        position: event.position,
                        what: "its prev_hash is not the previous event's hash",
                    });
                }
                if !event.hash_is_consistent() {
                    return Err(LogError::HashMismatch {
                        position: event.position,
                        what: "its bytes do not hash to its stored hash",
                    });
                }
                prev_hash = event.hash;
                last = event.position;
            }
            debug_assert_eq!(end, last);
        }
        let client = self.client("reading a tenant's head").await?;
        let head = client
            .query_opt("SELECT position, hash FROM tenant_heads WHERE tenant = $1", &[&tenant])
            .await
            .map_err(storage("reading a tenant's head"))?;
        match head {
            None if last == 0 => Ok(0),
            Some(row) if to_u64(row.get(0)) == last && to_hash(row.get(1), last)? == prev_hash => {
                Ok(last)
            }
            _ => Err(LogError::HashMismatch {
                position: last,
                what: "the tenant's head row is not its last event",
            }),
        }
    }
}

fn recorded_from_row(row: &tokio_postgres::Row) -> Result<RecordedEvent, LogError> {
    let position = to_u64(row.get(1));
    Ok(RecordedEvent {
        tenant: row.get(0),
        position,
        stream: row.get(2),
        version: to_u64(row.get(3)),
        event_type: row.get(4),
        schema_version: u32::try_from(row.get::<_, i32>(5)).unwrap_or(0),
        payload: row.get(6),
        metadata: row.get(7),
        recorded_at: row.get(8),
        prev_hash: to_hash(row.get(9), position)?,
        hash: to_hash(row.get(10), position)?,
    })
}

/// One transaction of one node. Dropped without [`PgTx::commit`], it
/// rolls back (the connection goes back to the pool only after that).
pub struct PgTx {
    client: Option<deadpool_postgres::Object>,
    /// The heads this transaction holds locked: tenant, last position,
    /// last hash, last recorded_at.
    heads: Vec<(String, Position, ChainHash, String)>,
    clock: fn() -> jiff::Timestamp,
}

impl PgTx {
    fn client(&self) -> Result<&deadpool_postgres::Object, LogError> {
        self.client.as_ref().ok_or(LogError::WriterStopped)
    }

    /// The stream's last version, if it has events.
    pub async fn stream_version(
        &mut self,
        tenant: &str,
        stream: &str,
    ) -> Result<Option<u64>, LogError> {
        let row = self
            .client()?
            .query_one(
                "SELECT MAX(version) FROM events WHERE tenant = $1 AND stream = $2",
                &[&tenant, &stream],
            )
            .await
            .map_err(storage("reading a stream's version"))?;
        Ok(row.get::<_, Option<i64>>(0).map(to_u64))
    }

    /// Takes the tenant's head row for this transaction (made at position
    /// 0 for a tenant's first event), waiting for any other transaction
    /// that holds it.
    async fn lock_head(&mut self, tenant: &str) -> Result<usize, LogError> {
        if let Some(index) = self.heads.iter().position(|(held, ..)| held == tenant) {
            return Ok(index);
        }
        let client = self.client()?;
        client
            .execute(
                "INSERT INTO tenant_heads (tenant, position, hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (tenant) DO NOTHING",
                &[&tenant, &ZERO_HASH.as_slice()],
            )
            .await
            .map_err(storage("making a tenant's head"))?;
        let row = client
            .query_one(
                "SELECT position, hash FROM tenant_heads WHERE tenant = $1 FOR UPDATE",
                &[&tenant],
            )
            .await
            .map_err(storage("locking a tenant's head"))?;
        let position = to_u64(row.get(0));
        let hash = to_hash(row.get(1), position)?;
        let last_at: Option<String> = client
            .query_opt(
                "SELECT recorded_at FROM events WHERE tenant = $1 AND position = $2",
                &[&tenant, &to_i64(position)],
            )
            .await
            .map_err(storage("reading a tenant's last event"))?
            .map(|row| row.get(0));
        self.heads.push((tenant.to_owned(), position, hash, last_at.unwrap_or_default()));
        Ok(self.heads.len() - 1)
    }

    /// Appends `events` to one stream if it is at `expected`: the next
    /// positions of the tenant, each hashed after the one before.
    pub async fn append(
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
        let head = self.lock_head(tenant).await?;
        let actual = self.stream_version(tenant, stream).await?;
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
        let client = self.client()?;
        let insert = client
            .prepare_cached(
                "INSERT INTO events (tenant, position, stream, version, event_type, \
                 schema_version, payload, metadata, recorded_at, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(storage("preparing an insert"))?;
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
            let schema_version = i32::try_from(event.schema_version).unwrap_or(i32::MAX);
            client
                .execute(
                    &insert,
                    &[
                        &tenant,
                        &to_i64(position),
                        &stream,
                        &to_i64(version),
                        &event.event_type,
                        &schema_version,
                        &event.payload,
                        &metadata,
                        &recorded_at,
                        &prev_hash.as_slice(),
                        &hash.as_slice(),
                    ],
                )
                .await
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
        client
            .execute(
                "UPDATE tenant_heads SET position = $2, hash = $3 WHERE tenant = $1",
                &[&tenant, &to_i64(position), &prev_hash.as_slice()],
            )
            .await
            .map_err(storage("moving a tenant's head"))?;
        if let Some(held) = self.heads.get_mut(head) {
            *held = (tenant.to_owned(), position, prev_hash, recorded_at);
        }
        Ok(recorded)
    }

    /// Commits: every append of this transaction is durable when it
    /// returns, and the heads it held are released.
    pub async fn commit(mut self) -> Result<(), LogError> {
        let client = self.client.take().ok_or(LogError::WriterStopped)?;
        client.batch_execute("COMMIT").await.map_err(storage("committing"))
    }

    /// Rolls back: nothing this transaction appended is kept.
    pub async fn rollback(mut self) -> Result<(), LogError> {
        let client = self.client.take().ok_or(LogError::WriterStopped)?;
        client.batch_execute("ROLLBACK").await.map_err(storage("rolling back"))
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        // A transaction dropped open must not go back to the pool open:
        // the connection is detached and closed, which rolls it back.
        if let Some(client) = self.client.take() {
            let _ = deadpool_postgres::Object::take(client);
        }
    }
}
