//! Synchronize: moving what the SCIM directory holds into the member
//! directory, through the tenant's mapping and role bindings.
//!
//! It owns the pending set (which users' members may differ from what the
//! directory now says), the preview (what a run would do, written nowhere),
//! the run (batches of member events, each batch one writer command that
//! also records how far the run got), single-flight per tenant, and the
//! deprovisioning safeguard. The decisions for one user live in [`plan`];
//! the configuration shapes in [`config`]; the daily trigger in
//! [`scheduler`]. It never writes the SCIM directory, and it never writes a
//! member table except through events (`store::record`).
//!
//! **Pending.** The member directory reflects the log up to its checkpoint
//! (the position the last completed run reached). Users touched by SCIM
//! events after it, users whose change a run deferred (rejected or held),
//! and, when the mapping or bindings changed after it (or a group was
//! renamed, deleted or nested), every user and member, are pending. Each
//! pending user's effect is decided from the directory as it stands, so a
//! rerun of anything already applied finds nothing to do.

pub mod config;
pub mod plan;
pub mod previews;
pub mod scheduler;
pub mod settings;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use events::db::{Db, OptionalExtension};
use events::event::{Decision, DeferReason, RunEnd};
use events::event::{
    Event, MemberChangeDeferred, MemberDisabled, MemberEnabled, MemberJoined, MemberLeft,
    MemberPurged, MemberRestored, MemberRolesChanged, MemberUpdated, SyncBatchApplied,
    SyncCompleted, SyncFailed, SyncStarted,
};
use events::sqlite::VisitError;
use events::{Actor, Cause, CommandContext, ExpectedVersion, LogTransaction};
use jiff::Timestamp;
use projections::directory::schema::ResourceKind;
use projections::directory::store as directory;
use projections::members::{self, MemberStatus, RunStatus, SyncRunRow};
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::store::{Store, record};
use plan::{Action, Counts, Effect, ReadAhead, Rules};

/// What started a run: the word `SyncStarted` records.
pub use events::event::RunTrigger as Trigger;

/// How a run is cut into writer commands.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Users decided and applied per batch (one transaction each).
    pub batch_users: usize,
    /// For a scheduled run, the scheduled instant it is for.
    pub scheduled_for: Option<Timestamp>,
    /// For an approval, the held run whose held changes it applies.
    pub approves: Option<String>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions { batch_users: 500, scheduled_for: None, approves: None }
    }
}

/// The users whose members may need a change, and the groups touched.
#[derive(Debug, Clone, Default)]
pub struct PendingSet {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    /// The member checkpoint and the log head the set was computed at.
    pub checkpoint: u64,
    pub head: u64,
    /// Every user and member is pending (a mapping, binding or group
    /// structure change since the checkpoint).
    pub full: bool,
    /// Per user, the positions of the group membership events after the
    /// checkpoint that named it (the newest [`CAUSES_MAX`]): what a role
    /// change rests on, besides the user's own events.
    pub group_causes: HashMap<String, Vec<u64>>,
}

/// Where a pending set starts and ends: the member checkpoint, and the log
/// position read *before* the rules were loaded (so a mapping or binding
/// recorded in between is after the range and makes the next run re-decide
/// everyone, rather than being passed over).
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub checkpoint: u64,
    pub head: u64,
}

impl Range {
    pub fn now(store: &Store, tenant: &str) -> Result<Range, Error> {
        store.read(|connection| {
            Ok(Range {
                checkpoint: members::checkpoint(connection, tenant)?,
                head: store.log().tenant_head(tenant)?,
            })
        })
    }
}

