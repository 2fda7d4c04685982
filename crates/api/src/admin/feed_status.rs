//! `GET /admin/feed-status`: every running feed's connections, counters and stale assets.

use axum::{extract::State, response::Response};
use serde_json::json;

use super::answer;
use crate::AppState;

pub async fn feed_status(State(state): State<AppState>) -> Response {
    let feeds = state.feeds.status();
    let stale: usize = feeds.iter().map(|f| f.stale_assets.len()).sum();
    answer(Ok(json!({
        "feeds": feeds.len(),
        "connected": feeds.iter().filter(|f| f.connected).count(),
        "stale_pairs": stale,
        "status": feeds,
    })))
}
