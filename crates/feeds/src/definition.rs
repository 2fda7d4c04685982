//! Compiling an exchange definition: every JSONPath parsed once, every template checked.
//! A definition (or an asset mapping) that does not validate is refused with an error naming
//! the field.

use beast_core::{AssetMapping, ExchangeDefinition, definition::MatchRules, normalize_asset};
use serde_json::Value;
use serde_json_path::JsonPath;

/// A field of a definition or mapping that does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct DefinitionError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field,
        message: message.into(),
    }
}

/// A JSONPath read from the trade item (`$...`) or from the whole frame (`^...`).
#[derive(Debug, Clone)]
pub struct ItemPath {
    pub from_frame: bool,
    pub path: JsonPath,
}

/// One piece of a heartbeat reply: literal text or a value copied from the heartbeat frame.
#[derive(Debug, Clone)]
pub enum ReplyPart {
    Text(String),
    Value(JsonPath),
}

/// A definition ready to run: validated, paths compiled.
#[derive(Debug, Clone)]
pub struct CompiledDefinition {
    pub def: ExchangeDefinition,
    pub match_rules: Vec<(JsonPath, Value)>,
    pub snapshot_rules: Vec<(JsonPath, Value)>,
    pub heartbeat_rules: Vec<(JsonPath, Value)>,
    pub heartbeat_reply: Vec<ReplyPart>,
    pub items: JsonPath,
    pub symbol: ItemPath,
    /// Prefix and suffix around `{SYMBOL}` in `symbol_pattern`.
    pub symbol_pattern: Option<(String, String)>,
    pub price: ItemPath,
    pub size: Option<ItemPath>,
    pub time: Option<ItemPath>,
    pub trade_id: Option<ItemPath>,
    /// Paths in the REST ticker answer; `None` when the exchange has no `rest_url`.
    pub rest_price: Option<JsonPath>,
    pub rest_time: Option<JsonPath>,
}

fn frame_path(field: &'static str, text: &str) -> Result<JsonPath, DefinitionError> {
    if !text.starts_with('$') {
        return Err(invalid(
            field,
            format!("JSONPath must start with `$`, got {text:?}"),
        ));
    }
    JsonPath::parse(text).map_err(|e| invalid(field, format!("bad JSONPath {text:?}: {e}")))
}

fn item_path(field: &'static str, text: &str) -> Result<ItemPath, DefinitionError> {
    match text.strip_prefix('^') {
        Some(rest) => Ok(ItemPath {
            from_frame: true,
            path: frame_path(field, &format!("${rest}"))?,
        }),
        None => Ok(ItemPath {
            from_frame: false,
            path: frame_path(field, text)?,
        }),
    }
}

fn optional_item_path(
    field: &'static str,
    text: &Option<String>,
) -> Result<Option<ItemPath>, DefinitionError> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => item_path(field, t).map(Some),
    }
}

fn rules(
    field: &'static str,
    rules: &MatchRules,
) -> Result<Vec<(JsonPath, Value)>, DefinitionError> {
    rules
        .iter()
        .map(|(p, v)| Ok((frame_path(field, p)?, v.clone())))
        .collect()
}

/// Splits `{"id":{$.id},"x":1}` into text and `{$.path}` parts.
fn reply_parts(text: &str) -> Result<Vec<ReplyPart>, DefinitionError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{$") {
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| invalid("heartbeat_reply", "unclosed `{$` placeholder"))?;
        parts.push(ReplyPart::Text(rest[..start].to_owned()));
        parts.push(ReplyPart::Value(frame_path(
            "heartbeat_reply",
            &rest[start + 1..start + end],
        )?));
        rest = &rest[start + end + 1..];
    }
    parts.push(ReplyPart::Text(rest.to_owned()));
    Ok(parts)
}

fn check_url(field: &'static str, url: &str, schemes: &[&str]) -> Result<(), DefinitionError> {
    if schemes
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|host| !host.is_empty()))
    {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a URL starting with {}", schemes.join(" or ")),
        ))
    }
}

