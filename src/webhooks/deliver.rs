//! The deliverer: one task per active endpoint, sending the feed's events
//! in cursor order, each message signed, the next only once the previous
//! one got a 2xx.
//!
//! A [`Supervisor`] starts and stops the tasks as endpoints are created,
//! changed, paused, resumed, disabled or deleted (it looks at the
//! `webhooks` projection at every commit of this process and every poll).
//! A task reads its state from the delivery state file before every
//! message and records each attempt there before the next, so a restart
//! (or a `kill -9`) resumes exactly where it stopped: at most the message
//! in flight is sent again. Failures wait on the retry schedule (with
//! jitter), `Retry-After` is honoured on 429 and 503, 410 Gone disables
//! the endpoint, and so does failing without a break for `disable_after`.
//! Redirects are not followed, and unless private targets are allowed
//! every address a name resolves to is checked as it is connected to.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use projections::feed::{self, Cursor, FeedEvent};
use projections::webhooks::{self as projection, WebhookRow, WebhookStatus};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::state::{Attempt, Deliveries, DeliveryState, RESPONSE_KEPT};
use super::{DeliveryConfig, is_public, sign};
use crate::error::Error;
use crate::stop::{is_stopped, until_stopped};
use crate::store::Store;

/// Events in one batched message at most.
pub const BATCH_EVENTS_MAX: usize = 100;
/// Events read at once for an endpoint sent one event per request.
const READ_AHEAD: usize = 256;
/// A `Retry-After` longer than this is waited only this long.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// What every delivery task shares.
#[derive(Debug)]
pub struct Deliverer {
    pub store: Arc<Store>,
    pub deliveries: Arc<Deliveries>,
    pub config: DeliveryConfig,
    client: reqwest::Client,
    /// How often a waiting task looks again (another process's commits,
    /// an admin's redelivery from the CLI).
    poll: Duration,
}

/// Resolves names to public addresses only: a name that resolves to a
/// private one is refused at connection time, so a DNS answer changed
/// after the endpoint was checked cannot turn delivery inwards.
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|address| is_public(address.ip())).collect();
            if public.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// How an attempt went.
#[derive(Debug)]
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    response: Option<String>,
    latency: Duration,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }
}

#[derive(Deserialize)]
struct EventId {
    id: String,
}

fn event_id(event: &FeedEvent) -> String {
    serde_json::from_str::<EventId>(&event.body).map(|body| body.id).unwrap_or_default()
}

/// A message: its id, body and the cursors it spans.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub body: String,
    pub first: Cursor,
    pub last: Cursor,
    pub events: u32,
}

impl Message {
    /// One event, or (for a batching endpoint) a JSON array of them. A
    /// batch's id names its first event and its size, so a retry (the
    /// same batch again) keeps it.
    pub fn of(events: &[FeedEvent], batch: bool) -> Option<Message> {
        let first = events.first()?;
        let last = events.last()?;
        if !batch {
            return Some(Message {
                id: event_id(first),
                body: first.body.clone(),
                first: first.cursor,
                last: first.cursor,
                events: 1,
            });
        }
        let mut body = String::from("[");
        for (index, event) in events.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            body.push_str(&event.body);
        }
        body.push(']');
        Some(Message {
            id: format!("batch_{}_{}", event_id(first), events.len()),
            body,
            first: first.cursor,
            last: last.cursor,
            events: u32::try_from(events.len()).unwrap_or(u32::MAX),
        })
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX));
    }
    // An HTTP date (RFC 9110: IMF-fixdate).
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or_default().min(RETRY_AFTER_MAX))
}

/// A fraction in [0, 0.2) to lengthen a wait by, so endpoints that failed
/// together do not all retry at the same instant.
fn jitter() -> f64 {
    let mut byte = [0u8; 2];
    let _ = getrandom::fill(&mut byte);
    f64::from(u16::from_be_bytes(byte)) / f64::from(u16::MAX) * 0.2
}

