//! The event feed: what the application hears of its members, as a public
//! contract apart from the internal event enum (docs/events.md).
//!
//! It owns the `feed_rows` table: one row per public event, the whole
//! JSON body as it is served and delivered, keyed by the tenant and the log
//! position (and a sequence within it, 0 today) it came from. Folded inline
//! like every projection, after the member directory (a body carries the
//! member as it is after the change), so a rebuild or a replay yields the
//! same bodies, ids and cursors. It never decides anything and never reads
//! the SCIM tables; what caused a member event is in that event's metadata
//! (`caused_by`), recorded by the Synchronize that appended it.
//!
//! A [`Cursor`] names a place in one tenant's feed. Its text is opaque to
//! clients, fixed-width hex so that later cursors sort after earlier ones,
//! and carries a tag over the tenant, so a cursor of another tenant (or a
//! mangled one) is refused instead of silently reading from elsewhere.

use events::db::{Db, DbError, Dialect, OptionalExtension};
use events::event::{
    MemberDisabled, MemberJoined, MemberLeft, MemberRestored, MemberRolesChanged, MemberUpdated,
    RunEnd, SyncCompleted,
};
use events::params;
use events::{Actor, Cause, Event, RecordedEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::members::{self, MemberStatus};
use crate::{ProjectionError, sql_integer};

/// The version of the public catalogue every body states; an incompatible
/// change of a type's shape would be a new version, never a silent one.
pub const CATALOGUE_VERSION: u32 = 1;

/// Every public event type, in the order docs/events.md lists them.
pub const TYPES: &[&str] = &[
    "member.joined",
    "member.updated",
    "member.roles_changed",
    "member.disabled",
    "member.enabled",
    "member.left",
    "member.restored",
    "member.purged",
    "member.erased",
    "sync.completed",
    "sync.held",
];

/// A place in one tenant's feed: just after the event at `position` (and
/// `seq` within it). Position 0 is the start, before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    pub position: u64,
    pub seq: u16,
}

/// Why a cursor's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor {0:?} is not a cursor rollcall hands out (28 hexadecimal digits)")]
    Malformed(String),
    #[error("cursor {0:?} is not a cursor of this tenant's feed")]
    Foreign(String),
}

const CURSOR_LENGTH: usize = 28;

impl Cursor {
    pub const START: Cursor = Cursor { position: 0, seq: 0 };

