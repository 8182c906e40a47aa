//! A tenant's Synchronize configuration: the attribute mapping, the
//! group-to-role bindings and the run settings (schedule, safeguard,
//! grace), with their defaults and their validation.
//!
//! These are the shapes the admin API and the CLI read and write, and the
//! JSON the `AttributeMappingChanged`, `RoleBindingChanged` and
//! `ScheduleChanged` events carry. Validation happens here, before an event
//! is appended; the projection stores what the event says.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use projections::directory::filter::{AttrPath, Filter};

use crate::model::path::{PatchPath, parse_patch_path};

/// A member property's type: what a SCIM value is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PropertyType {
    String,
    Number,
    Boolean,
    /// An RFC 3339 instant or a calendar date, kept as given (normalised
    /// to UTC for instants).
    Date,
    /// A list of strings: every value the path selects, or one string
    /// split on `split`.
    List,
}

/// One rule: which SCIM attribute fills which member property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PropertyRule {
    /// The member property's name (`email`, `department`).
    pub property: String,
    /// The SCIM attribute path, as in a PATCH path: `name.givenName`,
    /// `emails[type eq "work"].value`,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`.
    pub source: String,
    #[serde(rename = "type", default = "string_type")]
    pub kind: PropertyType,
    /// Used when the user has no value at `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// When given, a value outside this list is rejected (the user's change
    /// is not applied and the preview says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// For `list`: split a string value on this separator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// A user with no value here (after the default) is rejected, and stays
    /// pending, as a disallowed value is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// A value another member of the tenant holds (active or disabled) is
    /// rejected; strings compare with userName's case folding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
}

fn string_type() -> PropertyType {
    PropertyType::String
}

/// The attribute mapping of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub properties: Vec<PropertyRule>,
    /// Properties the application owns: Synchronize never writes them, and
    /// only they can be changed through `PATCH /api/v1/members/{id}`.
    #[serde(default)]
    pub app_owned: Vec<String>,
}

use projections::directory::schema::ENTERPRISE_USER_SCHEMA as ENTERPRISE;

impl Default for Mapping {
    /// What a new tenant starts with: the attributes every IdP sends.
    fn default() -> Mapping {
        let rule = |property: &str, source: String| PropertyRule {
            property: property.to_owned(),
            source,
            kind: PropertyType::String,
            default: None,
            allowed: None,
            split: None,
            required: false,
            unique: false,
        };
        Mapping {
            properties: vec![
                rule("email", "emails.value".to_owned()),
                rule("given_name", "name.givenName".to_owned()),
                rule("family_name", "name.familyName".to_owned()),
                rule("display_name", "displayName".to_owned()),
                rule("title", "title".to_owned()),
                rule("department", format!("{ENTERPRISE}:department")),
                rule("manager", format!("{ENTERPRISE}:manager.value")),
            ],
            app_owned: vec!["login_method".to_owned(), "preferences".to_owned()],
        }
    }
}

/// How many properties a mapping may have, and how long names may be.
pub const PROPERTIES_MAX: usize = 200;
const NAME_LENGTH_MAX: usize = 64;

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= NAME_LENGTH_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {name:?} must be 1 to {NAME_LENGTH_MAX} letters, digits, '_', '-' or '.'"
        )))
    }
}

/// A rule ready to apply: its source parsed into the attribute path and
/// value filter `eval::select` takes, and its default converted, once per
/// run rather than once per user.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: PropertyRule,
    pub path: AttrPath,
    pub filter: Option<Filter>,
    pub default: Option<Value>,
}

