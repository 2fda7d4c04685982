//! `GET /admin/exchange-assets[?exchange=okx][&asset=BTC]`: the asset mappings.
//! `POST /admin/exchange-assets/save`: a batch of mappings (a JSON array, or
//! `{"assets":[...]}`), inserted or replaced by (exchange, asset); all or none.
//! `POST /admin/exchange-assets/toggle`: `{"exchange":"okx","asset":"BTC","enabled":true,
//! "prewarm":false}` (either flag may be left out).

use axum::{
    Json,
    extract::{RawQuery, State, rejection::JsonRejection},
    response::Response,
};
use beast_core::{ApiError, AssetMapping};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{answer, apply, body};
use crate::{AppState, http::parse_query, manage, state::normalize_asset};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this exchange's mappings.
    exchange: Option<String>,
    /// Only this asset (case-insensitive).
    asset: Option<String>,
}

pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let result = async {
        let q: ListQuery = parse_query(query.as_deref())?;
        let asset = q.asset.as_deref().map(normalize_asset).transpose()?;
        let rows: Vec<AssetMapping> = state
            .store
            .asset_map()
            .await
            .map_err(manage::ManageError::from)?
            .into_iter()
            .filter(|m| q.exchange.as_ref().is_none_or(|e| *e == m.exchange))
            .filter(|m| asset.as_ref().is_none_or(|a| *a == m.asset))
            .collect();
        Ok(json!({ "count": rows.len(), "exchange_assets": rows }))
    };
    answer(result.await)
}

pub async fn save(
    State(state): State<AppState>,
    batch: Result<Json<Value>, JsonRejection>,
) -> Response {
    let result = async {
        let rows: Vec<AssetMapping> = serde_json::from_value(manage::mapping_rows(body(batch)?))
            .map_err(|e| ApiError::BadRequest(format!("expected an array of mappings: {e}")))?;
        let saved = manage::save_assets(&*state.store, &rows).await?;
        Ok(
            json!({ "saved": saved.len(), "exchange_assets": saved, "applied": apply(&state).await }),
        )
    };
    answer(result.await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    exchange: String,
    asset: String,
    enabled: Option<bool>,
    prewarm: Option<bool>,
}

pub async fn toggle(
    State(state): State<AppState>,
    request: Result<Json<Toggle>, JsonRejection>,
) -> Response {
    let result = async {
        let t = body(request)?;
        if t.enabled.is_none() && t.prewarm.is_none() {
            return Err(ApiError::BadRequest(
                "give `enabled` and/or `prewarm`".into(),
            ));
        }
        let mapping =
            manage::toggle_asset(&*state.store, &t.exchange, &t.asset, t.enabled, t.prewarm)
                .await?;
        Ok(json!({ "exchange_asset": mapping, "applied": apply(&state).await }))
    };
    answer(result.await)
}
