//! Canonical SCIM documents: an incoming body (POST or PUT) into the form
//! rollcall stores and serves.
//!
//! Normalising is a pure function of the body and the schemas:
//! * attribute names are matched in any case and written in canonical case;
//! * read-only attributes (`id`, `meta`, `groups`, ...) are ignored, never
//!   stored;
//! * a known extension (the Enterprise User) is normalised like the core;
//!   any other schema URN's object is kept exactly as sent, so that custom
//!   extensions (`urn:...:Metadata` with a `costCenter`) can be mapped later;
//! * values are type-checked (booleans also accept Entra ID's "True" and
//!   "False"); `null`, `""`-free empties and empty lists mean "absent";
//! * the required attribute (`userName`, or a Group's `displayName`) must be
//!   there.
//!
//! `password` is accepted and dropped: the log is immutable, so a cleartext
//! secret written into it could never be erased.

use jiff::Timestamp;
use projections::directory::schema::{
    Attribute, AttributeType, ENTERPRISE_USER_SCHEMA, Mutability, ResourceKind, Schema,
    common_attributes,
};
use serde_json::{Map, Value};

use crate::error::{Error, InvalidKind};

/// The attributes a resource is stored with: canonical names, no `id`,
/// `meta` or `schemas` (the server owns those).
pub type Document = Map<String, Value>;

/// Normalises a POST or PUT body for a resource of `kind`.
pub fn normalize(kind: ResourceKind, body: &Value) -> Result<Document, Error> {
    let Value::Object(fields) = body else {
        return Err(Error::invalid_as(
            InvalidKind::Syntax,
            "the request body must be a JSON object",
        ));
    };
    let core = kind.core_schema();
    let extensions = kind.extension_schemas();
    let mut document = Document::new();
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            check_schemas(value)?;
        } else if is_urn(key) {
            normalize_urn_key(core, extensions, key, value, &mut document)?;
        } else {
            normalize_top_level(core, key, value, &mut document)?;
        }
    }
    strip_secrets(&mut document);
    crate::scim::limits::check_document(&document)?;
    let required = core.attributes.iter().filter(|attribute| attribute.required);
    for attribute in required {
        let present = document
            .get(attribute.name)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.trim().is_empty());
        if !present {
            return Err(Error::invalid(format!("{} is required", attribute.name)));
        }
    }
    Ok(document)
}

/// The draft (and SCIM 1.x) URNs some clients still send, read as the
/// final ones: OneLogin's documented templates use both.
const LEGACY_CORE: [&str; 2] = ["urn:scim:schemas:core:2.0", "urn:scim:schemas:core:1.0"];
const LEGACY_ENTERPRISE: [&str; 2] =
    ["urn:scim:schemas:extension:enterprise:2.0", "urn:scim:schemas:extension:enterprise:1.0"];

/// Whether a key names a password, wherever it stands (`password`,
/// `Password `, `urn:...:User:password`, `credentials.password`): such
/// values are never stored.
pub fn is_secret_key(key: &str) -> bool {
    // Any name the key is made of: `urn:...:credentials.password` too.
    key.split([':', '.']).any(|name| name.trim().eq_ignore_ascii_case("password"))
}

/// Removes every password-named key, at any depth (custom extensions
/// included).
fn strip_secrets(document: &mut Document) {
    document.retain(|key, _| !is_secret_key(key));
    for value in document.values_mut() {
        strip_secrets_in(value);
    }
}

fn strip_secrets_in(value: &mut Value) {
    match value {
        Value::Object(fields) => strip_secrets(fields),
        Value::Array(items) => items.iter_mut().for_each(strip_secrets_in),
        _ => {}
    }
}

