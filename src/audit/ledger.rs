//! The raw request ledger: every change the log holds names the request it
//! came from (request id, token, User-Agent, and the request as its client
//! sent it: method, path and query, body with secrets redacted). Given a
//! request id (from a joiners-and-leavers row, a history entry or a log
//! line), this finds the request and every event it produced, from the log
//! alone.

use events::Metadata;
use events::sqlite::VisitError;
use serde::Serialize;
use serde_json::Value;

use super::report::Word;
use crate::error::Error;
use crate::store::Store;

/// One event the request produced.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Produced {
    pub position: events::Position,
    pub recorded_at: String,
    pub stream: String,
    pub event_type: String,
    /// Its chain hash, lower-case hex: what the event feed's `caused_by`
    /// and an export name it by.
    pub hash: String,
}

/// A request as the ledger holds it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = LedgerRequest)]
pub struct Request {
    pub request_id: String,
    pub by: Word,
    pub method: Option<String>,
    /// Path and query, as in the request line.
    pub target: Option<String>,
    /// The body as the client sent it (secrets redacted), if it had one.
    pub body: Option<Value>,
    pub events: Vec<Produced>,
    /// How it was answered, from the request log while it still holds the
    /// request (the log of events keeps only what changed something).
    pub answered: Option<Answered>,
}

/// How a request was answered, from the request log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Answered {
    /// When it arrived.
    pub at: String,
    pub status: u16,
    pub duration_ms: u64,
    /// What a failure told the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The request `request_id` of the tenant and the events it produced, in
/// order, with how it was answered; 404 when neither an event nor the
/// request log names it.
pub fn request(store: &Store, tenant_id: &str, request_id: &str) -> Result<Request, Error> {
    let logged = store.read(|connection| {
        Ok(projections::requests::by_request_id(connection, tenant_id, request_id)?)
    })?;
    // Its events were recorded after it arrived: no need to read before.
    let start = match &logged {
        Some(row) => store.log().first_position_at(tenant_id, &row.at)?.saturating_sub(1),
        None => 0,
    };
    let mut found: Option<Request> = None;
    let walked = store.log().visit_forward(start, Some(tenant_id), |event| -> Result<(), Error> {
        // Most events do not name it: skip them before decoding anything.
        if !event.metadata.contains(request_id) {
            return Ok(());
        }
        let metadata: Metadata = event.metadata_opened(store.keys()).map_err(|error| {
            Error::Internal(format!("an event's metadata does not decode: {error}"))
        })?;
        if metadata.request_id.as_deref() != Some(request_id) {
            return Ok(());
        }
        let produced = Produced {
            position: event.position,
            recorded_at: event.recorded_at.to_owned(),
            stream: event.stream.to_owned(),
            event_type: event.event_type.to_owned(),
            hash: events::hash::to_hex(event.hash),
        };
        let request = found.get_or_insert_with(|| Request {
            request_id: request_id.to_owned(),
            by: Word {
                actor: metadata.actor.clone(),
                request_id: None,
                user_agent: metadata.user_agent.clone(),
                run_id: None,
            },
            method: None,
            target: None,
            body: None,
            events: Vec::new(),
            answered: None,
        });
        if let Some(record) = metadata.request {
            request.method.get_or_insert(record.method);
            request.target.get_or_insert(record.target);
            if request.body.is_none() {
                request.body = record.body;
            }
        }
        request.events.push(produced);
        Ok(())
    });
    match walked {
        Ok(_) => {}
        Err(VisitError::Log(error)) => return Err(error.into()),
        Err(VisitError::Visitor(error)) => return Err(error),
    }
    let Some(logged) = logged else {
        return found.ok_or_else(|| Error::not_found(format!("request {request_id}")));
    };
    let answered = Answered {
        at: logged.at,
        status: logged.status,
        duration_ms: logged.duration_ms,
        error: logged.error,
    };
    // A request that changed nothing (a read, or a failure) is known from
    // the request log alone.
    let mut request = found.unwrap_or_else(|| Request {
        request_id: request_id.to_owned(),
        by: Word {
            actor: events::Actor::Token { token_id: logged.token_id },
            request_id: None,
            user_agent: logged.user_agent,
            run_id: None,
        },
        method: Some(logged.method),
        target: Some(logged.target),
        body: None,
        events: Vec::new(),
        answered: None,
    });
    request.answered = Some(answered);
    Ok(request)
}
