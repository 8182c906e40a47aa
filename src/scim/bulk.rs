//! POST /Bulk (RFC 7644 section 3.7): many writes in one request.
//!
//! The whole request is one command on the log's writer, and each operation
//! runs in a savepoint of its own inside it (`SqliteTx::nested`): an
//! operation that fails writes nothing and the others go on, and the request
//! costs one commit. Operations run in the order sent, except one that
//! refers by `bulkId` to a resource another operation of the request has
//! yet to create: it waits until that one has run. A cycle of such
//! references between new groups is broken as section 3.7.1 describes: a
//! group is created without the members that close the cycle, and they are
//! added once everything else has run.
//!
//! This module parses and orders operations and shapes the BulkResponse; it
//! must not decide any write itself: each operation is the same `create`,
//! `update` or `delete` that the single-resource endpoints run. Only a
//! malformed or over-size request fails as a whole; an operation's failure
//! is that operation's answer.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use axum::response::Response;
use events::sqlite::SqliteTx;
use events::{CommandContext, NestedError, RequestRecord};
use projections::directory::schema::ResourceKind;
use projections::directory::store;
use serde_json::{Map, Value, json};

use super::document::normalize;
use super::render::{self, BaseUrl};
use super::resources::{Edit, ScimBody, Target, create_from, delete, redact, respond, update};
use crate::auth::Caller;
use crate::error::{Error, InvalidKind, ScimError};
use crate::server::AppState;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
const BULK_ID_PREFIX: &str = "bulkId:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn parse(text: &str) -> Option<Method> {
        [Method::Post, Method::Put, Method::Patch, Method::Delete]
            .into_iter()
            .find(|method| method.as_str().eq_ignore_ascii_case(text))
    }

    fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One operation of the request, as sent and checked.
#[derive(Debug)]
struct Operation {
    method: Method,
    bulk_id: Option<String>,
    /// An ETag the resource must still have (`If-Match`).
    version: Option<String>,
    kind: ResourceKind,
    /// The resource's id, or a `bulkId:` reference; `None` for a POST.
    id: Option<String>,
    data: Value,
    /// The operation as sent (data redacted), for its events' metadata.
    request: RequestRecord,
}

/// A checked Bulk request.
#[derive(Debug)]
pub struct BulkRequest {
    /// Each operation, or the answer of one that cannot run.
    operations: Vec<Result<Operation, Box<Outcome>>>,
    fail_on_errors: Option<usize>,
}

/// An attribute of a SCIM message, by its case-insensitive name.
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
}

fn text<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v str> {
    field(object, name).and_then(Value::as_str)
}

impl BulkRequest {
    /// Checks the request's shape; `operations_max` is the advertised
    /// `maxOperations` (more is 413, like an over-size body).
    pub fn parse(body: &Value, operations_max: usize) -> Result<BulkRequest, Error> {
        let syntax = |message: &str| Error::invalid_as(InvalidKind::Syntax, message);
        let object = body.as_object().ok_or_else(|| syntax("a Bulk request is a JSON object"))?;
        if let Some(schemas) = field(object, "schemas") {
            let named = schemas.as_array().is_some_and(|schemas| {
                schemas.iter().any(|schema| {
                    schema.as_str().is_some_and(|schema| schema.eq_ignore_ascii_case(BULK_REQUEST))
                })
            });
            if !named {
                return Err(syntax(&format!("a Bulk request's schemas must list {BULK_REQUEST}")));
            }
        }
        let operations = field(object, "Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| syntax("a Bulk request needs Operations: an array of operations"))?;
        if operations.len() > operations_max {
            return Err(Error::PayloadTooLarge {
                message: format!(
                    "a Bulk request takes at most {operations_max} operations; this one has {}",
                    operations.len()
                ),
            });
        }
        let fail_on_errors = match field(object, "failOnErrors") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .filter(|count| *count > 0)
                    .and_then(|count| usize::try_from(count).ok())
                    .ok_or_else(|| Error::invalid("failOnErrors must be a positive integer"))?,
            ),
        };
        let mut bulk_ids = BTreeSet::new();
        let operations = operations
            .iter()
            .map(|operation| {
                let object = operation.as_object();
                let claimed = object.and_then(|object| text(object, "method")).unwrap_or_default();
                let bulk_id = object.and_then(|object| text(object, "bulkId")).map(str::to_owned);
                let checked =
                    Operation::parse(operation).and_then(|operation| match &operation.bulk_id {
                        Some(bulk_id) if !bulk_ids.insert(bulk_id.clone()) => Err(Error::invalid(
                            format!("bulkId {bulk_id:?} is already used by an earlier operation"),
                        )),
                        _ => Ok(operation),
                    });
                checked
                    .map_err(|error| Box::new(Outcome::failed(claimed.to_owned(), bulk_id, error)))
            })
            .collect();
        Ok(BulkRequest { operations, fail_on_errors })
    }
}

