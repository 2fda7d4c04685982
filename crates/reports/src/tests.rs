//! Rollups and retention on a real SQLite store.

use std::sync::Arc;

use beast_core::{CacheTier, DAY_MS, Protocol, UsageEvent, day_start_ms, now_ms};
use beast_store::{SqliteStore, Store, UsageFilter};

use crate::{rollup, summarize};

fn event(ts_ms: i64, latency_us: u32) -> UsageEvent {
    UsageEvent {
        ts_ms,
        key_id: 1,
        asset: Arc::from("BTC"),
        source: Arc::from("coinbase-ws"),
        protocol: Protocol::Http,
        node: Arc::from("n1"),
        status: 200,
        latency_us,
        cache_tier: CacheTier::Memory,
    }
}

#[tokio::test]
async fn a_day_rolled_up_and_pruned_elsewhere_is_never_rolled_again_from_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let day = day_start_ms(now_ms()) - 200 * DAY_MS;
    let events: Vec<_> = (0..3)
        .map(|i| event(day + i * 1000, 100 + i as u32))
        .collect();
    store.insert_usage(&events).await.unwrap();

    // A node lists the day as due; meanwhile `beast sync` rolls it up and prunes its rows.
    let stale = rollup::pending_days(&store, now_ms(), 0).await.unwrap();
    assert_eq!(stale.first(), Some(&day));
    assert_eq!(rollup::roll_up_day(&store, day).await.unwrap(), Some(3));
    let cutoff = rollup::prune_cutoff(&store, now_ms(), 93).await.unwrap();
    assert_eq!(cutoff, day + DAY_MS, "pruning stops at the rollup mark");
    assert_eq!(rollup::prune(&store, cutoff, |_| {}).await.unwrap(), 3);

    // The node's late roll of that day finds no raw rows, and must not replace its rollup.
    assert_eq!(rollup::roll_up_day(&store, day).await.unwrap(), None);
    let all = UsageFilter {
        to_ms: i64::MAX,
        ..UsageFilter::default()
    };
    let summary = summarize(&store, &all).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&summary.render(crate::Format::Json)).unwrap();
    assert_eq!(json["total"]["requests"], 3, "{json}");
    assert_eq!(json["total"]["latency_max_us"], 102, "{json}");
    store.close().await;
}
