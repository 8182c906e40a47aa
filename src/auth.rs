//! Bearer-token authentication: resolves `Authorization: Bearer <secret>` to
//! a [`Principal`] (tenant and scope) with one indexed lookup of the
//! secret's hash, and refuses the request with 401 otherwise.
//!
//! An admitted token is kept in the read cache only while the database's
//! change generation stands, so a revocation (from the CLI or the API, from
//! this process or another) takes effect on the very next request. The secret is
//! never logged; the span gets the token id and tenant once admitted.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use events::event::TokenScope;
use projections::requests::RequestRow;
use projections::tenancy::{self, TokenRecord};

use crate::cache::Generation;
use crate::error::Error;
use crate::error::Surface;
use crate::state::AppState;
use crate::tenancy::{admit, secret_hash};

/// Who is calling: the admitted token and its tenant.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub scope: TokenScope,
}

impl Principal {
    /// The actor to record on events this caller causes.
    pub fn actor(&self) -> events::Actor {
        events::Actor::Token { token_id: self.token_id.clone() }
    }
}

/// The scopes a family of routes accepts, and how its errors look.
#[derive(Debug, Clone)]
pub struct Gate {
    pub state: AppState,
    pub allowed: &'static [TokenScope],
    pub surface: Surface,
}

fn bearer_secret(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim()).filter(|secret| !secret.is_empty())
}

/// The middleware: admit or refuse, then pass the [`Principal`] on.
pub async fn require_token(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let Some(secret) = bearer_secret(&request) else {
        gate.state.metrics.auth_failure(gate.surface.family());
        return gate.surface.respond(Error::Unauthorized { reason: "a bearer token is required" });
    };
    // Taken before anything is read: what this request reads and keeps in
    // the cache is tagged with it (see `cache`).
    let generation = match gate.state.store.log().generation() {
        Ok(generation) => generation,
        Err(error) => return gate.surface.respond(Error::from(error)),
    };
    let hash = secret_hash(secret);
    let token = match generation.and_then(|generation| gate.state.cache.token(&hash, generation)) {
        Some(token) => Some(token),
        None => {
            let found = gate
                .state
                .store
                .read(|connection| Ok(tenancy::token_by_secret_hash(connection, &hash)?));
            match found {
                // Unknown secrets are not kept: guesses must not fill it.
                Ok(Some(token)) => {
                    if let Some(generation) = generation {
                        gate.state.cache.keep_token(hash, generation, token.clone());
                    }
                    Some(token)
                }
                Ok(None) => None,
                Err(error) => return gate.surface.respond(error),
            }
        }
    };
    let token = match admit(token, gate.allowed, gate.state.store.now()) {
        Ok(token) => token,
        Err(refusal) => {
            gate.state.metrics.auth_failure(gate.surface.family());
            tracing::info!(reason = refusal.reason(), "bearer token refused");
            return gate.surface.respond(Error::Unauthorized { reason: refusal.reason() });
        }
    };
    let span = tracing::Span::current();
    span.record("tenant", token.tenant_name.as_str());
    span.record("token_id", token.token_id.as_str());
    note_use(&gate.state, &token);
    // What the request log needs of the request, taken before the handler
    // owns it; cheap clones only; text is made for the rows kept.
    let seen = (gate.surface == Surface::Scim).then(|| Seen {
        at: gate.state.store.log().now_millis(),
        tenant_id: token.tenant_id.clone(),
        token_id: token.token_id.clone(),
        request_id: request.extensions().get::<crate::state::RequestId>().map(|id| id.0.clone()),
        method: request.method().clone(),
        uri: request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| request.uri().clone(), |original| original.0.clone()),
        user_agent: request.headers().get(header::USER_AGENT).cloned(),
    });
    if let Some(generation) = generation {
        request.extensions_mut().insert(Generation(generation));
    }
    request.extensions_mut().insert(Principal {
        token_id: token.token_id,
        tenant_id: token.tenant_id,
        tenant_name: token.tenant_name,
        scope: token.scope,
    });
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(seen) = seen {
        let status = response.status().as_u16();
        // Reads that succeeded are left to the server's log: at thousands a
        // second they would crowd out the writes and failures an admin
        // reads this log for.
        let read = matches!(seen.method, axum::http::Method::GET | axum::http::Method::HEAD);
        if !read || status >= 400 {
            let row = RequestRow {
                tenant_id: seen.tenant_id,
                request_id: seen.request_id.unwrap_or_default(),
                at: seen.at,
                token_id: seen.token_id,
                method: seen.method.as_str().to_owned(),
                // The path alone: a query can name people.
                target: seen.uri.path().to_owned(),
                status,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                user_agent: seen.user_agent.as_ref().and_then(value_text),
                error: response.extensions().get::<crate::error::Told>().map(|told| told.0.clone()),
            };
            gate.state.requests.note(&gate.state.store, row);
        }
    }
    response
}

