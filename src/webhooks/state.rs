//! Where deliveries stand: per endpoint, the feed cursor delivered through,
//! the attempts at the next message, when to try again, the last answer;
//! and the recent attempts themselves. Operational state, not facts: it
//! lives in its own SQLite file beside the database (`<db>.deliveries`),
//! so recording a delivery never waits for (or delays) the event writer,
//! and it commits with `synchronous=NORMAL`: a commit survives a crash or
//! `kill -9` of rollcall (WAL), and only a power cut may lose the last
//! few, which then means those events are delivered again, never lost.
//!
//! Several processes may open it (the server's deliverer, the CLI's
//! `webhook redeliver`): a change an admin makes bumps the endpoint's
//! `generation`, and the deliverer's records are conditional on the
//! generation it read, so a rewind is never overwritten by a delivery that
//! was in flight when it happened.
//!
//! On PostgreSQL the same two tables live in the shared database, so any
//! node can take over an endpoint where another left it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use events::db::{Db, DbError, OptionalExtension};
use events::params;
use events::postgres::PgPool;
use projections::feed::Cursor;
use rusqlite::Connection;

use crate::error::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery_state (
    tenant_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    failing_since TEXT,
    pending_position INTEGER,
    pending_seq INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    last_status INTEGER,
    last_error TEXT,
    last_latency_ms INTEGER,
    PRIMARY KEY (tenant_id, webhook_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS delivery_attempts (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    message_id TEXT NOT NULL,
    first_cursor TEXT NOT NULL,
    last_cursor TEXT NOT NULL,
    events INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    latency_ms INTEGER NOT NULL,
    response TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS delivery_attempts_by_webhook
    ON delivery_attempts (tenant_id, webhook_id, id);
";

/// Attempts kept per endpoint, newest first (older ones are dropped).
pub const ATTEMPTS_KEPT: i64 = 1000;

/// Where one endpoint's deliveries stand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryState {
    /// Delivered through here (2xx).
    pub cursor: Cursor,
    /// Bumped by every admin change (rewind, retry now).
    pub generation: i64,
    /// Failed attempts at the next message, since its last success.
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    /// The first failure of the current run of failures.
    pub failing_since: Option<String>,
    /// A batch being retried is sent again exactly as first sent: through
    /// this cursor.
    pub pending_through: Option<Cursor>,
    /// Messages delivered (2xx), ever.
    pub delivered: u64,
    pub last_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
}

/// One attempt to deliver a message (an event, or a batch of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `delivery`, `redelivery` (one event sent again on request) or `test`.
    pub kind: &'static str,
    pub message_id: String,
    pub first_cursor: String,
    pub last_cursor: String,
    pub events: u32,
    pub attempt: u32,
    pub at: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The start of the response body, at most [`RESPONSE_KEPT`] bytes.
    pub response: Option<String>,
}

/// Bytes of a response body kept with its attempt.
pub const RESPONSE_KEPT: usize = 1024;

/// Where the delivery state is kept.
#[derive(Debug)]
enum Backing {
    File { path: PathBuf, connection: Mutex<Connection> },
    Postgres(Arc<PgPool>),
}

/// The delivery state: its file, or its tables on PostgreSQL.
#[derive(Debug)]
pub struct Deliveries {
    backing: Backing,
    /// Attempts recorded by this process, answered 2xx and not: counters
    /// for metrics (the attempts table keeps only the latest, so it cannot
    /// count).
    answered_ok: std::sync::atomic::AtomicU64,
    answered_failed: std::sync::atomic::AtomicU64,
}

fn storage<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |error| Error::Internal(format!("delivery state: {context}: {error}"))
}

fn cursor_of(position: Option<i64>, seq: Option<i64>) -> Option<Cursor> {
    Some(Cursor {
        position: u64::try_from(position?).ok()?,
        seq: u16::try_from(seq.unwrap_or(0)).ok()?,
    })
}

