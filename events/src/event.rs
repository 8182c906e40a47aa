//! The vocabulary: every fact rollcall records, as one enum in the past tense.
//!
//! Each variant wraps a payload struct, which is the on-disk contract: its
//! JSON is what the log stores. Changing a payload's shape means raising its
//! schema version in the `events!` table below and teaching [`upcast`] to
//! turn the old shape into the new one, with a test that reads an old row.
//! Decoding never fails on an old version this build knows how to upcast;
//! it fails, with a typed error, on an unknown type or a future version.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::seal::{self, Binding, Keyring, SealError, SubjectKey};
use crate::{DecodeError, NewEvent};

/// What a bearer token may do. Each scope opens one family of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// The identity provider's SCIM endpoint, /scim/v2.
    Scim,
    /// The admin API and console.
    Admin,
    /// The read-only audit API.
    Audit,
    /// The application: reads members and the event feed, and sets the
    /// members' app-owned properties.
    App,
}

impl TokenScope {
    pub const ALL: [TokenScope; 4] =
        [TokenScope::Scim, TokenScope::Admin, TokenScope::Audit, TokenScope::App];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Scim => "scim",
            TokenScope::Admin => "admin",
            TokenScope::Audit => "audit",
            TokenScope::App => "app",
        }
    }

    pub fn parse(text: &str) -> Option<TokenScope> {
        TokenScope::ALL.into_iter().find(|scope| scope.as_str().eq_ignore_ascii_case(text))
    }
}

/// A tenant (one organisation provisioning into rollcall) was created.
/// Recorded in the system tenant's chain, stream `tenant:<tenant_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCreated {
    /// A ULID; the `tenant` column of every event of this tenant.
    pub tenant_id: String,
    /// The unique, human name (`acme`), used by the CLI.
    pub name: String,
}

/// A bearer token was issued. Recorded in the tenant's chain, stream
/// `token:<token_id>`. The secret itself is never recorded, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIssued {
    pub token_id: String,
    pub scope: TokenScope,
    /// SHA-256 of the secret, lower-case hex. The secret carries 256 random
    /// bits, so a fast hash is enough: there is nothing to brute-force.
    pub secret_sha256: String,
    /// When the token stops working (UTC, RFC 3339, ms); `None`: never.
    pub expires_at: Option<String>,
    /// A free-text label for the admin ("Entra ID production").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The OAuth client this token was issued to, if it came from the
    /// client-credentials grant. Optional and absent from older rows, so
    /// adding it changed no stored payload's meaning (no new version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// An OAuth 2.0 client (RFC 6749 client credentials) was registered for a
/// tenant. Stream `client:<client_id>`. Only the secret's hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRegistered {
    pub client_id: String,
    pub secret_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// An OAuth client was revoked: it gets no more tokens (those it had are
/// revoked by their own TokenRevoked events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRevoked {
    pub client_id: String,
}

/// A bearer token was revoked; it stops working at the next request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub token_id: String,
}

/// A SCIM resource's attributes in canonical form: canonical names, no `id`,
/// `meta` or `schemas` (the server owns those), extensions under their URN.
pub type ScimDocument = serde_json::Map<String, Value>;

/// How a resource was changed, as the identity provider asked for it (with
/// any secret it sent replaced by "<redacted>"), kept for the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "UPPERCASE")]
pub enum ScimChange {
    /// A PUT: the body as received.
    Put { body: Value },
    /// A PATCH: the operations as received.
    Patch { operations: Value },
}

/// A group member: a user or a group, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberRef {
    pub value: String,
    #[serde(rename = "type")]
    pub kind: MemberKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberKind {
    User,
    Group,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "User",
            MemberKind::Group => "Group",
        }
    }
}

/// The identity provider created a user. Stream `user:<user_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: String,
    pub document: ScimDocument,
    /// The id of the data key (`crate::seal`) that seals this user's
    /// personal values, in this event and every later one; in clear, as it
    /// names no one. Absent from users created before sealing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
}

/// The identity provider changed a user (PUT or PATCH); `document` is the
/// whole resulting document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user_id: String,
    pub change: ScimChange,
    pub document: ScimDocument,
}

/// A user's `active` went from true (or absent) to false. Recorded after
/// the UserUpdated that carried the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeactivated {
    pub user_id: String,
}

/// A user's `active` went from false back to true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReactivated {
    pub user_id: String,
}

/// The identity provider deleted a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: String,
}

/// The identity provider created a group. Stream `group:<group_id>`.
/// Members are kept apart from the document, so a large group's members
/// are never rewritten with every change of its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCreated {
    pub group_id: String,
    pub document: ScimDocument,
    pub members: Vec<MemberRef>,
}

