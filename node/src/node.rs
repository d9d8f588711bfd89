//! One running node: the Raft handle, the applied state, and the operations the API offers, in
//! terms of node::Error. Knows nothing of gRPC.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::type_config::TypeConfigExt;
use openraft::{ChangeMembers, ServerState};

use crate::config::Config;
use crate::error::{refused, Error, LeaderHint, Result};
use crate::raft::heartbeats::Heartbeats;
use crate::raft::metrics::RaftCounters;
use crate::raft::network::PeerNetwork;
use crate::raft::{NodeId, NodeInfo, Raft, TypeConfig};
use crate::state_machine::{Command, CoordCommand, Fence, Request, RequestId, Response};
use crate::storage::SharedState;

/// Longest wait for a new learner to catch up with the leader's log before AddLearner answers
/// "outcome unknown" (the learner stays added if the change committed).
pub const LEARNER_CATCH_UP_WAIT: Duration = Duration::from_secs(120);

pub struct Node {
    pub id: NodeId,
    pub config: Config,
    pub raft: Raft,
    pub state: Arc<SharedState>,
    /// What openraft reports through its metrics hook, for a later metrics endpoint.
    pub raft_counters: Arc<RaftCounters>,
    /// Outbound peer channels (shared with Raft): a follower hands heartbeat batches to the leader.
    pub peers: PeerNetwork,
    /// Heartbeats from the session streams this node serves, waiting for the next batch.
    pub heartbeats: Heartbeats,
}

/// How a read was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Serializable,
}

