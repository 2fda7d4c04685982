//! Reading one WebSocket frame with a compiled definition: the trades it carries (with their
//! exact decimal text), a heartbeat to answer, or nothing of interest.

use std::borrow::Cow;

use beast_core::{Price, definition::TimeFormat};
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::{
    CompiledDefinition,
    definition::{ItemPath, ReplyPart},
    timefmt,
};

/// A trade as read from a frame, before its symbol is mapped to an asset.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTrade {
    pub symbol: String,
    pub price: Price,
    pub size: Option<Price>,
    /// Exchange trade time, unix ms (`None` when the definition has no `time_path`).
    pub time_ms: Option<i64>,
    pub trade_id: Option<String>,
}

/// What a frame means to us.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Trade frame; `replayed` when it matches `snapshot_match` (history, never fresh).
    /// `refused`: its trade items that could not be read, each with why; the others are kept
    /// (a frame may have only refused ones).
    Trades {
        trades: Vec<RawTrade>,
        replayed: bool,
        refused: Vec<ExtractError>,
    },
    /// A server heartbeat; send this reply.
    Heartbeat(String),
    /// A plain-text control frame such as OKX's `pong`.
    Text,
    /// JSON that is neither (acks, subscriptions, status, keep-alives).
    Other,
}

/// A frame that is not JSON, or a trade item in one that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtractError {
    #[error("malformed JSON ({reason}) in frame {frame}")]
    Malformed { reason: String, frame: String },
    #[error("trade field `{field}`: {problem} in item {item}")]
    BadField {
        field: &'static str,
        problem: &'static str,
        item: String,
    },
}

/// Keeps error payloads short.
fn truncated(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

fn matches(rules: &[(JsonPath, Value)], frame: &Value) -> bool {
    rules
        .iter()
        .all(|(path, expected)| path.query(frame).first() == Some(expected))
}

/// Exact text of a scalar: strings as they are (borrowed), numbers as written (arbitrary
/// precision).
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// A positive decimal price, from a string or a number, with its exact text.
pub(crate) fn positive_price(v: &Value) -> Option<Price> {
    scalar_text(v)
        .and_then(|t| Price::parse(&t).ok())
        .filter(|p| p.value().is_sign_positive() && !p.value().is_zero())
}

impl CompiledDefinition {
    /// Reads one text frame: an error only if it is not JSON; a trade in it that cannot be
    /// read is listed in [`Frame::Trades`]'s `refused`.
    pub fn read_frame(&self, text: &str) -> Result<Frame, ExtractError> {
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') && !trimmed.starts_with('[') {
            return Ok(Frame::Text);
        }
        let frame: Value = serde_json::from_str(text).map_err(|e| ExtractError::Malformed {
            reason: e.to_string(),
            frame: truncated(text),
        })?;
        if !self.heartbeat_rules.is_empty() && matches(&self.heartbeat_rules, &frame) {
            return Ok(Frame::Heartbeat(self.heartbeat_reply_for(&frame)));
        }
        if !matches(&self.match_rules, &frame) {
            return Ok(Frame::Other);
        }
        let (mut trades, mut refused) = (Vec::new(), Vec::new());
        for node in self.items.query(&frame) {
            let items = match node {
                Value::Array(items) => items.as_slice(),
                item => std::slice::from_ref(item),
            };
            for item in items {
                match self.read_trade(&frame, item) {
                    Ok(Some(trade)) => trades.push(trade),
                    Ok(None) => {}
                    Err(e) => refused.push(e),
                }
            }
        }
        // A bad trade item costs only itself, and each one is reported.
        if trades.is_empty() && refused.is_empty() {
            return Ok(Frame::Other);
        }
        let replayed = !self.snapshot_rules.is_empty() && matches(&self.snapshot_rules, &frame);
        Ok(Frame::Trades {
            trades,
            replayed,
            refused,
        })
    }

    fn heartbeat_reply_for(&self, frame: &Value) -> String {
        self.heartbeat_reply
            .iter()
            .map(|part| match part {
                ReplyPart::Text(t) => t.clone(),
                ReplyPart::Value(path) => path
                    .query(frame)
                    .first()
                    .map(Value::to_string)
                    .unwrap_or_else(|| "null".into()),
            })
            .collect()
    }

    /// The trade in `item`; `None` for an item without a price, which is not a trade.
    fn read_trade(&self, frame: &Value, item: &Value) -> Result<Option<RawTrade>, ExtractError> {
        let get = |p: &ItemPath| {
            p.path
                .query(if p.from_frame { frame } else { item })
                .first()
        };
        let Some(price_value) = get(&self.price) else {
            return Ok(None);
        };
        let bad = |field: &'static str, problem: &'static str| ExtractError::BadField {
            field,
            problem,
            item: truncated(&item.to_string()),
        };
        let price = positive_price(price_value)
            .ok_or_else(|| bad("price_path", "not a positive decimal"))?;
        let raw_symbol = get(&self.symbol)
            .and_then(scalar_text)
            .ok_or_else(|| bad("symbol_path", "missing or not a string"))?;
        let symbol = match &self.symbol_pattern {
            None => raw_symbol.into_owned(),
            Some((pre, post)) => raw_symbol
                .strip_prefix(pre.as_str())
                .and_then(|s| s.strip_suffix(post.as_str()))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| bad("symbol_pattern", "symbol does not match the pattern"))?,
        };
        let size = match &self.size {
            None => None,
            Some(p) => Some(
                get(p)
                    .and_then(scalar_text)
                    .and_then(|t| Price::parse(&t).ok())
                    .ok_or_else(|| bad("size_path", "missing or not a decimal"))?,
            ),
        };
        let time_ms = match &self.time {
            None => None,
            Some(p) => Some(
                get(p)
                    .and_then(|v| timefmt::to_unix_ms(v, self.def.time_format))
                    .ok_or_else(|| bad("time_path", time_problem(self.def.time_format)))?,
            ),
        };
        let trade_id = self
            .trade_id
            .as_ref()
            .and_then(get)
            .and_then(scalar_text)
            .map(Cow::into_owned);
        Ok(Some(RawTrade {
            symbol,
            price,
            size,
            time_ms,
            trade_id,
        }))
    }
}

fn time_problem(format: TimeFormat) -> &'static str {
    match format {
        TimeFormat::Rfc3339 => "missing or not an RFC 3339 time",
        _ => "missing or not a unix time",
    }
}
