//! The admin console at `/admin`: the User Provisioning page an admin
//! uses, server-rendered HTML from the rollcall binary itself, with its
//! stylesheet and script embedded.
//!
//! * [`session`]: sign-in (token or one-time link), the session cookie,
//!   the CSRF check of every form, sign-out.
//! * `provisioning`: status, Tenant URL, tokens, pending changes,
//!   Synchronize and its runs, the schedule, the provisioning log.
//! * `settings`: the attribute mapping and group bindings editors.
//! * `members`: the member directory and one member's page (with its
//!   events as the application hears them).
//! * `webhooks`: the webhook endpoints and their deliveries.
//! * `audit`: joiners and leavers, and the chain check.
//! * `page`: the frame every page shares, and the error page.
//!
//! Pages call the same commands as the admin API; the console owns no
//! state but its sessions, and must not decide what Synchronize does.

mod audit;
mod members;
pub mod page;
mod provisioning;
pub mod session;
mod settings;
mod webhooks;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use events::event::TokenScope;

use crate::state::AppState;
use session::{ConsoleGate, require_session};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub fn router(state: AppState) -> Router<AppState> {
    let admin = ConsoleGate { state: state.clone(), allowed: &[TokenScope::Admin] };
    let anyone = ConsoleGate { state, allowed: &[TokenScope::Admin, TokenScope::Audit] };
    let public = Router::new()
        .route("/admin", get(session::home))
        .route("/admin/", get(session::home))
        .route("/admin/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/admin/sign-in/link", get(session::link_page).post(session::redeem_link))
        .route("/admin/assets/console.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route(
            "/admin/assets/console.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        );
    let for_admins = Router::new()
        .route("/admin/provisioning", get(provisioning::overview))
        .route("/admin/provisioning/pending", get(provisioning::pending))
        .route("/admin/provisioning/sync", post(provisioning::synchronize))
        .route("/admin/provisioning/syncs", get(provisioning::runs))
        .route("/admin/provisioning/syncs/{run_id}", get(provisioning::one_run))
        .route("/admin/provisioning/syncs/{run_id}/approve", post(provisioning::approve))
        .route("/admin/provisioning/syncs/{run_id}/reject", post(provisioning::reject))
        .route("/admin/provisioning/schedule", post(provisioning::save_schedule))
        .route("/admin/provisioning/tokens", post(provisioning::issue_token))
        .route("/admin/provisioning/tokens/{token_id}/revoke", post(provisioning::revoke_token))
        .route("/admin/provisioning/log", get(provisioning::log))
        .route("/admin/mapping", get(settings::mapping_page).post(settings::save_mapping))
        .route("/admin/bindings", get(settings::bindings_page).post(settings::save_bindings))
        .route("/admin/members", get(members::list))
        .route("/admin/members/{member_id}", get(members::one))
        .route("/admin/members/{member_id}/erase", post(members::erase))
        .route("/admin/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/admin/webhooks/{id}", get(webhooks::show))
        .route("/admin/webhooks/{id}/pause", post(webhooks::pause))
        .route("/admin/webhooks/{id}/resume", post(webhooks::resume))
        .route("/admin/webhooks/{id}/retry", post(webhooks::retry))
        .route("/admin/webhooks/{id}/test", post(webhooks::test))
        .route("/admin/webhooks/{id}/redeliver", post(webhooks::redeliver))
        .route("/admin/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/admin/webhooks/{id}/delete", post(webhooks::delete))
        .route_layer(middleware::from_fn_with_state(admin, require_session));
    let for_anyone = Router::new()
        .route("/admin/sign-out", post(session::sign_out))
        .route("/admin/audit", get(audit::page))
        .route("/admin/audit/joiners-leavers.csv", get(audit::csv))
        .route("/admin/audit/verify", post(audit::verify))
        .route_layer(middleware::from_fn_with_state(anyone, require_session));
    public.merge(for_admins).merge(for_anyone)
}

/// An embedded asset; cached for an hour (they change only with the binary).
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
