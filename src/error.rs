//! The application's one error enum, and the one place it becomes an HTTP
//! response.
//!
//! Every layer below (`events::LogError`, `projections::ProjectionError`)
//! converts into [`Error`]. Two renderings exist because two wire formats
//! exist: [`ScimError`] writes RFC 7644 section 3.12 bodies for /scim/v2,
//! [`ApiError`] writes `{"error": code, "message": text}` everywhere else.
//! Both take status and code from [`Error::status`] and [`Error::code`], so
//! the mapping is written once. Internal causes are never put in a body:
//! they ride on the response as an [`InternalCause`] extension, and the
//! request-logging middleware logs them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use events::{AppendError, ExecuteError, LogError};
use projections::ProjectionError;

/// The media type of every SCIM response (RFC 7644 section 8.1): SCIM
/// errors are answered in it wherever they arise.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist for this caller (another tenant's
    /// resource included: 404, never 403).
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request conflicts with current state (a concurrent change).
    #[error("{message}")]
    Conflict { message: String },
    /// A unique value (a userName, a group's displayName) is taken: 409
    /// with scimType `uniqueness`.
    #[error("{message}")]
    Duplicate { message: String },
    /// An If-Match precondition does not hold: the resource changed since.
    #[error("{message}")]
    PreconditionFailed { message: String },
    /// The route exists but not with this method.
    #[error("{message}")]
    MethodNotAllowed { message: String },
    /// The request is malformed or a value is not allowed; `kind` says how,
    /// in SCIM's words (the `scimType` of a 400).
    #[error("{message}")]
    Invalid { kind: InvalidKind, message: String },
    /// No usable bearer token for this route.
    #[error("{reason}")]
    Unauthorized { reason: &'static str },
    /// The request body is not in a media type the route accepts.
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    /// The request is over a configured limit: its body's size, or a Bulk
    /// request's number of operations.
    #[error("{message}")]
    PayloadTooLarge { message: String },
    /// The writer's queue is full: retry shortly.
    #[error("rollcall is busy; retry shortly")]
    Overloaded,
    /// The request body did not arrive within the body timeout.
    #[error("{message}")]
    RequestTimeout { message: String },
    /// The HTTP layer could not read the request at all: its head too
    /// large (431), its URI too long (414), or not HTTP (400). Answered by
    /// `http::refusals` in the path's surface, then the connection closes.
    #[error("{message}")]
    Unreadable { status: StatusCode, message: &'static str },
    /// A read ran past its time budget (`budget_ms`, when known): the
    /// query asks for more work than the server will do for one request.
    #[error("{}", budget_message(*budget_ms))]
    BudgetExceeded { budget_ms: Option<u64> },
    /// The log writer has stopped (shutting down).
    #[error("rollcall is shutting down")]
    ShuttingDown,
    /// A bug or a storage failure; details go to the log, not the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid { kind: InvalidKind::Value, message: message.into() }
    }

    /// A 400 of a particular SCIM kind.
    pub fn invalid_as(kind: InvalidKind, message: impl Into<String>) -> Error {
        Error::Invalid { kind, message: message.into() }
    }

    /// A 413 for a body over `limit_bytes`.
    pub fn body_too_large(limit_bytes: usize) -> Error {
        Error::PayloadTooLarge {
            message: format!("request body is larger than the limit of {limit_bytes} bytes"),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Conflict { message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict { .. } | Error::Duplicate { .. } => StatusCode::CONFLICT,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Overloaded | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::BudgetExceeded { .. } => StatusCode::BAD_REQUEST,
            Error::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::Unreadable { status, .. } => *status,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the admin API.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::Duplicate { .. } => "duplicate",
            Error::PreconditionFailed { .. } => "precondition_failed",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Invalid { .. } => "invalid_request",
            Error::Unauthorized { .. } => "unauthorized",
            Error::UnsupportedMediaType { .. } => "unsupported_media_type",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::Overloaded => "overloaded",
            Error::BudgetExceeded { .. } => "too_expensive",
            Error::RequestTimeout { .. } => "request_timeout",
            Error::Unreadable { status, .. } => match status.as_u16() {
                414 => "uri_too_long",
                431 => "header_fields_too_large",
                _ => "malformed_request",
            },
            Error::ShuttingDown => "shutting_down",
            Error::Internal(_) => "internal",
        }
    }

    /// The text a client may see: internal details stay in the server log.
    pub(crate) fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error; the server log has the details".to_owned(),
            other => other.to_string(),
        }
    }

    fn into_response_with(self, body: serde_json::Value, content_type: &'static str) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        match &self {
            Error::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"rollcall\""),
                );
            }
            Error::Overloaded | Error::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response.extensions_mut().insert(Told(self.public_message()));
        if let Error::Internal(cause) = self {
            response.extensions_mut().insert(InternalCause(cause));
        }
        response
    }
}

