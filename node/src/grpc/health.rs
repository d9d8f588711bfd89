//! The standard gRPC health service (`grpc.health.v1`, served by tonic-health): SERVING while
//! this node can serve, NOT_SERVING otherwise, for the whole server ("") and each service alike.
//!
//! A node can serve when it knows a leader, has applied every entry it knew to be committed at
//! the previous check (100 ms before), and, if it leads, a quorum acknowledged it within the
//! longest election timeout (a leader cut off from its followers does not step down by itself:
//! openraft's leader keeps its role and only stops committing). A follower cut off keeps the
//! last leader it knew until it hears of another, so its health says SERVING while its reads
//! forward to a leader that may not answer; the leader's own health is the one to watch for
//! quorum loss.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, ServerState};
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::node::Node;

/// How often the status is evaluated: the quorum condition changes with time alone, not only
/// when Raft's metrics do.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Whether this node can serve now, and the commit index it knows now. "Caught up" means it has
/// applied every entry it knew committed at the previous check (`committed_before`, one
/// CHECK_INTERVAL ago): under a steady stream of writes the newest committed entries are always
/// a moment from being applied, and a probe must not see that as lagging, while a node replaying
/// its log after a restart, or whose apply is stuck, stays NOT_SERVING.
pub fn serving(node: &Node, committed_before: u64) -> (bool, u64) {
    let metrics = node.raft.metrics().borrow_watched().clone();
    let index = |log_id: Option<crate::raft::LogId>| log_id.map_or(0, |id| id.index);
    let committed = index(metrics.local_committed);
    let caught_up = index(metrics.last_applied) >= committed_before.min(committed);
    // A lone voter is its own quorum, and openraft records no acknowledgment for it.
    let alone = metrics
        .membership_config
        .membership()
        .voter_ids()
        .all(|id| id == node.id);
    // The time of the last quorum acknowledgment, not openraft's age of it: that age is taken
    // when the metrics are published, and nothing is published while no acknowledgment comes.
    let quorum = metrics.state != ServerState::Leader
        || alone
        || metrics.last_quorum_acked.is_some_and(|acked| {
            acked.elapsed() <= Duration::from_millis(node.config.election_timeout_max_ms)
        });
    (
        metrics.current_leader.is_some() && caught_up && quorum,
        committed,
    )
}

/// Sets every service's status, now and whenever it changes, until `stop`. `services` are the
/// names served beside "".
pub async fn run(
    node: Arc<Node>,
    reporter: HealthReporter,
    services: Vec<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    // Nothing is known committed before the first check: it asks for everything known now.
    let mut committed_before = u64::MAX;
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (can_serve, committed) = serving(&node, committed_before);
        committed_before = committed;
        let status = if can_serve {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(?status, "health");
            set_all(&reporter, &services, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    // Probes see a stopping node go away before its port closes.
    set_all(&reporter, &services, ServingStatus::NotServing).await;
}

/// Sets "" and every service in `services` to `status`.
pub async fn set_all(reporter: &HealthReporter, services: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(*service, status).await;
    }
}
