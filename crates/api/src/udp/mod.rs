//! The UDP price protocol (default `:2679`). One JSON datagram in:
//! `{"key":"<api key>","asset":"BTC"}` (optionally `"source"`, and `"id"`: a string of up to 64
//! characters echoed in the reply), or the batch form `{"key":..,"assets":["BTC","ETH"]}`. One
//! datagram out: the same body as HTTP `/price` (or `/prices`) with `"id"` first, or
//! `{"id":..,"error":{"code":..,"message":..}}` with the HTTP error codes. Same auth, rate
//! limits, quotas and metering as HTTP (protocol `udp`): JSON that is not a valid request is
//! keyed like any request and its refusal (400) metered, as HTTP keys a request before it
//! reads a bad query. Refusals of requests without a valid key (`overloaded` ones too) are
//! answered within the sender's address's allowance of them ([`keyless_refusal`]). An answer
//! longer than `udp_max_answer_bytes` (at most 65,507, what one IPv4 datagram carries) is
//! refused, `too_large_for_udp`: metered as that refusal, not as answers.
//!
//! Engine: one socket per worker, all bound to the same port with SO_REUSEPORT so the kernel
//! spreads datagrams over them, with large receive and send buffers; datagrams are received
//! and answered in batches, one system call each way per batch, a peer's run of answers as one
//! segmented message ([`mmsg`]). A datagram that is too large or not JSON at all is counted
//! and dropped; any JSON datagram gets an answer. Requests over the node's in-flight limit are
//! answered `overloaded` at once. Everything is counted in the node's
//! [`RuntimeCounters`](crate::counters::RuntimeCounters).

pub(crate) mod mmsg;
pub mod request;

pub use mmsg::{Outgoing, Sender};

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use beast_core::{ApiError, Protocol};
use crossbeam_utils::CachePadded;
use futures_util::FutureExt;
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::{io::Interest, net::UdpSocket};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    AppState,
    counters::RuntimeCounters,
    http::{
        price::{Reply, metered_price, required_asset},
        prices,
    },
    state::key_text,
};
use request::parse;

/// Largest request accepted; anything longer is dropped.
pub const MAX_REQUEST: usize = 2048;
/// The most one IPv4 datagram carries: no answer is longer.
pub const MAX_ANSWER: usize = 65_507;
/// Most assets in one UDP batch (their answers are about 1.3 KB each with six sources): a
/// longer list is refused before anything is looked up.
const MAX_BATCH: usize = 40;
// A request takes room in the usage channel for all its rows at once.
const _: () = assert!(MAX_BATCH <= crate::MOST_ROWS_PER_REQUEST);

/// How the UDP listener is set up.
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    /// Sockets (one worker task each) sharing the port.
    pub workers: usize,
    pub recv_buffer_bytes: usize,
    pub send_buffer_bytes: usize,
}

