//! The command-line face of Synchronize: `rollcall sync` (run, preview,
//! history, approve, reject) and `rollcall mapping|roles|schedule
//! show|set`. It prints what `crate::sync` answers; it decides nothing.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use projections::members::{self, RunStatus, SyncRunRow};

use clap::Subcommand;

use super::common::{cli_context, print_json};
use crate::error::Error;
use crate::store::Store;
use crate::sync::settings::{self, Setting};
use crate::sync::{RunOptions, Trigger};
use crate::tenancy::TenantRef;

fn tenant_id(store: &Store, name: &str) -> anyhow::Result<String> {
    Ok(store.read(|connection| TenantRef::Name(name.to_owned()).resolve(connection))?.tenant_id)
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SyncArgs {
    #[command(subcommand)]
    pub command: Option<SyncCommand>,
    #[arg(long, env = "ROLLCALL_TENANT")]
    pub tenant: Option<String>,
    /// Show what a run would do, and write nothing.
    #[arg(long)]
    pub preview: bool,
    /// Preview items to skip and to show.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// The tenant's runs, newest first.
    History {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Approve a run the safeguard held: runs Synchronize without it.
    Approve {
        run_id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Reject a held run: members stay as they are, the changes pending.
    Reject {
        run_id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingCommand {
    /// Print the current value (the default until one is set) as JSON.
    Show {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Set it from a JSON file (`-` reads standard input).
    Set {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long)]
        file: PathBuf,
    },
}

fn print_run(run: &SyncRunRow, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&crate::sync::run_view(run));
    }
    println!(
        "run {}  {}  trigger {}  started {}  {}",
        run.run_id,
        run.status,
        run.trigger,
        run.started_at,
        run.duration_ms.map_or(String::new(), |ms| format!("{ms} ms")),
    );
    if let Some(counts) = run.counts.as_object() {
        let shown: Vec<String> = counts
            .iter()
            .filter(|(_, count)| count.as_u64().is_some_and(|count| count > 0))
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        println!(
            "  {}",
            if shown.is_empty() { "nothing to do".to_owned() } else { shown.join(", ") }
        );
    }
    if let Some(reason) = &run.held_reason {
        println!("  held: {reason}");
    }
    if let Some(error) = &run.error {
        println!("  failed: {error}");
    }
    Ok(())
}

pub fn sync_command(store: &Store, args: SyncArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(SyncCommand::History { tenant, limit, json }) => {
            let tenant = tenant_id(store, &tenant)?;
            let (_, runs) =
                store.read(|connection| Ok(members::runs(connection, &tenant, 0, limit)?))?;
            if json {
                let views: Vec<_> = runs.iter().map(crate::sync::run_view).collect();
                return print_json(&views).map(|()| ExitCode::SUCCESS);
            }
            for run in &runs {
                print_run(run, false)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(SyncCommand::Approve { run_id, tenant }) => decide(store, &tenant, &run_id, true),
        Some(SyncCommand::Reject { run_id, tenant }) => decide(store, &tenant, &run_id, false),
        None => {
            let name = args.tenant.context("--tenant (or ROLLCALL_TENANT) is required")?;
            let tenant = tenant_id(store, &name)?;
            if args.preview {
                let preview = crate::sync::preview(store, &tenant, args.offset, args.limit)?;
                if args.json {
                    return print_json(&preview).map(|()| ExitCode::SUCCESS);
                }
                println!(
                    "{} users, {} groups pending (checkpoint {}, log head {})",
                    preview.pending_users, preview.pending_groups, preview.checkpoint, preview.head
                );
                println!("{}", serde_json::to_string(&preview.counts).unwrap_or_default());
                if let Some(reason) = &preview.safeguard {
                    println!("safeguard: {reason}");
                }
                for item in &preview.items {
                    println!("{}", serde_json::to_string(item).unwrap_or_default());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let run = crate::sync::run(
                store,
                &tenant,
                Trigger::Cli,
                cli_context(),
                RunOptions::default(),
            )?;
            print_run(&run, args.json)?;
            // A held run is not a failure, but scripts should notice it.
            Ok(if run.status == RunStatus::Held { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
    }
}

fn decide(store: &Store, tenant: &str, run_id: &str, approve: bool) -> anyhow::Result<ExitCode> {
    let tenant = tenant_id(store, tenant)?;
    let run =
        crate::sync::decide(store, &tenant, run_id, approve, cli_context(), RunOptions::default())?;
    print_run(&run, false)?;
    // An approval is a run of its own: show what it applied.
    if let Some(applied_by) = &run.applied_by {
        let applied =
            store.read(|connection| Ok(members::run(connection, &tenant, applied_by)?))?;
        if let Some(applied) = applied {
            println!("applied by:");
            print_run(&applied, false)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn setting_command(
    store: &Store,
    setting: Setting,
    command: SettingCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        SettingCommand::Show { tenant } => {
            let tenant = tenant_id(store, &tenant)?;
            print_json(&settings::current(store, &tenant, setting)?)?;
        }
        SettingCommand::Set { tenant, file } => {
            let tenant = tenant_id(store, &tenant)?;
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
            } else {
                text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
            }
            let body: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
                Error::invalid(format!("{}: not JSON: {error}", file.display()))
            })?;
            let changed = settings::set(store, &tenant, setting, body, cli_context())
                .wait()
                .map_err(Error::from)?;
            eprintln!("rollcall: {}", if changed { "saved" } else { "unchanged" });
            print_json(&settings::current(store, &tenant, setting)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
