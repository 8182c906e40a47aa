//! The User Provisioning pages: status and Tenant URL, tokens (generate,
//! revoke), what is pending, the Synchronize button and its runs (with
//! Approve and Reject for a held run), the daily schedule, and the
//! provisioning log of SCIM requests.
//!
//! Handlers call the same commands as the admin API (`crate::tenancy`,
//! `crate::sync`); they decide nothing themselves.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use events::event::TokenScope;
use maud::{Markup, html};
use projections::members::{self, RunStatus, SyncRunRow};
use projections::requests::{self, RequestRow};
use projections::tenancy::{self as tenancy_projection, TokenRecord};
use serde::Deserialize;
use serde_json::json;

use super::page::{
    self, PageError, Section, counts, fixed_notice, notice, pager, respond, see_other, when,
};
use super::session::{Form, Session};
use crate::auth::Caller;
use crate::error::Error;
use crate::reads::blocking;
use crate::state::AppState;
use crate::sync::config::SyncSettings;
use crate::sync::previews::Lookup;
use crate::sync::settings::{self, Setting};
use crate::sync::{self, RunOptions, Trigger};
use crate::tenancy::{self, Revoked, TenantRef, TokenRequest, TokenStatus};

pub const PAGE: u64 = 50;

#[derive(Debug, Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub notice: Option<String>,
}

