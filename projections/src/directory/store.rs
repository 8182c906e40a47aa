//! The directory tables: what each SCIM event does to them, and the lookups
//! the SCIM endpoint needs (by id, by unique name, members of a group,
//! groups of a member).
//!
//! Folding decides nothing: uniqueness and existence were checked by the
//! command before the events were appended; here they are written down.

use events::event::{
    GroupCreated, GroupDeleted, GroupMembersAdded, GroupMembersRemoved, GroupUpdated, MemberKind,
    MemberRef, ScimDocument, UserCreated, UserDeleted, UserUpdated,
};
use events::{Event, RecordedEvent};
use std::collections::{HashMap, HashSet};

use events::db::{Db, DbError, OptionalExtension, Row};
use events::params;
use serde_json::Value;

use super::schema::ResourceKind;
use crate::ProjectionError;
use crate::functions::fold;
use crate::sql_integer;

/// A resource as the directory holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRow {
    pub kind: ResourceKind,
    pub id: String,
    pub external_id: Option<String>,
    pub document: ScimDocument,
    /// UTC, RFC 3339, milliseconds.
    pub created: String,
    pub last_modified: String,
    /// The resource stream's version: changes with every event.
    pub version: u64,
}

/// One member of a group, with the name it is shown by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub member_id: String,
    pub kind: MemberKind,
    pub display: Option<String>,
}

pub fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "User",
        ResourceKind::Group => "Group",
    }
}

fn kind_from_name(name: &str) -> Option<ResourceKind> {
    match name {
        "User" => Some(ResourceKind::User),
        "Group" => Some(ResourceKind::Group),
        _ => None,
    }
}

/// The unique name of a document: a User's userName, a Group's displayName.
pub fn unique_name(kind: ResourceKind, document: &ScimDocument) -> &str {
    let attribute = match kind {
        ResourceKind::User => "userName",
        ResourceKind::Group => "displayName",
    };
    document.get(attribute).and_then(Value::as_str).unwrap_or_default()
}

/// The folded unique name. An erased user's document (`events::event::
/// is_erased_document`) names nobody, so several of them can stand at once
/// in a past state (as-of, a fold): each is keyed by its id instead, and
/// never takes the name of a user really called `[erased]`: the key holds
/// ASCII capitals, which a fold (lowercasing) never outputs. (It held NUL
/// separators until PostgreSQL, whose text cannot; a file folded before
/// keeps them, which collide with nothing either.)
fn name_key(kind: ResourceKind, id: &str, document: &ScimDocument) -> String {
    if kind == ResourceKind::User && events::event::is_erased_document(document) {
        return format!("ERASED {id}");
    }
    fold(unique_name(kind, document))
}

fn external_id(document: &ScimDocument) -> Option<&str> {
    document.get("externalId").and_then(Value::as_str)
}

