//! The SCIM 2.0 endpoint under /scim/v2 (RFC 7643 and 7644), for
//! `scim`-scope tokens.
//!
//! Only this module speaks the SCIM wire format: parsing bodies
//! ([`document`], [`patch`]; filters and paths are [`crate::model`]), serving resources
//! ([`render`], [`resources`]) and discovery ([`discovery`]). Every request
//! is authenticated first; every error is an RFC 7644 section 3.12 body; a
//! path that names no SCIM endpoint is a SCIM 404, and a method an endpoint
//! does not take is a SCIM 405.

pub mod bulk;
pub mod discovery;
pub mod document;
pub mod limits;
pub mod patch;
pub mod render;
pub mod resources;

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use axum::{Router, middleware};
use events::event::TokenScope;
use projections::directory::schema::ResourceKind;

use self::render::BaseUrl;
use self::resources::{ScimBody, Update, Write, respond};
use crate::auth::{Caller, Gate, require_token};
use crate::error::Surface;
use crate::error::{Error, ScimError};
use crate::state::AppState;

pub use self::resources::CONTENT_TYPE;

const USERS: &[ResourceKind] = &[ResourceKind::User];
const GROUPS: &[ResourceKind] = &[ResourceKind::Group];
const ALL: &[ResourceKind] = &[ResourceKind::User, ResourceKind::Group];

pub fn router(state: AppState) -> Router<AppState> {
    let gate = Gate { state, allowed: &[TokenScope::Scim], surface: Surface::Scim };
    Router::new()
        .route("/ServiceProviderConfig", read_only(get(service_provider_config)))
        .route("/ResourceTypes", read_only(get(resource_types)))
        .route("/ResourceTypes/{name}", read_only(get(resource_type)))
        .route("/Schemas", read_only(get(schemas)))
        .route("/Schemas/{id}", read_only(get(schema)))
        .route(
            "/.search",
            post(|s: State<AppState>, c: Caller, b: BaseUrl, body: ScimBody| async move {
                resources::search_resources(ALL, s.0, c, b, body).await
            })
            .fallback(method_not_allowed),
        )
        .route(
            "/Bulk",
            post(|s: State<AppState>, c: Caller, b: BaseUrl, body: ScimBody| async move {
                bulk::bulk(s.0, c, b, body).await
            })
            .fallback(method_not_allowed),
        )
        .merge(resource_routes(ResourceKind::User, "/Users", USERS))
        .merge(resource_routes(ResourceKind::Group, "/Groups", GROUPS))
        .fallback(unknown_endpoint)
        .layer(middleware::from_fn_with_state(gate, require_token))
}

/// The endpoints under /scim/v2, as the routes spell them.
const ENDPOINTS: [&str; 7] =
    ["Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas", "Bulk", ".search"];

/// Puts a /scim/v2 path in the spelling the routes know, as clients in the
/// field send it otherwise: a trailing slash (`/Users/`, `/Users/?filter=`)
/// and an endpoint in another case (`/users`, `/GROUPS`; RFC 7644 names
/// them in one case, and clients that lower-case paths exist). Ids and
/// everything after the endpoint are left exactly as sent.
pub async fn spelling(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    let Some(rest) = uri.path().strip_prefix("/scim/v2/") else { return request };
    let trimmed = rest.trim_end_matches('/');
    let (endpoint, tail) = trimmed.split_once('/').map_or((trimmed, ""), |(e, t)| (e, t));
    let canonical = ENDPOINTS.iter().find(|known| known.eq_ignore_ascii_case(endpoint));
    let respelled = canonical.is_some_and(|known| *known != endpoint);
    if (!respelled && trimmed.len() == rest.len()) || trimmed.is_empty() {
        return request;
    }
    let endpoint = canonical.copied().unwrap_or(endpoint);
    let mut path = format!("/scim/v2/{endpoint}");
    if !tail.is_empty() {
        path.push('/');
        path.push_str(tail);
    }
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = axum::http::uri::PathAndQuery::try_from(path) {
        parts.path_and_query = Some(path_and_query);
        if let Ok(respelled) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = respelled;
        }
    }
    request
}

