//! Usage reports on the report listener: numbers that match known traffic in all four
//! formats (CSV and TSV read back by Python's `csv` module), who sees what, the monthly
//! allowance, pagination while rows arrive, UDP, rollups and retention through `beast sync`.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Stdio,
    time::Duration,
};

use beast_core::{DAY_MS, now_ms};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::UdpSocket};

use crate::{
    helpers::{
        TestApp, ask_udp, beast_ok, column, refusal_code, scalar, spawn_app, spawn_app_with,
        spawn_app_with_parameters, sql, usage_rows,
    },
    udp::{answers, mutants},
};

/// A report as text: status, headers, body.
async fn report_text(
    app: &TestApp,
    path: &str,
    key: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    app.get_text(app.report, path, Some(key)).await
}

async fn report_json(app: &TestApp, path: &str, key: &str) -> (StatusCode, Value) {
    let r = app.get_at(app.report, path, Some(key)).await;
    (r.status, r.body)
}

/// Rows of a CSV (or TSV) text as Python's `csv.DictReader` reads them.
async fn python_rows(text: &str, tsv: bool) -> Vec<BTreeMap<String, String>> {
    let script = "import csv, json, sys\n\
        tsv = sys.argv[1] == 'tsv'\n\
        reader = csv.DictReader(sys.stdin, delimiter='\\t' if tsv else ',',\n\
                                quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)\n\
        print(json.dumps(list(reader)))\n";
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script, if tsv { "tsv" } else { "csv" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to read CSV back");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// JSON objects as strings per field, as a CSV reader would give them.
fn as_text_rows(objects: &[Value]) -> Vec<BTreeMap<String, String>> {
    objects
        .iter()
        .map(|o| {
            o.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}

/// A summary's entries in table order: the total, then each breakdown.
fn summary_entries(summary: &Value) -> Vec<Value> {
    let mut entries = vec![summary["total"].clone()];
    for group in ["by_asset", "by_source", "by_protocol", "by_day"] {
        entries.extend(summary[group].as_array().unwrap().iter().cloned());
    }
    entries
}

fn entry<'a>(summary: &'a Value, group: &str, name: &str) -> &'a Value {
    summary[group]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {group} {name}: {summary}"))
}

/// Inserts usage rows `(ts_ms, key_id, asset, protocol, status, latency_us)` directly.
async fn insert_usage(app: &TestApp, rows: &[(i64, i64, &str, &str, u16, u32)]) {
    for chunk in rows.chunks(400) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(ts, key, asset, protocol, status, latency)| {
                let (source, tier) = if *status == 200 {
                    ("coinbase-ws,kraken-ws", "memory")
                } else {
                    ("", "none")
                };
                format!(
                    "({ts}, {key}, '{asset}', '{source}', '{protocol}', 'n1', {status}, {latency}, '{tier}')"
                )
            })
            .collect();
        let statement = format!(
            "INSERT INTO usage_logs (ts_ms, key_id, asset, source, protocol, node, status, latency_us, cache_tier) VALUES {}",
            values.join(",")
        );
        sql(app.data_dir.path(), &[&statement]).await;
    }
}

async fn report_log_count(app: &TestApp, key_id: i64) -> i64 {
    let query = format!("SELECT COUNT(*) FROM report_usage_logs WHERE key_id = {key_id}");
    scalar(app.data_dir.path(), &query).await
}

