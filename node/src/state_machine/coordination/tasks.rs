//! Tasks: their specs and states, the per-queue ready index, retry backoff, and the scheduler's
//! planning (which ready task goes to which agent).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use std::ops::Bound;

use super::agents::{Agent, SessionEnd};
use super::decisions::{gate_outcome, DecisionStatus};
use super::{CoordResponse, Coordination, Revoked, TaskEventKind};
use super::{DecisionId, FencingToken, SessionId, TaskId};
use crate::limits::{ATTEMPT_HISTORY_MAX, TASKS_MAX};
use crate::state_machine::primitive::{Ctx, Effect};

/// Retry backoff after a failed attempt (tasks.proto, `Backoff`). The wire's `multiplier` and
/// `jitter` are doubles; validation rounds them once to whole thousandths (`grpc/validation.rs`),
/// so the state, the log and apply hold integers only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub maximum_ms: u64,
    /// Growth per attempt in thousandths: 1000 (1.0) ..= 10000 (10.0). Below 1000 counts as 1000.
    pub multiplier_permille: u32,
    /// 0 ..= 1000: the delay is reduced by up to this many thousandths of itself. Above 1000
    /// counts as 1000.
    pub jitter_permille: u32,
}

/// Fractional bits of the fixed-point delay `delay_ms` grows in: a delay below the maximum is
/// carried to 2^-64 ms, so rounding it down at each step costs far less than a millisecond.
const FRACTION_BITS: u32 = 64;

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry):
    /// `min(maximum, initial * (multiplier/1000)^(attempt-1))`, reduced by
    /// `jitter/1000 * X / 2^53` of itself, where `X` in [0, 2^53) is a hash of (task id,
    /// attempt), so every replica computes the same time; rounded down to a millisecond.
    ///
    /// Integer arithmetic only. The growth runs in fixed point (FRACTION_BITS fractional bits,
    /// rounded down at each step, at most 1024 steps: less than 2^-32 ms lost in all for values
    /// the wire allows) and the jitter is applied exactly, so the result is the exact real value
    /// rounded down, unless that value lies within 2^-32 ms above a whole millisecond.
    ///
    /// Before, this was double-precision floating point on the same formula. For the thousandths
    /// the wire now yields, the two agree except where the exact delay is a whole number of
    /// milliseconds that the doubles' rounding missed from below (1.501 is not a binary fraction,
    /// so 5000 * 1.501 came out as 7504.999...): there the old code answered 1 ms less.
    /// `grpc/validation.rs` tests this against the old code for every multiplier the wire allows.
    pub fn delay_ms(&self, task_id: TaskId, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(1024);
        let multiplier = u128::from(self.multiplier_permille.max(1000));
        let cap = u128::from(self.maximum_ms) << FRACTION_BITS;
        let mut delay = u128::from(self.initial_ms) << FRACTION_BITS;
        if delay >= cap {
            delay = cap;
        } else if multiplier > 1000 {
            for _ in 0..exponent {
                // Below the cap (< 2^128 in all, < 2^86 for what the wire allows), so the
                // product only overflows for maxima far beyond the wire's; those cap.
                delay = match delay.checked_mul(multiplier) {
                    Some(grown) => (grown / 1000).min(cap),
                    None => cap,
                };
                if delay == cap {
                    break;
                }
            }
        }
        apply_jitter(
            delay,
            self.jitter_permille.min(1000),
            jitter_fraction(task_id, attempt),
        )
    }
}

