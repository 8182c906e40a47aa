//! The SCIM 2.0 endpoint under /scim/v2 (RFC 7643 and 7644), for
//! `scim`-scope tokens.
//!
//! Only this module speaks the SCIM wire format. Every request is
//! authenticated first; a path that names no SCIM endpoint gets a SCIM 404
//! error body, as RFC 7644 section 3.12 asks.

pub mod document;
pub mod eval;
pub mod filter;
pub mod patch;

use axum::extract::OriginalUri;
use axum::response::Response;
use axum::{Router, middleware};
use events::event::TokenScope;

use crate::auth::{Gate, require_token};
use crate::error::Error;
use crate::server::{AppState, Surface};

/// The media type of every SCIM response (RFC 7644 section 3.1).
pub const CONTENT_TYPE: &str = "application/scim+json";

pub fn router(state: AppState) -> Router<AppState> {
    let gate = Gate { state, allowed: &[TokenScope::Scim], surface: Surface::Scim };
    Router::new()
        .fallback(unknown_endpoint)
        .layer(middleware::from_fn_with_state(gate, require_token))
}

async fn unknown_endpoint(OriginalUri(uri): OriginalUri) -> Response {
    Surface::Scim.respond(Error::not_found(format!("SCIM endpoint {}", uri.path())))
}