    fn tag(self, tenant: &str) -> u32 {
        let mut hasher = Sha256::new();
        hasher.update(b"rollcall feed cursor\0");
        hasher.update(tenant.as_bytes());
        hasher.update([0]);
        hasher.update(self.position.to_be_bytes());
        hasher.update(self.seq.to_be_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let [a, b, c, d, ..] = digest;
        u32::from_be_bytes([a, b, c, d])
    }

    /// The cursor's text for `tenant`.
    pub fn encode(self, tenant: &str) -> String {
        format!("{:016x}{:04x}{:08x}", self.position, self.seq, self.tag(tenant))
    }

    /// Reads a cursor `tenant` was handed.
    pub fn decode(tenant: &str, text: &str) -> Result<Cursor, CursorError> {
        let malformed = || CursorError::Malformed(text.chars().take(64).collect());
        if text.len() != CURSOR_LENGTH
            || !text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        {
            return Err(malformed());
        }
        let field = |range: std::ops::Range<usize>| {
            text.get(range).and_then(|digits| u64::from_str_radix(digits, 16).ok())
        };
        let (Some(position), Some(seq), Some(tag)) = (field(0..16), field(16..20), field(20..28))
        else {
            return Err(malformed());
        };
        let cursor = Cursor { position, seq: u16::try_from(seq).map_err(|_| malformed())? };
        if u64::from(cursor.tag(tenant)) != tag {
            return Err(CursorError::Foreign(text.to_owned()));
        }
        Ok(cursor)
    }
}

/// The part of an event's metadata a body needs; a request's body is
/// skipped unread.
#[derive(Deserialize)]
struct Envelope {
    event_id: String,
    actor: Actor,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    caused_by: Vec<Cause>,
}

/// What the fold needs to know of a member before the member directory
/// folds the same event: its userName and externalId, for a rename's
/// "before".
#[derive(Debug, Default)]
pub struct Before {
    identity: Option<(String, Option<String>)>,
}

/// Reads what [`apply`] will need of the state before `event` is folded.
pub fn before(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<Before, ProjectionError> {
    let Event::MemberUpdated(MemberUpdated { member_id, user_name, external_id, .. }) = event
    else {
        return Ok(Before::default());
    };
    if user_name.is_none() && external_id.is_none() {
        return Ok(Before::default());
    }
    let member = members::member(connection, &recorded.tenant, member_id)?;
    Ok(Before { identity: member.map(|member| (member.user_name, member.external_id)) })
}

/// Folds one event, after the member directory has folded it.
pub(crate) fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
    before: Before,
) -> Result<(), ProjectionError> {
    let tenant = recorded.tenant.as_str();
    let (kind, member_id, change) = match event {
        Event::MemberJoined(MemberJoined { member_id, properties, roles, .. }) => {
            ("member.joined", member_id, Change::Join(JoinChange { properties, roles }))
        }
        Event::MemberUpdated(MemberUpdated {
            member_id,
            changes,
            user_name,
            external_id,
            external_id_cleared,
        }) => {
            let mut change = Map::new();
            change.insert("properties".to_owned(), json!(changes));
            let (old_name, old_external_id) = before.identity.unwrap_or_default();
            if let Some(user_name) = user_name {
                change.insert("user_name".to_owned(), json!({ "from": old_name, "to": user_name }));
            }
            if external_id.is_some() || *external_id_cleared {
                change.insert(
                    "external_id".to_owned(),
                    json!({ "from": old_external_id, "to": external_id }),
                );
            }
            ("member.updated", member_id, Change::Other(Value::Object(change)))
        }
        Event::MemberRolesChanged(MemberRolesChanged { member_id, from, to }) => {
            let added: Vec<&String> = to.iter().filter(|role| !from.contains(role)).collect();
            let removed: Vec<&String> = from.iter().filter(|role| !to.contains(role)).collect();
            (
                "member.roles_changed",
                member_id,
                Change::Other(
                    json!({ "added": added, "removed": removed, "from": from, "to": to }),
                ),
            )
        }
        Event::MemberDisabled(MemberDisabled { member_id, revoke_sessions }) => (
            "member.disabled",
            member_id,
            Change::Other(json!({ "revoke_sessions": revoke_sessions })),
        ),
        Event::MemberEnabled(enabled) => {
            ("member.enabled", &enabled.member_id, Change::Other(json!({})))
        }
        Event::MemberLeft(MemberLeft { member_id, grace_until }) => {
            ("member.left", member_id, Change::Other(json!({ "grace_until": grace_until })))
        }
        Event::MemberRestored(MemberRestored { member_id, user_id, .. }) => {
            ("member.restored", member_id, Change::Other(json!({ "scim_user_id": user_id })))
        }
        Event::MemberPurged(purged) => {
            ("member.purged", &purged.member_id, Change::Other(json!({})))
        }
        Event::SubjectErased(erased) => {
            let Some(member_id) = &erased.member_id else { return Ok(()) };
            erase_earlier(connection, tenant, member_id)?;
            ("member.erased", member_id, Change::Other(json!({})))
        }
        Event::SyncCompleted(completed) => return apply_run(connection, recorded, completed),
        // Not the application's news: the IdP's side (the member events
        // say what it came to), settings, tokens, the application's own
        // writes, and a run's inner steps. Listed rather than `_`, so a new
        // event type does not compile until someone decides.
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
        | Event::MemberAppPropertiesChanged(_)
        | Event::MemberChangeDeferred(_)
        | Event::SyncStarted(_)
        | Event::SyncBatchApplied(_)
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
    // A join's member is the row the join wrote, built the same way.
    let row = match event {
        Event::MemberJoined(joined) => Some(members::joined_row(recorded, joined)),
        _ => members::member(connection, tenant, member_id)?,
    };
    let member = match &row {
        // An erased member's body names nobody, as its earlier ones now do.
        Some(member) if member.erased_at.is_some() => {
            return insert(connection, recorded, kind, &erased_data(&change_value(change), member));
        }
        // A purged member's body names nobody: no personal value is in it.
        Some(member) if member.status == MemberStatus::Purged => {
            MemberBody::Purged { member_id: &member.member_id, status: member.status.as_str() }
        }
        Some(member) => MemberBody::Whole(MemberWhole::of(member)),
        None => MemberBody::Unknown { member_id },
    };
    insert(connection, recorded, kind, &MemberDataBody { change, member })
}

/// The `data` of an erased member's event: the change without the
/// person's values (a join keeps its roles, an update keeps nothing) and
/// the member as `{erased, member_id, roles, status}`. Made from the
/// facts alone, so the live feed (rewritten at the erasure) and a rebuild
/// (folded from events that open as erased) store the same bytes.
fn erased_data(change: &Value, member: &members::MemberRow) -> Value {
    erased_form(change, member.member_id.as_str(), Some(&member.roles), member.status.as_str())
}

fn erased_form(change: &Value, member_id: &str, roles: Option<&[String]>, status: &str) -> Value {
    let mut kept = Map::new();
    if let Some(roles) = roles {
        kept.insert("roles".to_owned(), json!(roles));
    }
    // An update's change is the person's values, all of them.
    let change = match change {
        Value::Object(fields) if fields.contains_key("properties") => {
            let mut facts = Map::new();
            if let Some(roles) = fields.get("roles") {
                facts.insert("roles".to_owned(), roles.clone());
            }
            Value::Object(facts)
        }
        other => other.clone(),
    };
    let mut member = Map::new();
    member.insert("erased".to_owned(), Value::Bool(true));
    member.insert("member_id".to_owned(), json!(member_id));
    member.extend(kept);
    if !status.is_empty() {
        member.insert("status".to_owned(), json!(status));
    }
    json!({ "change": change, "member": member })
}

fn change_value(change: Change<'_>) -> Value {
    match change {
        Change::Join(join) => json!({ "properties": join.properties, "roles": join.roles }),
        Change::Other(value) => value,
    }
}

/// Rewrites the stored bodies of one member's earlier events in the
/// erased form ([`erased_form`]): the feed serves and delivers them from
/// here, so no reader or webhook gets the person's values again.
fn erase_earlier(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
) -> Result<(), ProjectionError> {
    let storage = ProjectionError::storage("erasing a member's feed events");
    let select = match connection.dialect() {
        Dialect::Sqlite => {
            "SELECT position, seq, body FROM feed_rows WHERE tenant_id = ?1 \
             AND type LIKE 'member.%' AND json_extract(body, '$.data.member.member_id') = ?2"
        }
        Dialect::Postgres => {
            "SELECT position, seq, body FROM feed_rows WHERE tenant_id = ?1 \
             AND type LIKE 'member.%' AND (body::jsonb #>> '{data,member,member_id}') = ?2"
        }
    };
    let rows: Vec<(i64, i64, String)> = connection
        .prepare_cached(select)
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, member_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect()
        })
        .map_err(storage)?;
    for (position, seq, body) in rows {
        let metadata = |reason: String| ProjectionError::Metadata {
            position: u64::try_from(position).unwrap_or(0),
            reason,
        };
        let mut body: Value =
            serde_json::from_str(&body).map_err(|error| metadata(error.to_string()))?;
        let Some(data) = body.get_mut("data") else { continue };
        let member = data.get("member").cloned().unwrap_or(Value::Null);
        let roles: Option<Vec<String>> =
            member.get("roles").and_then(|roles| serde_json::from_value(roles.clone()).ok());
        let status = member.get("status").and_then(Value::as_str).unwrap_or_default();
        let change = data.get("change").cloned().unwrap_or(Value::Null);
        *data = erased_form(&change, member_id, roles.as_deref(), status);
        let text = serde_json::to_string(&body).map_err(|error| metadata(error.to_string()))?;
        connection
            .prepare_cached(
                "UPDATE feed_rows SET body = ?4 WHERE tenant_id = ?1 AND position = ?2 AND seq = ?3",
            )
            .and_then(|mut statement| statement.execute(params![tenant, position, seq, text]))
            .map_err(ProjectionError::storage("erasing a member's feed events"))?;
    }
    Ok(())
}

