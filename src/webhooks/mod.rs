//! Webhooks: push delivery of the event feed to the application's
//! endpoints, signed per Standard Webhooks.
//!
//! It owns the endpoint commands (create, change, pause, resume, rotate
//! the secret, delete, and rollcall's own disable), their validation (an
//! http(s) URL that does not reach a private address unless the operator
//! allows it), the signatures ([`sign`]), the delivery state file
//! ([`state`]) and the deliverer ([`deliver`]). Endpoints and their
//! changes are events in the tenant's chain (`webhook:<id>`); the secret
//! never is. Delivery reads the `feed` projection and writes only its own
//! state file: it never waits for, nor delays, the event writer.

pub mod deliver;
pub mod sign;
pub mod state;

use std::net::IpAddr;
use std::time::Duration;

use events::event::{
    Event, WebhookChanged, WebhookCreated, WebhookDeleted, WebhookDisabled, WebhookPaused,
    WebhookResumed, WebhookSecretRotated, WebhookSettings,
};
use events::{CommandContext, ExpectedVersion};
use projections::feed;
use projections::webhooks::{self as projection, WebhookRow, WebhookStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::store::{Store, record};
use state::{Attempt, DeliveryState};

/// Endpoints a tenant may have at most.
pub const ENDPOINTS_MAX: usize = 50;
/// Longest endpoint URL accepted.
pub const URL_LENGTH_MAX: usize = 2048;
/// Longest description accepted, in characters.
pub const DESCRIPTION_LENGTH_MAX: usize = 200;
/// How long a rotated secret goes on signing beside the new one, unless
/// asked otherwise.
pub const ROTATION_OVERLAP_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// How deliveries are made: from `serve`'s flags.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The waits before each retry of a failed message; past the end, the
    /// last one again.
    pub retry_schedule: Vec<Duration>,
    /// A message not answered 2xx within this is a failure.
    pub timeout: Duration,
    /// An endpoint failing without a break for this long is disabled.
    pub disable_after: Duration,
    /// Endpoints may be on loopback, private and link-local addresses
    /// (tests, local development); refused otherwise.
    pub allow_private_targets: bool,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        DeliveryConfig {
            retry_schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                hours(2),
                hours(5),
                hours(10),
                hours(14),
                hours(20),
                hours(24),
            ],
            timeout: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            allow_private_targets: false,
        }
    }
}

/// Reads `1s,2s,5m,2h,1d`: the retry schedule's flag.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let mut schedule = Vec::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let split = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        let (number, unit) = part.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{part:?} is not a duration like 5s, 5m, 2h, 1d"))?;
        let seconds = match unit {
            "ms" => {
                schedule.push(Duration::from_millis(number));
                continue;
            }
            "s" | "" => number,
            "m" => number * 60,
            "h" => number * 3600,
            "d" => number * 86_400,
            _ => return Err(format!("{part:?}: the units are ms, s, m, h and d")),
        };
        schedule.push(Duration::from_secs(seconds));
    }
    if schedule.is_empty() {
        return Err("the retry schedule needs at least one wait".to_owned());
    }
    Ok(schedule)
}

/// Whether deliveries may go to `ip`: not loopback, private, link-local,
/// shared (CGNAT), unspecified, multicast or broadcast; an IPv4 address
/// mapped into IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The settings an admin sends, before they are checked: a PATCH's body
/// (each field absent keeps it; `null` clears `types` or `description`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookChange)]
pub struct SettingsInput {
    /// An http or https URL (at most 2,048 bytes) that resolves to a
    /// public address, unless the server allows private targets.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://[^\\u0000-\\u0020]+$", max_length = 2048)]
    pub url: Option<String>,
    /// The event types to receive; `null`: every type.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    pub types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub description: Option<Option<String>>,
    pub batch: Option<bool>,
    /// `active` (resume) or `paused` (pause).
    #[schema(pattern = "^(active|paused)$")]
    pub status: Option<String>,
}

/// A new endpoint: a POST's body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An http or https URL (at most 2,048 bytes) that resolves to a
    /// public address, unless the server allows private targets.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://[^\\u0000-\\u0020]+$", max_length = 2048)]
    pub url: String,
    /// The event types to receive; absent or `null`: every type.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    pub types: Option<Vec<String>>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub description: Option<String>,
    /// Up to 100 events per request, as a JSON array (default false).
    #[serde(default)]
    pub batch: Option<bool>,
}

