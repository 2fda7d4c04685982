//! Faults injected on demand: what each exchange is currently doing wrong, and the
//! `/_faults` API that sets it. Connections ([`crate::session`]) and the REST tickers read the
//! state; nothing here runs on a timer: a timed fault is over once its deadline has passed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::EXCHANGES;

/// Where the fault API listens, beside the `/{exchange}/...` routes.
pub(crate) const FAULTS_PATH: &str = "/_faults";

/// `slow_rest` delay when the request names none.
const DEFAULT_REST_DELAY: Duration = Duration::from_millis(3_000);

/// Sent before every trade batch while `malformed` is active: not JSON.
pub(crate) const MALFORMED_FRAME: &str = "{\"oops\":\u{1}#garbage";

/// A fault to inject, as `POST /_faults` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// Exchange name (coinbase, gemini, kraken, gateio, cryptocom, okx); None = every exchange.
    #[serde(default)]
    pub exchange: Option<String>,
    pub kind: FaultKind,
    /// How long the fault lasts; None = until cleared. Ignored for one-shot kinds (drop).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// For slow_rest: delay added to every REST answer (default 3000).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// For quiet: the exchange symbols that stop trading (as the exchange writes them, e.g.
    /// BTC-USD). Empty = all.
    #[serde(default)]
    pub symbols: Vec<String>,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// One-shot: every open WebSocket connection is cut now, without a close frame.
    Drop,
    /// Connections send nothing at all, not even pongs, and their client frames wait unread.
    Stall,
    /// No keep-alive frames and no answers to application-level pings; trades continue.
    StopHeartbeats,
    /// Every trade batch is preceded by a frame that is not JSON.
    Malformed,
    /// Every trade frame is preceded by its first half.
    Truncated,
    /// Every batch also carries a trade on a symbol nobody subscribed and nobody lists.
    UnknownSymbols,
    /// The listed symbols (all if none) stop trading; everything else carries on.
    Quiet,
    /// REST answers come `delay_ms` late.
    SlowRest,
    /// REST answers are HTTP 503.
    FailingRest,
    /// Removes every active fault.
    Clear,
}

/// A fault in force, as `GET /_faults` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveFault {
    pub exchange: String,
    pub kind: FaultKind,
    /// Time left; None = until cleared.
    pub remaining_ms: Option<u64>,
    /// The REST delay of a `slow_rest` fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The symbols a `quiet` fault silences; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown exchange {0:?}; simulated: {simulated}", simulated = EXCHANGES.join(", "))]
    UnknownExchange(String),
}

/// The faults of every simulated exchange.
#[derive(Debug)]
pub(crate) struct Faults {
    /// A watch per exchange: every connection reads the current state without contending for
    /// a lock, and wakes as soon as it changes (a drop must cut connections at once).
    exchanges: Vec<(&'static str, watch::Sender<FaultState>)>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            exchanges: EXCHANGES
                .iter()
                .map(|&name| (name, watch::Sender::new(FaultState::default())))
                .collect(),
        }
    }
}

impl Faults {
    /// Applies `request` to its exchange, or to every exchange when it names none.
    pub(crate) fn inject(&self, request: &FaultRequest) -> Result<(), FaultError> {
        let targets: Vec<&watch::Sender<FaultState>> = match &request.exchange {
            None => self.exchanges.iter().map(|(_, sender)| sender).collect(),
            Some(name) => vec![
                self.sender(name)
                    .ok_or_else(|| FaultError::UnknownExchange(name.clone()))?,
            ],
        };
        let now = Instant::now();
        for sender in targets {
            sender.send_modify(|state| state.apply(request, now));
        }
        tracing::info!(
            exchange = request.exchange.as_deref().unwrap_or("*"),
            kind = ?request.kind,
            duration_ms = request.duration_ms,
            "simulator fault injected"
        );
        Ok(())
    }

