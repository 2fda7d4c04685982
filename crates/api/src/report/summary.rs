//! `GET /reports/summary`: totals, errors, cache tiers and latency percentiles, overall and
//! per asset, source, protocol and day, in json, csv, tsv or text.

use axum::{
    extract::{RawQuery, State},
    http::HeaderMap,
    response::Response,
};
use beast_core::ApiError;
use beast_reports::summarize;

use super::{Caller, Report, Ticket};
use crate::{AppState, http::error_response};

pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match state.report_caller(&headers) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let query = query.unwrap_or_default();
    let mut ticket = Ticket::new(&caller, Report::Summary, "http", &query);
    let (status, groups, response) = match answer(&state, &caller, &query, &mut ticket).await {
        Ok((format, body, groups)) => {
            (200, groups, super::usage::body_response(format, body, None))
        }
        Err(e) => (e.status(), 0, error_response(&e)),
    };
    state.finish_report(ticket, status, groups).await;
    response
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    query: &str,
    ticket: &mut Ticket,
) -> Result<(beast_reports::Format, Vec<u8>, u64), ApiError> {
    let request = state.admit_query(caller, query, ticket).await?;
    let summary = state.summary_of(&request).await?;
    Ok((
        request.format,
        summary.render(request.format),
        summary.groups() as u64,
    ))
}

impl AppState {
    /// The summary a checked request asks for.
    pub(crate) async fn summary_of(
        &self,
        request: &beast_reports::ReportRequest,
    ) -> Result<beast_reports::Summary, ApiError> {
        summarize(&*self.store, &request.filter).await.map_err(|e| {
            tracing::error!(error = %e, "summary failed");
            ApiError::Internal("the summary could not be computed".into())
        })
    }
}