/// Packet counters of a UDP listener. Every worker bumps `received`, `requests` and `sent`
/// for every batch, so each has a cache line of its own.
#[derive(Debug, Default)]
pub struct UdpStats {
    pub received: CachePadded<AtomicU64>,
    /// Datagrams read as requests (JSON within the size limit): each is answered (a reply the
    /// kernel refuses to send is counted in `send_errors`), except refusals for want of a key
    /// past the address's allowance (`unanswered_keyless`). Counted
    /// directly, not as received minus dropped, so it never runs ahead of the drops.
    pub requests: CachePadded<AtomicU64>,
    pub sent: CachePadded<AtomicU64>,
    pub dropped_oversized: AtomicU64,
    pub dropped_garbage: AtomicU64,
    /// Requests refused for want of a valid key past their address's allowance: unanswered.
    pub unanswered_keyless: AtomicU64,
    pub send_errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct UdpStatsSnapshot {
    pub received: u64,
    pub requests: u64,
    pub sent: u64,
    pub dropped_oversized: u64,
    pub dropped_garbage: u64,
    pub unanswered_keyless: u64,
    pub send_errors: u64,
}

impl UdpStats {
    pub fn snapshot(&self) -> UdpStatsSnapshot {
        UdpStatsSnapshot {
            received: self.received.load(Relaxed),
            requests: self.requests.load(Relaxed),
            sent: self.sent.load(Relaxed),
            dropped_oversized: self.dropped_oversized.load(Relaxed),
            dropped_garbage: self.dropped_garbage.load(Relaxed),
            unanswered_keyless: self.unanswered_keyless.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
        }
    }
}

/// Binds `options.workers` sockets to `addr` with SO_REUSEPORT (port 0: the port the first one
/// got). The kernel may cap the buffer sizes (`net.core.rmem_max`). Bound to every address,
/// they learn each datagram's destination, for its reply to go from there.
pub fn bind(addr: SocketAddr, options: UdpOptions) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(options.workers.max(1));
    let mut addr = addr;
    for _ in 0..options.workers.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        socket.set_reuse_port(true)?;
        socket.set_recv_buffer_size(options.recv_buffer_bytes)?;
        socket.set_send_buffer_size(options.send_buffer_bytes)?;
        socket.set_nonblocking(true)?;
        if addr.ip().is_unspecified() {
            mmsg::receive_destinations(&socket, addr.is_ipv6())?;
        }
        socket.bind(&addr.into())?;
        let bound = socket.local_addr()?.as_socket().unwrap_or(addr);
        addr = bound;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

/// Serves datagrams on every socket until `cancel` fires, counting in `state.counters`; then
/// waits for the answers still being worked out (an on-demand fetch, a wait for room in the
/// usage channel), as the HTTP listeners finish the requests in flight.
pub async fn serve(
    state: AppState,
    sockets: Vec<std::net::UdpSocket>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    let slow = TaskTracker::new();
    for socket in sockets {
        let socket = UdpSocket::from_std(socket)?;
        workers.spawn(worker(state.clone(), socket, slow.clone(), cancel.clone()));
    }
    while workers.join_next().await.is_some() {}
    slow.close();
    slow.wait().await;
    Ok(())
}

/// One socket's loop; answers that must wait are finished in tasks of `slow`.
async fn worker(state: AppState, socket: UdpSocket, slow: TaskTracker, cancel: CancellationToken) {
    let socket = Arc::new(socket);
    let counters = state.counters.clone();
    let stats = &counters.udp;
    let mut inbox = mmsg::Inbox::default();
    let mut outbox: Vec<Outgoing> = Vec::with_capacity(mmsg::BATCH);
    let mut sender = Sender::new(&socket);
    while let Some(got) = receive(&socket, &mut inbox, &cancel).await {
        // Received first, as snapshots read them: no snapshot shows a drop before its receipt.
        stats.received.fetch_add(got as u64, Relaxed);
        // Counted here and added once per batch: the counters are shared by every worker.
        let (mut requests, mut garbage, mut oversized, mut keyless) = (0, 0, 0, 0);
        for i in 0..got {
            let datagram = inbox.datagram(i);
            let Some(to) = datagram.peer else {
                garbage += 1;
                continue;
            };
            let from = datagram.local;
            let reply = move |bytes| Outgoing { bytes, to, from };
            if datagram.bytes.len() > MAX_REQUEST {
                oversized += 1;
                continue;
            }
            let Some(request) = parse(datagram.bytes) else {
                garbage += 1;
                continue;
            };
            requests += 1;
            let asked = request.into_owned();
            let mut answering = Box::pin(answer(state.clone(), asked, to.ip()));
            // Memory answers complete at once and go out with the batch. One that must wait
            // (an on-demand REST fetch, a full usage channel) finishes in its own task, so
            // this socket keeps receiving.
            match (&mut answering).now_or_never() {
                Some(Some(bytes)) => outbox.push(reply(bytes)),
                Some(None) => keyless += 1,
                None => {
                    let (socket, counters) = (socket.clone(), counters.clone());
                    let mut sender = sender.clone();
                    slow.spawn(async move {
                        let answer = answering.await.map(reply);
                        send_alone(&socket, &counters.udp, &mut sender, answer).await
                    });
                }
            }
        }
        for (counter, n) in [
            (&*stats.requests, requests),
            (&stats.dropped_garbage, garbage),
            (&stats.dropped_oversized, oversized),
            (&stats.unanswered_keyless, keyless),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
        flush(&socket, stats, &mut sender, &outbox).await;
        outbox.clear();
        // Under a constant stream of datagrams, still let this thread's other tasks run.
        tokio::task::consume_budget().await;
    }
}

/// Waits for datagrams on `socket` and receives a batch of them into `inbox`: how many, or
/// `None` once `cancel` fires (or the runtime is shutting down).
pub(crate) async fn receive(
    socket: &UdpSocket,
    inbox: &mut mmsg::Inbox,
    cancel: &CancellationToken,
) -> Option<usize> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            ready = socket.readable() => if let Err(e) = ready {
                // Only a runtime shutting down fails this.
                tracing::debug!(error = %e, "udp socket not readable");
                return None;
            },
        }
        match socket.try_io(Interest::READABLE, || inbox.recv(socket)) {
            Ok(got) => return Some(got),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                // An error that persisted would be met at once again: not without letting
                // this thread's other tasks run first.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Sends one answer worked out apart from its batch, or counts it unanswered (`None`: a refusal
/// for want of a key past its address's allowance).
pub(crate) async fn send_alone(
    socket: &UdpSocket,
    stats: &UdpStats,
    sender: &mut Sender,
    answer: Option<Outgoing>,
) {
    match answer {
        Some(alone) => flush(socket, stats, sender, std::slice::from_ref(&alone)).await,
        None => {
            stats.unanswered_keyless.fetch_add(1, Relaxed);
        }
    }
}

/// Sends every reply of a batch (or one on its own), [`mmsg::BATCH`] per system call, waiting
/// for room in the socket's buffer if need be. A reply the kernel refuses is counted and
/// skipped.
async fn flush(socket: &UdpSocket, stats: &UdpStats, sender: &mut Sender, outbox: &[Outgoing]) {
    let mut done = 0;
    while done < outbox.len() {
        let (sent, result) = sender.send_all(socket, &outbox[done..]).await;
        stats.sent.fetch_add(sent as u64, Relaxed);
        done += sent;
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = %outbox[done].to, "udp send failed");
            stats.send_errors.fetch_add(1, Relaxed);
            done += 1;
        }
    }
}

