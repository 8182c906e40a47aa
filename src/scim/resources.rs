//! Users and Groups: the SCIM handlers, and the commands behind them.
//!
//! Every write is one command on the log's writer. It reads the current
//! resource through the write transaction, checks existence, If-Match,
//! uniqueness and group members there (so two racing requests cannot both
//! pass), decides the business events, and records them with the expected
//! stream version. A request that fails any check appends nothing. Groups
//! keep their members apart from their document, so a membership change is
//! GroupMembersAdded/Removed, never a rewrite of the group.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use events::LogTransaction;
use events::db::Db;
use events::event::{
    GroupCreated, GroupDeleted, GroupMembersAdded, GroupMembersRemoved, GroupRenamed, GroupUpdated,
    MemberKind, MemberRef, ScimChange, UserCreated, UserDeactivated, UserDeleted, UserReactivated,
    UserUpdated,
};
use events::{CommandContext, Event, ExpectedVersion};
use projections::directory::filter::Filter;
use projections::directory::query::{self, QueryError};
use projections::directory::schema::ResourceKind;
use projections::directory::store::{self, MemberRow, ResourceRow};
use projections::functions::fold;
use serde_json::{Value, json};

use super::discovery::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, list_page};
use super::document::{Document, normalize};
use super::patch::{MemberStep, MembershipPatch};
use super::render::{self, BaseUrl, Related, Selector};
use crate::auth::Caller;
use crate::cache::{Answer, Generation};
use crate::error::{Error, InvalidKind, ScimError};
use crate::model::filter::parse_filter;
use crate::state::AppState;
use crate::store::record;

pub use crate::error::SCIM_CONTENT_TYPE as CONTENT_TYPE;

/// A SCIM response with its media type (and ETag, for one resource).
pub fn respond(status: StatusCode, body: &Value, etag: Option<&str>) -> Response {
    match encode(body) {
        Ok(bytes) => respond_bytes(status, bytes.into(), etag),
        Err(error) => ScimError(error).into_response(),
    }
}

/// A response body as bytes.
fn encode(body: &Value) -> Result<Vec<u8>, Error> {
    // Into one Vec, not through `axum::Json`'s `BytesMut` writer: each of
    // serde_json's many small writes went through three layers of `Write`,
    // which cost more than the rest of the serialising.
    serde_json::to_vec(body)
        .map_err(|error| Error::Internal(format!("serialising a response: {error}")))
}

/// A SCIM response whose body is already encoded.
fn respond_bytes(status: StatusCode, bytes: Bytes, etag: Option<&str>) -> Response {
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Some(etag) = etag.and_then(|etag| HeaderValue::from_str(etag).ok()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<BaseUrl, ScimError> {
        Ok(BaseUrl(format!("{}/scim/v2", state.config.origin(&parts.headers))))
    }
}

/// A SCIM request body: JSON, as application/scim+json or application/json
/// (or with no Content-Type, as some clients send). Anything else is 415,
/// malformed JSON is 400 invalidSyntax.
#[derive(Debug)]
pub struct ScimBody(pub Value);

impl FromRequest<AppState> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(request: Request, state: &AppState) -> Result<ScimBody, ScimError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let media_type = content_type
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            // Okta sometimes says text/json.
            let accepted = ["application/scim+json", "application/json", "text/json"]
                .iter()
                .any(|accepted| media_type.eq_ignore_ascii_case(accepted));
            if !accepted {
                return Err(ScimError(Error::UnsupportedMediaType {
                    message: format!(
                        "Content-Type {media_type} is not application/scim+json or application/json"
                    ),
                }));
            }
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError(Error::body_too_large(state.config.body_limit_bytes))
            } else {
                ScimError(Error::invalid_as(InvalidKind::Syntax, rejection.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes).map(ScimBody).map_err(|error| {
            ScimError(Error::invalid_as(
                InvalidKind::Syntax,
                format!("the body is not valid JSON: {error}"),
            ))
        })
    }
}

/// The `If-Match` precondition of a write, if any.
fn if_match(headers: &HeaderMap) -> Option<String> {
    // A precondition that cannot be read cannot hold: it must not vanish.
    headers.get(header::IF_MATCH).map(|value| value.to_str().unwrap_or("(unreadable)").to_owned())
}

fn check_if_match(if_match: Option<&str>, row: &ResourceRow) -> Result<(), Error> {
    let Some(wanted) = if_match else { return Ok(()) };
    let current = render::etag(row.version);
    // A strong form of our weak tag names the same version.
    let matches = |tag: &str| {
        let tag = tag.trim();
        tag == "*"
            || tag == current
            || tag.strip_prefix("W/").unwrap_or(tag) == current.trim_start_matches("W/")
    };
    if wanted.split(',').any(matches) {
        Ok(())
    } else {
        Err(Error::PreconditionFailed {
            message: format!("the resource is at version {current}, not {wanted}"),
        })
    }
}

