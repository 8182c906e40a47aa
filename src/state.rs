//! What every handler can reach: the state the router is built with
//! ([`AppState`]), the server's settings ([`ServerConfig`]), and the
//! request id. It sits below every route module and the router assembly
//! (`server`), so a route imports its state from here and never the
//! module that mounts it. It holds things; it decides nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, header};

use crate::error::Error;
use crate::store::Store;

/// The header a request id travels in.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest incoming `X-Request-Id` honoured; longer ones are replaced.
pub const REQUEST_ID_LENGTH_MAX: usize = 128;

/// A request id, from the client's `X-Request-Id` or made here.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

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
    /// The URL clients reach rollcall by (`https://rollcall.example.com`),
    /// for `meta.location` and `$ref`s when a proxy stands in front; absent,
    /// they are built from the request's Host header.
    pub public_url: Option<String>,
    /// A PATCH of a group with more members than this answers 204 instead
    /// of the whole group (RFC 7644 section 3.5.2 allows both), so a large
    /// group is never serialised on every membership change.
    pub patch_response_members_max: usize,
    /// How long an access token from `POST /oauth/token` lives.
    pub oauth_token_lifetime: Duration,
    /// The most operations one Bulk request may carry (advertised as
    /// `maxOperations`; more is 413).
    pub bulk_operations_max: usize,
    /// How long one writer command of a Bulk request may run before the
    /// request yields the writer to others and goes on in the next.
    pub bulk_command_budget: Duration,
    /// Log positions between as-of snapshots (0: none); see
    /// `store::snapshots`.
    pub as_of_snapshot_every: u64,
    /// Rows the request log keeps per tenant, newest first.
    pub request_log_rows_max: u64,
    /// How long a console session lasts after sign-in (never longer than
    /// its token).
    pub console_session_lifetime: Duration,
    /// How long a console page waits for the next run's preview to be
    /// decided before it says it is being decided (`sync::previews`); zero
    /// never waits.
    pub preview_wait: Duration,
    /// How long the console's Synchronize button waits for the run before
    /// it shows the run's page, which follows the run's progress.
    pub console_sync_wait: Duration,
    /// How often a silent event stream sends a heartbeat comment.
    pub feed_heartbeat: Duration,
    /// How often a waiting long poll or stream looks for events another
    /// process (the CLI) committed; this process's own commits wake it at
    /// once.
    pub feed_poll: Duration,
    /// How webhooks are delivered.
    pub webhooks: crate::webhooks::DeliveryConfig,
    /// The longest one statement of a heavy read the IdP or an
    /// application asks for may run (`serve --query-budget-ms`).
    pub query_budget: Duration,
    /// How long a heavy read may wait for a slot before it is answered 503.
    pub heavy_queue_wait: Duration,
    /// The server itself speaks TLS (`serve --tls-cert`): clients reach it
    /// over https.
    pub tls: bool,
    /// `/readyz` answers 503 when the database's file system has less free
    /// space than this.
    pub ready_min_free_bytes: u64,
    /// Header timeout (and idle keep-alive) and the connection cap.
    pub connections: crate::http::ConnectionLimits,
    /// A request body must arrive whole within this (a trickle is cut off
    /// with 408).
    pub body_timeout: Duration,
    /// Count requests for `/metrics` (on when `--metrics-listen` is given:
    /// with nothing to scrape them, nobody pays for counting).
    pub count_requests: bool,
    /// Bytes the read cache may keep rendered answers in (0: none); see
    /// `cache`.
    pub read_cache_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            body_limit_bytes: 2 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            token_touch_interval: Duration::from_secs(60),
            public_url: None,
            patch_response_members_max: 1000,
            oauth_token_lifetime: Duration::from_secs(3600),
            bulk_operations_max: 1000,
            bulk_command_budget: Duration::from_millis(20),
            as_of_snapshot_every: crate::store::snapshots::DEFAULT_EVERY,
            request_log_rows_max: crate::requests::KEEP_ROWS_DEFAULT,
            console_session_lifetime: Duration::from_secs(8 * 3600),
            preview_wait: crate::sync::previews::WAIT,
            console_sync_wait: Duration::from_secs(2),
            feed_heartbeat: Duration::from_secs(15),
            feed_poll: Duration::from_secs(1),
            webhooks: crate::webhooks::DeliveryConfig::default(),
            query_budget: Duration::from_secs(10),
            heavy_queue_wait: Duration::from_secs(30),
            tls: false,
            ready_min_free_bytes: 256 * 1024 * 1024,
            connections: crate::http::ConnectionLimits::default(),
            body_timeout: Duration::from_secs(30),
            count_requests: false,
            read_cache_bytes: crate::cache::ANSWERS_MIB_DEFAULT * 1024 * 1024,
        }
    }
}

