//! What the store keeps for usage reports, as typed rows: raw usage rows read back, daily
//! rollups, report log entries, and the filter every report query applies.

/// Which usage a report covers. Times are unix ms, `[from_ms, to_ms)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub from_ms: i64,
    pub to_ms: i64,
    /// One key's rows only (always set for a customer).
    pub key_id: Option<i64>,
    pub asset: Option<String>,
    /// A source tag (`coinbase-ws`), or the name of an exchange (`coinbase`) for its tag,
    /// that must be among the row's sources.
    pub source: Option<String>,
    pub protocol: Option<String>,
    pub status: Option<u16>,
    pub node: Option<String>,
}

impl UsageFilter {
    /// The same filter over another time range.
    pub fn between(&self, from_ms: i64, to_ms: i64) -> Self {
        Self {
            from_ms,
            to_ms,
            ..self.clone()
        }
    }
}

/// Where a page of usage rows ends: rows are ordered newest first by `(ts_ms, id)`, and the
/// next page starts strictly after this one, so rows written meanwhile never shift a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts_ms: i64,
    pub id: i64,
}

/// Where pruning stops in each table: rows before it go (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Raw usage; `None` keeps it all (no day is rolled up yet).
    pub usage: Option<i64>,
    pub report_logs: i64,
}

/// What one pruning batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub usage_rows: u64,
    pub report_log_rows: u64,
}

/// One row of `usage_logs` as reports show it. Read from the store as a JSON array of the
/// columns in this field order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct UsageRow {
    pub id: i64,
    pub ts_ms: i64,
    pub key_id: i64,
    pub asset: String,
    pub source: String,
    pub protocol: String,
    pub node: String,
    pub status: u16,
    pub latency_us: u32,
    pub cache_tier: String,
}

/// One row of `usage_daily`: a UTC day of one (key, asset, source, protocol, node, status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub day_ms: i64,
    pub key_id: i64,
    pub asset: String,
    pub source: String,
    pub protocol: String,
    pub node: String,
    pub status: u16,
    pub requests: i64,
    /// Answers served from memory and from an on-demand REST fetch (the rest answered nothing).
    pub memory: i64,
    pub rest: i64,
    pub latency_sum_us: i64,
    pub latency_max_us: i64,
    /// A mergeable latency histogram, as its owner (`beast-reports`) writes it.
    pub latency_sketch: String,
}

/// One report request, for `report_usage_logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLogEntry {
    pub ts_ms: i64,
    /// `None` for the admin key.
    pub key_id: Option<i64>,
    /// `usage` or `summary`.
    pub report: String,
    pub format: String,
    pub protocol: String,
    pub node: String,
    pub status: u16,
    pub latency_us: u32,
    /// Rows (usage) or groups (summary) returned.
    pub rows: i64,
    /// The request's query, as given (cut to a sane length).
    pub query: String,
}

/// The answer to taking one report from a key's monthly allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Taken: there was room.
    Taken,
    /// The allowance is used up for this month.
    UsedUp,
}
