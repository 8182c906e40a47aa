//! Prometheus metrics, served on a listener of their own (`serve
//! --metrics-listen ADDR`, off by default) so they are never exposed on
//! the port the identity providers reach. prometheus-client keeps its
//! registry in [`Metrics`], not in a process-global recorder, so tests run
//! several servers in one process. Names start with `rollcall_`;
//! docs/operations.md lists them.
//!
//! Requests are counted where they pass (`server::request_context`, the
//! bearer gate); what the log and the files say is read at each scrape by
//! [`Gauges`]. This module owns the names and the exposition; it must not
//! decide anything about a request.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use events::histogram::Histogram as WriterHistogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::Store;

/// Which part of the server a request went to.
pub fn family_of(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/scim/") => "scim",
        p if p.starts_with("/api/v1/audit") => "audit",
        p if p.starts_with("/api/v1/events") => "events",
        p if p.starts_with("/api/") => "api",
        p if p.starts_with("/admin") => "console",
        "/oauth/token" => "oauth",
        "/healthz" | "/livez" | "/readyz" => "health",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    family: &'static str,
    method: &'static str,
    status: u16,
}

/// A method as a label: the ones HTTP defines, `other` for the rest (a
/// client cannot grow the label set).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client: &'static str,
    status: u16,
}

