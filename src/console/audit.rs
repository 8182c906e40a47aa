//! The console's audit pages, open to audit tokens as well as admin ones:
//! joiners and leavers for a window (with its CSV), and the tenant's chain
//! check (the head checkpoint to write down, and the last result). They
//! read what `crate::audit` reads; the only thing they write is the
//! remembered result of a check, which is not an event.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use projections::console::{self as console_state, VerifyRow};
use serde::Deserialize;

use super::page::{self, PageError, Section, fixed_notice, notice, respond, see_other, when};
use super::session::{Form, Session};
use crate::audit::chain;
use crate::audit::report::{self, Window};
use crate::auth::Caller;
use crate::reads::blocking;
use crate::state::AppState;

/// Movements listed on the page; the CSV has them all.
const SHOWN_MAX: usize = 500;

#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

/// The window asked for, or the current quarter so far.
fn window_texts(query: &WindowQuery) -> (String, String) {
    let today = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC).date();
    let quarter_month = ((today.month() - 1) / 3) * 3 + 1;
    let start = jiff::civil::Date::new(today.year(), quarter_month, 1).unwrap_or(today);
    let pick = |given: &Option<String>, default: jiff::civil::Date| {
        given.clone().filter(|text| !text.trim().is_empty()).unwrap_or_else(|| default.to_string())
    };
    (pick(&query.from, start), pick(&query.to, today))
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(query): Query<WindowQuery>,
) -> Result<Response, PageError> {
    let (from, to) = window_texts(&query);
    let window = Window::parse(&from, &to);
    let tenant = caller.principal.tenant_id.clone();
    let last =
        state.store.read(|connection| Ok(console_state::last_verify(connection, &tenant)?))?;
    let report = match window {
        Ok(window) => {
            let store = state.store.clone();
            let tenant = tenant.clone();
            Some(
                blocking(move || report::joiners_leavers(&store, &tenant, window))
                    .await
                    .map(|movements| (window, movements)),
            )
        }
        Err(error) => Some(Err(error)),
    };
    let csv_link = format!(
        "/admin/audit/joiners-leavers.csv?{}",
        serde_urlencoded::to_string([("from", from.as_str()), ("to", to.as_str())])
            .unwrap_or_default()
    );
    let body = html! {
        (fixed_notice(query.notice.as_deref()))
        section class="card" aria-labelledby="chain" {
            h2 id="chain" { "Tamper check" }
            @match &last {
                None => p { "The chain has not been checked from the console yet." },
                Some(last) => {
                    @if last.ok {
                        p { span class="badge active" { "intact" } " Checked " (when(&last.at)) ": " (last.events_checked) " events, every hash matches." }
                        @if let Some(checkpoint) = &last.checkpoint {
                            label for="checkpoint" { "Head checkpoint (write it down; rollcall verify --since proves the log only grew since)" }
                            div class="copy" { input id="checkpoint" readonly value=(checkpoint); button type="button" data-copy="checkpoint" { "Copy" } }
                        }
                    } @else {
                        (notice("error", &format!("Checked {}: {}", last.at, last.problem.as_deref().unwrap_or("the chain does not verify"))))
                    }
                }
            }
            form method="post" action="/admin/audit/verify" data-busy="Checking the chain…" {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" { "Check the chain now" }
                span class="busy" role="status" aria-live="polite" {}
            }
        }
        section aria-labelledby="movements" {
            h2 id="movements" { "Joiners and leavers" }
            form method="get" action="/admin/audit" class="filters" {
                div { label for="from" { "From (date or instant, UTC)" } input id="from" name="from" value=(from); }
                div { label for="to" { "To (a date includes its day)" } input id="to" name="to" value=(to); }
                button type="submit" { "Show" }
            }
            @match &report {
                Some(Ok((_, movements))) => {
                    p { (movements.len()) " movements · " a href=(csv_link) download { "Download CSV" } }
                    (page::counts("movements", &serde_json::Value::Object(report::counts(movements))))
                    table id="joiners-leavers" {
                        caption { "Who joined, changed and left, in the order it took effect" }
                        thead { tr { @for column in ["Took effect", "Kind", "userName", "Said at", "Said by", "Applied by"] { th scope="col" { (column) } } } }
                        tbody {
                            @for movement in movements.iter().take(SHOWN_MAX) {
                                @let row = report::Row::of(movement);
                                tr {
                                    td { (when(&movement.effective_at)) }
                                    td { span class={ "badge " (movement.kind) } { (movement.kind) } }
                                    td { (row.user_name) }
                                    td { @if let Some(at) = &movement.said_at { (when(at)) } }
                                    td { (row.said_by) @if !row.request_id.is_empty() { br; span class="small" { "request " (row.request_id) } } }
                                    td { (row.applied_by) }
                                }
                            }
                        }
                    }
                    @if movements.len() > SHOWN_MAX { p { "The first " (SHOWN_MAX) " are shown; the CSV has all " (movements.len()) "." } }
                },
                Some(Err(error)) => (notice("error", &error.public_message())),
                None => {},
            }
        }
    };
    Ok(respond(StatusCode::OK, page::page("Audit", Some(&session), Section::Audit, body)))
}

pub async fn csv(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<WindowQuery>,
) -> Result<Response, PageError> {
    let (from, to) = window_texts(&query);
    let window = Window::parse(&from, &to)?;
    let store = state.store.clone();
    let tenant = caller.principal.tenant_id.clone();
    let movements = blocking(move || report::joiners_leavers(&store, &tenant, window)).await?;
    Ok(crate::audit::csv_response(window, &movements)?.into_response())
}

/// Walks the tenant's chain and remembers the result for the page.
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    _form: Form,
) -> Result<Response, PageError> {
    let store = state.store.clone();
    let tenant = caller.principal.tenant_id.clone();
    let row = blocking(move || {
        let at = store.log().now_millis();
        let report = store.log().verify(events::VerifyScope::Tenant(tenant.clone()))?;
        let row = match &report.failure {
            Some(failure) => VerifyRow {
                at,
                ok: false,
                events_checked: report.events_checked,
                checkpoint: None,
                problem: Some(format!(
                    "the chain is broken at position {} ({})",
                    failure.position,
                    failure.problem.describe()
                )),
            },
            None => VerifyRow {
                at,
                ok: true,
                events_checked: report.events_checked,
                checkpoint: report.heads.iter().find(|head| head.tenant == tenant).map(|head| {
                    chain::Checkpoint { position: head.position, hash: head.hash }.to_string()
                }),
                problem: None,
            },
        };
        Ok((tenant, row))
    })
    .await?;
    let (tenant, row) = row;
    state
        .store
        .command(None, move |tx| Ok(console_state::record_verify(tx.db(), &tenant, &row)?))
        .await
        .map_err(crate::error::Error::from)?;
    Ok(see_other("/admin/audit?notice=verified"))
}
