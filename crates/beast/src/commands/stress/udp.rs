//! The UDP worker: one socket with several requests in flight,
//! `{"key":"<key>","asset":"BTC","id":"<worker>-<slot>-<seq>"}` (the worker's id is unique over
//! the run), those of its free slots sent as one burst ([`Burst`]). The answer is the `/price`
//! body with the `id` echoed, or `{"id":..,"error":{"code":..,..}}`. Answers are matched by id
//! (a late answer to an earlier, timed-out request is skipped); no answer within the timeout is
//! a `timeout` error (a lost datagram).

use std::{
    cell::RefCell,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use beast_api::udp::{Outgoing, Sender};
use tokio::{io::Interest, net::UdpSocket};
use tokio_util::sync::CancellationToken;

use super::{
    engine::{Done, Worker},
    plan::in_turn,
    scan,
};

/// Pause after a socket error (e.g. nobody listening), so it is not spun on.
const IO_ERROR_PAUSE: Duration = Duration::from_millis(20);
/// The largest datagram a reply can be.
const MAX_DATAGRAM: usize = 65_536;

thread_local! {
    /// One receive buffer per runtime thread, not per worker: it is only borrowed inside a
    /// synchronous `try_recv`, never across an await.
    static RECV_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

/// Every request a worker sends, prepared once: per key and asset, the datagram up to the id
/// value.
pub struct Requests {
    pub addr: SocketAddr,
    prefixes: Vec<Vec<u8>>,
}

impl Requests {
    /// Requests take every asset in turn, and after each round the next key.
    pub fn new(addr: SocketAddr, keys: &[&str], assets: &[String]) -> anyhow::Result<Requests> {
        let assets = assets
            .iter()
            .map(|asset| serde_json::to_string(asset).context("encoding an asset"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let keys = keys
            .iter()
            .map(|key| serde_json::to_string(key).context("encoding a key"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let prefixes = in_turn(&keys, &assets, |key, asset| {
            format!(r#"{{"key":{key},"asset":{asset},"id":""#).into_bytes()
        });
        Ok(Requests { addr, prefixes })
    }

    /// The `n`th request up to its id value.
    pub fn prefix(&self, n: usize) -> &[u8] {
        &self.prefixes[n % self.prefixes.len()]
    }
}

// The key is inside every prefix: never print them.
impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("addr", &self.addr)
            .field("prepared", &self.prefixes.len())
            .finish_non_exhaustive()
    }
}

/// What came back for a request in flight: its error code is read in place.
enum Reply<'a> {
    Success,
    Error(&'a str),
}

/// A request in flight: its number and when it went.
#[derive(Clone, Copy)]
struct InFlight {
    seq: u64,
    sent: Instant,
}

/// One worker's loop: one socket keeping `depth` requests in flight (closed loop: an answer,
/// an error or a timeout frees its slot for the next request); returns its counts. Request
/// ids are `<worker>-<slot>-<seq>`, so a reply finds its slot without a lookup table.
pub async fn run(
    mut worker: Worker,
    requests: Arc<Requests>,
    timeout: Duration,
    depth: usize,
) -> Done {
    let socket = open(requests.addr).await;
    let Some(deadline) = worker.started().await else {
        return worker.finish();
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(_) => {
            worker.recorder.error("socket");
            return worker.finish();
        }
    };
    let hard = worker.stop.hard.clone();
    let mut slots: Vec<Option<InFlight>> = vec![None; depth.max(1)];
    let mut burst = Burst::new(Sender::new(&socket), requests.addr);
    let mut numbers = itoa::Buffer::new();
    let worker_tag = numbers.format(worker.id).to_owned();
    let mut seq: u64 = 0;
    // Which prepared request goes next: workers start apart, so they do not ask in step.
    let mut next = worker.index;
    loop {
        // A request past its timeout ends as one and frees its slot, even while replies to
        // the others keep the socket busy.
        let now = Instant::now();
        for state in &mut slots {
            if state.is_some_and(|f| now.duration_since(f.sent) >= timeout) {
                *state = None;
                worker.recorder.timed_out();
            }
        }
        // Every free slot sends its next request while the level runs, all in one burst.
        let failed = if worker.keep_going(deadline) {
            burst.clear();
            for slot in (0..slots.len()).filter(|&slot| slots[slot].is_none()) {
                seq += 1;
                let datagram = burst.push(slot, seq);
                datagram.extend_from_slice(requests.prefix(next));
                next = next.wrapping_add(1);
                datagram.extend_from_slice(worker_tag.as_bytes());
                datagram.push(b'-');
                datagram.extend_from_slice(numbers.format(slot).as_bytes());
                datagram.push(b'-');
                datagram.extend_from_slice(numbers.format(seq).as_bytes());
                datagram.extend_from_slice(b"\"}");
            }
            burst.send(&socket, &mut slots).await.err()
        } else {
            None
        };
        if let Some(e) = failed {
            // A pending "port unreachable" may surface on a send: it ends the oldest request
            // in flight, if any. Any other error (no buffer space, a firewall) is the request
            // that could not go: the ones in flight may still be answered.
            let refused_earlier = e.kind() == io::ErrorKind::ConnectionRefused
                && end_oldest(&mut slots, &mut worker, &e);
            if !refused_earlier {
                worker.recorder.error(io_kind(&e));
            }
            if pause(&hard).await {
                break;
            }
        }
        // The oldest request in flight bounds the wait; none left after the level: done.
        let Some(oldest) = slots.iter().flatten().map(|f| f.sent).min() else {
            if worker.keep_going(deadline) {
                continue;
            }
            break;
        };
        let ready = tokio::select! {
            biased;
            _ = hard.cancelled() => break,
            ready = tokio::time::timeout_at(
                (oldest + timeout).into(),
                socket.ready(Interest::READABLE | Interest::ERROR),
            ) => ready,
        };
        let error = match ready {
            // The oldest request timed out: ended at the top of the loop.
            Err(_) => continue,
            Ok(Err(e)) => Some(e),
            Ok(Ok(_)) => drain(&socket, &worker_tag, &mut slots, &mut worker).err(),
        };
        // A connected socket learns "port unreachable" as an error: it ends the oldest request.
        if let Some(e) = error {
            end_oldest(&mut slots, &mut worker, &e);
            if pause(&hard).await {
                break;
            }
        }
    }
    worker.finish()
}

/// The requests of one burst, each free slot's next, sent together: one system call for up
/// to 32 of them, and a run of equal ones as one segmented message (see [`Sender`]).
struct Burst {
    /// Datagram buffers to the target, reused; the first `requests.len()` are this burst's.
    datagrams: Vec<Outgoing>,
    /// The slot and number of each request of this burst.
    requests: Vec<(usize, u64)>,
    target: SocketAddr,
    sender: Sender,
}

impl Burst {
    fn new(sender: Sender, target: SocketAddr) -> Self {
        Self {
            datagrams: Vec::new(),
            requests: Vec::new(),
            target,
            sender,
        }
    }

    fn clear(&mut self) {
        self.requests.clear();
    }

    /// Adds the request numbered `seq` in `slot`: its datagram, empty, to write.
    fn push(&mut self, slot: usize, seq: u64) -> &mut Vec<u8> {
        let at = self.requests.len();
        self.requests.push((slot, seq));
        if self.datagrams.len() == at {
            self.datagrams.push(Outgoing {
                bytes: Vec::with_capacity(256),
                to: self.target,
                from: None,
            });
        }
        let datagram = &mut self.datagrams[at].bytes;
        datagram.clear();
        datagram
    }

    /// Sends the burst, each request that goes taking its slot; stops at the first error
    /// (waiting for room in the socket's buffer is not one).
    async fn send(&mut self, socket: &UdpSocket, slots: &mut [Option<InFlight>]) -> io::Result<()> {
        let sent = Instant::now();
        let burst = &self.datagrams[..self.requests.len()];
        let (went, result) = self.sender.send_all(socket, burst).await;
        for &(slot, seq) in &self.requests[..went] {
            slots[slot] = Some(InFlight { seq, sent });
        }
        result
    }
}

/// Reads every reply waiting on the socket, each ending its request; `Ok` once none is left.
fn drain(
    socket: &UdpSocket,
    worker_tag: &str,
    slots: &mut [Option<InFlight>],
    worker: &mut Worker,
) -> io::Result<()> {
    loop {
        // The reply is settled while its bytes are borrowed, so its error code is not copied.
        let received: io::Result<()> = RECV_BUF.with_borrow_mut(|buf| {
            let n = socket.try_recv(buf)?;
            if let Some((slot, seq, reply)) = classify(&buf[..n], worker_tag) {
                settle(slots, worker, slot, seq, reply);
            }
            Ok(())
        });
        match received {
            Ok(()) => {}
            // Woken for an error, not a datagram: report it. Asking through `try_io` clears
            // the error readiness when there is none, so the next wait really waits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let pending = socket.try_io(Interest::ERROR, || {
                    socket
                        .take_error()?
                        .ok_or_else(|| io::ErrorKind::WouldBlock.into())
                });
                return match pending {
                    Ok(e) => Err(e),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Ends the request in flight in `slot` with its reply, unless it is no longer that request
/// (a late reply to one that already timed out is skipped).
fn settle(
    slots: &mut [Option<InFlight>],
    worker: &mut Worker,
    slot: usize,
    seq: u64,
    reply: Reply,
) {
    let Some(state) = slots.get_mut(slot) else {
        return;
    };
    let Some(flight) = state.filter(|f| f.seq == seq) else {
        return;
    };
    *state = None;
    match reply {
        Reply::Success => worker.recorder.success(flight.sent),
        Reply::Error(kind) => worker.recorder.error(kind),
    }
}

/// Ends the oldest request in flight with a socket error; false if none is in flight.
fn end_oldest(slots: &mut [Option<InFlight>], worker: &mut Worker, e: &io::Error) -> bool {
    let oldest = slots
        .iter_mut()
        .filter(|s| s.is_some())
        .min_by_key(|s| s.map(|f| f.sent));
    match oldest {
        Some(state) => {
            *state = None;
            worker.recorder.error(io_kind(e));
            true
        }
        None => false,
    }
}

/// Waits out a socket error so it is not spun on; true if the run was stopped meanwhile.
async fn pause(hard: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(IO_ERROR_PAUSE) => false,
        _ = hard.cancelled() => true,
    }
}

/// A socket of the target's address family, connected to it (so only its replies arrive).
async fn open(target: SocketAddr) -> io::Result<UdpSocket> {
    let local = if target.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// The slot and number of the request a reply answers, with the answer; `None` if the
/// datagram answers another worker or no request of ours.
fn classify<'a>(datagram: &'a [u8], worker_tag: &str) -> Option<(usize, u64, Reply<'a>)> {
    let id = std::str::from_utf8(scan::id(datagram)?).ok()?;
    let mut parts = id.split('-');
    if parts.next()? != worker_tag {
        return None;
    }
    let slot = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let reply = match scan::error_code(datagram) {
        None => Reply::Success,
        Some(code) => Reply::Error(code),
    };
    Some((slot, seq, reply))
}

fn io_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        // A connected UDP socket learns of "port unreachable" this way.
        io::ErrorKind::ConnectionRefused => "refused",
        _ => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_matched_by_id_and_errors_read() {
        let ok = br#"{"asset":"BTC","price":"1","id":"3-2-9"}"#;
        assert!(matches!(classify(ok, "3"), Some((2, 9, Reply::Success))));
        assert!(classify(ok, "4").is_none(), "another worker's reply");
        assert!(classify(br#"{"asset":"BTC"}"#, "3").is_none(), "no id");
        for odd in ["3-2", "3-2-9-1", "3-x-9", "3--9", "stale-0"] {
            let reply = format!(r#"{{"id":"{odd}","price":"1"}}"#);
            assert!(classify(reply.as_bytes(), "3").is_none(), "{odd}");
        }
        let err = br#"{"id":"3-0-9","error":{"code":"rate_limited","message":"slow down"}}"#;
        assert!(matches!(classify(err, "3"), Some((0, 9, Reply::Error(k))) if k == "rate_limited"));
    }

    #[test]
    fn request_datagrams_are_json_with_the_key_and_asset_escaped() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let requests =
            Requests::new(addr, &["k\"ey"], &["BTC".to_owned()]).expect("plain test values");
        let mut datagram = requests.prefixes[0].clone();
        datagram.extend_from_slice(b"0-1-1\"}");
        let v: serde_json::Value = serde_json::from_slice(&datagram).expect("valid JSON");
        assert_eq!(v["key"], "k\"ey");
        assert_eq!(v["asset"], "BTC");
        assert_eq!(v["id"], "0-1-1");
    }
}
