//! The OAuth 2.0 token endpoint (RFC 6749 section 4.4, client credentials),
//! `POST /oauth/token`, for identity providers that will not take a static
//! bearer token (Microsoft's gallery validation among them).
//!
//! A client authenticates with its id and secret, in the form body
//! (`client_secret_post`) or in a Basic `Authorization` header
//! (`client_secret_basic`), and gets a short-lived `scim` access token. That
//! token is an ordinary token, recorded by a TokenIssued event that names
//! the client, so it opens /scim/v2 exactly like an issued one, expires on
//! time, and shows in the audit. Errors follow RFC 6749 section 5.2.

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use events::{Actor, CommandContext};
use serde_json::json;

use crate::error::{Error, OAuthError};
use crate::state::{AppState, RequestId};
use crate::tenancy::{self, ClientRefusal};

/// The client's id and secret from a Basic header, if it sent one.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(drop);
    let pair = decoded.and_then(|bytes| String::from_utf8(bytes).map_err(drop));
    // RFC 6749 section 2.3.1: both parts are form-urlencoded in the header.
    Some(pair.and_then(|pair| {
        let (id, secret) = pair.split_once(':').ok_or(())?;
        Ok((form_unescape(id)?, form_unescape(secret)?))
    }))
}

/// Undoes application/x-www-form-urlencoded escaping of one value: `+` is
/// a space, `%XY` a byte. A malformed escape, or bytes that are not UTF-8,
/// are an error, never guessed at.
fn form_unescape(text: &str) -> Result<String, ()> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(byte) = rest.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let digit =
                    |byte: Option<u8>| byte.and_then(|b| (b as char).to_digit(16)).ok_or(());
                let (high, low) = (digit(rest.next())?, digit(rest.next())?);
                u8::try_from(high * 16 + low).map_err(drop)?
            }
            other => other,
        });
    }
    String::from_utf8(bytes).map_err(drop)
}

/// The form's fields; `None` when one is repeated (RFC 6749 section 3.2:
/// parameters must not be included more than once).
fn fields_once(form: Vec<(String, String)>) -> Option<HashMap<String, String>> {
    let mut fields = HashMap::with_capacity(form.len());
    for (name, value) in form {
        if fields.insert(name, value).is_some() {
            return None;
        }
    }
    Some(fields)
}

/// Whether `client_id` has the shape rollcall gives client ids, so it can
/// be logged: anything else (a secret pasted in the wrong field, a
/// megabyte of junk) is not written to the log.
fn loggable_client_id(client_id: &str) -> bool {
    client_id.len() == tenancy::CLIENT_ID_PREFIX.len() + 26
        && client_id.starts_with(tenancy::CLIENT_ID_PREFIX)
        && client_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request_id: Option<axum::Extension<RequestId>>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        )
        .into_response();
    };
    let Some(form) = fields_once(form) else {
        return OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a parameter is given more than once",
        )
        .into_response();
    };
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            )
            .into_response();
        }
        None => {
            return OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            )
            .into_response();
        }
    }
    if let Some(scope) = form.get("scope")
        && !scope.split_whitespace().all(|item| item == "scim")
    {
        return OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", "the only scope is scim")
            .into_response();
    }
    let from_header = basic_credentials(&headers);
    let basic = from_header.is_some();
    let (client_id, client_secret) =
        match (from_header, form.get("client_id"), form.get("client_secret")) {
            // A body client_id beside Basic must name the same client.
            (Some(Ok(credentials)), id, None) if id.is_none_or(|id| *id == credentials.0) => {
                credentials
            }
            (Some(Ok(_)), _, None) => {
                return OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id in the body differs from the Basic credentials",
                )
                .basic(true)
                .into_response();
            }
            (Some(Err(())), _, _) => {
                return OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "the Basic credentials do not decode",
                )
                .basic(true)
                .into_response();
            }
            (Some(Ok(_)), _, Some(_)) => {
                return OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method",
                )
                .basic(true)
                .into_response();
            }
            (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
            (None, _, _) => {
                return OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication is required",
                )
                .into_response();
            }
        };
    let context = CommandContext {
        actor: Actor::System,
        request_id: request_id.map(|axum::Extension(RequestId(id))| id),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        correlation_id: None,
        // The form carries the client secret: the request is not recorded.
        request: None,
        caused_by: Vec::new(),
    };
    let lifetime = jiff::SignedDuration::try_from(state.config.oauth_token_lifetime)
        .unwrap_or(jiff::SignedDuration::from_hours(1));
    let granted = tenancy::grant_client_credentials(
        &state.store,
        &client_id,
        &client_secret,
        lifetime,
        context,
    )
    .await;
    match granted.map_err(Error::from) {
        Ok(Ok((_, secret))) => {
            let body = json!({
                "access_token": secret.expose(),
                "token_type": "Bearer",
                "expires_in": state.config.oauth_token_lifetime.as_secs(),
                "scope": "scim",
            });
            let mut response = (StatusCode::OK, axum::Json(body)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Ok(Err(ClientRefusal::InvalidClient)) => {
            if loggable_client_id(&client_id) {
                tracing::info!(client_id, "client credentials refused");
            } else {
                tracing::info!(client_id_length = client_id.len(), "client credentials refused");
            }
            OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client, wrong secret, or revoked",
            )
            .basic(basic)
            .into_response()
        }
        Ok(Err(ClientRefusal::TooManyTokens { retry_after })) => {
            tracing::info!(client_id, "client credentials refused: too many live tokens");
            let mut refused = OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                format!(
                    "this client already holds {} live access tokens: reuse one until it \
                     expires (expires_in), or ask again in {retry_after} s",
                    tenancy::CLIENT_LIVE_TOKENS_MAX
                ),
            );
            refused.retry_after = Some(retry_after);
            refused.into_response()
        }
        Err(error) => OAuthError::from(error).into_response(),
    }
}