pub(crate) fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    let tenant = recorded.tenant.as_str();
    match event {
        Event::UserCreated(UserCreated { user_id, document, key }) => {
            insert(connection, recorded, ResourceKind::User, user_id, document, *key)
        }
        Event::UserUpdated(UserUpdated { user_id, document, .. }) => {
            replace(connection, recorded, ResourceKind::User, user_id, document)
        }
        Event::GroupUpdated(GroupUpdated { group_id, document, .. }) => {
            replace(connection, recorded, ResourceKind::Group, group_id, document)
        }
        Event::UserDeactivated(events::event::UserDeactivated { user_id })
        | Event::UserReactivated(events::event::UserReactivated { user_id }) => {
            touch(connection, recorded, user_id)
        }
        Event::GroupRenamed(events::event::GroupRenamed { group_id, .. }) => {
            touch(connection, recorded, group_id)
        }
        // The memberships it had were removed by GroupMembersRemoved events
        // recorded before this one.
        Event::UserDeleted(UserDeleted { user_id }) => delete(connection, tenant, user_id),
        // Refused while the user is in the directory: nothing is left here.
        Event::SubjectErased(_) => Ok(()),
        Event::GroupCreated(GroupCreated { group_id, document, members }) => {
            insert(connection, recorded, ResourceKind::Group, group_id, document, None)?;
            add_members(connection, tenant, group_id, members)
        }
        Event::GroupMembersAdded(GroupMembersAdded { group_id, members }) => {
            add_members(connection, tenant, group_id, members)?;
            touch(connection, recorded, group_id)
        }
        Event::GroupMembersRemoved(GroupMembersRemoved { group_id, member_ids }) => {
            for member_id in member_ids {
                connection
                    .prepare_cached("DELETE FROM scim_members WHERE tenant_id = ?1 AND group_id = ?2 AND member_id = ?3")
                    .and_then(|mut statement| statement.execute(params![tenant, group_id, member_id]))
                    .map_err(ProjectionError::storage("projecting GroupMembersRemoved"))?;
            }
            touch(connection, recorded, group_id)
        }
        Event::GroupDeleted(GroupDeleted { group_id }) => {
            delete(connection, tenant, group_id)?;
            // Its own member list goes with it; where it was itself a member,
            // GroupMembersRemoved events came first.
            connection
                .prepare_cached("DELETE FROM scim_members WHERE tenant_id = ?1 AND group_id = ?2")
                .and_then(|mut statement| statement.execute(params![tenant, group_id]))
                .map(drop)
                .map_err(ProjectionError::storage("projecting GroupDeleted"))
        }
        Event::TenantCreated(_)
        | Event::TokenIssued(_)
        | Event::TokenRevoked(_)
        | Event::ClientRegistered(_)
        | Event::ClientRevoked(_) => Ok(()),
        // The member directory's and Synchronize's events.
        // Not this projection's. Listed rather than `_`, so a new event type
        // does not compile until someone decides what it folds to here.
        Event::AttributeMappingChanged(_)
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

fn document_json(document: &ScimDocument) -> String {
    // A map of JSON values always serialises.
    serde_json::to_string(document).unwrap_or_else(|_| "{}".to_owned())
}

/// The row a created resource has once `recorded` is folded: what `insert`
/// writes, for a command to answer with without reading it back.
pub fn created_row(
    recorded: &RecordedEvent,
    kind: ResourceKind,
    id: &str,
    document: ScimDocument,
) -> ResourceRow {
    ResourceRow {
        kind,
        id: id.to_owned(),
        external_id: external_id(&document).map(str::to_owned),
        document,
        created: recorded.recorded_at.clone(),
        last_modified: recorded.recorded_at.clone(),
        version: recorded.version,
    }
}

/// The row a resource has once the events of one change to it, ending
/// with `last`, are folded (`document`: the new one, or the old one if it
/// did not change): what `replace` and `touch` leave, for a command to
/// answer with without reading it back.
pub fn updated_row(row: ResourceRow, last: &RecordedEvent, document: ScimDocument) -> ResourceRow {
    ResourceRow {
        external_id: external_id(&document).map(str::to_owned),
        document,
        last_modified: last.recorded_at.clone(),
        version: last.version,
        ..row
    }
}

fn insert(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    kind: ResourceKind,
    id: &str,
    document: &ScimDocument,
    key: Option<u64>,
) -> Result<(), ProjectionError> {
    let name = unique_name(kind, document);
    connection
        .prepare_cached(
            "INSERT INTO scim_resources (tenant_id, kind, id, external_id, name, name_key, document, created, \
             last_modified, version, created_position, key_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                recorded.tenant,
                kind_name(kind),
                id,
                external_id(document),
                name,
                name_key(kind, id, document),
                document_json(document),
                recorded.recorded_at,
                sql_integer(recorded.version),
                sql_integer(recorded.position),
                key.map(sql_integer),
            ])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a created resource"))?;
    searchable(connection, &recorded.tenant, id, document)
}

