//! A price as the exchange wrote it, and the normalized trade event every feed produces.

use std::{fmt, str::FromStr, sync::Arc};

use rust_decimal::Decimal;

/// A decimal price or size that keeps the exact text it arrived as. The numeric value is
/// used for ordering and aggregation only; the text is what we serve for a single source.
#[derive(Clone, PartialEq, Eq)]
pub struct Price {
    text: Arc<str>,
    value: Decimal,
}

/// Why a text is not a price.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a decimal number: {0:?}")]
pub struct BadPrice(pub String);

impl Price {
    /// Parses a plain decimal (`123.45`, `1e-5` is refused: exchanges send plain decimals).
    pub fn parse(text: &str) -> Result<Self, BadPrice> {
        let bad = || BadPrice(text.chars().take(64).collect());
        if text.is_empty() || text.len() > 40 {
            return Err(bad());
        }
        let value = Decimal::from_str(text).map_err(|_| bad())?;
        Ok(Self {
            text: text.into(),
            value,
        })
    }

    /// Builds a price from a computed decimal (a median of two sources, for instance).
    pub fn from_decimal(value: Decimal) -> Self {
        let value = value.normalize();
        Self {
            text: value.to_string().into(),
            value,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn value(&self) -> Decimal {
        self.value
    }
}

impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One price, normalized at the edge of a feed (a trade, or a REST ticker).
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Normalized asset (`BTC`).
    pub asset: Arc<str>,
    /// Source tag of the feed (`okx-ws`).
    pub source: Arc<str>,
    /// Quote currency of the market the trade happened on (`USD`, `USDT`).
    pub quote: Arc<str>,
    pub price: Price,
    /// Trade time reported by the exchange, unix ms.
    pub time_exchange_ms: i64,
    /// When we received it, unix ms.
    pub time_received_ms: i64,
    /// True for trades replayed by a snapshot on subscribe: they are history, never fresh.
    pub replayed: bool,
}

/// Where feeds deliver their ticks (the price book).
pub trait TickSink: Send + Sync {
    fn apply(&self, tick: Tick);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_keeps_its_exact_text() {
        let p = Price::parse("0.00007723").unwrap();
        assert_eq!(p.text(), "0.00007723");
        let p = Price::parse("68500.0").unwrap();
        assert_eq!(p.text(), "68500.0");
        assert_eq!(p.value(), Decimal::from(68500));
    }

    #[test]
    fn garbage_is_not_a_price() {
        for bad in [
            "",
            "abc",
            "1.2.3",
            "NaN",
            "12345678901234567890123456789012345678901",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn computed_prices_drop_trailing_zeros() {
        let p = Price::from_decimal(Decimal::from_str("100.500").unwrap());
        assert_eq!(p.text(), "100.5");
    }
}
