//! Faults injected into the running simulator, one kind per test: the node must keep prices
//! fresh (or say honestly that they are stale), never panic, never leave a feed stuck. Each
//! test prints `RECOVERY <kind> <ms>`: the time from the fault to the recovery it checks
//! (`cargo test --test api faults -- --nocapture | grep RECOVERY`).
//!
//! Timings are shortened through the parameters: fresh for 3 s, a pair quiet for 1 s is
//! refreshed from REST, a connection silent for 2 s is dead (clients ping every second).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with, spawn_app_with_on_demand_okx, sql};

const WITHIN: Duration = Duration::from_secs(15);

async fn spawn_fast_app() -> TestApp {
    spawn_app_with(|dir| async move {
        sql(
            &dir,
            &[
                "UPDATE application_parameters SET value = '3000' WHERE name = 'price_fresh_max_age_ms'",
                "UPDATE application_parameters SET value = '1000' WHERE name = 'pair_quiet_ms'",
                "UPDATE application_parameters SET value = '500' WHERE name = 'rest_fallback_ms'",
                "UPDATE application_parameters SET value = '1000' WHERE name = 'rest_timeout_ms'",
                "UPDATE application_parameters SET value = '200' WHERE name = 'on_demand_retry_ms'",
                "UPDATE exchange_feeds SET liveness_timeout_s = 2",
                // Pings more often than the liveness deadline: they must not keep a silent
                // connection alive.
                "UPDATE exchange_feeds SET ping_interval_s = 1 WHERE ping_interval_s > 0",
            ],
        )
        .await;
    })
    .await
}

