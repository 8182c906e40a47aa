//! The event feed end to end: SCIM pushes and Synchronize on one side, the
//! application's `app` token reading `/api/v1/events` (pages, long polls,
//! Server-Sent Events) on the other, over a real server and SQLite file.

use std::time::{Duration, Instant};

use events::event::TokenScope;
use rollcall::state::ServerConfig;
use serde_json::{Value, json};

use crate::synchronize::Admin;
use crate::util::{TestServer, rollcall_ok};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A tenant with an IdP token, an admin and the application.
struct Tenant<'s> {
    server: &'s TestServer,
    scim: String,
    admin: Admin<'s>,
    app: String,
}

impl<'s> Tenant<'s> {
    async fn new(server: &'s TestServer, name: &str) -> Tenant<'s> {
        server.tenant(name).await;
        let (_, scim) = server.token(name, TokenScope::Scim).await;
        let (_, app) = server.token(name, TokenScope::App).await;
        Tenant { server, scim, admin: Admin::new(server, name).await, app }
    }

    /// A SCIM request under a request id of its own.
    async fn scim(&self, method: reqwest::Method, path: &str, body: Value, id: &str) -> Value {
        let response = self
            .server
            .client
            .request(method, self.server.url(&format!("/scim/v2{path}")))
            .bearer_auth(&self.scim)
            .header("x-request-id", id)
            .header("content-type", "application/scim+json")
            .body(if body.is_null() { String::new() } else { body.to_string() })
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        let text = response.text().await.unwrap();
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }

    async fn create(&self, user_name: &str, id: &str) -> String {
        let body = json!({
            "schemas": [USER], "userName": user_name, "externalId": format!("ext-{user_name}"),
            "emails": [{"value": user_name, "primary": true}], "active": true,
        });
        let created = self.scim(reqwest::Method::POST, "/Users", body, id).await;
        created["id"].as_str().unwrap().to_owned()
    }

    /// `GET /api/v1{path}` with the application's token: (status, body).
    async fn app_get(&self, path: &str) -> (u16, Value) {
        let response = self.server.get(&format!("/api/v1{path}"), Some(&self.app)).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn feed(&self, query: &str) -> Value {
        let (status, body) = self.app_get(&format!("/events{query}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Every event from the start, page by page.
    async fn whole_feed(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut query = "?limit=2".to_owned();
        loop {
            let page = self.feed(&query).await;
            events.extend(page["events"].as_array().unwrap().iter().cloned());
            if !page["has_more"].as_bool().unwrap() {
                return events;
            }
            query = format!("?limit=2&after={}", page["next_cursor"].as_str().unwrap());
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|event| event["type"].as_str().unwrap()).collect()
}

fn of_type<'e>(events: &'e [Value], kind: &str, user_name: &str) -> &'e Value {
    events
        .iter()
        .find(|event| event["type"] == kind && event["data"]["member"]["user_name"] == user_name)
        .unwrap_or_else(|| panic!("no {kind} of {user_name} in {events:#?}"))
}

/// What the audit ledger says a request produced: (position, type, hash).
async fn ledger(tenant: &Tenant<'_>, request_id: &str) -> Vec<(u64, String, String)> {
    let body = tenant.admin.get(&format!("/audit/requests/{request_id}")).await;
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["position"].as_u64().unwrap(),
                event["event_type"].as_str().unwrap().to_owned(),
                event["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn causes(event: &Value) -> Vec<(u64, String, String)> {
    event["caused_by"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cause| {
            (
                cause["position"].as_u64().unwrap(),
                cause["type"].as_str().unwrap().to_owned(),
                cause["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_tells_each_join_disable_and_leave_with_its_cause() {
    let server = TestServer::start().await;
    let acme = Tenant::new(&server, "acme").await;
    acme.create("ann@example.com", "create-ann").await;
    let bob = acme.create("bob@example.com", "create-bob").await;
    let carol = acme.create("carol@example.com", "create-carol").await;
    assert!(acme.whole_feed().await.is_empty(), "nothing before a Synchronize");
    let run = acme.admin.sync().await;

    let first = acme.whole_feed().await;
    assert_eq!(
        types(&first),
        ["member.joined", "member.joined", "member.joined", "sync.completed"],
        "{first:#?}"
    );
    let ann = of_type(&first, "member.joined", "ann@example.com");
    assert_eq!(ann["data"]["member"]["properties"]["email"], "ann@example.com", "{ann}");
    assert_eq!(ann["data"]["member"]["status"], "active");
    assert_eq!(ann["data"]["change"]["properties"]["email"], "ann@example.com");
    assert_eq!(ann["tenant"], json!(crate::scim::tenant_id(&server, "acme").await));
    assert_eq!(ann["version"], 1);
    assert_eq!(ann["source"]["kind"], "token", "{ann}");
    assert_eq!(ann["source"]["run_id"], run["run_id"]);
    assert_eq!(ann["source"]["trigger"], "manual");
    assert_eq!(ann["caused_by"]["request_id"], "create-ann");
    assert_eq!(causes(ann), ledger(&acme, "create-ann").await, "the cause is the request's event");
    let completed = first.last().unwrap();
    assert_eq!(completed["data"]["run_id"], run["run_id"]);
    assert_eq!(completed["data"]["counts"]["join"], 3, "{completed}");
    let ids: std::collections::HashSet<&str> =
        first.iter().map(|event| event["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), first.len(), "every event has an id of its own");
    let cursors: Vec<&str> = first.iter().map(|event| event["cursor"].as_str().unwrap()).collect();
    assert!(cursors.windows(2).all(|pair| pair[0] < pair[1]), "cursors increase: {cursors:?}");

    let deactivate = json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": false}]});
    acme.scim(reqwest::Method::PATCH, &format!("/Users/{bob}"), deactivate, "disable-bob").await;
    acme.scim(reqwest::Method::DELETE, &format!("/Users/{carol}"), Value::Null, "delete-carol")
        .await;
    let last_cursor = cursors.last().unwrap().to_owned();
    acme.admin.sync().await;
    let second = acme.feed(&format!("?after={last_cursor}")).await;
    let second = second["events"].as_array().unwrap();
    let disabled = of_type(second, "member.disabled", "bob@example.com");
    assert_eq!(disabled["data"]["change"]["revoke_sessions"], true);
    assert_eq!(disabled["data"]["member"]["status"], "disabled");
    assert_eq!(disabled["caused_by"]["request_id"], "disable-bob");
    assert_eq!(
        causes(disabled),
        ledger(&acme, "disable-bob").await,
        "UserUpdated, UserDeactivated"
    );
    let left = of_type(second, "member.left", "carol@example.com");
    assert_eq!(left["data"]["member"]["status"], "left");
    assert!(left["data"]["change"]["grace_until"].is_string(), "{left}");
    assert_eq!(causes(left), ledger(&acme, "delete-carol").await);
    assert_eq!(second.last().unwrap()["type"], "sync.completed");

    // The member directory says which cursor it reflects: the newest.
    let (status, members) = acme.app_get("/members").await;
    assert_eq!(status, 200);
    assert_eq!(members["as_of_cursor"], second.last().unwrap()["cursor"]);
    let member_id = left["data"]["member"]["member_id"].as_str().unwrap();
    let (_, one) = acme.app_get(&format!("/members/{member_id}")).await;
    assert_eq!(one["as_of_cursor"], members["as_of_cursor"]);
    assert_eq!(one["status"], "left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_filters_and_bad_cursors() {
    let server = TestServer::start().await;
    let acme = Tenant::new(&server, "acme").await;
    let other = Tenant::new(&server, "globex").await;
    for n in 0..5 {
        acme.create(&format!("user{n}@example.com"), &format!("create-{n}")).await;
    }
    acme.admin.sync().await;
    let page = acme.feed("?limit=2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_cursor"], page["events"][1]["cursor"]);
    let all = acme.feed("").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 6);
    assert_eq!(all["has_more"], false);
    let end = all["next_cursor"].as_str().unwrap().to_owned();
    let after_end = acme.feed(&format!("?after={end}")).await;
    assert_eq!(after_end["events"], json!([]));
    assert_eq!(after_end["next_cursor"], json!(end), "an empty page stays where it was");
    let runs = acme.feed("?types=sync.completed,sync.held").await;
    assert_eq!(types(runs["events"].as_array().unwrap()), ["sync.completed"]);

    // Another tenant's application sees none of it, and cannot use its cursors.
    assert_eq!(other.feed("").await["events"], json!([]));
    let (status, body) = other.app_get(&format!("/events?after={end}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not a cursor of this tenant"), "{body}");
    for (query, says) in [
        ("?after=nope", "not a cursor rollcall hands out"),
        ("?limit=0", "limit must be 1 to 1000"),
        ("?limit=1001", "limit must be 1 to 1000"),
        ("?types=member.joined,user.created", "\"user.created\" is not an event type"),
        // Exactly as documented: single commas, nothing around the names.
        ("?types=member.joined,", "\"\" is not an event type"),
        ("?types=%20member.joined", "\" member.joined\" is not an event type"),
        ("?wait=61", "wait must be 0 to 60"),
        ("?colour=blue", "unknown field"),
    ] {
        let (status, body) = acme.app_get(&format!("/events{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }

    // The application's token reads members and the feed, sets app-owned
    // properties, and nothing else.
    let mut mapping = acme.admin.get("/provisioning/mapping").await;
    mapping["app_owned"] = json!(["plan"]);
    acme.admin.put("/provisioning/mapping", mapping).await;
    let member_id = all["events"][0]["data"]["member"]["member_id"].as_str().unwrap();
    let patched = server
        .client
        .patch(server.url(&format!("/api/v1/members/{member_id}")))
        .bearer_auth(&acme.app)
        .json(&json!({"app_properties": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/provisioning/sync"),
        (reqwest::Method::GET, "/api/v1/provisioning/mapping"),
        (reqwest::Method::GET, "/api/v1/tokens"),
        (reqwest::Method::GET, "/api/v1/audit/verify"),
        (reqwest::Method::GET, "/scim/v2/Users"),
    ] {
        let response =
            server.client.request(method, server.url(path)).bearer_auth(&acme.app).send().await;
        assert_eq!(response.unwrap().status(), 401, "{path}: refused like any wrong scope");
    }
    let (_, scim_token) = server.token("acme", TokenScope::Scim).await;
    let refused = server.get("/api/v1/events", Some(&scim_token)).await;
    assert_eq!(refused.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_at_the_commit_and_a_snapshot_then_tail_sees_each_change_once() {
    // Polling for other processes' commits only every 30 s: a wake-up
    // sooner can only come from this server's own commit.
    let config = ServerConfig { feed_poll: Duration::from_secs(30), ..ServerConfig::default() };
    let server = TestServer::start_with(config).await;
    let acme = Tenant::new(&server, "acme").await;
    acme.create("ann@example.com", "create-ann").await;
    acme.admin.sync().await;

    // The snapshot: members, and the cursor they reflect.
    let (_, snapshot) = acme.app_get("/members").await;
    let cursor = snapshot["as_of_cursor"].as_str().unwrap().to_owned();
    assert_eq!(snapshot["members"].as_array().unwrap().len(), 1);

    let empty_started = Instant::now();
    let empty = acme.feed(&format!("?after={cursor}&wait=1")).await;
    assert_eq!(empty["events"], json!([]));
    assert!(empty_started.elapsed() >= Duration::from_secs(1), "it waited for the deadline");

    let poll = {
        let url = server.url(&format!("/api/v1/events?after={cursor}&wait=30"));
        let request = server.client.get(url).bearer_auth(&acme.app);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (Instant::now(), response.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    acme.create("bob@example.com", "create-bob").await;
    let synced_at = Instant::now();
    acme.admin.sync().await;
    let (answered_at, woken) = poll.await.unwrap();
    assert!(
        answered_at.duration_since(synced_at) < Duration::from_secs(10),
        "woken by the commit, not the 30 s deadline"
    );
    let woken = woken["events"].as_array().unwrap();
    assert_eq!(woken[0]["type"], "member.joined", "{woken:#?}");
    assert_eq!(woken[0]["data"]["member"]["user_name"], "bob@example.com");

    // Tail from the snapshot: each change once, nothing from before it.
    let tail = acme.whole_feed().await;
    let after_snapshot: Vec<&Value> =
        tail.iter().filter(|event| event["cursor"].as_str().unwrap() > cursor.as_str()).collect();
    let tailed = acme.feed(&format!("?after={cursor}")).await;
    assert_eq!(tailed["events"].as_array().unwrap().iter().collect::<Vec<_>>(), after_snapshot);
    assert_eq!(types(tailed["events"].as_array().unwrap()), ["member.joined", "sync.completed"]);
}

/// Reads Server-Sent Events frames until `wanted` events (not comments)
/// have come; returns them as (id, event, data) and the comments seen.
async fn read_sse(
    response: &mut reqwest::Response,
    wanted: usize,
) -> (Vec<(String, String, Value)>, Vec<String>) {
    let mut text = String::new();
    let mut events = Vec::new();
    let mut comments = Vec::new();
    while events.len() < wanted {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("the stream went silent")
            .unwrap()
            .expect("the stream ended");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in frame.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    comments.push(comment.trim().to_owned());
                } else if let Some((field, value)) = line.split_once(':') {
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => id = value.to_owned(),
                        "event" => event = value.to_owned(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
            }
            if !data.is_empty() {
                events.push((id, event, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    (events, comments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_heartbeats_and_resumes_from_last_event_id() {
    let config =
        ServerConfig { feed_heartbeat: Duration::from_millis(200), ..ServerConfig::default() };
    let server = TestServer::start_with(config).await;
    let acme = Tenant::new(&server, "acme").await;
    acme.create("ann@example.com", "create-ann").await;
    acme.create("bob@example.com", "create-bob").await;
    acme.admin.sync().await;

    let open = |last_event_id: Option<String>| {
        let mut request = server
            .client
            .get(server.url("/api/v1/events/stream?types=member.joined"))
            .bearer_auth(&acme.app);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send()
    };
    let mut stream = open(None).await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (first, _) = read_sse(&mut stream, 1).await;
    let (id, event, body) = &first[0];
    assert_eq!(event, "member.joined");
    assert_eq!(&body["cursor"], id, "the SSE id is the cursor");
    drop(stream);

    // Reconnecting with the last id sent: the next event, not the first again.
    let mut resumed = open(Some(id.clone())).await.unwrap();
    let (next, _) = read_sse(&mut resumed, 1).await;
    assert_ne!(next[0].0, *id);
    assert_eq!(next[0].2["data"]["member"]["user_name"], "bob@example.com");
    assert_ne!(body["data"]["member"]["user_name"], "bob@example.com");

    // Live: a new join arrives on the open stream, after heartbeats.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    acme.create("carol@example.com", "create-carol").await;
    acme.admin.sync().await;
    let (live, comments) = read_sse(&mut resumed, 1).await;
    assert_eq!(live[0].2["data"]["member"]["user_name"], "carol@example.com");
    assert!(comments.iter().any(|comment| comment == "heartbeat"), "{comments:?}");
    assert!(started.elapsed() < Duration::from_secs(20));

    let (status, body) = {
        let response = server
            .client
            .get(server.url("/api/v1/events/stream"))
            .bearer_auth(&acme.app)
            .header("last-event-id", "0000")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 400, "{body}");
    // An empty Last-Event-ID (a client that saw no id yet) leaves `after`
    // in charge: a malformed one is still refused.
    let response = server
        .client
        .get(server.url("/api/v1/events/stream?after=nope"))
        .bearer_auth(&acme.app)
        .header("last-event-id", "")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_leaves_every_id_and_cursor_as_it_was() {
    if crate::util::sqlite_only(
        "rebuild folds into an SQLite scratch file, not built for PostgreSQL yet",
    ) {
        return;
    }
    let server = TestServer::start().await;
    let acme = Tenant::new(&server, "acme").await;
    for n in 0..3 {
        acme.create(&format!("user{n}@example.com"), &format!("create-{n}")).await;
    }
    acme.admin.sync().await;
    let rename = json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "emails[primary eq true].value", "value": "new0@example.com"}]});
    let users = acme
        .scim(
            reqwest::Method::GET,
            "/Users?filter=userName%20eq%20%22user0@example.com%22",
            Value::Null,
            "find",
        )
        .await;
    let user0 = users["Resources"][0]["id"].as_str().unwrap().to_owned();
    acme.scim(reqwest::Method::PATCH, &format!("/Users/{user0}"), rename, "rename-0").await;
    acme.admin.sync().await;
    let before = acme.whole_feed().await;
    let updated = before.iter().find(|event| event["type"] == "member.updated").unwrap();
    assert_eq!(
        updated["data"]["change"]["properties"]["email"],
        json!({"from": "user0@example.com", "to": "new0@example.com"}),
        "{updated}"
    );
    assert_eq!(updated["caused_by"]["request_id"], "rename-0");

    let db = server.db_path();
    let (stopped, dir) = server.stop_keeping_files().await;
    stopped.unwrap();
    let db_text = db.to_str().unwrap().to_owned();
    rollcall_ok(&db, &["--db", &db_text, "rebuild", "--projection", "feed"]);
    rollcall_ok(&db, &["--db", &db_text, "verify", "--projections"]);
    let open = db.clone();
    let store = tokio::task::spawn_blocking(move || {
        rollcall::store::Store::open(&open, crate::util::test_log_options())
    })
    .await
    .unwrap()
    .unwrap();
    let tenant = store
        .read(|connection| {
            Ok(projections::tenancy::tenant_by_name(connection, "acme")?.unwrap().tenant_id)
        })
        .unwrap();
    let after = store
        .read(|connection| {
            Ok(projections::feed::page(
                connection,
                &tenant,
                projections::feed::Cursor::START,
                None,
                1000,
            )?)
        })
        .unwrap();
    let after: Vec<Value> =
        after.events.iter().map(|event| serde_json::from_str(&event.body).unwrap()).collect();
    assert_eq!(after, before, "the same events, ids and cursors after a rebuild");
    drop(dir);
}

/// The example application, as `cargo test` built it beside this binary.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let path = profile.join("examples").join(name);
    assert!(path.exists(), "{} is built by cargo test", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_application_acts_on_each_event_once_and_resumes_after_a_kill() {
    let server = TestServer::start().await;
    let acme = Tenant::new(&server, "acme").await;
    for n in 0..3 {
        acme.create(&format!("user{n}@example.com"), &format!("create-{n}")).await;
    }
    acme.admin.sync().await;
    let cursor_file = server.dir.path().join("app.cursor");
    let run_once = || {
        let output = std::process::Command::new(example("app"))
            .args(["--url", &server.base, "--token", &acme.app, "--once"])
            .arg("--cursor-file")
            .arg(&cursor_file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let first = run_once();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 4, "{first}");
    assert!(lines.contains(&"welcome email to user0@example.com"), "{first}");
    assert!(lines[3].starts_with("synchronize "), "{first}");
    assert_eq!(run_once(), "", "nothing twice");

    // Tailing, killed mid-way, then resumed: every event acted on, in order.
    let mut tail = std::process::Command::new(example("app"))
        .args(["--url", &server.base, "--token", &acme.app])
        .arg("--cursor-file")
        .arg(&cursor_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bob = acme.create("bob@example.com", "create-bob").await;
    acme.admin.sync().await;
    let deactivate = json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": false}]});
    acme.scim(reqwest::Method::PATCH, &format!("/Users/{bob}"), deactivate, "disable-bob").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tail.kill().unwrap();
    let mut before_kill = String::new();
    use std::io::Read as _;
    tail.stdout.take().unwrap().read_to_string(&mut before_kill).unwrap();
    tail.wait().unwrap();
    acme.admin.sync().await;
    let after = run_once();
    let all: Vec<&str> = before_kill.lines().chain(after.lines()).collect();
    assert_eq!(
        all.iter().filter(|line| line.starts_with("welcome email to bob@")).count(),
        1,
        "{all:?}"
    );
    assert!(
        all.iter().any(|line| line.starts_with("revoke sessions of bob@example.com")),
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|line| line.starts_with("synchronize ")).count(), 2, "{all:?}");
}
