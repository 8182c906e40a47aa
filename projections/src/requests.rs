//! The request log: each SCIM request of an admitted token that wrote or
//! failed, with the status it was answered, how long it took and, for a
//! failure, why.
//!
//! It owns the `request_log` table. This is telemetry, not history: the
//! requests that changed something are in the event log for good (body,
//! target, token, request id); this table adds what only the response
//! knows (the status, the error) and the requests that changed nothing,
//! failed ones above all, for as long as its bound keeps them. Nothing
//! here is folded from events, and a rebuild never touches it.

use events::db::{Db, DbError, OptionalExtension, Row};
use events::params;
use serde::Serialize;

use crate::ProjectionError;
use crate::sql_integer as sql;

/// One request as answered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestRow {
    pub tenant_id: String,
    pub request_id: String,
    /// When it arrived: UTC, RFC 3339, milliseconds.
    pub at: String,
    pub token_id: String,
    pub method: String,
    /// The path, without the query: a query names people (`filter=userName
    /// eq "..."`), and this table is telemetry, kept outside the erasable
    /// history.
    pub target: String,
    pub status: u16,
    pub duration_ms: u64,
    pub user_agent: Option<String>,
    /// A failure's message, as the client was told it.
    pub error: Option<String>,
}

/// Appends `rows`, then, for each tenant in `trim`, forgets its oldest rows
/// beyond `keep`: the bound is per tenant, so one tenant's flood of
/// failures never pushes out another's provisioning log.
pub fn record(
    connection: &dyn Db,
    rows: &[RequestRow],
    keep: u64,
    trim: &[&str],
) -> Result<(), ProjectionError> {
    let context = ProjectionError::storage("recording requests");
    (|| -> Result<_, DbError> {
        let mut insert = connection.prepare_cached(
            "INSERT INTO request_log (tenant_id, request_id, at, token_id, method, target, status, \
             duration_ms, user_agent, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for row in rows {
            insert.execute(params![
                row.tenant_id,
                row.request_id,
                row.at,
                row.token_id,
                row.method,
                row.target,
                i64::from(row.status),
                sql(row.duration_ms),
                row.user_agent,
                row.error
            ])?;
        }
        // Sequence numbers only grow, so a tenant's newest `keep` are its
        // rows after the one `keep` back along its index.
        let mut forget = connection.prepare_cached(
            "DELETE FROM request_log INDEXED BY request_log_by_tenant WHERE tenant_id = ?1 \
             AND seq <= (SELECT seq FROM request_log INDEXED BY request_log_by_tenant \
             WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?;
        for tenant in trim {
            forget.execute(params![tenant, sql(keep)])?;
        }
        Ok(())
    })()
    .map_err(context)
}

const COLUMNS: &str = "tenant_id, request_id, at, token_id, method, target, status, duration_ms, \
                       user_agent, error";

fn from_row(row: &Row<'_>) -> Result<RequestRow, DbError> {
    let duration: i64 = row.get(7)?;
    Ok(RequestRow {
        tenant_id: row.get(0)?,
        request_id: row.get(1)?,
        at: row.get(2)?,
        token_id: row.get(3)?,
        method: row.get(4)?,
        target: row.get(5)?,
        status: row.get(6)?,
        duration_ms: u64::try_from(duration).unwrap_or(0),
        user_agent: row.get(8)?,
        error: row.get(9)?,
    })
}

/// The tenant's request with this id, if the log still has it (the latest,
/// should a client have reused an id).
pub fn by_request_id(
    connection: &dyn Db,
    tenant_id: &str,
    request_id: &str,
) -> Result<Option<RequestRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM request_log WHERE tenant_id = ?1 AND request_id = ?2 \
             ORDER BY seq DESC LIMIT 1"
        ))
        .and_then(|mut statement| statement.query_row([tenant_id, request_id], from_row).optional())
        .map_err(ProjectionError::storage("reading the request log"))
}

/// A tenant's newest requests, newest first: all of them, or only those
/// answered with an error (`failed`).
pub fn recent(
    connection: &dyn Db,
    tenant_id: &str,
    failed: bool,
    offset: u64,
    limit: u64,
) -> Result<Vec<RequestRow>, ProjectionError> {
    // Each form names its index: the failures' partial one, or by tenant.
    let filter = if failed { "AND status >= 400" } else { "" };
    connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM request_log WHERE tenant_id = ?1 {filter} \
             ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
        ))
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant_id, sql(limit), sql(offset)], from_row)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(ProjectionError::storage("reading the request log"))
}