fn counter(feed: &Value, name: &str) -> u64 {
    feed[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {feed}"))
}

/// The feed's status once it is connected and `asset` is fresh from it.
async fn healthy(app: &TestApp, key: &str, exchange: &str, asset: &str) -> Value {
    app.eventually(&format!("{exchange} healthy"), WITHIN, || async {
        let r = app
            .get(
                &format!("/price?asset={asset}&source={exchange}"),
                Some(key),
            )
            .await;
        let feed = app.feed(exchange).await?;
        (r.status == StatusCode::OK && feed["connected"] == true).then_some(feed)
    })
    .await
}

/// Asks for `asset` pinned to `source` every 250 ms for `window`; every answer must be 200.
async fn stays_fresh(app: &TestApp, key: &str, asset: &str, source: &str, window: Duration) {
    let path = format!("/price?asset={asset}&source={source}");
    let started = Instant::now();
    while started.elapsed() < window {
        let r = app.get(&path, Some(key)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{path} after {:?}: {}",
            started.elapsed(),
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn report(kind: &str, since: Instant) {
    eprintln!("RECOVERY {kind} {} ms", since.elapsed().as_millis());
}

/// Injects `fault` (which names its exchange and lasts `duration_ms`) once `asset` is fresh
/// from that exchange; `asset` pinned to it must answer 200 throughout. The feed's status
/// before the fault and as it ends.
async fn ride_out(app: &TestApp, key: &str, asset: &str, fault: Value) -> (Value, Value) {
    let exchange = fault["exchange"].as_str().unwrap().to_owned();
    let kind = fault["kind"].as_str().unwrap().to_owned();
    let window = Duration::from_millis(fault["duration_ms"].as_u64().unwrap());
    let before = healthy(app, key, &exchange, asset).await;
    app.fault(fault).await;
    let at = Instant::now();
    stays_fresh(app, key, asset, &exchange, window).await;
    report(&kind, at);
    (before, app.feed(&exchange).await.unwrap())
}

#[tokio::test]
async fn a_dropped_connection_reconnects_resubscribes_and_replays_are_deduplicated() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    healthy(&app, &key, "coinbase", "BTC").await;
    // Let the first session see a good share of trades, so the replay overlaps them.
    let before = app
        .eventually("coinbase trading", WITHIN, || async {
            let f = app.feed("coinbase").await?;
            (counter(&f, "frames") > 30).then_some(f)
        })
        .await;
    app.fault(json!({"exchange": "coinbase", "kind": "drop"}))
        .await;
    let at = Instant::now();
    let after = app
        .eventually("coinbase back with new trades", WITHIN, || async {
            let f = app.feed("coinbase").await?;
            let back = counter(&f, "reconnects") > counter(&before, "reconnects")
                && f["connected"] == true
                && counter(&f, "frames") > counter(&before, "frames") + 10;
            back.then_some(f)
        })
        .await;
    report("drop", at);
    // Coinbase replays recent trades in a snapshot on subscribe: ones already seen are
    // dropped by trade id.
    assert!(
        counter(&after, "duplicates") > counter(&before, "duplicates"),
        "{after}"
    );
    let r = app
        .get("/price?asset=BTC&source=coinbase", Some(&key))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_stalled_connection_is_declared_dead_while_rest_keeps_its_prices_fresh() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    let before = healthy(&app, &key, "okx", "ETH").await;
    app.fault(json!({"exchange": "okx", "kind": "stall", "duration_ms": 4000}))
        .await;
    let at = Instant::now();
    // Throughout the stall, okx's ETH stays fresh: REST stands in for the silent socket.
    stays_fresh(&app, &key, "ETH", "okx", Duration::from_millis(4000)).await;
    let after = app
        .eventually("okx reconnected after the stall", WITHIN, || async {
            let f = app.feed("okx").await?;
            let back = counter(&f, "reconnects") > counter(&before, "reconnects")
                && f["connected"] == true
                && f["last_frame_ms"].as_i64()? > beast_core::now_ms() - 1000;
            back.then_some(f)
        })
        .await;
    report("stall", at);
    assert!(
        counter(&after, "rest_ok") > counter(&before, "rest_ok"),
        "{after}"
    );
}

#[tokio::test]
async fn malformed_and_truncated_frames_are_counted_and_skipped() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    let before = healthy(&app, &key, "kraken", "BTC").await;
    app.fault(json!({"exchange": "kraken", "kind": "malformed", "duration_ms": 1500}))
        .await;
    app.fault(json!({"exchange": "kraken", "kind": "truncated", "duration_ms": 1500}))
        .await;
    let at = Instant::now();
    let during = app
        .eventually("bad frames counted", WITHIN, || async {
            let f = app.feed("kraken").await?;
            (counter(&f, "parse_errors") >= counter(&before, "parse_errors") + 4).then_some(f)
        })
        .await;
    report("malformed", at);
    let r = app.get("/price?asset=BTC&source=kraken", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        counter(&during, "reconnects"),
        counter(&before, "reconnects"),
        "bad frames never cost the connection"
    );
    assert!(counter(&during, "trades") > counter(&before, "trades"));
}

#[tokio::test]
async fn trades_for_unknown_symbols_are_counted_and_ignored() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    let before = healthy(&app, &key, "gateio", "BTC").await;
    app.fault(json!({"exchange": "gateio", "kind": "unknown_symbols", "duration_ms": 1500}))
        .await;
    let at = Instant::now();
    let during = app
        .eventually("unknown symbols counted", WITHIN, || async {
            let f = app.feed("gateio").await?;
            (counter(&f, "unknown_symbols") > counter(&before, "unknown_symbols")).then_some(f)
        })
        .await;
    report("unknown_symbols", at);
    assert_eq!(
        counter(&during, "reconnects"),
        counter(&before, "reconnects")
    );
    let r = app.get("/price?asset=ZZZ", Some(&key)).await;
    assert_eq!(r.body["error"]["code"], "unknown_asset", "{}", r.body);
    let r = app.get("/price?asset=BTC&source=gateio", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn stopped_heartbeats_leave_a_feed_with_flowing_trades_alone() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    // OKX: the node pings every second here, and the fault leaves every ping unanswered for
    // well over the 2 s liveness deadline (a node that wrongly gave up would reconnect 2 to
    // 3 s in); trades keep flowing, so the feed must stay up.
    let (before, after) = ride_out(
        &app,
        &key,
        "BTC",
        json!({"exchange": "okx", "kind": "stop_heartbeats", "duration_ms": 5000}),
    )
    .await;
    assert_eq!(
        counter(&after, "reconnects"),
        counter(&before, "reconnects"),
        "{after}"
    );
}

#[tokio::test]
async fn a_quiet_pair_is_refreshed_from_rest_not_reconnected() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    let (before, after) = ride_out(
        &app,
        &key,
        "BTC",
        json!({"exchange": "okx", "kind": "quiet", "symbols": ["BTC-USDT"], "duration_ms": 4000}),
    )
    .await;
    assert_eq!(
        counter(&after, "reconnects"),
        counter(&before, "reconnects"),
        "{after}"
    );
    assert!(
        counter(&after, "rest_ok") > counter(&before, "rest_ok"),
        "{after}"
    );
}

#[tokio::test]
async fn with_websocket_and_rest_both_down_prices_turn_honestly_stale_then_recover() {
    let app = spawn_fast_app().await;
    let key = app.key("partner").await;
    healthy(&app, &key, "gemini", "ETH").await;
    app.fault(json!({"exchange": "gemini", "kind": "stall"}))
        .await;
    app.fault(json!({"exchange": "gemini", "kind": "failing_rest"}))
        .await;
    let stalled = Instant::now();
    let stale = app
        .eventually("gemini ETH stale", WITHIN, || async {
            let r = app.get("/price?asset=ETH&source=gemini", Some(&key)).await;
            (r.status == StatusCode::SERVICE_UNAVAILABLE).then_some(r.body)
        })
        .await;
    assert_eq!(stale["error"]["code"], "stale_price", "{stale}");
    // The age of the last price gemini gave, before the stall (frames in flight aside).
    let age = stale["error"]["age_ms"].as_i64().unwrap();
    assert!(
        age >= 3000 && age + 200 >= stalled.elapsed().as_millis() as i64,
        "{stale}"
    );
    let feed = app.feed("gemini").await.unwrap();
    assert!(
        feed["stale_assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "ETH"),
        "{feed}"
    );
    // The aggregate leaves the stale source out and still answers.
    let r = app.get("/price?asset=ETH", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let gemini = r.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "gemini-ws")
        .unwrap_or_else(|| panic!("the stale source is still listed: {}", r.body));
    assert_eq!(
        (&gemini["fresh"], &gemini["used"]),
        (&json!(false), &json!(false)),
        "{}",
        r.body
    );

    app.fault(json!({"exchange": "gemini", "kind": "clear"}))
        .await;
    let at = Instant::now();
    app.wait_priced_by("ETH", "gemini", &key).await;
    report("stall+failing_rest", at);
}

#[tokio::test]
async fn slow_rest_on_one_exchange_never_delays_another() {
    let app = spawn_app_with_on_demand_okx(&[("rest_timeout_ms", "1000")]).await;
    let key = app.key("partner").await;
    healthy(&app, &key, "coinbase", "BTC").await;
    app.fault(json!({"exchange": "okx", "kind": "slow_rest", "delay_ms": 3000}))
        .await;
    let at = Instant::now();
    let slow = app.get("/price?asset=QQQ", Some(&key));
    let fast = async {
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let r = app
                .get("/price?asset=BTC&source=coinbase", Some(&key))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            worst = worst.max(started.elapsed());
        }
        worst
    };
    let (slow, worst) = tokio::join!(slow, fast);
    let waited = at.elapsed();
    assert_eq!(slow.body["error"]["code"], "no_price_yet", "{}", slow.body);
    assert!(
        waited < Duration::from_millis(2500),
        "the REST timeout bounds the wait: {waited:?}"
    );
    assert!(
        worst < Duration::from_millis(500),
        "coinbase answers were delayed: {worst:?}"
    );
    report("slow_rest", at);
    app.fault(json!({"exchange": "okx", "kind": "clear"})).await;
    app.wait_fresh("QQQ", &key, WITHIN).await;
}
