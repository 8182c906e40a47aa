//! The webhook routes of the admin API: endpoints (create, list, show,
//! change, pause and resume, delete, rotate the secret), their deliveries,
//! redelivery and a test event. Handlers translate HTTP to
//! `crate::webhooks` and back.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use projections::feed::Cursor;
use projections::webhooks as projection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::ErrorBody;
use super::provisioning::{PAGE_MAX, query};
use super::{ApiId, ApiJson};
use crate::auth::Caller;
use crate::error::{ApiError, Error};
use crate::state::AppState;
use crate::webhooks::{self, AttemptView, NewWebhook, SettingsInput, WebhookView};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, change, remove))
        .routes(routes!(rotate))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(test))
}

const ID: &str = "The endpoint's id";

fn input<T: serde::de::DeserializeOwned>(body: Value, fields: &str) -> Result<T, Error> {
    serde_json::from_value(body)
        .map_err(|error| Error::invalid(format!("expected {{{fields}}}: {error}")))
}

/// An endpoint with its secret: the answer to a create or a rotation.
#[derive(Debug, Serialize, ToSchema)]
struct WebhookWithSecret<'a> {
    #[serde(flatten)]
    webhook: WebhookView<'a>,
    /// `whsec_` and base64: shown in this answer only.
    secret: String,
}

/// The tenant's endpoints.
#[derive(Debug, Serialize, ToSchema)]
struct WebhookList<'a> {
    webhooks: Vec<WebhookView<'a>>,
}

/// An endpoint's latest attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct AttemptList<'a> {
    deliveries: Vec<AttemptView<'a>>,
}

fn endpoint(state: &AppState, tenant: &str, id: &str) -> Result<projection::WebhookRow, Error> {
    state
        .store
        .read(|connection| Ok(projection::webhook(connection, tenant, id)?))?
        .ok_or_else(|| Error::not_found(format!("webhook endpoint {id}")))
}

fn delivery(
    state: &AppState,
    row: &projection::WebhookRow,
) -> Result<Option<webhooks::state::DeliveryState>, Error> {
    state.webhooks.deliveries.existing(&row.tenant_id, &row.webhook_id)
}

fn view(state: &AppState, row: &projection::WebhookRow) -> Result<Value, Error> {
    Ok(webhooks::view(row, delivery(state, row)?.as_ref()))
}

/// The endpoint with its new secret: the one answer that shows it.
fn with_secret(
    state: &AppState,
    row: &projection::WebhookRow,
    secret: String,
) -> Result<Response, Error> {
    let delivery = delivery(state, row)?;
    let webhook = WebhookView::of(row, delivery.as_ref());
    Ok(Json(WebhookWithSecret { webhook, secret }).into_response())
}

/// Adds an endpoint; deliveries start after the feed's latest event.
#[utoipa::path(post, operation_id = "create_webhook", path = "/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, description = "The endpoint, with its secret (shown this once)", body = WebhookWithSecret),
        (status = 409, description = "The tenant has as many endpoints as it may", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let settings: NewWebhook =
        input(body.clone(), "\"url\", \"types\"?, \"description\"?, \"batch\"?")?;
    let settings = SettingsInput::from(settings);
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body);
    let allow = state.config.webhooks.allow_private_targets;
    let (row, secret) =
        webhooks::create(&state.store, &tenant, settings, allow, caller.context).await?;
    Ok((StatusCode::CREATED, with_secret(&state, &row, secret)?).into_response())
}

/// The tenant's endpoints, with where their delivery stands.
#[utoipa::path(get, operation_id = "list_webhooks", path = "/webhooks", tag = "webhooks",
    responses((status = 200, description = "Every endpoint", body = WebhookList)))]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let rows =
        state.store.read(|connection| Ok(projection::webhooks(connection, Some(&tenant))?))?;
    let deliveries = rows.iter().map(|row| delivery(&state, row)).collect::<Result<Vec<_>, _>>()?;
    let webhooks = rows
        .iter()
        .zip(&deliveries)
        .map(|(row, delivery)| WebhookView::of(row, delivery.as_ref()))
        .collect();
    Ok(Json(WebhookList { webhooks }).into_response())
}

/// One endpoint.
#[utoipa::path(get, operation_id = "show_webhook", path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The endpoint", body = WebhookView),
        (status = 404, description = "No such endpoint in this tenant", body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let row = endpoint(&state, &caller.principal.tenant_id, &id)?;
    Ok(Json(view(&state, &row)?).into_response())
}

/// Changes an endpoint: its URL, types, description or batching; pauses
/// or resumes it (`status`).
#[utoipa::path(patch, operation_id = "change_webhook", path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = ID)), request_body = SettingsInput,
    responses((status = 200, description = "The endpoint after the change", body = WebhookView),
        (status = 404, description = "No such endpoint in this tenant", body = ErrorBody)))]
async fn change(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let settings: SettingsInput =
        input(body.clone(), "\"url\"?, \"types\"?, \"description\"?, \"batch\"?, \"status\"?")?;
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body);
    let allow = state.config.webhooks.allow_private_targets;
    let row = webhooks::change(&state.store, &tenant, &id, settings, allow, caller.context).await?;
    Ok(Json(view(&state, &row)?).into_response())
}

/// Deletes an endpoint and its delivery state.
#[utoipa::path(delete, operation_id = "delete_webhook", path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint in this tenant", body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id.clone();
    webhooks::delete(&state.store, &state.webhooks.deliveries, &tenant, &id, caller.context)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// Hours the previous secret keeps signing too, 0 to 720 (default 24).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 720)]
    overlap_hours: Option<u64>,
}

