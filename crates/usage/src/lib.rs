//! Metering: every request yields a [`UsageEvent`]; events go through a bounded channel to a
//! batch writer (flush on size or interval) and into the store, never on the request path.
//! Nothing is dropped silently: a full channel makes the request wait (backpressure, counted)
//! instead of losing the event, and shutdown drains the channel before the writer exits.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use beast_core::UsageEvent;
use beast_store::Store;
use serde::Serialize;
use tokio::sync::{
    Notify,
    mpsc::{self, PermitIterator, error::TrySendError},
};
use tokio_util::sync::CancellationToken;

/// Attempts to write one batch, once the node is stopping, before its events are counted as
/// dropped.
const WRITE_ATTEMPTS: usize = 8;
/// The longest pause between two tries of a batch the store refused.
const MAX_WRITE_PAUSE: Duration = Duration::from_secs(5);
/// How long a filling batch waits between looks at the channel.
const FILL_STEP: Duration = Duration::from_millis(5);

/// Counters of the pipeline (`dropped` must read 0).
#[derive(Debug, Default)]
pub struct UsageStats {
    queued: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    backpressured: AtomicU64,
    write_retries: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageStatsSnapshot {
    pub queued: u64,
    pub written: u64,
    pub batches: u64,
    pub backpressured: u64,
    pub write_retries: u64,
    pub dropped: u64,
}

impl UsageStats {
    pub fn snapshot(&self) -> UsageStatsSnapshot {
        UsageStatsSnapshot {
            queued: self.queued.load(Relaxed),
            written: self.written.load(Relaxed),
            batches: self.batches.load(Relaxed),
            backpressured: self.backpressured.load(Relaxed),
            write_retries: self.write_retries.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

/// Where request handlers send usage events. Cheap to clone.
#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageEvent>,
    stats: Arc<UsageStats>,
    /// Told when a request finds the channel full, so the writer takes from it at once.
    full: Arc<Notify>,
}

impl UsageSink {
    /// Room in the channel for `n` events, waited for when it is full (the caller waits
    /// rather than an event being lost). The only wait of metering: a request takes its room
    /// first, then counts and queues its events with [`Room::record`], which never waits, so
    /// a request dropped part-way (its client hung up) has counted and queued nothing, or all.
    /// Room for more events than the channel holds cannot be had: a node's channel holds at
    /// least as many as one request records. `None` once the channel is closed (the node is
    /// stopping: its writer takes no more events, and writes those it has): nothing recorded
    /// now would be written, so the caller is to refuse the request rather than answer it
    /// unmetered.
    pub async fn room(&self, n: usize) -> Option<Room<'_>> {
        let n = n.min(self.tx.max_capacity());
        let permits = match self.tx.try_reserve_many(n) {
            Ok(permits) => permits,
            Err(TrySendError::Full(())) => {
                self.stats.backpressured.fetch_add(1, Relaxed);
                self.full.notify_one();
                // Boxed: this rare wait's future would otherwise make every request's larger.
                Box::pin(self.tx.reserve_many(n)).await.ok()?
            }
            Err(TrySendError::Closed(())) => return None,
        };
        Some(Room {
            permits,
            sink: self,
        })
    }

    pub fn stats(&self) -> &Arc<UsageStats> {
        &self.stats
    }

    /// Events waiting in the channel for the batch writer.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Room taken in the usage channel ([`UsageSink::room`]); what is left unused is given
/// back when it is dropped.
pub struct Room<'a> {
    permits: PermitIterator<'a, UsageEvent>,
    sink: &'a UsageSink,
}

impl Room<'_> {
    /// Queues an event into the room taken, without waiting. One past it is counted as
    /// submitted and dropped at once, so that every event submitted is, in the end, written or
    /// dropped.
    pub fn record(&mut self, event: UsageEvent) {
        let stats = &self.sink.stats;
        stats.queued.fetch_add(1, Relaxed);
        match self.permits.next() {
            Some(permit) => permit.send(event),
            None => {
                stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
}

/// The batch writer's half of the pipeline.
pub struct UsageWriter {
    rx: mpsc::Receiver<UsageEvent>,
    stats: Arc<UsageStats>,
    full: Arc<Notify>,
    options: WriterOptions,
}

pub fn pipeline(options: WriterOptions) -> (UsageSink, UsageWriter) {
    let (tx, rx) = mpsc::channel(options.capacity.max(1));
    let stats = Arc::new(UsageStats::default());
    let full = Arc::new(Notify::new());
    (
        UsageSink {
            tx,
            stats: stats.clone(),
            full: full.clone(),
        },
        UsageWriter {
            rx,
            stats,
            full,
            options,
        },
    )
}

impl UsageWriter {
    /// Writes batches until `stop` fires, then stops accepting, drains and writes the rest.
    pub async fn run(mut self, store: Arc<dyn Store>, stop: CancellationToken) {
        let size = self.options.batch_size.max(1);
        let mut batch = Vec::with_capacity(size);
        // Whether the store refused a batch to the end (only ever while stopping).
        let mut refusing = false;
        loop {
            // Stop first: under constant load shutdown must not wait for a quiet moment.
            let got = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                n = self.rx.recv_many(&mut batch, size) => n,
            };
            if got == 0 {
                break;
            }
            // Let the batch fill in steps rather than waking for every event: under load the
            // writer then runs a few times per batch, not once per request. A request that
            // finds the channel full cuts the step short: it is waiting for room.
            let deadline = tokio::time::Instant::now() + self.options.flush_interval;
            loop {
                let queued = self.rx.len().min(size - batch.len());
                if queued > 0 {
                    self.rx.recv_many(&mut batch, queued).await;
                }
                let now = tokio::time::Instant::now();
                if batch.len() >= size || now >= deadline || self.rx.is_closed() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.min(now + FILL_STEP)) => {}
                    () = self.full.notified() => {}
                }
            }
            refusing = !self.write(&*store, &mut batch, &stop).await;
        }
        self.rx.close();
        // Once the store has refused one batch to the end, the rest are not tried one by one:
        // the node stops within one batch's tries, whatever is left in the channel.
        while self.rx.recv_many(&mut batch, size).await > 0 {
            if refusing {
                self.give_up(&mut batch);
            } else {
                refusing = !self.write(&*store, &mut batch, &stop).await;
            }
        }
        tracing::info!(
            written = self.stats.written.load(Relaxed),
            "usage writer drained"
        );
    }

