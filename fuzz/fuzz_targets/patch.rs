//! The PATCH engine (`rollcall::scim::patch`): `apply_patch`, with the path
//! parser it calls, and `membership_patch` with `apply_patch_except`, on a
//! fixed User and a fixed Group.
//!
//! The input is a PATCH body when it is JSON: an object with `Operations` is
//! the body, another object one operation, an array the operations. A JSON
//! string, or text that is not JSON, is a path, tried in a few fixed
//! operations (add, replace, remove).
//!
//! Invariants: no input panics; an `Err` leaves the document as it was (all
//! or nothing: the document is borrowed, and compared after); an `Ok`
//! document normalises without panicking and, when it normalises, a second
//! normalisation changes nothing. For the Group, the by-id membership split
//! that `resources::update` takes when `membership_patch` allows it must
//! give the same outcome as the whole-list path (same success or failure,
//! same document, same member ids).
#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use projections::directory::schema::ResourceKind;
use rollcall::scim::document::{Document, normalize};
use rollcall::scim::patch::{
    MemberStep, PATCH_OP_SCHEMA, apply_patch, apply_patch_except, membership_patch,
};
use serde_json::{Value, json};

/// The id the fixed Group is stored under.
const GROUP_ID: &str = "0group-under-fuzz";

static USER: LazyLock<Document> = LazyLock::new(|| {
    let user = json!({
        "userName": "bjensen@example.com",
        "externalId": "00u1abcd",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen"},
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
        "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood", "country": "USA"}],
        "roles": [{"value": "Admin", "display": "Admin", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "employeeNumber": "701984", "department": "Tour Operations", "manager": {"value": "26118915"}
        },
        "urn:ietf:params:scim:schemas:extension:2.0:Metadata": {"costCenter": "CC-42"}
    });
    // The fixed documents are canonical, as stored documents are.
    normalize(ResourceKind::User, &user).unwrap_or_else(|error| panic!("user seed: {error}"))
});

/// The Group as the whole-list path sees it (`with_members`: the stored
/// document plus its members, each `{"value", "type"}`).
static GROUP: LazyLock<Document> = LazyLock::new(|| {
    let mut group = GROUP_STORED.clone();
    group.insert(
        "members".to_owned(),
        json!([{"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}, {"value": "g9", "type": "Group"}]),
    );
    group
});

/// The Group's stored document: members live in their own table.
static GROUP_STORED: LazyLock<Document> = LazyLock::new(|| {
    let group = json!({"displayName": "Admins", "externalId": "g-ext"});
    normalize(ResourceKind::Group, &group).unwrap_or_else(|error| panic!("group seed: {error}"))
});

fn body_of(operations: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
}

fn path_bodies(path: &str) -> Vec<Value> {
    [
        json!({"op": "add", "path": path, "value": "x"}),
        json!({"op": "replace", "path": path, "value": {"value": "v@example.com", "type": "work", "primary": true}}),
        json!({"op": "remove", "path": path}),
        json!({"op": "add", "path": path, "value": [{"value": "u3", "type": "User"}]}),
    ]
    .into_iter()
    .map(|operation| body_of(vec![operation]))
    .collect()
}

fn bodies(data: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(fields)) => {
            if fields.keys().any(|key| key.eq_ignore_ascii_case("Operations")) {
                vec![Value::Object(fields)]
            } else {
                vec![body_of(vec![Value::Object(fields)])]
            }
        }
        Ok(Value::Array(operations)) => vec![body_of(operations)],
        Ok(Value::String(path)) => path_bodies(&path),
        Ok(other) => vec![other],
        Err(_) => match std::str::from_utf8(data) {
            Ok(path) => path_bodies(path),
            Err(_) => Vec::new(),
        },
    }
}

fn check(kind: ResourceKind, document: &Document, body: &Value) -> Result<Document, String> {
    let before = document.clone();
    let outcome = apply_patch(kind, document, body);
    assert!(*document == before, "apply_patch changed its input document");
    let patched = outcome.map_err(|error| error.to_string())?;
    if let Ok(once) = normalize(kind, &Value::Object(patched.clone())) {
        let once = Value::Object(once);
        match normalize(kind, &once) {
            Ok(twice) => assert!(
                Value::Object(twice.clone()) == once,
                "{kind:?}: normalising a patched document is not idempotent\n body:  {body}\n once:  {once}\n twice: {}",
                Value::Object(twice)
            ),
            Err(error) => panic!(
                "{kind:?}: a normalised patched document does not normalise\n body: {body}\n once: {once}\n error: {error}"
            ),
        }
    }
    Ok(patched)
}

/// The member ids of a normalised Group document, as `take_members` reads
/// them; `Err` where it refuses them.
fn member_ids(document: &Document) -> Result<BTreeSet<String>, String> {
    let items = match document.get("members") {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(single) => vec![single.clone()],
    };
    let mut ids = BTreeSet::new();
    for item in items {
        let value = item
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| "each member needs a value".to_owned())?;
        if value == GROUP_ID {
            return Err("a group cannot be a member of itself".to_owned());
        }
        ids.insert(value.to_owned());
    }
    Ok(ids)
}