impl Node {
    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis(self.config.leader_wait_ms)
    }

    /// The leader this node knows of, with its API address.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let id = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some(LeaderHint {
            id,
            api_addr: node.api_addr,
        })
    }

    /// Waits until this node knows of a leader other than `leader`, and names it. Never returns
    /// while `leader` stays the leader this node knows of (or no leader is known).
    ///
    /// Follows the server metrics, which change with votes, leaders and membership only, so that
    /// many calls waiting here cost nothing per committed entry.
    pub async fn leader_other_than(&self, leader: NodeId) -> Option<LeaderHint> {
        let mut server = self.raft.server_metrics();
        loop {
            let moved = server
                .borrow_and_update()
                .current_leader
                .is_some_and(|current| current != leader);
            if moved {
                return self.leader_hint();
            }
            if server.changed().await.is_err() {
                // Raft has stopped (the node is shutting down): nothing will change any more.
                return std::future::pending().await;
            }
        }
    }

    /// The effective membership this node knows (the last one in its log).
    pub fn membership(&self) -> Arc<crate::raft::StoredMembership> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone()
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// False once this node's own membership no longer lists it (it was removed).
    pub fn is_member(&self) -> bool {
        self.is_member_id(self.id)
    }

    /// Whether the membership this node knows lists `id` (trivially true before initialization).
    pub fn is_member_id(&self, id: NodeId) -> bool {
        let stored = self.membership();
        let membership = stored.membership();
        membership.get_node(&id).is_some() || membership.nodes().next().is_none()
    }

    /// Proposes a write on this node, which must be the leader, and waits until it is applied.
    /// A domain refusal (quota, lease lost, unknown task, ...) is an error (`error::refused`).
    pub async fn write(&self, request_id: RequestId, command: Command) -> Result<Response> {
        let response = self.propose(Some(request_id), command).await?;
        refused(response, Some(request_id))
    }

    /// Proposes a command the leader makes up itself (the scheduler's Assign, the ticker's Tick):
    /// no request id, because a lost one is simply planned again from the applied state, and
    /// applying one twice changes nothing the state machine has not validated. The response is
    /// handed back as applied, for the caller to read.
    pub async fn propose_internal(&self, command: Command) -> Result<Response> {
        self.propose(None, command).await
    }

    /// Proposes a write that applies only while `fence` holds (a fenced write); refusals are
    /// errors as in `write`.
    pub async fn write_fenced(
        &self,
        request_id: RequestId,
        fence: Option<Fence>,
        command: Command,
    ) -> Result<Response> {
        let command = self.txn_partial(fence.clone(), command).await;
        let response = self
            .propose_fenced(Some(request_id), fence, command)
            .await?;
        refused(response, Some(request_id))
    }

    /// Test-only, in `--unsafe-test-mode txn-partial`: a transaction of two or more ops is split
    /// in two entries. This proposes the first (its compares and every op but the last, with no
    /// request id, so a resend applies it again) and returns the second (the last op alone,
    /// without compares), which the caller proposes with the request id. The state machine stays
    /// as it is; the Jepsen transactions checker must notice the partial effects. Every other
    /// command, and every command in any other mode, passes unchanged.
    async fn txn_partial(&self, fence: Option<Fence>, command: Command) -> Command {
        if self.config.unsafe_test_mode != crate::config::UnsafeTestMode::TxnPartial {
            return command;
        }
        let Command::Transaction(mut transaction) = command else {
            return command;
        };
        let Some(last) = transaction
            .ops
            .pop()
            .filter(|_| !transaction.ops.is_empty())
        else {
            return Command::Transaction(transaction);
        };
        let compares = std::mem::take(&mut transaction.compares);
        let head = crate::state_machine::Transaction {
            compares,
            ops: std::mem::take(&mut transaction.ops),
        };
        let outcome = self
            .propose_fenced(None, fence, Command::Transaction(head))
            .await;
        tracing::warn!(
            ?outcome,
            "UNSAFE: a transaction's ops but the last applied apart"
        );
        transaction.ops.push(last);
        Command::Transaction(transaction)
    }

    async fn propose(&self, request_id: Option<RequestId>, command: Command) -> Result<Response> {
        self.propose_fenced(request_id, None, command).await
    }

    async fn propose_fenced(
        &self,
        request_id: Option<RequestId>,
        fence: Option<Fence>,
        command: Command,
    ) -> Result<Response> {
        if !self.is_member() {
            return Err(Error::NodeRemoved(self.id));
        }
        if !self.raft.is_leader() {
            return Err(Error::NotLeader {
                leader: self.leader_hint(),
                proposed: false,
            });
        }
        // The test-only skip-fence mode drops the fence: the suite shows it notices.
        let fence = fence
            .filter(|_| self.config.unsafe_test_mode != crate::config::UnsafeTestMode::SkipFence);
        let command = self.unsafe_topics(self.stale_step_result(command));
        let request = Request {
            now_ms: wall_clock_ms(),
            request_id,
            fence,
            command,
        };
        match tokio::time::timeout(self.leader_wait(), self.raft.client_write(request)).await {
            Err(_) => Err(Error::Timeout(format!(
                "the write was proposed but not committed within {} ms; its outcome is unknown",
                self.config.leader_wait_ms
            ))),
            Ok(Ok(written)) => Ok(written.data),
            // The entry may be in this node's log and still commit under the next leader.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(Error::NotLeader {
                    leader: self.leader_hint(),
                    proposed: true,
                })
            }
            Ok(Err(e)) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// Test-only, in `--unsafe-test-mode stale-step-result`: a Complete of a workflow step's task
    /// whose token is not the task's current lease is given the current lease's token, so that
    /// the state machine's fencing check (which stays as it is) accepts it and the workflow records
    /// a stale attempt's result. The Jepsen workflows checker must notice. Reads this leader's
    /// applied state, so it only breaks the guarantee while the task is assigned to someone else;
    /// every other command, and every command in any other mode, passes unchanged.
    fn stale_step_result(&self, command: Command) -> Command {
        if self.config.unsafe_test_mode != crate::config::UnsafeTestMode::StaleStepResult {
            return command;
        }
        let Command::Coordination(CoordCommand::Complete {
            task_id,
            token,
            result,
        }) = command
        else {
            return command;
        };
        let current = {
            let state = self.state.read();
            state
                .machine
                .tasks()
                .task(task_id)
                .filter(|task| task.origin.is_some())
                .and_then(|task| task.lease.as_ref())
                .map(|lease| lease.token)
        };
        let token = match current {
            Some(current) if current != token => {
                tracing::warn!(
                    task_id,
                    token,
                    current,
                    "UNSAFE: a stale step completion takes the current token"
                );
                current
            }
            _ => token,
        };
        Command::Coordination(CoordCommand::Complete {
            task_id,
            token,
            result,
        })
    }

    /// Test-only, in `--unsafe-test-mode topic-stale-ack`: a topic Ack whose token is not the
    /// message's current delivery, while another delivery of it is in flight, is given that
    /// delivery's token, so the state machine's check (which stays as it is) accepts a stale
    /// member's ack. In `topic-unordered`: every CreateGroup asks for no per-key order. The Jepsen
    /// topics checker must notice either. Every other command passes unchanged.
    fn unsafe_topics(&self, command: Command) -> Command {
        use crate::config::UnsafeTestMode;
        use crate::state_machine::topics::{PendingState, TopicCommand};
        match (self.config.unsafe_test_mode, command) {
            (
                UnsafeTestMode::TopicStaleAck,
                Command::Topics(TopicCommand::Ack {
                    topic,
                    group,
                    seq,
                    token,
                }),
            ) => {
                let current = {
                    let state = self.state.read();
                    let pending = state
                        .machine
                        .topics()
                        .get(&topic)
                        .and_then(|t| t.group(&group))
                        .and_then(|g| g.pending(seq))
                        .map(|pending| pending.state.clone());
                    match pending {
                        Some(PendingState::InFlight { token, .. }) => Some(token),
                        _ => None,
                    }
                };
                let token = match current {
                    Some(current) if current != token => {
                        tracing::warn!(
                            topic,
                            group,
                            seq,
                            token,
                            current,
                            "UNSAFE: a stale ack takes the current token"
                        );
                        current
                    }
                    _ => token,
                };
                Command::Topics(TopicCommand::Ack {
                    topic,
                    group,
                    seq,
                    token,
                })
            }
            (
                UnsafeTestMode::TopicUnordered,
                Command::Topics(TopicCommand::CreateGroup {
                    topic,
                    group,
                    mut config,
                }),
            ) => {
                config.ordered_keys = false;
                Command::Topics(TopicCommand::CreateGroup {
                    topic,
                    group,
                    config,
                })
            }
            (_, command) => command,
        }
    }

    /// Raft ReadIndex (Raft thesis §6.4): after this returns, reads of the local state are
    /// linearizable. The leader (1) waits until it has committed an entry of its own term, so
    /// its commit index covers everything committed before; (2) takes that index as the read
    /// index; (3) sends a heartbeat round and waits until a quorum has acknowledged an RPC *sent
    /// after* the read began (openraft's quorum-ack clock records send times), proving it was
    /// still the leader when the read began; (4) waits until it has applied the read index.
    ///
    /// openraft's own `ensure_linearizable(ReadIndex)` does the same but settles queued reads
    /// only on its tick (heartbeat/5), adding up to tens of milliseconds to every read; this
    /// follows the quorum-ack clock through the metrics channel instead.
    pub async fn linearize(&self) -> Result<()> {
        let started = TypeConfig::now();
        let wait = self.raft.wait(Some(self.leader_wait()));
        let leading = wait
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.cluster_committed
                            .as_ref()
                            .is_some_and(|c| c.leader_id.term == m.current_term)
                },
                "the leader has committed an entry of its term",
            )
            .await
            .map_err(|_| self.read_unavailable())?;
        if leading.state != ServerState::Leader {
            return Err(Error::NotLeader {
                leader: self.leader_hint(),
                proposed: false,
            });
        }
        let term = leading.current_term;
        let read_index = leading.cluster_committed.as_ref().map(|c| c.index());
        self.raft
            .trigger()
            .heartbeat()
            .await
            .map_err(|e| Error::Fatal(e.to_string()))?;
        // A lone voter is its own quorum: openraft records no acknowledgment for it, and no
        // other node can be elected while the voters are only it.
        let me = self.id;
        let confirmed = wait
            .metrics(
                |m| {
                    m.current_term != term
                        || m.state != ServerState::Leader
                        || m.membership_config
                            .membership()
                            .voter_ids()
                            .all(|id| id == me)
                        || m.last_quorum_acked
                            .as_ref()
                            .is_some_and(|acked| **acked > started)
                },
                "a quorum acknowledged a heartbeat sent after the read began",
            )
            .await
            .map_err(|_| self.read_unavailable())?;
        if confirmed.current_term != term || confirmed.state != ServerState::Leader {
            return Err(Error::NotLeader {
                leader: self.leader_hint(),
                proposed: false,
            });
        }
        wait.applied_index_at_least(read_index, "applied up to the read index")
            .await
            .map_err(|_| self.read_unavailable())?;
        Ok(())
    }

    fn read_unavailable(&self) -> Error {
        Error::Unavailable {
            message: format!(
                "could not confirm leadership with a quorum within {} ms",
                self.config.leader_wait_ms
            ),
            leader: self.leader_hint(),
            proposed: false,
        }
    }

    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<()> {
        if !members.contains_key(&self.id) {
            return Err(Error::InvalidArgument(format!(
                "members: must include the node receiving the request (id {})",
                self.id
            )));
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(e))) => Err(
                Error::AlreadyExists(format!("the node is already part of a cluster: {e}")),
            ),
            Err(e) => Err(Error::FailedPrecondition(e.to_string())),
        }
    }

    /// Adds a learner and waits until it has caught up, for at most [`LEARNER_CATCH_UP_WAIT`].
    pub async fn add_learner(&self, id: NodeId, node: NodeInfo) -> Result<u64> {
        self.ensure_leader()?;
        let result = self
            .bounded(
                LEARNER_CATCH_UP_WAIT,
                "adding the learner",
                self.raft.add_learner(id, node, true),
            )
            .await?;
        self.membership_result(result)
    }

    pub async fn change_membership(&self, change: ChangeMembers<NodeId, NodeInfo>) -> Result<u64> {
        self.ensure_leader()?;
        let result = self
            .bounded(
                self.leader_wait(),
                "the membership change",
                self.raft.change_membership(change, false),
            )
            .await?;
        self.membership_result(result)
    }

    /// A membership change waits for a commit like any write, so it gets the same bound: a leader
    /// cut off from its quorum still believes it leads, and without a bound the caller would wait
    /// forever. The change may still commit later, so the answer is "outcome unknown".
    async fn bounded<T>(
        &self,
        wait: Duration,
        what: &str,
        future: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        tokio::time::timeout(wait, future).await.map_err(|_| {
            Error::Timeout(format!(
                "{what} was proposed but not committed within {} ms; its outcome is unknown",
                wait.as_millis()
            ))
        })
    }

    pub fn promote(ids: BTreeSet<NodeId>) -> ChangeMembers<NodeId, NodeInfo> {
        ChangeMembers::AddVoterIds(ids)
    }

    /// Removes voters and learners alike: voters leave the voter set and the node list in one
    /// joint-consensus change; learners, which are in no quorum, are simply dropped.
    pub async fn remove(&self, ids: BTreeSet<NodeId>) -> Result<u64> {
        self.ensure_leader()?;
        let membership = self.membership();
        let voters: BTreeSet<NodeId> = membership
            .voter_ids()
            .filter(|id| ids.contains(id))
            .collect();
        let learners: BTreeSet<NodeId> = ids.difference(&voters).copied().collect();
        if let Some(unknown) = learners
            .iter()
            .find(|id| membership.membership().get_node(id).is_none())
        {
            return Err(Error::InvalidArgument(format!(
                "node_ids: node {unknown} is not a member"
            )));
        }
        let mut log_index = 0;
        if !voters.is_empty() {
            log_index = self
                .change_membership(ChangeMembers::RemoveVoters(voters))
                .await?;
        }
        if !learners.is_empty() {
            log_index = self
                .change_membership(ChangeMembers::RemoveNodes(learners))
                .await?;
        }
        Ok(log_index)
    }

    pub async fn transfer_leader(&self, to: NodeId) -> Result<NodeId> {
        self.ensure_leader()?;
        let membership = self.membership();
        if !membership.voter_ids().any(|id| id == to) {
            return Err(Error::InvalidArgument(format!(
                "to_node_id: node {to} is not a voter"
            )));
        }
        if to != self.id {
            self.raft
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| Error::Fatal(e.to_string()))?;
        }
        let _ = self
            .raft
            .wait(Some(self.leader_wait()))
            .metrics(|m| m.current_leader == Some(to), "leadership transferred")
            .await;
        let leader = self.raft.metrics().borrow_watched().current_leader;
        match leader {
            Some(leader) if leader == to => Ok(leader),
            other => Err(Error::Unavailable {
                message: format!(
                    "leadership did not move to node {to} in time (leader now: {other:?})"
                ),
                leader: self.leader_hint(),
                proposed: true,
            }),
        }
    }

    fn ensure_leader(&self) -> Result<()> {
        if self.raft.metrics().borrow_watched().state == ServerState::Leader {
            Ok(())
        } else {
            Err(Error::NotLeader {
                leader: self.leader_hint(),
                proposed: false,
            })
        }
    }

    fn membership_result(
        &self,
        result: std::result::Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
        >,
    ) -> Result<u64> {
        match result {
            Ok(response) => Ok(response.log_id.index()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(Error::NotLeader {
                    leader: self.leader_hint(),
                    proposed: true,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Error::FailedPrecondition(e.to_string()))
            }
            Err(e) => Err(Error::Fatal(e.to_string())),
        }
    }
}

/// The leader's clock, stamped into each command it proposes. The state machine never reads a
/// clock itself.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
