//! The provisioning and member routes of the admin API: pending changes
//! and their preview, Synchronize runs (trigger, history, approve or
//! reject a held run), the mapping, role bindings and run settings, and
//! the member directory the application reads.
//!
//! Handlers translate HTTP to `crate::sync` and back; long work (a preview
//! or a run over a large tenant) goes to a blocking thread. Field names
//! are documented in docs/api.md.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use projections::feed;
use projections::members::{self, MemberQuery, MemberStatus, MemberView};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::ErrorBody;
use super::{ApiId, ApiJson};
use crate::auth::Caller;
use crate::error::{ApiError, Error};
use crate::reads::blocking;
use crate::state::AppState;
use crate::sync::config::{Mapping, RoleBindings, SyncSettings};
use crate::sync::settings::{self, Setting};
use crate::sync::{self, Preview, RunOptions, RunView, Trigger, run_view};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pending))
        .routes(routes!(synchronize))
        .routes(routes!(list_runs))
        .routes(routes!(one_run))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(get_mapping, put_mapping))
        .routes(routes!(get_role_bindings, put_role_bindings))
        .routes(routes!(get_sync_settings, put_sync_settings))
        .routes(routes!(erase_member))
}

/// The member directory, for the application as well as the admin.
pub fn member_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_members)).routes(routes!(one_member, patch_member))
}

/// How many items a page may hold.
pub const PAGE_MAX: u64 = 1000;
/// The largest offset: SQLite's largest integer.
pub const OFFSET_MAX: u64 = i64::MAX as u64;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Page {
    /// How many items to skip.
    #[serde(default)]
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    offset: Option<u64>,
    /// Items per page, 1 to 1,000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

impl Page {
    fn bounds(&self) -> Result<(u64, u64), Error> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > PAGE_MAX {
            return Err(Error::invalid(format!("limit must be 1 to {PAGE_MAX}")));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > OFFSET_MAX {
            return Err(Error::invalid(format!("offset must be 0 to {OFFSET_MAX}")));
        }
        Ok((offset, limit))
    }
}

/// A query string, or a clear 400 naming what is wrong with it.
pub(crate) fn query<T: serde::de::DeserializeOwned>(
    raw: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Error> {
    raw.map(|Query(value)| value).map_err(|rejection| Error::invalid(rejection.body_text()))
}

/// The pending changes: what a Synchronize now would do, counted, with one
/// page of the members' effects.
#[utoipa::path(get, path = "/provisioning/pending", tag = "provisioning", params(Page),
    responses((status = 200, description = "The preview of the next run", body = Preview)))]
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

/// A page of Synchronize runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct RunList<'a> {
    total: u64,
    offset: u64,
    runs: Vec<RunView<'a>>,
}

/// The path parameter of one run.
const RUN_ID: &str = "The run's id";

/// Synchronizes now: applies every pending directory change to the
/// members (or holds the run, when the safeguard says so).
#[utoipa::path(post, path = "/provisioning/sync", tag = "provisioning",
    responses((status = 200, description = "The run, finished", body = RunView),
        (status = 409, description = "A run is in progress already", body = ErrorBody)))]
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

/// The tenant's Synchronize runs, newest first.
#[utoipa::path(get, path = "/provisioning/syncs", tag = "provisioning", params(Page),
    responses((status = 200, description = "A page of runs", body = RunList)))]
async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (offset, limit) = query(page)?.bounds()?;
    let tenant = caller.principal.tenant_id;
    let (total, runs) =
        state.store.read(|connection| Ok(members::runs(connection, &tenant, offset, limit)?))?;
    Ok(Json(RunList { total, offset, runs: runs.iter().map(RunView::of).collect() })
        .into_response())
}

/// One Synchronize run.
#[utoipa::path(get, path = "/provisioning/syncs/{run_id}", tag = "provisioning",
    params(("run_id" = String, Path, description = RUN_ID)),
    responses((status = 200, description = "The run", body = RunView),
        (status = 404, description = "No such run in this tenant", body = ErrorBody)))]
async fn one_run(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(run_id): ApiId,
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

/// Approves a held run: its held changes are applied now.
#[utoipa::path(post, operation_id = "approve_run", path = "/provisioning/syncs/{run_id}/approve", tag = "provisioning",
    params(("run_id" = String, Path, description = RUN_ID)),
    responses((status = 200, description = "The approving run", body = RunView),
        (status = 404, description = "No such run in this tenant", body = ErrorBody),
        (status = 409, description = "The run is not held, or another run is in progress", body = ErrorBody)))]