/// A top-level key that starts with `urn:`: a schema's object of
/// attributes, or one attribute qualified by its schema's URN
/// (`urn:ietf:params:scim:schemas:core:2.0:User:userName`,
/// `urn:...:enterprise:2.0:User:department`).
fn normalize_urn_key(
    core: &Schema,
    extensions: &[&Schema],
    key: &str,
    value: &Value,
    document: &mut Document,
) -> Result<(), Error> {
    // OneLogin still sends the draft URNs of SCIM 2.0's schemas.
    let legacy = |prefix: &str, current: &str| {
        key.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .map(|_| format!("{current}{}", key.get(prefix.len()..).unwrap_or_default()))
    };
    let current_key = LEGACY_ENTERPRISE
        .iter()
        .find_map(|prefix| legacy(prefix, ENTERPRISE_USER_SCHEMA))
        .or_else(|| LEGACY_CORE.iter().find_map(|prefix| legacy(prefix, core.id)));
    let key = current_key.as_deref().unwrap_or(key);
    let known = std::iter::once(core).chain(extensions.iter().copied());
    if known.clone().any(|schema| schema.id.eq_ignore_ascii_case(key)) {
        return normalize_schema_object(core, extensions, key, value, document);
    }
    if let Some((prefix, name)) = key.rsplit_once(':')
        && let Some(schema) = known.clone().find(|schema| schema.id.eq_ignore_ascii_case(prefix))
    {
        if schema.id == core.id {
            return normalize_top_level(core, name, value, document);
        }
        let mut wrapped = Map::new();
        wrapped.insert(name.to_owned(), value.clone());
        let mut attributes = Document::new();
        normalize_schema_object(
            core,
            extensions,
            schema.id,
            &Value::Object(wrapped),
            &mut attributes,
        )?;
        if let Some(Value::Object(new)) = attributes.remove(schema.id) {
            let slot =
                document.entry(schema.id.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(existing) = slot {
                existing.extend(new);
            }
        }
        return Ok(());
    }
    // Unknown names under the core schemas' URNs are not extensions.
    if key.to_ascii_lowercase().starts_with("urn:ietf:params:scim:schemas:core:") {
        tracing::debug!(attribute = key, "ignoring an attribute no schema defines");
        return Ok(());
    }
    normalize_schema_object(core, extensions, key, value, document)
}

fn is_urn(key: &str) -> bool {
    key.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"))
}

fn check_schemas(value: &Value) -> Result<(), Error> {
    let valid = match value {
        Value::Array(items) => items.iter().all(Value::is_string),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_as(InvalidKind::Syntax, "schemas must be a list of schema URNs"))
    }
}

/// A top-level key that is a schema URN: the core schema's or an
/// extension's attributes in an object.
fn normalize_schema_object(
    core: &Schema,
    extensions: &[&Schema],
    key: &str,
    value: &Value,
    document: &mut Document,
) -> Result<(), Error> {
    if value.is_null() {
        return Ok(());
    }
    let known = std::iter::once(core)
        .chain(extensions.iter().copied())
        .find(|schema| schema.id.eq_ignore_ascii_case(key));
    let Some(schema) = known else {
        // An extension rollcall does not know: kept as sent, to be mapped.
        document.insert(key.to_owned(), value.clone());
        return Ok(());
    };
    let Value::Object(fields) = value else {
        return Err(Error::invalid(format!("{key} must be an object of attributes")));
    };
    if schema.id == core.id {
        for (name, value) in fields {
            normalize_top_level(core, name, value, document)?;
        }
        return Ok(());
    }
    let mut attributes = Document::new();
    for (name, value) in fields {
        match schema.attribute(name) {
            Some(attribute) => {
                let path = format!("{}:{}", schema.id, attribute.name);
                if let Some(value) = normalize_attribute(attribute, value, &path)? {
                    attributes.insert(attribute.name.to_owned(), value);
                }
            }
            // Unknown attributes of a known extension are kept too.
            None if !value.is_null() => {
                attributes.insert(name.clone(), value.clone());
            }
            None => {}
        }
    }
    if !attributes.is_empty() {
        document.insert(schema.id.to_owned(), Value::Object(attributes));
    }
    Ok(())
}

fn normalize_top_level(
    core: &Schema,
    key: &str,
    value: &Value,
    document: &mut Document,
) -> Result<(), Error> {
    let common = common_attributes();
    let attribute = match common.iter().find(|attribute| attribute.name.eq_ignore_ascii_case(key)) {
        Some(attribute) => attribute,
        None => match core.attribute(key) {
            Some(attribute) => attribute,
            None => {
                // RFC 7644 lets a server ignore attributes it does not
                // define; extensions come under their URN instead.
                tracing::debug!(attribute = key, "ignoring an attribute no schema defines");
                return Ok(());
            }
        },
    };
    if attribute.mutability == Mutability::ReadOnly || attribute.name == "password" {
        return Ok(());
    }
    if let Some(value) = normalize_attribute(attribute, value, attribute.name)? {
        document.insert(attribute.name.to_owned(), value);
    }
    Ok(())
}

