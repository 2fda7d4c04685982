//! Metering: one usage row per served request, written off the request path, all flushed on
//! graceful shutdown.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{scalar, spawn_app, spawn_app_with_parameters, usage_rows};

#[tokio::test]
async fn a_thousand_requests_then_shutdown_leave_exactly_a_thousand_rows() {
    let mut app = spawn_app().await;
    let key = app.key("pro").await;
    app.wait_fresh("ETH", &key, Duration::from_secs(10)).await;
    let statuses: Vec<StatusCode> = stream::iter(0..1000)
        .map(|i| {
            let app = &app;
            let key = &key;
            async move {
                app.get(
                    if i % 10 == 0 {
                        "/price?asset=nosuchcoin"
                    } else {
                        "/price?asset=BTC"
                    },
                    Some(key),
                )
                .await
                .status
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count() as i64;
    assert_eq!(ok, 900, "every BTC request is served");
    app.stop().await;
    let dir = app.data_dir.path();
    let warm_up = usage_rows(dir, "WHERE asset = 'ETH'").await;
    assert!(warm_up >= 1);
    assert_eq!(usage_rows(dir, "").await - warm_up, 1000);
    assert_eq!(
        usage_rows(
            dir,
            "WHERE asset = 'BTC' AND status = 200 AND protocol = 'http' AND node = 'test-node' \
                         AND cache_tier = 'memory' AND source LIKE '%-ws%' AND latency_us > 0"
        )
        .await,
        900
    );
    assert_eq!(
        usage_rows(
            dir,
            "WHERE asset = 'NOSUCHCOIN' AND status = 404 AND cache_tier = 'none'"
        )
        .await,
        100
    );
    // The per-key monthly counter is folded from the same batches: successes only.
    assert_eq!(
        scalar::<i64>(dir, "SELECT usage_count FROM api_keys").await,
        900 + 1,
        "the 900 BTC answers and the one ETH answer of the warm-up"
    );
}

#[tokio::test]
async fn requests_without_a_valid_key_are_not_metered() {
    let mut app = spawn_app().await;
    let key = app.key("pro").await;
    // The one request with a valid key is the only row.
    let r = app.get("/price?asset=NOSUCHCOIN", Some(&key)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for _ in 0..20 {
        assert_eq!(
            app.get("/price?asset=BTC", Some("tb_bogus")).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.get("/price?asset=BTC", None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    app.stop().await;
    assert_eq!(usage_rows(app.data_dir.path(), "").await, 1);
    assert_eq!(
        usage_rows(
            app.data_dir.path(),
            "WHERE asset = 'NOSUCHCOIN' AND status = 404"
        )
        .await,
        1
    );
}

/// A request waits for room in the usage channel only before it counts anything: one whose
/// client hangs up meanwhile (hyper then drops it) has counted nothing and written no row, and
/// every answer given has its row and its count.
#[tokio::test]
async fn a_request_whose_client_hangs_up_while_the_usage_queue_is_full_leaves_no_trace() {
    let mut app = spawn_app_with_parameters(&[
        ("usage_channel_capacity", "100"),
        ("usage_batch_size", "1"),
        ("usage_flush_ms", "1"),
    ])
    .await;
    let key = app.priced_key("partner").await;
    let dir = app.data_dir.path().to_owned();
    let written = |stats: Value| {
        let counters = &stats["counters"];
        (counters["bg_work_completed"] == counters["bg_work_submitted"]).then_some(())
    };
    app.eventually(
        "the warm-up's rows written",
        Duration::from_secs(5),
        || async { written(app.stress_stats().await) },
    )
    .await;
    let warm_up = usage_rows(&dir, "").await;
    // Another writer holds the store's write lock: the usage writer cannot write, and its
    // channel fills.
    let url = format!("sqlite://{}", dir.join("beast.sqlite3").display());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    // A client gives up after 1.5 s: only a request waiting for room takes that long, even on
    // a busy machine, so every answer comes before it.
    let ask = |key: String| {
        let request = app
            .client
            .get(format!("http://{}/price?asset=BTC", app.price))
            .bearer_auth(key)
            .timeout(Duration::from_millis(1500));
        async move { request.send().await.map(|r| r.status()) }
    };
    // Answered while there is room: the writer's batch of one and the channel's hundred.
    let mut answered = 0;
    while let Ok(status) = ask(key.clone()).await {
        assert_eq!(status, StatusCode::OK);
        answered += 1;
        assert!(answered <= 101, "the channel never filled");
    }
    // That last request and twenty more wait for room; their clients give up.
    let gave_up = stream::iter(0..20)
        .map(|_| ask(key.clone()))
        .buffer_unordered(20)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(gave_up, 20);
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    let stats = app.stress_stats().await;
    app.stop().await;
    assert_eq!(
        usage_rows(&dir, "").await,
        warm_up + answered,
        "a row for every answer given, none for the requests given up"
    );
    assert_eq!(
        stats["counters"]["memory_hits"].as_i64(),
        Some(usage_rows(&dir, "WHERE cache_tier = 'memory'").await),
        "every price counted has its row, and no other: {stats}"
    );
    assert_eq!(stats["counters"]["bg_work_dropped"], 0);
}
