//! A local exchange simulator: one HTTP server that speaks the real public-trade WebSocket and
//! REST ticker formats of Coinbase, Gemini, Kraken, Gate.io, Crypto.com and OKX, so the generic
//! connector runs against it in tests and demos without internet.
//!
//! The first path segment names the exchange (`/okx/ws/v5/public`). A WebSocket upgrade speaks
//! that exchange's protocol ([`session`] runs the connection, one module per exchange under
//! [`exchange`] writes the frames); any other GET is that exchange's REST ticker. Prices are
//! random walks in [`market`], shared by every connection and the tickers.
//!
//! # Faults
//!
//! Tests and operators break a running simulator on demand, through [`Simulator::inject`] or
//! over HTTP on the same listener ([`fault`] holds the state and the semantics of each
//! [`FaultKind`]):
//!
//! - `POST /_faults` with a [`FaultRequest`] body, e.g.
//!   `{"exchange":"okx","kind":"stall","duration_ms":5000}`, answers 200
//!   `{"active":[ActiveFault...]}`; a body that is not a valid request, or names an exchange
//!   the simulator does not speak, answers 400 `{"error":"..."}`.
//! - `GET /_faults` answers 200 with the same list, e.g.
//!   `{"active":[{"exchange":"okx","kind":"stall","remaining_ms":4210}]}` (`remaining_ms` is
//!   null for a fault that lasts until cleared; `slow_rest` adds `delay_ms`, `quiet` adds
//!   `symbols`). Expired and one-shot faults are not listed.
//!
//! A fault that names no exchange hits all six; `{"kind":"clear"}` lifts every fault.
//! `drop` closes the TCP connection without a close frame (a FIN, not a reset). `stall` neither
//! writes nor reads, so even WebSocket protocol pings go unanswered; client frames sent during
//! the stall wait in the socket and are handled once it ends, and a client that leaves during
//! a stall is noticed only then. `stop_heartbeats` holds back keep-alives and application
//! pongs, while protocol pongs still go out: axum answers those itself.

mod exchange;
mod fault;
mod market;
mod session;
mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use beast_core::ExchangeDefinition;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::fault::{ActiveFault, FaultError, FaultKind, FaultRequest};

use crate::exchange::{Coinbase, CryptoCom, Exchange, GateIo, Gemini, Kraken, Okx};
use crate::fault::Faults;
use crate::market::Market;

/// The simulated exchanges, by the `name` of their definitions.
const EXCHANGES: [&str; 6] = [
    Coinbase::NAME,
    Gemini::NAME,
    Kraken::NAME,
    GateIo::NAME,
    CryptoCom::NAME,
    Okx::NAME,
];

/// How the simulator listens and paces its feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatorOptions {
    /// Bind address, port 0 = any free port.
    pub bind: SocketAddr,
    /// Period between trade batches on each connection.
    pub trade_interval: Duration,
    /// Crypto.com server heartbeat period (real exchange: 30 s). The client must answer each
    /// heartbeat within 5 s, or before the next one if this period is shorter.
    pub cryptocom_heartbeat: Duration,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        SimulatorOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            trade_interval: Duration::from_millis(100),
            cryptocom_heartbeat: Duration::from_secs(30),
        }
    }
}

/// A running simulator; it stops when the `cancel` token given to [`Simulator::start`] fires.
#[derive(Debug, Clone)]
pub struct Simulator {
    addr: SocketAddr,
    /// The same faults the server's connections and tickers read.
    faults: Arc<Faults>,
}

/// What every request handler and connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Behind an `Arc` because each connection keeps its own handle for trade batches.
    market: Arc<Market>,
    /// Behind an `Arc` because the [`Simulator`] handle and the `/_faults` routes share it.
    faults: Arc<Faults>,
    options: SimulatorOptions,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Simulator {
    /// Binds and starts serving; tasks stop when `cancel` fires. Spawn tasks on `tracker`.
    pub async fn start(
        options: SimulatorOptions,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let shared = Arc::new(Shared {
            market: Arc::new(Market::default()),
            faults: Arc::clone(&faults),
            options,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        let app = Router::new()
            .route("/{exchange}", get(route))
            .route("/{exchange}/{*path}", get(route))
            .with_state(shared)
            .merge(fault::router(Arc::clone(&faults)));
        let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
        tracker.spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "exchange simulator stopped");
            }
        });
        tracing::info!(%addr, "exchange simulator listening");
        Ok(Simulator { addr, faults })
    }

    /// Injects a fault (see [`FaultKind`] for what each does); fails if the request names an
    /// exchange the simulator does not speak.
    pub fn inject(&self, request: &FaultRequest) -> Result<(), FaultError> {
        self.faults.inject(request)
    }

    /// The faults in force, by exchange; expired and one-shot ones are not listed.
    pub fn active_faults(&self) -> Vec<ActiveFault> {
        self.faults.active()
    }

    /// The bound address, with the real port when bound to port 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Names of the exchanges it simulates: coinbase, gemini, kraken, gateio, cryptocom, okx.
    pub fn exchanges() -> &'static [&'static str] {
        &EXCHANGES
    }

    /// Points a definition at this simulator, keeping the real path: ws_url
    /// `wss://ws.okx.com:8443/ws/v5/public` becomes `ws://127.0.0.1:PORT/okx/ws/v5/public`
    /// (prefix = the definition's `name`); rest_url likewise with `http://`.
    /// Returns false (and changes nothing) if `def.name` is not a simulated exchange.
    pub fn redirect(&self, def: &mut ExchangeDefinition) -> bool {
        if !EXCHANGES.contains(&def.name.as_str()) {
            return false;
        }
        let addr = self.reachable_addr();
        def.ws_url = local_url("ws", addr, &def.name, &def.ws_url);
        if !def.rest_url.is_empty() {
            def.rest_url = local_url("http", addr, &def.name, &def.rest_url);
        }
        true
    }

    /// The bound address, with a wildcard IP replaced by loopback so clients can dial it.
    fn reachable_addr(&self) -> SocketAddr {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.addr.port())
    }
}

