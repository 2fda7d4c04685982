//! The HTTP API, one file per endpoint. Keyed endpoints: `/price`, `/prices`. Public:
//! `/exchanges`, `/assets`, `/health`. Every error is JSON from the one error table. Keyed
//! price requests pass the in-flight governor before their key is looked up, and are counted
//! ([`keyed_price`]); the price listener answers `GET /price` before routing ([`Endpoint`]),
//! and public listeners limit requests without a valid key per address ([`crate::peers`]).
//! Every listener is served by [`serve`]: HTTP/1.1 with keep-alive, and limits on each
//! request's header (time and size) and on stalled writes ([`HttpLimits`]).

mod assets;
mod exchanges;
pub(crate) mod health;
mod metrics;
pub(crate) mod price;
pub(crate) mod prices;

use std::{
    convert::Infallible,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
    routing::get,
};
use beast_core::ApiError;
use futures_util::{FutureExt, future::BoxFuture};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutWriter;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::{AppState, keys::KeyEntry, state::key_text};

/// The price listener's routes, with the admin API under `/admin`. Served through
/// [`Endpoint::price`], which answers `GET /price` before routing: a layer added here would
/// not see that request, so one meant for every request goes on the listener instead. Its
/// price routes (`/price`, `/prices`) apply the per-address limit themselves, with the
/// [`Peer`] the endpoint gives them: a handler put there must do so too.
pub fn price_router(state: AppState) -> Router {
    Router::new()
        .nest("/admin", crate::admin::router(state.clone()))
        .route("/prices", get(prices::prices))
        .route("/price", get(price::price))
        .route("/exchanges", get(exchanges::exchanges))
        .route("/assets", get(assets::assets))
        .route("/health", get(health::health))
        .fallback(not_found)
        .with_state(state)
}

/// What a listener serves: its router, and on the price listener `GET /price` answered before
/// any routing. That one request is most of a node's traffic, and the router's matching,
/// boxing and extractors cost it more than its own work.
///
/// On a public listener (price, report), a request that presents no valid key spends one of
/// its address's unpaid requests ([`crate::peers`]); with none left it is answered 429. A
/// price request (`/price`, `/prices`) spends it once its key is refused ([`keyed_price`]), so
/// it is counted as every refused price request is (and, as every one, is answered 503 first
/// when the node is at its in-flight limit); any other request before routing.
#[derive(Clone)]
pub struct Endpoint {
    router: Router,
    /// A public listener's state, for the per-address limit (and `GET /price`).
    public: Option<AppState>,
    /// On the price listener: `GET /price` is answered before routing.
    answers_price: bool,
    /// The connection's peer, set by [`Endpoint::for_peer`].
    peer: Option<IpAddr>,
}

impl Endpoint {
    /// The price listener: [`price_router`] with `GET /price` taken first; public.
    pub fn price(state: AppState) -> Self {
        Self {
            router: price_router(state.clone()),
            public: Some(state),
            answers_price: true,
            peer: None,
        }
    }

    /// A public listener serving `router` (the report listener).
    pub fn public(router: Router, state: AppState) -> Self {
        Self {
            router,
            public: Some(state),
            answers_price: false,
            peer: None,
        }
    }

    /// This endpoint for one connection, from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer.ip()),
            ..self.clone()
        }
    }
}

/// An internal listener (health): no per-address limit.
impl From<Router> for Endpoint {
    fn from(router: Router) -> Self {
        Self {
            router,
            public: None,
            answers_price: false,
            peer: None,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Endpoint {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        // A router is shared behind an `Arc`: the clone is what calling it needs.
        let Some(state) = &self.public else {
            return Box::pin(self.router.clone().call(request));
        };
        // Keyed routes spend the address's allowance themselves, once their key is refused.
        let keyed_route = match (request.method(), request.uri().path()) {
            (&Method::GET, "/price") if self.answers_price => {
                // Allocated per request: `map`, not an `async` block awaiting it, which would
                // hold the future twice (3,960 bytes then, 896 now: within glibc's per-thread
                // cache of small blocks, which ends at 1,032).
                return Box::pin(
                    price::answer(state.clone(), &request.into_parts().0, self.peer).map(Ok),
                );
            }
            (&Method::GET | &Method::HEAD, "/price" | "/prices") => self.answers_price,
            // The report listener's (the price listener has none).
            (&Method::GET | &Method::HEAD, crate::report::USAGE | crate::report::SUMMARY) => {
                !self.answers_price
            }
            _ => false,
        };
        if let Some(peer) = self.peer {
            if keyed_route {
                request.extensions_mut().insert(Peer(peer));
            } else if let Err(e) = state
                .peers
                .admit(peer, || presents_valid_key(state, request.headers()))
            {
                return Box::pin(std::future::ready(Ok(error_response(&e))));
            }
        }
        Box::pin(self.router.clone().call(request))
    }
}

/// Time and size limits of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    header_timeout: Duration,
    write_timeout: Duration,
    max_header_bytes: usize,
}

impl HttpLimits {
    /// The longest time limit: it is added to the clock, which a huge value overflows.
    const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
    /// The smallest header limit hyper takes (its first read buffer).
    const MIN_HEADER_BYTES: usize = 8192;

