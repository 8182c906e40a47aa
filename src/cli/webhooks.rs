//! `rollcall webhook`: the CLI twins of the webhook routes. They run the
//! same commands as the API, on the same file as a running server (whose
//! deliverer picks up every change within a second).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use projections::feed::Cursor;
use projections::webhooks as projection;
use serde_json::Value;

use super::common::{cli_context, print_table, tenant_id};
use crate::store::Store;
use crate::webhooks::SettingsInput;
use crate::webhooks::state::Deliveries;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create an endpoint; prints its signing secret once, on stdout.
    Create {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long)]
        url: String,
        /// Only these event types (repeatable; all of them by default).
        #[arg(long = "type")]
        types: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Up to 100 events per request, as a JSON array.
        #[arg(long)]
        batch: bool,
        /// Allow a loopback, private or link-local address (local
        /// development; the server needs --webhook-allow-private-targets
        /// to deliver there).
        #[arg(long, env = "ROLLCALL_WEBHOOK_ALLOW_PRIVATE_TARGETS")]
        allow_private_targets: bool,
    },
    /// List a tenant's endpoints and where their deliveries stand.
    List {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one endpoint and its last deliveries.
    Show {
        id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Pause deliveries; they wait, in order.
    Pause {
        id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Resume a paused or disabled endpoint: it catches up from where it stopped.
    Resume {
        id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Delete an endpoint, its secrets and its delivery state.
    Delete {
        id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Make a new signing secret (printed once); the old one signs too
    /// for the overlap.
    Rotate {
        id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long, default_value_t = 24)]
        overlap_hours: u64,
    },
    /// Deliver again: the waiting (failed) message now, or everything
    /// after a cursor.
    Redeliver {
        id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// Try the waiting message now instead of at its next retry.
        #[arg(long, conflicts_with = "from_cursor")]
        failed: bool,
        /// Every event after this cursor, in order.
        #[arg(long)]
        from_cursor: Option<String>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")
}

fn endpoint(store: &Store, tenant: &str, id: &str) -> anyhow::Result<projection::WebhookRow> {
    store
        .read(|connection| Ok(projection::webhook(connection, tenant, id)?))?
        .ok_or_else(|| anyhow::anyhow!("no webhook endpoint {id} in this tenant"))
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

pub fn webhook_command(store: &Store, command: WebhookCommand) -> anyhow::Result<ExitCode> {
    let deliveries = Deliveries::of(store)?;
    match command {
        WebhookCommand::Create {
            tenant,
            url,
            types,
            description,
            batch,
            allow_private_targets,
        } => {
            let tenant = tenant_id(store, &tenant)?;
            let input = SettingsInput {
                url: Some(url),
                types: Some((!types.is_empty()).then_some(types)),
                description: Some(description),
                batch: Some(batch),
                status: None,
            };
            let (row, secret) = runtime()?.block_on(crate::webhooks::create(
                store,
                &tenant,
                input,
                allow_private_targets,
                cli_context(),
            ))?;
            println!("{secret}");
            eprintln!(
                "rollcall: created webhook endpoint {} for {}; the secret above is shown once",
                row.webhook_id, row.settings.url
            );
        }
        WebhookCommand::List { tenant, json } => {
            let tenant = tenant_id(store, &tenant)?;
            let rows =
                store.read(|connection| Ok(projection::webhooks(connection, Some(&tenant))?))?;
            let mut views = Vec::new();
            for row in &rows {
                views.push(crate::webhooks::view(
                    row,
                    deliveries.existing(&tenant, &row.webhook_id)?.as_ref(),
                ));
            }
            if json {
                println!("{}", Value::from(views));
            } else {
                let lines = views.iter().map(|view| {
                    let text = |value: &Value| match value {
                        Value::Null => "-".to_owned(),
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    let field = |path: &str| text(view.pointer(path).unwrap_or(&Value::Null));
                    vec![
                        field("/id"),
                        field("/status"),
                        field("/url"),
                        field("/delivery/delivered"),
                        field("/delivery/last_status"),
                        field("/delivery/next_attempt_at"),
                    ]
                });
                print_table(
                    &["ID", "STATUS", "URL", "DELIVERED", "LAST STATUS", "NEXT RETRY"],
                    lines,
                )?;
            }
        }
        WebhookCommand::Show { id, tenant } => {
            let tenant = tenant_id(store, &tenant)?;
            let row = endpoint(store, &tenant, &id)?;
            let mut view = crate::webhooks::view(&row, deliveries.existing(&tenant, &id)?.as_ref());
            let attempts = deliveries.attempts(&tenant, &id, false, 20)?;
            if let Some(fields) = view.as_object_mut() {
                let recent: Vec<Value> =
                    attempts.iter().map(crate::webhooks::attempt_view).collect();
                fields.insert("recent_deliveries".to_owned(), Value::from(recent));
            }
            print_json(&view);
        }
        WebhookCommand::Pause { id, tenant } => set_status(store, &tenant, &id, "paused")?,
        WebhookCommand::Resume { id, tenant } => set_status(store, &tenant, &id, "active")?,
        WebhookCommand::Delete { id, tenant } => {
            let tenant = tenant_id(store, &tenant)?;
            runtime()?.block_on(crate::webhooks::delete(
                store,
                &deliveries,
                &tenant,
                &id,
                cli_context(),
            ))?;
            eprintln!("rollcall: deleted webhook endpoint {id}");
        }
        WebhookCommand::Rotate { id, tenant, overlap_hours } => {
            let tenant = tenant_id(store, &tenant)?;
            let overlap = Duration::from_secs(overlap_hours.min(24 * 30) * 3600);
            let (row, secret) = runtime()?.block_on(crate::webhooks::rotate(
                store,
                &tenant,
                &id,
                overlap,
                cli_context(),
            ))?;
            println!("{secret}");
            eprintln!(
                "rollcall: new secret for {}; the previous one signs too until {}",
                row.webhook_id,
                row.previous_secret_valid_until.unwrap_or_default()
            );
        }
        WebhookCommand::Redeliver { id, tenant, failed, from_cursor } => {
            let tenant = tenant_id(store, &tenant)?;
            let row = endpoint(store, &tenant, &id)?;
            let to = match from_cursor {
                Some(text) => Some(Cursor::decode(&tenant, &text)?),
                None if failed => None,
                None => anyhow::bail!("say --failed or --from-cursor CURSOR"),
            };
            deliveries.state(&tenant, &id, row.from)?;
            deliveries.rewind(&tenant, &id, to)?;
            eprintln!("rollcall: endpoint {id} will deliver again within a second");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set_status(store: &Store, tenant: &str, id: &str, status: &str) -> anyhow::Result<()> {
    let tenant = tenant_id(store, tenant)?;
    let input = SettingsInput { status: Some(status.to_owned()), ..SettingsInput::default() };
    let row = runtime()?.block_on(crate::webhooks::change(
        store,
        &tenant,
        id,
        input,
        true,
        cli_context(),
    ))?;
    eprintln!("rollcall: webhook endpoint {} is {}", row.webhook_id, row.status.as_str());
    Ok(())
}
