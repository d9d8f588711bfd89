//! The in-memory state machine behind openraft's `RaftStateMachine`, the persisted snapshot, and
//! the shared handle the API layer reads from.

use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::watch;

use super::{cf, to_io, StorageStats, CF_SNAPSHOT};
use crate::raft::{decode, encode, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state_machine::format::SNAPSHOT_FORMAT;
use crate::state_machine::{Command, CoordCommand, Retention, StateMachine};

const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// The applied state: what the log up to `last_applied` produced.
#[derive(Clone, Debug, Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub machine: StateMachine,
}

/// Read access to the applied state for the API layer, plus signals that fire after apply: when
/// the store revision advances (KV watches wait on it), when coordination events were appended
/// (session, task and decision streams), when the coordination state changed (the leader's
/// scheduler), and after every applied entry (feeds whose data neither of the first two marks).
pub struct SharedState {
    state: RwLock<AppliedState>,
    revision: watch::Sender<u64>,
    /// The coordination state's `last_event_seq`.
    events: watch::Sender<u64>,
    /// Counts applied entries that changed what the scheduler plans on: every coordination command
    /// except heartbeats, and every installed snapshot.
    coordination: watch::Sender<u64>,
    /// Counts applied entries and installed snapshots: anything apply can change has changed.
    applied: watch::Sender<u64>,
}

impl SharedState {
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.state
            .read()
            .expect("the state lock is never poisoned: apply does not panic while holding it")
    }

    /// A receiver that observes the applied store revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// A receiver that observes the coordination state's last event sequence number.
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// A receiver that changes whenever an applied entry changed the coordination state (other
    /// than heartbeats).
    pub fn subscribe_coordination(&self) -> watch::Receiver<u64> {
        self.coordination.subscribe()
    }

    /// A receiver that changes after every applied entry and installed snapshot.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn replace(&self, state: AppliedState) {
        let revision = state.machine.revision();
        let last_event_seq = state.machine.last_event_seq();
        *self.state.write().expect("state lock") = state;
        self.revision.send_replace(revision);
        self.events.send_replace(last_event_seq);
        self.coordination.send_modify(|changes| *changes += 1);
        self.applied.send_modify(|applied| *applied += 1);
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    shared: Arc<SharedState>,
    retention: Retention,
    stats: Arc<StorageStats>,
}

impl StateMachineStore {
    pub(super) fn open(
        db: Arc<DB>,
        retention: Retention,
        stats: Arc<StorageStats>,
    ) -> io::Result<Self> {
        let mut state = AppliedState::default();
        state.machine.set_retention(retention);
        if let Some(snapshot) = read_snapshot(&db)? {
            state = restore(&snapshot.meta, &snapshot.snapshot, retention)?;
            stats.snapshot(snapshot.snapshot.len());
        }
        let (revision, _) = watch::channel(state.machine.revision());
        let (events, _) = watch::channel(state.machine.last_event_seq());
        let (coordination, _) = watch::channel(0);
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(SharedState {
            state: RwLock::new(state),
            revision,
            events,
            coordination,
            applied,
        });
        Ok(StateMachineStore {
            db,
            shared,
            retention,
            stats,
        })
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }
}

/// Whether the leader's loop should look again: what it plans on or when it is next due may have
/// changed. Every command but KV writes (which arm no timer) and heartbeats (which only move
/// session deadlines, read when the ticker wakes anyway) counts, so a new primitive's timers need
/// nothing here.
fn changes_coordination(command: &Command) -> bool {
    !matches!(
        command,
        Command::Put { .. }
            | Command::Delete { .. }
            | Command::CompareAndSwap { .. }
            | Command::Txn { .. }
            | Command::Coordination(CoordCommand::Heartbeats { .. })
    )
}

/// Snapshot data starts with this tag and a format version (SNAPSHOT_FORMAT, in
/// `state_machine/format.rs`), so that a node never decodes a snapshot laid out by another
/// version (an older node's on disk, a newer peer's on the wire) as its own: it fails with a
/// message that says so instead.
const SNAPSHOT_TAG: &[u8; 8] = b"CNCLSNAP";

fn encode_machine(machine: &StateMachine) -> Vec<u8> {
    let body = encode(machine);
    let mut data = Vec::with_capacity(SNAPSHOT_TAG.len() + 4 + body.len());
    data.extend_from_slice(SNAPSHOT_TAG);
    data.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
    data.extend_from_slice(&body);
    data
}

fn decode_machine(data: &[u8]) -> io::Result<StateMachine> {
    let unreadable = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{why}; this conclave-node reads snapshot format {SNAPSHOT_FORMAT} only (start it \
                 on an empty data directory, or run the version that wrote the snapshot)"
            ),
        )
    };
    let Some(rest) = data.strip_prefix(SNAPSHOT_TAG.as_slice()) else {
        return Err(unreadable(
            "the snapshot has no format tag: an older conclave-node wrote it".to_string(),
        ));
    };
    let Some((version, body)) = rest.split_first_chunk::<4>() else {
        return Err(unreadable(
            "the snapshot ends inside its format tag".to_string(),
        ));
    };
    let version = u32::from_be_bytes(*version);
    if version != SNAPSHOT_FORMAT {
        return Err(unreadable(format!("the snapshot is in format {version}")));
    }
    decode(body)
}

