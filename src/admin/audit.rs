//! The API under /api/v1/audit, for `audit`-scope tokens (read-only) and
//! `admin`-scope tokens: HTTP in, the answers of [`crate::audit`] out.
//! Long reads run on the blocking pool in the heavy lane; nothing here
//! appends an event.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use events::VerifyScope;
use events::event::TokenScope;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::ErrorBody;
use super::provisioning::query;
use crate::audit::report::Window;
use crate::audit::{
    ReportView, VerifyReport, chain, csv_response, history, ledger, position_at_or_before, report,
    report_json, verify_report_json,
};
use crate::auth::{Caller, Gate, require_token};
use crate::error::{ApiError, Error, Surface};
use crate::reads::{blocking, in_heavy_lane};
use crate::state::AppState;
use crate::store::{replay, snapshots};

/// The audit routes, without their gate ([`router`] adds it).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify))
        .routes(routes!(checkpoint))
        .routes(routes!(joiners_leavers))
        .routes(routes!(history_route))
        .routes(routes!(export))
        .routes(routes!(as_of))
        .routes(routes!(one_request))
}

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    let gate =
        Gate { state, allowed: &[TokenScope::Audit, TokenScope::Admin], surface: Surface::Api };
    routes().layer(middleware::from_fn_with_state(gate, require_token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VerifyQuery {
    /// A checkpoint (`POSITION:HASH`, as `GET /audit/checkpoint` gave it)
    /// the chain must still pass through.
    #[param(pattern = "^[0-9]+:[0-9a-f]{64}$")]
    since: Option<String>,
}

/// Walks the caller's tenant chain and reports its head, or the first event
/// that does not match; with `since`, whether the chain still passes
/// through that checkpoint.
#[utoipa::path(get, path = "/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, description = "The report: `ok` is false when the chain is broken", body = VerifyReport)))]
async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    raw: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let since = query(raw)?.since.map(|text| chain::Checkpoint::parse(&text)).transpose()?;
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    let (report, problem) = blocking(move || {
        let report = store.log().verify(VerifyScope::Tenant(tenant_id.clone()))?;
        let problem = match &since {
            Some(checkpoint) if report.is_ok() => chain::check(&store, &tenant_id, checkpoint)?,
            _ => None,
        };
        Ok((report, since.map(|checkpoint| (checkpoint, problem))))
    })
    .await?;
    Ok(Json(verify_report_json(&report, &caller.principal.tenant_name, problem.as_ref()))
        .into_response())
}

/// The chain head of the caller's tenant: a checkpoint to write down.
#[derive(Debug, Serialize, ToSchema)]
struct CheckpointView {
    tenant: String,
    position: u64,
    /// The chain hash there, lower-case hex.
    hash: String,
    recorded_at: String,
    /// `POSITION:HASH`, for `verify --since`.
    checkpoint: String,
}

/// The caller's tenant head, to write down.
#[utoipa::path(get, path = "/audit/checkpoint", tag = "audit",
    responses((status = 200, description = "The chain head", body = CheckpointView),
        (status = 404, description = "The tenant has no events yet", body = ErrorBody)))]
