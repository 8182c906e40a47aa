//! The member directory: what the application applied of the SCIM
//! directory, folded from the member and Synchronize events.
//!
//! It owns the `members`, `member_settings`, `member_checkpoints`,
//! `member_deferred` and `sync_runs` tables. Unlike the SCIM directory it
//! advances only when a Synchronize appends member events; nothing here
//! reads the SCIM tables, and nothing here decides: which member joins,
//! changes or leaves is decided by the Synchronize in `src/sync` before the
//! events are appended.

use std::collections::BTreeMap;

use events::db::{Db, DbError, Dialect, OptionalExtension, Row};
use events::event::{
    AttributeMappingChanged, MemberAppPropertiesChanged, MemberChangeDeferred, MemberDisabled,
    MemberEnabled, MemberJoined, MemberLeft, MemberPurged, MemberRestored, MemberRolesChanged,
    MemberUpdated, PropertyChange, RoleBindingChanged, ScheduleChanged, SubjectErased,
    SyncBatchApplied, SyncCompleted, SyncDecided, SyncFailed, SyncStarted,
};
use events::event::{Decision, DeferReason, RunEnd, RunTrigger};
use events::params;
use events::{Event, Metadata, RecordedEvent};
use serde_json::{Map, Value};

use crate::ProjectionError;
use crate::functions::fold;
use crate::sql_integer;

/// A member's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    Active,
    Disabled,
    /// Deleted in the IdP; restorable until its grace ends.
    Left,
    /// Left and past its grace: personal properties dropped.
    Purged,
}

impl MemberStatus {
    pub const ALL: [MemberStatus; 4] =
        [MemberStatus::Active, MemberStatus::Disabled, MemberStatus::Left, MemberStatus::Purged];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Disabled => "disabled",
            MemberStatus::Left => "left",
            MemberStatus::Purged => "purged",
        }
    }

    pub fn parse(text: &str) -> Option<MemberStatus> {
        MemberStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// A member as the application reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub member_id: String,
    /// The SCIM user it comes from (the latest one, after a restore).
    pub user_id: String,
    pub external_id: Option<String>,
    pub user_name: String,
    pub status: MemberStatus,
    pub properties: Map<String, Value>,
    pub roles: Vec<String>,
    pub app_properties: Map<String, Value>,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub grace_until: Option<String>,
    pub disabled_at: Option<String>,
    pub revoke_sessions: bool,
    pub updated_at: String,
    /// The member stream's version: the expected version of its next event.
    pub version: u64,
    /// The position of the last event applied to it.
    pub last_position: u64,
    /// When its person was erased: its personal values are gone.
    pub erased_at: Option<String>,
}

impl MemberRow {
    /// The member as the application reads it: the admin API's member, and
    /// the `data.member` of every event in the feed. A JSON object (its
    /// keys sorted, as the feed has always stored them).
    pub fn view(&self) -> Value {
        serde_json::to_value(MemberView::of(self)).unwrap_or(Value::Null)
    }
}

/// The member as the application reads it; the OpenAPI document's
/// `Member` is this type's schema.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Member)]
pub struct MemberView {
    pub member_id: String,
    /// `active`, `disabled`, `left` or `purged`.
    #[schema(value_type = String, pattern = "^(active|disabled|left|purged)$")]
    pub status: &'static str,
    pub user_name: String,
    /// The mapped properties, by the tenant's attribute mapping.
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    /// The roles its groups bind to, sorted.
    pub roles: Vec<String>,
    /// What the application set itself (`PATCH /api/v1/members/{id}`).
    #[schema(value_type = Object)]
    pub app_properties: Map<String, Value>,
    pub joined_at: String,
    pub left_at: Option<String>,
    /// Until when a left member may be restored before it is purged.
    pub grace_until: Option<String>,
    pub disabled_at: Option<String>,
    /// Set when the member was disabled: sign it out everywhere.
    pub revoke_sessions: bool,
    pub source: MemberSource,
    pub updated_at: String,
    /// The member stream's version.
    pub version: u64,
    /// The log position of the last event applied to it.
    pub last_position: u64,
    /// When its person was erased (`rollcall erase`): absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<String>,
}

/// Where a member comes from in the SCIM directory.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MemberSource {
    pub scim_user_id: String,
    pub external_id: Option<String>,
}

impl MemberView {
    pub fn of(row: &MemberRow) -> MemberView {
        MemberView {
            member_id: row.member_id.clone(),
            status: row.status.as_str(),
            user_name: row.user_name.clone(),
            properties: row.properties.clone(),
            roles: row.roles.clone(),
            app_properties: row.app_properties.clone(),
            joined_at: row.joined_at.clone(),
            left_at: row.left_at.clone(),
            grace_until: row.grace_until.clone(),
            disabled_at: row.disabled_at.clone(),
            revoke_sessions: row.revoke_sessions,
            source: MemberSource {
                scim_user_id: row.user_id.clone(),
                external_id: row.external_id.clone(),
            },
            updated_at: row.updated_at.clone(),
            version: row.version,
            last_position: row.last_position,
            erased_at: row.erased_at.clone(),
        }
    }
}

