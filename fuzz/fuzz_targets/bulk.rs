//! The Bulk scheduler (`rollcall::scim::bulk`): `BulkRequest::parse`, then
//! `Progress::new` (which orders the operations and resolves their `bulkId`
//! references) and `Progress::advance`, run for real against a scratch
//! database holding a few resources (users `u1`, `u2`, group `g1`). Each
//! input runs inside a savepoint that is rolled back, so every input starts
//! from the same database. The scheduler itself (`schedule`) is private:
//! what it decides is checked through the BulkResponse and the events.
//!
//! The input is a Bulk request body when it is a JSON object; an array is
//! its `Operations`.
//!
//! Invariants: no input panics (a panic caught inside an operation's
//! savepoint counts too: libFuzzer's hook aborts on it) or loops (libFuzzer's
//! `-timeout`); without `failOnErrors`, every operation is answered exactly
//! once, in request order, with its own `bulkId`; an operation that
//! succeeded refers only to bulkIds of POSTs that succeeded, never its own
//! (but for a new group's members that close a cycle: deferred, and left
//! out if their POST failed), and the successful operations' non-deferrable
//! references (all but a new group's `members`) form no cycle; one creation event per 201; no event
//! stores an unresolved `bulkId:` reference.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use events::event::{GroupCreated, MemberKind, MemberRef, UserCreated};
use events::sqlite::{Durability, LogOptions};
use events::{Actor, CommandContext, Event, EventLog, ExpectedVersion};
use libfuzzer_sys::fuzz_target;
use rollcall::error::Error;
use rollcall::scim::bulk::{BulkRequest, Progress};
use rollcall::scim::render::BaseUrl;
use rollcall::store::{Store, record};
use serde_json::{Map, Value, json};

const TENANT: &str = "tenant-fuzz";
const BULK_ID_PREFIX: &str = "bulkId:";
const OPERATIONS_MAX: usize = 1000;

struct Scratch {
    store: Store,
    /// Events in the database before any input: the seeds.
    seeded: i64,
}

fn seed(store: &Store, stream: String, event: Event) {
    store
        .command(move |tx| {
            record(
                tx,
                TENANT,
                &stream,
                ExpectedVersion::NoStream,
                &[event],
                &CommandContext::new(Actor::System),
            )
        })
        .wait()
        .unwrap_or_else(|error| panic!("seeding: {error}"));
}

