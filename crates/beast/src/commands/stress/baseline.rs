//! `beast bench-baseline`: the least an HTTP/1.1 server can do (hyper, keep-alive, the same
//! bytes for every request, no auth, no lookup), so `scripts/bench.sh` can say how far a
//! node is from it. Prints `listening on ADDR` once bound; runs until SIGTERM or Ctrl-C.

use std::{convert::Infallible, io::Write};

use anyhow::Context;
use http_body_util::Full;
use hyper::{
    Response,
    body::Bytes,
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::cli::BenchBaselineArgs;

pub async fn run(args: &BenchBaselineArgs) -> anyhow::Result<()> {
    // Accept errors are logged (on stderr) by the node's `accept`.
    crate::telemetry::init("text")?;
    let body = Bytes::from(
        std::fs::read(&args.body_file)
            .with_context(|| format!("reading {}", args.body_file.display()))?,
    );
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;

    let stop = crate::commands::shutdown_signal();
    tokio::pin!(stop);
    loop {
        // The node's own accept: TCP_NODELAY, and accept errors skipped or waited out.
        let stream = tokio::select! {
            stream = beast_api::http::accept(&listener) => stream,
            _ = &mut stop => return Ok(()),
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let mut response = Response::new(Full::new(body.clone()));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                async move { Ok::<_, Infallible>(response) }
            });
            // A client hanging up is the normal end of a connection.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