events::words! {
    /// Where a Synchronize run stands.
    pub enum RunStatus {
        Running = "running",
        Completed = "completed",
        /// Ended with its deprovisioning held for an admin.
        Held = "held",
        Failed = "failed",
        /// Held, then approved (`applied_by` names the run that applied it).
        Approved = "approved",
        /// Held, then rejected: its held changes stay pending.
        Rejected = "rejected",
    }
}

impl From<RunEnd> for RunStatus {
    fn from(end: RunEnd) -> RunStatus {
        match end {
            RunEnd::Completed => RunStatus::Completed,
            RunEnd::Held => RunStatus::Held,
        }
    }
}

impl From<Decision> for RunStatus {
    fn from(decision: Decision) -> RunStatus {
        match decision {
            Decision::Approved => RunStatus::Approved,
            Decision::Rejected => RunStatus::Rejected,
        }
    }
}

/// A Synchronize run as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRunRow {
    pub run_id: String,
    pub trigger: RunTrigger,
    pub actor: Value,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub from_position: u64,
    pub to_position: u64,
    pub through_user: Option<String>,
    pub counts: Value,
    pub duration_ms: Option<u64>,
    pub held_reason: Option<String>,
    pub error: Option<String>,
    pub applied_by: Option<String>,
    /// For an approval: the held run it applies.
    pub approves: Option<String>,
}

/// A user whose change a run could not apply, or held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredRow {
    pub user_id: String,
    pub reason: DeferReason,
    pub detail: String,
    pub run_id: String,
}