/// The `{id}` of a SCIM path. One that is not text (bad UTF-8 in its
/// percent-encoding) names no resource: a SCIM 404, as any unknown id,
/// never the router's plain-text 400.
#[derive(Debug)]
pub struct ScimId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ScimId {
    type Rejection = ScimError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<ScimId, ScimError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ScimId(id)),
            Err(rejection) => Err(ScimError(Error::not_found(format!(
                "resource {} ({})",
                parts.uri.path(),
                rejection.body_text()
            )))),
        }
    }
}

fn read_only(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(method_not_allowed)
}

type Pairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn resource_routes(
    kind: ResourceKind,
    endpoint: &'static str,
    kinds: &'static [ResourceKind],
) -> Router<AppState> {
    Router::new()
        .route(
            endpoint,
            get(move |s: State<AppState>, c: Caller, b: BaseUrl, q: Pairs| async move {
                resources::list_resources(kinds, s.0, c, b, q).await
            })
            .post(move |s: State<AppState>, c: Caller, b: BaseUrl, body: ScimBody| async move {
                resources::create_resource(kind, s.0, c, b, body).await
            })
            .fallback(method_not_allowed),
        )
        .route(
            &format!("{endpoint}/.search"),
            post(move |s: State<AppState>, c: Caller, b: BaseUrl, body: ScimBody| async move {
                resources::search_resources(kinds, s.0, c, b, body).await
            })
            .fallback(method_not_allowed),
        )
        .route(
            &format!("{endpoint}/{{id}}"),
            get(move |s: State<AppState>, c: Caller, b: BaseUrl, ScimId(id): ScimId, q: Pairs| async move {
                resources::get_resource(kind, s.0, c, b, id, q).await
            })
            .put(move |s: State<AppState>, c: Caller, b: BaseUrl, ScimId(id): ScimId, h: HeaderMap, body: ScimBody| async move {
                resources::update_resource(Update { kind, write: Write::Replace, id, headers: h }, s.0, c, b, body).await
            })
            .patch(move |s: State<AppState>, c: Caller, b: BaseUrl, ScimId(id): ScimId, h: HeaderMap, body: ScimBody| async move {
                resources::update_resource(Update { kind, write: Write::Patch, id, headers: h }, s.0, c, b, body).await
            })
            .delete(move |s: State<AppState>, c: Caller, ScimId(id): ScimId, h: HeaderMap| async move {
                resources::delete_resource(kind, s.0, c, id, h).await
            })
            .fallback(method_not_allowed),
        )
}

async fn service_provider_config(State(state): State<AppState>, base: BaseUrl) -> Response {
    let config = discovery::service_provider_config(&base, &state.config);
    respond(StatusCode::OK, &config, None)
}

async fn resource_types(base: BaseUrl) -> Response {
    respond(StatusCode::OK, &discovery::resource_types(&base), None)
}

async fn resource_type(base: BaseUrl, ScimId(name): ScimId) -> Result<Response, ScimError> {
    let found = discovery::resource_type(&base, &name)
        .ok_or_else(|| Error::not_found(format!("resource type {name}")))?;
    Ok(respond(StatusCode::OK, &found, None))
}

async fn schemas(base: BaseUrl) -> Response {
    respond(StatusCode::OK, &discovery::all_schemas(&base), None)
}

async fn schema(base: BaseUrl, ScimId(id): ScimId) -> Result<Response, ScimError> {
    let found =
        discovery::schema(&base, &id).ok_or_else(|| Error::not_found(format!("schema {id}")))?;
    Ok(respond(StatusCode::OK, &found, None))
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    Surface::Scim.respond(Error::MethodNotAllowed {
        message: format!("{} does not accept {method}", uri.path()),
    })
}

async fn unknown_endpoint(OriginalUri(uri): OriginalUri) -> Response {
    Surface::Scim.respond(Error::not_found(format!("SCIM endpoint {}", uri.path())))
}
