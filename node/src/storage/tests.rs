//! The RocksDB store against openraft's storage conformance suite, and durability across reopen.

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;
use openraft::StorageError;
use tempfile::TempDir;

use super::*;
use crate::raft::{Entry, LogId, TypeConfig, Vote};
use crate::state_machine::{Command, Request};

const RETENTION: Retention = Retention {
    history_revisions_max: 1000,
    coord_events_max: 1000,
};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("temp dir");
        let (log_store, state_machine) = open(dir.path(), RETENTION, true).expect("open store");
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::vote::leader_id_adv::CommittedLeaderId::new(term, 1),
        index,
    )
}

fn put_entry(term: u64, index: u64, key: &str) -> Entry {
    Entry::new_normal(
        log_id(term, index),
        Request {
            now_ms: 0,
            request_id: None,
            fence: None,
            command: Command::Put {
                key: key.into(),
                value: b"v".to_vec(),
                session_id: 0,
            },
        },
    )
}

async fn append_durably(log_store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log_store
        .append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await
        .expect("flusher answered")
        .expect("fsync succeeded");
}

#[tokio::test]
async fn log_vote_and_snapshot_survive_reopen() {
    let dir = TempDir::new().expect("temp dir");
    let vote = Vote::new(3, 1);
    {
        let (mut log_store, mut state_machine) = open(dir.path(), RETENTION, true).expect("open");
        log_store.save_vote(&vote).await.expect("save vote");
        append_durably(
            &mut log_store,
            (1..=5).map(|i| put_entry(3, i, &format!("k{i}"))).collect(),
        )
        .await;
        let entries = log_store.try_get_log_entries(1..=3).await.expect("read");
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        state_machine.apply(stream).await.expect("apply");
        let mut builder = state_machine.get_snapshot_builder().await;
        openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut builder)
            .await
            .expect("snapshot");
        log_store.purge(log_id(3, 2)).await.expect("purge");
    }

    tracing::info!("reopen: the vote, the unpurged log and the snapshot state must all be back");
    let (mut log_store, mut state_machine) = open(dir.path(), RETENTION, true).expect("reopen");
    assert_eq!(log_store.read_vote().await.expect("vote"), Some(vote));
    let state = log_store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 2)));
    assert_eq!(state.last_log_id, Some(log_id(3, 5)));
    let indexes: Vec<u64> = log_store
        .try_get_log_entries(0..10)
        .await
        .expect("read")
        .iter()
        .map(|e| e.index())
        .collect();
    assert_eq!(indexes, vec![3, 4, 5]);
    let (applied, _) = state_machine.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(3, 3)));
    let shared = state_machine.shared();
    let state = shared.read();
    assert_eq!(state.machine.revision(), 3);
    assert!(state.machine.get(b"k3").is_some() && state.machine.get(b"k4").is_none());
}