fn json_text(value: &impl serde::Serialize) -> String {
    // Maps and lists of strings and JSON values always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub(crate) fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    let tenant = recorded.tenant.as_str();
    match event {
        Event::AttributeMappingChanged(AttributeMappingChanged { mapping }) => {
            set_setting(connection, recorded, "mapping", mapping)
        }
        Event::RoleBindingChanged(RoleBindingChanged { bindings }) => {
            set_setting(connection, recorded, "roles", bindings)
        }
        Event::ScheduleChanged(ScheduleChanged { settings }) => {
            set_setting(connection, recorded, "sync", settings)
        }
        Event::MemberJoined(joined) => insert_member(connection, recorded, joined),
        Event::MemberUpdated(MemberUpdated {
            member_id,
            changes,
            user_name,
            external_id,
            external_id_cleared,
        }) => {
            let Some(mut member) = Searchable::read(connection, tenant, member_id)? else {
                return Ok(());
            };
            apply_changes(&mut member.properties, changes);
            if let Some(user_name) = user_name {
                member.user_name.clone_from(user_name);
            }
            if *external_id_cleared {
                member.external_id = None;
            } else if external_id.is_some() {
                member.external_id.clone_from(external_id);
            }
            update_member(
                connection,
                recorded,
                member_id,
                "properties = ?3, user_name = ?4, external_id = ?5, search_text = ?6",
                params![
                    json_text(&member.properties),
                    member.user_name,
                    member.external_id,
                    member.search_text()
                ],
            )
        }
        Event::MemberAppPropertiesChanged(MemberAppPropertiesChanged { member_id, changes }) => {
            let properties =
                changed_properties(connection, tenant, member_id, "app_properties", changes)?;
            update_member(
                connection,
                recorded,
                member_id,
                "app_properties = ?3",
                params![properties],
            )
        }
        Event::MemberRolesChanged(MemberRolesChanged { member_id, to, .. }) => {
            update_member(connection, recorded, member_id, "roles = ?3", params![json_text(to)])
        }
        Event::MemberDisabled(MemberDisabled { member_id, revoke_sessions }) => update_member(
            connection,
            recorded,
            member_id,
            "status = 'disabled', disabled_at = ?3, revoke_sessions = ?4",
            params![recorded.recorded_at, i64::from(*revoke_sessions)],
        ),
        Event::MemberEnabled(MemberEnabled { member_id }) => update_member(
            connection,
            recorded,
            member_id,
            "status = 'active', disabled_at = NULL, revoke_sessions = 0",
            params![],
        ),
        Event::MemberLeft(MemberLeft { member_id, grace_until }) => update_member(
            connection,
            recorded,
            member_id,
            "status = 'left', left_at = ?3, grace_until = ?4, revoke_sessions = 1",
            params![recorded.recorded_at, grace_until],
        ),
        Event::MemberRestored(MemberRestored { member_id, user_id, user_name }) => {
            let Some(mut member) = Searchable::read(connection, tenant, member_id)? else {
                return Ok(());
            };
            member.user_name.clone_from(user_name);
            update_member(
                connection,
                recorded,
                member_id,
                "status = 'active', user_id = ?3, user_name = ?4, search_text = ?5, left_at = NULL, \
                 grace_until = NULL, disabled_at = NULL, revoke_sessions = 0",
                params![user_id, user_name, member.search_text()],
            )
        }
        // Personal values go; the member's id, its times and the fact that
        // it was a member stay, so joiners-and-leavers still count it.
        Event::MemberPurged(MemberPurged { member_id }) => update_member(
            connection,
            recorded,
            member_id,
            "status = 'purged', user_name = '', external_id = NULL, properties = '{}', \
             app_properties = '{}', roles = '[]', search_text = ''",
            params![],
        ),
        // The person's values go; the member's id, roles, status and times
        // stay, so joiners-and-leavers still count it. A rebuild folds the
        // same: its earlier events already open as erased.
        Event::SubjectErased(SubjectErased { user_ids, member_id, keys, in_clear, .. }) => {
            for user_id in user_ids {
                connection
                    .prepare_cached(
                        "INSERT INTO erasures (tenant_id, user_id, member_id, keys, \
                         in_clear, erased_at, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                         ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
                         member_id = excluded.member_id, keys = excluded.keys, \
                         in_clear = excluded.in_clear, erased_at = excluded.erased_at, \
                         position = excluded.position",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![
                            tenant,
                            user_id,
                            member_id,
                            json_text(keys),
                            i64::from(*in_clear),
                            recorded.recorded_at,
                            sql_integer(recorded.position)
                        ])
                    })
                    .map_err(ProjectionError::storage("projecting SubjectErased"))?;
                connection
                    .prepare_cached(
                        "DELETE FROM member_deferred WHERE tenant_id = ?1 AND user_id = ?2",
                    )
                    .and_then(|mut statement| statement.execute(params![tenant, user_id]))
                    .map_err(ProjectionError::storage("projecting SubjectErased"))?;
            }
            match member_id {
                Some(member_id) => update_member(
                    connection,
                    recorded,
                    member_id,
                    "user_name = ?3, external_id = NULL, properties = '{}', \
                     app_properties = '{}', search_text = '', erased_at = ?4",
                    params![events::event::ERASED, recorded.recorded_at],
                ),
                None => Ok(()),
            }
        }
        Event::MemberChangeDeferred(MemberChangeDeferred { run_id, user_id, reason, detail }) => {
            connection
                .prepare_cached(
                    "INSERT INTO member_deferred (tenant_id, user_id, reason, detail, run_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
                     reason = excluded.reason, detail = excluded.detail, run_id = excluded.run_id",
                )
                .and_then(|mut statement| {
                    statement.execute(params![tenant, user_id, reason.as_str(), detail, run_id])
                })
                .map(drop)
                .map_err(ProjectionError::storage("projecting MemberChangeDeferred"))
        }
        Event::SyncStarted(SyncStarted {
            run_id,
            trigger,
            from_position,
            to_position,
            held_reason,
            scheduled_for,
            approves,
        }) => {
            let actor = serde_json::from_str::<Metadata>(&recorded.metadata)
                .map(|metadata| json_text(&metadata.actor))
                .unwrap_or_else(|_| "null".to_owned());
            connection
                .prepare_cached(
                    "INSERT INTO sync_runs (tenant_id, run_id, trigger, actor, status, started_at, \
                     from_position, to_position, counts, held_reason, scheduled_for, approves) \
                     VALUES (?1, ?2, ?3, ?4, ?11, ?5, ?6, ?7, '{}', ?8, ?9, ?10)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        tenant,
                        run_id,
                        trigger.as_str(),
                        actor,
                        recorded.recorded_at,
                        sql_integer(*from_position),
                        sql_integer(*to_position),
                        held_reason,
                        scheduled_for,
                        approves,
                        RunStatus::Running.as_str()
                    ])
                })
                .map(drop)
                .map_err(ProjectionError::storage("projecting SyncStarted"))
        }
        Event::SyncBatchApplied(SyncBatchApplied { run_id, through_user, counts }) => update_run(
            connection,
            "through_user = ?3, counts = ?4",
            params![tenant, run_id, through_user, json_text(counts)],
        ),
        Event::SyncCompleted(SyncCompleted {
            run_id,
            status,
            position,
            counts,
            duration_ms,
            held_reason,
        }) => {
            update_run(
                connection,
                "status = ?3, counts = ?4, duration_ms = ?5, held_reason = ?6, finished_at = ?7",
                params![
                    tenant,
                    run_id,
                    RunStatus::from(*status).as_str(),
                    json_text(counts),
                    sql_integer(*duration_ms),
                    held_reason,
                    recorded.recorded_at
                ],
            )?;
            // Every user deferred before this run was in its work, and
            // deferred again under this run's id if it still could not be
            // applied: older rows are settled.
            connection
                .prepare_cached("DELETE FROM member_deferred WHERE tenant_id = ?1 AND run_id != ?2")
                .and_then(|mut statement| statement.execute(params![tenant, run_id]))
                .map_err(ProjectionError::storage("projecting SyncCompleted"))?;
            connection
                .prepare_cached(
                    "INSERT INTO member_checkpoints (tenant_id, position, run_id) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tenant_id) DO UPDATE SET position = excluded.position, \
                     run_id = excluded.run_id",
                )
                .and_then(|mut statement| {
                    statement.execute(params![tenant, sql_integer(*position), run_id])
                })
                .map(drop)
                .map_err(ProjectionError::storage("projecting SyncCompleted"))
        }
        Event::SyncFailed(SyncFailed { run_id, error }) => update_run(
            connection,
            "status = ?5, error = ?3, finished_at = ?4",
            params![tenant, run_id, error, recorded.recorded_at, RunStatus::Failed.as_str()],
        ),
        Event::SyncDecided(SyncDecided { run_id, decision, applied_by }) => update_run(
            connection,
            "status = ?3, applied_by = ?4",
            params![tenant, run_id, RunStatus::from(*decision).as_str(), applied_by],
        ),
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
        | Event::WebhookCreated(_)
        | Event::WebhookChanged(_)
        | Event::WebhookPaused(_)
        | Event::WebhookResumed(_)
        | Event::WebhookSecretRotated(_)
        | Event::WebhookDisabled(_)
        | Event::WebhookDeleted(_) => Ok(()),
    }
}