/// Computes the pending set of a tenant over `range`.
pub fn pending_set(
    store: &Store,
    tenant: &str,
    rules: &Rules,
    range: Range,
) -> Result<PendingSet, Error> {
    let Range { checkpoint, head } = range;
    let mut removed = Vec::new();
    let mut pending = PendingSet {
        checkpoint,
        head,
        full: checkpoint == 0
            || rules.mapping_position > checkpoint
            || rules.bindings_position > checkpoint,
        ..PendingSet::default()
    };
    // Before the first run everything is pending: the directory says who
    // and which groups, without reading the whole log.
    let first_run = checkpoint == 0;
    let scanned = store.log().visit_forward(
        if first_run { head } else { checkpoint },
        Some(tenant),
        |event| {
            if event.position > head {
                return Ok(());
            }
            if let Some(user) = event.stream.strip_prefix("user:") {
                pending.users.insert(user.to_owned());
            } else if let Some(group) = event.stream.strip_prefix("group:") {
                pending.groups.insert(group.to_owned());
                if pending.full {
                    return Ok(());
                }
                match event.event_type {
                    "GroupCreated" | "GroupMembersAdded" | "GroupMembersRemoved" => {
                        // Group events hold nothing sealed.
                        let decoded = event
                            .decode(&events::seal::NoKeys)
                            .map_err(|error| Error::Internal(error.to_string()))?;
                        let position = event.position;
                        match decoded {
                            Event::GroupCreated(created) => {
                                note_members(&mut pending, created.members, position)
                            }
                            Event::GroupMembersAdded(added) => {
                                note_members(&mut pending, added.members, position)
                            }
                            Event::GroupMembersRemoved(event) => {
                                for member in &event.member_ids {
                                    note_cause(&mut pending, member, position);
                                }
                                removed.extend(event.member_ids)
                            }
                            _ => {}
                        }
                    }
                    // A group renamed, re-identified or deleted may gain or lose
                    // a binding for every user under it, and a deleted group's
                    // members are no longer listed anywhere: decide again for all.
                    "GroupUpdated" | "GroupRenamed" | "GroupDeleted" => pending.full = true,
                    _ => {}
                }
            }
            Ok::<(), Error>(())
        },
    );
    match scanned {
        Ok(_) => {}
        Err(VisitError::Visitor(error)) => return Err(error),
        Err(VisitError::Log(error)) => return Err(error.into()),
    }
    store.read(|connection| {
        // A group taken out of a bound group takes roles from everyone
        // under it: decide again for all. Removed users are pending.
        if !pending.full && !removed.is_empty() {
            let ids: Vec<&str> = removed.iter().map(String::as_str).collect();
            let kinds = directory::kinds_of(connection, tenant, &ids)?;
            if kinds.values().any(|kind| *kind == ResourceKind::Group) {
                pending.full = true;
            }
        }
        pending.users.extend(removed.drain(..));
        if first_run {
            pending.groups.extend(directory::all_ids(connection, tenant, ResourceKind::Group)?);
        }
        if pending.full {
            pending.users.extend(directory::all_ids(connection, tenant, ResourceKind::User)?);
            pending.users.extend(members::member_user_ids(connection, tenant)?);
        }
        pending
            .users
            .extend(members::deferred(connection, tenant)?.into_iter().map(|row| row.user_id));
        Ok(())
    })?;
    Ok(pending)
}

/// A group that gained a group as a member changes the roles of everyone
/// under that group: decide again for all.
fn note_members(pending: &mut PendingSet, added: Vec<events::event::MemberRef>, position: u64) {
    for member in added {
        match member.kind {
            events::event::MemberKind::User => {
                note_cause(pending, &member.value, position);
                pending.users.insert(member.value);
            }
            events::event::MemberKind::Group => pending.full = true,
        }
    }
}

/// Remembers that the group event at `position` named `user`, keeping the
/// newest [`CAUSES_MAX`] (the scan runs forward).
fn note_cause(pending: &mut PendingSet, user: &str, position: u64) {
    let positions = pending.group_causes.entry(user.to_owned()).or_default();
    if positions.len() == CAUSES_MAX {
        positions.remove(0);
    }
    positions.push(position);
}

/// The most events a member event names as its causes: the newest ones
/// (a user changed a thousand times before a run is still one change).
pub const CAUSES_MAX: usize = 10;

/// A user's newest events after a position. `+position`: without it SQLite
/// walked the (tenant, position) index from `since` (0 for a join: the
/// tenant's whole log) for every member instead of the stream's own
/// entries, and a 50,000-user run went from seconds to many minutes.
const USER_CAUSES: &str = "SELECT position, hash, event_type, stream, metadata \
     FROM events WHERE tenant = ?1 AND stream = ?2 AND +position > ?3 \
     ORDER BY version DESC LIMIT ?4";

/// The one field of an event's metadata a cause needs, read in Rust: the
/// rest (a request's body above all) is skipped, where SQLite's `->>`
/// would translate the whole metadata to JSONB first.
#[derive(serde::Deserialize)]
struct RequestIdOnly {
    #[serde(default)]
    request_id: Option<String>,
}

/// The causes outside a user's own stream (group events, mapping and
/// role-binding changes), read once for a whole run: one group event names
/// a hundred users, and the role bindings every user of the tenant, whose
/// metadata (the request that changed them) can be tens of kilobytes.
/// Events never change, so what was read once stays true; the map is
/// cleared past `SHARED_CAUSES_MAX` to bound its memory.
#[derive(Debug, Default)]
pub(crate) struct SharedCauses {
    by_position: HashMap<u64, Option<Cause>>,
}

/// Where a member change's causes beyond its user's stream come from: the
/// group events that named the user, and the run's shared reads.
pub(crate) struct OtherCauses<'a> {
    pub groups: &'a [u64],
    pub shared: &'a mut SharedCauses,
}

/// Shared causes kept at most (a few hundred bytes each).
const SHARED_CAUSES_MAX: usize = 100_000;

