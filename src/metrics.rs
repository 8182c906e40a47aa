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
use events::EventLog;
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
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
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
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new(store: Arc<Store>, deliveries: Arc<crate::webhooks::state::Deliveries>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<FamilyLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let auth_failures = Family::<FamilyLabel, Counter>::default();
        let backups = Family::<ResultLabel, Counter>::default();
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
        registry.register_collector(Box::new(Gauges { store, deliveries }));
        Metrics { registry, requests, latency, auth_failures, backups }
    }

    /// One request answered.
    pub fn request(&self, path: &str, method: &str, status: StatusCode, took: Duration) {
        let family = family_of(path);
        self.requests
            .get_or_create(&RequestLabels {
                family,
                method: method.to_owned(),
                status: status.as_u16(),
            })
            .inc();
        self.latency.get_or_create(&FamilyLabel { family }).observe(took.as_secs_f64());
    }

    /// A bearer token refused, on the SCIM surface (`scim`) or the others
    /// (`api`).
    pub fn auth_failure(&self, family: &'static str) {
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
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|error| crate::error::Error::Internal(error.to_string()))
        })
        .unwrap_or_default()
}

fn file_size(path: &std::path::Path, suffix: &str) -> u64 {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::metadata(std::path::PathBuf::from(name)).map(|metadata| metadata.len()).unwrap_or(0)
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let log = self.store.log();
        let mut gauge = |name: &str, help: &str, value: i64| {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)
        };
        let head = log.head().map_or(-1, |head| i64::try_from(head).unwrap_or(i64::MAX));
        gauge("rollcall_log_head_position", "The log's last position (-1: unreadable)", head)?;
        let size = |suffix| i64::try_from(file_size(log.path(), suffix)).unwrap_or(i64::MAX);
        gauge("rollcall_database_bytes", "Size of the database file", size(""))?;
        gauge("rollcall_wal_bytes", "Size of the database's write-ahead log", size("-wal"))?;
        gauge(
            "rollcall_writable",
            "1 while writes can succeed; 0 once the writer stopped or an fsync failed",
            i64::from(log.is_writable()),
        )?;
        // Runs, by status, with their total time: one family each.
        let runs = sync_runs(&self.store);
        if !runs.is_empty() {
            let mut family = encoder.encode_descriptor(
                "rollcall_sync_runs",
                "Synchronize runs of every tenant, by status",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (status, count, _) in &runs {
                let labels = [("status", status.as_str())];
                ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
            }
            let mut family = encoder.encode_descriptor(
                "rollcall_sync_run_seconds",
                "Time Synchronize runs took, by status",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (status, _, duration_ms) in &runs {
                let labels = [("status", status.as_str())];
                let seconds = ConstCounter::new(*duration_ms as f64 / 1000.0);
                seconds.encode(family.encode_family(&labels)?)?;
            }
        }
        if let Ok((delivered, failing)) = self.deliveries.totals() {
            let mut counter = |name: &str, help: &str, value: u64| {
                let counter = ConstCounter::new(value);
                let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                counter.encode(metric)
            };
            counter(
                "rollcall_webhook_messages_delivered",
                "Webhook messages delivered (answered 2xx), every endpoint",
                delivered,
            )?;
            let gauge = ConstGauge::new(i64::try_from(failing).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "rollcall_webhook_endpoints_failing",
                "Webhook endpoints whose next message has failed and waits for a retry",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        let stats = Some(log.stats());
        let mut counter = |name: &str, help: &str, value: u64| {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)
        };
        if let Some(stats) = stats {
            let read = |value: &std::sync::atomic::AtomicU64| {
                value.load(std::sync::atomic::Ordering::Relaxed)
            };
            counter(
                "rollcall_writer_batches",
                "Transactions the writer committed (one per batch of commands)",
                read(&stats.batches_committed),
            )?;
            counter(
                "rollcall_writer_commands",
                "Commands whose effects the writer committed",
                read(&stats.commands_committed),
            )?;
            counter(
                "rollcall_writer_commands_rolled_back",
                "Commands rolled back alone (they failed)",
                read(&stats.commands_rolled_back),
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
                match metrics.render() {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    axum::serve(listener, router).await
}