fn set_setting(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    kind: &str,
    value: &Value,
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(
            "INSERT INTO member_settings (tenant_id, kind, value, position) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant_id, kind) DO UPDATE SET value = excluded.value, \
             position = excluded.position",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                recorded.tenant,
                kind,
                json_text(value),
                sql_integer(recorded.position)
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a member setting"))
}

/// The member a join creates, as its row reads after the fold: what
/// `insert_member` writes, and what the feed's body of the join carries
/// without reading it back.
pub(crate) fn joined_row(recorded: &RecordedEvent, joined: &MemberJoined) -> MemberRow {
    MemberRow {
        member_id: joined.member_id.clone(),
        user_id: joined.user_id.clone(),
        external_id: joined.external_id.clone(),
        user_name: joined.user_name.clone(),
        status: MemberStatus::Active,
        properties: joined.properties.clone(),
        roles: joined.roles.clone(),
        app_properties: Map::new(),
        joined_at: recorded.recorded_at.clone(),
        left_at: None,
        grace_until: None,
        disabled_at: None,
        revoke_sessions: false,
        updated_at: recorded.recorded_at.clone(),
        version: recorded.version,
        last_position: recorded.position,
        erased_at: None,
    }
}

fn insert_member(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    joined: &MemberJoined,
) -> Result<(), ProjectionError> {
    let row = joined_row(recorded, joined);
    connection
        .prepare_cached(
            "INSERT INTO members (tenant_id, member_id, user_id, external_id, user_name, status, \
             properties, roles, app_properties, joined_at, left_at, grace_until, disabled_at, \
             revoke_sessions, updated_at, version, last_position, search_text) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                recorded.tenant,
                row.member_id,
                row.user_id,
                row.external_id,
                row.user_name,
                row.status.as_str(),
                json_text(&row.properties),
                json_text(&row.roles),
                json_text(&row.app_properties),
                row.joined_at,
                row.left_at,
                row.grace_until,
                row.disabled_at,
                i64::from(row.revoke_sessions),
                row.updated_at,
                sql_integer(row.version),
                sql_integer(row.last_position),
                search_text(&row.user_name, row.external_id.as_deref(), &row.properties)
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting MemberJoined"))
}

/// Sets `assignments` (which may use ?3 and up) on one member, with its
/// version, position and time.
fn update_member(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    member_id: &str,
    assignments: &str,
    extra: &[&dyn events::db::Param],
) -> Result<(), ProjectionError> {
    let sql = format!(
        "UPDATE members SET {assignments}, version = ?{v}, last_position = ?{p}, updated_at = ?{t} \
         WHERE tenant_id = ?1 AND member_id = ?2",
        v = extra.len() + 3,
        p = extra.len() + 4,
        t = extra.len() + 5,
    );
    let version = sql_integer(recorded.version);
    let position = sql_integer(recorded.position);
    let mut values: Vec<&dyn events::db::Param> = vec![&recorded.tenant, &member_id];
    values.extend_from_slice(extra);
    values.push(&version);
    values.push(&position);
    values.push(&recorded.recorded_at);
    connection
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.execute(values.as_slice()))
        .map(drop)
        .map_err(ProjectionError::storage("projecting a member event"))
}

/// Sets `assignments` (which may use ?3 and up; ?1 is the tenant, ?2 the
/// run) on one run.
fn update_run(
    connection: &dyn Db,
    assignments: &str,
    values: &[&dyn events::db::Param],
) -> Result<(), ProjectionError> {
    connection
        .prepare_cached(&format!(
            "UPDATE sync_runs SET {assignments} WHERE tenant_id = ?1 AND run_id = ?2"
        ))
        .and_then(|mut statement| statement.execute(values))
        .map(drop)
        .map_err(ProjectionError::storage("projecting a Synchronize run"))
}

/// Applies property changes: a `null` target removes the property.
fn apply_changes(properties: &mut Map<String, Value>, changes: &BTreeMap<String, PropertyChange>) {
    for (name, change) in changes {
        if change.to.is_null() {
            properties.remove(name);
        } else {
            properties.insert(name.clone(), change.to.clone());
        }
    }
}

/// A member's `column` (a JSON object) with `changes` applied.
fn changed_properties(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
    column: &str,
    changes: &BTreeMap<String, PropertyChange>,
) -> Result<String, ProjectionError> {
    let text: Option<String> = connection
        .prepare_cached(&format!(
            "SELECT {column} FROM members WHERE tenant_id = ?1 AND member_id = ?2"
        ))
        .and_then(|mut statement| {
            statement.query_row(params![tenant, member_id], |row| row.get(0)).optional()
        })
        .map_err(ProjectionError::storage("reading a member's properties"))?;
    let mut properties = json_object(text.as_deref());
    apply_changes(&mut properties, changes);
    Ok(json_text(&properties))
}

fn json_object(text: Option<&str>) -> Map<String, Value> {
    text.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default()
}

/// What a member search looks in: the userName, the externalId and every
/// property value, each as [`search_fold`] makes it and one per line. A
/// folded value holds no line break, so no search matches across two.
pub(crate) fn search_text(
    user_name: &str,
    external_id: Option<&str>,
    properties: &Map<String, Value>,
) -> String {
    let mut text = search_fold(user_name);
    for value in
        external_id.map(|id| Value::String(id.to_owned())).iter().chain(properties.values())
    {
        text.push('\n');
        match value {
            Value::String(value) => text.push_str(&search_fold(value)),
            other => text.push_str(&search_fold(&other.to_string())),
        }
    }
    text
}

/// Case folded as everywhere else (`crate::functions::fold`), and control
/// characters (a line break in an address) as spaces: what a search and
/// the values it looks in are both made into.
fn search_fold(text: &str) -> String {
    fold(text).chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The parts of a member its search text is made of, as stored.
struct Searchable {
    user_name: String,
    external_id: Option<String>,
    properties: Map<String, Value>,
}

impl Searchable {
    fn read(
        connection: &dyn Db,
        tenant: &str,
        member_id: &str,
    ) -> Result<Option<Searchable>, ProjectionError> {
        connection
            .prepare_cached(
                "SELECT user_name, external_id, properties FROM members \
                 WHERE tenant_id = ?1 AND member_id = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![tenant, member_id], |row| {
                        Ok(Searchable {
                            user_name: row.get(0)?,
                            external_id: row.get(1)?,
                            properties: json_object(row.get::<_, Option<String>>(2)?.as_deref()),
                        })
                    })
                    .optional()
            })
            .map_err(ProjectionError::storage("reading a member"))
    }

    fn search_text(&self) -> String {
        search_text(&self.user_name, self.external_id.as_deref(), &self.properties)
    }
}