/// The identity provider changed a group's attributes other than members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupUpdated {
    pub group_id: String,
    pub change: ScimChange,
    pub document: ScimDocument,
}

/// A group's displayName changed. Recorded after the GroupUpdated that
/// carried the change, as the fact auditors look for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRenamed {
    pub group_id: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembersAdded {
    pub group_id: String,
    pub members: Vec<MemberRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembersRemoved {
    pub group_id: String,
    pub member_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDeleted {
    pub group_id: String,
}

/// A tenant's attribute mapping was set: which SCIM attribute fills which
/// member property, and how. Stream `config:mapping`. The mapping is kept
/// as the admin gave it (validated), so a replay applies the same rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeMappingChanged {
    pub mapping: Value,
}

/// A tenant's group-to-role bindings were set. Stream `config:roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBindingChanged {
    pub bindings: Value,
}

/// A tenant's Synchronize settings were set: the daily schedule, the
/// deprovisioning safeguard and the grace before a leaver is purged.
/// Stream `config:sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleChanged {
    pub settings: Value,
}

/// A provisioned user became a member of the application. Stream
/// `member:<member_id>`. `properties` are the mapped properties as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJoined {
    pub member_id: String,
    pub user_id: String,
    pub external_id: Option<String>,
    pub user_name: String,
    pub properties: serde_json::Map<String, Value>,
    pub roles: Vec<String>,
}

/// One property's value before and after a change (`null`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyChange {
    pub from: Value,
    pub to: Value,
}

/// A member's mapped properties changed (only those that did), or the
/// SCIM user it comes from was renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdated {
    pub member_id: String,
    pub changes: std::collections::BTreeMap<String, PropertyChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The SCIM user no longer has an externalId.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_id_cleared: bool,
}

/// A member's roles were recomputed from its groups and changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRolesChanged {
    pub member_id: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// A member was disabled (its user was deactivated). The application
/// revokes the member's sessions when `revoke_sessions` says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDisabled {
    pub member_id: String,
    pub revoke_sessions: bool,
}

/// A disabled member was enabled again (its user was reactivated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEnabled {
    pub member_id: String,
}

/// A member left (its user was deleted). Until `grace_until` a user
/// re-created with the same externalId restores the same member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLeft {
    pub member_id: String,
    pub grace_until: String,
}

/// A member that had left came back within its grace: a new SCIM user with
/// the same externalId now stands behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRestored {
    pub member_id: String,
    pub user_id: String,
    pub user_name: String,
}

/// A leaver's grace ended: its personal properties are dropped from the
/// member directory (the log keeps what it recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPurged {
    pub member_id: String,
}

/// A person's values were erased at an admin's request: the data keys
/// that sealed them are destroyed (after this event is durable), so what
/// the log holds of them no longer opens. Names nobody: ids, key ids and
/// the reason the admin gave. Who asked and when are the metadata's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectErased {
    /// The SCIM user the request named.
    pub user_id: String,
    /// The member behind it, if Synchronize ever applied the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// Every SCIM user that stood behind the member (a restore adds one),
    /// the named one included: each was sealed with a key of its own.
    pub user_ids: Vec<String>,
    /// The keys destroyed. Empty for a subject from before sealing, whose
    /// events hold its values in clear (`in_clear`).
    pub keys: Vec<u64>,
    /// Events written before sealing hold this person's values in clear:
    /// the log cannot forget them, only the projections do.
    #[serde(default)]
    pub in_clear: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The application changed a member's app-owned properties (never mapped
/// ones): `null` in `to` removes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAppPropertiesChanged {
    pub member_id: String,
    pub changes: std::collections::BTreeMap<String, PropertyChange>,
}

crate::words! {
    /// What started a Synchronize run.
    pub enum RunTrigger {
        /// The admin API or the console.
        Manual = "manual",
        /// `rollcall sync` at the command line.
        Cli = "cli",
        /// The daily schedule.
        Scheduled = "scheduled",
        /// `sync approve`: applies what a held run held.
        Approval = "approval",
    }
}

crate::words! {
    /// How a run that reached its end ended.
    pub enum RunEnd {
        Completed = "completed",
        /// The safeguard held its deprovisioning for an admin.
        Held = "held",
    }
}

crate::words! {
    /// An admin's decision on a held run.
    pub enum Decision {
        Approved = "approved",
        Rejected = "rejected",
    }
}

crate::words! {
    /// Why a user's change was not applied at a run.
    pub enum DeferReason {
        /// The mapping refused a value.
        Rejected = "rejected",
        /// The deprovisioning safeguard held it.
        Held = "held",
    }
}

