//! Exchanges managed live: the admin API and its auth, changes applied with no restart
//! (disable, enable, new prewarm asset, changes made by another process), definitions refused
//! with the field named, on-demand assets, and a seventh exchange on a protocol of its own.

use std::time::Duration;

use beast_store::{SqliteStore, Store};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    KRAKEN_ONLY_ASSET, TestApp, refusal_code, seventh_definition, spawn_app, spawn_app_with, sql,
    usage_rows,
};

const WITHIN: Duration = Duration::from_secs(10);

async fn running(app: &TestApp, name: &str) -> bool {
    app.feed(name).await.is_some()
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_key() {
    let app = spawn_app().await;
    let key = app.key("partner").await;
    for (auth, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "missing_api_key"),
        (Some(key.as_str()), StatusCode::FORBIDDEN, "forbidden"),
        (Some("not-the-key"), StatusCode::FORBIDDEN, "forbidden"),
    ] {
        let r = app.get("/admin/exchange-feeds", auth).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            r.body
        );
    }
    let r = app.admin("/admin/exchange-feeds", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let rows = r.body["exchange_feeds"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let okx = rows.iter().find(|r| r["name"] == "okx").unwrap();
    // The stored row (real endpoint) with its live status.
    assert_eq!(okx["ws_url"], "wss://ws.okx.com:8443/ws/v5/public");
    assert_eq!(okx["price_path"], "$.px");
    let status = &okx["status"];
    assert!(status["connected"].is_boolean(), "{okx}");
    assert!(status["last_frame_ms"].is_i64(), "{okx}");
    for counter in ["reconnects", "frames", "parse_errors"] {
        assert!(status[counter].is_u64(), "status lacks {counter}: {okx}");
    }
    assert!(okx["status"]["stale_assets"].is_array());
}

#[tokio::test]
async fn an_invalid_definition_is_refused_naming_the_field_and_feeds_run_on() {
    let app = spawn_app().await;
    app.eventually("okx connected", WITHIN, || async {
        app.feed("okx").await.filter(|f| f["connected"] == true)
    })
    .await;
    let okx = app.stored_definition("okx").await;
    // Definitions that validate field by field name the field; a value that is not even of
    // the field's type (an unknown time format) is refused by the JSON reader, naming it too.
    for (field, bad, code) in [
        ("price_path", json!("$.data[?"), "invalid_field"),
        (
            "subscribe_template",
            json!("{\"op\":\"subscribe\"}"),
            "invalid_field",
        ),
        ("heartbeat_reply", json!("{\"id\":{$.id"), "invalid_field"),
        ("time_format", json!("unix_weeks"), "bad_request"),
    ] {
        let mut d = okx.clone();
        d[field] = bad;
        let r = app.admin("/admin/exchange-feeds/save", Some(d)).await;
        let error = &r.body["error"];
        assert_eq!(
            (r.status, error["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{field}: {error}"
        );
        let names_it = if code == "invalid_field" {
            error["field"] == field
        } else {
            error["message"].as_str().unwrap().contains(field)
        };
        assert!(names_it, "{field}: {error}");
    }
    // Nothing changed: the stored row is the same and okx still runs, connected.
    assert_eq!(app.stored_definition("okx").await, okx);
    assert_eq!(app.feed("okx").await.unwrap()["connected"], true);
}

#[tokio::test]
async fn disabling_and_enabling_an_exchange_applies_at_once() {
    let app = spawn_app().await;
    let key = app.key("partner").await;
    app.wait_priced_by("ETH", "okx", &key).await;

    let r = app
        .admin(
            "/admin/exchange-feeds/toggle",
            Some(json!({"name": "okx", "enabled": false})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["enabled"]),
        (StatusCode::OK, &json!(false)),
        "{}",
        r.body
    );
    assert!(
        !running(&app, "okx").await,
        "okx still running after the answer"
    );
    let r = app.get("/price?asset=ETH&source=okx", Some(&key)).await;
    assert_eq!(r.body["error"]["code"], "unknown_source", "{}", r.body);
    let listed = app.get("/exchanges", None).await.body;
    let okx = listed["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "okx")
        .unwrap()
        .clone();
    assert_eq!(
        (&okx["enabled"], &okx["connected"]),
        (&json!(false), &json!(false))
    );

    // No `enabled`: flips it back on.
    let r = app
        .admin("/admin/exchange-feeds/toggle", Some(json!({"name": "okx"})))
        .await;
    assert_eq!(r.body["enabled"], true, "{}", r.body);
    app.wait_priced_by("ETH", "okx", &key).await;

    let r = app
        .admin(
            "/admin/exchange-feeds/toggle",
            Some(json!({"name": "nosuch"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn a_change_made_by_another_process_is_applied_within_seconds() {
    let app = spawn_app().await;
    app.eventually("gemini running", WITHIN, || async {
        running(&app, "gemini").await.then_some(())
    })
    .await;
    // What `beast exchanges toggle gemini --enabled false` does: write the store directly.
    let store = SqliteStore::open(app.data_dir.path()).await.unwrap();
    assert_eq!(
        store
            .set_exchange_enabled("gemini", Some(false))
            .await
            .unwrap(),
        Some(false)
    );
    store.close().await;
    app.eventually("gemini stopped", Duration::from_secs(5), || async {
        (!running(&app, "gemini").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_new_prewarm_asset_is_subscribed_live() {
    let app = spawn_app().await;
    let key = app.key("partner").await;
    let before = app
        .eventually("okx running", WITHIN, || app.feed("okx"))
        .await["symbols"]
        .as_u64()
        .unwrap();
    let r = app
        .admin(
            "/admin/exchange-assets/save",
            Some(json!([{"exchange": "okx", "asset": "zec", "symbol": "ZEC-USDT", "quote": "usdt", "prewarm": true, "category": "added"}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["exchange_assets"][0]["asset"], "ZEC", "normalized");
    let status = app.feed("okx").await.unwrap();
    assert_eq!(status["symbols"].as_u64().unwrap(), before + 1);
    // Priced by the WebSocket: the pair leaves the stale list, and answers come from memory.
    app.eventually("ZEC live on okx", WITHIN, || async {
        let f = app.feed("okx").await?;
        let stale = f["stale_assets"].as_array()?.iter().any(|a| a == "ZEC");
        (!stale).then_some(())
    })
    .await;
    let r = app.get("/price?asset=ZEC&source=okx", Some(&key)).await;
    assert_eq!(
        (r.status, &r.body["quote"]),
        (StatusCode::OK, &json!("USDT")),
        "{}",
        r.body
    );

    // Listing with filters, and the toggle of one flag.
    let r = app
        .admin("/admin/exchange-assets?exchange=okx&asset=zec", None)
        .await;
    assert_eq!(r.body["count"], 1, "{}", r.body);
    let r = app
        .admin(
            "/admin/exchange-assets/toggle",
            Some(json!({"exchange": "okx", "asset": "ZEC", "prewarm": false})),
        )
        .await;
    assert_eq!(r.body["exchange_asset"]["prewarm"], false, "{}", r.body);
    assert_eq!(
        app.feed("okx").await.unwrap()["symbols"].as_u64().unwrap(),
        before
    );

    // A bad row refuses the whole batch, naming the row and field.
    let r = app
        .admin(
            "/admin/exchange-assets/save",
            Some(json!({"assets": [
                {"exchange": "okx", "asset": "XMR", "symbol": "XMR-USDT", "quote": "USDT"},
                {"exchange": "nosuch", "asset": "XMR", "symbol": "XMR-USD", "quote": "USD"}
            ]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("[1].exchange")),
        "{}",
        r.body
    );
    let r = app.admin("/admin/exchange-assets?asset=XMR", None).await;
    assert_eq!(r.body["count"], 0, "nothing of a refused batch is saved");
}

#[tokio::test]
async fn a_mapped_asset_that_is_not_prewarmed_is_fetched_on_demand_then_cached() {
    let app = spawn_app_with(|dir| async move {
        sql(&dir, &[KRAKEN_ONLY_ASSET]).await;
    })
    .await;
    let key = app.key("pro").await;
    let first = app.get("/price?asset=ADA", Some(&key)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["sources"][0]["source"], "kraken-ws");
    assert_eq!(first.body["quote"], "USD");
    let second = app.get("/price?asset=ADA", Some(&key)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        second.body["price"], first.body["price"],
        "served from memory"
    );
    let mut app = app;
    app.stop().await;
    assert_eq!(
        usage_rows(
            app.data_dir.path(),
            "WHERE asset = 'ADA' AND cache_tier = 'rest'"
        )
        .await,
        1
    );
    assert_eq!(
        usage_rows(
            app.data_dir.path(),
            "WHERE asset = 'ADA' AND cache_tier = 'memory'"
        )
        .await,
        1
    );
}

/// A local exchange speaking a protocol none of the built-ins use: `{"action":"join",
/// "markets":[...]}` in, `{"kind":"fills","market":"FOOEUR","fills":[{"rate","qty","at","no"}]}`
/// out, with the symbol only in the frame, RFC 3339 times and numeric trade ids.
async fn seventh_exchange() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let Some(Ok(Message::Text(join))) = ws.next().await else {
                    return;
                };
                let join: Value = serde_json::from_str(join.as_str()).unwrap_or_default();
                let markets: Vec<String> = join["markets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect();
                for no in 1.. {
                    for market in &markets {
                        let frame = json!({"kind": "fills", "market": market, "fills": [
                            {"rate": "12.50", "qty": "3", "at": "2026-11-21T10:00:00.123Z", "no": no}
                        ]});
                        if ws
                            .send(Message::Text(frame.to_string().into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_seventh_exchange_is_added_with_data_and_priced_without_restart() {
    let app = spawn_app().await;
    let key = app.key("pro").await;
    let addr = seventh_exchange().await;
    let definition = seventh_definition(&format!("ws://{addr}/stream"));
    let r = app
        .admin("/admin/exchange-feeds/save", Some(definition))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .admin(
            "/admin/exchange-assets/save",
            Some(json!([{"exchange": "seventh", "asset": "FOO", "symbol": "FOOEUR", "quote": "EUR", "prewarm": true}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let answer = app.wait_fresh("FOO", &key, WITHIN).await.body;
    assert_eq!(answer["price"], "12.50", "exact text: {answer}");
    assert_eq!(answer["quote"], "EUR");
    assert_eq!(answer["sources"][0]["source"], "seventh-ws");
    let status = app.feed("seventh").await.unwrap();
    assert_eq!(status["connected"], true);
    assert_eq!(status["parse_errors"], 0);
    assert_eq!(status["unknown_symbols"], 0);
    // It is in the public listings too.
    let assets = app.get("/assets", None).await.body;
    assert!(
        assets["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["asset"] == "FOO")
    );
}

#[tokio::test]
async fn subscriptions_are_sharded_over_connections_when_an_exchange_caps_them() {
    let app = spawn_app().await;
    let mut okx = app.stored_definition("okx").await;
    okx["max_symbols_per_connection"] = json!(10);
    okx["max_symbols_per_message"] = json!(3);
    let r = app.admin("/admin/exchange-feeds/save", Some(okx)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let feed = app
        .eventually("okx on 4 connections, every pair live", WITHIN, || async {
            let f = app.feed("okx").await?;
            let live = f["connections_up"] == 4 && f["stale_assets"].as_array()?.is_empty();
            live.then_some(f)
        })
        .await;
    assert_eq!(
        (feed["symbols"].as_u64(), feed["connections"].as_u64()),
        (Some(33), Some(4))
    );
    assert_eq!(feed["unknown_symbols"], 0);
}

/// `definition` with one or two random edits: a field dropped, or a value anywhere in it
/// swapped for an odd one (wrong type, empty, huge, broken template or path).
fn odd_definition(rng: &mut rand::rngs::StdRng, definition: &Value) -> Value {
    use rand::Rng;
    const ODD: &[&str] = &[
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "\"\"",
        "\" \"",
        "[]",
        "{}",
        "[1]",
        "\"$\"",
        "\"$.[\"",
        "\"{$.x\"",
        "\"ws://\"",
        "\"http://[::1\"",
        "\"\\u0000\"",
        "\"€\"",
        "\"unix_weeks\"",
        "99999999999999999999",
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
    ];
    /// The JSON pointer of every node below the root (objects and arrays too, so an edit can
    /// replace or drop a whole one).
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    pointers(child, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    pointers(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        if !at.is_empty() {
            out.push(at);
        }
    }
    // Drawn again until it differs: an edit may drop an array element's field that is not
    // there, or put in the value already there.
    loop {
        let mut d = definition.clone();
        for _ in 0..rng.random_range(1..=2) {
            let mut paths = Vec::new();
            pointers(&d, String::new(), &mut paths);
            let path = &paths[rng.random_range(0..paths.len())];
            if rng.random_bool(0.2) {
                let (parent, field) = path.rsplit_once('/').unwrap();
                let field = field.replace("~1", "/").replace("~0", "~");
                if let Some(Value::Object(map)) = d.pointer_mut(parent) {
                    map.remove(&field);
                }
            } else if let Some(slot) = d.pointer_mut(path) {
                *slot = serde_json::from_str(ODD[rng.random_range(0..ODD.len())]).unwrap();
            }
        }
        if d != *definition {
            return d;
        }
    }
}

#[tokio::test]
async fn odd_definitions_are_saved_or_refused_with_a_code_and_the_node_runs_on() {
    use rand::SeedableRng;
    let app = spawn_app().await;
    let key = app.key("partner").await;
    app.wait_priced_by("ETH", "okx", &key).await;
    let okx = app.stored_definition("okx").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0008);
    let (mut saved, mut refused) = (0, 0);
    for _ in 0..200 {
        let d = odd_definition(&mut rng, &okx);
        let r = app
            .admin("/admin/exchange-feeds/save", Some(d.clone()))
            .await;
        assert!(!r.status.is_server_error(), "{d}: {} {}", r.status, r.body);
        if r.status.is_success() {
            saved += 1;
        } else {
            assert!(
                refusal_code(&r.body).is_some(),
                "{d}: {} {}",
                r.status,
                r.body
            );
            refused += 1;
        }
    }
    assert!(
        saved > 10 && refused > 100,
        "{saved} saved, {refused} refused"
    );
    // The real definition back: okx prices again, and the node never stopped answering.
    let r = app
        .admin("/admin/exchange-feeds/save", Some(okx.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.stored_definition("okx").await, okx);
    // A trade okx sent after the restore: a price cached from before would not do.
    let restored_ms = beast_core::now_ms();
    let path = "/price?asset=ETH&source=okx";
    app.eventually("a fresh okx trade", Duration::from_secs(15), || async {
        let r = app.get(path, Some(&key)).await;
        let okx_time = r.body["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["source"] == "okx-ws"))
            .and_then(|s| s["time_ms"].as_i64());
        (r.status == StatusCode::OK && okx_time.is_some_and(|t| t > restored_ms)).then_some(())
    })
    .await;
    assert_eq!(
        app.get("/price?asset=BTC", Some(&key)).await.status,
        StatusCode::OK
    );
}
