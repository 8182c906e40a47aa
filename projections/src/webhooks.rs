//! Webhook endpoints: the `webhooks` table, folded from the Webhook events,
//! and the `webhook_secrets` table beside it.
//!
//! `webhooks` is a projection like the others: one row per endpoint that
//! is not deleted, with its settings and status (active, paused, disabled).
//! `webhook_secrets` is not folded: a signing secret must never be in the
//! log (which is immutable and exported), yet rollcall must hold it in the
//! clear to sign with. The command that records a `WebhookCreated` or
//! `WebhookSecretRotated` writes its secret here in the same transaction,
//! and a rebuild leaves the table alone. Where deliveries stand is not here
//! either: that is the deliverer's own file (`src/webhooks`).

use events::db::{Db, DbError, OptionalExtension, Row};
use events::event::{
    WebhookChanged, WebhookCreated, WebhookDeleted, WebhookDisabled, WebhookPaused, WebhookResumed,
    WebhookSecretRotated, WebhookSettings,
};
use events::params;
use events::{Event, RecordedEvent};

use crate::feed::Cursor;
use crate::{ProjectionError, sql_integer};

events::words! {
    /// Whether an endpoint receives deliveries.
    pub enum WebhookStatus {
        Active = "active",
        /// An admin paused it: deliveries wait, in order.
        Paused = "paused",
        /// rollcall stopped (410 Gone, or failing for too long): resuming
        /// it catches up.
        Disabled = "disabled",
    }
}

/// An endpoint as folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub tenant_id: String,
    pub webhook_id: String,
    pub settings: WebhookSettings,
    pub status: WebhookStatus,
    pub disabled_reason: Option<String>,
    /// Deliveries start after this place in the feed.
    pub from: Cursor,
    pub created_at: String,
    pub updated_at: String,
    pub secret_rotated_at: Option<String>,
    pub previous_secret_valid_until: Option<String>,
    /// The endpoint stream's version: the expected version of its next event.
    pub version: u64,
}

pub(crate) fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    let tenant = recorded.tenant.as_str();
    let storage = ProjectionError::storage("projecting a webhook endpoint");
    let (webhook_id, set, values): (&str, &str, Vec<events::db::Value>) = match event {
        Event::WebhookCreated(WebhookCreated { webhook_id, settings, from_position, from_seq }) => {
            return connection
                .prepare_cached(
                    "INSERT INTO webhooks (tenant_id, webhook_id, settings, status, from_position, \
                     from_seq, created_at, updated_at, version) \
                     VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6, ?6, ?7)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        tenant,
                        webhook_id,
                        settings_text(settings),
                        sql_integer(*from_position),
                        i64::from(*from_seq),
                        recorded.recorded_at,
                        sql_integer(recorded.version)
                    ])
                })
                .map(drop)
                .map_err(storage);
        }
        Event::WebhookChanged(WebhookChanged { webhook_id, settings }) => {
            (webhook_id, "settings = ?5", vec![settings_text(settings).into()])
        }
        Event::WebhookPaused(WebhookPaused { webhook_id }) => {
            (webhook_id, "status = 'paused'", Vec::new())
        }
        Event::WebhookResumed(WebhookResumed { webhook_id }) => {
            (webhook_id, "status = 'active', disabled_reason = NULL", Vec::new())
        }
        Event::WebhookSecretRotated(WebhookSecretRotated { webhook_id, previous_valid_until }) => (
            webhook_id,
            "secret_rotated_at = ?3, previous_secret_valid_until = ?5",
            vec![previous_valid_until.clone().into()],
        ),
        Event::WebhookDisabled(WebhookDisabled { webhook_id, reason }) => {
            (webhook_id, "status = 'disabled', disabled_reason = ?5", vec![reason.clone().into()])
        }
        Event::WebhookDeleted(WebhookDeleted { webhook_id }) => {
            return connection
                .prepare_cached("DELETE FROM webhooks WHERE tenant_id = ?1 AND webhook_id = ?2")
                .and_then(|mut statement| statement.execute(params![tenant, webhook_id]))
                .map(drop)
                .map_err(storage);
        }
        // Not this projection's. Listed rather than `_`, so a new event type
        // does not compile until someone decides what it folds to here.
        Event::TenantCreated(_)
        | Event::TokenIssued(_)
        | Event::TokenRevoked(_)
        | Event::ClientRegistered(_)
        | Event::ClientRevoked(_)
        | Event::UserCreated(_)
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
        | Event::SyncDecided(_) => return Ok(()),
    };
    let sql = format!(
        "UPDATE webhooks SET {set}, updated_at = ?3, version = ?4 \
         WHERE tenant_id = ?1 AND webhook_id = ?2"
    );
    let mut bound: Vec<events::db::Value> = vec![
        tenant.to_owned().into(),
        webhook_id.to_owned().into(),
        recorded.recorded_at.clone().into(),
        sql_integer(recorded.version).into(),
    ];
    bound.extend(values);
    connection
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.execute(events::db::values_as_params(&bound)))
        .map(drop)
        .map_err(storage)
}

