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
//! (`LogTransaction::nested`): an operation that fails or panics writes nothing
//! and the others go on.
//!
//! This module parses, orders and shapes the BulkResponse; it must not
//! decide any write itself: each operation is the same `create`, `update`
//! or `delete` that the single-resource endpoints run. Only a malformed or
//! over-size request fails as a whole; an operation's failure is that
//! operation's answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use events::LogTransaction;
use events::{CommandContext, NestedError, RequestRecord};
use projections::directory::schema::ResourceKind;
use serde_json::{Map, Value, json};

use super::document::normalize;
use super::render::{self, BaseUrl};
use super::resources::{Edit, ScimBody, Target, create_from, delete, redact, respond, update};
use crate::auth::Caller;
use crate::error::{Error, InvalidKind, ScimError};
use crate::state::AppState;

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
#[derive(Debug, Clone)]
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

/// The checked operations, and the failure already decided for each that
/// is not one, side by side by index.
fn split(
    checked: Vec<Result<Operation, Box<Outcome>>>,
) -> (Vec<Option<Operation>>, Vec<Option<Outcome>>) {
    checked
        .into_iter()
        .map(|checked| match checked {
            Ok(operation) => (Some(operation), None),
            Err(outcome) => (None, Some(*outcome)),
        })
        .unzip()
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
    /// Add to a group created by `Run` the members it deferred, once their
    /// operations have run (even after failOnErrors stopped the request).
    AddDeferred(usize),
}

/// Orders the operations so that each runs after those creating what it
/// refers to (Kahn's algorithm, request order among the ready ones), in
/// time linear in operations and references. When only cycles are left,
/// one is broken at the first new group on it (a strongly connected
/// component, found again at each break) whose unmet references are all
/// members of that same cycle: it is created without them, they are added
/// the moment their operations have run, and operations naming the group by
/// its path wait for that add, so they see the group as the request order
/// says. A cycle that cannot be broken, and what waits on it, is answered
/// 409. Fills `failures` for what cannot run.
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
    let done = vec![false; count];
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
    let mut graph = Graph {
        waits_others: &waits_others,
        dependents: vec![Vec::new(); count],
        pending_all: vec![0; count],
        pending_others: vec![0; count],
        done,
        ready: BTreeSet::new(),
    };
    for index in 0..count {
        let all: BTreeSet<usize> =
            waits_members[index].union(&waits_others[index]).copied().collect();
        graph.pending_all[index] = all.len();
        graph.pending_others[index] = waits_others[index].len();
        for by in all {
            graph.dependents[by].push(index);
        }
    }
    graph.ready = (0..count).filter(|index| graph.pending_all[*index] == 0).collect();
    let mut remaining = count;
    // Groups created without some members, with the operations those
    // members still wait for: each add runs the moment they have all run.
    let mut adds: Vec<(usize, BTreeSet<usize>)> = Vec::new();
    let finish = |index: usize,
                  graph: &mut Graph<'_>,
                  steps: &mut Vec<Step>,
                  adds: &mut Vec<(usize, BTreeSet<usize>)>| {
        graph.finish(index);
        for (_, waiting) in adds.iter_mut() {
            waiting.remove(&index);
        }
        adds.retain(|(group, waiting)| {
            if waiting.is_empty() {
                steps.push(Step::AddDeferred(*group));
            }
            !waiting.is_empty()
        });
    };
    while remaining > 0 {
        if let Some(index) = graph.ready.pop_first() {
            steps.push(if settle_only[index] {
                Step::Settle(index)
            } else {
                Step::Run { index, deferring: BTreeSet::new() }
            });
            finish(index, &mut graph, &mut steps, &mut adds);
            remaining -= 1;
            continue;
        }
        // Only cycles are left, and what waits on them. A cycle is broken
        // at a new group on it whose unmet references are all members of
        // that same cycle (section 3.7.1).
        let component = components(&graph.done, |index| {
            waits_members[index].iter().chain(&waits_others[index]).copied()
        });
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for index in (0..count).filter(|index| !graph.done[*index]) {
            *sizes.entry(component[index]).or_default() += 1;
        }
        let breakable = (0..count).find(|index| {
            let index = *index;
            !graph.done[index]
                && !settle_only[index]
                && graph.pending_others[index] == 0
                && sizes.get(&component[index]).is_some_and(|size| *size > 1)
                && waits_members[index]
                    .iter()
                    .all(|by| graph.done[*by] || component[*by] == component[index])
                && operations[index].as_ref().is_some_and(|operation| {
                    operation.method == Method::Post && operation.kind == ResourceKind::Group
                })
        });
        let Some(index) = breakable else {
            for index in (0..count).filter(|index| !graph.done[*index]) {
                if let Some(operation) = &operations[index] {
                    failures[index] = Some(Outcome::failed(
                        operation.method.as_str().to_owned(),
                        operation.bulk_id.clone(),
                        Error::conflict(
                            "the bulkId references of this operation, or of those it waits for, \
                             form a cycle that cannot be broken",
                        ),
                    ));
                }
                steps.push(Step::Settle(index));
            }
            // Groups still waiting for members from those: add what did run.
            steps.extend(adds.drain(..).map(|(group, _)| Step::AddDeferred(group)));
            break;
        };
        let waiting: BTreeSet<usize> =
            waits_members[index].iter().copied().filter(|by| !graph.done[*by]).collect();
        let deferring = waiting
            .iter()
            .filter_map(|by| operations[*by].as_ref().and_then(|op| op.bulk_id.clone()))
            .collect();
        // What names this group by its path (a PATCH, PUT or DELETE of it)
        // comes after its deferred members are added.
        let own = operations[index].as_ref().and_then(|op| op.bulk_id.as_deref());
        let naming: Vec<usize> = (0..count)
            .filter(|other| !graph.done[*other] && *other != index)
            .filter(|other| {
                operations[*other].as_ref().is_some_and(|op| {
                    op.id.as_deref().and_then(|id| id.strip_prefix(BULK_ID_PREFIX)) == own
                })
            })
            .collect();
        for other in naming {
            for by in &waiting {
                graph.wait(other, *by);
            }
        }
        steps.push(Step::Run { index, deferring });
        adds.push((index, waiting));
        finish(index, &mut graph, &mut steps, &mut adds);
        remaining -= 1;
    }
    steps
}

