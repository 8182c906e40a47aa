//! One person's history: every event that touched a SCIM user or the
//! member behind it, in log order, with the attribute changes between the
//! user's versions. Found from the log alone, by SCIM id, externalId or
//! userName, including a name the user had before a rename, and across a
//! delete and re-create that restored the same member.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use events::event::Event;
use events::sqlite::VisitError;
use events::{Position, RecordedEvent};
use serde::Serialize;
use serde_json::Value;

use super::report::Word;
use crate::error::Error;
use crate::store::Store;

/// Whom to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A SCIM user id, externalId or userName (case-insensitively), as the
    /// user had it at any time.
    User(String),
    /// A member id.
    Member(String),
}

/// One attribute that changed between two versions of a user's document.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Change {
    pub attribute: String,
    pub from: Value,
    pub to: Value,
}

/// One event of the history.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Entry {
    pub position: Position,
    pub recorded_at: String,
    pub stream: String,
    pub event_type: String,
    pub by: Word,
    /// For a user's create or update: what changed against the version
    /// before (every attribute, for a create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Change>>,
    /// The event's payload, except a user's whole document (see `changes`).
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The history, and whom it covers.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = PersonHistory)]
pub struct History {
    pub user_ids: Vec<String>,
    pub member_ids: Vec<String>,
    pub entries: Vec<Entry>,
}

/// JSON text of a string as it appears inside a stored payload, lower-cased:
/// a cheap test before decoding an event that may mention it.
fn needle(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted.trim_matches('"').to_lowercase()
}

fn document_matches(document: &Value, wanted: &str) -> bool {
    let folded = wanted.to_lowercase();
    let field = |name: &str| document.get(name).and_then(Value::as_str);
    field("userName").is_some_and(|name| name.to_lowercase() == folded)
        || field("externalId") == Some(wanted)
}

