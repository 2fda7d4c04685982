//! Daily rollups and retention. A UTC day is rolled up once it has been over for
//! `rollup_delay_ms` (late usage batches have landed by then): its raw rows are folded into
//! one `usage_daily` row per (key, asset, source, protocol, node, status). A day is rolled up
//! once: the store refuses to roll a day behind its mark, so the server and `beast sync` may
//! both run. Raw rows older than the retention are pruned only once their day is rolled up.
//! Rows written for a day after it was rolled up (over `rollup_delay_ms` late) are not in
//! its rollup, and are pruned with it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use beast_core::{DAY_MS, Ticks, day_name, day_start_ms, now_ms};
use beast_store::{Cutoffs, Pruned, RollupRow, Store, StoreError, UsageFilter};
use futures_util::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::{sketch::Sketch, summary::Counts};

/// Rows deleted per pruning transaction, so the server's writes interleave.
pub const PRUNE_BATCH: u64 = 10_000;

type RollKey = (i64, String, String, String, String, u16);

#[derive(Default)]
struct Acc {
    counts: Counts,
    /// Latency bucket → count: bounded, however many rows the day has.
    latency: BTreeMap<u64, u64>,
}

/// Folds the raw rows of the day starting at `day_ms` into its rollup rows and stores them;
/// returns how many raw rows it read, or `None` if the day was rolled up meanwhile.
pub async fn roll_up_day(store: &dyn Store, day_ms: i64) -> Result<Option<u64>, StoreError> {
    let filter = UsageFilter {
        from_ms: day_ms,
        to_ms: day_ms + DAY_MS,
        ..UsageFilter::default()
    };
    let mut groups: HashMap<RollKey, Acc> = HashMap::new();
    let mut read = 0;
    let mut rows = store.usage_rows(&filter, None, None);
    while let Some(r) = rows.try_next().await? {
        read += 1;
        let counts = Counts::of_row(&r);
        let acc = groups
            .entry((r.key_id, r.asset, r.source, r.protocol, r.node, r.status))
            .or_default();
        acc.counts.add(&counts);
        *acc.latency.entry(Sketch::bucket(r.latency_us)).or_default() += 1;
    }
    drop(rows);
    let rollups: Vec<RollupRow> = groups
        .into_iter()
        .map(
            |((key_id, asset, source, protocol, node, status), acc)| RollupRow {
                day_ms,
                key_id,
                asset,
                source,
                protocol,
                node,
                status,
                requests: acc.counts.requests,
                memory: acc.counts.memory,
                rest: acc.counts.rest,
                latency_sum_us: acc.counts.latency_sum_us,
                latency_max_us: acc.counts.latency_max_us,
                latency_sketch: Sketch::encode(&acc.latency),
            },
        )
        .collect();
    let stored = store.replace_rollups(day_ms, &rollups).await?;
    Ok(stored.then_some(read))
}

/// The days (their start, unix ms) not rolled up yet that ended over `delay_ms` ago, oldest
/// first: from the rollup mark, or from the oldest raw row on a store never rolled up.
pub async fn pending_days(
    store: &dyn Store,
    now: i64,
    delay_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let start = match store.rolled_until().await? {
        Some(mark) => mark,
        None => match store.oldest_usage_ms().await? {
            Some(oldest) => day_start_ms(oldest),
            None => return Ok(Vec::new()),
        },
    };
    let end = day_start_ms(now.saturating_sub(delay_ms));
    Ok((0..)
        .map(|i| start + i * DAY_MS)
        .take_while(|d| *d < end)
        .collect())
}

/// Rolls up `days` in order, reporting each as it is done: the day and the raw rows read
/// (`None`: rolled up meanwhile by someone else). Returns the raw rows read in all.
pub async fn roll_up(
    store: &dyn Store,
    days: &[i64],
    mut done: impl FnMut(i64, Option<u64>),
) -> Result<u64, StoreError> {
    let mut total = 0;
    for &day in days {
        let read = roll_up_day(store, day).await?;
        total += read.unwrap_or(0);
        done(day, read);
    }
    Ok(total)
}

/// Where pruning stops: the start of the day `retention_days` before `now`; for raw usage
/// never past the rollup mark (rows of a day not rolled up are kept, all of them before any
/// roll-up). Report log rows are never rolled up: the retention alone bounds them.
pub async fn prune_cutoffs(
    store: &dyn Store,
    now: i64,
    retention_days: u64,
) -> Result<Cutoffs, StoreError> {
    let days = i64::try_from(retention_days).unwrap_or(i64::MAX / DAY_MS);
    let cutoff = day_start_ms(now.saturating_sub(days.saturating_mul(DAY_MS)));
    Ok(Cutoffs {
        usage: store.rolled_until().await?.map(|mark| cutoff.min(mark)),
        report_logs: cutoff,
    })
}

/// Deletes raw usage and report log rows older than their cutoffs, in batches, reporting the
/// running total of rows deleted; returns the totals.
pub async fn prune(
    store: &dyn Store,
    cutoffs: Cutoffs,
    mut progress: impl FnMut(u64),
) -> Result<Pruned, StoreError> {
    let mut total = Pruned::default();
    loop {
        let gone = store.prune_usage(cutoffs, PRUNE_BATCH).await?;
        total.usage_rows += gone.usage_rows;
        total.report_log_rows += gone.report_log_rows;
        progress(total.usage_rows + total.report_log_rows);
        if gone.usage_rows < PRUNE_BATCH && gone.report_log_rows < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

/// The server's rollup duty: every `every`, rolls up the days that are due, until `stop`.
pub async fn keep_rolled_up(
    store: Arc<dyn Store>,
    every: Duration,
    delay_ms: i64,
    stop: CancellationToken,
) {
    let mut ticks = Ticks::new(every, stop);
    while ticks.next().await {
        let rolled = match pending_days(&*store, now_ms(), delay_ms).await {
            Ok(days) => {
                roll_up(&*store, &days, |day, rows| {
                    tracing::info!(day = %day_name(day), ?rows, "usage day rolled up");
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = rolled {
            tracing::warn!(error = %e, "rolling up usage failed; retrying later");
        }
    }
}
