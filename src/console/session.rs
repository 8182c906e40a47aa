//! Signing in to the console, and the session that follows: the sign-in
//! form (paste an admin token once), one-time sign-in links from
//! `rollcall admin login-link`, the session cookie, the CSRF check of
//! every form, and sign-out.
//!
//! A session acts as the token it signed in with: every request looks the
//! token up again and admits it, so revoking or expiring the token ends
//! its sessions at once, and every event a console action appends names
//! that token, as an API call would. Only hashes of the cookie and the
//! link are stored. This module must not render provisioning pages; it
//! hands each request on with a [`Principal`] and a [`Session`].

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use events::CommandContext;
use events::event::TokenScope;
use maud::html;
use projections::console::{self as console_state, SessionRow};
use projections::tenancy::{self as tenancy_projection, TokenRecord};
use serde::Deserialize;

use super::page::{self, PageError, Section, notice, respond, see_other};
use crate::auth::Principal;
use crate::error::Error;
use crate::state::AppState;
use crate::store::Store;
use crate::tenancy::{self, Refusal, TenantRef, TokenRequest, admit, secret_hash};

pub const SESSION_COOKIE: &str = "rollcall_session";
/// The nonce cookie of the sign-in forms, which come before any session
/// exists; the form carries its signed token (see `sign_in_token`).
const SIGN_IN_COOKIE: &str = "rollcall_sign_in";
/// How long a sign-in link from the CLI can be used.
pub const LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The signed-in session of a console request.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    pub scope: TokenScope,
    pub tenant_name: String,
    pub token_id: String,
    pub token_label: Option<String>,
    pub expires_at: String,
}

impl Session {
    pub fn scope_text(&self) -> &'static str {
        match self.scope {
            TokenScope::Admin => "an admin",
            TokenScope::Audit => "an audit",
            TokenScope::Scim => "a SCIM",
            TokenScope::App => "an application",
        }
    }

    pub fn token_label(&self) -> String {
        self.token_label.clone().unwrap_or_else(|| self.token_id.clone())
    }

    /// Audit tokens see only the audit pages.
    pub fn may_open(&self, section: Section) -> bool {
        self.scope == TokenScope::Admin || section == Section::Audit
    }
}

/// Which scopes a family of console pages admits.
#[derive(Debug, Clone)]
pub struct ConsoleGate {
    pub state: AppState,
    pub allowed: &'static [TokenScope],
}

/// The value of one cookie, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A console cookie's name as this request's browser knows it: over TLS
/// (`ServerConfig::over_tls`) with the `__Host-` prefix, which browsers
/// accept only from a secure origin, for the whole host, with no Domain,
/// so a sibling subdomain cannot set or shadow it.
fn cookie_name(state: &AppState, headers: &HeaderMap, name: &str) -> String {
    if state.config.over_tls(headers) { format!("__Host-{name}") } else { name.to_owned() }
}

/// A console cookie of this request (see [`cookie_name`]).
fn console_cookie<'a>(state: &AppState, headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie(headers, &cookie_name(state, headers, name))
}

/// Sets a console cookie: HttpOnly, SameSite=Strict; over TLS `Secure`
/// and `__Host-` (whose rules want `Path=/`), otherwise for `/admin` only.
fn set_cookie(
    response: &mut Response,
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: u64,
) {
    let tls = state.config.over_tls(headers);
    let (path, secure) = if tls { ("/", "; Secure") } else { ("/admin", "") };
    let name = cookie_name(state, headers, name);
    let text = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The forms signed in before a session exists, each bound to its own
/// token (a token of one does not open the other).
#[derive(Debug, Clone, Copy)]
enum SignInForm {
    Token,
    Link,
}

/// This process's key for sign-in form tokens: made once, at random.
/// A restart only makes an open sign-in form ask to be reloaded.
fn sign_in_key() -> Result<&'static [u8; 32], Error> {
    static KEY: std::sync::OnceLock<Result<[u8; 32], String>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map(|()| key).map_err(|error| error.to_string())
    })
    .as_ref()
    .map_err(|error| Error::Internal(format!("no randomness for the sign-in key: {error}")))
}