impl From<NewWebhook> for SettingsInput {
    fn from(new: NewWebhook) -> SettingsInput {
        SettingsInput {
            url: Some(new.url),
            types: Some(new.types),
            description: Some(new.description),
            batch: new.batch,
            status: None,
        }
    }
}

/// An event type of the catalogue, in the OpenAPI document.
#[derive(Debug)]
pub struct EventType;

impl utoipa::PartialSchema for EventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let pattern = format!("^({})$", feed::TYPES.join("|").replace('.', "\\."));
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(pattern))
            .description(Some("An event type of the catalogue (docs/events.md)"))
            .into()
    }
}

impl utoipa::ToSchema for EventType {}

/// Tells "absent" (keep) from `null` (clear).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Checks an endpoint URL: http or https, a host, no credentials in it,
/// and (unless private targets are allowed) no address that is not public,
/// as written or as the name resolves now. A name that does not resolve is
/// accepted: delivery checks every address it connects to again.
pub async fn check_url(text: &str, allow_private: bool) -> Result<String, Error> {
    if text.len() > URL_LENGTH_MAX {
        return Err(Error::invalid(format!("url is longer than {URL_LENGTH_MAX} bytes")));
    }
    // The URL parser drops spaces and control characters around and inside
    // a URL; what is recorded must be what was sent.
    if text.chars().any(|character| character <= ' ') {
        return Err(Error::invalid("url must not contain spaces or control characters"));
    }
    let url = reqwest::Url::parse(text)
        .map_err(|error| Error::invalid(format!("url {text:?} is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(format!("url must be http or https, not {}", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            "url must not carry credentials: they would be recorded in the log; \
             verify the signature instead",
        ));
    }
    let Some(host) = url.host() else {
        return Err(Error::invalid("url has no host"));
    };
    if !allow_private {
        let refused = |address: IpAddr| {
            Error::invalid(format!(
                "url {text:?} reaches {address}, which is not a public address; start the \
                 server with --webhook-allow-private-targets to allow it (local development)"
            ))
        };
        match host {
            url::Host::Ipv4(v4) if !is_public(IpAddr::V4(v4)) => return Err(refused(v4.into())),
            url::Host::Ipv6(v6) if !is_public(IpAddr::V6(v6)) => return Err(refused(v6.into())),
            url::Host::Domain(name) => {
                let port = url.port_or_known_default().unwrap_or(443);
                if let Ok(addresses) = tokio::net::lookup_host((name, port)).await {
                    let addresses: Vec<IpAddr> = addresses.map(|a| a.ip()).collect();
                    if let Some(private) = addresses.iter().find(|ip| !is_public(**ip)) {
                        return Err(refused(*private));
                    }
                }
            }
            url::Host::Ipv4(_) | url::Host::Ipv6(_) => {}
        }
    }
    Ok(url.to_string())
}

fn check_types(types: Option<Vec<String>>) -> Result<Option<Vec<String>>, Error> {
    let Some(types) = types else { return Ok(None) };
    let mut checked: Vec<String> = Vec::new();
    for name in types {
        if !feed::TYPES.contains(&name.as_str()) {
            return Err(Error::invalid(format!(
                "{name:?} is not an event type; the types are {}",
                feed::TYPES.join(", ")
            )));
        }
        if !checked.contains(&name) {
            checked.push(name);
        }
    }
    if checked.is_empty() {
        return Err(Error::invalid(
            "types must name at least one event type (leave it out for all of them)",
        ));
    }
    Ok(Some(checked))
}

fn check_description(description: Option<String>) -> Result<Option<String>, Error> {
    let description = description.map(|text| text.trim().to_owned()).filter(|t| !t.is_empty());
    if description.as_ref().is_some_and(|text| text.chars().count() > DESCRIPTION_LENGTH_MAX) {
        return Err(Error::invalid(format!(
            "description is longer than {DESCRIPTION_LENGTH_MAX} characters"
        )));
    }
    Ok(description)
}

