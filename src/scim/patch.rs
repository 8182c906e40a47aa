//! The SCIM PATCH engine (RFC 7644 section 3.5.2): a PatchOp request body
//! applied to a resource's canonical document, giving the new canonical
//! document.
//!
//! What it takes, beyond the RFC's letter, because identity providers send
//! it:
//! * `Operations` and the `op` names in any case (`"Replace"`), attribute
//!   names in any case, a missing `schemas` list;
//! * without a path, keys that are paths themselves (`"name.givenName"`,
//!   `"urn:...:enterprise:2.0:User:employeeNumber"`, as Entra ID sends);
//! * `replace` on `emails[type eq "work"].value` when no email is of type
//!   work: the element is created from the filter's `eq` terms, as Entra ID
//!   expects;
//! * `remove` on `members` with a value listing the members to remove (the
//!   old Entra ID dialect);
//! * a bare id as the value of a complex attribute that has a `value`
//!   (Entra ID's `manager`), read as `{"value": id}`.
//!
//! All operations of a request apply, or none do: they run on a copy, and
//! the first error is returned without it. The result has canonical names
//! and types; the caller still validates it with `document::normalize`
//! before deciding anything, so this module does not repeat every check
//! that function makes.
//!
//! Choices the RFC leaves open:
//! * retries by identity providers must be harmless, so adding a value that
//!   is already there changes nothing (a member is already there when its
//!   id is; another value when an element has every sub-attribute it
//!   gives), and removing what is not there (an absent attribute, a filter
//!   matching nothing) changes nothing rather than failing with `noTarget`;
//! * a path naming an unknown or read-only attribute is an error
//!   (`invalidPath`, `mutability`), but the same attribute as a key of a
//!   path-less value is ignored, as in a POST or PUT body (Okta sends `id`
//!   alongside `active`);
//! * `emails.display` without a filter acts on every email;
//! * `password` is accepted and dropped, as `normalize` drops it;
//! * a value path is matched by `eval::matches`, with the same comparison
//!   rules as a search filter;
//! * a Group PATCH that only adds members, or removes them by id, besides
//!   touching other attributes, is split by [`membership_patch`] so the
//!   command can apply it without the group's whole member list.

use projections::directory::filter::{AttrPath, CompareOp, CompareValue, Filter};
use projections::directory::schema::{
    Attribute, AttributeType, GROUP_SCHEMA, Mutability, ResourceKind, Schema, group_schema, resolve,
};
use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use crate::error::{Error, InvalidKind};
use crate::model::eval;
use crate::model::path::{PatchPath, parse_patch_path};
use crate::scim::document::Document;

/// The schema URN of a PATCH request body.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The prefix of the core schemas' URNs: a path qualified by a core schema
/// that is not this resource kind's names nothing, rather than an unknown
/// extension.
const CORE_SCHEMA_PREFIX: &str = "urn:ietf:params:scim:schemas:core:";

/// Applies a PATCH request `body` to `document`, a resource of `kind`, and
/// returns the new document. On any error, nothing is applied.
pub fn apply_patch(
    kind: ResourceKind,
    document: &Document,
    body: &Value,
) -> Result<Document, Error> {
    apply_patch_except(kind, document, body, &BTreeSet::new())
}

/// [`apply_patch`], leaving out the operations at the `skipped` indexes
/// (applied elsewhere: see [`membership_patch`]). Errors name operations by
/// their index in the request, skipped ones counted.
pub fn apply_patch_except(
    kind: ResourceKind,
    document: &Document,
    body: &Value,
    skipped: &BTreeSet<usize>,
) -> Result<Document, Error> {
    let operations = read_body(body)?;
    let mut patched = document.clone();
    for (index, operation) in operations.iter().enumerate() {
        if skipped.contains(&index) {
            continue;
        }
        apply_operation(kind, &mut patched, operation)
            .map_err(|error| in_operation(index, error))?;
    }
    check_required(kind, &patched)?;
    crate::scim::limits::check_patched(&patched)?;
    Ok(patched)
}

/// A Group PATCH whose operations on `members` each add members, or remove
/// members named by id: how every IdP sends a membership change. Such a
/// PATCH can be applied one id at a time against the membership table,
/// without reading the group's whole member list.
#[derive(Debug, Default)]
pub struct MembershipPatch {
    /// Indexes of the operations on members; the others leave members alone.
    pub member_operations: BTreeSet<usize>,
    /// What those operations do, in request order.
    pub steps: Vec<MemberStep>,
}

#[derive(Debug)]
pub enum MemberStep {
    /// Adds these member items (canonical, each with a string `value`).
    Add(Vec<Value>),
    /// Removes the members with these ids (absent ones are no-ops).
    Remove(Vec<String>),
}

/// Splits a Group PATCH `body` into its member additions and removals by id
/// and its other operations; `None` (take the whole-list path) whenever in
/// doubt: a replace of `members`, a remove of all of them, `add` with an
/// empty value (which clears them), a filter other than `value eq "id"`, a
/// member item that is not valid (so errors come in request order), a
/// path-less value or a path that goes through a schema URN (where members
/// could hide), or anything else that mentions members.
pub fn membership_patch(body: &Value) -> Result<Option<MembershipPatch>, Error> {
    let operations = read_body(body)?;
    let Some(members) = group_schema().attribute("members") else { return Ok(None) };
    let mut plan = MembershipPatch::default();
    for (index, operation) in operations.iter().enumerate() {
        let Some(text) = operation.path else {
            let may_name_members =
                operation.value.and_then(Value::as_object).is_some_and(|fields| {
                    fields.keys().any(|key| {
                        let key = key.to_ascii_lowercase();
                        key.contains("members") || key.starts_with("urn:")
                    })
                });
            if may_name_members {
                return Ok(None);
            }
            continue;
        };
        let mentions_members = text.to_ascii_lowercase().contains("members");
        // A path that does not parse is reported by the document's pass.
        let Ok(path) = parse_patch_path(text) else {
            if mentions_members {
                return Ok(None);
            }
            continue;
        };
        if path.schema.as_deref().is_some_and(|urn| !urn.eq_ignore_ascii_case(GROUP_SCHEMA)) {
            return Ok(None);
        }
        if !path.name.eq_ignore_ascii_case(members.name) {
            if mentions_members {
                return Ok(None);
            }
            continue;
        }
        let by_id = |value: &Value| -> Option<Vec<Value>> {
            let items = canonical_items(members, value).ok()?;
            items.iter().all(|item| identity(members, item).is_some()).then_some(items)
        };
        let step = match (operation.op, &path.filter, &path.sub_attribute, operation.value) {
            (Op::Add, None, None, Some(value)) if !value.is_null() && !is_empty_string(value) => {
                match by_id(value) {
                    Some(items) => MemberStep::Add(items),
                    None => return Ok(None),
                }
            }
            (Op::Remove, None, None, Some(value)) if !value.is_null() => match by_id(value) {
                Some(items) => MemberStep::Remove(
                    items
                        .iter()
                        .filter_map(|item| identity(members, item))
                        .map(str::to_owned)
                        .collect(),
                ),
                None => return Ok(None),
            },
            (Op::Remove, Some(filter), None, _) => match id_equality(filter) {
                Some(id) => MemberStep::Remove(vec![id.to_owned()]),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        plan.member_operations.insert(index);
        plan.steps.push(step);
    }
    Ok(Some(plan))
}

impl MembershipPatch {
    /// Whether some addition names `id` (the group itself: refused only if
    /// it stays listed, which the whole-list path decides).
    pub fn adds(&self, id: &str) -> bool {
        self.steps.iter().any(|step| match step {
            MemberStep::Add(items) => {
                items.iter().any(|item| item.get("value").and_then(Value::as_str) == Some(id))
            }
            MemberStep::Remove(_) => false,
        })
    }
}

/// The id in a member filter of the form `value eq "id"`.
fn id_equality(filter: &Filter) -> Option<&str> {
    match filter {
        Filter::Compare {
            path: AttrPath { schema: None, name, sub_attribute: None },
            op: CompareOp::Equal,
            value: CompareValue::String(id),
        } if name.eq_ignore_ascii_case("value") => Some(id),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        [Op::Add, Op::Replace, Op::Remove]
            .into_iter()
            .find(|op| op.name().eq_ignore_ascii_case(name))
    }

    fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
        }
    }
}

/// One entry of `Operations`, as read from the body.
#[derive(Debug)]
struct Operation<'b> {
    op: Op,
    /// `None` when the operation has no path (or an empty one).
    path: Option<&'b str>,
    /// `None` when the operation has no `value` member at all.
    value: Option<&'b Value>,
}

fn read_body(body: &Value) -> Result<Vec<Operation<'_>>, Error> {
    let syntax = |message: &str| Error::invalid_as(InvalidKind::Syntax, message);
    let Value::Object(fields) = body else {
        return Err(syntax("a PATCH request body must be a JSON object"));
    };
    match member(fields, "schemas") {
        None | Some(Value::Null) => {}
        Some(schemas) => {
            let lists_patch_op = schemas.as_array().is_some_and(|schemas| {
                schemas.iter().any(|schema| {
                    schema.as_str().is_some_and(|urn| urn.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
                })
            });
            if !lists_patch_op {
                return Err(syntax(&format!("schemas must be a list holding {PATCH_OP_SCHEMA}")));
            }
        }
    }
    let operations = match member(fields, "Operations") {
        None | Some(Value::Null) => {
            return Err(syntax("a PATCH request needs Operations, a list of operations"));
        }
        Some(Value::Array(operations)) => operations,
        Some(_) => return Err(syntax("Operations must be a list of operations")),
    };
    if operations.is_empty() {
        return Err(syntax("Operations is empty: a PATCH request needs at least one operation"));
    }
    crate::scim::limits::check_patch(operations)?;
    operations
        .iter()
        .enumerate()
        .map(|(index, operation)| read_operation(index, operation))
        .collect()
}