#[tokio::test]
async fn reports_match_known_traffic_in_every_format_and_each_key_sees_its_own() {
    let app = spawn_app().await;
    let (warm, warm_id) = app.key_with_id("pro").await;
    let (a, a_id) = app.key_with_id("starter").await;
    let (b, b_id) = app.key_with_id("pro").await;
    app.wait_fresh("BTC", &warm, Duration::from_secs(10)).await;
    app.wait_fresh("ETH", &warm, Duration::from_secs(10)).await;

    // Known traffic: key a 4 BTC + 2 unknown over HTTP and 3 ETH over UDP; key b 2 BTC.
    for _ in 0..4 {
        assert_eq!(app.get("/price?asset=BTC", Some(&a)).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(app.get("/price?asset=NOPE", Some(&a)).await.status, 404);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3 {
        let request = json!({"key": a, "asset": "ETH", "id": i.to_string()}).to_string();
        let reply = crate::udp::ask(&app, &socket, request.as_bytes()).await;
        assert_eq!(reply["asset"], "ETH", "{reply}");
    }
    for _ in 0..2 {
        assert_eq!(app.get("/price?asset=BTC", Some(&b)).await.status, 200);
    }
    app.wait_count(
        &format!("SELECT COUNT(*) FROM usage_logs WHERE key_id IN ({a_id}, {b_id})"),
        11,
    )
    .await;

    // The summary, as JSON.
    let (status, s) = report_json(&app, "/reports/summary", &a).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    let total = &s["total"];
    assert_eq!(
        (&total["requests"], &total["errors"]),
        (&json!(9), &json!(2))
    );
    assert_eq!(total["none"], 2);
    assert_eq!(
        total["memory"].as_i64().unwrap() + total["rest"].as_i64().unwrap(),
        7
    );
    for (asset, requests, errors) in [("BTC", 4, 0), ("ETH", 3, 0), ("NOPE", 2, 2)] {
        let e = entry(&s, "by_asset", asset);
        assert_eq!(
            (&e["requests"], &e["errors"]),
            (&json!(requests), &json!(errors))
        );
    }
    assert_eq!(s["by_asset"].as_array().unwrap().len(), 3);
    assert_eq!(entry(&s, "by_protocol", "http")["requests"], 6);
    assert_eq!(entry(&s, "by_protocol", "udp")["requests"], 3);
    let per_day: i64 = s["by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(per_day, 9);
    let p = |q: &str| total[q].as_i64().unwrap();
    let chain = [
        p("latency_p50_us"),
        p("latency_p95_us"),
        p("latency_p99_us"),
    ];
    assert!(
        0 < chain[0] && chain.windows(2).all(|w| w[0] <= w[1]),
        "{total}"
    );
    // Percentiles are bucket values within 1 % of a real latency.
    assert!(chain[2] <= p("latency_max_us") + p("latency_max_us") / 100 + 1);

    // The same summary as CSV and TSV (read by Python) and text.
    let expected = as_text_rows(&summary_entries(&s));
    for (format, tsv) in [("csv", false), ("tsv", true)] {
        let (status, headers, text) =
            report_text(&app, &format!("/reports/summary?format={format}"), &a).await;
        assert_eq!(status, StatusCode::OK);
        let ct = headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with(if tsv {
            "text/tab-separated-values"
        } else {
            "text/csv"
        }));
        assert_eq!(python_rows(&text, tsv).await, expected, "{format}: {text}");
    }
    let (_, _, text) = report_text(&app, "/reports/summary?format=text", &a).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len() + 2, "{text}");
    assert!(lines[0].starts_with("group") && lines[1].starts_with("--------"));
    for (line, e) in lines[2..].iter().zip(&expected) {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(e["group"].as_str()), "{line}");
        assert_eq!(words.next(), Some(e["name"].as_str()), "{line}");
        assert_eq!(words.next(), Some(e["requests"].as_str()), "{line}");
    }

    // The usage rows, newest first, as JSON, CSV and TSV.
    let (status, u) = report_json(&app, "/reports/usage", &a).await;
    assert_eq!(status, StatusCode::OK, "{u}");
    let rows = u["rows"].as_array().unwrap();
    assert_eq!(
        (rows.len(), &u["count"], &u["next_cursor"]),
        (9, &json!(9), &Value::Null)
    );
    assert!(rows.iter().all(|r| r["key_id"] == a_id));
    let count = |field: &str, value: Value| rows.iter().filter(|r| r[field] == value).count();
    assert_eq!(
        (
            count("protocol", json!("http")),
            count("protocol", json!("udp"))
        ),
        (6, 3)
    );
    assert_eq!(
        (count("asset", json!("BTC")), count("status", json!(404))),
        (4, 2)
    );
    // Each source counts the answers it took part in, as the rows list them.
    let mut per_source: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        for tag in r["source"]
            .as_str()
            .unwrap()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            *per_source.entry(tag.to_owned()).or_default() += 1;
        }
    }
    let reported: BTreeMap<String, i64> = s["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["errors"], 0, "{e}");
            (
                e["name"].as_str().unwrap().to_owned(),
                e["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        !reported.is_empty() && reported == per_source,
        "{reported:?} vs {per_source:?}"
    );
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let expected = as_text_rows(rows);
    for (format, tsv) in [("csv", false), ("tsv", true)] {
        let (_, _, text) = report_text(&app, &format!("/reports/usage?format={format}"), &a).await;
        assert_eq!(python_rows(&text, tsv).await, expected, "{format}: {text}");
    }
    let (_, _, text) = report_text(&app, "/reports/usage?format=text", &a).await;
    assert_eq!(text.lines().count(), 2 + 9, "{text}");

    // Filters narrow the rows.
    let (_, u) = report_json(&app, "/reports/usage?protocol=udp&asset=eth", &a).await;
    assert_eq!(u["count"], 3, "{u}");
    let (_, u) = report_json(&app, "/reports/usage?status=404", &a).await;
    assert_eq!(u["count"], 2, "{u}");
    // A source by exchange name or by tag: the rows it took part in.
    let coinbase = per_source["coinbase-ws"];
    for source in ["coinbase", "COINBASE-ws"] {
        let (_, u) = report_json(&app, &format!("/reports/usage?source={source}"), &a).await;
        assert_eq!(u["count"], coinbase, "{source}: {u}");
    }
    let later = now_ms() + 60_000;
    let (_, u) = report_json(&app, &format!("/reports/usage?from={later}"), &a).await;
    assert_eq!(u["count"], 0, "{u}");

    // Each key sees only its own usage; the admin sees all and may filter by key.
    let (_, s) = report_json(&app, "/reports/summary", &b).await;
    assert_eq!(s["total"]["requests"], 2, "{s}");
    let (status, e) = report_json(&app, &format!("/reports/usage?key_id={b_id}"), &a).await;
    assert_eq!(
        (status, &e["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("key_id"))
    );
    let (_, s) = report_json(
        &app,
        &format!("/reports/summary?key_id={a_id}"),
        &app.admin_key,
    )
    .await;
    assert_eq!(s["total"]["requests"], 9, "{s}");
    let (_, u) = report_json(&app, "/reports/usage?page_size=all", &app.admin_key).await;
    let keys: BTreeSet<i64> = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key_id"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, BTreeSet::from([warm_id, a_id, b_id]));
    assert_eq!(u["count"], usage_rows(app.data_dir.path(), "").await);

    // Unauthenticated: 401, and not logged. Every report request of key a was logged.
    let (status, _) = report_json(&app, "/reports/summary", "tb_nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Logged (an export's row once its stream ends, which may be just after the client read
    // it all): key a's 4 summaries, 4 usage reports, 5 filtered ones and the refused key_id;
    // then with key b's 1 and the admin's 2, 17; the 401 is not.
    app.wait_count(
        &format!("SELECT COUNT(*) FROM report_usage_logs WHERE key_id = {a_id}"),
        14,
    )
    .await;
    app.wait_count("SELECT COUNT(*) FROM report_usage_logs", 17)
        .await;
    // The node counted every report request: those 17 and the 401.
    let stats = app.stress_stats().await;
    assert_eq!(stats["counters"]["report_requests"], 18, "{}", stats);
}

#[tokio::test]
async fn the_allowance_runs_out_exactly_at_the_tier_number_and_a_new_month_starts_over() {
    let app = spawn_app_with(|dir| async move {
        sql(
            &dir,
            &["UPDATE rate_limit_template SET monthly_report_allowance = 3 WHERE name = 'starter'"],
        )
        .await;
    })
    .await;
    let (key, id) = app.key_with_id("starter").await;
    let free = app.key("free").await;

    // A tier without reports: 403, whatever it asks.
    let (status, e) = report_json(&app, "/reports/summary", &free).await;
    assert_eq!(
        (status, &e["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("reports_not_included"))
    );

    // Bad parameters are refused before the allowance is touched.
    let (status, e) = report_json(&app, "/reports/usage?from=yesterday", &key).await;
    assert_eq!(
        (status, &e["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("from"))
    );
    for _ in 0..3 {
        let (status, body) = report_json(&app, "/reports/summary", &key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = report_text(&app, "/reports/usage", &key).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "report_allowance_used");
    let resets = beast_core::next_month_start_ms(now_ms());
    assert_eq!(e["error"]["resets_at"], beast_core::rfc3339_ms(resets));
    let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((retry - (resets - now_ms()) / 1000).abs() <= 2, "{retry}");
    // With the allowance used up, bad parameters are still refused for themselves: they are
    // checked first (taken first, they would be refused for the allowance).
    let (status, e) = report_json(&app, "/reports/usage?from=yesterday", &key).await;
    assert_eq!(
        (status, &e["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("from"))
    );
    // 2 bad + 3 answered + 1 refused, all logged; 3 counted.
    assert_eq!(report_log_count(&app, id).await, 6);

    // A count from last month does not hold this month back.
    sql(
        app.data_dir.path(),
        &[&format!(
            "UPDATE report_count SET month = '2000-01' WHERE key_id = {id}"
        )],
    )
    .await;
    let (status, _) = report_json(&app, "/reports/summary", &key).await;
    assert_eq!(status, StatusCode::OK);
    let month_count: String = scalar(
        app.data_dir.path(),
        &format!("SELECT month || ' ' || count FROM report_count WHERE key_id = {id}"),
    )
    .await;
    assert_eq!(month_count, format!("{} 1", beast_core::month_of(now_ms())));
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats_while_rows_arrive() {
    let app = spawn_app().await;
    let (key, id) = app.key_with_id("pro").await;
    let base = now_ms() - 3_600_000;
    // 25 rows, newest first 10 a page. The last of page 1 (row 15) and the first of page 2
    // (row 14) share a millisecond: only the id tells the cursor where page 2 starts.
    let mut rows: Vec<(i64, i64, &str, &str, u16, u32)> = (0..25)
        .map(|i| (base + i * 1000, id, "BTC", "http", 200, 100))
        .collect();
    rows[15].0 = rows[14].0;
    insert_usage(&app, &rows).await;
    let newest_first: Vec<i64> = column(
        app.data_dir.path(),
        &format!("SELECT id FROM usage_logs WHERE key_id = {id} ORDER BY ts_ms DESC, id DESC"),
    )
    .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/reports/usage?page_size=10&cursor={c}"),
            None => "/reports/usage?page_size=10".into(),
        };
        let (status, headers, body) = report_text(&app, &path, &key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        seen.extend(
            page["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap()),
        );
        pages += 1;
        if pages == 1 {
            // New rows arrive between pages; they are newer and never shift what follows.
            insert_usage(&app, &[(now_ms(), id, "ETH", "udp", 200, 50); 5]).await;
        }
        let header = headers
            .get("x-next-cursor")
            .map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), page["next_cursor"].as_str());
        match header {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first, "every row once, in order");
    let (_, u) = report_json(&app, "/reports/usage?page_size=all&format=json", &key).await;
    assert_eq!(u["count"], 30);
    let (status, e) = report_json(&app, "/reports/usage?cursor=nonsense", &key).await;
    assert_eq!(
        (status, &e["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("cursor"))
    );
}

#[tokio::test]
async fn mutated_report_datagrams_are_answered_if_json_and_fit_else_dropped() {
    // Mutants that spoil the key are refused: every one answered, however many.
    let app = spawn_app_with_parameters(&[("unauthenticated_per_ip_per_minute", "0")]).await;
    let key = app.key("partner").await;
    let bases: Vec<Vec<u8>> = [
        json!({"key": key, "report": "summary", "id": "r-1"}),
        json!({"key": key, "report": "usage", "page_size": 5, "format": "json", "id": "r-2"}),
        json!({"key": key, "report": "summary", "asset": "BTC", "from": "2026-01-01"}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect();
    let datagrams = mutants(0x5eed_0006, &bases, 600);
    // Each answerable one answered once, nothing else (`answers` asserts it): a summary, a
    // page of rows, or an error with a code.
    let replies = answers(app.report_udp, &datagrams).await;
    assert!(replies.len() > 100, "{} answered", replies.len());
    for reply in &replies {
        assert!(
            refusal_code(reply).is_some() || reply["total"].is_object() || reply["rows"].is_array(),
            "{reply}"
        );
    }
    // A request padded past the size limit is dropped, though its first bytes are JSON.
    let mut padded = json!({"key": key, "report": "summary"})
        .to_string()
        .into_bytes();
    padded.resize(beast_api::udp::MAX_REQUEST + 1, b' ');
    // `answers` waits for no reply to a datagram past the limit, and fails on any that comes.
    answers(app.report_udp, &[padded]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply = ask_report(
        &app,
        &socket,
        json!({"key": key, "report": "summary", "id": "ok"}),
    )
    .await;
    assert_eq!(
        (&reply["id"], reply.get("error")),
        (&json!("ok"), None),
        "{reply}"
    );
    // JSON nested deeper than serde_json reads (128) is still JSON: a 400, not dropped.
    let deep = format!(
        r#"{{"key":{}1{},"report":"summary"}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let reply = ask_udp(
        &socket,
        app.report_udp,
        deep.as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .expect("a reply to deep JSON");
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    // Every datagram counted once, under what became of it.
    let (oversized, garbage) = crate::udp::dropped(&datagrams);
    assert!(garbage > 100, "{garbage} not JSON");
    let answered = replies.len() + 2;
    // A reply is counted as sent once the send returns, which may be just after it arrived.
    let counted = app
        .eventually("the last reply counted", Duration::from_secs(5), || async {
            let counted = app.health().await["report_udp"].clone();
            (counted["sent"] == json!(answered)).then_some(counted)
        })
        .await;
    assert_eq!(
        counted,
        json!({
            "received": datagrams.len() + 3,
            "requests": answered,
            "sent": answered,
            "dropped_oversized": oversized + 1,
            "dropped_garbage": garbage,
            "unanswered_keyless": 0,
            "send_errors": 0,
        })
    );
}

async fn ask_report(app: &TestApp, socket: &UdpSocket, request: Value) -> Value {
    let bytes = request.to_string();
    ask_udp(
        socket,
        app.report_udp,
        bytes.as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .expect("a report datagram")
}

#[tokio::test]
async fn udp_reports_answer_like_http_and_refuse_what_does_not_fit() {
    let app = spawn_app().await;
    let (key, id) = app.key_with_id("starter").await;
    let day = beast_core::day_start_ms(now_ms()) - 5 * DAY_MS;
    let rows: Vec<_> = (0..600)
        .map(|i| {
            (
                day + i * 1000,
                id,
                "SOL",
                "udp",
                if i % 10 == 0 { 503 } else { 200 },
                300 + i as u32,
            )
        })
        .collect();
    insert_usage(&app, &rows).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let reply = ask_report(
        &app,
        &socket,
        json!({"key": key, "report": "summary", "id": "s1", "from": day, "asset": "sol"}),
    )
    .await;
    let (_, http) = report_json(
        &app,
        &format!("/reports/summary?from={day}&asset=sol"),
        &key,
    )
    .await;
    assert_eq!(reply["id"], "s1");
    assert_eq!(reply["total"], http["total"], "{reply}");
    assert_eq!(
        (&reply["total"]["requests"], &reply["total"]["errors"]),
        (&json!(600), &json!(60))
    );

    let reply = ask_report(
        &app,
        &socket,
        json!({"key": key, "report": "usage", "page_size": 2}),
    )
    .await;
    assert_eq!(reply["rows"].as_array().unwrap().len(), 2, "{reply}");

    // 600 rows do not fit in one datagram: refused, pointing to HTTP, allowance given back.
    let taken = || {
        let query = format!("SELECT count FROM report_count WHERE key_id = {id}");
        let dir = app.data_dir.path().to_owned();
        async move { scalar::<i64>(&dir, &query).await }
    };
    let before = taken().await;
    let reply = ask_report(
        &app,
        &socket,
        json!({"key": key, "report": "usage", "page_size": 1000, "id": "big"}),
    )
    .await;
    assert_eq!(
        (&reply["id"], &reply["error"]["code"]),
        (&json!("big"), &json!("too_large_for_udp"))
    );
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET /reports/usage")
    );
    assert_eq!(taken().await, before);

    // A summary has no pages: page_size=all is ignored, as over HTTP, not refused.
    let reply = ask_report(
        &app,
        &socket,
        json!({"key": key, "report": "summary", "page_size": "all", "id": "s"}),
    )
    .await;
    assert_eq!(reply["id"], "s", "{reply}");
    assert_eq!(reply["total"]["requests"], 600, "{reply}");

    // With the month's allowance used up, a request refused for what it asks is still refused
    // for that: it is checked before the allowance is touched (taken first, it would be
    // refused `report_allowance_used`).
    sql(
        app.data_dir.path(),
        &[&format!(
            "UPDATE report_count SET count = 100 WHERE key_id = {id}"
        )],
    )
    .await;
    for (request, code) in [
        (json!({"report": "summary"}), "missing_api_key"),
        (
            json!({"key": "tb_nope", "report": "summary"}),
            "invalid_api_key",
        ),
        (json!({"key": key, "report": "weekly"}), "invalid_field"),
        (
            json!({"key": key, "report": "summary", "format": "csv"}),
            "invalid_field",
        ),
        (
            json!({"key": key, "report": "summary", "from": "soon"}),
            "invalid_field",
        ),
        (
            json!({"key": key, "report": "usage", "page_size": "all"}),
            "invalid_field",
        ),
    ] {
        let reply = ask_report(&app, &socket, request.clone()).await;
        assert_eq!(reply["error"]["code"], code, "{request}: {reply}");
    }
    assert_eq!(taken().await, 100, "none of them took a report");
    let reply = ask_report(&app, &socket, json!({"key": key, "report": "summary"})).await;
    assert_eq!(
        reply["error"]["code"], "report_allowance_used",
        "a valid one is refused for the allowance: {reply}"
    );
    // Logged with protocol udp: 3 answered, 1 too large, 3 refused parameters (an unknown
    // report kind is not a report request, like an unknown HTTP path), 1 over the allowance.
    let statuses: Vec<i64> = column(
        app.data_dir.path(),
        &format!(
            "SELECT status FROM report_usage_logs WHERE key_id = {id} AND protocol = 'udp' ORDER BY id"
        ),
    )
    .await;
    assert_eq!(statuses, vec![200, 200, 413, 200, 400, 400, 400, 429]);
}

async fn beast(app: &TestApp, args: &[&str]) -> (String, String) {
    beast_ok(app.data_dir.path(), args).await
}

#[tokio::test]
async fn sync_rolls_up_and_prunes_without_changing_any_summary_and_does_it_once() {
    // Days are due as soon as they end, and the node itself never rolls up during the test:
    // what sync does is exactly what it prints, whatever the time of day.
    let app =
        spawn_app_with_parameters(&[("rollup_delay_ms", "0"), ("rollup_interval_ms", "86400000")])
            .await;
    let (key, id) = app.key_with_id("pro").await;
    let now = now_ms();
    let today = beast_core::day_start_ms(now);
    // 120 days back, then today: 3 rows a day at known hours (today: spread before now), one
    // an error.
    let mut rows = Vec::new();
    for d in 0..=120i64 {
        for (k, (h, status)) in [(1, 200u16), (9, 200), (17, 429)].into_iter().enumerate() {
            let ts = if d == 0 {
                today + (now - today) * (k as i64 + 1) / 4
            } else {
                today - d * DAY_MS + h * 3_600_000
            };
            {
                let protocol = if d % 2 == 0 { "http" } else { "udp" };
                rows.push((
                    ts,
                    id,
                    if h == 9 { "ETH" } else { "BTC" },
                    protocol,
                    status,
                    100 + (d * 7 + h) as u32,
                ));
            }
        }
    }
    insert_usage(&app, &rows).await;
    let total = rows.len() as i64;
    let summary = |query: String| {
        let (app, key) = (&app, &key);
        async move {
            let (status, s) = report_json(app, &format!("/reports/summary{query}"), key).await;
            assert_eq!(status, StatusCode::OK, "{s}");
            s
        }
    };
    let old_from = today - 100 * DAY_MS;
    let whole = summary(String::new()).await;
    let recent = summary(format!(
        "?from={}&to={}",
        today - 10 * DAY_MS,
        today - 2 * DAY_MS
    ))
    .await;
    let partial = summary(format!("?from={}", today - 3 * DAY_MS + 5 * 3_600_000)).await;
    assert_eq!(whole["total"]["requests"], total);
    assert_eq!(recent["total"]["requests"], 24);
    assert_eq!(whole["by_day"].as_array().unwrap().len(), 121);

    let (out, _) = beast(&app, &["sync"]).await;
    assert!(out.contains("rolled up 120 day(s)"), "{out}");
    let pruned_days = 120 - 93;
    assert!(
        out.contains(&format!("pruned {} raw row(s)", pruned_days * 3)),
        "{out}"
    );
    // Summaries are the same from rollups as they were from raw rows, partial days included.
    assert_eq!(summary(String::new()).await, whole);
    assert_eq!(
        summary(format!(
            "?from={}&to={}",
            today - 10 * DAY_MS,
            today - 2 * DAY_MS
        ))
        .await,
        recent
    );
    assert_eq!(
        summary(format!("?from={}", today - 3 * DAY_MS + 5 * 3_600_000)).await,
        partial
    );
    // Raw rows older than the retention are gone; their days still count.
    let (_, u) = report_json(
        &app,
        &format!("/reports/usage?page_size=all&to={old_from}"),
        &key,
    )
    .await;
    assert_eq!(u["count"], 0);
    assert_eq!(
        usage_rows(app.data_dir.path(), &format!("WHERE key_id = {id}")).await,
        total - pruned_days * 3
    );

    // Idempotent: a second run finds nothing to do.
    let (out, _) = beast(&app, &["sync"]).await;
    assert!(
        out.contains("rolled up 0 day(s)") && out.contains("pruned 0 raw row(s)"),
        "{out}"
    );
    assert_eq!(summary(String::new()).await, whole);

    // `beast report` prints the same, from the store directly and from the node.
    let (direct, _) = beast(&app, &["report", "summary", "--key-id", &id.to_string()]).await;
    assert_eq!(serde_json::from_str::<Value>(&direct).unwrap(), whole);
    let url = format!("http://{}", app.report);
    let (remote, _) = beast(
        &app,
        &[
            "report",
            "summary",
            "--url",
            &url,
            "--api-key",
            &key,
            "--format",
            "csv",
        ],
    )
    .await;
    assert_eq!(
        python_rows(&remote, false).await,
        as_text_rows(&summary_entries(&whole))
    );
    let id_text = id.to_string();
    let page_of_two = [
        "report",
        "usage",
        "--key-id",
        &id_text,
        "--page-size",
        "2",
        "--format",
        "tsv",
    ];
    let (page, stderr) = beast(&app, &page_of_two).await;
    let first = python_rows(&page, true).await;
    assert_eq!(first.len(), 2);
    // The cursor printed leads to the next two rows, older ones.
    let cursor = stderr
        .strip_prefix("next cursor: ")
        .unwrap_or_else(|| panic!("{stderr}"))
        .trim();
    let (next, _) = beast(&app, &[&page_of_two[..], &["--cursor", cursor]].concat()).await;
    let next = python_rows(&next, true).await;
    assert_eq!(next.len(), 2);
    let id_of = |r: &BTreeMap<String, String>| r["id"].parse::<i64>().unwrap();
    assert!(
        id_of(&first[1]) > id_of(&next[0]),
        "{first:?} then {next:?}"
    );
    // The direct reader takes an exchange name for a source too.
    let (coinbase, _) = beast(
        &app,
        &[
            "report",
            "summary",
            "--key-id",
            &id.to_string(),
            "--source",
            "coinbase",
        ],
    )
    .await;
    let coinbase: Value = serde_json::from_str(&coinbase).unwrap();
    assert_eq!(
        coinbase["total"]["requests"],
        entry(&whole, "by_source", "coinbase-ws")["requests"]
    );
    assert_eq!(coinbase["total"]["requests"], 121 * 2);
}