fn restore(meta: &SnapshotMeta, data: &[u8], retention: Retention) -> io::Result<AppliedState> {
    let mut machine = decode_machine(data)?;
    machine.set_retention(retention);
    Ok(AppliedState {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        machine,
    })
}

fn read_snapshot(db: &DB) -> io::Result<Option<Snapshot>> {
    let snapshots = cf(db, CF_SNAPSHOT);
    let meta = db.get_cf(snapshots, KEY_SNAPSHOT_META).map_err(to_io)?;
    let data = db.get_cf(snapshots, KEY_SNAPSHOT_DATA).map_err(to_io)?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some(Snapshot {
            meta: decode(&meta)?,
            snapshot: data,
        })),
        _ => Ok(None),
    }
}

fn write_snapshot(db: &DB, snapshot: &Snapshot) -> io::Result<()> {
    let snapshots = cf(db, CF_SNAPSHOT);
    let mut batch = WriteBatch::default();
    batch.put_cf(snapshots, KEY_SNAPSHOT_META, encode(&snapshot.meta));
    batch.put_cf(snapshots, KEY_SNAPSHOT_DATA, &snapshot.snapshot);
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options).map_err(to_io)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let (response, coordination_changed, last_event_seq) = {
                let mut state = self.shared.state.write().expect("state lock");
                let log_id = entry.log_id();
                let index = log_id.index();
                state.last_applied = Some(log_id);
                let (response, coordination_changed) = match entry.payload {
                    EntryPayload::Blank => (state.machine.apply_empty(index), false),
                    EntryPayload::Normal(request) => {
                        tracing::trace!(index, command = request.command.name(), "apply");
                        (
                            state.machine.apply(index, &request),
                            changes_coordination(&request.command),
                        )
                    }
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(log_id), membership);
                        (state.machine.apply_empty(index), false)
                    }
                };
                let last_event_seq = state.machine.last_event_seq();
                (response, coordination_changed, last_event_seq)
            };
            self.shared.revision.send_if_modified(|revision| {
                let current = response.revision().max(*revision);
                std::mem::replace(revision, current) != current
            });
            self.shared.events.send_if_modified(|seq| {
                let current = last_event_seq.max(*seq);
                std::mem::replace(seq, current) != current
            });
            if coordination_changed {
                self.shared
                    .coordination
                    .send_modify(|changes| *changes += 1);
            }
            self.shared.applied.send_modify(|applied| *applied += 1);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The copy is the only pause apply sees (apply runs in this same task, so the copy is
        // exactly the applied state); encoding and the disk write happen in the builder, which
        // openraft runs in the background. The copy runs on a blocking thread so that a large
        // state does not stall the node's runtime thread (heartbeats, elections).
        let shared = self.shared.clone();
        let state = tokio::task::spawn_blocking(move || shared.read().clone())
            .await
            .expect("copying the state does not panic");
        SnapshotBuilder {
            db: self.db.clone(),
            state,
            stats: self.stats.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let snapshot = Snapshot {
            meta: meta.clone(),
            snapshot,
        };
        self.stats.snapshot(snapshot.snapshot.len());
        let db = self.db.clone();
        let retention = self.retention;
        let stats = self.stats.clone();
        // Decoding and the synced write of a large snapshot take a while: off the async thread.
        let state = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let state = restore(&snapshot.meta, &snapshot.snapshot, retention)?;
            write_snapshot(&db, &snapshot)?;
            stats
                .snapshot_install_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok::<_, io::Error>(state)
        })
        .await
        .map_err(io::Error::other)??;
        self.shared.replace(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read_snapshot(&db))
            .await
            .map_err(io::Error::other)?
    }
}

pub struct SnapshotBuilder {
    db: Arc<DB>,
    state: AppliedState,
    stats: Arc<StorageStats>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = std::mem::take(&mut self.state);
        let db = self.db.clone();
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_log_id: state.last_applied,
                    last_membership: state.membership,
                },
                snapshot: encode_machine(&state.machine),
            };
            write_snapshot(&db, &snapshot)?;
            stats
                .snapshot_build_seconds
                .observe(started.elapsed().as_secs_f64());
            stats.snapshot(snapshot.snapshot.len());
            tracing::info!(
                last_log_id = ?snapshot.meta.last_log_id,
                bytes = snapshot.snapshot.len(),
                "built snapshot"
            );
            Ok(snapshot)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_of_another_format_are_refused_by_name() {
        let machine = StateMachine::new(1000);
        let data = encode_machine(&machine);
        assert_eq!(
            decode_machine(&data).expect("its own format").revision(),
            machine.revision()
        );

        let untagged = encode(&machine);
        let error = decode_machine(&untagged).expect_err("an older node's snapshot");
        assert!(
            error
                .to_string()
                .contains("an older conclave-node wrote it"),
            "{error}"
        );

        let mut newer = data.clone();
        newer[SNAPSHOT_TAG.len()..SNAPSHOT_TAG.len() + 4]
            .copy_from_slice(&(SNAPSHOT_FORMAT + 1).to_be_bytes());
        let error = decode_machine(&newer).expect_err("a newer node's snapshot");
        assert!(
            error
                .to_string()
                .contains(&format!("format {}", SNAPSHOT_FORMAT + 1)),
            "{error}"
        );
        assert!(decode_machine(&data[..SNAPSHOT_TAG.len() + 2]).is_err());
    }
}
