//! A task: what was submitted (`TaskSpec`), where it stands (`TaskState`, its lease and
//! attempts), and the records around it that the log and the snapshot store.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Backoff;
use crate::state_machine::coordination::{DecisionId, FencingToken, SessionId, TaskId};
use crate::state_machine::workflows::WorkflowId;

/// A task gated on a decision: BLOCKED until it closes; PENDING if the outcome is `option`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionGate {
    pub decision_id: DecisionId,
    pub option: String,
}

/// A task as submitted. The gRPC layer fills in the defaults; values here are concrete.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub queue: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub content_type: String,
    pub capabilities: BTreeSet<String>,
    pub priority: i32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub lease_ms: u64,
    /// Absolute cluster time; 0: none.
    pub deadline_ms: u64,
    /// Absolute cluster time; 0: at once.
    pub not_before_ms: u64,
    /// Empty: none.
    pub idempotency_key: String,
    pub correlation_id: String,
    /// 0: none.
    pub parent_id: TaskId,
    pub labels: BTreeMap<String, String>,
    pub requires: Option<DecisionGate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Pending,
    Delayed,
    Blocked,
    Assigned,
    RetryWait,
    Succeeded,
    DeadLettered,
    Canceled,
    Expired,
}

impl TaskState {
    pub const ALL: [TaskState; 9] = [
        TaskState::Pending,
        TaskState::Delayed,
        TaskState::Blocked,
        TaskState::Assigned,
        TaskState::RetryWait,
        TaskState::Succeeded,
        TaskState::DeadLettered,
        TaskState::Canceled,
        TaskState::Expired,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::DeadLettered
                | TaskState::Canceled
                | TaskState::Expired
        )
    }

    /// In the dead-letter queue: redrive and purge apply.
    pub fn is_dead_letter(self) -> bool {
        matches!(self, TaskState::DeadLettered | TaskState::Expired)
    }

    /// Kept for the retention window, then forgotten.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Canceled)
    }

    /// The state's slot in per-state arrays (stored in the snapshot): its stable code.
    pub(in crate::state_machine::coordination) fn index(self) -> usize {
        usize::from(self.code())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub session_id: SessionId,
    pub agent: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub token: FencingToken,
    pub assigned_ms: u64,
    pub deadline_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    Running,
    Succeeded,
    Failed,
    LeaseExpired,
    SessionLost,
    Released,
    Canceled,
    DeadlineExceeded,
}

impl AttemptOutcome {
    /// How a lease that ended so is told, after "its manager, task N, ".
    pub fn lease_end(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "is running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseExpired => "lost its lease (it expired)",
            AttemptOutcome::SessionLost => "lost its lease (its agent's session ended)",
            AttemptOutcome::Released => "was released by its agent",
            AttemptOutcome::Canceled => "was canceled",
            AttemptOutcome::DeadlineExceeded => "passed its deadline",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub agent: String,
    pub token: FencingToken,
    pub assigned_ms: u64,
    /// 0 while running.
    pub ended_ms: u64,
    pub outcome: AttemptOutcome,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: u32,
    pub message: String,
    pub checkpoint: String,
    pub updated_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterReason {
    AttemptsExhausted,
    NotRetryable,
    DeadlineExceeded,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub state: TaskState,
    pub submitted_ms: u64,
    /// When the task last changed state.
    pub updated_ms: u64,
    /// For PENDING, DELAYED and RETRY_WAIT: when it may be assigned.
    pub ready_at_ms: u64,
    /// Attempts counted so far (releases and uncounted revocations are not).
    pub attempts: u32,
    /// Present while ASSIGNED.
    pub lease: Option<Lease>,
    /// Every attempt, oldest first, at most the last ATTEMPT_HISTORY_MAX.
    pub history: Vec<Attempt>,
    pub progress: Option<Progress>,
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
    pub last_error: String,
    pub dead_letter_reason: Option<DeadLetterReason>,
    pub cancel_reason: String,
    /// The highest fencing token ever issued for this task (0: never assigned).
    pub last_token: FencingToken,
    /// The workflow step (and branch) this task runs, when a workflow submitted it. Kept in the
    /// task (the snapshot), never in its `TaskSpec`: the log's `Submit` cannot carry one.
    pub origin: Option<StepOrigin>,
    /// The manager this task was delegated by (`CoordCommand::Delegate`); None for a task
    /// submitted on its own.
    pub delegation: Option<Delegation>,
}

/// A task delegated by another task's agent, under that task's lease: it lives as long as the
/// lease (when the lease ends, by any verb, expiry, revocation or cancel, the delegated tasks not
/// finished are canceled), and a dead letter escalates instead of failing silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The manager task (also the spec's `parent_id`).
    pub parent: TaskId,
    /// The manager's lease token it was delegated under.
    pub token: FencingToken,
    /// 1 for a task delegated by a root task (TASK_TREE_DEPTH_MAX).
    pub depth: u32,
    /// The capability a dead letter escalates to (a new task); "" escalates to the manager.
    pub escalate_to: String,
    /// Set when this task dead-lettered or expired and escalated.
    pub escalation: Option<Escalation>,
}

/// Where a delegated task's dead letter went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Escalation {
    /// To the manager: its children listing and its task watch show it.
    Manager,
    /// To a new task with the escalation capability, delegated under the same lease.
    Task(TaskId),
    /// Nowhere: the manager's lease had ended (a redriven orphan).
    Orphaned,
}

/// Which workflow step's branch a task runs (`Effect::SubmitStepTasks`); its terminal state is
/// reported back to that workflow (`Effect::StepTaskFinished`). For a compensation task `step`
/// is the compensation step and `branch` the index of the step it undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOrigin {
    pub workflow_id: WorkflowId,
    pub step: u32,
    pub branch: u32,
}

impl Task {
    /// The ready-index key: priority descending, then deadline ascending (none last), then id.
    pub(in crate::state_machine::coordination) fn ready_key(&self) -> ReadyKey {
        let deadline = if self.spec.deadline_ms == 0 {
            u64::MAX
        } else {
            self.spec.deadline_ms
        };
        (-i64::from(self.spec.priority), deadline, self.id)
    }

    /// Whether the deadline has passed at `now_ms` (a task with none never expires).
    pub fn deadline_passed(&self, now_ms: u64) -> bool {
        self.spec.deadline_ms != 0 && self.spec.deadline_ms <= now_ms
    }
}

/// Which dead letters a redrive or purge selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterSelector {
    Ids(Vec<TaskId>),
    /// "" selects every queue.
    Queue(String),
}

/// (negated priority, deadline or u64::MAX, id): the order in which a queue's ready tasks run.
pub type ReadyKey = (i64, u64, TaskId);