// SQLite's planner, without statistics, prefers a WITHOUT ROWID table's
// primary key on `tenant_id` alone to a secondary index on
// `(tenant_id, user_id)` (the index costs one more lookup, and it assumes
// the key prefix is selective): a scan of the tenant's members per lookup.
// The lookups below name their index.
const MEMBER_COLUMNS: &str = "member_id, user_id, external_id, user_name, status, properties, \
    roles, app_properties, joined_at, left_at, grace_until, disabled_at, revoke_sessions, \
    updated_at, version, last_position, erased_at";

fn member_from_row(row: &Row<'_>) -> Result<MemberRow, DbError> {
    let status: String = row.get(4)?;
    Ok(MemberRow {
        member_id: row.get(0)?,
        user_id: row.get(1)?,
        external_id: row.get(2)?,
        user_name: row.get(3)?,
        status: MemberStatus::parse(&status).unwrap_or(MemberStatus::Purged),
        properties: json_object(row.get::<_, Option<String>>(5)?.as_deref()),
        roles: serde_json::from_str(&row.get::<_, String>(6)?).unwrap_or_default(),
        app_properties: json_object(row.get::<_, Option<String>>(7)?.as_deref()),
        joined_at: row.get(8)?,
        left_at: row.get(9)?,
        grace_until: row.get(10)?,
        disabled_at: row.get(11)?,
        revoke_sessions: row.get(12)?,
        updated_at: row.get(13)?,
        version: u64::try_from(row.get::<_, i64>(14)?).unwrap_or(0),
        last_position: u64::try_from(row.get::<_, i64>(15)?).unwrap_or(0),
        erased_at: row.get(16)?,
    })
}

/// One member by its id.
pub fn member(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
) -> Result<Option<MemberRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members WHERE tenant_id = ?1 AND member_id = ?2"
        ))
        .and_then(|mut statement| {
            statement.query_row(params![tenant, member_id], member_from_row).optional()
        })
        .map_err(ProjectionError::storage("reading a member"))
}

/// The member a SCIM user stands behind, if any (not purged). There is at
/// most one: a member takes a user id when it joins or is restored, and a
/// user id is never reused.
pub fn member_of_user(
    connection: &dyn Db,
    tenant: &str,
    user_id: &str,
) -> Result<Option<MemberRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members INDEXED BY members_by_user \
             WHERE tenant_id = ?1 AND user_id = ?2 AND status != 'purged' LIMIT 1"
        ))
        .and_then(|mut statement| {
            statement.query_row(params![tenant, user_id], member_from_row).optional()
        })
        .map_err(ProjectionError::storage("reading a user's member"))
}

