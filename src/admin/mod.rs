//! The admin API under /api/v1, for `admin`-scope tokens: the caller's
//! tenant, its tokens (list, issue, revoke), and (in [`provisioning`])
//! Synchronize; and the application's API, for `app` and `admin` tokens:
//! the member directory (in [`provisioning`]) and the event feed (in
//! [`feed`]).
//!
//! Every handler works within the caller's tenant only: a token id of
//! another tenant is 404, exactly like one that does not exist. Handlers
//! translate HTTP to the commands of [`crate::tenancy`] and back; they
//! decide nothing themselves.

pub mod feed;
pub mod provisioning;
pub mod webhooks;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router, middleware};
use events::event::TokenScope;
use projections::tenancy::{self as tenancy_projection, TokenRecord};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{Caller, Gate, require_token};
use crate::error::{ApiError, Error};
use crate::server::{AppState, Surface};
use crate::tenancy::{self, Revoked, TenantRef, TokenRequest};

pub fn router(state: AppState) -> Router<AppState> {
    let admin = Gate { state: state.clone(), allowed: &[TokenScope::Admin], surface: Surface::Api };
    // What the application may reach: the members and the event feed.
    let application =
        Gate { state, allowed: &[TokenScope::Admin, TokenScope::App], surface: Surface::Api };
    let admin_routes = Router::new()
        .route("/tenant", get(current_tenant))
        .route("/tokens", get(list_tokens).post(issue_token))
        .route("/tokens/{token_id}", delete(revoke_token))
        .merge(provisioning::routes())
        .merge(webhooks::routes())
        .layer(middleware::from_fn_with_state(admin, require_token));
    let application_routes = provisioning::member_routes()
        .merge(feed::routes())
        .layer(middleware::from_fn_with_state(application, require_token));
    admin_routes.merge(application_routes)
}

/// `axum::Json`, but a malformed body is a JSON error with a message (not
/// axum's plain text), and an oversized one a 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<ApiJson<T>, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError(Error::body_too_large(state.config.body_limit_bytes)))
            }
            Err(rejection @ JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError(Error::UnsupportedMediaType { message: rejection.body_text() }))
            }
            Err(rejection) => Err(ApiError(Error::invalid(rejection.body_text()))),
        }
    }
}

/// A token as the API shows it: never the secret.
pub fn token_view(token: &TokenRecord, now: jiff::Timestamp) -> serde_json::Value {
    serde_json::json!({
        "token_id": token.token_id,
        "tenant": token.tenant_name,
        "scope": token.scope.as_str(),
        "label": token.label,
        "status": tenancy::token_status(token, now).as_str(),
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "last_used_at": token.last_used_at,
    })
}

async fn current_tenant(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let tenant = state
        .store
        .read(|connection| TenantRef::Id(caller.principal.tenant_id.clone()).resolve(connection))?;
    Ok(Json(serde_json::json!({
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "created_at": tenant.created_at,
    }))
    .into_response())
}

async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let tokens = state.store.read(|connection| {
        Ok(tenancy_projection::list_tokens(connection, Some(&caller.principal.tenant_id))?)
    })?;
    let now = state.store.now();
    let items: Vec<_> = tokens.iter().map(|token| token_view(token, now)).collect();
    Ok(Json(serde_json::json!({ "total": items.len(), "tokens": items })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueTokenBody {
    scope: String,
    /// A lifetime such as `90d`; absent: the token does not expire.
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

async fn issue_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueTokenBody>,
) -> Result<Response, ApiError> {
    let request = TokenRequest::parse(&body.scope, body.expires.as_deref(), body.label)?;
    let (token, secret) = tenancy::issue_token(
        &state.store,
        TenantRef::Id(caller.principal.tenant_id.clone()),
        request,
        caller.context,
    )
    .await
    .map_err(Error::from)?;
    let mut body = token_view(&token, state.store.now());
    if let Some(fields) = body.as_object_mut() {
        // Shown once: only this response ever carries the secret.
        fields.insert("secret".to_owned(), serde_json::Value::from(secret.expose()));
    }
    // The one response that carries a secret: no cache may keep it.
    Ok((StatusCode::CREATED, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(token_id): Path<String>,
) -> Result<Response, ApiError> {
    // Revoking an already revoked token is harmless: 204 either way.
    let _: Revoked = tenancy::revoke_token(
        &state.store,
        &token_id,
        Some(caller.principal.tenant_id),
        caller.context,
    )
    .await
    .map_err(Error::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
