//! Agents, tasks and decisions: the coordination state the cluster replicates next to the keys.
//!
//! Like the rest of `state_machine`, this is a pure function of the log: time is the leader's
//! stamp (`now_ms`, passed in by `StateMachine`), maps are ordered, and every index is part of
//! the serialized state. The leader's scheduler reads it (`plan_assignments`, `next_due_ms`) and
//! proposes `Assign` and `Tick` entries; nothing here runs on its own.

pub mod agents;
pub mod decisions;
pub mod events;
pub mod tasks;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use agents::{Agent, AgentSpec, Beat, BreakerState};
pub use decisions::{Decision, DecisionSpec, DecisionStatus, Electorate, Rule, Tally, Vote};
pub use events::EventRing;
pub use tasks::{
    Attempt, AttemptOutcome, Backoff, DeadLetterReason, DeadLetterSelector, DecisionGate, Lease,
    Progress, ReadyKey, Retention, Task, TaskSpec, TaskState, SCAN_PER_QUEUE,
};

pub type TaskId = u64;
pub type SessionId = u64;
pub type DecisionId = u64;
pub type FencingToken = u64;

/// The coordination commands the log carries (inside `Command::Coordination`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordCommand {
    RegisterAgent(AgentSpec),
    Heartbeats {
        beats: Vec<Beat>,
    },
    CloseSession {
        session_id: SessionId,
    },
    SetDrained {
        name: String,
        drained: bool,
    },
    /// All or nothing.
    Submit {
        tasks: Vec<TaskSpec>,
    },
    /// Proposed by the leader's scheduler only.
    Assign {
        assignments: Vec<(TaskId, SessionId)>,
    },
    Complete {
        task_id: TaskId,
        token: FencingToken,
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    Fail {
        task_id: TaskId,
        token: FencingToken,
        error: String,
        retryable: bool,
        retry_after_ms: u64,
    },
    ExtendLease {
        task_id: TaskId,
        token: FencingToken,
        lease_ms: u64,
    },
    Progress {
        task_id: TaskId,
        token: FencingToken,
        percent: u32,
        message: String,
        checkpoint: String,
        extend_lease: bool,
    },
    Release {
        task_id: TaskId,
        token: FencingToken,
    },
    Cancel {
        task_id: TaskId,
        reason: String,
    },
    Redrive {
        selector: DeadLetterSelector,
    },
    Purge {
        selector: DeadLetterSelector,
    },
    Propose(DecisionSpec),
    Vote {
        session_id: SessionId,
        decision_id: DecisionId,
        choice: String,
        rationale: String,
    },
    /// Proposed by the leader when `next_due_ms() <= now`, and once (with refresh = true) right
    /// after it becomes leader. Fires every due timer at the stamped time; GCs by `retention`.
    Tick {
        refresh: bool,
        retention: Retention,
    },
}

