//! Faults injected into a running simulator, seen from real WebSocket and HTTP clients: each
//! test breaks something, checks the frames or status codes a client gets, then checks that the
//! simulator recovers once the fault expires or is cleared.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    Harness, TRADES_WITHIN, Ws, connect, drain_in_flight, frames_after_fault, heartbeat_every,
    next_message, now_ms, read_until, send, subscribe, texts_for, try_parse,
};

/// Subscribes to trades on OKX `symbols` and waits for the first.
async fn okx_trading(harness: &Harness, symbols: &[&str]) -> Ws {
    let mut ws = subscribe(&harness.definition("okx"), symbols, now_ms()).await;
    assert!(
        read_until(&mut ws, TRADES_WITHIN, is_okx_trade).await,
        "OKX trades on {symbols:?} within {TRADES_WITHIN:?}"
    );
    ws
}

/// An OKX trade frame: its instId and trade count.
fn okx_trades(text: &str) -> Option<(String, usize)> {
    let frame = try_parse(text)?;
    let count = frame["data"].as_array()?.len();
    Some((frame["arg"]["instId"].as_str()?.to_owned(), count))
}

fn is_okx_trade(text: &str) -> bool {
    okx_trades(text).is_some()
}

/// When the trade of a Gate.io `spot.trades` update was made (unix ms), if `text` is one.
fn gate_trade_ms(text: &str) -> Option<f64> {
    let frame = try_parse(text)?;
    if frame["channel"] != "spot.trades" || frame["event"] != "update" {
        return None;
    }
    let trade = &frame["result"];
    trade["currency_pair"].as_str()?;
    trade["price"].as_str()?;
    trade["create_time_ms"].as_str()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Connection faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn drop_cuts_the_exchanges_connections_without_a_close_frame_and_new_ones_work() {
    let harness = Harness::start().await;
    let mut okx = okx_trading(&harness, &["BTC-USDT"]).await;
    let mut gate = subscribe(&harness.definition("gateio"), &["BTC_USDT"], now_ms()).await;
    // Past the ack: what Gate sends after the drop must be trades.
    assert!(
        read_until(&mut gate, TRADES_WITHIN, |text| gate_trade_ms(text)
            .is_some())
        .await,
        "Gate.io trades before the drop"
    );

    let cut = Instant::now();
    let answer = harness
        .post_fault(json!({"exchange": "okx", "kind": "drop"}))
        .await;
    assert_eq!(answer, json!({"active": []}), "drop is one-shot");
    let ending = timeout(Duration::from_secs(1), async {
        loop {
            match okx.next().await {
                Some(Ok(Message::Close(frame))) => return Err(format!("close frame {frame:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(format!("error: {e}")),
                None => return Ok("end of stream".to_owned()),
            }
        }
    })
    .await
    .expect("the connection is cut within 1 s");
    let how = ending.unwrap_or_else(|e| panic!("a cut sends no {e}"));
    assert!(cut.elapsed() < Duration::from_secs(1), "{how}");

    // Trades made after the cut, not ones already on their way.
    let after_cut = now_ms() as f64;
    assert!(
        read_until(&mut gate, TRADES_WITHIN, |text| {
            gate_trade_ms(text).is_some_and(|made| made >= after_cut)
        })
        .await,
        "other exchanges keep streaming"
    );

    // A new connection streams trades.
    okx_trading(&harness, &["BTC-USDT"]).await;
}

#[tokio::test]
async fn stall_silences_old_and_new_connections_until_it_expires() {
    let harness = Harness::start().await;
    let kraken = harness.definition("kraken");
    let mut ws = subscribe(&kraken, &["BTC/USD"], now_ms()).await;
    assert!(
        read_until(&mut ws, TRADES_WITHIN, is_kraken_trade).await,
        "trades before the stall"
    );

    harness.inject(json!({"exchange": "kraken", "kind": "stall", "duration_ms": 800}));
    let stalled = Instant::now();
    drain_in_flight(&mut ws).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    send(&mut ws, r#"{"method":"ping","req_id":7}"#).await;
    // Kraken greets every new connection at once; not while stalled.
    let mut late = connect(&kraken).await;

    let quiet_until = stalled + Duration::from_millis(650);
    for (name, ws) in [("open", &mut ws), ("new", &mut late)] {
        let message = next_message(ws, quiet_until).await;
        assert!(message.is_none(), "{name} connection got {message:?}");
    }

    let deadline = stalled + TRADES_WITHIN + Duration::from_millis(800);
    let (mut pong, mut app_pong, mut trade) = (false, false, false);
    while !(pong && app_pong && trade) {
        match next_message(&mut ws, deadline).await {
            Some(Message::Pong(payload)) => pong = payload.as_ref() == b"are you there",
            Some(Message::Text(text)) => {
                let frame = try_parse(&text).expect("JSON frames after the stall");
                app_pong |= frame["method"] == "pong" && frame["req_id"] == 7;
                trade |= is_kraken_trade(&text);
            }
            Some(_) => {}
            None => panic!("after the stall: pong {pong}, app pong {app_pong}, trade {trade}"),
        }
    }
    assert!(stalled.elapsed() >= Duration::from_millis(700));
    let greeting = next_message(&mut late, deadline).await;
    let Some(Message::Text(greeting)) = greeting else {
        panic!("the new connection is greeted after the stall, got {greeting:?}");
    };
    assert_eq!(try_parse(&greeting).expect("JSON")["channel"], "status");
}

fn is_kraken_trade(text: &str) -> bool {
    try_parse(text).is_some_and(|frame| frame["channel"] == "trade" && frame["type"] == "update")
}

fn is_heartbeat(text: &str) -> bool {
    try_parse(text).is_some_and(|frame| frame["method"] == "public/heartbeat")
}

fn is_cryptocom_push(text: &str) -> bool {
    try_parse(text).is_some_and(|frame| frame["method"] == "subscribe" && frame["id"] == -1)
}

#[tokio::test]
async fn stop_heartbeats_keeps_cryptocom_open_and_trading_without_heartbeats() {
    let harness = Harness::with(heartbeat_every(200)).await;
    harness.inject(json!({"exchange": "cryptocom", "kind": "stop_heartbeats"}));
    let mut ws = subscribe(&harness.definition("cryptocom"), &["BTC_USDT"], now_ms()).await;

    // Unfaulted, a 200 ms heartbeat left unanswered closes the connection by 400 ms; and
    // `texts_for` panics if the server closes.
    let frames = texts_for(&mut ws, Duration::from_millis(1_200)).await;
    assert!(!frames.iter().any(|text| is_heartbeat(text)), "{frames:?}");
    let pushes = frames.iter().filter(|text| is_cryptocom_push(text)).count();
    assert!(pushes >= 5, "only {pushes} trade pushes in 1.2 s");

    harness.inject(json!({"exchange": "cryptocom", "kind": "clear"}));
    assert!(
        read_until(&mut ws, Duration::from_secs(1), is_heartbeat).await,
        "heartbeats resume once cleared"
    );
}

#[tokio::test]
async fn stop_heartbeats_forgives_a_heartbeat_already_sent() {
    let harness = Harness::with(heartbeat_every(200)).await;
    let mut ws = subscribe(&harness.definition("cryptocom"), &["BTC_USDT"], now_ms()).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, is_heartbeat).await);
    harness.inject(json!({"exchange": "cryptocom", "kind": "stop_heartbeats"}));

    let frames = texts_for(&mut ws, Duration::from_millis(800)).await;
    assert!(!frames.iter().any(|text| is_heartbeat(text)), "{frames:?}");
    assert!(frames.iter().any(|text| is_cryptocom_push(text)));
}

#[tokio::test]
async fn stop_heartbeats_leaves_application_pings_unanswered_until_cleared() {
    let harness = Harness::start().await;
    let mut ws = okx_trading(&harness, &["BTC-USDT"]).await;

    harness.inject(json!({"exchange": "okx", "kind": "stop_heartbeats", "duration_ms": 60_000}));
    send(&mut ws, "ping").await;
    let frames = texts_for(&mut ws, Duration::from_millis(500)).await;
    assert!(!frames.iter().any(|text| text == "pong"), "{frames:?}");
    assert!(frames.iter().any(|text| is_okx_trade(text)), "trades go on");

    harness.inject(json!({"exchange": "okx", "kind": "clear"}));
    send(&mut ws, "ping").await;
    assert!(read_until(&mut ws, Duration::from_secs(1), |text| text == "pong").await);
}

// ---------------------------------------------------------------------------------------------
// Frame faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_and_truncated_frames_come_before_the_valid_trades() {
    let harness = Harness::start().await;
    let mut ws = okx_trading(&harness, &["BTC-USDT", "ETH-USDT"]).await;

    harness.inject(json!({"exchange": "okx", "kind": "malformed"}));
    harness.inject(json!({"exchange": "okx", "kind": "truncated"}));
    let frames = frames_after_fault(&mut ws, Duration::from_millis(700)).await;
    let (mut malformed, mut truncated, mut valid) = (0, 0, 0);
    for (index, frame) in frames.iter().enumerate() {
        let next = frames.get(index + 1);
        if is_okx_trade(frame) {
            valid += 1;
        } else if frame.starts_with("{\"oops\":") {
            assert!(try_parse(frame).is_none(), "{frame}");
            assert!(
                next.is_none_or(|next| !is_okx_trade(next)),
                "a batch starts with the garbage, then a cut frame: {next:?}"
            );
            malformed += 1;
        } else if let Some(next) = next {
            // A cut frame: the first half of the frame after it.
            assert!(
                next.starts_with(frame.as_str()) && next.len() / 2 == frame.len(),
                "{frame} is not half of {next}"
            );
            assert!(is_okx_trade(next), "{next}");
            truncated += 1;
        }
    }
    // The window may cut a batch at either end; whole batches are three or more frames.
    assert!(
        malformed >= 3 && truncated >= 3 && valid >= 3,
        "{malformed} malformed, {truncated} truncated, {valid} valid: {frames:?}"
    );

    harness.inject(json!({"exchange": "okx", "kind": "clear"}));
    let frames = frames_after_fault(&mut ws, Duration::from_millis(400)).await;
    assert!(!frames.is_empty() && frames.iter().all(|text| is_okx_trade(text)));
}

#[tokio::test]
async fn unknown_symbols_trade_in_every_exchanges_own_format() {
    let harness = Harness::start().await;
    harness.inject(json!({"kind": "unknown_symbols"}));
    let cases = [
        ("coinbase", "BTC-USD", "ZZZ-USD"),
        ("gemini", "btcusd", "zzzusd"),
        ("kraken", "BTC/USD", "ZZZ/USD"),
        ("gateio", "BTC_USDT", "ZZZ_USDT"),
        ("cryptocom", "BTC_USDT", "ZZZ_USD"),
        ("okx", "BTC-USDT", "ZZZ-USDT"),
    ];
    for (exchange, subscribed, unknown) in cases {
        let mut ws = subscribe(&harness.definition(exchange), &[subscribed], now_ms()).await;
        let quoted = format!("\"{unknown}\"");
        let (mut theirs, mut ours) = (None, false);
        let done = read_until(&mut ws, TRADES_WITHIN, |text| {
            if text.contains(&quoted) {
                theirs = Some(try_parse(text).unwrap_or_else(|| panic!("{exchange}: {text}")));
            } else if text.contains(&format!("\"{subscribed}\"")) {
                ours = true;
            }
            theirs.is_some() && ours
        })
        .await;
        assert!(
            done,
            "{exchange}: {unknown} trade {theirs:?}, {subscribed} trade {ours}"
        );
    }

    // Only while active: gone once cleared.
    harness.inject(json!({"kind": "clear"}));
    let mut ws = subscribe(&harness.definition("okx"), &["BTC-USDT"], now_ms()).await;
    let frames = texts_for(&mut ws, Duration::from_millis(500)).await;
    assert!(frames.iter().any(|text| is_okx_trade(text)));
    assert!(
        !frames.iter().any(|text| text.contains("ZZZ")),
        "{frames:?}"
    );
}

#[tokio::test]
async fn quiet_silences_one_symbol_while_others_trade_and_its_ticker_answers() {
    let harness = Harness::start().await;
    let mut ws = okx_trading(&harness, &["BTC-USDT", "ETH-USDT"]).await;

    harness.inject(json!({"exchange": "okx", "kind": "quiet", "symbols": ["btc-usdt"]}));
    let frames = frames_after_fault(&mut ws, Duration::from_millis(1_000)).await;
    let count = |symbol: &str| {
        frames
            .iter()
            .filter_map(|text| okx_trades(text))
            .filter(|(inst_id, _)| inst_id == symbol)
            .map(|(_, trades)| trades)
            .sum::<usize>()
    };
    assert_eq!(count("BTC-USDT"), 0, "{frames:?}");
    assert!(count("ETH-USDT") >= 3, "{frames:?}");

    let (status, body, _) = harness.ticker("okx", "BTC-USDT").await;
    assert_eq!(status, 200);
    assert!(try_parse(&body).expect("JSON")["data"][0]["last"].is_string());

    harness.inject(json!({"exchange": "okx", "kind": "clear"}));
    assert!(
        read_until(&mut ws, TRADES_WITHIN, |text| {
            okx_trades(text).is_some_and(|(inst_id, _)| inst_id == "BTC-USDT")
        })
        .await,
        "BTC trades again once cleared"
    );
}

// ---------------------------------------------------------------------------------------------
// REST faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn slow_rest_delays_tickers_and_failing_rest_answers_503() {
    let harness = Harness::start().await;
    let delay = Duration::from_millis(500);
    harness.inject(json!({"exchange": "okx", "kind": "slow_rest", "delay_ms": 500}));
    harness.inject(json!({"exchange": "gemini", "kind": "failing_rest"}));

    let (status, body, took) = harness.ticker("okx", "BTC-USDT").await;
    assert_eq!(status, 200, "{body}");
    assert!(took >= delay, "answered after {took:?}");
    let (status, body, took) = harness.ticker("gemini", "btcusd").await;
    assert_eq!(status, 503);
    assert!(
        !body.is_empty() && try_parse(&body).is_none(),
        "short text: {body}"
    );
    assert!(took < delay, "failing is not slow: {took:?}");

    // REST faults leave the WebSocket alone.
    let mut ws = subscribe(&harness.definition("gemini"), &["btcusd"], now_ms()).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, |text| text.contains("\"btcusd\"")).await);

    harness.inject(json!({"kind": "clear"}));
    let (status, _, took) = harness.ticker("okx", "BTC-USDT").await;
    assert_eq!(status, 200);
    assert!(took < delay, "no longer slow: {took:?}");
    assert_eq!(harness.ticker("gemini", "btcusd").await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// The fault API
// ---------------------------------------------------------------------------------------------

/// (exchange, kind) of each fault, in listing order.
fn names(active: &[Value]) -> Vec<(String, String)> {
    active
        .iter()
        .map(|fault| (fault["exchange"].to_string(), fault["kind"].to_string()))
        .collect()
}

fn kinds_of(active: &[Value], exchange: &str) -> Vec<String> {
    let mut kinds: Vec<String> = active
        .iter()
        .filter(|fault| fault["exchange"] == exchange)
        .map(|fault| fault["kind"].as_str().expect("a kind").to_owned())
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn the_fault_api_lists_active_faults_and_clear_removes_them() {
    let harness = Harness::start().await;
    assert!(harness.active().await.is_empty());

    harness
        .post_fault(json!({"exchange": "okx", "kind": "stall", "duration_ms": 60_000}))
        .await;
    harness
        .post_fault(json!({"exchange": "kraken", "kind": "quiet", "symbols": ["BTC/USD"]}))
        .await;
    harness
        .post_fault(json!({"kind": "slow_rest", "delay_ms": 250}))
        .await;
    let answer = harness
        .post_fault(json!({"exchange": "gemini", "kind": "failing_rest"}))
        .await;
    let active = harness.active().await;
    let answered = answer["active"].as_array().expect("an active list");
    assert_eq!(names(answered), names(&active));
    assert_eq!(active.len(), 9, "{active:?}");
    assert_eq!(kinds_of(&active, "okx"), ["slow_rest", "stall"]);
    assert_eq!(kinds_of(&active, "kraken"), ["quiet", "slow_rest"]);
    assert_eq!(kinds_of(&active, "gemini"), ["failing_rest", "slow_rest"]);
    let stall = active
        .iter()
        .find(|fault| fault["kind"] == "stall")
        .expect("the stall");
    let remaining = stall["remaining_ms"].as_u64().expect("a timed fault");
    assert!((50_000..=60_000).contains(&remaining), "{remaining}");
    let quiet = active
        .iter()
        .find(|fault| fault["kind"] == "quiet")
        .expect("the quiet");
    assert_eq!(quiet["remaining_ms"], Value::Null);
    assert_eq!(quiet["symbols"], json!(["BTC/USD"]));
    assert!(
        active
            .iter()
            .filter(|fault| fault["kind"] == "slow_rest")
            .all(|fault| fault["delay_ms"] == 250)
    );
    let typed = serde_json::to_value(harness.simulator.active_faults()).expect("serializable");
    assert_eq!(names(typed.as_array().expect("a list")), names(&active));

    let answer = harness
        .post_fault(json!({"exchange": "okx", "kind": "clear"}))
        .await;
    let active = answer["active"].as_array().expect("an active list");
    assert!(kinds_of(active, "okx").is_empty());
    assert_eq!(active.len(), 7, "{active:?}");

    // A timed fault drops off the list by itself.
    harness
        .post_fault(json!({"exchange": "okx", "kind": "malformed", "duration_ms": 200}))
        .await;
    assert_eq!(kinds_of(&harness.active().await, "okx"), ["malformed"]);
    let injected = Instant::now();
    while !kinds_of(&harness.active().await, "okx").is_empty() {
        assert!(injected.elapsed() < Duration::from_secs(1), "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(injected.elapsed() >= Duration::from_millis(150));

    let answer = harness.post_fault(json!({"kind": "clear"})).await;
    assert_eq!(answer, json!({"active": []}));
    assert!(harness.active().await.is_empty());
}

#[tokio::test]
async fn bad_fault_requests_get_400_with_a_json_error_and_change_nothing() {
    let harness = Harness::start().await;
    let json_type = Some("application/json");
    // (body, content type, what the error must mention)
    let cases = [
        ("{\"kind\":", json_type, ""),
        ("{\"kind\":\"explode\"}", json_type, ""),
        ("{\"kind\":\"stall\",\"duration\":5}", json_type, ""),
        ("{\"exchange\":\"okx\"}", json_type, ""),
        (
            "{\"exchange\":\"binance\",\"kind\":\"stall\"}",
            json_type,
            "binance",
        ),
        ("{\"kind\":\"stall\"}", None, ""),
    ];
    for (body, content_type, mentions) in cases {
        let (status, answer) = harness.post_faults(body, content_type).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty() && error.contains(mentions),
            "{body} → {answer}"
        );
    }
    assert!(harness.active().await.is_empty());

    // The exchange routes are untouched by the fault API beside them.
    let (status, _, _) = harness.ticker("okx", "BTC-USDT").await;
    assert_eq!(status, 200);
}