/// A `member.*` event's `data` as stored: what [`MemberData`] documents.
/// Every struct a body is written from declares its fields in sorted
/// order, so the bytes are those the feed stored when bodies went through
/// a `serde_json::Value` (which sorts): a rebuild of an older file yields
/// the same rows (`tests::stored_bodies_keep_the_sorted_keys_of_a_value`).
#[derive(serde::Serialize)]
struct MemberDataBody<'a, C> {
    change: C,
    member: MemberBody<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum MemberBody<'a> {
    Whole(MemberWhole<'a>),
    Purged { member_id: &'a str, status: &'static str },
    Unknown { member_id: &'a str },
}

/// [`members::MemberView`], borrowed from the row and in sorted order.
#[derive(serde::Serialize)]
struct MemberWhole<'a> {
    app_properties: &'a Map<String, Value>,
    disabled_at: Option<&'a str>,
    grace_until: Option<&'a str>,
    joined_at: &'a str,
    last_position: u64,
    left_at: Option<&'a str>,
    member_id: &'a str,
    properties: &'a Map<String, Value>,
    revoke_sessions: bool,
    roles: &'a [String],
    source: MemberWholeSource<'a>,
    status: &'static str,
    updated_at: &'a str,
    user_name: &'a str,
    version: u64,
}

