//! Tasks: the tasks primitive. Their specs and states, the per-queue ready index, the (queue,
//! state) index listings read, the leases each session holds, deadlines and readiness timers,
//! retention, and the scheduler's planning (which ready task goes to which agent).
//!
//! What the tasks need of the agents (is the session live, does the agent accept work, its
//! capabilities) they read through `ctx.agents()`; what they do to the agents (a lease granted,
//! a lease ended with its outcome) goes out as `Effect::LeaseGranted` and `Effect::LeaseEnded`.
//! A session's end (`Effect::SessionEnded`) revokes its leases; a decision's close
//! (`Effect::DecisionClosed`) resolves the tasks gated on it.

mod backoff;
mod delegation;
#[cfg(test)]
mod invariants;
mod listing;
mod plan;
mod task;
mod transaction;
mod verbs;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    page, Agent, CoordCommand, CoordEventKind, CoordResponse, CoordStats, DecisionId, FencingToken,
    Retention, Revoked, SessionId, TaskEventKind, TaskId, Timer, TimerKind,
};
use crate::state_machine::kv::Fnv;
use crate::state_machine::primitive::{Ctx, Effect, Primitive, StepTaskOutcome};

pub use backoff::{jitter_fraction, Backoff};
pub use delegation::ESCALATED_FROM_LABEL;
pub use listing::{TaskFilter, TaskListing};
pub use plan::SCAN_PER_QUEUE;
pub use task::{
    Attempt, AttemptOutcome, DeadLetterReason, DeadLetterSelector, DecisionGate, Delegation,
    Escalation, Lease, Progress, ReadyKey, StepOrigin, Task, TaskSpec, TaskState,
};
pub use transaction::TaskOp;

/// The tasks primitive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tasks {
    /// The last id and fencing token issued (each sequence starts at 1).
    last_task_id: TaskId,
    last_token: FencingToken,

    tasks: BTreeMap<TaskId, Task>,
    /// Tasks per state, indexed by `TaskState::index`.
    state_counts: [u64; 9],
    /// Every task by (queue, state), for listings. Empty sets are removed.
    by_queue_state: BTreeMap<(String, TaskState), BTreeSet<TaskId>>,
    /// PENDING tasks per queue, in the order they should run. Empty queues are removed.
    ready: BTreeMap<String, BTreeSet<ReadyKey>>,
    /// Task deadlines, lease expiries, and the ready times of DELAYED and RETRY_WAIT tasks.
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
    /// ASSIGNED tasks per session holding their lease: what each agent runs, current within a
    /// command (the agents' `running` follows by effects, after it).
    leases: BTreeMap<SessionId, BTreeSet<TaskId>>,
    /// XOR of `task_digest` over every task, kept as tasks change.
    tasks_digest: u64,
    /// The retention of the last Tick: what `next_due_ms` plans garbage collection by.
    retention: Retention,
    /// The queue of the last assignment: the next plan starts after it (fairness across plans).
    last_assigned_queue: String,
    /// Delegated tasks not finished, per manager task (`delegation`).
    children: BTreeMap<TaskId, BTreeSet<TaskId>>,
}

impl Tasks {
    /// Applies one task command (the agents are read through `ctx.agents()`, the gating
    /// decisions through `ctx.decisions()`).
    pub fn apply(&mut self, ctx: &mut Ctx, command: &CoordCommand) -> CoordResponse {
        let now_ms = ctx.now_ms;
        match command {
            CoordCommand::Submit { tasks } => self.submit(ctx, tasks),
            CoordCommand::Assign { assignments } => self.assign(ctx, assignments),
            CoordCommand::Complete {
                task_id,
                token,
                result,
            } => self.complete(ctx, *task_id, *token, result),
            CoordCommand::Fail {
                task_id,
                token,
                error,
                retryable,
                retry_after_ms,
            } => self.fail(ctx, *task_id, *token, error, *retryable, *retry_after_ms),
            CoordCommand::ExtendLease {
                task_id,
                token,
                lease_ms,
            } => self.extend_lease(ctx, *task_id, *token, *lease_ms),
            CoordCommand::Progress {
                task_id,
                token,
                percent,
                message,
                checkpoint,
                extend_lease,
            } => self.progress(
                ctx,
                *task_id,
                *token,
                Progress {
                    percent: (*percent).min(100),
                    message: message.clone(),
                    checkpoint: checkpoint.clone(),
                    updated_ms: now_ms,
                },
                *extend_lease,
            ),
            CoordCommand::Release { task_id, token } => self.release(ctx, *task_id, *token),
            CoordCommand::Cancel { task_id, reason } => self.cancel(ctx, *task_id, reason),
            CoordCommand::Redrive { selector } => self.redrive(ctx, selector),
            CoordCommand::Purge { selector } => self.purge(ctx, selector),
            CoordCommand::Delegate {
                parent,
                token,
                tasks,
                escalate_to,
            } => self.delegate(ctx, *parent, *token, tasks, escalate_to),
            other => unreachable!("{} is not a tasks command", other.name()),
        }
    }

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// DEAD_LETTERED and EXPIRED tasks of `queue` ("" for every queue) in id order.
    pub fn dead_letters(&self, queue: &str, after_id: TaskId, limit: usize) -> (Vec<&Task>, bool) {
        let ids = if queue.is_empty() {
            Some(&self.dead_letters)
        } else {
            self.dead_by_queue.get(queue)
        };
        let Some(ids) = ids else {
            return (Vec::new(), false);
        };
        let tasks = ids
            .range(after_id.saturating_add(1)..)
            .filter_map(|id| self.tasks.get(id));
        page(tasks, limit)
    }

