//! The log a [`super::Store`] runs on: the embedded SQLite file, or a
//! PostgreSQL database shared by any number of nodes (issue 22), behind
//! the one set of operations the application asks of a log.
//!
//! Positions. On SQLite a position is global; on PostgreSQL it is an
//! ordinal of its tenant (`events::postgres`). So every operation that
//! addresses an event by position names its tenant, and both backends
//! answer the same for it. What only the SQLite file has (its path, the
//! writer's statistics, the scratch folds of rebuild and as-of) is reached
//! through [`Log::sqlite`], and its callers say what they do without it.
//!
//! This module owns no table and no SQL of its own: it routes.

use std::path::Path;
use std::sync::Arc;

use events::postgres::{PgLog, PgWriter};
use events::seal::Keyring;
use events::sqlite::SqliteLog;
use events::{EventLog, EventRef, LogError, Position, RecordedEvent, VerifyReport, VerifyScope};

pub use events::VisitError;

/// The log of a store.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one per process, never moved after opening")]
pub enum Log {
    Sqlite(SqliteLog),
    Postgres(PgNode),
}

/// One node's handle on a log on PostgreSQL: its reads, its writer, the
/// clock and keys its commands use.
pub struct PgNode {
    pub log: PgLog,
    pub writer: PgWriter,
    pub clock: fn() -> jiff::Timestamp,
    pub keys: Arc<super::keys::KeyStore>,
    /// Connections this node keeps at most.
    pub pool_size: usize,
    /// Connections that hold advisory locks (`Store::try_lock`), one per
    /// lock held, apart from the pool so that long-held locks (a webhook
    /// endpoint's deliverer) never starve the writer and the reads.
    pub locks: Arc<events::postgres::PgPool>,
}

impl std::fmt::Debug for PgNode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PgNode").field("log", &self.log).finish_non_exhaustive()
    }
}

impl Log {
    /// The SQLite log, for what only the embedded file has.
    pub fn sqlite(&self) -> Option<&SqliteLog> {
        match self {
            Log::Sqlite(log) => Some(log),
            Log::Postgres(_) => None,
        }
    }

    /// The SQLite log, or an error naming `what` needs it: the parts of
    /// rollcall that PostgreSQL does not run yet (issue 22) say so.
    pub fn sqlite_for(&self, what: &str) -> Result<&SqliteLog, LogError> {
        self.sqlite().ok_or_else(|| LogError::Storage {
            context: "choosing a backend",
            message: format!("{what} runs on the SQLite backend only, for now"),
        })
    }

    /// The database file, on SQLite: files kept beside it (the webhook
    /// delivery state, as-of snapshots, locks) are named after it.
    pub fn path(&self) -> Option<&Path> {
        self.sqlite().map(SqliteLog::path)
    }

    /// The keys sealed personal values open with.
    pub fn keys(&self) -> &dyn Keyring {
        match self {
            Log::Sqlite(log) => log.keys(),
            Log::Postgres(node) => node.keys.as_ref(),
        }
    }

    /// Whether a write submitted now can succeed.
    pub fn is_writable(&self) -> bool {
        match self {
            Log::Sqlite(log) => log.is_writable(),
            Log::Postgres(node) => node.writer.is_running(),
        }
    }

    /// Wakes whenever this process's writer commits.
    pub fn watch_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Log::Sqlite(log) => log.watch_commits(),
            Log::Postgres(node) => node.writer.watch_commits(),
        }
    }

    /// Now, by the log's clock: every expiry and lifetime is decided
    /// against it.
    pub fn now(&self) -> jiff::Timestamp {
        (self.clock())()
    }

    /// The clock itself, for work that runs where the log is not at hand.
    pub fn clock(&self) -> fn() -> jiff::Timestamp {
        match self {
            Log::Sqlite(log) => log.clock(),
            Log::Postgres(node) => node.clock,
        }
    }

    /// [`Log::now`] in the events' format.
    pub fn now_millis(&self) -> String {
        events::time::format_millis(self.now())
    }

    /// A number that changes whenever anything was committed since the
    /// previous call, by any process: what the read cache checks. `None`
    /// on PostgreSQL, where another node's commit cannot be seen without a
    /// round trip that costs what the cache saves: there nothing is cached.
    pub fn generation(&self) -> Result<Option<u64>, LogError> {
        match self {
            Log::Sqlite(log) => log.generation().map(Some),
            Log::Postgres(_) => Ok(None),
        }
    }

    /// How far the log has come: the last position on SQLite, the sum of
    /// the tenants' last positions on PostgreSQL (either moves with every
    /// append).
    pub fn head(&self) -> Result<Position, LogError> {
        match self {
            Log::Sqlite(log) => log.head(),
            Log::Postgres(node) => node.log.head(),
        }
    }

    /// The position of the tenant's last event (0 before its first).
    pub fn tenant_head(&self, tenant: &str) -> Result<Position, LogError> {
        match self {
            Log::Sqlite(log) => log.tenant_head(tenant),
            Log::Postgres(node) => node.log.tenant_head(tenant),
        }
    }

    /// The event of `tenant` at `position`, if there is one.
    pub fn read_at(
        &self,
        tenant: &str,
        position: Position,
    ) -> Result<Option<RecordedEvent>, LogError> {
        match self {
            Log::Sqlite(log) => Ok(log.read_at(position)?.filter(|event| event.tenant == tenant)),
            Log::Postgres(node) => node.log.read_at(tenant, position),
        }
    }

    /// The events of one stream, in version order.
    pub fn read_stream(&self, tenant: &str, stream: &str) -> Result<Vec<RecordedEvent>, LogError> {
        match self {
            Log::Sqlite(log) => log.read_stream(tenant, stream),
            Log::Postgres(node) => node.log.read_stream(tenant, stream),
        }
    }

    /// The first position of `tenant`'s events recorded at or after
    /// `instant`, or a position after its last: a window of time as a
    /// range of positions, for a walk of that tenant.
    pub fn first_position_at(&self, tenant: &str, instant: &str) -> Result<Position, LogError> {
        match self {
            Log::Sqlite(log) => log.first_position_at(instant),
            Log::Postgres(node) => node.log.first_position_at(tenant, instant),
        }
    }

    /// Calls `visit` for every event of `tenant` after `after`, in
    /// position order, or (`None`) every event of the log.
    pub fn visit_forward<E>(
        &self,
        after: Position,
        tenant: Option<&str>,
        visit: impl FnMut(EventRef<'_>) -> Result<(), E>,
    ) -> Result<Position, VisitError<E>> {
        match self {
            Log::Sqlite(log) => log.visit_forward(after, tenant, visit),
            Log::Postgres(node) => node.log.visit_forward(after, tenant, visit),
        }
    }

    /// Walks the chains of `scope` and checks the log's guards.
    pub fn verify(&self, scope: VerifyScope) -> Result<VerifyReport, LogError> {
        match self {
            Log::Sqlite(log) => log.verify(scope),
            Log::Postgres(node) => node.log.verify(scope),
        }
    }

    /// How many heavy reads may hold a connection at once.
    pub fn heavy_readers_max(&self) -> usize {
        match self {
            Log::Sqlite(log) => log.heavy_readers_max(),
            // A quarter of the pool, as the SQLite pool keeps most of its
            // connections for quick reads.
            Log::Postgres(node) => (node.pool_size / 4).max(1),
        }
    }

    /// Lets queued commands finish and stops the writer.
    pub fn shutdown(&self) {
        match self {
            Log::Sqlite(log) => log.shutdown(),
            Log::Postgres(node) => node.writer.shutdown(),
        }
    }
}
