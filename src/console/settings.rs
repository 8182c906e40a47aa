//! The Attribute Mapping and Group bindings editors: tables of rules an
//! admin edits in the browser, a preview of what a mapping change would do
//! at the next Synchronize, and saving either as an event (through
//! `crate::sync::settings`, like the admin API; validation lives there).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use projections::directory::schema::ResourceKind;
use projections::directory::store as directory;
use serde_json::{Value, json};

use super::page::{self, PageError, Section, fixed_notice, notice, respond, see_other};
use super::provisioning::{Paging, preview_section};
use super::session::{Form, Session};
use crate::auth::Caller;
use crate::error::Error;
use crate::reads::blocking;
use crate::state::AppState;
use crate::sync;
use crate::sync::config::{GroupMatch, Mapping, PropertyRule, PropertyType, RoleBindings};
use crate::sync::settings::{self, Setting};

/// Blank rows offered for new rules under the recorded ones.
const BLANK_ROWS: usize = 3;
const TYPES: [(PropertyType, &str); 5] = [
    (PropertyType::String, "string"),
    (PropertyType::Number, "number"),
    (PropertyType::Boolean, "boolean"),
    (PropertyType::Date, "date"),
    (PropertyType::List, "list"),
];

/// A value as an admin types it: JSON when it reads as JSON (`42`,
/// `true`, `"x"`), text otherwise.
fn typed(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value) if !value.is_object() => value,
        _ => Value::String(text.to_owned()),
    }
}

/// A value written back into a field, so it reads the same way again.
fn untyped(value: &Value) -> String {
    match value {
        Value::String(text) if serde_json::from_str::<Value>(text).is_err() => text.clone(),
        other => other.to_string(),
    }
}

/// The mapping a submitted editor describes (not yet validated).
fn mapping_from(form: &Form) -> Result<Mapping, Error> {
    let rows: usize = form
        .text("rows")
        .parse()
        .map_err(|_| Error::invalid("the form lost its row count; reload the page"))?;
    let mut properties = Vec::new();
    for row in 0..rows.min(crate::sync::config::PROPERTIES_MAX + BLANK_ROWS) {
        let field = |name: &str| form.text(&format!("r{row}.{name}")).to_owned();
        let (property, source) = (field("property"), field("source"));
        if form.get(&format!("r{row}.remove")).is_some()
            || (property.is_empty() && source.is_empty())
        {
            continue;
        }
        let kind = TYPES
            .iter()
            .find(|(_, name)| *name == field("type"))
            .map(|(kind, _)| *kind)
            .ok_or_else(|| Error::invalid(format!("property {property:?}: choose a type")))?;
        let default =
            Some(field("default")).filter(|text| !text.is_empty()).map(|text| typed(&text));
        let allowed = Some(field("allowed")).filter(|text| !text.is_empty()).map(|text| {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(typed).collect()
        });
        let split = Some(field("split")).filter(|text| !text.is_empty());
        let required = form.get(&format!("r{row}.required")).is_some();
        let unique = form.get(&format!("r{row}.unique")).is_some();
        properties.push(PropertyRule {
            property,
            source,
            kind,
            default,
            allowed,
            split,
            required,
            unique,
        });
    }
    let app_owned = form
        .text("app_owned")
        .split([',', '\n'])
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Mapping { properties, app_owned })
}

fn mapping_editor(session: &Session, mapping: &Mapping) -> Markup {
    let rows = mapping.properties.len() + BLANK_ROWS;
    let rule = |row: usize| mapping.properties.get(row);
    html! {
        form method="post" action="/admin/mapping" id="mapping-form" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="rows" value=(rows);
            div class="scroll" {
                table class="editor" {
                    caption { "SCIM attribute → member property" }
                    thead { tr {
                        th scope="col" { "Member property" } th scope="col" { "SCIM attribute path" } th scope="col" { "Type" }
                        th scope="col" { "Default" } th scope="col" { "Allowed values (comma-separated)" } th scope="col" { "Split on" } th scope="col" { "Required" } th scope="col" { "Unique" } th scope="col" { "Remove" }
                    } }
                    tbody {
                        @for row in 0..rows {
                            @let rule = rule(row);
                            tr {
                                td { input name={ "r" (row) ".property" } aria-label={ "Property of row " (row + 1) } value=(rule.map_or("", |rule| rule.property.as_str())); }
                                td { input name={ "r" (row) ".source" } aria-label={ "SCIM attribute of row " (row + 1) } value=(rule.map_or("", |rule| rule.source.as_str())) class="wide"; }
                                td {
                                    select name={ "r" (row) ".type" } aria-label={ "Type of row " (row + 1) } {
                                        @for (kind, name) in TYPES {
                                            option value=(name) selected[rule.map_or(kind == PropertyType::String, |rule| rule.kind == kind)] { (name) }
                                        }
                                    }
                                }
                                td { input name={ "r" (row) ".default" } aria-label={ "Default of row " (row + 1) } value=(rule.and_then(|rule| rule.default.as_ref()).map(untyped).unwrap_or_default()); }
                                td { input name={ "r" (row) ".allowed" } aria-label={ "Allowed values of row " (row + 1) } value=(rule.and_then(|rule| rule.allowed.as_ref()).map(|allowed| allowed.iter().map(untyped).collect::<Vec<_>>().join(", ")).unwrap_or_default()); }
                                td { input name={ "r" (row) ".split" } aria-label={ "Separator of row " (row + 1) } size="3" value=(rule.and_then(|rule| rule.split.as_deref()).unwrap_or("")); }
                                td { input type="checkbox" name={ "r" (row) ".required" } aria-label={ "Row " (row + 1) " is required" } checked[rule.is_some_and(|rule| rule.required)]; }
                                td { input type="checkbox" name={ "r" (row) ".unique" } aria-label={ "Row " (row + 1) " is unique" } checked[rule.is_some_and(|rule| rule.unique)]; }
                                td { @if rule.is_some() { input type="checkbox" name={ "r" (row) ".remove" } aria-label={ "Remove row " (row + 1) }; } }
                            }
                        }
                    }
                }
            }
            h2 { "App-owned properties" }
            p class="hint" { "The application sets these; Synchronize never writes them. One per line or comma-separated." }
            label for="app_owned" { "App-owned properties" }
            textarea id="app_owned" name="app_owned" rows="3" { (mapping.app_owned.join("\n")) }
            div class="actions" {
                button type="submit" name="action" value="preview" data-busy-text="Previewing…" { "Preview the change" }
                button type="submit" name="action" value="save" class="primary" { "Save mapping" }
            }
        }
    }
}