/// A sign-in form's token for the nonce in its cookie: an HMAC under this
/// process's key, so a cookie tossed in from a sibling subdomain (the same
/// site, which SameSite does not stop) comes without a token that matches
/// it. Signed double submit, as OWASP describes it.
fn sign_in_token(form: SignInForm, nonce: &str) -> Result<String, Error> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(sign_in_key()?)
        .map_err(|error| Error::Internal(error.to_string()))?;
    mac.update(match form {
        SignInForm::Token => b"console sign-in: token\0",
        SignInForm::Link => b"console sign-in: link\0\0",
    });
    mac.update(nonce.as_bytes());
    Ok(events::hash::to_hex(&mac.finalize().into_bytes().into()))
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left.bytes().zip(right.bytes()).fold(0_u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The session and principal of a request, if its cookie names a live
/// session whose token is still admitted.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<(Principal, Session)>, Error> {
    let Some(secret) = console_cookie(state, headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = secret_hash(secret);
    let now = state.store.now();
    let found = state.store.read(|connection| {
        let Some(session) = console_state::session(connection, &hash)? else {
            return Ok(None);
        };
        let token = tenancy_projection::token_by_id(connection, &session.token_id)?;
        Ok(Some((session, token)))
    })?;
    let Some((row, token)) = found else {
        return Ok(None);
    };
    let expired = row.expires_at.parse::<jiff::Timestamp>().map_or(true, |expires| expires <= now);
    if expired {
        return Ok(None);
    }
    let Ok(token) = admit(token, &[TokenScope::Admin, TokenScope::Audit], now) else {
        return Ok(None);
    };
    if token.tenant_id != row.tenant_id {
        return Ok(None);
    }
    let session = Session {
        csrf: row.csrf,
        scope: token.scope,
        tenant_name: token.tenant_name.clone(),
        token_id: token.token_id.clone(),
        token_label: token.label.clone(),
        expires_at: row.expires_at,
    };
    let principal = Principal {
        token_id: token.token_id,
        tenant_id: token.tenant_id,
        tenant_name: token.tenant_name,
        scope: token.scope,
    };
    Ok(Some((principal, session)))
}

/// The middleware of signed-in pages: no session goes to the sign-in page
/// (back here afterwards, for a GET); a session whose token may not open
/// these pages gets 403.
pub async fn require_session(
    State(gate): State<ConsoleGate>,
    mut request: Request,
    next: Next,
) -> Response {
    match signed_in(&gate.state, request.headers()) {
        Ok(Some((principal, session))) => {
            if !gate.allowed.contains(&principal.scope) {
                let body = html! {
                    (notice("error", "These pages need an admin token. You are signed in with an audit token, which opens the audit pages only."))
                    p { a href="/admin/audit" { "Go to the audit pages" } }
                };
                return respond(
                    StatusCode::FORBIDDEN,
                    page::page("Not for this token", Some(&session), Section::None, body),
                );
            }
            tracing::Span::current().record("tenant", principal.tenant_name.as_str());
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(session);
            let mut response = next.run(request).await;
            page::secure_headers(&mut response);
            response
        }
        Ok(None) => {
            let back = if request.method() == Method::GET {
                request.uri().path_and_query().map(|target| target.as_str().to_owned())
            } else {
                None
            };
            match back {
                Some(back) => see_other(&format!(
                    "/admin/sign-in?next={}",
                    serde_urlencoded::to_string([("", back.as_str())])
                        .unwrap_or_default()
                        .trim_start_matches('=')
                )),
                None => see_other("/admin/sign-in"),
            }
        }
        Err(error) => PageError(error).into_response(),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Session {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Session, PageError> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(PageError(Error::Unauthorized { reason: "sign in first" }))
    }
}

/// A submitted console form, its CSRF token already checked against the
/// session: a form without it, or with another session's, is 403 and
/// reaches no handler.
#[derive(Debug)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The first value of a field, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.trim())
    }

    /// A field's value, empty when absent.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Why a submitted form reaches no handler.
#[derive(Debug)]
pub enum FormRefusal {
    /// The body is not a form.
    Unreadable(Error),
    /// No CSRF token, or not this session's: 403.
    Forged,
}

impl IntoResponse for FormRefusal {
    fn into_response(self) -> Response {
        match self {
            FormRefusal::Unreadable(error) => PageError(error).into_response(),
            FormRefusal::Forged => {
                let body = html! {
                    (notice("error", "This form was not sent by your console session (its security token is missing or stale). Reload the page and try again."))
                    p { a href="/admin" { "Back to the console" } }
                };
                respond(
                    StatusCode::FORBIDDEN,
                    page::page("Form refused", None, Section::None, body),
                )
            }
        }
    }
}

fn parse_form(body: &Bytes) -> Result<Vec<(String, String)>, FormRefusal> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|error| {
        FormRefusal::Unreadable(Error::invalid(format!("the form could not be read: {error}")))
    })
}

