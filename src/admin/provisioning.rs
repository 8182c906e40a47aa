//! The provisioning and member routes of the admin API: pending changes
//! and their preview, Synchronize runs (trigger, history, approve or
//! reject a held run), the mapping, role bindings and run settings, and
//! the member directory the application reads.
//!
//! Handlers translate HTTP to `crate::sync` and back; long work (a preview
//! or a run over a large tenant) goes to a blocking thread. Field names
//! are documented in docs/api.md.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use projections::feed;
use projections::members::{self, MemberQuery, MemberRow, MemberStatus, SyncRunRow};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use crate::auth::Caller;
use crate::error::{ApiError, Error};
use crate::server::AppState;
use crate::sync::settings::{self, Setting};
use crate::sync::{self, RunOptions, Trigger};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/provisioning/pending", get(pending))
        .route("/provisioning/sync", post(synchronize))
        .route("/provisioning/syncs", get(list_runs))
        .route("/provisioning/syncs/{run_id}", get(one_run))
        .route("/provisioning/syncs/{run_id}/approve", post(approve))
        .route("/provisioning/syncs/{run_id}/reject", post(reject))
        .route("/provisioning/mapping", setting_routes(Setting::Mapping))
        .route("/provisioning/role-bindings", setting_routes(Setting::Roles))
        .route("/provisioning/settings", setting_routes(Setting::Sync))
}

/// The member directory, for the application as well as the admin.
pub fn member_routes() -> Router<AppState> {
    Router::new()
        .route("/members", get(list_members))
        .route("/members/{member_id}", get(one_member).patch(patch_member))
}

/// How many items a page may hold.
pub const PAGE_MAX: u64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

impl Page {
    fn bounds(&self) -> Result<(u64, u64), Error> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > PAGE_MAX {
            return Err(Error::invalid(format!("limit must be 1 to {PAGE_MAX}")));
        }
        Ok((self.offset.unwrap_or(0), limit))
    }
}

/// Runs blocking work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Internal(format!("a blocking task failed: {error}")))?
}

/// A query string, or a clear 400 naming what is wrong with it.
pub(crate) fn query<T: serde::de::DeserializeOwned>(
    raw: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Error> {
    raw.map(|Query(value)| value).map_err(|rejection| Error::invalid(rejection.body_text()))
}

async fn pending(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (offset, limit) = query(page)?.bounds()?;
    let tenant = caller.principal.tenant_id;
    let store = state.store.clone();
    let preview = blocking(move || sync::preview(&store, &tenant, offset, limit)).await?;
    Ok(Json(preview).into_response())
}

pub fn run_view(run: &SyncRunRow) -> Value {
    json!({
        "run_id": run.run_id,
        "trigger": run.trigger,
        "actor": run.actor,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "from_position": run.from_position,
        "to_position": run.to_position,
        "counts": run.counts,
        "duration_ms": run.duration_ms,
        "held_reason": run.held_reason,
        "error": run.error,
        "applied_by": run.applied_by,
    })
}

async fn synchronize(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let store = state.store.clone();
    let context = caller.context;
    let run = blocking(move || {
        sync::run(&store, &tenant, Trigger::Manual, context, RunOptions::default())
    })
    .await?;
    Ok(Json(run_view(&run)).into_response())
}

async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (offset, limit) = query(page)?.bounds()?;
    let tenant = caller.principal.tenant_id;
    let (total, runs) =
        state.store.read(|connection| Ok(members::runs(connection, &tenant, offset, limit)?))?;
    let items: Vec<Value> = runs.iter().map(run_view).collect();
    Ok(Json(json!({ "total": total, "offset": offset, "runs": items })).into_response())
}

async fn one_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let run = state.store.read(|connection| Ok(members::run(connection, &tenant, &run_id)?))?;
    let run = run.ok_or_else(|| Error::not_found(format!("Synchronize run {run_id}")))?;
    Ok(Json(run_view(&run)).into_response())
}

async fn decide(
    state: AppState,
    caller: Caller,
    run_id: String,
    approve: bool,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let store = state.store.clone();
    let context = caller.context;
    let run = blocking(move || {
        sync::decide(&store, &tenant, &run_id, approve, context, RunOptions::default())
    })
    .await?;
    Ok(Json(run_view(&run)).into_response())
}

async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    decide(state, caller, run_id, true).await
}