#[derive(serde::Serialize)]
struct MemberWholeSource<'a> {
    external_id: Option<&'a str>,
    scim_user_id: &'a str,
}

impl<'a> MemberWhole<'a> {
    fn of(row: &'a members::MemberRow) -> MemberWhole<'a> {
        MemberWhole {
            app_properties: &row.app_properties,
            disabled_at: row.disabled_at.as_deref(),
            grace_until: row.grace_until.as_deref(),
            joined_at: &row.joined_at,
            last_position: row.last_position,
            left_at: row.left_at.as_deref(),
            member_id: &row.member_id,
            properties: &row.properties,
            revoke_sessions: row.revoke_sessions,
            roles: &row.roles,
            source: MemberWholeSource {
                external_id: row.external_id.as_deref(),
                scim_user_id: &row.user_id,
            },
            status: row.status.as_str(),
            updated_at: &row.updated_at,
            user_name: &row.user_name,
            version: row.version,
        }
    }
}

/// A `change`: a join's borrowed from the event, the others built.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Change<'a> {
    Join(JoinChange<'a>),
    Other(Value),
}

/// A join's `change`, borrowed from the event (sorted, as above).
#[derive(serde::Serialize)]
struct JoinChange<'a> {
    properties: &'a Map<String, Value>,
    roles: &'a [String],
}

fn apply_run(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    completed: &SyncCompleted,
) -> Result<(), ProjectionError> {
    let kind = match completed.status {
        RunEnd::Completed => "sync.completed",
        RunEnd::Held => "sync.held",
    };
    let data = RunData {
        run_id: completed.run_id.clone(),
        status: completed.status,
        counts: completed.counts.clone(),
        duration_ms: completed.duration_ms,
        checkpoint: completed.position,
        held_reason: completed.held_reason.clone(),
    };
    // Through a `Value`: `RunData` is the documented shape, not sorted.
    let data = serde_json::to_value(data).unwrap_or(Value::Null);
    insert(connection, recorded, kind, &data)
}

/// Who asked for a member event: the run's actor and trigger. The SCIM
/// side of it is in `caused_by`.
fn source(
    connection: &dyn Db,
    tenant: &str,
    envelope: &Envelope,
) -> Result<Value, ProjectionError> {
    let mut source = match serde_json::to_value(&envelope.actor) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    if let Actor::Token { token_id } = &envelope.actor {
        let client: Option<Option<String>> = connection
            .prepare_cached("SELECT client_id FROM tokens WHERE tenant_id = ?1 AND token_id = ?2")
            .and_then(|mut statement| {
                statement.query_row([tenant, token_id], |row| row.get(0)).optional()
            })
            .map_err(ProjectionError::storage("reading a token's client"))?;
        if let Some(Some(client_id)) = client {
            source.insert("client_id".to_owned(), json!(client_id));
        }
    }
    if let Some(run_id) = &envelope.correlation_id {
        source.insert("run_id".to_owned(), json!(run_id));
        if let Some(trigger) = members::run_trigger(connection, tenant, run_id)? {
            source.insert("trigger".to_owned(), json!(trigger));
        }
    }
    Ok(Value::Object(source))
}