/// The tenant's tokens, each with its state at `now`.
fn token_rows(tokens: &[TokenRecord], session: &Session, now: jiff::Timestamp) -> Markup {
    html! {
        table {
            caption { "Tokens of this tenant" }
            thead { tr {
                th scope="col" { "Label" } th scope="col" { "Scope" } th scope="col" { "Status" }
                th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" }
                th scope="col" { span class="visually-hidden" { "Actions" } }
            } }
            tbody {
                @for token in tokens {
                    @let status = tenancy::token_status(token, now).as_str();
                    tr {
                        td { (token.label.as_deref().unwrap_or("(no label)")) br; code class="small" { (token.token_id) } }
                        td { (token.scope.as_str()) }
                        td { span class={ "badge " (status) } { (status) } }
                        td { (when(&token.created_at)) }
                        td { @if let Some(at) = &token.expires_at { (when(at)) } @else { "never" } }
                        td { @if let Some(at) = &token.last_used_at { (when(at)) } @else { "never" } }
                        td {
                            @if status == "active" {
                                form method="post" action={ "/admin/provisioning/tokens/" (token.token_id) "/revoke" } data-confirm="Revoke this token? Whoever uses it is refused from the next request." {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" class="danger" aria-label={ "Revoke " (token.label.as_deref().unwrap_or(&token.token_id)) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn generate_form(session: &Session) -> Markup {
    html! {
        form method="post" action="/admin/provisioning/tokens" class="card" {
            input type="hidden" name="csrf" value=(session.csrf);
            h3 { "Generate token" }
            div class="row" {
                div { label for="label" { "Label" } input id="label" name="label" placeholder="Entra ID production" maxlength="200"; }
                div { label for="scope" { "Scope" }
                    select id="scope" name="scope" {
                        option value="scim" selected { "SCIM (for the identity provider)" }
                        option value="admin" { "Admin (console and admin API)" }
                        option value="audit" { "Audit (read-only)" }
                    }
                }
                div { label for="expires" { "Expires" }
                    select id="expires" name="expires" {
                        option value="" { "never" }
                        option value="30d" { "in 30 days" }
                        option value="90d" { "in 90 days" }
                        option value="365d" selected { "in a year" }
                    }
                }
            }
            button type="submit" class="primary" { "Generate token" }
        }
    }
}

/// The settings form of the daily run, the safeguard and the grace.
fn schedule_form(session: &Session, settings: &SyncSettings, next_run: Option<String>) -> Markup {
    let schedule = settings.schedule.as_ref();
    html! {
        form method="post" action="/admin/provisioning/schedule" class="card" {
            input type="hidden" name="csrf" value=(session.csrf);
            h3 { "Daily Synchronize" }
            div class="check" {
                input id="daily" name="daily" type="checkbox" checked[schedule.is_some()];
                label for="daily" { "Synchronize every day" }
            }
            div class="row" {
                div { label for="time" { "Local time" }
                    input id="time" name="time" type="time" value=(schedule.map_or("02:00", |schedule| schedule.time.as_str())); }
                div { label for="time_zone" { "Time zone (IANA)" }
                    input id="time_zone" name="time_zone" list="zones" value=(schedule.map_or("UTC", |schedule| schedule.time_zone.as_str()));
                    datalist id="zones" { @for zone in ["UTC", "Europe/London", "Europe/Paris", "Europe/Berlin", "America/New_York", "America/Chicago", "America/Los_Angeles", "Asia/Tokyo", "Asia/Singapore", "Australia/Sydney"] { option value=(zone) {} } }
                }
            }
            div class="row" {
                div { label for="share" { "Hold a run that removes more than (% of active members)" }
                    input id="share" name="share_percent" type="number" min="0" max="100" value=(settings.safeguard.share_percent); }
                div { label for="minimum" { "and at least (members)" }
                    input id="minimum" name="minimum" type="number" min="0" value=(settings.safeguard.minimum); }
                div { label for="grace" { "Days a leaver stays restorable" }
                    input id="grace" name="grace_days" type="number" min="0" max="3650" value=(settings.grace_days); }
            }
            @if let Some(next_run) = next_run { p class="hint" { "Next daily run: " (when(&next_run)) } }
            button type="submit" { "Save schedule" }
        }
    }
}

pub fn run_rows(runs: &[SyncRunRow]) -> Markup {
    html! {
        table {
            caption { "Synchronize runs, newest first" }
            thead { tr {
                th scope="col" { "Started" } th scope="col" { "Trigger" } th scope="col" { "By" }
                th scope="col" { "Status" } th scope="col" { "Changes" } th scope="col" { "Duration" }
            } }
            tbody {
                @for run in runs {
                    tr {
                        td { a href={ "/admin/provisioning/syncs/" (run.run_id) } { (when(&run.started_at)) } }
                        td { (run.trigger) }
                        td { (actor_text(&run.actor)) }
                        td { span class={ "badge " (run.status) } { (run.status) } }
                        td { (counts("changes", &run.counts)) }
                        td { @if let Some(ms) = run.duration_ms { (ms) " ms" } }
                    }
                }
            }
        }
    }
}

/// Who a run's actor was, in words (as the audit reports write it).
fn actor_text(actor: &serde_json::Value) -> String {
    serde_json::from_value::<events::Actor>(actor.clone()).map_or_else(
        |_| actor.to_string(),
        |actor| {
            projections::audit::Word { actor, request_id: None, user_agent: None, run_id: None }
                .actor_text()
        },
    )
}

fn preview_table(items: &[sync::plan::Effect]) -> Markup {
    html! {
        table {
            caption { "Changes the next Synchronize makes" }
            thead { tr {
                th scope="col" { "User" } th scope="col" { "Change" } th scope="col" { "Properties" }
                th scope="col" { "Roles" } th scope="col" { "Reason" }
            } }
            tbody {
                @for effect in items {
                    tr {
                        td { (effect.user_name) }
                        td { span class={ "badge " (action_text(effect)) } { (action_text(effect)) } }
                        td {
                            @if !effect.changes.is_empty() {
                                ul class="diff" {
                                    @for (name, change) in &effect.changes {
                                        li { code { (name) } ": " (value_text(&change.from)) " → " (value_text(&change.to)) }
                                    }
                                }
                            }
                        }
                        td { @if let Some(roles) = &effect.roles { (roles.from.join(", ")) " → " (roles.to.join(", ")) } }
                        td { (effect.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// The next run of the caller's tenant with one page of its effects, from
/// the decided previews (`sync::previews`).
async fn next_run(
    state: &AppState,
    caller: &Caller,
    offset: u64,
    limit: u64,
) -> Result<Lookup, Error> {
    let (previews, store) = (state.previews.clone(), state.store.clone());
    let tenant = caller.principal.tenant_id.clone();
    blocking(move || previews.page(&store, &tenant, offset, limit)).await
}

/// "N users, M groups pending", or, while a large pending set is being
/// decided in the background, how many have changes to decide and a link
/// back to `here` (which the console's script follows by itself).
fn pending_summary(lookup: &Lookup, here: &str) -> Markup {
    html! {
        @match lookup {
            Lookup::Ready(preview) => {
                p class="big" id="pending-summary" { (preview.pending_users) " users, " (preview.pending_groups) " groups pending" }
            }
            Lookup::Deciding { users, groups } => {
                p class="big" id="pending-summary" role="status" data-refresh="2" {
                    "Deciding what the next Synchronize would change"
                    @if let (Some(users), Some(groups)) = (users, groups) {
                        " for " (users) " users and " (groups) " groups with changes"
                    }
                    "…"
                }
                p { "A large change (a new mapping, a first import) takes a few seconds to preview. " a href=(here) { "Refresh" } }
            }
        }
    }
}

/// The preview's counts and one page of its effects; `base` pages through
/// the rest (`None`: a draft's preview, which is not kept to page through).
pub fn preview_section(preview: &sync::Preview, base: Option<&str>) -> Markup {
    html! {
        (counts("pending changes", &preview.counts.to_value()))
        @if let Some(reason) = &preview.safeguard {
            (notice("warn", &format!("A run now would be held for approval: {reason}")))
        }
        (preview_table(&preview.items))
        @if let Some(base) = base {
            (pager(base, preview.offset, preview.items.len(), preview.total, PAGE))
        } @else if preview.total > preview.items.len() as u64 {
            p { "The first " (preview.items.len()) " of " (preview.total) " changes are shown." }
        }
    }
}

fn action_text(effect: &sync::plan::Effect) -> &'static str {
    match effect.action {
        sync::plan::Action::Join => "join",
        sync::plan::Action::Restore => "restore",
        sync::plan::Action::Update if effect.changes.is_empty() && effect.roles.is_some() => {
            "role change"
        }
        sync::plan::Action::Update => "update",
        sync::plan::Action::Disable => "disable",
        sync::plan::Action::Enable => "enable",
        sync::plan::Action::Leave => "leave",
        sync::plan::Action::Purge => "purge",
        sync::plan::Action::Rejected => "rejected",
        sync::plan::Action::Held => "held",
    }
}

pub fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "(none)".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn sync_button(session: &Session) -> Markup {
    html! {
        form method="post" action="/admin/provisioning/sync" data-busy="Synchronizing… the result appears when the run ends." {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" class="primary" { "Synchronize" }
            span class="busy" role="status" aria-live="polite" {}
        }
    }
}

pub async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let lookup = next_run(&state, &caller, 0, 0).await?;
    let tenant = caller.principal.tenant_id.clone();
    let (tokens, runs) = state.store.read(|connection| {
        let tokens = tenancy_projection::list_tokens(connection, Some(&tenant))?;
        let (_, runs) = members::runs(connection, &tenant, 0, 5)?;
        Ok((tokens, runs))
    })?;
    let settings_value =
        settings::current(&state.store, &caller.principal.tenant_id, Setting::Sync)?;
    let settings: SyncSettings = serde_json::from_value(settings_value).unwrap_or_default();
    let next_run = settings
        .schedule
        .as_ref()
        .and_then(|schedule| crate::sync::scheduler::next_fire(schedule, state.store.now()).ok())
        .map(events::time::format_millis);
    let now = state.store.now();
    let activated = tokens.iter().any(|token| {
        token.scope == TokenScope::Scim && tenancy::token_status(token, now) == TokenStatus::Active
    });
    let url = format!("{}/scim/v2", state.config.origin(&headers));
    let held = runs.iter().find(|run| run.status == RunStatus::Held);
    let body = html! {
        (fixed_notice(paging.notice.as_deref()))
        section aria-labelledby="status" class="card" {
            h2 id="status" { "Status" }
            @if activated {
                p { span class="badge active" { "Activated" } " Identity providers can push users and groups with a SCIM token." }
            } @else {
                p { span class="badge" { "Not activated" } " No SCIM token is active: an identity provider cannot reach this tenant yet." }
                form method="post" action="/admin/provisioning/tokens" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="scope" value="scim";
                    input type="hidden" name="label" value="identity provider";
                    input type="hidden" name="expires" value="365d";
                    button type="submit" class="primary" { "Activate provisioning" }
                }
            }
            label for="tenant-url" { "Tenant URL" }
            div class="copy" {
                input id="tenant-url" readonly value=(url);
                button type="button" data-copy="tenant-url" { "Copy" }
            }
        }
        section aria-labelledby="pending" class="card" {
            h2 id="pending" { "Pending" }
            (pending_summary(&lookup, "/admin/provisioning"))
            @if let Lookup::Ready(preview) = &lookup {
                (counts("pending changes", &preview.counts.to_value()))
                @if let Some(reason) = &preview.safeguard {
                    (notice("warn", &format!("A run now would be held for approval: {reason}")))
                }
            }
            p { a href="/admin/provisioning/pending" { "Review the pending changes" } }
            (sync_button(&session))
            @if let Some(run) = held {
                div class="held" {
                    (notice("warn", &format!("A run is held for approval: {}", run.held_reason.as_deref().unwrap_or("the deprovisioning safeguard"))))
                    p { a href={ "/admin/provisioning/syncs/" (run.run_id) } { "Review the held run" } }
                }
            }
        }
        section aria-labelledby="history" class="card" {
            h2 id="history" { "Recent runs" }
            (run_rows(&runs))
            p { a href="/admin/provisioning/syncs" { "All runs" } }
        }
        section aria-labelledby="schedule" {
            h2 id="schedule" { "Schedule" }
            (schedule_form(&session, &settings, next_run))
        }
        section aria-labelledby="tokens" {
            h2 id="tokens" { "Tokens" }
            (token_rows(&tokens, &session, now))
            (generate_form(&session))
        }
    };
    Ok(respond(
        StatusCode::OK,
        page::page("User Provisioning", Some(&session), Section::Provisioning, body),
    ))
}

pub async fn pending(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let offset = paging.offset.unwrap_or(0);
    let lookup = next_run(&state, &caller, offset, PAGE).await?;
    let here = format!("/admin/provisioning/pending?offset={offset}");
    let body = html! {
        (pending_summary(&lookup, &here))
        (sync_button(&session))
        @if let Lookup::Ready(preview) = &lookup {
            (preview_section(preview, Some("/admin/provisioning/pending")))
        }
    };
    Ok(respond(
        StatusCode::OK,
        page::page("Pending changes", Some(&session), Section::Pending, body),
    ))
}

/// Starts a run and shows its page: the finished run when it ends within
/// `console_sync_wait`, else the run in progress (its page follows the
/// batches as they are applied). The run goes on if the browser leaves.
pub async fn synchronize(
    State(state): State<AppState>,
    caller: Caller,
    _form: Form,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id.clone();
    let store = state.store.clone();
    let context = caller.context;
    let mut run = tokio::task::spawn_blocking(move || {
        sync::run(&store, &tenant, Trigger::Manual, context, RunOptions::default())
    });
    let finished = |joined: Result<Result<SyncRunRow, Error>, tokio::task::JoinError>| {
        let run = joined
            .map_err(|error| Error::Internal(format!("the run's task failed: {error}")))??;
        Ok::<_, PageError>(see_other(&format!("/admin/provisioning/syncs/{}", run.run_id)))
    };
    tokio::select! {
        joined = &mut run => return finished(joined),
        () = tokio::time::sleep(state.config.console_sync_wait) => {}
    }
    // Past the wait: show the run as soon as it has started (it may still
    // be reading what is pending), or its end if that comes first.
    let tenant = caller.principal.tenant_id.clone();
    loop {
        let running =
            state.store.read(|connection| Ok(members::unfinished_run(connection, &tenant)?))?;
        if let Some(running) = running {
            return Ok(see_other(&format!("/admin/provisioning/syncs/{}", running.run_id)));
        }
        tokio::select! {
            joined = &mut run => return finished(joined),
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}

pub async fn runs(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let offset = paging.offset.unwrap_or(0);
    let tenant = caller.principal.tenant_id;
    let (total, runs) =
        state.store.read(|connection| Ok(members::runs(connection, &tenant, offset, PAGE)?))?;
    let body = html! {
        (sync_button(&session))
        (run_rows(&runs))
        (pager("/admin/provisioning/syncs", offset, runs.len(), total, PAGE))
    };
    Ok(respond(StatusCode::OK, page::page("Sync history", Some(&session), Section::Syncs, body)))
}

pub async fn one_run(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id;
    let run = state.store.read(|connection| Ok(members::run(connection, &tenant, &run_id)?))?;
    let run = run.ok_or_else(|| Error::not_found(format!("Synchronize run {run_id}")))?;
    let body = html! {
        dl class="facts" {
            div { dt { "Status" } dd {
                span id="run-status" class={ "badge " (run.status) } { (run.status) }
                @if run.status == RunStatus::Running {
                    " " span role="status" data-refresh="2" { "Applying in batches; this page follows the run. " a href={ "/admin/provisioning/syncs/" (run.run_id) } { "Refresh" } }
                }
            } }
            div { dt { "Trigger" } dd { (run.trigger) } }
            div { dt { "By" } dd { (actor_text(&run.actor)) } }
            div { dt { "Started" } dd { (when(&run.started_at)) } }
            @if let Some(finished) = &run.finished_at { div { dt { "Finished" } dd { (when(finished)) } } }
            @if let Some(ms) = run.duration_ms { div { dt { "Duration" } dd { (ms) " ms" } } }
            div { dt { "Log positions" } dd { (run.from_position) "–" (run.to_position) } }
            @if let Some(by) = &run.applied_by { div { dt { "Applied by run" } dd { a href={ "/admin/provisioning/syncs/" (by) } { (by) } } } }
            @if let Some(approves) = &run.approves { div { dt { "Approves run" } dd { a href={ "/admin/provisioning/syncs/" (approves) } { (approves) } } } }
        }
        h2 { "Changes" }
        (counts("changes", &run.counts))
        @if let Some(error) = &run.error { (notice("error", error)) }
        @if run.status == RunStatus::Held {
            (notice("warn", &format!("Held for approval: {}", run.held_reason.as_deref().unwrap_or("the deprovisioning safeguard"))))
            p { "Approve applies the held changes now, as a new run. Reject discards the run; the changes stay pending." }
            div class="actions" {
                form method="post" action={ "/admin/provisioning/syncs/" (run.run_id) "/approve" } data-busy="Applying…" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" class="primary" { "Approve" }
                }
                form method="post" action={ "/admin/provisioning/syncs/" (run.run_id) "/reject" } data-confirm="Reject this run? Its changes stay pending." {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" class="danger" { "Reject" }
                }
            }
        } @else if let Some(reason) = &run.held_reason {
            p { "It was held: " (reason) }
        }
        p { a href="/admin/members" { "See the members" } " · " a href="/admin/provisioning" { "Back to User Provisioning" } }
    };
    Ok(respond(StatusCode::OK, page::page("Synchronize run", Some(&session), Section::Syncs, body)))
}

async fn decide(
    state: AppState,
    caller: Caller,
    run_id: String,
    approve: bool,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id.clone();
    let store = state.store.clone();
    let context = caller.context;
    let decided = run_id.clone();
    let run = blocking(move || {
        sync::decide(&store, &tenant, &decided, approve, context, RunOptions::default())
    })
    .await?;
    Ok(see_other(&format!("/admin/provisioning/syncs/{}", run.run_id)))
}

pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    decide(state, caller, run_id, true).await
}

pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    decide(state, caller, run_id, false).await
}

pub async fn save_schedule(
    State(state): State<AppState>,
    caller: Caller,
    form: Form,
) -> Result<Response, PageError> {
    let number = |name: &str| -> Result<u32, Error> {
        form.text(name).parse::<u32>().map_err(|_| {
            Error::invalid(format!("{} must be a whole number", name.replace('_', " ")))
        })
    };
    let schedule = (form.get("daily") == Some("on"))
        .then(|| json!({ "time": form.text("time"), "time_zone": form.text("time_zone") }));
    let body = json!({
        "schedule": schedule,
        "safeguard": { "share_percent": number("share_percent")?, "minimum": number("minimum")? },
        "grace_days": number("grace_days")?,
    });
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body.clone());
    let changed = settings::set(&state.store, &tenant, Setting::Sync, body, caller.context)
        .await
        .map_err(Error::from)?;
    Ok(see_other(if changed {
        "/admin/provisioning?notice=schedule-saved"
    } else {
        "/admin/provisioning?notice=unchanged"
    }))
}

pub async fn issue_token(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    form: Form,
) -> Result<Response, PageError> {
    let label = Some(form.text("label").to_owned()).filter(|label| !label.is_empty());
    let request =
        TokenRequest::parse(form.text("scope"), Some(form.text("expires")), label.clone())?;
    let recorded =
        json!({ "scope": request.scope.as_str(), "expires": form.text("expires"), "label": label });
    let caller = caller.with_body(recorded);
    let (token, secret) = tenancy::issue_token(
        &state.store,
        TenantRef::Id(caller.principal.tenant_id.clone()),
        request,
        caller.context,
    )
    .await
    .map_err(Error::from)?;
    let body = html! {
        (notice("warn", "Copy this token now: it is shown once, and rollcall keeps only its hash. Anyone holding it can act with its scope."))
        label for="new-token" { "New " (token.scope.as_str()) " token " (token.label.as_deref().unwrap_or("")) }
        div class="copy" {
            input id="new-token" readonly value=(secret.expose());
            button type="button" data-copy="new-token" { "Copy" }
        }
        @if token.scope == TokenScope::Scim {
            p { "In the identity provider, paste it as the Secret Token, with the Tenant URL from the User Provisioning page." }
        }
        p { a href="/admin/provisioning" { "Done: back to User Provisioning" } }
    };
    let mut response = respond(
        StatusCode::CREATED,
        page::page("Token generated", Some(&session), Section::Provisioning, body),
    );
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(token_id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    let _: Revoked = tenancy::revoke_token(
        &state.store,
        &token_id,
        Some(caller.principal.tenant_id),
        caller.context,
    )
    .await
    .map_err(Error::from)?;
    Ok(see_other("/admin/provisioning?notice=revoked"))
}

fn request_rows(caption: &str, rows: &[RequestRow]) -> Markup {
    html! {
        table {
            caption { (caption) }
            thead { tr {
                th scope="col" { "Time" } th scope="col" { "Request" } th scope="col" { "Status" }
                th scope="col" { "Took" } th scope="col" { "Identity provider" } th scope="col" { "Detail" }
            } }
            tbody {
                @for row in rows {
                    tr class=[(row.status >= 400).then_some("failed")] {
                        td { (when(&row.at)) }
                        td { code { (row.method) " " (row.target) } }
                        td { span class={ "badge " @if row.status >= 400 { "failed" } @else { "active" } } { (row.status) } }
                        td { (row.duration_ms) " ms" }
                        td { (row.user_agent.as_deref().unwrap_or("")) }
                        td { (row.error.as_deref().unwrap_or("")) @if !row.request_id.is_empty() { br; span class="small" { "request " (row.request_id) } } }
                    }
                }
            }
        }
    }
}

pub async fn log(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let offset = paging.offset.unwrap_or(0);
    let tenant = caller.principal.tenant_id;
    // The log has no count (it would scan a tenant's rows); ask for one
    // more row than a page to know whether a next page exists.
    let (failures, recent) = state.store.read(|connection| {
        let failures = if offset == 0 {
            requests::recent(connection, &tenant, true, 0, 20)?
        } else {
            Vec::new()
        };
        let recent = requests::recent(connection, &tenant, false, offset, PAGE + 1)?;
        Ok((failures, recent))
    })?;
    let more = recent.len() as u64 > PAGE;
    let shown = recent.get(..recent.len().min(PAGE as usize)).unwrap_or_default();
    let body = html! {
        p { "SCIM requests of this tenant's identity providers that changed something or failed, newest first. Successful reads are not kept." }
        @if offset == 0 {
            h2 { "Failures" }
            @if failures.is_empty() { p { "No failed request is in the log." } } @else { (request_rows("The latest failed requests", &failures)) }
            h2 { "All requests" }
        }
        (request_rows("Requests, newest first", shown))
        nav class="pager" aria-label="Pages" {
            @if offset > 0 { a href={ "/admin/provisioning/log?offset=" (offset.saturating_sub(PAGE)) } rel="prev" { "Newer" } }
            @if more { a href={ "/admin/provisioning/log?offset=" (offset + PAGE) } rel="next" { "Older" } }
        }
    };
    Ok(respond(StatusCode::OK, page::page("Provisioning log", Some(&session), Section::Log, body)))
}
