//! The envelope around every event: positions, stream versions, metadata, and
//! the byte-level shapes the log stores and returns.
//!
//! These types are storage-neutral: the SQLite log and any later backend
//! speak them. They carry no typed payload; see [`crate::event`] for that.

use crate::seal::{self, Binding, Keyring, Opened, SealError, SubjectKey};
use serde::{Deserialize, Serialize};

/// The tenant whose chain holds workspace-wide events, such as the creation
/// of a tenant. No real tenant can take this id: tenant ids are ULIDs.
pub const SYSTEM_TENANT: &str = "system";

/// A gapless, global position in the log. The first event is at position 1;
/// position 0 means "before the first event".
pub type Position = u64;

/// What the caller believes the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (1-based).
    Exact(u64),
    /// No check: append after whatever is there.
    Any,
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` satisfies this
    /// expectation.
    pub fn accepts(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::Exact(expected) => actual == Some(expected),
            ExpectedVersion::Any => true,
        }
    }
}

/// On whose word an event was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A bearer token, by its id (never its secret).
    Token { token_id: String },
    /// Someone at the command line of the machine holding the database.
    Cli { user: Option<String> },
    /// The synchronize scheduler.
    Scheduler,
    /// rollcall itself (migrations, rebuilds).
    System,
}

/// The HTTP request a command came from, as its client sent it: what an
/// auditor reads to see exactly what an identity provider asked, before
/// rollcall normalised it. Secrets in the body are already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query, as in the request line.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// An earlier event of the same tenant that an event rests on: a member
/// event names the SCIM (and settings) events whose state it applied, so
/// anyone holding the tenant's chain can check the one against the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub position: Position,
    /// The cause's chain hash, lower-case hex.
    pub hash: String,
    pub event_type: String,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Who asked for a command and through which request: copied into the
/// metadata of every event the command appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    pub actor: Actor,
    pub request_id: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Option<String>,
    pub request: Option<RequestRecord>,
    /// The earlier events this command's events rest on (causation), oldest
    /// first; empty for a command an actor asked for directly.
    pub caused_by: Vec<Cause>,
}

impl CommandContext {
    pub fn new(actor: Actor) -> CommandContext {
        CommandContext {
            actor,
            request_id: None,
            user_agent: None,
            correlation_id: None,
            request: None,
            caused_by: Vec::new(),
        }
    }
}

/// The metadata stored with each event, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// A ULID unique to this event.
    pub event_id: String,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRecord>,
    /// Absent from every event but those that rest on earlier ones, so the
    /// metadata of everything else is byte for byte what it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caused_by: Vec<Cause>,
}

impl Metadata {
    /// Metadata for one new event of a command: a fresh event id, the rest
    /// from the command's context.
    ///
    /// The request's body goes only where `with_body` says: a request that
    /// appends several events records its body once, on the first, and the
    /// others name the request (method, target, request id) without it.
    pub fn for_new_event(context: &CommandContext, with_body: bool) -> Metadata {
        Metadata {
            event_id: ulid::Ulid::generate().to_string(),
            actor: context.actor.clone(),
            request_id: context.request_id.clone(),
            user_agent: context.user_agent.clone(),
            correlation_id: context.correlation_id.clone(),
            request: context.request.as_ref().map(|request| RequestRecord {
                method: request.method.clone(),
                target: request.target.clone(),
                body: if with_body { request.body.clone() } else { None },
            }),
            caused_by: context.caused_by.clone(),
        }
    }
}

/// An event as handed to the log: its type, schema version and payload
/// bytes. Usually made by [`crate::Event::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    /// The payload as JSON text; stored byte for byte.
    pub payload: String,
}

/// An event as the log holds it, envelope and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: Position,
    pub tenant: String,
    pub stream: String,
    /// The event's version within its stream, from 1.
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: String,
    pub metadata: String,
    /// UTC, RFC 3339, milliseconds.
    pub recorded_at: String,
    pub prev_hash: crate::ChainHash,
    pub hash: crate::ChainHash,
}

impl RecordedEvent {
    /// The borrowed view of this event.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            position: self.position,
            tenant: &self.tenant,
            stream: &self.stream,
            version: self.version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &self.payload,
            metadata: &self.metadata,
            recorded_at: &self.recorded_at,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }

    /// Decodes the typed payload, upcasting an older schema version and
    /// opening sealed personal values with `keys`.
    pub fn decode(&self, keys: &dyn Keyring) -> Result<crate::Event, crate::DecodeError> {
        self.as_ref().decode(keys)
    }

    /// Whether the stored hash matches the stored bytes and `prev_hash`.
    pub fn hash_is_consistent(&self) -> bool {
        self.as_ref().hash_is_consistent()
    }

    /// The metadata, its request body opened with `keys` where sealed.
    pub fn metadata_opened(&self, keys: &dyn Keyring) -> Result<Metadata, crate::DecodeError> {
        self.as_ref().metadata_opened(keys)
    }

    /// The payload as JSON, its sealed values opened with `keys`.
    pub fn payload_opened(
        &self,
        keys: &dyn Keyring,
    ) -> Result<serde_json::Value, crate::DecodeError> {
        self.as_ref().payload_opened(keys)
    }

    /// Parses the metadata JSON (a sealed request body stays sealed).
    pub fn metadata(&self) -> Result<Metadata, crate::DecodeError> {
        serde_json::from_str(&self.metadata).map_err(|source| crate::DecodeError::Metadata {
            position: self.position,
            message: source.to_string(),
        })
    }
}