impl Deliveries {
    /// The file beside the database at `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".deliveries");
        PathBuf::from(name)
    }

    /// Opens (or creates) the file beside the database at `db`.
    pub fn open(db: &Path) -> Result<Deliveries, Error> {
        let path = Deliveries::path_for(db);
        let connection = Connection::open(&path).map_err(storage("opening the file"))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 10000;",
            )
            .and_then(|()| connection.execute_batch(SCHEMA))
            .map_err(storage("setting up the file"))?;
        Ok(Deliveries::with_backing(Backing::File { path, connection: Mutex::new(connection) }))
    }

    /// The delivery state of `store`'s database: the file beside it, or
    /// its tables in the PostgreSQL database.
    pub fn of(store: &crate::store::Store) -> Result<Deliveries, Error> {
        match store.log() {
            crate::store::log::Log::Sqlite(log) => Deliveries::open(log.path()),
            crate::store::log::Log::Postgres(node) => {
                Deliveries::open_postgres(node.log.pool().clone())
            }
        }
    }

    /// The delivery state in the PostgreSQL database of `pool`, its tables
    /// made if missing (under the schema lock, as nodes may start at once).
    pub fn open_postgres(pool: Arc<PgPool>) -> Result<Deliveries, Error> {
        let connection = pool.get().map_err(storage("reaching the database"))?;
        connection
            .execute_batch(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({}); {} COMMIT;",
                events::postgres::SCHEMA_LOCK,
                projections::schema::postgres_ddl(SCHEMA)
            ))
            .map_err(storage("setting up the tables"))?;
        drop(connection);
        Ok(Deliveries::with_backing(Backing::Postgres(pool)))
    }

    fn with_backing(backing: Backing) -> Deliveries {
        Deliveries { backing, answered_ok: Default::default(), answered_failed: Default::default() }
    }

    /// The file, on SQLite.
    pub fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::File { path, .. } => Some(path),
            Backing::Postgres(_) => None,
        }
    }

    fn with<T>(&self, work: impl FnOnce(&dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        match &self.backing {
            Backing::File { connection, .. } => {
                let connection = connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                work(&*connection)
            }
            Backing::Postgres(pool) => {
                let connection = pool.get().map_err(storage("reaching the database"))?;
                work(&*connection)
            }
        }
    }

    /// Where an endpoint stands; one created at `from` starts there.
    pub fn state(
        &self,
        tenant: &str,
        webhook_id: &str,
        from: Cursor,
    ) -> Result<DeliveryState, Error> {
        self.with(|connection| {
            connection
                .prepare_cached(
                    "INSERT INTO delivery_state (tenant_id, webhook_id, position, seq) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        tenant,
                        webhook_id,
                        projections::sql_integer(from.position),
                        i64::from(from.seq)
                    ])
                })
                .map_err(storage("starting an endpoint's state"))?;
            read_state(connection, tenant, webhook_id)?
                .ok_or_else(|| Error::Internal("delivery state vanished".to_owned()))
        })
    }

    /// Where an endpoint stands, if it has started.
    /// Over every endpoint: messages delivered (2xx) ever, and how many
    /// endpoints are failing now (their next message has failed attempts).
    pub fn totals(&self) -> Result<(u64, u64), Error> {
        self.with(|connection| {
            connection
                .prepare_cached(
                    "SELECT CAST(coalesce(sum(delivered), 0) AS BIGINT), \
                     count(*) FILTER (WHERE attempts > 0) FROM delivery_state",
                )
                .and_then(|mut statement| {
                    statement.query_row([], |row| {
                        Ok((
                            row.get::<_, i64>(0)?.max(0) as u64,
                            row.get::<_, i64>(1)?.max(0) as u64,
                        ))
                    })
                })
                .map_err(|error| Error::Internal(format!("reading delivery totals: {error}")))
        })
    }

    fn count(&self, attempt: &Attempt) {
        let ok = attempt.status.is_some_and(|status| (200..300).contains(&status));
        let counter = if ok { &self.answered_ok } else { &self.answered_failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Attempts this process recorded: `(answered 2xx, failed)`, a failure
    /// being any other status, a timeout or a refused connection.
    pub fn attempt_totals(&self) -> (u64, u64) {
        let read = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        (read(&self.answered_ok), read(&self.answered_failed))
    }

    /// Where every endpoint with a state stands: delivered through which
    /// cursor, by tenant and endpoint id.
    pub fn cursors(&self) -> Result<HashMap<(String, String), Cursor>, Error> {
        self.with(|connection| {
            connection
                .prepare_cached("SELECT tenant_id, webhook_id, position, seq FROM delivery_state")
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| {
                            Ok((
                                (row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                                Cursor {
                                    position: row.get::<_, i64>(2)?.max(0) as u64,
                                    seq: u16::try_from(row.get::<_, i64>(3)?).unwrap_or(u16::MAX),
                                },
                            ))
                        })?
                        .collect::<Result<HashMap<_, _>, DbError>>()
                })
                .map_err(storage("reading delivery cursors"))
        })
    }

    pub fn existing(&self, tenant: &str, webhook_id: &str) -> Result<Option<DeliveryState>, Error> {
        self.with(|connection| read_state(connection, tenant, webhook_id))
    }

    /// Records an attempt and the state after it, unless an admin changed
    /// the state since `next.generation` was read: then nothing is written
    /// and the answer is false (the deliverer reads the state again).
    pub fn record(
        &self,
        tenant: &str,
        webhook_id: &str,
        attempt: &Attempt,
        next: &DeliveryState,
    ) -> Result<bool, Error> {
        self.count(attempt);
        self.with(|connection| {
            connection.execute_batch("BEGIN").map_err(storage("beginning"))?;
            let recorded = record_in(connection, tenant, webhook_id, attempt, next);
            let ended = match recorded {
                Ok(true) => connection.execute_batch("COMMIT"),
                _ => connection.execute_batch("ROLLBACK"),
            };
            let recorded = recorded?;
            ended.map_err(storage("committing a delivery"))?;
            Ok(recorded)
        })
    }

    /// Records an attempt outside the order (a test event, a redelivery of
    /// one event): the endpoint's place in the feed does not move.
    pub fn record_extra(
        &self,
        tenant: &str,
        webhook_id: &str,
        attempt: &Attempt,
    ) -> Result<(), Error> {
        self.count(attempt);
        self.with(|connection| insert_attempt(connection, tenant, webhook_id, attempt))
    }

    /// An admin's change: deliver again from `to` (every event after it),
    /// or, with `None`, try the waiting message now. Clears the backoff.
    pub fn rewind(
        &self,
        tenant: &str,
        webhook_id: &str,
        to: Option<Cursor>,
    ) -> Result<bool, Error> {
        self.with(|connection| {
            let changed = connection
                .execute(
                    "UPDATE delivery_state SET generation = generation + 1, attempts = 0, \
                     next_attempt_at = NULL, pending_position = NULL, pending_seq = NULL, \
                     position = coalesce(?3, position), seq = coalesce(?4, seq) \
                     WHERE tenant_id = ?1 AND webhook_id = ?2",
                    params![
                        tenant,
                        webhook_id,
                        to.map(|c| projections::sql_integer(c.position)),
                        to.map(|c| i64::from(c.seq))
                    ],
                )
                .map_err(storage("rewinding an endpoint"))?;
            Ok(changed > 0)
        })
    }

    /// Forgets a deleted endpoint.
    pub fn forget(&self, tenant: &str, webhook_id: &str) -> Result<(), Error> {
        self.with(|connection| {
            connection
                .execute(
                    "DELETE FROM delivery_state WHERE tenant_id = ?1 AND webhook_id = ?2",
                    params![tenant, webhook_id],
                )
                .and_then(|_| {
                    connection.execute(
                        "DELETE FROM delivery_attempts WHERE tenant_id = ?1 AND webhook_id = ?2",
                        params![tenant, webhook_id],
                    )
                })
                .map(drop)
                .map_err(storage("forgetting an endpoint"))
        })
    }

    /// The newest attempts of an endpoint (failed ones only, with `failed`).
    pub fn attempts(
        &self,
        tenant: &str,
        webhook_id: &str,
        failed: bool,
        limit: u64,
    ) -> Result<Vec<Attempt>, Error> {
        self.with(|connection| {
            connection
                .prepare_cached(
                    "SELECT kind, message_id, first_cursor, last_cursor, events, attempt, at, \
                     status, error, latency_ms, response FROM delivery_attempts \
                     WHERE tenant_id = ?1 AND webhook_id = ?2 \
                     AND (CAST(?3 AS BIGINT) = 0 OR status IS NULL OR status NOT BETWEEN 200 AND 299) \
                     ORDER BY id DESC LIMIT ?4",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map(
                            params![
                                tenant,
                                webhook_id,
                                i64::from(failed),
                                projections::sql_integer(limit)
                            ],
                            |row| {
                                let kind: String = row.get(0)?;
                                Ok(Attempt {
                                    kind: match kind.as_str() {
                                        "redelivery" => "redelivery",
                                        "test" => "test",
                                        _ => "delivery",
                                    },
                                    message_id: row.get(1)?,
                                    first_cursor: row.get(2)?,
                                    last_cursor: row.get(3)?,
                                    events: row.get(4)?,
                                    attempt: row.get(5)?,
                                    at: row.get(6)?,
                                    status: row.get(7)?,
                                    error: row.get(8)?,
                                    latency_ms: u64::try_from(row.get::<_, i64>(9)?).unwrap_or(0),
                                    response: row.get(10)?,
                                })
                            },
                        )?
                        .collect::<Result<Vec<_>, DbError>>()
                })
                .map_err(storage("reading attempts"))
        })
    }
}

