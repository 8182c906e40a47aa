//! The console's page frame and the pieces every page shares: the layout
//! (header, navigation, sign-out), notices, tables of counts, pagers, the
//! error page, and the headers every console response carries.
//!
//! Markup is built with maud, which escapes every value it interpolates:
//! nothing an identity provider or an admin typed reaches a page as HTML.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::error::Error;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Provisioning,
    Pending,
    Syncs,
    Log,
    Mapping,
    Bindings,
    Members,
    Webhooks,
    Audit,
    None,
}

const NAV: [(Section, &str, &str); 9] = [
    (Section::Provisioning, "/admin/provisioning", "User Provisioning"),
    (Section::Pending, "/admin/provisioning/pending", "Pending"),
    (Section::Syncs, "/admin/provisioning/syncs", "Sync history"),
    (Section::Log, "/admin/provisioning/log", "Provisioning log"),
    (Section::Mapping, "/admin/mapping", "Attribute mapping"),
    (Section::Bindings, "/admin/bindings", "Group bindings"),
    (Section::Members, "/admin/members", "Members"),
    (Section::Webhooks, "/admin/webhooks", "Webhooks"),
    (Section::Audit, "/admin/audit", "Audit"),
];

/// A whole page: the frame around `body`.
pub fn page(title: &str, session: Option<&Session>, current: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · rollcall" }
                link rel="stylesheet" href="/admin/assets/console.css";
                script src="/admin/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/admin" { "rollcall" }
                    @if let Some(session) = session {
                        span class="who" {
                            "Tenant " strong { (session.tenant_name) }
                            " · signed in with " (session.scope_text()) " token "
                            code { (session.token_label()) }
                        }
                        form class="sign-out" method="post" action="/admin/sign-out" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if let Some(session) = session {
                    nav aria-label="Console" {
                        ul {
                            @for (section, href, label) in NAV {
                                @if session.may_open(section) {
                                    li {
                                        @if section == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page as a response, with the console's headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(&mut response);
    response
}

/// Headers every console response carries: HTML that loads only its own
/// assets, is never framed or cached, and leaks no URL (a sign-in link
/// carries its code) to another site.
pub fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// A redirect after a form (303: the browser follows with a GET).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    secure_headers(&mut response);
    response
}

/// A message at the top of a page, in a live region so a screen reader
/// announces it.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={ "notice " (kind) } role="status" { (text) } }
}

/// One of the fixed notices a redirect may ask for (`?notice=...`): only
/// these texts, so a link cannot make the console say anything else.
pub fn fixed_notice(key: Option<&str>) -> Markup {
    let text = match key {
        Some("mapping-saved") => "The attribute mapping is saved. The next Synchronize applies it.",
        Some("bindings-saved") => {
            "The group bindings are saved. The next Synchronize applies them."
        }
        Some("schedule-saved") => "The schedule is saved.",
        Some("unchanged") => "Nothing changed: that is what was already saved.",
        Some("revoked") => "The token is revoked; it stops working at its next request.",
        Some("verified") => "The chain was checked; the result is below.",
        Some("erased") => "Erased: the person's keys are destroyed and their values are gone.",
        _ => return html! {},
    };
    notice("ok", text)
}

/// "Showing 51-100 of 240" with previous and next links.
pub fn pager(base: &str, offset: u64, shown: usize, total: u64, limit: u64) -> Markup {
    let shown = shown as u64;
    let join = if base.contains('?') { '&' } else { '?' };
    html! {
        nav class="pager" aria-label="Pages" {
            @if total == 0 {
                span { "Nothing to show." }
            } @else {
                span { "Showing " (offset + 1) "–" (offset + shown) " of " (total) }
            }
            @if offset > 0 {
                a href={ (base) (join) "offset=" (offset.saturating_sub(limit)) } rel="prev" { "Previous" }
            }
            @if offset + shown < total {
                a href={ (base) (join) "offset=" (offset + limit) } rel="next" { "Next" }
            }
        }
    }
}

/// A small table of named counts, skipping zeros unless all are zero.
pub fn counts(caption: &str, counts: &serde_json::Value) -> Markup {
    let items: Vec<(String, u64)> = counts
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .map(|(name, value)| (name.replace('_', " "), value.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let nonzero: Vec<&(String, u64)> = items.iter().filter(|(_, count)| *count > 0).collect();
    html! {
        dl class="counts" aria-label=(caption) {
            @if nonzero.is_empty() {
                div { dt { "changes" } dd { "0" } }
            }
            @for (name, count) in nonzero {
                div { dt { (name) } dd { (count) } }
            }
        }
    }
}

/// An instant as stored (RFC 3339 UTC), shortened for a table cell; the
/// full value stays in the `datetime` attribute.
pub fn when(instant: &str) -> Markup {
    let short =
        instant.get(..19).map(|text| text.replace('T', " ")).unwrap_or_else(|| instant.to_owned());
    html! { time datetime=(instant) { (short) " UTC" } }
}

/// The console's errors, mapped once to a page.
#[derive(Debug)]
pub struct PageError(pub Error);

impl From<Error> for PageError {
    fn from(error: Error) -> PageError {
        PageError(error)
    }
}

impl From<events::LogError> for PageError {
    fn from(error: events::LogError) -> PageError {
        PageError(Error::from(error))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let error = self.0;
        if let Error::Internal(detail) = &error {
            tracing::error!(%detail, "console request failed");
        }
        let status = error.status();
        let message = error.public_message();
        let body = html! {
            (notice("error", &message))
            p { a href="/admin" { "Back to the console" } }
        };
        let title = status.canonical_reason().unwrap_or("Error");
        respond(status, page(title, None, Section::None, body))
    }
}