/// `wss://host:port/path?query` → `{scheme}://{addr}/{name}/path?query`.
fn local_url(scheme: &str, addr: SocketAddr, name: &str, url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let tail = after_scheme
        .find(['/', '?'])
        .map_or("", |start| &after_scheme[start..]);
    format!("{scheme}://{addr}/{name}{tail}")
}

/// Sends a request to the exchange its first path segment names.
async fn route(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let name = params.get("exchange").map_or("", String::as_str);
    let path = params.get("path").map_or("", String::as_str);
    if upgrade.is_err() {
        let fault = shared.faults.rest(name);
        if let Some(delay) = fault.delay {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shared.cancel.cancelled() => return unavailable(),
            }
        }
        if fault.fail {
            return unavailable();
        }
    }
    let request = Request {
        shared,
        upgrade: upgrade.ok(),
        path,
        query: &query,
    };
    match name {
        Coinbase::NAME => request.serve::<Coinbase>(),
        Gemini::NAME => request.serve::<Gemini>(),
        Kraken::NAME => request.serve::<Kraken>(),
        GateIo::NAME => request.serve::<GateIo>(),
        CryptoCom::NAME => request.serve::<CryptoCom>(),
        Okx::NAME => request.serve::<Okx>(),
        _ => (StatusCode::NOT_FOUND, "unknown exchange").into_response(),
    }
}

/// The answer of a REST endpoint under a `failing_rest` fault.
fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response()
}

/// One request, already routed to an exchange.
struct Request<'r> {
    shared: Arc<Shared>,
    upgrade: Option<WebSocketUpgrade>,
    path: &'r str,
    query: &'r HashMap<String, String>,
}

impl Request<'_> {
    /// A WebSocket upgrade runs a session; anything else is the REST ticker.
    fn serve<E: Exchange>(self) -> Response {
        let Some(upgrade) = self.upgrade else {
            return self.ticker::<E>();
        };
        let tracker = self.shared.tracker.clone();
        let shared = self.shared;
        upgrade.on_upgrade(move |socket| tracker.track_future(session::run::<E>(socket, shared)))
    }

    fn ticker<E: Exchange>(&self) -> Response {
        match E::rest_symbols(self.path, self.query) {
            Some(symbols)
                if !symbols.is_empty()
                    && symbols.iter().all(|s| market::is_plausible_symbol(s)) =>
            {
                let tickers: Vec<_> = symbols
                    .iter()
                    .map(|symbol| self.shared.market.ticker(E::NAME, symbol))
                    .collect();
                Json(E::rest_body(&tickers)).into_response()
            }
            _ => (StatusCode::NOT_FOUND, "no such ticker").into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(name: &str, ws_url: &str, rest_url: &str) -> ExchangeDefinition {
        let json = serde_json::json!({
            "name": name,
            "source": format!("{name}-ws"),
            "ws_url": ws_url,
            "subscribe_template": "{SYMBOLS}",
            "items_path": "$",
            "symbol_path": "$.s",
            "price_path": "$.p",
            "time_format": "unix_ms",
            "rest_url": rest_url,
        });
        serde_json::from_value(json).expect("valid definition")
    }

    fn simulator(addr: &str) -> Simulator {
        Simulator {
            addr: addr.parse().expect("address"),
            faults: Arc::default(),
        }
    }

    #[test]
    fn redirect_keeps_the_real_path_under_the_exchange_name() {
        let simulator = simulator("127.0.0.1:4321");
        let mut okx = definition(
            "okx",
            "wss://ws.okx.com:8443/ws/v5/public",
            "https://www.okx.com/api/v5/market/ticker?instId={SYMBOL}",
        );
        assert!(simulator.redirect(&mut okx));
        assert_eq!(okx.ws_url, "ws://127.0.0.1:4321/okx/ws/v5/public");
        assert_eq!(
            okx.rest_url,
            "http://127.0.0.1:4321/okx/api/v5/market/ticker?instId={SYMBOL}"
        );

        let mut coinbase = definition("coinbase", "wss://advanced-trade-ws.coinbase.com", "");
        assert!(simulator.redirect(&mut coinbase));
        assert_eq!(coinbase.ws_url, "ws://127.0.0.1:4321/coinbase");
        assert_eq!(coinbase.rest_url, "");
    }

    #[test]
    fn redirect_leaves_unknown_exchanges_alone() {
        let simulator = simulator("127.0.0.1:4321");
        let original = definition("binance", "wss://stream.binance.com:9443/ws", "");
        let mut binance = original.clone();
        assert!(!simulator.redirect(&mut binance));
        assert_eq!(binance, original);
    }

    #[test]
    fn redirect_dials_loopback_when_bound_to_every_interface() {
        let simulator = simulator("0.0.0.0:4321");
        let mut gate = definition("gateio", "wss://api.gateio.ws/ws/v4/", "");
        assert!(simulator.redirect(&mut gate));
        assert_eq!(gate.ws_url, "ws://127.0.0.1:4321/gateio/ws/v4/");
    }
}
