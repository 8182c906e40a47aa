//! The audit projection: joiners and leavers, one row per movement of a
//! member, each with the SCIM event that asked for it.
//!
//! It owns the `audit_movements` and `audit_causes` tables. A movement is a
//! member event that changes whether someone is in (joined, rejoined,
//! disabled, enabled, left, purged); its row says when it took effect and on
//! whose word, and when the identity provider said it. `audit_causes`
//! remembers, per user, the last SCIM event of each type that can ask for a
//! movement, so the fold never reads the log back.
//!
//! Folded inline like every projection, so a report for a window is one
//! range read of an index instead of a walk of the log; `rollcall verify
//! --projections` proves it is still exactly what the log folds to. It
//! reads the `members` row of the member moving (who it was at the time),
//! so [`apply`] must run before the member projection folds the same event.

use events::db::{Db, DbError, OptionalExtension, Row};
use events::event::{
    MemberDisabled, MemberEnabled, MemberJoined, MemberLeft, MemberPurged, MemberRestored,
};
use events::params;
use events::{Actor, Event, Position, RecordedEvent};
use serde::{Deserialize, Serialize};

use crate::ProjectionError;
use crate::sql_integer;

/// On whose word something was recorded, as the event's metadata says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Word {
    /// Who: a token, an admin, the schedule, the CLI.
    #[schema(value_type = Object)]
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The Synchronize run that applied a member event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Word {
    /// One line for tables and CSV: `token 01J…`, `cli alice`, `scheduler`.
    pub fn actor_text(&self) -> String {
        match &self.actor {
            Actor::Token { token_id } => format!("token {token_id}"),
            Actor::Cli { user: Some(user) } => format!("cli {user}"),
            Actor::Cli { user: None } => "cli".to_owned(),
            Actor::Scheduler => "scheduler".to_owned(),
            Actor::System => "system".to_owned(),
        }
    }
}

/// The part of an event's metadata a [`Word`] needs; the rest (a request's
/// body above all) is skipped unread.
#[derive(Deserialize)]
struct WordSource {
    actor: Actor,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
}

fn word_of(recorded: &RecordedEvent, with_run: bool) -> Result<Word, ProjectionError> {
    let source: WordSource = serde_json::from_str(&recorded.metadata).map_err(|error| {
        ProjectionError::Metadata { position: recorded.position, reason: error.to_string() }
    })?;
    Ok(Word {
        actor: source.actor,
        request_id: source.request_id,
        user_agent: source.user_agent,
        run_id: if with_run { source.correlation_id } else { None },
    })
}

events::words! {
    /// How a member moved in or out.
    pub enum MovementKind {
        Joined = "joined",
        /// Restored within the grace.
        Rejoined = "rejoined",
        Disabled = "disabled",
        Enabled = "enabled",
        Left = "left",
        Purged = "purged",
    }
}

/// One joiner, leaver or change of status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Movement {
    /// `joined`, `rejoined`, `disabled`, `enabled`, `left` or `purged`.
    #[schema(value_type = String)]
    pub kind: MovementKind,
    pub member_id: String,
    /// The SCIM user behind the member at the time.
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    /// When it took effect: the member event, appended by a Synchronize.
    pub effective_at: String,
    pub effective_position: Position,
    pub applied_by: Word,
    /// When the identity provider said it: the SCIM event that asked for
    /// it (none for a purge, which the grace period decides).
    pub said_at: Option<String>,
    pub said_position: Option<Position>,
    pub said_by: Option<Word>,
}

/// The SCIM event types that ask for a movement of `kind`; the newest wins.
fn causes(kind: MovementKind) -> &'static [&'static str] {
    match kind {
        MovementKind::Joined | MovementKind::Rejoined => &["UserCreated"],
        MovementKind::Disabled => &["UserDeactivated", "UserCreated"],
        MovementKind::Enabled => &["UserReactivated"],
        MovementKind::Left => &["UserDeleted"],
        // The grace period decides a purge, not the identity provider.
        MovementKind::Purged => &[],
    }
}

fn word_text(word: &Word) -> String {
    // Strings and an enum of strings: encoding cannot fail.
    serde_json::to_string(word).unwrap_or_default()
}

/// Who a member was just before `recorded`: user id, userName, externalId.
type Identity = (Option<String>, Option<String>, Option<String>);