impl Mapping {
    /// Checks a mapping an admin sent, and compiles its rules.
    pub fn validate(&self) -> Result<Vec<CompiledRule>, Error> {
        if self.properties.len() > PROPERTIES_MAX {
            return Err(Error::invalid(format!(
                "a mapping has at most {PROPERTIES_MAX} properties"
            )));
        }
        let mut names = BTreeSet::new();
        let mut compiled = Vec::with_capacity(self.properties.len());
        for rule in &self.properties {
            check_name("property", &rule.property)?;
            if !names.insert(rule.property.as_str()) {
                return Err(Error::invalid(format!(
                    "property {:?} is mapped twice",
                    rule.property
                )));
            }
            let PatchPath { schema, name, filter, sub_attribute } = parse_patch_path(&rule.source)
                .map_err(|error| {
                    Error::invalid(format!("property {:?}: {error}", rule.property))
                })?;
            let path = AttrPath { schema, name, sub_attribute };
            if rule.split.is_some() && rule.kind != PropertyType::List {
                return Err(Error::invalid(format!(
                    "property {:?}: split applies to type list only",
                    rule.property
                )));
            }
            if rule.split.as_deref() == Some("") {
                return Err(Error::invalid(format!(
                    "property {:?}: split must not be empty",
                    rule.property
                )));
            }
            if rule.kind != PropertyType::List && path.sub_attribute.is_none() {
                let resolved = projections::directory::schema::resolve(
                    projections::directory::schema::ResourceKind::User,
                    &path,
                );
                if resolved.is_some_and(|resolved| {
                    resolved.attribute.kind
                        == projections::directory::schema::AttributeType::Complex
                }) {
                    return Err(Error::invalid(format!(
                        "property {:?}: {} is complex; name a sub-attribute (such as {}.value) \
                         or use type list",
                        rule.property, rule.source, rule.source
                    )));
                }
            }
            let default = match &rule.default {
                Some(default) => {
                    let converted = convert(rule, vec![default]).map_err(|reason| {
                        Error::invalid(format!("property {:?}: default {reason}", rule.property))
                    })?;
                    if converted.as_ref().is_some_and(|value| !is_allowed(rule, value)) {
                        return Err(Error::invalid(format!(
                            "property {:?}: the default {default} is not one of the allowed values",
                            rule.property
                        )));
                    }
                    converted
                }
                None => None,
            };
            if rule.unique && rule.kind == PropertyType::List {
                return Err(Error::invalid(format!(
                    "property {:?}: a list cannot be unique; make it a string",
                    rule.property
                )));
            }
            if let Some(allowed) = &rule.allowed {
                if allowed.is_empty() {
                    return Err(Error::invalid(format!(
                        "property {:?}: allowed must list at least one value",
                        rule.property
                    )));
                }
                for value in allowed {
                    convert(rule, vec![value]).map_err(|reason| {
                        Error::invalid(format!(
                            "property {:?}: allowed value {reason}",
                            rule.property
                        ))
                    })?;
                }
            }
            compiled.push(CompiledRule { rule: rule.clone(), path, filter, default });
        }
        let mut owned = BTreeSet::new();
        for name in &self.app_owned {
            check_name("app-owned property", name)?;
            if names.contains(name.as_str()) {
                return Err(Error::invalid(format!(
                    "property {name:?} cannot be both mapped and app-owned"
                )));
            }
            if !owned.insert(name.as_str()) {
                return Err(Error::invalid(format!("app-owned property {name:?} is listed twice")));
            }
        }
        Ok(compiled)
    }
}