impl FromRequest<AppState> for Form {
    type Rejection = FormRefusal;

    async fn from_request(request: Request, state: &AppState) -> Result<Form, FormRefusal> {
        let session = request.extensions().get::<Session>().cloned();
        let body = Bytes::from_request(request, state).await.map_err(|rejection| {
            FormRefusal::Unreadable(Error::invalid(format!(
                "the form could not be read: {}",
                rejection.body_text()
            )))
        })?;
        let fields = parse_form(&body)?;
        let sent = fields.iter().find(|(key, _)| key == "csrf").map(|(_, value)| value.as_str());
        match (session, sent) {
            (Some(session), Some(sent)) if same_secret(sent, &session.csrf) => Ok(Form(fields)),
            _ => Err(FormRefusal::Forged),
        }
    }
}

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with("/admin") && !next.starts_with("//") && !next.contains('\\') =>
        {
            next
        }
        _ => "/admin",
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

fn sign_in_form(csrf: &str, next: &str, problem: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(problem) = problem {
            (notice("error", problem))
        }
        p { "Paste an admin token of your tenant. Create one with "
            code { "rollcall token issue --tenant NAME --scope admin" }
            ", or ask for a one-time link: "
            code { "rollcall admin login-link --tenant NAME" } "." }
        p { "An audit token opens the read-only audit pages. SCIM tokens belong to identity providers and cannot sign in." }
        form method="post" action="/admin/sign-in" class="card narrow" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="next" value=(next);
            label for="token" { "Token" }
            input id="token" name="token" type="password" autocomplete="off" required autofocus spellcheck="false";
            button type="submit" class="primary" { "Sign in" }
        }
    }
}

/// A fresh nonce for a sign-in form, set as a cookie, and the form's token
/// for it.
fn with_sign_in_cookie(
    state: &AppState,
    headers: &HeaderMap,
    form: SignInForm,
    status: StatusCode,
    render: impl FnOnce(&str) -> maud::Markup,
) -> Response {
    let made = tenancy::random_hex()
        .and_then(|nonce| sign_in_token(form, &nonce).map(|token| (nonce, token)));
    let (nonce, token) = match made {
        Ok(made) => made,
        Err(error) => return PageError(error).into_response(),
    };
    let mut response = respond(status, render(&token));
    set_cookie(&mut response, state, headers, SIGN_IN_COOKIE, &nonce, 3600);
    response
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref()).to_owned();
    with_sign_in_cookie(&state, &headers, SignInForm::Token, StatusCode::OK, |csrf| {
        page::page("Sign in", None, Section::None, sign_in_form(csrf, &next, None))
    })
}