fn kind_label(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "User",
        ResourceKind::Group => "Group",
    }
}

fn stream(kind: ResourceKind, id: &str) -> String {
    match kind {
        ResourceKind::User => format!("user:{id}"),
        ResourceKind::Group => format!("group:{id}"),
    }
}

/// Replaces any `password` the identity provider sent with "<redacted>",
/// in a body or in PATCH operations, before it is recorded: the log is
/// immutable, and a secret in it could never be erased.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            // An operation whose path names a password carries it as value.
            let path_is_secret = fields.iter().any(|(key, value)| {
                key.eq_ignore_ascii_case("path")
                    && value.as_str().is_some_and(|path| {
                        // Any name in the path, however qualified or
                        // filtered; redacting too much is harmless here.
                        path.split([':', '.', '[', ']', ' '])
                            .any(|name| name.to_ascii_lowercase().starts_with("password"))
                    })
            });
            Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| {
                        let secret = super::document::is_secret_key(key)
                            || (path_is_secret && key.eq_ignore_ascii_case("value"));
                        let value = if secret { Value::from("<redacted>") } else { redact(value) };
                        (key.clone(), value)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Takes a Group document's members out of it, checking each exists in the
/// tenant (its type is what it is, whatever the client said).
///
/// `known` are the group's current members: their types are known, so only
/// new ids are looked up (a PATCH adding one member to a group of 100,000
/// makes one lookup, not 100,000).
fn take_members(
    tx: &dyn LogTransaction,
    tenant: &str,
    group_id: &str,
    document: &mut Document,
    known: &BTreeMap<String, MemberKind>,
) -> Result<Vec<MemberRef>, Error> {
    let Some(members) = document.remove("members") else { return Ok(Vec::new()) };
    let items = match members {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        single => vec![single],
    };
    // First the ids, in order and once each, with the type each claims.
    let mut seen = BTreeSet::new();
    let mut listed = Vec::new();
    for item in &items {
        let value = item.get("value").and_then(Value::as_str).ok_or_else(|| {
            Error::invalid("each member needs a value: the id of a User or Group")
        })?;
        if value == group_id {
            return Err(Error::invalid("a group cannot be a member of itself"));
        }
        if seen.insert(value) {
            let claimed = item.get("type").and_then(Value::as_str).unwrap_or("User");
            listed.push((value, claimed));
        }
    }
    // Then the types of the new ones, in one query for all of them.
    let unknown: Vec<&str> = listed
        .iter()
        .map(|(value, _)| *value)
        .filter(|value| !known.contains_key(*value))
        .collect();
    let found = if unknown.is_empty() {
        HashMap::new()
    } else {
        store::kinds_of(tx.db(), tenant, &unknown)?
    };
    Ok(listed
        .into_iter()
        .map(|(value, claimed)| {
            // RFC 7644 asks no referential integrity of member ids, and
            // strict clients expect an unknown one to be accepted: it is
            // kept as a reference (typed as the client said), matching no
            // one. A known id takes the type it really has.
            let kind = match (known.get(value), found.get(value)) {
                (Some(kind), _) => *kind,
                (None, Some(ResourceKind::User)) => MemberKind::User,
                (None, Some(ResourceKind::Group)) => MemberKind::Group,
                (None, None) if claimed.eq_ignore_ascii_case("group") => MemberKind::Group,
                (None, None) => MemberKind::User,
            };
            MemberRef { value: value.to_owned(), kind }
        })
        .collect())
}

fn check_unique(
    tx: &dyn LogTransaction,
    tenant: &str,
    kind: ResourceKind,
    document: &Document,
    own_id: Option<&str>,
) -> Result<(), Error> {
    let name = store::unique_name(kind, document);
    if let Some(existing) = store::id_by_name(tx.db(), tenant, kind, name)?
        && Some(existing.as_str()) != own_id
    {
        let attribute = match kind {
            ResourceKind::User => "userName",
            ResourceKind::Group => "displayName",
        };
        return Err(Error::Duplicate {
            message: format!("{attribute} {name:?} is already taken in this tenant"),
        });
    }
    Ok(())
}

/// Creates a resource; returns it as the directory now holds it, with its
/// members, so the answer needs no read back (and no second transaction).
fn create(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    kind: ResourceKind,
    mut document: Document,
    context: &CommandContext,
) -> Result<(ResourceRow, Related), Error> {
    check_unique(tx, tenant, kind, &document, None)?;
    let id = ulid::Ulid::generate().to_string().to_ascii_lowercase();
    let event = match kind {
        ResourceKind::User => Event::UserCreated(UserCreated {
            user_id: id.clone(),
            document,
            key: Some(crate::store::fresh_subject_key(tx)?),
        }),
        ResourceKind::Group => {
            let members = take_members(tx, tenant, &id, &mut document, &BTreeMap::new())?;
            Event::GroupCreated(GroupCreated { group_id: id.clone(), document, members })
        }
    };
    let events = [event];
    let recorded =
        record(tx, tenant, &stream(kind, &id), ExpectedVersion::NoStream, &events, context)?;
    let [event] = events;
    let (document, related) = match event {
        // A new user is in no group: no group can name an id not yet made.
        Event::UserCreated(UserCreated { document, .. }) => (document, Related::default()),
        Event::GroupCreated(GroupCreated { document, mut members, .. }) => {
            // In the order `store::members` reads them back.
            members.sort_by(|a, b| a.value.cmp(&b.value));
            let members = members
                .into_iter()
                .map(|member| MemberRow {
                    member_id: member.value,
                    kind: member.kind,
                    display: None,
                })
                .collect();
            (document, Related { members: Some(members), groups: Vec::new() })
        }
        _ => return Err(Error::Internal("create recorded an unexpected event".to_owned())),
    };
    let recorded =
        recorded.first().ok_or_else(|| Error::Internal("create recorded no event".to_owned()))?;
    Ok((store::created_row(recorded, kind, &id, document), related))
}

fn current(
    tx: &dyn LogTransaction,
    tenant: &str,
    kind: ResourceKind,
    id: &str,
) -> Result<ResourceRow, Error> {
    store::get(tx.db(), tenant, kind, id)?
        .ok_or_else(|| Error::not_found(format!("{} {id}", kind_label(kind))))
}

fn is_active(document: &Document) -> bool {
    document.get("active").and_then(Value::as_bool).unwrap_or(true)
}

/// Moves a resource to `document` (for a Group, members included), with the
/// events that say what changed. No change, no event.
fn change(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    row: ResourceRow,
    mut document: Document,
    change: ScimChange,
    context: &CommandContext,
) -> Result<ResourceRow, Error> {
    let kind = row.kind;
    let id = row.id.as_str();
    let mut events = Vec::new();
    check_rename(tx, tenant, &row, &document)?;
    match kind {
        ResourceKind::User => {
            if document != row.document {
                let (was, is) = (is_active(&row.document), is_active(&document));
                events.push(Event::UserUpdated(UserUpdated {
                    user_id: id.to_owned(),
                    change,
                    document,
                }));
                if was && !is {
                    events.push(Event::UserDeactivated(UserDeactivated { user_id: id.to_owned() }));
                } else if !was && is {
                    events.push(Event::UserReactivated(UserReactivated { user_id: id.to_owned() }));
                }
            }
        }
        ResourceKind::Group => {
            let before: BTreeMap<String, MemberKind> = store::members(tx.db(), tenant, id)?
                .into_iter()
                .map(|member| (member.member_id, member.kind))
                .collect();
            let members = take_members(tx, tenant, id, &mut document, &before)?;
            let after: BTreeSet<String> =
                members.iter().map(|member| member.value.clone()).collect();
            let added: Vec<MemberRef> =
                members.into_iter().filter(|member| !before.contains_key(&member.value)).collect();
            let removed: Vec<String> =
                before.into_keys().filter(|member| !after.contains(member)).collect();
            events = group_events(&row, document, change, added, removed);
        }
    }
    record_change(tx, tenant, row, events, context)
}

/// A renamed resource must keep its name unique in the tenant.
fn check_rename(
    tx: &dyn LogTransaction,
    tenant: &str,
    row: &ResourceRow,
    document: &Document,
) -> Result<(), Error> {
    let kind = row.kind;
    if fold(store::unique_name(kind, document)) != fold(store::unique_name(kind, &row.document)) {
        check_unique(tx, tenant, kind, document, Some(&row.id))?;
    }
    Ok(())
}

/// The events of a change to a Group: its document (and name), then the
/// members it gained and lost.
fn group_events(
    row: &ResourceRow,
    document: Document,
    change: ScimChange,
    added: Vec<MemberRef>,
    removed: Vec<String>,
) -> Vec<Event> {
    let id = row.id.as_str();
    let mut events = Vec::new();
    if document != row.document {
        let (was, is) = (
            store::unique_name(ResourceKind::Group, &row.document),
            store::unique_name(ResourceKind::Group, &document),
        );
        let renamed = (was != is).then(|| is.to_owned());
        events.push(Event::GroupUpdated(GroupUpdated {
            group_id: id.to_owned(),
            change,
            document,
        }));
        if let Some(display_name) = renamed {
            events
                .push(Event::GroupRenamed(GroupRenamed { group_id: id.to_owned(), display_name }));
        }
    }
    if !added.is_empty() {
        events.push(Event::GroupMembersAdded(GroupMembersAdded {
            group_id: id.to_owned(),
            members: added,
        }));
    }
    if !removed.is_empty() {
        events.push(Event::GroupMembersRemoved(GroupMembersRemoved {
            group_id: id.to_owned(),
            member_ids: removed,
        }));
    }
    events
}

/// Records a change's events in the resource's stream (no events, no
/// write); returns the resource as the directory now holds it.
fn record_change(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    row: ResourceRow,
    events: Vec<Event>,
    context: &CommandContext,
) -> Result<ResourceRow, Error> {
    if events.is_empty() {
        return Ok(row);
    }
    let expected = ExpectedVersion::Exact(row.version);
    let recorded = record(tx, tenant, &stream(row.kind, &row.id), expected, &events, context)?;
    let Some(last) = recorded.last() else { return Ok(row) };
    let document = events.into_iter().find_map(|event| match event {
        Event::UserUpdated(UserUpdated { document, .. })
        | Event::GroupUpdated(GroupUpdated { document, .. }) => Some(document),
        _ => None,
    });
    Ok(match document {
        Some(document) => store::updated_row(row, last, document),
        None => {
            let document = row.document.clone();
            store::updated_row(row, last, document)
        }
    })
}

/// Group PATCHes this process has applied by id ([`patch_members`]), not
/// through the whole member list: the two give the same answers by design,
/// so this count is how an operator (or a test) sees which one ran.
pub static GROUP_PATCHES_BY_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A Group PATCH that adds and removes members by id (see
/// `patch::membership_patch`), applied one id at a time against the
/// membership table: adding one member to a group of 100,000 read all
/// 100,000 on the writer first (400 ms) before this.
/// `document` is the group's document with the request's other operations
/// applied.
fn patch_members(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    row: ResourceRow,
    document: Document,
    body: &Value,
    plan: MembershipPatch,
    context: &CommandContext,
) -> Result<ResourceRow, Error> {
    let group = ResourceKind::Group;
    check_rename(tx, tenant, &row, &document)?;
    // Net effect, in request order: new members, and current ones that go.
    let mut added: Vec<Option<MemberRef>> = Vec::new();
    let mut added_at: HashMap<String, usize> = HashMap::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    for step in plan.steps {
        match step {
            MemberStep::Add(items) => {
                // Through `normalize` and `take_members`, as a whole-list
                // PATCH checks its members.
                let mut probe = Document::new();
                probe.insert(
                    "displayName".to_owned(),
                    Value::from(store::unique_name(group, &document)),
                );
                probe.insert("members".to_owned(), Value::Array(items));
                let mut probe = normalize(group, &Value::Object(probe))?;
                let listed = take_members(tx, tenant, &row.id, &mut probe, &BTreeMap::new())?;
                let ids: Vec<&str> = listed.iter().map(|member| member.value.as_str()).collect();
                let current = store::members_among(tx.db(), tenant, &row.id, &ids)?;
                for member in listed {
                    let kept = removed.remove(&member.value);
                    if !kept
                        && !current.contains(&member.value)
                        && !added_at.contains_key(&member.value)
                    {
                        added_at.insert(member.value.clone(), added.len());
                        added.push(Some(member));
                    }
                }
            }
            MemberStep::Remove(ids) => {
                let listed: Vec<&str> = ids.iter().map(String::as_str).collect();
                let current = store::members_among(tx.db(), tenant, &row.id, &listed)?;
                for id in ids {
                    if let Some(at) = added_at.remove(&id) {
                        if let Some(slot) = added.get_mut(at) {
                            *slot = None;
                        }
                    } else if current.contains(&id) {
                        removed.insert(id);
                    }
                }
            }
        }
    }
    let operations = super::patch::operations(body).cloned().unwrap_or(Value::Null);
    let change = ScimChange::Patch { operations: redact(&operations) };
    let added = added.into_iter().flatten().collect();
    let events = group_events(&row, document, change, added, removed.into_iter().collect());
    record_change(tx, tenant, row, events, context)
}

/// One existing resource of one tenant, as a write names it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub tenant: &'a str,
    pub kind: ResourceKind,
    pub id: &'a str,
}

/// What a PUT or PATCH asks: a replacement (already normalised, with the
/// body it came from), or a PATCH request body.
#[derive(Debug)]
pub(super) enum Edit {
    Replace(Document, Value),
    Patch(Value),
}

/// Creates a resource from a request body; returns it as written.
pub(super) fn create_from(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    kind: ResourceKind,
    body: &Value,
    context: &CommandContext,
) -> Result<ResourceRow, Error> {
    Ok(create(tx, tenant, kind, normalize(kind, body)?, context)?.0)
}

/// Applies a PUT or PATCH to an existing resource, under its If-Match.
pub(super) fn update(
    tx: &mut dyn LogTransaction,
    Target { tenant, kind, id }: Target<'_>,
    precondition: Option<&str>,
    edit: Edit,
    context: &CommandContext,
) -> Result<ResourceRow, Error> {
    let row = current(tx, tenant, kind, id)?;
    check_if_match(precondition, &row)?;
    let (document, recorded) = match edit {
        Edit::Replace(document, body) => (document, ScimChange::Put { body: redact(&body) }),
        Edit::Patch(body) => {
            if kind == ResourceKind::Group
                && let Some(plan) = super::patch::membership_patch(&body)?
            {
                let skipped = &plan.member_operations;
                let patched =
                    super::patch::apply_patch_except(kind, &row.document, &body, skipped)?;
                let document = normalize(kind, &Value::Object(patched))?;
                // Members reached the document some way the split did
                // not foresee, or the group adds itself: the whole-list
                // path decides (nothing is written yet).
                if !document.contains_key("members") && !plan.adds(&row.id) {
                    GROUP_PATCHES_BY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return patch_members(tx, tenant, row, document, &body, plan, context);
                }
            }
            let before = with_members(tx, tenant, &row)?;
            let patched = super::patch::apply_patch(kind, &before, &body)?;
            let document = normalize(kind, &Value::Object(patched))?;
            let operations = super::patch::operations(&body).cloned().unwrap_or(Value::Null);
            (document, ScimChange::Patch { operations: redact(&operations) })
        }
    };
    change(tx, tenant, row, document, recorded, context)
}

/// Deletes a resource, under its If-Match.
pub(super) fn delete(
    tx: &mut dyn LogTransaction,
    Target { tenant, kind, id }: Target<'_>,
    precondition: Option<&str>,
    context: &CommandContext,
) -> Result<(), Error> {
    let row = current(tx, tenant, kind, id)?;
    check_if_match(precondition, &row)?;
    // Every group holding it loses it first, each in its own stream, so
    // each group's history and version say so.
    for (group_id, _) in store::groups_of(tx.db(), tenant, id)? {
        let group = current(tx, tenant, ResourceKind::Group, &group_id)?;
        let removed = Event::GroupMembersRemoved(GroupMembersRemoved {
            group_id: group_id.clone(),
            member_ids: vec![id.to_owned()],
        });
        let group_stream = stream(ResourceKind::Group, &group_id);
        let expected = ExpectedVersion::Exact(group.version);
        record(tx, tenant, &group_stream, expected, &[removed], context)?;
    }
    let event = match kind {
        ResourceKind::User => Event::UserDeleted(UserDeleted { user_id: id.to_owned() }),
        ResourceKind::Group => Event::GroupDeleted(GroupDeleted { group_id: id.to_owned() }),
    };
    record(tx, tenant, &stream(kind, id), ExpectedVersion::Exact(row.version), &[event], context)?;
    Ok(())
}

/// A Group's document with its members, as PATCH and PUT see it.
fn with_members(
    tx: &dyn LogTransaction,
    tenant: &str,
    row: &ResourceRow,
) -> Result<Document, Error> {
    let mut document = row.document.clone();
    if row.kind == ResourceKind::Group {
        let members: Vec<Value> = store::members(tx.db(), tenant, &row.id)?
            .into_iter()
            .map(|member| json!({"value": member.member_id, "type": member.kind.as_str()}))
            .collect();
        if !members.is_empty() {
            document.insert("members".to_owned(), Value::Array(members));
        }
    }
    Ok(document)
}

/// How a listing is asked for: from the query string of a GET, or the body
/// of a POST .search.
#[derive(Debug, Default)]
struct ListRequest {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    attributes: Vec<Selector>,
    excluded: Vec<Selector>,
    sort_by: Option<String>,
    sort_order: Option<String>,
}

fn number(name: &str, text: &str) -> Result<i64, Error> {
    text.trim()
        .parse()
        .map_err(|_| Error::invalid(format!("{name} must be an integer, not {text:?}")))
}

impl ListRequest {
    fn from_query(pairs: &[(String, String)]) -> Result<ListRequest, Error> {
        let mut request = ListRequest::default();
        for (key, value) in pairs {
            match key.to_ascii_lowercase().as_str() {
                "filter" => request.filter = Some(value.clone()),
                "startindex" => request.start_index = Some(number("startIndex", value)?),
                "count" => request.count = Some(number("count", value)?),
                "attributes" => request.attributes = render::selectors(value)?,
                "excludedattributes" => request.excluded = render::selectors(value)?,
                "sortby" => request.sort_by = Some(value.clone()),
                "sortorder" => request.sort_order = Some(value.clone()),
                _ => {}
            }
        }
        Ok(request)
    }

    fn from_search(body: &Value) -> Result<ListRequest, Error> {
        let Value::Object(fields) = body else {
            return Err(Error::invalid_as(
                InvalidKind::Syntax,
                "a search request must be a JSON object",
            ));
        };
        let mut request = ListRequest::default();
        let list = |value: &Value| -> Result<Vec<Selector>, Error> {
            match value {
                Value::String(text) => render::selectors(text),
                Value::Array(items) => render::selectors(
                    &items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                ),
                _ => Ok(Vec::new()),
            }
        };
        for (key, value) in fields {
            let integer = |name: &str| match value {
                Value::Number(number) => number
                    .as_i64()
                    .ok_or_else(|| Error::invalid(format!("{name} must be an integer"))),
                Value::String(text) => self::number(name, text),
                _ => Err(Error::invalid(format!("{name} must be an integer"))),
            };
            match key.to_ascii_lowercase().as_str() {
                "filter" => {
                    request.filter = Some(
                        value
                            .as_str()
                            .ok_or_else(|| {
                                Error::invalid_as(InvalidKind::Filter, "filter must be a string")
                            })?
                            .to_owned(),
                    );
                }
                "startindex" => request.start_index = Some(integer("startIndex")?),
                "count" => request.count = Some(integer("count")?),
                "attributes" => request.attributes = list(value)?,
                "excludedattributes" => request.excluded = list(value)?,
                "sortby" => request.sort_by = value.as_str().map(str::to_owned),
                "sortorder" => request.sort_order = value.as_str().map(str::to_owned),
                _ => {}
            }
        }
        Ok(request)
    }

    /// The ordering asked for: `sortBy` any attribute path, `sortOrder`
    /// ascending (the default) or descending.
    fn sort(&self) -> Result<Option<query::Sort>, Error> {
        let Some(sort_by) = self.sort_by.as_deref().map(str::trim).filter(|text| !text.is_empty())
        else {
            return Ok(None);
        };
        let path = crate::model::filter::attribute_path(sort_by)
            .map_err(|message| Error::invalid(format!("sortBy: {message}")))?;
        let descending = match self.sort_order.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(order) if order.eq_ignore_ascii_case("ascending") => false,
            Some(order) if order.eq_ignore_ascii_case("descending") => true,
            Some(order) => {
                return Err(Error::invalid(format!(
                    "sortOrder must be ascending or descending, not {order:?}"
                )));
            }
        };
        Ok(Some(query::Sort { path, descending }))
    }

    /// startIndex (1-based, below 1 read as 1) and count (negative read as
    /// 0, capped at the advertised maximum).
    fn window(&self) -> (u64, u64) {
        let start_index = u64::try_from(self.start_index.unwrap_or(1)).unwrap_or(1).max(1);
        let count = self
            .count
            .map_or(PAGE_SIZE_DEFAULT, |count| u64::try_from(count).unwrap_or(0))
            .min(PAGE_SIZE_MAX);
        (start_index, count)
    }
}

