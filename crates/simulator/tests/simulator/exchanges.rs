//! Each exchange driven with the messages its seeded definition (`crates/store/seed/exchanges.json`)
//! sends, its frames checked for the real wire shapes and value types; then the REST tickers and
//! the simulator's lifecycle.

use std::collections::HashMap;
use std::time::Duration;

use beast_simulator::Simulator;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    Harness, TRADES_WITHIN, Ws, compiled, connect, first_frame, heartbeat_every, next_frame,
    next_text, now_ms, parse, read_until, send, subscribe, symbols, wait_for_close,
};

/// Snapshot trades are at least this old.
const SNAPSHOT_AGE_MS: i64 = 1_000;
/// Live trades are at most this old when they arrive.
const LIVE_AGE_MS: i64 = 3_000;

// ---------------------------------------------------------------------------------------------
// Checking trades
// ---------------------------------------------------------------------------------------------

/// Live trades seen per symbol: ids must increase, prices be positive plain decimals and
/// timestamps recent.
#[derive(Default)]
struct Tally {
    last_id: HashMap<String, u64>,
}

impl Tally {
    fn live(&mut self, symbol: &str, id: u64, price: &str, time_ms: i64) {
        let value: f64 = price
            .parse()
            .unwrap_or_else(|_| panic!("{symbol} price {price}"));
        assert!(
            value > 0.0 && !price.contains(['e', 'E']),
            "{symbol} price {price}"
        );
        let age = now_ms() - time_ms;
        assert!(
            (-1_000..LIVE_AGE_MS).contains(&age),
            "{symbol} live trade is {age} ms old"
        );
        if let Some(previous) = self.last_id.insert(symbol.to_owned(), id) {
            assert!(id > previous, "{symbol} trade id {id} after {previous}");
        }
    }

    /// Whether a live trade on `symbol` was seen.
    fn has(&self, symbol: &str) -> bool {
        self.last_id.contains_key(symbol)
    }

    fn covers(&self, symbols: &[String]) -> bool {
        symbols.iter().all(|symbol| self.has(symbol))
    }
}

/// Hands every frame, as JSON, to `on_frame` (which checks it and records live trades in the
/// tally) until `on_frame` returns true with live trades seen on every one of `symbols`;
/// panics unless that happens within [`TRADES_WITHIN`].
async fn stream_trades(
    ws: &mut Ws,
    symbols: &[String],
    mut on_frame: impl FnMut(Value, &mut Tally) -> bool,
) {
    let mut tally = Tally::default();
    let done = read_until(ws, TRADES_WITHIN, |text| {
        on_frame(parse(text), &mut tally) && tally.covers(symbols)
    })
    .await;
    let seen: Vec<&String> = symbols.iter().filter(|s| tally.has(s)).collect();
    assert!(
        done,
        "within {TRADES_WITHIN:?}: live trades on {seen:?} of {symbols:?}, \
         and whatever else the test waits for"
    );
}

fn rfc3339_ms(text: &str) -> i64 {
    beast_core::rfc3339_to_ms(text).unwrap_or_else(|| panic!("{text}: not RFC 3339"))
}

fn string(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
}

fn digits(value: &Value) -> u64 {
    string(value)
        .parse()
        .unwrap_or_else(|_| panic!("expected digits, got {value}"))
}

fn uint(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned integer, got {value}"))
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("expected an integer, got {value}"))
}

