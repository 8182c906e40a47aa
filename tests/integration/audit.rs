//! The audit on a scripted history with known answers: joiners and leavers
//! per window (a rename, a user deleted and re-created within the grace, an
//! event exactly on a window's edge), one person's history across a rename,
//! checkpoints against a rewritten chain, and export -> verify round trips;
//! over the API (audit token) and the CLI alike.

use std::path::Path;

use events::event::TokenScope;
use serde_json::{Value, json};

use crate::synchronize::Admin;
use crate::util::{TestServer, rollcall, rollcall_ok, stderr, stdout};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const IDP_AGENT: &str = "Azure-AD-SCIM-Provisioning/1.0";

/// An identity provider: a SCIM token and a User-Agent of its own.
pub(crate) struct Idp<'s> {
    server: &'s TestServer,
    token_id: String,
    secret: String,
    client: reqwest::Client,
}

impl Idp<'_> {
    pub(crate) async fn new<'s>(server: &'s TestServer, tenant: &str) -> Idp<'s> {
        let (token_id, secret) = server.token(tenant, TokenScope::Scim).await;
        let client = {
            rollcall::webhooks::deliver::install_tls_provider();
            reqwest::Client::builder()
        }
        .user_agent(IDP_AGENT)
        .build()
        .unwrap();
        Idp { server, token_id, secret, client }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .client
            .request(method.clone(), self.server.url(&format!("/scim/v2{path}")))
            .bearer_auth(&self.secret);
        if let Some(body) = body {
            request =
                request.header("content-type", "application/scim+json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }

    pub(crate) async fn user(&self, name: &str, external_id: &str) -> String {
        let body = json!({
            "schemas": [USER], "userName": name, "externalId": external_id, "active": true,
            "name": {"givenName": name.split('@').next().unwrap(), "familyName": "Test"},
            "emails": [{"value": name, "type": "work", "primary": true}],
            "title": "Engineer"
        });
        let answer = self.send(reqwest::Method::POST, "/Users", Some(body)).await;
        answer["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn patch(&self, id: &str, operations: Value) {
        let body = json!({"schemas": [PATCH], "Operations": operations});
        self.send(reqwest::Method::PATCH, &format!("/Users/{id}"), Some(body)).await;
    }
}

/// An instant strictly between what happened before and what happens after.
async fn mark() -> String {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = events::time::format_millis(jiff::Timestamp::now());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    now
}

/// `(kind, userName)` of each movement, sorted: one run applies its users
/// in id order, and ids made in the same millisecond are in no set order.
fn movements(report: &Value) -> Vec<(String, String)> {
    let mut movements: Vec<(String, String)> = report["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| {
            (
                movement["kind"].as_str().unwrap().to_owned(),
                movement["user_name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    movements.sort();
    movements
}

/// The report's movement of one kind.
fn of_kind<'r>(report: &'r Value, kind: &str) -> &'r Value {
    report["movements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|movement| movement["kind"] == kind)
        .unwrap()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(kind, name)| ((*kind).to_owned(), (*name).to_owned())).collect()
}

struct Story {
    marks: Vec<String>,
    alice: String,
    carol_old: String,
    carol_new: String,
}

/// Four users and a bound group; then a rename, a deactivation, a delete
/// and a department change; a re-create within the grace; a reactivation.
/// A Synchronize after each step, and a mark between steps.
async fn script(server: &TestServer, idp: &Idp<'_>, admin: &Admin<'_>) -> Story {
    admin
        .put(
            "/provisioning/role-bindings",
            json!({"roles": ["admin", "editor", "viewer"], "default_role": "viewer",
                   "bindings": [{"group": "Engineering", "role": "editor"}]}),
        )
        .await;
    let start = mark().await;
    let alice = idp.user("alice@example.com", "a").await;
    let bob = idp.user("bob@example.com", "b").await;
    let carol_old = idp.user("carol@example.com", "c").await;
    let dave = idp.user("dave@example.com", "d").await;
    idp.send(
        reqwest::Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Engineering",
                    "members": [{"value": alice}, {"value": bob}]})),
    )
    .await;
    admin.sync().await;
    let m1 = mark().await;
    idp.patch(
        &alice,
        json!([{"op": "replace", "path": "userName", "value": "alice.new@example.com"}]),
    )
    .await;
    idp.patch(&bob, json!([{"op": "replace", "path": "active", "value": false}])).await;
    idp.send(reqwest::Method::DELETE, &format!("/Users/{carol_old}"), None).await;
    idp.patch(&dave, json!([{"op": "replace", "path": "title", "value": "Manager"}])).await;
    admin.sync().await;
    let m2 = mark().await;
    let carol_new = idp.user("carol@example.com", "c").await;
    admin.sync().await;
    let m3 = mark().await;
    idp.patch(&bob, json!([{"op": "replace", "path": "active", "value": true}])).await;
    admin.sync().await;
    let m4 = mark().await;
    let _ = server;
    Story { marks: vec![start, m1, m2, m3, m4], alice, carol_old, carol_new }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_and_leavers_per_window_match_the_script() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let idp = Idp::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let story = script(&server, &idp, &admin).await;
    let (_, audit_secret) = server.token("acme", TokenScope::Audit).await;
    let report = |from: String, to: String| {
        let server = &server;
        let audit_secret = audit_secret.clone();
        async move {
            let response = server
                .get(
                    &format!("/api/v1/audit/joiners-leavers?from={from}&to={to}"),
                    Some(&audit_secret),
                )
                .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let m = &story.marks;
    let first = report(m[0].clone(), m[1].clone()).await;
    assert_eq!(
        movements(&first),
        pairs(&[
            ("joined", "alice@example.com"),
            ("joined", "bob@example.com"),
            ("joined", "carol@example.com"),
            ("joined", "dave@example.com")
        ])
        .into_iter()
        .collect::<Vec<_>>(),
        "{first}"
    );
    assert_eq!(first["counts"]["joined"], 4);
    let second = report(m[1].clone(), m[2].clone()).await;
    assert_eq!(
        movements(&second),
        pairs(&[("disabled", "bob@example.com"), ("left", "carol@example.com")]),
        "{second}"
    );
    let third = report(m[2].clone(), m[3].clone()).await;
    assert_eq!(movements(&third), pairs(&[("rejoined", "carol@example.com")]), "{third}");
    let fourth = report(m[3].clone(), m[4].clone()).await;
    assert_eq!(movements(&fourth), pairs(&[("enabled", "bob@example.com")]), "{fourth}");
    let all = report(m[0].clone(), m[4].clone()).await;
    assert_eq!(all["movements"].as_array().unwrap().len(), 8);
    let positions: Vec<u64> = all["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| movement["effective_position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "in the order they took effect");

    // Both times, and both words: the IdP's token, request and User-Agent
    // when it said it; the admin's run when it took effect.
    let left = of_kind(&second, "left");
    assert_eq!(left["said_by"]["actor"], json!({"kind": "token", "token_id": idp.token_id}));
    assert_eq!(left["said_by"]["user_agent"], IDP_AGENT);
    assert!(left["said_by"]["request_id"].is_string(), "{left}");
    assert!(left["said_at"].as_str().unwrap() < left["effective_at"].as_str().unwrap());
    assert!(left["said_position"].as_u64().unwrap() < left["effective_position"].as_u64().unwrap());
    assert_eq!(left["applied_by"]["actor"]["kind"], "token");
    assert_ne!(left["applied_by"]["actor"]["token_id"], json!(idp.token_id));
    assert!(left["applied_by"]["run_id"].is_string());
    assert_eq!(left["user_id"], json!(story.carol_old));
    // The restored member is the same member, now behind the new user.
    let rejoined = &third["movements"][0];
    assert_eq!(rejoined["member_id"], left["member_id"]);
    assert_eq!(rejoined["user_id"], json!(story.carol_new));

    // "Why did this member leave?" leads back to the exact request.
    let request_id = left["said_by"]["request_id"].as_str().unwrap().to_owned();
    let response =
        server.get(&format!("/api/v1/audit/requests/{request_id}"), Some(&audit_secret)).await;
    assert_eq!(response.status(), 200);
    let request: Value = response.json().await.unwrap();
    assert_eq!(request["method"], "DELETE");
    assert_eq!(request["target"], json!(format!("/scim/v2/Users/{}", story.carol_old)));
    assert_eq!(request["by"]["user_agent"], IDP_AGENT);
    assert_eq!(request["by"]["actor"], json!({"kind": "token", "token_id": idp.token_id}));
    assert_eq!(request["events"][0]["event_type"], "UserDeleted");
    assert_eq!(request["events"][0]["position"], left["said_position"]);
    let disabled = of_kind(&second, "disabled");
    let patch_id = disabled["said_by"]["request_id"].as_str().unwrap();
    let patched: Value = server
        .get(&format!("/api/v1/audit/requests/{patch_id}"), Some(&audit_secret))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["method"], "PATCH");
    assert_eq!(patched["body"]["Operations"][0]["path"], "active", "{patched}");
    let kinds: Vec<&str> = patched["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["UserUpdated", "UserDeactivated"]);
    let response = server.get("/api/v1/audit/requests/nope", Some(&audit_secret)).await;
    assert_eq!(response.status(), 404);

    // How each was answered comes from the request log, which also keeps
    // the requests that changed nothing: a refused duplicate, with why.
    let answered = |request_id: String| {
        let (server, secret) = (&server, &audit_secret);
        async move {
            for _ in 0..100 {
                let found: Value = server
                    .get(&format!("/api/v1/audit/requests/{request_id}"), Some(secret))
                    .await
                    .json()
                    .await
                    .unwrap();
                if !found["answered"].is_null() {
                    return found;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("request {request_id} never reached the request log");
        }
    };
    let deleted = answered(request_id.clone()).await;
    assert_eq!(deleted["answered"]["status"], 204, "{deleted}");
    assert_eq!(deleted["events"][0]["event_type"], "UserDeleted");
    assert!(deleted["answered"].get("error").is_none(), "{deleted}");
    let patched = answered(patch_id.to_owned()).await;
    assert_eq!(patched["answered"]["status"], 200);
    let cli = rollcall_ok(&server.db_path(), &["audit", "request", patch_id, "--tenant", "acme"]);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&cli)).unwrap(), patched);
    let duplicate = idp
        .client
        .post(server.url("/scim/v2/Users"))
        .bearer_auth(&idp.secret)
        .header("content-type", "application/scim+json")
        .header("x-request-id", "duplicate-bob")
        .body(json!({"schemas": [USER], "userName": "bob@example.com"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let refused = answered("duplicate-bob".to_owned()).await;
    assert_eq!(refused["method"], "POST");
    assert_eq!(refused["target"], "/scim/v2/Users");
    assert_eq!(refused["events"], json!([]));
    assert_eq!(refused["by"]["user_agent"], IDP_AGENT);
    assert_eq!(refused["answered"]["status"], 409);
    assert!(
        refused["answered"]["error"].as_str().unwrap().contains("bob@example.com"),
        "{refused}"
    );
    // Reads that succeed are not kept; reads that fail are.
    for (request_id, path) in [("a-read", "/scim/v2/Users"), ("a-miss", "/scim/v2/Users/nobody")] {
        idp.client
            .get(server.url(path))
            .bearer_auth(&idp.secret)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(answered("a-miss".to_owned()).await["answered"]["status"], 404);
    let read = server.get("/api/v1/audit/requests/a-read", Some(&audit_secret)).await;
    assert_eq!(read.status(), 404);

    // An event exactly on the edge: `from` includes it, `to` excludes it.
    let edge = of_kind(&second, "disabled")["effective_at"].as_str().unwrap().to_owned();
    let from_edge = report(edge.clone(), m[2].clone()).await;
    assert!(movements(&from_edge).iter().any(|(kind, _)| kind == "disabled"), "{from_edge}");
    let to_edge = report(m[1].clone(), edge.clone()).await;
    assert!(!movements(&to_edge).iter().any(|(kind, _)| kind == "disabled"), "{to_edge}");

    // Dates cover whole days; an empty or malformed window is a clear 400.
    let today = &m[0][..10];
    let whole_day = report(today.to_owned(), today.to_owned()).await;
    assert!(whole_day["movements"].as_array().unwrap().len() >= 8 || m[4][..10] != *today);
    for query in ["from=2026-07-02&to=2026-07-01", "from=July&to=2026-07-01", "to=2026-07-01"] {
        let response = server
            .get(&format!("/api/v1/audit/joiners-leavers?{query}"), Some(&audit_secret))
            .await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string(), "{body}");
    }

    // CSV for a spreadsheet; the CLI says the same as the API.
    let csv = server
        .get(
            &format!("/api/v1/audit/joiners-leavers?from={}&to={}&format=csv", m[0], m[4]),
            Some(&audit_secret),
        )
        .await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("effective_at,kind,member_id,"), "{csv}");
    assert_eq!(csv.lines().count(), 9);
    let db = server.db_path();
    let cli = rollcall_ok(
        &db,
        &[
            "audit",
            "joiners-leavers",
            "--tenant",
            "acme",
            "--from",
            &m[0],
            "--to",
            &m[4],
            "--format",
            "json",
        ],
    );
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    assert_eq!(cli["movements"], all["movements"]);
    let table = rollcall_ok(
        &db,
        &["audit", "joiners-leavers", "--tenant", "acme", "--from", &m[1], "--to", &m[2]],
    );
    assert!(
        stdout(&table).contains("disabled") && stdout(&table).contains("left"),
        "{}",
        stdout(&table)
    );
    assert!(stderr(&table).contains("disabled 1"), "{}", stderr(&table));
    let csv_cli = rollcall_ok(
        &db,
        &[
            "audit",
            "joiners-leavers",
            "--tenant",
            "acme",
            "--from",
            &m[0],
            "--to",
            &m[4],
            "--format",
            "csv",
        ],
    );
    assert_eq!(stdout(&csv_cli), csv);

    // A SCIM token reaches no audit route; the audit token changes nothing.
    let response = server
        .get("/api/v1/audit/joiners-leavers?from=2026-01-01&to=2026-12-31", Some(&idp.secret))
        .await;
    assert!(matches!(response.status().as_u16(), 401 | 403), "{}", response.status());
    let response = server
        .client
        .post(server.url("/api/v1/provisioning/sync"))
        .bearer_auth(&audit_secret)
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status().as_u16(), 401 | 403), "{}", response.status());
    let _ = story.alice;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_persons_history_survives_a_rename_and_a_re_create() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let idp = Idp::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let story = script(&server, &idp, &admin).await;
    let (_, audit_secret) = server.token("acme", TokenScope::Audit).await;
    let history = |query: String| {
        let server = &server;
        let audit_secret = audit_secret.clone();
        async move {
            let response =
                server.get(&format!("/api/v1/audit/history?{query}"), Some(&audit_secret)).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, by_new_name) = history("user=alice.new@example.com".to_owned()).await;
    assert_eq!(status, 200, "{by_new_name}");
    let (_, by_old_name) = history("user=ALICE@example.com".to_owned()).await;
    let (_, by_id) = history(format!("user={}", story.alice)).await;
    let (_, by_external_id) = history("user=a".to_owned()).await;
    assert_eq!(by_new_name, by_old_name);
    assert_eq!(by_new_name, by_id);
    assert_eq!(by_new_name, by_external_id);
    let kinds: Vec<&str> = by_new_name["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["UserCreated", "MemberJoined", "UserUpdated", "MemberUpdated"],
        "{by_new_name}"
    );
    let rename = &by_new_name["entries"][2];
    assert_eq!(
        rename["changes"],
        json!([{"attribute": "userName", "from": "alice@example.com", "to": "alice.new@example.com"}])
    );
    assert_eq!(rename["by"]["user_agent"], IDP_AGENT);
    let created = &by_new_name["entries"][0];
    assert!(
        created["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|change| change["attribute"] == "name.givenName")
    );
    assert!(created["payload"].get("document").is_none());
    let positions: Vec<u64> = by_new_name["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));

    // Carol, deleted and re-created within the grace: both users, one member.
    let (_, carol) = history("user=c".to_owned()).await;
    assert_eq!(carol["user_ids"].as_array().unwrap().len(), 2, "{carol}");
    assert!(carol["user_ids"].as_array().unwrap().contains(&json!(story.carol_old)));
    assert!(carol["user_ids"].as_array().unwrap().contains(&json!(story.carol_new)));
    assert_eq!(carol["member_ids"].as_array().unwrap().len(), 1);
    let kinds: Vec<&str> = carol["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "UserCreated",
            "MemberJoined",
            "UserDeleted",
            "MemberLeft",
            "UserCreated",
            "MemberRestored"
        ]
    );
    let (_, by_member) =
        history(format!("member={}", carol["member_ids"][0].as_str().unwrap())).await;
    assert_eq!(by_member, carol);

    let (status, body) = history("user=nobody@example.com".to_owned()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = history("user=a&member=b".to_owned()).await;
    assert_eq!(status, 400, "{body}");
    // Another tenant's person is not found.
    server.tenant("other").await;
    let (_, other_secret) = server.token("other", TokenScope::Audit).await;
    let response = server.get("/api/v1/audit/history?user=a", Some(&other_secret)).await;
    assert_eq!(response.status(), 404);

    let db = server.db_path();
    let cli = rollcall_ok(
        &db,
        &["audit", "history", "--tenant", "acme", "--user", "alice@example.com", "--json"],
    );
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    assert_eq!(cli, by_new_name);
    let table = rollcall_ok(&db, &["audit", "history", "--tenant", "acme", "--user", "a"]);
    assert!(
        stdout(&table).contains("userName: \"alice@example.com\" -> \"alice.new@example.com\""),
        "{}",
        stdout(&table)
    );
}

/// Rewrites the tenant's chain from `position` on with a changed payload
/// there, every later hash recomputed: what someone with write access to
/// the file could do. The guard triggers are dropped to do it.
fn rewrite_chain(db: &Path, position: i64) {
    struct Row {
        position: i64,
        tenant: String,
        stream: String,
        version: i64,
        event_type: String,
        schema_version: u32,
        payload: String,
        metadata: String,
        recorded_at: String,
        prev_hash: Vec<u8>,
    }
    let connection = rusqlite::Connection::open(db).unwrap();
    for trigger in ["events_refuse_update", "events_refuse_delete", "events_append_only"] {
        connection.execute_batch(&format!("DROP TRIGGER {trigger}")).unwrap();
    }
    let tenant: String = connection
        .query_row("SELECT tenant FROM events WHERE position = ?1", [position], |row| row.get(0))
        .unwrap();
    let mut rows: Vec<Row> = connection
        .prepare(
            "SELECT position, tenant, stream, version, event_type, schema_version, payload, metadata, \
             recorded_at, prev_hash FROM events WHERE tenant = ?1 AND position >= ?2 ORDER BY position",
        )
        .unwrap()
        .query_map(rusqlite::params![tenant, position], |row| {
            Ok(Row {
                position: row.get(0)?,
                tenant: row.get(1)?,
                stream: row.get(2)?,
                version: row.get(3)?,
                event_type: row.get(4)?,
                schema_version: row.get(5)?,
                payload: row.get(6)?,
                metadata: row.get(7)?,
                recorded_at: row.get(8)?,
                prev_hash: row.get(9)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // The title is sealed: the forger changes the sealed bytes instead.
    let edited = rows[0].payload.replacen("\"sealed\":\"", "\"sealed\":\"AAAA", 1);
    assert_ne!(edited, rows[0].payload, "the edited event should hold a sealed value");
    rows[0].payload = edited;
    let mut prev: [u8; 32] = rows[0].prev_hash.clone().try_into().unwrap();
    for row in &rows {
        let canonical = events::hash::CanonicalEvent {
            position: row.position as u64,
            tenant: &row.tenant,
            stream: &row.stream,
            version: row.version as u64,
            event_type: &row.event_type,
            schema_version: row.schema_version,
            payload: &row.payload,
            metadata: &row.metadata,
            recorded_at: &row.recorded_at,
        };
        let hash = canonical.chain_hash(&prev);
        connection
            .execute(
                "UPDATE events SET payload = ?1, prev_hash = ?2, hash = ?3 WHERE position = ?4",
                rusqlite::params![row.payload, prev.to_vec(), hash.to_vec(), row.position],
            )
            .unwrap();
        prev = hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_catch_a_rewritten_chain_and_exports_verify_offline() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let idp = Idp::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let story = script(&server, &idp, &admin).await;
    let db = server.db_path();
    let (_, audit_secret) = server.token("acme", TokenScope::Audit).await;

    let checkpoint =
        stdout(&rollcall_ok(&db, &["audit", "checkpoint", "--tenant", "acme"])).trim().to_owned();
    let api: Value =
        server.get("/api/v1/audit/checkpoint", Some(&audit_secret)).await.json().await.unwrap();
    assert_eq!(api["checkpoint"], json!(checkpoint));
    // The log grows: the checkpoint still holds.
    idp.user("erin@example.com", "e").await;
    admin.sync().await;
    rollcall_ok(&db, &["verify", "--tenant", "acme", "--since", &checkpoint]);
    let verify: Value = server
        .get(&format!("/api/v1/audit/verify?since={checkpoint}"), Some(&audit_secret))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["since"]["ok"], true, "{verify}");

    // Export and check offline, whole and by window, from the API alike.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson");
    let file_text = file.to_str().unwrap();
    rollcall_ok(&db, &["export", "--tenant", "acme", "--output", file_text]);
    let exported = std::fs::read_to_string(&file).unwrap();
    let checked =
        rollcall_ok(&db, &["verify", "--file", file_text, "--since", &checkpoint, "--json"]);
    let checked: Value = serde_json::from_str(&stdout(&checked)).unwrap();
    assert_eq!(checked["events_checked"].as_u64().unwrap() as usize, exported.lines().count());
    let head =
        stdout(&rollcall_ok(&db, &["audit", "checkpoint", "--tenant", "acme"])).trim().to_owned();
    assert_eq!(checked["heads"].as_object().unwrap().values().next().unwrap(), &json!(head));
    let via_api = server.get("/api/v1/audit/export", Some(&audit_secret)).await;
    assert_eq!(via_api.headers()["content-type"], "application/x-ndjson");
    assert_eq!(via_api.text().await.unwrap(), exported);
    let m = &story.marks;
    let window = server
        .get(&format!("/api/v1/audit/export?from={}&to={}", m[1], m[2]), Some(&audit_secret))
        .await
        .text()
        .await
        .unwrap();
    assert!(window.lines().count() > 4 && window.lines().count() < exported.lines().count());
    for line in window.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let at = event["recorded_at"].as_str().unwrap();
        assert!(at >= m[1].as_str() && at < m[2].as_str(), "{line}");
    }
    let window_file = dir.path().join("window.ndjson");
    std::fs::write(&window_file, &window).unwrap();
    rollcall_ok(&db, &["verify", "--file", window_file.to_str().unwrap()]);

    // An edited line, a dropped line: each named by its line.
    let lines: Vec<&str> = exported.lines().collect();
    let edited = lines[3].replacen("\"version\":1", "\"version\":9", 1);
    assert_ne!(edited, lines[3]);
    let mut tampered = lines.clone();
    tampered[3] = &edited;
    std::fs::write(&file, tampered.join("\n")).unwrap();
    let failed = rollcall(&db, &["verify", "--file", file_text]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(stderr(&failed).contains("line 4"), "{}", stderr(&failed));
    let mut dropped = lines.clone();
    dropped.remove(5);
    std::fs::write(&file, dropped.join("\n")).unwrap();
    let failed = rollcall(&db, &["verify", "--file", file_text]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stderr(&failed).contains("line 6") && stderr(&failed).contains("missing"),
        "{}",
        stderr(&failed)
    );

    // The rest edits the SQLite file behind the server's back (on
    // PostgreSQL the guards refuse edits: events/tests' PostgreSQL tests).
    if crate::util::sqlite_only("rewrites the chain in the SQLite file") {
        return;
    }
    // Someone rewrites the chain from an early event on, hashes and all
    // (the server stays up, idle: SQLite's locks keep the file sane).
    let early: i64 = {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection
            .query_row(
                "SELECT position FROM events WHERE event_type = 'UserCreated' ORDER BY position LIMIT 1",
                [],
                |row| row.get(0),
            )
            .unwrap()
    };
    rewrite_chain(&db, early);
    // A writer opening the file puts the guards back (and says so).
    rollcall_ok(&db, &["tenant", "create", "later"]);
    // The file alone looks fine; the checkpoint does not.
    rollcall_ok(&db, &["verify", "--tenant", "acme"]);
    let failed = rollcall(&db, &["verify", "--tenant", "acme", "--since", &checkpoint]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(stderr(&failed).contains("rewritten"), "{}", stderr(&failed));
    let json = rollcall(&db, &["verify", "--tenant", "acme", "--since", &checkpoint, "--json"]);
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["since"]["ok"], false);
    // Bad checkpoints are refused clearly.
    let bad = rollcall(&db, &["verify", "--tenant", "acme", "--since", "12"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("POSITION:HASH"));
}

/// Every folded table's rows, in a total order, as text.
/// Opens the database as every command does (folding what a later build
/// added) and closes it.
async fn open_and_close(db: &Path) {
    let path = db.to_owned();
    tokio::task::spawn_blocking(move || {
        let store =
            rollcall::store::Store::open(&path, events::sqlite::LogOptions::default()).unwrap();
        store.shutdown();
    })
    .await
    .unwrap();
}

fn dump(db: &Path) -> Vec<(String, Vec<String>)> {
    let connection = rusqlite::Connection::open(db).unwrap();
    rollcall::store::replay::all_tables()
        .into_iter()
        .map(|table| {
            let mut statement = connection.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let width = statement.column_count();
            let mut rows: Vec<String> = statement
                .query_map([], |row| {
                    Ok((0..width)
                        .map(|index| format!("{:?}", row.get_ref(index).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.sort();
            (table.to_owned(), rows)
        })
        .collect()
}

/// Every index of the database, as its schema declares it.
fn indexes(db: &std::path::Path) -> Vec<(String, String)> {
    let connection = rusqlite::Connection::open(db).unwrap();
    let mut statement = connection
        .prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL \
             ORDER BY name",
        )
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_and_rebuilds_come_from_the_log_alone() {
    if crate::util::sqlite_only(
        "as-of and rebuild fold into SQLite scratch files, not built for PostgreSQL yet",
    ) {
        return;
    }
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let idp = Idp::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let story = script(&server, &idp, &admin).await;
    // A group renamed and a member moved, then a Synchronize.
    let groups = idp.send(reqwest::Method::GET, "/Groups", None).await;
    let group_id = groups["Resources"][0]["id"].as_str().unwrap().to_owned();
    idp.send(
        reqwest::Method::PATCH,
        &format!("/Groups/{group_id}"),
        Some(json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "displayName", "value": "Platform"},
            {"op": "remove", "path": format!("members[value eq \"{}\"]", story.alice)}
        ]})),
    )
    .await;
    admin.sync().await;
    let db = server.db_path();
    let (_, audit_secret) = server.token("acme", TokenScope::Audit).await;
    let m = &story.marks;

    let as_of = |at: &str| rollcall_ok(&db, &["audit", "as-of", "--tenant", "acme", "--at", at]);
    let first: Value = serde_json::from_str(&stdout(&as_of(&m[1]))).unwrap();
    let names = |state: &Value, view: &str, field: &str| -> Vec<String> {
        let mut names: Vec<String> = state[view]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[field].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&first, "users", "name"),
        ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
    );
    assert!(first["members"].as_array().unwrap().iter().all(|member| member["status"] == "active"));
    assert_eq!(first["groups"][0]["name"], "Engineering");
    assert_eq!(first["groups"][0]["members"].as_array().unwrap().len(), 2);
    let second: Value = serde_json::from_str(&stdout(&as_of(&m[2]))).unwrap();
    assert_eq!(
        names(&second, "users", "name"),
        ["alice.new@example.com", "bob@example.com", "dave@example.com"]
    );
    let statuses: std::collections::BTreeMap<String, String> = second["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            (
                member["user_name"].as_str().unwrap().to_owned(),
                member["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(statuses["bob@example.com"], "disabled");
    assert_eq!(statuses["carol@example.com"], "left");
    assert_eq!(statuses["alice.new@example.com"], "active");
    // The snapshot cache changes no answer: a fold from the nearest
    // snapshot equals a full fold, whether it makes the snapshots or uses
    // them, and a snapshot that no longer matches the log is dropped.
    let as_of_every = |at: &str, every: &str| -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["audit", "as-of", "--tenant", "acme", "--at", at])
            .env("ROLLCALL_DB", &db)
            .env("ROLLCALL_AS_OF_SNAPSHOT_EVERY", every)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str(&stdout(&output)).unwrap()
    };
    let cache = rollcall::store::snapshots::Snapshots::beside(&db, 7);
    for at in [m[1].as_str(), m[2].as_str(), "2999-01-01"] {
        let full = as_of_every(at, "0");
        assert_eq!(as_of_every(at, "7"), full, "{at}: making snapshots");
        assert_eq!(as_of_every(at, "7"), full, "{at}: from a snapshot");
    }
    let kept: Vec<std::path::PathBuf> =
        std::fs::read_dir(cache.dir()).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(kept.len() >= 3, "{kept:?}");
    // A file is a 32-byte signature, then the lz4 image.
    let open_snapshot = |path: &std::path::Path| {
        let file = std::fs::read(path).unwrap();
        let bytes = lz4_flex::block::decompress_size_prepended(&file[32..]).unwrap();
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        connection
            .deserialize_read_exact(rusqlite::MAIN_DB, bytes.as_slice(), bytes.len(), false)
            .unwrap();
        connection
    };
    let write_image = |path: &std::path::Path,
                       connection: &mut rusqlite::Connection,
                       key: Option<&[u8]>| {
        let bytes = connection.serialize(rusqlite::MAIN_DB).unwrap();
        let compressed = lz4_flex::block::compress_prepend_size(&bytes);
        let signature = match key {
            Some(key) => {
                // Signed as rollcall signs: tenant (length-prefixed), boundary.
                use hmac::{KeyInit, Mac};
                let (tenant, boundary): (String, i64) = connection
                    .query_row("SELECT tenant_id, position FROM as_of_snapshot", [], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .unwrap();
                let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
                mac.update(&(tenant.len() as u64).to_be_bytes());
                mac.update(tenant.as_bytes());
                mac.update(&(boundary as u64).to_be_bytes());
                mac.update(&compressed);
                mac.finalize().into_bytes().to_vec()
            }
            None => std::fs::read(path).unwrap()[..32].to_vec(),
        };
        std::fs::write(path, [signature, compressed].concat()).unwrap();
    };
    let key: Vec<u8> = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT key FROM audit_snapshot_key", [], |row| row.get(0))
        .unwrap();
    let mut kept = kept;
    kept.sort();
    let (garbled, rest) = kept.split_first().unwrap();
    std::fs::write(garbled, b"not a snapshot").unwrap();
    let (edited, stale) = rest.split_first().unwrap();
    // Edited without the key: every user in it renamed. Used, it would
    // change the answer; it fails its signature and is refolded instead.
    let mut connection = open_snapshot(edited);
    let renamed = connection
        .execute("UPDATE scim_resources SET name = 'mallory@example.com', name_key = id", [])
        .unwrap();
    assert!(renamed > 0, "the edited snapshot holds users");
    write_image(edited, &mut connection, None);
    // Signed with the database's key but no longer what the log says: stale.
    for snapshot in stale {
        let mut connection = open_snapshot(snapshot);
        connection.execute_batch("UPDATE as_of_snapshot SET last_hash = x'00'").unwrap();
        write_image(snapshot, &mut connection, Some(&key));
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["audit", "as-of", "--tenant", "acme", "--at", "2999-01-01"])
        .env("ROLLCALL_DB", &db)
        .env("ROLLCALL_AS_OF_SNAPSHOT_EVERY", "7")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("failed its signature"),
        "the discarded snapshot is reported: {}",
        stderr(&output)
    );
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(answer, as_of_every("2999-01-01", "0"));
    assert!(!answer.to_string().contains("mallory"));
    for snapshot in &kept {
        let hash: Vec<u8> = open_snapshot(snapshot)
            .query_row("SELECT last_hash FROM as_of_snapshot", [], |row| row.get(0))
            .unwrap();
        assert_ne!(hash, vec![0u8], "{} was not replaced", snapshot.display());
        let names: i64 = open_snapshot(snapshot)
            .query_row(
                "SELECT count(*) FROM scim_resources WHERE name = 'mallory@example.com'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(names, 0, "{} was not replaced", snapshot.display());
    }
    // Before anything: nothing. Now: what the live member directory says.
    let before: Value = serde_json::from_str(&stdout(&as_of("2000-01-01"))).unwrap();
    assert_eq!(before["users"], json!([]));
    assert_eq!(before["position"], 0);
    let now: Value = server
        .get("/api/v1/audit/as-of?at=2999-01-01&view=members&limit=1000", Some(&audit_secret))
        .await
        .json()
        .await
        .unwrap();
    let live = admin.get("/members?limit=1000").await;
    assert_eq!(now["counts"]["members"], live["members"].as_array().unwrap().len());
    assert_eq!(now["counts"]["groups"], 1);
    let by_position: Value = server
        .get(
            &format!("/api/v1/audit/as-of?position={}&view=groups", first["position"]),
            Some(&audit_secret),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_position["items"][0]["name"], "Engineering");
    // Past the head is the head: it used to walk every snapshot boundary up
    // to the position asked for, and never answer (found by schemathesis).
    let far: Value = server
        .get("/api/v1/audit/as-of?position=9007199254740992&view=members", Some(&audit_secret))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(far["position"], now["position"]);
    assert_eq!(far["counts"], now["counts"]);
    for query in [
        "position=9223372036854775808",
        "",
        "at=x",
        "at=2026-01-01&position=3",
        "at=2026-01-01&view=tokens",
        "at=2026-01-01&limit=0",
    ] {
        let response =
            server.get(&format!("/api/v1/audit/as-of?{query}"), Some(&audit_secret)).await;
        assert_eq!(response.status(), 400, "{query}");
    }

    // The live projections equal a refold; a rebuild changes no row.
    let original = dump(&db);
    let original_indexes = indexes(&db);
    assert!(original_indexes.len() > 5, "{original_indexes:?}");
    let checked = rollcall_ok(&db, &["verify", "--projections"]);
    assert!(stderr(&checked).contains("projections ok"), "{}", stderr(&checked));
    rollcall_ok(&db, &["rebuild"]);
    assert_eq!(dump(&db), original);
    // A rebuild bulk-loads without the indexes, then makes every one again.
    assert_eq!(indexes(&db), original_indexes);

    // A drifted table is named, and a rebuild of its projection repairs it.
    {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection.execute_batch("UPDATE members SET roles = '[\"admin\"]'").unwrap();
        connection.execute_batch("DELETE FROM scim_members").unwrap();
    }
    let drifted = rollcall(&db, &["verify", "--projections", "--json"]);
    assert_eq!(drifted.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&drifted)).unwrap();
    assert_eq!(report["drifted"], json!(["scim_members", "members"]));
    rollcall_ok(&db, &["rebuild", "--projection", "members"]);
    let report: Value =
        serde_json::from_str(&stdout(&rollcall(&db, &["verify", "--projections", "--json"])))
            .unwrap();
    assert_eq!(report["drifted"], json!(["scim_members"]));

    // Interrupted, then resumed: the same tables.
    let sliced = rollcall_ok(&db, &["rebuild", "--max-events", "10"]);
    assert!(stderr(&sliced).contains("run `rollcall rebuild` again"), "{}", stderr(&sliced));
    assert!(rollcall::store::replay::scratch_path(&db).exists());
    let resumed = rollcall_ok(&db, &["rebuild"]);
    assert!(
        stderr(&resumed).contains("resumed an interrupted rebuild at position 10"),
        "{}",
        stderr(&resumed)
    );
    assert!(!rollcall::store::replay::scratch_path(&db).exists());
    assert_eq!(dump(&db), original);
    assert_eq!(indexes(&db), original_indexes);
    // The server goes on reading and writing the rebuilt tables.
    idp.user("frank@example.com", "f").await;
    admin.sync().await;
    rollcall_ok(&db, &["verify", "--projections"]);

    // A file written by a build without the audit projection: reports say
    // what to do instead of failing obscurely, and the next open folds the
    // log into the new tables, once.
    let settled = dump(&db);
    {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection.execute_batch("DROP TABLE audit_movements; DROP TABLE audit_causes;").unwrap();
    }
    let unready = rollcall(
        &db,
        &[
            "audit",
            "joiners-leavers",
            "--tenant",
            "acme",
            "--from",
            "2026-01-01",
            "--to",
            "2026-12-31",
        ],
    );
    assert!(!unready.status.success());
    assert!(
        stderr(&unready).contains("rollcall rebuild --projection audit"),
        "{}",
        stderr(&unready)
    );
    open_and_close(&db).await;
    assert_eq!(dump(&db), settled);
    let pending: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM projections_pending", [], |row| row.get(0))
        .unwrap();
    assert_eq!(pending, 0);
    rollcall_ok(&db, &["verify", "--projections"]);

    // A file with the feed in its earlier layout (`feed_events`, WITHOUT
    // ROWID): the next open drops it and folds the log into `feed_rows`,
    // with the same rows, so every cursor means what it meant.
    {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE feed_events (tenant_id TEXT NOT NULL, position INTEGER NOT NULL, \
                 seq INTEGER NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL, \
                 PRIMARY KEY (tenant_id, position, seq)) STRICT, WITHOUT ROWID; \
                 INSERT INTO feed_events SELECT tenant_id, position, seq, type, body FROM feed_rows; \
                 DROP TABLE feed_rows;",
            )
            .unwrap();
    }
    open_and_close(&db).await;
    assert_eq!(dump(&db), settled);
    let old_table: bool = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'feed_events')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!old_table, "the earlier layout is dropped");
    rollcall_ok(&db, &["verify", "--projections"]);
}

/// The request log is bounded per tenant: a flood of failures from one
/// tenant keeps only its newest rows and never pushes out another
/// tenant's; and a row keeps the path without the query, which can name
/// people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_is_bounded_per_tenant_and_keeps_no_query() {
    let config = rollcall::state::ServerConfig {
        request_log_rows_max: 5,
        ..rollcall::state::ServerConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let store = server.store.clone();
    let mut secrets = Vec::new();
    for tenant in ["flood", "quiet"] {
        server.tenant(tenant).await;
        secrets.push(server.token(tenant, TokenScope::Scim).await.1);
    }
    let miss = |secret: &str, n: usize| {
        server
            .client
            .get(server.url(&format!("/scim/v2/Users/nobody-{n}?attributes=userName")))
            .bearer_auth(secret.to_owned())
            .header("x-request-id", format!("miss-{n}"))
            .send()
    };
    for n in 0..3 {
        assert_eq!(miss(&secrets[1], n).await.unwrap().status(), 404);
    }
    for n in 0..40 {
        assert_eq!(miss(&secrets[0], 100 + n).await.unwrap().status(), 404);
    }
    // Stopping writes what is still buffered.
    server.stop().await.unwrap();
    let tenants = store.read(|connection| Ok(projections::tenancy::list_tenants(connection)?));
    let ids: std::collections::HashMap<String, String> =
        tenants.unwrap().into_iter().map(|tenant| (tenant.name, tenant.tenant_id)).collect();
    let rows = |tenant: &str| {
        let tenant = ids[tenant].clone();
        store
            .read(move |connection| {
                Ok(projections::requests::recent(connection, &tenant, false, 0, 1000)?)
            })
            .unwrap()
    };
    let flood = rows("flood");
    let kept: Vec<&str> = flood.iter().map(|row| row.request_id.as_str()).collect();
    assert_eq!(kept, ["miss-139", "miss-138", "miss-137", "miss-136", "miss-135"]);
    let quiet = rows("quiet");
    assert_eq!(quiet.len(), 3, "the flood pushed out another tenant's rows");
    assert_eq!(quiet[0].target, "/scim/v2/Users/nobody-2", "no query string");
}

/// A chain computed outside rollcall (Python's hashlib, from the formula in
/// ARCHITECTURE.md) verifies offline: so do the chains and checkpoints
/// auditors already hold, and a change to the encoding fails here first.
#[test]
fn an_export_hashed_outside_rollcall_verifies() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/known-chain.ndjson");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let since = "2:ba0bdae092ec46c7a71424f936e3bc1330d715cc981cdcbfa874fc08fbf669b1";
    let checked = rollcall_ok(&db, &["verify", "--file", fixture, "--since", since, "--json"]);
    let checked: Value = serde_json::from_str(&stdout(&checked)).unwrap();
    assert_eq!(checked["events_checked"], 3, "{checked}");
    assert_eq!(
        checked["heads"]["acme"],
        "7:9deb749284e1485a1e087b4d148483bd560a6642d376400ded0c90aeff4a255c"
    );
    assert!(checked["failure"].is_null(), "{checked}");
    // One character of a payload changed: the line is named.
    let text = std::fs::read_to_string(fixture).unwrap();
    let edited = dir.path().join("edited.ndjson");
    std::fs::write(&edited, text.replacen("ann@example.com", "bob@example.com", 1)).unwrap();
    let failed = rollcall(&db, &["verify", "--file", edited.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(stderr(&failed).contains("line 1"), "{}", stderr(&failed));
}
