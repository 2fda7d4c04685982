//! OKX v5 public: `{"op":"subscribe","args":[{"channel":"trades","instId"}]}` acked once per
//! arg with the connection's `connId`, one frame per instId with `data[]` (`ts` ms as a
//! string), and the plain-text `ping` → `pong`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Exchange, by_symbol, single_query_symbol};
use crate::market::{Ticker, Trade};
use crate::session::{Added, Conn};
use crate::wire;

const TRADES: &str = "trades";
/// OKX's "Invalid request" error code.
const INVALID_REQUEST: &str = "60012";
/// OKX's "Wrong URL or channel doesn't exist" error code.
const NO_SUCH_CHANNEL: &str = "60018";

#[derive(Debug)]
pub(crate) struct Okx {
    conn_id: String,
}

impl Default for Okx {
    fn default() -> Self {
        Okx {
            conn_id: format!("{:08x}", rand::random::<u32>()),
        }
    }
}

#[derive(Deserialize)]
struct Request {
    op: String,
    args: Vec<Arg>,
}

#[derive(Deserialize)]
struct Arg {
    channel: String,
    #[serde(rename = "instId")]
    inst_id: String,
}

impl Okx {
    fn error(&self, code: &str, message: &str) -> String {
        json!({"event": "error", "code": code, "msg": message, "connId": self.conn_id}).to_string()
    }

    fn subscribe(&self, args: &[Arg], conn: &mut Conn) -> Vec<String> {
        args.iter()
            .map(|arg| {
                if arg.channel != TRADES || conn.subscribe(&arg.inst_id) == Added::Invalid {
                    let message = format!(
                        "Wrong URL or channel:{},instId:{} doesn't exist.",
                        arg.channel, arg.inst_id
                    );
                    return self.error(NO_SUCH_CHANNEL, &message);
                }
                json!({
                    "event": "subscribe",
                    "arg": {"channel": TRADES, "instId": arg.inst_id},
                    "connId": self.conn_id,
                })
                .to_string()
            })
            .collect()
    }
}

impl Exchange for Okx {
    const NAME: &'static str = "okx";
    const UNLISTED_SYMBOL: &'static str = "ZZZ-USDT";

    fn is_ping(text: &str) -> bool {
        text == "ping"
    }

    fn on_text(&mut self, text: &str, conn: &mut Conn) -> Vec<String> {
        if Self::is_ping(text) {
            return vec!["pong".to_owned()];
        }
        match serde_json::from_str::<Request>(text) {
            Ok(request) if request.op == "subscribe" && !request.args.is_empty() => {
                self.subscribe(&request.args, conn)
            }
            Ok(request) => {
                vec![self.error(
                    INVALID_REQUEST,
                    &format!("Invalid request: op {}", request.op),
                )]
            }
            Err(e) => vec![self.error(INVALID_REQUEST, &format!("Invalid request: {e}"))],
        }
    }

    fn trades(&mut self, trades: &[Trade]) -> Vec<String> {
        by_symbol(trades)
            .into_iter()
            .map(|(inst_id, trades)| {
                let data: Vec<Value> = trades
                    .iter()
                    .map(|trade| {
                        json!({
                            "instId": trade.symbol,
                            "tradeId": trade.id.to_string(),
                            "px": trade.price,
                            "sz": trade.size,
                            "side": trade.side.lower(),
                            "ts": wire::unix_ms(trade.time).to_string(),
                            "count": "1",
                        })
                    })
                    .collect();
                json!({"arg": {"channel": TRADES, "instId": inst_id}, "data": data}).to_string()
            })
            .collect()
    }

    fn rest_symbols(path: &str, query: &HashMap<String, String>) -> Option<Vec<String>> {
        single_query_symbol(path, "api/v5/market/ticker", query, "instId")
    }

    fn rest_body(tickers: &[Ticker]) -> Value {
        let data: Vec<Value> = tickers
            .iter()
            .map(|ticker| {
                json!({
                    "instType": "SPOT",
                    "instId": ticker.last.symbol,
                    "last": ticker.last.price,
                    "lastSz": ticker.last.size,
                    "askPx": ticker.ask,
                    "askSz": "1",
                    "bidPx": ticker.bid,
                    "bidSz": "1",
                    "open24h": ticker.open,
                    "high24h": ticker.high,
                    "low24h": ticker.low,
                    "volCcy24h": ticker.quote_volume,
                    "vol24h": ticker.volume,
                    "ts": wire::unix_ms(ticker.last.time).to_string(),
                    "sodUtc0": ticker.open,
                    "sodUtc8": ticker.open,
                })
            })
            .collect();
        json!({"code": "0", "msg": "", "data": data})
    }
}