    /// Every fault in force, by exchange in [`EXCHANGES`] order.
    pub(crate) fn active(&self) -> Vec<ActiveFault> {
        let now = Instant::now();
        self.exchanges
            .iter()
            .flat_map(|(name, sender)| {
                sender
                    .borrow()
                    .live(now)
                    .map(|fault| fault.describe(name, now))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The faults of `exchange`, to read on every event and to wait on for changes.
    pub(crate) fn watch(&self, exchange: &str) -> Option<watch::Receiver<FaultState>> {
        self.sender(exchange).map(watch::Sender::subscribe)
    }

    /// What a REST request to `exchange` suffers right now.
    pub(crate) fn rest(&self, exchange: &str) -> RestFault {
        let Some(sender) = self.sender(exchange) else {
            return RestFault::default();
        };
        let state = sender.borrow();
        let now = Instant::now();
        RestFault {
            delay: state
                .find(FaultKind::SlowRest, now)
                .map(|fault| fault.delay),
            fail: state.find(FaultKind::FailingRest, now).is_some(),
        }
    }

    fn sender(&self, exchange: &str) -> Option<&watch::Sender<FaultState>> {
        self.exchanges
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(exchange))
            .map(|(_, sender)| sender)
    }
}

/// How a REST answer is spoiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RestFault {
    /// Answer this much later.
    pub delay: Option<Duration>,
    /// Answer 503.
    pub fail: bool,
}

/// One exchange's faults.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    /// Counts `drop` faults; a connection closes once this differs from what it opened with.
    drops: u64,
    /// At most one per kind, the latest request winning; expired ones linger until the next
    /// injection and are skipped when read.
    active: Vec<Fault>,
}

/// What a connection must do differently right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Effects {
    pub drops: u64,
    /// Send nothing and read nothing.
    pub stalled: bool,
    /// When the stall ends by itself; None = when cleared.
    pub stall_until: Option<Instant>,
    pub no_heartbeats: bool,
    pub malformed: bool,
    pub truncated: bool,
    pub unknown_symbols: bool,
}

impl FaultState {
    /// How many `drop` faults have hit the exchange.
    pub(crate) fn drops(&self) -> u64 {
        self.drops
    }

    /// The connection-level effects in force at `now`.
    pub(crate) fn effects(&self, now: Instant) -> Effects {
        let stall = self.find(FaultKind::Stall, now);
        Effects {
            drops: self.drops,
            stalled: stall.is_some(),
            stall_until: stall.and_then(|fault| fault.until),
            no_heartbeats: self.find(FaultKind::StopHeartbeats, now).is_some(),
            malformed: self.find(FaultKind::Malformed, now).is_some(),
            truncated: self.find(FaultKind::Truncated, now).is_some(),
            unknown_symbols: self.find(FaultKind::UnknownSymbols, now).is_some(),
        }
    }

    /// Whether `symbol` (as the client spelled it) is kept from trading at `now`.
    pub(crate) fn silences(&self, symbol: &str, now: Instant) -> bool {
        self.find(FaultKind::Quiet, now).is_some_and(|fault| {
            fault.symbols.is_empty()
                || fault
                    .symbols
                    .iter()
                    .any(|quiet| quiet.eq_ignore_ascii_case(symbol))
        })
    }

    fn apply(&mut self, request: &FaultRequest, now: Instant) {
        self.active.retain(|fault| fault.is_live(now));
        match request.kind {
            FaultKind::Drop => self.drops = self.drops.wrapping_add(1),
            FaultKind::Clear => self.active.clear(),
            kind => {
                self.active.retain(|fault| fault.kind != kind);
                self.active.push(Fault {
                    kind,
                    // Too far to represent is as good as until cleared.
                    until: request
                        .duration_ms
                        .and_then(|ms| now.checked_add(Duration::from_millis(ms))),
                    delay: request
                        .delay_ms
                        .map_or(DEFAULT_REST_DELAY, Duration::from_millis),
                    symbols: request.symbols.clone(),
                });
            }
        }
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &Fault> {
        self.active.iter().filter(move |fault| fault.is_live(now))
    }

    fn find(&self, kind: FaultKind, now: Instant) -> Option<&Fault> {
        self.live(now).find(|fault| fault.kind == kind)
    }
}

/// One fault in force.
#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    /// None = until cleared.
    until: Option<Instant>,
    /// `slow_rest` only.
    delay: Duration,
    /// `quiet` only; empty = every symbol.
    symbols: Vec<String>,
}

