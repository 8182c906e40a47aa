//! Reads: one stream, forward from a position page by page, the head, and
//! the verify walk over the hash chain.

use std::collections::{HashMap, VecDeque};

use rusqlite::{OptionalExtension, Row, params};

use super::SqliteLog;
use crate::log::VisitError;
use crate::log::{ChainHead, VerifyFailure, VerifyProblem, VerifyReport, VerifyScope};
use crate::{ChainHash, EventRef, LogError, Position, RecordedEvent, ZERO_HASH};

pub(super) const COLUMNS: &str = "position, tenant, stream, version, event_type, schema_version, payload, \
                       metadata, recorded_at, prev_hash, hash";

pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<RecordedEvent> {
    Ok(RecordedEvent {
        position: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
        tenant: row.get(1)?,
        stream: row.get(2)?,
        version: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
        event_type: row.get(4)?,
        schema_version: row.get(5)?,
        payload: row.get(6)?,
        metadata: row.get(7)?,
        recorded_at: row.get(8)?,
        prev_hash: row.get(9)?,
        hash: row.get(10)?,
    })
}

pub(super) fn check(event: RecordedEvent, verify_hashes: bool) -> Result<RecordedEvent, LogError> {
    if verify_hashes && !event.hash_is_consistent() {
        return Err(LogError::HashMismatch {
            position: event.position,
            what: "stored hash does not match the event",
        });
    }
    Ok(event)
}

fn to_sql_position(position: Position) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

pub(super) fn read_stream(
    log: &SqliteLog,
    tenant: &str,
    stream: &str,
) -> Result<Vec<RecordedEvent>, LogError> {
    let connection = log.reader()?;
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE tenant = ?1 AND stream = ?2 ORDER BY version"
        ))
        .map_err(|error| LogError::storage("reading a stream", error))?;
    let rows = statement
        .query_map([tenant, stream], from_row)
        .map_err(|error| LogError::storage("reading a stream", error))?;
    rows.map(|row| {
        let event = row.map_err(|error| LogError::storage("reading a stream", error))?;
        check(event, log.options.verify_hashes_on_read)
    })
    .collect()
}

/// The event at `position`, if the log has one.
pub(super) fn read_at(
    log: &SqliteLog,
    position: Position,
) -> Result<Option<RecordedEvent>, LogError> {
    let connection = log.reader()?;
    let context = "reading an event";
    let event = connection
        .prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE position = ?1"))
        .and_then(|mut statement| {
            statement.query_row([to_sql_position(position)], from_row).optional()
        })
        .map_err(|error| LogError::storage(context, error))?;
    event.map(|event| check(event, log.options.verify_hashes_on_read)).transpose()
}

pub(super) fn head(log: &SqliteLog) -> Result<Position, LogError> {
    let connection = log.reader()?;
    let head: i64 = connection
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| row.get(0))
        .map_err(|error| LogError::storage("reading the head position", error))?;
    Ok(Position::try_from(head).unwrap_or(0))
}

/// The position of the tenant's last event: the end of its
/// `events_by_tenant` range, one index probe.
pub(super) fn tenant_head(log: &SqliteLog, tenant: &str) -> Result<Position, LogError> {
    let connection = log.reader()?;
    let head: i64 = connection
        .prepare_cached("SELECT COALESCE(MAX(position), 0) FROM events WHERE tenant = ?1")
        .and_then(|mut statement| statement.query_row([tenant], |row| row.get(0)))
        .map_err(|error| LogError::storage("reading a tenant's head position", error))?;
    Ok(Position::try_from(head).unwrap_or(0))
}

