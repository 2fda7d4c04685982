//! `GET /exchanges` (public): the exchanges this node knows, with their live feed status.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::AppState;

pub async fn exchanges(State(state): State<AppState>) -> Json<Value> {
    let status = state.feeds.status();
    let rows: Vec<Value> = state
        .catalog
        .load()
        .exchanges
        .iter()
        .map(|e| {
            let live = status.iter().find(|s| s.name == e.name);
            json!({
                "name": e.name,
                "source": e.source,
                "enabled": e.enabled,
                "assets": e.assets,
                "prewarm_assets": e.prewarm_assets,
                "connected": live.is_some_and(|s| s.connected),
                "feed": live,
            })
        })
        .collect();
    Json(json!({ "exchanges": rows }))
}