    /// Both time limits are capped at a day; the header limit is at least 8 KiB.
    ///
    /// A connection must send a whole request header within `header_timeout` of opening, or of
    /// its last answer, or it is closed: a client cannot hold a connection with a header sent
    /// byte by byte, and an idle keep-alive connection is closed after it.
    ///
    /// A connection whose answer cannot be written for `write_timeout` (the client stopped
    /// reading, and the socket buffers are full) is closed: a stalled reader cannot hold a
    /// connection and a streamed export. The limit is on the time between two successive writes,
    /// not on the whole answer: a client that keeps reading is not cut.
    ///
    /// A request whose line and headers take more than `max_header_bytes` is answered
    /// `431 Request Header Fields Too Large` and its connection closed. Bodies are limited
    /// where they are read (the admin API's JSON, 2 MB).
    pub fn new(header_timeout: Duration, write_timeout: Duration, max_header_bytes: usize) -> Self {
        Self {
            header_timeout: header_timeout.min(Self::MAX_TIMEOUT),
            write_timeout: write_timeout.min(Self::MAX_TIMEOUT),
            max_header_bytes: max_header_bytes.max(Self::MIN_HEADER_BYTES),
        }
    }
}

/// Pause after a failed accept (out of file descriptors, say), so it is neither spun on nor
/// logged more than once a second.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves the service `for_peer` makes for each connection (an [`Endpoint`] on a node) on
/// `listener` until `stop` fires: HTTP/1.1 with keep-alive, TCP_NODELAY, and the limits of
/// `limits`. Then it closes the listener
/// (new connections are refused at once), lets every connection finish the request it is
/// answering, closes idle ones, and returns once all are closed.
pub async fn serve<S, B>(
    listener: TcpListener,
    for_peer: impl Fn(SocketAddr) -> S,
    limits: HttpLimits,
    stop: CancellationToken,
) where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        // Only a write that cannot go on arms the timer: answers that fit the socket cost nothing.
        let mut stream = TimeoutWriter::new(stream);
        stream.set_timeout(Some(limits.write_timeout));
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), for_peer(peer)));
        tokio::spawn(async move {
            // A client hanging up, or closed for a time limit, is a normal end.
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection on `listener` and its peer, with TCP_NODELAY (answers are small and written whole:
/// no Nagle delay). A connection that failed before it was taken is skipped; any other accept
/// error (out of file descriptors, say) is logged and retried after a pause.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
                return (stream, peer);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// A health listener's routes: `/health`, and `/metrics` for Prometheus (only here, not on the
/// public price and report listeners).
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The client address of a routed price or report request on a public listener, whose
/// allowance of unpaid requests it spends once its key is refused (see [`keyed_price`] and
/// `AppState::admit_http`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) IpAddr);

impl Peer {
    /// The address a routed request was sent from, if its listener limits by address.
    pub(crate) fn of(head: &axum::http::request::Parts) -> Option<IpAddr> {
        head.extensions.get::<Peer>().map(|peer| peer.0)
    }
}

/// What [`keyed_price`] needs of a price request's head, read from it at once so the head is
/// not held while the answer is awaited: hyper reuses a connection's read buffer for the next
/// request only if nothing points into it by then, and a head held costs a new buffer per
/// request.
pub(crate) struct Presented {
    /// When its head was read.
    started: Instant,
    /// The hash of the key it presents (hashed once: a refused key is checked against the
    /// admin key too), or why it presents none.
    hash: Result<[u8; 32], ApiError>,
}

impl Presented {
    pub(crate) fn read(state: &AppState, headers: &HeaderMap) -> Self {
        Self {
            started: Instant::now(),
            hash: presented_key(headers).map(|k| state.keys.presented_hash(k)),
        }
    }
}

/// An HTTP price request (`/price`, `/prices`): counted, governed, keyed, then `answer` with
/// the key and when the request started, and its status counted.
///
/// Governed: only while the node is under its in-flight limit (503 `overloaded` otherwise,
/// before the key is looked up; it was hashed, and a `GET /price` query parsed, as the request
/// was read). Keyed: a request without an active API key is refused here and not metered
/// (there is no key to meter it to); from `peer` (on a public listener) it also spends one of
/// the address's unpaid requests, unless its key is the admin key.
///
/// One function, not a governor wrapping a keyed future: a future passed to an `async fn` and
/// awaited there is stored twice in its state (once as an argument, once being awaited), and
/// every price request's state is allocated and moved whole.
pub(crate) async fn keyed_price<F: Future<Output = Response>>(
    state: &AppState,
    presented: Presented,
    peer: Option<IpAddr>,
    answer: impl FnOnce(Arc<KeyEntry>, Instant) -> F,
) -> Response {
    let counters = &state.counters;
    counters.tcp_request();
    // Early `break`s, not matches around the `await`: what a match inspects is held across it.
    let response = 'answered: {
        let _in_flight = match counters.enter() {
            Ok(in_flight) => in_flight,
            Err(e) => break 'answered error_response(&e),
        };
        let hash = presented.hash.as_ref();
        let key = match state.authenticate_hash(hash) {
            Ok(key) => key,
            Err(e) => {
                // Refused as an API key; the admin key still pays (as on every path).
                let admin = || hash.is_ok_and(|h| state.admin.verify_hash(h));
                break 'answered key_refused(state, peer, admin, &e);
            }
        };
        answer(key, presented.started).await
    };
    counters.answered(response.status().as_u16());
    response
}

/// The answer to a keyed request whose key is refused (`e`): from `peer` (on a public
/// listener) it spends one of the address's unpaid requests, unless it `pays` (presents the
/// admin key), and past them is answered 429 instead.
pub(crate) fn key_refused(
    state: &AppState,
    peer: Option<IpAddr>,
    pays: impl FnOnce() -> bool,
    e: &ApiError,
) -> Response {
    let limited = peer.and_then(|p| state.peers.admit(p, pays).err());
    error_response(limited.as_ref().unwrap_or(e))
}

pub(crate) async fn not_found() -> Response {
    error_response(&ApiError::NotFound("no such endpoint".into()))
}

/// A body with a status and a content type.
pub(crate) fn typed_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON body with a status.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    typed_response(status, "application/json", body)
}

/// The JSON answer for an error, with `Retry-After` where it applies.
pub(crate) fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, error.to_json().to_string().into_bytes());
    if let Some(secs) = error.retry_after_s() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The key a request presents: `Authorization: Bearer <key>` (the scheme in any case, as
/// HTTP's schemes are) or `X-API-Key: <key>`; an `Authorization` header with no bearer key
/// leaves `X-API-Key` to be read.
pub(crate) fn presented_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        });
    let api_key = || headers.get("x-api-key").and_then(|v| v.to_str().ok());
    key_text(bearer).or_else(|_| key_text(api_key()))
}

