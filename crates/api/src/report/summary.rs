//! `GET /reports/summary`: totals, errors, cache tiers and latency percentiles, overall and
//! per asset, source, protocol and day, in json, csv, tsv or text.

use axum::{
    Extension,
    extract::{RawQuery, State},
    http::HeaderMap,
    response::Response,
};
use beast_reports::Report;

use crate::{AppState, http::Peer};

pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    RawQuery(query): RawQuery,
) -> Response {
    match state
        .admit_http(&headers, peer.map(|Extension(p)| p), query, Report::Summary)
        .await
    {
        Ok((request, ticket)) => state.answer_http(Report::Summary, request, ticket).await,
        Err(refused) => refused,
    }
}
