//! Records what openraft reports through its `MetricsRecorder` hook (batch sizes, operation
//! counts, gauges) in atomics, so a metrics endpoint can serve them without touching Raft.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::metrics::MetricsRecorder;

/// Count, total and largest of a batch size.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub entries: AtomicU64,
    pub largest: AtomicU64,
}

impl BatchStats {
    fn record(&self, entries: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.largest.fetch_max(entries, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct RaftCounters {
    pub apply_batches: BatchStats,
    pub append_batches: BatchStats,
    pub write_batches: BatchStats,
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

impl MetricsRecorder for RaftCounters {
    fn record_apply_batch(&self, entry_count: u64) {
        self.apply_batches.record(entry_count);
    }
    fn record_append_batch(&self, entry_count: u64) {
        self.append_batches.record(entry_count);
    }
    fn record_write_batch(&self, entry_count: u64) {
        self.write_batches.record(entry_count);
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