/// Finds the users and members the subject names, then reads their streams.
pub fn history(store: &Store, tenant_id: &str, subject: &Subject) -> Result<History, Error> {
    let log = store.log();
    let keys = store.keys();
    let mut users: BTreeSet<String> = BTreeSet::new();
    let mut members: BTreeSet<String> = BTreeSet::new();
    // Which users stood behind which members: a restored member links the
    // deleted user and the re-created one.
    let mut links: Vec<(String, String)> = Vec::new();
    let wanted = match subject {
        Subject::User(text) => Some(text.as_str()),
        Subject::Member(member_id) => {
            members.insert(member_id.clone());
            None
        }
    };
    let needle = wanted.map(needle);
    let walked = log.visit_forward(0, Some(tenant_id), |event| -> Result<(), Error> {
        match event.event_type {
            "UserCreated" | "UserUpdated" => {
                let Some(wanted) = wanted else { return Ok(()) };
                let user_id = event.stream.strip_prefix("user:").unwrap_or_default();
                if user_id == wanted {
                    users.insert(user_id.to_owned());
                    return Ok(());
                }
                // A sealed payload names nobody in its bytes: only opened
                // can it be matched.
                let sealed = Event::is_sealed(event.event_type, event.schema_version);
                if !sealed
                    && needle.as_ref().is_some_and(|needle| {
                        !event.payload.to_lowercase().contains(needle.as_str())
                    })
                {
                    return Ok(());
                }
                let Ok(payload) = event.payload_opened(keys) else {
                    return Ok(());
                };
                let Some(document) = payload.get("document") else {
                    return Ok(());
                };
                if document_matches(document, wanted) {
                    users.insert(user_id.to_owned());
                }
            }
            "MemberJoined" | "MemberRestored" => match event.decode(keys)? {
                Event::MemberJoined(joined) => links.push((joined.member_id, joined.user_id)),
                Event::MemberRestored(restored) => {
                    links.push((restored.member_id, restored.user_id))
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    });
    match walked {
        Ok(_) => {}
        Err(VisitError::Log(error)) => return Err(error.into()),
        Err(VisitError::Visitor(error)) => return Err(error),
    }
    // Follow the links until nothing new joins: user -> member -> user.
    loop {
        let before = users.len() + members.len();
        for (member_id, user_id) in &links {
            if users.contains(user_id) {
                members.insert(member_id.clone());
            }
            if members.contains(member_id) {
                users.insert(user_id.clone());
            }
        }
        if users.len() + members.len() == before {
            break;
        }
    }

    let mut recorded: Vec<RecordedEvent> = Vec::new();
    for user_id in &users {
        recorded.extend(log.read_stream(tenant_id, &format!("user:{user_id}"))?);
    }
    for member_id in &members {
        recorded.extend(log.read_stream(tenant_id, &format!("member:{member_id}"))?);
    }
    if recorded.is_empty() {
        let what = match subject {
            Subject::User(text) => format!("user {text:?}"),
            Subject::Member(member_id) => format!("member {member_id}"),
        };
        return Err(Error::not_found(what));
    }
    recorded.sort_by_key(|event| event.position);

    let mut documents: HashMap<String, Value> = HashMap::new();
    let mut entries = Vec::with_capacity(recorded.len());
    for event in recorded {
        let metadata = event.metadata_opened(keys).map_err(|error| {
            Error::Internal(format!("an event's metadata does not decode: {error}"))
        })?;
        let mut payload = event.payload_opened(keys).map_err(|error| {
            Error::Internal(format!("an event's payload does not decode: {error}"))
        })?;
        let mut changes = None;
        if matches!(event.event_type.as_str(), "UserCreated" | "UserUpdated")
            && let Some(object) = payload.as_object_mut()
            && let Some(document) = object.remove("document")
        {
            let previous = documents.get(&event.stream).cloned().unwrap_or(Value::Null);
            changes = Some(diff(&previous, &document));
            documents.insert(event.stream.clone(), document);
        }
        entries.push(Entry {
            position: event.position,
            recorded_at: event.recorded_at,
            stream: event.stream,
            event_type: event.event_type,
            by: Word {
                actor: metadata.actor,
                request_id: metadata.request_id,
                user_agent: metadata.user_agent,
                run_id: metadata.correlation_id,
            },
            changes,
            payload,
        });
    }
    Ok(History {
        user_ids: users.into_iter().collect(),
        member_ids: members.into_iter().collect(),
        entries,
    })
}

/// The attributes that differ between two documents, by path (`name.givenName`,
/// an extension's `urn:…:User:department`); a multi-valued attribute is one
/// value. `meta` is the server's, not the identity provider's, and is left out.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    flatten("", before, &mut old);
    flatten("", after, &mut new);
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let from = old.get(key).cloned().cloned().unwrap_or(Value::Null);
            let to = new.get(key).cloned().cloned().unwrap_or(Value::Null);
            (from != to).then(|| Change { attribute: key.clone(), from, to })
        })
        .collect()
}

fn flatten<'v>(prefix: &str, value: &'v Value, into: &mut BTreeMap<String, &'v Value>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                if prefix.is_empty() && (key == "meta" || key == "schemas" || key == "id") {
                    continue;
                }
                let path = if prefix.is_empty() {
                    key.clone()
                } else if prefix.starts_with("urn:")
                    && !prefix.ends_with('.')
                    && is_schema_urn(prefix)
                {
                    // An extension's attributes: `urn:…:User:department`.
                    format!("{prefix}:{key}")
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, into);
            }
        }
        Value::Null => {}
        other => {
            into.insert(prefix.to_owned(), other);
        }
    }
}

/// Whether a path is a schema URN itself (a top-level extension key), not
/// an attribute under one: an attribute follows the URN's last colon.
fn is_schema_urn(path: &str) -> bool {
    path.rsplit(':').next().is_some_and(|last| {
        !last.contains('.') && last.chars().next().is_some_and(char::is_uppercase)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn diff_names_changed_attributes_by_path() {
        let before = json!({"userName": "a", "name": {"givenName": "Ann"}, "title": "x",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"},
            "meta": {"version": "1"}});
        let after = json!({"userName": "b", "name": {"givenName": "Ann"},
            "emails": [{"value": "b@x"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"},
            "meta": {"version": "2"}});
        let changes = diff(&before, &after);
        let attributes: Vec<&str> =
            changes.iter().map(|change| change.attribute.as_str()).collect();
        assert_eq!(
            attributes,
            [
                "emails",
                "title",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "userName"
            ]
        );
        assert_eq!(changes[3].from, json!("a"));
        assert_eq!(changes[1].to, Value::Null);
        assert!(diff(&after, &after).is_empty());
    }
}
