//! What the task commands, timers and effects do to tasks: submit, assign, the fenced verbs,
//! cancel, redrive and purge; deadlines, lease expiry, readiness; revocation when a session ends
//! and gates when a decision closes.

use std::collections::BTreeSet;

use super::transaction::tasks_max_refusal;
use super::{
    Attempt, AttemptOutcome, DeadLetterReason, DeadLetterSelector, Delegation, Lease, Progress,
    StepOrigin, Task, TaskSpec, TaskState, Tasks,
};
use crate::limits::{ATTEMPT_HISTORY_MAX, TASKS_MAX};
use crate::state_machine::coordination::decisions::{gate_outcome, DecisionStatus};
use crate::state_machine::coordination::{
    CoordResponse, DecisionId, FencingToken, Revoked, SessionEnd, SessionId, TaskEventKind, TaskId,
};
use crate::state_machine::primitive::{Ctx, Effect, StepTaskOutcome};
use crate::state_machine::workflows::WorkflowId;

impl Tasks {
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
            return tasks_max_refusal();
        }
        let results = specs
            .iter()
            .map(|spec| self.submit_one(ctx, spec))
            .collect();
        CoordResponse::Submitted { results }
    }

    /// A workflow's step tasks (`Effect::SubmitStepTasks`): each spec is checked and counted
    /// against TASKS_MAX as a `Submit` of it alone would be (not all or nothing: the workflow
    /// checked its own limits), submitted with its origin, and answered with
    /// `StepTaskSubmitted`; a refused one is answered with `StepTaskFinished`, task id 0,
    /// `Failed` with the refusal as its error.
    pub(super) fn submit_step_tasks(
        &mut self,
        ctx: &mut Ctx,
        workflow_id: WorkflowId,
        step: u32,
        specs: &[(u32, TaskSpec)],
    ) {
        for (branch, spec) in specs {
            let origin = StepOrigin {
                workflow_id,
                step,
                branch: *branch,
            };
            let refusal = if spec.requires.is_some() || !spec.idempotency_key.is_empty() {
                // A workflow never asks for either: a gate or a key hit would give the branch a
                // task that is not its own.
                Some("a step task has no decision gate and no idempotency key".to_string())
            } else if let Err(reason) = check_task_spec(ctx, spec) {
                Some(reason)
            } else if self.tasks.len() as u64 >= TASKS_MAX {
                Some(format!(
                    "the cluster holds its maximum of {TASKS_MAX} tasks (TASKS_MAX)"
                ))
            } else {
                None
            };
            if let Some(error) = refusal {
                ctx.raise(Effect::StepTaskFinished {
                    workflow_id,
                    step,
                    branch: *branch,
                    task_id: 0,
                    outcome: StepTaskOutcome::Failed {
                        error,
                        reason: None,
                    },
                });
                continue;
            }
            let (task_id, existing) = self.submit_task(ctx, spec, Some(origin), None);
            debug_assert!(!existing, "a step task has no idempotency key");
            ctx.raise(Effect::StepTaskSubmitted {
                workflow_id,
                step,
                branch: *branch,
                task_id,
            });
        }
    }

    /// A workflow cancels its tasks (`Effect::CancelTasks`): each one not terminal is canceled
    /// as a `Cancel` would (its agent told on its stream); terminal and unknown ones are left.
    pub(super) fn cancel_tasks(&mut self, ctx: &mut Ctx, task_ids: &[TaskId], reason: &str) {
        for &task_id in task_ids {
            self.cancel(ctx, task_id, reason);
        }
    }

    fn submit_one(&mut self, ctx: &mut Ctx, spec: &TaskSpec) -> (TaskId, bool) {
        self.submit_task(ctx, spec, None, None)
    }

    /// Submits one checked spec (an idempotency key hit answers the existing task), from a
    /// workflow step (`origin`) or a manager (`delegation`) when given.
    pub(super) fn submit_task(
        &mut self,
        ctx: &mut Ctx,
        spec: &TaskSpec,
        origin: Option<StepOrigin>,
        delegation: Option<Delegation>,
    ) -> (TaskId, bool) {
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
            origin,
            delegation,
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
        self.task_event(ctx, &mut task, TaskEventKind::Submitted, None);
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
        let agent = ctx.agents().agent_by_session(session_id)?;
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
        self.task_event(ctx, &mut task, TaskEventKind::Assigned, None);
        self.put_task(task);
        Some(token)
    }

    /// The fencing check of every verb: the task must be ASSIGNED under exactly this token.
    pub(super) fn check_token(
        &self,
        task_id: TaskId,
        token: FencingToken,
    ) -> Result<(), CoordResponse> {
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
        self.task_event(ctx, &mut task, TaskEventKind::Succeeded, None);
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
        self.task_event(ctx, &mut task, TaskEventKind::Failed, None);
        self.task_event(ctx, &mut task, kind, None);
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
        self.task_event(ctx, &mut task, TaskEventKind::LeaseExtended, None);
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
        self.task_event(ctx, &mut task, TaskEventKind::Progress, None);
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
        self.task_event(ctx, &mut task, TaskEventKind::Requeued, None);
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
        self.task_event(ctx, &mut task, TaskEventKind::Canceled, revoked);
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
            self.detach_orphan(&mut task);
            make_ready(&mut task, now_ms);
            self.task_event(ctx, &mut task, TaskEventKind::Redriven, None);
            self.put_task(task);
        }
        CoordResponse::DeadLetters {
            count: ids.len() as u64,
        }
    }

    pub(super) fn purge(&mut self, ctx: &mut Ctx, selector: &DeadLetterSelector) -> CoordResponse {
        let ids = self.select_dead_letters(selector);
        for &id in &ids {
            let mut task = self.forget_task(id).expect("selected from the index");
            self.task_event(ctx, &mut task, TaskEventKind::Purged, None);
        }
        CoordResponse::DeadLetters {
            count: ids.len() as u64,
        }
    }

    /// Ends the task's current lease, if any: the attempt gets its outcome, and
    /// `Effect::LeaseEnded` tells the agent. Returns the lease that ended.
    fn end_lease(
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
        self.cancel_delegated(ctx, task.id, lease.token, outcome.lease_end());
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
            self.task_event(ctx, &mut task, kind, Some(revoked));
            self.put_task(task);
        }
    }

    /// After an attempt that counts was lost (lease expired, session lost): back to PENDING at
    /// once, or DEAD_LETTERED when that was the last attempt.
    fn requeue_or_dead_letter(&mut self, now_ms: u64, task: &mut Task) -> TaskEventKind {
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
        self.task_event(ctx, &mut task, TaskEventKind::Expired, revoked);
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
        self.task_event(ctx, &mut task, kind, Some(revoked));
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
            self.task_event(ctx, &mut task, kind, None);
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
        self.task_event(ctx, &mut task, TaskEventKind::Requeued, None);
        self.put_task(task);
    }
}

pub(super) fn check_task_spec(ctx: &Ctx, spec: &TaskSpec) -> Result<(), String> {
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
fn make_ready(task: &mut Task, now_ms: u64) {
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
