//! An application that acts on rollcall's event feed: it welcomes members
//! who join, signs out those who are disabled, re-evaluates role changes,
//! and soft-deletes leavers (here it prints what it would do).
//!
//! ```sh
//! APP=$(rollcall token issue --tenant acme --scope app)
//! cargo run --example app -- --url http://127.0.0.1:8080 --token "$APP"
//! ```
//!
//! It tails `GET /api/v1/events` with a long poll from the cursor saved in
//! `--cursor-file`, and saves each event's cursor only after handling it:
//! killed at any moment, it resumes exactly where it stopped (an event is
//! handled at least once; a real application makes its handlers
//! idempotent by the event's `id`).

// serde_json's `value["key"]` answers Null for a missing key: it never
// panics, which is what the lint guards against.
#![allow(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

#[path = "support/handle.rs"]
mod handle;
use handle::handle;

#[derive(Debug, Parser)]
struct Args {
    /// Where rollcall is.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An `app` (or `admin`) token of the tenant.
    #[arg(long, env = "ROLLCALL_APP_TOKEN")]
    token: String,
    /// Where the last handled cursor is kept.
    #[arg(long, default_value = "app.cursor")]
    cursor_file: PathBuf,
    /// Stop once the feed has nothing more (instead of waiting for it).
    #[arg(long)]
    once: bool,
}

fn load_cursor(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Written to a temporary file and renamed over the old one, so a kill
/// mid-write never leaves half a cursor.
fn save_cursor(path: &Path, cursor: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    std::fs::write(&temporary, cursor)?;
    std::fs::rename(&temporary, path)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    rollcall::webhooks::deliver::install_tls_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(90)).build()?;
    let mut cursor = load_cursor(&args.cursor_file);
    let wait = if args.once { 0 } else { 30 };
    loop {
        // Cursors are hex digits: nothing in the query needs escaping.
        let mut url =
            format!("{}/api/v1/events?wait={wait}&limit=100", args.url.trim_end_matches('/'));
        if let Some(after) = &cursor {
            url.push_str("&after=");
            url.push_str(after);
        }
        let response = match client.get(url).bearer_auth(&args.token).send().await {
            Ok(response) => response,
            Err(error) => {
                eprintln!("app: rollcall unreachable ({error}); trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let status = response.status();
        let page: Value = response.json().await?;
        if !status.is_success() {
            return Err(format!("rollcall answered {status}: {page}").into());
        }
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            if let Some(line) = handle(event) {
                println!("{line}");
            }
            // Only now is the event done with: save where to go on from.
            if let Some(next) = event["cursor"].as_str() {
                save_cursor(&args.cursor_file, next)?;
                cursor = Some(next.to_owned());
            }
        }
        if args.once && !page["has_more"].as_bool().unwrap_or(false) {
            return Ok(());
        }
    }
}