/// The dependency graph `schedule` walks: who waits on whom, and what is
/// ready to run.
struct Graph<'a> {
    waits_others: &'a [BTreeSet<usize>],
    dependents: Vec<Vec<usize>>,
    pending_all: Vec<usize>,
    pending_others: Vec<usize>,
    done: Vec<bool>,
    ready: BTreeSet<usize>,
}

// Indexes are operations', below the length of every vector here.
#[allow(clippy::indexing_slicing)]
impl Graph<'_> {
    fn finish(&mut self, index: usize) {
        self.done[index] = true;
        for &dependent in &self.dependents[index] {
            if self.done[dependent] {
                continue;
            }
            self.pending_all[dependent] -= 1;
            if self.waits_others[dependent].contains(&index) {
                self.pending_others[dependent] -= 1;
            }
            if self.pending_all[dependent] == 0 {
                self.ready.insert(dependent);
            }
        }
    }

    /// `waiter` also waits for `on` (which has not run yet), unless it
    /// already does: a second edge would be finished twice, taking one
    /// count too many from `pending_others` (found by fuzzing: a PATCH of
    /// a group on a cycle that also names the operation the cycle is
    /// broken for).
    fn wait(&mut self, waiter: usize, on: usize) {
        if !self.done[on] && !self.dependents[on].contains(&waiter) {
            self.pending_all[waiter] += 1;
            self.dependents[on].push(waiter);
        }
    }
}

