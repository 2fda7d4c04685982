//! Metering: one usage row per served request, written off the request path, all flushed on
//! graceful shutdown.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use reqwest::StatusCode;

use crate::helpers::{scalar, spawn_app, usage_rows};

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
