//! In-memory evaluation of a SCIM filter against one JSON value: how PATCH
//! picks the elements a value path (`emails[type eq "work"]`) selects, and
//! the reference that the SQL translation of filters is tested against.
//!
//! The rules, which the SQL translation in `projections::directory::query`
//! follows too:
//! * names are matched case-insensitively, and the attribute's type in the
//!   schema decides how values compare: strings (and references, binaries)
//!   fold case with `str::to_lowercase` unless the attribute is caseExact,
//!   numbers compare numerically, dateTimes by instant, booleans only with
//!   `eq` and `ne`;
//! * an attribute no schema defines (a custom extension's) compares as a
//!   case-insensitive string;
//! * a multi-valued attribute matches when any of its values matches, and a
//!   multi-valued complex attribute compared without a sub-attribute
//!   compares its `value` (`emails co "@example.com"`);
//! * `pr` means present: not null, not an empty string, not an empty list;
//!   `eq null` means absent, and `ne` is `not (eq)`, so an absent attribute
//!   is "not equal" to every value;
//! * a comparison that cannot apply (`gt` on a boolean, a number against a
//!   date, a complex attribute without a sub-attribute) is false. The SQL
//!   translation rejects those filters as invalid instead, so the two agree
//!   on every filter both accept.

use std::borrow::Cow;
use std::cmp::Ordering;

use jiff::Timestamp;
use projections::directory::filter::{AttrPath, CompareOp, CompareValue, Filter};
use projections::directory::schema::{
    Attribute, AttributeType, GROUP_SCHEMA, ResourceKind, USER_SCHEMA, resolve,
};
use serde_json::Value;

/// Whether `element` matches `filter`.
///
/// With `within` set, `element` is one value of that multi-valued complex
/// attribute (one of a User's `emails`, say), and the filter's paths name
/// its sub-attributes, as inside `emails[type eq "work"]`. Without it,
/// `element` is a whole resource of `kind` (its canonical document, or the
/// resource as served), and paths may be qualified by a schema URN or be
/// value paths themselves.
pub fn matches(
    kind: ResourceKind,
    element: &Value,
    filter: &Filter,
    within: Option<&Attribute>,
) -> bool {
    let scope = match within {
        Some(attribute) => Scope::Element(Some(attribute)),
        None => Scope::Resource(kind),
    };
    evaluate(scope, element, filter)
}

/// The values a path selects in a User's canonical document, for the
/// member attribute mapping: `[URN ":"] name ["[" filter "]"] ["." sub]`.
///
/// Elements of a multi-valued attribute are filtered by `filter` (with the
/// same typed comparisons as everywhere else) and come with a `primary`
/// one first, so "the email" of a user is its primary email when it has
/// one. A bare name that no core attribute has is looked up in the
/// extensions, as `resolve` does.
pub fn select<'v>(
    kind: ResourceKind,
    document: &'v serde_json::Map<String, Value>,
    path: &AttrPath,
    filter: Option<&Filter>,
) -> Vec<&'v Value> {
    let in_map = |map: &'v serde_json::Map<String, Value>, name: &str| -> Option<&'v Value> {
        map.get(name).or_else(|| {
            map.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
        })
    };
    let attribute = match &path.schema {
        Some(urn) if !urn.eq_ignore_ascii_case(core_schema_id(kind)) => {
            in_map(document, urn).and_then(|holder| field(holder, &path.name))
        }
        Some(_) => in_map(document, &path.name),
        None => in_map(document, &path.name).or_else(|| {
            document
                .iter()
                .filter(|(key, _)| key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")))
                .find_map(|(_, holder)| field(holder, &path.name))
        }),
    };
    let mut elements = flatten(attribute);
    if let Some(filter) = filter {
        let whole = AttrPath { sub_attribute: None, ..path.clone() };
        let definition = resolve(kind, &whole).map(|resolved| resolved.target().clone());
        elements.retain(|element| evaluate(Scope::Element(definition.as_ref()), element, filter));
    }
    // Stable: among non-primary elements the document's order stays.
    elements.sort_by_key(|element| field(element, "primary") != Some(&Value::Bool(true)));
    match &path.sub_attribute {
        Some(sub_attribute) => elements
            .into_iter()
            .flat_map(|element| flatten(field(element, sub_attribute)))
            .collect(),
        None => elements,
    }
}