fn read_operation(index: usize, operation: &Value) -> Result<Operation<'_>, Error> {
    let syntax = |message: String| {
        Error::invalid_as(InvalidKind::Syntax, format!("Operations[{index}]: {message}"))
    };
    let Value::Object(fields) = operation else {
        return Err(syntax("an operation must be a JSON object".to_owned()));
    };
    let op = match member(fields, "op") {
        Some(Value::String(name)) => Op::from_name(name).ok_or_else(|| {
            syntax(format!("op \"{name}\" is not one of add, replace and remove"))
        })?,
        _ => return Err(syntax("an operation needs an op: add, replace or remove".to_owned())),
    };
    let path = match member(fields, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) if path.trim().is_empty() => None,
        Some(Value::String(path)) => Some(path.trim()),
        Some(_) => {
            return Err(Error::invalid_as(
                InvalidKind::Path,
                format!("Operations[{index}]: path must be a string"),
            ));
        }
    };
    let value = member(fields, "value");
    if op != Op::Remove && value.is_none() {
        return Err(syntax(format!("{} needs a value", op.name())));
    }
    Ok(Operation { op, path, value })
}

/// Says which operation failed, in the message a client sees.
fn in_operation(index: usize, error: Error) -> Error {
    match error {
        Error::Invalid { kind, message } => {
            Error::Invalid { kind, message: format!("Operations[{index}]: {message}") }
        }
        other => other,
    }
}

/// The member of a JSON object named `name`, in any case.
fn member<'v>(fields: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    fields.get(name).or_else(|| {
        fields.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    })
}

/// The operations of a PATCH body, found exactly as [`apply_patch`] finds
/// them: what the caller records is what was applied.
pub fn operations(body: &Value) -> Option<&Value> {
    body.as_object().and_then(|fields| member(fields, "Operations"))
}

/// The key of `fields` equal to `name` but for case, if there is one.
fn existing_key(fields: &Map<String, Value>, name: &str) -> Option<String> {
    if fields.contains_key(name) {
        return Some(name.to_owned());
    }
    fields.keys().find(|key| key.eq_ignore_ascii_case(name)).cloned()
}

fn is_urn(text: &str) -> bool {
    text.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"))
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// The core or extension schema of `kind` whose URN is `urn`, in any case.
fn schema_named(kind: ResourceKind, urn: &str) -> Option<&'static Schema> {
    std::iter::once(kind.core_schema())
        .chain(kind.extension_schemas().iter().copied())
        .find(|schema| schema.id.eq_ignore_ascii_case(urn))
}

fn is_empty_string(value: &Value) -> bool {
    value.as_str().is_some_and(str::is_empty)
}

fn apply_operation(
    kind: ResourceKind,
    document: &mut Document,
    operation: &Operation<'_>,
) -> Result<(), Error> {
    match (operation.op, operation.path, operation.value) {
        (Op::Remove, None, _) => Err(Error::invalid_as(
            InvalidKind::NoTarget,
            "remove needs a path naming what to remove",
        )),
        (op, None, Some(value)) => apply_pathless(kind, document, op, value),
        (op, None, None) => {
            Err(Error::invalid_as(InvalidKind::Syntax, format!("{} needs a value", op.name())))
        }
        (op, Some(path), value) => apply_key(kind, document, op, path, value, Strictness::Path),
    }
}

/// How to treat a key that names nothing rollcall stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// The operation's `path`: an unknown attribute is `invalidPath`, a
    /// read-only one `mutability`.
    Path,
    /// A key of a path-less operation's value: unknown and read-only
    /// attributes are ignored, as a POST or PUT body's are (Okta sends
    /// `id` with `active`).
    ValueKey,
}

/// `add` or `replace` without a path: every member of the value is applied
/// as if it were the path.
fn apply_pathless(
    kind: ResourceKind,
    document: &mut Document,
    op: Op,
    value: &Value,
) -> Result<(), Error> {
    let Value::Object(fields) = value else {
        return Err(Error::invalid(format!(
            "{} without a path needs an object of attributes as its value",
            op.name()
        )));
    };
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        apply_key(kind, document, op, key, Some(value), Strictness::ValueKey)?;
    }
    Ok(())
}

/// Applies `op` at `key`: a path, a schema URN or a custom extension's URN.
fn apply_key(
    kind: ResourceKind,
    document: &mut Document,
    op: Op,
    key: &str,
    value: Option<&Value>,
    strictness: Strictness,
) -> Result<(), Error> {
    if let Some(schema) = schema_named(kind, key) {
        return apply_schema(kind, document, op, schema, value);
    }
    if names_custom_extension(kind, document, op, key, value) {
        return apply_custom_extension(document, op, key, value);
    }
    let path = parse_patch_path(key)?;
    match locate(kind, &path)? {
        Location::Found(target) => apply_at(kind, document, op, &target, value),
        Location::Unknown(message) if strictness == Strictness::Path => {
            Err(Error::invalid_as(InvalidKind::Path, message))
        }
        Location::ReadOnly(message) if strictness == Strictness::Path => {
            Err(Error::invalid_as(InvalidKind::Mutability, message))
        }
        Location::Unknown(message) | Location::ReadOnly(message) => {
            tracing::debug!(attribute = key, reason = message, "ignoring a PATCH value");
            Ok(())
        }
        Location::Ignored => Ok(()),
    }
}

/// A path or key that is a schema URN of `kind`: the core schema's
/// attributes, or the whole object of an extension.
fn apply_schema(
    kind: ResourceKind,
    document: &mut Document,
    op: Op,
    schema: &Schema,
    value: Option<&Value>,
) -> Result<(), Error> {
    let core = schema.id == kind.core_schema().id;
    match (op, value) {
        (Op::Remove, _) if core => Err(Error::invalid_as(
            InvalidKind::Path,
            format!("remove needs a path naming an attribute, not {}", schema.id),
        )),
        // Removing or clearing an extension removes its whole object.
        (op, value)
            if !core
                && (op == Op::Remove
                    || value.is_none_or(|value| value.is_null() || is_empty_string(value))) =>
        {
            if let Some(key) = existing_key(document, schema.id) {
                document.remove(&key);
            }
            Ok(())
        }
        (_, Some(Value::Object(fields))) => {
            for (name, value) in fields {
                let key = if core { name.clone() } else { format!("{}:{name}", schema.id) };
                apply_key(kind, document, op, &key, Some(value), Strictness::ValueKey)?;
            }
            Ok(())
        }
        _ => Err(Error::invalid(format!("{} must be an object of attributes", schema.id))),
    }
}

/// Whether `key` names a whole custom extension (a schema rollcall does not
/// define, like `urn:...:extension:2.0:Metadata`), rather than one of its
/// attributes. A URN alone cannot say which it is; the document and the
/// value can: an extension already stored under that key, or an object
/// given for a key whose prefix is no schema the document holds.
fn names_custom_extension(
    kind: ResourceKind,
    document: &Document,
    op: Op,
    key: &str,
    value: Option<&Value>,
) -> bool {
    if !is_urn(key) || key.contains('[') || starts_with_ignoring_case(key, CORE_SCHEMA_PREFIX) {
        return false;
    }
    let Some((prefix, _)) = key.rsplit_once(':') else {
        return false;
    };
    if schema_named(kind, prefix).is_some() || existing_key(document, prefix).is_some() {
        return false;
    }
    existing_key(document, key).is_some()
        || (op != Op::Remove && value.is_some_and(Value::is_object))
}

/// A custom extension's whole object: kept as sent, like `normalize` keeps
/// it; `add` and `replace` merge its attributes into what is stored.
fn apply_custom_extension(
    document: &mut Document,
    op: Op,
    urn: &str,
    value: Option<&Value>,
) -> Result<(), Error> {
    let key = existing_key(document, urn).unwrap_or_else(|| urn.to_owned());
    match (op, value) {
        (Op::Remove, _) | (_, None | Some(Value::Null)) => {
            document.remove(&key);
        }
        (_, Some(Value::Object(fields))) => {
            let stored = document.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
            if !stored.is_object() {
                *stored = Value::Object(Map::new());
            }
            if let Value::Object(extension) = stored {
                for (name, value) in fields {
                    set_custom(extension, op, name, None, value);
                }
            }
            drop_if_empty(document, &key);
        }
        (_, Some(other)) if is_empty_string(other) => {
            document.remove(&key);
        }
        (_, Some(other)) => {
            document.insert(key, other.clone());
        }
    }
    Ok(())
}

/// Where an attribute is stored in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Container {
    /// At the top level: the common and core attributes.
    Core,
    /// In the object under an extension's URN.
    Extension(String),
}

/// What a path names, resolved against the schemas.
#[derive(Debug, Clone)]
enum Target {
    /// An attribute a schema defines (boxed: definitions are large).
    Defined(Box<Defined>),
    /// An attribute no schema defines: a custom extension's, or one the
    /// Enterprise User extension does not list. Kept as sent, like
    /// `normalize` keeps it.
    Custom { container: Container, name: String, sub_attribute: Option<String> },
}

/// An attribute a schema defines, with canonical names, and what of it a
/// path selects.
#[derive(Debug, Clone)]
struct Defined {
    container: Container,
    attribute: &'static Attribute,
    filter: Option<Filter>,
    sub_attribute: Option<&'static Attribute>,
}

impl Target {
    fn container(&self) -> &Container {
        match self {
            Target::Defined(defined) => &defined.container,
            Target::Custom { container, .. } => container,
        }
    }
}

#[derive(Debug)]
enum Location {
    Found(Target),
    /// Names nothing rollcall knows; says why.
    Unknown(String),
    /// Names a read-only attribute; says which.
    ReadOnly(String),
    /// Names `password`, which rollcall never stores: the log is immutable,
    /// so a secret written into it could never be erased.
    Ignored,
}