/// A pending change of one user could not be applied at a Synchronize
/// (a value the mapping does not allow, say), or was held by the
/// deprovisioning safeguard. Stream `sync:<run_id>`. The change stays
/// pending until a later run applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChangeDeferred {
    pub run_id: String,
    pub user_id: String,
    pub reason: DeferReason,
    pub detail: String,
}

/// A Synchronize run began. Stream `sync:<run_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStarted {
    pub run_id: String,
    pub trigger: RunTrigger,
    /// The member checkpoint the run starts from.
    pub from_position: u64,
    /// The log position whose directory state the run applies.
    pub to_position: u64,
    /// Set when the deprovisioning safeguard holds this run's disables and
    /// leaves: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_reason: Option<String>,
    /// For a scheduled run: the scheduled instant it is for (so the
    /// scheduler never runs one instant twice, whatever the clocks say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// For an approval: the held run whose held changes this run applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approves: Option<String>,
}

/// A batch of a run was applied (its member events are in the same
/// transaction): a crash resumes after `through_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatchApplied {
    pub run_id: String,
    pub through_user: String,
    pub counts: Value,
}

/// A run ended: the member checkpoint moves to `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCompleted {
    pub run_id: String,
    pub status: RunEnd,
    pub position: u64,
    pub counts: Value,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_reason: Option<String>,
}

/// A run stopped on an error; nothing after its last batch was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailed {
    pub run_id: String,
    pub error: String,
}

/// An admin decided on a held run: `approved` (its held changes were
/// applied by the run named in `applied_by`) or `rejected` (they stay
/// pending and members are untouched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDecided {
    pub run_id: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
}

/// A webhook endpoint's settings, as the admin set them (validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub url: String,
    /// The feed types it receives; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Up to 100 events per request, as a JSON array.
    #[serde(default)]
    pub batch: bool,
}

/// A webhook endpoint was created. Stream `webhook:<webhook_id>`. Its
/// signing secret is never in the log (it is kept beside it, see
/// `projections::webhooks`). Deliveries start after the feed position it
/// was created at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCreated {
    pub webhook_id: String,
    pub settings: WebhookSettings,
    pub from_position: u64,
    pub from_seq: u16,
}

/// A webhook endpoint's settings were changed: the whole new settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookChanged {
    pub webhook_id: String,
    pub settings: WebhookSettings,
}

/// An admin paused deliveries to an endpoint; they wait, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPaused {
    pub webhook_id: String,
}

/// An admin resumed a paused or disabled endpoint: it catches up from
/// where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookResumed {
    pub webhook_id: String,
}

/// A new signing secret was made; the previous one keeps signing too
/// until `previous_valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecretRotated {
    pub webhook_id: String,
    pub previous_valid_until: String,
}

/// rollcall stopped delivering to an endpoint: it answered 410 Gone, or
/// failed without a break for too long. `reason` says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDisabled {
    pub webhook_id: String,
    pub reason: String,
}

/// An endpoint was deleted; nothing more is delivered to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeleted {
    pub webhook_id: String,
}

macro_rules! events {
    ($($name:ident = $version:literal),* $(,)?) => {
        /// Every fact rollcall records. The variant name is the stored event
        /// type; the number beside it in the table is its current schema
        /// version.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $($name($name),)*
        }

        impl Event {
            /// The stored event type: the variant's name.
            pub fn event_type(&self) -> &'static str {
                match self { $(Event::$name(_) => stringify!($name),)* }
            }

            /// The current schema version of this event's payload.
            pub fn schema_version(&self) -> u32 {
                match self { $(Event::$name(_) => $version,)* }
            }

            /// The current schema version of a stored type, if known.
            pub fn current_version(event_type: &str) -> Option<u32> {
                match event_type { $(stringify!($name) => Some($version),)* _ => None }
            }

            fn payload_json(&self) -> Result<String, serde_json::Error> {
                match self { $(Event::$name(payload) => serde_json::to_string(payload),)* }
            }

            fn from_current_value(event_type: &str, payload: Value) -> Result<Event, serde_json::Error> {
                match event_type {
                    $(stringify!($name) => serde_json::from_value(payload).map(Event::$name),)*
                    _ => Err(serde::de::Error::custom("unknown event type")),
                }
            }

            fn from_current_str(event_type: &str, payload: &str) -> Result<Event, serde_json::Error> {
                match event_type {
                    $(stringify!($name) => serde_json::from_str(payload).map(Event::$name),)*
                    _ => Err(serde::de::Error::custom("unknown event type")),
                }
            }
        }
    };
}

