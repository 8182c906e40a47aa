//! The command-line face of the audit: `rollcall audit joiners-leavers|
//! history|checkpoint|as-of|request`, `rollcall export`, `rollcall verify
//! --file|--projections` and `rollcall rebuild`. It prints what the audit
//! modules answer; it decides nothing.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use clap::{Subcommand, ValueEnum};
use events::VerifyScope;
use projections::tenancy as tenancy_projection;

use super::common::{print_json, print_table, tenant_id};
use crate::audit::chain::{self, Checkpoint};
use crate::audit::history::{self, Subject};
use crate::audit::report::{self, Window};
use crate::store::Store;
use crate::tenancy::TenantRef;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Verify one tenant's chain (by name) instead of the whole log.
    #[arg(long, conflicts_with = "file")]
    pub tenant: Option<String>,
    /// A checkpoint (`POSITION:HASH`, from `rollcall audit checkpoint`)
    /// the chain must still pass through: proves the log only grew since.
    #[arg(long, value_name = "CHECKPOINT")]
    pub since: Option<String>,
    /// Check an export (`rollcall export`) instead of the database; `-`
    /// reads standard input.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Also refold the whole log into scratch tables and compare them with
    /// the live projections, naming any table that drifted.
    #[arg(long, conflicts_with_all = ["file", "since"])]
    pub projections: bool,
    #[arg(long)]
    pub json: bool,
}

/// A projection `rollcall rebuild` can replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProjectionArg {
    Tenancy,
    Directory,
    Members,
    Audit,
    /// The event feed the application reads.
    Feed,
    /// Webhook endpoints (their secrets and delivery state stay).
    Webhooks,
}

