//! Writing the request log: the SCIM requests of admitted tokens that
//! wrote or failed, as answered (see `projections::requests` for the table
//! and why it is telemetry, not history).
//!
//! Requests never wait for it. Rows gather in memory and go to the writer
//! in batches, a fifth of a second apart or sooner when many pile up, so
//! recording costs the writer one small insert per request, not a command
//! each. It owns only that buffer; it must never write events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use projections::requests::{self, RequestRow};

use crate::store::Store;

/// Rows sent to the writer at once, without waiting for the tick.
const BATCH_ROWS: usize = 512;
/// Rows held while the writer cannot keep up; beyond, new rows are dropped
/// (and counted) rather than grow memory without bound.
const BUFFERED_ROWS_MAX: usize = 20_000;
const TICK: Duration = Duration::from_millis(200);

/// The default bound of the table, in rows per tenant.
pub const KEEP_ROWS_DEFAULT: u64 = 100_000;

#[derive(Debug)]
pub struct RequestLog {
    buffer: Mutex<Vec<RequestRow>>,
    /// Rows kept per tenant.
    keep: u64,
    /// Rows written per tenant since its last trim. Finding where a
    /// tenant's newest `keep` rows start walks `keep` index entries, so a
    /// tenant is trimmed once a tenth of its bound has come in (and at its
    /// first batch after a start): it holds at most 110 % of the bound.
    since_trim: Mutex<HashMap<String, u64>>,
    ticking: AtomicBool,
    dropped: AtomicU64,
}

impl RequestLog {
    pub fn new(keep: u64) -> RequestLog {
        RequestLog {
            buffer: Mutex::new(Vec::new()),
            keep,
            since_trim: Mutex::new(HashMap::new()),
            ticking: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// The tenants of `rows` due for a trim, counted as trimmed.
    fn due(&self, rows: &[RequestRow]) -> Vec<String> {
        let every = (self.keep / 10).max(1);
        let mut since = self.since_trim.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut due = Vec::new();
        for row in rows {
            let count = match since.get_mut(&row.tenant_id) {
                Some(count) => count,
                None => {
                    due.push(row.tenant_id.clone());
                    since.entry(row.tenant_id.clone()).or_insert(0)
                }
            };
            *count += 1;
            if *count >= every && !due.contains(&row.tenant_id) {
                due.push(row.tenant_id.clone());
            }
        }
        for tenant in &due {
            since.insert(tenant.clone(), 0);
        }
        due
    }

    fn take(&self) -> Vec<RequestRow> {
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Queues one answered request.
    pub fn note(self: &Arc<Self>, store: &Arc<Store>, row: RequestRow) {
        let full = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if buffer.len() >= BUFFERED_ROWS_MAX {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("the request log is behind; dropping rows until it catches up");
                }
                return;
            }
            buffer.push(row);
            buffer.len() >= BATCH_ROWS
        };
        if full {
            drop(self.write(store));
        }
        if !self.ticking.swap(true, Ordering::AcqRel) {
            self.tick(Arc::downgrade(store));
        }
    }

    /// Sends what is buffered to the writer; await it to know it is stored.
    pub fn write(&self, store: &Store) -> events::Pending<(), crate::error::Error> {
        let rows = self.take();
        let keep = self.keep;
        let due = self.due(&rows);
        store.command(None, move |tx| {
            if !rows.is_empty() {
                let trim: Vec<&str> = due.iter().map(String::as_str).collect();
                requests::record(tx.db(), &rows, keep, &trim)?;
            }
            Ok(())
        })
    }

    /// Writes the buffer every tick for as long as the store lives.
    fn tick(self: &Arc<Self>, store: Weak<Store>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.ticking.store(false, Ordering::Release);
            return;
        };
        let log = Arc::clone(self);
        runtime.spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(store) = store.upgrade() else { break };
                let dropped = log.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(dropped, "request log rows dropped while the writer was behind");
                }
                let empty =
                    log.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_empty();
                if !empty && let Err(error) = log.write(&store).await {
                    tracing::warn!(%error, "request log rows not written");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str) -> RequestRow {
        RequestRow {
            tenant_id: tenant.to_owned(),
            request_id: "r".to_owned(),
            at: "2026-01-01T00:00:00.000Z".to_owned(),
            token_id: "t".to_owned(),
            method: "POST".to_owned(),
            target: "/scim/v2/Users".to_owned(),
            status: 400,
            duration_ms: 1,
            user_agent: None,
            error: None,
        }
    }

    /// A tenant is trimmed at its first batch, then once a tenth of its
    /// bound has come in since: it never holds more than 110 % of it.
    #[test]
    fn a_tenant_is_trimmed_once_a_tenth_of_its_bound_came_in() {
        let log = RequestLog::new(100);
        assert_eq!(log.due(&[row("a"), row("b")]), ["a", "b"], "first seen");
        let nine: Vec<RequestRow> = (0..9).map(|_| row("a")).collect();
        assert_eq!(log.due(&nine), Vec::<String>::new(), "9 of 10 since the trim");
        assert_eq!(log.due(&[row("b"), row("a")]), ["a"], "the tenth of a");
        let eleven: Vec<RequestRow> = (0..11).map(|_| row("b")).collect();
        assert_eq!(log.due(&eleven), ["b"]);
        assert_eq!(log.due(&[row("a")]), Vec::<String>::new(), "counting starts again");
    }
}