fn later(now: Timestamp, by: Duration) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(now)
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// Makes ring the process's TLS provider (reqwest is built without one,
/// so that no C crypto library is compiled). Call it before building any
/// HTTP client; a second call does nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Deliverer {
    pub fn new(
        store: Arc<Store>,
        deliveries: Arc<Deliveries>,
        config: DeliveryConfig,
        poll: Duration,
    ) -> Result<Deliverer, Error> {
        install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("rollcall-webhooks/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder
            .build()
            .map_err(|error| Error::Internal(format!("the webhook client: {error}")))?;
        Ok(Deliverer { store, deliveries, config, client, poll })
    }

    /// Sends one message to `url`, signed with `secrets`.
    async fn send(&self, url: &str, message: &Message, secrets: &[String]) -> Outcome {
        let started = Instant::now();
        let now = self.store.now();
        let failed = |error: String| Outcome {
            status: None,
            error: Some(error),
            retry_after: None,
            response: None,
            latency: started.elapsed(),
        };
        if !self.config.allow_private_targets
            && let Ok(parsed) = reqwest::Url::parse(url)
            && let Some(ip) = match parsed.host() {
                Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                _ => None,
            }
            && !is_public(ip)
        {
            return failed(format!("{ip} is not a public address"));
        }
        if secrets.is_empty() {
            return failed("the endpoint has no signing secret".to_owned());
        }
        let timestamp = now.as_second();
        let signature =
            sign::signature_header(secrets, &message.id, timestamp, message.body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                return failed(format!("{kind}: {}", error_chain(&error)));
            }
        };
        let status = response.status().as_u16();
        let wait =
            if matches!(status, 429 | 503) { retry_after(response.headers(), now) } else { None };
        // The start of the body, for the admin; the rest is not read.
        let mut kept: Vec<u8> = Vec::new();
        let mut error = None;
        while kept.len() < RESPONSE_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(read) => {
                    error = Some(format!("reading the response: {}", error_chain(&read)));
                    break;
                }
            }
        }
        kept.truncate(RESPONSE_KEPT);
        let text = String::from_utf8_lossy(&kept).into_owned();
        Outcome {
            status: Some(status),
            error: error
                .or_else(|| (!(200..300).contains(&status)).then(|| format!("answered {status}"))),
            retry_after: wait,
            response: (!text.is_empty()).then_some(text),
            latency: started.elapsed(),
        }
    }

    fn secrets(&self, row: &WebhookRow) -> Result<Vec<String>, Error> {
        let now = self.store.log().now_millis();
        self.store.read(|connection| {
            Ok(projection::signing_secrets(connection, &row.tenant_id, &row.webhook_id, &now)?)
        })
    }

    /// Sends one event out of order (a redelivery on request, or a test),
    /// once, and records the attempt; the endpoint's place in the feed
    /// does not move.
    pub async fn send_once(
        &self,
        row: &WebhookRow,
        message: &Message,
        kind: &'static str,
    ) -> Result<Attempt, Error> {
        let secrets = self.secrets(row)?;
        let at = self.store.log().now_millis();
        let outcome = self.send(&row.settings.url, message, &secrets).await;
        let attempt = attempt_of(kind, message, &row.tenant_id, 1, at, &outcome);
        self.deliveries.record_extra(&row.tenant_id, &row.webhook_id, &attempt)?;
        Ok(attempt)
    }

    /// Sends one event of the feed again, by its id, out of order.
    pub async fn redeliver(&self, row: &WebhookRow, event_id: &str) -> Result<Attempt, Error> {
        let event = self
            .store
            .read(|connection| Ok(feed::by_id(connection, &row.tenant_id, event_id)?))?
            .ok_or_else(|| Error::not_found(format!("event {event_id}")))?;
        let message = Message::of(std::slice::from_ref(&event), false)
            .ok_or_else(|| Error::Internal("an event made no message".to_owned()))?;
        self.send_once(row, &message, "redelivery").await
    }

    /// Events after `after` this endpoint receives: up to one batch, or a
    /// page read ahead for an endpoint sent one event at a time.
    fn read_events(&self, row: &WebhookRow, after: Cursor) -> Result<Vec<FeedEvent>, Error> {
        let limit = if row.settings.batch { BATCH_EVENTS_MAX } else { READ_AHEAD };
        let page = self.store.read(|connection| {
            Ok(feed::page(connection, &row.tenant_id, after, row.settings.types.as_deref(), limit)?)
        })?;
        Ok(page.events)
    }

    /// Waits for the endpoint's lock on PostgreSQL, where every node runs a
    /// supervisor: the lock makes one of them its deliverer, and a node
    /// that dies releases it with its session, so another resumes from the
    /// delivery state, in order. `None` once told to stop. One SQLite file
    /// has one server, and needs no lock (`Some(None)`).
    async fn endpoint_lock(
        &self,
        row: &WebhookRow,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Option<crate::store::StoreLock>> {
        if self.store.log().sqlite().is_some() {
            return Some(None);
        }
        let name = format!("webhook-{}-{}", row.tenant_id, row.webhook_id);
        loop {
            let store = Arc::clone(&self.store);
            let name = name.clone();
            match tokio::task::spawn_blocking(move || store.try_lock(&name)).await {
                Ok(Ok(Some(lock))) => return Some(Some(lock)),
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, webhook = %row.webhook_id, "taking an endpoint's lock failed")
                }
                Err(error) => tracing::warn!(%error, "taking an endpoint's lock failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                () = until_stopped(stop) => return None,
            }
        }
    }

    /// Delivers to one endpoint until told to stop (or it is disabled).
    async fn run_endpoint(self: Arc<Self>, row: WebhookRow, mut stop: watch::Receiver<bool>) {
        let Some(_lock) = self.endpoint_lock(&row, &mut stop).await else { return };
        let mut commits = self.store.log().watch_commits();
        let mut held = Held::default();
        loop {
            if is_stopped(&stop) {
                return;
            }
            match self.step(&row, &mut commits, &mut held).await {
                Ok(Step::Delivered) => {}
                Ok(Step::Idle) => {
                    held.stale = true;
                    let woke = tokio::select! {
                        _ = commits.changed() => true,
                        () = tokio::time::sleep(self.poll) => false,
                        () = until_stopped(&mut stop) => false,
                    };
                    // A busy log commits thousands of times a second, and
                    // few of those are this tenant's feed: look at most
                    // every IDLE_SPACING, however often it wakes.
                    if woke {
                        tokio::select! {
                            () = tokio::time::sleep(IDLE_SPACING) => {}
                            () = until_stopped(&mut stop) => {}
                        }
                    }
                }
                Ok(Step::Retry(wait)) => {
                    // Commits do not matter to a message waiting for its
                    // retry: only the time, and an admin (seen within poll).
                    held.stale = true;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = until_stopped(&mut stop) => {}
                    }
                }
                Ok(Step::Disabled) => return,
                Err(error) => {
                    held = Held::default();
                    tracing::warn!(%error, webhook = %row.webhook_id, "webhook delivery failed to run; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(self.poll) => {}
                        () = until_stopped(&mut stop) => {}
                    }
                }
            }
        }
    }

    async fn step(
        self: &Arc<Self>,
        row: &WebhookRow,
        commits: &mut watch::Receiver<u64>,
        held: &mut Held,
    ) -> Result<Step, Error> {
        // Marked seen first, whichever way this step ends: a wait after it
        // then sleeps until the next commit, instead of waking at once for
        // one it already saw (which spun a core while a retry was due).
        commits.borrow_and_update();
        // The state file is read again after every wait (an admin may have
        // said "now", or rewound, from another process) and while a message
        // waits for its retry; while deliveries succeed back to back, what
        // this task recorded is what the file holds.
        if held.stale || held.state.as_ref().is_none_or(|state| state.next_attempt_at.is_some()) {
            let state = self.deliveries.state(&row.tenant_id, &row.webhook_id, row.from)?;
            if held.state.as_ref().is_none_or(|held| held.cursor != state.cursor) {
                held.ahead.clear();
            }
            held.state = Some(state);
            held.stale = false;
        }
        let Some(state) = held.state.clone() else {
            return Ok(Step::Idle);
        };
        let now = self.store.now();
        if let Some(next) = state.next_attempt_at.as_deref().and_then(parse_time)
            && next > now
        {
            let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
            return Ok(Step::Retry(wait.min(self.poll)));
        }
        if row.settings.batch || held.ahead.is_empty() {
            held.ahead = self.read_events(row, state.cursor)?.into();
        }
        let message = if row.settings.batch {
            // A batch being retried goes again exactly as it was sent.
            let through = state.pending_through;
            let events: Vec<FeedEvent> = held
                .ahead
                .iter()
                .filter(|event| through.is_none_or(|through| event.cursor <= through))
                .cloned()
                .collect();
            Message::of(&events, true)
        } else {
            held.ahead.front().and_then(|event| Message::of(std::slice::from_ref(event), false))
        };
        let Some(message) = message else {
            return Ok(Step::Idle);
        };
        let secrets = match &held.secrets {
            Some((secrets, read)) if read.elapsed() < self.poll => secrets.clone(),
            _ => {
                let secrets = self.secrets(row)?;
                held.secrets = Some((secrets.clone(), Instant::now()));
                secrets
            }
        };
        let at = self.store.log().now_millis();
        let outcome = self.send(&row.settings.url, &message, &secrets).await;
        let attempt_number = state.attempts + 1;
        let attempt =
            attempt_of("delivery", &message, &row.tenant_id, attempt_number, at.clone(), &outcome);
        let now = self.store.now();
        let mut next = DeliveryState {
            last_attempt_at: Some(at),
            last_status: outcome.status,
            last_error: outcome.error.clone(),
            last_latency_ms: Some(u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX)),
            ..state.clone()
        };
        let mut disable = None;
        if outcome.succeeded() {
            next.cursor = message.last;
            next.attempts = 0;
            next.next_attempt_at = None;
            next.failing_since = None;
            next.pending_through = None;
            next.delivered += 1;
        } else {
            next.attempts = attempt_number;
            next.pending_through = Some(message.last);
            let failing_since =
                next.failing_since.clone().unwrap_or_else(|| events::time::format_millis(now));
            let schedule = &self.config.retry_schedule;
            let index = usize::try_from(state.attempts)
                .unwrap_or(usize::MAX)
                .min(schedule.len().saturating_sub(1));
            let planned = schedule.get(index).copied().unwrap_or(Duration::from_secs(60));
            let wait = outcome.retry_after.unwrap_or_else(|| planned.mul_f64(1.0 + jitter()));
            next.next_attempt_at = Some(events::time::format_millis(later(now, wait)));
            if outcome.status == Some(410) {
                disable = Some("the endpoint answered 410 Gone".to_owned());
            } else if let Some(since) = parse_time(&failing_since)
                && Duration::try_from(now.duration_since(since)).unwrap_or_default()
                    >= self.config.disable_after
            {
                disable = Some(format!("every delivery failed since {failing_since}"));
            }
            next.failing_since = Some(failing_since);
        }
        let recorded = self.deliveries.record(&row.tenant_id, &row.webhook_id, &attempt, &next)?;
        if !recorded {
            // An admin rewound or retried meanwhile: start again from there.
            *held = Held::default();
            return Ok(Step::Delivered);
        }
        if outcome.succeeded() && !row.settings.batch {
            held.ahead.pop_front();
        }
        held.state = Some(next);
        if let Some(reason) = disable {
            tracing::warn!(webhook = %row.webhook_id, %reason, "webhook endpoint disabled");
            super::disable(&self.store, &row.tenant_id, &row.webhook_id, reason).await?;
            return Ok(Step::Disabled);
        }
        if outcome.succeeded() { Ok(Step::Delivered) } else { Ok(Step::Retry(Duration::ZERO)) }
    }
}

