//! Webhooks end to end: endpoints over the admin API and the CLI, and
//! deliveries to a real HTTP receiver on 127.0.0.1 that answers as a
//! script says (errors, closed connections, timeouts, Retry-After, 410),
//! verified with the Standard Webhooks reference library.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::event::TokenScope;
use rollcall::state::ServerConfig;
use rollcall::webhooks::DeliveryConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::synchronize::Admin;
use crate::util::TestServer;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// 429 or 503 with `Retry-After: SECONDS`.
    RetryAfter(u16, u64),
    /// Drops the connection without answering.
    Close,
    /// Answers 200 only after this long.
    Slow(Duration),
    /// Answers 200 after this long, which is after the sender gave up:
    /// not a delivery.
    Hang(Duration),
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub answered: Option<u16>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers[name].to_str().unwrap().to_owned()
    }
}

/// A webhook receiver: plain HTTP/1.1 over TCP, so a test decides exactly
/// what happens to each request (even a connection closed mid-way).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// What it answers once the script is done.
    then: Arc<Mutex<Answer>>,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(script: Vec<Answer>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!("http://{}/hooks", listener.local_addr().unwrap()),
            script: Arc::new(Mutex::new(script.into())),
            then: Arc::new(Mutex::new(Answer::Status(204))),
            received: Arc::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serving.clone().connection(socket));
            }
        });
        receiver
    }

    pub fn answer_from_now(&self, answer: Answer) {
        *self.then.lock().unwrap() = answer;
    }

    async fn connection(self, mut socket: tokio::net::TcpStream) {
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let Some(end) = find(&buffer, b"\r\n\r\n") else {
                let mut chunk = [0u8; 8192];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let mut headers = http::HeaderMap::new();
            for line in head.lines().skip(1) {
                if let Some((name, value)) = line.split_once(':') {
                    headers.append(
                        http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                        value.trim().parse().unwrap(),
                    );
                }
            }
            let length: usize = headers
                .get("content-length")
                .map_or(0, |value| value.to_str().unwrap().parse().unwrap());
            while buffer.len() < end + 4 + length {
                let mut chunk = [0u8; 8192];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                }
            }
            let arrived = Instant::now();
            let body = buffer[end + 4..end + 4 + length].to_vec();
            buffer.drain(..end + 4 + length);
            let answer = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| self.then.lock().unwrap().clone());
            let (status, extra) = match &answer {
                Answer::Status(status) => (Some(*status), String::new()),
                Answer::RetryAfter(status, seconds) => {
                    (Some(*status), format!("Retry-After: {seconds}\r\n"))
                }
                Answer::Close => (None, String::new()),
                Answer::Slow(wait) | Answer::Hang(wait) => {
                    tokio::time::sleep(*wait).await;
                    (Some(200), String::new())
                }
            };
            let answered = if matches!(answer, Answer::Hang(_)) { None } else { status };
            self.received.lock().unwrap().push(Received { at: arrived, headers, body, answered });
            let Some(status) = status else { return };
            let response =
                format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 2\r\n{extra}\r\nok");
            if socket.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Every request, in the order it arrived.
    pub fn received(&self) -> Vec<Received> {
        let mut received = self.received.lock().unwrap().clone();
        received.sort_by_key(|received| received.at);
        received
    }

    /// The messages answered 2xx, in the order they arrived.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|received| received.answered.is_some_and(|status| (200..300).contains(&status)))
            .collect()
    }

    /// Waits until `count` different messages were answered 2xx.
    pub async fn wait_for_distinct(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let delivered = self.delivered();
            let mut ids: Vec<String> = delivered.iter().map(|r| r.header("webhook-id")).collect();
            ids.sort();
            ids.dedup();
            if ids.len() >= count {
                return delivered;
            }
            assert!(Instant::now() < deadline, "{} of {count} delivered", ids.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `count` messages were answered 2xx.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= count {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} delivered; got {:#?}",
                delivered.len(),
                self.received()
                    .iter()
                    .map(|r| (r.answered, r.json()["type"].clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Verifies a delivery with the Standard Webhooks reference library.
pub fn verify(secret: &str, received: &Received) -> Result<(), String> {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&received.body, &received.headers)
        .map_err(|error| format!("{error:?}"))
}

/// Test-speed delivery: retries after 100 ms, a 1 s timeout, loopback allowed.
pub fn quick_config() -> ServerConfig {
    ServerConfig {
        webhooks: DeliveryConfig {
            retry_schedule: vec![Duration::from_millis(100)],
            timeout: Duration::from_secs(1),
            allow_private_targets: true,
            ..DeliveryConfig::default()
        },
        feed_poll: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

async fn push_users(server: &TestServer, scim: &str, names: &[&str]) {
    for name in names {
        let response = server
            .client
            .post(server.url("/scim/v2/Users"))
            .bearer_auth(scim)
            .header("content-type", "application/scim+json")
            .body(json!({"schemas": [USER], "userName": name, "externalId": name}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

async fn setup(server: &TestServer) -> (Admin<'_>, String) {
    server.tenant("acme").await;
    let (_, scim) = server.token("acme", TokenScope::Scim).await;
    (Admin::new(server, "acme").await, scim)
}

async fn create_endpoint(admin: &Admin<'_>, body: Value) -> (String, String) {
    let (status, created) = admin.send(reqwest::Method::POST, "/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    (created["id"].as_str().unwrap().to_owned(), secret)
}

/// Waits until the endpoint's status is `status`; answers the endpoint.
async fn wait_for_status(admin: &Admin<'_>, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = admin.get(&format!("/webhooks/{id}")).await;
        if shown["status"] == status {
            return shown;
        }
        assert!(Instant::now() < deadline, "never {status}: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The feed's events, in order, as the application token would read them.
async fn feed(admin: &Admin<'_>) -> Vec<Value> {
    admin.get("/events?limit=1000").await["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_through_errors_closes_timeouts_and_retry_after() {
    let server = TestServer::start_with(quick_config()).await;
    let (admin, scim) = setup(&server).await;
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Close,
        Answer::Hang(Duration::from_millis(1500)),
        Answer::RetryAfter(429, 1),
        Answer::Status(302),
    ])
    .await;
    let (id, secret) =
        create_endpoint(&admin, json!({"url": receiver.url, "description": "the app"})).await;
    push_users(&server, &scim, &["ann@example.com", "bob@example.com", "carol@example.com"]).await;
    admin.sync().await;
    let events = feed(&admin).await;
    assert_eq!(events.len(), 4, "three joins and the run's end");

    let delivered = receiver.wait_for(4, Duration::from_secs(30)).await;
    let ids: Vec<String> = delivered
        .iter()
        .map(|received| received.json()["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> =
        events.iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, expected, "exactly the feed, in its order, each once");
    for (received, event) in delivered.iter().zip(&events) {
        verify(&secret, received).unwrap();
        assert_eq!(&received.json(), event, "the body is the feed's event");
        assert_eq!(received.header("webhook-id"), event["id"].as_str().unwrap());
        assert_eq!(received.header("content-type"), "application/json");
    }

    // The first event was tried six times, as the same message each time.
    let all = receiver.received();
    let first_id = &ids[0];
    let tries: Vec<&Received> =
        all.iter().filter(|r| &r.header("webhook-id") == first_id).collect();
    assert_eq!(tries.len(), 6, "500, close, timeout, 429, 302, then 2xx");
    assert!(all.iter().take(6).all(|r| &r.header("webhook-id") == first_id), "nothing overtook it");
    // Retry-After: 1 was waited, not the 100 ms schedule.
    assert!(tries[4].at.duration_since(tries[3].at) >= Duration::from_millis(950));

    // A tampered body does not verify.
    let mut tampered = delivered[0].clone();
    tampered.body = tampered.body.iter().map(|b| if *b == b'a' { b'b' } else { *b }).collect();
    assert!(verify(&secret, &tampered).is_err());

    // The admin sees the attempts, failures included, newest first.
    let attempts = admin.get(&format!("/webhooks/{id}/deliveries?failed=true")).await;
    let statuses: Vec<Value> =
        attempts["deliveries"].as_array().unwrap().iter().map(|a| a["status"].clone()).collect();
    assert_eq!(
        statuses,
        [json!(302), json!(429), Value::Null, Value::Null, json!(500)],
        "{attempts}"
    );
    let shown = admin.get(&format!("/webhooks/{id}")).await;
    assert_eq!(shown["delivery"]["delivered"], 4, "{shown}");
    assert_eq!(shown["delivery"]["cursor"], events[3]["cursor"]);
    assert!(shown.get("secret").is_none(), "the secret is shown once, at creation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_a_paused_endpoint_waits_and_both_catch_up_in_order() {
    let server = TestServer::start_with(quick_config()).await;
    let (admin, scim) = setup(&server).await;
    let gone = Receiver::start(vec![Answer::Status(410)]).await;
    let (gone_id, _) = create_endpoint(&admin, json!({"url": gone.url})).await;
    let paused = Receiver::start(Vec::new()).await;
    let (paused_id, paused_secret) = create_endpoint(
        &admin,
        json!({"url": paused.url, "types": ["member.joined"], "batch": true}),
    )
    .await;
    let (status, body) = admin
        .send(
            reqwest::Method::PATCH,
            &format!("/webhooks/{paused_id}"),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!((status, body["status"].clone()), (200, json!("paused")), "{body}");

    push_users(&server, &scim, &["ann@example.com", "bob@example.com"]).await;
    admin.sync().await;
    let disabled = wait_for_status(&admin, &gone_id, "disabled").await;
    assert!(disabled["disabled_reason"].as_str().unwrap().contains("410"), "{disabled}");
    assert_eq!(gone.received().len(), 1, "nothing more after the 410");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(paused.received().is_empty(), "a paused endpoint receives nothing");

    // Resumed, both catch up from where they stopped.
    gone.answer_from_now(Answer::Status(200));
    for id in [&gone_id, &paused_id] {
        let (status, body) = admin
            .send(
                reqwest::Method::PATCH,
                &format!("/webhooks/{id}"),
                Some(json!({"status": "active"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let events = feed(&admin).await;
    let all_ids: Vec<&Value> = events.iter().map(|event| &event["id"]).collect();
    let caught_up = gone.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(
        caught_up.iter().map(|r| r.json()["id"].clone()).collect::<Vec<_>>(),
        all_ids.iter().map(|id| (*id).clone()).collect::<Vec<_>>(),
        "the 410'd event again, then the rest"
    );
    let batches = paused.wait_for(1, Duration::from_secs(20)).await;
    let batch = batches[0].json();
    let joined: Vec<&Value> =
        events.iter().filter(|event| event["type"] == "member.joined").collect();
    assert_eq!(
        batch.as_array().unwrap().iter().collect::<Vec<_>>(),
        joined,
        "one batch of the joins only"
    );
    verify(&paused_secret, &batches[0]).unwrap();

    // The log holds each change of the endpoints, never a secret.
    let db = server.db_path();
    let exported = crate::util::rollcall_ok(&db, &["export", "--tenant", "acme"]);
    let text = crate::util::stdout(&exported);
    for kind in ["WebhookCreated", "WebhookPaused", "WebhookDisabled", "WebhookResumed"] {
        assert!(text.contains(kind), "{kind} is in the chain");
    }
    assert!(!text.contains(&paused_secret), "a secret is never in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_checked_rotated_redelivered_and_kept_to_their_tenant() {
    let strict = TestServer::start().await;
    let (admin, _) = setup(&strict).await;
    for (body, says) in [
        (json!({"url": "http://127.0.0.1:9/hooks"}), "not a public address"),
        (json!({"url": "http://localhost:9/hooks"}), "not a public address"),
        (json!({"url": "http://[::1]:9/hooks"}), "not a public address"),
        (json!({"url": "http://10.1.2.3/hooks"}), "not a public address"),
        (json!({"url": "http://169.254.169.254/latest"}), "not a public address"),
        (json!({"url": "ftp://example.com/"}), "http or https"),
        (json!({"url": "https://user:pw@example.com/"}), "credentials"),
        (json!({"url": "not-a-url"}), "not a URL"),
        // The URL parser would drop these; what is recorded is what was sent.
        (json!({"url": " https://example.com/"}), "spaces or control characters"),
        (json!({"url": "https://exam\tple.com/"}), "spaces or control characters"),
        (json!({"url": "https://example.com/", "types": ["user.created"]}), "not an event type"),
        (json!({"url": "https://example.com/", "types": []}), "at least one"),
        (json!({"url": "https://example.com/", "colour": "blue"}), "unknown field"),
        (json!({}), "missing field `url`"),
    ] {
        let head = strict.log_head();
        let (status, answer) =
            admin.send(reqwest::Method::POST, "/webhooks", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(says), "{body}: {answer}");
        assert_eq!(strict.log_head(), head, "a refused endpoint writes nothing");
    }
    drop(admin);
    strict.stop().await.unwrap();

    let server = TestServer::start_with(quick_config()).await;
    let (admin, scim) = setup(&server).await;
    let receiver = Receiver::start(Vec::new()).await;
    let (id, old_secret) = create_endpoint(&admin, json!({"url": receiver.url})).await;

    // Another tenant's admin and the application cannot see it.
    server.tenant("globex").await;
    let other = Admin::new(&server, "globex").await;
    let (status, _) = other.send(reqwest::Method::GET, &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(other.get("/webhooks").await["webhooks"], json!([]));
    let (_, app) = server.token("acme", TokenScope::App).await;
    let refused = server.get("/api/v1/webhooks", Some(&app)).await;
    assert_eq!(refused.status(), 401);

    // Rotation: both secrets sign during the overlap.
    let (status, rotated) =
        admin.send(reqwest::Method::POST, &format!("/webhooks/{id}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(rotated["previous_secret_valid_until"].is_string());
    push_users(&server, &scim, &["ann@example.com"]).await;
    admin.sync().await;
    let delivered = receiver.wait_for(2, Duration::from_secs(20)).await;
    for received in &delivered {
        verify(&old_secret, received).unwrap();
        verify(&new_secret, received).unwrap();
        assert_eq!(received.header("webhook-signature").split(' ').count(), 2);
    }

    // A test event, and redelivery of one event and of everything from a cursor.
    let (status, tested) =
        admin.send(reqwest::Method::POST, &format!("/webhooks/{id}/test"), None).await;
    assert_eq!((status, tested["status"].clone()), (200, json!(204)), "{tested}");
    let events = feed(&admin).await;
    let first = events[0]["id"].as_str().unwrap();
    let (status, again) = admin
        .send(
            reqwest::Method::POST,
            &format!("/webhooks/{id}/redeliver"),
            Some(json!({"event_id": first})),
        )
        .await;
    assert_eq!((status, again["kind"].clone()), (200, json!("redelivery")), "{again}");
    let (status, _) = admin
        .send(
            reqwest::Method::POST,
            &format!("/webhooks/{id}/redeliver"),
            Some(json!({"from_cursor": "0000000000000000000000000000"})),
        )
        .await;
    assert_eq!(status, 400, "a cursor of nobody's");
    let start =
        projections::feed::Cursor::START.encode(&crate::scim::tenant_id(&server, "acme").await);
    let (status, _) = admin
        .send(
            reqwest::Method::POST,
            &format!("/webhooks/{id}/redeliver"),
            Some(json!({"from_cursor": start})),
        )
        .await;
    assert_eq!(status, 200);
    let all = receiver.wait_for(6, Duration::from_secs(20)).await;
    let types: Vec<String> =
        all.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        types,
        [
            "member.joined",
            "sync.completed",
            "webhook.test",
            "member.joined",
            "member.joined",
            "sync.completed"
        ],
    );

    // Deleted: gone for good, with its secrets.
    let (status, _) = admin.send(reqwest::Method::DELETE, &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = admin.send(reqwest::Method::GET, &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 404);
}

/// What the kill tests start from, made with the CLI on `db`: a tenant
/// `acme` with a SCIM and an app token, a receiver that answers slowly
/// (so a kill lands mid-delivery), and an endpoint on it.
struct KillSetup {
    scim: String,
    app: String,
    runtime: tokio::runtime::Runtime,
    receiver: Receiver,
    secret: String,
}

fn kill_setup(db: &std::path::Path) -> KillSetup {
    let cli =
        |args: &[&str]| crate::util::stdout(&crate::util::rollcall_ok(db, args)).trim().to_owned();
    cli(&["tenant", "create", "acme"]);
    let scim = cli(&["token", "issue", "--tenant", "acme", "--scope", "scim"]);
    let app = cli(&["token", "issue", "--tenant", "acme", "--scope", "app"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(Receiver::start(Vec::new()));
    receiver.answer_from_now(Answer::Slow(Duration::from_millis(100)));
    let secret = cli(&[
        "webhook",
        "create",
        "--tenant",
        "acme",
        "--url",
        &receiver.url,
        "--allow-private-targets",
    ]);
    KillSetup { scim, app, runtime, receiver, secret }
}

/// Thirty users created over SCIM, through `nodes` in turn.
async fn create_thirty(client: &reqwest::Client, nodes: &[&crate::util::ServedBinary], scim: &str) {
    for n in 0..30 {
        let node = nodes[n % nodes.len()];
        let response = client
            .post(node.url("/scim/v2/Users"))
            .bearer_auth(scim)
            .header("content-type", "application/scim+json")
            .body(
                json!({"schemas": [USER], "userName": format!("user{n:02}@example.com")})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

/// The real binary, with quick retries and private targets allowed.
fn start_served(db: &std::path::Path) -> crate::util::ServedBinary {
    let args = ["--webhook-allow-private-targets", "--webhook-retry-schedule", "100ms"];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    crate::util::ServedBinary::start(db, &args)
}

#[test]
fn a_kill_9_mid_delivery_loses_nothing_and_sends_again_at_most_the_one_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rollcall.db");
    let cli =
        |args: &[&str]| crate::util::stdout(&crate::util::rollcall_ok(&db, args)).trim().to_owned();
    let KillSetup { scim, app, runtime, receiver, secret } = kill_setup(&db);
    assert!(secret.starts_with("whsec_"));
    let listed: Value =
        serde_json::from_str(&cli(&["webhook", "list", "--tenant", "acme", "--json"])).unwrap();
    assert_eq!(listed[0]["url"], json!(receiver.url));
    assert_eq!(listed[0]["status"], "active");

    let mut served = start_served(&db);
    let client = {
        rollcall::webhooks::deliver::install_tls_provider();
        reqwest::Client::new()
    };
    runtime.block_on(create_thirty(&client, &[&served], &scim));
    cli(&["sync", "--tenant", "acme"]);
    runtime.block_on(receiver.wait_for(5, Duration::from_secs(30)));
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    drop(served);
    let at_kill = receiver.delivered().len();
    assert!(at_kill < 31, "the kill landed mid-delivery ({at_kill} of 31)");

    let served = start_served(&db);
    every_event_once_in_order(&runtime, &receiver, &served, &app, &secret);
    let listed: Value =
        serde_json::from_str(&cli(&["webhook", "list", "--tenant", "acme", "--json"])).unwrap();
    assert_eq!(listed[0]["delivery"]["delivered"], 31, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_too_long_is_disabled_and_says_why() {
    let mut config = quick_config();
    config.webhooks.disable_after = Duration::from_millis(600);
    let server = TestServer::start_with(config).await;
    let (admin, scim) = setup(&server).await;
    let receiver = Receiver::start(Vec::new()).await;
    receiver.answer_from_now(Answer::Status(500));
    let (id, _) = create_endpoint(&admin, json!({"url": receiver.url})).await;
    push_users(&server, &scim, &["ann@example.com"]).await;
    admin.sync().await;
    let shown = wait_for_status(&admin, &id, "disabled").await;
    assert!(shown["disabled_reason"].as_str().unwrap().contains("failed since"), "{shown}");
    assert!(shown["delivery"]["attempts"].as_u64().unwrap() >= 2, "{shown}");
    let tried = receiver.received().len();
    assert!(tried >= 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), tried, "a disabled endpoint is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_adds_an_endpoint_tests_it_and_shows_its_deliveries() {
    let server = TestServer::start_with(quick_config()).await;
    let (admin, scim) = setup(&server).await;
    let receiver = Receiver::start(Vec::new()).await;
    let (_, admin_secret) = server.token("acme", TokenScope::Admin).await;
    let mut visitor = crate::console::Visitor::new(&server);
    visitor.sign_in(&admin_secret).await;
    let page = visitor.get("/admin/webhooks").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("No endpoints yet."), "{}", page.html);
    let csrf = page.csrf();
    let created = visitor
        .post(
            "/admin/webhooks",
            &[
                ("csrf", &csrf),
                ("url", &receiver.url),
                ("type", "member.joined"),
                ("description", "our app"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.html);
    let start = created.html.find("whsec_").expect("the secret, once");
    let secret: String = created.html[start..].chars().take_while(|c| *c != '"').collect();
    let listed = admin.get("/webhooks").await;
    let id = listed["webhooks"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["webhooks"][0]["types"], json!(["member.joined"]));

    let endpoint_page = visitor.get(&format!("/admin/webhooks/{id}")).await;
    let tested = visitor
        .post(&format!("/admin/webhooks/{id}/test"), &[("csrf", &endpoint_page.csrf())])
        .await;
    assert!(tested.html.contains("Delivered: the endpoint answered 204"), "{}", tested.html);
    let test_delivery = receiver.wait_for(1, Duration::from_secs(10)).await;
    verify(&secret, &test_delivery[0]).unwrap();
    assert_eq!(test_delivery[0].json()["type"], "webhook.test");

    push_users(&server, &scim, &["ann@example.com"]).await;
    admin.sync().await;
    let delivered = receiver.wait_for(2, Duration::from_secs(20)).await;
    let joined = delivered[1].json();
    assert_eq!(joined["type"], "member.joined");
    // The receiver may have the request before the deliverer has recorded
    // its answer: the page lists it once recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = visitor.get(&format!("/admin/webhooks/{id}")).await;
        if shown.html.contains(joined["id"].as_str().unwrap()) {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery is listed: {}", shown.html);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(shown.html.contains("Last deliveries"), "{}", shown.html);
    let paused =
        visitor.post(&format!("/admin/webhooks/{id}/pause"), &[("csrf", &shown.csrf())]).await;
    assert_eq!(paused.status, 303);
    assert_eq!(admin.get(&format!("/webhooks/{id}")).await["status"], "paused");

    // The member's page lists the events the application heard.
    let member_id = joined["data"]["member"]["member_id"].as_str().unwrap();
    let member_page = visitor.get(&format!("/admin/members/{member_id}")).await;
    assert!(member_page.html.contains("Events the application heard"));
    assert!(member_page.html.contains("member.joined"), "{}", member_page.html);
}

/// The CLI twins of the routes, on the same file as a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pauses_resumes_rotates_redelivers_and_deletes() {
    let server = TestServer::start_with(quick_config()).await;
    let (admin, scim) = setup(&server).await;
    let receiver = Receiver::start(Vec::new()).await;
    let db = server.db_path();
    let cli =
        |args: &[&str]| crate::util::stdout(&crate::util::rollcall_ok(&db, args)).trim().to_owned();
    let refused = crate::util::rollcall(
        &db,
        &["webhook", "create", "--tenant", "acme", "--url", &receiver.url],
    );
    assert!(!refused.status.success(), "a loopback URL needs --allow-private-targets");
    assert!(crate::util::stderr(&refused).contains("not a public address"));
    let secret = cli(&[
        "webhook",
        "create",
        "--tenant",
        "acme",
        "--url",
        &receiver.url,
        "--type",
        "member.joined",
        "--allow-private-targets",
    ]);
    let id = admin.get("/webhooks").await["webhooks"][0]["id"].as_str().unwrap().to_owned();
    cli(&["webhook", "pause", &id, "--tenant", "acme"]);
    assert_eq!(admin.get(&format!("/webhooks/{id}")).await["status"], "paused");
    push_users(&server, &scim, &["ann@example.com"]).await;
    admin.sync().await;
    cli(&["webhook", "resume", &id, "--tenant", "acme"]);
    let first = receiver.wait_for(1, Duration::from_secs(20)).await;
    verify(&secret, &first[0]).unwrap();

    let rotated = cli(&["webhook", "rotate", &id, "--tenant", "acme", "--overlap-hours", "0"]);
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    let start =
        projections::feed::Cursor::START.encode(&crate::scim::tenant_id(&server, "acme").await);
    cli(&["webhook", "redeliver", &id, "--tenant", "acme", "--from-cursor", &start]);
    let again = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(again[1].json()["id"], first[0].json()["id"], "the same event again");
    verify(&rotated, &again[1]).unwrap();
    assert!(verify(&secret, &again[1]).is_err(), "no overlap: the old secret is gone");
    let shown: Value =
        serde_json::from_str(&cli(&["webhook", "show", &id, "--tenant", "acme"])).unwrap();
    assert_eq!(shown["recent_deliveries"].as_array().unwrap().len(), 2, "{shown}");
    cli(&["webhook", "delete", &id, "--tenant", "acme"]);
    assert_eq!(admin.get("/webhooks").await["webhooks"], json!([]));
}

/// Two nodes on one PostgreSQL database, both serving SCIM and both
/// running a webhook supervisor: each event reaches the endpoint once and
/// in order (one node holds the endpoint's lock), and when the node that
/// delivers is killed with SIGKILL mid-delivery, the other takes the
/// endpoint over from the delivery state: nothing lost, nothing out of
/// order, at most the one message in flight sent again.
#[test]
fn two_nodes_deliver_each_endpoint_once_and_hand_over_on_kill_9() {
    let Some(url) = crate::util::postgres_database() else { return };
    let db = std::path::PathBuf::from(&url);
    let cli =
        |args: &[&str]| crate::util::stdout(&crate::util::rollcall_ok(&db, args)).trim().to_owned();
    let KillSetup { scim, app, runtime, receiver, secret } = kill_setup(&db);
    // The first node takes the endpoint's lock as it starts (the endpoint
    // is there already); the second starts after it, so it waits.
    let first = start_served(&db);
    let client = {
        rollcall::webhooks::deliver::install_tls_provider();
        reqwest::Client::new()
    };
    let pool = events::postgres::PgPool::new(&url, 1).unwrap();
    let started = Instant::now();
    while pool
        .get()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
        == 0
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the first node took no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut nodes = [first, start_served(&db)];
    runtime.block_on(create_thirty(&client, &[&nodes[0], &nodes[1]], &scim));
    cli(&["sync", "--tenant", "acme"]);
    runtime.block_on(receiver.wait_for(5, Duration::from_secs(30)));
    // The deliverer dies mid-delivery; its session, and the lock, with it.
    let at_kill = receiver.delivered().len();
    assert!(at_kill < 31, "the kill landed mid-delivery ({at_kill} of 31)");
    nodes[0].child.kill().unwrap();
    nodes[0].child.wait().unwrap();
    every_event_once_in_order(&runtime, &receiver, &nodes[1], &app, &secret);
}

/// The 31 events of the feed (30 creates, one Synchronize's joins) have
/// all reached `receiver`, signed, in the feed's order, and at most one
/// (the one in flight at a kill) twice.
fn every_event_once_in_order(
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    served: &crate::util::ServedBinary,
    app: &str,
    secret: &str,
) {
    let delivered = runtime.block_on(receiver.wait_for_distinct(31, Duration::from_secs(60)));
    let feed: Value = runtime.block_on(async {
        reqwest::Client::new()
            .get(served.url("/api/v1/events?limit=1000"))
            .bearer_auth(app)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let expected: Vec<&Value> =
        feed["events"].as_array().unwrap().iter().map(|event| &event["id"]).collect();
    assert_eq!(expected.len(), 31);
    let mut first_seen: Vec<Value> = Vec::new();
    for received in &delivered {
        verify(secret, received).unwrap();
        let id = received.json()["id"].clone();
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    assert_eq!(first_seen.iter().collect::<Vec<_>>(), expected, "every event, in order");
    let repeats = delivered.len() - first_seen.len();
    assert!(repeats <= 1, "{repeats} sent again; at most the one in flight");
}
