//! Reading usage, rollups and retention on a real SQLite store.

use std::sync::Arc;

use beast_core::{CacheTier, DAY_MS, Protocol, UsageEvent, day_start_ms, now_ms};
use beast_store::{Cursor, Cutoffs, ReportLogEntry, SqliteStore, Store, UsageFilter, UsageRow};
use futures_util::TryStreamExt;

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

/// A report request logged at `ts_ms`.
fn log_entry(ts_ms: i64) -> ReportLogEntry {
    ReportLogEntry {
        ts_ms,
        key_id: Some(1),
        report: "summary".into(),
        format: "json".into(),
        protocol: "http".into(),
        node: "n1".into(),
        status: 200,
        latency_us: 10,
        rows: 1,
        query: String::new(),
    }
}

#[tokio::test]
async fn report_logs_are_pruned_by_retention_even_before_any_roll_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let now = now_ms();
    let old = day_start_ms(now) - 200 * DAY_MS;
    store.insert_usage(&[event(old, 100)]).await.unwrap();
    for ts_ms in [old, now] {
        store.log_report(&log_entry(ts_ms)).await.unwrap();
    }
    let cutoffs = rollup::prune_cutoffs(&store, now, 93).await.unwrap();
    assert_eq!(
        cutoffs,
        Cutoffs {
            usage: None,
            report_logs: day_start_ms(now - 93 * DAY_MS),
        }
    );
    let pruned = rollup::prune(&store, cutoffs, |_| {}).await.unwrap();
    assert_eq!(
        (pruned.usage_rows, pruned.report_log_rows),
        (0, 1),
        "the old log row goes; raw usage of a day not rolled up stays"
    );
    assert_eq!(store.usage_count().await.unwrap(), 1);
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
    // Two report requests were logged that day, one the next day.
    for ts_ms in [day + 5, day + 6, day + DAY_MS + 5] {
        store.log_report(&log_entry(ts_ms)).await.unwrap();
    }
    let cutoffs = rollup::prune_cutoffs(&store, now_ms(), 93).await.unwrap();
    assert_eq!(
        cutoffs.usage,
        Some(day + DAY_MS),
        "raw usage is pruned up to the rollup mark"
    );
    let cutoffs = Cutoffs {
        report_logs: day + DAY_MS,
        ..cutoffs
    };
    let pruned = rollup::prune(&store, cutoffs, |_| {}).await.unwrap();
    assert_eq!(
        (pruned.usage_rows, pruned.report_log_rows),
        (3, 2),
        "every row before the cutoff, of both tables"
    );

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

#[tokio::test]
async fn usage_streams_across_read_batches_in_order_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let base = now_ms() - DAY_MS;
    // Three rows share each instant; every fifth row belongs to key 2. With 10,002 rows, key
    // 1's rows 4,095 and 4,096 (the seam of the 4,096-row read batches) share an instant, and
    // so do rows 4,999 and 5,000 (the seam of the page below).
    let events: Vec<_> = (0..10_002)
        .map(|i| UsageEvent {
            key_id: if i % 5 == 4 { 2 } else { 1 },
            ..event(base + i / 3, i as u32)
        })
        .collect();
    store.insert_usage(&events).await.unwrap();
    let key1 = UsageFilter {
        key_id: Some(1),
        to_ms: i64::MAX,
        ..UsageFilter::default()
    };
    let read = |after: Option<Cursor>, limit: Option<u64>| {
        let store = &store;
        let key1 = &key1;
        async move {
            let rows: Vec<UsageRow> = store
                .usage_rows(key1, after, limit)
                .try_collect()
                .await
                .unwrap();
            rows
        }
    };

    let all = read(None, None).await;
    assert_eq!(all.len(), 8002);
    assert_eq!(
        all[4095].ts_ms, all[4096].ts_ms,
        "a tie spans the read batches"
    );
    assert_eq!(
        all[4999].ts_ms, all[5000].ts_ms,
        "a tie spans the page's end"
    );
    assert!(all.iter().all(|r| r.key_id == 1));
    assert!(
        all.windows(2)
            .all(|w| (w[0].ts_ms, w[0].id) > (w[1].ts_ms, w[1].id)),
        "newest first, each row once"
    );
    let mut latencies: Vec<u32> = all.iter().map(|r| r.latency_us).collect();
    latencies.sort_unstable();
    let expected: Vec<u32> = (0..10_002).filter(|i| i % 5 != 4).collect();
    assert_eq!(latencies, expected, "every row of key 1, none of key 2");

    // A page and the rest after its cursor are the whole stream, split where it says.
    let page = read(None, Some(5000)).await;
    assert_eq!(page[..], all[..5000]);
    let last = &page[4999];
    let rest = read(
        Some(Cursor {
            ts_ms: last.ts_ms,
            id: last.id,
        }),
        None,
    )
    .await;
    assert_eq!(rest[..], all[5000..]);
    store.close().await;
}

