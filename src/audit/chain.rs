//! What an auditor proves with the hash chain beyond `verify`: checkpoints
//! (a tenant's head, written down to compare later: the log since then only
//! grew) and exports (a tenant's events as NDJSON, one event per line with
//! its hash, checkable offline by `rollcall verify --file`).
//!
//! An export carries each payload and metadata as the exact stored text, a
//! JSON string, because the chain hashes those bytes; re-serialising them
//! would break it.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use events::hash::{CanonicalEvent, from_hex, to_hex};
use events::sqlite::VisitError;
use events::{ChainHash, Position, VerifyScope};
use serde::{Deserialize, Serialize};

use super::report::Window;
use crate::error::Error;
use crate::store::Store;

/// A chain head an auditor wrote down: position and hash of a tenant's
/// event. Written as `POSITION:HASH` (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: Position,
    pub hash: ChainHash,
}

impl Checkpoint {
    pub fn parse(text: &str) -> Result<Checkpoint, Error> {
        let refuse = || {
            Error::invalid(format!(
                "a checkpoint is POSITION:HASH as `rollcall audit checkpoint` prints it, not {text:?}"
            ))
        };
        let (position, hash) = text.trim().split_once(':').ok_or_else(refuse)?;
        Ok(Checkpoint {
            position: position.parse().map_err(|_| refuse())?,
            hash: from_hex(hash).ok_or_else(refuse)?,
        })
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}", self.position, to_hex(&self.hash))
    }
}

/// The tenant's head now, to write down.
pub fn checkpoint(store: &Store, tenant_id: &str) -> Result<Option<(Checkpoint, String)>, Error> {
    let report = store.log().verify(VerifyScope::Tenant(tenant_id.to_owned()))?;
    if let Some(failure) = report.failure {
        return Err(Error::Conflict {
            message: format!(
                "the chain is broken at position {} ({}): no checkpoint of a broken chain",
                failure.position,
                failure.problem.describe()
            ),
        });
    }
    let Some(head) = report.heads.into_iter().find(|head| head.tenant == tenant_id) else {
        return Ok(None);
    };
    let recorded_at = store
        .log()
        .read_at(tenant_id, head.position)?
        .map(|event| event.recorded_at)
        .unwrap_or_default();
    Ok(Some((Checkpoint { position: head.position, hash: head.hash }, recorded_at)))
}

/// Whether the log still holds `checkpoint` in the tenant's chain: with a
/// chain that verifies, the event there having the same hash proves every
/// event up to it is unchanged, so the log since only grew.
pub fn check(
    store: &Store,
    tenant_id: &str,
    checkpoint: &Checkpoint,
) -> Result<Option<String>, Error> {
    match store.log().read_at(tenant_id, checkpoint.position)? {
        None => Ok(Some(format!(
            "the log no longer reaches position {}: events were removed",
            checkpoint.position
        ))),
        Some(event) if event.tenant != tenant_id => {
            Ok(Some(format!("position {} is not an event of this tenant", checkpoint.position)))
        }
        Some(event) if event.hash != checkpoint.hash => Ok(Some(format!(
            "the event at position {} now has hash {}, not the checkpoint's: the history before it was rewritten",
            checkpoint.position,
            to_hex(&event.hash)
        ))),
        Some(_) => Ok(None),
    }
}

