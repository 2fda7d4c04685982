//! `GET /admin/stress-stats`: this node's 24 runtime counters since the last reset, with
//! derived rates and shares. `GET /admin/stress-reset`: starts the counters again from zero
//! (gauges excepted) and returns them as they were just before.

use axum::{extract::State, response::Response};
use serde::Serialize;

use super::answer;
use crate::{
    AppState,
    counters::{Counters, Derived, SinceReset},
};

/// The answer, fields in this order (the counters in theirs).
#[derive(Serialize)]
struct Stats<'a> {
    node: &'a str,
    uptime_s: u64,
    since_reset_s: f64,
    governor_max_in_flight: u64,
    counters: Counters,
    derived: Derived,
}

pub async fn stats(State(state): State<AppState>) -> Response {
    let now = state.counters.since_reset(&state.usage, &*state.store);
    answer(Ok(body(&state, &now)))
}

pub async fn reset(State(state): State<AppState>) -> Response {
    let before = state.counters.reset(&state.usage, &*state.store);
    tracing::info!(node = %state.node, "stress counters reset");
    answer(Ok(body(&state, &before)))
}

fn body<'a>(state: &'a AppState, s: &SinceReset) -> Stats<'a> {
    Stats {
        node: &state.node,
        uptime_s: state.started.elapsed().as_secs(),
        since_reset_s: (s.since_reset.as_secs_f64() * 1000.0).round() / 1000.0,
        governor_max_in_flight: state.counters.max_in_flight_limit(),
        counters: s.counters,
        derived: s.derived,
    }
}