/// Whether one value of the multi-valued attribute at `path` (of a
/// resource of `kind`) matches the value filter `filter`, as inside
/// `emails[type eq "work"]`.
pub fn element_matches(
    kind: ResourceKind,
    path: &AttrPath,
    element: &Value,
    filter: &Filter,
) -> bool {
    let whole = AttrPath { sub_attribute: None, ..path.clone() };
    let definition = resolve(kind, &whole).map(|resolved| resolved.target().clone());
    evaluate(Scope::Element(definition.as_ref()), element, filter)
}

/// What the paths of a filter are relative to.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// A whole resource of this kind.
    Resource(ResourceKind),
    /// One value of a multi-valued attribute, whose definition is given
    /// when a schema defines the attribute (`None` for a custom extension's).
    Element(Option<&'a Attribute>),
}

fn evaluate(scope: Scope<'_>, element: &Value, filter: &Filter) -> bool {
    match filter {
        Filter::And(left, right) => {
            evaluate(scope, element, left) && evaluate(scope, element, right)
        }
        Filter::Or(left, right) => {
            evaluate(scope, element, left) || evaluate(scope, element, right)
        }
        Filter::Not(inner) => !evaluate(scope, element, inner),
        Filter::Present { path } => match lookup(scope, element, path) {
            Some(found) => found.values.into_iter().any(is_present),
            None => false,
        },
        // `ne` is `not (eq)`: an absent attribute is not equal to anything,
        // and no value of a multi-valued one may be equal.
        Filter::Compare { path, op: CompareOp::NotEqual, value } => {
            !compare(scope, element, path, CompareOp::Equal, value)
        }
        Filter::Compare { path, op, value } => compare(scope, element, path, *op, value),
        Filter::ValuePath { path, filter } => value_path(scope, element, path, filter),
    }
}

/// The values a path reads, and the definition of what it names (`None`
/// when no schema defines it).
#[derive(Debug)]
struct Found<'v> {
    values: Vec<&'v Value>,
    definition: Option<Attribute>,
}

/// Reads the values at `path`. `None` means the path cannot name anything
/// in this scope (a schema URN or a sub-attribute's sub-attribute inside a
/// value filter, an unknown sub-attribute of a known attribute).
fn lookup<'v>(scope: Scope<'_>, element: &'v Value, path: &AttrPath) -> Option<Found<'v>> {
    match scope {
        Scope::Resource(kind) => {
            let holder = match &path.schema {
                Some(urn) if !urn.eq_ignore_ascii_case(core_schema_id(kind)) => field(element, urn),
                _ => Some(element),
            };
            let attribute = holder.and_then(|holder| field(holder, &path.name));
            let mut values = flatten(attribute);
            if let Some(sub_attribute) = &path.sub_attribute {
                values = values
                    .into_iter()
                    .flat_map(|value| flatten(field(value, sub_attribute)))
                    .collect();
            }
            let definition = resolve(kind, path).map(|resolved| resolved.target().clone());
            Some(Found { values, definition })
        }
        Scope::Element(within) => {
            if path.schema.is_some() || path.sub_attribute.is_some() {
                return None;
            }
            let definition = match within {
                Some(attribute) => Some(attribute.sub_attribute(&path.name)?.clone()),
                None => None,
            };
            Some(Found { values: flatten(field(element, &path.name)), definition })
        }
    }
}

fn core_schema_id(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => USER_SCHEMA,
        ResourceKind::Group => GROUP_SCHEMA,
    }
}

/// The member of an object named `name`: the exact key first, then any
/// key equal to it but for case (RFC 7643 section 2.1).
fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| {
        object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    })
}

