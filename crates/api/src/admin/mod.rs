//! The admin API, behind its own auth layer: every route needs the admin key (`Authorization:
//! Bearer <key>` or `X-API-Key`), compared in constant time. One file per resource.
//!
//! - `GET /admin/exchange-feeds`, `POST /admin/exchange-feeds/save`, `POST /admin/exchange-feeds/toggle`
//! - `GET /admin/exchange-assets`, `POST /admin/exchange-assets/save`, `POST /admin/exchange-assets/toggle`
//! - `GET /admin/feed-status`
//! - `GET /admin/stress-stats`, `GET /admin/stress-reset`
//!
//! Changes are written to the store and applied to this node before the answer is sent.

mod exchange_assets;
mod exchange_feeds;
mod feed_status;
mod stress_stats;

use axum::{
    Json, Router,
    extract::{Request, State, rejection::JsonRejection},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use beast_core::ApiError;
use beast_store::keys::hash_key;
use serde::{Serialize, de::DeserializeOwned};
use subtle::ConstantTimeEq;

use crate::{
    AppState,
    http::{error_response, json_response, presented_key},
};

/// The admin key, kept only as its hash.
pub struct AdminKey {
    hash: [u8; 32],
}

impl AdminKey {
    pub fn new(raw: &str) -> Self {
        Self {
            hash: hash_key(raw),
        }
    }

    /// Whether `presented` is the admin key ([`AdminKey::verify_hash`] of its hash).
    pub(crate) fn verify(&self, presented: &str) -> bool {
        self.verify_hash(&hash_key(presented))
    }

    /// Whether a presented key with this hash is the admin key. Constant-time: comparing
    /// fixed-length hashes with `subtle` leaks neither the key nor its length.
    pub(crate) fn verify_hash(&self, hash: &[u8; 32]) -> bool {
        hash.ct_eq(&self.hash).into()
    }
}

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/exchange-feeds", get(exchange_feeds::list))
        .route("/exchange-feeds/save", post(exchange_feeds::save))
        .route("/exchange-feeds/toggle", post(exchange_feeds::toggle))
        .route("/exchange-assets", get(exchange_assets::list))
        .route("/exchange-assets/save", post(exchange_assets::save))
        .route("/exchange-assets/toggle", post(exchange_assets::toggle))
        .route("/feed-status", get(feed_status::feed_status))
        .route("/stress-stats", get(stress_stats::stats))
        .route("/stress-reset", get(stress_stats::reset))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match presented_key(request.headers()) {
        Ok(key) if state.admin.verify(key) => next.run(request).await,
        Ok(_) => error_response(&ApiError::Forbidden),
        Err(e) => error_response(&e),
    }
}

/// A JSON request body, or a 400 saying what is wrong with it.
fn body<T: DeserializeOwned>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// A 200 JSON answer, or the error's answer.
fn answer<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result.and_then(|v| {
        serde_json::to_vec(&v).map_err(|e| crate::internal("serializing the answer", &e))
    }) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => error_response(&e),
    }
}

/// Applies the stored configuration after a change; a failure is logged and reported, the
/// change itself is saved and the poller applies it later.
async fn apply(state: &AppState) -> bool {
    match state.apply_exchanges().await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "saved, but applying the exchanges failed");
            false
        }
    }
}