fn related(
    connection: &dyn Db,
    tenant: &str,
    row: &ResourceRow,
    load_members: bool,
) -> Result<Related, Error> {
    Ok(match row.kind {
        ResourceKind::User => {
            Related { members: None, groups: store::groups_of(connection, tenant, &row.id)? }
        }
        ResourceKind::Group if load_members => Related {
            members: Some(store::members(connection, tenant, &row.id)?),
            groups: Vec::new(),
        },
        ResourceKind::Group => Related::default(),
    })
}

fn shown(
    connection: &dyn Db,
    base: &BaseUrl,
    tenant: &str,
    row: ResourceRow,
    attributes: &[Selector],
    excluded: &[Selector],
) -> Result<Value, Error> {
    let load_members = render::wants_members(attributes, excluded);
    let related = related(connection, tenant, &row, load_members)?;
    let mut resource = render::resource(base, row, &related);
    if !attributes.is_empty() {
        render::keep_only(&mut resource, attributes);
    }
    render::exclude(&mut resource, excluded);
    Ok(resource)
}

fn read_one(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    id: &str,
) -> Result<ResourceRow, Error> {
    store::get(connection, tenant, kind, id)?
        .ok_or_else(|| Error::not_found(format!("{} {id}", kind_label(kind))))
}

fn invalid_filter(error: QueryError) -> Error {
    match error {
        QueryError::InvalidFilter(message) => Error::invalid_as(InvalidKind::Filter, message),
        QueryError::Storage(error) => error.into(),
    }
}