impl CompiledDefinition {
    pub fn compile(def: ExchangeDefinition) -> Result<Self, DefinitionError> {
        let name_ok = !def.name.is_empty()
            && def.name.len() <= 32
            && def
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            return Err(invalid(
                "name",
                "1 to 32 characters of a-z, 0-9, `_` or `-`",
            ));
        }
        let source_ok = !def.source.is_empty()
            && def.source.len() <= 32
            && def
                .source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !source_ok {
            return Err(invalid(
                "source",
                "1 to 32 characters of letters, digits, `.`, `_` or `-`",
            ));
        }
        check_url("ws_url", &def.ws_url, &["wss://", "ws://"])?;
        if !def
            .subscribe_template
            .lines()
            .any(|l| l.contains("{SYMBOLS}"))
        {
            return Err(invalid("subscribe_template", "must contain `{SYMBOLS}`"));
        }
        if !def.symbol_template.contains("{SYMBOL}") {
            return Err(invalid("symbol_template", "must contain `{SYMBOL}`"));
        }
        if def.max_symbols_per_message == 0 {
            return Err(invalid("max_symbols_per_message", "must be at least 1"));
        }
        if def.max_symbols_per_connection == 0 {
            return Err(invalid("max_symbols_per_connection", "must be at least 1"));
        }
        if def.liveness_timeout_s == 0 {
            return Err(invalid("liveness_timeout_s", "must be at least 1"));
        }
        if def.heartbeat_match.is_empty() != def.heartbeat_reply.is_empty() {
            return Err(invalid(
                "heartbeat_reply",
                "heartbeat_match and heartbeat_reply go together",
            ));
        }
        let symbol_pattern = match def.symbol_pattern.as_deref() {
            None | Some("") => None,
            Some(p) => match p.split_once("{SYMBOL}") {
                Some((pre, post)) if !post.contains("{SYMBOL}") => {
                    Some((pre.to_owned(), post.to_owned()))
                }
                _ => {
                    return Err(invalid(
                        "symbol_pattern",
                        "must contain `{SYMBOL}` exactly once",
                    ));
                }
            },
        };
        let rest_price = if def.rest_url.is_empty() {
            None
        } else {
            check_url("rest_url", &def.rest_url, &["https://", "http://"])?;
            if !def.rest_url.contains("{SYMBOL}") {
                return Err(invalid("rest_url", "must contain `{SYMBOL}`"));
            }
            Some(frame_path("rest_price_path", &def.rest_price_path)?)
        };
        let rest_time = match def.rest_time_path.as_str() {
            "" => None,
            path => Some(frame_path("rest_time_path", path)?),
        };
        Ok(Self {
            match_rules: rules("match", &def.match_rules)?,
            snapshot_rules: rules("snapshot_match", &def.snapshot_match)?,
            heartbeat_rules: rules("heartbeat_match", &def.heartbeat_match)?,
            heartbeat_reply: reply_parts(&def.heartbeat_reply)?,
            items: frame_path("items_path", &def.items_path)?,
            symbol: item_path("symbol_path", &def.symbol_path)?,
            symbol_pattern,
            price: item_path("price_path", &def.price_path)?,
            size: optional_item_path("size_path", &def.size_path)?,
            time: optional_item_path("time_path", &def.time_path)?,
            trade_id: optional_item_path("trade_id_path", &def.trade_id_path)?,
            rest_price,
            rest_time,
            def,
        })
    }

    /// The subscribe messages for one connection's symbols, batched by
    /// `max_symbols_per_message`; `now_ms` fills `{TS}` / `{TS_S}`.
    pub fn subscribe_messages(&self, symbols: &[String], now_ms: i64) -> Vec<String> {
        let d = &self.def;
        let mut out = Vec::new();
        for chunk in symbols.chunks(d.max_symbols_per_message as usize) {
            let joined = chunk
                .iter()
                .map(|s| d.symbol_template.replace("{SYMBOL}", s))
                .collect::<Vec<_>>()
                .join(&d.symbol_separator);
            for line in d
                .subscribe_template
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                out.push(fill_time(&line.replace("{SYMBOLS}", &joined), now_ms));
            }
        }
        out
    }

    /// The keep-alive text, or `None` for a WebSocket ping frame.
    pub fn ping_text(&self, now_ms: i64) -> Option<String> {
        (!self.def.ping_payload.is_empty()).then(|| fill_time(&self.def.ping_payload, now_ms))
    }
}

