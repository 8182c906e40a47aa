//! The daily Synchronize: when each tenant's run is due, and the loop that
//! starts it.
//!
//! A tenant's run is due when the last scheduled instant (its local time in
//! its time zone, on the latest day it has passed) is later than its last
//! scheduled run, or than the tenant itself when it never had one. So a
//! server that was down at the scheduled time runs once when it is back,
//! never once per missed day. Time comes from a [`Clock`], so tests drive
//! days without sleeping through them. Time zones and daylight saving are
//! `jiff`'s: a local time that a clock change skips fires at the first
//! instant after the gap.

use std::sync::Arc;
use std::time::Duration;

use events::time::format_millis;
use jiff::Timestamp;
use jiff::civil::DateTime;
use projections::members;
use projections::tenancy;

use super::config::{Schedule, SyncSettings, stored_or_default};
use super::{RunOptions, Trigger, run, scheduler_context};
use crate::error::Error;
use crate::store::Store;

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The last scheduled instant at or before `now`.
pub fn last_fire(schedule: &Schedule, now: Timestamp) -> Result<Timestamp, Error> {
    let zone = schedule.zone()?;
    let time = schedule.local_time()?;
    let today = now.to_zoned(zone.clone()).date();
    let at = |date: jiff::civil::Date| {
        DateTime::from_parts(date, time)
            .to_zoned(zone.clone())
            .map(|zoned| zoned.timestamp())
            .map_err(|error| Error::Internal(format!("scheduling: {error}")))
    };
    let candidate = at(today)?;
    if candidate <= now {
        return Ok(candidate);
    }
    let yesterday =
        today.yesterday().map_err(|error| Error::Internal(format!("scheduling: {error}")))?;
    at(yesterday)
}

/// The next scheduled instant after `now` (shown to admins).
pub fn next_fire(schedule: &Schedule, now: Timestamp) -> Result<Timestamp, Error> {
    let zone = schedule.zone()?;
    let time = schedule.local_time()?;
    let mut date = now.to_zoned(zone.clone()).date();
    for _ in 0..3 {
        let instant = DateTime::from_parts(date, time)
            .to_zoned(zone.clone())
            .map_err(|error| Error::Internal(format!("scheduling: {error}")))?
            .timestamp();
        if instant > now {
            return Ok(instant);
        }
        date = date.tomorrow().map_err(|error| Error::Internal(format!("scheduling: {error}")))?;
    }
    Err(Error::Internal("no next scheduled instant".to_owned()))
}

/// The tenants whose daily run is due at `now`, with the instant it is for.
pub fn due_tenants(store: &Store, now: Timestamp) -> Result<Vec<(String, Timestamp)>, Error> {
    store.read(|connection| {
        let mut due = Vec::new();
        for tenant in tenancy::list_tenants(connection)? {
            let stored =
                members::setting(connection, &tenant.tenant_id, "sync")?.map(|(value, _)| value);
            let settings: SyncSettings = match stored_or_default(stored) {
                Ok(settings) => settings,
                Err(error) => {
                    // One tenant's unreadable settings must not stop the others'.
                    tracing::error!(tenant = %tenant.name, %error, "skipping the daily run");
                    continue;
                }
            };
            let Some(schedule) = settings.schedule else { continue };
            let fire = match last_fire(&schedule, now) {
                Ok(fire) => fire,
                Err(error) => {
                    // One tenant's bad schedule must not stop the others'.
                    tracing::warn!(tenant = %tenant.tenant_id, %error, "cannot schedule Synchronize");
                    continue;
                }
            };
            let since = members::last_scheduled_for(connection, &tenant.tenant_id)?
                .unwrap_or(tenant.created_at);
            if format_millis(fire) > since {
                due.push((tenant.tenant_id, fire));
            }
        }
        Ok(due)
    })
}

/// Runs every due tenant's Synchronize once; returns how many ran.
/// Blocking. A tenant whose run fails (or is already running) is logged;
/// it is tried again at the next tick only if its run never started.
pub fn tick(store: &Store, now: Timestamp, options: RunOptions) -> Result<usize, Error> {
    let mut ran = 0;
    for (tenant, fire) in due_tenants(store, now)? {
        let options = RunOptions { scheduled_for: Some(fire), ..options.clone() };
        match run(store, &tenant, Trigger::Scheduled, scheduler_context(), options) {
            Ok(record) => {
                ran += 1;
                tracing::info!(tenant = %tenant, run = %record.run_id, status = %record.status, "scheduled Synchronize finished");
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant, %error, "scheduled Synchronize did not run")
            }
        }
    }
    Ok(ran)
}

/// Checks every `interval` whether a tenant's daily run is due, until the
/// task is dropped. Runs happen on a blocking thread.
pub async fn run_forever(store: Arc<Store>, clock: Arc<dyn Clock>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = Arc::clone(&store);
        let now = clock.now();
        let ticked =
            tokio::task::spawn_blocking(move || tick(&store, now, RunOptions::default())).await;
        match ticked {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "the Synchronize scheduler could not check its tenants")
            }
            Err(error) => tracing::error!(%error, "the Synchronize scheduler's check panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|error| unreachable!("{text}: {error}"))
    }

    #[test]
    fn fires_follow_the_local_time_and_daylight_saving() {
        let paris = Schedule { time: "02:30".to_owned(), time_zone: "Europe/Paris".to_owned() };
        // Winter: 02:30 in Paris is 01:30 UTC.
        assert_eq!(
            last_fire(&paris, at("2026-01-15T12:00:00Z")).ok(),
            Some(at("2026-01-15T01:30:00Z"))
        );
        assert_eq!(
            last_fire(&paris, at("2026-01-15T01:00:00Z")).ok(),
            Some(at("2026-01-14T01:30:00Z"))
        );
        // Summer: 00:30 UTC.
        assert_eq!(
            next_fire(&paris, at("2026-07-01T00:00:00Z")).ok(),
            Some(at("2026-07-01T00:30:00Z"))
        );
        // 29 March 2026: 02:30 does not exist in Paris; it fires right after the gap.
        assert_eq!(
            next_fire(&paris, at("2026-03-28T23:00:00Z")).ok(),
            Some(at("2026-03-29T01:30:00Z"))
        );
    }
}
