//! Records what openraft reports through its `MetricsRecorder` hook (batch sizes, operation
//! counts, gauges) in atomics and lock-free histograms, so the metrics endpoint (`metrics/`)
//! serves them without touching Raft.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::metrics::MetricsRecorder;
use prometheus::{Histogram, HistogramOpts};

#[derive(Debug)]
pub struct RaftCounters {
    /// Entries per batch applied to the state machine.
    pub apply_batches: Histogram,
    /// Entries per batch appended to the log (on a follower: per AppendEntries).
    pub append_batches: Histogram,
    /// Entries per batch of client writes the leader proposed at once.
    pub write_batches: Histogram,
    pub current_term: AtomicU64,
    pub last_log_index: AtomicU64,
    pub committed_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub snapshot_index: AtomicU64,
    pub purged_index: AtomicU64,
    /// 0 learner, 1 follower, 2 candidate, 3 leader, 4 shutdown (openraft's encoding).
    pub server_state: AtomicU64,
    pub votes: AtomicU64,
    pub heartbeats: AtomicU64,
    pub appends: AtomicU64,
}

impl Default for RaftCounters {
    fn default() -> Self {
        let batch = |name: &str, help: &str| {
            let buckets = prometheus::exponential_buckets(1.0, 2.0, 13).expect("valid buckets");
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("the histogram options are valid")
        };
        RaftCounters {
            apply_batches: batch(
                "conclave_raft_apply_batch_entries",
                "Log entries per batch applied to the state machine.",
            ),
            append_batches: batch(
                "conclave_raft_append_batch_entries",
                "Log entries per batch appended to this node's log.",
            ),
            write_batches: batch(
                "conclave_raft_write_batch_entries",
                "Client writes per batch the leader proposed at once.",
            ),
            current_term: AtomicU64::new(0),
            last_log_index: AtomicU64::new(0),
            committed_index: AtomicU64::new(0),
            applied_index: AtomicU64::new(0),
            snapshot_index: AtomicU64::new(0),
            purged_index: AtomicU64::new(0),
            server_state: AtomicU64::new(0),
            votes: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            appends: AtomicU64::new(0),
        }
    }
}

impl MetricsRecorder for RaftCounters {
    fn record_apply_batch(&self, entry_count: u64) {
        self.apply_batches.observe(entry_count as f64);
    }
    fn record_append_batch(&self, entry_count: u64) {
        self.append_batches.observe(entry_count as f64);
    }
    fn record_write_batch(&self, entry_count: u64) {
        self.write_batches.observe(entry_count as f64);
    }
    fn set_current_term(&self, term: u64) {
        self.current_term.store(term, Ordering::Relaxed);
    }
    fn set_last_log_index(&self, index: u64) {
        self.last_log_index.store(index, Ordering::Relaxed);
    }
    fn set_committed_index(&self, index: u64) {
        self.committed_index.store(index, Ordering::Relaxed);
    }
    fn set_applied_index(&self, index: u64) {
        self.applied_index.store(index, Ordering::Relaxed);
    }
    fn set_snapshot_index(&self, index: u64) {
        self.snapshot_index.store(index, Ordering::Relaxed);
    }
    fn set_purged_index(&self, index: u64) {
        self.purged_index.store(index, Ordering::Relaxed);
    }
    fn set_server_state(&self, state: u8) {
        self.server_state.store(u64::from(state), Ordering::Relaxed);
    }
    fn increment_vote(&self) {
        self.votes.fetch_add(1, Ordering::Relaxed);
    }
    fn increment_heartbeat(&self) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
    }
    fn increment_append(&self) {
        self.appends.fetch_add(1, Ordering::Relaxed);
    }
}