/// Answers one request from `peer` (perhaps one refused as it was read), counting its status:
/// admitted by the governor (it counts as in flight until answered), then authenticated and
/// metered; its answer is at most `udp_max_answer` bytes. `None`: a refusal for want of a key
/// past the address's allowance, unanswered.
///
/// Not an `async fn`, which would hold its arguments twice (see [`metered_price`]); what
/// happens before the one wait is done in a block of its own, so that none of it is held
/// across it.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
fn answer(
    state: AppState,
    request: request::Request<'static>,
    peer: IpAddr,
) -> impl Future<Output = Option<Vec<u8>>> + Send + 'static {
    async move {
        let counters: &RuntimeCounters = &state.counters;
        let id = request.id.as_deref();
        let (status, reply) = 'answered: {
            let in_flight = {
                let presented = key_text(Some(&request.key));
                // JSON with no key to read: why it is not a request says more than a missing
                // key.
                if let (Err(_), Some(refused)) = (&presented, &request.refused) {
                    let reply = keyless_refusal(&state, peer, || false, id, refused)?;
                    break 'answered (refused.status(), reply);
                }
                match counters.enter() {
                    Ok(in_flight) => in_flight,
                    // Refused before its key is checked: a valid key pays for the refusal.
                    Err(e) => {
                        let pays = || {
                            presented.is_ok_and(|k| {
                                state
                                    .keys
                                    .authenticate_hash(&state.keys.presented_hash(k))
                                    .is_ok()
                            })
                        };
                        let reply = keyless_refusal(&state, peer, pays, id, &e)?;
                        break 'answered (e.status(), reply);
                    }
                }
            };
            let answered = respond(&state, &request).await;
            drop(in_flight);
            match answered {
                Ok(answered) => answered,
                Err(e) => (e.status(), keyless_refusal(&state, peer, || false, id, &e)?),
            }
        };
        counters.answered(status);
        Some(reply)
    }
}