    /// Writes `batch`, then empties it. A write the store refuses (its disk full, its lock held
    /// by another process) is tried again, with pauses of up to 5 s, for as long as the node
    /// runs: the rows wait, and requests wait for room behind them, rather than be lost. Once
    /// `stop` has fired, a batch still refused after [`WRITE_ATTEMPTS`] more tries is dropped
    /// (counted, logged), and `false` returned: a node must be able to stop.
    async fn write(
        &self,
        store: &dyn Store,
        batch: &mut Vec<UsageEvent>,
        stop: &CancellationToken,
    ) -> bool {
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(MAX_WRITE_PAUSE)
            .without_max_times()
            .build();
        let mut tries_stopping = 0;
        loop {
            let Err(e) = store.insert_usage(batch).await else {
                self.stats.written.fetch_add(batch.len() as u64, Relaxed);
                self.stats.batches.fetch_add(1, Relaxed);
                batch.clear();
                return true;
            };
            if stop.is_cancelled() {
                tries_stopping += 1;
                if tries_stopping == WRITE_ATTEMPTS {
                    tracing::error!(error = %e, "the store refuses usage rows while the node stops");
                    self.give_up(batch);
                    return false;
                }
            }
            self.stats.write_retries.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, rows = batch.len(), "usage batch write failed, retrying");
            // A stop cuts the pause it comes in short (the tries it leaves are the last); the
            // pauses between those are kept, for an error that passes to pass.
            let pause = tokio::time::sleep(pauses.next().unwrap_or(MAX_WRITE_PAUSE));
            if stop.is_cancelled() {
                pause.await;
            } else {
                tokio::select! {
                    () = pause => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }

    /// Drops `batch`, counted and logged, and empties it.
    fn give_up(&self, batch: &mut Vec<UsageEvent>) {
        self.stats.dropped.fetch_add(batch.len() as u64, Relaxed);
        tracing::error!(rows = batch.len(), "usage batch lost");
        batch.clear();
    }
}

#[cfg(test)]
mod tests;
