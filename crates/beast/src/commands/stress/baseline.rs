//! `beast bench-baseline`: the least an HTTP/1.1 server can do (the node's hyper serving loop,
//! keep-alive, the same bytes for every request, no auth, no lookup), so `scripts/bench.sh`
//! can say how far a node is from it. Prints `listening on ADDR` once bound; runs until SIGTERM or Ctrl-C.

use std::{convert::Infallible, io::Write};

use anyhow::Context;
use http_body_util::Full;
use hyper::{
    Response,
    body::Bytes,
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use tokio::net::TcpListener;

use crate::{app::Params, cli::BenchBaselineArgs};

pub async fn run(args: &BenchBaselineArgs) -> anyhow::Result<()> {
    // Accept errors are logged (on stderr) by the node's serving loop.
    crate::telemetry::init("text")?;
    let stop = crate::commands::stop_on_signal(|| {})?;
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

    let service = service_fn(move |_request| {
        let mut response = Response::new(Full::new(body.clone()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        async move { Ok::<_, Infallible>(response) }
    });
    // The node's serving loop and limits (their defaults), so only the work per request
    // differs between the two.
    let for_peer = move |_| service.clone();
    beast_api::http::serve(listener, for_peer, Params::from_rows(&[]).http, stop).await;
    Ok(())
}
