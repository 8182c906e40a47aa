//! The projection tables, created beside the events table.
//!
//! Projection tables hold nothing the log does not: dropping them and
//! folding the log again must give the same rows. The one exception is
//! `token_usage`, operational telemetry (when a token was last used) that is
//! deliberately not an event: recording every request in the log would
//! drown the facts auditors need.

use rusqlite::Connection;

use crate::ProjectionError;

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL,
    position INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    scope TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL UNIQUE,
    label TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    position INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS tokens_by_tenant ON tokens (tenant_id, created_at);

CREATE TABLE IF NOT EXISTS token_usage (
    token_id TEXT PRIMARY KEY,
    last_used_at TEXT NOT NULL
) STRICT;
"#;

/// Creates the projection tables if they are missing. Run through the
/// writer, so it serialises with every other write.
pub fn migrate(connection: &Connection) -> Result<(), ProjectionError> {
    connection.execute_batch(CREATE).map_err(ProjectionError::storage("creating projection tables"))
}
