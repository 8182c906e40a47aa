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
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Produced {
    pub position: events::Position,
    pub recorded_at: String,
    pub stream: String,
    pub event_type: String,
}

/// A request as the ledger holds it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Request {
    pub request_id: String,
    pub by: Word,
    pub method: Option<String>,
    /// Path and query, as in the request line.
    pub target: Option<String>,
    /// The body as the client sent it (secrets redacted), if it had one.
    pub body: Option<Value>,
    pub events: Vec<Produced>,
}

/// The request `request_id` of the tenant and the events it produced, in
/// order; 404 when no event names it.
pub fn request(store: &Store, tenant_id: &str, request_id: &str) -> Result<Request, Error> {
    let mut found: Option<Request> = None;
    let walked = store.log().visit_forward(0, Some(tenant_id), |event| -> Result<(), Error> {
        // Most events do not name it: skip them before decoding anything.
        if !event.metadata.contains(request_id) {
            return Ok(());
        }
        let metadata: Metadata = serde_json::from_str(event.metadata).map_err(|error| {
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
    found.ok_or_else(|| Error::not_found(format!("request {request_id}")))
}
