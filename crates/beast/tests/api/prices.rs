//! Prices over HTTP: freshness of every seeded asset, aggregation, provenance, errors.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use crate::helpers::{KRAKEN_ONLY_ASSET, refusal_code, spawn_app, spawn_app_with, sql};

#[tokio::test]
async fn every_seeded_prewarm_asset_has_a_fresh_price_within_ten_seconds() {
    let app = spawn_app().await;
    let key = app.key("partner").await;
    let listing = app.get("/assets", None).await.body;
    let assets: Vec<String> = listing["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["sources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["prewarm"] == true)
        })
        .map(|a| a["asset"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        assets.len(),
        149,
        "150 seeded prewarm rows, CRO on both Kraken and Crypto.com"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut missing: BTreeSet<String> = assets.iter().cloned().collect();
    while !missing.is_empty() && std::time::Instant::now() < deadline {
        let wanted: Vec<&str> = missing.iter().map(String::as_str).take(100).collect();
        let r = app
            .get(&format!("/prices?assets={}", wanted.join(",")), Some(&key))
            .await;
        for (asset, answer) in r.body["prices"].as_object().unwrap() {
            assert_eq!(answer["asset"], *asset);
            assert!(answer["sources_used"].as_u64().unwrap() >= 1);
            assert!(answer["age_ms"].as_i64().unwrap() < 30_000);
            missing.remove(asset);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        missing.is_empty(),
        "no fresh price within 10 s for {missing:?}"
    );
}

#[tokio::test]
async fn btc_is_the_median_of_the_usd_sources_with_every_source_listed() {
    let app = spawn_app().await;
    let key = app.key("pro").await;
    let r = app.wait_fresh("BTC", &key, Duration::from_secs(10)).await;
    assert_eq!(r.headers["content-type"], "application/json");
    let b = &r.body;
    assert_eq!(b["asset"], "BTC");
    assert_eq!(b["quote"], "USD");
    let sources = b["sources"].as_array().unwrap();
    let mut used: Vec<f64> = sources
        .iter()
        .filter(|s| s["used"] == true)
        .map(|s| {
            assert_eq!(s["quote"], "USD", "USDT is never folded into a USD median");
            s["price"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(used.len() as u64, b["sources_used"].as_u64().unwrap());
    used.sort_by(f64::total_cmp);
    let median = if used.len() % 2 == 1 {
        used[used.len() / 2]
    } else {
        (used[used.len() / 2 - 1] + used[used.len() / 2]) / 2.0
    };
    let served: f64 = b["price"].as_str().unwrap().parse().unwrap();
    assert!(
        (served - median).abs() < 1e-6,
        "served {served}, median of used {median}"
    );
    // Once every exchange has traded BTC, all six are listed with their own quote.
    let tags: BTreeSet<String> = app
        .eventually(
            "BTC from all six exchanges",
            Duration::from_secs(10),
            || async {
                let r = app.get("/price?asset=BTC", Some(&key)).await;
                let tags: BTreeSet<String> = r.body["sources"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| s["source"].as_str().map(str::to_owned))
                    .collect();
                (tags.len() == 6).then_some(tags)
            },
        )
        .await;
    for exchange in ["coinbase", "gemini", "kraken", "gateio", "cryptocom", "okx"] {
        assert!(tags.contains(&format!("{exchange}-ws")), "{tags:?}");
    }
}

#[tokio::test]
async fn a_caller_can_pin_one_exchange() {
    let app = spawn_app().await;
    let key = app.key("pro").await;
    app.wait_priced_by("ETH", "okx", &key).await;
    let r = app.get("/price?asset=ETH&source=okx", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["quote"].as_str(), r.body["sources_used"].as_u64()),
        (Some("USDT"), Some(1))
    );
    assert_eq!(r.body["sources"][0]["source"], "okx-ws");
    let r = app.get("/price?asset=TEER&source=okx", Some(&key)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_source"))
    );
}

#[tokio::test]
async fn errors_are_json_with_stable_codes() {
    let app = spawn_app_with(|dir| async move {
        // A mapped asset no feed subscribes to, on an exchange without a REST ticker to fetch
        // it from: known, but without a price.
        sql(
            &dir,
            &[
                KRAKEN_ONLY_ASSET,
                "UPDATE exchange_feeds SET rest_url = '' WHERE name = 'kraken'",
            ],
        )
        .await;
    })
    .await;
    let key = app.key("pro").await;
    let cases = [
        (
            "/price?asset=BTC",
            None,
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
        ),
        (
            "/price?asset=BTC",
            Some("tb_not_a_key"),
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        ),
        (
            "/price?asset=NOSUCHCOIN",
            Some(key.as_str()),
            StatusCode::NOT_FOUND,
            "unknown_asset",
        ),
        (
            "/price?asset=BTC-USD",
            Some(key.as_str()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/price",
            Some(key.as_str()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/price?asset=ADA",
            Some(key.as_str()),
            StatusCode::SERVICE_UNAVAILABLE,
            "no_price_yet",
        ),
        ("/nowhere", None, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (path, k, status, code) in cases {
        let r = app.get(path, k).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {}",
            r.body
        );
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn an_asset_with_only_stale_sources_answers_503_with_its_age() {
    let app = spawn_app_with(|dir| async move {
        // Fresh for 1 s, and no REST ticker to refresh a price once the feeds go silent.
        sql(&dir, &["UPDATE application_parameters SET value = '1000' WHERE name = 'price_fresh_max_age_ms'",
                    "UPDATE exchange_feeds SET rest_url = ''"]).await;
    })
    .await;
    let key = app.priced_key("pro").await;
    let last_fresh = Instant::now();
    app.fault(serde_json::json!({"kind": "stall"})).await;
    let stalled = Instant::now();
    let body = app
        .eventually("BTC stale", Duration::from_secs(10), || async {
            let r = app.get("/price?asset=BTC", Some(&key)).await;
            (r.status == StatusCode::SERVICE_UNAVAILABLE).then_some(r.body)
        })
        .await;
    assert_eq!(body["error"]["code"], "stale_price", "{body}");
    // The age is that of the newest price, which came before the stall (give or take frames
    // already in flight) and at most one freshness period before the last fresh answer.
    let age = body["error"]["age_ms"].as_i64().unwrap();
    assert!(age >= 1000, "{body}");
    assert!(age + 200 >= stalled.elapsed().as_millis() as i64, "{body}");
    assert!(
        age <= last_fresh.elapsed().as_millis() as i64 + 1000,
        "{body}"
    );
}

#[tokio::test]
async fn public_endpoints_list_exchanges_assets_and_health() {
    let app = spawn_app().await;
    let ex = app.get("/exchanges", None).await;
    assert_eq!(ex.status, StatusCode::OK);
    let names: Vec<&str> = ex.body["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["coinbase", "cryptocom", "gateio", "gemini", "kraken", "okx"]
    );
    let assets = app.get("/assets", None).await.body;
    let btc = assets["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(btc["sources"].as_array().unwrap().len(), 6);
    for addr in [app.price, app.health] {
        let h = app.get_at(addr, "/health", None).await;
        assert_eq!(
            (h.status, h.body["node"].as_str()),
            (StatusCode::OK, Some("test-node"))
        );
        assert_eq!(h.body["feeds"]["total"], 6);
    }
}

/// Query strings from a seeded mix of real parameters, odd values, stray separators and
/// broken percent-escapes; the same for a given seed.
fn odd_queries(seed: u64, n: usize) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    const PIECES: &[&str] = &[
        "asset=BTC",
        "asset=btc",
        "asset=",
        "asset=NOSUCHCOIN",
        "assets=BTC,ETH",
        "assets=",
        "assets=,,,",
        "source=kraken-ws",
        "source=",
        "format=csv",
        "format=xml",
        "page_size=all",
        "page_size=-1",
        "page_size=99999999999999999999",
        "from=2026-01-01",
        "to=yesterday",
        "cursor=abc",
        "report=summary",
        "status=abc",
        "protocol=udp",
    ];
    const ODD: &[&str] = &[
        "%00",
        "%FF",
        "%zz",
        "%",
        "&&",
        "=",
        "==",
        "%2C",
        "+",
        ";",
        "%E2%82%AC",
        "[]",
        "%0D%0A",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut q: Vec<String> = (0..rng.random_range(1..=4))
                .map(|_| PIECES[rng.random_range(0..PIECES.len())].to_owned())
                .collect();
            for _ in 0..rng.random_range(0..=2) {
                let piece = rng.random_range(0..q.len());
                let at = rng.random_range(0..=q[piece].len());
                let odd = if rng.random_bool(0.1) {
                    "A".repeat(rng.random_range(100..4000))
                } else {
                    ODD[rng.random_range(0..ODD.len())].to_owned()
                };
                q[piece].insert_str(at, &odd);
            }
            q.join("&")
        })
        .collect()
}

#[tokio::test]
async fn odd_queries_get_an_answer_or_an_error_with_a_code_and_never_a_server_error() {
    let app = spawn_app().await;
    let key = app.key("partner").await;
    // Priced first, so a 503 for a price not yet in would not pass for a server error.
    for asset in ["BTC", "ETH"] {
        app.wait_priced_by(asset, "kraken-ws", &key).await;
    }
    let paths = [
        (app.price, "/price"),
        (app.price, "/prices"),
        (app.price, "/assets"),
        (app.report, "/reports/summary"),
        (app.report, "/reports/usage"),
    ];
    let (mut ok, mut refused) = (0, 0);
    for (i, query) in odd_queries(0x5eed_0007, 1000).iter().enumerate() {
        let (addr, path) = paths[i % paths.len()];
        let path_and_query = format!("{path}?{query}");
        let (status, _, body) = app.get_text(addr, &path_and_query, Some(&key)).await;
        assert!(
            !status.is_server_error(),
            "{path_and_query}: {status} {body}"
        );
        if status.is_success() {
            ok += 1;
        } else {
            let error: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{path_and_query}: {status}, not JSON ({e}): {body}"));
            assert!(
                refusal_code(&error).is_some(),
                "{path_and_query}: {status} {body}"
            );
            refused += 1;
        }
    }
    assert!(
        ok > 100 && refused > 100,
        "{ok} answered, {refused} refused"
    );
    // Nothing was counted as a server error either.
    let stats = app.stress_stats().await;
    assert_eq!(stats["counters"]["errors_5xx"], 0, "{stats}");
}
