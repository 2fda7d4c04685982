//! One WebSocket connection: the loop every exchange shares. It feeds client frames to the
//! [`Exchange`], sends a trade batch every `trade_interval`, runs the exchange's keep-alive,
//! closes the connection when a server heartbeat goes unanswered, and plays the exchange's
//! injected faults ([`crate::fault`]): it checks them before every frame it sends and wakes
//! as soon as they change.

use std::future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{self, Instant, Interval, MissedTickBehavior};

use crate::exchange::Exchange;
use crate::fault::{self, FaultState};
use crate::market::{self, Market, Trade};
use crate::{Shared, SimulatorOptions};

/// Longest a client may take to answer a server heartbeat (Crypto.com: 5 s). When heartbeats
/// come more often than that, each must be answered before the next one is due.
const HEARTBEAT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Every subscribed symbol gets a live trade at least once per this period.
const ROUND_ROBIN_PERIOD: Duration = Duration::from_millis(800);

/// At most this many random extra trades per batch, on top of the round robin.
const MAX_EXTRA_TRADES: usize = 2;

/// What a subscribe request did for one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Newly subscribed: send its snapshot.
    New,
    /// Already subscribed on this connection.
    Existing,
    /// Not a plausible symbol: answer with the exchange's error.
    Invalid,
}

/// Per-connection state every exchange uses: subscribed symbols, the round-robin cursor and
/// the heartbeat waiting for a reply.
#[derive(Debug)]
pub(crate) struct Conn {
    exchange: &'static str,
    market: Arc<Market>,
    trade_interval: Duration,
    heartbeat_timeout: Duration,
    /// Symbols receiving trades, in subscription order, spelled as the client spelled them.
    symbols: Vec<String>,
    cursor: usize,
    /// Heartbeat id waiting for its reply, and when the connection closes without one.
    heartbeat: Option<(u64, Instant)>,
}

impl Conn {
    pub(crate) fn new(
        exchange: &'static str,
        market: Arc<Market>,
        options: &SimulatorOptions,
    ) -> Conn {
        Conn {
            exchange,
            market,
            trade_interval: options.trade_interval,
            heartbeat_timeout: HEARTBEAT_REPLY_TIMEOUT.min(options.cryptocom_heartbeat),
            symbols: Vec::new(),
            cursor: 0,
            heartbeat: None,
        }
    }

    /// Starts live trades for `symbol`.
    pub(crate) fn subscribe(&mut self, symbol: &str) -> Added {
        if !market::is_plausible_symbol(symbol) {
            Added::Invalid
        } else if self.symbols.iter().any(|s| s == symbol) {
            Added::Existing
        } else {
            self.symbols.push(symbol.to_owned());
            Added::New
        }
    }

    /// Symbols receiving trades, in subscription order.
    pub(crate) fn symbols(&self) -> &[String] {
        &self.symbols
    }

    pub(crate) fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// Recent trades on `symbol`, newest first.
    pub(crate) fn snapshot(&self, symbol: &str) -> Vec<Trade> {
        self.market.snapshot(self.exchange, symbol)
    }

    /// A heartbeat with this id went out; the client must echo it in time.
    pub(crate) fn expect_heartbeat(&mut self, id: u64) {
        if self.heartbeat.is_none() {
            self.heartbeat = Some((id, Instant::now() + self.heartbeat_timeout));
        }
    }

    /// The client answered heartbeat `id`; a wrong id changes nothing.
    pub(crate) fn heartbeat_answered(&mut self, id: u64) {
        if self.heartbeat.is_some_and(|(expected, _)| expected == id) {
            self.heartbeat = None;
        }
    }

    /// Forgets the heartbeat waiting for a reply.
    fn forget_heartbeat(&mut self) {
        self.heartbeat = None;
    }

