//! What the admin console remembers between requests: sessions, one-time
//! sign-in links, and the last chain check of each tenant.
//!
//! It owns the `console_sessions`, `console_links` and `console_verify`
//! tables. This is operational state, not history: nothing here is folded
//! from events and a rebuild never touches it. Secrets are kept only as
//! SHA-256 hashes; the caller hashes them.

use events::db::{Db, DbError, OptionalExtension};
use events::params;

use crate::ProjectionError;

/// A signed-in console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub tenant_id: String,
    /// The token the session acts as (an admin or audit token).
    pub token_id: String,
    /// The form token every state-changing request must carry.
    pub csrf: String,
    pub created_at: String,
    pub expires_at: String,
}

/// Starts a session, and forgets the sessions and links that have expired
/// (so the tables stay the size of what is in use).
pub fn start_session(
    connection: &dyn Db,
    secret_sha256: &[u8; 32],
    session: &SessionRow,
) -> Result<(), ProjectionError> {
    (|| -> Result<_, DbError> {
        connection
            .prepare_cached(
                "INSERT INTO console_sessions \
                 (secret_sha256, tenant_id, token_id, csrf, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                secret_sha256.as_slice(),
                session.tenant_id,
                session.token_id,
                session.csrf,
                session.created_at,
                session.expires_at
            ])?;
        let now = &session.created_at;
        connection
            .prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?
            .execute([now])?;
        connection
            .prepare_cached("DELETE FROM console_links WHERE expires_at <= ?1")?
            .execute([now])?;
        Ok(())
    })()
    .map_err(ProjectionError::storage("starting a console session"))
}

/// The session a cookie names, expired or not (the caller compares).
pub fn session(
    connection: &dyn Db,
    secret_sha256: &[u8; 32],
) -> Result<Option<SessionRow>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT tenant_id, token_id, csrf, created_at, expires_at FROM console_sessions \
             WHERE secret_sha256 = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([secret_sha256.as_slice()], |row| {
                    Ok(SessionRow {
                        tenant_id: row.get(0)?,
                        token_id: row.get(1)?,
                        csrf: row.get(2)?,
                        created_at: row.get(3)?,
                        expires_at: row.get(4)?,
                    })
                })
                .optional()
        })
        .map_err(ProjectionError::storage("reading a console session"))
}

/// Ends a session (signing out); ending one that is gone is harmless.
pub fn end_session(connection: &dyn Db, secret_sha256: &[u8; 32]) -> Result<(), ProjectionError> {
    connection
        .prepare_cached("DELETE FROM console_sessions WHERE secret_sha256 = ?1")
        .and_then(|mut statement| statement.execute([secret_sha256.as_slice()]))
        .map(drop)
        .map_err(ProjectionError::storage("ending a console session"))
}

/// Records a one-time sign-in link for the token it will sign in as.
pub fn add_link(
    connection: &dyn Db,
    secret_sha256: &[u8; 32],
    tenant_id: &str,
    token_id: &str,
    expires_at: &str,
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(
            "INSERT INTO console_links (secret_sha256, tenant_id, token_id, expires_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut statement| {
            statement.execute(params![secret_sha256.as_slice(), tenant_id, token_id, expires_at])
        })
        .map(drop)
        .map_err(ProjectionError::storage("recording a sign-in link"))
}

/// Uses a sign-in link up: returns its (tenant, token, expiry) and deletes
/// it, so a second use finds nothing. Call it inside the writer.
pub fn take_link(
    connection: &dyn Db,
    secret_sha256: &[u8; 32],
) -> Result<Option<(String, String, String)>, ProjectionError> {
    connection
        .prepare_cached(
            "DELETE FROM console_links WHERE secret_sha256 = ?1 \
             RETURNING tenant_id, token_id, expires_at",
        )
        .and_then(|mut statement| {
            statement
                .query_row([secret_sha256.as_slice()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
        })
        .map_err(ProjectionError::storage("using a sign-in link"))
}

/// A tenant's last chain check from the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRow {
    pub at: String,
    pub ok: bool,
    pub events_checked: u64,
    /// `POSITION:HASH` of the head the check reached, when it passed.
    pub checkpoint: Option<String>,
    /// What was wrong, when it failed.
    pub problem: Option<String>,
}

pub fn record_verify(
    connection: &dyn Db,
    tenant_id: &str,
    row: &VerifyRow,
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(
            "INSERT INTO console_verify \
             (tenant_id, at, ok, events_checked, checkpoint, problem) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (tenant_id) DO UPDATE SET at = excluded.at, ok = excluded.ok, \
             events_checked = excluded.events_checked, checkpoint = excluded.checkpoint, \
             problem = excluded.problem",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                tenant_id,
                row.at,
                i64::from(row.ok),
                i64::try_from(row.events_checked).unwrap_or(i64::MAX),
                row.checkpoint,
                row.problem
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("recording a chain check"))
}

pub fn last_verify(
    connection: &dyn Db,
    tenant_id: &str,
) -> Result<Option<VerifyRow>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT at, ok, events_checked, checkpoint, problem FROM console_verify \
             WHERE tenant_id = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([tenant_id], |row| {
                    let checked: i64 = row.get(2)?;
                    Ok(VerifyRow {
                        at: row.get(0)?,
                        ok: row.get(1)?,
                        events_checked: u64::try_from(checked).unwrap_or(0),
                        checkpoint: row.get(3)?,
                        problem: row.get(4)?,
                    })
                })
                .optional()
        })
        .map_err(ProjectionError::storage("reading the last chain check"))
}
