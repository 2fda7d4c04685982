//! `GET /health` (public, on every listener): liveness plus a summary of feeds and metering.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::AppState;

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let feeds = state.feeds.status();
    let up = feeds.iter().filter(|f| f.connected).count();
    Json(json!({
        "status": if up == feeds.len() { "ok" } else { "degraded" },
        "node": &*state.node,
        "roles": &*state.roles,
        "uptime_s": state.started.elapsed().as_secs(),
        "feeds": { "total": feeds.len(), "connected": up },
        "keys": state.keys.len(),
        "usage": state.usage.stats().snapshot(),
        "udp": state.counters.udp.snapshot(),
        "report_udp": state.counters.report_udp.snapshot(),
    }))
}
