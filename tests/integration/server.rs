//! The server's own promises: health, request ids, body limits, error
//! shapes, the admin token API, and a graceful shutdown that drains the
//! writer.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use events::VerifyScope;
use events::event::TokenScope;
use rollcall::state::ServerConfig;

use crate::util::{TestServer, json_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_with_the_log_head() {
    let server = TestServer::start().await;
    let body = json_body(server.get("/healthz", None).await, 200, "application/json").await;
    assert_eq!(body, serde_json::json!({ "status": "ok", "writable": true, "head_position": 0 }));
    server.tenant("acme").await;
    server.token("acme", TokenScope::Scim).await;
    let body = json_body(server.get("/healthz", None).await, 200, "application/json").await;
    assert_eq!(body["head_position"], 2);

    // With the writer stopped, health says so with a 503.
    let store = server.store.clone();
    tokio::task::spawn_blocking(move || store.shutdown()).await.unwrap();
    let body = json_body(server.get("/healthz", None).await, 503, "application/json").await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["writable"], false);
    server.stop().await.unwrap();
}

/// `/livez` is the process alone; `/readyz` says whether to send traffic,
/// and why not: the writer stopped, or the disk is below the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_readyz_say_alive_ready_and_why_not() {
    let server = TestServer::start().await;
    let body = json_body(server.get("/livez", None).await, 200, "application/json").await;
    assert_eq!(body, serde_json::json!({ "status": "alive" }));
    let body = json_body(server.get("/readyz", None).await, 200, "application/json").await;
    assert_eq!(body["status"], "ready");
    // On PostgreSQL the database's disk is the server's to watch.
    assert_eq!(body["free_mib"].as_u64().is_some(), server.postgres.is_none(), "{body}");
    let store = server.store.clone();
    tokio::task::spawn_blocking(move || store.shutdown()).await.unwrap();
    let body = json_body(server.get("/readyz", None).await, 503, "application/json").await;
    assert_eq!(body["status"], "not_ready");
    assert!(body["reason"].as_str().unwrap().contains("writer has stopped"), "{body}");
    // Alive all the same: a restart is not what it needs.
    json_body(server.get("/livez", None).await, 200, "application/json").await;
    server.stop().await.unwrap();

    let full = ServerConfig { ready_min_free_bytes: u64::MAX, ..ServerConfig::default() };
    let server = TestServer::start_with(full).await;
    if server.postgres.is_some() {
        // No disk of its own to watch.
        json_body(server.get("/readyz", None).await, 200, "application/json").await;
        return server.stop().await.unwrap();
    }
    let body = json_body(server.get("/readyz", None).await, 503, "application/json").await;
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("below the floor") && reason.contains("--ready-min-free-mb"), "{body}");
    server.stop().await.unwrap();
}

