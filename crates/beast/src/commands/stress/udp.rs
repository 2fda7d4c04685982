//! The UDP worker: one socket, one request datagram at a time,
//! `{"key":"<key>","asset":"BTC","id":"<worker>-<seq>"}`. The answer is the `/price` body
//! with the `id` echoed, or `{"id":..,"error":{"code":..,..}}`. Answers are matched by id (a
//! late answer to an earlier, timed-out request is skipped); no answer within the timeout is
//! a `timeout` error (a lost datagram).

use std::{
    cell::RefCell,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{io::Interest, net::UdpSocket};

use super::{
    engine::{Tally, Worker},
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

/// Every request a worker sends, prepared once: per asset, the datagram up to the id value.
pub struct Requests {
    pub addr: SocketAddr,
    prefixes: Vec<Vec<u8>>,
}

impl Requests {
    pub fn new(addr: SocketAddr, key: &str, assets: &[String]) -> anyhow::Result<Requests> {
        let key = serde_json::to_string(key).context("encoding the key")?;
        let prefixes = assets
            .iter()
            .map(|asset| {
                let asset = serde_json::to_string(asset).context("encoding an asset")?;
                Ok(format!(r#"{{"key":{key},"asset":{asset},"id":""#).into_bytes())
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Requests { addr, prefixes })
    }
}

// The key is inside every prefix: never print them.
impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("addr", &self.addr)
            .field("assets", &self.prefixes.len())
            .finish_non_exhaustive()
    }
}

/// What came back for the request in flight.
enum Reply {
    Success,
    Error(String),
}

/// One worker's loop; returns its counts.
pub async fn run(mut worker: Worker, requests: Arc<Requests>, timeout: Duration) -> Tally {
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
    let mut datagram = Vec::with_capacity(256);
    let mut tag = itoa::Buffer::new();
    let worker_tag = tag.format(worker.index).to_owned();
    let mut seq_buf = itoa::Buffer::new();
    let mut seq: u64 = 0;
    let mut asset = worker.index;
    while worker.keep_going(deadline) {
        seq += 1;
        datagram.clear();
        datagram.extend_from_slice(&requests.prefixes[asset % requests.prefixes.len()]);
        asset = asset.wrapping_add(1);
        let id_start = datagram.len();
        datagram.extend_from_slice(worker_tag.as_bytes());
        datagram.push(b'-');
        datagram.extend_from_slice(seq_buf.format(seq).as_bytes());
        let id_end = datagram.len();
        datagram.extend_from_slice(b"\"}");

        let sent = Instant::now();
        if let Err(e) = socket.send(&datagram).await {
            worker.recorder.error(io_kind(&e));
            tokio::select! {
                _ = tokio::time::sleep(IO_ERROR_PAUSE) => {}
                _ = hard.cancelled() => break,
            }
            continue;
        }
        let id = &datagram[id_start..id_end];
        let reply = tokio::select! {
            biased;
            _ = hard.cancelled() => break,
            reply = tokio::time::timeout(timeout, reply_to(&socket, id)) => reply,
        };
        match reply {
            Ok(Ok(Reply::Success)) => worker.recorder.success(sent.elapsed()),
            Ok(Ok(Reply::Error(kind))) => worker.recorder.error(&kind),
            Ok(Err(e)) => {
                worker.recorder.error(io_kind(&e));
                tokio::select! {
                    _ = tokio::time::sleep(IO_ERROR_PAUSE) => {}
                    _ = hard.cancelled() => break,
                }
            }
            Err(_) => worker.recorder.error("timeout"),
        }
    }
    worker.finish()
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

/// Waits for the reply carrying `id`, skipping others (late replies to earlier requests).
/// Error readiness counts too: a connected socket learns "port unreachable" as an error.
async fn reply_to(socket: &UdpSocket, id: &[u8]) -> io::Result<Reply> {
    loop {
        let received = socket
            .async_io(Interest::READABLE | Interest::ERROR, || {
                RECV_BUF.with_borrow_mut(|buf| match socket.try_recv(buf) {
                    Ok(n) => Ok(classify(&buf[..n], id)),
                    // Woken for an error, not a datagram: report it, or wait again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        Err(socket.take_error()?.unwrap_or(e))
                    }
                    Err(e) => Err(e),
                })
            })
            .await?;
        if let Some(reply) = received {
            return Ok(reply);
        }
    }
}

/// The reply to `id`, or `None` if the datagram answers something else.
fn classify(datagram: &[u8], id: &[u8]) -> Option<Reply> {
    if scan::string_field(datagram, b"\"id\"")? != id {
        return None;
    }
    Some(match scan::error_code(datagram) {
        None => Reply::Success,
        Some(code) => Reply::Error(code),
    })
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
        let ok = br#"{"asset":"BTC","price":"1","id":"3-9"}"#;
        assert!(matches!(classify(ok, b"3-9"), Some(Reply::Success)));
        assert!(classify(ok, b"3-1").is_none(), "another request's reply");
        assert!(classify(br#"{"asset":"BTC"}"#, b"3-9").is_none(), "no id");
        let err = br#"{"id":"3-9","error":{"code":"rate_limited","message":"slow down"}}"#;
        assert!(matches!(classify(err, b"3-9"), Some(Reply::Error(k)) if k == "rate_limited"));
    }

    #[test]
    fn request_datagrams_are_json_with_the_key_and_asset_escaped() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let requests =
            Requests::new(addr, "k\"ey", &["BTC".to_owned()]).expect("plain test values");
        let mut datagram = requests.prefixes[0].clone();
        datagram.extend_from_slice(b"0-1\"}");
        let v: serde_json::Value = serde_json::from_slice(&datagram).expect("valid JSON");
        assert_eq!(v["key"], "k\"ey");
        assert_eq!(v["asset"], "BTC");
        assert_eq!(v["id"], "0-1");
    }
}
