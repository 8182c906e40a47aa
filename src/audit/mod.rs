//! The audit API under /api/v1/audit, for `audit`-scope tokens (read-only)
//! and `admin`-scope tokens. Every answer comes from the log itself.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use events::event::TokenScope;
use events::{EventLog, VerifyScope};

use crate::auth::{Caller, Gate, require_token};
use crate::error::{ApiError, Error};
use crate::server::{AppState, Surface};

pub fn router(state: AppState) -> Router<AppState> {
    let gate =
        Gate { state, allowed: &[TokenScope::Audit, TokenScope::Admin], surface: Surface::Api };
    Router::new()
        .route("/audit/verify", get(verify))
        .layer(middleware::from_fn_with_state(gate, require_token))
}

/// Walks the caller's tenant chain and reports its head, or the first event
/// that does not match.
async fn verify(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    // A walk over a whole chain is long: keep it off the async workers.
    let report =
        tokio::task::spawn_blocking(move || store.log().verify(VerifyScope::Tenant(tenant_id)))
            .await
            .map_err(|error| Error::Internal(format!("verify task failed: {error}")))??;
    Ok(Json(verify_report_json(&report, &caller.principal.tenant_name)).into_response())
}

/// A verify report as JSON, the same for the API and `rollcall verify
/// --json`. `label` names the scope walked (a tenant name, or "all").
pub fn verify_report_json(report: &events::VerifyReport, label: &str) -> serde_json::Value {
    let heads: Vec<_> = report
        .heads
        .iter()
        .map(|head| {
            serde_json::json!({
                "tenant_id": head.tenant,
                "events": head.events,
                "position": head.position,
                "hash": events::hash::to_hex(&head.hash),
            })
        })
        .collect();
    let failure = report.failure.as_ref().map(|failure| {
        serde_json::json!({
            "position": failure.position,
            "tenant_id": failure.tenant,
            "problem": failure.problem.describe(),
        })
    });
    serde_json::json!({
        "scope": label,
        "ok": report.is_ok(),
        "events_checked": report.events_checked,
        "heads": heads,
        "failure": failure,
        "missing_guards": report.missing_guards,
    })
}
