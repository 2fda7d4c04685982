//! What a report request asks for: the parameters as they arrive (an HTTP query string or a
//! UDP JSON datagram), checked into a [`ReportRequest`] with a clear error naming the bad field.

use beast_core::{ApiError, Protocol, normalize_asset, not_an_asset, parse_instant_ms};
use beast_store::{Cursor, UsageFilter};
use serde::Deserialize;

/// Rows per page when the request does not say.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
const MAX_NAME_LEN: usize = 64;

/// A parameter that may come as a JSON number or as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Text(t) => t.clone(),
        }
    }
}

/// Report parameters, all optional, as documented in the README (`/reports/usage`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportParams {
    /// Start, inclusive: RFC 3339 or unix ms. Default: everything retained.
    pub from: Option<Scalar>,
    /// End, exclusive: RFC 3339 or unix ms. Default: now and later.
    pub to: Option<Scalar>,
    pub asset: Option<String>,
    /// An exchange name (`coinbase`) or source tag (`coinbase-ws`) among the row's sources.
    pub source: Option<String>,
    /// `http`, `udp` or `ws`.
    pub protocol: Option<String>,
    /// HTTP status of the answer (`200`, `429`, ...).
    pub status: Option<Scalar>,
    pub node: Option<String>,
    /// Admin only: one key's usage.
    pub key_id: Option<Scalar>,
    /// `json` (default), `csv`, `tsv` or `text`.
    pub format: Option<String>,
    /// Rows per page (1 to the node's maximum), or `all` to stream every matching row.
    pub page_size: Option<Scalar>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Tsv,
    Text,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Text => "text",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Tsv => "text/tab-separated-values; charset=utf-8",
            Format::Text => "text/plain; charset=utf-8",
        }
    }

    /// The format named `text` (any case).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        beast_core::by_name(
            &[Format::Json, Format::Csv, Format::Tsv, Format::Text],
            Self::as_str,
            text,
        )
    }
}

/// How many usage rows to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    Rows(u64),
    /// Every matching row, streamed (an export).
    All,
}

/// A checked report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    /// `key_id` is what the caller asked for; the API narrows it to the caller's own key.
    pub filter: UsageFilter,
    pub format: Format,
    pub page_size: PageSize,
    pub cursor: Option<Cursor>,
}

impl ReportRequest {
    /// Whether this asks for every usage row (`page_size=all`): an export, streamed over HTTP
    /// rather than answered in one body.
    pub fn exports(&self, report: crate::Report) -> bool {
        report == crate::Report::Usage && self.page_size == PageSize::All
    }
}

/// `<ts_ms>.<id>`: where a page ended.
pub fn format_cursor(c: Cursor) -> String {
    format!("{}.{}", c.ts_ms, c.id)
}

fn parse_cursor(text: &str) -> Option<Cursor> {
    let (ts, id) = text.trim().split_once('.')?;
    Some(Cursor {
        ts_ms: ts.parse().ok()?,
        id: id.parse().ok()?,
    })
}

/// A name-like parameter (node, source): trimmed, non-empty, at most 64 characters, no
/// control characters.
fn name(field_name: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    let read = |v: &str| {
        let v = v.trim();
        let printable =
            !v.is_empty() && v.chars().count() <= MAX_NAME_LEN && !v.chars().any(char::is_control);
        printable.then(|| v.to_owned())
    };
    let why = |_: &str| format!("expected 1 to {MAX_NAME_LEN} printable characters");
    field(field_name, value.as_deref(), read, why)
}

/// An optional parameter read by `read`: `None` when absent, `invalid_field` with `why` when
/// `read` refuses it.
fn field<V: ?Sized, T>(
    name: &str,
    value: Option<&V>,
    read: impl FnOnce(&V) -> Option<T>,
    why: impl FnOnce(&V) -> String,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| read(v).ok_or_else(|| ApiError::invalid_field(name, why(v))))
        .transpose()
}