async fn checkpoint(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    let found = blocking(move || chain::checkpoint(&store, &tenant_id)).await?;
    let Some((checkpoint, recorded_at)) = found else {
        return Err(Error::not_found("a chain head (the tenant has no events yet)").into());
    };
    Ok(Json(CheckpointView {
        tenant: caller.principal.tenant_name,
        position: checkpoint.position,
        hash: events::hash::to_hex(&checkpoint.hash),
        recorded_at,
        checkpoint: checkpoint.to_string(),
    })
    .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WindowQuery {
    /// The window's start: a date or an RFC 3339 instant.
    #[param(
        required = true,
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    from: Option<String>,
    /// The window's end (exclusive).
    #[param(
        required = true,
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    to: Option<String>,
    /// `json` (the default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

impl WindowQuery {
    fn window(&self) -> Result<Window, Error> {
        match (&self.from, &self.to) {
            (Some(from), Some(to)) => Window::parse(from, to),
            _ => Err(Error::invalid(
                "from and to are required (a date like 2026-07-01 or an RFC 3339 instant)",
            )),
        }
    }
}

/// Who joined, changed status and left in a window, on whose word, as JSON
/// or CSV.
#[utoipa::path(get, path = "/audit/joiners-leavers", tag = "audit", params(WindowQuery),
    responses((status = 200, description = "The report", content(
        (ReportView = "application/json"),
        (String = "text/csv")))))]
async fn joiners_leavers(
    State(state): State<AppState>,
    caller: Caller,
    raw: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(raw)?;
    let window = params.window()?;
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Error::invalid(format!("format must be json or csv, not {other:?}")).into());
        }
    };
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    let movements = blocking(move || report::joiners_leavers(&store, &tenant_id, window)).await?;
    if !csv {
        return Ok(
            Json(report_json(&caller.principal.tenant_name, window, &movements)).into_response()
        );
    }
    Ok(csv_response(window, &movements)?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// A SCIM user id, externalId or userName, as the user had it at any
    /// time (give this or `member`).
    #[param(min_length = 1)]
    user: Option<String>,
    /// A member id.
    #[param(min_length = 1)]
    member: Option<String>,
}

/// One person's history, from the log: every event of their users and
/// members, with what changed.
#[utoipa::path(get, operation_id = "history", path = "/audit/history", tag = "audit", params(HistoryQuery),
    responses((status = 200, description = "The history", body = history::History),
        (status = 404, description = "Nobody by that name in this tenant", body = ErrorBody)))]
async fn history_route(
    State(state): State<AppState>,
    caller: Caller,
    raw: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let subject = match query(raw)? {
        HistoryQuery { user: Some(user), member: None } if !user.trim().is_empty() => {
            history::Subject::User(user)
        }
        HistoryQuery { user: None, member: Some(member) } if !member.trim().is_empty() => {
            history::Subject::Member(member)
        }
        _ => {
            return Err(Error::invalid(
                "give one of user (SCIM id, externalId or userName) or member",
            )
            .into());
        }
    };
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    let history = blocking(move || history::history(&store, &tenant_id, &subject)).await?;
    Ok(Json(history).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// The window's start (give both or neither).
    #[param(
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    from: Option<String>,
    #[param(
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    to: Option<String>,
}

/// Writes into a channel in chunks, so an export streams to the client
/// from a blocking thread with bounded memory.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= EXPORT_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

/// The receiving end of the export channel as the body's stream.
struct ReceiverStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(context)
    }
}

/// The caller's tenant events (in a window, or all) as NDJSON, streamed.
#[utoipa::path(get, path = "/audit/export", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "One event per line with its hash; `rollcall verify --file` checks it offline", content_type = "application/x-ndjson", body = String)))]
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    raw: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let window = match query(raw)? {
        ExportQuery { from: Some(from), to: Some(to) } => Some(Window::parse(&from, &to)?),
        ExportQuery { from: None, to: None } => None,
        _ => return Err(Error::invalid("give both from and to, or neither").into()),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    // An export reads the tenant's whole log: a heavy read, held for as
    // long as the client takes to receive it, with no time budget.
    let admission = state.heavy.admit(&tenant_id).await?;
    tokio::task::spawn_blocking(move || {
        let _admission = admission;
        let mut out = ChannelWriter { sender: sender.clone(), buffer: Vec::new() };
        let exported = in_heavy_lane(|| chain::export(&store, &tenant_id, window, &mut out));
        if let Err(error) = exported {
            // The status line is gone already: end the body with an error,
            // so the client sees a broken transfer, not a short export.
            tracing::error!(%error, "export failed");
            let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
    });
    let stream = ReceiverStream(receiver);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream))
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AsOfQuery {
    /// An instant or a date (give this or `position`).
    #[param(
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    at: Option<String>,
    /// A log position.
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    position: Option<u64>,
    /// `users` (the default), `groups` or `members`.
    #[param(pattern = "^(users|groups|members)$")]
    view: Option<String>,
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    offset: Option<usize>,
    /// Items per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The tenant as of an instant or position.
#[derive(Debug, Serialize, ToSchema)]
struct AsOfView {
    tenant: String,
    /// The last position folded.
    position: u64,
    /// When it was recorded (`null` before the tenant's first event).
    recorded_at: Option<String>,
    counts: AsOfCounts,
    view: String,
    offset: usize,
    /// One page of the view: SCIM users, SCIM groups or members, as they
    /// were.
    #[schema(value_type = Vec<Object>)]
    items: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
struct AsOfCounts {
    users: u64,
    groups: u64,
    members: u64,
}

/// How many items an as-of page may hold.
const AS_OF_PAGE_MAX: usize = 1000;

/// The caller's tenant as of an instant or position: counts of each view
/// and one page of the chosen one.
#[utoipa::path(get, path = "/audit/as-of", tag = "audit", params(AsOfQuery),
    responses((status = 200, description = "The tenant as it was", body = AsOfView)))]
