//! Serving a prometheus-client registry as `/metrics`.

use hyper::{Response, StatusCode};
use prometheus_client::registry::Registry;

use crate::http::{self, Body};

/// The OpenMetrics text exposition of `registry`.
pub fn response(registry: &Registry) -> Response<Body> {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => http::with_body(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(err) => http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {err}"),
        ),
    }
}

/// Histogram buckets for latencies from 100 µs to about 13 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}
