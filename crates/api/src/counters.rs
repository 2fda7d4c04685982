//! The node's 24 runtime counters (the seeds' `RuntimeMetrics`), read at `/admin/stress-stats`,
//! and the concurrency governor that bounds the price requests in flight.
//!
//! Every counter is a relaxed atomic: one `fetch_add` per event on the hot path, never a lock.
//! Those that every request touches sit on cache lines of their own, so HTTP tasks and UDP
//! workers on different cores do not fight over one line. Counters only ever grow (as a
//! Prometheus exporter wants them); `/admin/stress-reset` records a baseline that later
//! snapshots are taken from, so "since reset" figures start again from zero without a write on
//! the hot path. Gauges (requests in flight, queue depth, pool connections) are read as they are.
//!
//! Some figures are owned where they happen and only read here: UDP packet counts in
//! [`UdpStats`] (a field of these counters), background work in the usage pipeline's
//! [`UsageStats`](beast_usage::UsageStats), connection figures in the store's pool.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use beast_core::{ApiError, CacheTier};
use beast_store::Store;
use beast_usage::UsageSink;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use serde::Serialize;

use crate::udp::UdpStats;

/// The live counters of one node. Shared as `Arc<RuntimeCounters>` in `AppState`.
#[derive(Debug)]
pub struct RuntimeCounters {
    tcp_requests: CachePadded<AtomicU64>,
    report_requests: AtomicU64,
    memory_hits: CachePadded<AtomicU64>,
    rest_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Packet counters of the UDP price listener (also shown by `/health`).
    pub udp: UdpStats,
    /// Packet counters of the UDP report listener: shown by `/health`, not among the 24.
    pub report_udp: UdpStats,
    rate_limited: AtomicU64,
    quota_exceeded: AtomicU64,
    auth_failures: AtomicU64,
    /// The governor's gauge, on a line of its own that every request writes anyway.
    in_flight: CachePadded<Gauge>,
    governor_rejections: AtomicU64,
    errors_4xx: AtomicU64,
    errors_5xx: AtomicU64,
    /// Most price requests in flight at once (`governor_max_in_flight`); more are refused.
    limit: u64,
    /// Taken only by the admin endpoints, never on the hot path.
    baseline: Mutex<Baseline>,
}

/// Price requests being answered now, and the most seen at once since start or the last
/// reset.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicU64,
    max: AtomicU64,
}

/// What a reset recorded: when, and the counts then.
#[derive(Debug)]
struct Baseline {
    at: Instant,
    counts: Counters,
}

/// The 24 figures, in the order `/admin/stress-stats` lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Counters {
    /// HTTP price requests (`/price`, `/prices`), refused ones included.
    pub tcp_requests: u64,
    /// UDP price requests: datagrams read as requests (JSON within the size limit), each
    /// answered but refusals for want of a key past their address's allowance (those are
    /// also among `udp_packets_dropped`); counted once per batch of datagrams read.
    pub udp_requests: u64,
    /// Report requests, either protocol.
    pub report_requests: u64,
    /// Prices answered from the in-process book.
    pub memory_hits: u64,
    /// Prices answered from the shared cache (0 until nodes share one).
    pub shared_cache_hits: u64,
    /// Prices fetched on demand from an exchange's REST ticker.
    pub rest_hits: u64,
    /// Prices no tier could answer (no price yet, or only a stale one).
    pub cache_misses: u64,
    /// Datagrams received on the UDP price port.
    pub udp_packets_received: u64,
    /// Replies sent on the UDP price port.
    pub udp_packets_sent: u64,
    /// Datagrams dropped unanswered: oversized, not JSON, or refused for want of a key past
    /// their address's allowance.
    pub udp_packets_dropped: u64,
    /// Usage events submitted to the pipeline: each is, in the end, written or dropped.
    pub bg_work_submitted: u64,
    /// Usage events lost (must stay 0).
    pub bg_work_dropped: u64,
    /// Usage events written to the store.
    pub bg_work_completed: u64,
    /// Gauge: usage events waiting in the channel for the batch writer.
    pub batch_rows_queued: u64,
    /// Gauge: database connections open.
    pub db_open_conns: u64,
    /// Gauge: database connections in use.
    pub db_in_use_conns: u64,
    /// Requests refused by their key's rate limit.
    pub rate_limited: u64,
    /// Requests refused because their key's monthly quota is used up.
    pub quota_exceeded: u64,
    /// Price and report requests refused for their key (none, or one that is not valid): 401,
    /// or 429 when their address has no unpaid requests left.
    pub auth_failures: u64,
    /// Gauge: price requests being answered now.
    pub in_flight: u64,
    /// Highest `in_flight` since the last reset.
    pub max_in_flight: u64,
    /// Price requests refused because `in_flight` was at the governor's limit.
    pub governor_rejections: u64,
    /// Price requests answered with a 4xx status.
    pub errors_4xx: u64,
    /// Price requests answered with a 5xx status.
    pub errors_5xx: u64,
}

