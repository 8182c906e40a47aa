//! Heavy reads, and how one tenant is kept from starving the others.
//!
//! A read that may scan (a SCIM list or search that no index answers, a
//! member search, a preview, a report) runs through [`HeavyReads::run`]:
//!
//! - it waits for a slot without blocking an async worker (a tokio
//!   semaphore), and a tenant holds at most half of the slots, so another
//!   tenant's reads always find one; a wait longer than `queue_wait` is
//!   answered 503 with Retry-After, never queued forever;
//! - it runs on the blocking pool, where every `Store::read` it makes
//!   borrows from the heavy lane of the read pool (never the connections
//!   kept for quick reads: the token check, lookups by key, `/healthz`);
//! - with a budget, each statement is interrupted once the budget has
//!   passed, and the request is answered 400 `tooMany` naming the budget.
//!
//! This module owns admission and the budget; it must not know what is
//! read (the closures do) nor how an error is rendered (`error.rs`).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::sqlite::Lane;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

thread_local! {
    /// The lane and budget of the heavy read running on this thread, if
    /// one is: `Store::read` borrows accordingly.
    static HEAVY: Cell<Option<Option<Duration>>> = const { Cell::new(None) };
}

/// The lane (and budget) a read on this thread borrows in.
pub fn current_lane() -> (Lane, Option<Duration>) {
    match HEAVY.with(Cell::get) {
        Some(budget) => (Lane::Heavy, budget),
        None => (Lane::Quick, None),
    }
}

/// Restores the thread's lane when a heavy read ends, even by panic.
struct LaneGuard(Option<Option<Duration>>);

impl Drop for LaneGuard {
    fn drop(&mut self) {
        HEAVY.with(|cell| cell.set(self.0));
    }
}

fn enter_heavy(budget: Option<Duration>) -> LaneGuard {
    LaneGuard(HEAVY.with(|cell| cell.replace(Some(budget))))
}

/// Runs `work` (on a blocking thread) with its reads in the heavy lane,
/// without admission or budget: the admin's and auditor's long work
/// (previews, runs, reports), which must still leave the quick reserve.
pub fn in_heavy_lane<T>(work: impl FnOnce() -> T) -> T {
    let _lane = enter_heavy(None);
    work()
}

/// Runs blocking work off the async workers, its reads in the heavy lane
/// (they may scan; the quick reserve stays for token checks and lookups).
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || in_heavy_lane(work))
        .await
        .map_err(|error| Error::Internal(format!("a blocking task failed: {error}")))?
}

/// A heavy slot held: released when dropped.
#[derive(Debug)]
pub struct Admission {
    _own: OwnedSemaphorePermit,
    _shared: OwnedSemaphorePermit,
}

/// The admission of heavy reads, shared by every request of a server.
#[derive(Debug)]
pub struct HeavyReads {
    slots: Arc<Semaphore>,
    /// A tenant's own share of `slots`.
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    tenant_share: usize,
    /// The budget of a read the IdP or an application asks for.
    pub budget: Duration,
    queue_wait: Duration,
}

impl HeavyReads {
    /// `slots` heavy reads at once (the read pool's heavy lane), a tenant
    /// at most half of them.
    pub fn new(slots: usize, budget: Duration, queue_wait: Duration) -> HeavyReads {
        let slots = slots.max(1);
        HeavyReads {
            slots: Arc::new(Semaphore::new(slots)),
            tenants: Mutex::new(HashMap::new()),
            tenant_share: (slots / 2).max(1),
            budget,
            queue_wait,
        }
    }

    /// How many heavy reads one tenant may run at once.
    pub fn tenant_share(&self) -> usize {
        self.tenant_share
    }

    fn tenant(&self, tenant: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget tenants with nothing running or waiting, so the map stays
        // as large as the tenants being served, not every tenant ever.
        if tenants.len() > 1024 {
            let share = self.tenant_share;
            tenants.retain(|_, semaphore| {
                Arc::strong_count(semaphore) > 1 || semaphore.available_permits() < share
            });
        }
        tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.tenant_share)))
            .clone()
    }

    /// A heavy slot of `tenant`, held as long as the answer is: for a
    /// streamed read (an export) whose work outlives the handler.
    pub async fn admit(&self, tenant: &str) -> Result<Admission, Error> {
        let (own, shared) = self.permits(tenant).await?;
        Ok(Admission { _own: own, _shared: shared })
    }

    async fn permits(
        &self,
        tenant: &str,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Error> {
        let wait = async {
            let own = self.tenant(tenant).acquire_owned().await;
            let shared = self.slots.clone().acquire_owned().await;
            match (own, shared) {
                (Ok(own), Ok(shared)) => Ok((own, shared)),
                _ => Err(Error::ShuttingDown),
            }
        };
        match tokio::time::timeout(self.queue_wait, wait).await {
            Ok(permits) => permits,
            Err(_) => {
                tracing::warn!(tenant, "heavy reads queued past the wait; answering 503");
                Err(Error::Overloaded)
            }
        }
    }

    /// Runs `work` on the blocking pool as a heavy read of `tenant`, each
    /// statement within `budget` (none: unbounded, for the admin's and
    /// auditor's long reports).
    pub async fn run<T: Send + 'static>(
        &self,
        tenant: &str,
        budget: Option<Duration>,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permits = self.permits(tenant).await?;
        let outcome = tokio::task::spawn_blocking(move || {
            // Held by the work, not the request: a client that goes away
            // does not free the slot while the read still runs.
            let _permits = permits;
            let _lane = enter_heavy(budget);
            work()
        })
        .await
        .map_err(|error| Error::Internal(format!("a heavy read failed: {error}")))?;
        outcome.map_err(|error| match error {
            Error::BudgetExceeded { .. } => Error::BudgetExceeded {
                budget_ms: budget
                    .map(|budget| u64::try_from(budget.as_millis()).unwrap_or(u64::MAX)),
            },
            other => other,
        })
    }
}
