//! Backup and restore: a backup taken while eight clients write holds every
//! write acknowledged before it started and verifies on its own; a restore
//! of it serves them; a restore under a running server is refused.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use events::event::TokenScope;
use serde_json::{Value, json};

use crate::util::{ServedBinary, TestServer, rollcall, rollcall_ok, stderr, stdout};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_holds_every_acknowledged_write_and_restores() {
    if crate::util::sqlite_only(
        "backup copies the SQLite file; PostgreSQL is backed up with its own tools",
    ) {
        return;
    }
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, token) = server.token("acme", TokenScope::Scim).await;
    let db = server.db_path();

    // Eight clients create users for as long as the backup runs, noting
    // when each create was acknowledged.
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (client, url, token) =
            (server.client.clone(), server.url("/scim/v2/Users"), token.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{writer}-{n}@example.com");
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(json!({"schemas": [USER], "userName": name}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                acknowledged.lock().unwrap().push((name, Instant::now()));
                n += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("backup.db");
    let started = Instant::now();
    let backed_up = {
        let (db, copy) = (db.clone(), copy.clone());
        tokio::task::spawn_blocking(move || {
            rollcall_ok(&db, &["backup", "--to", copy.to_str().unwrap(), "--json"])
        })
        .await
        .unwrap()
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let report: Value = serde_json::from_str(&stdout(&backed_up)).unwrap();
    assert_eq!(report["integrity"], "ok");
    // The key store that opens the sealed personal values comes beside it.
    let copy_keys = rollcall::store::keys::KeyStore::path_for(&copy);
    assert_eq!(report["keys"], copy_keys.to_str().unwrap());
    let before: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(name, _)| name.clone())
        .collect();
    let all = acknowledged.lock().unwrap().len();
    assert!(before.len() >= 8, "writes before the backup: {}", before.len());
    assert!(all > before.len(), "writes went on during the backup");

    // The copy verifies offline, as a file of its own.
    let verified = rollcall_ok(&copy, &["verify"]);
    assert!(stderr(&verified).contains("ok") || stdout(&verified).contains("ok"));

    // A restore under a running server is refused; once stopped, it works
    // (here over another, newer database, which it keeps aside).
    server.stop().await.unwrap();
    let db = work.path().join("restored.db");
    let serving = ServedBinary::start(&db, &[]);
    let refused = rollcall(&db, &["restore", "--from", copy.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("a rollcall server has"), "{}", stderr(&refused));
    drop(serving);
    let restored = rollcall_ok(&db, &["restore", "--from", copy.to_str().unwrap()]);
    assert!(stderr(&restored).contains("replaced is kept as"), "{}", stderr(&restored));

    // The restored database serves every write acknowledged before the
    // backup began.
    let served = ServedBinary::start(&db, &[]);
    rollcall::webhooks::deliver::install_tls_provider();
    let client = reqwest::Client::new();
    let mut names = std::collections::HashSet::new();
    let mut start = 1;
    loop {
        let page: Value =
            client
                .get(served.url(&format!(
                    "/scim/v2/Users?count=1000&startIndex={start}&attributes=userName"
                )))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let resources = page["Resources"].as_array().cloned().unwrap_or_default();
        if resources.is_empty() {
            break;
        }
        start += resources.len();
        names.extend(resources.iter().map(|user| user["userName"].as_str().unwrap().to_owned()));
    }
    let missing: Vec<&String> = before.iter().filter(|name| !names.contains(*name)).collect();
    assert!(missing.is_empty(), "{} acknowledged writes missing: {missing:?}", missing.len());
    assert!(names.len() < all, "the backup is of one moment, not of the end");
    // The newer database's key store was set aside for the backup's: a
    // refold, which opens every sealed value, agrees with the projections.
    drop(served);
    rollcall_ok(&db, &["verify", "--projections"]);
    let aside = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter(|name| name.starts_with("restored.db.keys.replaced-"))
        .count();
    assert_eq!(aside, 1, "the other database's key store is kept aside");
}

/// `serve --backup-dir`: a checked backup at start (and every
/// --backup-every), the oldest beyond --backup-keep removed.
#[test]
fn the_server_backs_up_on_a_schedule_and_keeps_the_newest() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("rollcall.db");
    rollcall_ok(&db, &["tenant", "create", "acme"]);
    let dir = work.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    for old in ["20000101T000000.000Z", "20000102T000000.000Z", "20000103T000000.000Z"] {
        std::fs::write(dir.join(format!("rollcall-{old}.db")), "an old backup").unwrap();
    }
    let args = [
        std::ffi::OsStr::new("--backup-dir"),
        dir.as_os_str(),
        std::ffi::OsStr::new("--backup-keep"),
        std::ffi::OsStr::new("2"),
    ];
    let served = ServedBinary::start(&db, &args);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while served.logged("scheduled backup written and checked") == 0 {
        assert!(Instant::now() < deadline, "no scheduled backup: {:?}", served.log.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".db"))
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0], "rollcall-20000103T000000.000Z.db");
    let newest = dir.join(&kept[1]);
    let verified = rollcall_ok(&newest, &["verify"]);
    assert!(verified.status.success());
    // A second server on the same database is refused while this one runs.
    let second = rollcall(&db, &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!second.status.success());
    assert!(stderr(&second).contains("a rollcall server has"), "{}", stderr(&second));
}
