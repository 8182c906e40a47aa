//! Reading the log on PostgreSQL as a whole: walks, verification, and the
//! lookups by position and by time that audits and caches need. Every read
//! here names its tenant where a position is meant, because a position on
//! PostgreSQL is an ordinal of its tenant (`super`); only the walks over
//! every tenant (rebuild, verify all) go tenant by tenant.
//!
//! This module reads `events` and `tenant_heads` and never writes.

use std::collections::BTreeMap;

use super::{PgLog, read_forward, storage, to_hash};
use crate::db::OptionalExtension;
use crate::hash::ZERO_HASH;
use crate::log::VisitError;
use crate::{
    ChainHead, EventRef, LogError, Position, RecordedEvent, VerifyFailure, VerifyProblem,
    VerifyReport, VerifyScope, params,
};

/// Events read per round trip by a walk.
const PAGE_EVENTS: u64 = 1000;

/// The triggers that keep `events` append-only, by name.
pub(super) const GUARDS: [&str; 2] = ["events_no_update_or_delete", "events_no_truncate"];

/// The function the guards call, as rollcall writes it: a guard calling
/// anything else is reported altered.
pub(super) const GUARD_BODY: &str = " BEGIN RAISE EXCEPTION 'the event log is append-only: % \
                                      refused', TG_OP; END ";

impl PgLog {
    /// Every tenant that has a head row, in id order.
    pub fn tenants(&self) -> Result<Vec<String>, LogError> {
        let connection = self.connection("listing the log's tenants")?;
        connection
            .prepare_cached("SELECT tenant FROM tenant_heads ORDER BY tenant")
            .and_then(|mut statement| {
                statement.query_map([], |row| row.get::<_, String>(0))?.collect()
            })
            .map_err(storage("listing the log's tenants"))
    }

    /// The sum of every tenant's last position (0 for an empty log): how
    /// many events the log holds (tenants' positions are gapless), a
    /// figure that moves with every append of any tenant, not an address
    /// of one event.
    pub fn head(&self) -> Result<Position, LogError> {
        let connection = self.connection("reading the log's head")?;
        connection
            .query_row(
                "SELECT CAST(COALESCE(SUM(position), 0) AS BIGINT) FROM tenant_heads",
                [],
                |row| row.get::<_, u64>(0),
            )
            .map_err(storage("reading the log's head"))
    }

    /// The event of `tenant` at `position`, if there is one.
    pub fn read_at(
        &self,
        tenant: &str,
        position: Position,
    ) -> Result<Option<RecordedEvent>, LogError> {
        let connection = self.connection("reading an event")?;
        let mut found = read_forward(&connection, tenant, position.saturating_sub(1), 1)?;
        Ok(found.pop().filter(|event| event.position == position))
    }

    /// The first position of `tenant` recorded at or after `instant` (the
    /// events' time format), or its head + 1: a window of time as a range
    /// of positions. A tenant's `recorded_at` never goes back (`PgTx`).
    pub fn first_position_at(&self, tenant: &str, instant: &str) -> Result<Position, LogError> {
        let connection = self.connection("finding a position by time")?;
        connection
            .query_row(
                "SELECT COALESCE((SELECT MIN(position) FROM events \
                 WHERE tenant = ?1 AND recorded_at >= ?2), \
                 (SELECT MAX(position) FROM tenant_heads WHERE tenant = ?1) + 1, 1)",
                params![tenant, instant],
                |row| row.get::<_, u64>(0),
            )
            .map_err(storage("finding a position by time"))
    }

