//! The HTTP server: router assembly, the middleware every request passes
//! through, `/healthz`, and graceful shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and decide when to stop. On shutdown the server stops
//! accepting, lets in-flight requests finish for up to the grace period, and
//! then drains the log writer, so every answered write is on disk before the
//! process exits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use events::EventLog;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::error::{ApiError, Error, InternalCause, ScimError};
use crate::store::Store;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest incoming `X-Request-Id` honoured; longer ones are replaced.
pub const REQUEST_ID_LENGTH_MAX: usize = 128;

/// Settings of the HTTP server, checked and ready to use.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request bodies over this many bytes get 413 before being buffered.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// A token's "last used" is written at most this often, so a busy IdP
    /// does not turn every request into a write.
    pub token_touch_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            body_limit_bytes: 2 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            token_touch_interval: Duration::from_secs(60),
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<ServerConfig>,
    /// When each token's use was last written (see `token_touch_interval`).
    /// A `std` mutex: held for a map lookup, never across an `.await`.
    pub token_touches: Arc<Mutex<HashMap<String, Instant>>>,
}

impl AppState {
    pub fn new(store: Arc<Store>, config: ServerConfig) -> AppState {
        AppState { store, config: Arc::new(config), token_touches: Arc::default() }
    }
}

/// Which wire format a path's errors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Scim,
    Api,
}

impl Surface {
    pub fn of_path(path: &str) -> Surface {
        if path == "/scim" || path.starts_with("/scim/") { Surface::Scim } else { Surface::Api }
    }

    pub fn respond(self, error: Error) -> Response {
        match self {
            Surface::Scim => ScimError(error).into_response(),
            Surface::Api => ApiError(error).into_response(),
        }
    }
}

/// The whole application as a router, ready to serve. A function so tests
/// and `run` build exactly the same thing.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/scim/v2", crate::scim::router(state.clone()))
        .nest(
            "/api/v1",
            crate::admin::router(state.clone()).merge(crate::audit::router(state.clone())),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let stop_accepting = Arc::new(tokio::sync::Notify::new());
    let stop_signal = stop_accepting.clone();
    let server = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move { stop_signal.notified().await })
        .into_future();
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let served = tokio::select! {
        result = &mut server => result,
        () = &mut shutdown => {
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: finishing in-flight requests");
            stop_accepting.notify_one();
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("requests still running after the grace period; closing them");
                    Ok(())
                }
            }
        }
    };
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.shutdown()).await.map_err(std::io::Error::other)?;
    tracing::info!("log writer drained; stopped");
    served
}

/// 200 while writes can succeed, 503 (with the same body shape) once the
/// writer has stopped or an fsync has failed, so a load balancer stops
/// sending IdP traffic to an instance that can only refuse it.
async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let head = state.store.log().head()?;
    let writable = state.store.log().is_writable();
    let status = if writable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if writable { "ok" } else { "unavailable" },
        "writable": writable,
        "head_position": head,
    });
    Ok((status, axum::Json(body)).into_response())
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    Surface::of_path(&path).respond(Error::not_found(format!("route {path}")))
}

/// A request id, from the client's `X-Request-Id` or made here.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn usable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let usable = !text.is_empty()
        && text.len() <= REQUEST_ID_LENGTH_MAX
        && text.bytes().all(|byte| byte.is_ascii_graphic());
    usable.then(|| text.to_owned())
}

/// Gives every request an id (honouring the client's), a tracing span that
/// carries it, a log line when it ends, and the id on the response.
async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(usable_request_id)
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    request.extensions_mut().insert(RequestId(request_id.clone()));
    // Only the path: query strings may carry personal data (SCIM filters).
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        tenant = tracing::field::Empty,
        token_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
            tracing::error!(status, elapsed_ms, cause = %cause, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// Refuses a declared-too-long body at once, and caps an undeclared one
/// while it streams, so no oversized body is ever buffered.
async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit_bytes = state.config.body_limit_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit_bytes as u64) {
        return Surface::of_path(request.uri().path())
            .respond(Error::PayloadTooLarge { limit_bytes });
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit_bytes)));
    next.run(request).await
}
