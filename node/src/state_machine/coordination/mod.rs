//! Agents, tasks and decisions: the coordination state the cluster replicates next to the keys,
//! as three primitives (`Agents`, `Tasks`, `Decisions`), and what they share: the commands and
//! responses the log carries, the events streams follow, the timer kinds whose order a `Tick`
//! fires them in, and the ids.
//!
//! Like the rest of `state_machine`, this is a pure function of the log: time is the leader's
//! stamp (`now_ms`, passed in by `StateMachine`), maps are ordered, and every index is part of
//! the serialized state. The leader's scheduler reads it (`plan_assignments`, `next_due_ms`) and
//! proposes `Assign` and `Tick` entries; nothing here runs on its own.

pub mod agents;
pub mod decisions;
pub mod events;
pub mod tasks;

use serde::{Deserialize, Serialize};

use super::kv::Fnv;

pub use agents::{Agent, AgentSpec, Agents, Beat, BreakerState, SessionEnd};
pub use decisions::{
    Decision, DecisionSpec, DecisionStatus, Decisions, Electorate, Rule, Tally, Vote,
};
pub use events::EventRing;
pub use tasks::{
    Attempt, AttemptOutcome, Backoff, DeadLetterReason, DeadLetterSelector, DecisionGate,
    Delegation, Escalation, Lease, Progress, ReadyKey, StepOrigin, Task, TaskFilter, TaskListing,
    TaskOp, TaskSpec, TaskState, Tasks, ESCALATED_FROM_LABEL, SCAN_PER_QUEUE,
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
    /// The agent holding `parent`'s lease (`token`) hands work to other agents: all or nothing,
    /// each task delegated under that lease (`tasks::Delegation`). Answered as `Submit` is.
    Delegate {
        parent: TaskId,
        token: FencingToken,
        tasks: Vec<TaskSpec>,
        /// The capability a delegated task's dead letter escalates to; "" escalates to the
        /// manager.
        escalate_to: String,
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
            CoordCommand::Delegate { .. } => "delegate",
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
    /// A lock, semaphore or election changed (`state_machine::locks`).
    Lock(super::locks::LockEvent),
    /// A barrier changed (`state_machine::barriers`).
    Barrier(super::barriers::BarrierEvent),
    /// A workflow or one of its steps changed (`state_machine::workflows`).
    Workflow(super::workflows::WorkflowEvent),
    /// A topic's messages or one of its groups changed (`state_machine::topics`).
    Topic(super::topics::TopicEvent),
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
    /// A delegated task dead-lettered or expired and escalated (`tasks::Escalation`): to its
    /// manager, or to a new task with the escalation capability.
    Escalated,
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

/// Counts over agents, tasks and decisions.
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
/// Stored in the snapshot: codes in `state_machine/format.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    TaskDeadline,
    LeaseExpiry,
    SessionExpiry,
    TaskReady,
    DecisionDeadline,
    BreakerReopen,
}

/// (due at, what, task / session / decision id): the order in which a `Tick` fires the
/// coordination primitives' timers, over all of them (each keeps its own).
pub type Timer = (u64, TimerKind, u64);

/// How long finished things are kept; carried by every Tick (node options). 0 disables a bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Most SUCCEEDED and CANCELED tasks kept (oldest forgotten first).
    pub finished_max: u64,
    /// SUCCEEDED and CANCELED tasks, and closed decisions, are forgotten this long after closing.
    pub finished_age_ms: u64,
    /// How long an idempotency key is remembered.
    pub idempotency_ms: u64,
    /// How long an agent whose session is gone is still listed.
    pub gone_agents_ms: u64,
}

/// The id and token counters of the tasks and the agents, hashed together as when they were one
/// primitive, so the state digest a node reports did not change when they were split.
pub fn counters_digest(
    last_task_id: TaskId,
    last_session_id: SessionId,
    last_token: FencingToken,
) -> u64 {
    let mut counters = Fnv::default();
    for n in [last_task_id, last_session_id, last_token] {
        counters.write(&n.to_be_bytes());
    }
    counters.finish()
}

/// At most `limit` items and whether more follow.
fn page<T>(mut items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, bool) {
    let page: Vec<T> = items.by_ref().take(limit).collect();
    let more = items.next().is_some();
    (page, more)
}

#[cfg(test)]
mod tests;