fn identity_before(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
) -> Result<Identity, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT user_id, user_name, external_id FROM members \
             WHERE tenant_id = ?1 AND member_id = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row([tenant, member_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()
        })
        .map(Option::unwrap_or_default)
        .map_err(ProjectionError::storage("reading who a member is"))
}

/// The movements of an erased person name nobody: a userName they had
/// reads `[erased]` (as the erased events fold), an externalId is gone.
fn erase(
    connection: &dyn Db,
    tenant: &str,
    erased: &events::event::SubjectErased,
) -> Result<(), ProjectionError> {
    let Some(member_id) = &erased.member_id else { return Ok(()) };
    connection
        .prepare_cached(
            "UPDATE audit_movements SET external_id = NULL, \
             user_name = CASE WHEN user_name IS NULL THEN NULL ELSE ?3 END \
             WHERE tenant_id = ?1 AND member_id = ?2",
        )
        .and_then(|mut statement| {
            statement.execute(params![tenant, member_id, events::event::ERASED])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting SubjectErased"))
}

/// Folds one event; run it before the member projection folds the same one.
pub(crate) fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    let tenant = recorded.tenant.as_str();
    let (kind, member_id, identity) = match event {
        // The SCIM events that can ask for a movement.
        Event::UserCreated(events::event::UserCreated { user_id, .. })
        | Event::UserDeactivated(events::event::UserDeactivated { user_id })
        | Event::UserReactivated(events::event::UserReactivated { user_id })
        | Event::UserDeleted(events::event::UserDeleted { user_id }) => {
            return remember_cause(connection, recorded, user_id);
        }
        Event::MemberJoined(MemberJoined {
            member_id, user_id, user_name, external_id, ..
        }) => (
            MovementKind::Joined,
            member_id,
            (Some(user_id.clone()), Some(user_name.clone()), external_id.clone()),
        ),
        Event::MemberRestored(MemberRestored { member_id, user_id, user_name }) => {
            let (_, _, external_id) = identity_before(connection, tenant, member_id)?;
            (
                MovementKind::Rejoined,
                member_id,
                (Some(user_id.clone()), Some(user_name.clone()), external_id),
            )
        }
        Event::MemberDisabled(MemberDisabled { member_id, .. }) => {
            (MovementKind::Disabled, member_id, identity_before(connection, tenant, member_id)?)
        }
        Event::MemberEnabled(MemberEnabled { member_id }) => {
            (MovementKind::Enabled, member_id, identity_before(connection, tenant, member_id)?)
        }
        Event::MemberLeft(MemberLeft { member_id, .. }) => {
            (MovementKind::Left, member_id, identity_before(connection, tenant, member_id)?)
        }
        Event::MemberPurged(MemberPurged { member_id }) => {
            (MovementKind::Purged, member_id, identity_before(connection, tenant, member_id)?)
        }
        // Moves no one: the movements stay, naming nobody. Rows a rebuild
        // folds from the erased events read the same.
        Event::SubjectErased(erased) => return erase(connection, tenant, erased),
        // Moves no one in or out. Listed rather than `_`, so a new event
        // type does not compile until someone decides.
        Event::TenantCreated(_)
        | Event::TokenIssued(_)
        | Event::TokenRevoked(_)
        | Event::ClientRegistered(_)
        | Event::ClientRevoked(_)
        | Event::UserUpdated(_)
        | Event::GroupCreated(_)
        | Event::GroupUpdated(_)
        | Event::GroupRenamed(_)
        | Event::GroupMembersAdded(_)
        | Event::GroupMembersRemoved(_)
        | Event::GroupDeleted(_)
        | Event::AttributeMappingChanged(_)
        | Event::RoleBindingChanged(_)
        | Event::ScheduleChanged(_)
        | Event::MemberUpdated(_)
        | Event::MemberRolesChanged(_)
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
        | Event::WebhookDeleted(_) => return Ok(()),
    };
    let said = match &identity.0 {
        Some(user_id) if !causes(kind).is_empty() => {
            last_cause(connection, tenant, user_id, causes(kind))?
        }
        _ => None,
    };
    let applied_by = word_text(&word_of(recorded, true)?);
    let (said_position, said_at, said_by) = match said {
        Some((position, at, word)) => (Some(position), Some(at), Some(word)),
        None => (None, None, None),
    };
    connection
        .prepare_cached(
            "INSERT INTO audit_movements (tenant_id, position, kind, member_id, user_id, \
             user_name, external_id, effective_at, applied_by, said_position, said_at, said_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                tenant,
                sql_integer(recorded.position),
                kind.as_str(),
                member_id,
                identity.0,
                identity.1,
                identity.2,
                recorded.recorded_at,
                applied_by,
                said_position,
                said_at,
                said_by
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a movement"))
}

fn remember_cause(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    user_id: &str,
) -> Result<(), ProjectionError> {
    let word = word_text(&word_of(recorded, false)?);
    connection
        .prepare_cached(
            "INSERT INTO audit_causes (tenant_id, user_id, event_type, position, recorded_at, word) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant_id, user_id, event_type) \
             DO UPDATE SET position = excluded.position, recorded_at = excluded.recorded_at, \
             word = excluded.word",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                recorded.tenant,
                user_id,
                recorded.event_type,
                sql_integer(recorded.position),
                recorded.recorded_at,
                word
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a movement's cause"))
}

/// The newest of `types` recorded for a user: position, time, word.
fn last_cause(
    connection: &dyn Db,
    tenant: &str,
    user_id: &str,
    types: &[&str],
) -> Result<Option<(i64, String, String)>, ProjectionError> {
    let mut newest: Option<(i64, String, String)> = None;
    let mut statement = connection
        .prepare_cached(
            "SELECT position, recorded_at, word FROM audit_causes \
             WHERE tenant_id = ?1 AND user_id = ?2 AND event_type = ?3",
        )
        .map_err(ProjectionError::storage("reading a movement's cause"))?;
    for event_type in types {
        let found: Option<(i64, String, String)> = statement
            .query_row([tenant, user_id, event_type], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
            .map_err(ProjectionError::storage("reading a movement's cause"))?;
        if let Some(found) = found
            && newest.as_ref().is_none_or(|newest| found.0 > newest.0)
        {
            newest = Some(found);
        }
    }
    Ok(newest)
}

fn word_column(row: &Row<'_>, index: usize) -> Result<Option<Word>, DbError> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|error| DbError::Column { index, message: error.to_string() })
    })
    .transpose()
}

fn movement_from_row(row: &Row<'_>) -> Result<Movement, DbError> {
    let position: i64 = row.get(0)?;
    let said_position: Option<i64> = row.get(9)?;
    Ok(Movement {
        effective_position: u64::try_from(position).unwrap_or_default(),
        kind: crate::word_column(row, 1, MovementKind::parse)?,
        member_id: row.get(2)?,
        user_id: row.get(3)?,
        user_name: row.get(4)?,
        external_id: row.get(5)?,
        effective_at: row.get(6)?,
        applied_by: word_column(row, 7)?
            .ok_or(DbError::Column { index: 7, message: "applied_by is NULL".to_owned() })?,
        said_at: row.get(8)?,
        said_position: said_position.and_then(|position| u64::try_from(position).ok()),
        said_by: word_column(row, 10)?,
    })
}

/// Whether the audit tables hold the whole log: false on a file written by
/// a build without them, until an open for writing (or a rebuild) folds it.
pub fn ready(connection: &dyn Db) -> Result<bool, ProjectionError> {
    let exists = |table: &str| connection.table_exists(table);
    (|| -> Result<_, DbError> {
        if !exists("audit_movements")? {
            return Ok(false);
        }
        if !exists("projections_pending")? {
            return Ok(true);
        }
        connection.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM projections_pending WHERE name = 'audit')",
            [],
            |row| row.get(0),
        )
    })()
    .map_err(ProjectionError::storage("reading whether the audit tables are folded"))
}

/// The movements of one tenant recorded at positions `[from, to)`, in the
/// order they took effect.
pub fn movements(
    connection: &dyn Db,
    tenant: &str,
    from: Position,
    to: Position,
) -> Result<Vec<Movement>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT position, kind, member_id, user_id, user_name, external_id, effective_at, \
             applied_by, said_at, said_position, said_by FROM audit_movements \
             WHERE tenant_id = ?1 AND position >= ?2 AND position < ?3 ORDER BY position",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, sql_integer(from), sql_integer(to)], movement_from_row)?
                .collect()
        })
        .map_err(ProjectionError::storage("reading movements"))
}
