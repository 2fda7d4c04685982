//! Reports over UDP (the report UDP listener, default `:2680`): one JSON datagram in,
//! `{"key":"...","report":"summary"|"usage", "id":"..", ...the HTTP parameters}`, one JSON
//! datagram out with the same body as HTTP (and the `id` first). An answer too large for one
//! datagram is refused with `too_large_for_udp`, pointing to the HTTP endpoint; it does not
//! use up the allowance. Not JSON at all: dropped.

use std::{net::SocketAddr, sync::Arc};

use beast_core::ApiError;
use beast_reports::{Format, PageSize, ReportParams, usage};
use serde::Deserialize;
use tokio::{net::UdpSocket, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Caller, Report, Ticket};
use crate::{AppState, udp::with_id};

/// Longest request datagram read.
const MAX_REQUEST: usize = 4096;
/// Reports computed at once; further datagrams wait in the socket buffer.
const IN_FLIGHT: usize = 32;
const MAX_ID: usize = 64;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default)]
    key: String,
    report: Option<String>,
    #[serde(flatten)]
    params: ReportParams,
}

/// Answers report datagrams on `socket` until `cancel` fires.
pub async fn serve(
    state: AppState,
    socket: std::net::UdpSocket,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let socket = Arc::new(UdpSocket::from_std(socket)?);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "report udp receive failed");
                    continue;
                }
            },
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&buf[..len]) else {
            tracing::debug!(%peer, "report udp datagram is not JSON, dropped");
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let (state, socket) = (state.clone(), socket.clone());
        tokio::spawn(async move {
            let reply = answer(&state, value).await;
            send(&socket, &reply, peer).await;
            drop(permit);
        });
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        tracing::debug!(error = %e, %peer, "report udp send failed");
    }
}

async fn answer(state: &AppState, value: serde_json::Value) -> Vec<u8> {
    let id = value
        .get("id")
        .and_then(|i| i.as_str())
        .filter(|i| i.chars().count() <= MAX_ID)
        .map(str::to_owned);
    let request: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return with_id(
                id.as_deref(),
                Err(&ApiError::BadRequest(format!("bad request: {e}"))),
            );
        }
    };
    let caller = match state.caller_of(request.key.trim()) {
        Ok(c) => c,
        Err(e) => {
            let e = if request.key.trim().is_empty() {
                ApiError::MissingKey
            } else {
                e
            };
            return with_id(id.as_deref(), Err(&e));
        }
    };
    let report = match request.report.as_deref() {
        Some("summary") => Report::Summary,
        Some("usage") => Report::Usage,
        _ => {
            return with_id(
                id.as_deref(),
                Err(&ApiError::InvalidField {
                    field: "report".into(),
                    message: "expected \"summary\" or \"usage\"".into(),
                }),
            );
        }
    };
    let query = serde_json::to_string(&request.params).unwrap_or_default();
    let mut ticket = Ticket::new(&caller, report, "udp", &query);
    let (status, rows, body) = match respond(state, &caller, report, &request, &mut ticket).await {
        Ok((rows, body)) => {
            let reply = with_id(id.as_deref(), Ok(body));
            if reply.len() > state.reports.udp_max_bytes {
                let e = ApiError::TooLargeForUdp {
                    bytes: reply.len(),
                    max: state.reports.udp_max_bytes,
                    report: report.as_str(),
                };
                (e.status(), 0, with_id(id.as_deref(), Err(&e)))
            } else {
                (200, rows, reply)
            }
        }
        Err(e) => (e.status(), 0, with_id(id.as_deref(), Err(&e))),
    };
    state.finish_report(ticket, status, rows).await;
    body
}

/// The rows (or groups) and JSON body of an admitted report.
async fn respond(
    state: &AppState,
    caller: &Caller,
    report: Report,
    request: &Request,
    ticket: &mut Ticket,
) -> Result<(u64, Vec<u8>), ApiError> {
    if request
        .params
        .format
        .as_deref()
        .is_some_and(|f| !f.trim().eq_ignore_ascii_case("json"))
    {
        return Err(ApiError::InvalidField {
            field: "format".into(),
            message: "UDP answers are JSON; ask over HTTP for csv, tsv or text".into(),
        });
    }
    let checked = state.admit_report(caller, &request.params, ticket).await?;
    debug_assert_eq!(checked.format, Format::Json);
    match report {
        Report::Summary => {
            let summary = state.summary_of(&checked).await?;
            Ok((summary.groups() as u64, summary.render(Format::Json)))
        }
        Report::Usage => {
            let size = match checked.page_size {
                PageSize::Rows(n) => n,
                PageSize::All => {
                    return Err(ApiError::InvalidField {
                        field: "page_size".into(),
                        message: "page_size=all streams over HTTP only".into(),
                    });
                }
            };
            let page = usage::page(&*state.store, &checked, size)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "usage report failed");
                    ApiError::Internal("the usage rows could not be read".into())
                })?;
            Ok((page.rows, page.body))
        }
    }
}
