//! Faults injected into a running simulator, seen from real WebSocket and HTTP clients: each
//! test breaks something, checks the frames or status codes a client gets, then checks that the
//! simulator recovers once the fault expires or is cleared.

// Helpers outside `#[test]` functions: panicking on a broken expectation is how these fail.
#![allow(clippy::expect_used)]

use std::time::Duration;

use beast_simulator::{FaultError, FaultKind, FaultRequest, Simulator, SimulatorOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Long enough for a first trade on a fresh connection, even on a busy machine.
const TRADES_WITHIN: Duration = Duration::from_secs(2);
/// Frames the server wrote just before a fault took hold may still be on their way.
const IN_FLIGHT: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Harness {
    simulator: Simulator,
    cancel: CancellationToken,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        Harness::with(SimulatorOptions::default()).await
    }

    async fn with(options: SimulatorOptions) -> Harness {
        let cancel = CancellationToken::new();
        let simulator = Simulator::start(options, cancel.clone(), &TaskTracker::new())
            .await
            .expect("simulator starts");
        Harness {
            simulator,
            cancel,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.simulator.addr())
    }

    /// Injects through the handle; `request` is a `FaultRequest` as JSON.
    fn inject(&self, request: Value) {
        let request: FaultRequest = serde_json::from_value(request).expect("a fault request");
        self.simulator.inject(&request).expect("fault accepted");
    }

    async fn connect(&self, exchange: &str) -> Ws {
        let url = format!("ws://{}{}", self.simulator.addr(), ws_path(exchange));
        let (ws, _) = connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        ws
    }

    /// Connects and subscribes to trades on `symbols`, written the exchange's way.
    async fn subscribe(&self, exchange: &str, symbols: &[&str]) -> Ws {
        let mut ws = self.connect(exchange).await;
        send(&mut ws, &subscribe_message(exchange, symbols)).await;
        ws
    }

    /// `POST /_faults` with a raw body: status and JSON body.
    async fn post_faults(&self, body: &str, content_type: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(self.url("/_faults")).body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("POST /_faults");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn post_fault(&self, request: Value) -> Value {
        let (status, body) = self
            .post_faults(&request.to_string(), Some("application/json"))
            .await;
        assert_eq!(status, 200, "{request} → {body}");
        body
    }

    /// `GET /_faults`: the `active` list.
    async fn active(&self) -> Vec<Value> {
        let response = self
            .http
            .get(self.url("/_faults"))
            .send()
            .await
            .expect("GET /_faults");
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.expect("a JSON answer");
        body["active"].as_array().expect("an active list").clone()
    }

    /// GET a REST ticker: status, body text and how long the answer took.
    async fn ticker(&self, path: &str) -> (u16, String, Duration) {
        let started = Instant::now();
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("GET ticker");
        let status = response.status().as_u16();
        let body = response.text().await.expect("a body");
        (status, body, started.elapsed())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn ws_path(exchange: &str) -> &'static str {
    match exchange {
        "coinbase" => "/coinbase",
        "gemini" => "/gemini",
        "kraken" => "/kraken/v2",
        "gateio" => "/gateio/ws/v4/",
        "cryptocom" => "/cryptocom/exchange/v1/market",
        "okx" => "/okx/ws/v5/public",
        other => panic!("no WebSocket path for {other}"),
    }
}

/// The subscribe message the seeded definitions send.
fn subscribe_message(exchange: &str, symbols: &[&str]) -> String {
    let message = match exchange {
        "coinbase" => {
            json!({"type": "subscribe", "product_ids": symbols, "channel": "market_trades"})
        }
        "gemini" => {
            let streams: Vec<String> = symbols.iter().map(|s| format!("{s}@trade")).collect();
            json!({"id": 1, "method": "subscribe", "params": streams})
        }
        "kraken" => json!({
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": symbols, "snapshot": true},
            "req_id": 1,
        }),
        "gateio" => {
            json!({"time": 1, "channel": "spot.trades", "event": "subscribe", "payload": symbols})
        }
        "cryptocom" => {
            let channels: Vec<String> = symbols.iter().map(|s| format!("trade.{s}")).collect();
            json!({"id": 1, "method": "subscribe", "params": {"channels": channels}, "nonce": 1})
        }
        "okx" => {
            let args: Vec<Value> = symbols
                .iter()
                .map(|s| json!({"channel": "trades", "instId": s}))
                .collect();
            json!({"op": "subscribe", "args": args})
        }
        other => panic!("no subscribe message for {other}"),
    };
    message.to_string()
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next message of any kind, or `None` once `deadline` passes. Panics if the server
/// closes the connection.
async fn next_message(ws: &mut Ws, deadline: Instant) -> Option<Message> {
    let message = timeout(
        deadline.saturating_duration_since(Instant::now()),
        ws.next(),
    )
    .await
    .ok()?;
    match message {
        Some(Ok(Message::Close(frame))) => panic!("server closed the connection: {frame:?}"),
        Some(Ok(message)) => Some(message),
        other => panic!("connection ended unexpectedly: {other:?}"),
    }
}

/// Every text frame that arrives within `window`.
async fn texts_for(ws: &mut Ws, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut texts = Vec::new();
    while let Some(message) = next_message(ws, deadline).await {
        if let Message::Text(text) = message {
            texts.push(text.to_string());
        }
    }
    texts
}

/// Reads text frames until `done` accepts one; false if `within` passes first.
async fn read_until(ws: &mut Ws, within: Duration, mut done: impl FnMut(&str) -> bool) -> bool {
    let deadline = Instant::now() + within;
    while let Some(message) = next_message(ws, deadline).await {
        if let Message::Text(text) = message
            && done(&text)
        {
            return true;
        }
    }
    false
}

fn json(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// An OKX trade frame: its instId and trade count.
fn okx_trades(text: &str) -> Option<(String, usize)> {
    let frame = json(text)?;
    let count = frame["data"].as_array()?.len();
    Some((frame["arg"]["instId"].as_str()?.to_owned(), count))
}

fn is_okx_trade(text: &str) -> bool {
    okx_trades(text).is_some()
}

// ---------------------------------------------------------------------------------------------
// Connection faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn drop_cuts_the_exchanges_connections_without_a_close_frame_and_new_ones_work() {
    let harness = Harness::start().await;
    let mut okx = harness.subscribe("okx", &["BTC-USDT"]).await;
    let mut gate = harness.subscribe("gateio", &["BTC_USDT"]).await;
    assert!(read_until(&mut okx, TRADES_WITHIN, is_okx_trade).await);

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

    let gate_frames = texts_for(&mut gate, Duration::from_millis(300)).await;
    assert!(!gate_frames.is_empty(), "other exchanges keep streaming");

    let mut again = harness.subscribe("okx", &["BTC-USDT"]).await;
    assert!(
        read_until(&mut again, TRADES_WITHIN, is_okx_trade).await,
        "a new connection streams trades"
    );
}

#[tokio::test]
async fn stall_silences_old_and_new_connections_until_it_expires() {
    let harness = Harness::start().await;
    let mut ws = harness.subscribe("kraken", &["BTC/USD"]).await;
    assert!(
        read_until(&mut ws, TRADES_WITHIN, is_kraken_trade).await,
        "trades before the stall"
    );

    harness.inject(json!({"exchange": "kraken", "kind": "stall", "duration_ms": 800}));
    let stalled = Instant::now();
    texts_for(&mut ws, IN_FLIGHT).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    send(&mut ws, r#"{"method":"ping","req_id":7}"#).await;
    // Kraken greets every new connection at once; not while stalled.
    let mut late = harness.connect("kraken").await;

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
                let frame = json(&text).expect("JSON frames after the stall");
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
    assert_eq!(json(&greeting).expect("JSON")["channel"], "status");
}

fn is_kraken_trade(text: &str) -> bool {
    json(text).is_some_and(|frame| frame["channel"] == "trade" && frame["type"] == "update")
}

fn fast_heartbeat() -> SimulatorOptions {
    SimulatorOptions {
        cryptocom_heartbeat: Duration::from_millis(200),
        ..SimulatorOptions::default()
    }
}

fn is_heartbeat(text: &str) -> bool {
    json(text).is_some_and(|frame| frame["method"] == "public/heartbeat")
}

fn is_cryptocom_push(text: &str) -> bool {
    json(text).is_some_and(|frame| frame["method"] == "subscribe" && frame["id"] == -1)
}

#[tokio::test]
async fn stop_heartbeats_keeps_cryptocom_open_and_trading_without_heartbeats() {
    let harness = Harness::with(fast_heartbeat()).await;
    harness.inject(json!({"exchange": "cryptocom", "kind": "stop_heartbeats"}));
    let mut ws = harness.subscribe("cryptocom", &["BTC_USDT"]).await;

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
    let harness = Harness::with(fast_heartbeat()).await;
    let mut ws = harness.subscribe("cryptocom", &["BTC_USDT"]).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, is_heartbeat).await);
    harness.inject(json!({"exchange": "cryptocom", "kind": "stop_heartbeats"}));

    let frames = texts_for(&mut ws, Duration::from_millis(800)).await;
    assert!(!frames.iter().any(|text| is_heartbeat(text)), "{frames:?}");
    assert!(frames.iter().any(|text| is_cryptocom_push(text)));
}

#[tokio::test]
async fn stop_heartbeats_leaves_application_pings_unanswered_until_cleared() {
    let harness = Harness::start().await;
    let mut ws = harness.subscribe("okx", &["BTC-USDT"]).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, is_okx_trade).await);

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
    let mut ws = harness.subscribe("okx", &["BTC-USDT", "ETH-USDT"]).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, is_okx_trade).await);

    harness.inject(json!({"exchange": "okx", "kind": "malformed"}));
    harness.inject(json!({"exchange": "okx", "kind": "truncated"}));
    texts_for(&mut ws, IN_FLIGHT).await;
    let frames = texts_for(&mut ws, Duration::from_millis(700)).await;
    let (mut malformed, mut truncated, mut valid) = (0, 0, 0);
    for (index, frame) in frames.iter().enumerate() {
        let next = frames.get(index + 1);
        if is_okx_trade(frame) {
            valid += 1;
        } else if frame.starts_with("{\"oops\":") {
            assert!(json(frame).is_none(), "{frame}");
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
    texts_for(&mut ws, IN_FLIGHT).await;
    let frames = texts_for(&mut ws, Duration::from_millis(400)).await;
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
        let mut ws = harness.subscribe(exchange, &[subscribed]).await;
        let quoted = format!("\"{unknown}\"");
        let (mut theirs, mut ours) = (None, false);
        let done = read_until(&mut ws, TRADES_WITHIN, |text| {
            if text.contains(&quoted) {
                theirs = Some(json(text).unwrap_or_else(|| panic!("{exchange}: {text}")));
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
    let mut ws = harness.subscribe("okx", &["BTC-USDT"]).await;
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
    let mut ws = harness.subscribe("okx", &["BTC-USDT", "ETH-USDT"]).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, is_okx_trade).await);

    harness.inject(json!({"exchange": "okx", "kind": "quiet", "symbols": ["btc-usdt"]}));
    texts_for(&mut ws, IN_FLIGHT).await;
    let frames = texts_for(&mut ws, Duration::from_millis(1_000)).await;
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

    let (status, body, _) = harness
        .ticker("/okx/api/v5/market/ticker?instId=BTC-USDT")
        .await;
    assert_eq!(status, 200);
    assert!(json(&body).expect("JSON")["data"][0]["last"].is_string());

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

const OKX_TICKER: &str = "/okx/api/v5/market/ticker?instId=BTC-USDT";
const GEMINI_TICKER: &str = "/gemini/v1/pubticker/btcusd";

#[tokio::test]
async fn slow_rest_delays_tickers_and_failing_rest_answers_503() {
    let harness = Harness::start().await;
    let delay = Duration::from_millis(500);
    harness.inject(json!({"exchange": "okx", "kind": "slow_rest", "delay_ms": 500}));
    harness.inject(json!({"exchange": "gemini", "kind": "failing_rest"}));

    let (status, body, took) = harness.ticker(OKX_TICKER).await;
    assert_eq!(status, 200, "{body}");
    assert!(took >= delay, "answered after {took:?}");
    let (status, body, took) = harness.ticker(GEMINI_TICKER).await;
    assert_eq!(status, 503);
    assert!(
        !body.is_empty() && json(&body).is_none(),
        "short text: {body}"
    );
    assert!(took < delay, "failing is not slow: {took:?}");

    // REST faults leave the WebSocket alone.
    let mut ws = harness.subscribe("gemini", &["btcusd"]).await;
    assert!(read_until(&mut ws, TRADES_WITHIN, |text| text.contains("\"btcusd\"")).await);

    harness.inject(json!({"kind": "clear"}));
    let (status, _, took) = harness.ticker(OKX_TICKER).await;
    assert_eq!(status, 200);
    assert!(took < delay, "no longer slow: {took:?}");
    assert_eq!(harness.ticker(GEMINI_TICKER).await.0, 200);
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
    let cases = [
        ("{\"kind\":", json_type),
        ("{\"kind\":\"explode\"}", json_type),
        ("{\"kind\":\"stall\",\"duration\":5}", json_type),
        ("{\"exchange\":\"okx\"}", json_type),
        ("{\"exchange\":\"binance\",\"kind\":\"stall\"}", json_type),
        ("{\"kind\":\"stall\"}", None),
    ];
    for (body, content_type) in cases {
        let (status, answer) = harness.post_faults(body, content_type).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{body} → {answer}");
    }
    let (_, answer) = harness
        .post_faults("{\"exchange\":\"binance\",\"kind\":\"stall\"}", json_type)
        .await;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("binance"))
    );
    assert!(harness.active().await.is_empty());

    let request = FaultRequest {
        exchange: Some("binance".into()),
        kind: FaultKind::Drop,
        duration_ms: None,
        delay_ms: None,
        symbols: Vec::new(),
    };
    assert_eq!(
        harness.simulator.inject(&request),
        Err(FaultError::UnknownExchange("binance".into()))
    );

    // The exchange routes are untouched by the fault API beside them.
    let (status, _, _) = harness.ticker(OKX_TICKER).await;
    assert_eq!(status, 200);
}
