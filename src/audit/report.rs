//! Joiners and leavers: who joined, was disabled, enabled, left, came back
//! or was purged in a window of time, read from the `audit` projection,
//! which is folded from the log and checked against it.
//!
//! Each movement is a member event (the Synchronize that applied it: when
//! it took effect, and on whose word it ran) paired with the SCIM event
//! that asked for it (when the identity provider said it, with which token,
//! request and User-Agent). The window selects by the time it took effect:
//! a user pushed on 30 June and synchronized on 1 July joined on 1 July.
//! The pairs are folded as the events are appended, into the `audit`
//! projection (`projections::audit`); a report is one range read of it,
//! and `rollcall verify --projections` proves it is what the log folds to.

use jiff::Timestamp;

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

pub use projections::audit::{Movement, Word};

/// The joiners and leavers of one tenant in `window`, in the order they
/// took effect.
pub fn joiners_leavers(
    store: &Store,
    tenant_id: &str,
    window: Window,
) -> Result<Vec<Movement>, Error> {
    let log = store.log();
    let start = log.first_position_at(tenant_id, &events::time::format_millis(window.from))?;
    let end = log.first_position_at(tenant_id, &events::time::format_millis(window.to))?;
    if start >= end {
        return Ok(Vec::new());
    }
    store.read(|connection| {
        if !projections::audit::ready(connection)? {
            return Err(Error::conflict(
                "this database predates the audit tables: open it for writing once (rollcall \
                 serve) or run `rollcall rebuild --projection audit`",
            ));
        }
        Ok(projections::audit::movements(connection, tenant_id, start, end)?)
    })
}

/// Counts per kind, for a report's summary line.
pub fn counts(movements: &[Movement]) -> serde_json::Map<String, serde_json::Value> {
    let mut counts = serde_json::Map::new();
    for kind in projections::audit::MovementKind::ALL {
        let count = movements.iter().filter(|movement| movement.kind == *kind).count();
        counts.insert(kind.as_str().to_owned(), count.into());
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

/// One movement as a report shows it: the text of each of [`COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub effective_at: String,
    pub kind: &'static str,
    pub member_id: String,
    pub user_name: String,
    pub external_id: String,
    pub user_id: String,
    pub said_at: String,
    pub said_by: String,
    pub request_id: String,
    pub applied_by: String,
}

impl Row {
    pub fn of(movement: &Movement) -> Row {
        let said_by = movement.said_by.as_ref();
        let applied_by = match &movement.applied_by.run_id {
            Some(run_id) => format!("{} (run {run_id})", movement.applied_by.actor_text()),
            None => movement.applied_by.actor_text(),
        };
        Row {
            effective_at: movement.effective_at.clone(),
            kind: movement.kind.as_str(),
            member_id: movement.member_id.clone(),
            user_name: movement.user_name.clone().unwrap_or_default(),
            external_id: movement.external_id.clone().unwrap_or_default(),
            user_id: movement.user_id.clone().unwrap_or_default(),
            said_at: movement.said_at.clone().unwrap_or_default(),
            said_by: said_by.map(Word::actor_text).unwrap_or_default(),
            request_id: said_by.and_then(|word| word.request_id.clone()).unwrap_or_default(),
            applied_by,
        }
    }

    /// The cells, in the order of [`COLUMNS`].
    pub fn cells(self) -> Vec<String> {
        vec![
            self.effective_at,
            self.kind.to_owned(),
            self.member_id,
            self.user_name,
            self.external_id,
            self.user_id,
            self.said_at,
            self.said_by,
            self.request_id,
            self.applied_by,
        ]
    }
}

/// One movement as the cells of [`COLUMNS`].
pub fn row(movement: &Movement) -> Vec<String> {
    Row::of(movement).cells()
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
