//! What counting a request costs: `Metrics::request` (the request counter,
//! the latency histogram and the SCIM client counter) called a million
//! times with the labels of a real run, and one scrape rendered from an
//! empty database. The figures in BENCHMARKS.md ("The cost of
//! the metrics") come from it.
//!
//!     cargo run --release --example metrics_cost

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use events::sqlite::{Durability, LogOptions};
use rollcall::metrics::{Metrics, client_kind};
use rollcall::store::Store;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("metrics.db");
    let options = LogOptions { durability: Durability::Off, ..LogOptions::default() };
    let store = Arc::new(Store::open(&db, options)?);
    let deliveries = Arc::new(rollcall::webhooks::state::Deliveries::open(&db)?);
    let cache = std::sync::Arc::new(rollcall::cache::ReadCache::new(0));
    let metrics = Metrics::new(store, deliveries, cache, true);
    let calls = 1_000_000u32;
    let agents: [Option<&[u8]>; 3] =
        [Some(b"Okta SCIM Client 1.0.0"), Some(b"Microsoft.Identity.Provisioning"), None];
    let started = Instant::now();
    for (n, agent) in (0..calls).zip(agents.iter().copied().cycle()) {
        let client = client_kind(agent);
        let (path, method) = if n % 4 == 0 {
            ("/scim/v2/Users", Method::POST)
        } else {
            ("/scim/v2/Users", Method::GET)
        };
        metrics.request(path, &method, client, StatusCode::OK, Duration::from_micros(180));
    }
    let took = started.elapsed();
    println!(
        "Metrics::request with the client kind: {:.0} ns a request ({calls} calls in {:.3} s)",
        took.as_nanos() as f64 / f64::from(calls),
        took.as_secs_f64()
    );
    let started = Instant::now();
    let text = metrics.render()?;
    println!(
        "one scrape of an empty database: {:.2} ms, {} bytes",
        started.elapsed().as_secs_f64() * 1000.0,
        text.len()
    );
    Ok(())
}