async fn as_of(
    State(state): State<AppState>,
    caller: Caller,
    raw: Result<Query<AsOfQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(raw)?;
    let view = params.view.clone().unwrap_or_else(|| "users".to_owned());
    let Some(shown) = replay::View::parse(&view) else {
        return Err(
            Error::invalid(format!("view must be users, groups or members, not {view:?}")).into()
        );
    };
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > AS_OF_PAGE_MAX {
        return Err(Error::invalid(format!("limit must be 1 to {AS_OF_PAGE_MAX}")).into());
    }
    let offset = params.offset.unwrap_or(0);
    let largest = crate::admin::provisioning::OFFSET_MAX;
    if offset as u64 > largest || params.position.is_some_and(|position| position > largest) {
        return Err(Error::invalid(format!("offset and position must be 0 to {largest}")).into());
    }
    let store = state.store.clone();
    let path = store.log().sqlite_for("an as-of")?.path();
    let snapshots = snapshots::Snapshots::beside(path, state.config.as_of_snapshot_every);
    let tenant_id = caller.principal.tenant_id.clone();
    let (at, position) = (params.at.clone(), params.position);
    let state = blocking(move || {
        let position = match (at, position) {
            (Some(at), None) => position_at_or_before(&store, &tenant_id, &at)?,
            (None, Some(position)) => position,
            _ => return Err(Error::invalid("give one of at (an instant or a date) or position")),
        };
        let folded = replay::as_of(&store, &tenant_id, position, &snapshots)?;
        let counts = folded.counts()?;
        let page = folded.page(shown, offset, Some(limit))?;
        Ok((folded.position, folded.recorded_at, counts, page))
    })
    .await?;
    let (position, recorded_at, (users, groups, members), page) = state;
    Ok(Json(AsOfView {
        tenant: caller.principal.tenant_name,
        position,
        recorded_at,
        counts: AsOfCounts { users, groups, members },
        view,
        offset,
        items: page,
    })
    .into_response())
}

/// One request of the ledger and the events it produced.
#[utoipa::path(get, path = "/audit/requests/{request_id}", tag = "audit",
    params(("request_id" = String, Path, description = "The request id (`x-request-id` of its answer)", min_length = 1, max_length = 200)),
    responses((status = 200, description = "The request, its events, and how it was answered", body = ledger::Request),
        (status = 404, description = "No request by that id in this tenant", body = ErrorBody)))]
async fn one_request(
    State(state): State<AppState>,
    caller: Caller,
    crate::admin::ApiId(request_id): crate::admin::ApiId,
) -> Result<Response, ApiError> {
    if request_id.trim().is_empty() || request_id.len() > 200 {
        return Err(Error::invalid("a request id is 1 to 200 characters").into());
    }
    let store = state.store.clone();
    let tenant_id = caller.principal.tenant_id.clone();
    let request = blocking(move || ledger::request(&store, &tenant_id, &request_id)).await?;
    Ok(Json(request).into_response())
}
