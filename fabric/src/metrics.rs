//! What a process counts, for Prometheus: requests on every path by kind and outcome, with
//! their latency, bytes moved, and what a node serves and holds. Recording goes through the
//! `metrics` crate's macros (nothing is kept until a binary installs a recorder); the binary
//! that serves the figures (`baton node`, `baton worker`) installs the Prometheus exporter and
//! hands its renderer here, and [`render`] gives the text format (a node answers it on its
//! socket, a worker on `GET /metrics`).

use std::sync::OnceLock;

type Renderer = Box<dyn Fn() -> String + Send + Sync>;

static RENDERER: OnceLock<Renderer> = OnceLock::new();

/// Sets this process's renderer of its metrics (once; later calls are ignored).
pub fn set_renderer(render: impl Fn() -> String + Send + Sync + 'static) {
    let _ = RENDERER.set(Box::new(render));
}

/// This process's metrics in Prometheus' text format (empty if it keeps none).
pub fn render() -> String {
    RENDERER.get().map(|r| r()).unwrap_or_default()
}

/// Counts a request on path `path`: its operation, its outcome (`ok`, `miss`, `error`) and how
/// long it took.
pub fn request(path: &'static str, op: &'static str, outcome: &'static str, seconds: f64) {
    metrics::counter!("baton_requests_total", "path" => path, "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!("baton_request_seconds", "path" => path, "op" => op).record(seconds);
}

/// Counts `bytes` moved on path `path`, `direction` `put` or `get`.
pub fn bytes(path: &'static str, direction: &'static str, bytes: u64) {
    metrics::counter!("baton_bytes_total", "path" => path, "direction" => direction).increment(bytes);
}