events! {
    TenantCreated = 1,
    TokenIssued = 2,
    TokenRevoked = 1,
    ClientRegistered = 1,
    ClientRevoked = 1,
    UserCreated = 2,
    UserUpdated = 2,
    UserDeactivated = 1,
    UserReactivated = 1,
    UserDeleted = 1,
    GroupCreated = 1,
    GroupUpdated = 1,
    GroupRenamed = 1,
    GroupMembersAdded = 1,
    GroupMembersRemoved = 1,
    GroupDeleted = 1,
    AttributeMappingChanged = 1,
    RoleBindingChanged = 1,
    ScheduleChanged = 1,
    MemberJoined = 2,
    MemberUpdated = 2,
    MemberRolesChanged = 1,
    MemberDisabled = 1,
    MemberEnabled = 1,
    MemberLeft = 1,
    MemberRestored = 2,
    MemberPurged = 1,
    MemberAppPropertiesChanged = 2,
    MemberChangeDeferred = 2,
    SubjectErased = 1,
    SyncStarted = 1,
    SyncBatchApplied = 1,
    SyncCompleted = 1,
    SyncFailed = 1,
    SyncDecided = 1,
    WebhookCreated = 1,
    WebhookChanged = 1,
    WebhookPaused = 1,
    WebhookResumed = 1,
    WebhookSecretRotated = 1,
    WebhookDisabled = 1,
    WebhookDeleted = 1,
}

/// The fields of each event type that hold personal values, as paths
/// into its payload (`change.body`: the member `body` of the object
/// `change`), and the schema version from which the log stores them
/// sealed (`crate::seal`). That version differs from the one before it in
/// form only. Everything else stays in clear: ids, types, times, roles,
/// statuses, which group: the facts an auditor reads after an erasure.
const PERSONAL: &[(&str, u32, &[&str])] = &[
    ("UserCreated", 2, &["document"]),
    ("UserUpdated", 2, &["change.body", "change.operations", "document"]),
    ("MemberJoined", 2, &["external_id", "user_name", "properties"]),
    ("MemberUpdated", 2, &["changes", "user_name", "external_id"]),
    ("MemberRestored", 2, &["user_name"]),
    ("MemberAppPropertiesChanged", 2, &["changes"]),
    ("MemberChangeDeferred", 2, &["detail"]),
];

/// What a personal value reads as once its key is destroyed.
pub const ERASED: &str = "[erased]";

fn personal(event_type: &str) -> Option<(u32, &'static [&'static str])> {
    PERSONAL.iter().find(|(name, ..)| *name == event_type).map(|(_, from, fields)| (*from, *fields))
}

/// The field as the associated data names it.
fn payload_field(path: &str) -> String {
    format!("payload.{path}")
}

/// `text`, a JSON object, with each member at one of `paths` (under
/// `prefix`; `a.b` is member `b` of the object `a`) replaced by what
/// `replace` makes of its JSON text; null members stay null. Works on the
/// text: the members are borrowed as they stand, nothing is parsed into a
/// tree. Members come out in name order.
fn replace_members(
    text: &str,
    paths: &[&str],
    prefix: &str,
    replace: &mut dyn FnMut(&str, &str) -> Result<String, SealError>,
) -> Result<String, SealError> {
    // Names borrowed from `text`: a payload's names are its fields' names,
    // plain words that JSON never escapes.
    let members: std::collections::BTreeMap<&str, &serde_json::value::RawValue> =
        serde_json::from_str(text)
            .map_err(|_| SealError::Malformed("a payload is not an object"))?;
    let mut out = String::with_capacity(text.len() + 96);
    out.push('{');
    for (index, (name, raw)) in members.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let quoted = serde_json::to_string(name).map_err(|_| SealError::Malformed("a name"))?;
        out.push_str(&quoted);
        out.push(':');
        let path = if prefix.is_empty() { (*name).to_owned() } else { format!("{prefix}.{name}") };
        let raw = raw.get();
        if raw == "null" {
            out.push_str(raw);
        } else if paths.contains(&path.as_str()) {
            out.push_str(&replace(&path, raw)?);
        } else if raw.starts_with('{')
            && paths.iter().any(|wanted| {
                wanted.strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('.'))
            })
        {
            out.push_str(&replace_members(raw, paths, &path, replace)?);
        } else {
            out.push_str(raw);
        }
    }
    out.push('}');
    Ok(out)
}

/// Whether a user's document is what an erased one reads as.
pub fn is_erased_document(document: &ScimDocument) -> bool {
    document.len() == 1 && document.get("userName").and_then(Value::as_str) == Some(ERASED)
}