/// One page over `kinds`, in order (the root search covers both).
fn list(
    state: &AppState,
    base: &BaseUrl,
    tenant: &str,
    kinds: &[ResourceKind],
    filter: Option<&Filter>,
    request: &ListRequest,
) -> Result<Value, Error> {
    let sort = request.sort()?;
    let (start_index, count) = request.window();
    // One snapshot: the page, its total and each resource's relations
    // agree with each other however writes interleave.
    state.store.snapshot(|connection| {
        let mut offset = start_index - 1;
        let mut remaining = count;
        let mut total = 0;
        let mut rows = Vec::new();
        for kind in kinds {
            let page = query::search_sorted(
                connection,
                tenant,
                *kind,
                filter,
                sort.as_ref(),
                offset,
                remaining,
            )
            .map_err(invalid_filter)?;
            offset = offset.saturating_sub(page.total_results);
            remaining -= u64::try_from(page.resources.len()).unwrap_or(remaining).min(remaining);
            total += page.total_results;
            rows.extend(page.resources);
        }
        let items = rows
            .into_iter()
            .map(|row| shown(connection, base, tenant, row, &request.attributes, &request.excluded))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(list_page(total, start_index, items))
    })
}

pub async fn create_resource(
    kind: ResourceKind,
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let document = normalize(kind, &body)?;
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(redact(&body));
    let (row, related) = state
        .store
        .command(Some(&caller.principal.tenant_id.clone()), move |tx| {
            create(tx, &tenant, kind, document, &caller.context)
        })
        .await
        .map_err(Error::from)?;
    let (id, version) = (row.id.clone(), row.version);
    let resource = render::resource(&base, row, &related);
    let mut response = respond(StatusCode::CREATED, &resource, Some(&render::etag(version)));
    if let Ok(location) = HeaderValue::from_str(&base.resource(kind, &id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn get_resource(
    kind: ResourceKind,
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    id: String,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ScimError> {
    let Query(pairs) =
        query.map_err(|rejection| Error::invalid_as(InvalidKind::Syntax, rejection.body_text()))?;
    let request = ListRequest::from_query(&pairs)?;
    let tenant = &caller.principal.tenant_id;
    let answer =
        cached(&state, caller.generation, answer_key(tenant, kind, &base, &id, &pairs), || {
            let (version, resource) = state.store.snapshot(|connection| {
                let row = read_one(connection, tenant, kind, &id)?;
                let version = row.version;
                Ok((
                    version,
                    shown(connection, &base, tenant, row, &request.attributes, &request.excluded)?,
                ))
            })?;
            Ok(Answer::new(encode(&resource)?, Some(render::etag(version))))
        })?;
    Ok(respond_bytes(StatusCode::OK, answer.body, answer.etag.as_deref()))
}

/// What a read's answer is kept under: everything the answer depends on
/// besides the database (the tenant, the kind, the base URL its links
/// carry, the id or listing, the query's parameters in their order).
fn answer_key(
    tenant: &str,
    kind: impl std::fmt::Debug,
    base: &BaseUrl,
    target: &str,
    pairs: &[(String, String)],
) -> String {
    use std::fmt::Write as _;
    // Every part is length-prefixed: a separator byte alone would let a
    // value that decodes to that byte (`%00`) make two different queries
    // share one key, and one of them be served the other's answer.
    let mut key = String::with_capacity(64);
    let mut part = |text: &str| {
        let _ = write!(key, "{}:{text}", text.len());
    };
    part(tenant);
    part(&format!("{kind:?}"));
    part(&base.0);
    part(target);
    for (name, value) in pairs {
        part(name);
        part(value);
    }
    key
}

/// The answer kept under `key` at this request's generation, or `read`'s,
/// then kept (see `cache`). Errors are never kept.
fn cached(
    state: &AppState,
    generation: Option<Generation>,
    key: String,
    read: impl FnOnce() -> Result<Answer, Error>,
) -> Result<Answer, Error> {
    let Some(Generation(generation)) = generation else {
        return read();
    };
    if let Some(answer) = state.cache.answer(&key, generation) {
        return Ok(answer);
    }
    let answer = read()?;
    state.cache.keep_answer(key, generation, &answer);
    Ok(answer)
}

pub async fn list_resources(
    kinds: &'static [ResourceKind],
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ScimError> {
    let Query(pairs) =
        query.map_err(|rejection| Error::invalid_as(InvalidKind::Syntax, rejection.body_text()))?;
    let key = answer_key(&caller.principal.tenant_id, kinds, &base, "", &pairs);
    // An answer kept at this generation was checked and rendered from
    // these very parameters: nothing to parse or check again.
    if let Some(Generation(generation)) = caller.generation
        && let Some(answer) = state.cache.answer(&key, generation)
    {
        return Ok(respond_bytes(StatusCode::OK, answer.body, None));
    }
    let request = ListRequest::from_query(&pairs)?;
    list_off_the_runtime(state, base, caller, kinds, request, Some(key)).await
}

pub async fn search_resources(
    kinds: &'static [ResourceKind],
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let request = ListRequest::from_search(&body)?;
    list_off_the_runtime(state, base, caller, kinds, request, None).await
}

/// Runs a listing. One whose filter is answered by an index (an IdP's
/// matching lookup, by far the most frequent) runs right here, its answer
/// kept in the read cache under `key` (already probed); any other may read every resource
/// of the tenant, so it runs on the blocking pool, where it cannot hold up
/// the async workers that serve everybody else.
async fn list_off_the_runtime(
    state: AppState,
    base: BaseUrl,
    caller: Caller,
    kinds: &'static [ResourceKind],
    request: ListRequest,
    key: Option<String>,
) -> Result<Response, ScimError> {
    let tenant = caller.principal.tenant_id;
    let filter = match &request.filter {
        Some(text) => Some(
            parse_filter(text)
                .map_err(|error| Error::invalid_as(InvalidKind::Filter, error.to_string()))?,
        ),
        None => None,
    };
    let narrow = filter
        .as_ref()
        .is_some_and(|filter| kinds.iter().all(|kind| query::is_narrow(*kind, filter)));
    if narrow && request.sort_by.is_none() {
        let body = encode(&list(&state, &base, &tenant, kinds, filter.as_ref(), &request)?)?;
        let body = match (key, caller.generation) {
            (Some(key), Some(Generation(generation))) => {
                let answer = Answer::new(body, None);
                state.cache.keep_answer(key, generation, &answer);
                answer.body
            }
            _ => body.into(),
        };
        return Ok(respond_bytes(StatusCode::OK, body, None));
    }
    // Admitted as a heavy read: a tenant's share of the connections, each
    // statement within the query budget.
    let heavy = state.heavy.clone();
    let budget = Some(heavy.budget);
    let owner = tenant.clone();
    let body = heavy
        .run(&owner, budget, move || list(&state, &base, &tenant, kinds, filter.as_ref(), &request))
        .await?;
    Ok(respond(StatusCode::OK, &body, None))
}

/// Which kind of write a PUT or PATCH is.
#[derive(Debug, Clone, Copy)]
pub enum Write {
    Replace,
    Patch,
}

/// A PUT or PATCH of one resource, as the router hands it over.
#[derive(Debug)]
pub struct Update {
    pub kind: ResourceKind,
    pub write: Write,
    pub id: String,
    pub headers: HeaderMap,
}

pub async fn update_resource(
    Update { kind, write, id, headers }: Update,
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let precondition = if_match(&headers);
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(redact(&body));
    // A replacement is checked before it queues for the writer.
    let edit = match write {
        Write::Replace => Edit::Replace(normalize(kind, &body)?, body),
        Write::Patch => Edit::Patch(body),
    };
    // The command answers with the user as it wrote it, and its groups
    // while their pages are at hand: no read back in a second transaction.
    let (row, groups) = {
        let lane = tenant.clone();
        let tenant = tenant.clone();
        state
            .store
            .command(Some(&lane), move |tx| {
                let target = Target { tenant: &tenant, kind, id: &id };
                let row = update(tx, target, precondition.as_deref(), edit, &caller.context)?;
                let groups = match kind {
                    ResourceKind::User => Some(store::groups_of(tx.db(), &tenant, &row.id)?),
                    ResourceKind::Group => None,
                };
                Ok::<_, Error>((row, groups))
            })
            .await
            .map_err(Error::from)?
    };
    let (version, resource) = match groups {
        Some(groups) => {
            (row.version, Some(render::resource(&base, row, &Related { members: None, groups })))
        }
        // A group is read back: its version and members from one snapshot,
        // so the ETag always describes the members shown.
        None => {
            let members_max = state.config.patch_response_members_max;
            state.store.snapshot(|connection| {
                let row = read_one(connection, &tenant, kind, &row.id)?;
                let version = row.version;
                if matches!(write, Write::Patch)
                    && store::has_more_members_than(connection, &tenant, &row.id, members_max)?
                {
                    return Ok((version, None));
                }
                Ok((version, Some(shown(connection, &base, &tenant, row, &[], &[])?)))
            })?
        }
    };
    let Some(resource) = resource else {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Ok(etag) = HeaderValue::from_str(&render::etag(version)) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        return Ok(response);
    };
    Ok(respond(StatusCode::OK, &resource, Some(&render::etag(version))))
}

pub async fn delete_resource(
    kind: ResourceKind,
    state: AppState,
    caller: Caller,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let precondition = if_match(&headers);
    let tenant = caller.principal.tenant_id.clone();
    state
        .store
        .command(Some(&caller.principal.tenant_id), move |tx| {
            let target = Target { tenant: &tenant, kind, id: &id };
            delete(tx, target, precondition.as_deref(), &caller.context)
        })
        .await
        .map_err(Error::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn queries_whose_bytes_join_alike_are_kept_apart() {
        let base = BaseUrl("http://127.0.0.1/scim/v2".into());
        let key =
            |list: &[(&str, &str)]| answer_key("t1", ResourceKind::User, &base, "", &pairs(list));
        // Joined with separator bytes, both of these read the same.
        let one = key(&[("attributes", "userName\u{0}excludedAttributes\u{1}emails")]);
        let two = key(&[("attributes", "userName"), ("excludedAttributes", "emails")]);
        assert_ne!(one, two);
        // So do a base URL and a target that trade a separator.
        let split = BaseUrl("http://b\u{0}x".into());
        assert_ne!(
            answer_key("t1", ResourceKind::User, &split, "y", &[]),
            answer_key("t1", ResourceKind::User, &BaseUrl("http://b".into()), "x\u{0}y", &[]),
        );
        assert_eq!(two, key(&[("attributes", "userName"), ("excludedAttributes", "emails")]));
    }
}