/// The events a member change rests on, oldest first: the user's SCIM
/// events after the member's last event (all of them for a join), the
/// group membership events that named the user since the checkpoint, and
/// a mapping or role-binding change after the member's last event; the
/// newest [`CAUSES_MAX`] of them. Read on the writer's connection, so they
/// are exactly the events the decision saw.
fn causes(
    connection: &dyn Db,
    tenant: &str,
    rules: &Rules,
    user_id: &str,
    since: u64,
    other: OtherCauses<'_>,
) -> Result<Vec<Cause>, Error> {
    let OtherCauses { groups: group_positions, shared } = other;
    let storage =
        |error| Error::Internal(format!("reading the causes of a member change: {error}"));
    let cause = |row: &events::db::Row<'_>| -> Result<Cause, events::db::DbError> {
        let position: i64 = row.get(0)?;
        let hash: Vec<u8> = row.get(1)?;
        let hash: events::ChainHash = hash.try_into().unwrap_or(events::ZERO_HASH);
        let metadata = row.get_ref(4)?.as_str()?;
        let request_id = serde_json::from_str::<RequestIdOnly>(metadata)
            .map_err(|error| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    Box::new(error),
                )
            })?
            .request_id;
        Ok(Cause {
            position: u64::try_from(position).unwrap_or(0),
            hash: events::hash::to_hex(&hash),
            event_type: row.get(2)?,
            stream: row.get(3)?,
            request_id,
        })
    };
    let mut found: Vec<Cause> = connection
        .prepare_cached(USER_CAUSES)
        .and_then(|mut statement| {
            statement
                .query_map(
                    events::params![
                        tenant,
                        format!("user:{user_id}"),
                        projections::sql_integer(since),
                        CAUSES_MAX as i64
                    ],
                    cause,
                )?
                .collect::<Result<Vec<_>, events::db::DbError>>()
        })
        .map_err(storage)?;
    let settings = [rules.mapping_position, rules.bindings_position];
    let mut by_position = connection
        .prepare_cached(
            "SELECT position, hash, event_type, stream, metadata FROM events \
             WHERE position = ?1 AND tenant = ?2",
        )
        .map_err(storage)?;
    for position in group_positions.iter().chain(settings.iter().filter(|at| **at > since)) {
        if found.iter().any(|cause| cause.position == *position) {
            continue;
        }
        if !shared.by_position.contains_key(position) {
            if shared.by_position.len() >= SHARED_CAUSES_MAX {
                shared.by_position.clear();
            }
            let read = by_position
                .query_row(events::params![projections::sql_integer(*position), tenant], cause)
                .optional()
                .map_err(storage)?;
            shared.by_position.insert(*position, read);
        }
        if let Some(Some(cause)) = shared.by_position.get(position) {
            found.push(cause.clone());
        }
    }
    found.sort_by_key(|cause| cause.position);
    let surplus = found.len().saturating_sub(CAUSES_MAX);
    found.drain(..surplus);
    Ok(found)
}

/// What a run would do, without doing it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// How many users and groups have changes not yet synchronized.
    pub pending_users: u64,
    pub pending_groups: u64,
    pub counts: Counts,
    /// How many effects in all (the listing is paged).
    pub total: u64,
    pub offset: u64,
    pub items: Vec<Effect>,
    /// Set when a run now would be held by the deprovisioning safeguard.
    pub safeguard: Option<String>,
    pub checkpoint: u64,
    pub head: u64,
}

/// The preview of a tenant's next run: every pending effect counted, one
/// page of them listed. Blocking: call it from a blocking thread.
pub fn preview(store: &Store, tenant: &str, offset: u64, limit: u64) -> Result<Preview, Error> {
    preview_with(store, tenant, None, offset, limit)
}

/// The preview of the next run as it would be with `draft` saved as the
/// mapping (every user is then pending), or as things are (`None`).
/// Blocking: call it from a blocking thread.
pub fn preview_with(
    store: &Store,
    tenant: &str,
    draft: Option<config::Mapping>,
    offset: u64,
    limit: u64,
) -> Result<Preview, Error> {
    let range = Range::now(store, tenant)?;
    let mut rules = store.snapshot(|connection| Rules::load(connection, tenant))?;
    if let Some(draft) = draft {
        rules = rules.with_mapping(draft)?;
    }
    let pending = pending_set(store, tenant, &rules, range)?;
    if !pending.users.is_empty() {
        store.snapshot(|connection| rules.load_roles(connection, tenant))?;
    }
    store.snapshot(|connection| {
        let mut items = Vec::new();
        let mut preview =
            decide_pending(connection, tenant, &rules, &pending, store.now(), |index, effect| {
                if index >= offset && (items.len() as u64) < limit {
                    items.push(effect);
                }
            })?;
        preview.offset = offset;
        preview.items = items;
        Ok(preview)
    })
}