/// [`member_of_user`] for every user whose id lies in `first..=last`, in
/// one read of the same index: the member each of them would be answered
/// with (the first in the index's order), at most `limit` rows read.
/// Returns the members and whether the range was read to its end.
pub fn members_of_users_in_range(
    connection: &dyn Db,
    tenant: &str,
    first: &str,
    last: &str,
    limit: usize,
) -> Result<(Vec<MemberRow>, bool), ProjectionError> {
    let rows: Vec<MemberRow> = connection
        .prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members INDEXED BY members_by_user \
             WHERE tenant_id = ?1 AND user_id >= ?2 AND user_id <= ?3 AND status != 'purged' \
             ORDER BY user_id, member_id LIMIT ?4"
        ))
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![tenant, first, last, crate::sql_integer(limit as u64)],
                    member_from_row,
                )?
                .collect()
        })
        .map_err(ProjectionError::storage("reading a range of users' members"))?;
    let complete = rows.len() < limit;
    let mut members: Vec<MemberRow> = Vec::with_capacity(rows.len());
    for row in rows {
        if members.last().is_none_or(|kept| kept.user_id != row.user_id) {
            members.push(row);
        }
    }
    Ok((members, complete))
}

/// Whether any member of the tenant has left and is not purged yet (in
/// its grace or past it): one probe of the status index.
pub fn any_left(connection: &dyn Db, tenant: &str) -> Result<bool, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM members INDEXED BY members_by_status \
             WHERE tenant_id = ?1 AND status = 'left')",
        )
        .and_then(|mut statement| statement.query_row(params![tenant], |row| row.get(0)))
        .map_err(ProjectionError::storage("looking for left members"))
}

/// A member that left with this externalId and is still in its grace at
/// `now` (the latest to leave, if several did).
pub fn left_member_by_external_id(
    connection: &dyn Db,
    tenant: &str,
    external_id: &str,
    now: &str,
) -> Result<Option<MemberRow>, ProjectionError> {
    // Almost always there is none: a probe of the status index answers
    // that without the sort the full query sets up.
    if !any_left(connection, tenant)? {
        return Ok(None);
    }
    connection
        .prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members INDEXED BY members_by_external_id \
             WHERE tenant_id = ?1 AND external_id = ?2 \
             AND status = 'left' AND grace_until > ?3 ORDER BY left_at DESC LIMIT 1"
        ))
        .and_then(|mut statement| {
            statement.query_row(params![tenant, external_id, now], member_from_row).optional()
        })
        .map_err(ProjectionError::storage("reading a left member"))
}

/// Members that left and whose grace ended before `now` (RFC 3339).
pub fn leavers_past_grace(
    connection: &dyn Db,
    tenant: &str,
    now: &str,
) -> Result<Vec<MemberRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members INDEXED BY members_by_status \
             WHERE tenant_id = ?1 AND status = 'left' \
             AND grace_until <= ?2 ORDER BY member_id"
        ))
        .and_then(|mut statement| {
            statement.query_map(params![tenant, now], member_from_row)?.collect()
        })
        .map_err(ProjectionError::storage("reading leavers past their grace"))
}