fn locate(kind: ResourceKind, path: &PatchPath) -> Result<Location, Error> {
    let core_id = kind.core_schema().id;
    if let Some(urn) = &path.schema
        && starts_with_ignoring_case(urn, CORE_SCHEMA_PREFIX)
        && !urn.eq_ignore_ascii_case(core_id)
    {
        return Ok(Location::Unknown(format!("{urn} is not a schema of this resource")));
    }
    let attribute_path =
        AttrPath { schema: path.schema.clone(), name: path.name.clone(), sub_attribute: None };
    let Some(resolved) = resolve(kind, &attribute_path) else {
        return locate_custom(kind, path);
    };
    let attribute = resolved.attribute;
    if attribute.name == "password" && resolved.schema == Some(core_id) {
        return Ok(Location::Ignored);
    }
    if attribute.mutability == Mutability::ReadOnly {
        return Ok(Location::ReadOnly(format!("{} is read-only", attribute.name)));
    }
    let sub_attribute = match &path.sub_attribute {
        None => None,
        Some(name) => match attribute.sub_attribute(name) {
            Some(sub) if sub.mutability == Mutability::ReadOnly => {
                return Ok(Location::ReadOnly(format!(
                    "{}.{} is read-only",
                    attribute.name, sub.name
                )));
            }
            Some(sub) => Some(sub),
            None => {
                return Ok(Location::Unknown(format!(
                    "{} has no sub-attribute {name}",
                    attribute.name
                )));
            }
        },
    };
    if let Some(filter) = &path.filter {
        if !attribute.multi_valued || attribute.kind != AttributeType::Complex {
            return Err(Error::invalid_as(
                InvalidKind::Path,
                format!(
                    "a value filter selects values of a multi-valued attribute, and {} is not one",
                    attribute.name
                ),
            ));
        }
        check_value_filter(attribute, filter)?;
    }
    let container = match resolved.schema {
        Some(schema) if schema != core_id => Container::Extension(schema.to_owned()),
        _ => Container::Core,
    };
    Ok(Location::Found(Target::Defined(Box::new(Defined {
        container,
        attribute,
        filter: path.filter.clone(),
        sub_attribute,
    }))))
}

/// A path no schema resolves: under a URN, a custom attribute; otherwise
/// nothing.
fn locate_custom(kind: ResourceKind, path: &PatchPath) -> Result<Location, Error> {
    let Some(urn) = &path.schema else {
        return Ok(Location::Unknown(format!("no attribute is named {}", path.name)));
    };
    let urn = match schema_named(kind, urn) {
        Some(schema) if schema.id == kind.core_schema().id => {
            return Ok(Location::Unknown(format!("{} has no attribute {}", schema.id, path.name)));
        }
        Some(schema) => schema.id.to_owned(),
        None => urn.clone(),
    };
    if path.filter.is_some() {
        return Err(Error::invalid_as(
            InvalidKind::Path,
            format!("{urn}:{} is in no schema rollcall knows, so it cannot be filtered", path.name),
        ));
    }
    Ok(Location::Found(Target::Custom {
        container: Container::Extension(urn),
        name: path.name.clone(),
        sub_attribute: path.sub_attribute.clone(),
    }))
}

/// Every path inside `emails[...]` must name a sub-attribute of `emails`.
fn check_value_filter(attribute: &Attribute, filter: &Filter) -> Result<(), Error> {
    match filter {
        Filter::And(left, right) | Filter::Or(left, right) => {
            check_value_filter(attribute, left)?;
            check_value_filter(attribute, right)
        }
        Filter::Not(inner) => check_value_filter(attribute, inner),
        Filter::Compare { path, .. } | Filter::Present { path } => {
            let names_a_sub_attribute = path.schema.is_none()
                && path.sub_attribute.is_none()
                && attribute.sub_attribute(&path.name).is_some();
            if names_a_sub_attribute {
                Ok(())
            } else {
                Err(Error::invalid_as(
                    InvalidKind::Path,
                    format!("{} has no sub-attribute {path}", attribute.name),
                ))
            }
        }
        Filter::ValuePath { .. } => Err(Error::invalid_as(
            InvalidKind::Path,
            "a value filter cannot contain another value path",
        )),
    }
}

/// The object attributes in `container` are stored in: the document, or
/// the extension's object (made when `create` is set).
fn container_mut<'d>(
    document: &'d mut Document,
    container: &Container,
    create: bool,
) -> Result<Option<&'d mut Map<String, Value>>, Error> {
    let urn = match container {
        Container::Core => return Ok(Some(document)),
        Container::Extension(urn) => urn,
    };
    let key = match existing_key(document, urn) {
        Some(key) => key,
        None if create => {
            document.insert(urn.clone(), Value::Object(Map::new()));
            urn.clone()
        }
        None => return Ok(None),
    };
    match document.get_mut(&key) {
        Some(Value::Object(extension)) => Ok(Some(extension)),
        Some(_) if create => {
            Err(Error::invalid(format!("{urn} holds a value that is not an object of attributes")))
        }
        _ => Ok(None),
    }
}

/// An extension left without attributes is no longer stored.
fn drop_empty_container(document: &mut Document, container: &Container) {
    if let Container::Extension(urn) = container
        && let Some(key) = existing_key(document, urn)
    {
        drop_if_empty(document, &key);
    }
}

/// Removes `key` when it holds an empty object or list.
fn drop_if_empty(fields: &mut Map<String, Value>, key: &str) {
    let empty = match fields.get(key) {
        Some(Value::Object(object)) => object.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty {
        fields.remove(key);
    }
}

fn apply_at(
    kind: ResourceKind,
    document: &mut Document,
    op: Op,
    target: &Target,
    value: Option<&Value>,
) -> Result<(), Error> {
    let result = match (op, value) {
        (Op::Remove, value) => remove_at(kind, document, target, value),
        (op, None) => {
            Err(Error::invalid_as(InvalidKind::Syntax, format!("{} needs a value", op.name())))
        }
        // An empty value clears the attribute (Entra ID sends "" for an
        // attribute that was emptied); so does replacing a list with [].
        (Op::Add | Op::Replace, Some(value))
            if value.is_null()
                || is_empty_string(value)
                || (op == Op::Replace && value.as_array().is_some_and(Vec::is_empty)) =>
        {
            remove_at(kind, document, target, None)
        }
        (op, Some(value)) => set_at(kind, document, op, target, value),
    };
    drop_empty_container(document, target.container());
    result
}

fn set_at(
    kind: ResourceKind,
    document: &mut Document,
    op: Op,
    target: &Target,
    value: &Value,
) -> Result<(), Error> {
    let Some(container) = container_mut(document, target.container(), true)? else {
        return Ok(());
    };
    match target {
        Target::Custom { name, sub_attribute, .. } => {
            set_custom(container, op, name, sub_attribute.as_deref(), value);
            Ok(())
        }
        Target::Defined(defined) => {
            let Defined { attribute, filter, sub_attribute, .. } = defined.as_ref();
            if filter.is_some() || (attribute.multi_valued && sub_attribute.is_some()) {
                let selection = Selection { kind, attribute, filter: filter.as_ref() };
                set_in_elements(container, &selection, *sub_attribute, op, value)
            } else if let Some(sub_attribute) = sub_attribute {
                set_sub_attribute(container, attribute, sub_attribute, value)
            } else {
                set_attribute(kind, container, attribute, op, value)
            }
        }
    }
}

/// `add` or `replace` on a whole attribute. On a multi-valued one, `add`
/// appends what is not there yet and `replace` replaces the list; on a
/// complex one both merge the sub-attributes given (RFC 7644 sections
/// 3.5.2.1 and 3.5.2.3); on a simple one both set it.
fn set_attribute(
    kind: ResourceKind,
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    op: Op,
    value: &Value,
) -> Result<(), Error> {
    let key = attribute.name;
    if attribute.multi_valued {
        let items = canonical_items(attribute, value)?;
        let mut elements = match op {
            Op::Add => take_elements(container, key),
            Op::Replace | Op::Remove => Vec::new(),
        };
        // Elements with an identity (a member's id) are found by a set, so
        // adding thousands of members to a large group stays linear.
        let mut known: HashSet<String> = elements
            .iter()
            .filter_map(|element| identity(attribute, element))
            .map(str::to_owned)
            .collect();
        for item in items {
            let new = match identity(attribute, &item) {
                Some(id) => known.insert(id.to_owned()),
                None => !contains_equivalent(kind, attribute, &elements, &item),
            };
            if new {
                elements.push(item);
            }
        }
        put_elements(container, key, elements);
        return Ok(());
    }
    if attribute.kind == AttributeType::Complex {
        let fields = complex_fields(attribute, value, key)?;
        let stored = container.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !stored.is_object() {
            *stored = Value::Object(Map::new());
        }
        if let Value::Object(object) = stored {
            merge_fields(attribute, object, fields, key)?;
        }
        drop_if_empty(container, key);
        return Ok(());
    }
    let new = super::document::normalize_simple(attribute, value, key)?;
    check_immutable(attribute, container.get(key), Some(&new), key)?;
    container.insert(key.to_owned(), new);
    Ok(())
}

/// `add` or `replace` on a sub-attribute of a single-valued complex
/// attribute (`name.givenName`, the Enterprise User's `manager.value`).
fn set_sub_attribute(
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    sub_attribute: &Attribute,
    value: &Value,
) -> Result<(), Error> {
    let path = format!("{}.{}", attribute.name, sub_attribute.name);
    let new = super::document::normalize_simple(sub_attribute, value, &path)?;
    let stored = container.entry(attribute.name).or_insert_with(|| Value::Object(Map::new()));
    if !stored.is_object() {
        *stored = Value::Object(Map::new());
    }
    if let Value::Object(object) = stored {
        check_immutable(sub_attribute, object.get(sub_attribute.name), Some(&new), &path)?;
        object.insert(sub_attribute.name.to_owned(), new);
    }
    Ok(())
}

/// The elements of a multi-valued attribute that an operation acts on: those
/// `filter` matches, or all of them when there is no filter.
#[derive(Debug, Clone, Copy)]
struct Selection<'a> {
    kind: ResourceKind,
    attribute: &'a Attribute,
    filter: Option<&'a Filter>,
}

