//! Resources as SCIM serves them: a directory row into the JSON of RFC 7643
//! (schemas, id, externalId, attributes, meta, a user's groups, a group's
//! members), then trimmed by the `attributes` and `excludedAttributes`
//! parameters (RFC 7644 section 3.9).

use projections::directory::filter::{AttrPath, Filter};
use projections::directory::schema::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, ResourceKind, USER_SCHEMA,
};
use projections::directory::store::{MemberRow, ResourceRow};
use serde_json::{Map, Value, json};

use crate::error::{Error, InvalidKind};

/// The absolute URL of the SCIM root, `https://host/scim/v2`, for `meta.location`
/// and `$ref`s.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl BaseUrl {
    pub fn resource(&self, kind: ResourceKind, id: &str) -> String {
        format!("{}/{}/{id}", self.0, endpoint(kind))
    }
}

/// The endpoint name of a kind of resource.
pub fn endpoint(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "Users",
        ResourceKind::Group => "Groups",
    }
}

/// The weak ETag of a resource version; also its `meta.version`.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// What a rendered resource carries besides its row.
#[derive(Debug, Default)]
pub struct Related {
    /// A group's members (`None`: not loaded, because not asked for).
    pub members: Option<Vec<MemberRow>>,
    /// A user's groups: (group id, displayName).
    pub groups: Vec<(String, String)>,
}

/// The full SCIM representation of a resource. Takes the row by value: its
/// document's values move into the answer rather than being copied.
pub fn resource(base: &BaseUrl, row: ResourceRow, related: &Related) -> Value {
    let core = match row.kind {
        ResourceKind::User => USER_SCHEMA,
        ResourceKind::Group => GROUP_SCHEMA,
    };
    // The core schema, then the known extension, then custom extensions:
    // every URN used in the document names a schema in use.
    let mut schemas = vec![Value::from(core)];
    let mut custom = Vec::new();
    for key in row.document.keys() {
        if key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
            schemas.push(Value::from(ENTERPRISE_USER_SCHEMA));
        } else if key.starts_with("urn:") {
            custom.push(Value::from(key.clone()));
        }
    }
    let mut body = row.document;
    schemas.extend(custom);
    body.insert("schemas".to_owned(), Value::Array(schemas));
    let location = base.resource(row.kind, &row.id);
    body.insert("id".to_owned(), Value::from(row.id));
    if let Some(members) = &related.members {
        let members: Vec<Value> = members
            .iter()
            .map(|member| {
                let kind = match member.kind {
                    events::event::MemberKind::User => ResourceKind::User,
                    events::event::MemberKind::Group => ResourceKind::Group,
                };
                // No `display`: members come back exactly as the client set
                // them (strict clients compare), and a name can go stale.
                json!({
                    "value": member.member_id,
                    "$ref": base.resource(kind, &member.member_id),
                    "type": member.kind.as_str(),
                })
            })
            .collect();
        if !members.is_empty() {
            body.insert("members".to_owned(), Value::Array(members));
        }
    }
    if !related.groups.is_empty() {
        let groups: Vec<Value> = related
            .groups
            .iter()
            .map(|(id, display)| {
                json!({"value": id, "$ref": base.resource(ResourceKind::Group, id), "display": display, "type": "direct"})
            })
            .collect();
        body.insert("groups".to_owned(), Value::Array(groups));
    }
    body.insert(
        "meta".to_owned(),
        json!({
            "resourceType": match row.kind { ResourceKind::User => "User", ResourceKind::Group => "Group" },
            "created": row.created,
            "lastModified": row.last_modified,
            "location": location,
            "version": etag(row.version),
        }),
    );
    Value::Object(body)
}

/// An attribute named in `attributes` or `excludedAttributes`: a top-level
/// key (core name or extension URN) and maybe one name below it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The top-level key, as it stands in the document (canonical name or URN).
    pub top: String,
    pub below: Option<String>,
    /// The selector as written: a bare extension URN is a key of its own,
    /// and only the resource can tell it from `urn:...:attribute`.
    pub whole: String,
    /// A value filter (`emails[type eq "work"]`): of a multi-valued core
    /// attribute, only the values it matches.
    pub filter: Option<Filter>,
}

/// The items of a comma-separated list, commas inside a value filter's
/// brackets or quotes not counting.
fn items(list: &str) -> Vec<&str> {
    let (mut items, mut start, mut depth, mut quoted, mut escaped) =
        (Vec::new(), 0, 0u32, false, false);
    for (at, character) in list.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                items.push(list.get(start..at).unwrap_or_default());
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(list.get(start..).unwrap_or_default());
    items
}