/// `floor(delay * (1 - jitter/1000 * fraction/2^53))` in milliseconds, exactly, for a
/// fixed-point `delay` (FRACTION_BITS fractional bits), `jitter` <= 1000 and `fraction` < 2^53.
fn apply_jitter(delay: u128, jitter: u32, fraction: u64) -> u64 {
    // delay * keep / (1000 * 2^53) / 2^64, with keep = 1000 * 2^53 - jitter * fraction < 2^63:
    // the 192-bit product is split at bit 64 of `delay`, and floors nest, so no bit is lost.
    let whole = 1000u128 << 53;
    let keep = whole - u128::from(jitter) * u128::from(fraction);
    let high = delay >> FRACTION_BITS;
    let low = delay & u128::from(u64::MAX);
    let shifted = high * keep + ((low * keep) >> FRACTION_BITS);
    let millis = (shifted >> 53) / 1000;
    // At most `delay`'s whole part, a u64 maximum: the conversion cannot fail.
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// A deterministic fraction in [0, 1), in units of 2^-53, from (task id, attempt): splitmix64,
/// top 53 bits.
pub fn jitter_fraction(task_id: TaskId, attempt: u32) -> u64 {
    let mut x = task_id ^ (u64::from(attempt)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x >> 11
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
    pub(super) fn index(self) -> usize {
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
/// counted within the plan. A task no agent can take now is skipped; at most SCAN_PER_QUEUE ready
/// tasks are looked at per queue, so the cost does not grow with the queue length.
pub(super) fn plan(
    ready: &BTreeMap<String, BTreeSet<ReadyKey>>,
    tasks: &BTreeMap<TaskId, Task>,
    leases: &BTreeMap<SessionId, BTreeSet<TaskId>>,
    agents: &BTreeMap<String, Agent>,
    last_queue: &str,
    now_ms: u64,
    max: usize,
) -> Vec<(TaskId, SessionId)> {
    struct Candidate<'a> {
        agent: &'a Agent,
        running: usize,
        free: usize,
    }
    fn load_key(candidate: &Candidate) -> u64 {
        ((candidate.running as u64) << 32) / u64::from(candidate.agent.spec.max_concurrent.max(1))
    }
    struct Cursor<'a> {
        keys: std::collections::btree_set::Iter<'a, ReadyKey>,
        scanned: usize,
        done: bool,
    }

    let mut plan = Vec::new();
    if max == 0 || ready.is_empty() {
        return plan;
    }
    let mut candidates: BTreeMap<&str, Candidate> = agents
        .values()
        .filter_map(|agent| {
            let running = leases.get(&agent.session_id).map_or(0, BTreeSet::len);
            let candidate = Candidate {
                agent,
                running,
                free: agent.free_slots(running),
            };
            agent
                .accepts_work(running)
                .then_some((agent.name.as_str(), candidate))
        })
        .collect();
    // Agents with a free slot, least loaded first.
    let mut by_load: BTreeSet<(u64, &str)> = candidates
        .iter()
        .map(|(name, candidate)| (load_key(candidate), *name))
        .collect();
    let after = ready.range::<str, _>((Bound::Excluded(last_queue), Bound::Unbounded));
    let up_to = ready.range::<str, _>((Bound::Unbounded, Bound::Included(last_queue)));
    let mut cursors: Vec<Cursor> = after
        .chain(up_to)
        .map(|(_, keys)| Cursor {
            keys: keys.iter(),
            scanned: 0,
            done: false,
        })
        .collect();
    // Capability sets no agent with a free slot has: slots only fill up within a plan, so
    // such a set stays unplaceable until the plan ends.
    let mut unplaceable: BTreeSet<&BTreeSet<String>> = BTreeSet::new();

    loop {
        let mut placed_any = false;
        for cursor in cursors.iter_mut().filter(|c| !c.done) {
            if plan.len() >= max || by_load.is_empty() {
                return plan;
            }
            loop {
                if cursor.scanned >= SCAN_PER_QUEUE {
                    cursor.done = true;
                    break;
                }
                let Some(&(_, _, task_id)) = cursor.keys.next() else {
                    cursor.done = true;
                    break;
                };
                cursor.scanned += 1;
                let Some(task) = tasks.get(&task_id) else {
                    continue;
                };
                let needed = &task.spec.capabilities;
                if task.deadline_passed(now_ms) || unplaceable.contains(needed) {
                    continue;
                }
                let chosen = by_load
                    .iter()
                    .find(|(_, name)| candidates[name].agent.has_capabilities(needed))
                    .copied();
                let Some(key) = chosen else {
                    unplaceable.insert(needed);
                    continue;
                };
                let candidate = candidates.get_mut(key.1).expect("by_load lists candidates");
                plan.push((task_id, candidate.agent.session_id));
                by_load.remove(&key);
                candidate.running += 1;
                candidate.free -= 1;
                if candidate.free > 0 {
                    by_load.insert((load_key(candidate), key.1));
                }
                placed_any = true;
                break;
            }
        }
        if !placed_any {
            return plan;
        }
    }
}

impl Coordination {
    pub(super) fn submit(&mut self, ctx: &mut Ctx, specs: &[TaskSpec]) -> CoordResponse {
        // Validate everything first: the batch is all or nothing.
        let mut keys_in_batch = BTreeSet::new();
        let mut new_tasks = 0u64;
        for (i, spec) in specs.iter().enumerate() {
            if let Err(reason) = check_task_spec(ctx, spec) {
                return CoordResponse::Invalid {
                    reason: format!("tasks[{i}].{reason}"),
                };
            }
            let key = (spec.queue.clone(), spec.idempotency_key.clone());
            let hit = !spec.idempotency_key.is_empty()
                && (self.idempotency.contains_key(&key) || !keys_in_batch.insert(key));
            if !hit {
                new_tasks += 1;
            }
        }
        if self.tasks.len() as u64 + new_tasks > TASKS_MAX {
            return CoordResponse::QuotaExceeded {
                reason: format!(
                    "the cluster holds its maximum of {TASKS_MAX} tasks (TASKS_MAX); \
                     purge dead letters or wait for finished tasks to be forgotten"
                ),
            };
        }
        let results = specs
            .iter()
            .map(|spec| self.submit_one(ctx, spec))
            .collect();
        CoordResponse::Submitted { results }
    }

    fn submit_one(&mut self, ctx: &mut Ctx, spec: &TaskSpec) -> (TaskId, bool) {
        let now_ms = ctx.now_ms;
        let key = (spec.queue.clone(), spec.idempotency_key.clone());
        if !spec.idempotency_key.is_empty() {
            if let Some(&(existing, _)) = self.idempotency.get(&key) {
                return (existing, true);
            }
        }
        self.last_task_id += 1;
        let id = self.last_task_id;
        let mut task = Task {
            id,
            spec: spec.clone(),
            state: TaskState::Pending,
            submitted_ms: now_ms,
            updated_ms: now_ms,
            ready_at_ms: now_ms,
            attempts: 0,
            lease: None,
            history: Vec::new(),
            progress: None,
            result: Vec::new(),
            last_error: String::new(),
            dead_letter_reason: None,
            cancel_reason: String::new(),
            last_token: 0,
        };
        match &spec.requires {
            None => make_ready(&mut task, now_ms),
            Some(gate) => {
                let decision = ctx
                    .decisions()
                    .decision(gate.decision_id)
                    .expect("checked by check_task_spec");
                if decision.is_open() {
                    task.state = TaskState::Blocked;
                } else {
                    match decision.gate_outcome(&gate.option) {
                        Ok(()) => make_ready(&mut task, now_ms),
                        Err(reason) => {
                            task.state = TaskState::Canceled;
                            task.cancel_reason = reason;
                        }
                    }
                }
            }
        }
        if !spec.idempotency_key.is_empty() {
            self.idempotency_by_time
                .insert((now_ms, key.0.clone(), key.1.clone()));
            self.idempotency.insert(key, (id, now_ms));
        }
        self.task_event(ctx, &task, TaskEventKind::Submitted, None);
        self.put_task(task);
        (id, false)
    }

    pub(super) fn assign(
        &mut self,
        ctx: &mut Ctx,
        assignments: &[(TaskId, SessionId)],
    ) -> CoordResponse {
        let tokens = assignments
            .iter()
            .map(|&(task_id, session_id)| self.assign_one(ctx, task_id, session_id))
            .collect();
        CoordResponse::Assigned { tokens }
    }

    /// Leases one task to one session if that is still valid; the plan may be stale by now.
    fn assign_one(
        &mut self,
        ctx: &mut Ctx,
        task_id: TaskId,
        session_id: SessionId,
    ) -> Option<FencingToken> {
        let now_ms = ctx.now_ms;
        let task = self.tasks.get(&task_id)?;
        let agent = self.agent_by_session(session_id)?;
        let running = self.leases.get(&session_id).map_or(0, BTreeSet::len);
        let valid = task.state == TaskState::Pending
            && !task.deadline_passed(now_ms)
            && agent.accepts_work(running)
            && agent.has_capabilities(&task.spec.capabilities);
        if !valid {
            return None;
        }
        let agent_name = agent.name.clone();
        let mut task = self.take_task(task_id).expect("checked above");
        self.last_token += 1;
        let token = self.last_token;
        task.attempts += 1;
        task.last_token = token;
        task.state = TaskState::Assigned;
        task.updated_ms = now_ms;
        task.lease = Some(Lease {
            session_id,
            agent: agent_name.clone(),
            attempt: task.attempts,
            token,
            assigned_ms: now_ms,
            deadline_ms: now_ms.saturating_add(task.spec.lease_ms),
        });
        if task.history.len() >= ATTEMPT_HISTORY_MAX {
            task.history.remove(0);
        }
        task.history.push(Attempt {
            attempt: task.attempts,
            agent: agent_name.clone(),
            token,
            assigned_ms: now_ms,
            ended_ms: 0,
            outcome: AttemptOutcome::Running,
            error: String::new(),
        });
        ctx.raise(Effect::LeaseGranted {
            session_id,
            task_id,
        });
        self.last_assigned_queue.clone_from(&task.spec.queue);
        self.task_event(ctx, &task, TaskEventKind::Assigned, None);
        self.put_task(task);
        Some(token)
    }

    /// The fencing check of every verb: the task must be ASSIGNED under exactly this token.
    fn check_token(&self, task_id: TaskId, token: FencingToken) -> Result<(), CoordResponse> {
        let Some(task) = self.tasks.get(&task_id) else {
            return Err(CoordResponse::UnknownTask { task_id });
        };
        match &task.lease {
            Some(lease) if task.state == TaskState::Assigned && lease.token == token => Ok(()),
            _ => Err(CoordResponse::LeaseLost {
                reason: lease_lost_reason(task, token),
            }),
        }
    }

    pub(super) fn complete(
        &mut self,
        ctx: &mut Ctx,
        task_id: TaskId,
        token: FencingToken,
        result: &[u8],
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        if let Err(response) = self.check_token(task_id, token) {
            return response;
        }
        let mut task = self.take_task(task_id).expect("checked");
        self.end_lease(ctx, &mut task, AttemptOutcome::Succeeded, "")
            .expect("checked");
        task.state = TaskState::Succeeded;
        task.updated_ms = now_ms;
        task.result = result.to_vec();
        self.task_event(ctx, &task, TaskEventKind::Succeeded, None);
        self.put_task(task);
        CoordResponse::Verb {
            state: TaskState::Succeeded,
            lease_deadline_ms: 0,
        }
    }

    pub(super) fn fail(
        &mut self,
        ctx: &mut Ctx,
        task_id: TaskId,
        token: FencingToken,
        error: &str,
        retryable: bool,
        retry_after_ms: u64,
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        if let Err(response) = self.check_token(task_id, token) {
            return response;
        }
        let mut task = self.take_task(task_id).expect("checked");
        self.end_lease(ctx, &mut task, AttemptOutcome::Failed, error)
            .expect("checked");
        task.last_error = error.to_string();
        task.updated_ms = now_ms;
        let kind = if !retryable {
            task.state = TaskState::DeadLettered;
            task.dead_letter_reason = Some(DeadLetterReason::NotRetryable);
            TaskEventKind::DeadLettered
        } else if task.attempts >= task.spec.max_attempts {
            task.state = TaskState::DeadLettered;
            task.dead_letter_reason = Some(DeadLetterReason::AttemptsExhausted);
            TaskEventKind::DeadLettered
        } else {
            let backoff = task.spec.backoff.delay_ms(task.id, task.attempts);
            task.state = TaskState::RetryWait;
            task.ready_at_ms = now_ms.saturating_add(retry_after_ms.max(backoff));
            TaskEventKind::RetryScheduled
        };
        self.task_event(ctx, &task, TaskEventKind::Failed, None);
        self.task_event(ctx, &task, kind, None);
        let state = task.state;
        self.put_task(task);
        CoordResponse::Verb {
            state,
            lease_deadline_ms: 0,
        }
    }

    pub(super) fn extend_lease(
        &mut self,
        ctx: &mut Ctx,
        task_id: TaskId,
        token: FencingToken,
        lease_ms: u64,
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        if let Err(response) = self.check_token(task_id, token) {
            return response;
        }
        let mut task = self.take_task(task_id).expect("checked");
        let lease_ms = if lease_ms == 0 {
            task.spec.lease_ms
        } else {
            lease_ms
        };
        let lease = task.lease.as_mut().expect("checked");
        lease.deadline_ms = now_ms.saturating_add(lease_ms);
        let lease_deadline_ms = lease.deadline_ms;
        self.task_event(ctx, &task, TaskEventKind::LeaseExtended, None);
        self.put_task(task);
        CoordResponse::Verb {
            state: TaskState::Assigned,
            lease_deadline_ms,
        }
    }

    pub(super) fn progress(
        &mut self,
        ctx: &mut Ctx,
        task_id: TaskId,
        token: FencingToken,
        progress: Progress,
        extend_lease: bool,
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        if let Err(response) = self.check_token(task_id, token) {
            return response;
        }
        let mut task = self.take_task(task_id).expect("checked");
        task.progress = Some(progress);
        let lease_ms = task.spec.lease_ms;
        let lease = task.lease.as_mut().expect("checked");
        if extend_lease {
            lease.deadline_ms = now_ms.saturating_add(lease_ms);
        }
        let lease_deadline_ms = lease.deadline_ms;
        self.task_event(ctx, &task, TaskEventKind::Progress, None);
        self.put_task(task);
        CoordResponse::Verb {
            state: TaskState::Assigned,
            lease_deadline_ms,
        }
    }

    pub(super) fn release(
        &mut self,
        ctx: &mut Ctx,
        task_id: TaskId,
        token: FencingToken,
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        if let Err(response) = self.check_token(task_id, token) {
            return response;
        }
        let mut task = self.take_task(task_id).expect("checked");
        self.end_lease(ctx, &mut task, AttemptOutcome::Released, "");
        task.attempts = task.attempts.saturating_sub(1);
        task.state = TaskState::Pending;
        task.ready_at_ms = now_ms;
        task.updated_ms = now_ms;
        self.task_event(ctx, &task, TaskEventKind::Requeued, None);
        self.put_task(task);
        CoordResponse::Verb {
            state: TaskState::Pending,
            lease_deadline_ms: 0,
        }
    }

    pub(super) fn cancel(&mut self, ctx: &mut Ctx, task_id: TaskId, reason: &str) -> CoordResponse {
        let now_ms = ctx.now_ms;
        let Some(task) = self.tasks.get(&task_id) else {
            return CoordResponse::UnknownTask { task_id };
        };
        let previous = task.state;
        if previous.is_terminal() {
            return CoordResponse::Canceled {
                canceled: false,
                previous,
            };
        }
        let mut task = self.take_task(task_id).expect("found above");
        let revoked = self
            .end_lease(ctx, &mut task, AttemptOutcome::Canceled, "")
            .map(|lease| Revoked {
                session_id: lease.session_id,
                token: lease.token,
                canceled: true,
                reason: reason.to_string(),
            });
        task.state = TaskState::Canceled;
        task.updated_ms = now_ms;
        task.cancel_reason = reason.to_string();
        self.task_event(ctx, &task, TaskEventKind::Canceled, revoked);
        self.put_task(task);
        CoordResponse::Canceled {
            canceled: true,
            previous,
        }
    }

    /// The dead letters a selector names; ids that are not dead letters are skipped.
    fn select_dead_letters(&self, selector: &DeadLetterSelector) -> Vec<TaskId> {
        match selector {
            DeadLetterSelector::Ids(ids) => {
                let mut ids: Vec<TaskId> = ids
                    .iter()
                    .copied()
                    .filter(|id| self.dead_letters.contains(id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            DeadLetterSelector::Queue(queue) if queue.is_empty() => {
                self.dead_letters.iter().copied().collect()
            }
            DeadLetterSelector::Queue(queue) => self
                .dead_by_queue
                .get(queue)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    pub(super) fn redrive(
        &mut self,
        ctx: &mut Ctx,
        selector: &DeadLetterSelector,
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        let ids = self.select_dead_letters(selector);
        for &id in &ids {
            let mut task = self.take_task(id).expect("selected from the index");
            if task.state == TaskState::Expired {
                task.spec.deadline_ms = 0;
            }
            task.attempts = 0;
            task.dead_letter_reason = None;
            make_ready(&mut task, now_ms);
            self.task_event(ctx, &task, TaskEventKind::Redriven, None);
            self.put_task(task);
        }
        CoordResponse::DeadLetters {
            count: ids.len() as u64,
        }
    }

    pub(super) fn purge(&mut self, ctx: &mut Ctx, selector: &DeadLetterSelector) -> CoordResponse {
        let ids = self.select_dead_letters(selector);
        for &id in &ids {
            let task = self.forget_task(id).expect("selected from the index");
            self.task_event(ctx, &task, TaskEventKind::Purged, None);
        }
        CoordResponse::DeadLetters {
            count: ids.len() as u64,
        }
    }

    /// Ends the task's current lease, if any: the attempt gets its outcome, and
    /// `Effect::LeaseEnded` tells the agent. Returns the lease that ended.
    pub(super) fn end_lease(
        &mut self,
        ctx: &mut Ctx,
        task: &mut Task,
        outcome: AttemptOutcome,
        error: &str,
    ) -> Option<Lease> {
        let now_ms = ctx.now_ms;
        let lease = task.lease.take()?;
        if let Some(attempt) = task
            .history
            .iter_mut()
            .rev()
            .find(|a| a.token == lease.token)
        {
            attempt.ended_ms = now_ms;
            attempt.outcome = outcome;
            attempt.error = error.to_string();
        }
        ctx.raise(Effect::LeaseEnded {
            session_id: lease.session_id,
            task_id: task.id,
            outcome,
        });
        Some(lease)
    }

    /// A session ended: every task it holds a lease on goes back to its queue, in id order. The
    /// attempt counts (and may dead-letter the task) unless the agent closed the session.
    pub(super) fn revoke_session_leases(
        &mut self,
        ctx: &mut Ctx,
        session_id: SessionId,
        end: SessionEnd,
    ) {
        let now_ms = ctx.now_ms;
        let held: Vec<TaskId> = self
            .leases
            .get(&session_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for task_id in held {
            let mut task = self
                .take_task(task_id)
                .expect("the lease index lists tasks");
            let outcome = if end.counts_attempts() {
                AttemptOutcome::SessionLost
            } else {
                AttemptOutcome::Released
            };
            let lease = self
                .end_lease(ctx, &mut task, outcome, "")
                .expect("the lease index lists leases");
            let kind = if end.counts_attempts() {
                task.last_error = format!("attempt {}: {}", lease.attempt, end.reason());
                self.requeue_or_dead_letter(now_ms, &mut task)
            } else {
                task.attempts = task.attempts.saturating_sub(1);
                task.state = TaskState::Pending;
                task.ready_at_ms = now_ms;
                task.updated_ms = now_ms;
                TaskEventKind::Requeued
            };
            let revoked = Revoked {
                session_id,
                token: lease.token,
                canceled: false,
                reason: end.reason().to_string(),
            };
            self.task_event(ctx, &task, kind, Some(revoked));
            self.put_task(task);
        }
    }

    /// After an attempt that counts was lost (lease expired, session lost): back to PENDING at
    /// once, or DEAD_LETTERED when that was the last attempt.
    pub(super) fn requeue_or_dead_letter(&mut self, now_ms: u64, task: &mut Task) -> TaskEventKind {
        task.updated_ms = now_ms;
        if task.attempts >= task.spec.max_attempts {
            task.state = TaskState::DeadLettered;
            task.dead_letter_reason = Some(DeadLetterReason::AttemptsExhausted);
            TaskEventKind::DeadLettered
        } else {
            task.state = TaskState::Pending;
            task.ready_at_ms = now_ms;
            TaskEventKind::Requeued
        }
    }

    /// The task deadline timer: a task not yet terminal becomes EXPIRED; a lease on it is
    /// revoked.
    pub(super) fn task_deadline_passed(&mut self, ctx: &mut Ctx, task_id: TaskId) {
        let now_ms = ctx.now_ms;
        let due = self
            .tasks
            .get(&task_id)
            .is_some_and(|t| !t.state.is_terminal() && t.deadline_passed(now_ms));
        if !due {
            return;
        }
        let mut task = self.take_task(task_id).expect("checked");
        let reason = "the task's deadline passed";
        let revoked = self
            .end_lease(ctx, &mut task, AttemptOutcome::DeadlineExceeded, "")
            .map(|lease| Revoked {
                session_id: lease.session_id,
                token: lease.token,
                canceled: false,
                reason: reason.to_string(),
            });
        task.state = TaskState::Expired;
        task.updated_ms = now_ms;
        task.dead_letter_reason = Some(DeadLetterReason::DeadlineExceeded);
        self.task_event(ctx, &task, TaskEventKind::Expired, revoked);
        self.put_task(task);
    }

    /// The lease timer: the attempt counts as failed (breaker included) and the task goes back
    /// to its queue, or to the dead letters when it was the last attempt.
    pub(super) fn lease_expired(&mut self, ctx: &mut Ctx, task_id: TaskId) {
        let now_ms = ctx.now_ms;
        let due = self.tasks.get(&task_id).is_some_and(|t| {
            t.state == TaskState::Assigned
                && t.lease.as_ref().is_some_and(|l| l.deadline_ms <= now_ms)
        });
        if !due {
            return;
        }
        let mut task = self.take_task(task_id).expect("checked");
        let lease = self
            .end_lease(ctx, &mut task, AttemptOutcome::LeaseExpired, "")
            .expect("checked");
        task.last_error = format!("attempt {}: the lease expired", lease.attempt);
        let kind = self.requeue_or_dead_letter(now_ms, &mut task);
        let revoked = Revoked {
            session_id: lease.session_id,
            token: lease.token,
            canceled: false,
            reason: "the lease expired".to_string(),
        };
        self.task_event(ctx, &task, kind, Some(revoked));
        self.put_task(task);
    }

    /// A decision closed: every task gated on it becomes ready (its option won) or is canceled.
    pub(super) fn decision_closed(
        &mut self,
        ctx: &mut Ctx,
        decision_id: DecisionId,
        status: DecisionStatus,
        outcome: Option<&str>,
    ) {
        let now_ms = ctx.now_ms;
        let gated: Vec<_> = self
            .gates
            .get(&decision_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for task_id in gated {
            let mut task = self.take_task(task_id).expect("the gate index lists tasks");
            debug_assert_eq!(task.state, TaskState::Blocked);
            let option = task
                .spec
                .requires
                .as_ref()
                .map_or("", |g| g.option.as_str());
            let kind = match gate_outcome(decision_id, status, outcome, option) {
                Ok(()) => {
                    make_ready(&mut task, now_ms);
                    TaskEventKind::Unblocked
                }
                Err(reason) => {
                    task.state = TaskState::Canceled;
                    task.updated_ms = now_ms;
                    task.cancel_reason = reason;
                    TaskEventKind::Canceled
                }
            };
            self.task_event(ctx, &task, kind, None);
            self.put_task(task);
        }
    }

    /// The ready timer of a DELAYED or RETRY_WAIT task.
    pub(super) fn task_ready(&mut self, ctx: &mut Ctx, task_id: TaskId) {
        let now_ms = ctx.now_ms;
        let due = self.tasks.get(&task_id).is_some_and(|t| {
            matches!(t.state, TaskState::Delayed | TaskState::RetryWait) && t.ready_at_ms <= now_ms
        });
        if !due {
            return;
        }
        let mut task = self.take_task(task_id).expect("checked");
        task.state = TaskState::Pending;
        task.updated_ms = now_ms;
        self.task_event(ctx, &task, TaskEventKind::Requeued, None);
        self.put_task(task);
    }
}

fn check_task_spec(ctx: &Ctx, spec: &TaskSpec) -> Result<(), String> {
    if spec.queue.is_empty() {
        return Err("queue: must not be empty".into());
    }
    if spec.max_attempts == 0 {
        return Err("max_attempts: must be positive".into());
    }
    if spec.lease_ms == 0 {
        return Err("lease_ms: must be positive".into());
    }
    if let Some(gate) = &spec.requires {
        if ctx.decisions().decision(gate.decision_id).is_none() {
            return Err(format!(
                "requires.decision_id: decision {} does not exist",
                gate.decision_id
            ));
        }
    }
    Ok(())
}

/// PENDING now, or DELAYED until `not_before_ms`.
pub(super) fn make_ready(task: &mut Task, now_ms: u64) {
    task.updated_ms = now_ms;
    if task.spec.not_before_ms > now_ms {
        task.state = TaskState::Delayed;
        task.ready_at_ms = task.spec.not_before_ms;
    } else {
        task.state = TaskState::Pending;
        task.ready_at_ms = now_ms;
    }
}

/// Why a verb with `token` is refused, in words that start with "lease lost".
fn lease_lost_reason(task: &Task, token: FencingToken) -> String {
    let id = task.id;
    if let Some(lease) = &task.lease {
        return format!(
            "lease lost: task {id} is now assigned with token {}",
            lease.token
        );
    }
    match task.state {
        TaskState::Canceled => return format!("lease lost: task {id} was canceled"),
        TaskState::Expired => {
            return format!("lease lost: task {id} expired (its deadline passed)")
        }
        _ => {}
    }
    let attempt = task.history.iter().rev().find(|a| a.token == token);
    match attempt.map(|a| a.outcome) {
        Some(AttemptOutcome::LeaseExpired) => "lease lost: the lease expired".to_string(),
        Some(AttemptOutcome::SessionLost) => "lease lost: the agent's session ended".to_string(),
        Some(AttemptOutcome::Released) => {
            format!("lease lost: task {id} was released with token {token}")
        }
        Some(AttemptOutcome::Succeeded) => {
            format!("lease lost: task {id} already succeeded with token {token}")
        }
        Some(AttemptOutcome::Failed) => {
            format!("lease lost: the attempt with token {token} already failed")
        }
        _ => format!(
            "lease lost: task {id} is {:?} and not assigned with token {token}",
            task.state
        ),
    }
}