/// What an erased field reads as: a value of the field's own type, so
/// the event still decodes and folds.
fn erased_value(path: &str) -> Value {
    match path {
        "document" => serde_json::json!({ "userName": ERASED }),
        "properties" | "changes" => Value::Object(serde_json::Map::new()),
        "external_id" => Value::Null,
        _ => Value::String(ERASED.to_owned()),
    }
}

/// The person whose values an event holds: its personal fields are sealed
/// with that subject's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'e> {
    /// A SCIM user, by id: the subject itself.
    User(&'e str),
    /// A member, by id: sealed with the key of the user behind it.
    Member(&'e str),
}

/// How to open the sealed values of one stored event.
#[derive(Clone, Copy)]
pub struct Opener<'a> {
    pub keys: &'a dyn Keyring,
    pub tenant: &'a str,
    pub stream: &'a str,
    /// The event's version in its stream.
    pub version: u64,
}

impl std::fmt::Debug for Opener<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Opener")
            .field("tenant", &self.tenant)
            .field("stream", &self.stream)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Event {
    /// The subject whose personal values this event holds, if any.
    pub fn subject(&self) -> Option<Subject<'_>> {
        match self {
            Event::UserCreated(UserCreated { user_id, .. })
            | Event::UserUpdated(UserUpdated { user_id, .. })
            | Event::MemberJoined(MemberJoined { user_id, .. })
            | Event::MemberRestored(MemberRestored { user_id, .. })
            | Event::MemberChangeDeferred(MemberChangeDeferred { user_id, .. }) => {
                Some(Subject::User(user_id))
            }
            Event::MemberUpdated(MemberUpdated { member_id, .. })
            | Event::MemberAppPropertiesChanged(MemberAppPropertiesChanged { member_id, .. }) => {
                Some(Subject::Member(member_id))
            }
            _ => None,
        }
    }

    /// The bytes the log stores for this event, every value in clear: the
    /// form of events recorded before sealing (a type with personal
    /// fields gets the version before its sealed one). The application
    /// records through [`Event::encode_sealed`].
    pub fn encode(&self) -> NewEvent {
        let schema_version = match personal(self.event_type()) {
            Some((sealed_from, _)) => sealed_from - 1,
            None => self.schema_version(),
        };
        NewEvent {
            event_type: self.event_type().to_owned(),
            schema_version,
            // Payload structs hold only strings, numbers, options and enums:
            // serialising them cannot fail, but the fallback keeps a bug
            // visible instead of panicking the writer.
            payload: self.payload_json().unwrap_or_else(|error| {
                serde_json::json!({ "encodeError": error.to_string() }).to_string()
            }),
        }
    }

    /// The bytes the log stores for this event as the `version`th of
    /// `stream`, its personal values (if any) sealed under `key` and bound
    /// to that place.
    pub fn encode_sealed(
        &self,
        key: &SubjectKey,
        tenant: &str,
        stream: &str,
        version: u64,
    ) -> Result<NewEvent, SealError> {
        let Some((sealed_from, fields)) = personal(self.event_type()) else {
            return Ok(self.encode());
        };
        let clear = self.payload_json().map_err(|_| SealError::Malformed("unencodable"))?;
        // Each personal member's JSON text, as serialised, is sealed where
        // it stands: no tree of the document is built.
        let payload = replace_members(&clear, fields, "", &mut |path, raw| {
            let field_name = payload_field(path);
            let binding = Binding { tenant, stream, version, field: &field_name };
            seal::seal_text(key, binding, raw)
        })?;
        Ok(NewEvent {
            event_type: self.event_type().to_owned(),
            schema_version: sealed_from,
            payload,
        })
    }

    /// The payload text with its sealed members opened (an erased one as
    /// its [`erased_value`]).
    fn opened_text(
        fields: &[&str],
        payload: &str,
        opener: Opener<'_>,
    ) -> Result<String, SealError> {
        replace_members(payload, fields, "", &mut |path, raw| {
            let field_name = payload_field(path);
            let binding = Binding {
                tenant: opener.tenant,
                stream: opener.stream,
                version: opener.version,
                field: &field_name,
            };
            match seal::open_text(opener.keys, binding, raw)? {
                Some(plaintext) => Ok(plaintext),
                None => Ok(erased_value(path).to_string()),
            }
        })
    }

    /// A stored payload as JSON, its sealed values opened (an erased one as
    /// the value [`ERASED`] stands for), for readers that show the payload
    /// itself rather than the typed event: the history, the ledger.
    pub fn open_payload(
        event_type: &str,
        schema_version: u32,
        payload: &str,
        opener: Opener<'_>,
    ) -> Result<Value, DecodeError> {
        let opened = match personal(event_type).filter(|(from, _)| schema_version >= *from) {
            Some((_, fields)) => {
                Some(Event::opened_text(fields, payload, opener).map_err(|source| {
                    DecodeError::Sealed {
                        event_type: event_type.to_owned(),
                        schema_version,
                        source,
                    }
                })?)
            }
            None => None,
        };
        serde_json::from_str(opened.as_deref().unwrap_or(payload)).map_err(|error| {
            DecodeError::Payload {
                event_type: event_type.to_owned(),
                schema_version,
                message: error.to_string(),
            }
        })
    }

    /// Whether a stored payload of this type and version holds sealed values.
    pub fn is_sealed(event_type: &str, schema_version: u32) -> bool {
        personal(event_type).is_some_and(|(from, _)| schema_version >= from)
    }

    /// Reads a stored payload, upcasting it from an older schema version.
    /// `recorded_at` is the event's envelope time, which some upcasts need.
    /// A payload with sealed values fails to decode here: see
    /// [`Event::decode_opened`].
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &str,
        recorded_at: &str,
    ) -> Result<Event, DecodeError> {
        Event::decode_opened(event_type, schema_version, payload, recorded_at, None)
    }

    /// [`Event::decode`], opening sealed personal values with `opener`.
    pub fn decode_opened(
        event_type: &str,
        schema_version: u32,
        payload: &str,
        recorded_at: &str,
        opener: Option<Opener<'_>>,
    ) -> Result<Event, DecodeError> {
        let known = Event::current_version(event_type)
            .ok_or_else(|| DecodeError::UnknownType { event_type: event_type.to_owned() })?;
        let payload_error = |message: String| DecodeError::Payload {
            event_type: event_type.to_owned(),
            schema_version,
            message,
        };
        if schema_version > known || schema_version == 0 {
            return Err(DecodeError::FutureVersion {
                event_type: event_type.to_owned(),
                schema_version,
                known,
            });
        }
        let sealed = personal(event_type);
        let in_clear_form = match sealed {
            // The version before the sealed one has the same shape.
            Some((sealed_from, _)) => schema_version + 1 == sealed_from && sealed_from == known,
            None => false,
        };
        if schema_version == known && sealed.is_none() || in_clear_form {
            // The common case skips the intermediate `Value`.
            return Event::from_current_str(event_type, payload)
                .map_err(|error| payload_error(error.to_string()));
        }
        let opened = match sealed.filter(|(from, _)| schema_version >= *from) {
            Some((_, fields)) => {
                let sealed_error = |source: SealError| DecodeError::Sealed {
                    event_type: event_type.to_owned(),
                    schema_version,
                    source,
                };
                let opener = opener.ok_or_else(|| sealed_error(SealError::NoKeyring))?;
                Some(Event::opened_text(fields, payload, opener).map_err(sealed_error)?)
            }
            None => None,
        };
        let payload = opened.as_deref().unwrap_or(payload);
        if schema_version == known {
            return Event::from_current_str(event_type, payload)
                .map_err(|error| payload_error(error.to_string()));
        }
        let mut value: Value =
            serde_json::from_str(payload).map_err(|error| payload_error(error.to_string()))?;
        let mut version = schema_version;
        while version < known {
            value = upcast(event_type, version, value, recorded_at).map_err(payload_error)?;
            version += 1;
        }
        Event::from_current_value(event_type, value)
            .map_err(|error| payload_error(error.to_string()))
    }
}

