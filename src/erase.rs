//! Erasure: forgetting a person while the log stays immutable
//! (crypto-shredding, issue 21; ARCHITECTURE.md "Erasure").
//!
//! One command decides and records `SubjectErased` (its fold takes the
//! person's values out of every projection); then, with that event
//! durable, [`finish`] destroys the person's data keys, drops the as-of
//! snapshots of the tenant and checkpoints the WALs, so nothing the
//! person said is readable in a file any more. The order is the crash
//! story: a process that dies after the event and before the keys leaves
//! an erasure that `Store::open` completes at the next open of the
//! database, and one that dies before the event leaves nothing done.
//!
//! This module owns that sequence and the checks before it. It never
//! writes a projection table except the request log's text (telemetry,
//! not folded), and never rewrites an event.

use std::collections::BTreeSet;

use events::db::{Db, OptionalExtension};
use events::event::{ERASED, SubjectErased};
use events::params;
use events::{CommandContext, Event, ExpectedVersion, LogTransaction, Pending};
use projections::members::{MemberRow, MemberStatus};
use serde_json::Value;

use crate::error::Error;
use crate::store::Store;

/// Whom to erase.
#[derive(Debug, Clone)]
pub enum Target {
    /// A member, by its id (the admin API and the console).
    Member(String),
    /// A SCIM user by its id, externalId or userName (the CLI), or a
    /// member by its id.
    User(String),
}

/// What an erasure did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// The SCIM user the erasure was about.
    pub user_id: String,
    pub member_id: Option<String>,
    /// Every SCIM user that stood behind the member.
    pub user_ids: Vec<String>,
    /// How many data keys were destroyed.
    pub keys_destroyed: usize,
    /// The log still holds some of this person's values in clear: events
    /// written before sealing (ARCHITECTURE.md, "Erasure").
    pub in_clear: bool,
    /// The position of the `SubjectErased` event.
    pub position: u64,
    pub erased_at: String,
    /// What is gone and what remains, in a sentence.
    pub message: String,
}

/// The erasure as decided inside the writer's transaction.
#[derive(Debug)]
pub struct Decided {
    erased: Erased,
    keys: Vec<u64>,
}

/// Decides and records the erasure of `target` in `tenant`. Refused (409)
/// while the identity provider still provisions the person (their SCIM
/// user is in the directory: the next push would bring them back) and
/// while their member is still active or disabled (it leaves first, by
/// Synchronize, so the application hears `member.left` before
/// `member.erased`); an erased person is refused as erased already.
/// Complete it with [`finish`] once the command has committed.
pub fn record(
    store: &Store,
    tenant: &str,
    target: Target,
    reason: Option<String>,
    context: CommandContext,
) -> Pending<Decided, Error> {
    let lane = tenant;
    let tenant = tenant.to_owned();
    store.command(Some(lane), move |tx| decide(tx, &tenant, &target, reason, &context))
}

/// Runs [`record`] and [`finish`] to the end (the CLI).
pub fn erase(
    store: &Store,
    tenant: &str,
    target: Target,
    reason: Option<String>,
    context: CommandContext,
) -> Result<Erased, Error> {
    let decided = record(store, tenant, target, reason, context).wait()?;
    finish(store, tenant, decided)
}

fn storage<E: std::fmt::Display + 'static>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |error| Error::from(events::LogError::storage(context, error))
}

