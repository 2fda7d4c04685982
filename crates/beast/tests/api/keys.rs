//! Keys and tiers on a running node: live creation and revocation, GCRA rate limits, monthly
//! quotas, unlimited partner keys.

use std::time::{Duration, Instant};

use beast_store::{SqliteStore, Store};
use reqwest::StatusCode;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, sql, usage_rows};

/// A node with one more tier, given as its `rate_limit_template` row.
async fn spawn_app_with_tier(row: &'static str) -> TestApp {
    spawn_app_with(|dir| async move { sql(&dir, &[row]).await }).await
}

#[tokio::test]
async fn a_key_created_or_revoked_while_running_takes_effect_within_a_second() {
    let app = spawn_app().await;
    let started = Instant::now();
    let (key, id) = app.key_with_id("pro").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "accepted after {:?}",
        started.elapsed()
    );
    // Past authentication: an unknown asset is the answer, whatever the prices are doing.
    let r = app.get("/price?asset=NOSUCHCOIN", Some(&key)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_asset"))
    );

    let store = SqliteStore::open(app.data_dir.path()).await.unwrap();
    assert!(store.revoke_api_key(id).await.unwrap());
    assert!(
        !store.revoke_api_key(id).await.unwrap(),
        "revoking twice is refused"
    );
    store.close().await;
    app.wait_active_keys(0, Duration::from_secs(1)).await;
    let r = app.get("/price?asset=BTC", Some(&key)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
    );
}

#[tokio::test]
async fn requests_over_the_tier_rate_get_429_with_retry_after() {
    let app = spawn_app_with_tier(
        "INSERT INTO rate_limit_template VALUES ('tight', 1, 5, 1000000, 0, 0, 0)",
    )
    .await;
    let key = app.key("tight").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = app.get("/price?asset=NOSUCHCOIN", Some(&key)).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.body["error"]["code"], "rate_limited");
            let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "retry-after {retry}");
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses,
        [404, 404, 404, 404, 404, 429, 429, 429],
        "burst of 5, then limited"
    );
}

/// A tier with plenty of rate and a monthly quota of 5 answers.
const TINY_TIER: &str = "INSERT INTO rate_limit_template VALUES ('tiny', 1000, 1000, 5, 0, 0, 0)";

#[tokio::test]
async fn the_monthly_quota_runs_out_exactly_at_the_tier_number() {
    let app = spawn_app_with_tier(TINY_TIER).await;
    let key = app.priced_key("tiny").await;
    let mut ok = 1;
    let mut refused = None;
    for _ in 0..10 {
        let r = app.get("/price?asset=BTC", Some(&key)).await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ok, 5, "exactly the quota is served");
    let r = refused.expect("the 6th request is refused");
    assert_eq!(r.body["error"]["code"], "quota_exceeded");
    let retry: i64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    let now = beast_core::now_ms();
    let to_month_end = (beast_core::next_month_start_ms(now) - now) / 1000;
    assert!(
        (retry - to_month_end).abs() <= 2,
        "resets at the month's end ({to_month_end} s), got {retry}"
    );
}

#[tokio::test]
async fn a_batch_needs_quota_for_every_asset_and_names_each_once() {
    let mut app = spawn_app_with_tier(TINY_TIER).await;
    let key = app.priced_key("tiny").await;
    app.wait_fresh("ETH", &key, Duration::from_secs(10)).await;
    // 2 of 5 used: four more assets do not fit, and nothing is served.
    let r = app.get("/prices?assets=BTC,ETH,SOL,XRP", Some(&key)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded")),
        "{}",
        r.body
    );
    // A name given twice is priced, metered and counted once.
    let r = app.get("/prices?assets=BTC,ETH,btc", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let priced: Vec<&String> = r.body["prices"].as_object().unwrap().keys().collect();
    assert_eq!(priced, ["BTC", "ETH"]);
    let r = app.get("/price?asset=BTC", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "the fifth answer: {}", r.body);
    let r = app.get("/price?asset=BTC", Some(&key)).await;
    assert_eq!(r.body["error"]["code"], "quota_exceeded", "{}", r.body);
    app.stop().await;
    assert_eq!(
        usage_rows(app.data_dir.path(), "WHERE status = 200").await,
        5
    );
}

#[tokio::test]
async fn partner_keys_are_never_limited() {
    let app = spawn_app().await;
    let key = app.key("partner").await;
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..300).map(|_| app.get("/price?asset=NOSUCHCOIN", Some(&key))),
    )
    .await
    .into_iter()
    .map(|r| r.status.as_u16())
    .collect();
    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
}
