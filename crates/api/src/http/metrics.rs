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
use serde_json::Value;

use crate::{AppState, counters::Counters};

/// Every figure, with its help text. Names are the fields of [`Counters`], prefixed `beast_`
/// (the exporter suffixes the counters `_total`); [`Counters::GAUGES`] are gauges.
const HELP: [(&str, &str); 24] = [
    ("tcp_requests", "HTTP price requests received"),
    (
        "udp_requests",
        "UDP price requests received (datagrams not dropped)",
    ),
    ("report_requests", "Report requests received, HTTP and UDP"),
    ("memory_hits", "Prices answered from the in-memory book"),
    ("shared_cache_hits", "Prices answered from the shared cache"),
    (
        "rest_hits",
        "Prices fetched on demand from an exchange's REST API",
    ),
    ("cache_misses", "Price lookups with no fresh price"),
    ("udp_packets_received", "UDP datagrams received"),
    ("udp_packets_sent", "UDP datagrams sent"),
    (
        "udp_packets_dropped",
        "UDP datagrams dropped: oversized or not JSON",
    ),
    (
        "bg_work_submitted",
        "Usage events queued for the batch writer",
    ),
    ("bg_work_dropped", "Usage events lost (must stay 0)"),
    ("bg_work_completed", "Usage events written to the store"),
    (
        "batch_rows_queued",
        "Usage events waiting for the batch writer",
    ),
    ("db_open_conns", "Open store connections"),
    ("db_in_use_conns", "Store connections in use"),
    ("rate_limited", "Requests refused by their key's rate limit"),
    (
        "quota_exceeded",
        "Requests refused by their key's monthly quota",
    ),
    (
        "auth_failures",
        "Requests refused for a missing, unknown or revoked key",
    ),
    ("in_flight", "Price requests being answered"),
    (
        "max_in_flight",
        "Most price requests in flight at once since the last stress reset",
    ),
    (
        "governor_rejections",
        "Price requests refused because too many were in flight",
    ),
    ("errors_4xx", "Price requests answered with a 4xx status"),
    ("errors_5xx", "Price requests answered with a 5xx status"),
];

pub async fn metrics(State(state): State<AppState>) -> Response {
    let counters = state.counters.snapshot(&state.usage, &*state.store);
    let fields = match serde_json::to_value(counters) {
        Ok(Value::Object(fields)) => fields,
        // A struct of integers always serializes to an object.
        _ => Default::default(),
    };
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .add_global_label("node", &*state.node)
        .build_recorder();
    metrics::with_local_recorder(&recorder, || {
        for (field, help) in HELP {
            let value = fields.get(field).and_then(Value::as_u64).unwrap_or(0);
            let name = format!("beast_{field}");
            if Counters::GAUGES.contains(&field) {
                describe_gauge!(name.clone(), help);
                gauge!(name).set(value as f64);
            } else {
                describe_counter!(name.clone(), help);
                counter!(name).absolute(value);
            }
        }
    });
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        recorder.handle().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_help_and_nothing_else_does() {
        let Ok(Value::Object(fields)) = serde_json::to_value(Counters::default()) else {
            panic!("counters serialize to an object");
        };
        let mut named: Vec<&str> = HELP.iter().map(|(name, ..)| *name).collect();
        let mut fields: Vec<&str> = fields.keys().map(String::as_str).collect();
        named.sort_unstable();
        fields.sort_unstable();
        assert_eq!(named, fields);
    }
}
