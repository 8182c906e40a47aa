//! Joiners and leavers: who joined, was disabled, enabled, left, came back
//! or was purged in a window of time, read from the log alone.
//!
//! Each movement is a member event (the Synchronize that applied it: when
//! it took effect, and on whose word it ran) paired with the SCIM event
//! that asked for it (when the identity provider said it, with which token,
//! request and User-Agent). The window selects by the time it took effect:
//! a user pushed on 30 June and synchronized on 1 July joined on 1 July.
//! Nothing here reads a projection table, so every replay of the same log
//! gives the same report.

use std::collections::HashMap;

use events::event::Event;
use events::sqlite::VisitError;
use events::{Actor, EventLog, Metadata, Position, RecordedEvent};
use jiff::Timestamp;
use serde::Serialize;

use crate::error::Error;
use crate::store::Store;

/// A window of time, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Window {
    /// Reads `from` and `to`, each a date (`2026-07-01`, whole days in UTC:
    /// `to` includes its day) or an RFC 3339 instant (`to` excluded).
    pub fn parse(from: &str, to: &str) -> Result<Window, Error> {
        let from_instant = instant(from, "from", false)?;
        let to_instant = instant(to, "to", true)?;
        if to_instant <= from_instant {
            return Err(Error::invalid(format!(
                "the window is empty: to ({to}) is not after from ({from})"
            )));
        }
        Ok(Window { from: from_instant, to: to_instant })
    }
}

/// Reads a date or an instant; a date `to` means the end of that day.
pub fn instant(text: &str, name: &str, end_of_day: bool) -> Result<Timestamp, Error> {
    let text = text.trim();
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(instant);
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| {
        Error::invalid(format!(
            "{name} must be a date like 2026-07-01 or an instant like 2026-07-01T09:30:00Z, not {text:?}"
        ))
    })?;
    let day = if end_of_day { date.tomorrow() } else { Ok(date) };
    day.and_then(|day| day.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|zoned| zoned.timestamp())
        .map_err(|_| Error::invalid(format!("{name} {text:?} is out of range")))
}

/// On whose word something was recorded, as the event's metadata says.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Word {
    pub actor: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The Synchronize run that applied a member event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Word {
    fn of(metadata: Metadata, with_run: bool) -> Word {
        Word {
            actor: metadata.actor,
            request_id: metadata.request_id,
            user_agent: metadata.user_agent,
            run_id: if with_run { metadata.correlation_id } else { None },
        }
    }

    /// One line for tables and CSV: `token 01J…`, `cli alice`, `scheduler`.
    pub fn actor_text(&self) -> String {
        match &self.actor {
            Actor::Token { token_id } => format!("token {token_id}"),
            Actor::Cli { user: Some(user) } => format!("cli {user}"),
            Actor::Cli { user: None } => "cli".to_owned(),
            Actor::Scheduler => "scheduler".to_owned(),
            Actor::System => "system".to_owned(),
        }
    }
}

/// One joiner, leaver or change of status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Movement {
    /// `joined`, `rejoined` (restored within the grace), `disabled`,
    /// `enabled`, `left` or `purged`.
    pub kind: &'static str,
    pub member_id: String,
    /// The SCIM user behind the member at the time.
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    /// When it took effect: the member event, appended by a Synchronize.
    pub effective_at: String,
    pub effective_position: Position,
    pub applied_by: Word,
    /// When the identity provider said it: the SCIM event that asked for
    /// it (none for a purge, which the grace period decides).
    pub said_at: Option<String>,
    pub said_position: Option<Position>,
    pub said_by: Option<Word>,
}

/// The movement kind of a member event type, if it is one.
fn movement_kind(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "MemberJoined" => "joined",
        "MemberRestored" => "rejoined",
        "MemberDisabled" => "disabled",
        "MemberEnabled" => "enabled",
        "MemberLeft" => "left",
        "MemberPurged" => "purged",
        _ => return None,
    })
}

/// The SCIM event types that ask for a movement, newest first wins.
fn causes(kind: &str) -> &'static [&'static str] {
    match kind {
        "joined" | "rejoined" => &["UserCreated"],
        "disabled" => &["UserDeactivated", "UserCreated"],
        "enabled" => &["UserReactivated"],
        "left" => &["UserDeleted"],
        _ => &[],
    }
}

struct Candidate {
    kind: &'static str,
    member_id: String,
    position: Position,
    recorded_at: String,
    metadata: String,
}

/// Who was the member at `position`: user id, userName and externalId as
/// its own events up to there say.
#[derive(Default)]
struct Identity {
    user_id: Option<String>,
    user_name: Option<String>,
    external_id: Option<String>,
}

fn identity_at(stream: &[RecordedEvent], position: Position) -> Result<Identity, Error> {
    let mut identity = Identity::default();
    for recorded in stream.iter().take_while(|recorded| recorded.position <= position) {
        match recorded.decode()? {
            Event::MemberJoined(joined) => {
                identity.user_id = Some(joined.user_id);
                identity.user_name = Some(joined.user_name);
                identity.external_id = joined.external_id;
            }
            Event::MemberRestored(restored) => {
                identity.user_id = Some(restored.user_id);
                identity.user_name = Some(restored.user_name);
            }
            Event::MemberUpdated(updated) => {
                if let Some(user_name) = updated.user_name {
                    identity.user_name = Some(user_name);
                }
                if let Some(external_id) = updated.external_id {
                    identity.external_id = Some(external_id);
                }
                if updated.external_id_cleared {
                    identity.external_id = None;
                }
            }
            _ => {}
        }
    }
    Ok(identity)
}

