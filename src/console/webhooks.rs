//! The Webhooks pages: the tenant's endpoints (failing ones first) with a
//! form to add one, and one endpoint with its last deliveries (failures
//! first), Send test event, Retry now, Redeliver, Pause or Resume, Rotate
//! secret (the new one shown once) and Delete. Every action is the same
//! command as the admin API's.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::{Markup, html};
use projections::feed;
use projections::webhooks::{self as projection, WebhookRow, WebhookStatus};
use serde_json::json;

use super::page::{self, PageError, Section, notice, respond, see_other, when};
use super::session::{Form, Session};
use crate::auth::Caller;
use crate::error::Error;
use crate::state::AppState;
use crate::webhooks::state::{Attempt, DeliveryState};
use crate::webhooks::{self, SettingsInput};

fn endpoint(state: &AppState, tenant: &str, id: &str) -> Result<WebhookRow, Error> {
    state
        .store
        .read(|connection| Ok(projection::webhook(connection, tenant, id)?))?
        .ok_or_else(|| Error::not_found(format!("webhook endpoint {id}")))
}

fn status_badge(row: &WebhookRow, delivery: Option<&DeliveryState>) -> Markup {
    let failing = delivery.is_some_and(|state| state.attempts > 0);
    let (class, text) = match row.status {
        WebhookStatus::Disabled => ("left", "disabled"),
        WebhookStatus::Paused => ("disabled", "paused"),
        WebhookStatus::Active if failing => ("left", "failing"),
        WebhookStatus::Active => ("active", "active"),
    };
    html! { span class={ "badge " (class) } { (text) } }
}

