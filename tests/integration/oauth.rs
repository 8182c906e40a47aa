//! The OAuth 2.0 client-credentials grant (RFC 6749 section 4.4): clients,
//! the token endpoint and its errors (section 5.2), and access tokens that
//! work on /scim/v2 like issued ones and expire on time.

use std::time::Duration;

use base64::Engine;
use events::{Actor, CommandContext};
use rollcall::state::ServerConfig;
use rollcall::tenancy::{self, TenantRef};
use serde_json::Value;

use crate::util::{Skew, TestServer, rollcall, stderr, stdout};

async fn register(server: &TestServer) -> (String, String) {
    server.tenant("acme").await;
    let (client, secret) = tenancy::register_client(
        &server.store,
        TenantRef::Name("acme".to_owned()),
        Some("Entra ID gallery".to_owned()),
        CommandContext::new(Actor::System),
    )
    .await
    .unwrap();
    (client.client_id, secret.expose().to_owned())
}

async fn token_request(
    server: &TestServer,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = server
        .client
        .post(server.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_a_scim_token_by_post_or_basic_authentication() {
    let server = TestServer::start().await;
    let (client_id, secret) = register(&server).await;
    assert!(client_id.starts_with("rcc_") && secret.starts_with("rcs_"), "{client_id} {secret}");
    let (status, headers, body) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        (body["token_type"].clone(), body["expires_in"].clone(), body["scope"].clone()),
        ("Bearer".into(), 3600.into(), "scim".into())
    );
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/scim/v2/Users", Some(&access)).await.status(), 200);
    assert_eq!(server.get("/api/v1/tokens", Some(&access)).await.status(), 401, "scim scope only");

    let (status, _, body) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("scope", "scim")],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.get("/scim/v2/Users", Some(body["access_token"].as_str().unwrap())).await.status(),
        200
    );

    // The log says which client each token went to.
    let tenant = server
        .store
        .read(|c| Ok(projections::tenancy::tenant_by_name(c, "acme")?))
        .unwrap()
        .unwrap();
    let tokens = server
        .store
        .read(|c| Ok(projections::tenancy::list_tokens(c, Some(&tenant.tenant_id))?))
        .unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .all(|token| token.label.as_deref() == Some(&format!("OAuth client {client_id}")))
    );
    server.stop().await.unwrap();
}

/// A token request and the refusal it must get: form, Basic credentials,
/// status, RFC 6749 error code.
type Case<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a str)>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_follow_rfc_6749() {
    let server = TestServer::start().await;
    let (client_id, secret) = register(&server).await;
    let head = server.store.log().head().unwrap();
    let junk = format!("{secret}&junk=1");
    let cases: Vec<Case<'_>> = vec![
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", "rcs_wrong"),
            ],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "rcc_unknown"),
                ("client_secret", &secret),
            ],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials")],
            Some((&client_id, "rcs_wrong")),
            401,
            "invalid_client",
        ),
        (vec![("grant_type", "client_credentials")], None, 401, "invalid_client"),
        (vec![("client_id", &client_id), ("client_secret", &secret)], None, 400, "invalid_request"),
        (
            vec![("grant_type", "password"), ("client_id", &client_id), ("client_secret", &secret)],
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            Some((&client_id, &secret)),
            400,
            "invalid_scope",
        ),
        // RFC 6749 3.2: a parameter given twice.
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
            None,
            400,
            "invalid_request",
        ),
        // Basic names one client, the body another.
        (
            vec![("grant_type", "client_credentials"), ("client_id", "rcc_other")],
            Some((&client_id, &secret)),
            400,
            "invalid_request",
        ),
        // Basic credentials are form-urlencoded: an unescaped "&" is not
        // the end of the secret.
        (
            vec![("grant_type", "client_credentials")],
            Some((&client_id, &junk)),
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials")],
            Some((&client_id, "%zz")),
            401,
            "invalid_client",
        ),
    ];
    let writes = server.writer_commands();
    for (form, basic, status, error) in cases {
        let (got, headers, body) = token_request(&server, &form, basic).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{form:?} {body}");
        if status == 401 {
            assert!(headers.contains_key("www-authenticate"));
        }
    }
    let json = server
        .client
        .post(server.url("/oauth/token"))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    assert_eq!(json.json::<Value>().await.unwrap()["error"], "invalid_request");
    assert_eq!(server.store.log().head().unwrap(), head, "refusals record nothing");
    // ... and wrong credentials never queue for the writer.
    let after = server.writer_commands();
    assert_eq!(after, writes, "refusals reach no writer command");
    // Percent-encoded Basic credentials are decoded.
    let escaped = client_id.replace('_', "%5F");
    let (status, _, body) =
        token_request(&server, &[("grant_type", "client_credentials")], Some((&escaped, &secret)))
            .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await.unwrap();
}