/// The strongly connected components (Tarjan's algorithm, without
/// recursion) of the operations not `done`, by the edges `waits`: a
/// component number per operation. Two operations share one exactly when
/// each waits, through others, on the other: they are on one cycle.
// Indexes are operations', below `done.len()`, the length of every vector.
#[allow(clippy::indexing_slicing)]
fn components<I: Iterator<Item = usize>>(done: &[bool], waits: impl Fn(usize) -> I) -> Vec<usize> {
    struct Walk {
        order: Vec<usize>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next_order: usize,
        /// The nodes being visited, each with its edges and the next to follow.
        calls: Vec<(usize, Vec<usize>, usize)>,
    }
    impl Walk {
        fn visit(&mut self, node: usize, edges: Vec<usize>) {
            self.order[node] = self.next_order;
            self.low[node] = self.next_order;
            self.next_order += 1;
            self.stack.push(node);
            self.on_stack[node] = true;
            self.calls.push((node, edges, 0));
        }
    }
    let count = done.len();
    let unvisited = usize::MAX;
    let mut walk = Walk {
        order: vec![unvisited; count],
        low: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        next_order: 0,
        calls: Vec::new(),
    };
    let edges = |node: usize| -> Vec<usize> { waits(node).filter(|next| !done[*next]).collect() };
    let mut component = vec![unvisited; count];
    let mut next_component = 0;
    for root in (0..count).filter(|root| !done[*root]) {
        if walk.order[root] != unvisited {
            continue;
        }
        walk.visit(root, edges(root));
        while let Some(top) = walk.calls.len().checked_sub(1) {
            let (node, position) = (walk.calls[top].0, walk.calls[top].2);
            if let Some(&next) = walk.calls[top].1.get(position) {
                walk.calls[top].2 += 1;
                if walk.order[next] == unvisited {
                    walk.visit(next, edges(next));
                } else if walk.on_stack[next] {
                    walk.low[node] = walk.low[node].min(walk.order[next]);
                }
                continue;
            }
            walk.calls.pop();
            if let Some(&(caller, _, _)) = walk.calls.last() {
                walk.low[caller] = walk.low[caller].min(walk.low[node]);
            }
            if walk.low[node] == walk.order[node] {
                while let Some(member) = walk.stack.pop() {
                    walk.on_stack[member] = false;
                    component[member] = next_component;
                    if member == node {
                        break;
                    }
                }
                next_component += 1;
            }
        }
    }
    component
}