/// Checks one asset mapping and returns it normalized (asset and quote upper case). The
/// exchange it names must be one of `exchanges`.
pub fn validate_mapping(
    mapping: &AssetMapping,
    exchanges: &[&str],
) -> Result<AssetMapping, DefinitionError> {
    if !exchanges.contains(&mapping.exchange.as_str()) {
        return Err(invalid(
            "exchange",
            format!("no exchange named {:?}", mapping.exchange),
        ));
    }
    let asset = normalize_asset(&mapping.asset)
        .ok_or_else(|| invalid("asset", beast_core::not_an_asset(&mapping.asset)))?;
    let quote = normalize_asset(&mapping.quote)
        .ok_or_else(|| invalid("quote", beast_core::not_an_asset(&mapping.quote)))?;
    let symbol = mapping.symbol.trim();
    if symbol.is_empty()
        || symbol.len() > 64
        || !symbol.chars().all(|c| c.is_ascii_graphic() && c != '"')
    {
        return Err(invalid(
            "symbol",
            "1 to 64 printable characters, no spaces or quotes",
        ));
    }
    Ok(AssetMapping {
        exchange: mapping.exchange.clone(),
        asset,
        symbol: symbol.to_owned(),
        quote,
        enabled: mapping.enabled,
        prewarm: mapping.prewarm,
        category: mapping.category.trim().to_owned(),
    })
}

/// Replaces `{TS}` (unix ms) and `{TS_S}` (unix s).
fn fill_time(text: &str, now_ms: i64) -> String {
    text.replace("{TS_S}", &(now_ms / 1000).to_string())
        .replace("{TS}", &now_ms.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The seeded definition of exchange `name`.
    pub(crate) fn seeded(name: &str) -> ExchangeDefinition {
        let all: Vec<ExchangeDefinition> =
            serde_json::from_str(include_str!("../../store/seed/exchanges.json")).unwrap();
        all.into_iter().find(|d| d.name == name).unwrap()
    }

    #[test]
    fn a_bad_jsonpath_is_refused_naming_its_field() {
        let mut d = seeded("okx");
        d.price_path = "$.data[".into();
        let e = CompiledDefinition::compile(d).unwrap_err();
        assert_eq!(e.field, "price_path");
        let mut d = seeded("okx");
        d.subscribe_template = "{\"op\":\"subscribe\"}".into();
        assert_eq!(
            CompiledDefinition::compile(d).unwrap_err().field,
            "subscribe_template"
        );
        let mut d = seeded("okx");
        d.ws_url = "http://x".into();
        assert_eq!(CompiledDefinition::compile(d).unwrap_err().field, "ws_url");
        let mut d = seeded("okx");
        d.ws_url = "ws://".into();
        assert_eq!(CompiledDefinition::compile(d).unwrap_err().field, "ws_url");
        // The shorter scheme with a short host is fine.
        let mut d = seeded("okx");
        d.ws_url = "ws://h".into();
        d.rest_url = "http://a/{SYMBOL}".into();
        CompiledDefinition::compile(d).unwrap();
        let mut d = seeded("cryptocom");
        d.heartbeat_reply = "{\"id\":{$.id".into();
        assert_eq!(
            CompiledDefinition::compile(d).unwrap_err().field,
            "heartbeat_reply"
        );
    }

    #[test]
    fn subscriptions_are_batched_per_message_and_rendered_per_template() {
        let mut d = seeded("okx");
        d.max_symbols_per_message = 2;
        let c = CompiledDefinition::compile(d).unwrap();
        let msgs = c.subscribe_messages(
            &["BTC-USDT".into(), "ETH-USDT".into(), "SOL-USDT".into()],
            0,
        );
        assert_eq!(
            msgs,
            vec![
                r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},{"channel":"trades","instId":"ETH-USDT"}]}"#,
                r#"{"op":"subscribe","args":[{"channel":"trades","instId":"SOL-USDT"}]}"#,
            ]
        );
    }

    #[test]
    fn coinbase_subscribes_to_trades_and_heartbeats() {
        let c = CompiledDefinition::compile(seeded("coinbase")).unwrap();
        let msgs = c.subscribe_messages(&["BTC-USD".into()], 0);
        assert_eq!(
            msgs,
            vec![
                r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"market_trades"}"#,
                r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"heartbeats"}"#,
            ]
        );
    }

    #[test]
    fn time_placeholders_are_filled() {
        let c = CompiledDefinition::compile(seeded("gateio")).unwrap();
        assert_eq!(
            c.subscribe_messages(&["BTC_USDT".into()], 1_700_000_000_123),
            vec![
                r#"{"time":1700000000,"channel":"spot.trades","event":"subscribe","payload":["BTC_USDT"]}"#
            ]
        );
        assert_eq!(
            c.ping_text(1_700_000_000_123).unwrap(),
            r#"{"time":1700000000,"channel":"spot.ping"}"#
        );
        let c = CompiledDefinition::compile(seeded("coinbase")).unwrap();
        assert_eq!(c.ping_text(1), None);
    }
}