impl From<LogError> for Error {
    fn from(error: LogError) -> Error {
        match error {
            LogError::Overloaded { .. } => Error::Overloaded,
            LogError::Interrupted { .. } => Error::BudgetExceeded { budget_ms: None },
            LogError::WriterStopped => Error::ShuttingDown,
            LogError::NotALog { reason } => {
                Error::NotFound { what: format!("database ({reason})") }
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<ProjectionError> for Error {
    fn from(error: ProjectionError) -> Error {
        match &error {
            ProjectionError::Storage { source, .. } if source.is_interrupt() => {
                Error::BudgetExceeded { budget_ms: None }
            }
            _ => Error::Internal(error.to_string()),
        }
    }
}

fn budget_message(budget_ms: Option<u64>) -> String {
    let budget = budget_ms.map(|ms| format!(" of {ms} ms")).unwrap_or_default();
    format!(
        "the query ran past the time budget{budget} a read may take (serve \
         --query-budget-ms): narrow it (a filter of eq on id, userName or externalId is always \
         quick; co, sw and ew over a large tenant read every resource)"
    )
}

impl From<events::DecodeError> for Error {
    // A stored event that no longer decodes is a damaged log or a bug, never
    // the caller's fault.
    fn from(error: events::DecodeError) -> Error {
        Error::Internal(error.to_string())
    }
}

impl From<AppendError> for Error {
    fn from(error: AppendError) -> Error {
        match error {
            // A conflict at this layer means two writers raced on one
            // stream; the loser is told to retry, like any 409.
            AppendError::Conflict { stream, .. } => {
                Error::conflict(format!("{stream} was changed concurrently; retry the request"))
            }
            AppendError::InvalidEvent { .. } => Error::Internal(error.to_string()),
            AppendError::Log(error) => error.into(),
        }
    }
}

impl From<ExecuteError<Error>> for Error {
    fn from(error: ExecuteError<Error>) -> Error {
        match error {
            ExecuteError::Command(error) => error,
            ExecuteError::Log(error) => error.into(),
            ExecuteError::Panicked(message) => {
                Error::Internal(format!("command panicked: {message}"))
            }
        }
    }
}

/// What is wrong with a bad request, as RFC 7644 section 3.12 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// A value is missing, of the wrong type, or not allowed.
    Value,
    /// The body is not valid JSON or not the expected structure.
    Syntax,
    /// A filter does not parse or names what cannot be filtered.
    Filter,
    /// A PATCH path does not parse or names nothing.
    Path,
    /// A PATCH path with a filter matched nothing where it must.
    NoTarget,
    /// An attempt to change an attribute that cannot be changed.
    Mutability,
    /// The request asks for more than the server will return or take.
    TooMany,
}

impl InvalidKind {
    pub fn scim_type(self) -> &'static str {
        match self {
            InvalidKind::Value => "invalidValue",
            InvalidKind::Syntax => "invalidSyntax",
            InvalidKind::Filter => "invalidFilter",
            InvalidKind::Path => "invalidPath",
            InvalidKind::NoTarget => "noTarget",
            InvalidKind::Mutability => "mutability",
            InvalidKind::TooMany => "tooMany",
        }
    }
}

/// The internal cause of a 500, for the logging middleware only.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

/// What an error response told the client, for the request log.
#[derive(Debug, Clone)]
pub struct Told(pub String);

/// An [`Error`] rendered for /scim/v2 (RFC 7644 section 3.12).
#[derive(Debug)]
pub struct ScimError(pub Error);

impl From<Error> for ScimError {
    fn from(error: Error) -> ScimError {
        ScimError(error)
    }
}

impl ScimError {
    /// The RFC 7644 section 3.12 body, alone (a Bulk response carries one
    /// per failed operation).
    pub fn body(&self) -> serde_json::Value {
        let error = &self.0;
        let mut body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": error.status().as_u16().to_string(),
            "detail": error.public_message(),
        });
        let scim_type = match error {
            Error::Invalid { kind, .. } => Some(kind.scim_type()),
            Error::Duplicate { .. } => Some("uniqueness"),
            Error::BudgetExceeded { .. } => Some("tooMany"),
            _ => None,
        };
        if let (Some(scim_type), Some(fields)) = (scim_type, body.as_object_mut()) {
            fields.insert("scimType".to_owned(), serde_json::Value::from(scim_type));
        }
        body
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let body = self.body();
        self.0.into_response_with(body, SCIM_CONTENT_TYPE)
    }
}