/// What a member list may be narrowed to.
#[derive(Debug, Clone, Default)]
pub struct MemberQuery {
    pub status: Option<MemberStatus>,
    pub role: Option<String>,
    /// A case-insensitive substring of the userName, the externalId or any
    /// property value (an email, a name).
    pub search: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// A page of members in name order, and how many match in all.
///
/// Every filter is answered from `members_list`, which holds the order,
/// the status, the roles and the search text: a page never reads a member
/// it does not show. Unfiltered (or by status alone) the count is an index
/// range and the page stops at its last row; with a role or a search, one
/// pass over the tenant's index entries counts the matches and keeps the
/// page's ids (about 0.3 µs a member, see BENCHMARKS.md).
pub fn list_members(
    connection: &dyn Db,
    tenant: &str,
    query: &MemberQuery,
) -> Result<(u64, Vec<MemberRow>), ProjectionError> {
    let storage = ProjectionError::storage;
    let status = query.status.map(MemberStatus::as_str);
    // Stored roles are compact JSON lists of role names, and a role name is
    // letters, digits, '_', '-' and '.' (`sync::config`): the quoted name
    // occurs in the list exactly when it is one of its items. A name outside
    // that alphabet is quoted with escapes no stored list holds, so it
    // matches nothing, as it should.
    let role = query.role.as_ref().map(json_text);
    let search = query.search.as_deref().map(search_fold);
    let postgres_ids;
    let ids_sql = match connection.dialect() {
        Dialect::Sqlite => {
            "SELECT member_id FROM members INDEXED BY members_list \
             WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR instr(roles, ?3) > 0) AND (?4 IS NULL OR instr(search_text, ?4) > 0) \
             ORDER BY user_name COLLATE NOCASE, member_id"
        }
        // The same order: NOCASE folds ASCII only, then compares bytes, as
        // `translate` over a `COLLATE "C"` column does.
        Dialect::Postgres => {
            postgres_ids = format!(
                "SELECT member_id FROM members \
                 WHERE tenant_id = ?1 AND (?2::text IS NULL OR status = ?2) \
                 AND (?3::text IS NULL OR strpos(roles, ?3) > 0) \
                 AND (?4::text IS NULL OR strpos(search_text, ?4) > 0) \
                 ORDER BY translate(user_name, {}), member_id",
                crate::schema::POSTGRES_NOCASE
            );
            postgres_ids.as_str()
        }
    };
    let (total, ids) = if role.is_some() || search.is_some() {
        let mut statement =
            connection.prepare_cached(ids_sql).map_err(storage("listing members"))?;
        let mut rows = statement
            .query(params![tenant, status, role, search])
            .map_err(storage("listing members"))?;
        let page = query.offset..query.offset.saturating_add(query.limit);
        let (mut total, mut ids) = (0_u64, Vec::new());
        while let Some(row) = rows.next().map_err(storage("listing members"))? {
            if page.contains(&total) {
                ids.push(row.get::<_, String>(0).map_err(storage("listing members"))?);
            }
            total += 1;
        }
        (total, ids)
    } else {
        let total: i64 = match status {
            None => connection
                .prepare_cached("SELECT count(*) FROM members WHERE tenant_id = ?1")
                .and_then(|mut statement| statement.query_row(params![tenant], |row| row.get(0))),
            Some(status) => connection
                .prepare_cached(match connection.dialect() {
                    Dialect::Sqlite => {
                        "SELECT count(*) FROM members INDEXED BY members_by_status \
                         WHERE tenant_id = ?1 AND status = ?2"
                    }
                    Dialect::Postgres => {
                        "SELECT count(*) FROM members WHERE tenant_id = ?1 AND status = ?2"
                    }
                })
                .and_then(|mut statement| {
                    statement.query_row(params![tenant, status], |row| row.get(0))
                }),
        }
        .map_err(storage("counting members"))?;
        let ids = connection
            .prepare_cached(&format!("{ids_sql} LIMIT ?5 OFFSET ?6"))
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![
                            tenant,
                            status,
                            role,
                            search,
                            sql_integer(query.limit),
                            sql_integer(query.offset)
                        ],
                        |row| row.get::<_, String>(0),
                    )?
                    .collect::<Result<Vec<String>, DbError>>()
            })
            .map_err(storage("listing members"))?;
        (u64::try_from(total).unwrap_or(0), ids)
    };
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.extend(member(connection, tenant, &id)?);
    }
    Ok((total, rows))
}

/// How many members have each status.
pub fn status_counts(
    connection: &dyn Db,
    tenant: &str,
) -> Result<BTreeMap<&'static str, u64>, ProjectionError> {
    let mut counts: BTreeMap<&'static str, u64> =
        MemberStatus::ALL.into_iter().map(|status| (status.as_str(), 0)).collect();
    let mut statement = connection
        .prepare_cached("SELECT status, count(*) FROM members WHERE tenant_id = ?1 GROUP BY status")
        .map_err(ProjectionError::storage("counting members"))?;
    let rows = statement
        .query_map(params![tenant], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
        .map_err(ProjectionError::storage("counting members"))?;
    for row in rows {
        let (status, count) = row.map_err(ProjectionError::storage("counting members"))?;
        if let Some(status) = MemberStatus::parse(&status) {
            counts.insert(status.as_str(), u64::try_from(count).unwrap_or(0));
        }
    }
    Ok(counts)
}

/// The SCIM user ids of the active and disabled members, in order: what a
/// full re-application walks beside the directory's users (a member whose
/// user is gone must leave).
pub fn member_user_ids(connection: &dyn Db, tenant: &str) -> Result<Vec<String>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT user_id FROM members WHERE tenant_id = ?1 AND status IN ('active', 'disabled') \
             ORDER BY user_id",
        )
        .and_then(|mut statement| statement.query_map(params![tenant], |row| row.get(0))?.collect())
        .map_err(ProjectionError::storage("listing members' users"))
}

/// A SCIM user id and the mapped properties of its member.
pub type UserProperties = (String, Map<String, Value>);

/// The mapped properties of every active or disabled member, by its SCIM
/// user: what the mapping's unique values are checked against.
pub fn member_properties(
    connection: &dyn Db,
    tenant: &str,
) -> Result<Vec<UserProperties>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT user_id, properties FROM members \
             WHERE tenant_id = ?1 AND status IN ('active', 'disabled')",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant], |row| {
                    let properties: Option<String> = row.get(1)?;
                    Ok((row.get(0)?, json_object(properties.as_deref())))
                })?
                .collect()
        })
        .map_err(ProjectionError::storage("reading members' properties"))
}