    /// Tasks whose lease is held by `session_id`, in id order.
    pub fn assignments(&self, session_id: SessionId) -> Vec<&Task> {
        self.leases
            .get(&session_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
            .collect()
    }

    /// The assignments the leader should propose now, at most `max`, among `agents` (see
    /// `plan::plan`).
    pub fn plan_assignments<'a>(
        &'a self,
        agents: impl Iterator<Item = &'a Agent>,
        now_ms: u64,
        max: usize,
    ) -> Vec<(TaskId, SessionId)> {
        plan::plan(
            &self.ready,
            &self.tasks,
            &self.leases,
            agents,
            &self.last_assigned_queue,
            now_ms,
            max,
        )
    }

    /// The last task id and fencing token issued (0 before any).
    pub fn last_ids(&self) -> (TaskId, FencingToken) {
        (self.last_task_id, self.last_token)
    }

    /// Tasks per (queue, state), from the index listings read: only pairs with a task, in queue
    /// order. As many items as such pairs, not tasks.
    pub fn counts_by_queue_state(&self) -> impl Iterator<Item = (&str, TaskState, usize)> + '_ {
        self.by_queue_state
            .iter()
            .map(|((queue, state), ids)| (queue.as_str(), *state, ids.len()))
    }

    /// The PENDING task of `queue` submitted first: the smallest id, since ids are issued in log
    /// order. None when the queue has no PENDING task.
    pub fn oldest_pending(&self, queue: &str) -> Option<&Task> {
        let ids = self
            .by_queue_state
            .get(&(queue.to_string(), TaskState::Pending))?;
        self.tasks.get(ids.first()?)
    }

    /// Counts by state (the agents' and decisions' counts are theirs to add).
    pub fn stats(&self) -> CoordStats {
        let count = |state: TaskState| self.state_counts[state.index()];
        CoordStats {
            tasks: self.tasks.len() as u64,
            pending: count(TaskState::Pending),
            assigned: count(TaskState::Assigned),
            dead_letters: count(TaskState::DeadLettered) + count(TaskState::Expired),
            agents_live: 0,
            decisions_open: 0,
        }
    }

    // ---- Tick: timers and garbage collection ----

    /// Fires one timer (`Primitive::fire_timer` once it is disarmed).
    fn fire(&mut self, ctx: &mut Ctx, timer: Timer) {
        let (_, kind, id) = timer;
        match kind {
            TimerKind::TaskDeadline => self.task_deadline_passed(ctx, id),
            TimerKind::LeaseExpiry => self.lease_expired(ctx, id),
            TimerKind::TaskReady => self.task_ready(ctx, id),
            other => unreachable!("{other:?} is not a task timer"),
        }
    }

    /// A new leader's first tick: the lease extensions that could not reach anyone during the
    /// election must not cost agents their work. Every lease is held by a live session.
    fn refresh_leases(&mut self, now_ms: u64) {
        let leased: Vec<TaskId> = self.leases.values().flatten().copied().collect();
        for task_id in leased {
            let mut task = self
                .take_task(task_id)
                .expect("the lease index lists tasks");
            let lease_ms = task.spec.lease_ms;
            let lease = task.lease.as_mut().expect("the lease index lists leases");
            lease.deadline_ms = lease.deadline_ms.max(now_ms.saturating_add(lease_ms));
            self.put_task(task);
        }
    }

    /// Forgets finished tasks beyond the retention's count or age, and idempotency keys past
    /// their window.
    fn collect_garbage(&mut self, now_ms: u64) {
        let retention = self.retention.clone();
        let aged = |at: u64, age_ms: u64| age_ms > 0 && at.saturating_add(age_ms) <= now_ms;
        while let Some(&(finished_ms, task_id)) = self.finished.first() {
            let over_count =
                retention.finished_max > 0 && self.finished.len() as u64 > retention.finished_max;
            if !over_count && !aged(finished_ms, retention.finished_age_ms) {
                break;
            }
            self.forget_task(task_id);
        }
        while let Some((at_ms, queue, key)) = self.idempotency_by_time.first().cloned() {
            if !aged(at_ms, retention.idempotency_ms) {
                break;
            }
            self.idempotency_by_time.pop_first();
            let entry = (queue, key);
            if self.idempotency.get(&entry).is_some_and(|e| e.1 == at_ms) {
                self.idempotency.remove(&entry);
            }
        }
    }

    // ---- Task bookkeeping: every change of a task goes through take_task / put_task ----

    /// Removes a task from the map and from every index, for changing it.
    fn take_task(&mut self, id: TaskId) -> Option<Task> {
        let task = self.tasks.remove(&id)?;
        self.index(&task, false);
        Some(task)
    }

    /// Puts a (changed) task back and indexes it by its new state.
    fn put_task(&mut self, task: Task) {
        self.index(&task, true);
        self.tasks.insert(task.id, task);
    }

    /// Forgets a task for good (retention, purge: finished and dead letters, never leased),
    /// with its idempotency key.
    fn forget_task(&mut self, id: TaskId) -> Option<Task> {
        let task = self.take_task(id)?;
        debug_assert!(task.lease.is_none(), "a forgotten task holds no lease");
        if !task.spec.idempotency_key.is_empty() {
            let entry = (task.spec.queue.clone(), task.spec.idempotency_key.clone());
            if let Some(&(owner, at_ms)) = self.idempotency.get(&entry) {
                if owner == id {
                    self.idempotency.remove(&entry);
                    self.idempotency_by_time.remove(&(at_ms, entry.0, entry.1));
                }
            }
        }
        Some(task)
    }

    /// Adds (`insert`) or removes a task's entries in every index derived from its fields.
    fn index(&mut self, task: &Task, insert: bool) {
        self.tasks_digest ^= task_digest(task);
        let count = &mut self.state_counts[task.state.index()];
        *count = if insert { *count + 1 } else { *count - 1 };
        let id = task.id;
        match self
            .by_queue_state
            .entry((task.spec.queue.clone(), task.state))
        {
            Entry::Occupied(mut listed) => {
                toggle(listed.get_mut(), id, insert);
                if listed.get().is_empty() {
                    listed.remove();
                }
            }
            Entry::Vacant(slot) => {
                if insert {
                    slot.insert(BTreeSet::from([id]));
                }
            }
        }
        self.index_by_state(task, insert);
        if let Some(lease) = &task.lease {
            toggle(
                &mut self.timers,
                (lease.deadline_ms, TimerKind::LeaseExpiry, id),
                insert,
            );
            let held = self.leases.entry(lease.session_id).or_default();
            toggle(held, id, insert);
            if held.is_empty() {
                self.leases.remove(&lease.session_id);
            }
        }
        if !task.state.is_terminal() && task.spec.deadline_ms != 0 {
            toggle(
                &mut self.timers,
                (task.spec.deadline_ms, TimerKind::TaskDeadline, id),
                insert,
            );
        }
        if let Some(delegation) = task
            .delegation
            .as_ref()
            .filter(|_| !task.state.is_terminal())
        {
            let open = self.children.entry(delegation.parent).or_default();
            toggle(open, id, insert);
            if open.is_empty() {
                self.children.remove(&delegation.parent);
            }
        }
    }

    /// The part of `index` that depends on the task's state.
    fn index_by_state(&mut self, task: &Task, insert: bool) {
        let id = task.id;
        match task.state {
            TaskState::Pending => {
                let queue = self.ready.entry(task.spec.queue.clone()).or_default();
                toggle(queue, task.ready_key(), insert);
                if queue.is_empty() {
                    self.ready.remove(&task.spec.queue);
                }
            }
            TaskState::Delayed | TaskState::RetryWait => {
                toggle(
                    &mut self.timers,
                    (task.ready_at_ms, TimerKind::TaskReady, id),
                    insert,
                );
            }
            TaskState::Blocked => {
                if let Some(gate) = &task.spec.requires {
                    let gated = self.gates.entry(gate.decision_id).or_default();
                    toggle(gated, id, insert);
                    if gated.is_empty() {
                        self.gates.remove(&gate.decision_id);
                    }
                }
            }
            TaskState::Assigned => {}
            TaskState::Succeeded | TaskState::Canceled => {
                toggle(&mut self.finished, (task.updated_ms, id), insert);
            }
            TaskState::DeadLettered | TaskState::Expired => {
                toggle(&mut self.dead_letters, id, insert);
                let queue = self
                    .dead_by_queue
                    .entry(task.spec.queue.clone())
                    .or_default();
                toggle(queue, id, insert);
                if queue.is_empty() {
                    self.dead_by_queue.remove(&task.spec.queue);
                }
            }
        }
    }

    // ---- Events ----

    /// Announces a change of `task` (not yet put back); when it ended, tells its workflow, and
    /// when it is a delegated task that dead-lettered, escalates it.
    fn task_event(
        &mut self,
        ctx: &mut Ctx,
        task: &mut Task,
        kind: TaskEventKind,
        revoked: Option<Revoked>,
    ) {
        ctx.event(CoordEventKind::Task {
            task_id: task.id,
            queue: task.spec.queue.clone(),
            kind,
            state: task.state,
            attempts: task.attempts,
            lease: task.lease.clone(),
            revoked,
        });
        if ends_task(kind, task.state) {
            report_step_task_finished(ctx, task);
            if delegation::escalates(task) {
                self.escalate(ctx, task);
            }
        }
    }

    /// Every field encoded on its own, named, in declaration order: the snapshot's sections,
    /// which the golden tests pin one by one. Destructured, so a new field cannot be left out.
    #[cfg(test)]
    pub(crate) fn encoded_sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        use crate::raft::encode;
        let Tasks {
            last_task_id,
            last_token,
            tasks,
            state_counts,
            by_queue_state,
            ready,
            timers,
            finished,
            dead_letters,
            dead_by_queue,
            idempotency,
            idempotency_by_time,
            gates,
            leases,
            tasks_digest,
            retention,
            last_assigned_queue,
            children,
        } = self;
        vec![
            ("last_task_id", encode(last_task_id)),
            ("last_token", encode(last_token)),
            ("tasks", encode(tasks)),
            ("state_counts", encode(state_counts)),
            ("by_queue_state", encode(by_queue_state)),
            ("ready", encode(ready)),
            ("timers", encode(timers)),
            ("finished", encode(finished)),
            ("dead_letters", encode(dead_letters)),
            ("dead_by_queue", encode(dead_by_queue)),
            ("idempotency", encode(idempotency)),
            ("idempotency_by_time", encode(idempotency_by_time)),
            ("gates", encode(gates)),
            ("leases", encode(leases)),
            ("tasks_digest", encode(tasks_digest)),
            ("retention", encode(retention)),
            ("last_assigned_queue", encode(last_assigned_queue)),
            ("children", encode(children)),
        ]
    }
}