/// A new signing secret; during the overlap both secrets sign.
#[utoipa::path(post, operation_id = "rotate_webhook_secret", path = "/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    request_body(content = Option<RotateBody>, description = "Optional: without a body the overlap is 24 hours"),
    responses((status = 200, description = "The endpoint, with its new secret (shown this once)", body = WebhookWithSecret),
        (status = 404, description = "No such endpoint in this tenant", body = ErrorBody)))]
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none rotates with the default overlap.
    let rotate: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| Error::invalid(format!("expected {{\"overlap_hours\"?}}: {error}")))?
    };
    let overlap = match rotate.overlap_hours {
        None => webhooks::ROTATION_OVERLAP_DEFAULT,
        Some(hours) if hours <= 24 * 30 => std::time::Duration::from_secs(hours * 3600),
        Some(_) => return Err(Error::invalid("overlap_hours must be 0 to 720").into()),
    };
    let tenant = caller.principal.tenant_id.clone();
    let (row, secret) =
        webhooks::rotate(&state.store, &tenant, &id, overlap, caller.context).await?;
    Ok(with_secret(&state, &row, secret)?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// Only the attempts that failed.
    #[serde(default)]
    failed: Option<bool>,
    /// Attempts to list, 1 to 1,000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// The endpoint's latest delivery attempts, newest first.
#[utoipa::path(get, operation_id = "list_deliveries", path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = ID), DeliveriesQuery),
    responses((status = 200, description = "The attempts", body = AttemptList),
        (status = 404, description = "No such endpoint in this tenant", body = ErrorBody)))]
async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
    raw: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let raw = query(raw)?;
    let limit = raw.limit.unwrap_or(100);
    if limit == 0 || limit > PAGE_MAX {
        return Err(Error::invalid(format!("limit must be 1 to {PAGE_MAX}")).into());
    }
    let row = endpoint(&state, &caller.principal.tenant_id, &id)?;
    let attempts = state.webhooks.deliveries.attempts(
        &row.tenant_id,
        &row.webhook_id,
        raw.failed.unwrap_or(false),
        limit,
    )?;
    Ok(Json(AttemptList { deliveries: attempts.iter().map(AttemptView::of).collect() })
        .into_response())
}

/// What to deliver again: exactly one of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RedeliverBody {
    /// One event, sent again now, out of order.
    #[serde(default)]
    event_id: Option<String>,
    /// The waiting message (a failed one), tried again now.
    #[serde(default)]
    failed: Option<bool>,
    /// Every event after this cursor, in order.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-f]{28}$")]
    from_cursor: Option<String>,
}

/// Delivers again: one event now (out of order), the waiting failed
/// message now, or everything after a cursor, in order.
#[utoipa::path(post, path = "/webhooks/{id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = ID)), request_body = RedeliverBody,
    responses((status = 200, description = "The attempt (for `event_id`) or the endpoint (otherwise)", body = RedeliverAnswer),
        (status = 404, description = "No such endpoint, or no such event, in this tenant", body = ErrorBody)))]
async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let body: RedeliverBody = serde_json::from_value(body).map_err(|error| {
        Error::invalid(format!(
            "expected one of {{\"event_id\"}}, {{\"failed\": true}}, {{\"from_cursor\"}}: {error}"
        ))
    })?;
    let tenant = caller.principal.tenant_id;
    let row = endpoint(&state, &tenant, &id)?;
    match (body.event_id, body.failed, body.from_cursor) {
        (Some(event_id), None, None) => {
            let attempt = state.webhooks.deliverer.redeliver(&row, &event_id).await?;
            Ok(Json(RedeliverAnswer::Attempt(AttemptView::of(&attempt))).into_response())
        }
        (None, Some(true), None) => {
            state.webhooks.deliveries.rewind(&tenant, &id, None)?;
            rewound(&state, &row)
        }
        (None, None, Some(cursor)) => {
            let cursor = Cursor::decode(&tenant, &cursor)
                .map_err(|error| Error::invalid(error.to_string()))?;
            state.webhooks.deliveries.state(&tenant, &id, row.from)?;
            state.webhooks.deliveries.rewind(&tenant, &id, Some(cursor))?;
            rewound(&state, &row)
        }
        _ => {
            Err(Error::invalid("name exactly one of event_id, failed (true) or from_cursor").into())
        }
    }
}

fn rewound(state: &AppState, row: &projection::WebhookRow) -> Result<Response, ApiError> {
    let delivery = delivery(state, row)?;
    Ok(Json(RedeliverAnswer::Webhook(WebhookView::of(row, delivery.as_ref()))).into_response())
}

/// What a redelivery answers: the attempt, or the endpoint rewound.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum RedeliverAnswer<'a> {
    Attempt(AttemptView<'a>),
    Webhook(WebhookView<'a>),
}

/// Sends a `test` event now, signed, outside the feed's order.
#[utoipa::path(post, operation_id = "send_test_event", path = "/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The attempt: `ok` says whether the endpoint answered 2xx", body = AttemptView),
        (status = 404, description = "No such endpoint in this tenant", body = ErrorBody)))]
async fn test(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let row = endpoint(&state, &tenant, &id)?;
    let message = webhooks::test_message(&state.store, &tenant);
    let attempt = state.webhooks.deliverer.send_once(&row, &message, "test").await?;
    Ok(Json(webhooks::attempt_view(&attempt)).into_response())
}