pub async fn mapping_page(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let value = settings::current(&state.store, &caller.principal.tenant_id, Setting::Mapping)?;
    let mapping: Mapping = serde_json::from_value(value).unwrap_or_default();
    let body = html! {
        (fixed_notice(paging.notice.as_deref()))
        p { "Each rule fills a member property from the SCIM user the identity provider sent. Paths are written as in a SCIM PATCH: "
            code { "name.givenName" } ", " code { "emails[type eq \"work\"].value" } ", "
            code { "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department" } "." }
        (mapping_editor(&session, &mapping))
    };
    Ok(respond(
        StatusCode::OK,
        page::page("Attribute mapping", Some(&session), Section::Mapping, body),
    ))
}

pub async fn save_mapping(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    form: Form,
) -> Result<Response, PageError> {
    let draft = match mapping_from(&form).and_then(|mapping| mapping.validate().map(|_| mapping)) {
        Ok(mapping) => mapping,
        Err(error) => {
            // Show the form as sent, with what is wrong with it.
            let mapping = mapping_from(&form)
                .unwrap_or_else(|_| Mapping { properties: Vec::new(), app_owned: Vec::new() });
            let body = html! {
                (notice("error", &error.public_message()))
                (mapping_editor(&session, &mapping))
            };
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                page::page("Attribute mapping", Some(&session), Section::Mapping, body),
            ));
        }
    };
    if form.get("action") == Some("preview") {
        let tenant = caller.principal.tenant_id.clone();
        let store = state.store.clone();
        let shown = draft.clone();
        let preview = blocking(move || {
            sync::preview_with(&store, &tenant, Some(shown), 0, super::provisioning::PAGE)
        })
        .await?;
        let body = html! {
            (notice("ok", "Not saved yet. This is what the next Synchronize would do with this mapping:"))
            section aria-labelledby="preview" class="card" id="mapping-preview" {
                h2 id="preview" { "Preview" }
                (preview_section(&preview, None))
            }
            (mapping_editor(&session, &draft))
        };
        return Ok(respond(
            StatusCode::OK,
            page::page("Attribute mapping", Some(&session), Section::Mapping, body),
        ));
    }
    let value = serde_json::to_value(&draft).map_err(|error| Error::Internal(error.to_string()))?;
    let tenant = caller.principal.tenant_id.clone();
    let caller = caller.with_body(value.clone());
    let changed = settings::set(&state.store, &tenant, Setting::Mapping, value, caller.context)
        .await
        .map_err(Error::from)?;
    Ok(see_other(if changed {
        "/admin/mapping?notice=mapping-saved"
    } else {
        "/admin/mapping?notice=unchanged"
    }))
}