impl ServerConfig {
    /// Where clients reach the server, `scheme://host` with no trailing
    /// slash: the public URL when one is set (a proxy stands in front),
    /// else the request's Host header, over https when the proxy says so
    /// in X-Forwarded-Proto. The SCIM base URL, the console's Tenant URL
    /// and its cookies' Secure flag all start from it.
    pub fn origin(&self, headers: &axum::http::HeaderMap) -> String {
        if let Some(public_url) = &self.public_url {
            return public_url.trim_end_matches('/').to_owned();
        }
        let host =
            headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
        let scheme = match headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok()) {
            _ if self.tls => "https",
            Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        format!("{scheme}://{host}")
    }

    /// Whether clients reach the server over TLS (see [`Self::origin`]).
    pub fn over_tls(&self, headers: &axum::http::HeaderMap) -> bool {
        self.origin(headers).starts_with("https://")
    }
}

/// What every handler can reach: one `Arc`, so the clone that every
/// middleware layer and extractor makes per request is one atomic
/// increment, not one per field (they measured 2.5 % of a cached lookup).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<Store>,
    pub config: Arc<ServerConfig>,
    /// When each token's use was last written (see `token_touch_interval`).
    /// A `std` mutex: held for a map lookup, never across an `.await`.
    pub token_touches: Arc<Mutex<HashMap<String, Instant>>>,
    /// SCIM requests as answered, on their way to the request log.
    pub requests: Arc<crate::requests::RequestLog>,
    /// Decided previews of the next run, for the console's pages.
    pub previews: Arc<crate::sync::previews::Previews>,
    /// Turns true when shutdown begins, so long polls and event streams
    /// end instead of holding the server open for the grace period.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Webhook delivery: its state file and the deliverer.
    pub webhooks: Arc<Webhooks>,
    /// Admission of reads that may scan, so one tenant never takes every
    /// read connection.
    pub heavy: Arc<crate::reads::HeavyReads>,
    /// What `/metrics` (on its own listener) serves.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Admitted tokens and rendered answers, valid while the database's
    /// change generation stands.
    pub cache: Arc<crate::cache::ReadCache>,
}

/// What the webhook routes and the delivery tasks share.
#[derive(Debug)]
pub struct Webhooks {
    pub deliveries: Arc<crate::webhooks::state::Deliveries>,
    pub deliverer: Arc<crate::webhooks::deliver::Deliverer>,
}

impl AppState {
    /// Opens what the server needs beside the store (the webhook delivery
    /// state file next to the database).
    pub fn new(store: Arc<Store>, config: ServerConfig) -> Result<AppState, Error> {
        let requests = Arc::new(crate::requests::RequestLog::new(config.request_log_rows_max));
        let deliveries = Arc::new(crate::webhooks::state::Deliveries::of(&store)?);
        let deliverer = Arc::new(crate::webhooks::deliver::Deliverer::new(
            store.clone(),
            deliveries.clone(),
            config.webhooks.clone(),
            config.feed_poll,
        )?);
        let heavy = Arc::new(crate::reads::HeavyReads::new(
            store.log().heavy_readers_max(),
            config.query_budget,
            config.heavy_queue_wait,
        ));
        let cache = Arc::new(crate::cache::ReadCache::new(config.read_cache_bytes));
        Ok(AppState(Arc::new(Shared {
            heavy,
            metrics: Arc::new(crate::metrics::Metrics::new(
                store.clone(),
                deliveries.clone(),
                cache.clone(),
                config.count_requests,
            )),
            cache,
            store,
            previews: Arc::new(crate::sync::previews::Previews::new(config.preview_wait)),
            config: Arc::new(config),
            token_touches: Arc::default(),
            requests,
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
            webhooks: Arc::new(Webhooks { deliveries, deliverer }),
        })))
    }
}
