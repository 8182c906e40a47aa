//! `rollcall migrate --from FILE --to postgres://...`: an SQLite
//! deployment moved onto PostgreSQL. Every event is copied as stored
//! (positions, payloads, metadata and hashes byte for byte, so every hash,
//! checkpoint and export verifies against the new database), the folded
//! projections are made again from those events by the same folds, and
//! what lives beside the log comes along: the database's identity, its
//! data keys (erased ones as tombstones), and where each webhook endpoint's
//! deliveries stand (so nothing is delivered twice or skipped). The
//! operational tables (the request log, console sessions, token use) start
//! empty.
//!
//! One PostgreSQL transaction: a migration that fails leaves the target as
//! it was. A target that already holds events is refused. This module
//! reads the SQLite file and writes the PostgreSQL database; it owns no
//! table of its own.

use std::path::Path;
use std::sync::Arc;

use events::db::Db;
use events::postgres::{PgLog, PgPool};
use events::sqlite::LogOptions;
use events::{EventLog, VerifyScope, params};
use serde::Serialize;

use crate::error::Error;
use crate::store::Store;

/// What a migration moved, checked.
#[derive(Debug, Serialize)]
pub struct Migrated {
    pub events: u64,
    pub tenants: usize,
    pub keys: u64,
    pub webhook_cursors: u64,
    /// Every tenant's chain verified on PostgreSQL, head for head the
    /// SQLite file's.
    pub verified: bool,
}

fn storage(context: &'static str) -> impl FnOnce(events::db::DbError) -> Error {
    move |error| Error::from(events::LogError::storage(context, error))
}

/// Copies the SQLite database at `from` into the empty PostgreSQL
/// database at `to`.
pub fn migrate(from: &Path, to: &str) -> Result<Migrated, Error> {
    let source = Store::open_read_only(from, LogOptions::default())?;
    let sqlite = source.log().sqlite_for("migrate --from")?;
    let identity = source.read(crate::store::identity)?.ok_or_else(|| {
        Error::invalid("the file has no database identity: open it once with this build first")
    })?;
    let pool = Arc::new(PgPool::new(to, 4).map_err(storage("reaching PostgreSQL"))?);
    let log = PgLog::on(pool.clone())?;
    if log.head()? > 0 {
        return Err(Error::conflict(
            "the PostgreSQL database already holds events: migrate into an empty one",
        ));
    }
    let mut tx = log.transaction()?;
    projections::schema::migrate(tx.connection())?;
    crate::store::snapshots::ensure_key(tx.connection())?;
    tx.connection()
        .execute("INSERT INTO database_identity (id, identity) VALUES (1, ?1)", [&identity])
        .map_err(storage("recording the database's identity"))?;
    let mut events = 0u64;
    for recorded in sqlite.read_forward(0, None) {
        let recorded = recorded?;
        let event = recorded.decode(source.keys())?;
        tx.import(&recorded)?;
        projections::apply(tx.connection(), &recorded, &event)?;
        events += 1;
    }
    tx.commit()?;

    let keys = crate::store::keys::KeyStore::postgres(pool.clone());
    keys.bind(Some(&identity)).map_err(|error| Error::Internal(error.to_string()))?;
    let keys = copy_keys(from, &pool)?;
    let webhook_cursors = copy_delivery_state(from, &pool)?;

    // The chains on PostgreSQL, head for head the file's.
    let before = sqlite.verify(VerifyScope::All)?;
    let after = log.verify(VerifyScope::All)?;
    let heads = |report: &events::VerifyReport| {
        let mut heads: Vec<_> = report
            .heads
            .iter()
            .map(|head| (head.tenant.clone(), head.position, head.hash))
            .collect();
        heads.sort();
        heads
    };
    let verified = after.failure.is_none()
        && after.events_checked == events
        && heads(&before) == heads(&after);
    Ok(Migrated { events, tenants: after.heads.len(), keys, webhook_cursors, verified })
}

/// Every data key of the file's key store, erased ones as tombstones.
fn copy_keys(from: &Path, pool: &PgPool) -> Result<u64, Error> {
    let path = crate::store::keys::KeyStore::path_for(from);
    if !path.exists() {
        return Ok(0);
    }
    let file =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|error| Error::Internal(format!("opening {}: {error}", path.display())))?;
    let target = pool.get().map_err(storage("reaching PostgreSQL"))?;
    let db: &dyn Db = &file;
    let rows: Vec<(i64, Option<Vec<u8>>, Option<String>)> = db
        .prepare_cached("SELECT key_id, key, erased_at FROM data_keys ORDER BY key_id")
        .and_then(|mut statement| {
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?.collect()
        })
        .map_err(storage("reading the key store"))?;
    target.execute_batch("BEGIN").map_err(storage("copying keys"))?;
    for (id, key, erased_at) in &rows {
        target
            .execute(
                "INSERT INTO data_keys (key_id, key, erased_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                params![id, key.as_deref(), erased_at],
            )
            .map_err(storage("copying keys"))?;
    }
    target.execute_batch("COMMIT").map_err(storage("copying keys"))?;
    Ok(rows.len() as u64)
}

/// Where each webhook endpoint's deliveries stand (its attempts' history
/// stays in the file).
fn copy_delivery_state(from: &Path, pool: &Arc<PgPool>) -> Result<u64, Error> {
    let path = crate::webhooks::state::Deliveries::path_for(from);
    if !path.exists() {
        return Ok(0);
    }
    crate::webhooks::state::Deliveries::open_postgres(pool.clone())?;
    let file =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|error| Error::Internal(format!("opening {}: {error}", path.display())))?;
    let db: &dyn Db = &file;
    const COLUMNS: &str = "tenant_id, webhook_id, position, seq, generation, attempts, \
                           next_attempt_at, failing_since, pending_position, pending_seq, delivered, \
                           last_attempt_at, last_status, last_error, last_latency_ms";
    let rows: Vec<Vec<events::db::Value>> = db
        .prepare_cached(&format!("SELECT {COLUMNS} FROM delivery_state"))
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    (0..15).map(|index| row.get::<_, events::db::Value>(index)).collect()
                })?
                .collect()
        })
        .map_err(storage("reading the delivery state"))?;
    let target = pool.get().map_err(storage("reaching PostgreSQL"))?;
    let placeholders: Vec<String> = (1..=15).map(|n| format!("?{n}")).collect();
    let insert = format!(
        "INSERT INTO delivery_state ({COLUMNS}) VALUES ({}) ON CONFLICT DO NOTHING",
        placeholders.join(", ")
    );
    for row in &rows {
        target
            .execute(&insert, events::db::values_as_params(row))
            .map_err(storage("copying the delivery state"))?;
    }
    Ok(rows.len() as u64)
}
