//! Connections: accepting them, bounding them, timing them out, draining
//! them at shutdown. `axum::serve` has no knobs for any of that, so the
//! loop is here, on hyper's HTTP/1.1 connection directly:
//!
//! - a request head must arrive within `header_timeout` (a client sending
//!   a byte a second is cut off), and the same timer closes a keep-alive
//!   connection that stays idle that long (hyper starts it as soon as the
//!   connection waits for a request);
//! - at most `max_connections` are served at once; one beyond is answered
//!   503 with Retry-After and closed at once, never left hanging;
//! - at shutdown no connection is accepted, idle ones close, and busy ones
//!   finish their request (the caller bounds how long by the grace).
//!
//! A body that trickles is the body timeout's, in `server::limit_body`.
//! What hyper refuses by itself (431, 414, 400) gets a body in
//! [`refusals`]. This module owns the connections; it must not look at
//! requests.

pub mod refusals;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt as _;

/// The bounds on connections (`serve --header-timeout-seconds`,
/// `--max-connections`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits { header_timeout: Duration::from_secs(30), max_connections: 4096 }
    }
}

/// The largest request head (request line and header fields) read: room
/// for hyper's longest URI (65,534 bytes) and ordinary headers. A firm
/// bound, where hyper's buffer limit alone lets a head that arrives in one
/// read through.
pub const HEAD_BYTES_MAX: usize = 128 * 1024;

/// What a connection over the cap is told before it is closed.
const REFUSED_BODY: &str = r#"{"error":"overloaded","message":"the server has as many connections as it serves; try again"}"#;

/// The whole answer to a connection over the cap, its length counted.
fn refused() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{REFUSED_BODY}",
        REFUSED_BODY.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `stop` resolves, then lets every
/// connection finish; resolves when the last one has.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send,
) where
    L: Listener,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (draining, drain) = tokio::sync::watch::channel(false);
    // Each connection task holds a clone; `recv` ends when the last is gone.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<Infallible>(1);
    tokio::pin!(stop);
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut io = io;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = io.write_all(&refused()).await;
                    let _ = io.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            |request: hyper::Request<hyper::body::Incoming>| request.map(axum::body::Body::new),
        ));
        let (mut drain, alive) = (drain.clone(), alive.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _alive = alive;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(HEAD_BYTES_MAX);
            let connection =
                builder.serve_connection(TokioIo::new(refusals::Refusals::new(io)), service);
            tokio::pin!(connection);
            let mut draining_seen = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "a connection ended with an error");
                        }
                        break;
                    }
                    changed = drain.changed(), if !draining_seen => {
                        draining_seen = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = draining.send(true);
    drop(alive);
    let _ = all_closed.recv().await;
}