/// On PostgreSQL, the document's `jsonb` forms that filters read (see
/// `schema::POSTGRES_SEARCH`); SQLite reads the document text itself.
fn searchable(
    connection: &dyn Db,
    tenant: &str,
    id: &str,
    document: &ScimDocument,
) -> Result<(), ProjectionError> {
    if connection.dialect() != events::db::Dialect::Postgres {
        return Ok(());
    }
    let folded = crate::functions::fold_value(&serde_json::Value::Object(document.clone()));
    connection
        .prepare_cached(
            "UPDATE scim_resources SET doc = CAST(?3 AS TEXT)::jsonb, \
             folded = CAST(?4 AS TEXT)::jsonb WHERE tenant_id = ?1 AND id = ?2",
        )
        .and_then(|mut statement| {
            statement.execute(params![tenant, id, document_json(document), folded.to_string()])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a resource's search forms"))
}

fn replace(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    kind: ResourceKind,
    id: &str,
    document: &ScimDocument,
) -> Result<(), ProjectionError> {
    let context = "projecting an updated resource";
    connection
        .prepare_cached(
            "UPDATE scim_resources SET document = ?3, last_modified = ?4, version = ?5 \
             WHERE tenant_id = ?1 AND id = ?2",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                recorded.tenant,
                id,
                document_json(document),
                recorded.recorded_at,
                sql_integer(recorded.version),
            ])
        })
        .map_err(ProjectionError::storage(context))?;
    searchable(connection, &recorded.tenant, id, document)?;
    // The indexed columns apart, and only when they change: SQLite rewrites
    // an index entry for every indexed column an UPDATE sets, even to its
    // own value, so setting them on every PATCH dirtied two more scattered
    // pages (the name and externalId indexes) per write, three times the
    // WAL of a deactivation.
    let name = unique_name(kind, document);
    connection
        .prepare_cached(
            "UPDATE scim_resources SET external_id = ?3, name = ?4, name_key = ?5 \
             WHERE tenant_id = ?1 AND id = ?2 \
             AND (external_id IS DISTINCT FROM ?3 OR name IS DISTINCT FROM ?4 \
             OR name_key IS DISTINCT FROM ?5)",
        )
        .and_then(|mut statement| {
            let key = name_key(kind, id, document);
            statement.execute(params![recorded.tenant, id, external_id(document), name, key])
        })
        .map(drop)
        .map_err(ProjectionError::storage(context))
}

/// Records that a resource changed (its version and lastModified move).
fn touch(connection: &dyn Db, recorded: &RecordedEvent, id: &str) -> Result<(), ProjectionError> {
    connection
        .prepare_cached("UPDATE scim_resources SET last_modified = ?3, version = ?4 WHERE tenant_id = ?1 AND id = ?2")
        .and_then(|mut statement| {
            statement.execute(params![recorded.tenant, id, recorded.recorded_at, sql_integer(recorded.version)])
        })
        .map(drop)
        .map_err(ProjectionError::storage("projecting a resource change"))
}

fn delete(connection: &dyn Db, tenant: &str, id: &str) -> Result<(), ProjectionError> {
    connection
        .prepare_cached("DELETE FROM scim_resources WHERE tenant_id = ?1 AND id = ?2")
        .and_then(|mut statement| statement.execute(params![tenant, id]))
        .map(drop)
        .map_err(ProjectionError::storage("projecting a deleted resource"))
}

