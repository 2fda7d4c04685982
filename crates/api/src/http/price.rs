//! `GET /price?asset=BTC[&source=okx]`: the current price of one asset, metered.

use axum::{
    extract::{Request, State},
    http::{StatusCode, request::Parts},
    response::Response,
};
use std::{net::IpAddr, time::Instant};

use beast_core::{ApiError, Protocol, now_ms};
use serde::Deserialize;

use super::{Peer, Presented, error_response, json_response, keyed_price, parse_query};
use crate::{AppState, keys::KeyEntry, state::normalize_asset};

#[derive(Debug, Deserialize)]
pub struct PriceQuery {
    /// Asset name, case-insensitive (`BTC`).
    asset: Option<String>,
    /// Pin one source: an exchange name (`okx`) or a source tag (`okx-ws`).
    source: Option<String>,
}

/// The `/price` route, for what the price listener does not answer before routing (`HEAD`).
pub async fn price(State(state): State<AppState>, request: Request) -> Response {
    let (head, _) = request.into_parts();
    let answering = answer(state, &head, Peer::of(&head));
    drop(head);
    answering.await
}

/// `/price`, whole: governed and counted like every price request, keyed, metered. A request
/// from `peer` without a valid key spends one of its address's unpaid requests. `head` is read
/// at once and not held (see [`Presented`]): its query is parsed before the key is checked,
/// so a refused request pays for it too (a scan, and its asset and source copied).
pub(crate) fn answer(
    state: AppState,
    head: &Parts,
    peer: Option<IpAddr>,
) -> impl Future<Output = Response> + Send + 'static {
    let presented = Presented::read(&state, &head.headers);
    let query = parse_query::<PriceQuery>(head.uri.query());
    async move {
        keyed_price(&state, presented, peer, async |key, started| {
            let (asset, source) = match &query {
                Ok(q) => (required_asset(q.asset.as_deref()), q.source.as_deref()),
                Err(e) => (Err(e.clone()), None),
            };
            match metered_price(&state, &key, asset, source, Reply::http(started)).await {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(e) => error_response(&e),
            }
        })
        .await
    }
}

/// The asset a price request names; none is a bad request.
pub(crate) fn required_asset(asset: Option<&str>) -> Result<&str, ApiError> {
    asset.ok_or_else(|| ApiError::BadRequest("asset is required".into()))
}

/// Where a metered answer goes: the protocol it is metered as, when its request started, and
/// the buffer it is rendered into, after what it holds, `max` bytes at most in all.
pub(crate) struct Reply {
    pub(crate) protocol: Protocol,
    pub(crate) started: Instant,
    pub(crate) out: Vec<u8>,
    pub(crate) max: usize,
}

impl Reply {
    /// An HTTP answer: a body of its own, of any length.
    pub(crate) fn http(started: Instant) -> Self {
        Self {
            protocol: Protocol::Http,
            started,
            out: Vec::new(),
            max: usize::MAX,
        }
    }

    /// Whether what is rendered fits; if not, the answer is refused, pointing to `instead`
    /// (the HTTP endpoint to ask). Only a datagram has a limit.
    pub(crate) fn fits(&self, instead: &'static str) -> Result<(), ApiError> {
        crate::udp::fits(self.out.len(), self.max, instead)
    }
}

/// One metered price answer, whatever the protocol: admission (rate limit, quota) before
/// anything else, so even malformed requests (`asset` is then the reason) spend the key's
/// rate; then the lookup and the rendering (an answer longer than the reply takes is refused),
/// and the quota count and the usage row together, after the one wait for room in the usage
/// channel (see [`AppState::metering`]; a stopping node's refusal, `stopping`, is not
/// metered). Returns the reply's buffer with the body rendered after what it held.
///
/// Not an `async fn`: one would hold its arguments twice (as arguments, and as the locals they
/// are moved into), and every price request's future is allocated and moved whole. (A UDP
/// request's was 1,168 bytes with it and is 792 now, under the 1,032 of glibc's per-thread
/// cache of small blocks; `-Zprint-type-sizes` on nightly shows them.)
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
pub(crate) fn metered_price<'a>(
    state: &'a AppState,
    key: &'a KeyEntry,
    asset: Result<&'a str, ApiError>,
    source: Option<&'a str>,
    mut reply: Reply,
) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send + 'a {
    async move {
        let now = now_ms();
        let given = asset.as_ref().ok().copied();
        let name = asset.and_then(normalize_asset);
        let (outcome, admitted) = match (key.admit(now, 1), &name) {
            (Err(e), _) => (Err(e), None),
            (Ok(_), Err(e)) => (Err(e.clone()), None),
            (Ok(admitted), Ok(name)) => {
                (state.price_answer(name, source, now).await, Some(admitted))
            }
        };
        let outcome = outcome.and_then(|served| {
            served.0.template.render_into(now, &mut reply.out);
            reply.fits("GET /price").map(|()| served)
        });
        // Refused here, its quota room is given back (`admitted` dropped unsettled).
        let mut metering = state
            .metering(key, 1, reply.protocol, reply.started, now)
            .await?;
        if let Some(admitted) = admitted {
            admitted.settle(u64::from(outcome.is_ok()));
        }
        let recorded = match &name {
            Ok(name) => name.as_str(),
            Err(_) => given.unwrap_or(""),
        };
        metering.record(recorded, outcome.as_ref());
        outcome.map(|_| reply.out)
    }
}