/// The first position recorded at or after `instant` (stored format,
/// `time::format_millis`), or head + 1 when none is. The writer never
/// records an event earlier than the one before it, so `recorded_at` rises
/// with the position and a binary search over positions finds it: about 20
/// primary-key lookups for a million events, instead of an index on time
/// that every append would pay for.
pub(super) fn first_position_at(log: &SqliteLog, instant: &str) -> Result<Position, LogError> {
    let connection = log.reader()?;
    let context = "finding a position by time";
    // One read transaction, so the head and the probes see the same log.
    connection.execute_batch("BEGIN").map_err(|error| LogError::storage(context, error))?;
    let found = (|| {
        let head: i64 = connection
            .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| row.get(0))
            .map_err(|error| LogError::storage(context, error))?;
        let mut statement = connection
            .prepare_cached("SELECT recorded_at FROM events WHERE position = ?1")
            .map_err(|error| LogError::storage(context, error))?;
        // Invariant: every position below `low` is earlier than `instant`,
        // every position from `high` on is not.
        let (mut low, mut high) = (1i64, head + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let recorded_at: Option<String> = statement
                .query_row([middle], |row| row.get(0))
                .optional()
                .map_err(|error| LogError::storage(context, error))?;
            match recorded_at {
                Some(recorded_at) if recorded_at.as_str() < instant => low = middle + 1,
                _ => high = middle,
            }
        }
        Ok(Position::try_from(low).unwrap_or(0))
    })();
    let _ = connection.execute_batch("COMMIT");
    found
}

/// A forward read, one page of `read_page_events` in memory at a time. Each
/// page is its own short read transaction, so a long replay never pins a
/// WAL snapshot (which would stop checkpoints and grow the WAL file).
pub(super) struct Forward<'a> {
    log: &'a SqliteLog,
    after: Position,
    tenant: Option<String>,
    page: VecDeque<RecordedEvent>,
    exhausted: bool,
    verify_hashes: bool,
}

impl<'a> Forward<'a> {
    pub(super) fn new(
        log: &'a SqliteLog,
        after: Position,
        tenant: Option<String>,
        verify_hashes: bool,
    ) -> Forward<'a> {
        Forward { log, after, tenant, page: VecDeque::new(), exhausted: false, verify_hashes }
    }

    fn fill(&mut self) -> Result<(), LogError> {
        let page_events = self.log.options.read_page_events.max(1);
        let connection = self.log.reader()?;
        let after = to_sql_position(self.after);
        let limit = i64::try_from(page_events).unwrap_or(i64::MAX);
        let context = "reading events forward";
        let mut statement = match &self.tenant {
            None => connection
                .prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2")),
            Some(_) => connection.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE tenant = ?3 AND position > ?1 ORDER BY position LIMIT ?2"
            )),
        }
        .map_err(|error| LogError::storage(context, error))?;
        let mut rows = match &self.tenant {
            None => statement.query(params![after, limit]),
            Some(tenant) => statement.query(params![after, limit, tenant]),
        }
        .map_err(|error| LogError::storage(context, error))?;
        while let Some(row) = rows.next().map_err(|error| LogError::storage(context, error))? {
            let event = from_row(row).map_err(|error| LogError::storage(context, error))?;
            self.page.push_back(event);
        }
        if self.page.len() < page_events {
            self.exhausted = true;
        }
        if let Some(last) = self.page.back() {
            self.after = last.position;
        }
        Ok(())
    }
}

impl Iterator for Forward<'_> {
    type Item = Result<RecordedEvent, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty()
            && !self.exhausted
            && let Err(error) = self.fill()
        {
            self.exhausted = true;
            return Some(Err(error));
        }
        let event = self.page.pop_front()?;
        Some(check(event, self.verify_hashes))
    }
}

fn text<'row>(row: &'row Row<'_>, index: usize) -> rusqlite::Result<&'row str> {
    row.get_ref(index)?.as_str().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            Box::new(error),
        )
    })
}

fn hash_ref<'row>(row: &'row Row<'_>, index: usize) -> rusqlite::Result<&'row ChainHash> {
    let bytes = row.get_ref(index)?.as_blob().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Blob,
            Box::new(error),
        )
    })?;
    <&ChainHash>::try_from(bytes).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Blob,
            Box::new(error),
        )
    })
}