/// Checks a sign-in form's token against the nonce in its cookie.
fn sign_in_fields(
    state: &AppState,
    headers: &HeaderMap,
    form: SignInForm,
    body: &Bytes,
) -> Result<Form, FormRefusal> {
    let fields = Form(parse_form(body)?);
    let expected = console_cookie(state, headers, SIGN_IN_COOKIE)
        .and_then(|nonce| sign_in_token(form, nonce).ok());
    match (expected, fields.get("csrf")) {
        (Some(expected), Some(sent)) if same_secret(sent, &expected) => Ok(fields),
        _ => Err(FormRefusal::Forged),
    }
}

pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match sign_in_fields(&state, &headers, SignInForm::Token, &body) {
        Ok(form) => form,
        Err(refusal) => return refusal.into_response(),
    };
    let next = safe_next(form.get("next")).to_owned();
    let secret = form.text("token");
    let refuse = |status: StatusCode, problem: &str| {
        with_sign_in_cookie(&state, &headers, SignInForm::Token, status, |csrf| {
            page::page("Sign in", None, Section::None, sign_in_form(csrf, &next, Some(problem)))
        })
    };
    if secret.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "Paste a token to sign in.");
    }
    let hash = secret_hash(secret);
    let token = match state
        .store
        .read(|connection| Ok(tenancy_projection::token_by_secret_hash(connection, &hash)?))
    {
        Ok(token) => token,
        Err(error) => return PageError(error).into_response(),
    };
    let token = match admit(token, &[TokenScope::Admin, TokenScope::Audit], state.store.now()) {
        Ok(token) => token,
        Err(Refusal::WrongScope) => {
            tracing::info!("console sign-in refused: a SCIM token");
            return refuse(
                StatusCode::FORBIDDEN,
                "That is a SCIM token: it belongs to an identity provider and cannot sign in. Use an admin token.",
            );
        }
        Err(refusal) => {
            tracing::info!(reason = refusal.reason(), "console sign-in refused");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "That token is not valid: it is unknown, revoked or expired.",
            );
        }
    };
    start(&state, &headers, &token, &next).await
}

/// Starts a session for an admitted token and sends the browser on.
async fn start(state: &AppState, headers: &HeaderMap, token: &TokenRecord, next: &str) -> Response {
    let (secret, csrf) = match (tenancy::random_hex(), tenancy::random_hex()) {
        (Ok(secret), Ok(csrf)) => (secret, csrf),
        (Err(error), _) | (_, Err(error)) => return PageError(error).into_response(),
    };
    let now = state.store.now();
    let lifetime = state.config.console_session_lifetime;
    let mut expires = now + jiff::SignedDuration::try_from(lifetime).unwrap_or_default();
    // A session never outlives its token.
    if let Some(token_expiry) =
        token.expires_at.as_deref().and_then(|at| at.parse::<jiff::Timestamp>().ok())
    {
        expires = expires.min(token_expiry);
    }
    let row = SessionRow {
        tenant_id: token.tenant_id.clone(),
        token_id: token.token_id.clone(),
        csrf,
        created_at: events::time::format_millis(now),
        expires_at: events::time::format_millis(expires),
    };
    let hash = secret_hash(&secret);
    let stored = state
        .store
        .command(None, move |tx| Ok(console_state::start_session(tx.db(), &hash, &row)?))
        .await
        .map_err(Error::from);
    if let Err(error) = stored {
        return PageError(error).into_response();
    }
    tracing::info!(tenant = %token.tenant_name, token_id = %token.token_id, "console session started");
    let seconds = u64::try_from(expires.duration_since(now).as_secs()).unwrap_or(0);
    let mut response = see_other(next);
    set_cookie(&mut response, state, headers, SESSION_COOKIE, &secret, seconds);
    // The sign-in token has done its job.
    set_cookie(&mut response, state, headers, SIGN_IN_COOKIE, "", 0);
    response
}

fn link_form(csrf: &str, code: &str) -> maud::Markup {
    html! {
        p { "This one-time link signs you in to the console. It works once, for 15 minutes after it was made." }
        form method="post" action="/admin/sign-in/link" class="card narrow" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="code" value=(code);
            button type="submit" class="primary" { "Continue to the console" }
        }
    }
}

