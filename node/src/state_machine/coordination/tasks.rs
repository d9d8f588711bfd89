//! Tasks: their specs and states, the per-queue ready index, retry backoff, and the scheduler's
//! planning (which ready task goes to which agent).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::agents::Agent;
use super::{DecisionId, FencingToken, SessionId, TaskId};

/// Retry backoff after a failed attempt (tasks.proto, `Backoff`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub maximum_ms: u64,
    pub multiplier: f64,
    /// 0.0 ..= 1.0: the delay is reduced by up to this fraction of itself.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry):
    /// `min(maximum, initial * multiplier^(attempt-1))`, reduced by `jitter * frac` where `frac`
    /// in [0, 1) is a hash of (task id, attempt), so every replica computes the same time.
    pub fn delay_ms(&self, task_id: TaskId, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let raw = self.initial_ms as f64 * multiplier.powi(exponent);
        let capped = if raw.is_finite() {
            raw.min(self.maximum_ms as f64)
        } else {
            self.maximum_ms as f64
        };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let reduced = capped * (1.0 - jitter * jitter_fraction(task_id, attempt));
        // `as` saturates and maps NaN to 0: never a panic.
        reduced.max(0.0) as u64
    }
}

/// A deterministic fraction in [0, 1) from (task id, attempt): splitmix64, top 53 bits.
pub fn jitter_fraction(task_id: TaskId, attempt: u32) -> f64 {
    let mut x = task_id ^ (u64::from(attempt)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

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
            TaskState::Succeeded | TaskState::DeadLettered | TaskState::Canceled | TaskState::Expired
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

    pub(super) fn index(self) -> usize {
        self as usize
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
}

impl Task {
    /// The ready-index key: priority descending, then deadline ascending (none last), then id.
    pub(super) fn ready_key(&self) -> ReadyKey {
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

/// (negated priority, deadline or u64::MAX, id): the order in which a queue's ready tasks run.
pub type ReadyKey = (i64, u64, TaskId);

/// Ready tasks scanned per queue per plan at most, so planning cost does not grow with the queue.
pub const SCAN_PER_QUEUE: usize = 256;

/// The leader's planning pass: fair across queues (round-robin over the queues with ready tasks,
/// starting after `last_queue`, one task per queue per round), within a queue in ready order, each
/// task to the least-loaded eligible agent (running / max_concurrent, ties by name), capacity
/// counted within the plan. A task no agent can take now is skipped.
pub(super) fn plan(
    ready: &BTreeMap<String, BTreeSet<ReadyKey>>,
    tasks: &BTreeMap<TaskId, Task>,
    agents: &BTreeMap<String, Agent>,
    last_queue: &str,
    now_ms: u64,
    max: usize,
) -> Vec<(TaskId, SessionId)> {
    let _ = (ready, tasks, agents, last_queue, now_ms, max);
    unimplemented!("phase 2")
}
