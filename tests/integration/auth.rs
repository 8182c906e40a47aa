//! Bearer tokens at the door: who gets in, who gets 401, and that a token
//! sees only its own tenant and its own scope's routes.

use events::event::{TokenIssued, TokenScope};
use events::{Actor, CommandContext, Event, ExpectedVersion};
use rollcall::store::record;

use crate::util::{TestServer, json_body};

const SCIM_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

async fn assert_scim_401(response: reqwest::Response) -> String {
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some("Bearer realm=\"rollcall\"")
    );
    let body = json_body(response, 401, "application/scim+json").await;
    assert_eq!(body["schemas"], serde_json::json!([SCIM_ERROR]));
    assert_eq!(body["status"], "401", "status is a string in RFC 7644 errors");
    body["detail"].as_str().unwrap().to_owned()
}

async fn assert_api_401(response: reqwest::Response) -> String {
    assert!(response.headers().contains_key("www-authenticate"));
    let body = json_body(response, 401, "application/json").await;
    assert_eq!(body["error"], "unauthorized");
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unknown_and_malformed_tokens_get_401_with_a_scim_error() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let detail = assert_scim_401(server.get("/scim/v2/Users", None).await).await;
    assert!(detail.contains("required"), "{detail}");
    let detail =
        assert_scim_401(server.get("/scim/v2/Users", Some("rc_not-a-real-token")).await).await;
    assert!(detail.contains("not valid"), "{detail}");
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "rc_abc"] {
        let response = server
            .client
            .get(server.url("/scim/v2/Users"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_scim_401(response).await;
    }
    assert_api_401(server.get("/api/v1/tokens", None).await).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_at_the_next_request() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (scim_id, scim) = server.token("acme", TokenScope::Scim).await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    assert_eq!(server.get("/scim/v2/Users", Some(&scim)).await.status(), 200, "admitted");

    let revoked = server
        .client
        .delete(server.url(&format!("/api/v1/tokens/{scim_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let detail = assert_scim_401(server.get("/scim/v2/Users", Some(&scim)).await).await;
    assert!(detail.contains("revoked"), "{detail}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_401() {
    let server = TestServer::start().await;
    let tenant = server.tenant("acme").await;
    let secret = "rc_expired-secret-for-this-test";
    let hash = events::hash::to_hex(&rollcall::tenancy::secret_hash(secret));
    server
        .store
        .command(None, move |tx| {
            let event = Event::TokenIssued(TokenIssued {
                token_id: "01EXPIREDTOKEN000000000000".to_owned(),
                scope: TokenScope::Scim,
                secret_sha256: hash,
                expires_at: Some("2020-01-01T00:00:00.000Z".to_owned()),
                label: None,
                client_id: None,
            });
            record(
                tx,
                &tenant.tenant_id,
                "token:01EXPIREDTOKEN000000000000",
                ExpectedVersion::NoStream,
                &[event],
                &CommandContext::new(Actor::System),
            )
        })
        .await
        .unwrap();
    let detail = assert_scim_401(server.get("/scim/v2/Users", Some(secret)).await).await;
    assert!(detail.contains("expired"), "{detail}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_opens_only_its_own_routes() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, scim) = server.token("acme", TokenScope::Scim).await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let (_, audit) = server.token("acme", TokenScope::Audit).await;

    // SCIM routes take only scim tokens.
    assert_eq!(server.get("/scim/v2/Users", Some(&scim)).await.status(), 200);
    assert_scim_401(server.get("/scim/v2/Users", Some(&admin)).await).await;
    assert_scim_401(server.get("/scim/v2/Users", Some(&audit)).await).await;

    // Admin routes take only admin tokens.
    assert_eq!(server.get("/api/v1/tokens", Some(&admin)).await.status(), 200);
    let message = assert_api_401(server.get("/api/v1/tokens", Some(&scim)).await).await;
    assert!(message.contains("scope"), "{message}");
    assert_api_401(server.get("/api/v1/tokens", Some(&audit)).await).await;

    // Audit routes take audit and admin tokens.
    assert_eq!(server.get("/api/v1/audit/verify", Some(&audit)).await.status(), 200);
    assert_eq!(server.get("/api/v1/audit/verify", Some(&admin)).await.status(), 200);
    assert_api_401(server.get("/api/v1/audit/verify", Some(&scim)).await).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sees_only_its_own_tenant() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    server.tenant("globex").await;
    let (_, acme_admin) = server.token("acme", TokenScope::Admin).await;
    let (globex_token_id, globex_scim) = server.token("globex", TokenScope::Scim).await;

    let body =
        json_body(server.get("/api/v1/tokens", Some(&acme_admin)).await, 200, "application/json")
            .await;
    assert_eq!(body["total"], 1, "acme sees only its own token: {body}");
    let tenant =
        json_body(server.get("/api/v1/tenant", Some(&acme_admin)).await, 200, "application/json")
            .await;
    assert_eq!(tenant["name"], "acme");

    // Another tenant's token id is 404, exactly like an unknown one.
    let response = server
        .client
        .delete(server.url(&format!("/api/v1/tokens/{globex_token_id}")))
        .bearer_auth(&acme_admin)
        .send()
        .await
        .unwrap();
    let body = json_body(response, 404, "application/json").await;
    assert_eq!(body["error"], "not_found");
    assert_eq!(
        server.get("/scim/v2/Users", Some(&globex_scim)).await.status(),
        200,
        "globex's token still works"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn using_a_token_records_when_it_was_last_used() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let unused = server.store.log().now_millis();
    let before =
        json_body(server.get("/api/v1/tokens", Some(&admin)).await, 200, "application/json").await;
    // The first use is being recorded while this request runs; ask again.
    let mut last_used = serde_json::Value::Null;
    for _ in 0..50 {
        let body =
            json_body(server.get("/api/v1/tokens", Some(&admin)).await, 200, "application/json")
                .await;
        last_used = body["tokens"][0]["last_used_at"].clone();
        if !last_used.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // When it was used: after the token existed, no later than now.
    let used = last_used.as_str().unwrap();
    let now = server.store.log().now_millis();
    assert!(unused.as_str() <= used && used <= now.as_str(), "{unused} <= {used} <= {now}");
    assert!(before.to_string().find("rc_").is_none(), "no secret is ever listed");
    server.stop().await.unwrap();
}
