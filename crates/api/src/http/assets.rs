//! `GET /assets` (public): every enabled asset and the exchanges that list it.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::AppState;

pub async fn assets(State(state): State<AppState>) -> Json<Value> {
    let catalog = state.catalog.load();
    let assets: Vec<_> = catalog.assets.values().collect();
    Json(json!({ "count": assets.len(), "assets": assets }))
}
