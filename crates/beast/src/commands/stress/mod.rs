//! `beast stress`: a closed-loop load client for a node's price API, over HTTP or UDP.
//!
//! Levels of growing concurrency run one after the other, each for a fixed time. A level keeps
//! N requests in flight: N keep-alive connections (HTTP), or N / `--udp-depth` sockets each
//! with that many requests in flight (UDP, replies matched by id); each request's answer (or
//! timeout) sends the next. Per level: requests, successes, errors by kind,
//! requests per second, latency percentiles of the successes. A progress line shows on a
//! terminal's stderr; `--json` prints one document at the end instead of the table. Ctrl-C
//! stops sending and reports what was measured (a second Ctrl-C abandons requests in flight).
//!
//! Also here: `beast bench-baseline` ([`baseline`]), the fixed-bytes server `scripts/bench.sh`
//! compares a node with.

mod baseline;
mod engine;
mod http;
mod plan;
mod report;
mod scan;
mod udp;

use std::{
    io::IsTerminal,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use baseline::run as run_baseline;
use engine::{Live, Stop};
use plan::{Plan, Target};
use report::Report;

use crate::cli::StressArgs;

/// How often the progress line is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// Descriptors kept free beside the workers' own (stdio, the runtime, the resolver).
const SPARE_FDS: u64 = 64;

pub async fn run(args: &StressArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args).await?;
    if let Target::Http(requests) = &plan.target {
        http::preflight(requests, plan.timeout).await?;
    }
    warn_if_too_few_descriptors(&plan);

    let stop = Stop::default();
    let watcher = tokio::spawn(watch_ctrl_c(stop.clone()));
    let show_progress = !args.json && std::io::stderr().is_terminal();
    if !args.json {
        say!("{}", report::header(&plan))?;
    }
    let mut outcomes = Vec::with_capacity(plan.levels.len());
    for (level, &concurrency) in plan.levels.iter().enumerate() {
        if stop.soft.is_cancelled() {
            break;
        }
        let live = Arc::new(Live::default());
        let bar = progress_bar(show_progress, concurrency, plan.duration);
        let ticker = tokio::spawn(tick(bar.clone(), live.clone(), plan.duration));
        let outcome = engine::run_level(&plan, level, &stop, live).await;
        ticker.abort();
        bar.finish_and_clear();
        let outcome = outcome?;
        if outcome.interrupted && outcome.tally.requests == 0 {
            break;
        }
        if !args.json {
            let level = report::Level::new(&outcome);
            say!(
                "{}",
                report::row(&concurrency.to_string(), &level.stats, level.interrupted)
            )?;
        }
        outcomes.push(outcome);
    }
    watcher.abort();

    let report = Report::new(&plan, &outcomes)?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "{}",
            report::row("total", &report.totals, report.interrupted)
        )?;
    }
    if report.totals.requests > 0 && report.totals.successes == 0 {
        anyhow::bail!("no request succeeded (see the errors by kind above)");
    }
    Ok(())
}

/// First Ctrl-C: finish the requests in flight and report. Second: abandon them.
async fn watch_ctrl_c(stop: Stop) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    stop.soft.cancel();
    note!("stopping: finishing requests in flight (Ctrl-C again to abandon them)");
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.hard.cancel();
    }
}

fn progress_bar(visible: bool, concurrency: usize, duration: Duration) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let length = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix:>6} in flight [{bar:20}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(concurrency.to_string());
    bar.set_message("connecting");
    bar
}

/// Redraws the progress line from the level's live counters.
async fn tick(bar: ProgressBar, live: Arc<Live>, duration: Duration) {
    if bar.is_hidden() {
        return;
    }
    let mut interval = tokio::time::interval(PROGRESS_TICK);
    loop {
        interval.tick().await;
        // The level's time starts once its workers are connected.
        let Some(started) = live.started.get() else {
            bar.set_message("connecting");
            continue;
        };
        let elapsed = started.elapsed();
        let completed = live.completed.load(Ordering::Relaxed);
        let failed = live.failed.load(Ordering::Relaxed);
        let rate = completed as f64 / elapsed.as_secs_f64().max(1e-3);
        bar.set_position(u64::try_from(elapsed.min(duration).as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!("{completed} req, {failed} err, {rate:.0}/s"));
    }
}

/// Each worker holds a descriptor; say so up front if the top level cannot have them all.
fn warn_if_too_few_descriptors(plan: &Plan) {
    let Some(limit) = open_files_limit() else {
        return;
    };
    let top = plan.levels.iter().copied().max().unwrap_or(0);
    let needed = plan.workers(top) as u64 + SPARE_FDS;
    if needed > limit {
        note!(
            "warning: {needed} file descriptors needed at the top level, the limit is {limit} \
             (raise it with `ulimit -n`); workers without one count `connect`/`socket` errors"
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` if unknown.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests;
