//! The timer of every periodic duty (reloads, rollups, REST refreshes): one tick per period
//! until a stop token fires.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// `while ticks.next().await { duty }`: the first tick comes at once, then one per period; a
/// duty that overruns delays the next tick rather than bunching the missed ones.
pub struct Ticks {
    interval: Interval,
    stop: CancellationToken,
}

impl Ticks {
    pub fn new(period: Duration, stop: CancellationToken) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, stop }
    }

    /// Waits for the next tick: true then, false once `stop` has fired.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}
