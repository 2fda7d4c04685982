//! Shared vocabulary of Trinity Beast: prices, ticks, exchange definitions, asset mappings,
//! tiers, usage events and the one API error table every protocol uses, with no IO; and the
//! one periodic-duty timer ([`Ticks`]), the only part that needs a runtime (tokio).

pub mod definition;
pub mod error;
pub mod price;
pub mod ticks;
pub mod usage;

pub use definition::{AssetMapping, ExchangeDefinition, Tier, TimeFormat};
pub use error::ApiError;
pub use price::{Price, Tick, TickSink};
pub use ticks::Ticks;
pub use usage::{CacheTier, Protocol, UsageEvent, by_name};

/// Longest asset (or quote currency) name.
pub const MAX_ASSET_LEN: usize = 20;

/// Why `raw` is not an asset name, for any error that refuses one.
pub fn not_an_asset(raw: &str) -> String {
    format!(
        "{:?} is not 1 to {MAX_ASSET_LEN} letters or digits",
        refused_text(raw)
    )
}

/// What an error message repeats of a value it refuses: its first 40 characters.
pub fn refused_text(raw: &str) -> String {
    raw.chars().take(40).collect()
}

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

/// One UTC day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Start (unix ms) of the UTC day containing `ts_ms`.
pub fn day_start_ms(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS) * DAY_MS
}

fn utc(ts_ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-21T10:00:00.123Z`: RFC 3339 in UTC with milliseconds, for reports.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    utc(ts_ms).format(&format).unwrap_or_default()
}

/// `2026-11-21`: the UTC day of an instant.
pub fn day_name(ts_ms: i64) -> String {
    let d = utc(ts_ms);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The last millisecond of year 9999, the latest instant [`rfc3339_ms`] prints.
pub const MAX_INSTANT_MS: i64 = 253_402_300_799_999;

/// Unix milliseconds of an RFC 3339 time (any offset, any number of fractional digits).
pub fn rfc3339_to_ms(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// An instant given as unix milliseconds (`1763719200000`) or RFC 3339
/// (`2026-11-21T10:00:00Z`, any offset), from 1970 to the end of 9999; `None` otherwise.
pub fn parse_instant_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let ms = match text.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => rfc3339_to_ms(text)?,
    };
    (0..=MAX_INSTANT_MS).contains(&ms).then_some(ms)
}

/// Calendar months, for monthly quotas: `YYYY-MM` of a unix-ms instant (UTC).
pub fn month_of(ts_ms: i64) -> String {
    let t = utc(ts_ms);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// Unix ms at which the month containing `ts_ms` ends (the next month starts, UTC).
pub fn next_month_start_ms(ts_ms: i64) -> i64 {
    let t = utc(ts_ms);
    let (year, month) = match t.month() {
        time::Month::December => (t.year() + 1, time::Month::January),
        m => (t.year(), m.next()),
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .unwrap_or(i64::MAX)
}

/// Whole seconds from `now_ms` until `at_ms`, at least 1: a `Retry-After` value.
pub fn retry_after_s(now_ms: i64, at_ms: i64) -> u64 {
    (at_ms.saturating_sub(now_ms).max(1000) as u64).div_ceil(1000)
}

/// Microseconds since `started`, capped to fit a usage row's latency column.
pub fn latency_us(started: std::time::Instant) -> u32 {
    started.elapsed().as_micros().min(u32::MAX as u128) as u32
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

    #[test]
    fn instants_read_as_unix_ms_or_rfc3339_and_print_back() {
        let ms = 1_763_719_200_123;
        assert_eq!(rfc3339_ms(ms), "2025-11-21T10:00:00.123Z");
        assert_eq!(parse_instant_ms("2025-11-21T10:00:00.123Z"), Some(ms));
        assert_eq!(parse_instant_ms("2025-11-21T11:00:00.123+01:00"), Some(ms));
        assert_eq!(parse_instant_ms(" 1763719200123 "), Some(ms));
        assert_eq!(parse_instant_ms("yesterday"), None);
        assert_eq!(parse_instant_ms("-1"), None);
        assert_eq!(parse_instant_ms(&i64::MIN.to_string()), None);
        assert_eq!(parse_instant_ms("10000-01-01T00:00:00Z"), None);
        assert_eq!(
            rfc3339_ms(MAX_INSTANT_MS),
            "9999-12-31T23:59:59.999Z",
            "the latest instant accepted still prints"
        );
        assert_eq!(day_name(ms), "2025-11-21");
        assert_eq!(day_start_ms(ms), 1_763_683_200_000);
        assert_eq!(day_start_ms(-1), -DAY_MS);
    }
}