fn decide(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    target: &Target,
    reason: Option<String>,
    context: &CommandContext,
) -> Result<Decided, Error> {
    if let Some(reason) = &reason
        && reason.chars().count() > 500
    {
        return Err(Error::invalid("a reason is at most 500 characters"));
    }
    let (user_id, member) = resolve(tx, tenant, target)?;
    let connection = tx.db();
    if let Some(at) = erased_at(connection, tenant, &user_id)? {
        return Err(Error::conflict(format!("user {user_id} was erased already, at {at}")));
    }
    let mut user_ids: BTreeSet<String> = BTreeSet::from([user_id.clone()]);
    if let Some(member) = &member {
        user_ids.insert(member.user_id.clone());
        user_ids.extend(users_of_member(connection, tenant, &member.member_id)?);
    }
    for user in &user_ids {
        if in_directory(connection, tenant, user)? {
            return Err(Error::conflict(format!(
                "user {user} is still provisioned by the identity provider: its next push would \
                 bring the person back. Unassign or delete the user there (a SCIM DELETE), \
                 synchronize, then erase"
            )));
        }
    }
    if let Some(member) = &member
        && matches!(member.status, MemberStatus::Active | MemberStatus::Disabled)
    {
        return Err(Error::conflict(format!(
            "member {} is still {}: its user was deleted, but Synchronize has not applied the \
             leave yet. Synchronize first, so the application hears member.left, then erase",
            member.member_id,
            member.status.as_str()
        )));
    }
    let keys_held = tx.keys().ok_or_else(|| Error::Internal("no key store".to_owned()))?;
    let keys_ring: &dyn events::seal::KeySource = &*keys_held;
    let mut keys = Vec::new();
    let mut in_clear = false;
    let mut values = BTreeSet::new();
    if let Some(member) = &member {
        values.insert(member.user_name.clone());
        values.extend(member.external_id.clone());
    }
    for user in &user_ids {
        match crate::store::key_id_of_user(tx, keys_ring, tenant, user)? {
            Some(key) => keys.push(key),
            None => in_clear = true,
        }
        for recorded in tx.read_stream(tenant, &format!("user:{user}"))? {
            match recorded.decode(keys_ring)? {
                Event::UserCreated(created) => personal_values(&created.document, &mut values),
                Event::UserUpdated(updated) => personal_values(&updated.document, &mut values),
                _ => {}
            }
        }
    }
    values.remove(ERASED);
    scrub_request_log(tx.db(), tenant, &values)?;
    let (stream, member_id) = match &member {
        Some(member) => (format!("member:{}", member.member_id), Some(member.member_id.clone())),
        None => (format!("user:{user_id}"), None),
    };
    let expected = match tx.stream_version(tenant, &stream)? {
        Some(version) => ExpectedVersion::Exact(version),
        None => ExpectedVersion::NoStream,
    };
    let event = SubjectErased {
        user_id: user_id.clone(),
        member_id: member_id.clone(),
        user_ids: user_ids.iter().cloned().collect(),
        keys: keys.clone(),
        in_clear,
        reason,
    };
    let recorded = crate::store::record(
        tx,
        tenant,
        &stream,
        expected,
        &[Event::SubjectErased(event)],
        context,
    )?;
    let last = recorded.last().ok_or_else(|| Error::Internal("nothing recorded".to_owned()))?;
    let message = if in_clear {
        "erased from every projection, report and snapshot; this person was recorded before \
         sealing, so the log still holds their earlier values in clear (it is never rewritten)"
    } else {
        "erased: the person's keys are destroyed, so their values in the log and its exports \
         no longer open (a backup made before keeps its own copy of the keys until it \
         expires); the facts (ids, times, roles, who asked) remain"
    };
    Ok(Decided {
        erased: Erased {
            user_id,
            member_id,
            user_ids: user_ids.into_iter().collect(),
            keys_destroyed: 0,
            in_clear,
            position: last.position,
            erased_at: last.recorded_at.clone(),
            message: message.to_owned(),
        },
        keys,
    })
}

/// The user and member `target` names. A name matches a member's userName
/// or externalId as the member directory holds them (the SCIM user is
/// gone by the time an erasure is allowed); a user in the directory is
/// found too, so the refusal can say why.
fn resolve(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    target: &Target,
) -> Result<(String, Option<MemberRow>), Error> {
    let connection = tx.db();
    let (text, by_member) = match target {
        Target::Member(id) => (id.as_str(), true),
        Target::User(text) => (text.as_str(), false),
    };
    if let Some(member) = projections::members::member(connection, tenant, text)? {
        return Ok((member.user_id.clone(), Some(member)));
    }
    if by_member {
        return Err(Error::not_found(format!("member {text}")));
    }
    let text = text.trim();
    if in_directory(connection, tenant, text)? {
        return Ok((text.to_owned(), member_by(connection, tenant, "user_id = ?2", text)?));
    }
    if let Some(member) = member_by(connection, tenant, "user_id = ?2", text)? {
        return Ok((text.to_owned(), Some(member)));
    }
    use projections::directory::schema::ResourceKind;
    let directory =
        projections::directory::store::id_by_name(connection, tenant, ResourceKind::User, text)?
            .or(projections::directory::store::ids_by_external_id(
                connection,
                tenant,
                ResourceKind::User,
                text,
            )?
            .into_iter()
            .next());
    if let Some(user_id) = directory {
        let member = member_by(connection, tenant, "user_id = ?2", &user_id)?;
        return Ok((user_id, member));
    }
    for condition in ["external_id = ?2", "user_name = ?2 COLLATE NOCASE"] {
        let found = members_by(connection, tenant, condition, text)?;
        match found.len() {
            0 => {}
            1 => {
                let member = found.into_iter().next();
                let user_id = member.as_ref().map(|member| member.user_id.clone());
                return Ok((user_id.unwrap_or_default(), member));
            }
            _ => {
                return Err(Error::conflict(format!(
                    "more than one member matches {text:?}: name the one to erase by its \
                     member id or SCIM user id"
                )));
            }
        }
    }
    // A user deleted before Synchronize ever made it a member: only its
    // id names it (its values are in the log alone, sealed).
    if !tx.read_stream(tenant, &format!("user:{text}"))?.is_empty() {
        return Ok((text.to_owned(), None));
    }
    Err(Error::not_found(format!("user or member {text:?}")))
}

fn member_by(
    connection: &dyn Db,
    tenant: &str,
    condition: &str,
    value: &str,
) -> Result<Option<MemberRow>, Error> {
    Ok(members_by(connection, tenant, condition, value)?.into_iter().next())
}