fn stream(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

fn not_found(webhook_id: &str) -> Error {
    Error::not_found(format!("webhook endpoint {webhook_id}"))
}

/// Creates an endpoint; answers it and its secret (shown this once).
pub async fn create(
    store: &Store,
    tenant: &str,
    input: SettingsInput,
    allow_private: bool,
    context: CommandContext,
) -> Result<(WebhookRow, String), Error> {
    if input.status.is_some() {
        return Err(Error::invalid("a new endpoint is active; pause it after creating it"));
    }
    let Some(url) = input.url.as_deref() else {
        return Err(Error::invalid("url is required"));
    };
    let settings = WebhookSettings {
        url: check_url(url, allow_private).await?,
        types: check_types(input.types.flatten())?,
        description: check_description(input.description.flatten())?,
        batch: input.batch.unwrap_or(false),
    };
    let secret = sign::new_secret()?;
    let webhook_id = ulid::Ulid::generate().to_string();
    let tenant_id = tenant.to_owned();
    let kept = secret.clone();
    let row = store
        .command(Some(tenant), move |tx| {
            let existing = projection::webhooks(tx.db(), Some(&tenant_id))?;
            if existing.len() >= ENDPOINTS_MAX {
                return Err(Error::conflict(format!(
                    "a tenant has at most {ENDPOINTS_MAX} webhook endpoints; delete one first"
                )));
            }
            // Deliveries start after what the feed holds now, read in the
            // same transaction as the event.
            let from = feed::latest(tx.db(), &tenant_id)?;
            let created = WebhookCreated {
                webhook_id: webhook_id.clone(),
                settings,
                from_position: from.position,
                from_seq: from.seq,
            };
            let recorded = record(
                tx,
                &tenant_id,
                &stream(&webhook_id),
                ExpectedVersion::NoStream,
                &[Event::WebhookCreated(created)],
                &context,
            )?;
            let at = recorded.first().map(|event| event.recorded_at.clone()).unwrap_or_default();
            projection::insert_secret(tx.db(), &tenant_id, &webhook_id, &kept, &at)?;
            projection::webhook(tx.db(), &tenant_id, &webhook_id)?
                .ok_or_else(|| Error::Internal("a created endpoint has no row".to_owned()))
        })
        .await?;
    Ok((row, secret))
}

/// Changes an endpoint's settings, pauses or resumes it: one event per
/// kind of change, none when nothing changes.
pub async fn change(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
    input: SettingsInput,
    allow_private: bool,
    context: CommandContext,
) -> Result<WebhookRow, Error> {
    let url = match input.url.as_deref() {
        Some(url) => Some(check_url(url, allow_private).await?),
        None => None,
    };
    let types = input.types.map(check_types).transpose()?;
    let description = input.description.map(check_description).transpose()?;
    let pause = match input.status.as_deref() {
        None => None,
        Some("paused") => Some(true),
        Some("active") => Some(false),
        Some(other) => {
            return Err(Error::invalid(format!("status {other:?} must be active or paused")));
        }
    };
    let tenant_id = tenant.to_owned();
    let webhook_id = webhook_id.to_owned();
    let batch = input.batch;
    store
        .command(Some(tenant), move |tx| {
            let current = projection::webhook(tx.db(), &tenant_id, &webhook_id)?
                .ok_or_else(|| not_found(&webhook_id))?;
            let mut settings = current.settings.clone();
            if let Some(url) = url {
                settings.url = url;
            }
            if let Some(types) = types {
                settings.types = types;
            }
            if let Some(description) = description {
                settings.description = description;
            }
            if let Some(batch) = batch {
                settings.batch = batch;
            }
            let mut events = Vec::new();
            if settings != current.settings {
                events.push(Event::WebhookChanged(WebhookChanged {
                    webhook_id: webhook_id.clone(),
                    settings,
                }));
            }
            match (pause, current.status) {
                (Some(true), WebhookStatus::Active | WebhookStatus::Disabled) => events
                    .push(Event::WebhookPaused(WebhookPaused { webhook_id: webhook_id.clone() })),
                (Some(false), WebhookStatus::Paused | WebhookStatus::Disabled) => events
                    .push(Event::WebhookResumed(WebhookResumed { webhook_id: webhook_id.clone() })),
                _ => {}
            }
            if !events.is_empty() {
                record(
                    tx,
                    &tenant_id,
                    &stream(&webhook_id),
                    ExpectedVersion::Exact(current.version),
                    &events,
                    &context,
                )?;
            }
            projection::webhook(tx.db(), &tenant_id, &webhook_id)?
                .ok_or_else(|| not_found(&webhook_id))
        })
        .await
        .map_err(Error::from)
}

/// Makes a new secret; the old ones sign beside it for `overlap`.
pub async fn rotate(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
    overlap: Duration,
    context: CommandContext,
) -> Result<(WebhookRow, String), Error> {
    let secret = sign::new_secret()?;
    let kept = secret.clone();
    let tenant_id = tenant.to_owned();
    let webhook_id = webhook_id.to_owned();
    let clock = store.log().clock();
    let row = store
        .command(Some(tenant), move |tx| {
            let current = projection::webhook(tx.db(), &tenant_id, &webhook_id)?
                .ok_or_else(|| not_found(&webhook_id))?;
            let now = clock();
            let until = now
                .checked_add(jiff::SignedDuration::try_from(overlap).unwrap_or_default())
                .map_err(|error| Error::invalid(format!("overlap out of range: {error}")))?;
            let now_text = events::time::format_millis(now);
            let until_text = events::time::format_millis(until);
            projection::retire_secrets(tx.db(), &tenant_id, &webhook_id, &until_text, &now_text)?;
            projection::insert_secret(tx.db(), &tenant_id, &webhook_id, &kept, &now_text)?;
            record(
                tx,
                &tenant_id,
                &stream(&webhook_id),
                ExpectedVersion::Exact(current.version),
                &[Event::WebhookSecretRotated(WebhookSecretRotated {
                    webhook_id: webhook_id.clone(),
                    previous_valid_until: until_text,
                })],
                &context,
            )?;
            projection::webhook(tx.db(), &tenant_id, &webhook_id)?
                .ok_or_else(|| not_found(&webhook_id))
        })
        .await?;
    Ok((row, secret))
}

/// Deletes an endpoint and forgets its secrets and delivery state.
pub async fn delete(
    store: &Store,
    deliveries: &state::Deliveries,
    tenant: &str,
    webhook_id: &str,
    context: CommandContext,
) -> Result<(), Error> {
    let tenant_id = tenant.to_owned();
    let id = webhook_id.to_owned();
    store
        .command(Some(tenant), move |tx| {
            let current =
                projection::webhook(tx.db(), &tenant_id, &id)?.ok_or_else(|| not_found(&id))?;
            record(
                tx,
                &tenant_id,
                &stream(&id),
                ExpectedVersion::Exact(current.version),
                &[Event::WebhookDeleted(WebhookDeleted { webhook_id: id.clone() })],
                &context,
            )?;
            projection::delete_secrets(tx.db(), &tenant_id, &id).map_err(Error::from)
        })
        .await?;
    deliveries.forget(tenant, webhook_id)
}

/// rollcall's own word: stop delivering to an endpoint, and why.
pub async fn disable(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
    reason: String,
) -> Result<(), Error> {
    let tenant_id = tenant.to_owned();
    let id = webhook_id.to_owned();
    store
        .command(Some(tenant), move |tx| {
            let Some(current) = projection::webhook(tx.db(), &tenant_id, &id)? else {
                return Ok(());
            };
            if current.status != WebhookStatus::Active {
                return Ok(());
            }
            record(
                tx,
                &tenant_id,
                &stream(&id),
                ExpectedVersion::Exact(current.version),
                &[Event::WebhookDisabled(WebhookDisabled { webhook_id: id.clone(), reason })],
                &CommandContext::new(events::Actor::System),
            )
            .map(drop)
        })
        .await
        .map_err(Error::from)
}

/// A `webhook.test` message: not in the feed, no cursor, signed and sent
/// like any other, so an admin can see the endpoint verify and answer.
pub fn test_message(store: &Store, tenant: &str) -> deliver::Message {
    let id = format!("test_{}", ulid::Ulid::generate());
    let body = json!({
        "id": id,
        "type": "webhook.test",
        "version": feed::CATALOGUE_VERSION,
        "tenant": tenant,
        "cursor": null,
        "occurred_at": store.log().now_millis(),
        "data": {"message": "a test event from rollcall; it changes nothing"},
    });
    deliver::Message {
        id,
        body: body.to_string(),
        first: feed::Cursor::START,
        last: feed::Cursor::START,
        events: 1,
    }
}

/// An endpoint as the API shows it (never a secret), with where its
/// deliveries stand.
/// A webhook endpoint as the API shows it (never its secret).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView<'a> {
    pub id: &'a str,
    pub url: &'a str,
    /// The event types it receives; `null`: every type.
    pub types: Option<&'a [String]>,
    pub description: Option<&'a str>,
    /// Up to 100 events per request, as a JSON array.
    pub batch: bool,
    /// `active`, `paused` or `disabled`.
    #[schema(value_type = String, pattern = "^(active|paused|disabled)$")]
    pub status: &'a WebhookStatus,
    /// Why rollcall disabled it (410 Gone, or failing too long).
    pub disabled_reason: Option<&'a str>,
    pub created_at: &'a str,
    pub updated_at: &'a str,
    pub secret_rotated_at: Option<&'a str>,
    /// Until then the previous secret signs too.
    pub previous_secret_valid_until: Option<&'a str>,
    /// Where delivery stands; `null` before its first attempt.
    pub delivery: Option<DeliveryView>,
}