    /// Calls `visit` for every event after `after` of `tenant` in position
    /// order, or (`None`) of every tenant, tenant by tenant, each from its
    /// first event (`after` is a position of one tenant, so it does not
    /// apply across them). Returns the last position seen.
    pub fn visit_forward<E>(
        &self,
        after: Position,
        tenant: Option<&str>,
        mut visit: impl FnMut(EventRef<'_>) -> Result<(), E>,
    ) -> Result<Position, VisitError<E>> {
        let (tenants, after) = match tenant {
            Some(tenant) => (vec![tenant.to_owned()], after),
            None => (self.tenants().map_err(VisitError::Log)?, 0),
        };
        let mut last = after;
        for tenant in &tenants {
            last = after;
            loop {
                let page = self.read_forward(tenant, last, PAGE_EVENTS).map_err(VisitError::Log)?;
                for event in &page {
                    last = event.position;
                    visit(event.as_ref()).map_err(VisitError::Visitor)?;
                }
                if (page.len() as u64) < PAGE_EVENTS {
                    break;
                }
            }
        }
        Ok(last)
    }

    /// Walks the chains of `scope`: every event's hash recomputed from its
    /// stored bytes and its predecessor's, positions increasing, and each
    /// tenant's head row its last event (so events removed from the end of
    /// a chain are found too). The guards that keep `events` append-only
    /// are checked as on SQLite.
    pub fn verify(&self, scope: VerifyScope) -> Result<VerifyReport, LogError> {
        let tenants = match scope {
            VerifyScope::All => self.tenants()?,
            VerifyScope::Tenant(tenant) => vec![tenant],
        };
        let mut report = VerifyReport {
            events_checked: 0,
            heads: Vec::new(),
            failure: None,
            missing_guards: Vec::new(),
            altered_guards: Vec::new(),
        };
        for tenant in tenants {
            let mut head: Option<ChainHead> = None;
            let walked = self.visit_forward(0, Some(&tenant), |event| {
                let (last, prev) = head.as_ref().map_or((0, ZERO_HASH), |h| (h.position, h.hash));
                // A log migrated from SQLite keeps its global positions:
                // rising per tenant, with gaps where others wrote.
                let problem = VerifyProblem::of(&event, event.position > last, &prev);
                if let Some(problem) = problem {
                    return Err(VerifyFailure {
                        position: event.position,
                        tenant: event.tenant.to_owned(),
                        problem,
                    });
                }
                let events = head.as_ref().map_or(0, |h| h.events) + 1;
                head = Some(ChainHead {
                    tenant: event.tenant.to_owned(),
                    position: event.position,
                    hash: *event.hash,
                    events,
                });
                Ok(())
            });
            match walked {
                Ok(_) => {}
                Err(VisitError::Visitor(failure)) => {
                    report.failure = Some(failure);
                    return Ok(report);
                }
                Err(VisitError::Log(error)) => return Err(error),
            }
            if let Some(failure) = self.check_head_row(&tenant, head.as_ref())? {
                report.failure = Some(failure);
                return Ok(report);
            }
            if let Some(head) = head {
                report.events_checked += head.events;
                report.heads.push(head);
            }
        }
        let (missing, altered) = self.guard_check()?;
        report.missing_guards = missing;
        report.altered_guards = altered;
        Ok(report)
    }

    /// The failure, if the tenant's head row is not the last event walked.
    fn check_head_row(
        &self,
        tenant: &str,
        walked: Option<&ChainHead>,
    ) -> Result<Option<VerifyFailure>, LogError> {
        let connection = self.connection("reading a tenant's head")?;
        let row = connection
            .query_row(
                "SELECT position, hash FROM tenant_heads WHERE tenant = ?1",
                params![tenant],
                |row| Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(storage("reading a tenant's head"))?;
        let (last, hash) = walked.map_or((0, ZERO_HASH), |head| (head.position, head.hash));
        let consistent = match row {
            None => last == 0,
            Some((position, stored)) => position == last && to_hash(&stored, last)? == hash,
        };
        Ok((!consistent).then(|| VerifyFailure {
            position: last + 1,
            tenant: tenant.to_owned(),
            problem: VerifyProblem::PositionGap,
        }))
    }

    /// The guards missing from the database, and those present under
    /// their names that no longer call rollcall's refusal.
    fn guard_check(&self) -> Result<(Vec<String>, Vec<String>), LogError> {
        let connection = self.connection("reading the log's guards")?;
        let found: BTreeMap<String, String> = connection
            .prepare_cached(
                "SELECT t.tgname::text, p.prosrc FROM pg_trigger t \
                 JOIN pg_proc p ON p.oid = t.tgfoid \
                 WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D'",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?
                    .collect()
            })
            .map_err(storage("reading the log's guards"))?;
        let normalised = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let (mut missing, mut altered) = (Vec::new(), Vec::new());
        for guard in GUARDS {
            match found.get(guard) {
                None => missing.push(guard.to_owned()),
                Some(body) if normalised(body) != normalised(GUARD_BODY) => {
                    altered.push(guard.to_owned())
                }
                Some(_) => {}
            }
        }
        Ok((missing, altered))
    }
}