/// The page a sign-in link opens: a button, so a mail scanner that
/// fetches the link does not use it up.
pub async fn link_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    let code = query.code.unwrap_or_default();
    with_sign_in_cookie(&state, &headers, SignInForm::Link, StatusCode::OK, |csrf| {
        page::page("Sign in", None, Section::None, link_form(csrf, &code))
    })
}

pub async fn redeem_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match sign_in_fields(&state, &headers, SignInForm::Link, &body) {
        Ok(form) => form,
        Err(refusal) => return refusal.into_response(),
    };
    let hash = secret_hash(form.text("code"));
    let taken = state
        .store
        .command(None, move |tx| Ok(console_state::take_link(tx.db(), &hash)?))
        .await
        .map_err(Error::from);
    let now = state.store.now();
    let token = match taken {
        Ok(Some((_, token_id, expires_at)))
            if expires_at.parse::<jiff::Timestamp>().is_ok_and(|expires| expires > now) =>
        {
            state
                .store
                .read(|connection| Ok(tenancy_projection::token_by_id(connection, &token_id)?))
        }
        Ok(_) => Ok(None),
        Err(error) => Err(error),
    };
    let token = match token {
        Ok(token) => admit(token, &[TokenScope::Admin], now).ok(),
        Err(error) => return PageError(error).into_response(),
    };
    match token {
        Some(token) => start(&state, &headers, &token, "/admin").await,
        None => {
            let body = html! {
                (notice("error", "This sign-in link has been used or has expired. Ask for a new one with rollcall admin login-link, or sign in with a token."))
                p { a href="/admin/sign-in" { "Sign in with a token" } }
            };
            respond(StatusCode::GONE, page::page("Sign in", None, Section::None, body))
        }
    }
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap, _form: Form) -> Response {
    if let Some(secret) = console_cookie(&state, &headers, SESSION_COOKIE) {
        let hash = secret_hash(secret);
        let ended = state
            .store
            .command(None, move |tx| Ok(console_state::end_session(tx.db(), &hash)?))
            .await
            .map_err(Error::from);
        if let Err(error) = ended {
            return PageError(error).into_response();
        }
    }
    let mut response = see_other("/admin/sign-in");
    set_cookie(&mut response, &state, &headers, SESSION_COOKIE, "", 0);
    response
}

/// `/admin`: the first page a session may open, or the sign-in page.
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers) {
        Ok(Some((principal, _))) if principal.scope == TokenScope::Admin => {
            see_other("/admin/provisioning")
        }
        Ok(Some(_)) => see_other("/admin/audit"),
        Ok(None) => see_other("/admin/sign-in"),
        Err(error) => PageError(error).into_response(),
    }
}

/// What `rollcall admin login-link` makes: a new admin token that only
/// this link can use (its secret is never shown), and the link's code.
/// The token lives as long as one session; the link, 15 minutes.
pub fn issue_link(
    store: &Store,
    tenant: &str,
    session_lifetime: Duration,
    context: CommandContext,
) -> Result<(String, TokenRecord), Error> {
    let lifetime = jiff::SignedDuration::try_from(session_lifetime)
        .map_err(|_| Error::invalid("the session lifetime is out of range"))?;
    let request = TokenRequest {
        scope: TokenScope::Admin,
        lifetime: Some(lifetime),
        label: Some("console sign-in link".to_owned()),
        client_id: None,
    };
    let (token, _secret) =
        tenancy::issue_token(store, TenantRef::Name(tenant.to_owned()), request, context).wait()?;
    let code = tenancy::random_hex()?;
    let hash = secret_hash(&code);
    let expires = store.now() + jiff::SignedDuration::try_from(LINK_LIFETIME).unwrap_or_default();
    let expires_at = events::time::format_millis(expires);
    let (tenant_id, token_id) = (token.tenant_id.clone(), token.token_id.clone());
    store
        .command(None, move |tx| {
            Ok(console_state::add_link(tx.db(), &hash, &tenant_id, &token_id, &expires_at)?)
        })
        .wait()?;
    Ok((code, token))
}
