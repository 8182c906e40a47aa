//! POST /Bulk (RFC 7644 section 3.7): many writes in one request.
//!
//! A request is checked and scheduled before anything is written: each
//! operation runs after those that create the `bulkId`s it names (Kahn's
//! algorithm, request order among the ready), and a cycle of such
//! references between new groups is broken as section 3.7.1 describes: a
//! group is created without the members that close the cycle, and they are
//! added once everything else has run. The schedule then runs as a series
//! of writer commands, each yielding the writer after the configured budget
//! (`bulk_command_budget`, 20 ms by default), and
//! each operation in a savepoint of its own inside them
//! (`SqliteTx::nested`): an operation that fails or panics writes nothing
//! and the others go on.
//!
//! This module parses, orders and shapes the BulkResponse; it must not
//! decide any write itself: each operation is the same `create`, `update`
//! or `delete` that the single-resource endpoints run. Only a malformed or
//! over-size request fails as a whole; an operation's failure is that
//! operation's answer.

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

    /// The `bulkId`s this operation refers to: those in a new group's
    /// `members` (which a cycle may defer), and all the others (its path,
    /// and everything else in its data).
    fn references(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut members = BTreeSet::new();
        let mut others = BTreeSet::new();
        if let Some(bulk_id) = self.id.as_deref().and_then(|id| id.strip_prefix(BULK_ID_PREFIX)) {
            others.insert(bulk_id.to_owned());
        }
        let deferrable = self.method == Method::Post && self.kind == ResourceKind::Group;
        match self.data.as_object() {
            Some(fields) if deferrable => {
                for (key, value) in fields {
                    let into = if key.eq_ignore_ascii_case("members") {
                        &mut members
                    } else {
                        &mut others
                    };
                    collect_references(value, into);
                }
            }
            _ => collect_references(&self.data, &mut others),
        }
        (members, others)
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

/// One thing to do, in the order worked out before any write.
#[derive(Debug)]
enum Step {
    /// Answer an operation that cannot run (malformed, or its references
    /// cannot be met) with the failure already decided.
    Settle(usize),
    /// Run an operation. `deferring` are bulkIds among a new group's
    /// members that close a cycle: the group is created without them.
    Run { index: usize, deferring: BTreeSet<String> },
    /// Add to a group created by `Run` the members it deferred.
    AddDeferred(usize),
}

/// Orders the operations so that each runs after those creating what it
/// refers to (Kahn's algorithm, request order among the ready ones), in
/// time linear in operations and references. A cycle is broken at the
/// first new group whose unmet references are all members; one that
/// cannot be broken is answered 409. Fills `failures` for what cannot run.
// Every index below is an operation's, below `count`, the length of every
// vector indexed: they cannot be out of bounds.
#[allow(clippy::indexing_slicing)]
fn schedule(operations: &[Option<Operation>], failures: &mut [Option<Outcome>]) -> Vec<Step> {
    let count = operations.len();
    let declared: HashMap<&str, usize> = operations
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| match operation {
            Some(Operation { method: Method::Post, bulk_id: Some(bulk_id), .. }) => {
                Some((bulk_id.as_str(), index))
            }
            _ => None,
        })
        .collect();
    // For each operation: what it waits on through members and otherwise.
    let mut waits_members: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
    let mut waits_others: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
    let mut steps = Vec::with_capacity(count);
    let mut done = vec![false; count];
    // Operations answered without running: they still take their turn in
    // request order, so failOnErrors counts them where they stand.
    let mut settle_only = vec![false; count];
    for (index, operation) in operations.iter().enumerate() {
        let Some(operation) = operation else {
            settle_only[index] = true;
            continue;
        };
        let (members, others) = operation.references();
        let mut broken = None;
        for (references, waits) in
            [(&members, &mut waits_members[index]), (&others, &mut waits_others[index])]
        {
            for bulk_id in references {
                match declared.get(bulk_id.as_str()) {
                    Some(&by) if by != index && operations[by].is_some() => {
                        waits.insert(by);
                    }
                    _ => broken = broken.or(Some(bulk_id.clone())),
                }
            }
        }
        if let Some(bulk_id) = broken {
            failures[index] = Some(Outcome::failed(
                operation.method.as_str().to_owned(),
                operation.bulk_id.clone(),
                Error::conflict(format!(
                    "bulkId {bulk_id:?} names no resource created by another operation of this request"
                )),
            ));
            settle_only[index] = true;
            waits_members[index].clear();
            waits_others[index].clear();
        }
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut pending_all = vec![0usize; count];
    let mut pending_others = vec![0usize; count];
    for index in (0..count).filter(|index| !done[*index]) {
        let all: BTreeSet<usize> =
            waits_members[index].union(&waits_others[index]).copied().collect();
        pending_all[index] = all.len();
        pending_others[index] = waits_others[index].len();
        for by in all {
            dependents[by].push(index);
        }
    }
    let mut ready: BTreeSet<usize> =
        (0..count).filter(|index| !done[*index] && pending_all[*index] == 0).collect();
    let mut remaining = done.iter().filter(|done| !**done).count();
    let mut deferred = Vec::new();
    let finish = |index: usize,
                  done: &mut Vec<bool>,
                  ready: &mut BTreeSet<usize>,
                  pending_all: &mut Vec<usize>,
                  pending_others: &mut Vec<usize>| {
        done[index] = true;
        for &dependent in &dependents[index] {
            if done[dependent] {
                continue;
            }
            pending_all[dependent] -= 1;
            if waits_others[dependent].contains(&index) {
                pending_others[dependent] -= 1;
            }
            if pending_all[dependent] == 0 {
                ready.insert(dependent);
            }
        }
    };
    while remaining > 0 {
        if let Some(index) = ready.pop_first() {
            steps.push(if settle_only[index] {
                Step::Settle(index)
            } else {
                Step::Run { index, deferring: BTreeSet::new() }
            });
            finish(index, &mut done, &mut ready, &mut pending_all, &mut pending_others);
            remaining -= 1;
            continue;
        }
        // Only cycles are left.
        let breakable = (0..count).find(|index| {
            !done[*index]
                && !settle_only[*index]
                && pending_others[*index] == 0
                && operations[*index].as_ref().is_some_and(|operation| {
                    operation.method == Method::Post && operation.kind == ResourceKind::Group
                })
        });
        let Some(index) = breakable else {
            for index in (0..count).filter(|index| !done[*index]) {
                if let Some(operation) = &operations[index] {
                    failures[index] = Some(Outcome::failed(
                        operation.method.as_str().to_owned(),
                        operation.bulk_id.clone(),
                        Error::conflict(
                            "the bulkId references of this operation form a cycle that cannot be broken",
                        ),
                    ));
                }
                steps.push(Step::Settle(index));
            }
            break;
        };
        let deferring = waits_members[index]
            .iter()
            .filter(|by| !done[**by])
            .filter_map(|by| operations[*by].as_ref().and_then(|op| op.bulk_id.clone()))
            .collect();
        steps.push(Step::Run { index, deferring });
        deferred.push(index);
        finish(index, &mut done, &mut ready, &mut pending_all, &mut pending_others);
        remaining -= 1;
    }
    steps.extend(deferred.into_iter().map(Step::AddDeferred));
    steps
}

/// The members of a new group that name any of `deferring`, taken out of
/// its data to break a cycle (section 3.7.1).
fn take_deferred_members(data: &mut Value, deferring: &BTreeSet<String>) -> Vec<Value> {
    let Some(Value::Array(members)) = data.as_object_mut().and_then(|fields| {
        fields.iter_mut().find(|(key, _)| key.eq_ignore_ascii_case("members")).map(|(_, v)| v)
    }) else {
        return Vec::new();
    };
    let names_deferred = |member: &Value| {
        let mut found = BTreeSet::new();
        collect_references(member, &mut found);
        !found.is_disjoint(deferring)
    };
    let (taken, kept): (Vec<Value>, Vec<Value>) =
        std::mem::take(members).into_iter().partition(|member| names_deferred(member));
    *members = kept;
    taken
}

/// A Bulk request on its way through the writer: the schedule, where it
/// stands, and what each operation came to. It runs as a series of writer
/// commands, each stopping once its budget is spent, so a large request never
/// holds the single writer long and other requests' writes interleave.
pub struct Progress {
    tenant: String,
    context: CommandContext,
    base: BaseUrl,
    operations: Vec<Option<Operation>>,
    steps: std::vec::IntoIter<Step>,
    failures: Vec<Option<Outcome>>,
    outcomes: Vec<Option<Outcome>>,
    /// bulkId -> the id its POST created.
    created: HashMap<String, String>,
    /// Members taken out of a new group to break a cycle, by operation.
    stashed: HashMap<usize, Vec<Value>>,
    errors: usize,
    fail_on_errors: Option<usize>,
    /// How long one writer command may run before it yields the writer to
    /// other requests (it always completes at least one step).
    budget: std::time::Duration,
}

impl Progress {
    pub fn new(
        request: BulkRequest,
        tenant: String,
        context: CommandContext,
        base: BaseUrl,
        budget: std::time::Duration,
    ) -> Progress {
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
        let steps = schedule(&operations, &mut failures);
        Progress {
            tenant,
            context,
            base,
            operations,
            steps: steps.into_iter(),
            failures,
            outcomes: (0..count).map(|_| None).collect(),
            created: HashMap::new(),
            stashed: HashMap::new(),
            errors: 0,
            fail_on_errors: request.fail_on_errors,
            budget,
        }
    }

    fn stopped(&self) -> bool {
        self.fail_on_errors.is_some_and(|limit| self.errors >= limit)
    }

    /// Whether every step has run (or failOnErrors stopped the request).
    pub fn finished(&self) -> bool {
        self.stopped() || self.steps.len() == 0
    }

    fn settle(&mut self, index: usize, outcome: Outcome) {
        if outcome.error.is_some() {
            self.errors += 1;
        }
        if let Some(slot) = self.outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }

    /// Runs steps until the budget is spent, inside one writer command.
    /// `Err` only for a storage failure, which ends the whole request.
    pub fn advance(&mut self, transaction: &mut SqliteTx<'_>) -> Result<(), Error> {
        let started = std::time::Instant::now();
        while !self.stopped() {
            let Some(step) = self.steps.next() else { break };
            match step {
                Step::Settle(index) => {
                    if let Some(outcome) = self.failures.get_mut(index).and_then(Option::take) {
                        self.settle(index, outcome);
                    }
                }
                Step::Run { index, deferring } => {
                    let outcome = self.execute(transaction, index, &deferring)?;
                    self.settle(index, outcome);
                }
                Step::AddDeferred(index) => self.add_deferred(transaction, index)?,
            }
            if started.elapsed() >= self.budget {
                break;
            }
        }
        Ok(())
    }

    /// The operation's own context: its events say which operation asked
    /// for them, its target the operation's path under the Bulk root.
    fn context_of(&self, operation: &Operation) -> CommandContext {
        let request = self.context.request.as_ref().map(|bulk| RequestRecord {
            target: format!(
                "{}/{}",
                bulk.target.split('?').next().unwrap_or_default().trim_end_matches("/Bulk"),
                operation.request.target.trim_start_matches('/')
            ),
            ..operation.request.clone()
        });
        CommandContext { request, ..self.context.clone() }
    }

    fn execute(
        &mut self,
        transaction: &mut SqliteTx<'_>,
        index: usize,
        deferring: &BTreeSet<String>,
    ) -> Result<Outcome, Error> {
        let Some(Some(operation)) = self.operations.get(index) else {
            return Err(Error::Internal(format!("bulk operation {index} is missing")));
        };
        let method = operation.method.as_str().to_owned();
        let bulk_id = operation.bulk_id.clone();
        let kind = operation.kind;
        let mut data = operation.data.clone();
        if !deferring.is_empty() {
            self.stashed.insert(index, take_deferred_members(&mut data, deferring));
        }
        let id = operation.id.as_deref().map(|id| match id.strip_prefix(BULK_ID_PREFIX) {
            Some(bulk_id) => self.created.get(bulk_id).cloned().unwrap_or_else(|| id.to_owned()),
            None => id.to_owned(),
        });
        let location = id
            .as_deref()
            .filter(|id| !id.starts_with(BULK_ID_PREFIX))
            .map(|id| self.base.resource(kind, id));
        let failed = |error: Error| Outcome {
            location: location.clone(),
            ..Outcome::failed(method.clone(), bulk_id.clone(), error)
        };
        // A referenced operation ran before this one; if it created
        // nothing, it failed, and this one cannot run.
        let (members, others) = operation.references();
        let unmet = members
            .iter()
            .chain(&others)
            .find(|bulk_id| !self.created.contains_key(*bulk_id) && !deferring.contains(*bulk_id));
        if let Some(unmet) = unmet {
            return Ok(failed(Error::conflict(format!(
                "the operation with bulkId {unmet:?} did not succeed, so this one cannot run"
            ))));
        }
        substitute(&mut data, &self.created);
        let context = self.context_of(operation);
        let (tenant, version) = (self.tenant.as_str(), operation.version.as_deref());
        let run = |tx: &mut SqliteTx<'_>| -> Result<(StatusCode, String), Error> {
            match (operation.method, id.clone()) {
                (Method::Post, _) => {
                    Ok((StatusCode::CREATED, create_from(tx, tenant, kind, &data, &context)?))
                }
                (Method::Put, Some(id)) => {
                    let edit = Edit::Replace(normalize(kind, &data)?, data);
                    update(tx, Target { tenant, kind, id: &id }, version, edit, &context)?;
                    Ok((StatusCode::OK, id))
                }
                (Method::Patch, Some(id)) => {
                    let edit = Edit::Patch(data);
                    update(tx, Target { tenant, kind, id: &id }, version, edit, &context)?;
                    Ok((StatusCode::OK, id))
                }
                (Method::Delete, Some(id)) => {
                    delete(tx, Target { tenant, kind, id: &id }, version, &context)?;
                    Ok((StatusCode::NO_CONTENT, id))
                }
                (_, None) => {
                    Err(Error::invalid_as(InvalidKind::Path, "the path names no resource"))
                }
            }
        };
        Ok(match transaction.nested(run) {
            Ok((status, id)) => {
                if let (Method::Post, Some(bulk_id)) = (operation.method, &operation.bulk_id) {
                    self.created.insert(bulk_id.clone(), id.clone());
                }
                let version = match operation.method {
                    Method::Delete => None,
                    _ => store::get(transaction.connection(), tenant, kind, &id)?
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
            Err(NestedError::Step(error)) => failed(error),
            Err(NestedError::Panicked(message)) => {
                failed(Error::Internal(format!("bulk operation panicked: {message}")))
            }
            Err(NestedError::Log(error)) => return Err(error.into()),
        })
    }

    /// Adds to a group the members it was created without. The group's
    /// creation stands whatever happens here: a member whose operation
    /// failed is left out, and a failed add is logged, not reported as the
    /// POST's failure.
    fn add_deferred(&mut self, transaction: &mut SqliteTx<'_>, index: usize) -> Result<(), Error> {
        let Some(Some(operation)) = self.operations.get(index) else { return Ok(()) };
        let Some(id) = operation.bulk_id.as_ref().and_then(|bulk_id| self.created.get(bulk_id))
        else {
            return Ok(());
        };
        let mut members = self.stashed.remove(&index).unwrap_or_default();
        members.iter_mut().for_each(|member| substitute(member, &self.created));
        members.retain(|member| {
            let mut unresolved = BTreeSet::new();
            collect_references(member, &mut unresolved);
            unresolved.is_empty()
        });
        if members.is_empty() {
            return Ok(());
        }
        let (id, tenant) = (id.clone(), self.tenant.as_str());
        let context = self.context_of(operation);
        let patch = json!({"Operations": [{"op": "add", "path": "members", "value": members}]});
        let target = Target { tenant, kind: ResourceKind::Group, id: &id };
        match transaction.nested(|tx| update(tx, target, None, Edit::Patch(patch), &context)) {
            Ok(row) => {
                if let Some(Some(outcome)) = self.outcomes.get_mut(index) {
                    outcome.version = Some(render::etag(row.version));
                }
            }
            Err(NestedError::Step(error)) => {
                tracing::warn!(group = %id, %error, "adding a bulk group's deferred members failed");
            }
            Err(NestedError::Panicked(message)) => {
                tracing::error!(group = %id, %message, "adding a bulk group's deferred members panicked");
            }
            Err(NestedError::Log(error)) => return Err(error.into()),
        }
        Ok(())
    }

    /// The BulkResponse: every operation that ran, in request order.
    pub fn response(&self) -> Value {
        let answered: Vec<Value> = self.outcomes.iter().flatten().map(Outcome::to_json).collect();
        json!({"schemas": [BULK_RESPONSE], "Operations": answered})
    }
}

/// `POST /Bulk`.
pub async fn bulk(
    state: AppState,
    caller: Caller,
    base: BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let request = BulkRequest::parse(&body, state.config.bulk_operations_max)?;
    drop(body);
    let mut progress = Progress::new(
        request,
        caller.principal.tenant_id.clone(),
        caller.context,
        base,
        state.config.bulk_command_budget,
    );
    while !progress.finished() {
        progress = state
            .store
            .command(move |tx| {
                progress.advance(tx)?;
                Ok(progress)
            })
            .await
            .map_err(Error::from)?;
    }
    Ok(respond(StatusCode::OK, &progress.response(), None))
}