/// The status and reply datagram for an admitted request, or the refusal of its key (for
/// [`answer`] to send within the address's allowance).
async fn respond(
    state: &AppState,
    request: &request::Request<'static>,
) -> Result<(u16, Vec<u8>), ApiError> {
    let started = Instant::now();
    let key = state.authenticate(key_text(Some(&request.key)))?;
    let id = request.id.as_deref();
    // The price is rendered straight after the id, into the datagram's one buffer. The reply
    // is made in the call (a `Reply` held here would be held in this future too).
    let out = begun(id);
    let at = out.len();
    let reply = move |out| Reply {
        protocol: Protocol::Udp,
        started,
        out,
        max: state.udp_max_answer,
    };
    let answered = match (&request.refused, &request.assets) {
        // Boxed: a batch is the rarer request, and its future the larger.
        (None, Some(names)) => {
            let assets = prices::asset_list(names.iter().map(|n| n.as_ref()), MAX_BATCH);
            Box::pin(prices::metered_prices(state, &key, assets, reply(out)))
                .await
                .map(|(status, reply)| (status.as_u16(), reply))
        }
        (refused, _) => {
            let asset = match refused {
                Some(e) => Err(ApiError::clone(e)),
                None => required_asset(request.asset.as_deref()),
            };
            metered_price(state, &key, asset, request.source.as_deref(), reply(out))
                .await
                .map(|reply| (200, reply))
        }
    };
    Ok(match answered {
        Ok((status, reply)) => (status, joined(reply, at)),
        Err(e) => (e.status(), with_id(id, Err(&e))),
    })
}

/// Whether an answer of `bytes` fits in `max`, what a datagram takes; if not, its refusal,
/// pointing to `instead` (the HTTP request to make).
pub(crate) fn fits(bytes: usize, max: usize, instead: &'static str) -> Result<(), ApiError> {
    if bytes <= max {
        return Ok(());
    }
    Err(ApiError::TooLargeForUdp {
        bytes,
        max,
        instead,
    })
}

/// The refusal `e` of a request from `peer`, with its `id`: unless it `pays` (presents a valid
/// key; asked only with the allowance on), sent only within the address's allowance of them
/// (`unauthenticated_per_ip_per_minute`, apart from HTTP's; `None` past it, for the caller to
/// count as `unanswered_keyless`). A datagram's source address can be forged, and a refusal is
/// larger than the datagram that asks for it: unlimited, anyone could flood an address with
/// refusals through the node, unseen and unmetered.
pub(crate) fn keyless_refusal(
    state: &AppState,
    peer: IpAddr,
    pays: impl FnOnce() -> bool,
    id: Option<&str>,
    e: &ApiError,
) -> Option<Vec<u8>> {
    state
        .udp_refusals
        .admit(peer, pays)
        .is_ok()
        .then(|| with_id(id, Err(e)))
}

/// A reply with the request id first: `{"id":"x",...}`, built in one buffer. A body without
/// an id is returned as it is, not copied.
pub(crate) fn with_id(id: Option<&str>, body: Result<Vec<u8>, &ApiError>) -> Vec<u8> {
    let mut reply = begun(id);
    let at = reply.len();
    match body {
        Ok(body) if at == 0 => return body,
        Ok(body) => reply.extend_from_slice(&body),
        // Writing JSON into a Vec cannot fail.
        Err(e) => {
            let _ = serde_json::to_writer(&mut reply, &e.to_json());
        }
    }
    joined(reply, at)
}

/// The start of a reply to a request with an id, `{"id":"x"`, for the body's JSON object to
/// be written after it and [`joined`]; empty without an id.
fn begun(id: Option<&str>) -> Vec<u8> {
    let Some(id) = id else {
        return Vec::new();
    };
    // Room for one price answer with six sources (about 850 bytes).
    let mut reply = Vec::with_capacity(1024);
    reply.extend_from_slice(b"{\"id\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut reply, id);
    reply
}

/// A [`begun`] reply whose body object starts at `at`, made one object: the body's opening
/// brace becomes the comma after the id (or, for an empty body, its closing brace).
fn joined(mut reply: Vec<u8>, at: usize) -> Vec<u8> {
    if at == 0 {
        return reply;
    }
    if reply.get(at..) == Some(b"{}") {
        reply.truncate(at);
        reply.push(b'}');
    } else if let Some(brace) = reply.get_mut(at) {
        *brace = b',';
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_put_first_in_any_reply() {
        assert_eq!(
            with_id(Some("a\"1"), Ok(br#"{"asset":"BTC"}"#.to_vec())),
            br#"{"id":"a\"1","asset":"BTC"}"#
        );
        assert_eq!(with_id(Some("2"), Ok(b"{}".to_vec())), br#"{"id":"2"}"#);
        assert_eq!(with_id(None, Ok(br#"{"x":1}"#.to_vec())), br#"{"x":1}"#);
        let reply = with_id(Some("7"), Err(&ApiError::MissingKey));
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["error"]["code"].as_str()),
            (Some("7"), Some("missing_api_key"))
        );
    }
}
