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
            let mut row = json!(e);
            row["connected"] = json!(live.is_some_and(|s| s.connected));
            row["feed"] = json!(live);
            row
        })
        .collect();
    Json(json!({ "exchanges": rows }))
}
