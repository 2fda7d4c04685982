//! `GET /metrics` (on the health listeners only, public like `/health`): the node's 24 runtime
//! figures of `/admin/stress-stats` in Prometheus text format, labelled with the node. The
//! counters count since start (`/admin/stress-reset` only moves the admin view's baseline), so
//! Prometheus never sees one fall; the gauges are as the admin view shows them. Every health
//! listener of a node serves the same node-wide figures: scrape one per node. Each scrape
//! renders one snapshot through a recorder of its own: nothing is kept between scrapes, and
//! the request path is untouched.

use axum::{
    extract::State,
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::{
    AppState,
    counters::{Figure, Kind},
};

pub async fn metrics(State(state): State<AppState>) -> Response {
    let counters = state.counters.snapshot(&state.usage, &*state.store);
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .add_global_label("node", &*state.node)
        .build_recorder();
    metrics::with_local_recorder(&recorder, || {
        // Named `beast_<field>`; the exporter suffixes the counts `_total`.
        for Figure {
            name,
            kind,
            value,
            help,
        } in counters.figures()
        {
            let name = format!("beast_{name}");
            match kind {
                Kind::Gauge => {
                    describe_gauge!(name.clone(), help);
                    gauge!(name).set(value as f64);
                }
                Kind::Count => {
                    describe_counter!(name.clone(), help);
                    counter!(name).absolute(value);
                }
            }
        }
    });
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        recorder.handle().render(),
    )
        .into_response()
}