/// Whether a figure counts events since start (and only rises) or is a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Count,
    Gauge,
}

/// One figure as `/metrics` exports it: the field's name, its kind, its value and its help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figure {
    pub name: &'static str,
    pub kind: Kind,
    pub value: u64,
    pub help: &'static str,
}

impl Counters {
    /// Every figure, in field order. Tests hold it to the fields (each once, with its own
    /// value) and [`Counters::since`] to its kinds.
    pub fn figures(&self) -> [Figure; 24] {
        use Kind::{Count, Gauge};
        let f = |name, kind, value, help| Figure {
            name,
            kind,
            value,
            help,
        };
        [
            f(
                "tcp_requests",
                Count,
                self.tcp_requests,
                "HTTP price requests received",
            ),
            f(
                "udp_requests",
                Count,
                self.udp_requests,
                "UDP price requests received (datagrams read as requests)",
            ),
            f(
                "report_requests",
                Count,
                self.report_requests,
                "Report requests received, HTTP and UDP",
            ),
            f(
                "memory_hits",
                Count,
                self.memory_hits,
                "Prices answered from the in-process book",
            ),
            f(
                "shared_cache_hits",
                Count,
                self.shared_cache_hits,
                "Prices answered from the shared cache",
            ),
            f(
                "rest_hits",
                Count,
                self.rest_hits,
                "Prices fetched on demand from an exchange's REST API",
            ),
            f(
                "cache_misses",
                Count,
                self.cache_misses,
                "Price lookups with no fresh price",
            ),
            f(
                "udp_packets_received",
                Count,
                self.udp_packets_received,
                "UDP datagrams received",
            ),
            f(
                "udp_packets_sent",
                Count,
                self.udp_packets_sent,
                "UDP datagrams sent",
            ),
            f(
                "udp_packets_dropped",
                Count,
                self.udp_packets_dropped,
                "UDP datagrams dropped: oversized, not JSON, or keyless past the address's allowance",
            ),
            f(
                "bg_work_submitted",
                Count,
                self.bg_work_submitted,
                "Usage events submitted to the batch writer",
            ),
            f(
                "bg_work_dropped",
                Count,
                self.bg_work_dropped,
                "Usage events lost (must stay 0)",
            ),
            f(
                "bg_work_completed",
                Count,
                self.bg_work_completed,
                "Usage events written to the store",
            ),
            f(
                "batch_rows_queued",
                Gauge,
                self.batch_rows_queued,
                "Usage events waiting for the batch writer",
            ),
            f(
                "db_open_conns",
                Gauge,
                self.db_open_conns,
                "Open store connections",
            ),
            f(
                "db_in_use_conns",
                Gauge,
                self.db_in_use_conns,
                "Store connections in use",
            ),
            f(
                "rate_limited",
                Count,
                self.rate_limited,
                "Requests refused by their key's rate limit",
            ),
            f(
                "quota_exceeded",
                Count,
                self.quota_exceeded,
                "Requests refused by their key's monthly quota",
            ),
            f(
                "auth_failures",
                Count,
                self.auth_failures,
                "Requests refused for a missing, unknown or revoked key",
            ),
            f(
                "in_flight",
                Gauge,
                self.in_flight,
                "Price requests being answered",
            ),
            f(
                "max_in_flight",
                Gauge,
                self.max_in_flight,
                "Most price requests in flight at once since the last stress reset",
            ),
            f(
                "governor_rejections",
                Count,
                self.governor_rejections,
                "Price requests refused because too many were in flight",
            ),
            f(
                "errors_4xx",
                Count,
                self.errors_4xx,
                "Price requests answered with a 4xx status",
            ),
            f(
                "errors_5xx",
                Count,
                self.errors_5xx,
                "Price requests answered with a 5xx status",
            ),
        ]
    }