/// Converts what a path selected into a property value of the rule's
/// type. `Ok(None)`: nothing there. `Err`: the reason the value cannot be
/// applied.
pub fn convert(rule: &PropertyRule, values: Vec<&Value>) -> Result<Option<Value>, String> {
    let describe = |value: &Value| {
        let text = value.to_string();
        if text.len() > 80 { format!("{}...", text.get(..77).unwrap_or_default()) } else { text }
    };
    if rule.kind == PropertyType::List {
        let mut items = Vec::new();
        for value in values {
            match value {
                Value::String(text) => match &rule.split {
                    Some(separator) => items.extend(
                        text.split(separator.as_str())
                            .map(str::trim)
                            .filter(|item| !item.is_empty())
                            .map(|item| Value::String(item.to_owned())),
                    ),
                    None if !text.is_empty() => items.push(value.clone()),
                    None => {}
                },
                Value::Number(_) | Value::Bool(_) => items.push(Value::String(value.to_string())),
                Value::Object(fields) => match fields.get("value") {
                    Some(Value::String(text)) => items.push(Value::String(text.clone())),
                    _ => return Err(format!("{} is not a list of strings", describe(value))),
                },
                Value::Null | Value::Array(_) => {}
            }
        }
        return Ok((!items.is_empty()).then_some(Value::Array(items)));
    }
    let Some(value) = values.into_iter().find(|value| !value.is_null()) else {
        return Ok(None);
    };
    let converted = match (rule.kind, value) {
        (PropertyType::String, Value::String(text)) if text.is_empty() => return Ok(None),
        (PropertyType::String, Value::String(_)) => value.clone(),
        (PropertyType::String, Value::Number(_) | Value::Bool(_)) => {
            Value::String(value.to_string())
        }
        (PropertyType::Number, Value::Number(_)) => value.clone(),
        (PropertyType::Number, Value::String(text)) => match text.trim().parse::<f64>() {
            Ok(number) if number.is_finite() => serde_json::Number::from_f64(number)
                .map(|number| {
                    // Whole numbers stay integers: "42" is 42, not 42.0.
                    match text.trim().parse::<i64>() {
                        Ok(integer) => Value::from(integer),
                        Err(_) => Value::Number(number),
                    }
                })
                .ok_or_else(|| format!("{} is not a number", describe(value)))?,
            _ => return Err(format!("{} is not a number", describe(value))),
        },
        (PropertyType::Boolean, Value::Bool(_)) => value.clone(),
        (PropertyType::Boolean, Value::String(text)) if text.eq_ignore_ascii_case("true") => {
            Value::Bool(true)
        }
        (PropertyType::Boolean, Value::String(text)) if text.eq_ignore_ascii_case("false") => {
            Value::Bool(false)
        }
        (PropertyType::Date, Value::String(text)) => {
            Value::String(normalise_date(text).ok_or_else(|| {
                format!("{} is not a date (RFC 3339 or YYYY-MM-DD)", describe(value))
            })?)
        }
        (kind, value) => {
            return Err(format!("{} is not a {}", describe(value), type_name(kind)));
        }
    };
    Ok(Some(converted))
}

fn type_name(kind: PropertyType) -> &'static str {
    match kind {
        PropertyType::String => "string",
        PropertyType::Number => "number",
        PropertyType::Boolean => "boolean",
        PropertyType::Date => "date",
        PropertyType::List => "list",
    }
}

/// An instant in UTC with milliseconds, or a calendar date as given.
fn normalise_date(text: &str) -> Option<String> {
    if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        return Some(events::time::format_millis(instant));
    }
    text.parse::<jiff::civil::Date>().ok().map(|date| date.to_string())
}

/// Whether `value` is one of the rule's allowed values (compared after
/// conversion; strings case-sensitively, as the admin wrote them).
pub fn is_allowed(rule: &PropertyRule, value: &Value) -> bool {
    let Some(allowed) = &rule.allowed else { return true };
    let converted = |candidate: &Value| convert(rule, vec![candidate]).ok().flatten();
    match value {
        Value::Array(items) if rule.kind == PropertyType::List => items.iter().all(|item| {
            allowed.iter().filter_map(converted).any(|allowed| match allowed {
                Value::Array(list) => list.contains(item),
                other => &other == item,
            })
        }),
        _ => allowed.iter().filter_map(converted).any(|allowed| &allowed == value),
    }
}

/// How a binding names its SCIM group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum GroupMatch {
    #[serde(rename = "displayName")]
    DisplayName,
    #[serde(rename = "externalId")]
    ExternalId,
}

/// A SCIM group that grants a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub group: String,
    #[serde(rename = "match", default = "display_name_match")]
    pub by: GroupMatch,
    pub role: String,
}

fn display_name_match() -> GroupMatch {
    GroupMatch::DisplayName
}

/// A tenant's roles and the groups that grant them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindings {
    /// The roles the tenant defines.
    pub roles: Vec<String>,
    /// What a member in no bound group gets (`None`: no role).
    #[serde(default)]
    pub default_role: Option<String>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

impl Default for RoleBindings {
    fn default() -> RoleBindings {
        RoleBindings {
            roles: ["admin", "editor", "viewer", "billing", "auditor"].map(str::to_owned).to_vec(),
            default_role: Some("viewer".to_owned()),
            bindings: Vec::new(),
        }
    }
}

