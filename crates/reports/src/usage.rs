//! `usage` reports: raw usage rows, newest first, as one page with a cursor to the next, or
//! as an export of every matching row streamed in chunks.

use std::io;

use beast_core::rfc3339_ms;
use beast_store::{Cursor, Store, StoreError, UsageRow};
use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::sync::mpsc;

use crate::{
    query::{Format, ReportRequest, format_cursor},
    table::{Cell, Column, TableWriter},
};

/// Columns of a usage row (name, text width).
pub const USAGE_COLUMNS: &[Column] = &[
    ("id", 9),
    ("time", 24),
    ("key_id", 6),
    ("asset", 6),
    ("source", 22),
    ("protocol", 8),
    ("node", 10),
    ("status", 6),
    ("latency_us", 10),
    ("cache_tier", 10),
];

/// Bytes gathered before a chunk of an export is sent.
const CHUNK_BYTES: usize = 64 * 1024;

fn write_row(w: &mut TableWriter, r: &UsageRow) {
    let time = rfc3339_ms(r.ts_ms);
    w.row(&[
        Cell::Int(r.id),
        Cell::Str(&time),
        Cell::Int(r.key_id),
        Cell::Str(&r.asset),
        Cell::Str(&r.source),
        Cell::Str(&r.protocol),
        Cell::Str(&r.node),
        Cell::Int(i64::from(r.status)),
        Cell::Int(i64::from(r.latency_us)),
        Cell::Str(&r.cache_tier),
    ]);
}

fn json_tail(rows: u64, next: Option<Cursor>) -> Vec<u8> {
    let next = next.map_or("null".to_owned(), |c| format!("\"{}\"", format_cursor(c)));
    format!("],\"count\":{rows},\"next_cursor\":{next}}}").into_bytes()
}

const JSON_HEAD: &[u8] = b"{\"rows\":[";

/// One page of usage rows.
pub struct Page {
    pub body: Vec<u8>,
    pub rows: u64,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// Reads one page of at most `size` rows after `request.cursor`.
pub async fn page(
    store: &dyn Store,
    request: &ReportRequest,
    size: u64,
) -> Result<Page, StoreError> {
    let mut stream = store.usage_rows(
        &request.filter,
        request.cursor,
        Some(size.saturating_add(1)),
    );
    let mut w = TableWriter::new(request.format, USAGE_COLUMNS);
    let (mut rows, mut last, mut more) = (0, None, false);
    while let Some(row) = stream.try_next().await? {
        if rows == size {
            more = true;
            break;
        }
        write_row(&mut w, &row);
        rows += 1;
        last = Some(Cursor {
            ts_ms: row.ts_ms,
            id: row.id,
        });
    }
    let next_cursor = if more { last } else { None };
    let mut body = Vec::new();
    if request.format == Format::Json {
        body.extend_from_slice(JSON_HEAD);
    }
    body.extend(w.take());
    if request.format == Format::Json {
        body.extend(json_tail(rows, next_cursor));
    }
    Ok(Page {
        body,
        rows,
        next_cursor,
    })
}

/// How an export ended.
#[derive(Debug)]
pub enum ExportEnd {
    Complete,
    /// The reader went away before the end.
    ReaderGone,
    /// The store failed midway (the stream ended with an error item).
    Failed(StoreError),
}

/// What an export sent, and how it ended.
#[derive(Debug)]
pub struct Exported {
    /// Rows handed to the reader, in whole chunks: a reader gone before the first chunk got
    /// none, whatever was read from the store.
    pub rows: u64,
    pub end: ExportEnd,
}

/// Streams every matching row into `out`, in chunks of about 64 KiB; a store failure is sent
/// as an error item, so an HTTP body ends abnormally instead of looking complete.
pub async fn export(
    store: &dyn Store,
    request: &ReportRequest,
    out: mpsc::Sender<Result<Bytes, io::Error>>,
) -> Exported {
    let mut stream = store.usage_rows(&request.filter, request.cursor, None);
    let mut w = TableWriter::new(request.format, USAGE_COLUMNS);
    let mut pending = Vec::new();
    if request.format == Format::Json {
        pending.extend_from_slice(JSON_HEAD);
    }
    // Rows read in all, and of those handed over.
    let (mut read, mut sent) = (0, 0);
    let end = loop {
        match stream.try_next().await {
            Ok(Some(row)) => {
                write_row(&mut w, &row);
                read += 1;
                if w.buffered() >= CHUNK_BYTES {
                    pending.extend(w.take());
                    let chunk = Bytes::from(std::mem::take(&mut pending));
                    if out.send(Ok(chunk)).await.is_err() {
                        break ExportEnd::ReaderGone;
                    }
                    sent = read;
                }
            }
            Ok(None) => {
                pending.extend(w.take());
                if request.format == Format::Json {
                    pending.extend(json_tail(read, None));
                }
                if out.send(Ok(Bytes::from(pending))).await.is_err() {
                    break ExportEnd::ReaderGone;
                }
                sent = read;
                break ExportEnd::Complete;
            }
            Err(e) => {
                let _ = out.send(Err(io::Error::other(e.to_string()))).await;
                break ExportEnd::Failed(e);
            }
        }
    };
    Exported { rows: sent, end }
}
