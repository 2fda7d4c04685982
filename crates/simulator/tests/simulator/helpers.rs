//! The harness: a simulator started on port 0, the seeded exchange definitions pointed at it,
//! and the clients that talk to it (WebSocket subscriptions as the connector sends them, the
//! REST tickers, the fault API), with deadline-bounded readers that panic on a closed connection.

use std::time::Duration;

use beast_core::ExchangeDefinition;
pub(crate) use beast_core::now_ms;
use beast_feeds::CompiledDefinition;
use beast_simulator::{FaultRequest, Simulator, SimulatorOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every subscribed symbol must have a live trade within this long of subscribing, even on a
/// busy machine; also the wait for any single expected frame.
pub(crate) const TRADES_WITHIN: Duration = Duration::from_secs(2);
/// Frames the server wrote just before a fault took hold may still be on their way.
pub(crate) const IN_FLIGHT: Duration = Duration::from_millis(50);

const SEED_EXCHANGES: &str = include_str!("../../../store/seed/exchanges.json");
const SEED_ASSETS: &str = include_str!("../../../store/seed/assets.json");

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A running simulator; dropping it stops every simulator task.
pub(crate) struct Harness {
    pub(crate) simulator: Simulator,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    http: reqwest::Client,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        Harness::with(SimulatorOptions::default()).await
    }

    pub(crate) async fn with(options: SimulatorOptions) -> Harness {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let simulator = Simulator::start(options, cancel.clone(), &tracker)
            .await
            .expect("simulator starts");
        Harness {
            simulator,
            cancel,
            tracker,
            http: reqwest::Client::new(),
        }
    }

    /// The seeded definition of `name`, pointed at this simulator.
    pub(crate) fn definition(&self, name: &str) -> ExchangeDefinition {
        let definitions: Vec<ExchangeDefinition> =
            serde_json::from_str(SEED_EXCHANGES).expect("seeded definitions parse");
        let mut definition = definitions
            .into_iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no seeded definition for {name}"));
        assert!(
            self.simulator.redirect(&mut definition),
            "{name} is simulated"
        );
        definition
    }

    /// `name`'s definition, its test [`symbols`], and a connection subscribed to them.
    pub(crate) async fn open(&self, name: &str) -> (ExchangeDefinition, Vec<String>, Ws) {
        let definition = self.definition(name);
        let symbols = symbols(name);
        let ws = subscribe(&definition, &symbols, now_ms()).await;
        (definition, symbols, ws)
    }

    /// Injects through the handle; `request` is a `FaultRequest` as JSON.
    pub(crate) fn inject(&self, request: Value) {
        let request: FaultRequest = serde_json::from_value(request).expect("a fault request");
        self.simulator.inject(&request).expect("fault accepted");
    }

    /// `POST /_faults` with a raw body: status and JSON body.
    pub(crate) async fn post_faults(&self, body: &str, content_type: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(self.url("/_faults")).body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("POST /_faults");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// `POST /_faults` with a valid request: the JSON answer.
    pub(crate) async fn post_fault(&self, request: Value) -> Value {
        let (status, body) = self
            .post_faults(&request.to_string(), Some("application/json"))
            .await;
        assert_eq!(status, 200, "{request} → {body}");
        body
    }

    /// `GET /_faults`: the `active` list.
    pub(crate) async fn active(&self) -> Vec<Value> {
        let (status, body, _) = self.get(&self.url("/_faults")).await;
        assert_eq!(status, 200, "{body}");
        parse(&body)["active"]
            .as_array()
            .expect("an active list")
            .clone()
    }

    /// GET the REST ticker of `symbol` at `name`'s seeded `rest_url`.
    pub(crate) async fn ticker(&self, name: &str, symbol: &str) -> (u16, String, Duration) {
        let url = self.definition(name).rest_url.replace("{SYMBOL}", symbol);
        self.get(&url).await
    }

    /// `http://ADDR{path}` on the simulator.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.simulator.addr())
    }

    /// GET a URL: status, body text and how long the answer took.
    pub(crate) async fn get(&self, url: &str) -> (u16, String, Duration) {
        let started = Instant::now();
        let response = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
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

/// Options with a Crypto.com heartbeat every `ms` instead of every 30 s.
pub(crate) fn heartbeat_every(ms: u64) -> SimulatorOptions {
    SimulatorOptions {
        cryptocom_heartbeat: Duration::from_millis(ms),
        ..SimulatorOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribing as the connector does
// ---------------------------------------------------------------------------------------------

/// BTC, ETH, SOL and the first other prewarmed asset, written the way `exchange` writes symbols.
pub(crate) fn symbols(exchange: &str) -> Vec<String> {
    const MAJORS: [&str; 3] = ["BTC", "ETH", "SOL"];
    let assets: Value = serde_json::from_str(SEED_ASSETS).expect("seeded assets parse");
    let entry = &assets["exchanges"][exchange];
    let template = entry["symbol"].as_str().expect("symbol template");
    let prewarm = entry["prewarm"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|asset| !MAJORS.contains(asset))
        .expect("a prewarmed minor asset");
    MAJORS
        .into_iter()
        .chain([prewarm])
        .map(|asset| {
            template
                .replace("{ASSET}", asset)
                .replace("{asset}", &asset.to_lowercase())
        })
        .collect()
}

/// The definition compiled as the connector compiles it: its subscribe and ping messages.
pub(crate) fn compiled(definition: &ExchangeDefinition) -> CompiledDefinition {
    CompiledDefinition::compile(definition.clone()).expect("seeded definitions compile")
}

pub(crate) async fn connect(definition: &ExchangeDefinition) -> Ws {
    let (ws, _) = connect_async(definition.ws_url.as_str())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", definition.ws_url));
    ws
}

/// Connects and sends the definition's subscribe message(s) for `symbols`.
pub(crate) async fn subscribe(
    definition: &ExchangeDefinition,
    symbols: &[impl AsRef<str>],
    ms: i64,
) -> Ws {
    let mut ws = connect(definition).await;
    let symbols: Vec<String> = symbols.iter().map(|s| s.as_ref().to_owned()).collect();
    for message in compiled(definition).subscribe_messages(&symbols, ms) {
        send(&mut ws, &message).await;
    }
    ws
}

pub(crate) async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// The next message of any kind, or `None` once `deadline` passes. Panics if the server
/// closes the connection.
pub(crate) async fn next_message(ws: &mut Ws, deadline: Instant) -> Option<Message> {
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

/// The next text frame, skipping WebSocket pings and pongs, or `None` once `deadline` passes.
/// Panics if the server closes the connection or sends a binary frame.
pub(crate) async fn next_text(ws: &mut Ws, deadline: Instant) -> Option<String> {
    loop {
        match next_message(ws, deadline).await? {
            Message::Text(text) => return Some(text.to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Every text frame that arrives within `window`.
pub(crate) async fn texts_for(ws: &mut Ws, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut texts = Vec::new();
    while let Some(text) = next_text(ws, deadline).await {
        texts.push(text);
    }
    texts
}

/// Feeds every text frame to `done` until it returns true; false if `within` passes first.
pub(crate) async fn read_until(
    ws: &mut Ws,
    within: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while let Some(text) = next_text(ws, deadline).await {
        if done(&text) {
            return true;
        }
    }
    false
}

/// The next text frame as JSON; panics unless one arrives within [`TRADES_WITHIN`].
pub(crate) async fn next_frame(ws: &mut Ws, what: &str) -> Value {
    let text = next_text(ws, Instant::now() + TRADES_WITHIN)
        .await
        .unwrap_or_else(|| panic!("{what} within {TRADES_WITHIN:?}"));
    parse(&text)
}

/// The first JSON frame `is` accepts, skipping others; panics unless one arrives within
/// [`TRADES_WITHIN`], or on a frame that is not JSON.
pub(crate) async fn first_frame(ws: &mut Ws, what: &str, is: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    read_until(ws, TRADES_WITHIN, |text| {
        let frame = parse(text);
        if is(&frame) {
            found = Some(frame);
        }
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("{what} within {TRADES_WITHIN:?}"))
}

/// Skips the frames the server wrote before a fault just injected took hold.
pub(crate) async fn drain_in_flight(ws: &mut Ws) {
    texts_for(ws, IN_FLIGHT).await;
}

/// The text frames of the `window` after a fault just injected took hold.
pub(crate) async fn frames_after_fault(ws: &mut Ws, window: Duration) -> Vec<String> {
    drain_in_flight(ws).await;
    texts_for(ws, window).await
}

/// Waits for the server to close the connection, skipping frames; the close code, if any.
pub(crate) async fn wait_for_close(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let message = timeout(
            deadline.saturating_duration_since(Instant::now()),
            ws.next(),
        )
        .await
        .expect("the server closes the connection in time");
        match message {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// A frame that must be JSON.
pub(crate) fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"))
}

/// A frame that may not be JSON (a fault spoiled it).
pub(crate) fn try_parse(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}