fn insert(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    kind: &str,
    data: &impl serde::Serialize,
) -> Result<(), ProjectionError> {
    let tenant = recorded.tenant.as_str();
    let envelope: Envelope = serde_json::from_str(&recorded.metadata).map_err(|error| {
        ProjectionError::Metadata { position: recorded.position, reason: error.to_string() }
    })?;
    let cursor = Cursor { position: recorded.position, seq: 0 };
    let request_id = envelope.caused_by.iter().rev().find_map(|cause| cause.request_id.as_deref());
    let body = StoredBody {
        caused_by: CausedBy {
            events: envelope.caused_by.iter().map(CauseView::of).collect(),
            request_id,
        },
        cursor: cursor.encode(tenant),
        data,
        id: &envelope.event_id,
        occurred_at: &recorded.recorded_at,
        source: source(connection, tenant, &envelope)?,
        tenant,
        kind,
        version: CATALOGUE_VERSION,
    };
    let body = serde_json::to_string(&body).map_err(|error| ProjectionError::Metadata {
        position: recorded.position,
        reason: error.to_string(),
    })?;
    connection
        .prepare_cached(
            "INSERT INTO feed_rows (tenant_id, position, seq, type, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                tenant,
                sql_integer(cursor.position),
                i64::from(cursor.seq),
                kind,
                body
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a feed event"))
}

/// A body as stored: [`EventBody`]'s fields in sorted order (see
/// [`MemberDataBody`]), written straight to text.
#[derive(serde::Serialize)]
struct StoredBody<'a, D> {
    caused_by: CausedBy<'a>,
    cursor: String,
    data: D,
    id: &'a str,
    occurred_at: &'a str,
    source: Value,
    tenant: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    version: u32,
}

/// One event of the feed, as the application receives it (the OpenAPI
/// document's `Event`; docs/events.md describes each type's `data`).
// The documented shape: bodies are written by `StoredBody`, which holds
// the same fields (`tests::the_stored_body_has_the_documented_fields`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventBody<'a> {
    /// The log event's id: the same on every redelivery.
    pub id: &'a str,
    /// One of the catalogue's types (`member.joined`, ..., `sync.held`).
    #[serde(rename = "type")]
    #[schema(
        pattern = "^(member\\.joined|member\\.updated|member\\.roles_changed|member\\.disabled|member\\.enabled|member\\.left|member\\.restored|member\\.purged|member\\.erased|sync\\.completed|sync\\.held)$"
    )]
    pub kind: &'a str,
    /// The catalogue's version.
    pub version: u32,
    /// The tenant's id.
    pub tenant: &'a str,
    /// Opaque, strictly increasing within the tenant: read `after` it.
    pub cursor: String,
    pub occurred_at: &'a str,
    #[schema(value_type = EventData)]
    pub data: Value,
    /// Who asked for it: the actor (an IdP's token and client, an admin,
    /// the schedule), the run and its trigger.
    #[schema(value_type = Object)]
    pub source: Value,
    pub caused_by: CausedBy<'a>,
}

/// The SCIM requests and events behind a member event, to check against
/// the tenant's audit and exported chain.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CausedBy<'a> {
    pub events: Vec<CauseView<'a>>,
    /// The request id of the latest cause that has one.
    pub request_id: Option<&'a str>,
}

/// One log event behind a feed event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Cause)]
pub struct CauseView<'a> {
    /// Its chain hash, lower-case hex.
    pub hash: &'a str,
    pub position: u64,
    pub request_id: Option<&'a str>,
    pub stream: &'a str,
    /// The log event's type (`UserCreated`, `GroupMembersAdded`, ...).
    #[serde(rename = "type")]
    pub event_type: &'a str,
}

impl CauseView<'_> {
    fn of(cause: &Cause) -> CauseView<'_> {
        CauseView {
            hash: &cause.hash,
            position: cause.position,
            request_id: cause.request_id.as_deref(),
            stream: &cause.stream,
            event_type: &cause.event_type,
        }
    }
}

/// What an event's `data` holds: a member and its change, or a run.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventData {
    Member(MemberData),
    Run(RunData),
}

/// The `data` of a `member.*` event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MemberData {
    /// The member after the change (after a purge: its id and status only).
    #[schema(value_type = Object)]
    pub member: Value,
    /// The change itself; its fields depend on the type.
    #[schema(value_type = Object)]
    pub change: Value,
}

/// The `data` of a `sync.completed` or `sync.held` event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RunData {
    pub run_id: String,
    /// `completed` or `held`.
    #[schema(value_type = String)]
    pub status: RunEnd,
    #[schema(value_type = Object)]
    pub counts: Value,
    pub duration_ms: u64,
    /// The log position the run read through.
    pub checkpoint: u64,
    pub held_reason: Option<String>,
}

