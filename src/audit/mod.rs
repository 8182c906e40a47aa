//! The audit: answers for auditors that rest on the log, the same on every
//! replay. Each reads the log itself or a projection folded from it and
//! proven against it (`verify --projections` refolds and compares): never
//! the live directory tables as an authority. `report` (joiners and
//! leavers, from the `audit` projection), `history` (one person, from the
//! log), `ledger` (one request and its events, from event metadata, and how
//! it was answered, from the request log), `chain` (checkpoints, export,
//! offline verify); here, the JSON shapes the API, the console and the CLI
//! share. As-of, refold checks and rebuilds are the store's
//! (`store::replay`, `store::snapshots`); the routes under /api/v1/audit
//! are `admin::audit`, the commands `cli::audit`. Nothing here appends an
//! event, and nothing here knows a route or a page.

pub mod chain;
pub mod history;
pub mod ledger;
pub mod report;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;
use report::{Movement, Window};

/// Joiners, leavers and changes of status in a window.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JoinersLeavers)]
pub struct ReportView<'a> {
    pub tenant: &'a str,
    pub from: String,
    pub to: String,
    /// How many movements of each kind.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub counts: serde_json::Map<String, serde_json::Value>,
    pub movements: &'a [Movement],
}

/// The report as JSON, the same for the API and the CLI.
pub fn report_json(tenant: &str, window: Window, movements: &[Movement]) -> serde_json::Value {
    serde_json::to_value(ReportView {
        tenant,
        from: events::time::format_millis(window.from),
        to: events::time::format_millis(window.to),
        counts: report::counts(movements),
        movements,
    })
    .unwrap_or(serde_json::Value::Null)
}

/// The report as a CSV download, the same for the API and the console.
pub fn csv_response(window: Window, movements: &[Movement]) -> Result<Response, Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let written = out.write_record(report::COLUMNS).and_then(|()| {
        movements.iter().try_for_each(|movement| out.write_record(report::row(movement)))
    });
    written.map_err(|error| Error::Internal(format!("writing CSV: {error}")))?;
    let body =
        out.into_inner().map_err(|error| Error::Internal(format!("writing CSV: {error}")))?;
    let filename = format!(
        "joiners-leavers-{}-{}.csv",
        window.from.strftime("%Y%m%dT%H%M%SZ"),
        window.to.strftime("%Y%m%dT%H%M%SZ")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response())
}

/// A verify report as JSON, the same for the API and `rollcall verify
/// --json`. `label` names the scope walked (a tenant name, or "all");
/// `since` is a checkpoint given and what is wrong with it, if anything.
pub fn verify_report_json(
    report: &events::VerifyReport,
    label: &str,
    since: Option<&(chain::Checkpoint, Option<String>)>,
) -> serde_json::Value {
    let heads = chain_heads(report);
    let failure = report.failure.as_ref().map(|failure| ChainFailure {
        position: failure.position,
        tenant_id: failure.tenant.clone(),
        problem: failure.problem.describe().to_owned(),
    });
    serde_json::to_value(VerifyReport {
        scope: label,
        ok: report.is_ok() && since.is_none_or(|(_, problem)| problem.is_none()),
        events_checked: report.events_checked,
        heads,
        failure,
        missing_guards: &report.missing_guards,
        altered_guards: &report.altered_guards,
        since: since.map(|(checkpoint, problem)| SinceCheck {
            checkpoint: checkpoint.to_string(),
            ok: report.is_ok() && problem.is_none(),
            problem: problem.clone(),
        }),
    })
    .unwrap_or(serde_json::Value::Null)
}

/// What a walk of the chain found.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReport<'a> {
    /// The tenant walked (its name), or `all`.
    scope: &'a str,
    /// Every event matches its hash and the chain is unbroken (and passes
    /// through `since`, when given).
    ok: bool,
    events_checked: u64,
    heads: Vec<ChainHead>,
    /// The first event that does not match.
    failure: Option<ChainFailure>,
    /// Tenants whose tamper guard is missing, or altered.
    #[schema(value_type = Vec<String>)]
    missing_guards: &'a [String],
    #[schema(value_type = Vec<String>)]
    altered_guards: &'a [String],
    since: Option<SinceCheck>,
}

/// One tenant's chain head, as a verify report or a backup shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainHead {
    pub tenant_id: String,
    pub events: u64,
    pub position: u64,
    /// Its chain hash, lower-case hex.
    pub hash: String,
}

/// The heads a walk of the chain reached.
pub fn chain_heads(report: &events::VerifyReport) -> Vec<ChainHead> {
    report
        .heads
        .iter()
        .map(|head| ChainHead {
            tenant_id: head.tenant.clone(),
            events: head.events,
            position: head.position,
            hash: events::hash::to_hex(&head.hash),
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainFailure {
    position: u64,
    tenant_id: String,
    problem: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SinceCheck {
    checkpoint: String,
    ok: bool,
    problem: Option<String>,
}

/// The last position recorded at or before `at` (an instant, or a date:
/// its start): the state "as of" that instant.
pub fn position_at_or_before(
    store: &crate::store::Store,
    tenant_id: &str,
    at: &str,
) -> Result<events::Position, Error> {
    let instant = report::instant(at, "at", false)?;
    let after = instant
        .checked_add(jiff::SignedDuration::from_millis(1))
        .map_err(|_| Error::invalid(format!("at {at:?} is out of range")))?;
    Ok(store
        .log()
        .first_position_at(tenant_id, &events::time::format_millis(after))?
        .saturating_sub(1))
}