impl Selection<'_> {
    fn selects(&self, element: &Value) -> bool {
        self.filter
            .is_none_or(|filter| eval::matches(self.kind, element, filter, Some(self.attribute)))
    }

    /// The path, as error messages name it.
    fn describe(&self, sub_attribute: Option<&Attribute>) -> String {
        let filter = self.filter.map(|filter| format!("[{filter}]")).unwrap_or_default();
        let sub_attribute = sub_attribute
            .map(|sub_attribute| format!(".{}", sub_attribute.name))
            .unwrap_or_default();
        format!("{}{filter}{sub_attribute}", self.attribute.name)
    }
}

/// `add` or `replace` on selected elements: their sub-attribute, or the
/// elements themselves (`replace` replaces a selected element, `add` merges
/// into it). When nothing is selected, an element is made from the filter's
/// `eq` terms and the value, so that `replace` on
/// `emails[type eq "work"].value` works before the user has a work email.
fn set_in_elements(
    container: &mut Map<String, Value>,
    selection: &Selection<'_>,
    sub_attribute: Option<&Attribute>,
    op: Op,
    value: &Value,
) -> Result<(), Error> {
    let attribute = selection.attribute;
    let path = selection.describe(sub_attribute);
    let change = match sub_attribute {
        Some(sub_attribute) => Change::Sub(
            sub_attribute,
            super::document::normalize_simple(sub_attribute, value, &path)?,
        ),
        None => Change::Fields(complex_fields(attribute, value, &path)?),
    };
    let mut elements = take_elements(container, attribute.name);
    let mut selected_any = false;
    for element in elements.iter_mut().filter(|element| selection.selects(element)) {
        selected_any = true;
        let Value::Object(element) = element else {
            continue;
        };
        match &change {
            Change::Sub(sub_attribute, new) => {
                check_immutable(sub_attribute, element.get(sub_attribute.name), Some(new), &path)?;
                element.insert(sub_attribute.name.to_owned(), new.clone());
            }
            Change::Fields(fields) if op == Op::Replace => {
                let replacement: Map<String, Value> = fields
                    .iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                for sub_attribute in &attribute.sub_attributes {
                    let name = sub_attribute.name;
                    check_immutable(
                        sub_attribute,
                        element.get(name),
                        replacement.get(name),
                        &path,
                    )?;
                }
                *element = replacement;
            }
            Change::Fields(fields) => merge_fields(attribute, element, fields.clone(), &path)?,
        }
    }
    if !selected_any {
        let mut created = match selection.filter {
            Some(filter) => seed_element(attribute, filter, &path)?,
            None => Map::new(),
        };
        match change {
            Change::Sub(sub_attribute, new) => {
                created.insert(sub_attribute.name.to_owned(), new);
            }
            Change::Fields(fields) => {
                for (name, value) in fields {
                    if value.is_null() {
                        created.remove(&name);
                    } else {
                        created.insert(name, value);
                    }
                }
            }
        }
        let created = Value::Object(created);
        if !selection.selects(&created) {
            return Err(Error::invalid_as(
                InvalidKind::NoTarget,
                format!(
                    "{path} matches no value, and the filter does not say how to make one that it would match"
                ),
            ));
        }
        if eval::is_present(&created) {
            elements.push(created);
        }
    }
    elements.retain(eval::is_present);
    put_elements(container, attribute.name, elements);
    Ok(())
}

/// What `add` or `replace` does to each selected element.
#[derive(Debug)]
enum Change<'a> {
    /// Sets one sub-attribute.
    Sub(&'a Attribute, Value),
    /// Sets (or, where null, clears) these sub-attributes.
    Fields(Map<String, Value>),
}

/// The element an `add` or `replace` makes when its filter matches nothing:
/// one with every `sub eq value` that the filter requires (`and` only).
fn seed_element(
    attribute: &Attribute,
    filter: &Filter,
    path: &str,
) -> Result<Map<String, Value>, Error> {
    let mut seed = Map::new();
    let mut pending = vec![filter];
    while let Some(filter) = pending.pop() {
        match filter {
            Filter::And(left, right) => {
                pending.push(left);
                pending.push(right);
            }
            Filter::Compare { path: sub_path, op: CompareOp::Equal, value } => {
                let sub_attribute = attribute.sub_attribute(&sub_path.name);
                if let (Some(sub_attribute), Some(value)) = (sub_attribute, literal_json(value)) {
                    let value = super::document::normalize_simple(sub_attribute, &value, path)?;
                    seed.insert(sub_attribute.name.to_owned(), value);
                }
            }
            _ => {}
        }
    }
    Ok(seed)
}

fn literal_json(value: &CompareValue) -> Option<Value> {
    match value {
        CompareValue::Null => None,
        CompareValue::Bool(truth) => Some(Value::Bool(*truth)),
        CompareValue::Number(number) => Some(Value::Number(number.clone())),
        CompareValue::String(text) => Some(Value::String(text.clone())),
    }
}

fn json_literal(value: &Value) -> Option<CompareValue> {
    match value {
        Value::Bool(truth) => Some(CompareValue::Bool(*truth)),
        Value::Number(number) => Some(CompareValue::Number(number.clone())),
        Value::String(text) => Some(CompareValue::String(text.clone())),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A custom attribute, set as sent. `add` on a list appends.
fn set_custom(
    container: &mut Map<String, Value>,
    op: Op,
    name: &str,
    sub_attribute: Option<&str>,
    value: &Value,
) {
    let key = existing_key(container, name).unwrap_or_else(|| name.to_owned());
    let Some(sub_attribute) = sub_attribute else {
        if value.is_null() || is_empty_string(value) {
            container.remove(&key);
            return;
        }
        match (op, container.get_mut(&key), value) {
            (Op::Add, Some(Value::Array(stored)), Value::Array(items)) => {
                for item in items {
                    if !stored.contains(item) {
                        stored.push(item.clone());
                    }
                }
            }
            _ => {
                container.insert(key, value.clone());
            }
        }
        return;
    };
    let stored = container.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
    if !stored.is_object() {
        *stored = Value::Object(Map::new());
    }
    if let Value::Object(object) = stored {
        let sub_key =
            existing_key(object, sub_attribute).unwrap_or_else(|| sub_attribute.to_owned());
        object.insert(sub_key, value.clone());
    }
}

fn remove_at(
    kind: ResourceKind,
    document: &mut Document,
    target: &Target,
    value: Option<&Value>,
) -> Result<(), Error> {
    let Some(container) = container_mut(document, target.container(), false)? else {
        return Ok(());
    };
    let (attribute, filter, sub_attribute) = match target {
        Target::Custom { name, sub_attribute, .. } => {
            remove_custom(container, name, sub_attribute.as_deref());
            return Ok(());
        }
        Target::Defined(defined) => {
            let Defined { attribute, filter, sub_attribute, .. } = defined.as_ref();
            (attribute, filter.as_ref(), sub_attribute.as_ref())
        }
    };
    let key = attribute.name;
    let selection = Selection { kind, attribute, filter };
    match (filter, sub_attribute) {
        (None, None) => match value {
            // The old Entra ID dialect: `remove` on `members` with the
            // members to remove as the value.
            Some(value) if attribute.multi_valued && !value.is_null() => {
                let items = canonical_items(attribute, value)?;
                let mut elements = take_elements(container, key);
                let ids: Option<HashSet<&str>> =
                    items.iter().map(|item| identity(attribute, item)).collect();
                match ids {
                    // Members listed by id: a set, so removing thousands stays linear.
                    Some(ids) => elements.retain(|element| {
                        identity(attribute, element).is_none_or(|id| !ids.contains(id))
                    }),
                    None => {
                        let wanted: Vec<Wanted<'_>> =
                            items.iter().map(|item| Wanted::new(attribute, item)).collect();
                        elements.retain(|element| {
                            !wanted.iter().any(|wanted| wanted.is(kind, attribute, element))
                        });
                    }
                }
                put_elements(container, key, elements);
            }
            _ => {
                check_immutable(attribute, container.get(key), None, key)?;
                container.remove(key);
            }
        },
        (None, Some(sub_attribute)) if !attribute.multi_valued => {
            let path = format!("{key}.{}", sub_attribute.name);
            if let Some(Value::Object(object)) = container.get_mut(key) {
                check_immutable(sub_attribute, object.get(sub_attribute.name), None, &path)?;
                object.remove(sub_attribute.name);
            }
            drop_if_empty(container, key);
        }
        (_, None) => {
            let mut elements = take_elements(container, key);
            elements.retain(|element| !selection.selects(element));
            put_elements(container, key, elements);
        }
        (_, Some(sub_attribute)) => {
            let path = selection.describe(Some(sub_attribute));
            let mut elements = take_elements(container, key);
            for element in elements.iter_mut().filter(|element| selection.selects(element)) {
                if let Value::Object(element) = element {
                    check_immutable(sub_attribute, element.get(sub_attribute.name), None, &path)?;
                    element.remove(sub_attribute.name);
                }
            }
            elements.retain(eval::is_present);
            put_elements(container, key, elements);
        }
    }
    Ok(())
}

fn remove_custom(container: &mut Map<String, Value>, name: &str, sub_attribute: Option<&str>) {
    let Some(key) = existing_key(container, name) else {
        return;
    };
    match sub_attribute {
        None => {
            container.remove(&key);
        }
        Some(sub_attribute) => {
            if let Some(Value::Object(object)) = container.get_mut(&key)
                && let Some(sub_key) = existing_key(object, sub_attribute)
            {
                object.remove(&sub_key);
            }
            drop_if_empty(container, &key);
        }
    }
}

/// The stored values of a multi-valued attribute, taken out of `container`
/// (a lone value counts as a list of one).
fn take_elements(container: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match container.remove(key) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(single) => vec![single],
    }
}

/// Puts the values back; an empty list is an absent attribute.
fn put_elements(container: &mut Map<String, Value>, key: &str, elements: Vec<Value>) {
    if !elements.is_empty() {
        container.insert(key.to_owned(), Value::Array(elements));
    }
}

/// An element's identity, when its attribute has one: the immutable
/// `value` of a group member (its id). Two elements with one identity are
/// the same element, whatever else they say.
fn identity<'v>(attribute: &Attribute, element: &'v Value) -> Option<&'v str> {
    attribute.sub_attribute("value").filter(|value| value.mutability == Mutability::Immutable)?;
    element.get("value").and_then(Value::as_str)
}