/// Parses `attributes` / `excludedAttributes`: comma-separated paths, with
/// names matched case-insensitively against the resource's own keys later;
/// a path may carry a value filter (`emails[type eq "work"].value`).
pub fn selectors(list: &str) -> Result<Vec<Selector>, Error> {
    items(list)
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let whole = item.to_owned();
            if item.contains('[') {
                let path = crate::model::path::parse_patch_path(item).map_err(|error| {
                    Error::invalid_as(InvalidKind::Filter, format!("attributes: {error}"))
                })?;
                let core = path.schema.as_deref().is_none_or(|urn| {
                    urn.eq_ignore_ascii_case(USER_SCHEMA) || urn.eq_ignore_ascii_case(GROUP_SCHEMA)
                });
                if !core {
                    return Err(Error::invalid_as(
                        InvalidKind::Filter,
                        format!("attributes: {item:?}: a value filter applies to a core attribute"),
                    ));
                }
                return Ok(Selector {
                    top: path.name,
                    below: path.sub_attribute,
                    whole,
                    filter: path.filter,
                });
            }
            if item.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:")) {
                // `urn:...:User:department.sub`: the URN is the top key when
                // it names an extension; the core URN prefix is dropped.
                let (urn, rest) = item.rsplit_once(':').unwrap_or((item, ""));
                if urn.eq_ignore_ascii_case(USER_SCHEMA) || urn.eq_ignore_ascii_case(GROUP_SCHEMA) {
                    let (top, below) = split_dot(rest);
                    return Ok(Selector { top, below, whole, filter: None });
                }
                let below =
                    (!rest.is_empty()).then(|| rest.split('.').next().unwrap_or(rest).to_owned());
                return Ok(Selector { top: urn.to_owned(), below, whole, filter: None });
            }
            let (top, below) = split_dot(item);
            Ok(Selector { top, below, whole, filter: None })
        })
        .collect()
}

/// The kind of a rendered resource, from its `meta.resourceType`.
fn kind_of(object: &Map<String, Value>) -> ResourceKind {
    match object.get("meta").and_then(|meta| meta.get("resourceType")).and_then(Value::as_str) {
        Some("Group") => ResourceKind::Group,
        _ => ResourceKind::User,
    }
}

