//! Tenants and their bearer tokens, as folded from TenantCreated,
//! TokenIssued and TokenRevoked.
//!
//! The token table is keyed by the SHA-256 of the secret, so resolving a
//! bearer token is one indexed lookup. Secrets themselves are never here.

use events::db::{Db, DbError, OptionalExtension, Row};
use events::event::{
    ClientRegistered, ClientRevoked, TenantCreated, TokenIssued, TokenRevoked, TokenScope,
};
use events::params;
use events::{ChainHash, Event, RecordedEvent};

use crate::ProjectionError;
use crate::schema::nocase;

/// A tenant as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub created_at: String,
}

/// A token's record, never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub scope: TokenScope,
    pub label: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

pub(crate) fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    let position = i64::try_from(recorded.position).unwrap_or(i64::MAX);
    match event {
        Event::TenantCreated(TenantCreated { tenant_id, name }) => connection
            .prepare_cached("INSERT INTO tenants (tenant_id, name, created_at, position) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut statement| statement.execute(params![tenant_id, name, recorded.recorded_at, position]))
            .map(drop)
            .map_err(ProjectionError::storage("projecting TenantCreated")),
        Event::TokenIssued(TokenIssued { token_id, scope, secret_sha256, expires_at, label, client_id }) => {
            // A hash that is not 64 hex digits can only come from a damaged
            // log; store it as given so the token simply never matches.
            let hash = events::hash::from_hex(secret_sha256)
                .map_or_else(|| secret_sha256.as_bytes().to_vec(), |hash| hash.to_vec());
            connection
                .prepare_cached(
                    "INSERT INTO tokens (token_id, tenant_id, scope, secret_sha256, label, created_at, expires_at, position, client_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        token_id,
                        recorded.tenant,
                        scope.as_str(),
                        hash,
                        label,
                        recorded.recorded_at,
                        expires_at,
                        position,
                        client_id
                    ])
                })
                .map(drop)
                .map_err(ProjectionError::storage("projecting TokenIssued"))
        }
        Event::TokenRevoked(TokenRevoked { token_id }) => connection
            .prepare_cached("UPDATE tokens SET revoked_at = ?2, position = ?3 WHERE token_id = ?1")
            .and_then(|mut statement| statement.execute(params![token_id, recorded.recorded_at, position]))
            .map(drop)
            .map_err(ProjectionError::storage("projecting TokenRevoked")),
        Event::ClientRegistered(ClientRegistered { client_id, secret_sha256, label }) => {
            let hash = events::hash::from_hex(secret_sha256)
                .map_or_else(|| secret_sha256.as_bytes().to_vec(), |hash| hash.to_vec());
            connection
                .prepare_cached(
                    "INSERT INTO oauth_clients (client_id, tenant_id, secret_sha256, label, created_at, position) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![client_id, recorded.tenant, hash, label, recorded.recorded_at, position])
                })
                .map(drop)
                .map_err(ProjectionError::storage("projecting ClientRegistered"))
        }
        Event::ClientRevoked(ClientRevoked { client_id }) => connection
            .prepare_cached("UPDATE oauth_clients SET revoked_at = ?2, position = ?3 WHERE client_id = ?1")
            .and_then(|mut statement| statement.execute(params![client_id, recorded.recorded_at, position]))
            .map(drop)
            .map_err(ProjectionError::storage("projecting ClientRevoked")),
        // Not this projection's. Listed rather than `_`, so a new event type
        // does not compile until someone decides what it folds to here.
        Event::UserCreated(_)
        | Event::UserUpdated(_)
        | Event::UserDeactivated(_)
        | Event::UserReactivated(_)
        | Event::UserDeleted(_)
        | Event::GroupCreated(_)
        | Event::GroupUpdated(_)
        | Event::GroupRenamed(_)
        | Event::GroupMembersAdded(_)
        | Event::GroupMembersRemoved(_)
        | Event::GroupDeleted(_)
        | Event::AttributeMappingChanged(_)
        | Event::RoleBindingChanged(_)
        | Event::ScheduleChanged(_)
        | Event::MemberJoined(_)
        | Event::MemberUpdated(_)
        | Event::MemberRolesChanged(_)
        | Event::MemberDisabled(_)
        | Event::MemberEnabled(_)
        | Event::MemberLeft(_)
        | Event::MemberRestored(_)
        | Event::MemberPurged(_)
        | Event::SubjectErased(_)
        | Event::MemberAppPropertiesChanged(_)
        | Event::MemberChangeDeferred(_)
        | Event::SyncStarted(_)
        | Event::SyncBatchApplied(_)
        | Event::SyncCompleted(_)
        | Event::SyncFailed(_)
        | Event::SyncDecided(_)
        | Event::WebhookCreated(_)
        | Event::WebhookChanged(_)
        | Event::WebhookPaused(_)
        | Event::WebhookResumed(_)
        | Event::WebhookSecretRotated(_)
        | Event::WebhookDisabled(_)
        | Event::WebhookDeleted(_) => Ok(()),
    }
}

