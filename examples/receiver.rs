//! The example application again, receiving the feed's events as webhooks
//! instead of tailing the feed: each request is verified with the Standard
//! Webhooks library before it is acted on, and a repeat (same
//! `webhook-id`, as after a retry) is acknowledged and skipped.
//!
//! ```sh
//! cargo run --example receiver -- --listen 127.0.0.1:9000 --secret "$WHSEC"
//! rollcall webhook create --tenant acme --url http://127.0.0.1:9000/hooks --allow-private-targets
//! # and the server started with --webhook-allow-private-targets (a local address)
//! ```

// serde_json's `value["key"]` answers Null for a missing key: it never
// panics, which is what the lint guards against.
#![allow(clippy::indexing_slicing)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use serde_json::Value;

#[path = "support/handle.rs"]
mod handle;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// The endpoint's secret, `whsec_...`, as `webhook create` printed it
    /// (repeatable: one receiver for several endpoints).
    #[arg(long, env = "ROLLCALL_WEBHOOK_SECRET", required = true)]
    secret: Vec<String>,
    /// Act without printing a line per event (benchmarks).
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone)]
struct Receiver {
    verifiers: Arc<Vec<standardwebhooks::Webhook>>,
    quiet: bool,
    /// Message ids already handled (a real application keeps them in its
    /// database, beside what the handler changed).
    seen: Arc<Mutex<HashSet<String>>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let http_headers: http::HeaderMap = headers.clone();
    if !receiver.verifiers.iter().any(|verifier| verifier.verify(&body, &http_headers).is_ok()) {
        eprintln!("receiver: refused a request no secret verifies");
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if !receiver.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
        return StatusCode::NO_CONTENT;
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    // One event, or a batch of them.
    let events = match parsed {
        Value::Array(events) => events,
        event => vec![event],
    };
    for event in &events {
        if let Some(line) = handle::handle(event)
            && !receiver.quiet
        {
            println!("{line}");
        }
    }
    StatusCode::NO_CONTENT
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let verifiers = args
        .secret
        .iter()
        .map(|secret| standardwebhooks::Webhook::new(secret))
        .collect::<Result<Vec<_>, _>>()?;
    let receiver =
        Receiver { verifiers: Arc::new(verifiers), quiet: args.quiet, seen: Arc::default() };
    let app = Router::new().fallback(post(receive)).with_state(receiver);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("receiver: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
