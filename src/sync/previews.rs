//! Previews of a tenant's next run, kept in memory for the console.
//!
//! Deciding every pending user is what a preview costs: about 14 µs a
//! user, 1.4 s when a mapping change puts 100,000 users in the pending set.
//! The console's User Provisioning and Pending pages show the preview on
//! every visit and every page, so this keeps one decided preview per
//! tenant: the order of its effects (user ids, and the purges), its counts
//! and the rules it was decided under. It holds while the tenant's log has
//! not moved (`EventLog::tenant_head`); after [`FRESH`] it is still shown
//! but decided again in the background, because purges fall due with time.
//! A page re-decides only its own users. A decision always runs on a thread
//! of its own; the request waits for it a short while ([`WAIT`]), so a
//! small pending set is shown at once and a large one is said to be in the
//! works, and no request holds the browser for seconds.
//!
//! It owns nothing durable and writes nothing: it is a cache of what
//! [`super::preview`] answers, and the admin API keeps calling that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use super::plan::{self, Effect, Rules};
use super::{PendingSet, Preview, Range, decide_pending, pending_set};
use crate::error::Error;
use crate::store::Store;

/// How long a request waits for a decision before it answers that the
/// preview is being decided (the default of `ServerConfig::preview_wait`):
/// a weekly delta of a 100,000-member tenant is decided in about 45 ms, a
/// full re-decision in about 2 s.
pub const WAIT: Duration = Duration::from_millis(75);

/// How long a decided preview is shown without being decided again.
pub const FRESH: Duration = Duration::from_secs(60);

/// What a page shows of the next run.
#[derive(Debug)]
pub enum Lookup {
    /// The preview, with one page of its effects.
    Ready(Preview),
    /// Being decided in the background: how many users and groups have
    /// changes to decide, once that much is known.
    Deciding { users: Option<u64>, groups: Option<u64> },
}

/// The decided previews of the server's tenants.
#[derive(Debug)]
pub struct Previews {
    slots: Mutex<HashMap<String, Slot>>,
    wait: Duration,
}

