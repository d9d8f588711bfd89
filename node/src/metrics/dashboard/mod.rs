//! The web dashboard on `--metrics-addr`: a page of plain HTML, CSS and JavaScript built into the
//! binary (`assets/`), JSON under `/api/...` read from this node's applied state (`views.rs`),
//! and `/api/events`, server-sent events carrying a fresh overview about every second and soon
//! after the coordination state changes. Read-only: nothing here proposes anything.
//!
//! Every listing is a bounded page (DASHBOARD_PAGE_MAX items; `after_id` pages on), read under
//! the state's read lock like a gRPC listing; nothing else of the state is copied.

mod views;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::Stream;
use tokio::sync::watch;

use crate::node::Node;

/// Most items in one page of tasks, decisions or workflows.
pub const DASHBOARD_PAGE_MAX: usize = 200;

/// Most event streams open at once on one node: each reads the state once a second.
pub const DASHBOARD_STREAMS_MAX: usize = 64;

/// How often the event stream sends an overview when nothing changed.
const OVERVIEW_INTERVAL: Duration = Duration::from_secs(1);

/// The least time between two overviews: changes closer together are sent as one.
const OVERVIEW_SPACING: Duration = Duration::from_millis(250);

#[derive(Clone)]
struct Dashboard {
    node: Arc<Node>,
    stop: watch::Receiver<bool>,
    /// Event streams open now.
    streams: Arc<AtomicUsize>,
}

/// One open event stream, counted until it is dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(streams: &Arc<AtomicUsize>) -> Option<StreamSlot> {
        let open = streams.fetch_add(1, Ordering::Relaxed);
        let slot = StreamSlot(streams.clone());
        (open < DASHBOARD_STREAMS_MAX).then_some(slot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The dashboard's routes, for the metrics server to merge.
pub fn router(node: Arc<Node>, stop: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .route("/api/node", get(node_view))
        .route("/api/overview", get(overview))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", get(task))
        .route("/api/decisions", get(decisions))
        .route("/api/workflows", get(workflows))
        .route("/api/locks", get(locks))
        .route("/api/events", get(events))
        .with_state(Dashboard {
            node,
            stop,
            streams: Arc::default(),
        })
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

fn json(value: &serde_json::Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// This node's Raft view, readable from another node's dashboard (any origin: it is what
/// `/metrics` already shows).
async fn node_view(State(dashboard): State<Dashboard>) -> Response {
    let mut response = json(&views::node(&dashboard.node));
    response.headers_mut().insert(
        ACCESS_CONTROL_ALLOW_ORIGIN,
        axum::http::HeaderValue::from_static("*"),
    );
    response
}

async fn overview(State(dashboard): State<Dashboard>) -> Response {
    json(&views::overview(&dashboard.node))
}

async fn tasks(State(dashboard): State<Dashboard>, RawQuery(query): RawQuery) -> Response {
    let params = params(query.as_deref());
    match views::tasks(&dashboard.node, &params) {
        Ok(value) => json(&value),
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

async fn task(State(dashboard): State<Dashboard>, Path(id): Path<u64>) -> Response {
    match views::task(&dashboard.node, id) {
        Some(value) => json(&value),
        None => (StatusCode::NOT_FOUND, format!("task {id} not found")).into_response(),
    }
}

async fn decisions(State(dashboard): State<Dashboard>, RawQuery(query): RawQuery) -> Response {
    let after_id = after_id(&params(query.as_deref()));
    json(&views::decisions(&dashboard.node, after_id))
}

async fn workflows(State(dashboard): State<Dashboard>, RawQuery(query): RawQuery) -> Response {
    let after_id = after_id(&params(query.as_deref()));
    json(&views::workflows(&dashboard.node, after_id))
}

async fn locks(State(dashboard): State<Dashboard>) -> Response {
    json(&views::locks(&dashboard.node))
}

/// Server-sent events: an `overview` event at once, then about every second and soon after each
/// change of the coordination state, until the client leaves or the node stops. At most
/// DASHBOARD_STREAMS_MAX at once; past that 503, and the page falls back to `?poll`.
async fn events(State(dashboard): State<Dashboard>) -> Response {
    let Some(slot) = StreamSlot::take(&dashboard.streams) else {
        let message = format!("at most {DASHBOARD_STREAMS_MAX} event streams are open at once");
        return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    };
    let changes = dashboard.node.state.subscribe_coordination();
    Sse::new(overviews(dashboard, changes, slot))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn overviews(
    dashboard: Dashboard,
    changes: watch::Receiver<u64>,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (dashboard, changes, slot, true),
        |(mut dashboard, mut changes, slot, first)| async move {
            if !first && !next_overview_due(&mut dashboard.stop, &mut changes).await {
                return None;
            }
            let data = views::overview(&dashboard.node).to_string();
            let event = Event::default().event("overview").data(data);
            Some((Ok(event), (dashboard, changes, slot, false)))
        },
    )
}

/// Waits for the next overview's time: a change or the interval, at least OVERVIEW_SPACING
/// after the last one. False when the node is stopping.
async fn next_overview_due(
    stop: &mut watch::Receiver<bool>,
    changes: &mut watch::Receiver<u64>,
) -> bool {
    tokio::time::sleep(OVERVIEW_SPACING).await;
    let woke = tokio::select! {
        _ = stop.wait_for(|stop| *stop) => false,
        _ = changes.changed() => true,
        _ = tokio::time::sleep(OVERVIEW_INTERVAL - OVERVIEW_SPACING) => true,
    };
    woke && !*stop.borrow()
}

fn after_id(params: &BTreeMap<String, String>) -> u64 {
    params
        .get("after_id")
        .and_then(|id| id.parse().ok())
        .unwrap_or(0)
}

/// The query string's parameters, percent-decoded (`+` is a space); the last of a name wins.
fn params(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::params;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let params = params(Some("queue=a%2Fb&state=pending&x=1+2&after_id=7&bad=%zz"));
        assert_eq!(params["queue"], "a/b");
        assert_eq!(params["state"], "pending");
        assert_eq!(params["x"], "1 2");
        assert_eq!(params["after_id"], "7");
        assert_eq!(params["bad"], "%zz");
        assert!(super::params(None).is_empty());
    }
}
