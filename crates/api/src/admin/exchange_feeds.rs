//! `GET /admin/exchange-feeds`: every stored definition with its live status.
//! `POST /admin/exchange-feeds/save`: insert or replace a definition (the `exchange_feeds`
//! fields as JSON); refused with the offending field named if it does not validate.
//! `POST /admin/exchange-feeds/toggle`: `{"name":"okx","enabled":false}` (no `enabled` flips it).

use axum::{Json, extract::State, extract::rejection::JsonRejection, response::Response};
use beast_core::{ApiError, ExchangeDefinition};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{answer, apply, body};
use crate::{AppState, manage};

pub async fn list(State(state): State<AppState>) -> Response {
    answer(rows(&state).await)
}

async fn rows(state: &AppState) -> Result<Value, ApiError> {
    let definitions = state
        .store
        .exchange_feeds()
        .await
        .map_err(manage::ManageError::from)?;
    let status = state.feeds.status();
    let rows: Vec<Value> = definitions
        .iter()
        .map(|d| {
            let mut row = json!(d);
            row["status"] = json!(status.iter().find(|s| s.name == d.name));
            row
        })
        .collect();
    Ok(json!({ "exchange_feeds": rows }))
}

pub async fn save(
    State(state): State<AppState>,
    definition: Result<Json<ExchangeDefinition>, JsonRejection>,
) -> Response {
    let result = async {
        let saved = manage::save_exchange(&*state.store, body(definition)?).await?;
        Ok(json!({ "saved": saved, "applied": apply(&state).await }))
    };
    answer(result.await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    /// Exchange name.
    name: String,
    /// New state; absent = flip.
    enabled: Option<bool>,
}

pub async fn toggle(
    State(state): State<AppState>,
    request: Result<Json<Toggle>, JsonRejection>,
) -> Response {
    let result = async {
        let Toggle { name, enabled } = body(request)?;
        let enabled = manage::toggle_exchange(&*state.store, &name, enabled).await?;
        Ok(json!({ "name": name, "enabled": enabled, "applied": apply(&state).await }))
    };
    answer(result.await)
}