    /// The next batch: a round robin sized so every symbol trades within
    /// [`ROUND_ROBIN_PERIOD`], plus a few random extras; symbols `quiet` picks are left out
    /// before they trade.
    fn next_batch(&mut self, quiet: impl Fn(&str) -> bool) -> Vec<Trade> {
        let count = self.symbols.len();
        if count == 0 {
            return Vec::new();
        }
        let per_batch = (count as u128 * self.trade_interval.as_nanos())
            .div_ceil(ROUND_ROBIN_PERIOD.as_nanos())
            .clamp(1, count as u128) as usize;
        let mut rng = rand::rng();
        let extra = rng.random_range(0..=MAX_EXTRA_TRADES);
        let mut picks = Vec::with_capacity(per_batch + extra);
        for _ in 0..per_batch {
            picks.push(self.cursor);
            self.cursor = (self.cursor + 1) % count;
        }
        picks.extend((0..extra).map(|_| rng.random_range(0..count)));
        picks
            .into_iter()
            .map(|index| &self.symbols[index])
            .filter(|symbol| !quiet(symbol))
            .map(|symbol| self.market.trade(self.exchange, symbol))
            .collect()
    }
}

/// Serves one upgraded connection until the client leaves, a heartbeat goes unanswered, a
/// `drop` fault cuts it or the simulator is cancelled.
pub(crate) async fn run<E: Exchange>(mut socket: WebSocket, shared: Arc<Shared>) {
    let Some(mut faults) = shared.faults.watch(E::NAME) else {
        tracing::warn!(
            exchange = E::NAME,
            "no fault state for this exchange, closing"
        );
        return;
    };
    let options = shared.options;
    let mut conn = Conn::new(E::NAME, Arc::clone(&shared.market), &options);
    let mut exchange = E::default();
    let mut trades = time::interval(options.trade_interval);
    trades.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut keepalive = E::keepalive_period(&options).map(|period| {
        let mut interval = time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    // Drops injected before this connection opened are not its concern.
    let drops = faults.borrow_and_update().drops();
    tracing::debug!(exchange = E::NAME, "simulator connection opened");

    let mut frames = exchange.greeting();
    let close = loop {
        let effects = faults.borrow_and_update().effects(Instant::now());
        if effects.drops != drops {
            tracing::debug!(exchange = E::NAME, "drop fault, cutting the connection");
            // No close frame: the client sees the connection vanish, as on a network cut.
            return;
        }
        if effects.no_heartbeats || effects.stalled {
            // Nobody waits for an answer to a heartbeat that was, or will be, held back.
            conn.forget_heartbeat();
        }
        if effects.stalled {
            // Neither write nor read: reading would let the WebSocket layer answer protocol
            // pings, and a stalled server answers nothing. Client frames wait in the socket,
            // frames already due (a greeting, an ack) go out late.
            tokio::select! {
                () = shared.cancel.cancelled() => break stopping(),
                () = changed(&mut faults) => {}
                () = deadline(effects.stall_until) => {}
            }
            continue;
        }
        for frame in frames.drain(..) {
            if socket.send(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
        frames = tokio::select! {
            () = shared.cancel.cancelled() => break stopping(),
            // Checked at the top of the loop.
            () = changed(&mut faults) => Vec::new(),
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    on_text(&mut exchange, &mut conn, &faults, text.as_str())
                }
                Some(Ok(Message::Binary(bytes))) => {
                    on_text(&mut exchange, &mut conn, &faults, &String::from_utf8_lossy(&bytes))
                }
                // axum answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Vec::new(),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
            _ = trades.tick() => trade_frames(&mut exchange, &mut conn, &faults.borrow()),
            () = tick(keepalive.as_mut()) => {
                if faults.borrow().effects(Instant::now()).no_heartbeats {
                    Vec::new()
                } else {
                    exchange.keepalive(&mut conn).into_iter().collect()
                }
            }
            () = deadline(conn.heartbeat.map(|(_, at)| at)) => {
                if faults.borrow().effects(Instant::now()).no_heartbeats {
                    conn.forget_heartbeat();
                    Vec::new()
                } else {
                    tracing::debug!(exchange = E::NAME, "heartbeat not answered, closing");
                    break close_frame(close_code::NORMAL, "heartbeat not answered");
                }
            }
        };
    };
    // The client may already be gone; there is nobody left to tell.
    let _ = socket.send(Message::Close(Some(close))).await;
}

/// One client frame; application pings go unanswered while heartbeats are stopped.
fn on_text<E: Exchange>(
    exchange: &mut E,
    conn: &mut Conn,
    faults: &watch::Receiver<FaultState>,
    text: &str,
) -> Vec<String> {
    // The fault check first: it is cheap, and some exchanges parse the frame to spot a ping.
    if faults.borrow().effects(Instant::now()).no_heartbeats && E::is_ping(text) {
        return Vec::new();
    }
    exchange.on_text(text, conn)
}

/// The frames of the next trade batch, as the exchange's faults shape them: quiet symbols
/// left out, a trade on an unlisted symbol added, frames spoiled.
fn trade_frames<E: Exchange>(
    exchange: &mut E,
    conn: &mut Conn,
    faults: &FaultState,
) -> Vec<String> {
    let now = Instant::now();
    let effects = faults.effects(now);
    let mut batch = conn.next_batch(|symbol| faults.silences(symbol, now));
    if effects.unknown_symbols && conn.has_symbols() {
        batch.push(conn.market.trade(E::NAME, E::UNLISTED_SYMBOL));
    }
    if batch.is_empty() {
        return Vec::new();
    }
    fault::spoil(exchange.trades(&batch), effects)
}

/// Resolves when the faults change; never if they no longer can.
async fn changed(faults: &mut watch::Receiver<FaultState>) {
    if faults.changed().await.is_err() {
        future::pending::<()>().await;
    }
}

fn stopping() -> CloseFrame {
    close_frame(close_code::AWAY, "simulator stopping")
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => future::pending().await,
    }
}

async fn deadline(at: Option<Instant>) {
    match at {
        Some(at) => time::sleep_until(at).await,
        None => future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn conn(trade_interval: Duration) -> Conn {
        let options = SimulatorOptions {
            trade_interval,
            ..SimulatorOptions::default()
        };
        Conn::new("gateio", Arc::new(Market::default()), &options)
    }

    #[test]
    fn every_symbol_trades_within_the_round_robin_period() {
        let mut conn = conn(Duration::from_millis(100));
        let symbols: Vec<String> = (0..100).map(|i| format!("A{i}_USDT")).collect();
        for symbol in &symbols {
            assert_eq!(conn.subscribe(symbol), Added::New);
        }
        let batches = (ROUND_ROBIN_PERIOD.as_millis() / 100) as usize;
        let seen: HashSet<String> = (0..batches)
            .flat_map(|_| conn.next_batch(|_| false))
            .map(|trade| trade.symbol)
            .collect();
        assert_eq!(seen.len(), symbols.len());
    }

    #[test]
    fn a_single_symbol_gets_one_to_three_trades_per_batch() {
        let mut conn = conn(Duration::from_millis(100));
        assert!(conn.next_batch(|_| false).is_empty());
        conn.subscribe("BTC_USDT");
        for _ in 0..50 {
            let size = conn.next_batch(|_| false).len();
            assert!((1..=1 + MAX_EXTRA_TRADES).contains(&size), "{size}");
        }
    }

    #[test]
    fn repeated_and_implausible_symbols_are_not_added_twice() {
        let mut conn = conn(Duration::from_millis(100));
        assert_eq!(conn.subscribe("BTC_USDT"), Added::New);
        assert_eq!(conn.subscribe("BTC_USDT"), Added::Existing);
        assert_eq!(conn.subscribe(""), Added::Invalid);
        assert_eq!(conn.symbols(), ["BTC_USDT"]);
    }

    #[test]
    fn only_the_expected_heartbeat_id_counts_as_an_answer() {
        let mut conn = conn(Duration::from_millis(100));
        conn.expect_heartbeat(7);
        conn.heartbeat_answered(8);
        assert!(conn.heartbeat.is_some());
        conn.heartbeat_answered(7);
        assert!(conn.heartbeat.is_none());
    }
}
