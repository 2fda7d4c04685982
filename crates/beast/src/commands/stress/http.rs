//! The HTTP worker: one keep-alive HTTP/1.1 connection (hyper's client connection), one
//! `GET {path}?asset=X` with `Authorization: Bearer KEY` at a time. 200 is a success; any
//! other status is an error of the kind the body's `error.code` names (`http_<status>` if
//! none); a broken connection is reopened before the next request.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::{
    Request, StatusCode, Uri,
    body::Bytes,
    client::conn::http1::{self, SendRequest},
    header::{AUTHORIZATION, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{
    engine::{Done, Worker},
    plan::in_turn,
    scan,
};

/// How long a connect before the level starts may take.
const WARMUP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect (or one closed at once), so a target refusing connections
/// is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Every request a worker sends, prepared once.
#[derive(Debug)]
pub struct Requests {
    pub addr: SocketAddr,
    path: String,
    host: HeaderValue,
    /// `Bearer KEY` and `{path}?asset=X`, per key and asset, in the order they are sent.
    prepared: Vec<(HeaderValue, Uri)>,
}

impl Requests {
    pub fn new(
        addr: SocketAddr,
        authority: &str,
        path: &str,
        keys: &[&str],
        assets: &[String],
    ) -> anyhow::Result<Requests> {
        let uris: Vec<Uri> = assets
            .iter()
            .map(|asset| {
                let query = serde_urlencoded::to_string([("asset", asset)])
                    .with_context(|| format!("asset {asset:?}"))?;
                format!("{path}?{query}")
                    .parse::<Uri>()
                    .with_context(|| format!("--path {path:?} is not a valid request path"))
            })
            .collect::<anyhow::Result<_>>()?;
        let authorizations: Vec<HeaderValue> = keys
            .iter()
            .map(|key| {
                let mut authorization =
                    HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                        anyhow::anyhow!("a key holds characters an HTTP header cannot carry")
                    })?;
                authorization.set_sensitive(true);
                Ok(authorization)
            })
            .collect::<anyhow::Result<_>>()?;
        let prepared = in_turn(&authorizations, &uris, |authorization, uri| {
            (authorization.clone(), uri.clone())
        });
        Ok(Requests {
            addr,
            path: path.to_owned(),
            host: HeaderValue::from_str(authority)
                .with_context(|| format!("{authority:?} is not a valid Host header"))?,
            prepared,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `n`th request: every asset in turn, and after each round the next key.
    pub fn request(&self, n: usize) -> Request<Empty<Bytes>> {
        let (authorization, uri) = &self.prepared[n % self.prepared.len()];
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, authorization.clone());
        request
    }
}

/// Checks that the target accepts TCP connections, for a clear error before any load.
pub async fn preflight(requests: &Requests, timeout: Duration) -> anyhow::Result<()> {
    let addr = requests.addr;
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot connect to {addr}")),
        Err(_) => anyhow::bail!("cannot connect to {addr}: no answer within {timeout:?}"),
    }
}

enum Answer {
    Success,
    /// Another status, and the body that says why.
    Error(StatusCode, Bytes),
}

/// One worker's loop; returns its counts.
pub async fn run(mut worker: Worker, requests: Arc<Requests>, timeout: Duration) -> Done {
    // Connecting before the start line is not measured, so it may take its time (thousands
    // of simultaneous connects overflow accept queues and wait for SYN retries); a failure
    // is retried, and counted, in the loop.
    let hard = worker.stop.hard.clone();
    let mut conn = tokio::select! {
        conn = connect(requests.addr, timeout.max(WARMUP_CONNECT_TIMEOUT)) => conn.ok(),
        _ = hard.cancelled() => None,
    };
    let mut fresh = true;
    let Some(deadline) = worker.started().await else {
        return worker.finish();
    };
    // Which request goes next: workers start apart, so they do not ask in step.
    let mut next = worker.index;
    while worker.keep_going(deadline) {
        if conn.as_ref().is_none_or(SendRequest::is_closed) {
            conn = None;
            let attempt = tokio::select! {
                attempt = connect(requests.addr, timeout) => attempt,
                _ = hard.cancelled() => break,
            };
            match attempt {
                Ok(sender) => {
                    conn = Some(sender);
                    fresh = true;
                }
                Err(kind) => {
                    worker.recorder.error(kind);
                    tokio::select! {
                        _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                        _ = hard.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        if sender.ready().await.is_err() {
            // The server closed a connection that had served requests: reopen, uncounted.
            // One that closes before its first request is an error.
            conn = None;
            if fresh {
                worker.recorder.error("closed");
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                    _ = hard.cancelled() => break,
                }
            }
            continue;
        }
        let request = requests.request(next);
        next = next.wrapping_add(1);
        let sent = Instant::now();
        let answer = tokio::select! {
            biased;
            _ = hard.cancelled() => break,
            answer = tokio::time::timeout(timeout, exchange(sender, request)) => answer,
        };
        fresh = false;
        match answer {
            Ok(Ok(Answer::Success)) => worker.recorder.success(sent),
            // The error code is read in place; only an answer without one names its status.
            Ok(Ok(Answer::Error(status, body))) => match scan::error_code(&body) {
                Some(code) => worker.recorder.error(code),
                None => worker.recorder.error(&format!("http_{}", status.as_u16())),
            },
            Ok(Err(_)) => {
                worker.recorder.error("io");
                conn = None;
            }
            Err(_) => {
                // The answer may still come: this connection is out of step, drop it.
                worker.recorder.timed_out();
                conn = None;
            }
        }
    }
    worker.finish()
}

/// Opens a connection; its driver runs in its own task until the sender is dropped.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<SendRequest<Empty<Bytes>>, &'static str> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err("connect"),
        Err(_) => return Err("connect_timeout"),
    };
    // Small requests, answered at once: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "connect")?;
    tokio::spawn(async move {
        // Ends when the worker drops the sender or the server closes; either is expected.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads its whole answer (draining a 200's body without keeping it).
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<Answer, hyper::Error> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if status == StatusCode::OK {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(Answer::Success);
    }
    Ok(Answer::Error(status, body.collect().await?.to_bytes()))
}