impl CoordCommand {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CoordCommand::RegisterAgent(_) => "register_agent",
            CoordCommand::Heartbeats { .. } => "heartbeats",
            CoordCommand::CloseSession { .. } => "close_session",
            CoordCommand::SetDrained { .. } => "set_drained",
            CoordCommand::Submit { .. } => "submit",
            CoordCommand::Assign { .. } => "assign",
            CoordCommand::Complete { .. } => "complete",
            CoordCommand::Fail { .. } => "fail",
            CoordCommand::ExtendLease { .. } => "extend_lease",
            CoordCommand::Progress { .. } => "progress",
            CoordCommand::Release { .. } => "release",
            CoordCommand::Cancel { .. } => "cancel",
            CoordCommand::Redrive { .. } => "redrive",
            CoordCommand::Purge { .. } => "purge",
            CoordCommand::Propose(_) => "propose",
            CoordCommand::Vote { .. } => "vote",
            CoordCommand::Tick { .. } => "tick",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordResponse {
    Registered {
        session_id: SessionId,
        ttl_ms: u64,
        expires_at_ms: u64,
    },
    /// A live session exists and `replace` was not set.
    AgentExists {
        name: String,
    },
    Ok,
    UnknownSession {
        session_id: SessionId,
    },
    UnknownAgent {
        name: String,
    },
    UnknownTask {
        task_id: TaskId,
    },
    UnknownDecision {
        decision_id: DecisionId,
    },
    /// Per submitted task: its id and whether it already existed (idempotency hit).
    Submitted {
        results: Vec<(TaskId, bool)>,
    },
    /// None: that assignment was no longer valid and was skipped.
    Assigned {
        tokens: Vec<Option<FencingToken>>,
    },
    Verb {
        state: TaskState,
        lease_deadline_ms: u64,
    },
    /// A stale fencing token: nothing changed.
    LeaseLost {
        reason: String,
    },
    Canceled {
        canceled: bool,
        previous: TaskState,
    },
    DeadLetters {
        count: u64,
    },
    Closed {
        released: u32,
    },
    Proposed {
        decision_id: DecisionId,
    },
    Voted {
        decision_id: DecisionId,
    },
    /// Already voted, closed, not in the electorate, or the session is not live.
    VoteRefused {
        reason: String,
    },
    Invalid {
        reason: String,
    },
    QuotaExceeded {
        reason: String,
    },
    Ticked {
        fired: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: CoordEventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordEventKind {
    /// `state`, `attempts` and `lease` are the task's after the change (the task itself may have
    /// moved on).
    Task {
        task_id: TaskId,
        queue: String,
        kind: TaskEventKind,
        state: TaskState,
        attempts: u32,
        lease: Option<Lease>,
        revoked: Option<Revoked>,
    },
    Decision {
        decision_id: DecisionId,
        kind: DecisionEventKind,
    },
    SessionClosed {
        session_id: SessionId,
        agent: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskEventKind {
    Submitted,
    Assigned,
    Progress,
    LeaseExtended,
    Succeeded,
    Failed,
    RetryScheduled,
    Requeued,
    DeadLettered,
    Canceled,
    Redriven,
    Unblocked,
    Purged,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionEventKind {
    Proposed,
    Voted,
    Closed,
}

/// A lease taken away from a session: the session's stream tells the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub session_id: SessionId,
    pub token: FencingToken,
    /// True when the task was canceled (the agent should stop), false when only the lease is gone.
    pub canceled: bool,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// "": any queue.
    pub queue: String,
    /// Empty: any state.
    pub states: Vec<TaskState>,
    /// Every label given must match.
    pub labels: BTreeMap<String, String>,
    /// 0: any.
    pub parent_id: TaskId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordStats {
    pub tasks: u64,
    pub pending: u64,
    pub assigned: u64,
    pub dead_letters: u64,
    pub agents_live: u64,
    pub decisions_open: u64,
}

/// What a timer does when it fires. The order breaks ties between timers due at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum TimerKind {
    TaskDeadline,
    LeaseExpiry,
    SessionExpiry,
    TaskReady,
    DecisionDeadline,
    BreakerReopen,
}

/// (due at, what, task / session / decision id).
type Timer = (u64, TimerKind, u64);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coordination {
    /// The last ids and token issued (each sequence starts at 1).
    last_task_id: TaskId,
    last_session_id: SessionId,
    last_decision_id: DecisionId,
    last_token: FencingToken,

    tasks: BTreeMap<TaskId, Task>,
    /// Tasks per state, indexed by `TaskState::index`.
    state_counts: [u64; 9],
    /// PENDING tasks per queue, in the order they should run. Empty queues are removed.
    ready: BTreeMap<String, BTreeSet<ReadyKey>>,
    timers: BTreeSet<Timer>,
    /// SUCCEEDED and CANCELED tasks by (finished at, id), for retention.
    finished: BTreeSet<(u64, TaskId)>,
    /// DEAD_LETTERED and EXPIRED tasks, all and per queue.
    dead_letters: BTreeSet<TaskId>,
    dead_by_queue: BTreeMap<String, BTreeSet<TaskId>>,
    /// (queue, idempotency key) -> (task, submitted at), and the same by time for retention.
    idempotency: BTreeMap<(String, String), (TaskId, u64)>,
    idempotency_by_time: BTreeSet<(u64, String, String)>,
    /// BLOCKED tasks per gating decision.
    gates: BTreeMap<DecisionId, BTreeSet<TaskId>>,
    /// XOR of `task_digest` over every task, kept as tasks change.
    tasks_digest: u64,

    agents: BTreeMap<String, Agent>,
    /// Each agent's current session -> its name (live or gone).
    sessions: BTreeMap<SessionId, String>,
    /// Agents whose session is gone, by (gone at, name), for retention.
    gone_agents: BTreeSet<(u64, String)>,

    decisions: BTreeMap<DecisionId, Decision>,
    open_decisions: BTreeSet<DecisionId>,
    /// Closed decisions by (closed at, id), for retention.
    closed_decisions: BTreeSet<(u64, DecisionId)>,

    /// The retention of the last Tick: what `next_due_ms` plans garbage collection by.
    retention: Retention,
    /// The queue of the last assignment: the next plan starts after it (fairness across plans).
    last_assigned_queue: String,
    events: EventRing,
}

impl Coordination {
    /// Applies one coordination command at cluster time `now_ms`. Sessions that ended (expired,
    /// closed or replaced) are appended to `ended_sessions`: the caller deletes their keys.
    pub fn apply(
        &mut self,
        now_ms: u64,
        command: &CoordCommand,
        ended_sessions: &mut Vec<SessionId>,
    ) -> CoordResponse {
        let _ = (now_ms, command, ended_sessions);
        unimplemented!("phase 2")
    }

    /// Whether `session_id` is the live session of an agent (ephemeral keys may attach to it).
    pub fn session_live(&self, session_id: SessionId) -> bool {
        self.agent_by_session(session_id).is_some_and(|a| a.live)
    }

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// Tasks with ids after `after_id` that match `filter`, at most `limit`, and whether more
    /// follow.
    pub fn list_tasks(
        &self,
        filter: &TaskFilter,
        after_id: TaskId,
        limit: usize,
    ) -> (Vec<&Task>, bool) {
        let _ = (filter, after_id, limit);
        unimplemented!("phase 2")
    }

    /// DEAD_LETTERED and EXPIRED tasks of `queue` ("" for every queue) in id order.
    pub fn dead_letters(&self, queue: &str, after_id: TaskId, limit: usize) -> (Vec<&Task>, bool) {
        let _ = (queue, after_id, limit);
        unimplemented!("phase 2")
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// The agent whose current session (live or gone) is `session_id`.
    pub fn agent_by_session(&self, session_id: SessionId) -> Option<&Agent> {
        let name = self.sessions.get(&session_id)?;
        self.agents
            .get(name)
            .filter(|agent| agent.session_id == session_id)
    }

    /// Every agent, live or gone, in name order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    pub fn decision(&self, id: DecisionId) -> Option<&Decision> {
        self.decisions.get(&id)
    }

    pub fn list_decisions(
        &self,
        statuses: &[DecisionStatus],
        after_id: DecisionId,
        limit: usize,
    ) -> (Vec<&Decision>, bool) {
        let _ = (statuses, after_id, limit);
        unimplemented!("phase 2")
    }

    /// Tasks whose lease is held by `session_id`, in id order.
    pub fn assignments(&self, session_id: SessionId) -> Vec<&Task> {
        let _ = session_id;
        unimplemented!("phase 2")
    }

    /// Open decisions that have `agent` among their voters and no vote from it yet.
    pub fn open_ballots(&self, agent: &str) -> Vec<&Decision> {
        let _ = agent;
        unimplemented!("phase 2")
    }

    /// 0 before any event.
    pub fn last_event_seq(&self) -> u64 {
        self.events.last_seq()
    }

    /// Every event after `seq`, or `Err(oldest seq still kept)` when `seq + 1` fell out of the
    /// ring.
    pub fn events_after(&self, seq: u64) -> Result<Vec<&CoordEvent>, u64> {
        self.events.after(seq)
    }

    /// The assignments the leader should propose now, at most `max`.
    pub fn plan_assignments(&self, now_ms: u64, max: usize) -> Vec<(TaskId, SessionId)> {
        tasks::plan(
            &self.ready,
            &self.tasks,
            &self.agents,
            &self.last_assigned_queue,
            now_ms,
            max,
        )
    }

    /// The earliest cluster time at which a Tick would change something.
    pub fn next_due_ms(&self) -> Option<u64> {
        unimplemented!("phase 2")
    }

    /// Order-independent: equal state, equal digest.
    pub fn digest(&self) -> u64 {
        unimplemented!("phase 2")
    }

    pub fn stats(&self) -> CoordStats {
        unimplemented!("phase 2")
    }
}

#[cfg(test)]
mod tests;