/// What one endpoint's task keeps between messages.
#[derive(Debug, Default)]
struct Held {
    /// Where the endpoint stands, as this task last read or recorded it.
    state: Option<DeliveryState>,
    /// The state must be read again before it is trusted (after a wait).
    stale: bool,
    /// Events after the state's cursor, read ahead.
    ahead: std::collections::VecDeque<FeedEvent>,
    /// The signing secrets, and when they were read (again after `poll`,
    /// so a rotated secret's end is seen within it).
    secrets: Option<(Vec<String>, Instant)>,
}

enum Step {
    Delivered,
    /// Nothing to send: wait for a commit (or the poll).
    Idle,
    /// A failed message waits this long for its retry.
    Retry(Duration),
    Disabled,
}

/// The least time between two looks at the feed of an idle endpoint.
const IDLE_SPACING: Duration = Duration::from_millis(25);

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn attempt_of(
    kind: &'static str,
    message: &Message,
    tenant: &str,
    attempt: u32,
    at: String,
    outcome: &Outcome,
) -> Attempt {
    Attempt {
        kind,
        message_id: message.id.clone(),
        first_cursor: message.first.encode(tenant),
        last_cursor: message.last.encode(tenant),
        events: message.events,
        attempt,
        at,
        status: outcome.status,
        error: outcome.error.clone(),
        latency_ms: u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
        response: outcome.response.clone(),
    }
}