/// Decides every pending user (then the purges due now) in order, hands
/// each effect to `each` with its index, and returns the preview's counts
/// and summary (no items: `each` keeps what it needs). `rules` must have
/// its roles loaded.
pub(crate) fn decide_pending(
    connection: &dyn Db,
    tenant: &str,
    rules: &Rules,
    pending: &PendingSet,
    now: Timestamp,
    mut each: impl FnMut(u64, Effect),
) -> Result<Preview, Error> {
    let now = events::time::format_millis(now);
    let mut counts = Counts::default();
    let mut total = 0_u64;
    let mut deprovisioning = 0_u64;
    let mut keep = |effect: Effect, counts: &mut Counts| {
        counts.add(&effect);
        each(total, effect);
        total += 1;
    };
    // Read ahead in a default run's batches (`plan::ReadAhead`), so the
    // preview reads the ranges the run will.
    let users: Vec<String> = pending.users.iter().cloned().collect();
    for chunk in users.chunks(RunOptions::default().batch_users) {
        let mut ahead = ReadAhead::read(connection, tenant, rules, chunk)?;
        for user in chunk {
            if let Some(effect) = plan::effect(connection, tenant, rules, user, &now, &mut ahead)? {
                if effect.action.is_deprovisioning() {
                    deprovisioning += 1;
                }
                keep(effect, &mut counts);
            }
        }
    }
    for effect in plan::purges(connection, tenant, &now)? {
        keep(effect, &mut counts);
    }
    let active =
        members::status_counts(connection, tenant)?.get(MemberStatus::Active.as_str()).copied();
    Ok(Preview {
        // Every effect but a purge is one current user's.
        pending_users: total - counts.purge,
        pending_groups: pending.groups.len() as u64,
        safeguard: safeguard_reason(rules, active.unwrap_or(0), deprovisioning),
        counts,
        total,
        offset: 0,
        items: Vec::new(),
        checkpoint: pending.checkpoint,
        head: pending.head,
    })
}

/// Why a run that disables or removes `deprovisioning` of `active` members
/// must be held, if it must.
pub fn safeguard_reason(rules: &Rules, active: u64, deprovisioning: u64) -> Option<String> {
    let safeguard = &rules.settings.safeguard;
    let share = u64::from(safeguard.share_percent);
    let over_share = deprovisioning.saturating_mul(100) > share.saturating_mul(active);
    let holds = active > 0 && deprovisioning > 0 && deprovisioning >= u64::from(safeguard.minimum);
    (holds && over_share).then(|| {
        format!(
            "this run would disable or remove {deprovisioning} of {active} active members, \
             more than the safeguard's {share}% (and at least {} members): an admin must \
             approve it",
            safeguard.minimum
        )
    })
}

/// Holds the tenant's Synchronize lock while a run goes on (`Store::try_lock`:
/// an OS file lock beside the SQLite file, an advisory lock on PostgreSQL),
/// so two runs of one tenant never overlap, whether they are triggered in
/// one process or two (the server and the CLI, or two nodes), and a
/// crashed run's lock goes with its process.
struct RunLock {
    _lock: crate::store::StoreLock,
}

fn take_lock(store: &Store, tenant: &str) -> Result<RunLock, Error> {
    match store.try_lock(&format!("sync-{tenant}"))? {
        Some(lock) => Ok(RunLock { _lock: lock }),
        None => Err(Error::conflict(
            "a Synchronize is already running for this tenant; wait for it to finish \
             (GET /api/v1/provisioning/syncs shows it)",
        )),
    }
}