/// One exported event: the stored row, hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    pub position: Position,
    pub tenant: String,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at: String,
    /// The stored metadata text, exactly.
    pub metadata: String,
    /// The stored payload text, exactly.
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Writes the tenant's events (in `window`, or all) as NDJSON, page by
/// page: memory stays bounded however long the log. Returns how many.
pub fn export(
    store: &Store,
    tenant_id: &str,
    window: Option<Window>,
    out: &mut dyn Write,
) -> Result<u64, Error> {
    let log = store.log();
    let (start, end) = match window {
        Some(window) => (
            log.first_position_at(tenant_id, &events::time::format_millis(window.from))?,
            log.first_position_at(tenant_id, &events::time::format_millis(window.to))?,
        ),
        None => (1, Position::MAX),
    };
    let mut written = 0u64;
    enum Stop {
        End,
        Write(std::io::Error),
    }
    let walked = log.visit_forward(start.saturating_sub(1), Some(tenant_id), |event| {
        if event.position >= end {
            return Err(Stop::End);
        }
        let line = ExportedEvent {
            position: event.position,
            tenant: event.tenant.to_owned(),
            stream: event.stream.to_owned(),
            version: event.version,
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at.to_owned(),
            metadata: event.metadata.to_owned(),
            payload: event.payload.to_owned(),
            prev_hash: to_hex(event.prev_hash),
            hash: to_hex(event.hash),
        };
        serde_json::to_writer(&mut *out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(Stop::Write)?;
        written += 1;
        Ok(())
    });
    match walked {
        Ok(_) | Err(VisitError::Visitor(Stop::End)) => {}
        Err(VisitError::Visitor(Stop::Write(error))) => {
            return Err(Error::Internal(format!("writing the export: {error}")));
        }
        Err(VisitError::Log(error)) => return Err(error.into()),
    }
    out.flush().map_err(|error| Error::Internal(format!("writing the export: {error}")))?;
    Ok(written)
}

/// What checking an exported file found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub events_checked: u64,
    /// Each chain's last event in the file: tenant id -> checkpoint text.
    pub heads: BTreeMap<String, String>,
    /// The first problem: its line (from 1) and what is wrong.
    pub failure: Option<FileFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileFailure {
    pub line: u64,
    pub position: Option<Position>,
    pub problem: String,
}

/// Checks an export offline: every line's hash against its bytes, every
/// link to the line before it in the same chain, and positions rising. A
/// chain's first line in the file is taken as its start (an export of a
/// window begins mid-chain); a checkpoint proves where it must join.
pub fn verify_file(
    input: &mut dyn BufRead,
    checkpoint: Option<&Checkpoint>,
) -> Result<FileReport, Error> {
    let mut report = FileReport::default();
    let mut last: BTreeMap<String, ChainHash> = BTreeMap::new();
    let mut last_position: Option<Position> = None;
    let mut checkpoint_seen = false;
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = input
            .read_line(&mut line)
            .map_err(|error| Error::invalid(format!("reading the file: {error}")))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let fail = |position: Option<Position>, problem: String| FileFailure {
            line: number,
            position,
            problem,
        };
        let event: ExportedEvent = match serde_json::from_str(&line) {
            Ok(event) => event,
            Err(error) => {
                report.failure = Some(fail(None, format!("not an exported event: {error}")));
                break;
            }
        };
        let (Some(prev_hash), Some(hash)) = (from_hex(&event.prev_hash), from_hex(&event.hash))
        else {
            report.failure =
                Some(fail(Some(event.position), "a hash is not 64 hex digits".to_owned()));
            break;
        };
        if last_position.is_some_and(|previous| event.position <= previous) {
            report.failure = Some(fail(Some(event.position), "positions do not rise".to_owned()));
            break;
        }
        let canonical = CanonicalEvent {
            position: event.position,
            tenant: &event.tenant,
            stream: &event.stream,
            version: event.version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &event.payload,
            metadata: &event.metadata,
            recorded_at: &event.recorded_at,
        };
        if canonical.chain_hash(&prev_hash) != hash {
            report.failure = Some(fail(
                Some(event.position),
                "the hash does not match the event's bytes".to_owned(),
            ));
            break;
        }
        if let Some(previous) = last.get(&event.tenant)
            && *previous != prev_hash
        {
            report.failure = Some(fail(
                Some(event.position),
                "prev_hash is not the hash of the chain's event before it: an event is missing or was changed"
                    .to_owned(),
            ));
            break;
        }
        if let Some(checkpoint) = checkpoint
            && checkpoint.position == event.position
        {
            if checkpoint.hash != hash {
                report.failure = Some(fail(
                    Some(event.position),
                    "the event at the checkpoint's position has another hash".to_owned(),
                ));
                break;
            }
            checkpoint_seen = true;
        }
        last.insert(event.tenant.clone(), hash);
        last_position = Some(event.position);
        report.events_checked += 1;
        report.heads.insert(
            event.tenant.clone(),
            Checkpoint { position: event.position, hash }.to_string(),
        );
    }
    if report.failure.is_none()
        && let Some(checkpoint) = checkpoint
        && !checkpoint_seen
    {
        report.failure = Some(FileFailure {
            line: number,
            position: Some(checkpoint.position),
            problem: "the file does not hold the checkpoint's event".to_owned(),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_read_back_what_they_print() {
        let checkpoint = Checkpoint { position: 42, hash: [7; 32] };
        assert_eq!(Checkpoint::parse(&checkpoint.to_string()).unwrap(), checkpoint);
        assert!(Checkpoint::parse("42").is_err());
        assert!(Checkpoint::parse("x:00").is_err());
        assert!(Checkpoint::parse("42:abcd").is_err());
    }
}