fn ref_from_row<'row>(row: &'row Row<'_>) -> rusqlite::Result<EventRef<'row>> {
    Ok(EventRef {
        position: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
        tenant: text(row, 1)?,
        stream: text(row, 2)?,
        version: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
        event_type: text(row, 4)?,
        schema_version: row.get(5)?,
        payload: text(row, 6)?,
        metadata: text(row, 7)?,
        recorded_at: text(row, 8)?,
        prev_hash: hash_ref(row, 9)?,
        hash: hash_ref(row, 10)?,
    })
}

/// Calls `visit` for every event after `after` (of one tenant, or all), in
/// position order, page by page, without allocating per event.
pub(super) fn visit_forward<E>(
    log: &SqliteLog,
    after: Position,
    tenant: Option<&str>,
    mut visit: impl FnMut(EventRef<'_>) -> Result<(), E>,
) -> Result<Position, VisitError<E>> {
    let page_events = log.options.read_page_events.max(1);
    let limit = i64::try_from(page_events).unwrap_or(i64::MAX);
    let context = "reading events forward";
    let storage = |error: rusqlite::Error| VisitError::Log(LogError::storage(context, error));
    let mut last = after;
    loop {
        let connection = log.reader().map_err(VisitError::Log)?;
        let mut statement = match tenant {
            None => connection
                .prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2")),
            Some(_) => connection.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE tenant = ?3 AND position > ?1 ORDER BY position LIMIT ?2"
            )),
        }
        .map_err(storage)?;
        let mut rows = match tenant {
            None => statement.query(params![to_sql_position(last), limit]),
            Some(tenant) => statement.query(params![to_sql_position(last), limit, tenant]),
        }
        .map_err(storage)?;
        let mut seen = 0usize;
        while let Some(row) = rows.next().map_err(storage)? {
            let event = ref_from_row(row).map_err(storage)?;
            last = event.position;
            seen += 1;
            visit(event).map_err(VisitError::Visitor)?;
        }
        if seen < page_events {
            return Ok(last);
        }
    }
}

pub(super) fn verify(log: &SqliteLog, scope: VerifyScope) -> Result<VerifyReport, LogError> {
    let tenant = match &scope {
        VerifyScope::All => None,
        VerifyScope::Tenant(tenant) => Some(tenant.clone()),
    };
    let check_gaps = tenant.is_none();
    let mut heads: HashMap<String, ChainHead> = HashMap::new();
    let mut events_checked = 0u64;
    let mut previous_position: Position = 0;
    let walked = visit_forward(log, 0, tenant.as_deref(), |event| {
        let expected_prev = heads.get(event.tenant).map_or(ZERO_HASH, |head| head.hash);
        let in_order = !check_gaps || event.position == previous_position + 1;
        let problem = VerifyProblem::of(&event, in_order, &expected_prev);
        if let Some(problem) = problem {
            return Err(VerifyFailure {
                position: event.position,
                tenant: event.tenant.to_owned(),
                problem,
            });
        }
        events_checked += 1;
        previous_position = event.position;
        match heads.get_mut(event.tenant) {
            Some(head) => {
                head.position = event.position;
                head.hash = *event.hash;
                head.events += 1;
            }
            None => {
                let head = ChainHead {
                    tenant: event.tenant.to_owned(),
                    position: event.position,
                    hash: *event.hash,
                    events: 1,
                };
                heads.insert(event.tenant.to_owned(), head);
            }
        }
        Ok(())
    });
    let failure = match walked {
        Ok(_) => None,
        Err(VisitError::Visitor(failure)) => Some(failure),
        Err(VisitError::Log(error)) => return Err(error),
    };
    let mut heads: Vec<ChainHead> = heads.into_values().collect();
    heads.sort_by_key(|head| head.position);
    let guards = super::schema::guard_check(&*log.reader()?)?;
    let names = |names: Vec<&str>| names.into_iter().map(str::to_owned).collect();
    Ok(VerifyReport {
        events_checked,
        heads,
        failure,
        missing_guards: names(guards.missing),
        altered_guards: names(guards.altered),
    })
}
