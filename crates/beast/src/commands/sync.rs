//! `beast sync`: rolls up every finished day of usage not rolled up yet, then deletes raw
//! usage and report log rows older than the retention (never rows of a day not rolled up).
//! Safe while nodes run (rolling a day replaces its rollups; pruning goes in small
//! transactions) and idempotent: a second run finds nothing to do.

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
    say!(
        "rolled up {rolled} day(s) from {raw} raw row(s){}",
        match (days.first(), days.last()) {
            (Some(a), Some(b)) => format!(" ({} to {})", day_name(*a), day_name(*b)),
            _ => String::new(),
        }
    )?;

    let Some(cutoff) = rollup::prune_cutoff(store, now, retention_days).await? else {
        say!("pruned nothing: no day is rolled up yet")?;
        return Ok(());
    };
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("pruning  {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let pruned = rollup::prune(store, cutoff, |total| {
        spinner.set_message(format!("{total} row(s) deleted"));
    })
    .await?;
    spinner.finish_and_clear();
    say!(
        "pruned {} raw row(s) and {} report log row(s) before {} (retention {retention_days} days)",
        pruned.usage_rows,
        pruned.report_log_rows,
        day_name(cutoff)
    )?;
    Ok(())
}