/// An OAuth client's record, never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub secret_sha256: Vec<u8>,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

fn client_from_row(row: &Row<'_>) -> Result<ClientRecord, DbError> {
    Ok(ClientRecord {
        client_id: row.get(0)?,
        tenant_id: row.get(1)?,
        tenant_name: row.get(2)?,
        secret_sha256: row.get(3)?,
        label: row.get(4)?,
        created_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

const CLIENT_COLUMNS: &str = "c.client_id, c.tenant_id, n.name, c.secret_sha256, c.label, c.created_at, c.revoked_at \
                              FROM oauth_clients c JOIN tenants n ON n.tenant_id = c.tenant_id";

pub fn client_by_id(
    connection: &dyn Db,
    client_id: &str,
) -> Result<Option<ClientRecord>, ProjectionError> {
    connection
        .prepare_cached(&format!("SELECT {CLIENT_COLUMNS} WHERE c.client_id = ?1"))
        .and_then(|mut statement| statement.query_row([client_id], client_from_row).optional())
        .map_err(ProjectionError::storage("looking up an OAuth client"))
}

/// OAuth clients of one tenant, or of all, oldest first.
pub fn list_clients(
    connection: &dyn Db,
    tenant_id: Option<&str>,
) -> Result<Vec<ClientRecord>, ProjectionError> {
    match tenant_id {
        Some(tenant_id) => connection
            .prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} WHERE c.tenant_id = ?1 ORDER BY c.created_at, c.client_id"
            ))
            .and_then(|mut statement| statement.query_map([tenant_id], client_from_row)?.collect()),
        None => connection
            .prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} ORDER BY {}, c.created_at, c.client_id",
                nocase(connection, "n.name")
            ))
            .and_then(|mut statement| statement.query_map([], client_from_row)?.collect()),
    }
    .map_err(ProjectionError::storage("listing OAuth clients"))
}

/// A client's tokens that still work at `now` (neither revoked nor
/// expired: a client that took a token an hour for a year has 8,760, and
/// revoking it should not record 8,760 revocations of dead ones). Times
/// are fixed-width UTC text, so they compare as strings.
pub fn live_tokens_of_client(
    connection: &dyn Db,
    client_id: &str,
    now: &str,
) -> Result<Vec<TokenRecord>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} WHERE t.client_id = ?1 AND t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > ?2)"
        ))
        .and_then(|mut statement| statement.query_map([client_id, now], token_from_row)?.collect())
        .map_err(ProjectionError::storage("listing a client's tokens"))
}

fn tenant_from_row(row: &Row<'_>) -> Result<Tenant, DbError> {
    Ok(Tenant { tenant_id: row.get(0)?, name: row.get(1)?, created_at: row.get(2)? })
}

pub fn tenant_by_name(connection: &dyn Db, name: &str) -> Result<Option<Tenant>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT tenant_id, name, created_at FROM tenants WHERE {} = {}",
            nocase(connection, "name"),
            nocase(connection, "?1")
        ))
        .and_then(|mut statement| statement.query_row([name], tenant_from_row).optional())
        .map_err(ProjectionError::storage("looking up a tenant"))
}

