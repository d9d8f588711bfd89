//! What an operator sees of a node: Prometheus metrics on `--metrics-addr`, the standard gRPC
//! health and reflection services, and a task's W3C `traceparent` carried from submit to the
//! exec agent's command; and the web dashboard, loaded in headless Chromium.
//!
//! Run `cargo build --workspace --bins` first: the tests spawn `target/debug/conclave-node` and,
//! for the exec agent, `target/debug/conclave`.

mod chromium;
mod dashboard;
mod exposition;
mod health;
mod metrics;
mod otlp;
mod reflection;
mod traceparent;

use std::time::Duration;

/// Bound on a cluster reaching a state it must reach: liveness, not performance.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
