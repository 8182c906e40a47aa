//! The HTTP ceiling of this machine for the SCIM benchmarks: the same
//! axum and tokio stack rollcall serves with, answering every SCIM request
//! the load generator sends with a fixed body of the size rollcall answers,
//! and doing nothing else (no token check, no SQLite, no JSON parsing).
//!
//! `scripts/bench-ceiling.sh` runs `../shared/load/scim_wrk.lua` against it
//! and against rollcall, so BENCHMARKS.md can say how much of a request's
//! CPU the HTTP stack and the loopback TCP take before rollcall's own work.
//!
//!     cargo run --release --example ceiling -- 127.0.0.1:18390

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, patch};

/// A user as rollcall renders it (same fields, same lengths), so the bytes
/// on the wire match a real answer.
const USER: &str = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"01KAQ3Z9V0J3Q9T6W5X1Y2Z3A4","userName":"user1@example.com","externalId":"ext1","name":{"givenName":"G","familyName":"F"},"emails":[{"value":"user1@example.com","type":"work","primary":true}],"active":true,"groups":[],"meta":{"resourceType":"User","created":"2026-11-23T07:00:00.000Z","lastModified":"2026-11-23T07:00:00.000Z","version":"W/\"1\"","location":"http://127.0.0.1:18390/scim/v2/Users/01KAQ3Z9V0J3Q9T6W5X1Y2Z3A4"}}"#;

const LIST_HEAD: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":1,"itemsPerPage":1,"startIndex":1,"Resources":["#;

const SCIM_JSON: &str = "application/scim+json";

async fn list() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, SCIM_JSON)], format!("{LIST_HEAD}{USER}]}}"))
}

async fn created() -> impl IntoResponse {
    (StatusCode::CREATED, [(header::CONTENT_TYPE, SCIM_JSON)], USER)
}

async fn patched() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, SCIM_JSON)], USER)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18390".to_owned());
    let app = Router::new()
        .route("/scim/v2/Users", get(list).post(created))
        .route("/scim/v2/Users/{id}", patch(patched));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ceiling: answering canned SCIM bodies on http://{listen}/scim/v2");
    axum::serve(listener, app).await
}