/// The conditional update of [`Deliveries::record`], inside its
/// transaction: false when the generation moved.
fn record_in(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
    attempt: &Attempt,
    next: &DeliveryState,
) -> Result<bool, Error> {
    let changed = connection
        .prepare_cached(
            "UPDATE delivery_state SET position = ?3, seq = ?4, attempts = ?5, \
                 next_attempt_at = ?6, failing_since = ?7, pending_position = ?8, \
                 pending_seq = ?9, delivered = ?10, last_attempt_at = ?11, last_status = ?12, \
                 last_error = ?13, last_latency_ms = ?14 \
                 WHERE tenant_id = ?1 AND webhook_id = ?2 AND generation = ?15",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                tenant,
                webhook_id,
                projections::sql_integer(next.cursor.position),
                i64::from(next.cursor.seq),
                i64::from(next.attempts),
                next.next_attempt_at,
                next.failing_since,
                next.pending_through.map(|c| projections::sql_integer(c.position)),
                next.pending_through.map(|c| i64::from(c.seq)),
                projections::sql_integer(next.delivered),
                next.last_attempt_at,
                next.last_status.map(i64::from),
                next.last_error,
                next.last_latency_ms.map(projections::sql_integer),
                next.generation
            ])
        })
        .map_err(storage("recording a delivery"))?;
    if changed == 0 {
        return Ok(false);
    }
    insert_attempt(connection, tenant, webhook_id, attempt)?;
    Ok(true)
}

