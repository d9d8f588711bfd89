//! RocksDB: the Raft log, the vote, the committed index and the latest snapshot. The only module
//! that imports `rocksdb`; it implements openraft's storage traits and decides nothing itself.
//!
//! Column families:
//! - `logs`: log index (8 bytes, big-endian, so byte order is index order) -> encoded entry.
//! - `meta`: `vote`, `committed`, `last_purged` -> encoded values.
//! - `snapshot`: `meta`, `data` -> the latest snapshot, written together in one synced batch.

mod log_store;
mod state_machine_store;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use log_store::LogStore;
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
pub use state_machine_store::{AppliedState, SharedState, StateMachineStore};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_SNAPSHOT: &str = "snapshot";

/// Opens (or creates) the node's database and returns its log store and state machine store.
/// The state machine starts from the latest persisted snapshot; openraft re-applies the committed
/// log after it.
/// With `sync_appends` false (test-only), appends are acknowledged without an fsync.
pub fn open(
    dir: &Path,
    history_revisions_max: usize,
    sync_appends: bool,
) -> io::Result<(LogStore, StateMachineStore)> {
    std::fs::create_dir_all(dir)?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Appends are synced by the group-commit flusher, not per write; see LogStore.
    options.set_manual_wal_flush(false);
    let families = [CF_LOGS, CF_META, CF_SNAPSHOT]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&options, dir, families).map_err(to_io)?;
    let db = Arc::new(db);
    let log_store = LogStore::new(db.clone(), sync_appends);
    let state_machine = StateMachineStore::open(db, history_revisions_max)?;
    Ok((log_store, state_machine))
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