/// The values of a multi-valued attribute that `filter` matches, in order.
fn filtered(kind: ResourceKind, key: &str, value: &Value, filter: &Filter) -> Vec<Value> {
    let path = AttrPath { schema: None, name: key.to_owned(), sub_attribute: None };
    let elements = match value {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    elements
        .iter()
        .filter(|element| crate::model::eval::element_matches(kind, &path, element, filter))
        .cloned()
        .collect()
}

fn split_dot(path: &str) -> (String, Option<String>) {
    match path.split_once('.') {
        Some((top, below)) => (top.to_owned(), Some(below.to_owned())),
        None => (path.to_owned(), None),
    }
}

/// Attributes always returned (RFC 7643 `returned: always`), whatever the
/// parameters say.
const ALWAYS: [&str; 2] = ["id", "schemas"];

fn find_key<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a String> {
    object.keys().find(|key| key.eq_ignore_ascii_case(name))
}

/// The key a selector names in `object`, and the part below it.
fn locate(object: &Map<String, Value>, selector: &Selector) -> Option<(String, Option<String>)> {
    if let Some(key) = find_key(object, &selector.whole) {
        return Some((key.clone(), None));
    }
    find_key(object, &selector.top).map(|key| (key.clone(), selector.below.clone()))
}

/// Keeps only what `attributes` asks for (plus what is always returned).
pub fn keep_only(resource: &mut Value, wanted: &[Selector]) {
    let Value::Object(object) = resource else { return };
    let kind = kind_of(object);
    let mut kept = Map::new();
    for always in ALWAYS {
        if let Some(value) = object.remove(always) {
            kept.insert(always.to_owned(), value);
        }
    }
    for selector in wanted {
        let Some((key, below)) = locate(object, selector) else { continue };
        let Some(value) = object.get(&key) else { continue };
        let value = match (&selector.filter, &below) {
            (Some(filter), below) => {
                let matching = filtered(kind, &key, value, filter);
                // No value matched: the attribute is unassigned, and an
                // unassigned attribute is not returned (RFC 7643 2.5).
                if matching.is_empty() {
                    continue;
                }
                let matching = Value::Array(matching);
                match below {
                    None => matching,
                    Some(below) => select_below(&matching, below, None),
                }
            }
            (None, None) => value.clone(),
            (None, Some(below)) => select_below(value, below, kept.get(&key)),
        };
        kept.insert(key, value);
    }
    *object = kept;
}

/// The part of `value` under `below`, merged with what was already kept.
fn select_below(value: &Value, below: &str, already: Option<&Value>) -> Value {
    match value {
        Value::Object(fields) => {
            let mut out = match already {
                Some(Value::Object(existing)) => existing.clone(),
                _ => Map::new(),
            };
            if let Some(key) = find_key(fields, below)
                && let Some(inner) = fields.get(key)
            {
                out.insert(key.clone(), inner.clone());
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let previous: Vec<Value> = match already {
                Some(Value::Array(existing)) => existing.clone(),
                _ => Vec::new(),
            };
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| select_below(item, below, previous.get(index)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Removes what `excludedAttributes` names (never what is always returned).
pub fn exclude(resource: &mut Value, unwanted: &[Selector]) {
    let Value::Object(object) = resource else { return };
    let kind = kind_of(object);
    for selector in unwanted {
        let Some((key, below)) = locate(object, selector) else { continue };
        if ALWAYS.contains(&key.as_str()) {
            continue;
        }
        // A value filter excludes the values it matches.
        if let Some(filter) = &selector.filter {
            if let Some(Value::Array(items)) = object.get_mut(&key) {
                let path = AttrPath { schema: None, name: key.clone(), sub_attribute: None };
                items.retain(|element| {
                    !crate::model::eval::element_matches(kind, &path, element, filter)
                });
            }
            continue;
        }
        match &below {
            None => {
                object.remove(&key);
            }
            Some(below) => {
                if let Some(value) = object.get_mut(&key) {
                    remove_below(value, below);
                }
            }
        }
    }
}

fn remove_below(value: &mut Value, below: &str) {
    match value {
        Value::Object(fields) => {
            if let Some(key) = find_key(fields, below).cloned() {
                fields.remove(&key);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| remove_below(item, below)),
        _ => {}
    }
}

/// Whether the selections mean a group's members must be loaded.
pub fn wants_members(attributes: &[Selector], excluded: &[Selector]) -> bool {
    let named =
        |selectors: &[Selector]| selectors.iter().any(|s| s.top.eq_ignore_ascii_case("members"));
    if !attributes.is_empty() {
        return named(attributes);
    }
    !excluded.iter().any(|s| s.top.eq_ignore_ascii_case("members") && s.below.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "u1", "userName": "b",
            "name": {"givenName": "B", "familyName": "J"},
            "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D", "division": "V"},
            "meta": {"resourceType": "User"}
        })
    }

    #[test]
    fn attributes_keep_what_is_asked_and_always_returned() {
        let mut resource = sample();
        keep_only(
            &mut resource,
            &selectors(
                "USERNAME, name.givenName,emails.value,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            ).unwrap(),
        );
        assert_eq!(
            resource,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "u1", "userName": "b",
                "name": {"givenName": "B"}, "emails": [{"value": "a@x"}, {"value": "b@x"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D"}
            })
        );
        let mut resource = sample();
        keep_only(
            &mut resource,
            &selectors("urn:ietf:params:scim:schemas:core:2.0:User:userName,meta").unwrap(),
        );
        assert_eq!(resource["userName"], "b");
        assert_eq!(resource["meta"]["resourceType"], "User");
        assert!(resource.get("name").is_none());
    }

    #[test]
    fn excluded_attributes_remove_all_but_what_is_always_returned() {
        let mut resource = sample();
        exclude(
            &mut resource,
            &selectors(
                "emails,name.familyName,id,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            ).unwrap(),
        );
        assert!(resource.get("emails").is_none());
        assert_eq!(resource["name"], json!({"givenName": "B"}));
        assert_eq!(resource["id"], "u1");
        assert!(
            resource.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").is_none()
        );
    }

    #[test]
    fn members_are_loaded_only_when_they_will_be_shown() {
        assert!(wants_members(&[], &[]));
        assert!(!wants_members(&[], &selectors("members").unwrap()));
        assert!(wants_members(&[], &selectors("members.display").unwrap()));
        assert!(!wants_members(&selectors("displayName").unwrap(), &[]));
        assert!(wants_members(&selectors("members.value").unwrap(), &[]));
    }
}
