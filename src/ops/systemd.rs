//! The systemd watchdog: when the unit sets `WatchdogSec=`, systemd passes `WATCHDOG_USEC` and restarts
//! the service if no `WATCHDOG=1` arrives within that time. (READY=1 and STOPPING=1 are sent by the
//! daemon at the points they describe.)
//!
//! The pings come from a task on the daemon's own runtime, at half the interval. A runtime whose worker
//! threads are all blocked or deadlocked stops scheduling that task, the pings stop, and systemd restarts
//! the service — the failure a watchdog exists for. An unreachable database or marketplace does not stop
//! the pings: a restart would not cure them, and `/readyz` and the logs report them. systemd keeps the
//! watchdog armed while the service stops, so the pings go on through the shutdown deadline, until the
//! [`Watchdog`] is dropped.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

/// The running ping task; dropping it stops the pings.
pub struct Watchdog {
    task: JoinHandle<()>,
    pub interval: Duration,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the watchdog pings when systemd asked for them (`WATCHDOG_USEC`, and `WATCHDOG_PID` naming
/// this process when set).
pub fn start_watchdog() -> Option<Watchdog> {
    let timeout = sd_notify::watchdog_enabled()?;
    let interval = (timeout / 2).max(Duration::from_millis(1));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                tracing::warn!(error = %e, "could not ping the systemd watchdog");
            }
        }
    });
    Some(Watchdog { task, interval })
}