fn add_members(
    connection: &dyn Db,
    tenant: &str,
    group_id: &str,
    members: &[MemberRef],
) -> Result<(), ProjectionError> {
    let mut statement = connection
        .prepare_cached(
            "INSERT INTO scim_members (tenant_id, group_id, member_id, member_type) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .map_err(ProjectionError::storage("projecting group members"))?;
    for member in members {
        statement
            .execute(params![tenant, group_id, member.value, member.kind.as_str()])
            .map_err(ProjectionError::storage("projecting group members"))?;
    }
    Ok(())
}

pub(crate) const RESOURCE_COLUMNS: &str =
    "r.kind, r.id, r.external_id, r.document, r.created, r.last_modified, r.version";

pub(crate) fn resource_from_row(row: &Row<'_>) -> Result<ResourceRow, DbError> {
    unparsed_from_row(row)?
        .parse()
        .map_err(|error| DbError::Column { index: 3, message: error.to_string() })
}

/// A resource row whose document is still its stored JSON text: for a
/// caller that parses many of them on more than one thread.
#[derive(Debug, Clone)]
pub struct UnparsedRow {
    pub kind: ResourceKind,
    pub id: String,
    pub external_id: Option<String>,
    pub document: String,
    pub created: String,
    pub last_modified: String,
    pub version: u64,
}

impl UnparsedRow {
    /// The row with its document parsed; the error says why it is not a
    /// JSON object.
    pub fn parse(&self) -> Result<ResourceRow, String> {
        Ok(ResourceRow {
            kind: self.kind,
            id: self.id.clone(),
            external_id: self.external_id.clone(),
            document: serde_json::from_str(&self.document).map_err(|error| error.to_string())?,
            created: self.created.clone(),
            last_modified: self.last_modified.clone(),
            version: self.version,
        })
    }
}

fn unparsed_from_row(row: &Row<'_>) -> Result<UnparsedRow, DbError> {
    let kind: String = row.get(0)?;
    Ok(UnparsedRow {
        kind: kind_from_name(&kind)
            .ok_or_else(|| DbError::Column { index: 0, message: format!("unknown kind {kind}") })?,
        id: row.get(1)?,
        external_id: row.get(2)?,
        document: row.get(3)?,
        created: row.get(4)?,
        last_modified: row.get(5)?,
        version: row.get::<_, i64>(6)?.try_into().unwrap_or(0),
    })
}

/// A resource of `kind` in `tenant` by id.
pub fn get(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    id: &str,
) -> Result<Option<ResourceRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM scim_resources r WHERE r.tenant_id = ?1 AND r.id = ?2 AND r.kind = ?3"
        ))
        .and_then(|mut statement| statement.query_row(params![tenant, id, kind_name(kind)], resource_from_row).optional())
        .map_err(ProjectionError::storage("reading a resource"))
}

/// The resources of `kind` in `tenant` whose ids lie in `first..=last`, in
/// id order, at most `limit` of them: one range of the primary key, for a
/// caller about to look up many ids of one sorted run (Synchronize reads
/// its batch's users this way instead of one query each).
/// Their documents are left as text ([`UnparsedRow::parse`]).
pub fn in_id_range(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    first: &str,
    last: &str,
    limit: usize,
) -> Result<Vec<UnparsedRow>, ProjectionError> {
    connection
        .prepare_cached(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM scim_resources r \
             WHERE r.tenant_id = ?1 AND r.id >= ?2 AND r.id <= ?3 AND r.kind = ?4 \
             ORDER BY r.id LIMIT ?5"
        ))
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![tenant, first, last, kind_name(kind), crate::sql_integer(limit as u64)],
                    unparsed_from_row,
                )?
                .collect()
        })
        .map_err(ProjectionError::storage("reading a range of resources"))
}

/// The id of the resource of `kind` whose unique name is `name`, in any case.
pub fn id_by_name(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    name: &str,
) -> Result<Option<String>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT id FROM scim_resources WHERE tenant_id = ?1 AND kind = ?2 AND name_key = ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![tenant, kind_name(kind), fold(name)], |row| row.get(0))
                .optional()
        })
        .map_err(ProjectionError::storage("looking up a resource by name"))
}

/// The kinds of those of `ids` that are resources of the tenant, in one
/// statement however many there are (a PATCH may name 10,000 members).
pub fn kinds_of(
    connection: &dyn Db,
    tenant: &str,
    ids: &[&str],
) -> Result<HashMap<String, ResourceKind>, ProjectionError> {
    let ids = Value::from(ids).to_string();
    connection
        .prepare_cached(&format!(
            // CROSS JOIN keeps the ids as the outer loop: each is one probe
            // of the primary key, never a scan of the tenant.
            "SELECT r.id, r.kind FROM {} \
             {} scim_resources r ON r.tenant_id = ?1 AND r.id = j.value",
            crate::schema::json_list(connection, "?2"),
            crate::schema::outer_loop_join(connection)
        ))
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, ids], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .map(|rows| {
            rows.into_iter()
                .filter_map(|(id, kind)| kind_from_name(&kind).map(|kind| (id, kind)))
                .collect()
        })
        .map_err(ProjectionError::storage("looking up resources"))
}

