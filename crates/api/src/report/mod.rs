//! The report listener (role `report`): `GET /reports/usage` and `GET /reports/summary` over
//! HTTP, and the same reports as JSON datagrams over UDP (`udp`). A key sees only its own
//! usage; the admin key sees all and may filter by `key_id`. Keys whose tier has no reports
//! get 403; each answered report takes one from the key's monthly allowance (429 with the
//! reset time once used up). Every authenticated report request is logged in
//! `report_usage_logs`, whatever its outcome.

mod summary;
pub mod udp;
mod usage;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
    routing::get,
};
use beast_core::{
    ApiError, Protocol, latency_us, month_of, next_month_start_ms, now_ms, retry_after_s,
};
use beast_reports::{
    Format, Report, ReportParams, ReportRequest, query::format_cursor, usage::Page,
};
use beast_store::{Allowance, Cursor, ReportLogEntry};

use crate::{
    AppState,
    http::{Peer, error_response, key_refused, presented_key, typed_response},
    internal,
    keys::KeyEntry,
};

/// The reports' paths: keyed routes, which spend an address's allowance of unpaid requests
/// themselves once their key is refused ([`crate::http::key_refused`]).
pub(crate) const USAGE: &str = "/reports/usage";
pub(crate) const SUMMARY: &str = "/reports/summary";

/// The report listener's routes (with `/health`).
pub fn report_router(state: AppState) -> Router {
    Router::new()
        .route(USAGE, get(usage::usage))
        .route(SUMMARY, get(summary::summary))
        .route("/health", get(crate::http::health::health))
        .fallback(crate::http::not_found)
        .with_state(state)
}

/// A report body with its content type, and the next page's cursor if there is one.
pub(crate) fn body_response(
    format: Format,
    body: impl Into<Body>,
    next: Option<Cursor>,
) -> Response {
    let mut response = typed_response(StatusCode::OK, format.content_type(), body);
    if let Some(cursor) = next.and_then(|c| HeaderValue::from_str(&format_cursor(c)).ok()) {
        response.headers_mut().insert("x-next-cursor", cursor);
    }
    response
}

fn streams_over_http_only() -> ApiError {
    ApiError::invalid_field("page_size", "page_size=all streams over HTTP only")
}

/// Who asks for a report.
pub(crate) enum Caller {
    Admin,
    Key(Arc<KeyEntry>),
}

/// Longest query text kept in `report_usage_logs`.
const MAX_LOGGED_QUERY: usize = 512;

/// One report request from admission to its log row.
pub(crate) struct Ticket {
    key_id: Option<i64>,
    report: Report,
    protocol: Protocol,
    format: Format,
    query: String,
    started: Instant,
    /// The month a report was taken from the key's allowance in, to give it back if the
    /// report is not answered.
    taken: Option<String>,
}

impl Ticket {
    pub(crate) fn new(caller: &Caller, report: Report, protocol: Protocol, query: &str) -> Self {
        Self {
            key_id: match caller {
                Caller::Admin => None,
                Caller::Key(k) => Some(k.id),
            },
            report,
            protocol,
            format: Format::Json,
            query: query.chars().take(MAX_LOGGED_QUERY).collect(),
            started: Instant::now(),
            taken: None,
        }
    }
}

impl AppState {
    /// The caller a key names: the admin key, or an active API key (refusals counted).
    pub(crate) fn caller_of(&self, key: Result<&str, ApiError>) -> Result<Caller, ApiError> {
        // Hashed once for both checks.
        match key.map(|k| self.keys.presented_hash(k)) {
            Ok(hash) if self.admin.verify_hash(&hash) => Ok(Caller::Admin),
            hash => self.authenticate_hash(hash.as_ref()).map(Caller::Key),
        }
    }

    /// Admits an HTTP report request: its key (401 unlogged; from `peer` on a public listener,
    /// a refused key also spends one of the address's unpaid requests, 429 past them), then as
    /// [`AppState::admit_report`] does; a refusal is logged and answered here.
    pub(crate) async fn admit_http(
        &self,
        headers: &HeaderMap,
        peer: Option<Peer>,
        query: Option<String>,
        report: Report,
    ) -> Result<(ReportRequest, Ticket), Response> {
        self.counters.report_request();
        let caller = self
            .caller_of(presented_key(headers))
            .map_err(|e| key_refused(self, peer.map(|Peer(p)| p), || false, &e))?;
        let query = query.unwrap_or_default();
        let mut ticket = Ticket::new(&caller, report, Protocol::Http, &query);
        let admitted = match crate::http::parse_query::<ReportParams>(Some(&query)) {
            Ok(params) => self.admit_report(&caller, &params, &mut ticket).await,
            Err(e) => Err(e),
        };
        match admitted {
            Ok(request) => Ok((request, ticket)),
            Err(e) => {
                self.finish_report(ticket, e.status(), 0).await;
                Err(error_response(&e))
            }
        }
    }