fn create_form(session: &Session) -> Markup {
    html! {
        form method="post" action="/admin/webhooks" class="stack" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="webhook-url" { "Endpoint URL" }
            input id="webhook-url" name="url" type="url" required placeholder="https://app.example.com/rollcall/webhooks" class="wide";
            label for="webhook-description" { "Description" }
            input id="webhook-description" name="description" maxlength="200";
            fieldset {
                legend { "Events (none ticked: all of them)" }
                @for kind in feed::TYPES {
                    label class="inline" { input type="checkbox" name="type" value=(kind); " " (kind) }
                }
            }
            label class="inline" { input type="checkbox" name="batch" value="1"; " Batches of up to 100 events per request" }
            div class="actions" { button type="submit" class="primary" { "Add endpoint" } }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id;
    let rows =
        state.store.read(|connection| Ok(projection::webhooks(connection, Some(&tenant))?))?;
    let mut listed = Vec::new();
    for row in rows {
        let delivery = state.webhooks.deliveries.existing(&tenant, &row.webhook_id)?;
        listed.push((row, delivery));
    }
    // Failing and disabled endpoints first: they are what needs an admin.
    listed.sort_by_key(|(row, delivery)| {
        let failing = delivery.as_ref().is_some_and(|state| state.attempts > 0);
        (row.status != WebhookStatus::Disabled && !failing, row.created_at.clone())
    });
    let body = html! {
        p class="hint" { "rollcall pushes each member event to these endpoints, in order, signed per Standard Webhooks (docs/events.md), and retries until it gets a 2xx." }
        @if listed.is_empty() {
            p { "No endpoints yet." }
        } @else {
            div class="scroll" {
                table {
                    caption { "Endpoints" }
                    thead { tr { th scope="col" { "Status" } th scope="col" { "URL" } th scope="col" { "Delivered" } th scope="col" { "Last answer" } th scope="col" { "Next retry" } } }
                    tbody {
                        @for (row, delivery) in &listed {
                            tr {
                                td { (status_badge(row, delivery.as_ref())) }
                                td { a href={ "/admin/webhooks/" (row.webhook_id) } { (row.settings.url) } @if let Some(text) = &row.settings.description { br; span class="hint" { (text) } } }
                                td { (delivery.as_ref().map_or(0, |state| state.delivered)) }
                                td { @match delivery.as_ref().and_then(|state| state.last_status) { Some(status) => (status), None => @if let Some(error) = delivery.as_ref().and_then(|state| state.last_error.as_deref()) { (error) } @else { "—" } } }
                                td { @match delivery.as_ref().and_then(|state| state.next_attempt_at.as_deref()) { Some(at) => (when(at)), None => "—" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add an endpoint" }
        (create_form(&session))
    };
    Ok(respond(StatusCode::OK, page::page("Webhooks", Some(&session), Section::Webhooks, body)))
}

/// A page that shows a secret once, never cached.
fn secret_page(session: &Session, row: &WebhookRow, secret: &str, title: &str) -> Response {
    let body = html! {
        (notice("warn", "Copy this signing secret now: it is shown once. Your endpoint verifies each delivery's webhook-signature with it."))
        label for="new-secret" { "Signing secret of " (row.settings.url) }
        div class="copy" {
            input id="new-secret" readonly value=(secret);
            button type="button" data-copy="new-secret" { "Copy" }
        }
        p { a href={ "/admin/webhooks/" (row.webhook_id) } { "Done: to the endpoint" } }
    };
    let mut response =
        respond(StatusCode::OK, page::page(title, Some(session), Section::Webhooks, body));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    form: Form,
) -> Result<Response, PageError> {
    let types: Vec<String> =
        form.0.iter().filter(|(key, _)| key == "type").map(|(_, value)| value.clone()).collect();
    let description = Some(form.text("description").to_owned()).filter(|text| !text.is_empty());
    let input = SettingsInput {
        url: Some(form.text("url").to_owned()),
        types: Some((!types.is_empty()).then_some(types.clone())),
        description: Some(description.clone()),
        batch: Some(form.get("batch").is_some()),
        status: None,
    };
    let recorded = json!({ "url": form.text("url"), "types": types, "description": description });
    let caller = caller.with_body(recorded);
    let tenant = caller.principal.tenant_id.clone();
    let allow = state.config.webhooks.allow_private_targets;
    let (row, secret) =
        webhooks::create(&state.store, &tenant, input, allow, caller.context).await?;
    Ok(secret_page(&session, &row, &secret, "Endpoint added"))
}

fn attempts_table(
    caption: &str,
    session: &Session,
    row: &WebhookRow,
    attempts: &[Attempt],
) -> Markup {
    html! {
        div class="scroll" {
            table {
                caption { (caption) }
                thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Message" } th scope="col" { "Try" } th scope="col" { "Answer" } th scope="col" { "Latency" } th scope="col" { "Redeliver" } } }
                tbody {
                    @for attempt in attempts {
                        @let ok = attempt.status.is_some_and(|status| (200..300).contains(&status));
                        tr {
                            td { (when(&attempt.at)) }
                            td { (attempt.kind) }
                            td { code { (attempt.message_id) } @if attempt.events > 1 { " (" (attempt.events) " events)" } }
                            td { (attempt.attempt) }
                            td {
                                span class={ "badge " (if ok { "active" } else { "left" }) } { @match attempt.status { Some(status) => (status), None => "no answer" } }
                                @if let Some(error) = &attempt.error { @if !ok { br; span class="hint" { (error) } } }
                                @if let Some(response) = &attempt.response { details { summary { "Response" } pre { (response) } } }
                            }
                            td { (attempt.latency_ms) " ms" }
                            td {
                                @if attempt.events == 1 && attempt.kind != "test" {
                                    form method="post" action={ "/admin/webhooks/" (row.webhook_id) "/redeliver" } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="event_id" value=(attempt.message_id);
                                        button type="submit" aria-label={ "Redeliver " (attempt.message_id) } { "Redeliver" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn action(session: &Session, row: &WebhookRow, path: &str, label: &str, class: &str) -> Markup {
    html! {
        form method="post" action={ "/admin/webhooks/" (row.webhook_id) "/" (path) } class="inline" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" class=(class) { (label) }
        }
    }
}

fn notice_of(key: Option<&str>) -> Markup {
    let text = match key {
        Some("paused") => "Paused: events wait, in order, until you resume.",
        Some("resumed") => "Resumed: the endpoint catches up from where it stopped.",
        Some("retry") => "The waiting message is being tried again now.",
        _ => return html! {},
    };
    notice("ok", text)
}

#[derive(Debug, serde::Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    notice: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ShowQuery>,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id;
    let row = endpoint(&state, &tenant, &id)?;
    let delivery = state.webhooks.deliveries.existing(&tenant, &id)?;
    let failed = state.webhooks.deliveries.attempts(&tenant, &id, true, 20)?;
    let recent = state.webhooks.deliveries.attempts(&tenant, &id, false, 50)?;
    let body = html! {
        (notice_of(query.notice.as_deref()))
        dl class="facts" {
            div { dt { "Status" } dd { (status_badge(&row, delivery.as_ref())) @if let Some(reason) = &row.disabled_reason { " " (reason) } } }
            div { dt { "URL" } dd { code { (row.settings.url) } } }
            div { dt { "Events" } dd { @match &row.settings.types { Some(types) => (types.join(", ")), None => "all" } } }
            div { dt { "Batches" } dd { (if row.settings.batch { "up to 100 events per request" } else { "one event per request" }) } }
            @if let Some(state) = &delivery {
                div { dt { "Delivered" } dd { (state.delivered) } }
                @if state.attempts > 0 { div { dt { "Failed tries of the waiting message" } dd { (state.attempts) } } }
                @if let Some(at) = &state.next_attempt_at { div { dt { "Next retry" } dd { (when(at)) } } }
                @if let Some(at) = &state.failing_since { div { dt { "Failing since" } dd { (when(at)) } } }
            }
            @if let Some(at) = &row.secret_rotated_at { div { dt { "Secret rotated" } dd { (when(at)) } } }
            @if let Some(until) = &row.previous_secret_valid_until { div { dt { "Previous secret signs until" } dd { (when(until)) } } }
        }
        div class="actions" {
            (action(&session, &row, "test", "Send test event", ""))
            @if delivery.as_ref().is_some_and(|state| state.attempts > 0) { (action(&session, &row, "retry", "Retry now", "primary")) }
            @match row.status {
                WebhookStatus::Active => (action(&session, &row, "pause", "Pause", "")),
                WebhookStatus::Paused | WebhookStatus::Disabled => (action(&session, &row, "resume", "Resume", "primary")),
            }
            (action(&session, &row, "rotate", "Rotate secret", ""))
        }
        @if !failed.is_empty() { (attempts_table("Failed deliveries", &session, &row, &failed)) }
        @if recent.is_empty() { p { "No deliveries yet." } } @else { (attempts_table("Last deliveries", &session, &row, &recent)) }
        h2 { "Delete" }
        form method="post" action={ "/admin/webhooks/" (row.webhook_id) "/delete" } {
            input type="hidden" name="csrf" value=(session.csrf);
            label class="inline" { input type="checkbox" name="confirm" value="1" required; " I understand: this endpoint gets nothing more, and its secret and delivery history are forgotten." }
            div class="actions" { button type="submit" class="danger" { "Delete endpoint" } }
        }
        p { a href="/admin/webhooks" { "All endpoints" } }
    };
    Ok(respond(
        StatusCode::OK,
        page::page("Webhook endpoint", Some(&session), Section::Webhooks, body),
    ))
}

async fn set_status(
    state: &AppState,
    caller: Caller,
    id: &str,
    status: &str,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id.clone();
    let input = SettingsInput { status: Some(status.to_owned()), ..SettingsInput::default() };
    let caller = caller.with_body(json!({ "status": status }));
    let allow = state.config.webhooks.allow_private_targets;
    webhooks::change(&state.store, &tenant, id, input, allow, caller.context).await?;
    let notice = if status == "paused" { "paused" } else { "resumed" };
    Ok(see_other(&format!("/admin/webhooks/{id}?notice={notice}")))
}

pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    set_status(&state, caller, &id, "paused").await
}

pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    set_status(&state, caller, &id, "active").await
}

pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id;
    endpoint(&state, &tenant, &id)?;
    state.webhooks.deliveries.rewind(&tenant, &id, None)?;
    Ok(see_other(&format!("/admin/webhooks/{id}?notice=retry")))
}

/// The page after a one-off send: how it went.
fn sent_page(session: &Session, row: &WebhookRow, attempt: &Attempt, title: &str) -> Response {
    let ok = attempt.status.is_some_and(|status| (200..300).contains(&status));
    let body = html! {
        @if ok {
            (notice("ok", &format!("Delivered: the endpoint answered {} in {} ms.", attempt.status.unwrap_or_default(), attempt.latency_ms)))
        } @else {
            (notice("error", &format!("Not delivered: {}.", attempt.error.as_deref().unwrap_or("no answer"))))
        }
        (attempts_table("This delivery", session, row, std::slice::from_ref(attempt)))
        p { a href={ "/admin/webhooks/" (row.webhook_id) } { "Back to the endpoint" } }
    };
    respond(StatusCode::OK, page::page(title, Some(session), Section::Webhooks, body))
}

pub async fn test(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id;
    let row = endpoint(&state, &tenant, &id)?;
    let message = webhooks::test_message(&state.store, &tenant);
    let attempt = state.webhooks.deliverer.send_once(&row, &message, "test").await?;
    Ok(sent_page(&session, &row, &attempt, "Test event sent"))
}

pub async fn redeliver(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id;
    let row = endpoint(&state, &tenant, &id)?;
    let attempt = state.webhooks.deliverer.redeliver(&row, form.text("event_id")).await?;
    Ok(sent_page(&session, &row, &attempt, "Event redelivered"))
}

pub async fn rotate(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id.clone();
    let overlap = Duration::from_secs(24 * 3600);
    let (row, secret) =
        webhooks::rotate(&state.store, &tenant, &id, overlap, caller.context).await?;
    Ok(secret_page(&session, &row, &secret, "Secret rotated"))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, PageError> {
    if form.get("confirm").is_none() {
        return Err(Error::invalid("tick the box to confirm the deletion").into());
    }
    let tenant = caller.principal.tenant_id.clone();
    webhooks::delete(&state.store, &state.webhooks.deliveries, &tenant, &id, caller.context)
        .await?;
    Ok(see_other("/admin/webhooks"))
}