/// One stored event, borrowed: what a visitor over the log (such as
/// `SqliteLog::visit_forward`) gets without an allocation per event, and
/// the view every check of an event's bytes works on.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'row> {
    pub position: Position,
    pub tenant: &'row str,
    pub stream: &'row str,
    pub version: u64,
    pub event_type: &'row str,
    pub schema_version: u32,
    pub payload: &'row str,
    pub metadata: &'row str,
    pub recorded_at: &'row str,
    pub prev_hash: &'row crate::ChainHash,
    pub hash: &'row crate::ChainHash,
}

impl EventRef<'_> {
    pub fn canonical(&self) -> crate::hash::CanonicalEvent<'_> {
        crate::hash::CanonicalEvent {
            position: self.position,
            tenant: self.tenant,
            stream: self.stream,
            version: self.version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
        }
    }

    pub fn hash_is_consistent(&self) -> bool {
        self.canonical().chain_hash(self.prev_hash) == *self.hash
    }

    /// Decodes the typed payload, upcasting an older schema version and
    /// opening sealed personal values with `keys`.
    pub fn decode(&self, keys: &dyn Keyring) -> Result<crate::Event, crate::DecodeError> {
        let opener = crate::event::Opener {
            keys,
            tenant: self.tenant,
            stream: self.stream,
            version: self.version,
        };
        crate::Event::decode_opened(
            self.event_type,
            self.schema_version,
            self.payload,
            self.recorded_at,
            Some(opener),
        )
    }

    /// The payload as JSON, its sealed values opened with `keys`.
    pub fn payload_opened(
        &self,
        keys: &dyn Keyring,
    ) -> Result<serde_json::Value, crate::DecodeError> {
        let opener = crate::event::Opener {
            keys,
            tenant: self.tenant,
            stream: self.stream,
            version: self.version,
        };
        crate::Event::open_payload(self.event_type, self.schema_version, self.payload, opener)
    }

    /// The metadata, its request body opened with `keys` where it is
    /// sealed (an erased one reads as [`crate::event::ERASED`]).
    pub fn metadata_opened(&self, keys: &dyn Keyring) -> Result<Metadata, crate::DecodeError> {
        let mut metadata: Metadata = serde_json::from_str(self.metadata).map_err(|source| {
            crate::DecodeError::Metadata { position: self.position, message: source.to_string() }
        })?;
        let Some(body) = metadata.request.as_mut().and_then(|request| request.body.as_mut()) else {
            return Ok(metadata);
        };
        if seal::sealed_key(body).is_none() {
            return Ok(metadata);
        }
        let binding = Binding {
            tenant: self.tenant,
            stream: self.stream,
            version: self.version,
            field: REQUEST_BODY,
        };
        *body = match seal::open(keys, binding, body) {
            Ok(Opened::Value(value)) => value,
            Ok(Opened::Erased) => serde_json::Value::String(crate::event::ERASED.to_owned()),
            Err(error) => {
                return Err(crate::DecodeError::Metadata {
                    position: self.position,
                    message: error.to_string(),
                });
            }
        };
        Ok(metadata)
    }
}

/// The field a recorded request body is bound to when sealed.
const REQUEST_BODY: &str = "metadata.request.body";

impl CommandContext {
    /// This context with its request body (if any) sealed under `key` for
    /// the event at `version` of `stream`: the first event of the command,
    /// the only one whose metadata records the body.
    pub fn with_sealed_body(
        &self,
        key: &SubjectKey,
        tenant: &str,
        stream: &str,
        version: u64,
    ) -> Result<CommandContext, SealError> {
        // Everything but the body is copied; the body is read, not copied.
        let request = match &self.request {
            Some(RequestRecord { method, target, body: Some(body) }) => {
                let binding = Binding { tenant, stream, version, field: REQUEST_BODY };
                Some(RequestRecord {
                    method: method.clone(),
                    target: target.clone(),
                    body: Some(seal::seal(key, binding, &body.to_string())?),
                })
            }
            other => other.clone(),
        };
        Ok(CommandContext {
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            user_agent: self.user_agent.clone(),
            correlation_id: self.correlation_id.clone(),
            request,
            caused_by: self.caused_by.clone(),
        })
    }
}