    /// Admits a report request: the tier includes reports, the parameters are valid, the
    /// caller may see what it asks for (a key only its own usage), and the key's monthly
    /// allowance has room (one is taken).
    pub(crate) async fn admit_report(
        &self,
        caller: &Caller,
        params: &ReportParams,
        ticket: &mut Ticket,
    ) -> Result<ReportRequest, ApiError> {
        if let Caller::Key(k) = caller
            && !k.tier.reports_enabled
        {
            return Err(ApiError::ReportsNotIncluded);
        }
        let mut request = params.check(self.reports.page_size_max)?;
        ticket.format = request.format;
        if ticket.protocol == Protocol::Udp {
            if request.format != Format::Json {
                return Err(ApiError::invalid_field(
                    "format",
                    "UDP answers are JSON; ask over HTTP for csv, tsv or text",
                ));
            }
            // Only a usage export streams; a summary has no pages.
            if request.exports(ticket.report) {
                return Err(streams_over_http_only());
            }
        }
        if let Caller::Key(k) = caller {
            match request.filter.key_id {
                Some(id) if id != k.id => {
                    return Err(ApiError::invalid_field(
                        "key_id",
                        "a key sees only its own usage; key_id needs the admin key",
                    ));
                }
                _ => request.filter.key_id = Some(k.id),
            }
        }
        if let Caller::Key(k) = caller
            && !k.tier.unlimited
        {
            let now = now_ms();
            let month = month_of(now);
            let allowance = k.tier.monthly_report_allowance;
            match self.store.take_report(k.id, &month, allowance).await {
                Ok(Allowance::Taken) => ticket.taken = Some(month),
                Ok(Allowance::UsedUp) => {
                    let resets_at_ms = next_month_start_ms(now);
                    return Err(ApiError::ReportAllowanceUsed {
                        allowance,
                        retry_after_s: retry_after_s(now, resets_at_ms),
                        resets_at_ms,
                    });
                }
                Err(e) => return Err(internal("the report allowance is unavailable", &e)),
            }
        }
        Ok(request)
    }

    /// The body of an admitted summary or usage page (not an export: that streams).
    pub(crate) async fn answer(
        &self,
        report: Report,
        request: &ReportRequest,
    ) -> Result<Page, ApiError> {
        beast_reports::answer(&*self.store, report, request)
            .await
            .map_err(|e| internal("the report could not be computed", &e))?
            // Streamed by the HTTP export; a UDP request for it is refused at admission.
            .ok_or_else(streams_over_http_only)
    }

    /// Answers an admitted HTTP summary or page and finishes its ticket in a task of its own,
    /// so a client that goes away midway still has its request logged (and its allowance
    /// given back if nothing was answered).
    pub(crate) async fn answer_http(
        &self,
        report: Report,
        request: ReportRequest,
        ticket: Ticket,
    ) -> Response {
        let state = self.clone();
        let task = tokio::spawn(async move {
            let answer = state.answer(report, &request).await;
            let (status, rows) = match &answer {
                Ok(a) => (200, a.rows),
                Err(e) => (e.status(), 0),
            };
            state.finish_report(ticket, status, rows).await;
            answer.map(|a| body_response(request.format, a.body, a.next_cursor))
        });
        match task.await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => error_response(&e),
            Err(e) => error_response(&internal("the report failed", &e)),
        }
    }

    /// Logs a finished report request. One that answered nothing (refused, failed, too
    /// large for UDP, or a reader gone before the first row) gives its allowance back.
    pub(crate) async fn finish_report(&self, ticket: Ticket, status: u16, rows: u64) {
        if status != 200
            && rows == 0
            && let (Some(key_id), Some(month)) = (ticket.key_id, &ticket.taken)
            && let Err(e) = self.store.give_back_report(key_id, month).await
        {
            tracing::warn!(error = %e, key_id, "giving back a report allowance failed");
        }
        let entry = ReportLogEntry {
            ts_ms: now_ms(),
            key_id: ticket.key_id,
            report: ticket.report.as_str().to_owned(),
            format: ticket.format.as_str().to_owned(),
            protocol: ticket.protocol.as_str().to_owned(),
            node: self.node.to_string(),
            status,
            latency_us: latency_us(ticket.started),
            rows: rows.min(i64::MAX as u64) as i64,
            query: ticket.query,
        };
        if let Err(e) = self.store.log_report(&entry).await {
            tracing::error!(error = %e, "logging a report request failed");
        }
    }
}
