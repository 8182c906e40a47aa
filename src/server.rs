//! The HTTP server: router assembly, the middleware every request passes
//! through, `/healthz`, and graceful shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and decide when to stop. On shutdown the server stops
//! accepting, lets in-flight requests finish for up to the grace period, and
//! then drains the log writer, so every answered write is on disk before the
//! process exits.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::error::{ApiError, Error, InternalCause, Surface};
use crate::state::{AppState, REQUEST_ID, REQUEST_ID_LENGTH_MAX, RequestId};

/// The whole application as a router, ready to serve. A function so tests
/// and `run` build exactly the same thing.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    let routed = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/oauth/token", axum::routing::post(crate::oauth::token))
        .nest("/scim/v2", crate::scim::router(state.clone()))
        .nest(
            "/api/v1",
            axum::Router::from(
                crate::admin::router(state.clone())
                    .merge(crate::admin::audit::router(state.clone()))
                    .merge(crate::admin::openapi::public_routes()),
            ),
        )
        .merge(crate::console::router(state.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), request_context))
        .with_state(state);
    // Before routing (a router's own layers run after it): the spellings
    // real SCIM clients send are put in the one the routes know.
    Router::new().fallback_service(routed).layer(middleware::map_request(crate::scim::spelling))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn run<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let grace = state.config.shutdown_grace;
    let supervisor = crate::webhooks::deliver::start(
        state.webhooks.deliverer.clone(),
        state.stopping.subscribe(),
    )?;
    let stop_accepting = Arc::new(tokio::sync::Notify::new());
    let stop_signal = stop_accepting.clone();
    let limits = state.config.connections;
    let server = crate::http::serve(listener, app(state.clone()), limits, async move {
        stop_signal.notified().await;
    });
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let served: std::io::Result<()> = tokio::select! {
        () = &mut server => Ok(()),
        () = &mut shutdown => {
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: finishing in-flight requests");
            stop_accepting.notify_one();
            state.stopping.send_replace(true);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(()) => Ok(()),
                Err(_) => {
                    tracing::warn!("requests still running after the grace period; closing them");
                    Ok(())
                }
            }
        }
    };
    state.stopping.send_replace(true);
    let stopped = tokio::task::spawn_blocking(move || supervisor.join()).await;
    if !matches!(stopped, Ok(Ok(()))) {
        tracing::warn!("the webhook deliverer stopped abnormally");
    }
    // The last requests' rows, before the writer stops.
    if let Err(error) = state.requests.write(&state.store).await {
        tracing::warn!(%error, "the last request log rows were not written");
    }
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

/// The process answers: no database, no lock, nothing that can wait.
async fn livez() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({ "status": "alive" }))).into_response()
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty());
    let stats = rustix::fs::statvfs(directory.unwrap_or(std::path::Path::new(".")))?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Whether this instance should get traffic: the writer runs and no fsync
/// has failed, the schema is migrated (the store opens only after), a read
/// answers, and the disk has room. 503 names the first reason it has not.
async fn readyz(State(state): State<AppState>) -> Response {
    let log = state.store.log();
    // On PostgreSQL the database's disk is the server's to watch.
    let free = log.path().map(free_bytes).transpose();
    let floor = state.config.ready_min_free_bytes;
    let reason = if !log.is_writable() {
        Some("the log writer has stopped or an fsync failed".to_owned())
    } else if let Err(error) = log.head() {
        Some(format!("the database cannot be read: {error}"))
    } else {
        match &free {
            Err(error) => Some(format!("the free disk space cannot be read: {error}")),
            Ok(Some(free)) if *free < floor => Some(format!(
                "{} MiB free on the database's disk, below the floor of {} MiB (serve --ready-min-free-mb)",
                free / (1024 * 1024),
                floor / (1024 * 1024)
            )),
            Ok(_) => None,
        }
    };
    let free_mib = free.ok().flatten().map(|free| free / (1024 * 1024));
    match reason {
        None => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready", "free_mib": free_mib })),
        )
            .into_response(),
        Some(reason) => {
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "status": "not_ready", "reason": reason, "free_mib": free_mib,
                })),
            )
                .into_response()
        }
    }
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    Surface::of_path(&path).respond(Error::not_found(format!("route {path}")))
}