#[derive(Debug, Default)]
struct Slot {
    ready: Option<Arc<Decided>>,
    deciding: Option<Deciding>,
    /// A background decision that failed, for the next request to report.
    failed: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Deciding {
    tenant_head: u64,
    users: Option<u64>,
    groups: Option<u64>,
}

struct Decided {
    tenant_head: u64,
    at: Instant,
    /// Counts and summary; no items.
    summary: Preview,
    rules: Rules,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Decided {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Decided")
            .field("tenant_head", &self.tenant_head)
            .field("effects", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// One effect of a decided preview: a user's is decided again when its
/// page is shown (same log, same rules: the same effect); a purge depends
/// on the time it was decided at, so it is kept.
enum Entry {
    User(String),
    Purge(Box<Effect>),
}

impl Previews {
    /// Waits up to `wait` for a decision within the request.
    pub fn new(wait: Duration) -> Previews {
        Previews { slots: Mutex::default(), wait }
    }

    fn slot<T>(&self, tenant: &str, use_slot: impl FnOnce(&mut Slot) -> T) -> T {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        use_slot(slots.entry(tenant.to_owned()).or_default())
    }

    /// The next run of `tenant` with the effects `offset..offset + limit`,
    /// from memory when the tenant's log has not moved since it was
    /// decided. Blocking (for at most the wait): call it from a blocking
    /// thread.
    pub fn page(
        self: &Arc<Self>,
        store: &Arc<Store>,
        tenant: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Lookup, Error> {
        // Read before anything the preview is decided from, so a change
        // recorded meanwhile makes the stored head older than the log's and
        // the next request decides again.
        let tenant_head = store.log().tenant_head(tenant)?;
        let found = self.slot(tenant, |slot| {
            if let Some(error) = slot.failed.take() {
                return Err(Error::Internal(format!("deciding the preview failed: {error}")));
            }
            let ready = slot.ready.clone().filter(|decided| decided.tenant_head == tenant_head);
            if let Some(decided) = &ready {
                // Shown as it is, and decided again for the next visit.
                if decided.at.elapsed() > FRESH && slot.deciding.is_none() {
                    slot.deciding = Some(Deciding { tenant_head, users: None, groups: None });
                    return Ok((ready, None, true));
                }
                return Ok((ready, None, false));
            }
            // One decision per tenant at a time: while an IdP keeps writing
            // and the page keeps refreshing, a decision of an older state
            // finishes first, and the next visit starts one of the new.
            match slot.deciding {
                Some(deciding) => Ok((None, Some(deciding), false)),
                None => {
                    slot.deciding = Some(Deciding { tenant_head, users: None, groups: None });
                    Ok((None, None, true))
                }
            }
        })?;
        let (ready, deciding, start) = found;
        let decided = start.then(|| self.decide_in_background(store, tenant, tenant_head));
        if let Some(decided) = ready {
            return decided.page(store, tenant, offset, limit).map(Lookup::Ready);
        }
        if let Some(Deciding { users, groups, .. }) = deciding {
            return Ok(Lookup::Deciding { users, groups });
        }
        // Just started: a small pending set is decided within the wait. A
        // wait of zero never looks: the page says the preview is being
        // decided, whatever the thread's speed.
        if !self.wait.is_zero() && decided.is_some_and(|done| done.recv_timeout(self.wait).is_ok())
        {
            let ready = self.slot(tenant, |slot| {
                if let Some(error) = slot.failed.take() {
                    return Err(Error::Internal(format!("deciding the preview failed: {error}")));
                }
                Ok(slot.ready.clone())
            })?;
            if let Some(decided) = ready {
                return decided.page(store, tenant, offset, limit).map(Lookup::Ready);
            }
        }
        let deciding = self.slot(tenant, |slot| slot.deciding);
        Ok(Lookup::Deciding {
            users: deciding.and_then(|deciding| deciding.users),
            groups: deciding.and_then(|deciding| deciding.groups),
        })
    }

    /// Decides the tenant's preview on a thread of its own; the receiver
    /// hears when it is kept (or failed).
    fn decide_in_background(
        self: &Arc<Self>,
        store: &Arc<Store>,
        tenant: &str,
        tenant_head: u64,
    ) -> mpsc::Receiver<()> {
        let (done, heard) = mpsc::channel();
        let (previews, owned_store, owned_tenant) =
            (self.clone(), store.clone(), tenant.to_owned());
        let work = move || {
            let (store, tenant) = (owned_store, owned_tenant);
            let decided = pending_now(&store, &tenant).and_then(|(rules, pending)| {
                previews.slot(&tenant, |slot| {
                    if let Some(deciding) = &mut slot.deciding {
                        deciding.users = Some(pending.users.len() as u64);
                        deciding.groups = Some(pending.groups.len() as u64);
                    }
                });
                decide(&store, &tenant, tenant_head, rules, &pending)
            });
            previews.keep(&tenant, tenant_head, decided.map(Arc::new));
            let _ = done.send(());
        };
        let spawned = std::thread::Builder::new().name("rollcall-preview".to_owned()).spawn(work);
        if let Err(error) = spawned {
            let error = Error::Internal(format!("starting a preview thread: {error}"));
            self.keep(tenant, tenant_head, Err(error));
        }
        heard
    }

    /// Stores a preview decided at `tenant_head` unless a newer one is
    /// there, or the error of a background decision; a decision started at
    /// that head or before is no longer under way.
    fn keep(&self, tenant: &str, tenant_head: u64, decided: Result<Arc<Decided>, Error>) {
        self.slot(tenant, |slot| {
            if slot.deciding.is_some_and(|deciding| deciding.tenant_head <= tenant_head) {
                slot.deciding = None;
            }
            match decided {
                Ok(decided) => {
                    if slot.ready.as_ref().is_none_or(|held| held.tenant_head <= tenant_head) {
                        slot.ready = Some(decided);
                    }
                }
                Err(error) => {
                    tracing::warn!(tenant, %error, "deciding a preview failed");
                    slot.failed = Some(error.to_string());
                }
            }
        });
    }
}

/// The tenant's rules (roles not loaded) and pending set as they are now.
fn pending_now(store: &Store, tenant: &str) -> Result<(Rules, PendingSet), Error> {
    let range = Range::now(store, tenant)?;
    let rules = store.snapshot(|connection| Rules::load(connection, tenant))?;
    let pending = pending_set(store, tenant, &rules, range)?;
    Ok((rules, pending))
}

fn decide(
    store: &Store,
    tenant: &str,
    tenant_head: u64,
    mut rules: Rules,
    pending: &PendingSet,
) -> Result<Decided, Error> {
    if !pending.users.is_empty() {
        store.snapshot(|connection| rules.load_roles(connection, tenant))?;
    }
    let mut entries = Vec::new();
    let summary = store.snapshot(|connection| {
        decide_pending(connection, tenant, &rules, pending, store.now(), |_, effect| {
            entries.push(match effect.action {
                plan::Action::Purge => Entry::Purge(Box::new(effect)),
                _ => Entry::User(effect.user_id),
            });
        })
    })?;
    Ok(Decided { tenant_head, at: Instant::now(), summary, rules, entries })
}

impl Decided {
    fn page(&self, store: &Store, tenant: &str, offset: u64, limit: u64) -> Result<Preview, Error> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let count = usize::try_from(limit).unwrap_or(usize::MAX);
        let now = events::time::format_millis(store.now());
        let items = store.snapshot(|connection| {
            let mut items = Vec::new();
            for entry in self.entries.iter().skip(start).take(count) {
                match entry {
                    Entry::User(user) => {
                        items.extend(plan::effect(
                            connection,
                            tenant,
                            &self.rules,
                            user,
                            &now,
                            &mut plan::ReadAhead::default(),
                        )?);
                    }
                    Entry::Purge(effect) => items.push((**effect).clone()),
                }
            }
            Ok::<_, Error>(items)
        })?;
        Ok(Preview { offset, items, ..self.summary.clone() })
    }
}
