//! Crypto.com Exchange API v1 market data: no separate ack; the first `subscribe` push per
//! channel echoes the request id and carries recent trades, later pushes carry `"id":-1`.
//! `public/heartbeat` goes out every `cryptocom_heartbeat` and must be echoed by
//! `public/respond-heartbeat` (the session closes the connection otherwise).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Exchange, by_symbol, single_query_symbol};
use crate::SimulatorOptions;
use crate::market::{Ticker, Trade};
use crate::session::{Added, Conn};
use crate::wire;

/// Crypto.com's `BAD_REQUEST`.
const BAD_REQUEST: u64 = 10004;
/// Id of every push that answers no request.
const PUSH_ID: i64 = -1;

#[derive(Debug, Default)]
pub(crate) struct CryptoCom {
    /// Last heartbeat id sent; ids are unix ms, kept increasing.
    last_heartbeat: u64,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    id: Value,
    method: String,
    params: Option<Params>,
}

#[derive(Deserialize)]
struct Params {
    channels: Vec<String>,
}

impl CryptoCom {
    fn subscribe(id: &Value, params: Option<Params>, conn: &mut Conn) -> Vec<String> {
        let channels = params.map(|p| p.channels).unwrap_or_default();
        if channels.is_empty() {
            return vec![error(
                id,
                "subscribe",
                "params.channels must name a channel",
            )];
        }
        let mut frames = Vec::new();
        for channel in &channels {
            let instrument = channel.strip_prefix("trade.").unwrap_or_default();
            if conn.subscribe(instrument) == Added::Invalid {
                frames.push(error(
                    id,
                    "subscribe",
                    &format!("invalid channel {channel:?}"),
                ));
                continue;
            }
            // Recent trades replayed with every (re)subscription; this push is the only ack.
            frames.push(push(id, instrument, conn.snapshot(instrument).iter()));
        }
        frames
    }
}

impl Exchange for CryptoCom {
    const NAME: &'static str = "cryptocom";
    const UNLISTED_SYMBOL: &'static str = "ZZZ_USD";

    fn keepalive_period(options: &SimulatorOptions) -> Option<Duration> {
        Some(options.cryptocom_heartbeat)
    }

    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String> {
        let request = match serde_json::from_str::<Request>(text) {
            Ok(request) => request,
            Err(e) => {
                return vec![error(
                    &json!(PUSH_ID),
                    "",
                    &format!("malformed request: {e}"),
                )];
            }
        };
        match request.method.as_str() {
            "subscribe" => CryptoCom::subscribe(&request.id, request.params, conn),
            "public/respond-heartbeat" => match request.id.as_u64() {
                Some(id) => {
                    conn.heartbeat_answered(id);
                    Vec::new()
                }
                None => vec![error(
                    &request.id,
                    &request.method,
                    "id must be the heartbeat id",
                )],
            },
            other => vec![error(&request.id, other, "unknown method")],
        }
    }

    fn trades(&mut self, trades: &[Trade]) -> Vec<String> {
        by_symbol(trades)
            .into_iter()
            .map(|(instrument, trades)| push(&json!(PUSH_ID), instrument, trades.into_iter().rev()))
            .collect()
    }

    fn keepalive(&mut self, conn: &mut Conn) -> Option<String> {
        let now = u64::try_from(wire::unix_ms(OffsetDateTime::now_utc())).unwrap_or(0);
        self.last_heartbeat = now.max(self.last_heartbeat + 1);
        conn.expect_heartbeat(self.last_heartbeat);
        let frame = json!({"id": self.last_heartbeat, "method": "public/heartbeat", "code": 0});
        Some(frame.to_string())
    }

    fn rest_symbols(path: &str, query: &HashMap<String, String>) -> Option<Vec<String>> {
        single_query_symbol(
            path,
            "exchange/v1/public/get-tickers",
            query,
            "instrument_name",
        )
    }

    fn rest_body(tickers: &[Ticker]) -> Value {
        let data: Vec<Value> = tickers
            .iter()
            .map(|ticker| {
                json!({
                    "h": ticker.high,
                    "l": ticker.low,
                    "a": ticker.last.price,
                    "i": ticker.last.symbol,
                    "v": ticker.volume,
                    "vv": ticker.quote_volume,
                    "oi": "0",
                    "c": ticker.change_ratio,
                    "b": ticker.bid,
                    "k": ticker.ask,
                    "t": wire::unix_ms(ticker.last.time),
                })
            })
            .collect();
        json!({"id": PUSH_ID, "method": "public/get-tickers", "code": 0, "result": {"data": data}})
    }
}

/// A `trade.{instrument}` push; `trades` newest first.
fn push<'t>(id: &Value, instrument: &str, trades: impl Iterator<Item = &'t Trade>) -> String {
    let data: Vec<Value> = trades
        .map(|trade| {
            json!({
                "d": trade.id.to_string(),
                "t": wire::unix_ms(trade.time),
                "p": trade.price,
                "q": trade.size,
                "s": trade.side.upper(),
                "i": trade.symbol,
                "m": trade.id.wrapping_mul(7).to_string(),
            })
        })
        .collect();
    json!({
        "id": id,
        "method": "subscribe",
        "code": 0,
        "result": {
            "instrument_name": instrument,
            "subscription": format!("trade.{instrument}"),
            "channel": "trade",
            "data": data,
        },
    })
    .to_string()
}

fn error(id: &Value, method: &str, message: &str) -> String {
    json!({"id": id, "method": method, "code": BAD_REQUEST, "message": message}).to_string()
}