pub fn tenant_by_id(
    connection: &dyn Db,
    tenant_id: &str,
) -> Result<Option<Tenant>, ProjectionError> {
    connection
        .prepare_cached("SELECT tenant_id, name, created_at FROM tenants WHERE tenant_id = ?1")
        .and_then(|mut statement| statement.query_row([tenant_id], tenant_from_row).optional())
        .map_err(ProjectionError::storage("looking up a tenant"))
}

pub fn list_tenants(connection: &dyn Db) -> Result<Vec<Tenant>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT tenant_id, name, created_at FROM tenants ORDER BY {}",
            nocase(connection, "name")
        ))
        .and_then(|mut statement| statement.query_map([], tenant_from_row)?.collect())
        .map_err(ProjectionError::storage("listing tenants"))
}

const TOKEN_COLUMNS: &str = "t.token_id, t.tenant_id, n.name, t.scope, t.label, t.created_at, t.expires_at, \
                             t.revoked_at, u.last_used_at \
                             FROM tokens t JOIN tenants n ON n.tenant_id = t.tenant_id \
                             LEFT JOIN token_usage u ON u.token_id = t.token_id";

fn token_from_row(row: &Row<'_>) -> Result<TokenRecord, DbError> {
    let scope: String = row.get(3)?;
    Ok(TokenRecord {
        token_id: row.get(0)?,
        tenant_id: row.get(1)?,
        tenant_name: row.get(2)?,
        scope: TokenScope::parse(&scope).ok_or_else(|| DbError::Column {
            index: 3,
            message: format!("unknown scope {scope}"),
        })?,
        label: row.get(4)?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        last_used_at: row.get(8)?,
    })
}

/// The token whose secret hashes to `secret_sha256`: the one indexed lookup
/// behind every authenticated request.
pub fn token_by_secret_hash(
    connection: &dyn Db,
    secret_sha256: &ChainHash,
) -> Result<Option<TokenRecord>, ProjectionError> {
    connection
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} WHERE t.secret_sha256 = ?1"))
        .and_then(|mut statement| {
            statement.query_row([&secret_sha256[..]], token_from_row).optional()
        })
        .map_err(ProjectionError::storage("looking up a token"))
}

pub fn token_by_id(
    connection: &dyn Db,
    token_id: &str,
) -> Result<Option<TokenRecord>, ProjectionError> {
    connection
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} WHERE t.token_id = ?1"))
        .and_then(|mut statement| statement.query_row([token_id], token_from_row).optional())
        .map_err(ProjectionError::storage("looking up a token"))
}

/// Tokens of one tenant, or of all tenants, oldest first.
pub fn list_tokens(
    connection: &dyn Db,
    tenant_id: Option<&str>,
) -> Result<Vec<TokenRecord>, ProjectionError> {
    let context = ProjectionError::storage("listing tokens");
    match tenant_id {
        Some(tenant_id) => connection
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} WHERE t.tenant_id = ?1 ORDER BY t.created_at, t.token_id"
            ))
            .and_then(|mut statement| statement.query_map([tenant_id], token_from_row)?.collect()),
        None => connection
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} ORDER BY {}, t.created_at, t.token_id",
                nocase(connection, "n.name")
            ))
            .and_then(|mut statement| statement.query_map([], token_from_row)?.collect()),
    }
    .map_err(context)
}

/// Notes that a token was just used. Telemetry, not history: see
/// [`crate::schema`].
pub fn record_token_use(
    connection: &dyn Db,
    token_id: &str,
    at: &str,
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(
            "INSERT INTO token_usage (token_id, last_used_at) VALUES (?1, ?2) \
             ON CONFLICT (token_id) DO UPDATE SET last_used_at = excluded.last_used_at",
        )
        .and_then(|mut statement| statement.execute([token_id, at]))
        .map(drop)
        .map_err(ProjectionError::storage("recording token use"))
}