// ---------------------------------------------------------------------------------------------
// Per exchange
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn coinbase_acks_snapshots_streams_trades_and_heartbeats() {
    let harness = Harness::start().await;
    let (definition, symbols, mut ws) = harness.open("coinbase").await;
    assert_eq!(
        compiled(&definition)
            .subscribe_messages(&symbols, now_ms())
            .len(),
        2,
        "market_trades and heartbeats are separate messages"
    );

    let (mut acks, mut snapshots, mut heartbeats) = (Vec::new(), 0, 0);
    let mut sequence: Option<u64> = None;
    stream_trades(&mut ws, &symbols, |frame, tally| {
        let number = uint(&frame["sequence_num"]);
        assert_eq!(
            number,
            sequence.map_or(0, |n| n + 1),
            "sequence_num counts every message"
        );
        sequence = Some(number);
        assert_eq!(frame["client_id"], "");
        rfc3339_ms(string(&frame["timestamp"]));
        let event = &frame["events"][0];
        match string(&frame["channel"]) {
            "subscriptions" => acks.push(event["subscriptions"].clone()),
            "heartbeats" => {
                assert_eq!(uint(&event["heartbeat_counter"]), heartbeats + 1);
                assert!(string(&event["current_time"]).contains(" +0000 UTC m=+"));
                heartbeats += 1;
            }
            "market_trades" => {
                let trades = event["trades"].as_array().expect("trades array");
                assert!(!trades.is_empty());
                let times: Vec<i64> = trades
                    .iter()
                    .map(|t| rfc3339_ms(string(&t["time"])))
                    .collect();
                for trade in trades {
                    assert!(symbols.contains(&string(&trade["product_id"]).to_owned()));
                    assert!(matches!(string(&trade["side"]), "BUY" | "SELL"));
                    assert!(string(&trade["size"]).parse::<f64>().expect("size") > 0.0);
                }
                match string(&event["type"]) {
                    "snapshot" => {
                        snapshots += 1;
                        assert!(
                            times.windows(2).all(|w| w[0] >= w[1]),
                            "newest first: {times:?}"
                        );
                        assert!(times.iter().all(|&t| now_ms() - t >= SNAPSHOT_AGE_MS));
                        assert_eq!(trades.len(), 5 * symbols.len());
                    }
                    "update" => {
                        for (trade, time) in trades.iter().zip(times) {
                            let id = digits(&trade["trade_id"]);
                            tally.live(
                                string(&trade["product_id"]),
                                id,
                                string(&trade["price"]),
                                time,
                            );
                        }
                    }
                    other => panic!("unexpected event type {other}"),
                }
            }
            other => panic!("unexpected channel {other}"),
        }
        heartbeats > 0
    })
    .await;

    assert_eq!(snapshots, 1);
    assert_eq!(
        acks,
        [
            json!({"market_trades": symbols}),
            json!({"market_trades": symbols, "heartbeats": ["heartbeats"]}),
        ]
    );
}