/// The kind of SCIM client a request came from, by its User-Agent: the
/// identity providers rollcall knows, `other`, or `none`. A label with a
/// handful of values, never the header itself (no tenant, no cardinality
/// an outsider controls).
pub fn client_kind(user_agent: Option<&[u8]>) -> &'static str {
    let Some(agent) = user_agent else {
        return "none";
    };
    // Case-insensitive, without copying the header.
    let has = |word: &str| {
        agent.windows(word.len()).any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
    };
    if has("microsoft") || has("azure") || has("entra") {
        "entra"
    } else if has("okta") {
        "okta"
    } else if has("google") {
        "google"
    } else if has("onelogin") {
        "onelogin"
    } else if has("jumpcloud") {
        "jumpcloud"
    } else if agent.trim_ascii().is_empty() {
        "none"
    } else {
        "other"
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The registry and the metrics requests move.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<FamilyLabel, Histogram>,
    auth_failures: Family<FamilyLabel, Counter>,
    backups: Family<ResultLabel, Counter>,
    scim_clients: Family<ClientLabels, Counter>,
    /// Whether requests are counted (see `ServerConfig::count_requests`).
    counting: bool,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new(
        store: Arc<Store>,
        deliveries: Arc<crate::webhooks::state::Deliveries>,
        cache: Arc<crate::cache::ReadCache>,
        counting: bool,
    ) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<FamilyLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let auth_failures = Family::<FamilyLabel, Counter>::default();
        let backups = Family::<ResultLabel, Counter>::default();
        let scim_clients = Family::<ClientLabels, Counter>::default();
        registry.register(
            "rollcall_http_requests",
            "HTTP requests answered, by route family, method and status",
            requests.clone(),
        );
        registry.register(
            "rollcall_http_request_duration_seconds",
            "Time to answer an HTTP request, by route family",
            latency.clone(),
        );
        registry.register(
            "rollcall_auth_failures",
            "Bearer tokens refused (missing, unknown, expired, revoked or of another scope), by surface (scim or api)",
            auth_failures.clone(),
        );
        registry.register(
            "rollcall_backups",
            "Scheduled backups, by result (ok or failed)",
            backups.clone(),
        );
        registry.register(
            "rollcall_scim_requests",
            "SCIM requests answered, by the kind of client (entra, okta, google, onelogin, jumpcloud, other, none: from its User-Agent) and status",
            scim_clients.clone(),
        );
        registry.register_collector(Box::new(Gauges { store, deliveries, cache }));
        Metrics { registry, requests, latency, auth_failures, backups, scim_clients, counting }
    }

    /// One request answered.
    pub fn request(
        &self,
        path: &str,
        method: &axum::http::Method,
        client: &'static str,
        status: StatusCode,
        took: Duration,
    ) {
        if !self.counting {
            return;
        }
        let family = family_of(path);
        if family == "scim" {
            self.scim_clients
                .get_or_create(&ClientLabels { client, status: status.as_u16() })
                .inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                family,
                method: method_label(method),
                status: status.as_u16(),
            })
            .inc();
        self.latency.get_or_create(&FamilyLabel { family }).observe(took.as_secs_f64());
    }

    /// A bearer token refused, on the SCIM surface (`scim`) or the others
    /// (`api`).
    pub fn auth_failure(&self, family: &'static str) {
        if !self.counting {
            return;
        }
        self.auth_failures.get_or_create(&FamilyLabel { family }).inc();
    }

    /// A scheduled backup done.
    pub fn backup(&self, ok: bool) {
        self.backups.get_or_create(&ResultLabel { result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// The exposition text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What the log and the files say, read at each scrape.
#[derive(Debug)]
struct Gauges {
    store: Arc<Store>,
    deliveries: Arc<crate::webhooks::state::Deliveries>,
    cache: Arc<crate::cache::ReadCache>,
}

/// Synchronize runs of every tenant by status: how many, and their time.
fn sync_runs(store: &Store) -> Vec<(String, u64, u64)> {
    store
        .read(|connection| {
            connection
                .prepare_cached(
                    "SELECT status, count(*), coalesce(sum(duration_ms), 0) FROM sync_runs \
                     GROUP BY status ORDER BY status",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| {
                            Ok((
                                row.get::<_, String>(0)?,
                                row.get::<_, i64>(1)?.max(0) as u64,
                                row.get::<_, i64>(2)?.max(0) as u64,
                            ))
                        })?
                        .collect::<Result<Vec<_>, events::db::DbError>>()
                })
                .map_err(|error| crate::error::Error::Internal(error.to_string()))
        })
        .unwrap_or_default()
}

/// How far behind the active webhook endpoints are.
#[derive(Debug, Default)]
struct Lag {
    events: u64,
    oldest_seconds: f64,
}

/// Rows counted at most per endpoint or tenant: a scrape stays cheap even
/// when a consumer is far behind.
const LAG_COUNT_MAX: i64 = 100_000;

fn webhook_lag(store: &Store, deliveries: &crate::webhooks::state::Deliveries) -> Lag {
    let Ok(cursors) = deliveries.cursors() else { return Lag::default() };
    let now = store.now();
    store
        .read(|connection| {
            let endpoints = projections::webhooks::webhooks(connection, None)?;
            let mut lag = Lag::default();
            for endpoint in endpoints {
                if endpoint.status != projections::webhooks::WebhookStatus::Active {
                    continue;
                }
                let key = (endpoint.tenant_id.clone(), endpoint.webhook_id.clone());
                let cursor = cursors.get(&key).copied().unwrap_or(endpoint.from);
                let (behind, first): (i64, Option<i64>) = connection
                    .prepare_cached(
                        "SELECT count(*), min(position) FROM (SELECT position FROM feed_rows \
                         WHERE tenant_id = ?1 AND (position > ?2 OR (position = ?2 AND seq > ?3)) \
                         ORDER BY position, seq LIMIT ?4)",
                    )
                    .and_then(|mut statement| {
                        statement.query_row(
                            events::params![
                                endpoint.tenant_id,
                                i64::try_from(cursor.position).unwrap_or(i64::MAX),
                                i64::from(cursor.seq),
                                LAG_COUNT_MAX
                            ],
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )
                    })
                    .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
                lag.events += behind.max(0) as u64;
                let Some(first) = first else { continue };
                let recorded: Option<String> = connection
                    .prepare_cached("SELECT recorded_at FROM events WHERE position = ?1")
                    .and_then(|mut statement| {
                        use events::db::OptionalExtension;
                        statement.query_row([first], |row| row.get(0)).optional()
                    })
                    .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
                if let Some(at) = recorded.and_then(|at| at.parse::<jiff::Timestamp>().ok()) {
                    let age = now.duration_since(at).as_secs_f64().max(0.0);
                    lag.oldest_seconds = lag.oldest_seconds.max(age);
                }
            }
            Ok(lag)
        })
        .unwrap_or_default()
}

/// What Synchronize has not applied yet, over every tenant.
#[derive(Debug, Default)]
struct Pending {
    changes: u64,
    tenants: u64,
}

fn sync_pending(store: &Store) -> Pending {
    store
        .read(|connection| {
            let checkpoints: Vec<(String, i64)> =
                connection
                    .prepare_cached(
                        "SELECT t.tenant_id, coalesce(c.position, 0) FROM tenants t \
                     LEFT JOIN member_checkpoints c ON c.tenant_id = t.tenant_id",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                            .collect::<Result<Vec<_>, events::db::DbError>>()
                    })
                    .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
            let mut pending = Pending::default();
            for (tenant, checkpoint) in checkpoints {
                // The member events a run appends come after its checkpoint:
                // only the SCIM directory's streams are pending work. Ranges
                // of stream names, so the (tenant, stream, version) index
                // answers alone (its rowid is the position).
                let changes: i64 = connection
                    .prepare_cached(
                        "SELECT (SELECT count(*) FROM (SELECT 1 FROM events WHERE tenant = ?1 \
                         AND stream >= 'user:' AND stream < 'user;' AND position > ?2 LIMIT ?3)) \
                         + (SELECT count(*) FROM (SELECT 1 FROM events WHERE tenant = ?1 \
                         AND stream >= 'group:' AND stream < 'group;' AND position > ?2 LIMIT ?3))",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_row(events::params![tenant, checkpoint, LAG_COUNT_MAX], |row| {
                                row.get(0)
                            })
                    })
                    .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
                if changes > 0 {
                    pending.changes += changes as u64;
                    pending.tenants += 1;
                }
            }
            Ok(pending)
        })
        .unwrap_or_default()
}

