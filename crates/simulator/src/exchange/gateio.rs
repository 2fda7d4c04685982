//! Gate.io API v4 spot: `spot.trades` subscribe acked with `result.status = success`, ONE trade
//! per `update` frame (`result` is an object, `create_time_ms` a string with a fraction), and
//! `spot.ping` → `spot.pong`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Exchange, single_query_symbol};
use crate::market::{Ticker, Trade};
use crate::session::{Added, Conn};
use crate::wire;

const TRADES: &str = "spot.trades";
/// Gate's error code for a malformed request body.
const INVALID_BODY: u64 = 1;
/// Gate's error code for an invalid argument.
const INVALID_ARGUMENT: u64 = 2;

#[derive(Debug, Default)]
pub(crate) struct GateIo;

#[derive(Deserialize)]
struct Request {
    id: Option<Value>,
    channel: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    payload: Vec<String>,
}

/// A frame with Gate's envelope: push time, optional request id, channel and event.
fn frame(id: Option<&Value>, channel: &str, event: &str, mut body: Value) -> String {
    let now = OffsetDateTime::now_utc();
    body["time"] = json!(wire::unix_s(now));
    body["time_ms"] = json!(wire::unix_ms(now));
    if let Some(id) = id {
        body["id"] = id.clone();
    }
    body["channel"] = json!(channel);
    body["event"] = json!(event);
    body.to_string()
}

fn error(id: Option<&Value>, channel: &str, event: &str, code: u64, message: &str) -> String {
    let body = json!({"error": {"code": code, "message": message}, "result": null});
    frame(id, channel, event, body)
}

impl GateIo {
    fn subscribe(request: &Request, conn: &mut Conn) -> String {
        let id = request.id.as_ref();
        let fail = |message: &str| error(id, TRADES, &request.event, INVALID_ARGUMENT, message);
        if request.payload.is_empty() {
            return fail("payload must name at least one currency pair");
        }
        for pair in &request.payload {
            if conn.subscribe(pair) == Added::Invalid {
                return fail(&format!("unknown currency pair {pair}"));
            }
        }
        frame(
            id,
            TRADES,
            "subscribe",
            json!({"result": {"status": "success"}}),
        )
    }
}

impl Exchange for GateIo {
    const NAME: &'static str = "gateio";
    const UNLISTED_SYMBOL: &'static str = "ZZZ_USDT";

    fn is_ping(text: &str) -> bool {
        serde_json::from_str::<Request>(text).is_ok_and(|r| r.channel == "spot.ping")
    }

    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String> {
        let request = match serde_json::from_str::<Request>(text) {
            Ok(request) => request,
            Err(e) => {
                let message = format!("invalid request body: {e}");
                return vec![error(None, "", "", INVALID_BODY, &message)];
            }
        };
        let id = request.id.as_ref();
        let reply = match (request.channel.as_str(), request.event.as_str()) {
            ("spot.ping", _) => frame(id, "spot.pong", "", json!({"error": null, "result": null})),
            (TRADES, "subscribe") => GateIo::subscribe(&request, conn),
            (channel, event) => {
                let message = format!("unsupported channel {channel:?} or event {event:?}");
                error(id, channel, event, INVALID_ARGUMENT, &message)
            }
        };
        vec![reply]
    }

    fn trades(&mut self, trades: &[Trade]) -> Vec<String> {
        trades
            .iter()
            .map(|trade| {
                let micros = trade.time.unix_timestamp_nanos() / 1_000;
                let result = json!({
                    "id": trade.id,
                    "create_time": wire::unix_s(trade.time),
                    "create_time_ms": format!("{}.{:03}", micros / 1_000, micros % 1_000),
                    "side": trade.side.lower(),
                    "currency_pair": trade.symbol,
                    "amount": trade.size,
                    "price": trade.price,
                });
                frame(None, TRADES, "update", json!({"result": result}))
            })
            .collect()
    }

    fn rest_symbols(path: &str, query: &HashMap<String, String>) -> Option<Vec<String>> {
        single_query_symbol(path, "api/v4/spot/tickers", query, "currency_pair")
    }

    fn rest_body(tickers: &[Ticker]) -> Value {
        let rows: Vec<Value> = tickers
            .iter()
            .map(|ticker| {
                json!({
                    "currency_pair": ticker.last.symbol,
                    "last": ticker.last.price,
                    "lowest_ask": ticker.ask,
                    "highest_bid": ticker.bid,
                    "change_percentage": ticker.change_percent,
                    "base_volume": ticker.volume,
                    "quote_volume": ticker.quote_volume,
                    "high_24h": ticker.high,
                    "low_24h": ticker.low,
                })
            })
            .collect();
        Value::Array(rows)
    }
}