#[tokio::test]
async fn gemini_acks_streams_nanosecond_trades_and_answers_pings_and_garbage() {
    let harness = Harness::start().await;
    let (_, symbols, mut ws) = harness.open("gemini").await;
    assert!(symbols.iter().all(|s| s == &s.to_lowercase()));

    assert_eq!(
        next_frame(&mut ws, "ack").await,
        json!({"id": 1, "status": 200, "result": null})
    );

    stream_trades(&mut ws, &symbols, |trade, tally| {
        let nanos = uint(&trade["E"]);
        assert!(
            nanos > 1_000_000_000_000_000_000,
            "E is in nanoseconds: {nanos}"
        );
        assert!(trade["m"].is_boolean() && string(&trade["q"]).parse::<f64>().is_ok());
        let time_ms = (nanos / 1_000_000) as i64;
        tally.live(
            string(&trade["s"]),
            uint(&trade["t"]),
            string(&trade["p"]),
            time_ms,
        );
        true
    })
    .await;

    send(&mut ws, r#"{"id":42,"method":"ping"}"#).await;
    send(&mut ws, r#"{"id":43,"method":"subscribe","params":"#).await;
    let (mut pong, mut error) = (None, None);
    read_until(&mut ws, TRADES_WITHIN, |text| {
        let frame = parse(text);
        if frame["id"] == 42 {
            pong = Some(frame);
        } else if frame["status"] == 400 {
            error = Some(frame);
        }
        pong.is_some() && error.is_some()
    })
    .await;
    assert_eq!(pong.expect("ping answered")["status"], 200);
    assert_eq!(error.expect("garbage answered")["error"]["code"], -1002);
}

#[tokio::test]
async fn kraken_greets_acks_each_symbol_and_streams_numeric_prices() {
    let harness = Harness::start().await;
    let definition = harness.definition("kraken");
    let symbols = symbols("kraken");
    let mut ws = connect(&definition).await;

    let status = next_frame(&mut ws, "status").await;
    assert_eq!(
        (status["channel"].as_str(), status["type"].as_str()),
        (Some("status"), Some("update"))
    );
    assert_eq!(status["data"][0]["system"], "online");
    uint(&status["data"][0]["connection_id"]);

    let req_id = now_ms();
    for message in compiled(&definition).subscribe_messages(&symbols, req_id) {
        send(&mut ws, &message).await;
    }
    let (mut acked, mut snapshots, mut heartbeats) = (Vec::new(), Vec::new(), 0);
    stream_trades(&mut ws, &symbols, |frame, tally| {
        if frame["method"] == "subscribe" {
            assert_eq!(frame["success"], true, "{frame}");
            assert_eq!(int(&frame["req_id"]), req_id);
            assert_eq!(frame["result"]["snapshot"], true);
            acked.push(string(&frame["result"]["symbol"]).to_owned());
            return false;
        }
        match string(&frame["channel"]) {
            "heartbeat" => heartbeats += 1,
            "trade" => {
                let data = frame["data"].as_array().expect("data array");
                let symbol = string(&data[0]["symbol"]);
                assert!(
                    data.iter().all(|t| t["symbol"] == symbol),
                    "one symbol per frame"
                );
                for trade in data {
                    let timestamp = string(&trade["timestamp"]);
                    assert_eq!(
                        timestamp.len(),
                        "2024-05-27T12:43:11.798009Z".len(),
                        "{timestamp}"
                    );
                    assert!(
                        trade["price"].is_number() && trade["qty"].is_number(),
                        "{trade}"
                    );
                    assert!(!trade["qty"].to_string().contains(['e', 'E']), "{trade}");
                    assert!(matches!(string(&trade["ord_type"]), "limit" | "market"));
                }
                match string(&frame["type"]) {
                    "snapshot" => {
                        assert!(acked.iter().any(|s| s == symbol), "ack before snapshot");
                        let times: Vec<i64> = data
                            .iter()
                            .map(|t| rfc3339_ms(string(&t["timestamp"])))
                            .collect();
                        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
                        assert!(times.iter().all(|&t| now_ms() - t >= SNAPSHOT_AGE_MS));
                        snapshots.push(symbol.to_owned());
                    }
                    "update" => {
                        for trade in data {
                            let time = rfc3339_ms(string(&trade["timestamp"]));
                            let price = trade["price"].to_string();
                            tally.live(symbol, uint(&trade["trade_id"]), &price, time);
                        }
                    }
                    other => panic!("unexpected type {other}"),
                }
            }
            other => panic!("unexpected channel {other}"),
        }
        heartbeats > 0
    })
    .await;
    assert_eq!(acked, symbols);
    assert_eq!(snapshots, symbols);

    let ping_id = now_ms() + 1;
    let ping = compiled(&definition)
        .ping_text(ping_id)
        .expect("a text ping");
    send(&mut ws, &ping).await;
    let pong = first_frame(&mut ws, "pong", |frame| frame["method"] == "pong").await;
    assert_eq!(int(&pong["req_id"]), ping_id);
    rfc3339_ms(string(&pong["time_in"]));
    rfc3339_ms(string(&pong["time_out"]));
}

#[tokio::test]
async fn gateio_acks_and_sends_one_trade_per_frame_and_pongs() {
    let harness = Harness::start().await;
    let (definition, symbols, mut ws) = harness.open("gateio").await;

    let ack = next_frame(&mut ws, "ack").await;
    assert_eq!(ack["channel"], "spot.trades");
    assert_eq!(ack["event"], "subscribe");
    assert_eq!(ack["result"], json!({"status": "success"}));
    assert!(uint(&ack["time_ms"]) / 1_000 == uint(&ack["time"]));

    stream_trades(&mut ws, &symbols, |frame, tally| {
        assert_eq!(
            (frame["channel"].as_str(), frame["event"].as_str()),
            (Some("spot.trades"), Some("update"))
        );
        let trade = &frame["result"];
        assert!(trade.is_object(), "one trade per frame: {frame}");
        let created = string(&trade["create_time_ms"]);
        assert!(created.contains('.'), "{created}");
        let created_ms = created.parse::<f64>().expect("fractional ms") as i64;
        assert_eq!(created_ms / 1_000, int(&trade["create_time"]));
        assert!(string(&trade["amount"]).parse::<f64>().expect("amount") > 0.0);
        let price = string(&trade["price"]);
        tally.live(
            string(&trade["currency_pair"]),
            uint(&trade["id"]),
            price,
            created_ms,
        );
        true
    })
    .await;

    let ping = compiled(&definition)
        .ping_text(now_ms())
        .expect("a text ping");
    send(&mut ws, &ping).await;
    let pong = first_frame(&mut ws, "spot.pong", |frame| {
        frame["channel"] == "spot.pong"
    })
    .await;
    assert_eq!(
        (
            pong["event"].as_str(),
            pong["error"].is_null(),
            pong["result"].is_null()
        ),
        (Some(""), true, true)
    );
}

#[tokio::test]
async fn cryptocom_echoes_the_request_id_once_then_pushes_with_id_minus_one() {
    let harness = Harness::start().await;
    let (_, symbols, mut ws) = harness.open("cryptocom").await;

    let mut first_pushes = Vec::new();
    stream_trades(&mut ws, &symbols, |frame, tally| {
        assert_eq!(
            (frame["method"].as_str(), frame["code"].as_i64()),
            (Some("subscribe"), Some(0))
        );
        let result = &frame["result"];
        let instrument = string(&result["instrument_name"]);
        assert_eq!(result["channel"], "trade");
        assert_eq!(
            string(&result["subscription"]),
            format!("trade.{instrument}")
        );
        let data = result["data"].as_array().expect("data array");
        assert!(!data.is_empty());
        for trade in data {
            assert_eq!(trade["i"], instrument);
            assert!(matches!(string(&trade["s"]), "BUY" | "SELL"));
            string(&trade["q"]);
        }
        match int(&frame["id"]) {
            1 => {
                assert!(!tally.has(instrument), "echo comes first");
                assert!(
                    data.iter()
                        .all(|t| now_ms() - int(&t["t"]) >= SNAPSHOT_AGE_MS)
                );
                first_pushes.push(instrument.to_owned());
            }
            -1 => {
                for trade in data.iter().rev() {
                    let id = digits(&trade["d"]);
                    tally.live(instrument, id, string(&trade["p"]), int(&trade["t"]));
                }
            }
            other => panic!("unexpected id {other}"),
        }
        true
    })
    .await;
    assert_eq!(first_pushes, symbols);
}

#[tokio::test]
async fn cryptocom_closes_a_connection_that_ignores_its_heartbeat() {
    let harness = Harness::with(heartbeat_every(300)).await;
    let definition = harness.definition("cryptocom");
    let mut ws = subscribe(&definition, &symbols("cryptocom")[..1], now_ms()).await;

    let heartbeat = first_frame(&mut ws, "a heartbeat", |frame| {
        frame["method"] == "public/heartbeat"
    })
    .await;
    assert_eq!(heartbeat["code"], 0);
    assert!(
        uint(&heartbeat["id"]) > 1_600_000_000_000,
        "ids are unix ms"
    );

    let sent = Instant::now();
    assert_eq!(
        wait_for_close(&mut ws, Duration::from_secs(2)).await,
        Some(1000)
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(200),
        "closed after {:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn cryptocom_keeps_a_connection_that_answers_its_heartbeats() {
    let harness = Harness::with(heartbeat_every(300)).await;
    let definition = harness.definition("cryptocom");
    let mut ws = subscribe(&definition, &symbols("cryptocom")[..1], now_ms()).await;

    let deadline = Instant::now() + Duration::from_millis(1_500);
    let (mut answered, mut pushes) = (0, 0);
    // `next_text` panics if the server closes: a 300 ms heartbeat must be answered by 600 ms.
    while let Some(text) = next_text(&mut ws, deadline).await {
        let frame = parse(&text);
        if frame["method"] == "public/heartbeat" {
            let reply = definition
                .heartbeat_reply
                .replace("{$.id}", &frame["id"].to_string());
            send(&mut ws, &reply).await;
            answered += 1;
        } else if frame["id"] == -1 {
            pushes += 1;
        }
    }
    assert!(answered >= 3, "answered {answered} heartbeats");
    assert!(pushes >= 10, "only {pushes} trade pushes in 1.5 s");
}

#[tokio::test]
async fn okx_acks_each_arg_streams_trades_and_answers_ping_and_garbage() {
    let harness = Harness::start().await;
    let (definition, symbols, mut ws) = harness.open("okx").await;

    let (mut acked, mut conn_ids) = (Vec::new(), Vec::new());
    stream_trades(&mut ws, &symbols, |frame, tally| {
        if frame["event"] == "subscribe" {
            assert_eq!(frame["arg"]["channel"], "trades");
            acked.push(string(&frame["arg"]["instId"]).to_owned());
            conn_ids.push(string(&frame["connId"]).to_owned());
            return false;
        }
        assert_eq!(frame["arg"]["channel"], "trades", "{frame}");
        let inst_id = string(&frame["arg"]["instId"]);
        for trade in frame["data"].as_array().expect("data array") {
            assert_eq!(trade["instId"], inst_id, "one instId per frame");
            assert!(matches!(string(&trade["side"]), "buy" | "sell"));
            assert!(string(&trade["sz"]).parse::<f64>().expect("sz") > 0.0);
            let ts = digits(&trade["ts"]) as i64;
            tally.live(inst_id, digits(&trade["tradeId"]), string(&trade["px"]), ts);
        }
        true
    })
    .await;
    assert_eq!(acked, symbols);
    assert_eq!(conn_ids[0].len(), 8);
    assert!(conn_ids.iter().all(|id| id == &conn_ids[0]));

    send(&mut ws, &definition.ping_payload).await;
    assert!(
        read_until(&mut ws, TRADES_WITHIN, |text| text == "pong").await,
        "text pong"
    );

    send(&mut ws, r#"{"op":"subscribe","args":"#).await;
    let error = first_frame(&mut ws, "error frame", |frame| frame["event"] == "error").await;
    assert_eq!(error["code"], "60012");
}

#[tokio::test]
async fn websocket_ping_frames_get_pong_frames_on_every_exchange() {
    let harness = Harness::start().await;
    for &name in Simulator::exchanges() {
        let mut ws = connect(&harness.definition(name)).await;
        ws.send(Message::Ping(name.as_bytes().to_vec().into()))
            .await
            .expect("ping");
        let pong = timeout(TRADES_WITHIN, async {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Pong(payload) = message {
                    return Some(payload);
                }
            }
            None
        })
        .await
        .expect("pong in time");
        assert_eq!(pong.as_deref(), Some(name.as_bytes()), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// REST and lifecycle
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_rest_ticker_has_a_btc_price_at_the_definitions_price_path() {
    let harness = Harness::start().await;
    // The definition's JSONPath, and the same location as a JSON pointer.
    let paths: HashMap<&str, [(&str, &str); 2]> = HashMap::from([
        (
            "coinbase",
            [
                ("$.trades[0].price", "/trades/0/price"),
                ("$.trades[0].time", "/trades/0/time"),
            ],
        ),
        (
            "gemini",
            [
                ("$.last", "/last"),
                ("$.volume.timestamp", "/volume/timestamp"),
            ],
        ),
        (
            "kraken",
            [("$.result.*.c[0]", "/result/XXBTZUSD/c/0"), ("", "")],
        ),
        ("gateio", [("$[0].last", "/0/last"), ("", "")]),
        (
            "cryptocom",
            [
                ("$.result.data[0].a", "/result/data/0/a"),
                ("$.result.data[0].t", "/result/data/0/t"),
            ],
        ),
        (
            "okx",
            [
                ("$.data[0].last", "/data/0/last"),
                ("$.data[0].ts", "/data/0/ts"),
            ],
        ),
    ]);
    let mut prices = Vec::new();
    for &name in Simulator::exchanges() {
        let definition = harness.definition(name);
        let [(price_path, price_pointer), (time_path, time_pointer)] = paths[name];
        assert_eq!(definition.rest_price_path, price_path, "{name}");
        assert_eq!(definition.rest_time_path, time_path, "{name}");
        let (status, body, _) = harness.ticker(name, &symbols(name)[0]).await;
        assert_eq!(status, 200, "{name}: {body}");
        let body = parse(&body);
        let price: f64 = string(body.pointer(price_pointer).unwrap_or(&Value::Null))
            .parse()
            .unwrap_or_else(|_| panic!("{name} price in {body}"));
        assert!(
            (60_800.0..67_200.0).contains(&price),
            "{name} BTC at {price}"
        );
        if !time_pointer.is_empty() {
            assert!(
                body.pointer(time_pointer).is_some(),
                "{name} time in {body}"
            );
        }
        prices.push(price);
    }
    let (low, high) = prices
        .iter()
        .fold((f64::MAX, 0.0_f64), |(l, h), &p| (l.min(p), h.max(p)));
    assert!(high / low < 1.01, "exchanges agree within 1 %: {prices:?}");
    assert!(high > low, "but not exactly: {prices:?}");
}

#[tokio::test]
async fn unknown_exchanges_and_paths_are_not_found() {
    let harness = Harness::start().await;
    for path in [
        "/binance/api/v3/ticker/price?symbol=BTCUSDT",
        "/okx/api/v5/market/books?instId=BTC-USDT",
        "/okx/api/v5/market/ticker",
        "/gemini/v1/pubticker/",
    ] {
        let (status, _, _) = harness.get(&harness.url(path)).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn cancelling_stops_every_task_and_closes_open_connections() {
    let harness = Harness::start().await;
    let definition = harness.definition("okx");
    let mut ws = subscribe(&definition, &symbols("okx")[..1], now_ms()).await;
    assert_eq!(next_frame(&mut ws, "ack").await["event"], "subscribe");

    harness.cancel.cancel();
    harness.tracker.close();
    timeout(Duration::from_secs(2), harness.tracker.wait())
        .await
        .expect("every simulator task ends");
    assert_eq!(
        wait_for_close(&mut ws, Duration::from_secs(2)).await,
        Some(1001)
    );
    assert!(
        TcpStream::connect(harness.simulator.addr()).await.is_err(),
        "listener closed"
    );
}