/// Where an endpoint's delivery stands.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// Delivered through this feed cursor.
    pub cursor: String,
    /// Messages delivered (2xx), ever.
    pub delivered: u64,
    /// Failed attempts at the next message since its last success.
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    /// The first failure of the current run of failures.
    pub failing_since: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
}

impl<'a> WebhookView<'a> {
    pub fn of(row: &'a WebhookRow, delivery: Option<&DeliveryState>) -> WebhookView<'a> {
        WebhookView {
            id: &row.webhook_id,
            url: &row.settings.url,
            types: row.settings.types.as_deref(),
            description: row.settings.description.as_deref(),
            batch: row.settings.batch,
            status: &row.status,
            disabled_reason: row.disabled_reason.as_deref(),
            created_at: &row.created_at,
            updated_at: &row.updated_at,
            secret_rotated_at: row.secret_rotated_at.as_deref(),
            previous_secret_valid_until: row.previous_secret_valid_until.as_deref(),
            delivery: delivery.map(|state| DeliveryView {
                cursor: state.cursor.encode(&row.tenant_id),
                delivered: state.delivered,
                attempts: state.attempts,
                next_attempt_at: state.next_attempt_at.clone(),
                failing_since: state.failing_since.clone(),
                last_attempt_at: state.last_attempt_at.clone(),
                last_status: state.last_status,
                last_error: state.last_error.clone(),
                last_latency_ms: state.last_latency_ms,
            }),
        }
    }
}

pub fn view(row: &WebhookRow, delivery: Option<&DeliveryState>) -> Value {
    serde_json::to_value(WebhookView::of(row, delivery)).unwrap_or(Value::Null)
}

/// One attempt to deliver a message, as the API shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = DeliveryAttempt)]
pub struct AttemptView<'a> {
    /// `delivery`, `redelivery` (one event sent again on request) or `test`.
    pub kind: &'a str,
    /// The `webhook-id` it was sent with.
    pub message_id: &'a str,
    pub first_cursor: &'a str,
    pub last_cursor: &'a str,
    /// Events in the message (more than one in a batch).
    pub events: u32,
    /// Which attempt at this message (1 for the first).
    pub attempt: u32,
    pub at: &'a str,
    /// The HTTP status answered; `null` when none came (refused, timed out).
    pub status: Option<u16>,
    /// A 2xx came back.
    pub ok: bool,
    pub error: Option<&'a str>,
    pub latency_ms: u64,
    /// The start of the response body (at most 1 KiB).
    pub response: Option<&'a str>,
}

impl<'a> AttemptView<'a> {
    pub fn of(attempt: &'a Attempt) -> AttemptView<'a> {
        AttemptView {
            kind: attempt.kind,
            message_id: &attempt.message_id,
            first_cursor: &attempt.first_cursor,
            last_cursor: &attempt.last_cursor,
            events: attempt.events,
            attempt: attempt.attempt,
            at: &attempt.at,
            status: attempt.status,
            ok: attempt.status.is_some_and(|status| (200..300).contains(&status)),
            error: attempt.error.as_deref(),
            latency_ms: attempt.latency_ms,
            response: attempt.response.as_deref(),
        }
    }
}

/// An attempt as the API shows it.
pub fn attempt_view(attempt: &Attempt) -> Value {
    serde_json::to_value(AttemptView::of(attempt)).unwrap_or(Value::Null)
}
