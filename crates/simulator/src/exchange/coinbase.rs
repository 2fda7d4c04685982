//! Coinbase Advanced Trade: one subscribe message per channel (`market_trades`, `heartbeats`),
//! a `subscriptions` ack listing everything, a `snapshot` event newest first, then `update`
//! events with several trades; `sequence_num` counts every message on the connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::Exchange;
use crate::SimulatorOptions;
use crate::market::{Ticker, Trade};
use crate::session::{Added, Conn};
use crate::wire;

const TRADES: &str = "market_trades";
const HEARTBEATS: &str = "heartbeats";

#[derive(Debug)]
pub(crate) struct Coinbase {
    /// Shared by every channel on the connection.
    sequence: u64,
    heartbeats: bool,
    heartbeat_counter: u64,
    /// For the `m=+` monotonic part of `current_time`.
    opened: Instant,
}

impl Default for Coinbase {
    fn default() -> Self {
        Coinbase {
            sequence: 0,
            heartbeats: false,
            heartbeat_counter: 0,
            opened: Instant::now(),
        }
    }
}

#[derive(Deserialize)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    product_ids: Vec<String>,
    channel: String,
}

impl Coinbase {
    fn message(&mut self, channel: &str, events: Value) -> String {
        let frame = json!({
            "channel": channel,
            "client_id": "",
            "timestamp": wire::rfc3339(OffsetDateTime::now_utc()),
            "sequence_num": self.sequence,
            "events": events,
        });
        self.sequence += 1;
        frame.to_string()
    }

    fn subscriptions(&mut self, conn: &Conn) -> String {
        let mut channels = serde_json::Map::new();
        if conn.has_symbols() {
            channels.insert(TRADES.into(), json!(conn.symbols()));
        }
        if self.heartbeats {
            channels.insert(HEARTBEATS.into(), json!([HEARTBEATS]));
        }
        self.message("subscriptions", json!([{ "subscriptions": channels }]))
    }

    fn subscribe(&mut self, request: Request, conn: &mut Conn) -> Vec<String> {
        if request.kind != "subscribe" {
            return vec![error(&format!(
                "unsupported message type {:?}",
                request.kind
            ))];
        }
        match request.channel.as_str() {
            TRADES => {
                if request.product_ids.is_empty() {
                    return vec![error("market_trades needs product_ids")];
                }
                let mut snapshot = Vec::new();
                for product in &request.product_ids {
                    match conn.subscribe(product) {
                        Added::New => snapshot.extend(conn.snapshot(product)),
                        Added::Existing => {}
                        Added::Invalid => {
                            return vec![error(&format!("invalid product_id {product:?}"))];
                        }
                    }
                }
                snapshot.sort_by_key(|trade| std::cmp::Reverse(trade.time));
                let mut frames = vec![self.subscriptions(conn)];
                if !snapshot.is_empty() {
                    let trades: Vec<Value> = snapshot.iter().map(trade).collect();
                    frames.push(
                        self.message(TRADES, json!([{"type": "snapshot", "trades": trades}])),
                    );
                }
                frames
            }
            HEARTBEATS => {
                self.heartbeats = true;
                vec![self.subscriptions(conn)]
            }
            other => vec![error(&format!("unsupported channel {other:?}"))],
        }
    }
}

impl Exchange for Coinbase {
    const NAME: &'static str = "coinbase";
    const UNLISTED_SYMBOL: &'static str = "ZZZ-USD";

    fn keepalive_period(_options: &SimulatorOptions) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String> {
        match serde_json::from_str::<Request>(text) {
            Ok(request) => self.subscribe(request, conn),
            Err(e) => vec![error(&format!("malformed request: {e}"))],
        }
    }

    fn trades(&mut self, trades: &[Trade]) -> Vec<String> {
        let trades: Vec<Value> = trades.iter().map(trade).collect();
        vec![self.message(TRADES, json!([{"type": "update", "trades": trades}]))]
    }

    fn keepalive(&mut self, _conn: &mut Conn) -> Option<String> {
        if !self.heartbeats {
            return None;
        }
        self.heartbeat_counter += 1;
        let uptime = self.opened.elapsed().as_secs_f64();
        let format = format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:9] +0000 UTC"
        );
        let now = OffsetDateTime::now_utc()
            .format(&format)
            .unwrap_or_default();
        let events = json!([{
            "current_time": format!("{now} m=+{uptime:.9}"),
            "heartbeat_counter": self.heartbeat_counter,
        }]);
        Some(self.message(HEARTBEATS, events))
    }

    fn rest_symbols(path: &str, _query: &HashMap<String, String>) -> Option<Vec<String>> {
        let product = path
            .strip_prefix("api/v3/brokerage/market/products/")?
            .strip_suffix("/ticker")?;
        (!product.contains('/')).then(|| vec![product.to_owned()])
    }

    fn rest_body(tickers: &[Ticker]) -> Value {
        let trades: Vec<Value> = tickers
            .iter()
            .map(|ticker| {
                let mut row = trade(&ticker.last);
                row["bid"] = json!("");
                row["ask"] = json!("");
                row["exchange"] = json!("");
                row
            })
            .collect();
        let best = tickers.first();
        json!({
            "trades": trades,
            "best_bid": best.map_or("", |t| t.bid.as_str()),
            "best_ask": best.map_or("", |t| t.ask.as_str()),
        })
    }
}

fn trade(trade: &Trade) -> Value {
    json!({
        "product_id": trade.symbol,
        "trade_id": trade.id.to_string(),
        "price": trade.price,
        "size": trade.size,
        "time": wire::rfc3339(trade.time),
        "side": trade.side.upper(),
    })
}

fn error(message: &str) -> String {
    json!({"type": "error", "message": message}).to_string()
}