#[tokio::test]
async fn an_export_counts_only_the_rows_it_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let base = now_ms() - DAY_MS;
    let events: Vec<_> = (0..3).map(|i| event(base + i, 100)).collect();
    store.insert_usage(&events).await.unwrap();
    let request = crate::ReportRequest {
        filter: UsageFilter {
            to_ms: i64::MAX,
            ..UsageFilter::default()
        },
        format: crate::Format::Csv,
        page_size: crate::PageSize::All,
        cursor: None,
    };

    // The reader is gone before the first chunk: the rows read were not handed over.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let gone = crate::usage::export(&store, &request, tx).await;
    assert!(
        matches!(gone.end, crate::usage::ExportEnd::ReaderGone),
        "{gone:?}"
    );
    assert_eq!(gone.rows, 0);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = rx.recv().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        body
    };
    let (done, body) = tokio::join!(crate::usage::export(&store, &request, tx), read);
    assert!(
        matches!(done.end, crate::usage::ExportEnd::Complete),
        "{done:?}"
    );
    assert_eq!(done.rows, 3);
    assert_eq!(
        String::from_utf8(body).unwrap().lines().count(),
        4,
        "a header and 3 rows"
    );
    store.close().await;
}

#[test]
fn report_names_are_read_in_any_case_like_formats() {
    assert_eq!(
        crate::Report::parse(" Summary"),
        Some(crate::Report::Summary)
    );
    assert_eq!(crate::Report::parse("USAGE"), Some(crate::Report::Usage));
    assert_eq!(crate::Report::parse("rows"), None);
}

/// Usage rows are read from SQLite as arrays in `UsageRow`'s field order: each column lands in
/// its own field (five neighbours are plain strings, which a swap would not stop).
#[tokio::test]
async fn every_column_of_a_usage_row_is_read_into_its_own_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let written = UsageEvent {
        ts_ms: 1_700_000_000_123,
        key_id: 42,
        asset: Arc::from("ETH"),
        source: Arc::from("kraken-ws"),
        protocol: Protocol::Udp,
        node: Arc::from("node-7"),
        status: 429,
        latency_us: 987,
        cache_tier: CacheTier::Rest,
    };
    store
        .insert_usage(std::slice::from_ref(&written))
        .await
        .unwrap();
    let read: Vec<UsageRow> = store
        .usage_rows(&UsageFilter::default().between(0, i64::MAX), None, None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        read,
        [UsageRow {
            id: 1,
            ts_ms: 1_700_000_000_123,
            key_id: 42,
            asset: "ETH".into(),
            source: "kraken-ws".into(),
            protocol: "udp".into(),
            node: "node-7".into(),
            status: 429,
            latency_us: 987,
            cache_tier: "rest".into(),
        }]
    );
}

/// Rollups are stored under the day they are for: a row of another day is refused, and
/// nothing of the batch is written.
#[tokio::test]
async fn rollups_of_another_day_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let day = day_start_ms(now_ms()) - 2 * DAY_MS;
    let row = |day_ms| beast_store::RollupRow {
        day_ms,
        key_id: 1,
        asset: "BTC".into(),
        source: "coinbase-ws".into(),
        protocol: "http".into(),
        node: "n1".into(),
        status: 200,
        requests: 3,
        memory: 3,
        rest: 0,
        latency_sum_us: 30,
        latency_max_us: 10,
        latency_sketch: String::new(),
    };
    let refused = store
        .replace_rollups(day, &[row(day), row(day + DAY_MS)])
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("rollup of day")),
        "{refused:?}"
    );
    assert_eq!(store.rolled_until().await.unwrap(), None);
    assert!(store.replace_rollups(day, &[row(day)]).await.unwrap());
    assert_eq!(store.rolled_until().await.unwrap(), Some(day + DAY_MS));
}