impl Operation {
    fn parse(value: &Value) -> Result<Operation, Error> {
        let object = value.as_object().ok_or_else(|| {
            Error::invalid_as(InvalidKind::Syntax, "each operation is a JSON object")
        })?;
        let method = text(object, "method").ok_or_else(|| {
            Error::invalid("each operation needs a method: POST, PUT, PATCH or DELETE")
        })?;
        let method = Method::parse(method).ok_or_else(|| {
            Error::invalid(format!("method {method:?} is not POST, PUT, PATCH or DELETE"))
        })?;
        let bulk_id = match field(object, "bulkId") {
            None | Some(Value::Null) => None,
            Some(Value::String(bulk_id)) if !bulk_id.is_empty() => Some(bulk_id.clone()),
            Some(_) => return Err(Error::invalid("bulkId must be a non-empty string")),
        };
        if method == Method::Post && bulk_id.is_none() {
            return Err(Error::invalid("a POST operation needs a bulkId"));
        }
        let path = text(object, "path")
            .ok_or_else(|| Error::invalid("each operation needs a path, like /Users"))?;
        let (kind, id) = target(path)?;
        if (method == Method::Post) != id.is_none() {
            return Err(Error::invalid_as(
                InvalidKind::Path,
                match method {
                    Method::Post => {
                        format!("POST takes an endpoint (/Users or /Groups), not {path}")
                    }
                    _ => format!(
                        "{} takes a resource path like /Users/{{id}}, not {path}",
                        method.as_str()
                    ),
                },
            ));
        }
        let data = field(object, "data").cloned().unwrap_or(Value::Null);
        if method != Method::Delete && !data.is_object() {
            return Err(Error::invalid_as(
                InvalidKind::Syntax,
                format!("a {} operation needs data: a JSON object", method.as_str()),
            ));
        }
        let request = RequestRecord {
            method: method.as_str().to_owned(),
            target: path.to_owned(),
            body: (!data.is_null()).then(|| redact(&data)),
        };
        Ok(Operation {
            method,
            bulk_id,
            version: text(object, "version").map(str::to_owned),
            kind,
            id,
            data,
            request,
        })
    }

    /// The `bulkId`s this operation refers to, in its path or its data.
    fn references(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        if let Some(bulk_id) = self.id.as_deref().and_then(|id| id.strip_prefix(BULK_ID_PREFIX)) {
            found.insert(bulk_id.to_owned());
        }
        collect_references(&self.data, &mut found);
        found
    }
}

/// `/Users`, `/Groups/{id}` (the leading slash optional) as a kind and id.
fn target(path: &str) -> Result<(ResourceKind, Option<String>), Error> {
    let trimmed = path.trim_start_matches('/');
    let (endpoint, id) = match trimmed.split_once('/') {
        Some((endpoint, id)) => (endpoint, Some(id)),
        None => (trimmed, None),
    };
    let kind = if endpoint.eq_ignore_ascii_case("Users") {
        ResourceKind::User
    } else if endpoint.eq_ignore_ascii_case("Groups") {
        ResourceKind::Group
    } else {
        return Err(Error::invalid_as(
            InvalidKind::Path,
            format!("path {path:?} names no endpoint: /Users or /Groups"),
        ));
    };
    match id {
        Some(id) if id.is_empty() || id.contains('/') => Err(Error::invalid_as(
            InvalidKind::Path,
            format!("path {path:?} is not /{endpoint}/{{id}}"),
        )),
        id => Ok((kind, id.map(str::to_owned))),
    }
}

fn collect_references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            if let Some(bulk_id) = text.strip_prefix(BULK_ID_PREFIX) {
                found.insert(bulk_id.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, found)),
        Value::Object(fields) => fields.values().for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

