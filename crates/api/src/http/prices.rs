//! `GET /prices?assets=BTC,ETH`: several assets in one request. One rate-limit token per
//! request; each asset is metered (one usage row each) and counts toward the quota.

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::Response,
};
use beast_core::{ApiError, now_ms};
use futures_util::future::join_all;
use serde::Deserialize;

use super::{
    Peer, Presented, error_response, json_response, keyed_price, parse_query, price::Reply,
};
use crate::{AppState, keys::KeyEntry, state::normalize_asset};

/// Most assets in one request.
pub(crate) const MAX_ASSETS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct PricesQuery {
    /// Comma-separated asset names (`BTC,ETH`), at most 100.
    assets: Option<String>,
}

fn requested_assets(query: Result<PricesQuery, ApiError>) -> Result<Vec<String>, ApiError> {
    let list = query?
        .assets
        .ok_or_else(|| ApiError::BadRequest("assets is required".into()))?;
    asset_list(list.split(','), MAX_ASSETS)
}

/// Normalized asset names, each once, in the order first asked for: at least one, at most
/// `max`.
pub(crate) fn asset_list<'a>(
    names: impl Iterator<Item = &'a str>,
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let mut assets: Vec<String> = Vec::new();
    for name in names {
        let name = normalize_asset(name)?;
        if !assets.contains(&name) {
            if assets.len() == max {
                return Err(ApiError::BadRequest(format!(
                    "at most {max} assets per request"
                )));
            }
            assets.push(name);
        }
    }
    if assets.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one asset is required".into(),
        ));
    }
    Ok(assets)
}

/// `GET /prices`. Its list of assets is read only once its key is accepted: it may name
/// thousands.
pub async fn prices(State(state): State<AppState>, request: Request) -> Response {
    let (head, _) = request.into_parts();
    let (presented, peer) = (Presented::read(&state, &head.headers), Peer::of(&head));
    keyed_price(&state, presented, peer, async |key, started| {
        let assets = requested_assets(parse_query(head.uri.query()));
        match metered_prices(&state, &key, assets, Reply::http(started)).await {
            Ok((status, body)) => json_response(status, body),
            Err(e) => error_response(&e),
        }
    })
    .await
}

/// Several assets in one metered request, whatever the protocol: one rate-limit token, one
/// usage row per asset. Returns the status and the reply's buffer with
/// `{"prices":{..},"errors":{..}}` written after what it held, or the error that refused the
/// whole request (metered as one row): its list of assets, its key's limits, or an answer
/// longer than the reply takes.
pub(crate) async fn metered_prices(
    state: &AppState,
    key: &KeyEntry,
    assets: Result<Vec<String>, ApiError>,
    mut reply: Reply,
) -> Result<(StatusCode, Vec<u8>), ApiError> {
    let now = now_ms();
    let (protocol, started) = (reply.protocol, reply.started);
    let refused = async |e: ApiError| {
        let mut metering = state.metering(key, 1, protocol, started, now).await?;
        metering.record("", Err(&e));
        Err(e)
    };
    // One rate token for the request, quota room for every asset asked for (all or none).
    let wanted = assets.as_ref().map_or(1, Vec::len) as u64;
    let (admitted, assets) = match (key.admit(now, wanted), assets) {
        (Ok(admitted), Ok(assets)) => (admitted, assets),
        (Err(e), _) | (Ok(_), Err(e)) => return refused(e).await,
    };
    // Concurrently: assets fetched on demand do not wait for each other.
    let answers = join_all(assets.iter().map(|a| state.price_answer(a, None, now))).await;
    let results: Vec<_> = assets.iter().zip(answers).collect();
    let body = &mut reply.out;
    body.extend_from_slice(b"{\"prices\":{");
    let mut first = true;
    for (asset, answer) in results
        .iter()
        .filter_map(|(a, r)| r.as_ref().ok().map(|(x, _)| (a, x)))
    {
        body.extend_from_slice(if first { b"\"" } else { b",\"" });
        body.extend_from_slice(asset.as_bytes());
        body.extend_from_slice(b"\":");
        answer.template.render_into(now, body);
        first = false;
    }
    let errors: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .filter_map(|(a, r)| {
            r.as_ref()
                .err()
                .map(|e| ((*a).clone(), e.to_json()["error"].clone()))
        })
        .collect();
    body.extend_from_slice(b"},\"errors\":");
    body.extend_from_slice(serde_json::Value::Object(errors).to_string().as_bytes());
    body.push(b'}');
    // Whole, or refused whole: an answer is never cut.
    if let Err(e) = reply.fits("GET /prices") {
        return refused(e).await;
    }
    let served = results.iter().filter(|(_, r)| r.is_ok()).count();
    let mut metering = state
        .metering(key, results.len(), protocol, started, now)
        .await?;
    admitted.settle(served as u64);
    for (asset, result) in &results {
        metering.record(asset, result.as_ref());
    }
    let status = match results.iter().find_map(|(_, r)| r.as_ref().err()) {
        Some(e) if served == 0 => {
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        _ => StatusCode::OK,
    };
    Ok((status, reply.out))
}
