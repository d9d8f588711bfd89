//! The HTTP server of `--metrics-addr`: `GET /metrics` in Prometheus's text format (axum, the
//! HTTP stack tonic already brings), and the web dashboard (`dashboard/`). It stops with the node;
//! the dashboard's event streams end then too, so the graceful shutdown does not wait on them.

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
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            metrics,
            node: node.clone(),
        })
        .merge(super::dashboard::router(node, stop.clone()));
    let mut stopping = stop;
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    let text = scrape.metrics.render(&scrape.node);
    ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], text)
}