/// Runs the supervisor and every endpoint's task on a thread of their
/// own, with a single-threaded runtime: delivery never takes a worker from
/// the requests (the IdP's above all), its reads and writes of SQLite may
/// block where they run, and a message goes from task to socket to state
/// file without hopping threads (with the writes on a blocking pool, the
/// hand-offs were most of a delivery's time). Ends when `stopping` turns
/// true.
pub fn start(
    deliverer: Arc<Deliverer>,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("rollcall-webhooks".to_owned()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "webhook delivery could not start its runtime");
                return;
            }
        };
        runtime.block_on(Supervisor::new(deliverer).run(stopping));
    })
}

/// The least time between two reads of the endpoints by the supervisor.
const SUPERVISOR_SPACING: Duration = Duration::from_millis(100);

/// A running endpoint task: the settings version it runs with, its stop
/// switch, its handle.
type Running = (u64, watch::Sender<bool>, JoinHandle<()>);

/// Starts and stops the endpoints' tasks.
#[derive(Debug)]
pub struct Supervisor {
    deliverer: Arc<Deliverer>,
    /// By (tenant, endpoint).
    running: HashMap<(String, String), Running>,
}

impl Supervisor {
    pub fn new(deliverer: Arc<Deliverer>) -> Supervisor {
        Supervisor { deliverer, running: HashMap::new() }
    }