fn bindings_editor(
    session: &Session,
    bindings: &RoleBindings,
    groups: &[(String, Option<String>)],
) -> Markup {
    let rows = bindings.bindings.len() + BLANK_ROWS;
    html! {
        form method="post" action="/admin/bindings" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="rows" value=(rows);
            div class="row" {
                div { label for="roles" { "Roles (comma-separated)" } input id="roles" name="roles" class="wide" value=(bindings.roles.join(", ")); }
                div { label for="default_role" { "Default role (members in no bound group)" }
                    select id="default_role" name="default_role" {
                        option value="" selected[bindings.default_role.is_none()] { "(no role)" }
                        @for role in &bindings.roles { option value=(role) selected[bindings.default_role.as_deref() == Some(role.as_str())] { (role) } }
                    }
                }
            }
            datalist id="groups" { @for (name, _) in groups { option value=(name) {} } }
            table class="editor" {
                caption { "SCIM group → role" }
                thead { tr { th scope="col" { "SCIM group" } th scope="col" { "Matched by" } th scope="col" { "Role" } th scope="col" { "Remove" } } }
                tbody {
                    @for row in 0..rows {
                        @let binding = bindings.bindings.get(row);
                        tr {
                            td { input name={ "b" (row) ".group" } list="groups" aria-label={ "Group of binding " (row + 1) } value=(binding.map_or("", |binding| binding.group.as_str())); }
                            td { select name={ "b" (row) ".match" } aria-label={ "Match of binding " (row + 1) } {
                                option value="displayName" selected[binding.is_none_or(|binding| binding.by == GroupMatch::DisplayName)] { "displayName" }
                                option value="externalId" selected[binding.is_some_and(|binding| binding.by == GroupMatch::ExternalId)] { "externalId" }
                            } }
                            td { input name={ "b" (row) ".role" } aria-label={ "Role of binding " (row + 1) } value=(binding.map_or("", |binding| binding.role.as_str())); }
                            td { @if binding.is_some() { input type="checkbox" name={ "b" (row) ".remove" } aria-label={ "Remove binding " (row + 1) }; } }
                        }
                    }
                }
            }
            div class="actions" { button type="submit" class="primary" { "Save bindings" } }
        }
    }
}

fn bindings_from(form: &Form) -> Result<Value, Error> {
    let rows: usize = form
        .text("rows")
        .parse()
        .map_err(|_| Error::invalid("the form lost its row count; reload the page"))?;
    let roles: Vec<&str> =
        form.text("roles").split(',').map(str::trim).filter(|role| !role.is_empty()).collect();
    let mut bindings = Vec::new();
    for row in 0..rows.min(crate::sync::config::BINDINGS_MAX + BLANK_ROWS) {
        let field = |name: &str| form.text(&format!("b{row}.{name}")).to_owned();
        if form.get(&format!("b{row}.remove")).is_some()
            || (field("group").is_empty() && field("role").is_empty())
        {
            continue;
        }
        bindings.push(
            json!({ "group": field("group"), "match": field("match"), "role": field("role") }),
        );
    }
    let default_role = Some(form.text("default_role")).filter(|role| !role.is_empty());
    Ok(json!({ "roles": roles, "default_role": default_role, "bindings": bindings }))
}

async fn group_names(
    state: &AppState,
    tenant: &str,
) -> Result<Vec<(String, Option<String>)>, Error> {
    state
        .store
        .read(|connection| Ok(directory::names(connection, tenant, ResourceKind::Group, 500)?))
}

pub async fn bindings_page(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let value = settings::current(&state.store, &caller.principal.tenant_id, Setting::Roles)?;
    let bindings: RoleBindings = serde_json::from_value(value).unwrap_or_default();
    let groups = group_names(&state, &caller.principal.tenant_id).await?;
    let body = html! {
        (fixed_notice(paging.notice.as_deref()))
        p { "Members of a bound SCIM group (directly or through nested groups) get its role at the next Synchronize." }
        (bindings_editor(&session, &bindings, &groups))
        h2 { "SCIM groups in the directory" }
        @if groups.is_empty() { p { "The identity provider has not pushed any group yet." } }
        ul class="columns" { @for (name, external_id) in &groups { li { (name) @if let Some(id) = external_id { " " span class="small" { "(" (id) ")" } } } } }
    };
    Ok(respond(
        StatusCode::OK,
        page::page("Group bindings", Some(&session), Section::Bindings, body),
    ))
}

pub async fn save_bindings(
    State(state): State<AppState>,
    session: Session,
    caller: Caller,
    form: Form,
) -> Result<Response, PageError> {
    let tenant = caller.principal.tenant_id.clone();
    let value = bindings_from(&form)?;
    let checked = serde_json::from_value::<RoleBindings>(value.clone())
        .map_err(|error| Error::invalid(format!("bindings: {error}")))
        .and_then(|bindings| bindings.validate().map(|()| bindings));
    if let Err(error) = checked {
        let shown: RoleBindings = serde_json::from_value(value).unwrap_or_default();
        let groups = group_names(&state, &tenant).await?;
        let body = html! {
            (notice("error", &error.public_message()))
            (bindings_editor(&session, &shown, &groups))
        };
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            page::page("Group bindings", Some(&session), Section::Bindings, body),
        ));
    }
    let caller = caller.with_body(value.clone());
    let changed = settings::set(&state.store, &tenant, Setting::Roles, value, caller.context)
        .await
        .map_err(Error::from)?;
    Ok(see_other(if changed {
        "/admin/bindings?notice=bindings-saved"
    } else {
        "/admin/bindings?notice=unchanged"
    }))
}