    /// Counts since `base` was taken; gauges and the high-water mark stay as they are. Every
    /// field is named (no `..self`), so a counter added later must be placed here.
    fn since(self, base: &Counters) -> Counters {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        Counters {
            batch_rows_queued: self.batch_rows_queued,
            db_open_conns: self.db_open_conns,
            db_in_use_conns: self.db_in_use_conns,
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            tcp_requests: d(self.tcp_requests, base.tcp_requests),
            udp_requests: d(self.udp_requests, base.udp_requests),
            report_requests: d(self.report_requests, base.report_requests),
            memory_hits: d(self.memory_hits, base.memory_hits),
            shared_cache_hits: d(self.shared_cache_hits, base.shared_cache_hits),
            rest_hits: d(self.rest_hits, base.rest_hits),
            cache_misses: d(self.cache_misses, base.cache_misses),
            udp_packets_received: d(self.udp_packets_received, base.udp_packets_received),
            udp_packets_sent: d(self.udp_packets_sent, base.udp_packets_sent),
            udp_packets_dropped: d(self.udp_packets_dropped, base.udp_packets_dropped),
            bg_work_submitted: d(self.bg_work_submitted, base.bg_work_submitted),
            bg_work_dropped: d(self.bg_work_dropped, base.bg_work_dropped),
            bg_work_completed: d(self.bg_work_completed, base.bg_work_completed),
            rate_limited: d(self.rate_limited, base.rate_limited),
            quota_exceeded: d(self.quota_exceeded, base.quota_exceeded),
            auth_failures: d(self.auth_failures, base.auth_failures),
            governor_rejections: d(self.governor_rejections, base.governor_rejections),
            errors_4xx: d(self.errors_4xx, base.errors_4xx),
            errors_5xx: d(self.errors_5xx, base.errors_5xx),
        }
    }
}

/// Figures computed from the counters since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Derived {
    pub tcp_rps: f64,
    pub udp_rps: f64,
    /// TCP, UDP and report requests per second.
    pub total_rps: f64,
    /// Memory hits among price lookups (memory, shared cache, REST, misses).
    pub memory_hit_pct: f64,
    /// Misses among price lookups.
    pub cache_miss_pct: f64,
    /// Dropped datagrams among those received.
    pub udp_drop_pct: f64,
    /// Lost usage events among those submitted.
    pub bg_drop_pct: f64,
    /// Open database connections not in use.
    pub db_idle_conns: u64,
}

impl Derived {
    pub fn new(c: &Counters, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let rate = |n: u64| {
            if secs > 0.0 {
                round2(n as f64 / secs)
            } else {
                0.0
            }
        };
        let lookups = c.memory_hits + c.shared_cache_hits + c.rest_hits + c.cache_misses;
        Derived {
            tcp_rps: rate(c.tcp_requests),
            udp_rps: rate(c.udp_requests),
            total_rps: rate(c.tcp_requests + c.udp_requests + c.report_requests),
            memory_hit_pct: pct(c.memory_hits, lookups),
            cache_miss_pct: pct(c.cache_misses, lookups),
            // A batch's receipt is counted before its drops: a reset between the two leaves
            // more drops than receipts in the new window, for a moment.
            udp_drop_pct: pct(
                c.udp_packets_dropped.min(c.udp_packets_received),
                c.udp_packets_received,
            ),
            bg_drop_pct: pct(c.bg_work_dropped, c.bg_work_submitted),
            db_idle_conns: c.db_open_conns.saturating_sub(c.db_in_use_conns),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round2(part as f64 * 100.0 / whole as f64)
    }
}

/// The counters since the last reset, with how long ago that was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinceReset {
    pub since_reset: Duration,
    pub counters: Counters,
    pub derived: Derived,
}

