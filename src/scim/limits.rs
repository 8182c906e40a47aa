//! The documented bounds on what one SCIM request may carry, checked
//! before anything is decided or written (docs/operations.md lists them):
//! the length of a string, the values of one multi-valued attribute, the
//! members one request names, and the operations of one PATCH. A value over
//! a bound is a 400 `invalidValue` (`tooMany` for counts) whose detail
//! names the attribute and the limit.
//!
//! This module owns the numbers and the walk; it must not change a value.

use serde_json::Value;

use crate::error::{Error, InvalidKind};

/// Characters an identifying attribute may hold: `userName`, `externalId`,
/// `displayName` (Entra's userPrincipalName is at most 113; Okta's login
/// 100).
pub const IDENTIFIER_CHARS_MAX: usize = 1024;
/// Bytes any other string may hold (a certificate, a long address).
pub const STRING_BYTES_MAX: usize = 64 * 1024;
/// Values of one multi-valued attribute other than `members`.
pub const VALUES_MAX: usize = 100;
/// Members one request may name: a POST or PUT of a group, or all the
/// operations of one PATCH together. Larger groups are built by PATCHes
/// (as every IdP does).
pub const MEMBERS_PER_REQUEST_MAX: usize = 20_000;
/// Operations of one PATCH request.
pub const PATCH_OPERATIONS_MAX: usize = 1_000;

const IDENTIFIERS: [&str; 3] = ["userName", "externalId", "displayName"];

fn too_long(path: &str, limit: String) -> Error {
    Error::invalid_as(InvalidKind::Value, format!("{path} is longer than {limit}"))
}

/// Checks a canonical document (after normalising): strings and counts.
pub fn check_document(document: &serde_json::Map<String, Value>) -> Result<(), Error> {
    for (key, value) in document {
        check_value(key, value, true)?;
    }
    Ok(())
}

/// Checks a document a PATCH produced: as [`check_document`], but a group's
/// members as a whole are not this request's (the request's own were
/// counted by [`check_patch`]), so only their strings are checked.
pub fn check_patched(document: &serde_json::Map<String, Value>) -> Result<(), Error> {
    for (key, value) in document {
        match value {
            Value::Array(items) if key.eq_ignore_ascii_case("members") => {
                items.iter().try_for_each(|item| check_value(key, item, false))?;
            }
            _ => check_value(key, value, true)?,
        }
    }
    Ok(())
}

fn check_value(path: &str, value: &Value, top: bool) -> Result<(), Error> {
    match value {
        Value::String(text) => {
            let name = path.rsplit(['.', ':']).next().unwrap_or(path);
            if top && IDENTIFIERS.iter().any(|identifier| identifier.eq_ignore_ascii_case(name)) {
                if text.chars().count() > IDENTIFIER_CHARS_MAX {
                    return Err(too_long(path, format!("{IDENTIFIER_CHARS_MAX} characters")));
                }
            } else if text.len() > STRING_BYTES_MAX {
                return Err(too_long(path, format!("{STRING_BYTES_MAX} bytes")));
            }
            Ok(())
        }
        Value::Array(items) => {
            let members = path.eq_ignore_ascii_case("members");
            let limit = if members { MEMBERS_PER_REQUEST_MAX } else { VALUES_MAX };
            if items.len() > limit {
                let hint = if members { "; add more members with PATCH" } else { "" };
                return Err(Error::invalid_as(
                    InvalidKind::TooMany,
                    format!(
                        "{path} has {} values; at most {limit} are accepted{hint}",
                        items.len()
                    ),
                ));
            }
            items.iter().try_for_each(|item| check_value(path, item, false))
        }
        Value::Object(fields) => {
            // An extension's object: its attributes are top-level in it.
            let extension = path.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"));
            fields.iter().try_for_each(|(key, inner)| {
                check_value(&format!("{path}.{key}"), inner, extension && top)
            })
        }
        _ => Ok(()),
    }
}

/// Checks a PATCH's operations: how many, the members they name together,
/// and each value's strings.
pub fn check_patch(operations: &[Value]) -> Result<(), Error> {
    if operations.len() > PATCH_OPERATIONS_MAX {
        return Err(Error::invalid_as(
            InvalidKind::TooMany,
            format!(
                "a PATCH request has {} operations; at most {PATCH_OPERATIONS_MAX} are accepted",
                operations.len()
            ),
        ));
    }
    let mut named = 0usize;
    for operation in operations {
        let Some(value) = operation.get("value").or_else(|| operation.get("Value")) else {
            continue;
        };
        named += match value {
            Value::Array(items) => items.len(),
            Value::Object(fields) => fields
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case("members"))
                .filter_map(|(_, members)| members.as_array().map(Vec::len))
                .sum(),
            _ => 0,
        };
        check_strings(value)?;
    }
    if named > MEMBERS_PER_REQUEST_MAX {
        return Err(Error::invalid_as(
            InvalidKind::TooMany,
            format!(
                "a PATCH request names {named} values; at most {MEMBERS_PER_REQUEST_MAX} are accepted"
            ),
        ));
    }
    Ok(())
}

fn check_strings(value: &Value) -> Result<(), Error> {
    match value {
        Value::String(text) if text.len() > STRING_BYTES_MAX => {
            Err(too_long("a PATCH value", format!("{STRING_BYTES_MAX} bytes")))
        }
        Value::Array(items) => items.iter().try_for_each(check_strings),
        Value::Object(fields) => fields.values().try_for_each(check_strings),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn strings_values_and_members_are_bounded() {
        let ok = document(json!({"userName": "a".repeat(1024), "emails": [{"value": "x"}]}));
        assert!(check_document(&ok).is_ok());
        let long = document(json!({"userName": "a".repeat(1025)}));
        let error = check_document(&long).unwrap_err().to_string();
        assert!(error.contains("userName is longer than 1024 characters"), "{error}");
        let emails: Vec<Value> = (0..101).map(|n| json!({"value": format!("{n}@x")})).collect();
        let error = check_document(&document(json!({"emails": emails}))).unwrap_err().to_string();
        assert!(error.contains("at most 100"), "{error}");
        let members: Vec<Value> = (0..20_001).map(|n| json!({"value": n.to_string()})).collect();
        let error = check_document(&document(json!({"members": members}))).unwrap_err().to_string();
        assert!(error.contains("add more members with PATCH"), "{error}");
        let deep = document(json!({"addresses": [{"formatted": "x".repeat(70_000)}]}));
        assert!(check_document(&deep).is_err());
        let extension = document(json!({
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7"}
        }));
        assert!(check_document(&extension).is_ok());
        let operations: Vec<Value> = (0..1001).map(|_| json!({"op": "add"})).collect();
        assert!(check_patch(&operations).is_err());
        let add = |count: usize| {
            let members: Vec<Value> = (0..count).map(|n| json!({"value": n.to_string()})).collect();
            vec![json!({"op": "add", "path": "members", "value": members})]
        };
        assert!(check_patch(&add(20_000)).is_ok());
        assert!(check_patch(&add(20_001)).is_err());
    }
}
