//! RocksDB: the Raft log, the vote, the committed index and the latest snapshot. The only module
//! that imports `rocksdb`; it implements openraft's storage traits and decides nothing itself.
//!
//! Column families:
//! - `logs`: log index (8 bytes, big-endian, so byte order is index order) -> encoded entry.
//! - `meta`: `vote`, `committed`, `last_purged` -> encoded values; `log_format` -> LOG_FORMAT
//!   (4 bytes, big-endian), written when the data directory is created and checked at open.
//! - `snapshot`: `meta`, `data` -> the latest snapshot, written together in one synced batch.

mod log_store;
mod state_machine_store;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use log_store::LogStore;
use prometheus::{Histogram, HistogramOpts};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
pub use state_machine_store::{AppliedState, SharedState, StateMachineStore};

use crate::state_machine::Retention;

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_SNAPSHOT: &str = "snapshot";

/// Opens (or creates) the node's database and returns its log store and state machine store.
/// A data directory of another log format (`state_machine::format::LOG_FORMAT`) is refused.
/// The state machine starts from the latest persisted snapshot; openraft re-applies the committed
/// log after it.
/// With `sync_appends` false (test-only), appends are acknowledged without an fsync.
pub fn open(
    dir: &Path,
    retention: Retention,
    sync_appends: bool,
) -> io::Result<(LogStore, StateMachineStore)> {
    let db = open_db(dir)?;
    log_store::check_log_format(&db)?;
    let db = Arc::new(db);
    let stats = Arc::new(StorageStats::default());
    let log_store = LogStore::new(db.clone(), sync_appends, stats.clone());
    let state_machine = StateMachineStore::open(db, retention, stats)?;
    Ok((log_store, state_machine))
}

fn open_db(dir: &Path) -> io::Result<DB> {
    std::fs::create_dir_all(dir)?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Appends are synced by the group-commit flusher, not per write; see LogStore.
    options.set_manual_wal_flush(false);
    let families = [CF_LOGS, CF_META, CF_SNAPSHOT]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    DB::open_cf_descriptors(&options, dir, families).map_err(to_io)
}

/// What storage measures: the sizes the snapshot policy weighs (`raft::snapshots`), how much log
/// this node has written and how large its latest snapshot is, and the latencies the metrics
/// endpoint serves (`metrics/`). Atomics and lock-free histograms: cheap on the write path.
#[derive(Debug)]
pub struct StorageStats {
    appended_bytes: AtomicU64,
    snapshot_bytes: AtomicU64,
    /// Each WAL fsync of the flusher thread (one per group of appends), in seconds.
    pub fsync_seconds: Histogram,
    /// Each snapshot built: encoding and the synced write (the state's copy excluded).
    pub snapshot_build_seconds: Histogram,
    /// Each snapshot installed from the leader: decoding and the synced write.
    pub snapshot_install_seconds: Histogram,
}

impl Default for StorageStats {
    fn default() -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("the histogram options are valid")
        };
        let snapshot_buckets = vec![0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        StorageStats {
            appended_bytes: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            fsync_seconds: histogram(
                "conclave_storage_fsync_seconds",
                "Duration of each WAL fsync (one per group of log appends).",
                vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 1.0,
                ],
            ),
            snapshot_build_seconds: histogram(
                "conclave_snapshot_build_seconds",
                "Duration of each snapshot built by this node: encoding and the synced write.",
                snapshot_buckets.clone(),
            ),
            snapshot_install_seconds: histogram(
                "conclave_snapshot_install_seconds",
                "Duration of each snapshot installed from the leader: decoding and the synced write.",
                snapshot_buckets,
            ),
        }
    }
}

impl StorageStats {
    /// Bytes of log entries appended since the node started.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes.load(Ordering::Relaxed)
    }

    /// The encoded size of the latest snapshot, built, installed or loaded at start (0 before
    /// any).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    fn appended(&self, bytes: usize) {
        self.appended_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self, bytes: usize) {
        self.snapshot_bytes.store(bytes as u64, Ordering::Relaxed);
    }
}

fn to_io(error: rocksdb::Error) -> io::Error {
    io::Error::other(error)
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
}

#[cfg(test)]
mod tests;