impl Fault {
    fn is_live(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now < until)
    }

    fn describe(&self, exchange: &str, now: Instant) -> ActiveFault {
        ActiveFault {
            exchange: exchange.to_owned(),
            kind: self.kind,
            remaining_ms: self.until.map(|until| {
                u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            delay_ms: (self.kind == FaultKind::SlowRest)
                .then(|| u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX)),
            symbols: if self.kind == FaultKind::Quiet {
                self.symbols.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// Spoils a batch's trade frames as `effects` asks: a malformed frame first, and each frame
/// preceded by its first half.
pub(crate) fn spoil(frames: Vec<String>, effects: Effects) -> Vec<String> {
    if !effects.malformed && !effects.truncated {
        return frames;
    }
    let mut spoiled = Vec::with_capacity(frames.len() * 2 + 1);
    if effects.malformed {
        spoiled.push(MALFORMED_FRAME.to_owned());
    }
    for frame in frames {
        if effects.truncated {
            spoiled.push(first_half(&frame).to_owned());
        }
        spoiled.push(frame);
    }
    spoiled
}

/// The first half of `text`'s bytes, backed off to a character boundary.
fn first_half(text: &str) -> &str {
    &text[..text.floor_char_boundary(text.len() / 2)]
}

/// `GET` and `POST` on [`FAULTS_PATH`].
pub(crate) fn router(faults: Arc<Faults>) -> Router {
    Router::new()
        .route(FAULTS_PATH, get(list).post(inject))
        .with_state(faults)
}

/// `GET /_faults` → `{"active":[...]}`.
async fn list(State(faults): State<Arc<Faults>>) -> Response {
    Json(json!({ "active": faults.active() })).into_response()
}

/// `POST /_faults` with a [`FaultRequest`] → `{"active":[...]}`, or 400 `{"error":"..."}`.
async fn inject(
    State(faults): State<Arc<Faults>>,
    request: Result<Json<FaultRequest>, JsonRejection>,
) -> Response {
    let outcome = match request {
        Ok(Json(request)) => faults.inject(&request).map_err(|e| e.to_string()),
        Err(rejection) => Err(rejection.body_text()),
    };
    match outcome {
        Ok(()) => list(State(faults)).await,
        Err(error) => (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: FaultKind) -> FaultRequest {
        FaultRequest {
            exchange: Some("okx".into()),
            kind,
            duration_ms: None,
            delay_ms: None,
            symbols: Vec::new(),
        }
    }

    fn effects(faults: &Faults, exchange: &str) -> Effects {
        let receiver = faults.watch(exchange).expect("a simulated exchange");
        receiver.borrow().effects(Instant::now())
    }

    #[test]
    fn requests_parse_from_snake_case_and_refuse_unknown_fields() {
        let parsed: FaultRequest = serde_json::from_str(
            r#"{"exchange":"okx","kind":"stop_heartbeats","duration_ms":500}"#,
        )
        .expect("valid request");
        assert_eq!(
            parsed,
            FaultRequest {
                duration_ms: Some(500),
                ..request(FaultKind::StopHeartbeats)
            }
        );
        assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"stall","extra":1}"#).is_err());
        assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"explode"}"#).is_err());
    }

    #[test]
    fn a_fault_hits_only_its_exchange_and_clear_lifts_it() {
        let faults = Faults::default();
        faults.inject(&request(FaultKind::Stall)).expect("okx");
        faults.inject(&request(FaultKind::Malformed)).expect("okx");
        assert!(effects(&faults, "okx").stalled && effects(&faults, "okx").malformed);
        assert_eq!(effects(&faults, "kraken"), Effects::default());

        faults.inject(&request(FaultKind::Clear)).expect("okx");
        assert_eq!(effects(&faults, "okx"), Effects::default());
        assert!(faults.active().is_empty());
    }

    #[test]
    fn no_exchange_means_every_exchange() {
        let faults = Faults::default();
        let everywhere = FaultRequest {
            exchange: None,
            ..request(FaultKind::Drop)
        };
        faults.inject(&everywhere).expect("all");
        for name in EXCHANGES {
            assert_eq!(effects(&faults, name).drops, 1, "{name}");
        }
        assert!(faults.active().is_empty(), "drop is one-shot");
    }

    #[test]
    fn unknown_exchanges_are_refused() {
        let faults = Faults::default();
        let binance = FaultRequest {
            exchange: Some("binance".into()),
            ..request(FaultKind::Stall)
        };
        let refused = faults.inject(&binance);
        assert_eq!(refused, Err(FaultError::UnknownExchange("binance".into())));
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("\"binance\""), "{message}");
        for name in EXCHANGES {
            assert!(message.contains(name), "{message} names {name}");
        }
        assert!(faults.active().is_empty());
    }

    #[test]
    fn a_timed_fault_ends_at_its_deadline() {
        let faults = Faults::default();
        let timed = FaultRequest {
            duration_ms: Some(60_000),
            ..request(FaultKind::FailingRest)
        };
        faults.inject(&timed).expect("okx");
        let active = faults.active();
        assert_eq!(active.len(), 1);
        assert!(
            active[0]
                .remaining_ms
                .is_some_and(|ms| ms > 59_000 && ms <= 60_000)
        );
        let receiver = faults.watch("okx").expect("okx");
        let state = receiver.borrow();
        let later = Instant::now() + Duration::from_secs(61);
        assert!(state.find(FaultKind::FailingRest, Instant::now()).is_some());
        assert!(state.find(FaultKind::FailingRest, later).is_none());
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let faults = Faults::default();
        let forever = FaultRequest {
            duration_ms: Some(u64::MAX),
            ..request(FaultKind::Stall)
        };
        faults.inject(&forever).expect("okx");
        let remaining = faults.active()[0].remaining_ms;
        assert!(remaining.is_none_or(|ms| ms > 1 << 50), "{remaining:?}");
        assert!(effects(&faults, "okx").stalled);
    }

    #[test]
    fn quiet_matches_symbols_ignoring_case_and_empty_means_all() {
        let faults = Faults::default();
        let quiet = FaultRequest {
            symbols: vec!["btc-usdt".into()],
            ..request(FaultKind::Quiet)
        };
        faults.inject(&quiet).expect("okx");
        let receiver = faults.watch("okx").expect("okx");
        let now = Instant::now();
        assert!(receiver.borrow().silences("BTC-USDT", now));
        assert!(!receiver.borrow().silences("ETH-USDT", now));

        faults.inject(&request(FaultKind::Quiet)).expect("okx");
        assert!(receiver.borrow().silences("ETH-USDT", now));
    }

    #[test]
    fn rest_faults_report_delay_and_failure() {
        let faults = Faults::default();
        assert_eq!(faults.rest("okx"), RestFault::default());
        faults.inject(&request(FaultKind::SlowRest)).expect("okx");
        let failing = FaultRequest {
            delay_ms: Some(5),
            ..request(FaultKind::FailingRest)
        };
        faults.inject(&failing).expect("okx");
        assert_eq!(
            faults.rest("okx"),
            RestFault {
                delay: Some(DEFAULT_REST_DELAY),
                fail: true
            }
        );
        assert_eq!(faults.active()[0].delay_ms, Some(3_000));
        assert_eq!(faults.rest("gemini"), RestFault::default());
    }

    #[test]
    fn spoiled_batches_lead_with_garbage_and_half_frames() {
        let frames = vec!["{\"a\":1}".to_owned(), "{\"bb\":22}".to_owned()];
        let both = Effects {
            malformed: true,
            truncated: true,
            ..Effects::default()
        };
        let spoiled = spoil(frames.clone(), both);
        assert_eq!(
            spoiled,
            [MALFORMED_FRAME, "{\"a", "{\"a\":1}", "{\"bb", "{\"bb\":22}"]
        );
        assert!(serde_json::from_str::<serde_json::Value>(MALFORMED_FRAME).is_err());
        assert_eq!(spoil(frames.clone(), Effects::default()), frames);
        assert_eq!(first_half("ab€"), "ab");
    }
}
