//! `GET /price?asset=BTC[&source=okx]`: the current price of one asset, metered.

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};
use beast_core::{ApiError, Protocol, now_ms};
use serde::Deserialize;

use super::{Keyed, error_response, json_response, parse_query};
use crate::{AppState, state::normalize_asset};

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
    let requested = query
        .as_ref()
        .ok()
        .and_then(|q| q.asset.clone())
        .unwrap_or_default();
    let outcome = query.and_then(|q| {
        let asset = normalize_asset(
            q.asset
                .as_deref()
                .ok_or_else(|| ApiError::BadRequest("asset is required".into()))?,
        )?;
        key.admit(now)?;
        state
            .price_answer(&asset, q.source.as_deref(), now)
            .map(|a| (asset, a))
    });
    let response = match &outcome {
        Ok((_, answer)) => {
            key.count_success(1);
            json_response(StatusCode::OK, answer.template.render(now))
        }
        Err(e) => error_response(e),
    };
    let asset = outcome
        .as_ref()
        .map(|(a, _)| a.as_str())
        .unwrap_or(requested.trim());
    state
        .meter(
            &key,
            asset,
            outcome.as_ref().map(|(_, a)| a),
            Protocol::Http,
            started,
        )
        .await;
    response
}
