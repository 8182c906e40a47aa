//! The webhook routes of the admin API: endpoints (create, list, show,
//! change, pause and resume, delete, rotate the secret), their deliveries,
//! redelivery and a test event. Handlers translate HTTP to
//! `crate::webhooks` and back.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use projections::feed::Cursor;
use projections::webhooks as projection;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use super::provisioning::{PAGE_MAX, query};
use crate::auth::Caller;
use crate::error::{ApiError, Error};
use crate::server::AppState;
use crate::webhooks::{self, SettingsInput};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).patch(change).delete(remove))
        .route("/webhooks/{id}/rotate-secret", post(rotate))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/redeliver", post(redeliver))
        .route("/webhooks/{id}/test", post(test))
}

fn input(body: Value) -> Result<SettingsInput, Error> {
    serde_json::from_value(body).map_err(|error| {
        Error::invalid(format!(
            "expected {{\"url\", \"types\"?, \"description\"?, \"batch\"?, \"status\"?}}: {error}"
        ))
    })
}

fn endpoint(state: &AppState, tenant: &str, id: &str) -> Result<projection::WebhookRow, Error> {
    state
        .store
        .read(|connection| Ok(projection::webhook(connection, tenant, id)?))?
        .ok_or_else(|| Error::not_found(format!("webhook endpoint {id}")))
}

fn view(state: &AppState, row: &projection::WebhookRow) -> Result<Value, Error> {
    let delivery = state.webhooks.deliveries.existing(&row.tenant_id, &row.webhook_id)?;
    Ok(webhooks::view(row, delivery.as_ref()))
}

/// The endpoint with its new secret: the one answer that shows it.
fn with_secret(
    state: &AppState,
    row: &projection::WebhookRow,
    secret: String,
) -> Result<Value, Error> {
    let mut shown = view(state, row)?;
    if let Some(fields) = shown.as_object_mut() {
        fields.insert("secret".to_owned(), json!(secret));
    }
    Ok(shown)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let settings = input(body.clone())?;
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body);
    let allow = state.config.webhooks.allow_private_targets;
    let (row, secret) =
        webhooks::create(&state.store, &tenant, settings, allow, caller.context).await?;
    Ok((StatusCode::CREATED, Json(with_secret(&state, &row, secret)?)).into_response())
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let rows =
        state.store.read(|connection| Ok(projection::webhooks(connection, Some(&tenant))?))?;
    let items = rows.iter().map(|row| view(&state, row)).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "webhooks": items })).into_response())
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = endpoint(&state, &caller.principal.tenant_id, &id)?;
    Ok(Json(view(&state, &row)?).into_response())
}

async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let settings = input(body.clone())?;
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body);
    let allow = state.config.webhooks.allow_private_targets;
    let row = webhooks::change(&state.store, &tenant, &id, settings, allow, caller.context).await?;
    Ok(Json(view(&state, &row)?).into_response())
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id.clone();
    webhooks::delete(&state.store, &state.webhooks.deliveries, &tenant, &id, caller.context)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    overlap_hours: Option<u64>,
}

async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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
    Ok(Json(with_secret(&state, &row, secret)?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    #[serde(default)]
    failed: Option<bool>,
    #[serde(default)]
    limit: Option<u64>,
}

async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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
    let items: Vec<Value> = attempts.iter().map(webhooks::attempt_view).collect();
    Ok(Json(json!({ "deliveries": items })).into_response())
}

#[derive(Debug, Deserialize)]
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
    from_cursor: Option<String>,
}

async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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
            Ok(Json(webhooks::attempt_view(&attempt)).into_response())
        }
        (None, Some(true), None) => {
            state.webhooks.deliveries.rewind(&tenant, &id, None)?;
            Ok(Json(view(&state, &row)?).into_response())
        }
        (None, None, Some(cursor)) => {
            let cursor = Cursor::decode(&tenant, &cursor)
                .map_err(|error| Error::invalid(error.to_string()))?;
            state.webhooks.deliveries.state(&tenant, &id, row.from)?;
            state.webhooks.deliveries.rewind(&tenant, &id, Some(cursor))?;
            Ok(Json(view(&state, &row)?).into_response())
        }
        _ => {
            Err(Error::invalid("name exactly one of event_id, failed (true) or from_cursor").into())
        }
    }
}

async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let row = endpoint(&state, &tenant, &id)?;
    let message = webhooks::test_message(&state.store, &tenant);
    let attempt = state.webhooks.deliverer.send_once(&row, &message, "test").await?;
    Ok(Json(webhooks::attempt_view(&attempt)).into_response())
}