/// One event as stored: its cursor and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub cursor: Cursor,
    pub event_type: String,
    /// The whole public event, JSON text.
    pub body: String,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// Where the next page starts: the last event's cursor, or `after`.
    pub next: Cursor,
    pub has_more: bool,
}

fn feed_event(row: &events::db::Row<'_>) -> Result<FeedEvent, DbError> {
    let position: i64 = row.get(0)?;
    Ok(FeedEvent {
        cursor: Cursor { position: u64::try_from(position).unwrap_or(0), seq: row.get(1)? },
        event_type: row.get(2)?,
        body: row.get(3)?,
    })
}

/// Up to `limit` events of `tenant` after `after`, in cursor order; only
/// those of `types` when given.
pub fn page(
    connection: &dyn Db,
    tenant: &str,
    after: Cursor,
    types: Option<&[String]>,
    limit: usize,
) -> Result<FeedPage, ProjectionError> {
    let types = types.map(|types| json!(types).to_string());
    let sql = match connection.dialect() {
        Dialect::Sqlite => {
            "SELECT position, seq, type, body FROM feed_rows \
             WHERE tenant_id = ?1 AND (position, seq) > (?2, ?3) \
             AND (?4 IS NULL OR type IN (SELECT value FROM json_each(?4))) \
             ORDER BY position, seq LIMIT ?5"
        }
        Dialect::Postgres => {
            "SELECT position, seq, type, body FROM feed_rows \
             WHERE tenant_id = ?1 AND (position, seq) > (?2, ?3) \
             AND (?4::text IS NULL OR type IN (SELECT jsonb_array_elements_text(?4::jsonb))) \
             ORDER BY position, seq LIMIT ?5"
        }
    };
    let mut events: Vec<FeedEvent> = connection
        .prepare_cached(sql)
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![
                        tenant,
                        sql_integer(after.position),
                        i64::from(after.seq),
                        types,
                        sql_integer(limit as u64 + 1)
                    ],
                    feed_event,
                )?
                .collect::<Result<Vec<_>, DbError>>()
        })
        .map_err(ProjectionError::storage("reading the event feed"))?;
    let has_more = events.len() > limit;
    events.truncate(limit);
    let next = events.last().map_or(after, |event| event.cursor);
    Ok(FeedPage { events, next, has_more })
}

/// The cursor of the tenant's newest event ([`Cursor::START`] if none):
/// what a read of the member directory in the same snapshot reflects.
pub fn latest(connection: &dyn Db, tenant: &str) -> Result<Cursor, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT position, seq FROM feed_rows WHERE tenant_id = ?1 \
             ORDER BY position DESC, seq DESC LIMIT 1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([tenant], |row| {
                    let position: i64 = row.get(0)?;
                    Ok(Cursor { position: u64::try_from(position).unwrap_or(0), seq: row.get(1)? })
                })
                .optional()
        })
        .map(Option::unwrap_or_default)
        .map_err(ProjectionError::storage("reading the feed's newest cursor"))
}

/// One event of a tenant by its id. A scan of the tenant's feed (no index
/// is kept for it): only a redelivery an admin asks for looks one up.
pub fn by_id(
    connection: &dyn Db,
    tenant: &str,
    event_id: &str,
) -> Result<Option<FeedEvent>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT position, seq, type, body FROM feed_rows \
             WHERE tenant_id = ?1 AND {} = ?2 LIMIT 1",
            match connection.dialect() {
                events::db::Dialect::Sqlite => "body ->> '$.id'",
                events::db::Dialect::Postgres => "body::jsonb ->> 'id'",
            }
        ))
        .and_then(|mut statement| statement.query_row([tenant, event_id], feed_event).optional())
        .map_err(ProjectionError::storage("reading a feed event"))
}

