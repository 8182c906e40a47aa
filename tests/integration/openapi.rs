//! The OpenAPI document of /api/v1: served by the server, printed by the
//! CLI and committed as docs/openapi.json, all three the same; and every
//! operation it names is a route the server really answers.
//!
//! The contract itself (every operation, generated valid and invalid
//! inputs, every answer against the document) is checked by schemathesis
//! in `scripts/api-check.sh`, which CI runs against a release server.

use events::event::TokenScope;
use serde_json::Value;

use crate::util::{TestServer, rollcall_ok};

const REGENERATE: &str = "regenerate it: cargo run -- openapi > docs/openapi.json";

fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[tokio::test]
async fn the_served_document_is_the_committed_one_and_the_cli_prints_it() {
    let server = TestServer::start().await;
    // Public: a client generator fetches it before it has a token.
    let response = server.client.get(server.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().await.unwrap();
    assert!(
        served == committed(),
        "docs/openapi.json differs from the served document; {REGENERATE}"
    );
    let printed = rollcall_ok(&server.dir.path().join("cli.db"), &["openapi"]);
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), served);

    let document: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

/// Every documented operation is a route: without a token it is refused
/// (401, as documented), never "no such route" (404) or 405.
#[tokio::test]
async fn every_documented_operation_is_a_route() {
    let server = TestServer::start().await;
    let document: Value = serde_json::from_str(&committed()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        // Any value stands in for a path parameter: the token check comes
        // before the route looks it up.
        let concrete =
            path.replace("{member_id}", "m").replace("{run_id}", "r").replace("{id}", "w");
        let concrete = concrete.replace("{token_id}", "t").replace("{request_id}", "q");
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                server.client.request(method.clone(), server.url(&concrete)).send().await.unwrap();
            let public = operation["security"].as_array().is_some_and(|list| {
                list.iter().all(|requirement| requirement.as_object().unwrap().is_empty())
            });
            let expected = if public { 200 } else { 401 };
            assert_eq!(response.status(), expected, "{method} {concrete}");
            if !public {
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} does not document its 401"
                );
            }
        }
    }
    assert!(operations >= 37, "only {operations} operations documented");
}

/// An id that is not text (bad UTF-8 percent-encoded) is a JSON 404, like
/// any id that names nothing, not the router's plain-text 400.
#[tokio::test]
async fn an_id_that_is_not_text_is_a_json_404() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    for path in ["/api/v1/members/%FF", "/api/v1/webhooks/%C3%28", "/api/v1/tokens/%FF"] {
        let method =
            if path.contains("tokens") { reqwest::Method::DELETE } else { reqwest::Method::GET };
        let response = server
            .client
            .request(method, server.url(path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}: {body}");
    }
}

/// The event types the document names are the feed's catalogue: the
/// patterns of the `types` filter, of an event's `type` and of a webhook's
/// types are all made of `projections::feed::TYPES`.
#[tokio::test]
async fn the_document_names_exactly_the_catalogue_types() {
    let document: Value = serde_json::from_str(&committed()).unwrap();
    let one = format!(
        "^({})$",
        projections::feed::TYPES
            .iter()
            .map(|t| t.replace('.', "\\."))
            .collect::<Vec<_>>()
            .join("|")
    );
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["Event"]["properties"]["type"]["pattern"], one.as_str());
    assert_eq!(schemas["EventType"]["pattern"], one.as_str());
    let alternatives = one.trim_start_matches('^').trim_end_matches('$');
    let list = format!("^({alternatives}(,{alternatives})*)?$");
    for path in ["/api/v1/events", "/api/v1/events/stream"] {
        let parameters = document["paths"][path]["get"]["parameters"].as_array().unwrap();
        let types = parameters.iter().find(|parameter| parameter["name"] == "types").unwrap();
        assert_eq!(types["schema"]["pattern"], list.as_str(), "{path}");
    }
}

/// The application's token reaches what the document tags for it, and is
/// refused the rest: the scopes the tags name are the gates.
#[tokio::test]
async fn the_tags_name_the_scopes_that_reach_them() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, app) = server.token("acme", TokenScope::App).await;
    let (_, audit) = server.token("acme", TokenScope::Audit).await;
    let document: Value = serde_json::from_str(&committed()).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        let Some(operation) = item.get("get") else { continue };
        if path.contains('{') || path.ends_with("/stream") || path.ends_with("/openapi.json") {
            continue;
        }
        let tag = operation["tags"][0].as_str().unwrap();
        for (token, reaches) in [(&app, ["members", "events"]), (&audit, ["audit", "audit"])] {
            let status = server
                .client
                .get(server.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if reaches.contains(&tag) {
                assert_ne!(status, 401, "GET {path} ({tag})");
            } else {
                assert_eq!(status, 401, "GET {path} ({tag})");
            }
        }
    }
}
