//! One level of load: N requests in flight. Workers (an HTTP connection each, or a UDP socket
//! with several requests in flight) connect, start together, loop request → answer until the
//! level's time is up, and hand back their counts. Latencies of successful requests go into
//! one HDR histogram per level (fixed size, whatever the request count).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::{
    http,
    plan::{MAX_TIMEOUT_MS, Plan, Target},
    scan::{MAX_KINDS, OTHER_KIND},
    udp,
};

/// Latencies a worker collects before taking the histogram lock once for all of them.
const BATCH: usize = 128;
/// Highest latency the histogram tells apart, in µs: the longest timeout, which no answer
/// counted takes longer than.
const MAX_LATENCY_US: u64 = MAX_TIMEOUT_MS * 1000;

/// How a run is stopped early. `soft`: send no new request, let those in flight finish
/// (each is bounded by the timeout). `hard`: abandon those in flight too.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub soft: CancellationToken,
    pub hard: CancellationToken,
}

/// What the progress display reads while a level runs.
#[derive(Debug, Default)]
pub struct Live {
    /// When the level's clock started (once every worker had its connection).
    pub started: OnceLock<Instant>,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// Requests, successes and errors by kind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, kind: &str) {
        self.requests += 1;
        self.add_errors(kind, 1);
    }

    fn add_errors(&mut self, kind: &str, n: u64) {
        if let Some(count) = self.errors.get_mut(kind) {
            *count += n;
        } else if self.errors.len() < MAX_KINDS {
            self.errors.insert(kind.to_owned(), n);
        } else {
            *self.errors.entry(OTHER_KIND.to_owned()).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.successes += other.successes;
        for (kind, n) in &other.errors {
            self.add_errors(kind, *n);
        }
    }
}

/// The outcome of one level.
#[derive(Debug)]
pub struct LevelOutcome {
    pub concurrency: usize,
    pub tally: Tally,
    /// From the start signal until the level's end or its last answer, whichever is later: a
    /// request that got no answer (a timeout) does not hold the level open while it is waited
    /// out. Cut short by Ctrl-C: until the last worker was done.
    pub elapsed: Duration,
    /// Latencies of the successful requests, in µs.
    pub latency: Histogram<u64>,
    /// The level was cut short by Ctrl-C.
    pub interrupted: bool,
}

/// An empty latency histogram: 1 µs to an hour, 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a latency histogram")
}

/// What the workers of one level share.
struct Shared {
    /// One histogram per level; each worker locks it once per [`BATCH`] latencies, so the
    /// lock is rare and never held across an await.
    latency: Mutex<Histogram<u64>>,
    live: Arc<Live>,
}

/// Runs the plan's level number `level` (an index into its levels) against its target.
pub async fn run_level(
    plan: &Plan,
    level: usize,
    stop: &Stop,
    live: Arc<Live>,
) -> anyhow::Result<LevelOutcome> {
    let concurrency = plan.levels[level];
    let shared = Arc::new(Shared {
        latency: Mutex::new(new_histogram()?),
        live,
    });
    let ready = Arc::new(Semaphore::new(0));
    let (start_tx, start_rx) = watch::channel(None);
    let per_worker = plan.per_worker();
    let count = plan.workers(concurrency);
    let first_id = plan.first_worker_id(level);
    let mut workers = Vec::with_capacity(count);
    for index in 0..count {
        let worker = Worker {
            index,
            id: first_id + index,
            ready: ready.clone(),
            start: start_rx.clone(),
            stop: stop.clone(),
            recorder: Recorder {
                shared: shared.clone(),
                batch: Vec::with_capacity(BATCH),
                tally: Tally::default(),
                last_answer: None,
                unpublished: (0, 0),
            },
        };
        workers.push(match &plan.target {
            Target::Http(requests) => {
                tokio::spawn(http::run(worker, requests.clone(), plan.timeout))
            }
            Target::Udp(requests) => {
                let depth = per_worker.min(concurrency - index * per_worker);
                tokio::spawn(udp::run(worker, requests.clone(), plan.timeout, depth))
            }
        });
    }
    // Every worker has its connection before the clock starts.
    let permits = u32::try_from(count).context("too many workers")?;
    tokio::select! {
        acquired = ready.acquire_many(permits) => {
            acquired.context("waiting for the workers to connect")?.forget();
        }
        _ = stop.hard.cancelled() => {}
    }
    let started = Instant::now();
    let _ = shared.live.started.set(started);
    let deadline = started + plan.duration;
    // Workers only wait on this; if they are all gone there is nobody to tell.
    let _ = start_tx.send(Some(deadline));
    // Interrupted: stopped before its time was up, not while its last answers were awaited.
    let soft = stop.soft.clone();
    let cut_short = tokio::spawn(async move {
        tokio::select! {
            biased;
            () = soft.cancelled() => Instant::now() < deadline,
            () = tokio::time::sleep_until(deadline.into()) => false,
        }
    });

    let mut tally = Tally::default();
    let mut last_answer = deadline;
    for worker in workers {
        let done = worker.await.context("a stress worker failed")?;
        tally.merge(&done.tally);
        last_answer = last_answer.max(done.last_answer.unwrap_or(started));
    }
    let interrupted = cut_short.await.context("watching for a stop")?;
    let elapsed = if interrupted {
        started.elapsed()
    } else {
        last_answer.saturating_duration_since(started)
    };
    let latency = std::mem::replace(
        &mut *shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        new_histogram()?,
    );
    Ok(LevelOutcome {
        concurrency,
        tally,
        elapsed,
        latency,
        interrupted,
    })
}