/// The feed events one member's stream produced, oldest first: the
/// member's own stream in the log names its positions.
pub fn of_member(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
    limit: usize,
) -> Result<Vec<FeedEvent>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT f.position, f.seq, f.type, f.body FROM events AS e \
             JOIN feed_rows AS f ON f.tenant_id = e.tenant AND f.position = e.position \
             WHERE e.tenant = ?1 AND e.stream = ?2 ORDER BY f.position DESC, f.seq DESC LIMIT ?3",
        )
        .and_then(|mut statement| {
            let mut events = statement
                .query_map(
                    params![tenant, format!("member:{member_id}"), sql_integer(limit as u64)],
                    feed_event,
                )?
                .collect::<Result<Vec<_>, DbError>>()?;
            events.reverse();
            Ok(events)
        })
        .map_err(ProjectionError::storage("reading a member's feed"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use events::event::{MemberEnabled, MemberPurged, PropertyChange, RunTrigger, SyncStarted};

    use super::*;

    /// Every member event, and a run's end, through the whole fold (the
    /// members directory first, as `crate::apply` does).
    fn folded_feed() -> Vec<FeedEvent> {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        crate::functions::register(&connection).unwrap();
        crate::schema::migrate(&connection).unwrap();
        connection.execute_batch("PRAGMA foreign_keys=OFF").unwrap();
        let member = || "m-1".to_owned();
        let properties: Map<String, Value> = serde_json::from_value(json!({
            "email": "ann@example.com", "title": "Engineer \"\u{e9}\"", "zeta": [1, {"b": 2, "a": 1}]
        }))
        .unwrap();
        let changes = BTreeMap::from([(
            "title".to_owned(),
            PropertyChange { from: json!("Engineer"), to: json!("Lead") },
        )]);
        let run = Event::SyncStarted(SyncStarted {
            run_id: "run-1".to_owned(),
            trigger: RunTrigger::Manual,
            from_position: 0,
            to_position: 0,
            held_reason: None,
            scheduled_for: None,
            approves: None,
        });
        let stream_events = [
            run,
            Event::MemberJoined(MemberJoined {
                member_id: member(),
                user_id: "u-1".to_owned(),
                external_id: Some("ext-1".to_owned()),
                user_name: "ann@example.com".to_owned(),
                properties,
                roles: vec!["admin".to_owned(), "viewer".to_owned()],
            }),
            Event::MemberUpdated(MemberUpdated {
                member_id: member(),
                changes,
                user_name: Some("anne@example.com".to_owned()),
                external_id: None,
                external_id_cleared: true,
            }),
            Event::MemberRolesChanged(MemberRolesChanged {
                member_id: member(),
                from: vec!["admin".to_owned(), "viewer".to_owned()],
                to: vec!["viewer".to_owned()],
            }),
            Event::MemberDisabled(MemberDisabled { member_id: member(), revoke_sessions: true }),
            Event::MemberEnabled(MemberEnabled { member_id: member() }),
            Event::MemberLeft(MemberLeft {
                member_id: member(),
                grace_until: "2026-02-01T00:00:00.000Z".to_owned(),
            }),
            Event::MemberRestored(MemberRestored {
                member_id: member(),
                user_id: "u-2".to_owned(),
                user_name: "anne@example.com".to_owned(),
            }),
            Event::MemberLeft(MemberLeft {
                member_id: member(),
                grace_until: "2026-02-01T00:00:00.000Z".to_owned(),
            }),
            Event::MemberPurged(MemberPurged { member_id: member() }),
            Event::SyncCompleted(SyncCompleted {
                run_id: "run-1".to_owned(),
                status: RunEnd::Completed,
                position: 0,
                counts: json!({"join": 1, "leave": 1}),
                duration_ms: 7,
                held_reason: None,
            }),
        ];
        for (position, event) in (1..).zip(&stream_events) {
            let metadata = json!({
                "event_id": format!("e-{position}"),
                "actor": {"kind": "token", "token_id": "tok-1"},
                "correlation_id": "run-1",
                "caused_by": [
                    {"position": 1, "hash": "ab", "event_type": "UserCreated", "stream": "user:u-1", "request_id": "r-1"},
                    {"position": 2, "hash": "cd", "event_type": "GroupMembersAdded", "stream": "group:g-1"},
                ],
            });
            let recorded = crate::tests::recorded_with(
                position,
                event,
                &metadata.to_string(),
                format!("2026-01-01T00:00:{position:02}.000Z"),
            );
            crate::apply(&connection, &recorded, event).unwrap();
        }
        page(&connection, "t", Cursor::START, None, 100).unwrap().events
    }

    /// Bodies were once written through a `serde_json::Value`, which sorts
    /// every object's keys; they are now written straight from structs
    /// whose fields are declared in that order. A field out of order would
    /// make a rebuild of an older file differ from its rows (`verify
    /// --projections` would fail), so every body of every type must read
    /// back into the same bytes through a `Value`.
    #[test]
    fn stored_bodies_keep_the_sorted_keys_of_a_value() {
        let feed = folded_feed();
        let types: Vec<&str> = feed.iter().map(|event| event.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "member.joined",
                "member.updated",
                "member.roles_changed",
                "member.disabled",
                "member.enabled",
                "member.left",
                "member.restored",
                "member.left",
                "member.purged",
                "sync.completed"
            ]
        );
        for event in &feed {
            let value: Value = serde_json::from_str(&event.body).unwrap();
            assert_eq!(value.to_string(), event.body, "{}", event.event_type);
        }
        let joined: Value = serde_json::from_str(&feed[0].body).unwrap();
        assert_eq!(
            joined["source"],
            json!({"kind": "token", "token_id": "tok-1", "run_id": "run-1", "trigger": "manual"})
        );
        assert_eq!(joined["caused_by"]["request_id"], "r-1");
        assert_eq!(joined["data"]["change"]["roles"], json!(["admin", "viewer"]));
        assert_eq!(joined["data"]["member"]["source"]["external_id"], "ext-1");
        let purged: Value = serde_json::from_str(&feed[8].body).unwrap();
        assert_eq!(purged["data"]["member"], json!({"member_id": "m-1", "status": "purged"}));
    }

    /// A body's member is the admin API's member, field for field.
    #[test]
    fn a_body_carries_the_member_view() {
        let row = members::MemberRow {
            member_id: "m-1".to_owned(),
            user_id: "u-1".to_owned(),
            external_id: None,
            user_name: "ann@example.com".to_owned(),
            status: MemberStatus::Disabled,
            properties: serde_json::from_value(json!({"b": 1, "a": [true]})).unwrap(),
            roles: vec!["viewer".to_owned()],
            app_properties: serde_json::from_value(json!({"seat": 4})).unwrap(),
            joined_at: "2026-01-01T00:00:00.000Z".to_owned(),
            left_at: Some("2026-01-02T00:00:00.000Z".to_owned()),
            grace_until: Some("2026-01-03T00:00:00.000Z".to_owned()),
            disabled_at: Some("2026-01-04T00:00:00.000Z".to_owned()),
            revoke_sessions: true,
            updated_at: "2026-01-05T00:00:00.000Z".to_owned(),
            version: 3,
            last_position: 99,
            erased_at: None,
        };
        assert_eq!(serde_json::to_string(&MemberWhole::of(&row)).unwrap(), row.view().to_string());
    }

    /// The documented `Event` and the stored body have the same fields.
    #[test]
    fn the_stored_body_has_the_documented_fields() {
        let documented = EventBody {
            id: "e",
            kind: "member.joined",
            version: 1,
            tenant: "t",
            cursor: String::new(),
            occurred_at: "",
            data: Value::Null,
            source: Value::Null,
            caused_by: CausedBy { events: Vec::new(), request_id: None },
        };
        let stored: Value = serde_json::from_str(&folded_feed()[0].body).unwrap();
        let keys =
            |value: &Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(keys(&serde_json::to_value(&documented).unwrap()), keys(&stored));
    }

    #[test]
    fn cursors_round_trip_sort_in_order_and_belong_to_one_tenant() {
        let early = Cursor { position: 9, seq: 0 };
        let late = Cursor { position: 10, seq: 0 };
        let text = early.encode("tenant-a");
        assert_eq!(text.len(), CURSOR_LENGTH);
        assert_eq!(Cursor::decode("tenant-a", &text), Ok(early));
        assert!(early.encode("tenant-a") < late.encode("tenant-a"), "text order is feed order");
        assert!(
            Cursor { position: 10, seq: 1 }.encode("t") > late.encode("t"),
            "a later seq sorts after"
        );
        assert_eq!(Cursor::decode("tenant-b", &text), Err(CursorError::Foreign(text.clone())));
        for bad in ["", "zz", &text.to_uppercase(), &format!("{text}0"), &text[1..]] {
            assert!(
                matches!(Cursor::decode("tenant-a", bad), Err(CursorError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut flipped = text.clone().into_bytes();
        flipped[15] = if flipped[15] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(Cursor::decode("tenant-a", &flipped), Err(CursorError::Foreign(_))));
    }
}