fn file_size(path: &std::path::Path, suffix: &str) -> u64 {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::metadata(std::path::PathBuf::from(name)).map(|metadata| metadata.len()).unwrap_or(0)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// A counter family of one label.
fn counters<N: prometheus_client::encoding::EncodeCounterValue + Copy + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, N)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, count) in values {
        ConstCounter::new(*count).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &WriterHistogram,
) -> Result<(), std::fmt::Error> {
    let snapshot = histogram.snapshot();
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum,
        snapshot.count,
        &snapshot.buckets,
        None,
    )
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let encoder = &mut encoder;
        let log = self.store.log();
        let head = log.head().map_or(-1, |head| i64::try_from(head).unwrap_or(i64::MAX));
        let metric = ConstGauge::new(head);
        metric.encode(encoder.encode_descriptor(
            "rollcall_log_head_position",
            "The log's last position (-1: unreadable)",
            None,
            metric.metric_type(),
        )?)?;
        // On PostgreSQL the files are the server's, measured by its own
        // exporters.
        if let Some(path) = log.path() {
            let size = |suffix| file_size(path, suffix);
            gauge(encoder, "rollcall_database_bytes", "Size of the database file", size(""))?;
            gauge(
                encoder,
                "rollcall_wal_bytes",
                "Size of the database's write-ahead log",
                size("-wal"),
            )?;
        }
        let (hits, misses) = self.cache.probes();
        counters(
            encoder,
            "rollcall_read_cache_probes",
            "Lookups of the read cache (tokens and rendered answers), by result (hit, or miss: absent or older than the last commit)",
            "result",
            &[("hit", hits), ("miss", misses)],
        )?;
        gauge(
            encoder,
            "rollcall_read_cache_bytes",
            "Bytes the read cache's rendered answers take, by the measure its bound is kept in",
            self.cache.answer_bytes(),
        )?;
        gauge(
            encoder,
            "rollcall_read_cache_bytes_max",
            "The read cache's bound (serve --read-cache-mib)",
            self.cache.answer_bytes_max(),
        )?;
        gauge(
            encoder,
            "rollcall_writable",
            "1 while writes can succeed; 0 once the writer stopped or an fsync failed",
            u64::from(log.is_writable()),
        )?;
        // Runs, by status, with their total time: one family each.
        let runs = sync_runs(&self.store);
        if !runs.is_empty() {
            let counts: Vec<(&str, u64)> =
                runs.iter().map(|(status, count, _)| (status.as_str(), *count)).collect();
            counters(
                encoder,
                "rollcall_sync_runs",
                "Synchronize runs of every tenant, by status",
                "status",
                &counts,
            )?;
            let seconds: Vec<(&str, f64)> = runs
                .iter()
                .map(|(status, _, duration_ms)| (status.as_str(), *duration_ms as f64 / 1000.0))
                .collect();
            counters(
                encoder,
                "rollcall_sync_run_seconds",
                "Time Synchronize runs took, by status",
                "status",
                &seconds,
            )?;
        }
        let pending = sync_pending(&self.store);
        gauge(
            encoder,
            "rollcall_sync_pending_changes",
            "SCIM directory events (users and groups) recorded since each tenant's last Synchronize, summed over tenants (each counted up to 100,000)",
            pending.changes,
        )?;
        gauge(
            encoder,
            "rollcall_sync_tenants_pending",
            "Tenants with directory changes a Synchronize has not applied yet",
            pending.tenants,
        )?;
        if let Ok((delivered, failing)) = self.deliveries.totals() {
            counter(
                encoder,
                "rollcall_webhook_messages_delivered",
                "Webhook messages delivered (answered 2xx), every endpoint",
                delivered,
            )?;
            gauge(
                encoder,
                "rollcall_webhook_endpoints_failing",
                "Webhook endpoints whose next message has failed and waits for a retry",
                failing,
            )?;
        }
        let (answered, failed) = self.deliveries.attempt_totals();
        counters(
            encoder,
            "rollcall_webhook_attempts",
            "Webhook delivery attempts by this process, by result (ok: answered 2xx; failed: any other answer, a timeout or no connection)",
            "result",
            &[("ok", answered), ("failed", failed)],
        )?;
        let lag = webhook_lag(&self.store, &self.deliveries);
        gauge(
            encoder,
            "rollcall_webhook_lag_events",
            "Feed events not yet delivered to active webhook endpoints, summed over endpoints (each counted up to 100,000)",
            lag.events,
        )?;
        let seconds = ConstGauge::new(lag.oldest_seconds);
        seconds.encode(encoder.encode_descriptor(
            "rollcall_webhook_lag_seconds",
            "Age of the oldest feed event an active webhook endpoint has not been delivered (0: none waiting)",
            None,
            seconds.metric_type(),
        )?)?;
        // The writer's statistics are the SQLite writer's.
        if let Some(log) = log.sqlite() {
            let stats = log.stats();
            let read = |value: &std::sync::atomic::AtomicU64| {
                value.load(std::sync::atomic::Ordering::Relaxed)
            };
            counter(
                encoder,
                "rollcall_writer_batches",
                "Transactions the writer committed (one per batch of commands)",
                read(&stats.batches_committed),
            )?;
            counter(
                encoder,
                "rollcall_writer_commands",
                "Commands whose effects the writer committed",
                read(&stats.commands_committed),
            )?;
            counter(
                encoder,
                "rollcall_writer_commands_rolled_back",
                "Commands rolled back alone (they failed)",
                read(&stats.commands_rolled_back),
            )?;
            gauge(
                encoder,
                "rollcall_writer_queue_commands",
                "Commands waiting for the writer (not yet in a batch)",
                read(&stats.queued),
            )?;
            histogram(
                encoder,
                "rollcall_writer_batch_commands",
                "Commands per committed batch (group commit)",
                &stats.batch_commands,
            )?;
            histogram(
                encoder,
                "rollcall_writer_commit_seconds",
                "Time of each batch's COMMIT; with --durability full it holds the fsync of the write-ahead log",
                &stats.commit_seconds,
            )?;
            histogram(
                encoder,
                "rollcall_writer_fsync_seconds",
                "Time of each fsync of the write-ahead log by the syncer (--durability pipelined only)",
                &stats.fsync_seconds,
            )?;
        }
        Ok(())
    }
}

/// `GET /metrics` on the metrics listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                // A scrape reads the database: never on an async worker, and
                // never from the connections kept for quick reads.
                let rendered = tokio::task::spawn_blocking(move || {
                    crate::reads::in_heavy_lane(|| metrics.render())
                })
                .await;
                match rendered {
                    Ok(Ok(text)) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    axum::serve(listener, router).await
}