    /// Runs until `stopping` turns true; then stops every task.
    pub async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut commits = self.deliverer.store.log().watch_commits();
        loop {
            if is_stopped(&stopping) {
                break;
            }
            commits.borrow_and_update();
            let store = Arc::clone(&self.deliverer.store);
            match store.read(|connection| Ok(projection::webhooks(connection, None)?)) {
                Ok(rows) => self.reconcile(rows),
                Err(error) => tracing::warn!(%error, "reading the webhook endpoints failed"),
            }
            let woke = tokio::select! {
                _ = commits.changed() => true,
                () = tokio::time::sleep(self.deliverer.poll) => false,
                () = until_stopped(&mut stopping) => false,
            };
            // Endpoint changes are rare and commits are not: read the
            // endpoints at most every SUPERVISOR_SPACING.
            if woke {
                tokio::select! {
                    () = tokio::time::sleep(SUPERVISOR_SPACING) => {}
                    () = until_stopped(&mut stopping) => {}
                }
            }
        }
        for (_, (_, stop, task)) in self.running.drain() {
            let _ = stop.send(true);
            task.abort();
            let _ = task.await;
        }
    }

    fn reconcile(&mut self, rows: Vec<WebhookRow>) {
        let mut wanted: HashMap<(String, String), WebhookRow> = rows
            .into_iter()
            .filter(|row| row.status == WebhookStatus::Active)
            .map(|row| ((row.tenant_id.clone(), row.webhook_id.clone()), row))
            .collect();
        self.running.retain(|key, (version, stop, task)| {
            let keep =
                !task.is_finished() && wanted.get(key).is_some_and(|row| row.version == *version);
            if !keep {
                let _ = stop.send(true);
                task.abort();
            }
            keep
        });
        for (key, row) in wanted.drain() {
            if self.running.contains_key(&key) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let version = row.version;
            let task = tokio::spawn(Arc::clone(&self.deliverer).run_endpoint(row, stopped));
            self.running.insert(key, (version, stop, task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop switch whose owner is gone counts as on: waiting on it ends
    /// at once and for good (the supervisor of a server dropped without a
    /// shutdown spun on `changed()` otherwise).
    #[tokio::test]
    async fn a_dropped_switch_stops() {
        let (switch, mut seen) = watch::channel(false);
        assert!(!is_stopped(&seen));
        drop(switch);
        assert!(is_stopped(&seen));
        tokio::time::timeout(Duration::from_secs(5), until_stopped(&mut seen)).await.expect("ends");
        let (switch, mut seen) = watch::channel(false);
        let waiting = tokio::spawn(async move { until_stopped(&mut seen).await });
        switch.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("ends").unwrap();
    }
}
