//! The event feed over HTTP, for the application: `GET /api/v1/events`
//! (pages in cursor order, with a long poll) and `GET /api/v1/events/stream`
//! (Server-Sent Events). The events are the `feed` projection's bodies,
//! served as stored; this module only reads, pages and waits.
//!
//! Waiting never holds a read connection or an async worker: a wait is a
//! `watch` on the writer's commits (this process's writes wake it at once)
//! with a short poll for another process's (the CLI's Synchronize), and it
//! ends when the server begins to shut down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use projections::feed::{self, Cursor, FeedEvent, FeedPage};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{ErrorBody, EventPage};
use super::provisioning::{PAGE_MAX, query};
use crate::auth::Caller;
use crate::error::{ApiError, Error};
use crate::reads::blocking;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(stream))
}

/// The longest a long poll waits (`wait`, in seconds).
pub const WAIT_SECONDS_MAX: u64 = 60;
/// The least time between two reads of the feed by one waiting request.
const WAKE_SPACING: Duration = Duration::from_millis(25);
/// Events per page when `limit` is not given.
pub const PAGE_DEFAULT: u64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FeedQuery {
    /// The cursor to read after (a `cursor` or `next_cursor` this tenant
    /// was given); absent: from the first event.
    #[serde(default)]
    #[param(pattern = "^([0-9a-f]{28})?$")]
    after: Option<String>,
    /// Events per page, 1 to 1,000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Only these types, comma-separated (`member.joined,member.left`).
    #[serde(default)]
    #[param(
        pattern = "^((member\\.joined|member\\.updated|member\\.roles_changed|member\\.disabled|member\\.enabled|member\\.left|member\\.restored|member\\.purged|member\\.erased|sync\\.completed|sync\\.held)(,(member\\.joined|member\\.updated|member\\.roles_changed|member\\.disabled|member\\.enabled|member\\.left|member\\.restored|member\\.purged|member\\.erased|sync\\.completed|sync\\.held))*)?$"
    )]
    types: Option<String>,
    /// Seconds to wait for an event past the cursor, 0 to 60 (default 0):
    /// answers as soon as one exists, or empty at the deadline.
    #[serde(default)]
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// What a read of the feed asks for, checked.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    pub tenant: String,
    pub after: Cursor,
    pub types: Option<Vec<String>>,
    pub limit: usize,
}

impl FeedRequest {
    fn new(
        tenant: String,
        after: Option<&str>,
        types: Option<&str>,
        limit: Option<u64>,
    ) -> Result<FeedRequest, Error> {
        let after = match after.filter(|text| !text.is_empty()) {
            Some(text) => {
                Cursor::decode(&tenant, text).map_err(|error| Error::invalid(error.to_string()))?
            }
            None => Cursor::START,
        };
        let limit = limit.unwrap_or(PAGE_DEFAULT);
        if limit == 0 || limit > PAGE_MAX {
            return Err(Error::invalid(format!("limit must be 1 to {PAGE_MAX}")));
        }
        Ok(FeedRequest { tenant, after, types: parse_types(types)?, limit: limit as usize })
    }

    fn read(&self, state: &AppState) -> impl Future<Output = Result<FeedPage, Error>> + use<> {
        let store = state.store.clone();
        let request = self.clone();
        blocking(move || {
            store.read(|connection| {
                Ok(feed::page(
                    connection,
                    &request.tenant,
                    request.after,
                    request.types.as_deref(),
                    request.limit,
                )?)
            })
        })
    }
}

/// `types=member.joined,member.left`: each must be in the catalogue.
fn parse_types(text: Option<&str>) -> Result<Option<Vec<String>>, Error> {
    let Some(text) = text.filter(|text| !text.is_empty()) else { return Ok(None) };
    let mut types = Vec::new();
    // Exactly as documented (the OpenAPI document's pattern): names
    // separated by single commas, nothing around them.
    for name in text.split(',') {
        if !feed::TYPES.contains(&name) {
            return Err(Error::invalid(format!(
                "{name:?} is not an event type; the types are {}",
                feed::TYPES.join(", ")
            )));
        }
        types.push(name.to_owned());
    }
    Ok(Some(types))
}

/// Waits until this process commits something, another process may have
/// (`feed_poll`), `deadline` passes, or the server stops; true once it stops.
async fn wait_for_commit(
    state: &AppState,
    commits: &mut tokio::sync::watch::Receiver<u64>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    deadline: Instant,
) -> bool {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let nap = remaining.min(state.config.feed_poll);
    let woke = tokio::select! {
        changed = commits.changed() => {
            if changed.is_err() {
                // The writer is gone (a read-only store): poll instead.
                tokio::time::sleep(nap).await;
            }
            changed.is_ok()
        }
        () = tokio::time::sleep(nap) => false,
        () = crate::stop::until_stopped(stopping) => return true,
    };
    if woke {
        // Most commits of a busy log are not this tenant's feed: every
        // waiting poll and stream reads the feed at most this often, however
        // often the log commits.
        let spacing = WAKE_SPACING.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = tokio::time::sleep(spacing) => {}
            () = crate::stop::until_stopped(stopping) => return true,
        }
    }
    *stopping.borrow() || stopping.has_changed().is_err()
}