impl Primitive for Tasks {
    /// Garbage collection by the `Tick`'s retention (the timers fire through `fire_timer`).
    fn tick(&mut self, ctx: &mut Ctx) {
        if let Some(retention) = ctx.retention() {
            self.retention = retention.clone();
        }
        self.collect_garbage(ctx.now_ms);
    }

    fn first_timer(&self) -> Option<Timer> {
        self.timers.first().copied()
    }

    fn fire_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        self.timers.remove(&timer);
        self.fire(ctx, timer);
        debug_assert!(
            !self.timers.contains(&timer),
            "a fired timer must not be rearmed at the same time: {timer:?}"
        );
    }

    fn refresh(&mut self, ctx: &mut Ctx) {
        self.refresh_leases(ctx.now_ms);
    }

    /// A session's end revokes its leases (before the agents announce it: the state machine
    /// routes to the tasks first); a closed decision resolves the tasks gated on it; a workflow
    /// submits and cancels its step tasks.
    fn on_effect(&mut self, ctx: &mut Ctx, effect: &Effect) {
        match effect {
            Effect::SessionEnded {
                session_id, end, ..
            } => self.revoke_session_leases(ctx, *session_id, *end),
            Effect::DecisionClosed {
                decision_id,
                status,
                outcome,
            } => self.decision_closed(ctx, *decision_id, *status, outcome.as_deref()),
            Effect::SubmitStepTasks {
                workflow_id,
                step,
                specs,
            } => self.submit_step_tasks(ctx, *workflow_id, *step, specs),
            Effect::CancelTasks { task_ids, reason } => self.cancel_tasks(ctx, task_ids, reason),
            Effect::LeaseGranted { .. }
            | Effect::LeaseEnded { .. }
            | Effect::StepTaskSubmitted { .. }
            | Effect::StepTaskFinished { .. }
            | Effect::ProposeStepDecision { .. }
            | Effect::StepDecisionProposed { .. }
            | Effect::WithdrawDecision { .. } => {}
        }
    }

    /// The first timer, or the first retention bound (by the last Tick's retention) that
    /// garbage collection would act on.
    fn next_due_ms(&self, now_ms: u64) -> Option<u64> {
        let retention = &self.retention;
        let age_due = |age_ms: u64, first: Option<u64>| {
            (age_ms > 0)
                .then_some(first)
                .flatten()
                .map(|at| at.saturating_add(age_ms))
        };
        let over_count =
            retention.finished_max > 0 && self.finished.len() as u64 > retention.finished_max;
        [
            self.timers.first().map(|timer| timer.0),
            over_count.then_some(now_ms),
            age_due(
                retention.finished_age_ms,
                self.finished.first().map(|f| f.0),
            ),
            age_due(
                retention.idempotency_ms,
                self.idempotency_by_time.first().map(|i| i.0),
            ),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tasks are digested as they change. The id and token counters are not: the state machine
    /// hashes them together with the agents' (`coordination::counters_digest`).
    fn digest(&self) -> u64 {
        self.tasks_digest
    }
}

/// Whether an event of `kind` announces that its task just reached `state`, a terminal one:
/// every way a task ends passes here exactly once (a FAIL that dead-letters is announced by its
/// `DeadLettered` event, not its `Failed`; a purge forgets a task that had ended already; a
/// task submitted against a closed decision it lost is `Submitted` already CANCELED).
fn ends_task(kind: TaskEventKind, state: TaskState) -> bool {
    match kind {
        TaskEventKind::Succeeded
        | TaskEventKind::DeadLettered
        | TaskEventKind::Canceled
        | TaskEventKind::Expired => true,
        TaskEventKind::Submitted => state.is_terminal(),
        TaskEventKind::Assigned
        | TaskEventKind::Progress
        | TaskEventKind::LeaseExtended
        | TaskEventKind::Failed
        | TaskEventKind::RetryScheduled
        | TaskEventKind::Requeued
        | TaskEventKind::Redriven
        | TaskEventKind::Unblocked
        | TaskEventKind::Purged
        | TaskEventKind::Escalated => false,
    }
}

/// A task of a workflow step ended: its workflow learns how, in the same apply
/// (`Effect::StepTaskFinished`). Tasks without an origin end silently.
fn report_step_task_finished(ctx: &mut Ctx, task: &Task) {
    let Some(origin) = task.origin else {
        return;
    };
    let outcome = match task.state {
        TaskState::Succeeded => StepTaskOutcome::Succeeded {
            result: task.result.clone(),
        },
        TaskState::DeadLettered => StepTaskOutcome::Failed {
            error: task.last_error.clone(),
            reason: task.dead_letter_reason,
        },
        TaskState::Canceled => StepTaskOutcome::Canceled {
            reason: task.cancel_reason.clone(),
        },
        TaskState::Expired => StepTaskOutcome::Expired,
        other => unreachable!("{other:?} is not terminal"),
    };
    ctx.raise(Effect::StepTaskFinished {
        workflow_id: origin.workflow_id,
        step: origin.step,
        branch: origin.branch,
        task_id: task.id,
        outcome,
    });
}

fn toggle<T: Ord>(set: &mut BTreeSet<T>, item: T, insert: bool) {
    if insert {
        set.insert(item);
    } else {
        set.remove(&item);
    }
}

fn task_digest(task: &Task) -> u64 {
    let mut hash = Fnv::default();
    let lease = task.lease.as_ref();
    for n in [
        task.id,
        task.state.index() as u64,
        u64::from(task.attempts),
        task.last_token,
        lease.map_or(0, |l| l.token),
        lease.map_or(0, |l| l.deadline_ms),
        task.ready_at_ms,
        task.updated_ms,
    ] {
        hash.write(&n.to_be_bytes());
    }
    hash.finish()
}