fn contains_equivalent(
    kind: ResourceKind,
    attribute: &Attribute,
    elements: &[Value],
    item: &Value,
) -> bool {
    let wanted = Wanted::new(attribute, item);
    elements.iter().any(|element| wanted.is(kind, attribute, element))
}

/// A value given in a request, and how to find it among stored elements:
/// identical, or the same member of a group (members are their `value`, an
/// id), or an element with every sub-attribute the value gives, compared as
/// a filter compares them (so `{"value": "B@example.com"}` is already among
/// `[{"value": "b@example.com", "type": "work"}]`).
#[derive(Debug)]
struct Wanted<'a> {
    item: &'a Value,
    filter: Option<Filter>,
}

impl<'a> Wanted<'a> {
    fn new(attribute: &Attribute, item: &'a Value) -> Wanted<'a> {
        let Value::Object(fields) = item else {
            return Wanted { item, filter: None };
        };
        // A sub-attribute `value` that cannot change is the element's
        // identity (a member's id): a member is in a group once, whatever
        // else is said about it.
        let identity = attribute
            .sub_attribute("value")
            .filter(|value| value.mutability == Mutability::Immutable)
            .and_then(|_| fields.get("value"));
        let terms: Option<Vec<Filter>> = match identity {
            Some(value) => equals("value", value).map(|term| vec![term]),
            None => fields.iter().map(|(name, value)| equals(name, value)).collect(),
        };
        let filter = terms.and_then(|terms| {
            terms.into_iter().reduce(|left, right| Filter::And(Box::new(left), Box::new(right)))
        });
        Wanted { item, filter }
    }

    fn is(&self, kind: ResourceKind, attribute: &Attribute, element: &Value) -> bool {
        element == self.item
            || self
                .filter
                .as_ref()
                .is_some_and(|filter| eval::matches(kind, element, filter, Some(attribute)))
    }
}

fn equals(name: &str, value: &Value) -> Option<Filter> {
    Some(Filter::Compare {
        path: AttrPath::named(name),
        op: CompareOp::Equal,
        value: json_literal(value)?,
    })
}

/// Refuses to change or remove an immutable attribute that has a value
/// (RFC 7643 section 2.2: it may be set once, when absent).
fn check_immutable(
    attribute: &Attribute,
    stored: Option<&Value>,
    new: Option<&Value>,
    path: &str,
) -> Result<(), Error> {
    if attribute.mutability != Mutability::Immutable {
        return Ok(());
    }
    match stored {
        Some(stored) if eval::is_present(stored) && Some(stored) != new => Err(Error::invalid_as(
            InvalidKind::Mutability,
            format!("{path} is immutable: it can be set when absent, never changed or removed"),
        )),
        _ => Ok(()),
    }
}

/// The values given for a multi-valued attribute, canonical; a lone value
/// is a list of one, and nulls and empty elements are dropped.
fn canonical_items(attribute: &Attribute, value: &Value) -> Result<Vec<Value>, Error> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    };
    let mut canonical = Vec::with_capacity(items.len());
    for item in items {
        if item.is_null() || is_empty_string(item) {
            continue;
        }
        let item = if attribute.kind == AttributeType::Complex {
            let fields = complex_fields(attribute, item, attribute.name)?;
            Value::Object(fields.into_iter().filter(|(_, value)| !value.is_null()).collect())
        } else {
            super::document::normalize_simple(attribute, item, attribute.name)?
        };
        if eval::is_present(&item) {
            canonical.push(item);
        }
    }
    Ok(canonical)
}

/// The sub-attributes a value gives for a complex attribute, with canonical
/// names and values; `null` stands for "clear this one" (given as null or
/// ""). Read-only and unknown sub-attributes are dropped, as `normalize`
/// drops them.
fn complex_fields(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Map<String, Value>, Error> {
    let fields = match value {
        Value::Object(fields) => fields,
        // One element given as a list of one.
        Value::Array(items) if items.len() == 1 => match items.first() {
            Some(Value::Object(fields)) => fields,
            _ => return Err(Error::invalid(format!("{path} must be an object"))),
        },
        // A bare value for a complex attribute with a `value` (Entra ID's
        // manager id).
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            let Some(sub_attribute) = attribute.sub_attribute("value") else {
                return Err(Error::invalid(format!("{path} must be an object")));
            };
            let mut fields = Map::new();
            let value =
                super::document::normalize_simple(sub_attribute, value, &format!("{path}.value"))?;
            fields.insert(sub_attribute.name.to_owned(), value);
            return Ok(fields);
        }
        _ => return Err(Error::invalid(format!("{path} must be an object"))),
    };
    let mut canonical = Map::new();
    for (name, value) in fields {
        let Some(sub_attribute) = attribute.sub_attribute(name) else {
            tracing::debug!(
                attribute = path,
                sub_attribute = name,
                "ignoring an unknown sub-attribute"
            );
            continue;
        };
        if sub_attribute.mutability == Mutability::ReadOnly {
            continue;
        }
        let value = if value.is_null() || is_empty_string(value) {
            Value::Null
        } else {
            super::document::normalize_simple(
                sub_attribute,
                value,
                &format!("{path}.{}", sub_attribute.name),
            )?
        };
        canonical.insert(sub_attribute.name.to_owned(), value);
    }
    Ok(canonical)
}

/// Merges canonical sub-attributes into a stored complex value; a null
/// clears one.
fn merge_fields(
    attribute: &Attribute,
    object: &mut Map<String, Value>,
    fields: Map<String, Value>,
    path: &str,
) -> Result<(), Error> {
    for (name, value) in fields {
        if let Some(sub_attribute) = attribute.sub_attribute(&name) {
            let new = (!value.is_null()).then_some(&value);
            check_immutable(sub_attribute, object.get(&name), new, &format!("{path}.{name}"))?;
        }
        if value.is_null() {
            object.remove(&name);
        } else {
            object.insert(name, value);
        }
    }
    Ok(())
}