/// A value as the list of values it holds: the elements of a list, the
/// value itself otherwise; nulls hold nothing.
fn flatten(value: Option<&Value>) -> Vec<&Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().filter(|item| !item.is_null()).collect(),
        Some(single) => vec![single],
    }
}

/// `pr`: not null, not an empty string, not a list or object without any
/// present value.
pub(crate) fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(fields) => fields.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn compare(
    scope: Scope<'_>,
    element: &Value,
    path: &AttrPath,
    op: CompareOp,
    literal: &CompareValue,
) -> bool {
    let Some(found) = lookup(scope, element, path) else {
        return false;
    };
    let Found { mut values, mut definition } = found;
    // A complex attribute compared as a whole compares its `value`
    // (RFC 7644 section 3.4.2.2, `emails co "@example.com"`); only the
    // multi-valued ones have one to compare, as the SQL translation says.
    let complex = match &definition {
        Some(attribute) => attribute.kind == AttributeType::Complex,
        None => values.iter().any(|value| value.is_object()),
    };
    if complex {
        if definition.as_ref().is_some_and(|attribute| !attribute.multi_valued) {
            return false;
        }
        definition = definition.and_then(|attribute| attribute.sub_attribute("value").cloned());
        values = values.into_iter().flat_map(|value| flatten(field(value, "value"))).collect();
    }
    match literal {
        CompareValue::Null => op == CompareOp::Equal && !values.into_iter().any(is_present),
        literal => {
            values.into_iter().any(|value| compare_value(definition.as_ref(), value, op, literal))
        }
    }
}

/// One stored value against a literal, by the type of the attribute.
fn compare_value(
    definition: Option<&Attribute>,
    stored: &Value,
    op: CompareOp,
    literal: &CompareValue,
) -> bool {
    let (kind, case_exact) = match definition {
        Some(attribute) => (attribute.kind, attribute.case_exact),
        None => (AttributeType::String, false),
    };
    match kind {
        AttributeType::String | AttributeType::Reference | AttributeType::Binary => {
            let Some(stored) = stored.as_str() else {
                return false;
            };
            // A number or boolean literal against a string attribute
            // compares as its text (`employeeNumber eq 701984`).
            let text: Cow<'_, str> = match literal {
                CompareValue::String(text) => Cow::Borrowed(text),
                CompareValue::Number(number) => Cow::Owned(number.to_string()),
                CompareValue::Bool(truth) => Cow::Owned(truth.to_string()),
                CompareValue::Null => return false,
            };
            compare_text(stored, &text, case_exact, op)
        }
        AttributeType::Boolean => match (stored, literal) {
            (Value::Bool(stored), CompareValue::Bool(literal)) => match op {
                CompareOp::Equal => stored == literal,
                CompareOp::NotEqual => stored != literal,
                _ => false,
            },
            _ => false,
        },
        AttributeType::Integer | AttributeType::Decimal => match (stored, literal) {
            (Value::Number(stored), CompareValue::Number(literal)) => {
                number_ordering(stored, literal).is_some_and(|ordering| ordered(op, ordering))
            }
            _ => false,
        },
        AttributeType::DateTime => {
            let (Some(stored), CompareValue::String(literal)) = (stored.as_str(), literal) else {
                return false;
            };
            match (stored.parse::<Timestamp>(), literal.parse::<Timestamp>()) {
                (Ok(stored), Ok(literal)) => ordered(op, stored.cmp(&literal)),
                _ => false,
            }
        }
        AttributeType::Complex => false,
    }
}

fn compare_text(stored: &str, literal: &str, case_exact: bool, op: CompareOp) -> bool {
    // `str::to_lowercase` is the fold `scim_fold` applies in SQL, so that
    // both sides agree for every script, not only ASCII.
    let (stored, literal): (Cow<'_, str>, Cow<'_, str>) = if case_exact {
        (Cow::Borrowed(stored), Cow::Borrowed(literal))
    } else {
        (Cow::Owned(stored.to_lowercase()), Cow::Owned(literal.to_lowercase()))
    };
    match op {
        CompareOp::Contains => stored.contains(literal.as_ref()),
        CompareOp::StartsWith => stored.starts_with(literal.as_ref()),
        CompareOp::EndsWith => stored.ends_with(literal.as_ref()),
        other => ordered(other, stored.cmp(&literal)),
    }
}

