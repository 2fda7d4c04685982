//! Kraken spot WebSocket v2: a `status` frame on connect, one ack per symbol, a `snapshot` per
//! symbol, `update` frames with price and qty as JSON numbers, `{"channel":"heartbeat"}` every
//! second once subscribed, and `ping` → `pong`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Exchange, by_symbol, query_symbol};
use crate::SimulatorOptions;
use crate::market::{Pair, Ticker, Trade};
use crate::session::{Added, Conn};
use crate::wire;

#[derive(Debug, Default)]
pub(crate) struct Kraken;

#[derive(Deserialize)]
struct Request {
    method: String,
    params: Option<Params>,
    req_id: Option<u64>,
}

#[derive(Deserialize)]
struct Params {
    channel: String,
    symbol: Vec<String>,
    snapshot: Option<bool>,
}

/// Fields every reply to a request carries.
struct Reply {
    method: String,
    req_id: Option<u64>,
    time_in: OffsetDateTime,
}

impl Reply {
    fn frame(&self, mut body: Value) -> String {
        body["method"] = json!(self.method);
        if let Some(req_id) = self.req_id {
            body["req_id"] = json!(req_id);
        }
        body["time_in"] = json!(wire::rfc3339_micros(self.time_in));
        body["time_out"] = json!(wire::rfc3339_micros(OffsetDateTime::now_utc()));
        body.to_string()
    }

    fn error(&self, message: &str) -> String {
        self.frame(json!({"error": message, "success": false}))
    }
}

impl Kraken {
    fn subscribe(reply: &Reply, params: Option<Params>, conn: &mut Conn) -> Vec<String> {
        let Some(params) = params else {
            return vec![reply.error("EGeneral:Invalid arguments: params missing")];
        };
        if params.channel != "trade" {
            return vec![reply.error(&format!("Channel {} not supported", params.channel))];
        }
        if params.symbol.is_empty() {
            return vec![reply.error("EGeneral:Invalid arguments: symbol missing")];
        }
        let snapshot = params.snapshot.unwrap_or(true);
        let mut frames = Vec::new();
        for symbol in &params.symbol {
            let added = conn.subscribe(symbol);
            if added == Added::Invalid {
                frames.push(reply.error(&format!("Currency pair not supported {symbol}")));
                continue;
            }
            frames.push(reply.frame(json!({
                "result": {"channel": "trade", "snapshot": snapshot, "symbol": symbol},
                "success": true,
            })));
            if snapshot && added == Added::New {
                let mut trades = conn.snapshot(symbol);
                trades.reverse();
                frames.push(trade_frame("snapshot", trades.iter()));
            }
        }
        frames
    }
}

impl Exchange for Kraken {
    const NAME: &'static str = "kraken";
    const UNLISTED_SYMBOL: &'static str = "ZZZ/USD";

    fn is_ping(text: &str) -> bool {
        serde_json::from_str::<Request>(text).is_ok_and(|r| r.method == "ping")
    }

    fn keepalive_period(_options: &SimulatorOptions) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn greeting(&mut self) -> Vec<String> {
        let status = json!({
            "channel": "status",
            "data": [{
                "api_version": "v2",
                "connection_id": rand::random::<u64>(),
                "system": "online",
                "version": "2.0.10",
            }],
            "type": "update",
        });
        vec![status.to_string()]
    }

    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String> {
        let time_in = OffsetDateTime::now_utc();
        let request = match serde_json::from_str::<Request>(text) {
            Ok(request) => request,
            Err(e) => {
                let reply = Reply {
                    method: String::new(),
                    req_id: None,
                    time_in,
                };
                return vec![reply.error(&format!("EGeneral:Invalid arguments: {e}"))];
            }
        };
        let mut reply = Reply {
            method: request.method,
            req_id: request.req_id,
            time_in,
        };
        match reply.method.as_str() {
            "subscribe" => Kraken::subscribe(&reply, request.params, conn),
            "ping" => {
                reply.method = "pong".into();
                vec![reply.frame(json!({}))]
            }
            other => vec![reply.error(&format!("Method {other} not supported"))],
        }
    }

    fn trades(&mut self, trades: &[Trade]) -> Vec<String> {
        by_symbol(trades)
            .into_iter()
            .map(|(_, trades)| trade_frame("update", trades.into_iter()))
            .collect()
    }

    fn keepalive(&mut self, conn: &mut Conn) -> Option<String> {
        conn.has_symbols()
            .then(|| json!({"channel": "heartbeat"}).to_string())
    }

    fn rest_symbols(path: &str, query: &HashMap<String, String>) -> Option<Vec<String>> {
        let pairs = query_symbol(path, "0/public/Ticker", query, "pair")?;
        Some(pairs.split(',').map(str::to_owned).collect())
    }

    fn rest_body(tickers: &[Ticker]) -> Value {
        let result: serde_json::Map<String, Value> = tickers
            .iter()
            .map(|ticker| {
                let last = &ticker.last;
                let trades = last.id % 10_000;
                let row = json!({
                    "a": [ticker.ask, "1", "1.000"],
                    "b": [ticker.bid, "1", "1.000"],
                    "c": [last.price, last.size],
                    "v": [ticker.volume, ticker.volume],
                    "p": [last.price, last.price],
                    "t": [trades, trades],
                    "l": [ticker.low, ticker.low],
                    "h": [ticker.high, ticker.high],
                    "o": ticker.open,
                });
                (legacy_pair_name(&Pair::parse(&last.symbol)), row)
            })
            .collect();
        json!({"error": [], "result": result})
    }
}

fn trade_frame<'t>(kind: &str, trades: impl Iterator<Item = &'t Trade>) -> String {
    let data: Vec<Value> = trades
        .map(|trade| {
            json!({
                "symbol": trade.symbol,
                "side": trade.side.lower(),
                "price": wire::number(&trade.price),
                "qty": wire::number(&trade.size),
                "ord_type": if trade.id % 3 == 0 { "market" } else { "limit" },
                "trade_id": trade.id,
                "timestamp": wire::rfc3339_micros(trade.time),
            })
        })
        .collect();
    json!({"channel": "trade", "type": kind, "data": data}).to_string()
}

/// REST result keys use Kraken's legacy names: `XXBTZUSD`, `XETHZUSD`, `XDGUSD`, `SOLUSD`.
fn legacy_pair_name(pair: &Pair) -> String {
    const LEGACY: [&str; 8] = ["XBT", "ETH", "LTC", "XRP", "ETC", "XLM", "XMR", "ZEC"];
    let asset = match pair.asset.as_str() {
        "BTC" => "XBT",
        "DOGE" => "XDG",
        other => other,
    };
    let fiat = matches!(pair.quote.as_str(), "USD" | "EUR" | "GBP" | "CAD" | "JPY");
    if fiat && LEGACY.contains(&asset) {
        format!("X{asset}Z{}", pair.quote)
    } else {
        format!("{asset}{}", pair.quote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_keys_use_legacy_names_where_kraken_does() {
        let names: Vec<String> = [
            "BTC/USD", "XBTUSD", "ETH/USD", "DOGE/USD", "SOL/USD", "ETH/USDT",
        ]
        .iter()
        .map(|symbol| legacy_pair_name(&Pair::parse(symbol)))
        .collect();
        assert_eq!(
            names,
            [
                "XXBTZUSD", "XXBTZUSD", "XETHZUSD", "XDGUSD", "SOLUSD", "ETHUSDT"
            ]
        );
    }
}
