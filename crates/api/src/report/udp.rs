//! Reports over UDP (the report UDP listener, default `:2680`): one JSON datagram in,
//! `{"key":"...","report":"summary"|"usage", "id":"..", ...the HTTP parameters}`, one JSON
//! datagram out with the same body as HTTP (and the `id` first). An answer too large for one
//! datagram is refused with `too_large_for_udp`, pointing to the HTTP endpoint; it does not
//! use up the allowance. A datagram over [`MAX_REQUEST`] bytes, or not JSON at all, is dropped,
//! as on the price UDP listener; the id is echoed as there (`crate::udp::request`). Datagrams
//! received, read as requests, dropped (by reason) and replies sent are counted as there, in
//! `report_udp` of `/health`; refusals for want of a key are answered within the sender's
//! allowance, as there.

use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use beast_core::{ApiError, Protocol};
use beast_reports::{Report, ReportParams, usage::Page};
use serde_json::Value;
use tokio::{net::UdpSocket, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Caller, Ticket};
use crate::{
    AppState,
    state::key_text,
    udp::{
        self, MAX_REQUEST, Outgoing, Sender,
        mmsg::Inbox,
        request::{echo_id, read},
        with_id,
    },
};

/// Reports computed at once; further datagrams wait in the socket buffer.
const IN_FLIGHT: u32 = 32;

/// Answers report datagrams on `socket` until `cancel` fires, then waits for the reports
/// still being computed (so their log rows are written before the store closes). Replies go
/// from the address each datagram was sent to (see [`crate::udp::mmsg`]).
pub async fn serve(
    state: AppState,
    socket: std::net::UdpSocket,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let socket = Arc::new(UdpSocket::from_std(socket)?);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT as usize));
    let mut inbox = Inbox::default();
    let sender = Sender::new(&socket);
    let stats = &state.counters.report_udp;
    'serving: while let Some(got) = udp::receive(&socket, &mut inbox, &cancel).await {
        stats.received.fetch_add(got as u64, Relaxed);
        for i in 0..got {
            let datagram = inbox.datagram(i);
            let (Some(to), from) = (datagram.peer, datagram.local) else {
                stats.dropped_garbage.fetch_add(1, Relaxed);
                continue;
            };
            if datagram.bytes.len() > MAX_REQUEST {
                stats.dropped_oversized.fetch_add(1, Relaxed);
                tracing::debug!(peer = %to, "report udp datagram too large, dropped");
                continue;
            }
            let request = match read::<Value>(datagram.bytes) {
                Ok(value) => Ok(value),
                Err(Some(error)) => Err(error),
                Err(None) => {
                    stats.dropped_garbage.fetch_add(1, Relaxed);
                    tracing::debug!(peer = %to, "report udp datagram is not JSON, dropped");
                    continue;
                }
            };
            stats.requests.fetch_add(1, Relaxed);
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break 'serving;
            };
            let (state, socket, mut sender) = (state.clone(), socket.clone(), sender.clone());
            tokio::spawn(async move {
                let answer = answer(&state, request, to.ip()).await;
                let alone = answer.map(|bytes| Outgoing { bytes, to, from });
                let stats = &state.counters.report_udp;
                udp::send_alone(&socket, stats, &mut sender, alone).await;
                drop(permit);
            });
        }
    }
    let _all_done = permits.acquire_many(IN_FLIGHT).await;
    Ok(())
}

/// The reply to a report request from `peer`, or to JSON that could not be read as one
/// (`request` is then why, and it has no key to read). `None`: a refusal for want of a key past
/// the address's allowance ([`udp::keyless_refusal`]), unanswered.
async fn answer(
    state: &AppState,
    request: Result<Value, ApiError>,
    peer: IpAddr,
) -> Option<Vec<u8>> {
    state.counters.report_request();
    let mut request = match request {
        Ok(request) => request,
        Err(e) => return udp::keyless_refusal(state, peer, || false, None, &e),
    };
    let id = echo_id(&request);
    let reply = |body: Result<Vec<u8>, &ApiError>| with_id(id.as_deref(), body);
    let key = key_text(request.get("key").and_then(Value::as_str));
    let caller = match state.caller_of(key) {
        Ok(c) => c,
        Err(e) => return udp::keyless_refusal(state, peer, || false, id.as_deref(), &e),
    };
    let report = match request
        .get("report")
        .and_then(Value::as_str)
        .and_then(Report::parse)
    {
        Some(report) => report,
        None => {
            let e = ApiError::invalid_field("report", "expected \"summary\" or \"usage\"");
            return Some(reply(Err(&e)));
        }
    };
    // Logged as sent, without the key.
    if let Some(fields) = request.as_object_mut() {
        fields.remove("key");
    }
    let mut ticket = Ticket::new(&caller, report, Protocol::Udp, &request.to_string());
    let (status, rows, body) = match respond(state, &caller, report, request, &mut ticket).await {
        Ok(answer) => {
            let body = reply(Ok(answer.body));
            let max = state.reports.udp_max_bytes;
            match udp::fits(body.len(), max, report.http_request()) {
                Ok(()) => (200, answer.rows, body),
                Err(e) => (e.status(), 0, reply(Err(&e))),
            }
        }
        Err(e) => (e.status(), 0, reply(Err(&e))),
    };
    state.finish_report(ticket, status, rows).await;
    Some(body)
}

/// The answer to a report request from an authenticated caller.
async fn respond(
    state: &AppState,
    caller: &Caller,
    report: Report,
    request: Value,
    ticket: &mut Ticket,
) -> Result<Page, ApiError> {
    let params: ReportParams = serde_json::from_value(request)
        .map_err(|e| ApiError::BadRequest(format!("bad request: {e}")))?;
    let checked = state.admit_report(caller, &params, ticket).await?;
    state.answer(report, &checked).await
}
