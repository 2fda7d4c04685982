//! `beast sync`: rolls up every finished day of usage not rolled up yet, then deletes raw
//! usage and report log rows older than the retention (never raw rows of a day not rolled
//! up). Safe while nodes run (a day is rolled up once, whoever gets there first; pruning goes
//! in small transactions) and idempotent: a second run finds nothing to do. It reports when
//! all is done, so a reader that goes early (`| head -1`) does not cut the work short.

use beast_core::{day_name, now_ms};
use beast_reports::rollup;
use beast_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{app::Params, cli::SyncArgs, config::ConfigArgs};

pub async fn run(config: &ConfigArgs, args: &SyncArgs) -> anyhow::Result<()> {
    super::with_store(config, async |store| sync(store, args).await).await
}

async fn sync(store: &dyn Store, args: &SyncArgs) -> anyhow::Result<()> {
    let options = Params::from_rows(&store.parameters().await?).reports;
    let retention_days = args.retention_days.unwrap_or(options.retention_days);
    let now = now_ms();

    let days = rollup::pending_days(store, now, options.rollup_delay_ms).await?;
    let bar = ProgressBar::new(days.len() as u64).with_style(
        ProgressStyle::with_template("rolling up  [{bar:30}] {pos}/{len} days  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rolled = 0;
    let raw = rollup::roll_up(store, &days, |day, read| {
        rolled += usize::from(read.is_some());
        bar.set_message(day_name(day));
        bar.inc(1);
    })
    .await?;
    bar.finish_and_clear();

    let cutoffs = rollup::prune_cutoffs(store, now, retention_days).await?;
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("pruning  {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let pruned = rollup::prune(store, cutoffs, |total| {
        spinner.set_message(format!("{total} row(s) deleted"));
    })
    .await?;
    spinner.finish_and_clear();
    say!(
        "rolled up {rolled} day(s) from {raw} raw row(s){}\n{}\npruned {} report log row(s) before {} (retention {retention_days} days)",
        match (days.first(), days.last()) {
            (Some(a), Some(b)) => format!(" ({} to {})", day_name(*a), day_name(*b)),
            _ => String::new(),
        },
        match cutoffs.usage {
            Some(cutoff) => format!(
                "pruned {} raw row(s) before {}",
                pruned.usage_rows,
                day_name(cutoff)
            ),
            None => "pruned no raw row: no day is rolled up yet".to_owned(),
        },
        pruned.report_log_rows,
        day_name(cutoffs.report_logs),
    )?;
    Ok(())
}