/// Runs Synchronize for a tenant to the end and returns its record.
/// Blocking: call it from a blocking thread.
///
/// If an earlier run of the tenant was cut off (a crash), this resumes it
/// after its last applied batch instead of starting a new one.
pub fn run(
    store: &Store,
    tenant: &str,
    trigger: Trigger,
    context: CommandContext,
    options: RunOptions,
) -> Result<SyncRunRow, Error> {
    let _lock = take_lock(store, tenant)?;
    let started = Instant::now();
    let unfinished = store.read(|connection| Ok(members::unfinished_run(connection, tenant)?))?;
    if unfinished.is_none()
        && let Some(fire) = options.scheduled_for
    {
        // Another process's scheduler may have run this instant while this
        // one waited for the lock.
        let last = store.read(|connection| Ok(members::last_scheduled_for(connection, tenant)?))?;
        if last.is_some_and(|last| last >= format_now(fire)) {
            return Err(Error::conflict("this scheduled Synchronize already ran"));
        }
    }
    // A resumed run keeps its range: what changed after it waits for the
    // next run, as if the crash had not happened.
    let range = match &unfinished {
        Some(run) => Range { checkpoint: run.from_position, head: run.to_position },
        None => Range::now(store, tenant)?,
    };
    let mut rules = store.snapshot(|connection| Rules::load(connection, tenant))?;
    let pending = pending_set(store, tenant, &rules, range)?;
    if !pending.users.is_empty() {
        store.snapshot(|connection| rules.load_roles(connection, tenant))?;
    }
    let rules = Arc::new(rules);
    tracing::debug!(elapsed = ?started.elapsed(), users = pending.users.len(), "synchronize: pending set read");
    let approves = match &unfinished {
        Some(run) => run.approves.clone(),
        None => options.approves.clone(),
    };
    let exempt = exempt_users(store, tenant, approves.as_deref())?;
    let (run_id, held_reason, cursor, mut counts) = match unfinished {
        Some(run) => {
            // Counted so far, by the batches that committed. A record that
            // does not read would resume with wrong totals: refuse instead.
            let counts = serde_json::from_value(run.counts.clone()).map_err(|error| {
                Error::Internal(format!(
                    "run {} cannot resume: its recorded counts {} do not read ({error})",
                    run.run_id, run.counts
                ))
            })?;
            (run.run_id, run.held_reason, run.through_user, counts)
        }
        None => {
            let run_id = ulid::Ulid::generate().to_string();
            let held_reason = store.snapshot(|connection| {
                let statuses = members::status_counts(connection, tenant)?;
                let active = statuses.get(MemberStatus::Active.as_str()).copied().unwrap_or(0);
                if active == 0 {
                    // Nobody to disable or remove (a first run, say).
                    return Ok(None);
                }
                let mut deprovisioning = 0_u64;
                for user in pending.users.iter().filter(|user| !exempt.contains(*user)) {
                    if would_deprovision(connection, tenant, user)? {
                        deprovisioning += 1;
                    }
                }
                Ok(safeguard_reason(&rules, active, deprovisioning))
            })?;
            let started_event = SyncStarted {
                run_id: run_id.clone(),
                trigger,
                from_position: pending.checkpoint,
                to_position: pending.head,
                held_reason: held_reason.clone(),
                scheduled_for: options.scheduled_for.map(format_now),
                approves: approves.clone(),
            };
            let tenant_id = tenant.to_owned();
            let context = context.clone();
            store
                .command(Some(tenant), move |tx| {
                    let stream = format!("sync:{}", started_event.run_id);
                    record(
                        tx,
                        &tenant_id,
                        &stream,
                        ExpectedVersion::NoStream,
                        &[Event::SyncStarted(started_event)],
                        &context,
                    )
                    .map(drop)
                })
                .wait()?;
            (run_id, held_reason, None, Counts::default())
        }
    };
    tracing::debug!(elapsed = ?started.elapsed(), %run_id, "synchronize: run started");
    let context = CommandContext { correlation_id: Some(run_id.clone()), ..context };
    let batches = Batches {
        store,
        tenant,
        run_id: &run_id,
        rules: &rules,
        holding: held_reason.is_some(),
        exempt: &exempt,
        context: &context,
        batch_users: options.batch_users,
        group_causes: &pending.group_causes,
        shared_causes: Arc::default(),
    };
    // A resumed run goes on after the last user its batches applied.
    let users =
        pending.users.iter().filter(|user| cursor.as_ref().is_none_or(|cursor| *user > cursor));
    let outcome = batches.apply(users, &mut counts).and_then(|()| {
        tracing::debug!(elapsed = ?started.elapsed(), "synchronize: batches applied");
        let mut completed = SyncCompleted {
            run_id: run_id.clone(),
            status: if held_reason.is_some() { RunEnd::Held } else { RunEnd::Completed },
            position: pending.head,
            counts: Value::Null,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            held_reason: held_reason.clone(),
        };
        let mut total = counts.clone();
        let rules = Arc::clone(&rules);
        let tenant_id = tenant.to_owned();
        let context = context.clone();
        let clock = store.log().clock();
        store
            .command(Some(tenant), move |tx| {
                // Leavers past their grace are purged as the run ends.
                let now = clock();
                let mut purged = Counts::default();
                for effect in plan::purges(tx.db(), &tenant_id, &format_now(now))? {
                    purged.add(&effect);
                    let other = OtherCauses { groups: &[], shared: &mut SharedCauses::default() };
                    apply_effect(tx, &tenant_id, &rules, effect, now, &context, other)?;
                }
                total.merge(&purged);
                completed.counts = total.to_value();
                append_to_run(
                    tx,
                    &tenant_id,
                    &completed.run_id.clone(),
                    Event::SyncCompleted(completed),
                    &context,
                )
            })
            .wait()
            .map_err(Error::from)
    });
    if let Err(error) = outcome {
        let failed = SyncFailed { run_id: run_id.clone(), error: error.to_string() };
        let tenant_id = tenant.to_owned();
        let context = context.clone();
        // Best effort: if the writer is gone, the run stays unfinished and
        // the next trigger resumes it.
        let _ = store
            .command(Some(tenant), move |tx| {
                append_to_run(
                    tx,
                    &tenant_id,
                    &failed.run_id.clone(),
                    Event::SyncFailed(failed),
                    &context,
                )
            })
            .wait();
        return Err(error);
    }
    store.read(|connection| {
        members::run(connection, tenant, &run_id)?
            .ok_or_else(|| Error::Internal("a finished run has no record".to_owned()))
    })
}