/// The event feed, in cursor order, with a long poll.
#[utoipa::path(get, operation_id = "list_events", path = "/events", tag = "events", params(FeedQuery),
    responses((status = 200, description = "A page of events", body = EventPage)))]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    raw: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let raw = query(raw)?;
    let wait = raw.wait.unwrap_or(0);
    if wait > WAIT_SECONDS_MAX {
        return Err(Error::invalid(format!("wait must be 0 to {WAIT_SECONDS_MAX} seconds")).into());
    }
    let request = FeedRequest::new(
        caller.principal.tenant_id,
        raw.after.as_deref(),
        raw.types.as_deref(),
        raw.limit,
    )?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut commits = state.store.log().watch_commits();
    let mut stopping = state.stopping.subscribe();
    let page = loop {
        // Marked seen before reading, so a commit during the read wakes
        // the wait after it.
        commits.borrow_and_update();
        let page = request.read(&state).await?;
        if !page.events.is_empty() || Instant::now() >= deadline {
            break page;
        }
        if wait_for_commit(&state, &mut commits, &mut stopping, deadline).await {
            break page;
        }
    };
    Ok(page_response(&request.tenant, &page))
}

/// The page as JSON, each event's stored body as it is.
fn page_response(tenant: &str, page: &FeedPage) -> Response {
    let mut body =
        String::with_capacity(page.events.iter().map(|e| e.body.len() + 1).sum::<usize>() + 96);
    body.push_str("{\"events\":[");
    for (index, event) in page.events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&event.body);
    }
    body.push_str("],\"next_cursor\":\"");
    body.push_str(&page.next.encode(tenant));
    body.push_str("\",\"has_more\":");
    body.push_str(if page.has_more { "true" } else { "false" });
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// The cursor to start after; a `Last-Event-ID` header wins over it.
    #[serde(default)]
    #[param(pattern = "^([0-9a-f]{28})?$")]
    after: Option<String>,
    /// Only these types, comma-separated.
    #[serde(default)]
    #[param(
        pattern = "^((member\\.joined|member\\.updated|member\\.roles_changed|member\\.disabled|member\\.enabled|member\\.left|member\\.restored|member\\.purged|member\\.erased|sync\\.completed|sync\\.held)(,(member\\.joined|member\\.updated|member\\.roles_changed|member\\.disabled|member\\.enabled|member\\.left|member\\.restored|member\\.purged|member\\.erased|sync\\.completed|sync\\.held))*)?$"
    )]
    types: Option<String>,
}

/// One Server-Sent Event of the stream, in the OpenAPI document.
#[derive(Debug)]
struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("`id` is the event's cursor, `event` its type, `data` the event"))
            .property("id", text().pattern(Some("^[0-9a-f]{28}$")))
            .property("event", <crate::webhooks::EventType as utoipa::PartialSchema>::schema())
            .property(
                "data",
                text()
                    .content_media_type("application/json")
                    .content_schema(Some(utoipa::openapi::Ref::from_schema_name("Event"))),
            )
            .required("id")
            .required("event")
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StreamEvent {}

/// Where a stream is, between the events it sends.
struct Tail {
    state: AppState,
    request: FeedRequest,
    buffered: VecDeque<FeedEvent>,
    commits: tokio::sync::watch::Receiver<u64>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Tail {
    /// The next event to send, waiting for one; `None` ends the stream
    /// (shutdown, or a read that failed: the client resumes by its
    /// Last-Event-ID).
    async fn next(&mut self) -> Option<FeedEvent> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                self.request.after = event.cursor;
                return Some(event);
            }
            let stopped = *self.stopping.borrow();
            if stopped {
                return None;
            }
            self.commits.borrow_and_update();
            match self.request.read(&self.state).await {
                Ok(page) if !page.events.is_empty() => self.buffered.extend(page.events),
                Ok(_) => {
                    let deadline = Instant::now() + self.state.config.feed_poll;
                    let state = self.state.clone();
                    if wait_for_commit(&state, &mut self.commits, &mut self.stopping, deadline)
                        .await
                    {
                        return None;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "an event stream stopped: reading the feed failed");
                    return None;
                }
            }
        }
    }
}

/// The event feed as Server-Sent Events: `id` is the cursor, `event` the
/// type, `data` the event; a `heartbeat` comment at least every 15 s. It
/// does not end: reconnect with `Last-Event-ID` to resume.
#[utoipa::path(get, operation_id = "stream_events", path = "/events/stream", tag = "events",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last cursor seen, to resume after")),
    responses((status = 200, description = "An endless stream of events", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "A malformed or foreign cursor, or an unknown type", body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let raw = query(raw)?;
    // A reconnecting EventSource sends the last id it saw; it wins over
    // the `after` the stream was first opened with. Empty, it saw none:
    // `after` still says where to start.
    let last_event_id =
        headers.get("last-event-id").filter(|value| !value.is_empty()).map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| Error::invalid("Last-Event-ID is not text"))
        });
    let after = match last_event_id {
        Some(id) => Some(id?),
        None => raw.after,
    };
    let request =
        FeedRequest::new(caller.principal.tenant_id, after.as_deref(), raw.types.as_deref(), None)?;
    let heartbeat = state.config.feed_heartbeat;
    let tail = Tail {
        commits: state.store.log().watch_commits(),
        stopping: state.stopping.subscribe(),
        state,
        request,
        buffered: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        let sse = SseEvent::default()
            .id(event.cursor.encode(&tail.request.tenant))
            .event(event.event_type)
            .data(event.body);
        Some((Ok::<_, Infallible>(sse), tail))
    });
    let keep_alive = KeepAlive::new().interval(heartbeat).text("heartbeat");
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}
