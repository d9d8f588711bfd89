//! The node's Prometheus metrics, served as text on `--metrics-addr` (`http.rs`), beside the web
//! dashboard (`dashboard/`), which reads the same state.
//!
//! Two kinds of families. Those measured as things happen live in a registry built at start:
//! gRPC requests (`grpc.rs`, a tower layer on the API server), WAL fsyncs and snapshots
//! (`StorageStats`), Raft batch sizes (`RaftCounters`), leader changes and elections (followed
//! here from openraft's server metrics). On the write path they cost an atomic add or a
//! lock-free histogram observation each. Everything else is computed when scraped (`scrape.rs`):
//! Raft's indexes from its metrics watch, the state's counts under the state's read lock (one
//! pass over per-(queue, state) counts, agents, locks and workflows, all bounded by their limits;
//! never a copy of the state), and the process from `/proc/self`.
//!
//! The state machine knows nothing of this: `scrape.rs` reads it through its public read API.

pub mod dashboard;
mod grpc;
pub mod http;
mod process;
mod scrape;

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderId;
use openraft::ServerState;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};
use tokio::sync::watch;

use crate::node::Node;
use crate::raft::metrics::RaftCounters;
use crate::storage::StorageStats;

pub use grpc::GrpcMetricsLayer;

/// The families measured as things happen, and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    grpc: Arc<grpc::GrpcMetrics>,
    leader_changes: IntCounter,
    elections: IntCounter,
    storage: Arc<StorageStats>,
}

impl Metrics {
    /// Registers the histograms storage and the Raft recorder already own, beside the node's own.
    pub fn new(raft_counters: &RaftCounters, storage: Arc<StorageStats>) -> Self {
        let registry = Registry::new();
        let grpc = Arc::new(grpc::GrpcMetrics::new());
        let leader_changes = IntCounter::new(
            "conclave_raft_leader_changes_seen_total",
            "Times this node saw the leader change (learning of the first leader counts).",
        )
        .expect("valid counter");
        let elections = IntCounter::new(
            "conclave_raft_elections_started_total",
            "Elections this node started as a candidate (its vote for itself in a new term).",
        )
        .expect("valid counter");
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(grpc.handled.clone()),
            Box::new(grpc.handling_seconds.clone()),
            Box::new(leader_changes.clone()),
            Box::new(elections.clone()),
            Box::new(storage.fsync_seconds.clone()),
            Box::new(storage.snapshot_build_seconds.clone()),
            Box::new(storage.snapshot_install_seconds.clone()),
            Box::new(raft_counters.apply_batches.clone()),
            Box::new(raft_counters.append_batches.clone()),
            Box::new(raft_counters.write_batches.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("every family is registered once, under its own name");
        }
        Metrics {
            registry,
            grpc,
            leader_changes,
            elections,
            storage,
        }
    }

    /// The tower layer that counts and times the API server's calls.
    pub fn grpc_layer(&self, services: &[&'static str]) -> GrpcMetricsLayer {
        GrpcMetricsLayer::new(self.grpc.clone(), services)
    }

    /// Every family, in Prometheus's text exposition format (version 0.0.4).
    pub fn render(&self, node: &Node) -> String {
        let mut families = self.registry.gather();
        families.extend(scrape::gather(node, &self.storage));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut text)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Counts leader changes and the elections this node starts, from openraft's server
    /// metrics (which change with votes, leaders and membership only, never per entry), until
    /// `stop`. A change between two wake-ups that is undone before the second is not seen; an
    /// election takes an election timeout, so that needs two within one wake-up.
    pub async fn follow_raft(&self, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
        let mut server = node.raft.server_metrics();
        let mut leader = None;
        let mut term = 0;
        loop {
            {
                let metrics = server.borrow_and_update();
                if metrics.current_leader.is_some() && metrics.current_leader != leader {
                    self.leader_changes.inc();
                }
                leader = metrics.current_leader;
                let vote_term = metrics.vote.leader_id().term();
                let own = *metrics.vote.leader_id().node_id() == node.id;
                let campaigning = matches!(metrics.state, ServerState::Candidate)
                    || (own && metrics.state == ServerState::Leader);
                if vote_term > term && own && campaigning {
                    self.elections.inc();
                }
                term = term.max(vote_term);
            }
            tokio::select! {
                changed = server.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}