fn format_now(now: Timestamp) -> String {
    events::time::format_millis(now)
}

/// Whether applying this user's pending change would disable or remove
/// its member (the safeguard's count; no mapping is evaluated).
fn would_deprovision(connection: &dyn Db, tenant: &str, user_id: &str) -> Result<bool, Error> {
    let Some(member) = members::member_of_user(connection, tenant, user_id)? else {
        return Ok(false);
    };
    Ok(match directory::get(connection, tenant, ResourceKind::User, user_id)? {
        None => matches!(member.status, MemberStatus::Active | MemberStatus::Disabled),
        Some(user) => {
            member.status == MemberStatus::Active
                && matches!(user.document.get("active"), Some(Value::Bool(false)))
        }
    })
}

/// A run under way: what each of its batches needs.
struct Batches<'r> {
    store: &'r Store,
    tenant: &'r str,
    run_id: &'r str,
    rules: &'r Arc<Rules>,
    /// The safeguard holds this run's disables and leaves, but `exempt`'s.
    holding: bool,
    exempt: &'r HashSet<String>,
    context: &'r CommandContext,
    batch_users: usize,
    group_causes: &'r HashMap<String, Vec<u64>>,
    /// Kept from batch to batch (each batch is its own writer command).
    shared_causes: Arc<std::sync::Mutex<SharedCauses>>,
}

impl Batches<'_> {
    /// Decides and applies `users`, `batch_users` per writer command; each
    /// batch commits with its deferrals and a `SyncBatchApplied` that
    /// records how far the run got and `counts` so far.
    fn apply<'u>(
        &self,
        users: impl Iterator<Item = &'u String>,
        counts: &mut Counts,
    ) -> Result<(), Error> {
        let users: Vec<String> = users.cloned().collect();
        for batch in users.chunks(self.batch_users.max(1)) {
            *counts = self.apply_batch(batch.to_vec(), counts.clone())?;
        }
        Ok(())
    }

    fn apply_batch(&self, batch: Vec<String>, so_far: Counts) -> Result<Counts, Error> {
        let rules = Arc::clone(self.rules);
        let tenant_id = self.tenant.to_owned();
        let run_id = self.run_id.to_owned();
        let context = self.context.clone();
        let clock = self.store.log().clock();
        let holding = self.holding;
        let exempt: HashSet<String> =
            batch.iter().filter(|user| self.exempt.contains(*user)).cloned().collect();
        let group_causes: HashMap<String, Vec<u64>> = batch
            .iter()
            .filter_map(|user| Some((user.clone(), self.group_causes.get(user)?.clone())))
            .collect();
        let shared_causes = Arc::clone(&self.shared_causes);
        self.store
            .command(Some(self.tenant), move |tx| {
                // Only the writer takes it, one batch at a time.
                let mut shared =
                    shared_causes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = clock();
                let now_text = events::time::format_millis(now);
                let mut counts = so_far;
                let mut deferred = Vec::new();
                // Read ahead at the batch's start: an effect changes only
                // its own user's member, and a restore's leaver is looked
                // up as the effect is decided.
                let mut ahead = ReadAhead::read(tx.db(), &tenant_id, &rules, &batch)?;
                for user in &batch {
                    let Some(mut effect) =
                        plan::effect(tx.db(), &tenant_id, &rules, user, &now_text, &mut ahead)?
                    else {
                        continue;
                    };
                    if holding && effect.action.is_deprovisioning() && !exempt.contains(user) {
                        effect.action = Action::Held;
                        deferred.push((
                            user.clone(),
                            DeferReason::Held,
                            "held by the deprovisioning safeguard".to_owned(),
                        ));
                        counts.add(&effect);
                        continue;
                    }
                    if let Some(reason) = &effect.reason {
                        deferred.push((user.clone(), DeferReason::Rejected, reason.clone()));
                    }
                    counts.add(&effect);
                    if matches!(effect.action, Action::Leave) {
                        ahead.someone_left();
                    }
                    let groups = group_causes.get(user).map_or(&[][..], Vec::as_slice);
                    let other = OtherCauses { groups, shared: &mut shared };
                    apply_effect(tx, &tenant_id, &rules, effect, now, &context, other)?;
                }
                let through_user = batch.last().cloned().unwrap_or_default();
                let mut events: Vec<Event> = deferred
                    .into_iter()
                    .map(|(user_id, reason, detail)| {
                        Event::MemberChangeDeferred(MemberChangeDeferred {
                            run_id: run_id.clone(),
                            user_id,
                            reason,
                            detail,
                        })
                    })
                    .collect();
                events.push(Event::SyncBatchApplied(SyncBatchApplied {
                    run_id: run_id.clone(),
                    through_user,
                    counts: counts.to_value(),
                }));
                let stream = format!("sync:{run_id}");
                let version = tx.stream_version(&tenant_id, &stream)?;
                record(tx, &tenant_id, &stream, expected(version), &events, &context)?;
                Ok(counts)
            })
            .wait()
            .map_err(Error::from)
    }
}

