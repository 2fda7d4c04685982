//! Trade timestamps: RFC 3339 with any number of fractional digits, or unix time in s, ms,
//! us or ns, as a JSON number or a string, fractions allowed. Never through f64.

use std::str::FromStr;

use beast_core::TimeFormat;
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde_json::Value;

/// Converts a timestamp value to unix milliseconds; `None` when it does not parse.
pub fn to_unix_ms(value: &Value, format: TimeFormat) -> Option<i64> {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Number(n) => return unix_text_to_ms(&n.to_string(), format),
        _ => return None,
    };
    match format {
        TimeFormat::Rfc3339 => beast_core::rfc3339_to_ms(text),
        _ => unix_text_to_ms(text, format),
    }
}

fn unix_text_to_ms(text: &str, format: TimeFormat) -> Option<i64> {
    let v = Decimal::from_str(text).ok()?;
    if v.is_sign_negative() {
        return None;
    }
    let format = match format {
        TimeFormat::UnixAuto => match v {
            v if v < Decimal::from(100_000_000_000_i64) => TimeFormat::UnixS,
            v if v < Decimal::from(100_000_000_000_000_i64) => TimeFormat::UnixMs,
            v if v < Decimal::from(100_000_000_000_000_000_i64) => TimeFormat::UnixUs,
            _ => TimeFormat::UnixNs,
        },
        other => other,
    };
    let ms = match format {
        TimeFormat::UnixS => v.checked_mul(Decimal::from(1000))?,
        TimeFormat::UnixMs => v,
        TimeFormat::UnixUs => v / Decimal::from(1000),
        TimeFormat::UnixNs => v / Decimal::from(1_000_000),
        TimeFormat::Rfc3339 | TimeFormat::UnixAuto => return None,
    };
    ms.trunc().to_i64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(v: Value, f: TimeFormat) -> Option<i64> {
        to_unix_ms(&v, f)
    }

    #[test]
    fn every_exchange_timestamp_style_becomes_unix_ms() {
        // Coinbase: RFC 3339 with 5 and 9 fractional digits.
        assert_eq!(
            ms(json!("2025-12-31T06:00:12.44524Z"), TimeFormat::Rfc3339),
            Some(1767160812445)
        );
        assert_eq!(
            ms(json!("2025-12-31T06:00:12.516946132Z"), TimeFormat::Rfc3339),
            Some(1767160812516)
        );
        // Gate: fractional ms in a string.
        assert_eq!(
            ms(json!("1631824310261.896"), TimeFormat::UnixMs),
            Some(1631824310261)
        );
        // OKX: ms as a string; Crypto.com: ms as a number.
        assert_eq!(
            ms(json!("1646311839593"), TimeFormat::UnixMs),
            Some(1646311839593)
        );
        assert_eq!(
            ms(json!(1613581138462_i64), TimeFormat::UnixMs),
            Some(1613581138462)
        );
        // Seconds with a fraction, microseconds, nanoseconds.
        assert_eq!(
            ms(json!("1631824310.5"), TimeFormat::UnixS),
            Some(1631824310500)
        );
        assert_eq!(
            ms(json!(1631824310261896_i64), TimeFormat::UnixUs),
            Some(1631824310261)
        );
        assert_eq!(
            ms(json!(1700000000123456789_i64), TimeFormat::UnixNs),
            Some(1700000000123)
        );
    }

    #[test]
    fn unix_auto_tells_the_unit_from_the_magnitude() {
        for v in [
            json!(1700000000),
            json!(1700000000000_i64),
            json!(1700000000000000_i64),
            json!(1700000000000000000_i64),
        ] {
            assert_eq!(
                ms(v.clone(), TimeFormat::UnixAuto),
                Some(1700000000000),
                "{v}"
            );
        }
    }

    #[test]
    fn nonsense_times_do_not_parse() {
        assert_eq!(ms(json!("yesterday"), TimeFormat::Rfc3339), None);
        assert_eq!(ms(json!("12:00"), TimeFormat::UnixMs), None);
        assert_eq!(ms(json!(-5), TimeFormat::UnixMs), None);
        assert_eq!(ms(json!(true), TimeFormat::UnixMs), None);
        assert_eq!(
            ms(json!("99999999999999999999999999999"), TimeFormat::UnixS),
            None
        );
    }
}