/// A price request counted in flight; leaving it (drop) makes room for another.
#[must_use = "the request counts as in flight only while this is held"]
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl RuntimeCounters {
    /// Counters at zero, the governor allowing `max_in_flight` price requests at once.
    pub fn new(max_in_flight: u64) -> Self {
        Self {
            tcp_requests: CachePadded::default(),
            report_requests: AtomicU64::default(),
            memory_hits: CachePadded::default(),
            rest_hits: AtomicU64::default(),
            cache_misses: AtomicU64::default(),
            udp: UdpStats::default(),
            report_udp: UdpStats::default(),
            rate_limited: AtomicU64::default(),
            quota_exceeded: AtomicU64::default(),
            auth_failures: AtomicU64::default(),
            in_flight: CachePadded::default(),
            governor_rejections: AtomicU64::default(),
            errors_4xx: AtomicU64::default(),
            errors_5xx: AtomicU64::default(),
            limit: max_in_flight.max(1),
            baseline: Mutex::new(Baseline {
                at: Instant::now(),
                counts: Counters::default(),
            }),
        }
    }

    /// The governor's limit: most price requests in flight at once.
    pub fn max_in_flight_limit(&self) -> u64 {
        self.limit
    }

    pub fn tcp_request(&self) {
        self.tcp_requests.fetch_add(1, Relaxed);
    }

    pub fn report_request(&self) {
        self.report_requests.fetch_add(1, Relaxed);
    }

    /// A request refused for its key (missing, unknown or revoked).
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    /// A price request answered with `status`: counts the 4xx and 5xx ones.
    pub fn answered(&self, status: u16) {
        match status {
            400..=499 => self.errors_4xx.fetch_add(1, Relaxed),
            500..=599 => self.errors_5xx.fetch_add(1, Relaxed),
            _ => return,
        };
    }

    /// One metered outcome: the tier that answered, a miss, or a refusal by the key's limits.
    pub fn metered(&self, outcome: Result<CacheTier, &ApiError>) {
        let counter = match outcome {
            Ok(CacheTier::Memory) => &*self.memory_hits,
            Ok(CacheTier::Rest) => &self.rest_hits,
            Err(ApiError::NoPrice { .. } | ApiError::StalePrice { .. }) => &self.cache_misses,
            Err(ApiError::RateLimited { .. }) => &self.rate_limited,
            Err(ApiError::QuotaExceeded { .. }) => &self.quota_exceeded,
            Ok(CacheTier::None) | Err(_) => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Admits a price request if fewer than the limit are in flight: it counts as in flight
    /// until the guard is dropped. Over the limit: `Overloaded`, counted.
    pub fn enter(&self) -> Result<InFlight<'_>, ApiError> {
        let gauge = &*self.in_flight;
        let now = gauge.now.fetch_add(1, Relaxed) + 1;
        let guard = InFlight(&gauge.now);
        if now > self.limit {
            drop(guard);
            self.governor_rejections.fetch_add(1, Relaxed);
            return Err(ApiError::Overloaded);
        }
        // A plain load first: the shared line is written only when a new high is reached.
        if now > gauge.max.load(Relaxed) {
            gauge.max.fetch_max(now, Relaxed);
        }
        Ok(guard)
    }

    /// Every figure as it is now, counted since start.
    pub fn snapshot(&self, usage: &UsageSink, store: &dyn Store) -> Counters {
        let udp = self.udp.snapshot();
        let bg = usage.stats().snapshot();
        let pool = store.pool_stats();
        Counters {
            tcp_requests: self.tcp_requests.load(Relaxed),
            udp_requests: udp.requests,
            report_requests: self.report_requests.load(Relaxed),
            memory_hits: self.memory_hits.load(Relaxed),
            // No shared cache yet: nothing can hit it.
            shared_cache_hits: 0,
            rest_hits: self.rest_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            udp_packets_received: udp.received,
            udp_packets_sent: udp.sent,
            udp_packets_dropped: udp.dropped_oversized
                + udp.dropped_garbage
                + udp.unanswered_keyless,
            bg_work_submitted: bg.queued,
            bg_work_dropped: bg.dropped,
            bg_work_completed: bg.written,
            batch_rows_queued: usage.depth() as u64,
            db_open_conns: pool.open,
            db_in_use_conns: pool.open.saturating_sub(pool.idle),
            rate_limited: self.rate_limited.load(Relaxed),
            quota_exceeded: self.quota_exceeded.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            // A refused request is counted in for a moment, until its guard drops: not shown.
            in_flight: self.in_flight.now.load(Relaxed).min(self.limit),
            max_in_flight: self.in_flight.max.load(Relaxed),
            governor_rejections: self.governor_rejections.load(Relaxed),
            errors_4xx: self.errors_4xx.load(Relaxed),
            errors_5xx: self.errors_5xx.load(Relaxed),
        }
    }

    /// The counters since the last reset (or start).
    pub fn since_reset(&self, usage: &UsageSink, store: &dyn Store) -> SinceReset {
        let baseline = self.baseline.lock();
        let now = self.snapshot(usage, store);
        since_baseline(now, &baseline)
    }

    /// Starts the counters again from zero; returns them as they were just before. Nothing
    /// is lost: an event counted while this runs falls on one side of the reset or the other.
    pub fn reset(&self, usage: &UsageSink, store: &dyn Store) -> SinceReset {
        let mut baseline = self.baseline.lock();
        let now = self.snapshot(usage, store);
        let before = since_baseline(now, &baseline);
        self.in_flight.max.store(now.in_flight, Relaxed);
        *baseline = Baseline {
            at: Instant::now(),
            counts: now,
        };
        before
    }
}

fn since_baseline(now: Counters, baseline: &Baseline) -> SinceReset {
    let elapsed = baseline.at.elapsed();
    let counters = now.since(&baseline.counts);
    SinceReset {
        since_reset: elapsed,
        counters,
        derived: Derived::new(&counters, elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Counters` whose fields are `value(i)` for the i-th field.
    fn numbered(value: impl Fn(u64) -> u64) -> Counters {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(Counters::default())
        else {
            panic!("counters serialize to an object");
        };
        let fields: serde_json::Map<_, _> = fields
            .into_iter()
            .zip(0..)
            .map(|((k, _), i)| (k, value(i).into()))
            .collect();
        serde_json::from_value(fields.into()).unwrap()
    }

    #[test]
    fn the_figures_are_the_24_fields_each_once_with_its_own_value() {
        let counters = numbered(|i| 100 + i);
        let fields = serde_json::to_value(counters).unwrap();
        let fields = fields.as_object().unwrap();
        let figures = counters.figures();
        let mut names: Vec<&str> = figures.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!((names.len(), fields.len()), (24, 24));
        for figure in figures {
            assert_eq!(fields[figure.name], figure.value, "{}", figure.name);
            assert!(!figure.help.is_empty(), "{}", figure.name);
        }
    }

    #[test]
    fn the_governor_refuses_over_the_limit_and_makes_room_when_a_request_ends() {
        let c = RuntimeCounters::new(2);
        let a = c.enter().unwrap();
        let b = c.enter().unwrap();
        assert_eq!(c.enter().err(), Some(ApiError::Overloaded));
        assert_eq!(c.in_flight.now.load(Relaxed), 2);
        drop(a);
        let _c = c.enter().unwrap();
        drop(b);
        assert_eq!(
            (
                c.in_flight.now.load(Relaxed),
                c.in_flight.max.load(Relaxed),
                c.governor_rejections.load(Relaxed)
            ),
            (1, 2, 1)
        );
    }

    #[test]
    fn since_keeps_exactly_the_gauges_and_subtracts_the_rest() {
        // Every field has its own values, so one read from a neighbour's field shows.
        let (now, then) = (numbered(|i| 10 + 3 * i), numbered(|i| i));
        let since = now.since(&then);
        for ((figure, now), then) in since
            .figures()
            .into_iter()
            .zip(now.figures())
            .zip(then.figures())
        {
            let expected = match figure.kind {
                Kind::Gauge => now.value,
                Kind::Count => now.value - then.value,
            };
            assert_eq!(figure.value, expected, "{}", figure.name);
        }
        // A count that fell (a baseline from before a restart) reads 0, not a wrap.
        assert_eq!(numbered(|_| 3).since(&numbered(|_| 5)).tcp_requests, 0);
    }

    #[test]
    fn derived_figures_are_rates_and_shares() {
        let c = Counters {
            tcp_requests: 30,
            udp_requests: 10,
            memory_hits: 3,
            rest_hits: 0,
            cache_misses: 1,
            udp_packets_received: 8,
            udp_packets_dropped: 2,
            db_open_conns: 4,
            db_in_use_conns: 1,
            ..Counters::default()
        };
        let d = Derived::new(&c, Duration::from_secs(4));
        assert_eq!((d.tcp_rps, d.udp_rps, d.total_rps), (7.5, 2.5, 10.0));
        assert_eq!((d.memory_hit_pct, d.cache_miss_pct), (75.0, 25.0));
        assert_eq!(
            (d.udp_drop_pct, d.bg_drop_pct, d.db_idle_conns),
            (25.0, 0.0, 3)
        );
        assert_eq!(Derived::new(&c, Duration::ZERO).total_rps, 0.0);
        // Every event submitted is written or dropped: a writer that lost them all lost 100 %.
        let lost = Counters {
            bg_work_submitted: 500,
            bg_work_dropped: 500,
            ..Counters::default()
        };
        assert_eq!(
            Derived::new(&lost, Duration::from_secs(1)).bg_drop_pct,
            100.0
        );
    }
}
