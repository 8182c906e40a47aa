//! Replays a rollcall log and prints its timeline: every event, in order,
//! with when it was recorded, in which tenant and stream, and on whose word.
//! It reads the log alone (no projection table), the way an auditor would.
//!
//!     cargo run --example replay -- rollcall.db [--tenant TENANT_ID]

use std::path::PathBuf;
use std::process::ExitCode;

use events::sqlite::{LogOptions, SqliteLog, VisitError};
use events::{Actor, Metadata};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: replay DATABASE [--tenant TENANT_ID]");
        return ExitCode::from(2);
    };
    let tenant = match (args.next().as_deref(), args.next()) {
        (Some("--tenant"), Some(tenant)) => Some(tenant),
        (None, _) => None,
        _ => {
            eprintln!("usage: replay DATABASE [--tenant TENANT_ID]");
            return ExitCode::from(2);
        }
    };
    // The key store beside it opens sealed values; without one, events
    // with sealed values show as undecodable.
    let keys = rollcall::store::keys::KeyStore::read_only(&path);
    if let Err(error) = keys.bind(None) {
        eprintln!("replay: {error}");
        return ExitCode::from(2);
    }
    let options = LogOptions { keys: Some(std::sync::Arc::new(keys)), ..LogOptions::default() };
    let log = match SqliteLog::open_read_only(&path, options) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("replay: {error}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{:>8}  {:<24}  {:<26}  {:<36}  {:<15}  ACTOR",
        "POSITION", "RECORDED AT", "TENANT", "STREAM", "EVENT"
    );
    let walked = log.visit_forward(0, tenant.as_deref(), |event| {
        let actor =
            match serde_json::from_str::<Metadata>(event.metadata).map(|metadata| metadata.actor) {
                Ok(Actor::Token { token_id }) => format!("token {token_id}"),
                Ok(Actor::Cli { user: Some(user) }) => format!("cli ({user})"),
                Ok(Actor::Cli { user: None }) => "cli".to_owned(),
                Ok(Actor::Scheduler) => "scheduler".to_owned(),
                Ok(Actor::System) => "system".to_owned(),
                Err(error) => format!("(unreadable metadata: {error})"),
            };
        let decoded = if event.decode(log.keys()).is_ok() { "" } else { " (undecodable)" };
        println!(
            "{:>8}  {:<24}  {:<26}  {:<36}  {:<15}  {actor}{decoded}",
            event.position, event.recorded_at, event.tenant, event.stream, event.event_type
        );
        Ok::<(), std::io::Error>(())
    });
    match walked {
        Ok(last) => {
            eprintln!("replay: read up to position {last}");
            ExitCode::SUCCESS
        }
        Err(VisitError::Log(error)) => {
            eprintln!("replay: {error}");
            ExitCode::from(2)
        }
        Err(VisitError::Visitor(error)) => {
            eprintln!("replay: {error}");
            ExitCode::from(2)
        }
    }
}
