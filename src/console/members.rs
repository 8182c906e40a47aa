//! The Members pages: the member directory searched and filtered (status,
//! role), and one member with properties, roles, app-owned properties and
//! the member's history from the log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use projections::members::{self, MemberQuery, MemberRow, MemberStatus};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::page::{self, PageError, Section, pager, respond, when};
use super::provisioning::value_text;
use super::session::Session;
use crate::audit::history::{self, Subject};
use crate::auth::Caller;
use crate::error::Error;
use crate::reads::blocking;
use crate::state::AppState;
use crate::sync::config::RoleBindings;
use crate::sync::settings::{self, Setting};

const PAGE: u64 = 50;
/// The newest feed events shown on a member's page.
const FEED_SHOWN: usize = 50;

#[derive(Debug, Deserialize)]
pub struct MemberFilter {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
}

fn properties_table(caption: &str, properties: &Map<String, Value>) -> Markup {
    html! {
        @if properties.is_empty() {
            p { "None." }
        } @else {
            table class="facts-table" {
                caption { (caption) }
                tbody { @for (name, value) in properties { tr { th scope="row" { (name) } td { (value_text(value)) } } } }
            }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(filter): Query<MemberFilter>,
) -> Result<Response, PageError> {
    let status = match filter.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(MemberStatus::parse(text).ok_or_else(|| {
            Error::invalid(format!("status {text:?} must be active, disabled, left or purged"))
        })?),
    };
    let search = filter.search.clone().filter(|search| !search.trim().is_empty());
    let role = filter.role.clone().filter(|role| !role.is_empty());
    let offset = filter.offset.unwrap_or(0);
    let query =
        MemberQuery { status, role: role.clone(), search: search.clone(), offset, limit: PAGE };
    let tenant = caller.principal.tenant_id.clone();
    // A search reads every member of the tenant: off the async workers, in
    // the heavy lane.
    let (store, reading) = (state.store.clone(), tenant.clone());
    let (total, rows, status_counts) = state
        .heavy
        .run(&tenant, None, move || {
            store.read(|connection| {
                let (total, rows) = members::list_members(connection, &reading, &query)?;
                let status_counts = members::status_counts(connection, &reading)?;
                Ok((total, rows, status_counts))
            })
        })
        .await?;
    let roles: RoleBindings =
        serde_json::from_value(settings::current(&state.store, &tenant, Setting::Roles)?)
            .unwrap_or_default();
    let base = format!(
        "/admin/members?{}",
        serde_urlencoded::to_string([
            ("search", search.as_deref().unwrap_or("")),
            ("status", status.map_or("", MemberStatus::as_str)),
            ("role", role.as_deref().unwrap_or("")),
        ])
        .unwrap_or_default()
    );
    let body = html! {
        p { @for (name, count) in &status_counts { span class={ "badge " (name) } { (count) " " (name) } " " } }
        form method="get" action="/admin/members" class="filters" role="search" {
            div { label for="search" { "Search" } input id="search" name="search" type="search" value=(search.as_deref().unwrap_or("")) placeholder="name, email, userName"; }
            div { label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" { "any" }
                    @for each in MemberStatus::ALL { option value=(each.as_str()) selected[status == Some(each)] { (each.as_str()) } }
                }
            }
            div { label for="role" { "Role" }
                select id="role" name="role" {
                    option value="" { "any" }
                    @for each in &roles.roles { option value=(each) selected[role.as_deref() == Some(each.as_str())] { (each) } }
                }
            }
            button type="submit" { "Filter" }
        }
        table id="members" {
            caption { "Members" }
            thead { tr { th scope="col" { "userName" } th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Status" } th scope="col" { "Roles" } th scope="col" { "Joined" } } }
            tbody {
                @for member in &rows {
                    tr {
                        td { a href={ "/admin/members/" (member.member_id) } { (member.user_name) } }
                        td { (member.properties.get("display_name").map(value_text).unwrap_or_default()) }
                        td { (member.properties.get("email").map(value_text).unwrap_or_default()) }
                        td { span class={ "badge " (member.status.as_str()) } { (member.status.as_str()) } }
                        td { (member.roles.join(", ")) }
                        td { (when(&member.joined_at)) }
                    }
                }
            }
        }
        (pager(&base, offset, rows.len(), total, PAGE))
    };
    Ok(respond(StatusCode::OK, page::page("Members", Some(&session), Section::Members, body)))
}

fn member_facts(member: &MemberRow) -> Markup {
    html! {
        dl class="facts" {
            div { dt { "Status" } dd { span class={ "badge " (member.status.as_str()) } { (member.status.as_str()) } } }
            div { dt { "Roles" } dd { @if member.roles.is_empty() { "(none)" } @else { (member.roles.join(", ")) } } }
            div { dt { "Joined" } dd { (when(&member.joined_at)) } }
            @if let Some(at) = &member.disabled_at { div { dt { "Disabled" } dd { (when(at)) } } }
            @if let Some(at) = &member.left_at { div { dt { "Left" } dd { (when(at)) } } }
            @if let Some(at) = &member.grace_until { div { dt { "Restorable until" } dd { (when(at)) } } }
            div { dt { "SCIM user" } dd { code { (member.user_id) } @if let Some(id) = &member.external_id { " (externalId " (id) ")" } } }
            div { dt { "Member id" } dd { code { (member.member_id) } } }
            @if let Some(at) = &member.erased_at { div { dt { "Erased" } dd { (when(at)) } } }
        }
    }
}

/// The erasure form, or why there is none yet. Its confirmation names
/// what goes: the member's name, externalId and every property.
fn erase_section(member: &MemberRow, session: &Session) -> Markup {
    let lost = format!(
        "Erase {}? Their userName{}, {} mapped and {} app-owned properties, and every value \
         the log and its exports hold of them will no longer open, for good (backups made \
         before keep their own copy of the key until they expire). The member's id, times \
         and roles stay. This cannot be undone.",
        member.user_name,
        member.external_id.as_ref().map(|id| format!(", externalId {id}")).unwrap_or_default(),
        member.properties.len(),
        member.app_properties.len(),
    );
    html! {
        h2 id="erase" { "Erase this person" }
        @if member.erased_at.is_some() {
            p { "This person was erased. What the log holds of them reads “[erased]”." }
        } @else if matches!(member.status, MemberStatus::Active | MemberStatus::Disabled) {
            p { "A member can be erased once it has left: remove the user in the identity provider, then Synchronize." }
        } @else {
            p { (lost) }
            form method="post" action={ "/admin/members/" (member.member_id) "/erase" } data-confirm=(lost) {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Reason (recorded in clear: name no one) " input type="text" name="reason" maxlength="500"; }
                label { input type="checkbox" name="confirm" value="yes" required; " I understand this cannot be undone" }
                button type="submit" class="danger" { "Erase" }
            }
        }
    }
}

/// Erases the member's person (the form above): the same command as
/// `POST /api/v1/members/{id}/erase`.
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    form: super::session::Form,
) -> Result<Response, PageError> {
    if form.get("confirm") != Some("yes") {
        return Err(Error::invalid("tick the confirmation to erase this person").into());
    }
    let reason = form.get("reason").filter(|reason| !reason.is_empty()).map(str::to_owned);
    let tenant = caller.principal.tenant_id.clone();
    let store = state.store.clone();
    let context = caller.context;
    let target = member_id.clone();
    blocking(move || {
        crate::erase::erase(&store, &tenant, crate::erase::Target::Member(target), reason, context)
    })
    .await?;
    Ok(page::see_other(&format!("/admin/members/{member_id}?notice=erased")))
}

#[derive(Debug, Deserialize)]
pub struct MemberView {
    #[serde(default)]
    history: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

pub async fn one(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Path(member_id): Path<String>,
    Query(view): Query<MemberView>,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id.clone();
    let member =
        state.store.read(|connection| Ok(members::member(connection, &tenant, &member_id)?))?;
    let member = member.ok_or_else(|| Error::not_found(format!("member {member_id}")))?;
    let feed_events = state.store.read(|connection| {
        Ok(projections::feed::of_member(connection, &tenant, &member_id, FEED_SHOWN)?)
    })?;
    // The history walks the tenant's log: only when asked for.
    let history = if view.history.is_some() {
        let store = state.store.clone();
        let subject = Subject::Member(member_id.clone());
        Some(blocking(move || history::history(&store, &tenant, &subject)).await?)
    } else {
        None
    };
    let body = html! {
        (page::fixed_notice(view.notice.as_deref()))
        (member_facts(&member))
        h2 { "Properties (from the identity provider)" }
        (properties_table("Mapped properties", &member.properties))
        h2 { "App-owned properties" }
        (properties_table("App-owned properties", &member.app_properties))
        h2 { "Events the application heard" }
        @if feed_events.is_empty() {
            p { "None yet: the member's events appear at Synchronize." }
        } @else {
            ol class="timeline" {
                @for event in &feed_events {
                    @let body: Value = serde_json::from_str(&event.body).unwrap_or(Value::Null);
                    li {
                        (when(body.get("occurred_at").and_then(Value::as_str).unwrap_or(""))) " · " strong { (event.event_type) }
                        " · cursor " code { (event.cursor.encode(&caller.principal.tenant_id)) }
                        @if let Some(request) = body.pointer("/caused_by/request_id").and_then(Value::as_str) { " · request " code { (request) } }
                    }
                }
            }
        }
        h2 id="history" { "History" }
        @match &history {
            None => p { a href={ "/admin/members/" (member.member_id) "?history=1#history" } { "Show this member's history (read from the log)" } },
            Some(history) => ol class="timeline" {
                @for entry in &history.entries {
                    li {
                        (when(&entry.recorded_at)) " · " strong { (entry.event_type) } " · " (entry.by.actor_text())
                        @if let Some(run) = &entry.by.run_id { " (run " a href={ "/admin/provisioning/syncs/" (run) } { (run) } ")" }
                        @if let Some(changes) = &entry.changes {
                            ul class="diff" { @for change in changes { li { code { (change.attribute) } ": " (value_text(&change.from)) " → " (value_text(&change.to)) } } }
                        }
                    }
                }
            },
        }
        (erase_section(&member, &session))
        p { a href="/admin/members" { "All members" } }
    };
    Ok(respond(
        StatusCode::OK,
        page::page(&member.user_name, Some(&session), Section::Members, body),
    ))
}