/// How many roles and bindings a tenant may define.
pub const BINDINGS_MAX: usize = 1000;

impl RoleBindings {
    pub fn validate(&self) -> Result<(), Error> {
        if self.roles.is_empty() || self.roles.len() > 100 {
            return Err(Error::invalid("roles must list 1 to 100 roles"));
        }
        let mut roles = BTreeSet::new();
        for role in &self.roles {
            check_name("role", role)?;
            if !roles.insert(role.as_str()) {
                return Err(Error::invalid(format!("role {role:?} is listed twice")));
            }
        }
        if let Some(role) = &self.default_role
            && !roles.contains(role.as_str())
        {
            return Err(Error::invalid(format!("default_role {role:?} is not one of the roles")));
        }
        if self.bindings.len() > BINDINGS_MAX {
            return Err(Error::invalid(format!("at most {BINDINGS_MAX} bindings")));
        }
        for binding in &self.bindings {
            if binding.group.trim().is_empty() {
                return Err(Error::invalid("a binding needs a group"));
            }
            if !roles.contains(binding.role.as_str()) {
                return Err(Error::invalid(format!(
                    "binding of group {:?}: role {:?} is not one of the roles",
                    binding.group, binding.role
                )));
            }
        }
        Ok(())
    }
}

/// When the daily run fires: a local time in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// `HH:MM`, 24-hour, local to `time_zone`.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub time: String,
    /// An IANA zone name such as `Europe/Paris`.
    pub time_zone: String,
}

/// The deprovisioning safeguard: a run that would disable or remove more
/// than `share_percent` of the active members and at least `minimum` of
/// them is held for an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Safeguard {
    #[schema(maximum = 100)]
    pub share_percent: u32,
    pub minimum: u32,
}

/// A tenant's Synchronize settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// `None`: no daily run.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    #[serde(default = "default_safeguard")]
    pub safeguard: Safeguard,
    /// Days a leaver stays restorable before it is purged.
    #[serde(default = "default_grace_days")]
    #[schema(maximum = 3650)]
    pub grace_days: u32,
}

fn default_safeguard() -> Safeguard {
    Safeguard { share_percent: 20, minimum: 10 }
}

fn default_grace_days() -> u32 {
    30
}

impl Default for SyncSettings {
    fn default() -> SyncSettings {
        SyncSettings {
            schedule: Some(Schedule { time: "02:00".to_owned(), time_zone: "UTC".to_owned() }),
            safeguard: default_safeguard(),
            grace_days: default_grace_days(),
        }
    }
}

impl SyncSettings {
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(schedule) = &self.schedule {
            schedule.local_time()?;
            schedule.zone()?;
        }
        if self.safeguard.share_percent > 100 {
            return Err(Error::invalid("safeguard.share_percent must be 0 to 100"));
        }
        if self.grace_days > 3650 {
            return Err(Error::invalid("grace_days must be 0 to 3650"));
        }
        Ok(())
    }
}

impl Schedule {
    pub fn local_time(&self) -> Result<jiff::civil::Time, Error> {
        let invalid = || Error::invalid(format!("schedule.time {:?} must be HH:MM", self.time));
        let (hours, minutes) = self.time.split_once(':').ok_or_else(invalid)?;
        let digits = |text: &str| text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit());
        if !digits(hours) || !digits(minutes) {
            return Err(invalid());
        }
        let hours: i8 = hours.parse().map_err(|_| invalid())?;
        let minutes: i8 = minutes.parse().map_err(|_| invalid())?;
        jiff::civil::Time::new(hours, minutes, 0, 0).map_err(|_| invalid())
    }

    pub fn zone(&self) -> Result<jiff::tz::TimeZone, Error> {
        jiff::tz::TimeZone::get(&self.time_zone).map_err(|_| {
            Error::invalid(format!(
                "schedule.time_zone {:?} is not an IANA time zone",
                self.time_zone
            ))
        })
    }
}