/// What every protocol's worker gets: its index, the start line, the stop signals and its
/// recorder.
pub struct Worker {
    /// Its place in its level.
    pub index: usize,
    /// Unique over the run ([`Plan::first_worker_id`]).
    pub id: usize,
    ready: Arc<Semaphore>,
    start: watch::Receiver<Option<Instant>>,
    pub stop: Stop,
    pub recorder: Recorder,
}

impl Worker {
    /// Reports this worker connected and waits for the level to start; the deadline, or
    /// `None` if the run stopped first.
    pub async fn started(&mut self) -> Option<Instant> {
        self.ready.add_permits(1);
        let hard = self.stop.hard.clone();
        let deadline = tokio::select! {
            started = self.start.wait_for(Option::is_some) => started.ok().and_then(|d| *d),
            _ = hard.cancelled() => None,
        };
        deadline.filter(|_| !self.stop.soft.is_cancelled())
    }

    /// Whether to send another request.
    pub fn keep_going(&self, deadline: Instant) -> bool {
        !self.stop.soft.is_cancelled() && Instant::now() < deadline
    }

    /// Flushes the latencies and returns this worker's counts.
    pub fn finish(mut self) -> Done {
        self.recorder.flush();
        Done {
            tally: self.recorder.tally,
            last_answer: self.recorder.last_answer,
        }
    }
}

/// What a worker hands back: its counts, and when its last answer came (none: no request of
/// it was answered).
pub struct Done {
    tally: Tally,
    last_answer: Option<Instant>,
}

/// A worker's own counts, and its batch of latencies and progress on the way to the shared
/// histogram and progress counters (published every [`BATCH`] requests, not per request).
pub struct Recorder {
    shared: Arc<Shared>,
    batch: Vec<u64>,
    tally: Tally,
    /// When the last answer (success or error) came; a timeout is none.
    last_answer: Option<Instant>,
    /// Completed and failed requests not yet added to the progress counters.
    unpublished: (u64, u64),
}

impl Recorder {
    /// A request sent at `sent` answered with success now.
    pub fn success(&mut self, sent: Instant) {
        let now = Instant::now();
        self.last_answer = Some(now);
        self.tally.requests += 1;
        self.tally.successes += 1;
        self.unpublished.0 += 1;
        let latency = now.saturating_duration_since(sent);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.batch.push(us.max(1));
        if self.unpublished.0 >= BATCH as u64 {
            self.flush();
        }
    }

    /// A request that failed: answered with an error (`kind`, its code) or not sent.
    pub fn error(&mut self, kind: &str) {
        self.last_answer = Some(Instant::now());
        self.failed(kind);
    }

    /// A request that got no answer within the timeout.
    pub fn timed_out(&mut self) {
        self.failed("timeout");
    }

    fn failed(&mut self, kind: &str) {
        self.tally.error(kind);
        self.unpublished.0 += 1;
        self.unpublished.1 += 1;
        if self.unpublished.0 >= BATCH as u64 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let (completed, failed) = std::mem::take(&mut self.unpublished);
        let live = &self.shared.live;
        live.completed.fetch_add(completed, Ordering::Relaxed);
        live.failed.fetch_add(failed, Ordering::Relaxed);
        if self.batch.is_empty() {
            return;
        }
        let mut histogram = self
            .shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &us in &self.batch {
            histogram.saturating_record(us);
        }
        drop(histogram);
        self.batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_up_to_the_longest_timeout_are_told_apart() {
        let mut histogram = new_histogram().unwrap();
        for us in [90_000_000, MAX_TIMEOUT_MS * 1000] {
            histogram.record(us).unwrap();
        }
        let p50 = histogram.value_at_quantile(0.5);
        assert!(p50.abs_diff(90_000_000) < 90_000, "{p50}");
    }

    #[test]
    fn error_kinds_beyond_the_cap_are_counted_as_other() {
        let mut tally = Tally::default();
        for i in 0..MAX_KINDS + 5 {
            tally.error(&format!("kind_{i}"));
        }
        tally.error("kind_0");
        assert_eq!(tally.errors.len(), MAX_KINDS + 1);
        assert_eq!(tally.errors[OTHER_KIND], 5);
        assert_eq!(tally.errors["kind_0"], 2);
        assert_eq!(tally.requests, MAX_KINDS as u64 + 6);
    }
}
