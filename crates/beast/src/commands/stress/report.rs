//! The numbers of a run, per level and in total, as one JSON document (`--json`) or as a
//! table, one row per level as it ends.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    engine::{LevelOutcome, Tally, new_histogram},
    plan::{Plan, Target},
};

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub protocol: &'static str,
    /// The HTTP path asked for; absent for UDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// UDP: requests each socket keeps in flight (`--udp-depth`), which sets how many sockets
    /// a level uses; absent for HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_depth: Option<usize>,
    pub assets: Vec<String>,
    pub duration_ms: u64,
    pub timeout_ms: u64,
    /// Ctrl-C cut the run short: its last level is partial, or later ones did not run.
    pub interrupted: bool,
    pub levels: Vec<Level>,
    pub totals: Stats,
}

#[derive(Debug, Serialize)]
pub struct Level {
    pub concurrency: usize,
    #[serde(flatten)]
    pub stats: Stats,
    pub interrupted: bool,
}

/// Counts, throughput and the latency of successful requests (µs; `null` with none).
#[derive(Debug, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    /// Requests (answered or not) per second of the level's wall time.
    pub rps: f64,
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    pub elapsed_ms: u64,
}

impl Stats {
    fn new(tally: &Tally, latency: &Histogram<u64>, elapsed_s: f64) -> Stats {
        let at = |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q));
        let rps = if elapsed_s > 0.0 {
            tally.requests as f64 / elapsed_s
        } else {
            0.0
        };
        Stats {
            requests: tally.requests,
            successes: tally.successes,
            errors: tally.errors.clone(),
            rps: (rps * 10.0).round() / 10.0,
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us: (!latency.is_empty()).then(|| latency.max()),
            elapsed_ms: (elapsed_s * 1000.0).round() as u64,
        }
    }
}

impl Level {
    pub fn new(outcome: &LevelOutcome) -> Level {
        Level {
            concurrency: outcome.concurrency,
            stats: Stats::new(
                &outcome.tally,
                &outcome.latency,
                outcome.elapsed.as_secs_f64(),
            ),
            interrupted: outcome.interrupted,
        }
    }
}

impl Report {
    pub fn new(plan: &Plan, outcomes: &[LevelOutcome]) -> anyhow::Result<Report> {
        let mut tally = Tally::default();
        let mut latency = new_histogram()?;
        let mut elapsed_s = 0.0;
        for outcome in outcomes {
            tally.merge(&outcome.tally);
            // Same bounds on both sides: adding cannot fail.
            let _ = latency.add(&outcome.latency);
            elapsed_s += outcome.elapsed.as_secs_f64();
        }
        Ok(Report {
            target: plan.target_url.clone(),
            protocol: plan.target.protocol(),
            path: match &plan.target {
                Target::Http(requests) => Some(requests.path().to_owned()),
                Target::Udp(_) => None,
            },
            udp_depth: matches!(plan.target, Target::Udp(_)).then_some(plan.udp_depth),
            assets: plan.assets.clone(),
            duration_ms: u64::try_from(plan.duration.as_millis()).unwrap_or(u64::MAX),
            timeout_ms: u64::try_from(plan.timeout.as_millis()).unwrap_or(u64::MAX),
            interrupted: outcomes.len() < plan.levels.len()
                || outcomes.iter().any(|o| o.interrupted),
            levels: outcomes.iter().map(Level::new).collect(),
            totals: Stats::new(&tally, &latency, elapsed_s),
        })
    }
}

/// The table's first lines.
pub fn header(plan: &Plan) -> String {
    let what = match &plan.target {
        Target::Http(requests) => format!("{}{} (http)", plan.target_url, requests.path()),
        Target::Udp(_) => format!(
            "{} (udp, {} in flight per socket)",
            plan.target_url, plan.udp_depth
        ),
    };
    format!(
        "stress {what}, assets {}, {} levels x {:.3} s, timeout {} ms\n{:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  errors",
        plan.assets.join(","),
        plan.levels.len(),
        plan.duration.as_secs_f64(),
        plan.timeout.as_millis(),
        "inflight",
        "requests",
        "successes",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
    )
}

/// One table row: `label` is the concurrency, or `total`.
pub fn row(label: &str, stats: &Stats, interrupted: bool) -> String {
    let ms = |us: Option<u64>| match us {
        Some(us) => format!("{:.3}", us as f64 / 1000.0),
        None => "-".to_owned(),
    };
    let mut errors = String::new();
    for (kind, n) in &stats.errors {
        let _ = write!(
            errors,
            "{}{kind}={n}",
            if errors.is_empty() { "" } else { " " }
        );
    }
    if errors.is_empty() {
        errors.push('-');
    }
    if interrupted {
        errors.push_str(" (interrupted)");
    }
    format!(
        "{label:>8} {:>10} {:>10} {:>10.1} {:>9} {:>9} {:>9} {:>9}  {errors}",
        stats.requests,
        stats.successes,
        stats.rps,
        ms(stats.p50_us),
        ms(stats.p95_us),
        ms(stats.p99_us),
        ms(stats.max_us),
    )
}