/// Reads a stored setting, or the default when none was ever set. A stored
/// setting that no longer reads (validation before append prevents it) is
/// an error: applying the default instead would silently remap everyone.
pub fn stored_or_default<T: serde::de::DeserializeOwned + Default>(
    stored: Option<Value>,
) -> Result<T, Error> {
    match stored {
        None => Ok(T::default()),
        Some(value) => serde_json::from_value(value)
            .map_err(|error| Error::Internal(format!("a recorded setting does not read: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(kind: PropertyType) -> PropertyRule {
        PropertyRule {
            property: "p".to_owned(),
            source: "title".to_owned(),
            kind,
            default: None,
            allowed: None,
            split: None,
            required: false,
            unique: false,
        }
    }

    #[test]
    fn values_convert_to_their_type_or_say_why_not() {
        let number = rule(PropertyType::Number);
        assert_eq!(convert(&number, vec![&json!("42")]), Ok(Some(json!(42))));
        assert_eq!(convert(&number, vec![&json!("4.5")]), Ok(Some(json!(4.5))));
        assert!(convert(&number, vec![&json!("forty")]).is_err());
        let boolean = rule(PropertyType::Boolean);
        assert_eq!(convert(&boolean, vec![&json!("True")]), Ok(Some(json!(true))));
        assert!(convert(&boolean, vec![&json!(1)]).is_err());
        let date = rule(PropertyType::Date);
        assert_eq!(
            convert(&date, vec![&json!("2026-03-01T10:00:00+01:00")]),
            Ok(Some(json!("2026-03-01T09:00:00.000Z")))
        );
        assert_eq!(convert(&date, vec![&json!("2026-03-01")]), Ok(Some(json!("2026-03-01"))));
        assert!(convert(&date, vec![&json!("yesterday")]).is_err());
        let list = PropertyRule { split: Some(";".to_owned()), ..rule(PropertyType::List) };
        assert_eq!(convert(&list, vec![&json!("a; b;;c")]), Ok(Some(json!(["a", "b", "c"]))));
        assert_eq!(convert(&rule(PropertyType::String), vec![&json!("")]), Ok(None));
        assert_eq!(convert(&rule(PropertyType::String), vec![]), Ok(None));
    }

    #[test]
    fn mappings_are_validated_before_they_are_recorded() {
        assert!(Mapping::default().validate().is_ok());
        let twice = Mapping {
            properties: vec![rule(PropertyType::String), rule(PropertyType::String)],
            app_owned: vec![],
        };
        assert!(twice.validate().is_err());
        let bad_path = Mapping {
            properties: vec![PropertyRule {
                source: "emails[type eq".to_owned(),
                ..rule(PropertyType::String)
            }],
            app_owned: vec![],
        };
        assert!(bad_path.validate().is_err());
        let clash = Mapping {
            properties: vec![rule(PropertyType::String)],
            app_owned: vec!["p".to_owned()],
        };
        assert!(clash.validate().is_err());
        let bad_allowed = Mapping {
            properties: vec![PropertyRule {
                allowed: Some(vec![json!("x")]),
                ..rule(PropertyType::Number)
            }],
            app_owned: vec![],
        };
        assert!(bad_allowed.validate().is_err());
    }

    #[test]
    fn bindings_and_settings_are_validated() {
        assert!(RoleBindings::default().validate().is_ok());
        let unknown = RoleBindings {
            bindings: vec![Binding {
                group: "Eng".to_owned(),
                by: GroupMatch::DisplayName,
                role: "owner".to_owned(),
            }],
            ..RoleBindings::default()
        };
        assert!(unknown.validate().is_err());
        assert!(SyncSettings::default().validate().is_ok());
        let zone = SyncSettings {
            schedule: Some(Schedule {
                time: "02:00".to_owned(),
                time_zone: "Mars/Olympus".to_owned(),
            }),
            ..SyncSettings::default()
        };
        assert!(zone.validate().is_err());
        let time = SyncSettings {
            schedule: Some(Schedule { time: "25:00".to_owned(), time_zone: "UTC".to_owned() }),
            ..SyncSettings::default()
        };
        assert!(time.validate().is_err());
    }
}
