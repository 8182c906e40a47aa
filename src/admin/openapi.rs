//! The OpenAPI 3.1 document of the whole `/api/v1` surface, read from the
//! routes themselves: every handler carries its `#[utoipa::path]`, every
//! body and answer is a Rust type with its schema derived, and the routers
//! are `OpenApiRouter`s, so a route cannot exist without its entry (and an
//! entry not without its route). [`document`] assembles it from the same
//! route functions the server mounts; `GET /api/v1/openapi.json` serves it,
//! `rollcall openapi` prints it, and docs/openapi.json is it, committed (a
//! test holds the three equal).
//!
//! This module owns the document's frame (info, tags, the bearer scheme)
//! and the answers every operation shares (401, 400, 413, 415, 503); it
//! must not describe any one operation: that stays beside its handler.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// An error of the admin, application and audit APIs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_request`, `unauthorized`, `not_found`,
    /// `conflict`, `duplicate`, `precondition_failed`,
    /// `unsupported_media_type`, `payload_too_large`, `too_expensive` (a
    /// search ran past the query budget), `request_timeout` (a body that did
    /// not arrive in time), `overloaded`, `shutting_down`,
    /// `method_not_allowed`.
    pub error: String,
    /// What is wrong, for a person to read.
    pub message: String,
}

/// A page of the event feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage<'a> {
    pub events: Vec<projections::feed::EventBody<'a>>,
    /// Read `after` this cursor for the next page (the same cursor when
    /// the page is empty).
    pub next_cursor: String,
    /// More events wait past this page.
    pub has_more: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rollcall",
        description = "The admin, application and audit API of rollcall, an event-sourced SCIM 2.0 \
            provisioning engine. Every operation needs a bearer token of its tenant; the tag of \
            each operation says which scopes it takes: `admin` for tenant, tokens, provisioning \
            and webhooks; `app` or `admin` for members and events; `audit` or `admin` for audit. \
            SCIM itself is under /scim/v2 and described by its own /ServiceProviderConfig, \
            /ResourceTypes and /Schemas.",
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme),
    tags(
        (name = "tenant", description = "The caller's tenant (admin)."),
        (name = "tokens", description = "Bearer tokens of the tenant (admin)."),
        (name = "provisioning", description = "Pending changes, Synchronize runs, the attribute \
            mapping, role bindings and run settings (admin)."),
        (name = "members", description = "The member directory the application reads (app, admin)."),
        (name = "events", description = "The member event feed, paged, long-polled or streamed \
            (app, admin); docs/events.md describes every type."),
        (name = "webhooks", description = "Signed webhook endpoints and their deliveries (admin)."),
        (name = "audit", description = "Answers from the log for auditors (audit, admin)."),
        (name = "meta", description = "This document."),
    )
)]
struct Frame;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant's token: `rollcall token issue --scope admin|app|audit`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route of `/api/v1`, relative to it, without the token gates
/// (the server adds them; the document is the same with or without).
fn routes() -> OpenApiRouter<AppState> {
    crate::admin::admin_routes()
        .merge(crate::admin::application_routes())
        .merge(super::audit::routes())
        .merge(public_routes())
}

/// The document, assembled once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document =
            OpenApiRouter::with_openapi(Frame::openapi()).nest("/api/v1", routes()).into_openapi();
        shared_answers(&mut document);
        document
    })
}

/// The document as served and committed: pretty JSON and a newline.
pub fn document_json() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(document())
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
        text.push('\n');
        text
    })
}

/// Adds what every operation may answer besides its own outcomes.
fn shared_answers(document: &mut Document) {
    let error = || {
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(ErrorBody::name()))))
    };
    let answer = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", error().build())
                .build(),
        )
    };
    for item in document.paths.paths.values_mut() {
        let operations =
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let public = operation.security.as_ref().is_some_and(|security| {
                security.iter().all(|requirement| {
                    serde_json::to_value(requirement)
                        .is_ok_and(|value| value.as_object().is_some_and(|map| map.is_empty()))
                })
            });
            if public {
                continue;
            }
            let with_body = has_body(operation);
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses.entry(status.to_owned()).or_insert_with(|| answer(description));
            };
            add("401", "No token, or one that is unknown, expired, revoked or of another scope");
            add("400", "A malformed query, path or body; the message says what");
            add("503", "The server is overloaded or shutting down: try again");
            if with_body {
                add("413", "The body is larger than the server accepts");
                add("415", "The body is not application/json");
            }
        }
    }
    if let Some(components) = document.components.as_mut() {
        components.schemas.entry(ErrorBody::name().into_owned()).or_insert_with(ErrorBody::schema);
    }
}

fn has_body(operation: &Operation) -> bool {
    operation.request_body.is_some()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of /api/v1", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document_json()).into_response()
}

/// The route that serves the document, without a token.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}