/// Whether the headers present a valid key (an active API key or the admin key): one hash of
/// it for both.
fn presents_valid_key(state: &AppState, headers: &HeaderMap) -> bool {
    presented_key(headers).is_ok_and(|k| {
        let hash = state.keys.presented_hash(k);
        state.keys.authenticate_hash(&hash).is_ok() || state.admin.verify_hash(&hash)
    })
}

/// Parses a query string into `T`; a bad query is a JSON 400, not a plain-text rejection.
pub(crate) fn parse_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(headers: &[(&'static str, &str)]) -> Result<String, &'static str> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        presented_key(&map).map(str::to_owned).map_err(|e| e.code())
    }

    #[test]
    fn a_key_is_read_from_a_bearer_header_in_any_case_or_else_x_api_key() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} k1");
            assert_eq!(presented(&[("authorization", &value)]), Ok("k1".into()));
        }
        assert_eq!(presented(&[("x-api-key", " k2 ")]), Ok("k2".into()));
        let both = [("authorization", "Bearer k1"), ("x-api-key", "k2")];
        assert_eq!(presented(&both), Ok("k1".into()), "the bearer key first");
        for no_bearer in ["Bearer ", "Bearer    ", "Basic a2V5", "Bearer"] {
            assert_eq!(
                presented(&[("authorization", no_bearer), ("x-api-key", "k2")]),
                Ok("k2".into()),
                "{no_bearer:?}"
            );
            assert_eq!(
                presented(&[("authorization", no_bearer)]),
                Err("missing_api_key")
            );
        }
        assert_eq!(presented(&[]), Err("missing_api_key"));
    }
}