/// What the whole-list path makes of `body`: the document without members,
/// and the member ids.
type Outcome = Result<(Value, BTreeSet<String>), String>;

fn whole_list(patched: Result<Document, String>) -> Outcome {
    let patched = patched?;
    let mut document =
        normalize(ResourceKind::Group, &Value::Object(patched)).map_err(|error| error.to_string())?;
    let ids = member_ids(&document)?;
    document.remove("members");
    Ok((Value::Object(document), ids))
}

/// What the by-id path of `resources::update` makes of `body`, or `None`
/// where it hands the request to the whole-list path.
fn by_id(body: &Value) -> Option<Outcome> {
    let plan = match membership_patch(body) {
        Ok(Some(plan)) => plan,
        Ok(None) => return None,
        Err(error) => return Some(Err(error.to_string())),
    };
    let skipped = &plan.member_operations;
    let patched = match apply_patch_except(ResourceKind::Group, &GROUP_STORED, body, skipped) {
        Ok(patched) => patched,
        Err(error) => return Some(Err(error.to_string())),
    };
    let document = match normalize(ResourceKind::Group, &Value::Object(patched)) {
        Ok(document) => document,
        Err(error) => return Some(Err(error.to_string())),
    };
    if document.contains_key("members") || plan.adds(GROUP_ID) {
        return None;
    }
    let current: BTreeSet<String> = member_ids(&GROUP).ok()?;
    // `patch_members`: the net effect, in request order.
    let mut added: BTreeSet<String> = BTreeSet::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    for step in &plan.steps {
        match step {
            MemberStep::Add(items) => {
                let mut probe = Document::new();
                probe.insert(
                    "displayName".to_owned(),
                    document.get("displayName").cloned().unwrap_or(Value::Null),
                );
                probe.insert("members".to_owned(), Value::Array(items.clone()));
                let probe = match normalize(ResourceKind::Group, &Value::Object(probe)) {
                    Ok(probe) => probe,
                    Err(error) => return Some(Err(error.to_string())),
                };
                let listed = match member_ids(&probe) {
                    Ok(listed) => listed,
                    Err(error) => return Some(Err(error)),
                };
                for id in listed {
                    let kept = removed.remove(&id);
                    if !kept && !current.contains(&id) {
                        added.insert(id);
                    }
                }
            }
            MemberStep::Remove(ids) => {
                for id in ids {
                    if !added.remove(id) && current.contains(id) {
                        removed.insert(id.clone());
                    }
                }
            }
        }
    }
    let ids = current.difference(&removed).cloned().chain(added).collect();
    Some(Ok((Value::Object(document), ids)))
}

fn agree(split: &Outcome, whole: &Outcome) -> bool {
    match (split, whole) {
        (Ok(split), Ok(whole)) => split == whole,
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    for body in bodies(data) {
        let _ = check(ResourceKind::User, &USER, &body);
        let whole = check(ResourceKind::Group, &GROUP, &body);
        if let Some(split) = by_id(&body) {
            let whole = whole_list(whole);
            assert!(
                agree(&split, &whole),
                "the by-id membership path and the whole-list path disagree\n body:     {body}\n by id:    {split:?}\n whole:    {whole:?}"
            );
        }
    }
});
