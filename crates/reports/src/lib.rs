//! Usage reports (the seeds' LRS): `query` checks what a request asks for, `usage` reads raw
//! rows (a page with a cursor, or a streamed export), `summary` totals them with breakdowns
//! and latency percentiles, `table` renders JSON, CSV, TSV and text, `sketch` keeps latency
//! distributions mergeable, and `rollup` keeps daily rollups and prunes old raw rows.

pub mod query;
pub mod rollup;
pub mod sketch;
pub mod summary;
pub mod table;
pub mod usage;

use std::time::Duration;

pub use query::{Format, PageSize, ReportParams, ReportRequest};

/// The two reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Usage,
    Summary,
}

impl Report {
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Usage => "usage",
            Report::Summary => "summary",
        }
    }

    /// The HTTP request for the report (`GET /reports/usage`).
    pub fn http_request(self) -> &'static str {
        match self {
            Report::Usage => "GET /reports/usage",
            Report::Summary => "GET /reports/summary",
        }
    }

    /// `usage` or `summary`, in any case, as formats and protocols are read.
    pub fn parse(name: &str) -> Option<Self> {
        beast_core::by_name(&[Report::Usage, Report::Summary], Self::as_str, name)
    }
}
pub use summary::{Summary, SummaryError, summarize};

/// A summary or one page of usage rows, as the API and `beast report` answer them (the body,
/// the groups or rows in it, where the next page starts); `None` for a usage export
/// ([`ReportRequest::exports`]), which streams instead ([`usage::export`]).
pub async fn answer(
    store: &dyn beast_store::Store,
    report: Report,
    request: &ReportRequest,
) -> Result<Option<usage::Page>, SummaryError> {
    Ok(match (report, request.page_size) {
        (Report::Summary, _) => {
            let summary = summarize(store, &request.filter).await?;
            Some(usage::Page {
                body: summary.render(request.format),
                rows: summary.groups() as u64,
                next_cursor: None,
            })
        }
        (Report::Usage, PageSize::Rows(size)) => Some(usage::page(store, request, size).await?),
        (Report::Usage, PageSize::All) => None,
    })
}

/// Report settings, from `application_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// Largest `page_size` a request may ask for.
    pub page_size_max: u64,
    /// Largest report answer sent as one UDP datagram.
    pub udp_max_bytes: usize,
    /// Raw usage kept this many days by `beast sync`.
    pub retention_days: u64,
    /// A day is rolled up this long after it ended.
    pub rollup_delay_ms: i64,
    /// How often the server looks for days to roll up.
    pub rollup_every: Duration,
}

#[cfg(test)]
mod tests;
