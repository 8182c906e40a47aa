//! Personal values sealed in the log (issue 21): a user's document, its
//! changes, the member's name and properties and the request bodies are
//! stored sealed under the user's data key in `<db>.keys`; every reader
//! that shows them (history, the request ledger, a rebuild) opens them,
//! the chain and exports verify over the sealed bytes, and a sealed value
//! moved to another event does not open.

use events::seal::SealError;
use serde_json::{Value, json};

use crate::audit::Idp;
use crate::synchronize::Admin;
use crate::util::{TestServer, rollcall, rollcall_ok, stderr, stdout};

/// What the test's user is called and says, none of which may be in the
/// log in clear.
const PERSONAL: [&str; 4] = ["zebedee", "Zebedee", "ext-zeb-4711", "Keeper of Seals"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_values_are_sealed_in_the_log_and_read_back_opened() {
    if crate::util::sqlite_only("reads the SQLite file's bytes") {
        return;
    }
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let idp = Idp::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let id = idp.user("zebedee@example.com", "ext-zeb-4711").await;
    idp.patch(&id, json!([{"op": "replace", "path": "title", "value": "Keeper of Seals"}])).await;
    admin.sync().await;
    let member = admin.get("/members").await;
    assert_eq!(member["members"][0]["user_name"], "zebedee@example.com", "{member}");
    let db = server.db_path();

    // No byte of the events table names the person.
    let rows: Vec<(String, u32, String, String)> = {
        let connection = rusqlite::Connection::open(&db).unwrap();
        let mut statement = connection
            .prepare("SELECT event_type, schema_version, payload, metadata FROM events")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for (event_type, _, payload, metadata) in &rows {
        for value in PERSONAL {
            assert!(!payload.contains(value), "{event_type} payload names {value}: {payload}");
            assert!(!metadata.contains(value), "{event_type} metadata names {value}: {metadata}");
        }
    }
    for sealed in ["UserCreated", "UserUpdated", "MemberJoined"] {
        assert!(
            rows.iter().any(|(event_type, version, payload, _)| event_type == sealed
                && *version == 2
                && payload.contains("\"sealed\"")),
            "{sealed} is stored sealed"
        );
    }
    assert!(rollcall::store::keys::KeyStore::path_for(&db).is_file());

    // Readers open them: the history shows the changed title and the
    // request as the IdP sent it.
    let history = rollcall_ok(
        &db,
        &["audit", "history", "--tenant", "acme", "--user", "zebedee@example.com", "--json"],
    );
    let history: Value = serde_json::from_str(&stdout(&history)).unwrap();
    let text = history.to_string();
    assert!(text.contains("Keeper of Seals"), "{text}");
    assert!(text.contains("ext-zeb-4711"), "{text}");

    // The chain, an export of it and a refold all agree.
    rollcall_ok(&db, &["verify"]);
    rollcall_ok(&db, &["verify", "--projections"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson");
    let file_text = file.to_str().unwrap();
    rollcall_ok(&db, &["export", "--tenant", "acme", "--output", file_text]);
    let exported = std::fs::read_to_string(&file).unwrap();
    for value in PERSONAL {
        assert!(!exported.contains(value), "the export names {value}");
    }
    rollcall_ok(&db, &["verify", "--file", file_text]);

    // A sealed document copied into another event of the same user does
    // not open there.
    let tenant = crate::scim::tenant_id(&server, "acme").await;
    let stream = server.store.log().read_stream(&tenant, &format!("user:{id}")).unwrap();
    let created: Value = serde_json::from_str(&stream[0].payload).unwrap();
    let mut moved = stream[1].clone();
    let mut payload: Value = serde_json::from_str(&moved.payload).unwrap();
    payload["document"] = created["document"].clone();
    moved.payload = payload.to_string();
    assert!(stream[1].decode(server.store.keys()).is_ok());
    let refused = moved.decode(server.store.keys());
    assert!(
        matches!(refused, Err(events::DecodeError::Sealed { source: SealError::Tampered(_), .. })),
        "{refused:?}"
    );

    // Without its key store the log still verifies, but nothing personal
    // can be read, and the error says where the keys were looked for.
    let (stopped, dir) = server.stop_keeping_files().await;
    stopped.unwrap();
    let keys = rollcall::store::keys::KeyStore::path_for(&db);
    let files = |suffix: &str| {
        let mut name = keys.clone().into_os_string();
        name.push(suffix);
        (std::path::PathBuf::from(name), dir.path().join(format!("keys.aside{suffix}")))
    };
    for suffix in ["", "-wal", "-shm"] {
        let (file, aside) = files(suffix);
        if file.exists() {
            std::fs::rename(&file, &aside).unwrap();
        }
    }
    rollcall_ok(&db, &["verify"]);
    let blind = rollcall(
        &db,
        &["audit", "history", "--tenant", "acme", "--user", "zebedee@example.com", "--json"],
    );
    assert!(!blind.status.success());
    assert!(stderr(&blind).contains("key store"), "{}", stderr(&blind));
    for suffix in ["", "-wal", "-shm"] {
        let (file, aside) = files(suffix);
        let _ = std::fs::remove_file(&file);
        if aside.exists() {
            std::fs::rename(&aside, &file).unwrap();
        }
    }
    rollcall_ok(&db, &["verify", "--projections"]);
}
