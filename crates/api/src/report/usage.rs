//! `GET /reports/usage`: usage rows, newest first, in json, csv, tsv or text. A page carries
//! the cursor of the next one (`next_cursor` in JSON, `X-Next-Cursor` in every format);
//! `page_size=all` streams every matching row instead.

use std::io;

use axum::{
    Extension,
    body::Body,
    extract::{RawQuery, State},
    http::HeaderMap,
    response::Response,
};
use beast_reports::{
    Report,
    usage::{self, ExportEnd},
};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::body_response;
use crate::{AppState, http::Peer};

/// Chunks of an export waiting for a slow reader.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 8;

pub async fn usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    RawQuery(query): RawQuery,
) -> Response {
    let (request, ticket) = match state
        .admit_http(&headers, peer.map(|Extension(p)| p), query, Report::Usage)
        .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    if !request.exports(Report::Usage) {
        return state.answer_http(Report::Usage, request, ticket).await;
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(EXPORT_CHUNKS_IN_FLIGHT);
    let format = request.format;
    tokio::spawn(async move {
        let exported = usage::export(&*state.store, &request, tx).await;
        let status = match exported.end {
            ExportEnd::Complete => 200,
            ExportEnd::ReaderGone => 499,
            ExportEnd::Failed(e) => {
                tracing::error!(error = %e, rows = exported.rows, "usage export failed midway");
                500
            }
        };
        state.finish_report(ticket, status, exported.rows).await;
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    body_response(format, Body::from_stream(chunks), None)
}
