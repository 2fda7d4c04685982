//! `beast generate-usage` (hidden): fills the store with realistic usage for the report
//! benchmark. Keys are created (tier `pro`) and printed as `id<TAB>key`; the first key gets a
//! tenth of the rows, the rest share the remainder. Rows are spread evenly over the last
//! `--days` days, in time order, with a skewed asset mix, three nodes, mostly successes
//! answered from memory, and log-normal-ish latencies.

use std::{fmt::Write as _, sync::Arc};

use beast_core::{CacheTier, DAY_MS, Protocol, UsageEvent, now_ms};
use beast_store::{Store, keys};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::{cli::GenerateUsageArgs, config::ConfigArgs};

const BATCH: usize = 20_000;
const ASSETS: &[(&str, &str)] = &[
    (
        "BTC",
        "coinbase-ws,cryptocom-ws,gateio-ws,gemini-ws,kraken-ws,okx-ws",
    ),
    (
        "ETH",
        "coinbase-ws,cryptocom-ws,gateio-ws,gemini-ws,kraken-ws,okx-ws",
    ),
    ("SOL", "coinbase-ws,kraken-ws,okx-ws"),
    ("XRP", "coinbase-ws,kraken-ws"),
    ("DOGE", "coinbase-ws,gateio-ws,okx-ws"),
    ("ADA", "kraken-ws,okx-ws"),
    ("AVAX", "coinbase-ws"),
    ("LINK", "coinbase-ws,kraken-ws"),
    ("DOT", "kraken-ws"),
    ("LTC", "gemini-ws,kraken-ws"),
];
const NODES: &[&str] = &["node-a", "node-b", "node-c"];

pub async fn run(config: &ConfigArgs, args: &GenerateUsageArgs) -> anyhow::Result<()> {
    super::with_store(config, async |store| generate(store, args).await).await
}

async fn generate(store: &dyn Store, args: &GenerateUsageArgs) -> anyhow::Result<()> {
    let mut created = Vec::new();
    // Printed once the rows are written, so a reader that takes the first key and goes
    // (`| head -1`) does not cut the generation short.
    let mut listing = String::new();
    for i in 0..args.keys.max(1) {
        let (key, record) = keys::create(store, &format!("generated-{i}"), "pro").await?;
        let _ = writeln!(listing, "{}\t{key}", record.id);
        created.push(record.id);
    }
    let Some((&heavy, others)) = created.split_first() else {
        anyhow::bail!("no key was created");
    };
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let end = now_ms();
    let start = end - (args.days.max(1) as i64) * DAY_MS;
    let step = (end - start) as f64 / args.rows.max(1) as f64;
    let assets: Vec<(Arc<str>, Arc<str>)> = ASSETS
        .iter()
        .map(|(a, s)| (Arc::from(*a), Arc::from(*s)))
        .collect();
    let nodes: Vec<Arc<str>> = NODES.iter().map(|n| Arc::from(*n)).collect();
    let empty: Arc<str> = Arc::from("");
    let bar = ProgressBar::new(args.rows).with_style(
        ProgressStyle::with_template("generating [{bar:30}] {pos}/{len} rows ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..args.rows {
        let key_id = match others.len() {
            n if n == 0 || i % 10 == 0 => heavy,
            n => others[rng.random_range(0..n)],
        };
        // Skewed towards the first assets.
        let a = (rng.random::<f64>().powi(2) * assets.len() as f64) as usize;
        let (asset, sources) = &assets[a.min(assets.len() - 1)];
        let roll = rng.random_range(0..1000);
        let (status, tier) = match roll {
            0..30 => (429, CacheTier::None),
            30..40 => (404, CacheTier::None),
            40..50 => (503, CacheTier::None),
            50..70 => (200, CacheTier::Rest),
            _ => (200, CacheTier::Memory),
        };
        let protocol = match rng.random_range(0..100) {
            0..60 => Protocol::Http,
            60..98 => Protocol::Udp,
            _ => Protocol::Ws,
        };
        // Around 200 µs, with a long tail.
        let latency = (40.0 * (1.0 + rng.random::<f64>() * 3.0).powi(3)) as u32
            + if tier == CacheTier::Rest { 30_000 } else { 0 };
        batch.push(UsageEvent {
            ts_ms: start + (i as f64 * step) as i64,
            key_id,
            asset: asset.clone(),
            source: if status == 200 {
                sources.clone()
            } else {
                empty.clone()
            },
            protocol,
            node: nodes[rng.random_range(0..nodes.len())].clone(),
            status,
            latency_us: latency,
            cache_tier: tier,
        });
        if batch.len() == BATCH {
            let written = batch.len() as u64;
            store.insert_usage(&batch).await?;
            batch.clear();
            bar.inc(written);
        }
    }
    let written = batch.len() as u64;
    store.insert_usage(&batch).await?;
    bar.inc(written);
    bar.finish_and_clear();
    say!("{}", listing.trim_end())?;
    note!(
        "wrote {} usage rows over {} days for {} keys (key {heavy} has {})",
        args.rows,
        args.days.max(1),
        created.len(),
        if others.is_empty() {
            "them all"
        } else {
            "a tenth"
        }
    );
    Ok(())
}
