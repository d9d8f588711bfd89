//! When to build a snapshot. openraft's own policy counts log entries only, so a node whose state
//! is large (100,000 pending tasks, a full watch history) would copy and encode all of it every
//! few thousand entries and spend most of its time on snapshots. This policy also asks that the
//! log written since the last snapshot be at least a percentage of that snapshot's size: building
//! snapshots then costs a bounded number of bytes per byte of log, however large the state, and
//! the log kept for restart replay stays proportional to the state.
//!
//! Every node runs it for itself (followers snapshot too, so that they can purge their logs).

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Raft;
use crate::storage::StorageStats;

/// How often the policy looks at the log.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// A snapshot asked for that has not shown up by then is asked for again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The thresholds, from `--snapshot-logs` and `--snapshot-log-percent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Entries applied since the last snapshot, at least.
    pub min_entries: u64,
    /// Log bytes written since the last snapshot, as a percentage of its size, at least.
    pub log_percent: u64,
}

impl Policy {
    /// True when a snapshot is due after `entries` applied entries and `log_bytes` bytes of log
    /// since the last snapshot, which was `snapshot_bytes` large.
    pub fn due(&self, entries: u64, log_bytes: u64, snapshot_bytes: u64) -> bool {
        entries >= self.min_entries.max(1)
            && u128::from(log_bytes) * 100
                >= u128::from(snapshot_bytes) * u128::from(self.log_percent)
    }
}

/// Asks openraft for a snapshot whenever `policy` says one is due, until `stop` turns true.
pub async fn run(
    raft: Raft,
    stats: Arc<StorageStats>,
    policy: Policy,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = raft.data_metrics();
    let mut last_snapshot = metrics.borrow_watched().snapshot;
    let mut log_base = stats.appended_bytes();
    let mut asked_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        let (applied, snapshot) = {
            let data = metrics.borrow_watched();
            (data.last_applied, data.snapshot)
        };
        if snapshot != last_snapshot {
            // Built here or installed from the leader: the log counts from now on.
            last_snapshot = snapshot;
            log_base = stats.appended_bytes();
            asked_at = None;
        }
        if asked_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            continue;
        }
        let applied = applied.map_or(0, |id| id.index + 1);
        let covered = snapshot.map_or(0, |id| id.index + 1);
        let entries = applied.saturating_sub(covered);
        let log_bytes = stats.appended_bytes().saturating_sub(log_base);
        if policy.due(entries, log_bytes, stats.snapshot_bytes()) {
            tracing::debug!(
                entries,
                log_bytes,
                snapshot_bytes = stats.snapshot_bytes(),
                "snapshot due"
            );
            if raft.trigger().snapshot().await.is_err() {
                // Raft has stopped; the node is shutting down.
                return;
            }
            asked_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_alone_when_the_percentage_is_zero() {
        let policy = Policy {
            min_entries: 100,
            log_percent: 0,
        };
        assert!(!policy.due(99, u64::MAX, 0));
        assert!(policy.due(100, 0, u64::MAX));
    }

    #[test]
    fn a_large_state_waits_for_a_proportional_log() {
        let policy = Policy {
            min_entries: 100,
            log_percent: 100,
        };
        let snapshot = 50 << 20;
        assert!(!policy.due(1_000_000, (50 << 20) - 1, snapshot));
        assert!(policy.due(1_000_000, 50 << 20, snapshot));
        // A small state snapshots on the entry count, as before.
        assert!(policy.due(100, 10_000, 4_000));
        assert!(!policy.due(99, 10_000, 4_000));
    }

    #[test]
    fn never_overflows() {
        let policy = Policy {
            min_entries: 0,
            log_percent: u64::MAX,
        };
        assert!(!policy.due(1, u64::MAX, u64::MAX));
        assert!(policy.due(1, u64::MAX, 0));
    }
}