static EXPIRY_SKEW: Skew = Skew::new();

fn expiry_clock() -> jiff::Timestamp {
    EXPIRY_SKEW.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_expire_on_time_and_die_with_their_client() {
    let config =
        ServerConfig { oauth_token_lifetime: Duration::from_secs(600), ..ServerConfig::default() };
    let server = TestServer::start_with_clock(config, expiry_clock).await;
    let (client_id, secret) = register(&server).await;
    let grant = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let (_, _, body) = token_request(&server, &grant, None).await;
    assert_eq!(body["expires_in"], 600);
    let short = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/scim/v2/Users", Some(&short)).await.status(), 200);
    EXPIRY_SKEW.advance(Duration::from_secs(599));
    assert_eq!(server.get("/scim/v2/Users", Some(&short)).await.status(), 200, "a second left");
    EXPIRY_SKEW.advance(Duration::from_secs(1));
    assert_eq!(server.get("/scim/v2/Users", Some(&short)).await.status(), 401, "expired");

    let (_, _, body) = token_request(&server, &grant, None).await;
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    let revocations = |server: &TestServer| {
        server.events_after(0, None).iter().filter(|(kind, _)| kind == "TokenRevoked").count()
    };
    tenancy::revoke_client(&server.store, &client_id, CommandContext::new(Actor::System))
        .await
        .unwrap();
    // Only the live token is revoked; the expired one needs no event.
    assert_eq!(revocations(&server), 1);
    assert_eq!(
        server.get("/scim/v2/Users", Some(&fresh)).await.status(),
        401,
        "revoked with its client"
    );
    let (status, _, body) = token_request(&server, &grant, None).await;
    assert_eq!((status, body["error"].clone()), (401, "invalid_client".into()));
    server.stop().await.unwrap();
}

#[test]
fn the_cli_registers_lists_and_revokes_clients() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    assert!(rollcall(&db, &["tenant", "create", "acme"]).status.success());
    let created = rollcall(&db, &["client", "create", "--tenant", "acme", "--label", "Entra"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let out = stdout(&created);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let client_id = lines[0].strip_prefix("client_id=").unwrap();
    assert!(lines[1].strip_prefix("client_secret=").unwrap().starts_with("rcs_"));
    let listed = stdout(&rollcall(&db, &["client", "list"]));
    assert!(
        listed.contains(client_id) && listed.contains("active") && !listed.contains("rcs_"),
        "{listed}"
    );
    assert!(rollcall(&db, &["client", "revoke", client_id]).status.success());
    assert!(stdout(&rollcall(&db, &["client", "list", "--tenant", "acme"])).contains("revoked"));
    assert_eq!(rollcall(&db, &["client", "revoke", "rcc_nope"]).status.code(), Some(2));
}

static CAP_SKEW: Skew = Skew::new();

fn cap_clock() -> jiff::Timestamp {
    CAP_SKEW.now()
}

/// A client holds at most `CLIENT_LIVE_TOKENS_MAX` live access tokens: a
/// client (or a leaked secret) asking for one per request is refused with
/// 429 and when to ask again, and the log does not grow; once the earliest
/// expires, a grant works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_grow_the_log_one_grant_at_a_time() {
    let config =
        ServerConfig { oauth_token_lifetime: Duration::from_secs(600), ..ServerConfig::default() };
    let server = TestServer::start_with_clock(config, cap_clock).await;
    let (client_id, secret) = register(&server).await;
    let grant = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    for _ in 0..tenancy::CLIENT_LIVE_TOKENS_MAX {
        let (status, _, body) = token_request(&server, &grant, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let head = server.log_head();
    for _ in 0..20 {
        let (status, headers, body) = token_request(&server, &grant, None).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(body["error_description"].as_str().unwrap().contains("reuse"), "{body}");
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=601).contains(&retry), "{retry}");
    }
    assert_eq!(server.log_head(), head, "refused grants append nothing");
    CAP_SKEW.advance(Duration::from_secs(601));
    let (status, _, body) = token_request(&server, &grant, None).await;
    assert_eq!(status, 200, "the old tokens expired: {body}");
    server.stop().await.unwrap();
}
