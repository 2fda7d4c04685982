//! Shared vocabulary of Trinity Beast, with no IO: prices, ticks, exchange definitions,
//! asset mappings, tiers, usage events and the one API error table every protocol uses.

pub mod definition;
pub mod error;
pub mod price;
pub mod usage;

pub use definition::{AssetMapping, ExchangeDefinition, Tier, TimeFormat};
pub use error::ApiError;
pub use price::{Price, Tick, TickSink};
pub use usage::{CacheTier, Protocol, UsageEvent};

/// Longest asset (or quote currency) name.
pub const MAX_ASSET_LEN: usize = 20;

/// A normalized asset name (` btc ` → `BTC`), or `None` if it is not 1 to
/// [`MAX_ASSET_LEN`] ASCII letters or digits.
pub fn normalize_asset(raw: &str) -> Option<String> {
    let asset = raw.trim().to_ascii_uppercase();
    let valid = !asset.is_empty()
        && asset.len() <= MAX_ASSET_LEN
        && asset.chars().all(|c| c.is_ascii_alphanumeric());
    valid.then_some(asset)
}

/// Wall-clock time in unix milliseconds. Ages and freshness are measured on this clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Calendar months, for monthly quotas: `YYYY-MM` of a unix-ms instant (UTC).
pub fn month_of(ts_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ts_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// Unix ms at which the month containing `ts_ms` ends (the next month starts, UTC).
pub fn next_month_start_ms(ts_ms: i64) -> i64 {
    let t = time::OffsetDateTime::from_unix_timestamp(ts_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month) = match t.month() {
        time::Month::December => (t.year() + 1, time::Month::January),
        m => (t.year(), m.next()),
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod calendar_tests {
    use super::*;

    #[test]
    fn months_roll_over_at_utc_midnight() {
        // 2025-12-31T23:59:59.999Z and the instant after.
        assert_eq!(month_of(1_767_225_599_999), "2025-12");
        assert_eq!(month_of(1_767_225_600_000), "2026-01");
        assert_eq!(next_month_start_ms(1_767_225_599_999), 1_767_225_600_000);
        assert_eq!(next_month_start_ms(1_767_225_600_000), 1_769_904_000_000);
    }
}
