//! Exchanges, asset mappings and tiers as plain data: rows of `exchange_feeds`,
//! `exchange_asset_map` and `rate_limit_template`. Field names are a public contract.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a trade timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    Rfc3339,
    UnixS,
    UnixMs,
    UnixUs,
    UnixNs,
    /// Unix time whose unit is told by its magnitude (s, ms, us or ns).
    UnixAuto,
}

impl TimeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::UnixS => "unix_s",
            TimeFormat::UnixMs => "unix_ms",
            TimeFormat::UnixUs => "unix_us",
            TimeFormat::UnixNs => "unix_ns",
            TimeFormat::UnixAuto => "unix_auto",
        }
    }
}

/// JSONPath → expected value; a frame matches when every path yields its value.
pub type MatchRules = BTreeMap<String, Value>;

/// One exchange, as data. The generic connector runs any valid definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDefinition {
    /// Unique id, lowercase (`okx`).
    pub name: String,
    /// Tag shown in responses and usage rows (`okx-ws`).
    pub source: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub ws_url: String,
    /// Message(s) sent to subscribe, one per line; `{SYMBOLS}` is replaced by the joined
    /// symbols, `{TS}` by unix ms and `{TS_S}` by unix seconds.
    pub subscribe_template: String,
    /// How one symbol is written inside `{SYMBOLS}`.
    #[serde(default = "default_symbol_template")]
    pub symbol_template: String,
    #[serde(default = "default_separator")]
    pub symbol_separator: String,
    #[serde(default = "default_per_message")]
    pub max_symbols_per_message: u32,
    #[serde(default = "default_per_connection")]
    pub max_symbols_per_connection: u32,
    #[serde(default)]
    pub connect_delay_ms: u64,
    /// A frame is a trade frame only if all these match.
    #[serde(default, rename = "match")]
    pub match_rules: MatchRules,
    /// Trade frames that also match these replay history (snapshots): never fresh.
    #[serde(default)]
    pub snapshot_match: MatchRules,
    pub items_path: String,
    pub symbol_path: String,
    #[serde(default)]
    pub symbol_pattern: Option<String>,
    pub price_path: String,
    #[serde(default)]
    pub size_path: Option<String>,
    #[serde(default)]
    pub time_path: Option<String>,
    #[serde(default)]
    pub trade_id_path: Option<String>,
    pub time_format: TimeFormat,
    /// Client keep-alive period; 0 = none.
    #[serde(default)]
    pub ping_interval_s: u64,
    /// Keep-alive text (`{TS}`, `{TS_S}` allowed); empty = a WebSocket ping frame.
    #[serde(default)]
    pub ping_payload: String,
    #[serde(default)]
    pub heartbeat_match: MatchRules,
    /// Reply to a heartbeat; `{$.path}` is replaced by that value from the heartbeat frame.
    #[serde(default)]
    pub heartbeat_reply: String,
    /// No frame at all for this long means the connection is dead.
    #[serde(default = "default_liveness")]
    pub liveness_timeout_s: u64,
    #[serde(default)]
    pub rest_url: String,
    #[serde(default)]
    pub rest_price_path: String,
    #[serde(default)]
    pub rest_time_path: String,
}

fn default_true() -> bool {
    true
}
fn default_symbol_template() -> String {
    "\"{SYMBOL}\"".into()
}
fn default_separator() -> String {
    ",".into()
}
fn default_per_message() -> u32 {
    100
}
fn default_per_connection() -> u32 {
    200
}
fn default_liveness() -> u64 {
    30
}

/// A normalized asset on one exchange (`BTC` is `BTC-USD` on Coinbase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetMapping {
    pub exchange: String,
    pub asset: String,
    pub symbol: String,
    /// Quote currency of that market (`USD`, `USDT`): never relabelled.
    pub quote: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Subscribed live on the exchange's WebSocket; otherwise fetched on demand.
    #[serde(default)]
    pub prewarm: bool,
    #[serde(default)]
    pub category: String,
}

/// A row of `rate_limit_template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub name: String,
    pub requests_per_second: u32,
    pub burst: u32,
    pub monthly_quota: u64,
    pub reports_enabled: bool,
    pub monthly_report_allowance: u64,
    /// Partner keys bypass rate limits and quotas.
    pub unlimited: bool,
}
