//! The stop switch every long-running task watches (a `watch` channel of
//! `bool`: on means stop). It owns only the waiting; what a task does when
//! it stops is its own business.

use tokio::sync::watch;

/// Whether a stop switch is on, or gone (its owner dropped without
/// turning it on: a server that was not shut down, say).
pub fn is_stopped(switch: &watch::Receiver<bool>) -> bool {
    *switch.borrow() || switch.has_changed().is_err()
}

/// Resolves once the switch is on or gone. (Waiting on `changed()` alone
/// returns at once, again and again, once the sender is gone: a spin.)
pub async fn until_stopped(switch: &mut watch::Receiver<bool>) {
    loop {
        if *switch.borrow_and_update() {
            return;
        }
        if switch.changed().await.is_err() {
            return;
        }
    }
}