/// Those of `ids` that are direct members of the group, in one statement.
pub fn members_among(
    connection: &dyn Db,
    tenant: &str,
    group_id: &str,
    ids: &[&str],
) -> Result<HashSet<String>, ProjectionError> {
    let ids = Value::from(ids).to_string();
    connection
        .prepare_cached(&format!(
            // CROSS JOIN keeps the ids as the outer loop: a plain JOIN was
            // planned as a scan of the group's members with the id list
            // inside it (70 s for 10,000 ids against 100,000 members).
            "SELECT m.member_id FROM {} {} scim_members m \
             ON m.tenant_id = ?1 AND m.group_id = ?2 AND m.member_id = j.value",
            crate::schema::json_list(connection, "?3"),
            crate::schema::outer_loop_join(connection)
        ))
        .and_then(|mut statement| {
            statement.query_map(params![tenant, group_id, ids], |row| row.get(0))?.collect()
        })
        .map_err(ProjectionError::storage("reading group memberships"))
}

/// The members of a group, in a stable order, with their names.
pub fn members(
    connection: &dyn Db,
    tenant: &str,
    group_id: &str,
) -> Result<Vec<MemberRow>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT m.member_id, m.member_type, r.name FROM scim_members m \
             LEFT JOIN scim_resources r ON r.tenant_id = m.tenant_id AND r.id = m.member_id \
             WHERE m.tenant_id = ?1 AND m.group_id = ?2 ORDER BY m.member_id",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, group_id], |row| {
                    let kind: String = row.get(1)?;
                    Ok(MemberRow {
                        member_id: row.get(0)?,
                        kind: if kind == "Group" { MemberKind::Group } else { MemberKind::User },
                        display: row.get(2)?,
                    })
                })?
                .collect()
        })
        .map_err(ProjectionError::storage("reading group members"))
}

/// The members of each of `group_ids`, in one statement: a page of groups
/// with their members without a query per group.
pub fn members_of_groups(
    connection: &dyn Db,
    tenant: &str,
    group_ids: &[&str],
) -> Result<HashMap<String, Vec<MemberRow>>, ProjectionError> {
    let ids = Value::from(group_ids).to_string();
    let mut by_group: HashMap<String, Vec<MemberRow>> = HashMap::new();
    connection
        .prepare_cached(&format!(
            // The ids drive the loop, as in `members_among`.
            "SELECT m.group_id, m.member_id, m.member_type, r.name FROM {} \
             {} scim_members m ON m.tenant_id = ?1 AND m.group_id = j.value \
             LEFT JOIN scim_resources r ON r.tenant_id = m.tenant_id AND r.id = m.member_id \
             ORDER BY m.group_id, m.member_id",
            crate::schema::json_list(connection, "?2"),
            crate::schema::outer_loop_join(connection)
        ))
        .and_then(|mut statement| {
            let mut rows = statement.query(params![tenant, ids])?;
            while let Some(row) = rows.next()? {
                let kind: String = row.get(2)?;
                by_group.entry(row.get(0)?).or_default().push(MemberRow {
                    member_id: row.get(1)?,
                    kind: if kind == "Group" { MemberKind::Group } else { MemberKind::User },
                    display: row.get(3)?,
                });
            }
            Ok(())
        })
        .map_err(ProjectionError::storage("reading group members"))?;
    Ok(by_group)
}

/// Whether a group has more than `limit` members, counting no further than
/// that (a count of a 100,000-member group reads 100,000 index entries).
pub fn has_more_members_than(
    connection: &dyn Db,
    tenant: &str,
    group_id: &str,
    limit: usize,
) -> Result<bool, ProjectionError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX - 1);
    connection
        .prepare_cached(
            "SELECT count(*) > ?3 FROM (SELECT 1 FROM scim_members \
             WHERE tenant_id = ?1 AND group_id = ?2 LIMIT ?4) AS limited",
        )
        .and_then(|mut statement| {
            statement.query_row(params![tenant, group_id, limit, limit.saturating_add(1)], |row| {
                row.get(0)
            })
        })
        .map_err(ProjectionError::storage("counting group members"))
}