/// Every answer carries an `X-Request-Id`, whatever the surface and
/// whatever the outcome: SCIM, the admin API, the console and its assets,
/// OAuth, refusals, unknown routes and oversized bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let config = rollcall::state::ServerConfig {
        body_limit_bytes: 1024,
        ..rollcall::state::ServerConfig::default()
    };
    let server = TestServer::start_with(config).await;
    server.tenant("acme").await;
    let (_, scim) = server.token("acme", TokenScope::Scim).await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let big = "x".repeat(4096);
    // Method, path, bearer secret, body, the status it is answered.
    type Case<'a> = (reqwest::Method, &'a str, Option<&'a str>, Option<String>, u16);
    let requests: Vec<Case<'_>> = vec![
        (reqwest::Method::GET, "/healthz", None, None, 200),
        (reqwest::Method::GET, "/scim/v2/Users", Some(&scim), None, 200),
        (reqwest::Method::GET, "/scim/v2/Users", None, None, 401),
        (reqwest::Method::GET, "/scim/v2/Users/nobody", Some(&scim), None, 404),
        (reqwest::Method::POST, "/scim/v2/Users", Some(&scim), Some("{".to_owned()), 400),
        (reqwest::Method::POST, "/scim/v2/Users", Some(&scim), Some(big), 413),
        (reqwest::Method::GET, "/scim/v2/ServiceProviderConfig", Some(&scim), None, 200),
        (reqwest::Method::GET, "/api/v1/tokens", Some(&admin), None, 200),
        (reqwest::Method::GET, "/api/v1/tokens", Some(&scim), None, 401),
        (reqwest::Method::GET, "/api/v1/audit/verify", Some(&scim), None, 401),
        (reqwest::Method::GET, "/admin/sign-in", None, None, 200),
        (reqwest::Method::GET, "/admin/provisioning", None, None, 303),
        (reqwest::Method::GET, "/admin/assets/console.css", None, None, 200),
        (reqwest::Method::POST, "/oauth/token", None, Some(String::new()), 400),
        (reqwest::Method::GET, "/nowhere", None, None, 404),
    ];
    let client = {
        rollcall::webhooks::deliver::install_tls_provider();
        reqwest::Client::builder()
    }
    .redirect(reqwest::redirect::Policy::none())
    .build()
    .unwrap();
    for (method, path, secret, body, expected) in requests {
        let mut request = client.request(method.clone(), server.url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            let kind = if path.starts_with("/oauth") {
                "application/x-www-form-urlencoded"
            } else {
                "application/scim+json"
            };
            request = request.header("content-type", kind).body(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        let id = response.headers().get("x-request-id").map(|id| id.to_str().unwrap().to_owned());
        assert_eq!(id.map(|id| id.len()), Some(26), "{method} {path}: a made ULID");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_honoured_or_made() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "idp-req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "idp-req-42");

    let made = server.get("/healthz", None).await;
    let made = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 26, "a ULID: {made}");

    let too_long = "x".repeat(129);
    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", &too_long)
        .send()
        .await
        .unwrap();
    let replaced = response.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(replaced, too_long);
    assert_eq!(replaced.len(), 26);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_write_nothing() {
    let config = ServerConfig { body_limit_bytes: 1024, ..ServerConfig::default() };
    let server = TestServer::start_with(config).await;
    server.tenant("acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let head = server.store.log().head().unwrap();

    // Declared too long: refused before a byte of the body is read.
    let big = format!(r#"{{"scope":"scim","label":"{}"}}"#, "x".repeat(4096));
    let response = server
        .client
        .post(server.url("/api/v1/tokens"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let body = json_body(response, 413, "application/json").await;
    assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");

    // Streamed without a length: cut off as it arrives.
    let chunks: Vec<Result<String, std::io::Error>> =
        big.as_bytes().chunks(512).map(|c| Ok(String::from_utf8(c.to_vec()).unwrap())).collect();
    let response = server
        .client
        .post(server.url("/api/v1/tokens"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_lite_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // On the SCIM surface the 413 is a SCIM error.
    let response = server
        .client
        .post(server.url("/scim/v2/Users"))
        .header("content-type", "application/scim+json")
        .body(big)
        .send()
        .await
        .unwrap();
    let body = json_body(response, 413, "application/scim+json").await;
    assert_eq!(body["status"], "413");
    assert_eq!(server.store.log().head().unwrap(), head, "nothing was written");
    server.stop().await.unwrap();
}

/// A stream over ready items, without pulling in a streams crate.
fn futures_lite_stream(
    items: Vec<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    struct Items(std::vec::IntoIter<Result<String, std::io::Error>>);
    impl futures_core::Stream for Items {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Items(items.into_iter())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_in_their_surface_format() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, scim) = server.token("acme", TokenScope::Scim).await;
    let body = json_body(server.get("/nope", None).await, 404, "application/json").await;
    assert_eq!(body["error"], "not_found");
    let body = json_body(
        server.get("/scim/v2/NoSuchThing", Some(&scim)).await,
        404,
        "application/scim+json",
    )
    .await;
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(body["status"], "404");
    assert!(body["detail"].as_str().unwrap().contains("/scim/v2/NoSuchThing"), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_issue_list_and_revoke_tokens_over_the_api() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let post = |body: serde_json::Value| {
        server.client.post(server.url("/api/v1/tokens")).bearer_auth(&admin).json(&body).send()
    };

    let response =
        post(serde_json::json!({"scope": "scim", "expires": "90d", "label": "Entra ID"}))
            .await
            .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store", "a secret must not be cached");
    let first_secret = json_body(response, 201, "application/json").await["secret"].clone();
    assert!(first_secret.is_string());
    let issued = json_body(
        post(serde_json::json!({"scope": "scim", "expires": "90d", "label": "Entra ID"}))
            .await
            .unwrap(),
        201,
        "application/json",
    )
    .await;
    let secret = issued["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rc_") && secret.len() == 67, "{secret}");
    assert_eq!(issued["scope"], "scim");
    assert_eq!(issued["label"], "Entra ID");
    assert_eq!(issued["status"], "active");
    assert!(issued["expires_at"].as_str().unwrap().ends_with('Z'));
    // The new secret opens the SCIM door at once.
    assert_eq!(server.get("/scim/v2/Users", Some(&secret)).await.status(), 200);

    let listed =
        json_body(server.get("/api/v1/tokens", Some(&admin)).await, 200, "application/json").await;
    assert_eq!(listed["total"], 3);
    assert!(!listed.to_string().contains(&secret), "the secret is shown once, never listed");

    for (body, needle) in [
        (serde_json::json!({"scope": "root"}), "scope"),
        (serde_json::json!({"scope": "scim", "expires": "forever"}), "lifetime"),
        (serde_json::json!({"scope": "scim", "colour": "red"}), "unknown field"),
        (serde_json::json!({"label": "no scope"}), "scope"),
    ] {
        let error = json_body(post(body.clone()).await.unwrap(), 400, "application/json").await;
        assert_eq!(error["error"], "invalid_request", "{body}");
        assert!(error["message"].as_str().unwrap().contains(needle), "{body}: {error}");
    }
    let form = server
        .client
        .post(server.url("/api/v1/tokens"))
        .bearer_auth(&admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("scope=scim")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(form, 415, "application/json").await["error"], "unsupported_media_type");
    let not_json = server
        .client
        .post(server.url("/api/v1/tokens"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(not_json, 400, "application/json").await["error"], "invalid_request");

    let token_id = issued["token_id"].as_str().unwrap();
    let delete = || {
        server
            .client
            .delete(server.url(&format!("/api/v1/tokens/{token_id}")))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), 204);
    assert_eq!(delete().await.unwrap().status(), 204, "revoking twice is harmless");
    let unknown = server
        .client
        .delete(server.url("/api/v1/tokens/01NOSUCHTOKEN"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let listed =
        json_body(server.get("/api/v1/tokens", Some(&admin)).await, 200, "application/json").await;
    let revoked =
        listed["tokens"].as_array().unwrap().iter().find(|t| t["token_id"] == token_id).unwrap();
    assert_eq!(revoked["status"], "revoked");

    // Every change above is an event in acme's chain, and it verifies.
    let report = server.store.log().verify(VerifyScope::All).unwrap();
    assert_eq!(report.failure, None);
    assert_eq!(
        report.events_checked, 5,
        "tenant, admin token, two API tokens, one revocation: {report:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reports_the_tenant_chain_head() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, audit) = server.token("acme", TokenScope::Audit).await;
    let body =
        json_body(server.get("/api/v1/audit/verify", Some(&audit)).await, 200, "application/json")
            .await;
    assert_eq!(body["ok"], true);
    assert_eq!(body["scope"], "acme");
    assert_eq!(body["events_checked"], 1, "only acme's chain: {body}");
    // SQLite numbers the whole log (the tenant's creation was 1); on
    // PostgreSQL each tenant counts its own.
    let position = if server.postgres.is_some() { 1 } else { 2 };
    assert_eq!(body["heads"][0]["position"], position);
    assert_eq!(body["heads"][0]["hash"].as_str().unwrap().len(), 64);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_writer() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let store = server.store.clone();
    let path = server.db_path();
    // Commands in flight when shutdown begins: one running on the writer,
    // twenty queued behind it.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let running = store.command(None, move |_| {
        let _ = held.recv();
        Ok(())
    });
    let context = || events::CommandContext::new(events::Actor::System);
    let queued: Vec<_> = (0..20)
        .map(|n| rollcall::tenancy::create_tenant(&store, &format!("queued-{n}"), context()))
        .collect();
    let stopping = tokio::spawn(server.stop_keeping_files());
    // Long enough for a shutdown that does not wait to have finished.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the writer's work");
    release.send(()).unwrap();
    let (stopped, _dir) = stopping.await.unwrap();
    stopped.unwrap();
    // Every queued command was answered before the server stopped (each
    // is ready at its first poll) ...
    async fn answered<F: std::future::Future>(pending: F) -> F::Output {
        tokio::time::timeout(Duration::ZERO, pending)
            .await
            .expect("answered before the stop returned")
    }
    answered(running).await.unwrap();
    for pending in queued {
        answered(pending).await.unwrap();
    }
    // ... and is in the file.
    let tenants = tokio::task::spawn_blocking(move || {
        let reopened = crate::util::open_store(&path);
        reopened.read(|connection| Ok(projections::tenancy::list_tenants(connection)?)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(tenants.len(), 21, "{tenants:?}");
    // The writer has stopped: a new command is refused, not lost.
    let refused = rollcall::tenancy::create_tenant(
        &store,
        "late",
        events::CommandContext::new(events::Actor::System),
    )
    .await;
    assert!(
        matches!(refused, Err(events::ExecuteError::Log(events::LogError::WriterStopped))),
        "{refused:?}"
    );
}

#[test]
fn the_binary_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("served.db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ROLLCALL_DB", &db)
        .env("ROLLCALL_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut address = None;
    let mut said = Vec::new();
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("rollcall: listening on http://") {
            address = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
        said.push(line);
    }
    let address = address.unwrap_or_else(|| panic!("no listening line in {said:?}"));
    assert!(
        said.iter().any(|line| line.contains("database") && line.contains("created")),
        "{said:?}"
    );
    assert!(db.exists(), "the database is created on first run");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        {
            rollcall::webhooks::deliver::install_tls_provider();
            reqwest::get(format!("http://{address}/healthz"))
        }
        .await
        .unwrap()
        .status()
    });
    assert_eq!(status, 200);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|line| line.contains("drained")), "{rest:?}");
}

/// Reads what the server sends on `stream` until it closes the connection
/// (or `limit` passes): the text, and how long it took.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (String, Duration) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => seen.extend_from_slice(&buffer[..read]),
            Err(_) => panic!("still open after {limit:?}: {}", String::from_utf8_lossy(&seen)),
        }
    }
    (String::from_utf8_lossy(&seen).into_owned(), started.elapsed())
}

/// Slow and greedy clients: a request head sent a byte at a time is cut
/// off at the header timeout, an idle keep-alive connection is closed, a
/// body that stops short is answered 408, a connection over the cap is
/// answered 503 at once; and through all of it, with 200 idle connections
/// open, another client's requests are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_greedy_clients_are_cut_off_and_others_served() {
    use tokio::io::AsyncWriteExt;
    let config = ServerConfig {
        connections: rollcall::http::ConnectionLimits {
            header_timeout: Duration::from_secs(1),
            max_connections: 210,
        },
        body_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(address.clone());

    // A head that trickles: cut off at about the header timeout.
    let mut slow = connect().await.unwrap();
    let trickling = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1".iter() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // Meanwhile others are answered at once, with 200 idle connections open.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(connect().await.unwrap());
    }
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(server.get("/healthz", None).await.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    }
    let mut slow = trickle.await.unwrap();
    let (said, _) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(!said.contains("200 OK"), "{said}");
    // All of it would take 4.4 s: the server closed it at about 1 s.
    let took = trickling.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The idle ones were closed too, at the same timeout.
    for stream in idle.iter_mut().take(5) {
        read_until_closed(stream, Duration::from_secs(5)).await;
    }
    drop(idle);

    // A keep-alive connection left idle after a request is closed.
    let mut kept = connect().await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (said, took) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(took >= Duration::from_millis(900), "closed before the timeout: {took:?}");

    // A body that stops after 11 of 1,000 bytes: 408, and the connection
    // closed; nothing written.
    let head = server.log_head();
    let mut short = connect().await.unwrap();
    short
        .write_all(
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"scope\": \"",
        )
        .await
        .unwrap();
    let (said, took) = read_until_closed(&mut short, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("request_timeout") && said.contains("--body-timeout-seconds"), "{said}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(server.log_head(), head);

    // Over the cap: 503 with Retry-After at once, then closed.
    let mut held = Vec::new();
    for _ in 0..210 {
        held.push(connect().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = connect().await.unwrap();
    let (said, took) = read_until_closed(&mut over, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.contains("Retry-After: 1"), "{said}");
    // The body is exactly as long as Content-Length says, and JSON.
    let (head, body) = said.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), length, "{said}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "overloaded");
    assert!(took < Duration::from_millis(500), "{took:?}");
    drop(held);
    server.stop().await.unwrap();
}

/// What hyper refuses by itself (a URI too long, header fields too large
/// or too many, a request that is not HTTP) is answered with the same
/// status and a body in the surface's shape, on a fresh connection and on
/// a kept one after a request that was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_read_get_a_body_in_their_surface() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let ask = |request: Vec<u8>| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            // The server may stop reading (and answer) before all is sent.
            let _ = stream.write_all(&request).await;
            let (text, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
            text
        }
    };
    let parse = |text: &str| -> (String, String, serde_json::Value) {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{text}"));
        let status = head.lines().next().unwrap().to_owned();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap_or_else(|| panic!("{head}"));
        assert_eq!(length.parse::<usize>().unwrap(), body.len(), "{text}");
        let content_type = head
            .lines()
            .find_map(|line| line.strip_prefix("content-type: "))
            .unwrap_or_else(|| panic!("{head}"))
            .to_owned();
        (status, content_type, serde_json::from_str(body).unwrap())
    };

    let long_filter = "a".repeat(70_000);
    let text =
        ask(format!("GET /scim/v2/Users?filter={long_filter} HTTP/1.1\r\nHost: x\r\n\r\n")
            .into_bytes())
        .await;
    let (status, content_type, body) = parse(&text);
    assert_eq!(status, "HTTP/1.1 414 URI Too Long");
    assert_eq!(content_type, "application/scim+json");
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(body["status"], "414");
    assert!(body["detail"].as_str().unwrap().contains(".search"), "{body}");

    let big_header = "b".repeat(500_000);
    let text =
        ask(format!("GET /api/v1/tenant HTTP/1.1\r\nHost: x\r\nX-Big: {big_header}\r\n\r\n")
            .into_bytes())
        .await;
    let (status, content_type, body) = parse(&text);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(content_type, "application/json");
    assert_eq!(body["error"], "header_fields_too_large");

    let many: String = (0..150).map(|n| format!("X-Field-{n}: {n}\r\n")).collect();
    let text =
        ask(format!("GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes()).await;
    let (status, content_type, body) = parse(&text);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(content_type, "application/scim+json");
    assert_eq!(body["status"], "431");

    let text = ask(b"NOT HTTP AT ALL\r\n\r\n".to_vec()).await;
    let (status, _, body) = parse(&text);
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(body["error"], "malformed_request");

    // On a kept connection: one request answered, then one too large.
    let mut kept = tokio::net::TcpStream::connect(address.clone()).await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("\r\n\r\n") {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        let read = kept.read(&mut buffer).await.unwrap();
        assert!(read > 0);
        first.extend_from_slice(&buffer[..read]);
    }
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200 OK"));
    let second = format!("GET /scim/v2/Groups?x={long_filter} HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = kept.write_all(second.as_bytes()).await;
    let (mut text, _) = read_until_closed(&mut kept, Duration::from_secs(10)).await;
    if let Some(at) = text.find("HTTP/1.1 414") {
        text = text.split_off(at);
    }
    let (status, content_type, body) = parse(&text);
    assert_eq!(status, "HTTP/1.1 414 URI Too Long");
    assert_eq!(content_type, "application/scim+json", "{text}");
    assert_eq!(body["status"], "414");

    // And the server goes on answering.
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