/// An [`Error`] rendered for the admin and audit APIs.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(error: E) -> ApiError {
        ApiError(error.into())
    }
}

impl ApiError {
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.0.code(), "message": self.0.public_message() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        self.0.into_response_with(body, "application/json")
    }
}

/// An error of the OAuth token endpoint, rendered as RFC 6749 section 5.2
/// says (`{"error", "error_description"}`, never cached).
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    /// The RFC 6749 error code: `invalid_request`, `invalid_client`, ...
    pub code: &'static str,
    pub description: String,
    /// The client authenticated with Basic: a 401 names the Basic realm.
    pub basic: bool,
    /// Seconds a client should wait before asking again.
    pub retry_after: Option<u64>,
    cause: Option<String>,
}

impl OAuthError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> OAuthError {
        OAuthError {
            status,
            code,
            description: description.into(),
            basic: false,
            retry_after: None,
            cause: None,
        }
    }

    /// Marks the request as Basic-authenticated.
    pub fn basic(self, basic: bool) -> OAuthError {
        OAuthError { basic, ..self }
    }
}

impl From<Error> for OAuthError {
    fn from(error: Error) -> OAuthError {
        let retry_after = matches!(error, Error::Overloaded | Error::ShuttingDown).then_some(1);
        let code = if retry_after.is_some() { "temporarily_unavailable" } else { "server_error" };
        let mut refused = OAuthError::new(error.status(), code, "the token could not be issued");
        refused.retry_after = retry_after;
        if let Error::Internal(cause) = error {
            refused.cause = Some(cause);
        }
        refused
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic || self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"rollcall\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(Told(self.description));
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(InternalCause(cause));
        }
        response
    }
}

/// Which wire format a path's errors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Scim,
    Api,
}

impl Surface {
    /// The surface's name in metrics.
    pub fn family(self) -> &'static str {
        match self {
            Surface::Scim => "scim",
            Surface::Api => "api",
        }
    }

    pub fn of_path(path: &str) -> Surface {
        if path == "/scim" || path.starts_with("/scim/") { Surface::Scim } else { Surface::Api }
    }

    /// The media type and body of `error` in this surface's shape, for an
    /// answer written below axum (`http::refusals`).
    pub fn body(self, error: Error) -> (&'static str, serde_json::Value) {
        match self {
            Surface::Scim => (SCIM_CONTENT_TYPE, ScimError(error).body()),
            Surface::Api => ("application/json", ApiError(error).body()),
        }
    }

    pub fn respond(self, error: Error) -> Response {
        match self {
            Surface::Scim => ScimError(error).into_response(),
            Surface::Api => ApiError(error).into_response(),
        }
    }
}
