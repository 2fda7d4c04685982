//! `GET /reports/summary`: totals, errors, cache tiers and latency percentiles, overall and
//! per asset, source, protocol and day, in json, csv, tsv or text.

use axum::{
    extract::{RawQuery, State},
    http::HeaderMap,
    response::Response,
};
use beast_core::ApiError;
use beast_reports::{ReportRequest, Summary, summarize};

use super::{Report, body_response};
use crate::{AppState, http::error_response};

pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (request, ticket) = match state.admit_http(&headers, query, Report::Summary).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    match state.summary_of(&request).await {
        Ok(summary) => {
            state
                .finish_report(ticket, 200, summary.groups() as u64)
                .await;
            body_response(request.format, summary.render(request.format), None)
        }
        Err(e) => {
            state.finish_report(ticket, e.status(), 0).await;
            error_response(&e)
        }
    }
}

impl AppState {
    /// The summary a checked request asks for.
    pub(crate) async fn summary_of(&self, request: &ReportRequest) -> Result<Summary, ApiError> {
        summarize(&*self.store, &request.filter).await.map_err(|e| {
            tracing::error!(error = %e, "summary failed");
            ApiError::Internal("the summary could not be computed".into())
        })
    }
}