/// Whether `ordering` (stored against literal) satisfies an ordering or
/// equality operator; the substring operators never do.
fn ordered(op: CompareOp, ordering: Ordering) -> bool {
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::GreaterThan => ordering == Ordering::Greater,
        CompareOp::GreaterOrEqual => ordering != Ordering::Less,
        CompareOp::LessThan => ordering == Ordering::Less,
        CompareOp::LessOrEqual => ordering != Ordering::Greater,
        CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith => false,
    }
}

/// Integers compare exactly; anything else as floating point.
fn number_ordering(stored: &serde_json::Number, literal: &serde_json::Number) -> Option<Ordering> {
    if let (Some(stored), Some(literal)) = (stored.as_i64(), literal.as_i64()) {
        return Some(stored.cmp(&literal));
    }
    if let (Some(stored), Some(literal)) = (stored.as_u64(), literal.as_u64()) {
        return Some(stored.cmp(&literal));
    }
    stored.as_f64()?.partial_cmp(&literal.as_f64()?)
}

/// `path[filter]`: some value of the multi-valued attribute matches.
fn value_path(scope: Scope<'_>, element: &Value, path: &AttrPath, filter: &Filter) -> bool {
    // Value paths do not nest: inside one, there is nothing to select from.
    if !matches!(scope, Scope::Resource(_)) || path.sub_attribute.is_some() {
        return false;
    }
    let Some(Found { values, definition }) = lookup(scope, element, path) else {
        return false;
    };
    if let Some(attribute) = &definition
        && (!attribute.multi_valued || attribute.kind != AttributeType::Complex)
    {
        return false;
    }
    let inner = Scope::Element(definition.as_ref());
    values.into_iter().any(|value| evaluate(inner, value, filter))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::filter::parse_filter;

    #[test]
    fn mapping_sources_select_primary_filtered_extension_and_custom_values() {
        let document = json!({
            "userName": "ann",
            "emails": [
                {"value": "home@example.com", "type": "home"},
                {"value": "work@example.com", "type": "work", "primary": true}
            ],
            "phoneNumbers": [{"value": "+1", "type": "mobile"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "R&D", "manager": {"value": "boss"}
            },
            "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User": {
                "folders": ["a", "b"]
            }
        });
        let document = document.as_object().unwrap_or_else(|| unreachable!());
        let select_text = |path: &str, filter: Option<&str>| -> Vec<Value> {
            let path =
                crate::model::filter::attribute_path(path).unwrap_or_else(|e| unreachable!("{e}"));
            let filter =
                filter.map(|text| parse_filter(text).unwrap_or_else(|e| unreachable!("{e}")));
            select(ResourceKind::User, document, &path, filter.as_ref())
                .into_iter()
                .cloned()
                .collect()
        };
        // Unfiltered: the primary first.
        assert_eq!(select_text("emails.value", None)[0], json!("work@example.com"));
        assert_eq!(
            select_text("emails.value", Some("primary eq true")),
            [json!("work@example.com")]
        );
        assert_eq!(
            select_text("emails.value", Some("type eq \"home\"")),
            [json!("home@example.com")]
        );
        assert_eq!(select_text("phoneNumbers.value", Some("type eq \"mobile\"")), [json!("+1")]);
        assert!(select_text("phoneNumbers.value", Some("type eq \"work\"")).is_empty());
        let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        assert_eq!(select_text(&format!("{enterprise}:department"), None), [json!("R&D")]);
        assert_eq!(select_text(&format!("{enterprise}:manager.value"), None), [json!("boss")]);
        // A bare name only an extension has, and a custom extension's list.
        assert_eq!(select_text("department", None), [json!("R&D")]);
        assert_eq!(
            select_text(
                "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:folders",
                None
            ),
            [json!("a"), json!("b")]
        );
        assert!(select_text("title", None).is_empty());
    }

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const CUSTOM: &str = "urn:ietf:params:scim:schemas:extension:2.0:Metadata";

    fn user() -> Value {
        json!({
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Ext-42",
            "userName": "BJensen@Example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs Jensen",
            "title": "",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "phoneNumbers": [],
            "meta": {"created": "2011-08-01T18:29:49.793Z", "lastModified": "2011-08-01T20:31:02Z"},
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}},
            CUSTOM: {"costCenter": "CC-42", "level": 7, "tags": ["Blue", "green"]}
        })
    }

    /// The single check of the evaluator on whole resources: filter text,
    /// whether the user above matches it.
    fn check_user(cases: &[(&str, bool)]) {
        let user = user();
        for (text, expected) in cases {
            let filter = parse_filter(text).unwrap();
            assert_eq!(matches(ResourceKind::User, &user, &filter, None), *expected, "{text}");
        }
    }

    #[test]
    fn strings_fold_case_unless_case_exact() {
        check_user(&[
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#, true),
            (r#"userName ne "bjensen@example.com""#, false),
            (r#"userName ne "someone""#, true),
            (r#"userName co "JENSEN@""#, true),
            (r#"userName co "smith""#, false),
            (r#"userName sw "bj""#, true),
            (r#"userName sw "jensen""#, false),
            (r#"userName ew ".COM""#, true),
            (r#"userName ew ".org""#, false),
            (r#"userName gt "a""#, true),
            (r#"userName gt "c""#, false),
            (r#"userName ge "bjensen@example.com""#, true),
            (r#"userName lt "c""#, true),
            (r#"userName lt "bjensen@example.com""#, false),
            (r#"userName le "BJENSEN@EXAMPLE.COM""#, true),
            // externalId and id are caseExact.
            (r#"externalId eq "Ext-42""#, true),
            (r#"externalId eq "ext-42""#, false),
            (r#"externalId sw "ext""#, false),
            (r#"externalId co "t-4""#, true),
            (r#"id eq "2819c223-7f76-453a-919d-413861904646""#, true),
            (r#"name.givenName eq "barbara""#, true),
            (r#"name.familyName ew "SEN""#, true),
            // Folding is Unicode's, not only ASCII's.
            (r#"displayName eq "BABS JENSEN""#, true),
            // A number literal against a string compares as its text.
            (&format!("{ENTERPRISE}:employeeNumber eq 701984"), true),
        ]);
        let greek = json!({"userName": "ΣΟΦΙΑ"});
        let filter = parse_filter(r#"userName eq "σοφια""#).unwrap();
        assert!(matches(ResourceKind::User, &greek, &filter, None));
    }

    #[test]
    fn booleans_compare_only_for_equality() {
        check_user(&[
            ("active eq true", true),
            ("active eq false", false),
            ("active ne false", true),
            ("active ne true", false),
            ("ACTIVE EQ TRUE", true),
            ("active gt false", false),
            ("active co true", false),
            (r#"active eq "true""#, false),
            ("emails[primary eq true]", true),
            // An absent boolean is not equal to anything, so it is `ne`.
            ("emails[type eq \"home\" and primary eq true]", false),
            ("emails[type eq \"home\" and primary ne true]", true),
        ]);
    }

    #[test]
    fn numbers_compare_numerically() {
        let element = json!({"level": 7, "score": 2.5, "big": 18446744073709551615u64});
        let level = integer_attribute();
        let cases = [
            ("level eq 7", true),
            ("level eq 7.0", true),
            ("level ne 7", false),
            ("level gt 6", true),
            ("level gt 10", false),
            ("level ge 7", true),
            ("level lt 10", true),
            ("level lt -1", false),
            ("level le 7", true),
            ("level co 7", false),
            (r#"level eq "7""#, false),
            ("score gt 2", true),
            ("score lt 2.75", true),
            ("score eq 2.5", true),
            ("big gt 1", true),
            ("big eq 18446744073709551615", true),
        ];
        for (text, expected) in cases {
            let filter = parse_filter(text).unwrap();
            assert_eq!(
                matches(ResourceKind::User, &element, &filter, Some(&level)),
                expected,
                "{text}"
            );
        }
    }

    /// A multi-valued complex attribute whose sub-attributes are numbers:
    /// no schema rollcall serves has one, so the test builds it.
    fn integer_attribute() -> Attribute {
        let schema = projections::directory::schema::user_schema();
        let mut emails = schema.attribute("emails").unwrap().clone();
        let template = emails.sub_attributes[0].clone();
        emails.sub_attributes = ["level", "big"]
            .into_iter()
            .map(|name| Attribute { name, kind: AttributeType::Integer, ..template.clone() })
            .chain(std::iter::once(Attribute {
                name: "score",
                kind: AttributeType::Decimal,
                ..template.clone()
            }))
            .collect();
        emails
    }

    #[test]
    fn date_times_compare_by_instant() {
        check_user(&[
            (r#"meta.created eq "2011-08-01T18:29:49.793Z""#, true),
            // The same instant written in another offset.
            (r#"meta.created eq "2011-08-01T20:29:49.793+02:00""#, true),
            (r#"meta.created gt "2011-08-01T18:29:49Z""#, true),
            (r#"meta.created ge "2011-08-01T18:29:49.793Z""#, true),
            (r#"meta.created lt "2011-08-01T18:29:49Z""#, false),
            (r#"meta.lastModified gt "2011-05-13T04:42:34Z""#, true),
            (r#"meta.lastModified le "2011-08-01T20:31:02Z""#, true),
            (r#"meta.lastModified lt "2011-08-01T20:31:02Z""#, false),
            (r#"meta.lastModified ne "2011-08-01T20:31:02Z""#, false),
            (r#"meta.lastModified sw "2011""#, false),
            (r#"meta.lastModified gt "yesterday""#, false),
            ("meta.lastModified gt 5", false),
        ]);
    }

    #[test]
    fn presence_and_null() {
        check_user(&[
            ("userName pr", true),
            ("title pr", false),
            ("nickName pr", false),
            ("phoneNumbers pr", false),
            ("emails pr", true),
            ("name pr", true),
            ("name.middleName pr", false),
            ("emails.type pr", true),
            ("emails.display pr", false),
            ("nickName eq null", true),
            ("title eq null", true),
            ("phoneNumbers eq null", true),
            ("userName eq null", false),
            ("userName ne null", true),
            ("nickName ne null", false),
            ("nickName gt null", false),
            (&format!("{ENTERPRISE}:manager pr"), true),
            (&format!("{CUSTOM}:costCenter pr"), true),
            (&format!("{CUSTOM}:missing pr"), false),
            // An absent attribute is `ne` every value, and `not (eq)` too.
            (r#"nickName ne "x""#, true),
            (r#"not (nickName eq "x")"#, true),
            (r#"nickName eq "x""#, false),
        ]);
    }

    #[test]
    fn multi_valued_attributes_match_when_any_value_does() {
        check_user(&[
            (r#"emails.value eq "babs@jensen.org""#, true),
            (r#"emails.type eq "HOME""#, true),
            (r#"emails.type eq "other""#, false),
            // A complex multi-valued attribute compares its `value`.
            (r#"emails co "@jensen.org""#, true),
            (r#"emails eq "nobody@example.com""#, false),
            // `ne` is `not (eq)`: some value equals, so it is false.
            (r#"emails.type ne "work""#, false),
            (r#"emails.type ne "other""#, true),
            // A single-valued complex attribute has nothing to compare.
            (r#"name eq "Barbara""#, false),
            (r#"emails[type eq "work" and value co "@example.com"]"#, true),
            (r#"emails[type eq "home" and value co "@example.com"]"#, false),
            (r#"emails[type eq "home"] and emails[value co "example.com"]"#, true),
            (r#"emails[not (type eq "work")]"#, true),
            (r#"EMAILS[TYPE EQ "WORK"]"#, true),
            (r#"emails[type eq "work"].value eq "bjensen@example.com""#, true),
            (r#"emails[type eq "home"].value eq "bjensen@example.com""#, false),
            (r#"phoneNumbers[type eq "work"]"#, false),
            // Paths that name nothing in a value filter never match.
            (r#"emails[nonsense eq "x"]"#, false),
            (r#"emails[value.sub eq "x"]"#, false),
            (r#"name[givenName eq "Barbara"]"#, false),
        ]);
    }

    #[test]
    fn schema_urns_and_unknown_attributes() {
        check_user(&[
            (&format!(r#"{ENTERPRISE}:employeeNumber eq "701984""#), true),
            (&format!(r#"{ENTERPRISE}:manager.value eq "26118915""#), true),
            (&format!(r#"{}:manager.value eq "26118915""#, ENTERPRISE.to_uppercase()), true),
            (&format!(r#"{USER_SCHEMA}:userName sw "BJ""#), true),
            (&format!(r#"{USER_SCHEMA}:name.givenName eq "barbara""#), true),
            // The extension's attributes are not at the top level.
            (r#"employeeNumber eq "701984""#, false),
            // Unknown attributes compare as case-insensitive strings.
            (&format!(r#"{CUSTOM}:costCenter eq "cc-42""#), true),
            (&format!(r#"{CUSTOM}:COSTCENTER sw "CC""#), true),
            (&format!(r#"{CUSTOM}:tags eq "BLUE""#), true),
            (&format!(r#"{CUSTOM}:tags eq "red""#), false),
            (&format!("{CUSTOM}:level eq 7"), false),
            (r#"favouriteColour eq "blue""#, false),
            ("favouriteColour eq null", true),
        ]);
    }

    #[test]
    fn logic_combines_as_written() {
        check_user(&[
            (r#"userName sw "bj" and active eq true"#, true),
            (r#"userName sw "bj" and active eq false"#, false),
            (r#"userName sw "x" or active eq true"#, true),
            (r#"userName sw "x" or active eq false"#, false),
            (r#"not (userName sw "x")"#, true),
            (r#"not (userName sw "x" or active eq true)"#, false),
            (r#"title pr or (name.givenName eq "Barbara" and not (emails.type eq "other"))"#, true),
        ]);
    }

    #[test]
    fn elements_of_a_multi_valued_attribute() {
        let user = projections::directory::schema::user_schema();
        let emails = user.attribute("emails").unwrap();
        let group = projections::directory::schema::group_schema();
        let members = group.attribute("members").unwrap();
        let work = json!({"Value": "BJensen@example.com", "TYPE": "work", "primary": true});
        let member = json!({"value": "2819c223", "type": "User"});
        let cases = [
            (emails, &work, r#"type eq "WORK""#, true),
            (emails, &work, r#"value eq "bjensen@EXAMPLE.com""#, true),
            (emails, &work, r#"type eq "work" and primary eq true"#, true),
            (emails, &work, r#"type eq "home" or primary eq false"#, false),
            (emails, &work, "display pr", false),
            (emails, &work, "display eq null", true),
            (emails, &work, r#"nonsense eq "x""#, false),
            (emails, &work, r#"emails.type eq "work""#, false),
            // members.value is caseExact; type is not.
            (members, &member, r#"value eq "2819c223""#, true),
            (members, &member, r#"value eq "2819C223""#, false),
            (members, &member, r#"type eq "user""#, true),
        ];
        for (within, element, text, expected) in cases {
            let filter = parse_filter(text).unwrap();
            assert_eq!(
                matches(ResourceKind::User, element, &filter, Some(within)),
                expected,
                "{text} on {element}"
            );
        }
    }
}