/// The members of a new group that name any of `deferring`, taken out of
/// its data to break a cycle (section 3.7.1).
fn take_deferred_members(data: &mut Value, deferring: &BTreeSet<String>) -> Vec<Value> {
    let Some(members) = data.as_object_mut().and_then(|fields| {
        fields.iter_mut().find(|(key, _)| key.eq_ignore_ascii_case("members")).map(|(_, v)| v)
    }) else {
        return Vec::new();
    };
    // `normalize` reads a lone member as a list of one: so does this.
    if !members.is_array() && !members.is_null() {
        *members = Value::Array(vec![members.take()]);
    }
    let Value::Array(members) = members else { return Vec::new() };
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
        let (operations, mut failures) = split(request.operations);
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

    /// Whether every step has run or been passed over.
    pub fn finished(&self) -> bool {
        self.steps.len() == 0
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
    pub fn advance(&mut self, transaction: &mut dyn LogTransaction) -> Result<(), Error> {
        let started = std::time::Instant::now();
        while let Some(step) = self.steps.next() {
            // After failOnErrors stops the request, only the member adds
            // of groups already created still run: their 201 stands.
            if self.stopped() && !matches!(step, Step::AddDeferred(_)) {
                continue;
            }
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
        transaction: &mut dyn LogTransaction,
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
        // Every reference must be resolved by now; one left over (a
        // deferred member somewhere it could not be taken from) would be
        // stored as the text "bulkId:...".
        let mut unresolved = BTreeSet::new();
        collect_references(&data, &mut unresolved);
        if let Some(bulk_id) = unresolved.first() {
            return Ok(failed(Error::conflict(format!(
                "bulkId {bulk_id:?} is named where it cannot be resolved before this operation runs"
            ))));
        }
        let context = self.context_of(operation);
        let (tenant, version) = (self.tenant.as_str(), operation.version.as_deref());
        // Each write answers with the row it left (no version for a DELETE).
        let run =
            |tx: &mut dyn LogTransaction| -> Result<(StatusCode, String, Option<u64>), Error> {
                match (operation.method, id.clone()) {
                    (Method::Post, _) => {
                        let row = create_from(tx, tenant, kind, &data, &context)?;
                        Ok((StatusCode::CREATED, row.id, Some(row.version)))
                    }
                    (Method::Put, Some(id)) => {
                        let edit = Edit::Replace(normalize(kind, &data)?, data);
                        let row =
                            update(tx, Target { tenant, kind, id: &id }, version, edit, &context)?;
                        Ok((StatusCode::OK, id, Some(row.version)))
                    }
                    (Method::Patch, Some(id)) => {
                        let edit = Edit::Patch(data);
                        let row =
                            update(tx, Target { tenant, kind, id: &id }, version, edit, &context)?;
                        Ok((StatusCode::OK, id, Some(row.version)))
                    }
                    (Method::Delete, Some(id)) => {
                        delete(tx, Target { tenant, kind, id: &id }, version, &context)?;
                        Ok((StatusCode::NO_CONTENT, id, None))
                    }
                    (_, None) => {
                        Err(Error::invalid_as(InvalidKind::Path, "the path names no resource"))
                    }
                }
            };
        Ok(match transaction.nested(run) {
            Ok((status, id, version)) => {
                if let (Method::Post, Some(bulk_id)) = (operation.method, &operation.bulk_id) {
                    self.created.insert(bulk_id.clone(), id.clone());
                }
                Outcome {
                    method,
                    bulk_id,
                    location: Some(self.base.resource(kind, &id)),
                    version: version.map(render::etag),
                    status,
                    error: None,
                }
            }
            Err(NestedError::Step(error)) => {
                if let Error::Internal(cause) = &error {
                    tracing::error!(operation = index, %cause, "a bulk operation failed inside");
                }
                failed(error)
            }
            Err(NestedError::Panicked(message)) => {
                tracing::error!(operation = index, %message, "a bulk operation panicked");
                failed(Error::Internal(format!("bulk operation panicked: {message}")))
            }
            Err(NestedError::Log(error)) => return Err(error.into()),
        })
    }

    /// Adds to a group the members it was created without. The group's
    /// creation stands whatever happens here: a member whose operation
    /// failed is left out, and a failed add is logged, not reported as the
    /// POST's failure.
    fn add_deferred(
        &mut self,
        transaction: &mut dyn LogTransaction,
        index: usize,
    ) -> Result<(), Error> {
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

    /// Answers every operation still without an outcome with `error`: the
    /// writer refused the slice they were in, or did not keep it. Those
    /// that failed on their own still say why.
    fn answer_rest(&mut self, error: Error) {
        let status = error.status();
        let body = ScimError(error).body();
        for index in 0..self.outcomes.len() {
            if matches!(self.outcomes.get(index), Some(Some(_))) {
                continue;
            }
            let outcome = match self.failures.get_mut(index).and_then(Option::take) {
                Some(outcome) => outcome,
                None => {
                    let Some(Some(operation)) = self.operations.get(index) else { continue };
                    Outcome {
                        method: operation.method.as_str().to_owned(),
                        bulk_id: operation.bulk_id.clone(),
                        location: None,
                        version: None,
                        status,
                        error: Some(body.clone()),
                    }
                }
            };
            if let Some(slot) = self.outcomes.get_mut(index) {
                *slot = Some(outcome);
            }
        }
    }

    /// The BulkResponse: every operation that ran, in request order.
    pub fn response(&self) -> Value {
        let answered: Vec<Value> = self.outcomes.iter().flatten().map(Outcome::to_json).collect();
        json!({"schemas": [BULK_RESPONSE], "Operations": answered})
    }
}

/// The request's progress, even if a slice panicked holding it (its
/// outcomes are then replaced by `answer_rest`).
fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let tenant = caller.principal.tenant_id.clone();
    let progress = Progress::new(
        request,
        caller.principal.tenant_id.clone(),
        caller.context,
        base,
        state.config.bulk_command_budget,
    );
    // Shared with each slice's command, so a slice the writer refuses or
    // does not keep leaves the outcomes of those before it to answer with.
    let progress = Arc::new(Mutex::new(progress));
    let mut committed = 0usize;
    while !lock(&progress).finished() {
        let kept = lock(&progress).outcomes.clone();
        let shared = progress.clone();
        let ran = state.store.command(Some(&tenant), move |tx| lock(&shared).advance(tx)).await;
        match ran {
            Ok(()) => committed += 1,
            // Nothing was written yet: the request fails as a whole.
            Err(error) if committed == 0 => return Err(Error::from(error).into()),
            // Earlier slices stand: answer them, and the rest with the error.
            Err(error) => {
                let error = Error::from(error);
                tracing::warn!(%error, "a bulk request stopped part-way; answering what was written");
                let mut progress = lock(&progress);
                progress.outcomes = kept;
                progress.answer_rest(error);
                break;
            }
        }
    }
    let response = lock(&progress).response();
    Ok(respond(StatusCode::OK, &response, None))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn operations_a_refused_slice_held_are_answered_with_its_error() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "a"}},
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "b"}},
                {"method": "DELETE", "path": "/Users/some-id"}
            ]
        });
        let request = BulkRequest::parse(&body, 10).unwrap();
        let context = CommandContext::new(events::Actor::System);
        let base = BaseUrl("http://localhost/scim/v2".to_owned());
        let mut progress =
            Progress::new(request, "t".to_owned(), context, base, std::time::Duration::ZERO);
        // The first operation ran in a slice that was kept.
        progress.outcomes[0] = Some(Outcome {
            method: "POST".to_owned(),
            bulk_id: Some("u1".to_owned()),
            location: Some("http://localhost/scim/v2/Users/x".to_owned()),
            version: Some("W/\"1\"".to_owned()),
            status: StatusCode::CREATED,
            error: None,
        });
        progress.answer_rest(Error::Overloaded);
        let response = progress.response();
        let statuses: Vec<&str> = response["Operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|operation| operation["status"].as_str().unwrap())
            .collect();
        // The duplicate bulkId keeps its own failure; the DELETE never ran.
        assert_eq!(statuses, ["201", "400", "503"]);
        assert_eq!(response["Operations"][2]["method"], "DELETE");
    }

    /// fuzz/regressions/bulk/pending-others-underflow: a cycle between two
    /// new groups, broken at one of them, and a PATCH of that group naming
    /// the other. Scheduling it took one count too many from the PATCH's
    /// dependencies (a subtraction overflow in a build with checks).
    #[test]
    fn a_patch_of_a_group_on_a_broken_cycle_is_scheduled_once() {
        let body = json!({"Operations": [
            {"method": "POST", "path": "/Groups", "bulkId": "a", "data": {"x": "bulkId:b"}},
            {"method": "POST", "path": "/Groups", "bulkId": "b", "data": {"members": "bulkId:a"}},
            {"method": "PATCH", "path": "/Groups/bulkId:b", "data": {"x": "bulkId:a"}}
        ]});
        let request = BulkRequest::parse(&body, 10).unwrap();
        let (operations, mut failures) = split(request.operations);
        let steps = schedule(&operations, &mut failures);
        let mut seen = vec![0; operations.len()];
        for step in &steps {
            if let Step::Run { index, .. } | Step::Settle(index) = step {
                seen[*index] += 1;
            }
        }
        assert_eq!(seen, vec![1, 1, 1], "every operation once: {steps:?}");
    }
}