async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(run_id): ApiId,
) -> Result<Response, ApiError> {
    decide(state, caller, run_id, true).await
}

/// Rejects a held run: its held changes stay pending.
#[utoipa::path(post, operation_id = "reject_run", path = "/provisioning/syncs/{run_id}/reject", tag = "provisioning",
    params(("run_id" = String, Path, description = RUN_ID)),
    responses((status = 200, description = "The rejected run", body = RunView),
        (status = 404, description = "No such run in this tenant", body = ErrorBody),
        (status = 409, description = "The run is not held", body = ErrorBody)))]
async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(run_id): ApiId,
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
    let Ok(settings) = serde_json::from_value::<SyncSettings>(value.clone()) else { return };
    let next_run_at = settings
        .schedule
        .as_ref()
        .and_then(|schedule| crate::sync::scheduler::next_fire(schedule, now).ok())
        .map(events::time::format_millis);
    let view = SyncSettingsView {
        schedule: settings.schedule,
        safeguard: settings.safeguard,
        grace_days: settings.grace_days,
        next_run_at,
    };
    if let Ok(shown) = serde_json::to_value(view) {
        *value = shown;
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

/// The attribute mapping: which SCIM attribute fills which member property.
#[utoipa::path(get, path = "/provisioning/mapping", tag = "provisioning",
    responses((status = 200, description = "The mapping (the default until one is saved)", body = Mapping)))]
async fn get_mapping(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    get_setting(&state, &caller, Setting::Mapping)
}

/// Replaces the attribute mapping; every user is then pending.
#[utoipa::path(put, path = "/provisioning/mapping", tag = "provisioning", request_body = Mapping,
    responses((status = 200, description = "The mapping as saved", body = Mapping,
        headers(("x-rollcall-changed" = String, description = "`true` when the PUT recorded a change, `false` when it was the same")))))]
async fn put_mapping(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    put_setting(state, caller, Setting::Mapping, body).await
}

/// The roles and the SCIM groups that grant them.
#[utoipa::path(get, path = "/provisioning/role-bindings", tag = "provisioning",
    responses((status = 200, description = "The role bindings", body = RoleBindings)))]
async fn get_role_bindings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    get_setting(&state, &caller, Setting::Roles)
}

/// Replaces the roles and their bindings.
#[utoipa::path(put, path = "/provisioning/role-bindings", tag = "provisioning",
    request_body = RoleBindings,
    responses((status = 200, description = "The role bindings as saved", body = RoleBindings,
        headers(("x-rollcall-changed" = String, description = "`true` when the PUT recorded a change, `false` when it was the same")))))]
async fn put_role_bindings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    put_setting(state, caller, Setting::Roles, body).await
}

/// The run settings (as `SyncSettings`), with when the next scheduled run
/// fires.
#[derive(Debug, Serialize, ToSchema)]
struct SyncSettingsView {
    schedule: Option<crate::sync::config::Schedule>,
    safeguard: crate::sync::config::Safeguard,
    grace_days: u32,
    /// The next daily run, in UTC (`null`: no schedule).
    next_run_at: Option<String>,
}

/// The run settings: the daily schedule, the safeguard, the grace days.
#[utoipa::path(get, path = "/provisioning/settings", tag = "provisioning",
    responses((status = 200, description = "The run settings", body = SyncSettingsView)))]
async fn get_sync_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    get_setting(&state, &caller, Setting::Sync)
}

/// Replaces the run settings.
#[utoipa::path(put, path = "/provisioning/settings", tag = "provisioning",
    request_body = SyncSettings,
    responses((status = 200, description = "The run settings as saved", body = SyncSettingsView,
        headers(("x-rollcall-changed" = String, description = "`true` when the PUT recorded a change, `false` when it was the same")))))]
async fn put_sync_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    put_setting(state, caller, Setting::Sync, body).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MemberFilter {
    /// Only members in this status (empty: any).
    #[serde(default)]
    #[param(pattern = "^(active|disabled|left|purged)?$")]
    status: Option<String>,
    /// Only members holding this role.
    #[serde(default)]
    role: Option<String>,
    /// Members whose userName or a property contains this text.
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    offset: Option<u64>,
    /// Members per page, 1 to 1,000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of members, and the feed cursor it reflects.
#[derive(Debug, Serialize, ToSchema)]
struct MemberList {
    total: u64,
    offset: u64,
    members: Vec<MemberView>,
    /// The feed cursor this page reflects: tail `GET /api/v1/events` from
    /// here to see every later change exactly once.
    as_of_cursor: String,
}

/// One member, and the feed cursor it reflects.
#[derive(Debug, Serialize, ToSchema)]
struct MemberAsOf {
    #[serde(flatten)]
    member: MemberView,
    as_of_cursor: String,
}

/// The properties the application owns, to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberPatch {
    /// Each app-owned property's new value (`null` removes it).
    #[schema(value_type = Object)]
    app_properties: serde_json::Map<String, Value>,
}