fn settings_text(settings: &WebhookSettings) -> String {
    // Strings, a list of strings and a bool: encoding cannot fail.
    serde_json::to_string(settings).unwrap_or_default()
}

const COLUMNS: &str = "tenant_id, webhook_id, settings, status, disabled_reason, from_position, \
     from_seq, created_at, updated_at, secret_rotated_at, previous_secret_valid_until, version";

fn webhook_from_row(row: &Row<'_>) -> Result<WebhookRow, DbError> {
    let settings: String = row.get(2)?;
    let settings = serde_json::from_str(&settings)
        .map_err(|error| DbError::Column { index: 2, message: error.to_string() })?;
    let position: i64 = row.get(5)?;
    let version: i64 = row.get(11)?;
    Ok(WebhookRow {
        tenant_id: row.get(0)?,
        webhook_id: row.get(1)?,
        settings,
        status: crate::word_column(row, 3, WebhookStatus::parse)?,
        disabled_reason: row.get(4)?,
        from: Cursor { position: u64::try_from(position).unwrap_or(0), seq: row.get(6)? },
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        secret_rotated_at: row.get(9)?,
        previous_secret_valid_until: row.get(10)?,
        version: u64::try_from(version).unwrap_or(0),
    })
}

/// One endpoint of a tenant.
pub fn webhook(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
) -> Result<Option<WebhookRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhooks WHERE tenant_id = ?1 AND webhook_id = ?2"
        ))
        .and_then(|mut statement| {
            statement.query_row(params![tenant, webhook_id], webhook_from_row).optional()
        })
        .map_err(ProjectionError::storage("reading a webhook endpoint"))
}

/// A tenant's endpoints, oldest first; every tenant's with `None`.
pub fn webhooks(
    connection: &dyn Db,
    tenant: Option<&str>,
) -> Result<Vec<WebhookRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhooks WHERE CAST(?1 AS TEXT) IS NULL OR tenant_id = ?1 \
             ORDER BY tenant_id, created_at, webhook_id"
        ))
        .and_then(|mut statement| {
            statement.query_map([tenant], webhook_from_row)?.collect::<Result<Vec<_>, DbError>>()
        })
        .map_err(ProjectionError::storage("reading webhook endpoints"))
}

/// Keeps a new signing secret beside the log (see the module comment).
pub fn insert_secret(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
    secret: &str,
    created_at: &str,
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(
            "INSERT INTO webhook_secrets (tenant_id, webhook_id, secret, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut statement| {
            statement.execute(params![tenant, webhook_id, secret, created_at])
        })
        .map(drop)
        .map_err(ProjectionError::storage("keeping a webhook secret"))
}

/// Gives the endpoint's current secrets an end (a rotation's overlap),
/// and forgets those whose end has passed.
pub fn retire_secrets(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
    valid_until: &str,
    now: &str,
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(
            "UPDATE webhook_secrets SET valid_until = ?3 \
             WHERE tenant_id = ?1 AND webhook_id = ?2 AND valid_until IS NULL",
        )
        .and_then(|mut statement| statement.execute(params![tenant, webhook_id, valid_until]))
        .and_then(|_| {
            connection.execute(
                "DELETE FROM webhook_secrets WHERE tenant_id = ?1 AND webhook_id = ?2 \
                 AND valid_until IS NOT NULL AND valid_until <= ?3",
                params![tenant, webhook_id, now],
            )
        })
        .map(drop)
        .map_err(ProjectionError::storage("retiring webhook secrets"))
}

/// Forgets every secret of a deleted endpoint.
pub fn delete_secrets(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
) -> Result<(), ProjectionError> {
    connection
        .execute(
            "DELETE FROM webhook_secrets WHERE tenant_id = ?1 AND webhook_id = ?2",
            params![tenant, webhook_id],
        )
        .map(drop)
        .map_err(ProjectionError::storage("forgetting webhook secrets"))
}

/// The secrets that sign a delivery at `now`, newest first.
pub fn signing_secrets(
    connection: &dyn Db,
    tenant: &str,
    webhook_id: &str,
    now: &str,
) -> Result<Vec<String>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT secret FROM webhook_secrets WHERE tenant_id = ?1 AND webhook_id = ?2 \
             AND (valid_until IS NULL OR valid_until > ?3) ORDER BY created_at DESC, rowid DESC",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, webhook_id, now], |row| row.get(0))?
                .collect::<Result<Vec<String>, DbError>>()
        })
        .map_err(ProjectionError::storage("reading webhook secrets"))
}
