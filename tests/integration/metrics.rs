//! `serve --metrics-listen`: Prometheus text on a listener of its own,
//! parsed here line by line, its counters moving with requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::util::ServedBinary;

/// Parses the exposition: each sample's name with labels, and its value.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut found = HashMap::new();
    let mut families = std::collections::HashSet::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            assert!(families.insert(family.to_owned()), "a family appears twice: {line}");
        }
        if line.starts_with('#') {
            let known = ["# HELP ", "# TYPE ", "# UNIT ", "# EOF"];
            assert!(known.iter().any(|prefix| line.starts_with(prefix)), "{line}");
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "# EOF is the last line");
            }
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line}"));
        assert!(name.starts_with("rollcall_"), "{line}");
        found.insert(name.to_owned(), value);
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move_with_requests() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metrics.db");
    crate::util::rollcall_ok(&db, &["tenant", "create", "acme"]);
    let issued =
        crate::util::rollcall_ok(&db, &["token", "issue", "--tenant", "acme", "--scope", "admin"]);
    let admin = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let issued =
        crate::util::rollcall_ok(&db, &["token", "issue", "--tenant", "acme", "--scope", "scim"]);
    let scim = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    // An endpoint that fails every delivery: attempts fail and lag grows.
    let receiver = crate::webhooks::Receiver::start(Vec::new()).await;
    receiver.answer_from_now(crate::webhooks::Answer::Status(500));
    crate::util::rollcall_ok(
        &db,
        &[
            "webhook",
            "create",
            "--tenant",
            "acme",
            "--url",
            &receiver.url,
            "--allow-private-targets",
        ],
    );
    let args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--webhook-allow-private-targets",
        "--webhook-retry-schedule",
        "100ms",
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let server = ServedBinary::start(&db, &args);
    let deadline = Instant::now() + Duration::from_secs(10);
    let address = loop {
        let found = server.log.lock().unwrap().iter().find_map(|line| {
            line.strip_prefix("rollcall: metrics on http://").map(|rest| rest.to_owned())
        });
        if let Some(rest) = found {
            break rest.trim_end_matches("/metrics").to_owned();
        }
        assert!(Instant::now() < deadline, "no metrics line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    rollcall::webhooks::deliver::install_tls_provider();
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client.get(format!("http://{address}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        samples(&response.text().await.unwrap())
    };
    let before = scrape().await;
    for name in [
        "rollcall_log_head_position",
        "rollcall_database_bytes",
        "rollcall_wal_bytes",
        "rollcall_writable",
        "rollcall_writer_batches_total",
        "rollcall_writer_commands_total",
    ] {
        assert!(before.contains_key(name), "{name} missing: {before:?}");
    }
    assert_eq!(before["rollcall_writable"], 1.0);

    for _ in 0..3 {
        let status = client.get(server.url("/healthz")).send().await.unwrap().status();
        assert_eq!(status, 200);
    }
    let refused = client.get(server.url("/scim/v2/Users")).bearer_auth("nope").send().await;
    assert_eq!(refused.unwrap().status(), 401);
    // Two Synchronize runs (nothing pending: both complete at once).
    for _ in 0..2 {
        let run = client.post(server.url("/api/v1/provisioning/sync")).bearer_auth(&admin).send();
        assert_eq!(run.await.unwrap().status(), 200);
    }
    // The metrics are not on the served port.
    assert_eq!(client.get(server.url("/metrics")).send().await.unwrap().status(), 404);

    let after = scrape().await;
    let health = r#"rollcall_http_requests_total{family="health",method="GET",status="200"}"#;
    assert_eq!(after.get(health).copied().unwrap_or(0.0), 3.0, "{after:?}");
    let auth = r#"rollcall_auth_failures_total{family="scim"}"#;
    assert_eq!(after.get(auth).copied(), Some(1.0), "{after:?}");
    let scim_401 = r#"rollcall_http_requests_total{family="scim",method="GET",status="401"}"#;
    assert_eq!(after[scim_401], 1.0);
    let histogram = r#"rollcall_http_request_duration_seconds_count{family="health"}"#;
    assert_eq!(after[histogram], 3.0);
    assert_eq!(
        after.get(r#"rollcall_sync_runs_total{status="completed"}"#),
        Some(&2.0),
        "{after:?}"
    );
    assert!(after.contains_key(r#"rollcall_sync_run_seconds_total{status="completed"}"#));
    assert_eq!(after.get("rollcall_webhook_messages_delivered_total"), Some(&0.0));
    assert_eq!(after.get("rollcall_webhook_endpoints_failing"), Some(&0.0));
    assert_eq!(after.get("rollcall_sync_pending_changes"), Some(&0.0));
    assert_eq!(after.get("rollcall_writer_queue_commands"), Some(&0.0));

    // SCIM clients by kind, from their User-Agent; two users pending.
    for (n, agent) in [(1, Some("Okta SCIM Client 1.0.0")), (2, None)] {
        let mut request = client
            .post(server.url("/scim/v2/Users"))
            .bearer_auth(&scim)
            .header("content-type", "application/scim+json")
            .body(format!(
                r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u{n}@example.com"}}"#
            ));
        if let Some(agent) = agent {
            request = request.header("user-agent", agent);
        }
        assert_eq!(request.send().await.unwrap().status(), 201);
    }
    let lookup = client
        .get(server.url("/scim/v2/Users?filter=userName%20eq%20%22u1%40example.com%22"))
        .bearer_auth(&scim)
        .header("user-agent", "Microsoft.Identity.Provisioning");
    assert_eq!(lookup.send().await.unwrap().status(), 200);
    let pending = scrape().await;
    assert_eq!(pending[r#"rollcall_scim_requests_total{client="okta",status="201"}"#], 1.0);
    assert_eq!(pending[r#"rollcall_scim_requests_total{client="none",status="201"}"#], 1.0);
    assert_eq!(pending[r#"rollcall_scim_requests_total{client="none",status="401"}"#], 1.0);
    assert_eq!(pending[r#"rollcall_scim_requests_total{client="entra",status="200"}"#], 1.0);
    assert_eq!(pending.get("rollcall_sync_pending_changes"), Some(&2.0), "{pending:?}");
    assert_eq!(pending.get("rollcall_sync_tenants_pending"), Some(&1.0));
    // The writer's own measurements: every committed batch, in buckets.
    let batches = pending["rollcall_writer_batches_total"];
    assert!(batches >= 4.0, "{pending:?}");
    assert_eq!(pending["rollcall_writer_batch_commands_count"], batches);
    assert_eq!(pending[r#"rollcall_writer_batch_commands_bucket{le="+Inf"}"#], batches);
    assert!(pending["rollcall_writer_batch_commands_sum"] >= batches);
    assert_eq!(pending["rollcall_writer_commit_seconds_count"], batches);
    assert!(pending["rollcall_writer_commit_seconds_sum"] > 0.0);
    assert!(pending.contains_key(r#"rollcall_writer_fsync_seconds_bucket{le="0.0001"}"#));

    // The read cache: the same lookup again is answered from memory, the
    // token and the answer both. First the commits that follow the creates
    // (their request log rows, the token's "last used") land, since each
    // retires what was kept before it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..4 {
        let again = client
            .get(server.url("/scim/v2/Users?filter=userName%20eq%20%22u1%40example.com%22"))
            .bearer_auth(&scim);
        assert_eq!(again.send().await.unwrap().status(), 200);
    }
    let cached = scrape().await;
    let hit = r#"rollcall_read_cache_probes_total{result="hit"}"#;
    // Eight probes: the first request's two miss when those commits came
    // after the lookup above, the other six hit (tokens alone: three).
    assert!(cached[hit] >= pending[hit] + 6.0, "{} -> {}", pending[hit], cached[hit]);
    assert!(cached[r#"rollcall_read_cache_probes_total{result="miss"}"#] >= 1.0);
    assert!(cached["rollcall_read_cache_bytes"] > 0.0, "{cached:?}");
    assert_eq!(cached["rollcall_read_cache_bytes_max"], 64.0 * 1024.0 * 1024.0);

    // A Synchronize applies them; the two joins go to the failing endpoint.
    let run = client.post(server.url("/api/v1/provisioning/sync")).bearer_auth(&admin).send();
    assert_eq!(run.await.unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let failing = loop {
        let now = scrape().await;
        if now.get(r#"rollcall_webhook_attempts_total{result="failed"}"#).copied().unwrap_or(0.0)
            >= 2.0
        {
            break now;
        }
        assert!(Instant::now() < deadline, "no failed attempts: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failing.get("rollcall_sync_pending_changes"), Some(&0.0), "{failing:?}");
    assert_eq!(failing.get("rollcall_sync_tenants_pending"), Some(&0.0));
    assert_eq!(failing[r#"rollcall_webhook_attempts_total{result="ok"}"#], 0.0);
    assert_eq!(failing["rollcall_webhook_endpoints_failing"], 1.0);
    // Every event of the feed waits (each join is a few: joined, roles,
    // properties).
    let feed: serde_json::Value = client
        .get(server.url("/api/v1/events?limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = feed["events"].as_array().unwrap().len() as f64;
    assert!(events >= 2.0, "{feed}");
    assert_eq!(failing["rollcall_webhook_lag_events"], events, "{failing:?}");
    assert!(failing["rollcall_webhook_lag_seconds"] > 0.0, "{failing:?}");
    assert!(!receiver.received.lock().unwrap().is_empty());
}
