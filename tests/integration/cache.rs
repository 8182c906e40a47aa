//! The read cache against a real server: an answer it keeps is never
//! served after a commit, from this process or another, and it keeps to
//! its bound however many distinct lookups arrive.

use std::time::Duration;

use events::event::TokenScope;
use rollcall::state::ServerConfig;
use serde_json::json;

use crate::scim::Scim;
use crate::util::{TestServer, rollcall, stderr};

/// Waits until a quarter second passes with nothing committed.
async fn settle(server: &TestServer) {
    loop {
        let before = server.store.log().generation().unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        if server.store.log().generation().unwrap().unwrap() == before {
            return;
        }
    }
}

fn lookup_of(user_name: &str) -> String {
    format!("/Users?filter=userName%20eq%20%22{user_name}%22")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_answer_is_never_served_after_a_commit_from_this_process_or_another() {
    if crate::util::sqlite_only(
        "the read cache is off on PostgreSQL (no change generation to check)",
    ) {
        return;
    }
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let user = scim.create_user("ada").await;
    let id = user["id"].as_str().unwrap().to_owned();
    let lookup = lookup_of("ada");
    let by_id = format!("/Users/{id}");
    // The create's request log row and its token's "last used" are written
    // after its answer: let them land, so nothing else commits below.
    settle(&server).await;

    // The second of each read is answered from memory, and alike.
    let (hits_before, _) = server.cache.probes();
    let first = scim.get(&lookup).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["totalResults"], 1);
    assert_eq!(scim.get(&lookup).await.body, first.body);
    let first_by_id = scim.get(&by_id).await;
    let again_by_id = scim.get(&by_id).await;
    assert_eq!(again_by_id.body, first_by_id.body);
    assert_eq!(again_by_id.headers["etag"], first_by_id.headers["etag"]);
    assert_eq!(again_by_id.headers["content-type"], first_by_id.headers["content-type"]);
    let (hits, _) = server.cache.probes();
    // Two answers, and the token on the last three requests.
    assert!(hits >= hits_before + 5, "hits {hits_before} -> {hits}");

    // A write through this server is seen by the very next read.
    let patched = scim
        .patch(&by_id, json!([{"op": "replace", "path": "displayName", "value": "Ada L."}]))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(scim.get(&lookup).await.body["Resources"][0]["displayName"], "Ada L.");
    let now_by_id = scim.get(&by_id).await;
    assert_eq!(now_by_id.body["displayName"], "Ada L.");
    assert_ne!(now_by_id.headers["etag"], first_by_id.headers["etag"]);

    // A commit by another connection to the file (another process, say) is
    // seen by the very next read, however warm the cache was.
    assert_eq!(scim.get(&lookup).await.body["Resources"][0]["displayName"], "Ada L.");
    assert_eq!(scim.get(&by_id).await.body["displayName"], "Ada L.");
    let db = server.db_path();
    let changed = id.clone();
    tokio::task::spawn_blocking(move || {
        let connection = rusqlite::Connection::open(db).unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        let updated = connection
            .execute(
                "UPDATE scim_resources SET document = json_set(document, '$.displayName', 'Changed elsewhere') WHERE id = ?1",
                [&changed],
            )
            .unwrap();
        assert_eq!(updated, 1);
    })
    .await
    .unwrap();
    assert_eq!(scim.get(&lookup).await.body["Resources"][0]["displayName"], "Changed elsewhere");
    assert_eq!(scim.get(&by_id).await.body["displayName"], "Changed elsewhere");

    // A token revoked by the CLI, another process, is refused at the next
    // request, however often it was admitted from memory just before.
    let (token_id, secret) = server.token("acme", TokenScope::Scim).await;
    let other = Scim { server: &server, token: secret };
    for _ in 0..3 {
        assert_eq!(other.get(&lookup).await.status, 200);
    }
    let db = server.db_path();
    let revoked =
        tokio::task::spawn_blocking(move || rollcall(&db, &["token", "revoke", &token_id]))
            .await
            .unwrap();
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(other.get(&lookup).await.status, 401);
    assert_eq!(scim.get(&lookup).await.status, 200, "the other token is untouched");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_to_its_bound_under_many_distinct_lookups() {
    if crate::util::sqlite_only(
        "the read cache is off on PostgreSQL (no change generation to check)",
    ) {
        return;
    }
    let bound = 64 * 1024;
    let server =
        TestServer::start_with(ServerConfig { read_cache_bytes: bound, ..ServerConfig::default() })
            .await;
    let scim = Scim::new(&server, "acme").await;
    for n in 0..20 {
        scim.create_user(&format!("user-{n}")).await;
    }
    for round in 0..4 {
        for n in 0..20 {
            let found = scim.get(&lookup_of(&format!("user-{n}"))).await;
            assert_eq!(found.body["totalResults"], 1, "{}", found.body);
        }
        // Lookups of names nobody has: each a distinct answer to keep.
        for n in 0..150 {
            let none = scim.get(&lookup_of(&format!("nobody-{round}-{n}"))).await;
            assert_eq!(none.body["totalResults"], 0);
            assert!(
                server.cache.answer_bytes() <= bound,
                "{} > {bound}",
                server.cache.answer_bytes()
            );
        }
    }
    assert!(server.cache.answer_bytes() > bound / 4, "it keeps answers up to its bound");
    assert_eq!(server.cache.answer_bytes_max(), bound);
    // Whatever was evicted, every answer is still right.
    for n in 0..20 {
        assert_eq!(scim.get(&lookup_of(&format!("user-{n}"))).await.body["totalResults"], 1);
    }
    server.stop().await.unwrap();
}