fn metadata_of(text: &str) -> Result<Metadata, Error> {
    serde_json::from_str(text)
        .map_err(|error| Error::Internal(format!("an event's metadata does not decode: {error}")))
}

/// The joiners and leavers of one tenant in `window`, in the order they
/// took effect.
pub fn joiners_leavers(
    store: &Store,
    tenant_id: &str,
    window: Window,
) -> Result<Vec<Movement>, Error> {
    let log = store.log();
    let start = log.first_position_at(&events::time::format_millis(window.from))?;
    let end = log.first_position_at(&events::time::format_millis(window.to))?;
    let mut candidates = Vec::new();
    if start < end {
        // Stops at the window's end instead of reading the rest of the log.
        struct End;
        let walked = log.visit_forward(start.saturating_sub(1), Some(tenant_id), |event| {
            if event.position >= end {
                return Err(End);
            }
            if let Some(kind) = movement_kind(event.event_type) {
                // Every member event's payload names its member first.
                let member_id = serde_json::from_str::<MemberIdOnly>(event.payload)
                    .map(|payload| payload.member_id)
                    .unwrap_or_default();
                candidates.push(Candidate {
                    kind,
                    member_id,
                    position: event.position,
                    recorded_at: event.recorded_at.to_owned(),
                    metadata: event.metadata.to_owned(),
                });
            }
            Ok(())
        });
        match walked {
            Ok(_) | Err(VisitError::Visitor(End)) => {}
            Err(VisitError::Log(error)) => return Err(error.into()),
        }
    }

    let mut member_streams: HashMap<String, Vec<RecordedEvent>> = HashMap::new();
    let mut movements = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if !member_streams.contains_key(&candidate.member_id) {
            let stream = log.read_stream(tenant_id, &format!("member:{}", candidate.member_id))?;
            member_streams.insert(candidate.member_id.clone(), stream);
        }
        let identity = match member_streams.get(&candidate.member_id) {
            Some(stream) => identity_at(stream, candidate.position)?,
            None => Identity::default(),
        };
        let said = match &identity.user_id {
            Some(user_id) if !causes(candidate.kind).is_empty() => log.last_of_types(
                tenant_id,
                &format!("user:{user_id}"),
                causes(candidate.kind),
                candidate.position,
            )?,
            _ => None,
        };
        let said = said.as_ref();
        let said_by = said.map(|recorded| metadata_of(&recorded.metadata)).transpose()?;
        movements.push(Movement {
            kind: candidate.kind,
            member_id: candidate.member_id,
            user_id: identity.user_id,
            user_name: identity.user_name,
            external_id: identity.external_id,
            effective_at: candidate.recorded_at,
            effective_position: candidate.position,
            applied_by: Word::of(metadata_of(&candidate.metadata)?, true),
            said_at: said.map(|recorded| recorded.recorded_at.clone()),
            said_position: said.map(|recorded| recorded.position),
            said_by: said_by.map(|metadata| Word::of(metadata, false)),
        });
    }
    Ok(movements)
}

#[derive(serde::Deserialize)]
struct MemberIdOnly {
    member_id: String,
}

/// Counts per kind, for a report's summary line.
pub fn counts(movements: &[Movement]) -> serde_json::Map<String, serde_json::Value> {
    let mut counts = serde_json::Map::new();
    for kind in ["joined", "rejoined", "disabled", "enabled", "left", "purged"] {
        let count = movements.iter().filter(|movement| movement.kind == kind).count();
        counts.insert(kind.to_owned(), count.into());
    }
    counts
}

/// The report's columns for tables and CSV.
pub const COLUMNS: [&str; 10] = [
    "effective_at",
    "kind",
    "member_id",
    "user_name",
    "external_id",
    "user_id",
    "said_at",
    "said_by",
    "request_id",
    "applied_by",
];

/// One movement as the cells of [`COLUMNS`].
pub fn row(movement: &Movement) -> Vec<String> {
    let said_by = movement.said_by.as_ref();
    let applied = match &movement.applied_by.run_id {
        Some(run_id) => format!("{} (run {run_id})", movement.applied_by.actor_text()),
        None => movement.applied_by.actor_text(),
    };
    vec![
        movement.effective_at.clone(),
        movement.kind.to_owned(),
        movement.member_id.clone(),
        movement.user_name.clone().unwrap_or_default(),
        movement.external_id.clone().unwrap_or_default(),
        movement.user_id.clone().unwrap_or_default(),
        movement.said_at.clone().unwrap_or_default(),
        said_by.map(Word::actor_text).unwrap_or_default(),
        said_by.and_then(|word| word.request_id.clone()).unwrap_or_default(),
        applied,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_whole_days_and_instants_are_exact() {
        let window = Window::parse("2026-07-01", "2026-09-30").unwrap();
        assert_eq!(window.from.to_string(), "2026-07-01T00:00:00Z");
        assert_eq!(window.to.to_string(), "2026-10-01T00:00:00Z");
        let window = Window::parse("2026-07-01T10:00:00Z", "2026-07-01T10:00:00.001Z").unwrap();
        assert_eq!(window.to.as_millisecond() - window.from.as_millisecond(), 1);
        assert!(Window::parse("2026-07-02", "2026-07-01").is_err());
        assert!(Window::parse("2026-07-01T10:00:00Z", "2026-07-01T10:00:00Z").is_err());
        assert!(Window::parse("July", "2026-07-01").is_err());
        assert!(Window::parse("2026-07-01", "2999-12-31").is_ok());
        assert!(Window::parse("2026-07-01", "9999-12-31").is_err());
    }
}