/// The groups `member_id` belongs to directly: (group id, displayName).
pub fn groups_of(
    connection: &dyn Db,
    tenant: &str,
    member_id: &str,
) -> Result<Vec<(String, String)>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT m.group_id, r.name FROM scim_members m \
             JOIN scim_resources r ON r.tenant_id = m.tenant_id AND r.id = m.group_id \
             WHERE m.tenant_id = ?1 AND m.member_id = ?2 ORDER BY r.name_key",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, member_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(ProjectionError::storage("reading a member's groups"))
}

/// Every id of `kind` in the tenant, in id order (what a full
/// Synchronize walks).
pub fn all_ids(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
) -> Result<Vec<String>, ProjectionError> {
    // From the creation-order index, which holds the primary key beside
    // each entry: the table's own order would read every document's pages
    // (48 MB at 100,000 users) to find 2.6 MB of ids. Sorted here, as
    // SQLite sorts text (bytes), which is the order of `String`.
    let mut ids: Vec<String> = connection
        .prepare_cached(
            "SELECT id FROM scim_resources INDEXED BY scim_resources_in_order \
             WHERE tenant_id = ?1 AND kind = ?2",
        )
        .and_then(|mut statement| {
            statement.query_map(params![tenant, kind_name(kind)], |row| row.get(0))?.collect()
        })
        .map_err(ProjectionError::storage("listing resource ids"))?;
    ids.sort_unstable();
    Ok(ids)
}

/// The ids of the resources of `kind` with this externalId.
pub fn ids_by_external_id(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    external_id: &str,
) -> Result<Vec<String>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT id FROM scim_resources WHERE tenant_id = ?1 AND kind = ?2 AND external_id = ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![tenant, kind_name(kind), external_id], |row| row.get(0))?
                .collect()
        })
        .map_err(ProjectionError::storage("looking up resources by externalId"))
}

/// The users in a group, directly or through groups nested in it (each
/// once, a cycle of groups followed once): one primary-key range read per
/// group visited. (A recursive CTE did the same in one statement, but
/// SQLite drove its final join from the tenant's whole membership table.)
pub fn users_under(
    connection: &dyn Db,
    tenant: &str,
    group_id: &str,
) -> Result<Vec<String>, ProjectionError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT member_id, member_type FROM scim_members WHERE tenant_id = ?1 AND group_id = ?2",
        )
        .map_err(ProjectionError::storage("listing a group's members"))?;
    let mut users = HashSet::new();
    let mut seen = HashSet::from([group_id.to_owned()]);
    let mut queue = vec![group_id.to_owned()];
    while let Some(group) = queue.pop() {
        let rows = statement
            .query_map(params![tenant, group], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(ProjectionError::storage("listing a group's members"))?;
        for row in rows {
            let (member, kind) =
                row.map_err(ProjectionError::storage("listing a group's members"))?;
            if kind == "Group" {
                if seen.insert(member.clone()) {
                    queue.push(member);
                }
            } else {
                users.insert(member);
            }
        }
    }
    let mut users: Vec<String> = users.into_iter().collect();
    users.sort_unstable();
    Ok(users)
}

/// The names (a Group's displayName) of the first `limit` resources of
/// `kind` in name order, with their externalIds: what a console offers
/// to pick from.
pub fn names(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    limit: u64,
) -> Result<Vec<(String, Option<String>)>, ProjectionError> {
    connection
        .prepare_cached(
            "SELECT name, external_id FROM scim_resources WHERE tenant_id = ?1 AND kind = ?2 \
             ORDER BY name_key LIMIT ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![tenant, kind_name(kind), i64::try_from(limit).unwrap_or(i64::MAX)],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?
                .collect()
        })
        .map_err(ProjectionError::storage("listing resource names"))
}
