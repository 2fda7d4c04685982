//! Gemini's new WebSocket API (`wss://ws.gemini.com`): `{"id","method","params"}` requests
//! answered by `{"id","status":200,"result"}`, `{symbol}@trade` streams, one trade event per
//! frame with `E` in nanoseconds and `m` = buyer is maker.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::Exchange;
use crate::market::{Pair, Side, Ticker, Trade};
use crate::session::{Added, Conn};
use crate::wire;

/// Binance-style error code for a request the server cannot use.
const BAD_REQUEST: i64 = -1002;

#[derive(Debug, Default)]
pub(crate) struct Gemini;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    id: Value,
    method: String,
    #[serde(default)]
    params: Vec<String>,
}

impl Gemini {
    fn subscribe(id: &Value, streams: &[String], conn: &mut Conn) -> String {
        if streams.is_empty() {
            return error(id, "params must name at least one stream");
        }
        for stream in streams {
            let symbol = match stream.split_once('@') {
                Some((symbol, "trade")) => symbol.to_ascii_lowercase(),
                _ => return error(id, &format!("unsupported stream {stream:?}")),
            };
            if conn.subscribe(&symbol) == Added::Invalid {
                return error(id, &format!("invalid symbol in {stream:?}"));
            }
        }
        json!({"id": id, "status": 200, "result": null}).to_string()
    }
}

impl Exchange for Gemini {
    const NAME: &'static str = "gemini";
    const UNLISTED_SYMBOL: &'static str = "zzzusd";

    fn is_ping(text: &str) -> bool {
        serde_json::from_str::<Request>(text).is_ok_and(|r| r.method.eq_ignore_ascii_case("ping"))
    }

    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String> {
        let request = match serde_json::from_str::<Request>(text) {
            Ok(request) => request,
            Err(e) => return vec![error(&Value::Null, &format!("malformed request: {e}"))],
        };
        let reply = match request.method.to_ascii_lowercase().as_str() {
            "subscribe" => Gemini::subscribe(&request.id, &request.params, conn),
            "ping" => json!({"id": request.id, "status": 200, "result": {}}).to_string(),
            other => error(&request.id, &format!("unknown method {other:?}")),
        };
        vec![reply]
    }

    fn trades(&mut self, trades: &[Trade]) -> Vec<String> {
        trades
            .iter()
            .map(|trade| {
                json!({
                    "E": wire::unix_ns(trade.time),
                    "s": trade.symbol,
                    "t": trade.id,
                    "p": trade.price,
                    "q": trade.size,
                    "m": trade.side == Side::Sell,
                })
                .to_string()
            })
            .collect()
    }

    fn rest_symbols(path: &str, _query: &HashMap<String, String>) -> Option<Vec<String>> {
        let symbol = path.strip_prefix("v1/pubticker/")?;
        (!symbol.contains('/')).then(|| vec![symbol.to_owned()])
    }

    fn rest_body(tickers: &[Ticker]) -> Value {
        let Some(ticker) = tickers.first() else {
            return Value::Null;
        };
        let pair = Pair::parse(&ticker.last.symbol);
        json!({
            "bid": ticker.bid,
            "ask": ticker.ask,
            "volume": {
                pair.asset: ticker.volume,
                pair.quote: ticker.quote_volume,
                "timestamp": wire::unix_ms(ticker.last.time),
            },
            "last": ticker.last.price,
        })
    }
}

fn error(id: &Value, message: &str) -> String {
    json!({"id": id, "status": 400, "error": {"code": BAD_REQUEST, "msg": message}}).to_string()
}