/// Turns the payload of `event_type` at schema version `from` into version
/// `from + 1`. One arm per historical change, kept forever.
fn upcast(event_type: &str, from: u32, payload: Value, recorded_at: &str) -> Result<Value, String> {
    match (event_type, from) {
        // The sealed version of a type with personal fields differs from
        // the one before only in how those are stored; opened, they are
        // the same payload.
        (event_type, from)
            if personal(event_type).is_some_and(|(sealed, _)| from + 1 == sealed) =>
        {
            Ok(payload)
        }
        // TokenIssued v1 stored a relative lifetime (`ttl_days`). A relative
        // lifetime means something only together with the envelope's
        // recorded-at, and every reader had to redo that sum; v2 stores the
        // absolute `expires_at` once.
        ("TokenIssued", 1) => {
            let Value::Object(mut fields) = payload else {
                return Err("TokenIssued v1 payload is not an object".to_owned());
            };
            let ttl_days = fields.remove("ttl_days");
            let expires_at = match ttl_days {
                None | Some(Value::Null) => Value::Null,
                Some(Value::Number(days)) => {
                    let days = days.as_i64().ok_or("ttl_days is not an integer")?;
                    let issued: jiff::Timestamp =
                        recorded_at.parse().map_err(|error| format!("recorded_at: {error}"))?;
                    // Checked all the way: a damaged row must decode to an
                    // error, never panic a replay.
                    let seconds = days.checked_mul(86_400).ok_or("ttl_days out of range")?;
                    let expires = issued
                        .checked_add(jiff::SignedDuration::from_secs(seconds))
                        .map_err(|error| format!("ttl_days out of range: {error}"))?;
                    Value::String(crate::time::format_millis(expires))
                }
                Some(other) => return Err(format!("ttl_days is not a number: {other}")),
            };
            fields.insert("expires_at".to_owned(), expires_at);
            Ok(Value::Object(fields))
        }
        _ => Err(format!("no upcaster from {event_type} v{from}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_events_round_trip() {
        let event = Event::TokenIssued(TokenIssued {
            token_id: "01J0000000000000000000000A".to_owned(),
            scope: TokenScope::Audit,
            secret_sha256: "ab".repeat(32),
            expires_at: Some("2027-01-01T00:00:00.000Z".to_owned()),
            label: Some("Entra".to_owned()),
            client_id: None,
        });
        let stored = event.encode();
        assert_eq!(stored.event_type, "TokenIssued");
        assert_eq!(stored.schema_version, 2);
        let decoded = Event::decode(
            &stored.event_type,
            stored.schema_version,
            &stored.payload,
            "2026-01-01T00:00:00.000Z",
        );
        assert_eq!(decoded, Ok(event));
    }

    #[test]
    fn token_issued_v1_is_upcast_to_an_absolute_expiry() {
        let v1 = r#"{"token_id":"T1","scope":"scim","secret_sha256":"00","ttl_days":90}"#;
        let decoded = Event::decode("TokenIssued", 1, v1, "2026-03-01T10:00:00.250Z");
        let Ok(Event::TokenIssued(issued)) = decoded else {
            unreachable!("expected a TokenIssued, got {decoded:?}");
        };
        assert_eq!(issued.expires_at.as_deref(), Some("2026-05-30T10:00:00.250Z"));
        assert_eq!(issued.scope, TokenScope::Scim);

        let v1_forever =
            r#"{"token_id":"T2","scope":"admin","secret_sha256":"00","ttl_days":null}"#;
        let decoded = Event::decode("TokenIssued", 1, v1_forever, "2026-03-01T10:00:00.000Z");
        assert!(matches!(decoded, Ok(Event::TokenIssued(TokenIssued { expires_at: None, .. }))));
    }

    #[test]
    fn an_absurd_v1_lifetime_is_a_decode_error_not_a_panic() {
        for days in ["1000000000000000", "-9223372036854775807", "1.5", "\"90\""] {
            let v1 = format!(
                r#"{{"token_id":"T","scope":"scim","secret_sha256":"00","ttl_days":{days}}}"#
            );
            let decoded = Event::decode("TokenIssued", 1, &v1, "2026-03-01T10:00:00.000Z");
            assert!(matches!(decoded, Err(DecodeError::Payload { .. })), "{days}: {decoded:?}");
        }
    }

    struct Keys(std::collections::HashMap<u64, seal::KeyState>);

    impl Keyring for Keys {
        fn key(&self, id: u64) -> Result<seal::KeyState, SealError> {
            self.0.get(&id).cloned().ok_or(SealError::MissingKey(id))
        }
    }

    fn keyring(state: Option<&std::sync::Arc<SubjectKey>>) -> Keys {
        let state = match state {
            Some(key) => seal::KeyState::Live(std::sync::Arc::clone(key)),
            None => seal::KeyState::Erased,
        };
        Keys([(5, state)].into_iter().collect())
    }

    fn personal_events() -> Vec<Event> {
        let document: ScimDocument = serde_json::from_value(serde_json::json!({
            "userName": "alice@example.com", "name": {"givenName": "Alice"}, "active": true
        }))
        .unwrap();
        vec![
            Event::UserCreated(UserCreated {
                user_id: "u1".to_owned(),
                document: document.clone(),
                key: Some(5),
            }),
            Event::UserUpdated(UserUpdated {
                user_id: "u1".to_owned(),
                change: ScimChange::Patch {
                    operations: serde_json::json!([{"op": "replace", "value": {"title": "CEO Alice"}}]),
                },
                document,
            }),
            Event::MemberJoined(MemberJoined {
                member_id: "m1".to_owned(),
                user_id: "u1".to_owned(),
                external_id: None,
                user_name: "alice@example.com".to_owned(),
                properties: serde_json::from_value(
                    serde_json::json!({"email": "alice@example.com"}),
                )
                .unwrap(),
                roles: vec!["admin".to_owned()],
            }),
        ]
    }

    #[test]
    fn personal_values_are_stored_sealed_and_read_back_opened() {
        let key = std::sync::Arc::new(SubjectKey::new(5, &[7u8; 32]).unwrap());
        let keys = keyring(Some(&key));
        for (index, event) in personal_events().into_iter().enumerate() {
            let version = index as u64 + 1;
            let stored = event.encode_sealed(&key, "t1", "user:u1", version).unwrap();
            assert_eq!(stored.schema_version, 2, "{}", stored.event_type);
            assert!(!stored.payload.contains("lice"), "{}", stored.payload);
            // The facts stay in clear.
            assert!(stored.payload.contains("\"u1\""), "{}", stored.payload);
            let opener = Opener { keys: &keys, tenant: "t1", stream: "user:u1", version };
            let decoded =
                Event::decode_opened(&stored.event_type, 2, &stored.payload, "", Some(opener));
            assert_eq!(decoded, Ok(event.clone()));
            // Moved to another event of the stream, it does not open.
            let moved = Opener { version: version + 1, ..opener };
            assert!(matches!(
                Event::decode_opened(&stored.event_type, 2, &stored.payload, "", Some(moved)),
                Err(DecodeError::Sealed { source: SealError::Tampered(5), .. })
            ));
            // Without a key store it does not decode at all.
            assert!(matches!(
                Event::decode(&stored.event_type, 2, &stored.payload, ""),
                Err(DecodeError::Sealed { source: SealError::NoKeyring, .. })
            ));
            // The clear form of earlier builds still decodes, without keys.
            let clear = event.encode();
            assert_eq!(clear.schema_version, 1);
            assert_eq!(Event::decode(&clear.event_type, 1, &clear.payload, ""), Ok(event));
        }
    }

    #[test]
    fn an_erased_subjects_values_read_as_erased_and_its_facts_stay() {
        let key = std::sync::Arc::new(SubjectKey::new(5, &[7u8; 32]).unwrap());
        let erased = keyring(None);
        let opener = Opener { keys: &erased, tenant: "t1", stream: "member:m1", version: 1 };
        let events = personal_events();
        let stored = events[2].encode_sealed(&key, "t1", "member:m1", 1).unwrap();
        let decoded =
            Event::decode_opened(&stored.event_type, 2, &stored.payload, "", Some(opener));
        let Ok(Event::MemberJoined(joined)) = decoded else {
            unreachable!("expected a MemberJoined, got {decoded:?}");
        };
        assert_eq!(joined.user_name, ERASED);
        assert!(joined.properties.is_empty());
        assert_eq!((joined.member_id.as_str(), joined.roles), ("m1", vec!["admin".to_owned()]));
        let opener = Opener { stream: "user:u1", ..opener };
        let stored = events[1].encode_sealed(&key, "t1", "user:u1", 1).unwrap();
        let decoded =
            Event::decode_opened(&stored.event_type, 2, &stored.payload, "", Some(opener));
        let Ok(Event::UserUpdated(updated)) = decoded else {
            unreachable!("expected a UserUpdated, got {decoded:?}");
        };
        // How it was changed stays; what it was changed to is gone.
        assert_eq!(updated.change, ScimChange::Patch { operations: Value::from(ERASED) });
        assert_eq!(updated.document.get("userName"), Some(&Value::from(ERASED)));
    }

    #[test]
    fn a_personal_value_in_clear_in_a_sealed_version_is_an_error() {
        let keys = keyring(None);
        let opener = Opener { keys: &keys, tenant: "t1", stream: "user:u1", version: 1 };
        let clear = personal_events()[0].encode();
        assert!(matches!(
            Event::decode_opened("UserCreated", 2, &clear.payload, "", Some(opener)),
            Err(DecodeError::Sealed { source: SealError::InClear, .. })
        ));
    }

    #[test]
    fn unknown_types_and_future_versions_are_typed_errors() {
        assert_eq!(
            Event::decode("Nope", 1, "{}", ""),
            Err(DecodeError::UnknownType { event_type: "Nope".to_owned() })
        );
        assert!(matches!(
            Event::decode("TenantCreated", 9, "{}", ""),
            Err(DecodeError::FutureVersion { known: 1, .. })
        ));
        assert!(matches!(
            Event::decode("TenantCreated", 1, "not json", ""),
            Err(DecodeError::Payload { .. })
        ));
    }
}