/// Replaces every `bulkId:` reference by the id it stands for.
fn substitute(value: &mut Value, created: &HashMap<String, String>) {
    match value {
        Value::String(text) => {
            if let Some(id) =
                text.strip_prefix(BULK_ID_PREFIX).and_then(|bulk_id| created.get(bulk_id))
            {
                *text = id.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| substitute(item, created)),
        Value::Object(fields) => fields.values_mut().for_each(|item| substitute(item, created)),
        _ => {}
    }
}

/// What became of one operation, as the BulkResponse says it.
#[derive(Debug)]
struct Outcome {
    method: String,
    bulk_id: Option<String>,
    location: Option<String>,
    version: Option<String>,
    status: StatusCode,
    error: Option<Value>,
}

impl Outcome {
    fn failed(method: String, bulk_id: Option<String>, error: Error) -> Outcome {
        let status = error.status();
        Outcome {
            method,
            bulk_id,
            location: None,
            version: None,
            status,
            error: Some(ScimError(error).body()),
        }
    }

    fn to_json(&self) -> Value {
        let mut fields = Map::new();
        fields.insert("method".to_owned(), Value::from(self.method.as_str()));
        if let Some(bulk_id) = &self.bulk_id {
            fields.insert("bulkId".to_owned(), Value::from(bulk_id.as_str()));
        }
        if let Some(location) = &self.location {
            fields.insert("location".to_owned(), Value::from(location.as_str()));
        }
        if let Some(version) = &self.version {
            fields.insert("version".to_owned(), Value::from(version.as_str()));
        }
        fields.insert("status".to_owned(), Value::from(self.status.as_u16().to_string()));
        if let Some(error) = &self.error {
            fields.insert("response".to_owned(), error.clone());
        }
        Value::Object(fields)
    }
}

/// Whether an operation can run now.
enum Readiness {
    Ready,
    /// It refers to a resource that another operation has yet to create.
    Waits,
    /// It refers to a `bulkId` that no operation of the request created.
    Broken(String),
}

/// A run of a Bulk request inside the writer's command.
struct Run<'r, 'c> {
    transaction: &'r mut SqliteTx<'c>,
    tenant: &'r str,
    context: &'r CommandContext,
    base: &'r BaseUrl,
    outcomes: Vec<Option<Outcome>>,
    /// bulkId -> the id its POST created.
    created: HashMap<String, String>,
    /// bulkId -> the index of the POST that declares it.
    declared: HashMap<String, usize>,
    errors: usize,
    fail_on_errors: Option<usize>,
}

impl Run<'_, '_> {
    fn stopped(&self) -> bool {
        self.fail_on_errors.is_some_and(|limit| self.errors >= limit)
    }

    fn readiness(&self, index: usize, operation: &Operation) -> Readiness {
        for bulk_id in operation.references() {
            if self.created.contains_key(&bulk_id) {
                continue;
            }
            match self.declared.get(&bulk_id) {
                Some(&by) if by != index && self.outcomes.get(by).is_some_and(Option::is_none) => {
                    return Readiness::Waits;
                }
                _ => return Readiness::Broken(bulk_id),
            }
        }
        Readiness::Ready
    }

    fn settle(&mut self, index: usize, outcome: Outcome) {
        if outcome.error.is_some() {
            self.errors += 1;
        }
        if let Some(slot) = self.outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }

    /// Runs one operation in its own savepoint. `Err` only for a storage
    /// failure, which ends the whole request.
    fn execute(&mut self, operation: &Operation) -> Result<Outcome, Error> {
        let mut data = operation.data.clone();
        substitute(&mut data, &self.created);
        let id = operation.id.as_deref().map(|id| match id.strip_prefix(BULK_ID_PREFIX) {
            Some(bulk_id) => self.created.get(bulk_id).cloned().unwrap_or_else(|| id.to_owned()),
            None => id.to_owned(),
        });
        let (tenant, kind) = (self.tenant, operation.kind);
        // Each operation's events say which operation asked for them; the
        // target is the operation's path under the Bulk request's root.
        let request = self.context.request.as_ref().map(|bulk| RequestRecord {
            target: format!(
                "{}/{}",
                bulk.target.split('?').next().unwrap_or_default().trim_end_matches("/Bulk"),
                operation.request.target.trim_start_matches('/')
            ),
            ..operation.request.clone()
        });
        let context = &CommandContext { request, ..self.context.clone() };
        let version = operation.version.as_deref();
        let method = operation.method.as_str().to_owned();
        let bulk_id = operation.bulk_id.clone();
        let outcome = |tx: &mut SqliteTx<'_>| -> Result<(StatusCode, String), Error> {
            match (operation.method, id) {
                (Method::Post, _) => {
                    Ok((StatusCode::CREATED, create_from(tx, tenant, kind, &data, context)?))
                }
                (Method::Put, Some(id)) => {
                    let edit = Edit::Replace(normalize(kind, &data)?, data);
                    update(tx, Target { tenant, kind, id: &id }, version, edit, context)?;
                    Ok((StatusCode::OK, id))
                }
                (Method::Patch, Some(id)) => {
                    update(
                        tx,
                        Target { tenant, kind, id: &id },
                        version,
                        Edit::Patch(data),
                        context,
                    )?;
                    Ok((StatusCode::OK, id))
                }
                (Method::Delete, Some(id)) => {
                    delete(tx, Target { tenant, kind, id: &id }, version, context)?;
                    Ok((StatusCode::NO_CONTENT, id))
                }
                (_, None) => {
                    Err(Error::invalid_as(InvalidKind::Path, "the path names no resource"))
                }
            }
        };
        Ok(match self.transaction.nested(outcome) {
            Ok((status, id)) => {
                if let (Method::Post, Some(bulk_id)) = (operation.method, &operation.bulk_id) {
                    self.created.insert(bulk_id.clone(), id.clone());
                }
                let version = match operation.method {
                    Method::Delete => None,
                    _ => store::get(self.transaction.connection(), tenant, kind, &id)?
                        .map(|row| render::etag(row.version)),
                };
                Outcome {
                    method,
                    bulk_id,
                    location: Some(self.base.resource(kind, &id)),
                    version,
                    status,
                    error: None,
                }
            }
            Err(NestedError::Step(error)) => Outcome::failed(method, bulk_id, error),
            Err(NestedError::Log(error)) => return Err(error.into()),
        })
    }
}