fn usable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let usable = !text.is_empty()
        && text.len() <= REQUEST_ID_LENGTH_MAX
        && text.bytes().all(|byte| byte.is_ascii_graphic());
    usable.then(|| text.to_owned())
}

/// Gives every request an id (honouring the client's), a tracing span that
/// carries it, a log line when it ends, and the id on the response.
async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
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
    let (path, method) = (request.uri().path().to_owned(), request.method().clone());
    let client = if state.config.count_requests {
        crate::metrics::client_kind(
            request.headers().get(header::USER_AGENT).map(HeaderValue::as_bytes),
        )
    } else {
        "none"
    };
    let mut response = next.run(request).instrument(span.clone()).await;
    state.metrics.request(&path, &method, client, response.status(), started.elapsed());
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

/// Bytes of an oversized body read and thrown away (never kept) before
/// answering 413, and for how long at most. A server that answers without
/// reading leaves unread bytes in the socket; closing it then sends a TCP
/// reset that can destroy the 413 before a client that is still sending
/// reads it. Past these bounds the connection is simply closed.
pub const DISCARD_BYTES_MAX: u64 = 16 * 1024 * 1024;
pub const DISCARD_TIME_MAX: Duration = Duration::from_secs(5);

/// Enforces the body limit without ever holding more than the limit:
/// a declared-too-long body is refused unread (only discarded); a body of
/// undeclared length is read here up to the limit, and refused the moment
/// it passes it.
async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit_bytes = state.config.body_limit_bytes;
    let body_timeout = state.config.body_timeout;
    let surface = Surface::of_path(request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit_bytes as u64 => {
            let (_, body) = request.into_parts();
            discard(body, 0).await;
            too_large(surface, limit_bytes)
        }
        Some(0) => next.run(request).await,
        // Read here, whole, within the body timeout: a body that trickles
        // (or stops short of its declared length) is cut off with 408
        // instead of holding a connection and a handler for ever.
        _ => {
            let (parts, mut body) = request.into_parts();
            let mut kept: Vec<u8> = Vec::new();
            let read = tokio::time::timeout(body_timeout, async {
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else {
                        return Err(
                            surface.respond(Error::invalid("the request body could not be read"))
                        );
                    };
                    let Ok(data) = frame.into_data() else { continue };
                    // Hyper holds a declared body to its length; one of no
                    // declared length is refused the moment it passes the limit.
                    if kept.len() + data.len() > limit_bytes {
                        discard(body, (kept.len() + data.len()) as u64).await;
                        return Err(too_large(surface, limit_bytes));
                    }
                    kept.extend_from_slice(&data);
                }
                Ok(())
            })
            .await;
            match read {
                Ok(Ok(())) => next.run(Request::from_parts(parts, Body::from(kept))).await,
                Ok(Err(refused)) => refused,
                Err(_) => {
                    let seconds = body_timeout.as_secs();
                    let mut response = surface.respond(Error::RequestTimeout {
                        message: format!(
                            "the request body did not arrive within {seconds} s (serve --body-timeout-seconds)"
                        ),
                    });
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response
                }
            }
        }
    }
}

/// Reads and drops what is left of a refused body, within the bounds above.
async fn discard(mut body: Body, already_read: u64) {
    let mut read = already_read;
    let _ = tokio::time::timeout(DISCARD_TIME_MAX, async {
        while read <= DISCARD_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |data| data.len() as u64);
                }
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
}

fn too_large(surface: Surface, limit_bytes: usize) -> Response {
    let mut response = surface.respond(Error::body_too_large(limit_bytes));
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