fn members_by(
    connection: &dyn Db,
    tenant: &str,
    condition: &str,
    value: &str,
) -> Result<Vec<MemberRow>, Error> {
    let ids: Vec<String> = connection
        .prepare_cached(&format!(
            "SELECT member_id FROM members WHERE tenant_id = ?1 AND {condition} LIMIT 2"
        ))
        .and_then(|mut statement| {
            statement.query_map(params![tenant, value], |row| row.get(0))?.collect()
        })
        .map_err(storage("finding a member to erase"))?;
    let mut rows = Vec::new();
    for id in ids {
        rows.extend(projections::members::member(connection, tenant, &id)?);
    }
    Ok(rows)
}

fn in_directory(connection: &dyn Db, tenant: &str, user_id: &str) -> Result<bool, Error> {
    connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM scim_resources WHERE tenant_id = ?1 AND id = ?2 \
             AND kind = 'User')",
        )
        .and_then(|mut statement| statement.query_row(params![tenant, user_id], |row| row.get(0)))
        .map_err(storage("looking for a user in the directory"))
}

/// When `user_id` was erased, if it was.
pub fn erased_at(
    connection: &dyn Db,
    tenant: &str,
    user_id: &str,
) -> Result<Option<String>, Error> {
    connection
        .prepare_cached("SELECT erased_at FROM erasures WHERE tenant_id = ?1 AND user_id = ?2")
        .and_then(|mut statement| {
            statement.query_row(params![tenant, user_id], |row| row.get(0)).optional()
        })
        .map_err(storage("reading erasures"))
}

/// The SCIM users that stood behind a member (a restore adds one).
fn users_of_member(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
) -> Result<Vec<String>, Error> {
    connection
        .prepare_cached(
            "SELECT DISTINCT user_id FROM audit_movements WHERE tenant_id = ?1 AND member_id = ?2 \
             AND user_id IS NOT NULL",
        )
        .and_then(|mut statement| {
            statement.query_map(params![tenant, member_id], |row| row.get(0))?.collect()
        })
        .map_err(storage("reading a member's users"))
}

/// The attributes of a SCIM user that name the person, whose values the
/// request log's text may quote (a filter, a uniqueness error).
const NAMING: &[&str] = &[
    "userName",
    "externalId",
    "displayName",
    "nickName",
    "name",
    "emails",
    "phoneNumbers",
    "addresses",
    "ims",
    "photos",
    "profileUrl",
    "title",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
];

/// Shorter values are too common to scrub from other requests' text.
const SCRUB_MIN_CHARS: usize = 3;

fn personal_values(document: &events::event::ScimDocument, into: &mut BTreeSet<String>) {
    fn walk(value: &Value, into: &mut BTreeSet<String>) {
        match value {
            Value::String(text) if text.chars().count() >= SCRUB_MIN_CHARS => {
                into.insert(text.clone());
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, into)),
            Value::Object(fields) => fields
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "type" | "primary" | "$ref"))
                .for_each(|(_, value)| walk(value, into)),
            _ => {}
        }
    }
    for (name, value) in document {
        if NAMING.iter().any(|naming| naming.eq_ignore_ascii_case(name)) {
            walk(value, into);
        }
    }
}

/// Percent-encodes all but the unreserved characters, as a query string
/// carries a filter's value.
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The request log quotes what requests sent (a filter in the target, a
/// refused userName in the error): the person's values there become
/// `[erased]`, as they were sent and percent-encoded.
fn scrub_request_log(
    connection: &dyn Db,
    tenant: &str,
    values: &BTreeSet<String>,
) -> Result<(), Error> {
    for value in values.iter().filter(|value| value.chars().count() >= SCRUB_MIN_CHARS) {
        for form in [value.clone(), percent_encoded(value)] {
            connection
                .prepare_cached(&format!(
                    "UPDATE request_log SET target = replace(target, ?2, ?3), \
                     error = replace(error, ?2, ?3) WHERE tenant_id = ?1 AND ({} OR {})",
                    projections::schema::contains(connection, "target", "?2"),
                    projections::schema::contains(connection, "error", "?2"),
                ))
                .and_then(|mut statement| statement.execute(params![tenant, form, ERASED]))
                .map_err(storage("scrubbing the request log"))?;
        }
    }
    Ok(())
}

/// Completes a recorded erasure: destroys the keys, drops the tenant's
/// as-of snapshots (a cache that held the person's rows) and checkpoints
/// the database's WAL, so old page images holding the values leave it.
pub fn finish(store: &Store, tenant: &str, decided: Decided) -> Result<Erased, Error> {
    // A test stops the process here, as a kill -9 would, to prove the
    // order: the event is durable, the keys are not destroyed yet.
    if std::env::var_os("ROLLCALL_FAILPOINT").is_some_and(|point| point == "erase-after-event") {
        std::process::abort();
    }
    let Decided { mut erased, keys } = decided;
    erased.keys_destroyed = store.destroy_keys(tenant, &keys, &erased.erased_at)?;
    Ok(erased)
}