/// A tenant's stored setting (`mapping`, `roles`, `sync`) and the position
/// of the event that set it.
pub fn setting(
    connection: &dyn Db,
    tenant: &str,
    kind: &str,
) -> Result<Option<(Value, u64)>, ProjectionError> {
    let row: Option<(String, i64)> = connection
        .prepare_cached(
            "SELECT value, position FROM member_settings WHERE tenant_id = ?1 AND kind = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![tenant, kind], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(ProjectionError::storage("reading a member setting"))?;
    Ok(row.map(|(text, position)| {
        (serde_json::from_str(&text).unwrap_or(Value::Null), u64::try_from(position).unwrap_or(0))
    }))
}

/// The log position the member directory reflects, 0 before any run.
pub fn checkpoint(connection: &dyn Db, tenant: &str) -> Result<u64, ProjectionError> {
    let position: Option<i64> = connection
        .prepare_cached("SELECT position FROM member_checkpoints WHERE tenant_id = ?1")
        .and_then(|mut statement| statement.query_row(params![tenant], |row| row.get(0)).optional())
        .map_err(ProjectionError::storage("reading the member checkpoint"))?;
    Ok(position.and_then(|position| u64::try_from(position).ok()).unwrap_or(0))
}

/// Users whose change an earlier run deferred, in user id order.
pub fn deferred(connection: &dyn Db, tenant: &str) -> Result<Vec<DeferredRow>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT user_id, reason, detail, run_id FROM member_deferred WHERE tenant_id = ?1 \
             ORDER BY user_id",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant], |row| {
                    Ok(DeferredRow {
                        user_id: row.get(0)?,
                        reason: crate::word_column(row, 1, DeferReason::parse)?,
                        detail: row.get(2)?,
                        run_id: row.get(3)?,
                    })
                })?
                .collect()
        })
        .map_err(ProjectionError::storage("reading deferred changes"))
}

const RUN_COLUMNS: &str = "run_id, trigger, actor, status, started_at, finished_at, from_position, \
    to_position, through_user, counts, duration_ms, held_reason, error, applied_by, approves";

fn run_from_row(row: &Row<'_>) -> Result<SyncRunRow, DbError> {
    let position = |value: i64| u64::try_from(value).unwrap_or(0);
    Ok(SyncRunRow {
        run_id: row.get(0)?,
        trigger: crate::word_column(row, 1, RunTrigger::parse)?,
        actor: serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or(Value::Null),
        status: crate::word_column(row, 3, RunStatus::parse)?,
        started_at: row.get(4)?,
        finished_at: row.get(5)?,
        from_position: position(row.get(6)?),
        to_position: position(row.get(7)?),
        through_user: row.get(8)?,
        counts: serde_json::from_str(&row.get::<_, String>(9)?).unwrap_or(Value::Null),
        duration_ms: row.get::<_, Option<i64>>(10)?.map(position),
        held_reason: row.get(11)?,
        error: row.get(12)?,
        applied_by: row.get(13)?,
        approves: row.get(14)?,
    })
}

/// One run by id.
pub fn run(
    connection: &dyn Db,
    tenant: &str,
    run_id: &str,
) -> Result<Option<SyncRunRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = ?1 AND run_id = ?2"
        ))
        .and_then(|mut statement| {
            statement.query_row(params![tenant, run_id], run_from_row).optional()
        })
        .map_err(ProjectionError::storage("reading a Synchronize run"))
}

/// What triggered a run: all a feed body's `source` needs of it, without
/// the run's counts and actor to parse for every member event.
pub fn run_trigger(
    connection: &dyn Db,
    tenant: &str,
    run_id: &str,
) -> Result<Option<RunTrigger>, ProjectionError> {
    connection
        .prepare_cached("SELECT trigger FROM sync_runs WHERE tenant_id = ?1 AND run_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![tenant, run_id], |row| {
                    crate::word_column(row, 0, RunTrigger::parse)
                })
                .optional()
        })
        .map_err(ProjectionError::storage("reading a Synchronize run's trigger"))
}

/// The tenant's unfinished run (started, never completed nor failed), if a
/// crash left one.
pub fn unfinished_run(
    connection: &dyn Db,
    tenant: &str,
) -> Result<Option<SyncRunRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = ?1 AND status = 'running' \
             ORDER BY started_at DESC LIMIT 1"
        ))
        .and_then(|mut statement| statement.query_row(params![tenant], run_from_row).optional())
        .map_err(ProjectionError::storage("reading an unfinished Synchronize run"))
}

/// Runs, newest first.
pub fn runs(
    connection: &dyn Db,
    tenant: &str,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<SyncRunRow>), ProjectionError> {
    let total: i64 = connection
        .prepare_cached("SELECT count(*) FROM sync_runs WHERE tenant_id = ?1")
        .and_then(|mut statement| statement.query_row(params![tenant], |row| row.get(0)))
        .map_err(ProjectionError::storage("counting Synchronize runs"))?;
    let rows = connection
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = ?1 \
             ORDER BY started_at DESC, run_id DESC LIMIT ?2 OFFSET ?3"
        ))
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, sql_integer(limit), sql_integer(offset)], run_from_row)?
                .collect()
        })
        .map_err(ProjectionError::storage("listing Synchronize runs"))?;
    Ok((u64::try_from(total).unwrap_or(0), rows))
}

/// The latest scheduled instant a run was started for.
pub fn last_scheduled_for(
    connection: &dyn Db,
    tenant: &str,
) -> Result<Option<String>, ProjectionError> {
    connection
        .prepare_cached("SELECT max(scheduled_for) FROM sync_runs WHERE tenant_id = ?1")
        .and_then(|mut statement| statement.query_row(params![tenant], |row| row.get(0)))
        .map_err(ProjectionError::storage("reading the last scheduled run"))
}