/// Checks and canonicalises one attribute's value; `None` means absent.
fn normalize_attribute(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, Error> {
    if value.is_null() {
        return Ok(None);
    }
    if !attribute.multi_valued {
        return normalize_single(attribute, value, path);
    }
    // A lone value where a list belongs is read as a list of one.
    let items = match value {
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    };
    let mut normalized = Vec::with_capacity(items.len());
    for item in items {
        if let Some(item) = normalize_single(attribute, item, path)? {
            normalized.push(item);
        }
    }
    Ok((!normalized.is_empty()).then_some(Value::Array(normalized)))
}

fn normalize_single(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, Error> {
    if value.is_null() {
        return Ok(None);
    }
    if attribute.kind != AttributeType::Complex {
        return normalize_simple(attribute, value, path).map(Some);
    }
    let bare;
    let fields = match value {
        Value::Object(fields) => fields,
        // A bare value for a complex attribute that has a `value` (Entra
        // ID's manager as a plain id); an empty one clears it.
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(_) | Value::Number(_) | Value::Bool(_)
            if attribute.sub_attribute("value").is_some() =>
        {
            bare = Map::from_iter([("value".to_owned(), value.clone())]);
            &bare
        }
        _ => return Err(Error::invalid(format!("{path} must be an object"))),
    };
    let decoded;
    let fields = match decode_app_role(attribute, fields) {
        Some(role) => {
            decoded = role;
            &decoded
        }
        None => fields,
    };
    let mut normalized = Document::new();
    for (name, value) in fields {
        let Some(sub_attribute) = attribute.sub_attribute(name) else {
            tracing::debug!(
                attribute = path,
                sub_attribute = name,
                "ignoring a sub-attribute no schema defines"
            );
            continue;
        };
        if sub_attribute.mutability == Mutability::ReadOnly || value.is_null() {
            continue;
        }
        let sub_path = format!("{path}.{}", sub_attribute.name);
        normalized.insert(
            sub_attribute.name.to_owned(),
            normalize_simple(sub_attribute, value, &sub_path)?,
        );
    }
    Ok((!normalized.is_empty()).then_some(Value::Object(normalized)))
}

/// Entra ID sends app-role assignments as a JSON-encoded object in a role's
/// `value` (`{"value": "{\"id\":\"...\",\"value\":\"Admin\",\"displayName\":\"Admin\"}"}`):
/// read it as the role it encodes. A role encoded inside an encoded role is
/// decoded on, to the end, so normalising the result again changes nothing
/// (found by fuzzing: fuzz/regressions/normalize). Each step reads a value
/// out of the text of the one before, so it ends.
fn decode_app_role(
    attribute: &Attribute,
    fields: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    if !matches!(attribute.name, "roles" | "entitlements") {
        return None;
    }
    let mut role = decode_role_once(fields)?;
    while let Some(inner) = decode_role_once(&role) {
        role = inner;
    }
    Some(role)
}

fn decode_role_once(fields: &Map<String, Value>) -> Option<Map<String, Value>> {
    let encoded = fields.iter().find(|(key, _)| key.eq_ignore_ascii_case("value"))?.1.as_str()?;
    let Ok(Value::Object(inner)) = serde_json::from_str::<Value>(encoded.trim()) else {
        return None;
    };
    let value = inner.iter().find(|(key, _)| key.eq_ignore_ascii_case("value"))?.1.clone();
    let mut role = fields.clone();
    role.retain(|key, _| !key.eq_ignore_ascii_case("value"));
    role.insert("value".to_owned(), value);
    if let Some(display) = inner
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("displayName"))
        .map(|(_, v)| v.clone())
    {
        role.entry("display".to_owned()).or_insert(display);
    }
    Some(role)
}

/// Checks and canonicalises one simple value (also used by PATCH).
pub(crate) fn normalize_simple(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Value, Error> {
    let wrong = |expected: &str| Error::invalid(format!("{path} must be {expected}"));
    match attribute.kind {
        AttributeType::String | AttributeType::Reference | AttributeType::Binary => {
            value.as_str().map(|_| value.clone()).ok_or_else(|| wrong("a string"))
        }
        AttributeType::DateTime => {
            let text = value.as_str().ok_or_else(|| wrong("a date and time string"))?;
            text.parse::<Timestamp>()
                .map(|_| value.clone())
                .map_err(|_| wrong("an RFC 3339 date and time such as 2026-03-01T09:30:00Z"))
        }
        AttributeType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            // Entra ID sends booleans as "True" and "False".
            Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        AttributeType::Integer => match value {
            Value::Number(number) if number.is_i64() || number.is_u64() => Ok(value.clone()),
            _ => Err(wrong("an integer")),
        },
        AttributeType::Decimal => {
            value.is_number().then(|| value.clone()).ok_or_else(|| wrong("a number"))
        }
        AttributeType::Complex => Err(wrong("a simple value, not an object")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn check(kind: ResourceKind, body: Value, expected: Value) {
        let normalized = normalize(kind, &body).map(Value::Object);
        assert_eq!(normalized.as_ref().map_err(ToString::to_string), Ok(&expected), "{body}");
    }

    /// fuzz/regressions/normalize/double-encoded-app-role: a role encoded
    /// inside an encoded role is read to the end at once, so normalising
    /// twice gives what normalising once gave.
    #[test]
    fn an_app_role_encoded_twice_is_read_to_the_end_at_once() {
        let body = json!({"userName": "a", "roles": [{"value": "{\"value\": \"{\\\"value\\\": \\\"x\\\"}\"}"}]});
        let once = normalize(ResourceKind::User, &body).unwrap();
        assert_eq!(once["roles"], json!([{"value": "x"}]), "{body}");
        let twice = normalize(ResourceKind::User, &Value::Object(once.clone())).unwrap();
        assert_eq!(twice, once);
    }

    fn check_error(kind: ResourceKind, body: Value, scim_type: &str, needle: &str) {
        match normalize(kind, &body) {
            Ok(document) => panic!("{body} normalised to {document:?}"),
            Err(Error::Invalid { kind, message }) => {
                assert_eq!(kind.scim_type(), scim_type, "{body}: {message}");
                assert!(message.contains(needle), "{body}: {message}");
            }
            Err(other) => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn names_take_their_canonical_case_and_read_only_attributes_are_dropped() {
        check(
            ResourceKind::User,
            json!({
                "SCHEMAS": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "client-chosen", "meta": {"created": "2001-01-01T00:00:00Z"},
                "USERNAME": "bjensen@example.com", "externalid": "00u1",
                "Name": {"GivenName": "Barbara", "familyname": "Jensen", "nonsense": 1},
                "Emails": [{"VALUE": "bjensen@example.com", "Type": "work", "PRIMARY": true}],
                "groups": [{"value": "g1"}], "password": "hunter2", "favouriteColour": "blue",
                "active": true
            }),
            json!({
                "userName": "bjensen@example.com", "externalId": "00u1",
                "name": {"givenName": "Barbara", "familyName": "Jensen"},
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
                "active": true
            }),
        );
    }

    #[test]
    fn extensions_known_and_unknown_are_kept() {
        let custom = "urn:ietf:params:scim:schemas:extension:2.0:Metadata";
        check(
            ResourceKind::User,
            json!({
                "userName": "b",
                ENTERPRISE.to_uppercase(): {"EmployeeNumber": "701984", "manager": {"value": "26118915", "displayName": "ignored"}, "badge": "A1"},
                custom: {"costCenter": "CC-42", "folders": ["a", "b"]}
            }),
            json!({
                "userName": "b",
                ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}, "badge": "A1"},
                custom: {"costCenter": "CC-42", "folders": ["a", "b"]}
            }),
        );
        // Core attributes may come wrapped in the core schema's URN.
        check(
            ResourceKind::User,
            json!({"urn:ietf:params:scim:schemas:core:2.0:User": {"userName": "b", "title": "CEO"}}),
            json!({"userName": "b", "title": "CEO"}),
        );
    }

    #[test]
    fn values_are_type_checked_and_empties_are_absent() {
        check(
            ResourceKind::User,
            json!({"userName": "b", "active": "False", "title": null, "emails": [], "phoneNumbers": [null],
                   "name": {"givenName": null}, "addresses": {"locality": "Oslo"}}),
            json!({"userName": "b", "active": false, "addresses": [{"locality": "Oslo"}]}),
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "b", "active": "yes"}),
            "invalidValue",
            "active must be true or false",
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "b", "title": 7}),
            "invalidValue",
            "title must be a string",
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "b", "name": "Barbara"}),
            "invalidValue",
            "name must be an object",
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "b", "emails": [{"value": "x", "primary": "sometimes"}]}),
            "invalidValue",
            "emails.primary must be true or false",
        );
        check(
            ResourceKind::User,
            json!({"userName": "b", ENTERPRISE: {"manager": "26118915", "department": ""}}),
            json!({"userName": "b", ENTERPRISE: {"manager": {"value": "26118915"}, "department": ""}}),
        );
        check(
            ResourceKind::User,
            json!({"userName": "b", ENTERPRISE: {"manager": ""}}),
            json!({"userName": "b"}),
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "b", "name": ["x"]}),
            "invalidValue",
            "name must be an object",
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "b", ENTERPRISE: "x"}),
            "invalidValue",
            "must be an object of attributes",
        );
    }

    #[test]
    fn urn_qualified_attributes_go_to_their_schema_and_passwords_never_stay() {
        check(
            ResourceKind::User,
            json!({
                "urn:ietf:params:scim:schemas:core:2.0:User:userName": "b",
                "urn:ietf:params:scim:schemas:core:2.0:User:password": "hunter2",
                "urn:ietf:params:scim:schemas:core:2.0:User:nonsense": "x",
                ENTERPRISE.to_owned() + ":department": "Sales",
                ENTERPRISE: {"employeeNumber": "7", "Password": "hunter2"},
                "urn:example:custom": {"password ": "hunter2", "nested": [{"PASSWORD": "hunter2", "keep": 1}]}
            }),
            json!({
                "userName": "b",
                ENTERPRISE: {"department": "Sales", "employeeNumber": "7"},
                "urn:example:custom": {"nested": [{"keep": 1}]}
            }),
        );
    }

    #[test]
    fn entra_app_roles_arrive_json_encoded_and_are_decoded() {
        check(
            ResourceKind::User,
            json!({"userName": "b", "roles": [
                {"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"},
                {"value": "{\"id\":\"7c3b\",\"value\":\"Editor\",\"displayName\":\"Content Editor\"}"}
            ]}),
            json!({"userName": "b", "roles": [
                {"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"},
                {"value": "Editor", "display": "Content Editor"}
            ]}),
        );
    }

    #[test]
    fn onelogin_legacy_urns_are_read_as_the_final_ones() {
        check(
            ResourceKind::User,
            json!({
                "schemas": ["urn:scim:schemas:core:2.0", "urn:scim:schemas:extension:enterprise:2.0"],
                "urn:scim:schemas:core:2.0": {"userName": "b"},
                "urn:scim:schemas:extension:enterprise:2.0": {"department": "Sales"},
                "urn:scim:schemas:extension:enterprise:2.0:employeeNumber": "7"
            }),
            json!({"userName": "b", ENTERPRISE: {"department": "Sales", "employeeNumber": "7"}}),
        );
        check(
            ResourceKind::User,
            json!({
                "schemas": ["urn:scim:schemas:core:1.0", "urn:scim:schemas:extension:enterprise:1.0"],
                "userName": "c",
                "urn:scim:schemas:extension:enterprise:1.0": {"division": "West"}
            }),
            json!({"userName": "c", ENTERPRISE: {"division": "West"}}),
        );
    }

    #[test]
    fn required_attributes_and_body_shape() {
        check_error(
            ResourceKind::User,
            json!({"displayName": "no user name"}),
            "invalidValue",
            "userName is required",
        );
        check_error(
            ResourceKind::User,
            json!({"userName": "  "}),
            "invalidValue",
            "userName is required",
        );
        check_error(
            ResourceKind::User,
            json!({"userName": 5}),
            "invalidValue",
            "userName must be a string",
        );
        check_error(ResourceKind::User, json!(["userName"]), "invalidSyntax", "JSON object");
        check_error(
            ResourceKind::User,
            json!({"userName": "b", "schemas": "x"}),
            "invalidSyntax",
            "schemas",
        );
        check_error(
            ResourceKind::Group,
            json!({"members": []}),
            "invalidValue",
            "displayName is required",
        );
        check(
            ResourceKind::Group,
            json!({"displayName": "Admins", "members": [{"value": "u1", "display": "ignored", "type": "User"}]}),
            json!({"displayName": "Admins", "members": [{"value": "u1", "type": "User"}]}),
        );
    }
}
