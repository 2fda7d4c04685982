//! `GET /price?asset=BTC[&source=okx]`: the current price of one asset, metered.

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};
use beast_core::{ApiError, Protocol, now_ms};
use serde::Deserialize;

use super::{Keyed, error_response, json_response, parse_query};
use crate::{
    AppState,
    keys::KeyEntry,
    state::{Served, normalize_asset},
};

#[derive(Debug, Deserialize)]
pub struct PriceQuery {
    /// Asset name, case-insensitive (`BTC`).
    asset: Option<String>,
    /// Pin one source: an exchange name (`okx`) or a source tag (`okx-ws`).
    source: Option<String>,
}

pub async fn price(
    State(state): State<AppState>,
    Keyed { key, started }: Keyed,
    RawQuery(query): RawQuery,
) -> Response {
    let now = now_ms();
    let query = parse_query::<PriceQuery>(query.as_deref());
    let outcome = match &query {
        Ok(q) => answer(&state, &key, q, now).await,
        Err(e) => Err(e.clone()),
    };
    let response = match &outcome {
        Ok((answer, _)) => {
            key.count_success(1);
            json_response(StatusCode::OK, answer.template.render(now))
        }
        Err(e) => error_response(e),
    };
    let requested = query
        .as_ref()
        .ok()
        .and_then(|q| q.asset.as_deref())
        .unwrap_or("");
    state
        .meter(&key, requested, outcome.as_ref(), Protocol::Http, started)
        .await;
    response
}

/// Admission (rate limit, quota) and lookup for one well-formed query.
async fn answer(
    state: &AppState,
    key: &KeyEntry,
    q: &PriceQuery,
    now: i64,
) -> Result<Served, ApiError> {
    let asset = q
        .asset
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("asset is required".into()))?;
    let asset = normalize_asset(asset)?;
    key.admit(now)?;
    state.price_answer(&asset, q.source.as_deref(), now).await
}
