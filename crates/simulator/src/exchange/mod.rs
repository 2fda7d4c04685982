//! The six simulated exchanges. Each module holds only its wire format behind [`Exchange`]; the
//! connection loop ([`crate::session`]), prices and trade ids ([`crate::market`]) are shared.

mod coinbase;
mod cryptocom;
mod gateio;
mod gemini;
mod kraken;
mod okx;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

pub(crate) use coinbase::Coinbase;
pub(crate) use cryptocom::CryptoCom;
pub(crate) use gateio::GateIo;
pub(crate) use gemini::Gemini;
pub(crate) use kraken::Kraken;
pub(crate) use okx::Okx;

use crate::SimulatorOptions;
use crate::market::{Ticker, Trade};
use crate::session::Conn;

/// One exchange's wire protocol. A value lives as long as one WebSocket connection and holds
/// whatever that exchange tracks per connection (sequence numbers, channel lists).
pub(crate) trait Exchange: Default + Send + 'static {
    /// Lowercase name: the first path segment and the `name` of its definition.
    const NAME: &'static str;

    /// A symbol in this exchange's spelling that no real listing has: the `unknown_symbols`
    /// fault sends trades on it that nobody subscribed to.
    const UNLISTED_SYMBOL: &'static str;

    /// How often [`Exchange::keepalive`] runs, if the exchange sends keep-alives.
    fn keepalive_period(_options: &SimulatorOptions) -> Option<Duration> {
        None
    }

    /// Frames sent as soon as the connection opens.
    fn greeting(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Handles one client frame (subscribe, ping, heartbeat reply, garbage) and returns the
    /// frames to send back: acks, snapshots, pongs or the exchange's error frame.
    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String>;

    /// Whether a client frame is an application-level ping, which [`Exchange::on_text`]
    /// answers with a pong (the `stop_heartbeats` fault leaves those unanswered).
    fn is_ping(_text: &str) -> bool {
        false
    }

    /// Writes a batch of live trades the way the exchange batches them.
    fn trades(&mut self, trades: &[Trade]) -> Vec<String>;

    /// The keep-alive frame due now, if any.
    fn keepalive(&mut self, _conn: &mut Conn) -> Option<String> {
        None
    }

    /// The symbols a REST ticker request names, or `None` if the path is not the ticker.
    /// `path` is everything after the exchange segment, without the leading slash.
    fn rest_symbols(path: &str, query: &HashMap<String, String>) -> Option<Vec<String>>;

    /// The REST ticker body for those symbols.
    fn rest_body(tickers: &[Ticker]) -> Value;
}

/// The query parameter `key` of a request to the ticker endpoint `endpoint`; `None` for
/// another path or without that parameter.
fn query_symbol<'q>(
    path: &str,
    endpoint: &str,
    query: &'q HashMap<String, String>,
    key: &str,
) -> Option<&'q str> {
    if path != endpoint {
        return None;
    }
    query.get(key).map(String::as_str)
}

/// [`Exchange::rest_symbols`] of a ticker endpoint whose query parameter `key` names one
/// symbol.
fn single_query_symbol(
    path: &str,
    endpoint: &str,
    query: &HashMap<String, String>,
    key: &str,
) -> Option<Vec<String>> {
    query_symbol(path, endpoint, query, key).map(|symbol| vec![symbol.to_owned()])
}

/// Trades grouped by symbol, groups in order of first appearance.
fn by_symbol(trades: &[Trade]) -> Vec<(&str, Vec<&Trade>)> {
    let mut groups: Vec<(&str, Vec<&Trade>)> = Vec::new();
    for trade in trades {
        match groups
            .iter_mut()
            .find(|(symbol, _)| *symbol == trade.symbol)
        {
            Some((_, group)) => group.push(trade),
            None => groups.push((&trade.symbol, vec![trade])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::market::Market;

    fn answers<E: Exchange>(text: &str) -> Vec<Value> {
        let mut conn = Conn::new(
            E::NAME,
            Arc::new(Market::default()),
            &SimulatorOptions::default(),
        );
        let mut exchange = E::default();
        let frames = exchange.on_text(text, &mut conn);
        assert!(!conn.has_symbols(), "{} subscribed from {text:?}", E::NAME);
        frames
            .iter()
            .map(|frame| serde_json::from_str(frame).expect("frames are JSON"))
            .collect()
    }

    fn assert_errors<E: Exchange>(is_error: impl Fn(&Value) -> bool) {
        let garbage = [
            "not json",
            "{}",
            "[1,2]",
            "{\"method\":\"subscribe\",\"params\":{\"channels\":[\"trade.\"]},\"id\":1}",
            "{\"op\":\"subscribe\",\"args\":[{\"channel\":\"trades\",\"instId\":\"BTC USDT\"}]}",
            "{\"type\":\"subscribe\",\"product_ids\":[\"\"],\"channel\":\"market_trades\"}",
            "{\"time\":1,\"channel\":\"spot.trades\",\"event\":\"subscribe\",\"payload\":[7]}",
            "{\"method\":\"subscribe\",\"params\":{\"channel\":\"trade\",\"symbol\":[\"\"]}}",
            "{\"id\":1,\"method\":\"subscribe\",\"params\":[\"btcusd@depth\"]}",
        ];
        for text in garbage {
            let frames = answers::<E>(text);
            assert!(!frames.is_empty(), "{} ignored {text:?}", E::NAME);
            assert!(
                frames.iter().all(&is_error),
                "{} answered {text:?} with {frames:?}",
                E::NAME
            );
        }
    }

    #[test]
    fn coinbase_answers_malformed_requests_with_error_frames() {
        assert_errors::<Coinbase>(|frame| frame["type"] == "error" && frame["message"].is_string());
    }

    #[test]
    fn gemini_answers_malformed_requests_with_error_frames() {
        assert_errors::<Gemini>(|frame| frame["status"] == 400 && frame["error"]["code"].is_i64());
    }

    #[test]
    fn kraken_answers_malformed_requests_with_error_frames() {
        assert_errors::<Kraken>(|frame| frame["success"] == false && frame["error"].is_string());
    }

    #[test]
    fn gateio_answers_malformed_requests_with_error_frames() {
        assert_errors::<GateIo>(|frame| {
            frame["error"]["code"].is_u64() && frame["result"].is_null()
        });
    }

    #[test]
    fn cryptocom_answers_malformed_requests_with_error_frames() {
        assert_errors::<CryptoCom>(|frame| {
            frame["code"].as_u64().is_some_and(|code| code != 0) && frame["message"].is_string()
        });
    }

    #[test]
    fn okx_answers_malformed_requests_with_error_frames() {
        assert_errors::<Okx>(|frame| frame["event"] == "error" && frame["code"].is_string());
    }

    #[test]
    fn trades_are_grouped_by_symbol_in_order_of_appearance() {
        let market = Market::default();
        let trades: Vec<Trade> = ["ETH-USD", "BTC-USD", "ETH-USD"]
            .iter()
            .map(|symbol| market.trade("okx", symbol))
            .collect();
        let groups = by_symbol(&trades);
        let shape: Vec<(&str, usize)> = groups.iter().map(|(s, g)| (*s, g.len())).collect();
        assert_eq!(shape, [("ETH-USD", 2), ("BTC-USD", 1)]);
    }
}
