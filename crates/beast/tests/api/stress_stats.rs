//! Runtime counters at `/admin/stress-stats`: they read exactly the traffic sent, reset starts
//! them again, only the admin sees them; and the governor refuses requests over the node's
//! in-flight limit with 503 `overloaded`, counted.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::{
    helpers::{TestApp, spawn_app, spawn_app_with_on_demand_okx},
    udp::{ask, unanswered},
};

/// The pool gauges move with background work (key and exchange reloads): checked apart.
const POOL: [&str; 2] = ["db_open_conns", "db_in_use_conns"];

/// The counters without the pool gauges, after checking those are sane.
fn counters(stats: &Value) -> Value {
    let mut counters = stats["counters"].clone();
    let map = counters.as_object_mut().unwrap();
    assert_eq!(map.len(), 24, "{stats}");
    let [open, in_use] = POOL.map(|name| map.remove(name).unwrap().as_u64().unwrap());
    assert!((1..=4).contains(&open) && in_use <= open, "{stats}");
    counters
}

/// Polls until the counters read `expected` (replies, usage writes and the UDP send count land
/// a moment after the answers), and returns the whole stats body.
async fn settled(app: &TestApp, expected: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = app.stress_stats().await;
        if counters(&stats) == *expected || Instant::now() > deadline {
            assert_eq!(counters(&stats), *expected, "{stats}");
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resets the counters once every usage event so far is written, so the warm-up's writes are
/// not counted after the reset. Returns the counters before the reset, and a moment just
/// before the reset was asked for (so the node's reset is not earlier).
async fn reset_when_written(app: &TestApp) -> (Value, Instant) {
    app.eventually("usage written", Duration::from_secs(5), || async {
        let c = &app.stress_stats().await["counters"];
        (c["bg_work_completed"] == c["bg_work_submitted"]).then_some(())
    })
    .await;
    let asked = Instant::now();
    let r = app.admin("/admin/stress-reset", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (r.body, asked)
}

/// Every counter at zero, then the given ones.
fn expected(nonzero: &[(&str, u64)]) -> Value {
    let mut all = json!({
        "tcp_requests": 0, "udp_requests": 0, "report_requests": 0,
        "memory_hits": 0, "shared_cache_hits": 0, "rest_hits": 0, "cache_misses": 0,
        "udp_packets_received": 0, "udp_packets_sent": 0, "udp_packets_dropped": 0,
        "bg_work_submitted": 0, "bg_work_dropped": 0, "bg_work_completed": 0,
        "batch_rows_queued": 0,
        "rate_limited": 0, "quota_exceeded": 0, "auth_failures": 0,
        "in_flight": 0, "max_in_flight": 0, "governor_rejections": 0,
        "errors_4xx": 0, "errors_5xx": 0,
    });
    for (name, n) in nonzero {
        assert!(all.get(*name).is_some(), "no counter {name}");
        all[*name] = json!(n);
    }
    all
}

#[tokio::test]
async fn stress_stats_read_exactly_the_traffic_sent_and_reset_starts_them_again() {
    let app = spawn_app().await;
    let key = app.priced_key("partner").await;
    // The warm-up is counted, and is what the first reset returns.
    let (warm_up, reset_asked) = reset_when_written(&app).await;
    assert!(
        warm_up["counters"]["memory_hits"].as_u64().unwrap() >= 1,
        "{warm_up}"
    );

    for _ in 0..7 {
        let r = app.get("/price?asset=BTC", Some(&key)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    for _ in 0..2 {
        let r = app.get("/price?asset=NOSUCHCOIN", Some(&key)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    }
    let r = app.get("/price?asset=BTC", Some("tb_wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(unanswered(&app, &socket, b"\x00\x01garbage").await);
    for id in ["u1", "u2", "u3"] {
        let request = json!({"key": key, "asset": "BTC", "id": id}).to_string();
        let reply = ask(&app, &socket, request.as_bytes()).await;
        assert_eq!((&reply["id"], &reply["asset"]), (&json!(id), &json!("BTC")));
    }

    // 7 + 2 + 1 HTTP requests; 10 answers from memory; 4 datagrams in, 3 out, 1 dropped;
    // 12 usage rows (the bad key has none); the 2 unknown assets and the bad key are 4xx.
    let traffic = expected(&[
        ("tcp_requests", 10),
        ("udp_requests", 3),
        ("memory_hits", 10),
        ("udp_packets_received", 4),
        ("udp_packets_sent", 3),
        ("udp_packets_dropped", 1),
        ("bg_work_submitted", 12),
        ("bg_work_completed", 12),
        ("auth_failures", 1),
        ("max_in_flight", 1),
        ("errors_4xx", 3),
    ]);
    let stats = settled(&app, &traffic).await;
    assert_eq!(stats["node"], "test-node");
    let d = &stats["derived"];
    assert_eq!(
        (
            &d["memory_hit_pct"],
            &d["cache_miss_pct"],
            &d["udp_drop_pct"],
            &d["bg_drop_pct"]
        ),
        (&json!(100.0), &json!(0.0), &json!(25.0), &json!(0.0)),
        "{stats}"
    );
    let uptime = stats["uptime_s"].as_u64().unwrap() as f64;
    let since_reset = stats["since_reset_s"].as_f64().unwrap();
    // Rates are the counts over the time since reset, to two decimals.
    for (rate, count) in [("tcp_rps", 10.0), ("udp_rps", 3.0), ("total_rps", 13.0)] {
        let expected = count / since_reset;
        assert!(
            (d[rate].as_f64().unwrap() - expected).abs() <= 0.01 + expected / 100.0,
            "{rate} should be {expected:.2}: {stats}"
        );
    }
    // Counted from the reset just made, not from the node's start (seconds earlier): at most
    // the time since it was asked for, give or take the answer's rounding to the millisecond.
    let bound = reset_asked.elapsed().as_secs_f64() + 0.0005;
    assert!(
        since_reset > 0.0 && since_reset <= bound && since_reset <= uptime + 1.0,
        "since_reset_s at most {bound:.3}: {stats}"
    );

    // Reset returns the counters as they were, then they start from zero.
    let before = app.admin("/admin/stress-reset", None).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(counters(&before.body), traffic);
    let after = app.stress_stats().await;
    assert_eq!(counters(&after), expected(&[]), "{after}");
    assert!(
        after["since_reset_s"].as_f64().unwrap() < since_reset,
        "{after}"
    );
    // The health summary keeps counting since start.
    let health = app.health().await;
    assert_eq!(
        (
            &health["udp"]["received"],
            &health["udp"]["dropped_garbage"]
        ),
        (&json!(4), &json!(1)),
        "{health}"
    );
}

#[tokio::test]
async fn stress_stats_and_reset_need_the_admin_key() {
    let app = spawn_app().await;
    let key = app.key("pro").await;
    for path in ["/admin/stress-stats", "/admin/stress-reset"] {
        let r = app.get(path, None).await;
        assert_eq!(
            (r.status, &r.body["error"]["code"]),
            (StatusCode::UNAUTHORIZED, &json!("missing_api_key")),
            "{path}"
        );
        let r = app.get(path, Some(&key)).await;
        assert_eq!(
            (r.status, &r.body["error"]["code"]),
            (StatusCode::FORBIDDEN, &json!("forbidden")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_price_request_over_the_in_flight_limit_is_refused_overloaded_and_counted() {
    let app = spawn_app_with_on_demand_okx(&[
        ("governor_max_in_flight", "1"),
        ("rest_timeout_ms", "4000"),
        ("unauthenticated_per_ip_per_minute", "1"),
    ])
    .await;
    let key = app.priced_key("partner").await;
    assert_eq!(app.stress_stats().await["governor_max_in_flight"], 1);
    app.fault(json!({"exchange": "okx", "kind": "slow_rest", "delay_ms": 5000}))
        .await;
    reset_when_written(&app).await;

    // QQQ holds the one slot while its REST fetch hangs; meanwhile BTC is refused, both ways.
    let slow = app.get("/price?asset=QQQ", Some(&key));
    let refused = async {
        app.eventually("QQQ in flight", Duration::from_secs(5), || async {
            (app.stress_stats().await["counters"]["in_flight"] == 1).then_some(())
        })
        .await;
        let http = app.get("/price?asset=BTC", Some(&key)).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let request = json!({"key": key, "asset": "BTC", "id": "busy"}).to_string();
        let udp = ask(&app, &socket, request.as_bytes()).await;
        // Without a valid key, as any refusal, within the address's allowance (one here).
        let forged = json!({"key": "tb_forged", "asset": "BTC", "id": "f"}).to_string();
        let first = ask(&app, &socket, forged.as_bytes()).await;
        let second = unanswered(&app, &socket, forged.as_bytes()).await;
        (http, udp, first, second)
    };
    let (slow, (http, udp, forged, silent)) = tokio::join!(slow, refused);
    assert_eq!(forged["error"]["code"], "overloaded", "{forged}");
    assert!(silent, "past the allowance");
    assert_eq!(
        (http.status, &http.body["error"]["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("overloaded")),
        "{}",
        http.body
    );
    assert_eq!(
        http.headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        (&udp["id"], &udp["error"]["code"]),
        (&json!("busy"), &json!("overloaded")),
        "{udp}"
    );
    assert_eq!(slow.body["error"]["code"], "no_price_yet", "{}", slow.body);
    // The slot is free again once the slow request is answered.
    let r = app.get("/price?asset=BTC", Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Refused requests are neither metered nor looked up: QQQ missed, the last BTC hit.
    settled(
        &app,
        &expected(&[
            ("tcp_requests", 3),
            ("udp_requests", 3),
            ("memory_hits", 1),
            ("cache_misses", 1),
            ("udp_packets_received", 3),
            ("udp_packets_sent", 2),
            ("udp_packets_dropped", 1),
            ("bg_work_submitted", 2),
            ("bg_work_completed", 2),
            ("max_in_flight", 1),
            ("governor_rejections", 4),
            ("errors_5xx", 4),
        ]),
    )
    .await;
}

/// `/metrics` on the health listener, read into name → value (the node label checked).
async fn prometheus(app: &TestApp) -> (String, std::collections::BTreeMap<String, u64>) {
    let (status, headers, text) = app.get_text(app.health, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let values = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series
                .strip_suffix("{node=\"test-node\"}")
                .unwrap_or_else(|| panic!("every series carries the node label: {line}"));
            (name.to_owned(), value.parse().unwrap())
        })
        .collect();
    (text, values)
}

#[tokio::test]
async fn metrics_export_the_counters_since_start_and_a_stress_reset_leaves_them() {
    let app = spawn_app().await;
    let key = app.priced_key("partner").await;
    for _ in 0..4 {
        assert_eq!(app.get("/price?asset=BTC", Some(&key)).await.status, 200);
    }
    assert_eq!(
        app.get("/price?asset=BTC", Some("tb_wrong")).await.status,
        401
    );
    let (before, _) = reset_when_written(&app).await;
    let (text, values) = prometheus(&app).await;
    let counters = before["counters"].as_object().unwrap();
    assert_eq!(values.len(), 24, "{text}");
    for (name, value) in counters {
        let gauge = ["batch_rows_queued", "in_flight", "max_in_flight"]
            .into_iter()
            .chain(POOL)
            .any(|g| g == name);
        let series = if gauge {
            format!("beast_{name}")
        } else {
            format!("beast_{name}_total")
        };
        let kind = if gauge { "gauge" } else { "counter" };
        assert!(
            text.contains(&format!("# TYPE {series} {kind}\n")),
            "{series}: {text}"
        );
        assert!(
            text.contains(&format!("# HELP {series} ")),
            "{series}: {text}"
        );
        // The counters are since start, as the stress view read them just before its reset.
        if !gauge {
            assert_eq!(values[&series], value.as_u64().unwrap(), "{series}");
        }
    }
    assert!(values["beast_tcp_requests_total"] >= 5, "{text}");
    assert_eq!(values["beast_auth_failures_total"], 1, "{text}");
    // The reset moved the admin view's baseline only: Prometheus never sees a counter fall.
    assert_eq!(app.stress_stats().await["counters"]["auth_failures"], 0);
    // Nothing counted ran between the two scrapes: every counter reads the same.
    let (_, after) = prometheus(&app).await;
    assert_eq!(after["beast_auth_failures_total"], 1);
    for (series, value) in values.iter().filter(|(s, _)| s.ends_with("_total")) {
        assert_eq!(after[series], *value, "{series}");
    }
    // Only on the health listener: the public price and report listeners do not show it.
    for addr in [app.price, app.report] {
        let (status, _, body) = app.get_text(addr, "/metrics", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{addr}: {body}");
        assert!(body.contains("not_found"), "{body}");
    }
}
