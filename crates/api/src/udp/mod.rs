//! The UDP price protocol (default `:2679`). One JSON datagram in:
//! `{"key":"<api key>","asset":"BTC"}` (optionally `"source"`, and `"id"`: a string of up to 64
//! characters echoed in the reply), or the batch form `{"key":..,"assets":["BTC","ETH"]}`. One
//! datagram out: the same body as HTTP `/price` (or `/prices`) with `"id"` first, or
//! `{"id":..,"error":{"code":..,"message":..}}` with the HTTP error codes. Same auth, rate
//! limits, quotas and metering as HTTP (protocol `udp`).
//!
//! Engine: one socket per worker, all bound to the same port with SO_REUSEPORT so the kernel
//! spreads datagrams over them, with large receive and send buffers. A datagram that is too
//! large or not JSON at all is counted and dropped; any JSON request gets an answer.

mod request;

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use beast_core::{ApiError, Protocol};
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::{
    AppState,
    http::{price::metered_price, prices},
};
use request::{Parsed, parse};

/// Largest request accepted; anything longer is dropped.
pub const MAX_REQUEST: usize = 2048;
/// Largest reply: a `/prices` answer for many assets can be large, a datagram cannot.
const MAX_REPLY: usize = 65_000;

/// How the UDP listener is set up.
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    /// Sockets (one worker task each) sharing the port.
    pub workers: usize,
    pub recv_buffer_bytes: usize,
    pub send_buffer_bytes: usize,
}

/// Packet counters of a UDP listener.
#[derive(Debug, Default)]
pub struct UdpStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_oversized: AtomicU64,
    pub dropped_garbage: AtomicU64,
    pub send_errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct UdpStatsSnapshot {
    pub received: u64,
    pub sent: u64,
    pub dropped_oversized: u64,
    pub dropped_garbage: u64,
    pub send_errors: u64,
}

impl UdpStats {
    pub fn snapshot(&self) -> UdpStatsSnapshot {
        UdpStatsSnapshot {
            received: self.received.load(Relaxed),
            sent: self.sent.load(Relaxed),
            dropped_oversized: self.dropped_oversized.load(Relaxed),
            dropped_garbage: self.dropped_garbage.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
        }
    }
}

/// Binds `options.workers` sockets to `addr` with SO_REUSEPORT (port 0: the port the first one
/// got). The kernel may cap the buffer sizes (`net.core.rmem_max`).
pub fn bind(addr: SocketAddr, options: UdpOptions) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(options.workers.max(1));
    let mut addr = addr;
    for _ in 0..options.workers.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        socket.set_reuse_port(true)?;
        socket.set_recv_buffer_size(options.recv_buffer_bytes)?;
        socket.set_send_buffer_size(options.send_buffer_bytes)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let bound = socket.local_addr()?.as_socket().unwrap_or(addr);
        addr = bound;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

/// Serves datagrams on every socket until `cancel` fires.
pub async fn serve(
    state: AppState,
    sockets: Vec<std::net::UdpSocket>,
    stats: Arc<UdpStats>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for socket in sockets {
        let socket = UdpSocket::from_std(socket)?;
        workers.spawn(worker(state.clone(), socket, stats.clone(), cancel.clone()));
    }
    while workers.join_next().await.is_some() {}
    Ok(())
}

async fn worker(
    state: AppState,
    socket: UdpSocket,
    stats: Arc<UdpStats>,
    cancel: CancellationToken,
) {
    // One byte more than the limit tells an oversized datagram from one that fits exactly.
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        stats.received.fetch_add(1, Relaxed);
        if len > MAX_REQUEST {
            stats.dropped_oversized.fetch_add(1, Relaxed);
            continue;
        }
        let reply = match parse(&buf[..len]) {
            Parsed::Garbage => {
                stats.dropped_garbage.fetch_add(1, Relaxed);
                continue;
            }
            Parsed::Invalid { id, error } => with_id(id.as_deref(), Err(&error)),
            Parsed::Request(request) => answer(&state, request).await,
        };
        match socket.send_to(&reply, peer).await {
            Ok(_) => stats.sent.fetch_add(1, Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, %peer, "udp send failed");
                stats.send_errors.fetch_add(1, Relaxed)
            }
        };
    }
}

/// Authenticates and answers one well-formed request.
async fn answer(state: &AppState, request: request::Request<'_>) -> Vec<u8> {
    let started = Instant::now();
    let id = request.id.as_deref();
    let key = match state.keys.authenticate(&request.key) {
        Ok(key) => key,
        Err(e) => return with_id(id, Err(&e)),
    };
    let body = match &request.assets {
        Some(names) => {
            let assets = prices::asset_list(names.iter().map(|n| n.as_ref()));
            prices::metered_prices(state, &key, assets, Protocol::Udp, started)
                .await
                .map(|(_, body)| body)
        }
        None => {
            metered_price(
                state,
                &key,
                request.asset.as_deref(),
                request.source.as_deref(),
                Protocol::Udp,
                started,
            )
            .await
        }
    };
    let reply = with_id(id, body.as_deref());
    if reply.len() > MAX_REPLY {
        let too_big = ApiError::BadRequest(format!(
            "the answer ({} bytes) does not fit in a datagram; ask for fewer assets or use HTTP",
            reply.len()
        ));
        return with_id(id, Err(&too_big));
    }
    reply
}

/// A reply body with the request id first: `{"id":"x",...}`.
fn with_id(id: Option<&str>, body: Result<&[u8], &ApiError>) -> Vec<u8> {
    let error_body;
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            error_body = e.to_json().to_string();
            error_body.as_bytes()
        }
    };
    let Some(id) = id else {
        return body.to_vec();
    };
    let quoted = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    let mut out = Vec::with_capacity(body.len() + quoted.len() + 8);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(quoted.as_bytes());
    match body.get(1..) {
        Some(rest) if rest != b"}" => {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        _ => out.push(b'}'),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_put_first_in_any_reply() {
        assert_eq!(
            with_id(Some("a\"1"), Ok(br#"{"asset":"BTC"}"#)),
            br#"{"id":"a\"1","asset":"BTC"}"#
        );
        assert_eq!(with_id(None, Ok(br#"{"x":1}"#)), br#"{"x":1}"#);
        let reply = with_id(Some("7"), Err(&ApiError::MissingKey));
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["error"]["code"].as_str()),
            (Some("7"), Some("missing_api_key"))
        );
    }
}