impl ReportParams {
    /// Checks every parameter; `page_size_max` caps `page_size`.
    pub fn check(&self, page_size_max: u64) -> Result<ReportRequest, ApiError> {
        let instant = |name: &str, v: &Option<Scalar>, default: i64| {
            let read = |s: &Scalar| parse_instant_ms(&s.text());
            let why = |s: &Scalar| {
                format!(
                    "expected RFC 3339 (2026-11-21T10:00:00Z) or unix milliseconds, 1970 to 9999, got {:?}",
                    beast_core::refused_text(&s.text())
                )
            };
            field(name, v.as_ref(), read, why).map(|t| t.unwrap_or(default))
        };
        let from_ms = instant("from", &self.from, 0)?;
        let to_ms = instant("to", &self.to, i64::MAX)?;
        if to_ms <= from_ms {
            return Err(ApiError::invalid_field("to", "must be later than from"));
        }
        let asset = field(
            "asset",
            self.asset.as_deref(),
            normalize_asset,
            not_an_asset,
        )?;
        let protocol = field(
            "protocol",
            self.protocol.as_deref(),
            |p| Protocol::parse(p).map(|p| p.as_str().to_owned()),
            |p| {
                format!(
                    "expected http, udp or ws, got {:?}",
                    beast_core::refused_text(p)
                )
            },
        )?;
        let status = field(
            "status",
            self.status.as_ref(),
            |s| {
                s.text()
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
            },
            |_| "expected an HTTP status, 100 to 599".into(),
        )?;
        let key_id = field(
            "key_id",
            self.key_id.as_ref(),
            |k| k.text().trim().parse::<i64>().ok(),
            |_| "expected a key id (a number)".into(),
        )?;
        let format = field("format", self.format.as_deref(), Format::parse, |f| {
            format!(
                "expected json, csv, tsv or text, got {:?}",
                beast_core::refused_text(f)
            )
        })?
        .unwrap_or(Format::Json);
        let page_size = field(
            "page_size",
            self.page_size.as_ref(),
            |s| {
                let text = s.text();
                let text = text.trim();
                if text.eq_ignore_ascii_case("all") {
                    Some(PageSize::All)
                } else {
                    let rows = text.parse::<u64>().ok();
                    rows.filter(|n| (1..=page_size_max).contains(n))
                        .map(PageSize::Rows)
                }
            },
            |_| format!("expected 1 to {page_size_max}, or all"),
        )?
        .unwrap_or(PageSize::Rows(DEFAULT_PAGE_SIZE.min(page_size_max)));
        let cursor = field("cursor", self.cursor.as_deref(), parse_cursor, |_| {
            "not a cursor: pass next_cursor of the previous page".into()
        })?;
        Ok(ReportRequest {
            filter: UsageFilter {
                from_ms,
                to_ms,
                key_id,
                asset,
                source: name("source", &self.source)?,
                protocol,
                status,
                node: name("node", &self.node)?,
            },
            format,
            page_size,
            cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> ReportParams {
        serde_urlencoded::from_str(query).unwrap()
    }

    #[test]
    fn a_full_query_is_checked_into_a_filter() {
        let r = params(
            "from=2025-11-21T00:00:00Z&to=1763769600000&asset=btc&source=coinbase-ws&protocol=udp\
             &status=429&node=n1&key_id=7&format=CSV&page_size=50&cursor=1763700000000.42",
        )
        .check(1000)
        .unwrap();
        assert_eq!(
            r.filter,
            UsageFilter {
                from_ms: 1_763_683_200_000,
                to_ms: 1_763_769_600_000,
                key_id: Some(7),
                asset: Some("BTC".into()),
                source: Some("coinbase-ws".into()),
                protocol: Some("udp".into()),
                status: Some(429),
                node: Some("n1".into()),
            }
        );
        assert_eq!(r.format, Format::Csv);
        assert_eq!(r.page_size, PageSize::Rows(50));
        assert_eq!(
            r.cursor,
            Some(Cursor {
                ts_ms: 1_763_700_000_000,
                id: 42
            })
        );
    }

    #[test]
    fn defaults_cover_everything_as_json_pages() {
        let r = params("").check(1000).unwrap();
        assert_eq!((r.filter.from_ms, r.filter.to_ms), (0, i64::MAX));
        assert_eq!(r.format, Format::Json);
        assert_eq!(r.page_size, PageSize::Rows(DEFAULT_PAGE_SIZE));
        let all = params("page_size=all").check(10).unwrap();
        assert_eq!(all.page_size, PageSize::All);
        // Only a usage report of every row is an export; a summary has no pages.
        assert!(all.exports(crate::Report::Usage));
        assert!(!all.exports(crate::Report::Summary));
        assert!(!r.exports(crate::Report::Usage));
    }

    #[test]
    fn each_bad_parameter_is_named() {
        for (query, field) in [
            ("from=yesterday", "from"),
            ("from=2000&to=1000", "to"),
            ("from=-5", "from"),
            ("to=9999999999999999", "to"),
            ("asset=BTC-USD", "asset"),
            ("protocol=smtp", "protocol"),
            ("status=42", "status"),
            ("key_id=me", "key_id"),
            ("format=xml", "format"),
            ("page_size=0", "page_size"),
            ("page_size=1001", "page_size"),
            ("cursor=abc", "cursor"),
            ("node=", "node"),
            ("source=a%07b", "source"),
        ] {
            match params(query).check(1000) {
                Err(ApiError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_numbers_are_accepted_where_text_is() {
        let p: ReportParams =
            serde_json::from_str(r#"{"from":1000,"to":"2000","status":200,"page_size":5}"#)
                .unwrap();
        let r = p.check(10).unwrap();
        assert_eq!((r.filter.from_ms, r.filter.to_ms), (1000, 2000));
        assert_eq!(r.filter.status, Some(200));
        assert_eq!(r.page_size, PageSize::Rows(5));
    }
}
