//! The command-line face of the audit: `rollcall audit joiners-leavers|
//! history|checkpoint|as-of|request`, `rollcall export`, `rollcall verify
//! --file|--projections` and `rollcall rebuild`. It prints what the audit
//! modules answer; it decides nothing.

use std::io::{BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::chain::{self, Checkpoint};
use super::history::{self, Subject};
use super::report::{self, Window};
use crate::cli::{AuditCommand, ExportArgs, RebuildArgs, ReportFormat, VerifyArgs, print_table};
use crate::store::Store;
use crate::tenancy::TenantRef;

fn tenant_id(store: &Store, name: &str) -> anyhow::Result<String> {
    Ok(store.read(|connection| TenantRef::Name(name.to_owned()).resolve(connection))?.tenant_id)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("printing JSON")?);
    Ok(())
}

pub fn audit_command(
    store: &Store,
    command: AuditCommand,
    snapshots: &super::snapshots::Snapshots,
) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::JoinersLeavers { tenant, from, to, format } => {
            let window = Window::parse(&from, &to)?;
            let tenant_id = tenant_id(store, &tenant)?;
            let movements = report::joiners_leavers(store, &tenant_id, window)?;
            match format {
                ReportFormat::Json => print_json(&super::report_json(&tenant, window, &movements))?,
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
                (Some(at), None) => super::position_at_or_before(store, &at)?,
                (None, None) => anyhow::bail!("--at or --position is required"),
            };
            let state =
                super::replay::as_of(store, &tenant_id, position, snapshots)?.everything()?;
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
            print_json(&super::ledger::request(store, &tenant_id, &request_id)?)?;
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
    let drift = super::replay::check_projections(store)?;
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
        names = super::replay::PROJECTIONS.iter().map(|(name, _)| *name).collect();
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
    let rebuilt =
        super::replay::rebuild(store, db, &names, args.max_events, &mut |position, head| {
            bar.set_length(head);
            bar.set_position(position);
        })?;
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