fn read_state(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
) -> Result<Option<DeliveryState>, Error> {
    connection
        .prepare_cached(
            "SELECT position, seq, generation, attempts, next_attempt_at, failing_since, \
             pending_position, pending_seq, delivered, last_attempt_at, last_status, last_error, \
             last_latency_ms FROM delivery_state WHERE tenant_id = ?1 AND webhook_id = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![tenant, webhook_id], |row| {
                    Ok(DeliveryState {
                        cursor: cursor_of(row.get(0)?, row.get(1)?).unwrap_or_default(),
                        generation: row.get(2)?,
                        attempts: row.get(3)?,
                        next_attempt_at: row.get(4)?,
                        failing_since: row.get(5)?,
                        pending_through: cursor_of(row.get(6)?, row.get(7)?),
                        delivered: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
                        last_attempt_at: row.get(9)?,
                        last_status: row.get(10)?,
                        last_error: row.get(11)?,
                        last_latency_ms: row
                            .get::<_, Option<i64>>(12)?
                            .and_then(|ms| u64::try_from(ms).ok()),
                    })
                })
                .optional()
        })
        .map_err(storage("reading an endpoint's state"))
}

fn insert_attempt(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
    attempt: &Attempt,
) -> Result<(), Error> {
    let id: i64 = connection
        .prepare_cached(
            "INSERT INTO delivery_attempts (tenant_id, webhook_id, kind, message_id, first_cursor, \
             last_cursor, events, attempt, at, status, error, latency_ms, response) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        )
        .and_then(|mut statement| {
            statement.query_row(
                params![
                    tenant,
                    webhook_id,
                    attempt.kind,
                    attempt.message_id,
                    attempt.first_cursor,
                    attempt.last_cursor,
                    i64::from(attempt.events),
                    i64::from(attempt.attempt),
                    attempt.at,
                    attempt.status.map(i64::from),
                    attempt.error,
                    projections::sql_integer(attempt.latency_ms),
                    attempt.response
                ],
                |row| row.get(0),
            )
        })
        .map_err(storage("recording an attempt"))?;
    // Amortised: every hundredth attempt drops what is past the bound.
    if id % 100 == 0 {
        connection
            .execute(
                "DELETE FROM delivery_attempts WHERE tenant_id = ?1 AND webhook_id = ?2 AND id <= \
                 (SELECT id FROM delivery_attempts WHERE tenant_id = ?1 AND webhook_id = ?2 \
                  ORDER BY id DESC LIMIT 1 OFFSET ?3)",
                params![tenant, webhook_id, ATTEMPTS_KEPT],
            )
            .map_err(storage("trimming attempts"))?;
    }
    Ok(())
}
