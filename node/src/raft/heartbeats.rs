//! Agent heartbeats, batched per node: every session stream this node serves records its latest
//! beat here, and one task proposes them all as ONE `Heartbeats` entry at most every
//! HEARTBEAT_BATCH_MS, through the leader (a follower hands the batch to the leader over the peer
//! address). Ten thousand agents beating every few seconds cost a few log entries per second, not
//! ten thousand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::error::Error;
use crate::limits::{AGENTS_MAX, HEARTBEAT_BATCH_MS};
use crate::node::Node;
use crate::state_machine::coordination::{Beat, CoordCommand, SessionId};
use crate::state_machine::{Command, RequestId};

/// The beats received since the last batch: session -> latest load. Bounded by AGENTS_MAX, as
/// there cannot be more live sessions than agents.
pub struct Heartbeats {
    pending: Mutex<BTreeMap<SessionId, u32>>,
    wake: Notify,
    /// The node's own client id for the batches' request ids (random, chosen at start).
    client_id: u64,
    serial: AtomicU64,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats {
            pending: Mutex::default(),
            wake: Notify::new(),
            client_id: rand::random::<u64>().max(1),
            serial: AtomicU64::new(0),
        }
    }
}

impl Heartbeats {
    /// Records a beat for the next batch. False when the batch is full of other sessions.
    pub fn beat(&self, session_id: SessionId, load: u32) -> bool {
        {
            let mut pending = self.pending.lock().expect("heartbeat batch lock");
            if pending.len() >= AGENTS_MAX && !pending.contains_key(&session_id) {
                return false;
            }
            pending.insert(session_id, load);
        }
        self.wake.notify_one();
        true
    }

    fn take(&self) -> Vec<Beat> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("heartbeat batch lock"));
        pending
            .into_iter()
            .map(|(session_id, load)| Beat { session_id, load })
            .collect()
    }

    /// Puts back the beats of a batch that failed, unless newer ones came meanwhile.
    fn restore(&self, beats: Vec<Beat>) {
        let mut pending = self.pending.lock().expect("heartbeat batch lock");
        for beat in beats {
            if pending.len() >= AGENTS_MAX {
                break;
            }
            pending.entry(beat.session_id).or_insert(beat.load);
        }
    }

    /// A request id for the next batch. The node never retries an old batch (a failed one is
    /// merged into the next), so every earlier result may be forgotten at once.
    fn next_request_id(&self) -> RequestId {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        RequestId {
            client_id: self.client_id,
            serial,
            min_pending_serial: serial,
        }
    }
}

/// Proposes the batched beats until the node stops.
pub async fn run(node: Arc<Node>, mut stopping: watch::Receiver<bool>) {
    let batch_interval = Duration::from_millis(HEARTBEAT_BATCH_MS);
    let mut last_sent = Instant::now() - batch_interval;
    loop {
        tokio::select! {
            () = node.heartbeats.wake.notified() => {}
            () = stopped(&mut stopping) => return,
        }
        tokio::select! {
            () = tokio::time::sleep_until(last_sent + batch_interval) => {}
            () = stopped(&mut stopping) => return,
        }
        let beats = node.heartbeats.take();
        if beats.is_empty() {
            continue;
        }
        last_sent = Instant::now();
        let count = beats.len();
        let command = Command::Coordination(CoordCommand::Heartbeats {
            beats: beats.clone(),
        });
        let request_id = node.heartbeats.next_request_id();
        let result = tokio::select! {
            result = propose(&node, request_id, command) => result,
            () = stopped(&mut stopping) => return,
        };
        if let Err(e) = result {
            // Lost beats only matter if the next batch is late too; it carries them.
            tracing::debug!(beats = count, error = %e, "heartbeat batch not proposed; retrying with the next batch");
            node.heartbeats.restore(beats);
            node.heartbeats.wake.notify_one();
        }
    }
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

/// Proposes here when this node leads, else hands the batch to the leader's peer address.
async fn propose(node: &Node, request_id: RequestId, command: Command) -> Result<(), Error> {
    if node.raft.is_leader() {
        return node.write(request_id, command).await.map(|_| ());
    }
    let metrics = node.raft.metrics();
    let (leader, peer_addr) = {
        use openraft::async_runtime::WatchReceiver;
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader.ok_or_else(|| Error::Unavailable {
            message: "no leader known".into(),
            leader: None,
            proposed: false,
        })?;
        let info = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or_else(|| Error::Fatal(format!("leader {leader} is not in the membership")))?;
        (leader, info.peer_addr)
    };
    node.peers
        .propose(leader, &peer_addr, request_id, command, node.leader_wait())
        .await
        .map(|_| ())
        .map_err(|message| Error::Unavailable {
            message,
            leader: None,
            proposed: true,
        })
}