fn document(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

static SCRATCH: LazyLock<Scratch> = LazyLock::new(|| {
    // One scratch directory per process; those of processes gone are removed.
    let root = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("rollcall-fuzz-bulk-")
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!("rollcall-fuzz-bulk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("scratch dir: {error}"));
    let options = LogOptions { durability: Durability::Off, ..LogOptions::default() };
    let store = Store::open(&dir.join("bulk.db"), options)
        .unwrap_or_else(|error| panic!("scratch store: {error}"));
    for (id, name) in [("u1", "bjensen@example.com"), ("u2", "jsmith@example.com")] {
        let user = UserCreated {
            user_id: id.to_owned(),
            document: document(json!({"userName": name, "externalId": format!("ext-{id}"), "active": true})),
        };
        seed(&store, format!("user:{id}"), Event::UserCreated(user));
    }
    let group = GroupCreated {
        group_id: "g1".to_owned(),
        document: document(json!({"displayName": "Admins"})),
        members: vec![MemberRef { value: "u1".to_owned(), kind: MemberKind::User }],
    };
    seed(&store, "group:g1".to_owned(), Event::GroupCreated(group));
    let seeded = store.log().head().map(|head| head as i64).unwrap_or_default();
    Scratch { store, seeded }
});

/// A field of a SCIM message by its case-insensitive name, as bulk.rs finds
/// it (the first such key).
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
}

fn text<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v str> {
    field(object, name).and_then(Value::as_str)
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

/// An operation as the harness reads it from the request.
struct Sent {
    method: String,
    bulk_id: Option<String>,
    /// Every bulkId it names, and those it names outside a new group's
    /// `members` (which a cycle may not defer).
    references: BTreeSet<String>,
    fixed: BTreeSet<String>,
}

fn sent(operation: &Value) -> Sent {
    let Some(object) = operation.as_object() else {
        return Sent {
            method: String::new(),
            bulk_id: None,
            references: BTreeSet::new(),
            fixed: BTreeSet::new(),
        };
    };
    let method = text(object, "method").unwrap_or_default().to_owned();
    let bulk_id = text(object, "bulkId").map(str::to_owned);
    let path = text(object, "path").unwrap_or_default();
    let mut references = BTreeSet::new();
    let mut fixed = BTreeSet::new();
    let id = path.trim_start_matches('/').split_once('/').map(|(_, id)| id);
    if let Some(bulk_id) = id.and_then(|id| id.strip_prefix(BULK_ID_PREFIX)) {
        fixed.insert(bulk_id.to_owned());
    }
    let endpoint = path.trim_start_matches('/');
    let new_group = method.eq_ignore_ascii_case("POST") && endpoint.eq_ignore_ascii_case("Groups");
    let data = field(object, "data").cloned().unwrap_or(Value::Null);
    match data.as_object() {
        Some(fields) if new_group => {
            for (key, value) in fields {
                if key.eq_ignore_ascii_case("members") {
                    collect_references(value, &mut references);
                } else {
                    collect_references(value, &mut fixed);
                }
            }
        }
        _ => collect_references(&data, &mut fixed),
    }
    references.extend(fixed.iter().cloned());
    Sent { method, bulk_id, references, fixed }
}

fn leaked_reference(value: &Value) -> Option<String> {
    let mut found = BTreeSet::new();
    collect_references(value, &mut found);
    found.into_iter().next()
}

/// What one input did, read inside its savepoint.
struct Ran {
    response: Value,
    created_events: i64,
    leaked: Vec<(String, String)>,
}

fn run(body: Value) -> Option<Ran> {
    let scratch = &*SCRATCH;
    let request = BulkRequest::parse(&body, OPERATIONS_MAX).ok()?;
    let context = CommandContext::new(Actor::System);
    let base = BaseUrl("http://localhost/scim/v2".to_owned());
    let mut progress = Progress::new(request, TENANT.to_owned(), context, base, Duration::MAX);
    let seeded = scratch.seeded;
    let ran = scratch
        .store
        .command(move |tx| {
            let mut ran = None;
            // Always rolled back: the Err is the point.
            let _ = tx.nested(|tx| {
                while !progress.finished() {
                    progress.advance(tx)?;
                }
                let connection = tx.connection();
                let created_events: i64 = connection
                    .query_row(
                        "SELECT count(*) FROM events WHERE position > ?1 \
                         AND event_type IN ('UserCreated', 'GroupCreated')",
                        [seeded],
                        |row| row.get(0),
                    )
                    .map_err(|error| Error::Internal(error.to_string()))?;
                let mut statement = connection
                    .prepare("SELECT event_type, payload FROM events WHERE position > ?1")
                    .map_err(|error| Error::Internal(error.to_string()))?;
                let rows = statement
                    .query_map([seeded], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
                    .map_err(|error| Error::Internal(error.to_string()))?;
                let mut leaked = Vec::new();
                for row in rows {
                    let (event_type, payload) = row.map_err(|error| Error::Internal(error.to_string()))?;
                    let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                    if let Some(bulk_id) = leaked_reference(&payload) {
                        leaked.push((event_type, bulk_id));
                    }
                }
                ran = Some(Ran { response: progress.response(), created_events, leaked });
                Err::<(), Error>(Error::Internal("rolled back".to_owned()))
            });
            let events: i64 = tx
                .connection()
                .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
                .map_err(|error| Error::Internal(error.to_string()))?;
            assert!(events == seeded, "the savepoint was not rolled back: {events} events");
            Ok::<_, Error>(ran)
        })
        .wait();
    match ran {
        Ok(ran) => ran,
        Err(error) => panic!("the writer failed: {error}"),
    }
}

fn is_success(answer: &Value) -> bool {
    answer.get("status").and_then(Value::as_str).is_some_and(|status| status.starts_with('2'))
}

fuzz_target!(|data: &[u8]| {
    let body = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(fields)) => Value::Object(fields),
        Ok(Value::Array(operations)) => json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": operations
        }),
        _ => return,
    };
    let Some(ran) = run(body.clone()) else { return };
    let answers = ran.response.get("Operations").and_then(Value::as_array).cloned().unwrap_or_default();
    let successes = answers
        .iter()
        .filter(|answer| answer.get("status").and_then(Value::as_str) == Some("201"))
        .count() as i64;
    assert!(
        ran.created_events == successes,
        "{} creation events for {successes} answers 201\n body: {body}\n response: {}",
        ran.created_events,
        ran.response
    );
    if let Some((event_type, bulk_id)) = ran.leaked.first() {
        panic!(
            "a {event_type} event stores the unresolved reference bulkId:{bulk_id}\n body: {body}\n response: {}",
            ran.response
        );
    }
    let Some(object) = body.as_object() else { return };
    let operations: Vec<Sent> = field(object, "Operations")
        .and_then(Value::as_array)
        .map(|operations| operations.iter().map(sent).collect())
        .unwrap_or_default();
    let fail_on_errors = field(object, "failOnErrors").is_some_and(|value| !value.is_null());
    if fail_on_errors {
        assert!(
            answers.len() <= operations.len(),
            "{} answers for {} operations\n body: {body}\n response: {}",
            answers.len(),
            operations.len(),
            ran.response
        );
        return;
    }
    assert!(
        answers.len() == operations.len(),
        "{} answers for {} operations\n body: {body}\n response: {}",
        answers.len(),
        operations.len(),
        ran.response
    );
    let mut created: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, (operation, answer)) in operations.iter().zip(&answers).enumerate() {
        let answered_id = answer.get("bulkId").and_then(Value::as_str);
        assert!(
            answered_id == operation.bulk_id.as_deref(),
            "Operations[{index}] is answered with bulkId {answered_id:?}, sent {:?}\n body: {body}\n response: {}",
            operation.bulk_id,
            ran.response
        );
        if is_success(answer) && operation.method.eq_ignore_ascii_case("POST")
            && let Some(bulk_id) = operation.bulk_id.as_deref()
        {
            created.insert(bulk_id, index);
        }
        if is_success(answer)
            && let Some(location) = answer.get("location").and_then(Value::as_str)
        {
            assert!(
                !location.contains(BULK_ID_PREFIX),
                "Operations[{index}] succeeded at {location}\n body: {body}\n response: {}",
                ran.response
            );
        }
    }
    // Successful operations refer only to successful POSTs, not themselves,
    // but for a new group's members that closed a cycle (deferred, and left
    // out if their POST failed); their fixed references form no cycle
    // (Kahn's algorithm over them, below).
    let declarers = |bulk_id: &str| -> Vec<usize> {
        operations
            .iter()
            .enumerate()
            .filter(|(_, operation)| {
                operation.method.eq_ignore_ascii_case("POST")
                    && operation.bulk_id.as_deref() == Some(bulk_id)
            })
            .map(|(index, _)| index)
            .collect()
    };
    let reaches = |from: usize, to: usize| -> bool {
        let mut seen = BTreeSet::new();
        let mut next = vec![from];
        while let Some(at) = next.pop() {
            if at == to {
                return true;
            }
            if !seen.insert(at) {
                continue;
            }
            for bulk_id in &operations[at].references {
                next.extend(declarers(bulk_id));
            }
        }
        false
    };
    let mut waits: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); operations.len()];
    for (index, (operation, answer)) in operations.iter().zip(&answers).enumerate() {
        if !is_success(answer) {
            continue;
        }
        for bulk_id in &operation.references {
            let by = created.get(bulk_id.as_str()).copied();
            let met = by.is_some_and(|by| by != index);
            let deferred = !operation.fixed.contains(bulk_id)
                && declarers(bulk_id).into_iter().any(|by| by != index && reaches(by, index));
            assert!(
                met || deferred,
                "Operations[{index}] succeeded, naming bulkId {bulk_id:?}, which no other successful POST created\n body: {body}\n response: {}",
                ran.response
            );
            if operation.fixed.contains(bulk_id)
                && let Some(by) = by
            {
                waits[index].insert(by);
            }
        }
    }
    let mut left: BTreeSet<usize> = (0..operations.len()).collect();
    loop {
        let ready: Vec<usize> = left
            .iter()
            .copied()
            .filter(|index| waits[*index].iter().all(|by| !left.contains(by)))
            .collect();
        if ready.is_empty() {
            break;
        }
        for index in ready {
            left.remove(&index);
        }
    }
    assert!(
        left.is_empty(),
        "Operations {left:?} succeeded, though their references form a cycle\n body: {body}\n response: {}",
        ran.response
    );
});
