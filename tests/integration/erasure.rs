//! Erasure (issue 21): a person's keys destroyed, their values gone from
//! every file rollcall writes (the database, its WAL, exports, as-of
//! snapshots, the server's log), while every verification still passes
//! and the facts stay: refused while still provisioned or not yet left,
//! 404 for another tenant, finished after a crash between the event and
//! the keys, and a person from before sealing erased from the projections
//! with the log's clear values said, not rewritten.

use std::path::Path;

use serde_json::{Value, json};

use crate::util::{ServedBinary, rollcall, rollcall_ok, stderr, stdout};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Everything the test's person is called and says: none of it may be
/// readable anywhere after the erasure.
const PERSONAL: [&str; 6] = [
    "quillfeather.z@example.com",
    "ext-quill-9911",
    "Zebulon",
    "Quillfeather",
    "Keeper of Seals",
    "Warden of Quills",
];

struct Client {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Client {
    fn new(server: &ServedBinary, token: &str) -> Client {
        rollcall::webhooks::deliver::install_tls_provider();
        Client { base: server.url(""), http: reqwest::Client::new(), token: token.to_owned() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(method, path, body, &ulid::Ulid::generate().to_string()).await
    }

    /// [`Client::send`] with the request id given.
    async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        request_id: &str,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-request-id", request_id);
        if let Some(body) = body {
            request =
                request.header("content-type", "application/scim+json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }
}

fn token(db: &Path, tenant: &str, scope: &str) -> String {
    stdout(&rollcall_ok(db, &["token", "issue", "--tenant", tenant, "--scope", scope]))
        .trim()
        .to_owned()
}

fn person() -> Value {
    json!({
        "schemas": [USER], "userName": PERSONAL[0], "externalId": PERSONAL[1], "active": true,
        "name": {"givenName": PERSONAL[2], "familyName": PERSONAL[3]},
        "emails": [{"value": PERSONAL[0], "type": "work", "primary": true}],
        "title": PERSONAL[4]
    })
}

/// Every file under `dir` whose bytes (lz4 snapshots decompressed) name
/// one of `values`, with the value.
fn files_naming(dir: &Path, values: &[&str]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if path.to_string_lossy().ends_with(".lz4") && bytes.len() > 32 {
            bytes = lz4_flex::block::decompress_size_prepended(&bytes[32..]).unwrap_or_default();
        }
        for value in values {
            if bytes.windows(value.len()).any(|window| window == value.as_bytes()) {
                found.push((path.display().to_string(), (*value).to_owned()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_is_gone_from_every_file_and_every_verification_passes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("rollcall.db");
    rollcall_ok(&db, &["tenant", "create", "acme"]);
    rollcall_ok(&db, &["tenant", "create", "other"]);
    let scim_token = token(&db, "acme", "scim");
    let admin_token = token(&db, "acme", "admin");
    let other_admin = token(&db, "other", "admin");
    let server = ServedBinary::start(&db, &["--webhook-allow-private-targets".as_ref()]);
    let scim = Client::new(&server, &scim_token);
    let admin = Client::new(&server, &admin_token);
    let receiver = crate::webhooks::Receiver::start(Vec::new()).await;
    let (status, endpoint) = admin
        .send(reqwest::Method::POST, "/api/v1/webhooks", Some(json!({"url": receiver.url})))
        .await;
    assert_eq!(status, 201, "{endpoint}");

    // The person in every place: the document, a change, the member's
    // mapped and app-owned properties, a refused request naming them.
    let (status, created) = scim
        .send_as(reqwest::Method::POST, "/scim/v2/Users", Some(person()), "req-erasure-create")
        .await;
    assert_eq!(status, 201, "{created}");
    let user_id = created["id"].as_str().unwrap().to_owned();
    let change = json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "title", "value": PERSONAL[5]}]});
    let (status, _) =
        scim.send(reqwest::Method::PATCH, &format!("/scim/v2/Users/{user_id}"), Some(change)).await;
    assert_eq!(status, 200);
    let (status, _) = scim.send(reqwest::Method::POST, "/scim/v2/Users", Some(person())).await;
    assert_eq!(status, 409, "a second create of the same userName is refused");
    let (status, run) = admin.send(reqwest::Method::POST, "/api/v1/provisioning/sync", None).await;
    assert_eq!(status, 200, "{run}");
    let (_, members) = admin.send(reqwest::Method::GET, "/api/v1/members", None).await;
    let member_id = members["members"][0]["member_id"].as_str().unwrap().to_owned();
    assert_eq!(members["members"][0]["properties"]["given_name"], PERSONAL[2]);
    let (status, patched) = admin
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/members/{member_id}"),
            Some(json!({"app_properties": {"preferences": PERSONAL[3]}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let erase_path = format!("/api/v1/members/{member_id}/erase");

    // Refused while the IdP still provisions the user, then while the
    // member has not left yet.
    let (status, refused) = admin.send(reqwest::Method::POST, &erase_path, None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("still provisioned"), "{refused}");
    let (status, _) =
        scim.send(reqwest::Method::DELETE, &format!("/scim/v2/Users/{user_id}"), None).await;
    assert_eq!(status, 204);
    let (status, refused) = admin.send(reqwest::Method::POST, &erase_path, None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("Synchronize first"), "{refused}");
    admin.send(reqwest::Method::POST, "/api/v1/provisioning/sync", None).await;

    // Before: an export, a checkpoint, as-of snapshots that hold the rows.
    let export = dir.path().join("acme.ndjson");
    let export_text = export.to_str().unwrap();
    rollcall_ok(&db, &["export", "--tenant", "acme", "--output", export_text]);
    let checkpoint =
        stdout(&rollcall_ok(&db, &["audit", "checkpoint", "--tenant", "acme"])).trim().to_owned();
    let snapshots = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["audit", "as-of", "--tenant", "acme", "--at", "2999-01-01"])
        .env("ROLLCALL_DB", &db)
        .env("ROLLCALL_AS_OF_SNAPSHOT_EVERY", "2")
        .output()
        .unwrap();
    assert!(snapshots.status.success(), "{}", stderr(&snapshots));
    assert!(stdout(&snapshots).contains(PERSONAL[2]), "the as-of shows the person before");
    let cache = rollcall::store::snapshots::Snapshots::beside(&db, 2);
    assert!(!files_naming(cache.dir(), &PERSONAL).is_empty(), "the snapshots hold the person");

    assert!(!files_naming(&data, &PERSONAL).is_empty(), "the database names the person before");
    // Another tenant's admin cannot even see the member.
    let stranger = Client::new(&server, &other_admin);
    let (status, _) = stranger.send(reqwest::Method::POST, &erase_path, None).await;
    assert_eq!(status, 404);
    let (status, bad) =
        admin.send(reqwest::Method::POST, &erase_path, Some(json!({"why": "typo"}))).await;
    assert_eq!(status, 400, "{bad}");

    let (status, erased) = admin
        .send(reqwest::Method::POST, &erase_path, Some(json!({"reason": "GDPR request 42"})))
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["keys_destroyed"], 1, "{erased}");
    assert_eq!(erased["in_clear"], false);
    assert_eq!(erased["user_id"], user_id.as_str());
    let (status, again) = admin.send(reqwest::Method::POST, &erase_path, None).await;
    assert_eq!(status, 409, "{again}");

    // The member keeps its facts; its values and its feed events are gone.
    let (_, member) =
        admin.send(reqwest::Method::GET, &format!("/api/v1/members/{member_id}"), None).await;
    assert_eq!(member["user_name"], "[erased]", "{member}");
    assert_eq!(member["properties"], json!({}));
    assert_eq!(member["app_properties"], json!({}));
    assert!(member["erased_at"].is_string());
    assert_eq!(member["status"], "left");
    let (_, feed) = admin.send(reqwest::Method::GET, "/api/v1/events?limit=100", None).await;
    let feed_text = feed.to_string();
    let types: Vec<&str> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .filter(|kind| kind.starts_with("member."))
        .collect();
    assert_eq!(types, ["member.joined", "member.left", "member.erased"], "{feed}");
    for value in PERSONAL {
        assert!(!feed_text.contains(value), "the feed names {value}: {feed_text}");
    }
    let joined = &feed["events"][0]["data"];
    assert_eq!(joined["member"]["erased"], true, "{joined}");
    assert_eq!(joined["member"]["member_id"], member_id.as_str());

    // The webhook delivers member.erased, naming nobody.
    let started = std::time::Instant::now();
    let erased_delivery = loop {
        let found = receiver
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|received| String::from_utf8_lossy(&received.body).into_owned())
            .find(|body| body.contains("member.erased"));
        if let Some(body) = found {
            break body;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no member.erased");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for value in PERSONAL {
        assert!(!erased_delivery.contains(value), "the delivery names {value}");
    }

    // Stop the server: nothing it wrote names the person.
    let log = server.log.lock().unwrap().join("\n");
    drop(server);
    for value in PERSONAL {
        assert!(!log.contains(value), "the server log names {value}");
    }
    let named = files_naming(&data, &PERSONAL);
    assert!(named.is_empty(), "files still name the person: {named:?}");
    let named = files_naming(dir.path(), &PERSONAL);
    assert!(named.is_empty(), "the export names the person: {named:?}");

    // Every verification passes, and the reports say "[erased]".
    rollcall_ok(&db, &["verify"]);
    rollcall_ok(&db, &["verify", "--tenant", "acme", "--since", &checkpoint]);
    rollcall_ok(&db, &["verify", "--file", export_text]);
    rollcall_ok(&db, &["verify", "--projections"]);
    rollcall_ok(&db, &["rebuild"]);
    rollcall_ok(&db, &["verify", "--projections"]);
    let history = stdout(&rollcall_ok(
        &db,
        &["audit", "history", "--tenant", "acme", "--member", &member_id, "--json"],
    ));
    assert!(history.contains("[erased]"), "{history}");
    assert!(history.contains("SubjectErased"), "{history}");
    assert!(history.contains("GDPR request 42"), "{history}");
    let leavers = stdout(&rollcall_ok(
        &db,
        &[
            "audit",
            "joiners-leavers",
            "--tenant",
            "acme",
            "--from",
            "2000-01-01",
            "--to",
            "2999-01-01",
        ],
    ));
    assert!(leavers.contains("[erased]") && leavers.contains(&member_id), "{leavers}");
    let as_of =
        stdout(&rollcall_ok(&db, &["audit", "as-of", "--tenant", "acme", "--at", "2999-01-01"]));
    let ledger =
        stdout(&rollcall_ok(&db, &["audit", "request", "req-erasure-create", "--tenant", "acme"]));
    assert!(ledger.contains("UserCreated") && ledger.contains("[erased]"), "{ledger}");
    for text in [history.as_str(), leavers.as_str(), as_of.as_str(), ledger.as_str()] {
        for value in PERSONAL {
            assert!(!text.contains(value), "a report names {value}: {text}");
        }
    }
    let named = files_naming(&data, &PERSONAL);
    assert!(named.is_empty(), "after the rebuild, files name the person: {named:?}");

    // The same person provisioned again is a new subject: a new member,
    // nothing of the old one comes back.
    let server = ServedBinary::start(&db, &[]);
    let scim = Client::new(&server, &scim_token);
    let admin = Client::new(&server, &admin_token);
    let (status, again) = scim.send(reqwest::Method::POST, "/scim/v2/Users", Some(person())).await;
    assert_eq!(status, 201, "{again}");
    admin.send(reqwest::Method::POST, "/api/v1/provisioning/sync", None).await;
    let (_, members) =
        admin.send(reqwest::Method::GET, "/api/v1/members?status=active", None).await;
    let fresh = &members["members"][0];
    assert_ne!(fresh["member_id"], member_id.as_str(), "{members}");
    assert_eq!(fresh["user_name"], PERSONAL[0]);
    assert_eq!(fresh["app_properties"], json!({}), "the old person's values stay gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_between_its_event_and_its_keys_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rollcall.db");
    rollcall_ok(&db, &["tenant", "create", "acme"]);
    let scim_token = token(&db, "acme", "scim");
    let admin_token = token(&db, "acme", "admin");
    {
        let server = ServedBinary::start(&db, &[]);
        let scim = Client::new(&server, &scim_token);
        let admin = Client::new(&server, &admin_token);
        let (_, created) = scim.send(reqwest::Method::POST, "/scim/v2/Users", Some(person())).await;
        let user_id = created["id"].as_str().unwrap().to_owned();
        admin.send(reqwest::Method::POST, "/api/v1/provisioning/sync", None).await;
        scim.send(reqwest::Method::DELETE, &format!("/scim/v2/Users/{user_id}"), None).await;
        admin.send(reqwest::Method::POST, "/api/v1/provisioning/sync", None).await;
    }
    // A userName is enough for the CLI; the process dies right after the
    // event is durable, before the keys, as a kill -9 there would.
    let killed = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["erase", "--tenant", "acme", "--user", PERSONAL[0]])
        .env("ROLLCALL_DB", &db)
        .env("ROLLCALL_FAILPOINT", "erase-after-event")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the failpoint stops the process");
    let keys_path = rollcall::store::keys::KeyStore::path_for(&db);
    let erased_key = || -> (i64, bool) {
        let connection = rusqlite::Connection::open(&db).unwrap();
        let keys: String =
            connection.query_row("SELECT keys FROM erasures", [], |row| row.get(0)).unwrap();
        let id: Vec<i64> = serde_json::from_str(&keys).unwrap();
        let store = rusqlite::Connection::open(&keys_path).unwrap();
        let live: bool = store
            .query_row("SELECT key IS NOT NULL FROM data_keys WHERE key_id = ?1", [id[0]], |row| {
                row.get(0)
            })
            .unwrap();
        (id[0], live)
    };
    assert!(erased_key().1, "the event is recorded and the key not destroyed yet");

    // A reader honours the erasure already (it may not destroy keys).
    let member_id: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT member_id FROM erasures", [], |row| row.get(0))
        .unwrap();
    let history = || {
        stdout(&rollcall_ok(
            &db,
            &["audit", "history", "--tenant", "acme", "--member", &member_id, "--json"],
        ))
    };
    let read = history();
    assert!(read.contains("[erased]"), "{read}");
    for value in PERSONAL {
        assert!(!read.contains(value), "{value}: {read}");
    }
    assert!(erased_key().1, "a reader leaves the key store alone");
    // The next writable open finishes it, before it decides anything.
    let again = rollcall(&db, &["erase", "--tenant", "acme", "--user", &member_id]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("erased already"), "{}", stderr(&again));
    assert!(!erased_key().1, "the next open destroyed the key");
    let read = history();
    for value in PERSONAL {
        assert!(!read.contains(value), "{value}: {read}");
    }
    rollcall_ok(&db, &["verify", "--projections"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_recorded_before_sealing_is_erased_from_the_projections_and_the_log_says_so() {
    if crate::util::sqlite_only("writes clear events of before sealing into the SQLite file") {
        return;
    }
    use events::event::{Event, UserCreated};
    use events::{Actor, CommandContext, ExpectedVersion};

    let server = crate::util::TestServer::start().await;
    server.tenant("acme").await;
    let tenant = crate::scim::tenant_id(&server, "acme").await;
    let admin = crate::synchronize::Admin::new(&server, "acme").await;
    let idp = crate::audit::Idp::new(&server, "acme").await;
    // A user as a build before sealing recorded it: version 1, in clear.
    let user_id = ulid::Ulid::generate().to_string();
    let mut document = person().as_object().unwrap().clone();
    document.remove("schemas");
    document.insert("id".to_owned(), json!(user_id));
    let event = Event::UserCreated(UserCreated { user_id: user_id.clone(), document, key: None });
    let (written, stream) = (tenant.clone(), format!("user:{user_id}"));
    server
        .store
        .command(None, move |tx| {
            let context = CommandContext::new(Actor::Cli { user: None });
            let recorded = tx.append(
                &written,
                &stream,
                ExpectedVersion::NoStream,
                &[event.encode()],
                &context,
            )?;
            projections::apply(tx.db(), &recorded[0], &event)?;
            Ok::<_, rollcall::error::Error>(())
        })
        .await
        .unwrap();
    admin.sync().await;
    idp.send(reqwest::Method::DELETE, &format!("/Users/{user_id}"), None).await;
    admin.sync().await;
    let member_id = admin.members().await[PERSONAL[0]]["member_id"].as_str().unwrap().to_owned();

    let (status, erased) =
        admin.send(reqwest::Method::POST, &format!("/members/{member_id}/erase"), None).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["in_clear"], true, "{erased}");
    assert_eq!(erased["keys_destroyed"], 0);
    assert!(erased["message"].as_str().unwrap().contains("in clear"), "{erased}");
    let member = admin.get(&format!("/members/{member_id}")).await;
    assert_eq!(member["user_name"], "[erased]", "{member}");
    // The stored payloads are never rewritten: the log still holds them.
    let connection = rusqlite::Connection::open(server.db_path()).unwrap();
    let payload: String = connection
        .query_row(
            "SELECT payload FROM events WHERE event_type = 'UserCreated' AND schema_version = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(payload.contains(PERSONAL[2]), "{payload}");
    let db = server.db_path();
    rollcall_ok(&db, &["verify", "--projections"]);
}