fn expected(version: Option<u64>) -> ExpectedVersion {
    version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

fn append_to_run(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    run_id: &str,
    event: Event,
    context: &CommandContext,
) -> Result<(), Error> {
    let stream = format!("sync:{run_id}");
    let version = tx.stream_version(tenant, &stream)?;
    record(tx, tenant, &stream, expected(version), &[event], context).map(drop)
}

/// Appends one effect's member events (a rejected effect appends none).
fn apply_effect(
    tx: &mut dyn LogTransaction,
    tenant: &str,
    rules: &Rules,
    effect: Effect,
    now: Timestamp,
    context: &CommandContext,
    other: OtherCauses<'_>,
) -> Result<(), Error> {
    let Effect { user_id, user_name, action, changes, roles, plan, .. } = effect;
    if matches!(action, Action::Rejected | Action::Held) {
        return Ok(());
    }
    // A purge rests on the grace period alone, not on anything the
    // identity provider said.
    let caused_by = if action == Action::Purge {
        Vec::new()
    } else {
        let since = plan.member.as_ref().map_or(0, |member| member.last_position);
        causes(tx.db(), tenant, rules, &user_id, since, other)?
    };
    let context = &CommandContext { caused_by, ..context.clone() };
    if action == Action::Join {
        let member_id = ulid::Ulid::generate().to_string();
        let joined = MemberJoined {
            member_id: member_id.clone(),
            user_id,
            external_id: plan.external_id,
            user_name,
            properties: plan.properties,
            roles: plan.roles,
        };
        record(
            tx,
            tenant,
            &format!("member:{member_id}"),
            ExpectedVersion::NoStream,
            &[Event::MemberJoined(joined)],
            context,
        )?;
        return Ok(());
    }
    let Some(member) = plan.member else {
        return Err(Error::Internal(format!("a {action:?} without a member")));
    };
    let member_id = member.member_id;
    let mut events = Vec::new();
    match action {
        Action::Restore => events.push(Event::MemberRestored(MemberRestored {
            member_id: member_id.clone(),
            user_id,
            user_name,
        })),
        Action::Enable => {
            events.push(Event::MemberEnabled(MemberEnabled { member_id: member_id.clone() }))
        }
        Action::Leave => events.push(Event::MemberLeft(MemberLeft {
            member_id: member_id.clone(),
            grace_until: rules.grace_until(now),
        })),
        Action::Purge => {
            events.push(Event::MemberPurged(MemberPurged { member_id: member_id.clone() }))
        }
        _ => {}
    }
    let renamed = plan.renamed;
    if !changes.is_empty() || renamed.is_some() {
        let (user_name, external_id, external_id_cleared) = match renamed {
            Some((user_name, external_id)) => {
                let cleared = external_id.is_none();
                (Some(user_name), external_id, cleared)
            }
            None => (None, None, false),
        };
        events.push(Event::MemberUpdated(MemberUpdated {
            member_id: member_id.clone(),
            changes,
            user_name,
            external_id,
            external_id_cleared,
        }));
    }
    if let Some(roles) = roles {
        events.push(Event::MemberRolesChanged(MemberRolesChanged {
            member_id: member_id.clone(),
            from: roles.from,
            to: roles.to,
        }));
    }
    if action == Action::Disable {
        events.push(Event::MemberDisabled(MemberDisabled {
            member_id: member_id.clone(),
            revoke_sessions: true,
        }));
    }
    if events.is_empty() {
        return Ok(());
    }
    record(
        tx,
        tenant,
        &format!("member:{member_id}"),
        ExpectedVersion::Exact(member.version),
        &events,
        context,
    )?;
    Ok(())
}

/// The actor of a run the scheduler starts.
pub fn scheduler_context() -> CommandContext {
    CommandContext::new(Actor::Scheduler)
}

/// The users an approval lifts the hold from: those the approved run
/// deferred as held (and only those).
fn exempt_users(
    store: &Store,
    tenant: &str,
    approves: Option<&str>,
) -> Result<HashSet<String>, Error> {
    let Some(approved) = approves else { return Ok(HashSet::new()) };
    store.read(|connection| {
        Ok(members::deferred(connection, tenant)?
            .into_iter()
            .filter(|row| row.reason == DeferReason::Held && row.run_id == approved)
            .map(|row| row.user_id)
            .collect())
    })
}

/// An admin's decision on a held run. Approving runs Synchronize at once
/// without the safeguard (the approval is the admin's word for it) and
/// names that run; rejecting leaves members untouched and the held changes
/// pending. Blocking.
pub fn decide(
    store: &Store,
    tenant: &str,
    run_id: &str,
    approve: bool,
    context: CommandContext,
    options: RunOptions,
) -> Result<SyncRunRow, Error> {
    let held = store.read(|connection| Ok(members::run(connection, tenant, run_id)?))?;
    let held = held.ok_or_else(|| Error::not_found(format!("Synchronize run {run_id}")))?;
    if held.status != RunStatus::Held {
        return Err(Error::conflict(format!(
            "run {run_id} is {}, not held: only a held run can be approved or rejected",
            held.status
        )));
    }
    // What the admin reviewed is this run's held changes; a later run (or
    // one still going) may hold others, or have found them gone.
    let latest = store.read(|connection| Ok(members::runs(connection, tenant, 0, 1)?.1))?;
    if latest.first().is_none_or(|latest| latest.run_id != run_id) {
        return Err(Error::conflict(format!(
            "run {run_id} is no longer the latest run; review and decide on the latest held run"
        )));
    }
    let applied_by = if approve {
        let options = RunOptions { approves: Some(run_id.to_owned()), ..options };
        Some(run(store, tenant, Trigger::Approval, context.clone(), options)?.run_id)
    } else {
        None
    };
    let decided = events::event::SyncDecided {
        run_id: run_id.to_owned(),
        decision: if approve { Decision::Approved } else { Decision::Rejected },
        applied_by,
    };
    let tenant_id = tenant.to_owned();
    store
        .command(Some(tenant), move |tx| {
            let run_id = decided.run_id.clone();
            // Two admins deciding at once: the second finds it decided.
            let status = members::run(tx.db(), &tenant_id, &run_id)?.map(|run| run.status);
            if status != Some(RunStatus::Held) {
                return Err(Error::conflict(format!("run {run_id} was already decided")));
            }
            append_to_run(tx, &tenant_id, &run_id, Event::SyncDecided(decided), &context)
        })
        .wait()?;
    store.read(|connection| {
        members::run(connection, tenant, run_id)?
            .ok_or_else(|| Error::not_found(format!("Synchronize run {run_id}")))
    })
}

/// A Synchronize run as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SyncRun)]
pub struct RunView<'a> {
    pub run_id: &'a str,
    /// `manual`, `schedule`, `cli` or `approval`.
    #[schema(value_type = String)]
    pub trigger: &'a events::event::RunTrigger,
    /// Who started it (an admin's token, the schedule, the CLI).
    #[schema(value_type = Object)]
    pub actor: &'a Value,
    /// `running`, `completed`, `held`, `failed`, `approved` or `rejected`.
    #[schema(value_type = String)]
    pub status: &'a projections::members::RunStatus,
    pub started_at: &'a str,
    pub finished_at: Option<&'a str>,
    /// The log positions the run read from and to.
    pub from_position: u64,
    pub to_position: u64,
    #[schema(value_type = Counts)]
    pub counts: &'a Value,
    pub duration_ms: Option<u64>,
    /// Why the safeguard held it.
    pub held_reason: Option<&'a str>,
    pub error: Option<&'a str>,
    /// For a held run approved: the run that applied it.
    pub applied_by: Option<&'a str>,
}

