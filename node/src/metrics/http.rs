//! The HTTP server of `--metrics-addr`: `GET /metrics` in Prometheus's text format (axum, the
//! HTTP stack tonic already brings). It serves nothing else, and stops with the node.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Metrics;
use crate::node::Node;

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    node: Arc<Node>,
}

/// Serves the metrics on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    node: Arc<Node>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { metrics, node });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    let text = scrape.metrics.render(&scrape.node);
    ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], text)
}