impl ProjectionArg {
    pub fn name(self) -> &'static str {
        match self {
            ProjectionArg::Tenancy => "tenancy",
            ProjectionArg::Directory => "directory",
            ProjectionArg::Members => "members",
            ProjectionArg::Audit => "audit",
            ProjectionArg::Feed => "feed",
            ProjectionArg::Webhooks => "webhooks",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Rebuild only this projection (repeatable); all of them by default.
    #[arg(long, value_enum)]
    pub projection: Vec<ProjectionArg>,
    /// Fold at most this many events now and stop; the next rebuild goes on
    /// from there.
    #[arg(long)]
    pub max_events: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Who joined, was disabled or enabled, left, came back or was purged
    /// in a window (by when it took effect), with when the identity
    /// provider said it and on whose word.
    JoinersLeavers {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// Start: a date (2026-07-01, from 00:00 UTC) or an RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// End: a date (its whole day included) or an instant (excluded).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Every event that touched one user or member, in order, with the
    /// attribute changes between versions.
    History {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// A SCIM user id, externalId or userName (any the user ever had).
        #[arg(long, required_unless_present = "member", conflicts_with = "member")]
        user: Option<String>,
        /// A member id.
        #[arg(long)]
        member: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The tenant's SCIM directory and member directory as they were at a
    /// past instant or log position, folded from the log.
    AsOf {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// An instant (RFC 3339, or a date: its start); state after every
        /// event recorded at or before it.
        #[arg(long, required_unless_present = "position", conflicts_with = "position")]
        at: Option<String>,
        /// A log position: state after the events up to it.
        #[arg(long)]
        position: Option<u64>,
    },
    /// The request a change came from, as the client sent it (method, path,
    /// body with secrets redacted, token, User-Agent), and every event it
    /// produced.
    Request {
        /// A request id (from a joiners-leavers row, a history entry, a log line).
        request_id: String,
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
    },
    /// Print the tenant's chain head (`POSITION:HASH`) to write down and
    /// later give to `rollcall verify --since`.
    Checkpoint {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, env = "ROLLCALL_TENANT")]
    pub tenant: String,
    /// Only events recorded from then (a date or an RFC 3339 instant).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Only events recorded before then (a date: its day included).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn verify_command(store: &Store, verify: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let (scope, label) = match &verify.tenant {
        Some(name) => {
            let tenant =
                store.read(|connection| TenantRef::Name(name.clone()).resolve(connection))?;
            (VerifyScope::Tenant(tenant.tenant_id), name.clone())
        }
        None => (VerifyScope::All, "all".to_owned()),
    };
    let report = store.log().verify(scope.clone())?;
    let since = match (&verify.since, &scope) {
        (None, _) => None,
        (Some(_), VerifyScope::All) => {
            anyhow::bail!("--since needs --tenant: a checkpoint is a tenant's")
        }
        (Some(text), VerifyScope::Tenant(tenant_id)) => {
            let checkpoint = crate::audit::chain::Checkpoint::parse(text)?;
            let problem = if report.is_ok() {
                crate::audit::chain::check(store, tenant_id, &checkpoint)?
            } else {
                None
            };
            Some((checkpoint, problem))
        }
    };
    if verify.json {
        println!("{}", crate::audit::verify_report_json(&report, &label, since.as_ref()));
    } else {
        let names = store.read(|connection| Ok(tenancy_projection::list_tenants(connection)?))?;
        let name_of = |tenant_id: &str| {
            names
                .iter()
                .find(|t| t.tenant_id == tenant_id)
                .map_or_else(|| tenant_id.to_owned(), |t| t.name.clone())
        };
        let rows = report.heads.iter().map(|head| {
            vec![
                name_of(&head.tenant),
                head.events.to_string(),
                head.position.to_string(),
                events::hash::to_hex(&head.hash),
            ]
        });
        print_table(&["CHAIN", "EVENTS", "HEAD POSITION", "HEAD HASH"], rows)?;
    }
    if let Some((checkpoint, Some(problem))) = &since {
        eprintln!("rollcall: verify FAILED against checkpoint {checkpoint}: {problem}");
        return Ok(ExitCode::from(1));
    }
    let mut broken_guards = report.missing_guards.clone();
    broken_guards.extend(report.altered_guards.iter().map(|name| format!("{name} (altered)")));
    if !broken_guards.is_empty() {
        eprintln!(
            "rollcall: verify FAILED: guard triggers missing or altered: {}; the events were open \
             to edits (the chain above says whether any was made); opening the file for writing \
             restores them",
            broken_guards.join(", ")
        );
    }
    match &report.failure {
        None if !broken_guards.is_empty() => Ok(ExitCode::from(1)),
        None => {
            eprintln!("rollcall: verify ok: {} events checked ({label})", report.events_checked);
            if let Some((checkpoint, None)) = &since {
                eprintln!(
                    "rollcall: the chain still passes through checkpoint {checkpoint}: the log only grew since"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(failure) => {
            eprintln!(
                "rollcall: verify FAILED at position {} (tenant {}): {}",
                failure.position,
                failure.tenant,
                failure.problem.describe()
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub fn audit_command(
    store: &Store,
    command: AuditCommand,
    snapshots: Option<&crate::store::snapshots::Snapshots>,
) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::JoinersLeavers { tenant, from, to, format } => {
            let window = Window::parse(&from, &to)?;
            let tenant_id = tenant_id(store, &tenant)?;
            let movements = report::joiners_leavers(store, &tenant_id, window)?;
            match format {
                ReportFormat::Json => {
                    print_json(&crate::audit::report_json(&tenant, window, &movements))?
                }
                ReportFormat::Csv => {
                    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
                    out.write_record(report::COLUMNS).context("writing CSV")?;
                    for movement in &movements {
                        out.write_record(report::row(movement)).context("writing CSV")?;
                    }
                    out.flush().context("writing CSV")?;
                }
                ReportFormat::Table => {
                    print_table(&report::COLUMNS, movements.iter().map(report::row))?;
                    let counts: Vec<String> = report::counts(&movements)
                        .into_iter()
                        .map(|(kind, count)| format!("{kind} {count}"))
                        .collect();
                    eprintln!(
                        "rollcall: {} to {} (effective time, UTC): {}",
                        events::time::format_millis(window.from),
                        events::time::format_millis(window.to),
                        counts.join(", ")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::History { tenant, user, member, json } => {
            let tenant_id = tenant_id(store, &tenant)?;
            let subject = match (user, member) {
                (_, Some(member)) => Subject::Member(member),
                (Some(user), None) => Subject::User(user),
                (None, None) => anyhow::bail!("--user or --member is required"),
            };
            let history = history::history(store, &tenant_id, &subject)?;
            if json {
                print_json(&history)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows = history.entries.iter().map(|entry| {
                let detail = match &entry.changes {
                    Some(changes) => changes
                        .iter()
                        .map(|change| {
                            format!("{}: {} -> {}", change.attribute, change.from, change.to)
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    None => entry.payload.to_string(),
                };
                vec![
                    entry.position.to_string(),
                    entry.recorded_at.clone(),
                    entry.event_type.clone(),
                    entry.by.actor_text(),
                    detail,
                ]
            });
            print_table(&["POSITION", "RECORDED_AT", "EVENT", "BY", "DETAIL"], rows)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::AsOf { tenant, at, position } => {
            let tenant_id = tenant_id(store, &tenant)?;
            let position = match (at, position) {
                (_, Some(position)) => position,
                (Some(at), None) => crate::audit::position_at_or_before(store, &tenant_id, &at)?,
                (None, None) => anyhow::bail!("--at or --position is required"),
            };
            let snapshots = snapshots.ok_or_else(|| {
                anyhow::anyhow!(
                    "audit as-of folds into an SQLite scratch file; on PostgreSQL it is not \
                     built yet (history, joiners-leavers, request and export are)"
                )
            })?;
            let state = crate::store::replay::as_of(store, &tenant_id, position, snapshots)?
                .everything()?;
            print_json(&state)?;
            eprintln!(
                "rollcall: tenant {tenant} as of position {position}{}: {} users, {} groups, {} members",
                state.recorded_at.as_deref().map(|at| format!(" ({at})")).unwrap_or_default(),
                state.users.len(),
                state.groups.len(),
                state.members.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Request { request_id, tenant } => {
            let tenant_id = tenant_id(store, &tenant)?;
            print_json(&crate::audit::ledger::request(store, &tenant_id, &request_id)?)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { tenant, json } => {
            let tenant_id = tenant_id(store, &tenant)?;
            let Some((checkpoint, recorded_at)) = chain::checkpoint(store, &tenant_id)? else {
                anyhow::bail!("tenant {tenant} has no events yet");
            };
            if json {
                print_json(&serde_json::json!({
                    "tenant": tenant,
                    "tenant_id": tenant_id,
                    "position": checkpoint.position,
                    "hash": events::hash::to_hex(&checkpoint.hash),
                    "recorded_at": recorded_at,
                    "checkpoint": checkpoint.to_string(),
                }))?;
            } else {
                println!("{checkpoint}");
                eprintln!(
                    "rollcall: head of tenant {tenant} at {recorded_at}; later, `rollcall verify --tenant {tenant} --since {checkpoint}` proves the log only grew"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn export_command(store: &Store, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let tenant_id = tenant_id(store, &args.tenant)?;
    let window = match (&args.from, &args.to) {
        (Some(from), Some(to)) => Some(Window::parse(from, to)?),
        _ => None,
    };
    let written = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let written = chain::export(store, &tenant_id, window, &mut out)?;
            out.into_inner()
                .map_err(|error| anyhow::anyhow!("writing {}: {}", path.display(), error.error()))?
                .sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            written
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = chain::export(store, &tenant_id, window, &mut out)?;
            out.flush().context("writing standard output")?;
            written
        }
    };
    eprintln!("rollcall: exported {written} events of tenant {}", args.tenant);
    Ok(ExitCode::SUCCESS)
}

pub fn verify_file_command(path: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let checkpoint = args.since.as_deref().map(Checkpoint::parse).transpose()?;
    let report = if path == Path::new("-") {
        chain::verify_file(&mut std::io::stdin().lock(), checkpoint.as_ref())?
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        chain::verify_file(&mut BufReader::new(file), checkpoint.as_ref())?
    };
    if args.json {
        print_json(&report)?;
    } else {
        print_table(
            &["CHAIN", "HEAD (POSITION:HASH)"],
            report.heads.iter().map(|(tenant, head)| vec![tenant.clone(), head.clone()]),
        )?;
    }
    match &report.failure {
        None => {
            eprintln!(
                "rollcall: verify ok: {} events checked in {}",
                report.events_checked,
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(failure) => {
            eprintln!(
                "rollcall: verify FAILED at line {}{}: {}",
                failure.line,
                failure
                    .position
                    .map(|position| format!(" (position {position})"))
                    .unwrap_or_default(),
                failure.problem
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub fn verify_projections_command(store: &Store, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let drift = crate::store::replay::check_projections(store)?;
    if args.json {
        print_json(&drift)?;
    } else {
        print_table(
            &["TABLE", "LIVE", "REFOLDED", ""],
            drift.tables.iter().map(|(table, (live, refolded))| {
                let mark = if live == refolded { "ok" } else { "DRIFT" };
                vec![table.clone(), live.clone(), refolded.clone(), mark.to_owned()]
            }),
        )?;
    }
    if drift.drifted.is_empty() {
        eprintln!(
            "rollcall: projections ok: the live tables equal a refold of the log up to position {}",
            drift.position
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "rollcall: projections DRIFTED from the log (position {}): {}; `rollcall rebuild` refolds them",
            drift.position,
            drift.drifted.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

pub fn rebuild_command(store: &Store, db: &Path, args: &RebuildArgs) -> anyhow::Result<ExitCode> {
    let mut names: Vec<&str> = args.projection.iter().map(|projection| projection.name()).collect();
    if names.is_empty() {
        names = crate::store::replay::PROJECTIONS.iter().map(|(name, _)| *name).collect();
    }
    names.dedup();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("rebuilding");
    let rebuilt = crate::store::replay::rebuild(
        store,
        db,
        &names,
        args.max_events,
        &mut |position, head| {
            bar.set_length(head);
            bar.set_position(position);
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        print_json(&rebuilt)?;
    }
    if rebuilt.resumed_from > 0 {
        eprintln!("rollcall: resumed an interrupted rebuild at position {}", rebuilt.resumed_from);
    }
    if rebuilt.complete {
        eprintln!(
            "rollcall: rebuilt {} up to position {}",
            rebuilt.projections.join(", "),
            rebuilt.position
        );
    } else {
        eprintln!(
            "rollcall: folded up to position {}; run `rollcall rebuild` again to go on",
            rebuilt.position
        );
    }
    Ok(ExitCode::SUCCESS)
}
