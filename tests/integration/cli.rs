//! The command line, run as the real binary: tenants, tokens, verify, and
//! the CLI working on the file of a running server.

use events::event::TokenScope;

use crate::util::{TestServer, rollcall, rollcall_ok, stderr, stdout};

#[test]
fn tenant_and_token_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");

    let created = rollcall(&db, &["tenant", "create", "acme"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let tenant_id = stdout(&created).trim().to_owned();
    assert_eq!(tenant_id.len(), 26, "the tenant id is a ULID: {tenant_id}");

    let duplicate = rollcall(&db, &["tenant", "create", "acme"]);
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(stderr(&duplicate).contains("already exists"), "{}", stderr(&duplicate));
    let bad_name = rollcall(&db, &["tenant", "create", "Not Valid"]);
    assert_eq!(bad_name.status.code(), Some(2));

    let listed = stdout(&rollcall(&db, &["tenant", "list"]));
    assert!(
        listed.starts_with("NAME") && listed.contains("acme") && listed.contains(&tenant_id),
        "{listed}"
    );

    let issued = rollcall(
        &db,
        &[
            "token",
            "issue",
            "--tenant",
            "acme",
            "--scope",
            "scim",
            "--expires",
            "90d",
            "--label",
            "Entra",
        ],
    );
    assert!(issued.status.success(), "{}", stderr(&issued));
    let out = stdout(&issued);
    let secret = out.strip_suffix('\n').unwrap();
    assert!(!secret.contains('\n'), "stdout is exactly one line: {out:?}");
    assert!(
        secret.starts_with("rc_") && secret.len() == 67,
        "stdout is exactly the secret: {out:?}"
    );
    assert!(!stderr(&issued).contains(secret), "the secret is not repeated on stderr");

    let list = rollcall(&db, &["token", "list", "--tenant", "acme", "--json"]);
    let tokens: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    assert_eq!(tokens[0]["scope"], "scim");
    assert_eq!(tokens[0]["label"], "Entra");
    assert_eq!(tokens[0]["status"], "active");
    assert!(!stdout(&list).contains(secret));
    let token_id = tokens[0]["token_id"].as_str().unwrap().to_owned();
    let table = stdout(&rollcall(&db, &["token", "list"]));
    assert!(
        table.contains(&token_id) && table.contains("never") && !table.contains(secret),
        "{table}"
    );

    let revoked = rollcall(&db, &["token", "revoke", &token_id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let list = rollcall(&db, &["token", "list", "--json"]);
    let tokens: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(tokens[0]["status"], "revoked");
    assert!(stderr(&rollcall(&db, &["token", "revoke", &token_id])).contains("already revoked"));
    assert_eq!(rollcall(&db, &["token", "revoke", "01NOSUCHTOKEN"]).status.code(), Some(2));

    let verified = rollcall(&db, &["verify"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("acme") && stderr(&verified).contains("3 events checked"),
        "{}",
        stdout(&verified)
    );
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    rollcall_ok(&db, &["tenant", "create", "acme"]);
    for (args, needle) in [
        (vec!["token", "issue", "--tenant", "acme", "--scope", "root"], "root"),
        (
            vec!["token", "issue", "--tenant", "acme", "--scope", "scim", "--expires", "soon"],
            "lifetime",
        ),
        (vec!["token", "issue", "--tenant", "nobody", "--scope", "scim"], "not found"),
        (vec!["verify", "--tenant", "nobody"], "not found"),
    ] {
        let output = rollcall(&db, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains(needle), "{args:?}: {}", stderr(&output));
        assert!(stdout(&output).is_empty(), "{args:?} printed to stdout");
    }
}

#[test]
fn verify_names_the_first_tampered_position() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    rollcall_ok(&db, &["tenant", "create", "acme"]);
    rollcall_ok(&db, &["token", "issue", "--tenant", "acme", "--scope", "scim"]);
    rollcall_ok(&db, &["token", "issue", "--tenant", "acme", "--scope", "admin"]);
    {
        let raw = rusqlite::Connection::open(&db).unwrap();
        raw.execute_batch("DROP TRIGGER events_refuse_update").unwrap();
        raw.execute(
            "UPDATE events SET payload = replace(payload, 'admin', 'scim') WHERE position = 3",
            [],
        )
        .unwrap();
    }
    let verified = rollcall(&db, &["verify"]);
    assert_eq!(verified.status.code(), Some(1));
    assert!(stderr(&verified).contains("FAILED at position 3"), "{}", stderr(&verified));
    let json = rollcall(&db, &["verify", "--tenant", "acme", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["failure"]["position"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_on_the_file_of_a_running_server() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let db = server.db_path();

    // A token issued by another process is accepted by the server at once.
    let issued = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            rollcall(&db, &["token", "issue", "--tenant", "acme", "--scope", "scim"])
        })
        .await
        .unwrap()
    };
    assert!(issued.status.success(), "{}", stderr(&issued));
    let secret = stdout(&issued).trim().to_owned();
    assert_eq!(server.get("/scim/v2/Users", Some(&secret)).await.status(), 200, "admitted");

    // ... and revoked by it, effective at the next request.
    let tokens = json_body_of(server.get("/api/v1/tokens", Some(&admin)).await).await;
    let token_id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scope"] == "scim")
        .unwrap()["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked =
        tokio::task::spawn_blocking(move || rollcall(&db, &["token", "revoke", &token_id]))
            .await
            .unwrap();
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(server.get("/scim/v2/Users", Some(&secret)).await.status(), 401);

    // Both writers' events make one gapless, verified chain.
    let report = server.store.log().verify(events::VerifyScope::All).unwrap();
    assert_eq!(report.failure, None);
    assert_eq!(report.events_checked, 4);
    server.stop().await.unwrap();
}

async fn json_body_of(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[test]
fn read_only_commands_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.db");
    for args in [vec!["verify"], vec!["token", "list"], vec!["tenant", "list"]] {
        let output = rollcall(&typo, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("does not exist"), "{args:?}: {}", stderr(&output));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}
