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

pub mod audit;
pub mod feed;
pub mod openapi;
pub mod provisioning;
pub mod webhooks;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use events::event::TokenScope;
use projections::tenancy::{self as tenancy_projection, TokenRecord};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Gate, require_token};
use crate::error::Surface;
use crate::error::{ApiError, Error};
use crate::state::AppState;
use crate::tenancy::{self, Revoked, TenantRef, TokenRequest};

/// The routes only `admin` tokens reach: the tenant, its tokens,
/// provisioning and webhooks. Without their gate: [`router`] adds it, and
/// [`openapi::document`] reads their documentation from the same routes.
pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current_tenant))
        .routes(routes!(list_tokens, issue_token))
        .routes(routes!(revoke_token))
        .merge(provisioning::routes())
        .merge(webhooks::routes())
}

/// What the application may reach (with an `app` or `admin` token): the
/// members and the event feed.
pub fn application_routes() -> OpenApiRouter<AppState> {
    provisioning::member_routes().merge(feed::routes())
}

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    let admin = Gate { state: state.clone(), allowed: &[TokenScope::Admin], surface: Surface::Api };
    let application =
        Gate { state, allowed: &[TokenScope::Admin, TokenScope::App], surface: Surface::Api };
    admin_routes().layer(middleware::from_fn_with_state(admin, require_token)).merge(
        application_routes().layer(middleware::from_fn_with_state(application, require_token)),
    )
}

/// The `{id}` of an API path. One that is not text (bad UTF-8 in its
/// percent-encoding) names nothing: a JSON 404, as any unknown id, never
/// the router's plain-text 400.
#[derive(Debug)]
pub struct ApiId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ApiId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<ApiId, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ApiId(id)),
            Err(rejection) => Err(ApiError(Error::not_found(format!(
                "{} ({})",
                parts.uri.path(),
                rejection.body_text()
            )))),
        }
    }
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenView {
    pub token_id: String,
    /// The tenant's name.
    pub tenant: String,
    #[schema(pattern = "^(scim|admin|audit|app)$")]
    pub scope: &'static str,
    pub label: Option<String>,
    #[schema(pattern = "^(active|expired|revoked)$")]
    pub status: &'static str,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

pub fn token_view(token: &TokenRecord, now: jiff::Timestamp) -> serde_json::Value {
    serde_json::to_value(TokenView {
        token_id: token.token_id.clone(),
        tenant: token.tenant_name.clone(),
        scope: token.scope.as_str(),
        label: token.label.clone(),
        status: tenancy::token_status(token, now).as_str(),
        created_at: token.created_at.clone(),
        expires_at: token.expires_at.clone(),
        revoked_at: token.revoked_at.clone(),
        last_used_at: token.last_used_at.clone(),
    })
    .unwrap_or(serde_json::Value::Null)
}

/// A token just issued: the only answer that carries its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer secret, shown this once.
    pub secret: String,
}

/// The caller's tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub tenant_id: String,
    pub name: String,
    pub created_at: String,
}

/// The tenant's tokens, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub total: usize,
    pub tokens: Vec<TokenView>,
}

/// The caller's tenant.
#[utoipa::path(get, path = "/tenant", tag = "tenant",
    responses((status = 200, description = "The tenant the token belongs to", body = TenantView)))]
async fn current_tenant(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let tenant = state
        .store
        .read(|connection| TenantRef::Id(caller.principal.tenant_id.clone()).resolve(connection))?;
    Ok(Json(TenantView {
        tenant_id: tenant.tenant_id,
        name: tenant.name,
        created_at: tenant.created_at,
    })
    .into_response())
}

/// The tenant's tokens (never their secrets).
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses((status = 200, description = "Every token of the tenant", body = TokenList)))]
async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let tokens = state.store.read(|connection| {
        Ok(tenancy_projection::list_tokens(connection, Some(&caller.principal.tenant_id))?)
    })?;
    let now = state.store.now();
    let items: Vec<_> = tokens.iter().map(|token| token_view(token, now)).collect();
    Ok(Json(serde_json::json!({ "total": items.len(), "tokens": items })).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueTokenBody {
    /// `scim` (for the IdP), `admin`, `audit` (read-only) or `app`.
    #[schema(pattern = "^(scim|admin|audit|app)$")]
    scope: String,
    /// A lifetime such as `90d`, `2w`, `12h` or `30m` (at most 3650 days); absent: the token does
    /// not expire.
    #[serde(default)]
    #[schema(pattern = "^\\s*([0-9]+[mhdw])?\\s*$")]
    expires: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

/// Issues a token; its secret is in this answer only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = IssueTokenBody,
    responses((status = 201, description = "The token, with its secret", body = IssuedToken)))]
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

/// Revokes a token: refused from its very next request.
#[utoipa::path(delete, path = "/tokens/{token_id}", tag = "tokens",
    params(("token_id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked (or it was already)"),
        (status = 404, description = "No such token in this tenant", body = openapi::ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(token_id): ApiId,
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