/// The members of a new group that refer to groups not created yet, taken
/// out of its data to break a cycle (section 3.7.1).
fn take_unresolved_members(data: &mut Value, created: &HashMap<String, String>) -> Vec<Value> {
    let Some(Value::Array(members)) = data.as_object_mut().and_then(|fields| {
        fields.iter_mut().find(|(key, _)| key.eq_ignore_ascii_case("members")).map(|(_, v)| v)
    }) else {
        return Vec::new();
    };
    let unresolved = |member: &Value| {
        let mut found = BTreeSet::new();
        collect_references(member, &mut found);
        found.iter().any(|bulk_id| !created.contains_key(bulk_id))
    };
    let (taken, kept): (Vec<Value>, Vec<Value>) =
        std::mem::take(members).into_iter().partition(|member| unresolved(member));
    *members = kept;
    taken
}

/// Runs a checked Bulk request inside one writer command; returns the
/// BulkResponse. `Err` only when storage fails, and then nothing is kept.
pub fn run(
    transaction: &mut SqliteTx<'_>,
    tenant: &str,
    request: BulkRequest,
    context: &CommandContext,
    base: &BaseUrl,
) -> Result<Value, Error> {
    let count = request.operations.len();
    let mut failures: Vec<Option<Outcome>> = Vec::with_capacity(count);
    let mut operations: Vec<Option<Operation>> = Vec::with_capacity(count);
    for checked in request.operations {
        match checked {
            Ok(operation) => {
                operations.push(Some(operation));
                failures.push(None);
            }
            Err(outcome) => {
                operations.push(None);
                failures.push(Some(*outcome));
            }
        }
    }
    let declared = operations
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| match operation {
            Some(Operation { method: Method::Post, bulk_id: Some(bulk_id), .. }) => {
                Some((bulk_id.clone(), index))
            }
            _ => None,
        })
        .collect();
    let mut run = Run {
        transaction,
        tenant,
        context,
        base,
        outcomes: (0..count).map(|_| None).collect(),
        created: HashMap::new(),
        declared,
        errors: 0,
        fail_on_errors: request.fail_on_errors,
    };
    // Groups created without the members that closed a cycle, and those.
    let mut deferred: Vec<(usize, Vec<Value>)> = Vec::new();
    let mut waiting: Vec<usize> = (0..count).collect();
    while !waiting.is_empty() && !run.stopped() {
        let mut still = Vec::new();
        let mut progressed = false;
        for index in waiting {
            if run.stopped() {
                break;
            }
            if let Some(outcome) = failures.get_mut(index).and_then(Option::take) {
                run.settle(index, outcome);
                progressed = true;
                continue;
            }
            let Some(Some(operation)) = operations.get(index) else { continue };
            let outcome = match run.readiness(index, operation) {
                Readiness::Waits => {
                    still.push(index);
                    continue;
                }
                Readiness::Broken(bulk_id) => Outcome::failed(
                    operation.method.as_str().to_owned(),
                    operation.bulk_id.clone(),
                    Error::conflict(format!(
                        "bulkId {bulk_id:?} names no resource created by this request"
                    )),
                ),
                Readiness::Ready => run.execute(operation)?,
            };
            run.settle(index, outcome);
            progressed = true;
        }
        waiting = still;
        if progressed || waiting.is_empty() || run.stopped() {
            continue;
        }
        // Every operation left waits on another: a cycle. Break it at a new
        // group whose only unmet references are members.
        let breakable = waiting.iter().position(|&index| {
            let Some(Some(operation)) = operations.get(index) else { return false };
            if operation.method != Method::Post || operation.kind != ResourceKind::Group {
                return false;
            }
            let mut data = operation.data.clone();
            take_unresolved_members(&mut data, &run.created);
            let mut rest = BTreeSet::new();
            collect_references(&data, &mut rest);
            rest.iter().all(|bulk_id| run.created.contains_key(bulk_id))
        });
        let Some(position) = breakable else {
            for index in std::mem::take(&mut waiting) {
                let Some(Some(operation)) = operations.get(index) else { continue };
                let outcome = Outcome::failed(
                    operation.method.as_str().to_owned(),
                    operation.bulk_id.clone(),
                    Error::conflict(
                        "the bulkId references of this operation form a cycle that cannot be broken",
                    ),
                );
                run.settle(index, outcome);
            }
            break;
        };
        let index = waiting.remove(position);
        let Some(Some(operation)) = operations.get_mut(index) else { continue };
        let taken = take_unresolved_members(&mut operation.data, &run.created);
        let outcome = run.execute(operation)?;
        if outcome.error.is_none() {
            deferred.push((index, taken));
        }
        run.settle(index, outcome);
    }
    for (index, mut members) in deferred {
        members.iter_mut().for_each(|member| substitute(member, &run.created));
        members.retain(|member| {
            let mut unresolved = BTreeSet::new();
            collect_references(member, &mut unresolved);
            unresolved.is_empty()
        });
        let Some(Some(operation)) = operations.get(index) else { continue };
        let Some(id) = operation.bulk_id.as_ref().and_then(|bulk_id| run.created.get(bulk_id))
        else {
            continue;
        };
        if members.is_empty() {
            continue;
        }
        let id = id.clone();
        let patch = json!({"Operations": [{"op": "add", "path": "members", "value": members}]});
        let target = Target { tenant, kind: ResourceKind::Group, id: &id };
        let added =
            run.transaction.nested(|tx| update(tx, target, None, Edit::Patch(patch), context));
        match added {
            Ok(()) => {
                let version =
                    store::get(run.transaction.connection(), tenant, ResourceKind::Group, &id)?
                        .map(|row| render::etag(row.version));
                if let Some(Some(outcome)) = run.outcomes.get_mut(index) {
                    outcome.version = version;
                }
            }
            Err(NestedError::Step(error)) => {
                let method = Method::Post.as_str().to_owned();
                run.settle(index, Outcome::failed(method, operation.bulk_id.clone(), error));
            }
            Err(NestedError::Log(error)) => return Err(error.into()),
        }
    }
    let answered: Vec<Value> = run.outcomes.iter().flatten().map(Outcome::to_json).collect();
    Ok(json!({"schemas": [BULK_RESPONSE], "Operations": answered}))
}

/// `POST /Bulk`.
pub async fn bulk(
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let request = BulkRequest::parse(&body, state.config.bulk_operations_max)?;
    let tenant = caller.principal.tenant_id.clone();
    let response = state
        .store
        .command(move |tx| run(tx, &tenant, request, &caller.context, &base))
        .await
        .map_err(Error::from)?;
    Ok(respond(StatusCode::OK, &response, None))
}