/// The required attribute (`userName`, a Group's `displayName`) must
/// survive the request.
fn check_required(kind: ResourceKind, document: &Document) -> Result<(), Error> {
    let core = kind.core_schema();
    for attribute in core.attributes.iter().filter(|attribute| attribute.required) {
        let present = document
            .get(attribute.name)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.trim().is_empty());
        if !present {
            return Err(Error::invalid(format!(
                "{} is required: a PATCH can change it but not remove it",
                attribute.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::filter::parse_filter;
    use crate::scim::document::normalize;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const CUSTOM: &str = "urn:ietf:params:scim:schemas:extension:2.0:Metadata";

    fn user() -> Value {
        json!({
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs Jensen",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
        })
    }

    fn group() -> Value {
        json!({
            "displayName": "Admins",
            "members": [{"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}]
        })
    }

    fn document(value: Value) -> Document {
        match value {
            Value::Object(fields) => fields,
            other => panic!("not a document: {other}"),
        }
    }

    fn body(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
    }

    /// The single check of a successful PATCH: the whole resulting document,
    /// which must also be canonical (normalising it changes nothing).
    fn check(kind: ResourceKind, before: Value, operations: Value, expected: Value, case: &str) {
        let patched = apply_patch(kind, &document(before), &body(operations.clone()))
            .map(Value::Object)
            .map_err(|error| error.to_string());
        assert_eq!(patched, Ok(expected.clone()), "{case}: {operations}");
        let normalized = normalize(kind, &expected).map(Value::Object).map_err(|e| e.to_string());
        assert_eq!(normalized, Ok(expected), "{case}: not canonical after {operations}");
    }

    fn check_error(
        kind: ResourceKind,
        before: Value,
        request: Value,
        scim_type: &str,
        needle: &str,
    ) {
        match apply_patch(kind, &document(before), &request) {
            Ok(patched) => panic!("{request} gave {patched:?}"),
            Err(Error::Invalid { kind, message }) => {
                assert_eq!(kind.scim_type(), scim_type, "{request}: {message}");
                assert!(message.contains(needle), "{request}: {message}");
            }
            Err(other) => panic!("{request}: {other:?}"),
        }
    }

    /// `user()` with some top-level members replaced (null removes one).
    fn user_with(changes: Value) -> Value {
        let mut user = user();
        if let (Value::Object(fields), Value::Object(changes)) = (&mut user, changes) {
            for (key, value) in changes {
                if value.is_null() {
                    fields.remove(&key);
                } else {
                    fields.insert(key, value);
                }
            }
        }
        user
    }

    #[test]
    fn add_and_replace_with_a_path() {
        let cases = [
            (
                "add a simple attribute",
                json!([{"op": "add", "path": "title", "value": "Tour Guide"}]),
                user_with(json!({"title": "Tour Guide"})),
            ),
            (
                "replace a simple attribute",
                json!([{"op": "replace", "path": "displayName", "value": "Barbara J."}]),
                user_with(json!({"displayName": "Barbara J."})),
            ),
            (
                "add on a single-valued attribute sets it",
                json!([{"op": "add", "path": "displayName", "value": "B"}]),
                user_with(json!({"displayName": "B"})),
            ),
            (
                "a sub-attribute",
                json!([{"op": "replace", "path": "name.givenName", "value": "Babs"}]),
                user_with(json!({"name": {"givenName": "Babs", "familyName": "Jensen"}})),
            ),
            (
                "a sub-attribute of a complex attribute that is absent",
                json!([{"op": "add", "path": "addresses", "value": {"locality": "Oslo"}},
                       {"op": "add", "path": "name.middleName", "value": "Anne"}]),
                user_with(json!({
                    "addresses": [{"locality": "Oslo"}],
                    "name": {"givenName": "Barbara", "familyName": "Jensen", "middleName": "Anne"}
                })),
            ),
            (
                "a complex attribute merges the sub-attributes given",
                json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs", "formatted": "Babs Jensen"}}]),
                user_with(
                    json!({"name": {"givenName": "Babs", "familyName": "Jensen", "formatted": "Babs Jensen"}}),
                ),
            ),
            (
                "add appends to a multi-valued attribute",
                json!([{"op": "add", "path": "emails", "value": [{"value": "b@other.org", "type": "other"}]}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "b@other.org", "type": "other"}
                ]})),
            ),
            (
                "add does not duplicate a value already there",
                json!([{"op": "add", "path": "emails", "value": [
                    {"value": "BJENSEN@example.com", "type": "work"},
                    {"value": "b@other.org"}, {"value": "b@other.org"}
                ]}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "b@other.org"}
                ]})),
            ),
            (
                "a lone value for a multi-valued attribute is a list of one",
                json!([{"op": "add", "path": "phoneNumbers", "value": {"value": "555-1234", "type": "work"}}]),
                user_with(json!({"phoneNumbers": [{"value": "555-1234", "type": "work"}]})),
            ),
            (
                "replace replaces a multi-valued attribute whole",
                json!([{"op": "replace", "path": "emails", "value": [{"value": "new@example.com", "type": "work"}]}]),
                user_with(json!({"emails": [{"value": "new@example.com", "type": "work"}]})),
            ),
            (
                "an empty string clears",
                json!([{"op": "replace", "path": "displayName", "value": ""}]),
                user_with(json!({"displayName": null})),
            ),
            (
                "null clears",
                json!([{"op": "add", "path": "name", "value": null}]),
                user_with(json!({"name": null})),
            ),
            (
                "replace with an empty list clears",
                json!([{"op": "replace", "path": "emails", "value": []}]),
                user_with(json!({"emails": null})),
            ),
            (
                "a null sub-attribute in a merge clears it",
                json!([{"op": "replace", "path": "name", "value": {"givenName": null, "familyName": ""}}]),
                user_with(json!({"name": null})),
            ),
            (
                "booleans sent as strings",
                json!([{"op": "Replace", "path": "active", "value": "False"}]),
                user_with(json!({"active": false})),
            ),
            (
                "names in any case",
                json!([{"op": "REPLACE", "path": "NAME.GIVENNAME", "value": "Babs"},
                       {"op": "Add", "path": "Emails", "value": [{"VALUE": "x@y.org", "Type": "other", "Primary": "false"}]}]),
                user_with(json!({
                    "name": {"givenName": "Babs", "familyName": "Jensen"},
                    "emails": [
                        {"value": "bjensen@example.com", "type": "work", "primary": true},
                        {"value": "babs@jensen.org", "type": "home"},
                        {"value": "x@y.org", "type": "other", "primary": false}
                    ]
                })),
            ),
            (
                "the core schema's URN",
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:userName", "value": "babs"},
                       {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName", "value": "J"}]),
                user_with(
                    json!({"userName": "babs", "name": {"givenName": "Barbara", "familyName": "J"}}),
                ),
            ),
            (
                "unknown sub-attributes in a value are dropped, as normalize drops them",
                json!([{"op": "add", "path": "emails", "value": [{"value": "z@z.org", "nonsense": 1}]}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "z@z.org"}
                ]})),
            ),
            (
                "password is accepted and never stored",
                json!([{"op": "replace", "path": "password", "value": "hunter2"}]),
                user(),
            ),
        ];
        for (name, operations, expected) in cases {
            check(ResourceKind::User, user(), operations, expected, name);
        }
    }

    #[test]
    fn extensions_by_urn() {
        let cases = [
            (
                "an extension attribute",
                json!([{"op": "replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "42"}]),
                user_with(
                    json!({ENTERPRISE: {"employeeNumber": "42", "manager": {"value": "26118915"}}}),
                ),
            ),
            (
                "an extension's sub-attribute, URN in another case",
                json!([{"op": "add", "path": format!("{}:manager.value", ENTERPRISE.to_uppercase()), "value": "m2"}]),
                user_with(
                    json!({ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "m2"}}}),
                ),
            ),
            (
                "Entra ID's manager as a bare id",
                json!([{"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": "m3"}]),
                user_with(
                    json!({ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "m3"}}}),
                ),
            ),
            (
                "removing the last extension attributes removes the extension",
                json!([{"op": "remove", "path": format!("{ENTERPRISE}:manager")},
                       {"op": "remove", "path": format!("{ENTERPRISE}:employeeNumber")}]),
                user_with(json!({ENTERPRISE: null})),
            ),
            (
                "the whole extension as the path",
                json!([{"op": "add", "path": ENTERPRISE, "value": {"department": "Tour Operations"}}]),
                user_with(json!({ENTERPRISE: {
                    "employeeNumber": "701984", "manager": {"value": "26118915"}, "department": "Tour Operations"
                }})),
            ),
            (
                "removing the whole extension",
                json!([{"op": "remove", "path": ENTERPRISE}]),
                user_with(json!({ENTERPRISE: null})),
            ),
            (
                "a custom extension's attribute",
                json!([{"op": "add", "path": format!("{CUSTOM}:costCenter"), "value": "CC-42"}]),
                user_with(json!({CUSTOM: {"costCenter": "CC-42"}})),
            ),
            (
                "a custom extension's attribute's sub-attribute",
                json!([{"op": "add", "path": format!("{CUSTOM}:badge.colour"), "value": "red"}]),
                user_with(json!({CUSTOM: {"badge": {"colour": "red"}}})),
            ),
            (
                "an attribute of the Enterprise User the schema does not list",
                json!([{"op": "add", "path": format!("{ENTERPRISE}:badge"), "value": "A1"}]),
                user_with(
                    json!({ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}, "badge": "A1"}}),
                ),
            ),
            (
                "a whole custom extension",
                json!([{"op": "add", "path": CUSTOM, "value": {"costCenter": "CC-42", "tags": ["a"]}}]),
                user_with(json!({CUSTOM: {"costCenter": "CC-42", "tags": ["a"]}})),
            ),
        ];
        for (name, operations, expected) in cases {
            check(ResourceKind::User, user(), operations, expected, name);
        }
        // On a custom extension already stored: merge, append, remove.
        let stored =
            user_with(json!({CUSTOM: {"costCenter": "CC-1", "tags": ["a"], "Floor": "3"}}));
        check(
            ResourceKind::User,
            stored.clone(),
            json!([
                {"op": "add", "path": CUSTOM, "value": {"tags": ["a", "b"], "desk": "12"}},
                {"op": "replace", "path": format!("{CUSTOM}:costCenter"), "value": "CC-2"},
                {"op": "remove", "path": format!("{CUSTOM}:floor")}
            ]),
            user_with(json!({CUSTOM: {"costCenter": "CC-2", "tags": ["a", "b"], "desk": "12"}})),
            "merge into a stored custom extension",
        );
        let remove = json!([{"op": "remove", "path": CUSTOM}]);
        check(ResourceKind::User, stored, remove, user(), "remove a stored custom extension");
    }

    #[test]
    fn value_filters() {
        let cases = [
            (
                "replace a sub-attribute of the matching elements",
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "babs@example.com"}]),
                user_with(json!({"emails": [
                    {"value": "babs@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"}
                ]})),
            ),
            (
                "replace matching elements whole",
                json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h@jensen.org", "type": "home"}}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "h@jensen.org", "type": "home"}
                ]})),
            ),
            (
                "add merges into matching elements",
                json!([{"op": "add", "path": "emails[type eq \"home\"]", "value": {"display": "Home"}}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home", "display": "Home"}
                ]})),
            ),
            (
                "a filter matching several elements",
                json!([{"op": "replace", "path": "emails[value co \"jensen\"].display", "value": "J"}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true, "display": "J"},
                    {"value": "babs@jensen.org", "type": "home", "display": "J"}
                ]})),
            ),
            (
                "replace matching nothing acts as add, from the filter's eq terms",
                json!([{"op": "replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555-0100"}]),
                user_with(json!({"phoneNumbers": [{"type": "mobile", "value": "555-0100"}]})),
            ),
            (
                "add matching nothing too, with every eq term of an and",
                json!([{"op": "add", "path": "emails[type eq \"other\" and primary eq false].value", "value": "o@o.org"}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "o@o.org", "type": "other", "primary": false}
                ]})),
            ),
            (
                "replace of whole elements matching nothing",
                json!([{"op": "replace", "path": "emails[type eq \"other\"]", "value": {"value": "o@o.org"}}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "o@o.org", "type": "other"}
                ]})),
            ),
            (
                "an empty value removes the sub-attribute of matching elements",
                json!([{"op": "replace", "path": "emails[type eq \"work\"].primary", "value": null}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work"},
                    {"value": "babs@jensen.org", "type": "home"}
                ]})),
            ),
            (
                "remove the matching elements",
                json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
                user_with(json!({"emails": [{"value": "babs@jensen.org", "type": "home"}]})),
            ),
            (
                "remove the sub-attribute of matching elements",
                json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work"},
                    {"value": "babs@jensen.org", "type": "home"}
                ]})),
            ),
            (
                "removing every element removes the attribute",
                json!([{"op": "remove", "path": "emails[value ew \"example.com\" or type eq \"home\"]"}]),
                user_with(json!({"emails": null})),
            ),
            (
                "remove matching nothing changes nothing",
                json!([{"op": "remove", "path": "emails[type eq \"other\"]"}]),
                user(),
            ),
            (
                "a sub-attribute of every element, without a filter",
                json!([{"op": "remove", "path": "emails.primary"}]),
                user_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work"},
                    {"value": "babs@jensen.org", "type": "home"}
                ]})),
            ),
            (
                "a filter in any case, and a ']' inside a string",
                json!([{"op": "Replace", "path": "EMAILS[TYPE EQ \"HOME\"].VALUE", "value": "a]b@jensen.org"},
                       {"op": "remove", "path": "emails[value eq \"a]b@jensen.org\"]"}]),
                user_with(
                    json!({"emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}]}),
                ),
            ),
        ];
        for (name, operations, expected) in cases {
            check(ResourceKind::User, user(), operations, expected, name);
        }
    }

    #[test]
    fn group_members() {
        let cases = [
            (
                "add members, skipping one already there",
                json!([{"op": "Add", "path": "members", "value": [
                    {"value": "u3", "display": "Carol"}, {"value": "u1"}
                ]}]),
                json!({"displayName": "Admins", "members": [
                    {"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}, {"value": "u3"}
                ]}),
            ),
            (
                "remove a member by filter",
                json!([{"op": "Remove", "path": "members[value eq \"u1\"]"}]),
                json!({"displayName": "Admins", "members": [{"value": "u2", "type": "User"}]}),
            ),
            (
                "member ids are caseExact",
                json!([{"op": "Remove", "path": "members[value eq \"U1\"]"}]),
                group(),
            ),
            (
                "remove members old-style, with a value",
                json!([{"op": "Remove", "path": "members", "value": [{"value": "u2"}, {"value": "u9"}]}]),
                json!({"displayName": "Admins", "members": [{"value": "u1", "type": "User"}]}),
            ),
            (
                "remove every member",
                json!([{"op": "remove", "path": "members"}]),
                json!({"displayName": "Admins"}),
            ),
            (
                "replace the members whole",
                json!([{"op": "replace", "path": "members", "value": [{"value": "u7", "type": "User"}]}]),
                json!({"displayName": "Admins", "members": [{"value": "u7", "type": "User"}]}),
            ),
            (
                "rename the group without a path",
                json!([{"op": "replace", "value": {"id": "ignored", "displayName": "Operators"}}]),
                json!({"displayName": "Operators", "members": [
                    {"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}
                ]}),
            ),
            (
                "an immutable sub-attribute may be set where absent",
                json!([{"op": "add", "path": "members", "value": [{"value": "u3"}]},
                       {"op": "add", "path": "members[value eq \"u3\"].type", "value": "User"}]),
                json!({"displayName": "Admins", "members": [
                    {"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}, {"value": "u3", "type": "User"}
                ]}),
            ),
        ];
        for (name, operations, expected) in cases {
            check(ResourceKind::Group, group(), operations, expected, name);
        }
    }

    #[test]
    fn without_a_path() {
        let cases = [
            (
                "add sets single-valued and appends multi-valued attributes",
                json!([{"op": "add", "value": {
                    "Title": "CEO", "emails": [{"value": "c@example.com", "type": "other"}]
                }}]),
                user_with(json!({"title": "CEO", "emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "c@example.com", "type": "other"}
                ]})),
            ),
            (
                "replace replaces multi-valued attributes whole",
                json!([{"op": "replace", "value": {
                    "emails": [{"value": "c@example.com", "type": "work"}], "active": "False"
                }}]),
                user_with(
                    json!({"active": false, "emails": [{"value": "c@example.com", "type": "work"}]}),
                ),
            ),
            (
                "Entra ID's dotted and URN-qualified keys",
                json!([{"op": "Replace", "value": {
                    "name.givenName": "Babs",
                    format!("{ENTERPRISE}:employeeNumber"): "99",
                    format!("{ENTERPRISE}:department"): "Tours",
                    "emails[type eq \"work\"].value": "babs@example.com",
                    "displayName": ""
                }}]),
                user_with(json!({
                    "name": {"givenName": "Babs", "familyName": "Jensen"},
                    "displayName": null,
                    "emails": [
                        {"value": "babs@example.com", "type": "work", "primary": true},
                        {"value": "babs@jensen.org", "type": "home"}
                    ],
                    ENTERPRISE: {"employeeNumber": "99", "department": "Tours", "manager": {"value": "26118915"}}
                })),
            ),
            (
                "extension objects, known and custom",
                json!([{"op": "add", "value": {
                    ENTERPRISE.to_lowercase(): {"Department": "Tours", "manager": {"value": "m2", "displayName": "dropped"}},
                    CUSTOM: {"costCenter": "CC-42"}
                }}]),
                user_with(json!({
                    ENTERPRISE: {"employeeNumber": "701984", "department": "Tours", "manager": {"value": "m2"}},
                    CUSTOM: {"costCenter": "CC-42"}
                })),
            ),
            (
                "the core schema's object, read-only and unknown attributes ignored",
                json!([{"op": "replace", "value": {
                    "schemas": [PATCH_OP_SCHEMA],
                    "id": "x", "meta": {"version": "W/1"}, "groups": [], "favouriteColour": "blue",
                    "urn:ietf:params:scim:schemas:core:2.0:User": {"nickName": "Babs"}
                }}]),
                user_with(json!({"nickName": "Babs"})),
            ),
            (
                "a custom extension's attribute by URN-qualified key",
                json!([{"op": "add", "value": {format!("{CUSTOM}:costCenter"): "CC-7"}}]),
                user_with(json!({CUSTOM: {"costCenter": "CC-7"}})),
            ),
        ];
        for (name, operations, expected) in cases {
            check(ResourceKind::User, user(), operations, expected, name);
        }
    }

    #[test]
    fn removing_with_a_path() {
        let cases = [
            (
                "a simple attribute",
                json!([{"op": "remove", "path": "displayName"}]),
                user_with(json!({"displayName": null})),
            ),
            (
                "a sub-attribute",
                json!([{"op": "remove", "path": "name.familyName"}]),
                user_with(json!({"name": {"givenName": "Barbara"}})),
            ),
            (
                "the last sub-attribute removes the attribute",
                json!([{"op": "remove", "path": "name.familyName"}, {"op": "REMOVE", "path": "Name.GivenName"}]),
                user_with(json!({"name": null})),
            ),
            (
                "a multi-valued attribute",
                json!([{"op": "remove", "path": "emails"}]),
                user_with(json!({"emails": null})),
            ),
            (
                "what is absent",
                json!([{"op": "remove", "path": "nickName"}, {"op": "remove", "path": "name.middleName"},
                       {"op": "remove", "path": format!("{CUSTOM}:costCenter")}]),
                user(),
            ),
            (
                "remove then add of the required attribute in one request",
                json!([{"op": "remove", "path": "userName"}, {"op": "add", "path": "userName", "value": "babs"}]),
                user_with(json!({"userName": "babs"})),
            ),
        ];
        for (name, operations, expected) in cases {
            check(ResourceKind::User, user(), operations, expected, name);
        }
    }

    #[test]
    fn body_shape() {
        // Operations in any case, no schemas: tolerated.
        let patched = apply_patch(
            ResourceKind::User,
            &document(user()),
            &json!({"operations": [{"OP": "replace", "PATH": "title", "VALUE": "CEO"}]}),
        );
        assert_eq!(patched.map(Value::Object).ok(), Some(user_with(json!({"title": "CEO"}))));
        let cases = [
            (json!([]), "invalidSyntax", "must be a JSON object"),
            (json!({"schemas": [PATCH_OP_SCHEMA]}), "invalidSyntax", "needs Operations"),
            (json!({"Operations": []}), "invalidSyntax", "Operations is empty"),
            (json!({"Operations": {"op": "add"}}), "invalidSyntax", "must be a list"),
            (
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "Operations": [{"op": "remove", "path": "title"}]}),
                "invalidSyntax",
                "PatchOp",
            ),
            (
                json!({"Operations": ["add"]}),
                "invalidSyntax",
                "Operations[0]: an operation must be",
            ),
            (json!({"Operations": [{"path": "title"}]}), "invalidSyntax", "needs an op"),
            (
                json!({"Operations": [{"op": "remove", "path": "title"}, {"op": "move", "path": "title"}]}),
                "invalidSyntax",
                "Operations[1]: op \"move\" is not one of",
            ),
            (
                json!({"Operations": [{"op": "add", "path": "title"}]}),
                "invalidSyntax",
                "add needs a value",
            ),
            (
                json!({"Operations": [{"op": "add", "path": 7, "value": "x"}]}),
                "invalidPath",
                "must be a string",
            ),
        ];
        for (request, scim_type, needle) in cases {
            check_error(ResourceKind::User, user(), request, scim_type, needle);
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let user_cases = [
            (json!([{"op": "remove"}]), "noTarget", "remove needs a path"),
            (json!([{"op": "remove", "value": {"title": "x"}}]), "noTarget", "remove needs a path"),
            (
                json!([{"op": "add", "path": "emails[type eq", "value": "x"}]),
                "invalidPath",
                "not a valid path",
            ),
            (
                json!([{"op": "add", "path": "emails[type eq \"work\"", "value": "x"}]),
                "invalidPath",
                "'[' is not closed",
            ),
            (
                json!([{"op": "add", "path": "emails[type eq \"work\"]value", "value": "x"}]),
                "invalidPath",
                "cannot follow",
            ),
            (
                json!([{"op": "add", "path": "emails[type eq \"work\"].value.x", "value": "x"}]),
                "invalidPath",
                "not a sub-attribute name",
            ),
            (
                json!([{"op": "add", "path": "emails.value[type eq \"work\"]", "value": "x"}]),
                "invalidPath",
                "not a sub-attribute",
            ),
            (
                json!([{"op": "add", "path": "emails[nonsense eq \"x\"]", "value": {}}]),
                "invalidPath",
                "emails has no sub-attribute nonsense",
            ),
            (
                json!([{"op": "add", "path": "emails[type[value eq \"x\"]]", "value": {}}]),
                "invalidPath",
                "another value path",
            ),
            (
                json!([{"op": "add", "path": "name[givenName eq \"x\"]", "value": {}}]),
                "invalidPath",
                "name is not one",
            ),
            (
                json!([{"op": "add", "path": "9lives", "value": "x"}]),
                "invalidPath",
                "not a valid path",
            ),
            (
                json!([{"op": "add", "path": "favouriteColour", "value": "blue"}]),
                "invalidPath",
                "no attribute is named favouriteColour",
            ),
            (
                json!([{"op": "add", "path": "name.nonsense", "value": "x"}]),
                "invalidPath",
                "name has no sub-attribute nonsense",
            ),
            (
                json!([{"op": "add", "path": "title.x", "value": "x"}]),
                "invalidPath",
                "title has no sub-attribute x",
            ),
            (
                json!([{"op": "add", "path": "shoeSize", "value": "x"}]),
                "invalidPath",
                "no attribute is named shoeSize",
            ),
            (
                json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:displayName", "value": "x"}]),
                "invalidPath",
                "not a schema of this resource",
            ),
            (
                json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:core:2.0:User"}]),
                "invalidPath",
                "naming an attribute",
            ),
            (
                json!([{"op": "add", "path": format!("{CUSTOM}:tags[value eq \"x\"]"), "value": "x"}]),
                "invalidPath",
                "cannot be filtered",
            ),
            (
                json!([{"op": "replace", "path": "id", "value": "x"}]),
                "mutability",
                "id is read-only",
            ),
            (json!([{"op": "remove", "path": "meta"}]), "mutability", "meta is read-only"),
            (
                json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
                "mutability",
                "groups is read-only",
            ),
            (
                json!([{"op": "replace", "path": "meta.lastModified", "value": "2026-01-01T00:00:00Z"}]),
                "mutability",
                "meta is read-only",
            ),
            (
                json!([{"op": "replace", "path": format!("{ENTERPRISE}:manager.displayName"), "value": "x"}]),
                "mutability",
                "manager.displayName is read-only",
            ),
            (json!([{"op": "remove", "path": "userName"}]), "invalidValue", "userName is required"),
            (
                json!([{"op": "replace", "path": "userName", "value": ""}]),
                "invalidValue",
                "userName is required",
            ),
            (
                json!([{"op": "replace", "path": "active", "value": "yes"}]),
                "invalidValue",
                "active must be true or false",
            ),
            (
                json!([{"op": "replace", "path": "title", "value": 7}]),
                "invalidValue",
                "title must be a string",
            ),
            (
                json!([{"op": "add", "path": "emails", "value": [{"primary": "often"}]}]),
                "invalidValue",
                "emails.primary must be true or false",
            ),
            (
                json!([{"op": "replace", "path": "name", "value": ["a", "b"]}]),
                "invalidValue",
                "name must be an object",
            ),
            (
                json!([{"op": "replace", "value": "x"}]),
                "invalidValue",
                "needs an object of attributes",
            ),
            (
                json!([{"op": "replace", "value": {ENTERPRISE: "x"}}]),
                "invalidValue",
                "must be an object of attributes",
            ),
            (
                json!([{"op": "replace", "path": "emails[type sw \"mob\"].value", "value": "x"}]),
                "noTarget",
                "matches no value",
            ),
        ];
        for (operations, scim_type, needle) in user_cases {
            check_error(ResourceKind::User, user(), body(operations), scim_type, needle);
        }
        let group_cases = [
            (
                json!([{"op": "remove", "path": "displayName"}]),
                "invalidValue",
                "displayName is required",
            ),
            (
                json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u9"}]),
                "mutability",
                "members[value eq \"u1\"].value is immutable",
            ),
            (
                json!([{"op": "remove", "path": "members[value eq \"u1\"].type"}]),
                "mutability",
                "is immutable",
            ),
            (
                json!([{"op": "replace", "path": "members[value eq \"u1\"]", "value": {"value": "u1"}}]),
                "mutability",
                "is immutable",
            ),
            (
                json!([{"op": "add", "path": "members[display eq \"x\"].display", "value": "x"}]),
                "mutability",
                "members.display is read-only",
            ),
        ];
        for (operations, scim_type, needle) in group_cases {
            check_error(ResourceKind::Group, group(), body(operations), scim_type, needle);
        }
    }

    #[test]
    fn all_operations_apply_or_none_do() {
        let before = document(user());
        let request = body(json!([
            {"op": "replace", "path": "title", "value": "CEO"},
            {"op": "remove", "path": "emails[type eq \"work\"]"},
            {"op": "replace", "path": "id", "value": "x"}
        ]));
        match apply_patch(ResourceKind::User, &before, &request) {
            Err(Error::Invalid { kind: InvalidKind::Mutability, message }) => {
                assert!(message.starts_with("Operations[2]: id is read-only"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Value::Object(before), user());
        // The same operations without the failing one apply in order.
        check(
            ResourceKind::User,
            user(),
            json!([
                {"op": "replace", "path": "title", "value": "CEO"},
                {"op": "remove", "path": "emails[type eq \"work\"]"},
                {"op": "add", "path": "emails[type eq \"work\"].value", "value": "w@example.com"}
            ]),
            user_with(json!({"title": "CEO", "emails": [
                {"value": "babs@jensen.org", "type": "home"},
                {"type": "work", "value": "w@example.com"}
            ]})),
            "operations apply in order",
        );
    }

    #[test]
    fn paths_parse_into_their_parts() {
        let filter = |text: &str| Some(parse_filter(text).unwrap());
        let cases = [
            ("title", None, "title", None, None),
            (" name.givenName ", None, "name", None, Some("givenName")),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                Some(ENTERPRISE),
                "manager",
                None,
                Some("value"),
            ),
            ("emails[type eq \"work\"]", None, "emails", filter("type eq \"work\""), None),
            (
                "emails[type eq \"work\"].value",
                None,
                "emails",
                filter("type eq \"work\""),
                Some("value"),
            ),
            (
                "members[value eq \"2819c223\"]",
                None,
                "members",
                filter("value eq \"2819c223\""),
                None,
            ),
            (
                "urn:ietf:params:scim:schemas:core:2.0:User:emails[value co \"]\"].display",
                Some("urn:ietf:params:scim:schemas:core:2.0:User"),
                "emails",
                filter("value co \"]\""),
                Some("display"),
            ),
        ];
        for (text, schema, name, filter, sub_attribute) in cases {
            assert_eq!(
                parse_patch_path(text).map_err(|error| error.to_string()),
                Ok(PatchPath {
                    schema: schema.map(str::to_owned),
                    name: name.to_owned(),
                    filter,
                    sub_attribute: sub_attribute.map(str::to_owned),
                }),
                "{text}"
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const USER_PATHS: [&str; 14] = [
            "title",
            "name.givenName",
            "name",
            "emails",
            "emails.display",
            "emails[type eq \"work\"].value",
            "emails[type eq \"work\"]",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:extension:2.0:Metadata",
            "urn:ietf:params:scim:schemas:extension:2.0:Metadata:costCenter",
            "displayName",
            "active",
            "userName",
        ];

        const GROUP_PATHS: [&str; 5] = [
            "displayName",
            "members",
            "members[value eq \"u1\"]",
            "members[value eq \"u1\"].type",
            "members[type eq \"User\"].value",
        ];

        const KEYS: [&str; 12] = [
            "value",
            "type",
            "primary",
            "display",
            "givenName",
            "title",
            "emails",
            "members",
            "active",
            "name.givenName",
            ENTERPRISE,
            CUSTOM,
        ];

        fn path(paths: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                6 => prop::sample::select(paths).prop_map(|path| Some(path.to_owned())),
                1 => r#"[a-zA-Z:.\[\]" ]{0,24}"#.prop_map(Some),
                1 => Just(None),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i32>().prop_map(Value::from),
                prop::sample::select(vec!["", "True", "work", "u1", "x@example.com"])
                    .prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..4)
                        .prop_map(|pairs| {
                            Value::Object(
                                pairs
                                    .into_iter()
                                    .map(|(key, value)| (key.to_owned(), value))
                                    .collect(),
                            )
                        }),
                ]
            })
        }

        /// Values of the shapes the paths above take, so that most requests
        /// succeed and their results are checked.
        fn plausible_value() -> impl Strategy<Value = Value> {
            prop::sample::select(vec![
                json!("x"),
                json!("True"),
                json!(""),
                json!(null),
                json!([]),
                json!({"givenName": "B", "familyName": ""}),
                json!({"value": "u3"}),
                json!([{"value": "u1"}, {"value": "u3", "type": "User", "display": "C"}]),
                json!([{"value": "a@example.com", "type": "work", "primary": "False"}]),
                json!({"value": "a@example.com", "type": "home"}),
                json!({"costCenter": "CC", "tags": ["a"]}),
                json!({"title": "CEO", "name.givenName": "B", "emails": [{"value": "c@d.org"}]}),
                json!({"displayName": "Ops", "members": [{"value": "u4"}]}),
                json!({ENTERPRISE: {"department": "D", "manager": "m1"}}),
            ])
        }

        fn operation(paths: &'static [&'static str]) -> impl Strategy<Value = Value> {
            (
                prop::sample::select(vec!["add", "Replace", "REMOVE"]),
                path(paths),
                prop::option::weighted(0.9, prop_oneof![6 => plausible_value(), 1 => value()]),
            )
                .prop_map(|(op, path, value)| {
                    let mut operation = Map::new();
                    operation.insert("op".to_owned(), Value::from(op));
                    if let Some(path) = path {
                        operation.insert("path".to_owned(), Value::from(path));
                    }
                    if let Some(value) = value {
                        operation.insert("value".to_owned(), value);
                    }
                    Value::Object(operation)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// No request panics, and whatever succeeds is canonical: the
            /// caller's `normalize` takes it as it is.
            #[test]
            fn results_are_canonical_and_nothing_panics(
                (on_group, operations) in any::<bool>().prop_flat_map(|on_group| {
                    let paths: &'static [&'static str] =
                        if on_group { &GROUP_PATHS } else { &USER_PATHS };
                    (Just(on_group), prop::collection::vec(operation(paths), 1..3))
                }),
            ) {
                let (kind, before) = if on_group {
                    (ResourceKind::Group, group())
                } else {
                    (ResourceKind::User, user())
                };
                let request = body(Value::Array(operations));
                if let Ok(patched) = apply_patch(kind, &document(before), &request) {
                    let patched = Value::Object(patched);
                    let normalized = normalize(kind, &patched).map(Value::Object);
                    prop_assert_eq!(normalized.ok(), Some(patched.clone()), "{}", request);
                }
            }
        }
    }
}