impl RunView<'_> {
    pub fn of(run: &SyncRunRow) -> RunView<'_> {
        RunView {
            run_id: &run.run_id,
            trigger: &run.trigger,
            actor: &run.actor,
            status: &run.status,
            started_at: &run.started_at,
            finished_at: run.finished_at.as_deref(),
            from_position: run.from_position,
            to_position: run.to_position,
            counts: &run.counts,
            duration_ms: run.duration_ms,
            held_reason: run.held_reason.as_deref(),
            error: run.error.as_deref(),
            applied_by: run.applied_by.as_deref(),
        }
    }
}

/// A run as JSON, the same for the API and the CLI.
pub fn run_view(run: &SyncRunRow) -> Value {
    serde_json::to_value(RunView::of(run)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    /// The causes of a member are read from its user's stream alone,
    /// never by a walk of the tenant's log (the regression `+position`
    /// fixed).
    #[test]
    fn causes_are_read_through_the_stream_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = events::sqlite::SqliteLog::open(
            &dir.path().join("plan.db"),
            events::sqlite::LogOptions::default(),
        )
        .unwrap();
        let reader = log.reader().unwrap();
        let plan: Vec<String> = reader
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::USER_CAUSES))
            .unwrap()
            .query_map(rusqlite::params!["t", "user:u", 0, 10], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("sqlite_autoindex_events_1"), "{plan}");
        assert!(!plan.contains("events_by_tenant"), "{plan}");
    }
}