/// The member directory: what the application applied.
#[utoipa::path(get, path = "/members", tag = "members", params(MemberFilter),
    responses((status = 200, description = "A page of members", body = MemberList)))]
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
    // application can tail the feed from exactly there. A search may read
    // every member: a heavy read, within the budget.
    let store = state.store.clone();
    let reading = tenant.clone();
    let ((total, rows), cursor) = state
        .heavy
        .run(&tenant, Some(state.heavy.budget), move || {
            store.snapshot(|connection| {
                Ok((
                    members::list_members(connection, &reading, &member_query)?,
                    feed::latest(connection, &reading)?,
                ))
            })
        })
        .await?;
    Ok(Json(MemberList {
        total,
        offset,
        members: rows.iter().map(MemberView::of).collect(),
        as_of_cursor: cursor.encode(&tenant),
    })
    .into_response())
}

/// One member.
#[utoipa::path(get, path = "/members/{member_id}", tag = "members",
    params(("member_id" = String, Path, description = "The member's id")),
    responses((status = 200, description = "The member", body = MemberAsOf),
        (status = 404, description = "No such member in this tenant", body = ErrorBody)))]
async fn one_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(member_id): ApiId,
) -> Result<Response, ApiError> {
    let tenant = caller.principal.tenant_id;
    let (member, cursor) = state.store.snapshot(|connection| {
        Ok((members::member(connection, &tenant, &member_id)?, feed::latest(connection, &tenant)?))
    })?;
    let member = member.ok_or_else(|| Error::not_found(format!("member {member_id}")))?;
    Ok(Json(MemberAsOf { member: MemberView::of(&member), as_of_cursor: cursor.encode(&tenant) })
        .into_response())
}

/// What an erasure may say about itself.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EraseRequest {
    /// Why (recorded in clear in the log: name no one in it), at most 500
    /// characters.
    reason: Option<String>,
}

/// Erases the member's person (GDPR): destroys the data keys their values
/// in the log are sealed with, takes those values out of every projection
/// and report, and delivers `member.erased`. The member's facts (ids,
/// times, roles) remain. Refused while the identity provider still
/// provisions the user, or while the member has not left yet.
#[utoipa::path(post, path = "/members/{member_id}/erase", tag = "members",
    params(("member_id" = String, Path, description = "The member's id")),
    request_body(content = EraseRequest, description = "Optional; an empty body is no reason"),
    responses((status = 200, description = "Erased", body = crate::erase::Erased),
        (status = 400, description = "The body is not an erasure request", body = ErrorBody),
        (status = 404, description = "No such member in this tenant", body = ErrorBody),
        (status = 409, description = "Still provisioned, not left yet, or erased already",
            body = ErrorBody)))]
async fn erase_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(member_id): ApiId,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: EraseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EraseRequest { reason: None }
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            Error::invalid(format!("expected {{\"reason\": \"...\"}} or no body: {error}"))
        })?
    };
    let tenant = caller.principal.tenant_id;
    let store = state.store.clone();
    let context = caller.context;
    let erased = blocking(move || {
        crate::erase::erase(
            &store,
            &tenant,
            crate::erase::Target::Member(member_id),
            request.reason.filter(|reason| !reason.trim().is_empty()),
            context,
        )
    })
    .await?;
    Ok(Json(erased).into_response())
}

/// Sets properties the application owns (the mapping's `app_owned`).
#[utoipa::path(patch, path = "/members/{member_id}", tag = "members",
    params(("member_id" = String, Path, description = "The member's id")),
    request_body = MemberPatch,
    responses((status = 200, description = "The member after the change", body = MemberView),
        (status = 404, description = "No such member in this tenant", body = ErrorBody),
        (status = 409, description = "The member changed meanwhile", body = ErrorBody)))]
async fn patch_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(member_id): ApiId,
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
    Ok(Json(member.view()).into_response())
}
