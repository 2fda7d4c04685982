//! Wire formatting the exchanges share: timestamps in each venue's unit and JSON numbers
//! written straight from decimal text.

use std::str::FromStr;

use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// RFC 3339 UTC with as many fractional digits as needed (`.44524Z`), as Coinbase writes.
pub(crate) fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// RFC 3339 UTC with exactly six fractional digits, as Kraken writes.
pub(crate) fn rfc3339_micros(time: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time.format(&format).unwrap_or_default()
}

/// Unix seconds.
pub(crate) fn unix_s(time: OffsetDateTime) -> i64 {
    time.unix_timestamp()
}

/// Unix milliseconds.
pub(crate) fn unix_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Unix nanoseconds.
pub(crate) fn unix_ns(time: OffsetDateTime) -> u64 {
    u64::try_from(time.unix_timestamp_nanos()).unwrap_or(0)
}

/// A JSON number whose text is exactly `decimal` (`68500.1`, never `6.85001e4`); relies on
/// serde_json's `arbitrary_precision`, which the workspace turns on.
pub(crate) fn number(decimal: &str) -> Value {
    Number::from_str(decimal).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_use_each_venues_unit() {
        let time = datetime!(2024-05-27 12:43:11.798009 UTC);
        assert_eq!(rfc3339(time), "2024-05-27T12:43:11.798009Z");
        assert_eq!(
            rfc3339(datetime!(2024-05-27 12:43:11.44524 UTC)),
            "2024-05-27T12:43:11.44524Z"
        );
        assert_eq!(
            rfc3339_micros(datetime!(2024-05-27 12:43:11.5 UTC)),
            "2024-05-27T12:43:11.500000Z"
        );
        assert_eq!(unix_s(time), 1_716_813_791);
        assert_eq!(unix_ms(time), 1_716_813_791_798);
        assert_eq!(unix_ns(time), 1_716_813_791_798_009_000);
    }

    #[test]
    fn numbers_keep_their_decimal_text() {
        assert_eq!(number("68500.10").to_string(), "68500.10");
        assert_eq!(number("0.00007723").to_string(), "0.00007723");
        assert_eq!(number("not a number"), Value::Null);
    }
}