/// A SCIM request as it arrived, for the request log.
struct Seen {
    at: String,
    tenant_id: String,
    token_id: String,
    request_id: Option<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    user_agent: Option<axum::http::HeaderValue>,
}

/// Tokens whose last stamp is remembered before old ones are forgotten.
const TOUCHES_KEPT_MAX: usize = 4096;

/// Writes "last used" through the writer, at most once per interval per
/// token, without making the request wait for it.
fn note_use(state: &AppState, token: &TokenRecord) {
    let now = Instant::now();
    {
        let mut touches =
            state.token_touches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = touches
            .get(&token.token_id)
            .is_none_or(|last| now.duration_since(*last) >= state.config.token_touch_interval);
        if !due {
            return;
        }
        // Each OAuth grant is a new token id: forget stamps old enough that
        // their tokens would be written again anyway, so the map stays the
        // size of the tokens in use.
        if touches.len() >= TOUCHES_KEPT_MAX {
            let interval = state.config.token_touch_interval;
            touches.retain(|_, last| now.duration_since(*last) < interval);
        }
        touches.insert(token.token_id.clone(), now);
    }
    let token_id = token.token_id.clone();
    let at = state.store.log().now_millis();
    // Fire and forget: losing a "last used" stamp to a shutdown is harmless.
    drop(
        state
            .store
            .command(None, move |tx| Ok(tenancy::record_token_use(tx.db(), &token_id, &at)?)),
    );
}

/// A header a client chose, as recorded: text, and no longer than a
/// few request ids.
fn header_text(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(value_text)
}

fn value_text(value: &axum::http::HeaderValue) -> Option<String> {
    value
        .to_str()
        .ok()
        .map(|text| text.chars().take(crate::state::REQUEST_ID_LENGTH_MAX * 4).collect::<String>())
}

/// The admitted caller of a handler, with the context its events carry.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub context: events::CommandContext,
    /// The change generation the request was admitted at (see `cache`).
    pub generation: Option<Generation>,
}

impl Caller {
    /// The caller, with the request body it sent recorded in every event
    /// its command appends. Redact secrets first: the log is forever.
    pub fn with_body(mut self, redacted: serde_json::Value) -> Caller {
        if let Some(request) = &mut self.context.request {
            request.body = Some(redacted);
        }
        self
    }
}

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &AppState,
    ) -> Result<Caller, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(Error::Unauthorized { reason: "a bearer token is required" })?;
        let header_text = |name: &str| header_text(&parts.headers, name);
        let context = events::CommandContext {
            actor: principal.actor(),
            request_id: parts.extensions.get::<crate::state::RequestId>().map(|id| id.0.clone()),
            user_agent: header_text("user-agent"),
            correlation_id: header_text("x-correlation-id"),
            // Handlers that read a body add it, redacted.
            request: Some(events::RequestRecord {
                method: parts.method.as_str().to_owned(),
                target: {
                    // Nested routers see their own suffix; record what was sent.
                    let uri = parts
                        .extensions
                        .get::<axum::extract::OriginalUri>()
                        .map_or(&parts.uri, |original| &original.0);
                    uri.path_and_query()
                        .map_or_else(|| uri.path().to_owned(), |target| target.as_str().to_owned())
                },
                body: None,
            }),
            caused_by: Vec::new(),
        };
        let generation = parts.extensions.get::<Generation>().copied();
        Ok(Caller { principal, context, generation })
    }
}