async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    decide(state, caller, run_id, false).await
}

fn get_setting(state: &AppState, caller: &Caller, setting: Setting) -> Result<Response, ApiError> {
    let mut value = settings::current(&state.store, &caller.principal.tenant_id, setting)?;
    if setting == Setting::Sync {
        next_run_into(&mut value, state.store.now());
    }
    Ok(Json(value).into_response())
}

/// Adds `next_run_at` to a settings view, so the admin sees the schedule
/// in UTC as well as local time.
fn next_run_into(value: &mut Value, now: jiff::Timestamp) {
    let next = serde_json::from_value::<crate::sync::config::SyncSettings>(value.clone())
        .ok()
        .and_then(|settings| settings.schedule)
        .and_then(|schedule| crate::sync::scheduler::next_fire(&schedule, now).ok())
        .map(events::time::format_millis);
    if let Some(fields) = value.as_object_mut() {
        fields.insert("next_run_at".to_owned(), json!(next));
    }
}

async fn put_setting(
    state: AppState,
    caller: Caller,
    setting: Setting,
    body: Value,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body.clone());
    let changed = settings::set(&state.store, &tenant, setting, body, caller.context.clone())
        .await
        .map_err(Error::from)?;
    let mut value = settings::current(&state.store, &tenant, setting)?;
    if setting == Setting::Sync {
        next_run_into(&mut value, state.store.now());
    }
    // Whether an event was recorded: an identical PUT records nothing.
    let changed = if changed { "true" } else { "false" };
    Ok((StatusCode::OK, [("x-rollcall-changed", changed)], Json(value)).into_response())
}

/// `GET` and `PUT` of one setting: the mapping, the role bindings or the
/// run settings.
fn setting_routes(setting: Setting) -> axum::routing::MethodRouter<AppState> {
    get(move |State(state): State<AppState>, caller: Caller| async move {
        get_setting(&state, &caller, setting)
    })
    .put(move |State(state): State<AppState>, caller: Caller, ApiJson(body): ApiJson<Value>| async move {
        put_setting(state, caller, setting, body).await
    })
}

pub fn member_view(member: &MemberRow) -> Value {
    member.view()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberFilter {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    filter: Result<Query<MemberFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = query(filter)?;
    let (offset, limit) = Page { offset: filter.offset, limit: filter.limit }.bounds()?;
    let status = match filter.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(MemberStatus::parse(text).ok_or_else(|| {
            Error::invalid(format!("status {text:?} must be active, disabled, left or purged"))
        })?),
    };
    let member_query = MemberQuery {
        status,
        role: filter.role.filter(|role| !role.is_empty()),
        search: filter.search.filter(|search| !search.is_empty()),
        offset,
        limit,
    };
    let tenant = caller.principal.tenant_id;
    // One snapshot: the page and the feed cursor it reflects, so the
    // application can tail the feed from exactly there.
    let ((total, rows), cursor) = state.store.snapshot(|connection| {
        Ok((
            members::list_members(connection, &tenant, &member_query)?,
            feed::latest(connection, &tenant)?,
        ))
    })?;
    let items: Vec<Value> = rows.iter().map(member_view).collect();
    Ok(Json(json!({
        "total": total,
        "offset": offset,
        "members": items,
        "as_of_cursor": cursor.encode(&tenant),
    }))
    .into_response())
}

async fn one_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let (member, cursor) = state.store.snapshot(|connection| {
        Ok((members::member(connection, &tenant, &member_id)?, feed::latest(connection, &tenant)?))
    })?;
    let member = member.ok_or_else(|| Error::not_found(format!("member {member_id}")))?;
    let mut view = member_view(&member);
    if let Some(fields) = view.as_object_mut() {
        fields.insert("as_of_cursor".to_owned(), json!(cursor.encode(&tenant)));
    }
    Ok(Json(view).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberPatch {
    app_properties: serde_json::Map<String, Value>,
}

async fn patch_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let patch: MemberPatch = serde_json::from_value(body.clone()).map_err(|error| {
        Error::invalid(format!("expected {{\"app_properties\": {{...}}}}: {error}"))
    })?;
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(body);
    let member = settings::set_app_properties(
        &state.store,
        &tenant,
        &member_id,
        patch.app_properties,
        caller.context,
    )
    .await
    .map_err(Error::from)?;
    Ok(Json(member_view(&member)).into_response())
}
