//! Manager-worker trees: the agent holding a task's lease delegates tasks to other agents
//! (`CoordCommand::Delegate`), under that lease.
//!
//! - A delegated task lives as long as the lease it was delegated under: when that lease ends
//!   (the manager completes, fails or releases its task, its lease expires, its session ends, or
//!   the task is canceled or expires) every delegated task not finished is canceled, and so on
//!   down the tree (`cancel_delegated`, from `end_lease`).
//! - Its deadline is at most its manager's, so deadlines propagate down the tree; so does the
//!   manager's trace (the `conclave.traceparent` label), unless the task brings its own.
//! - A delegated task that dead-letters or expires escalates (`escalate`): to a new task with the
//!   delegation's escalation capability, delegated under the same lease, or else to the manager,
//!   whose children listing shows it; either way an `Escalated` event announces it.
//! - A tree is at most TASK_TREE_DEPTH_MAX deep, and one manager has at most DELEGATED_OPEN_MAX
//!   delegated tasks not finished.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Delegation, Escalation, Task, TaskSpec, TaskState, Tasks};
use crate::limits::{DELEGATED_OPEN_MAX, TASKS_MAX, TASK_TREE_DEPTH_MAX};
use crate::state_machine::coordination::{CoordResponse, FencingToken, TaskEventKind, TaskId};
use crate::state_machine::primitive::{Ctx, Effect};
use conclave_proto::TRACEPARENT_LABEL;

/// Largest dead-letter payload an escalation task's payload repeats (else it is left out).
const ESCALATION_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// The label an escalation task carries: the id of the task whose dead letter it handles.
pub const ESCALATED_FROM_LABEL: &str = "conclave.escalated_from";

impl Tasks {
    /// `CoordCommand::Delegate`: checked like a `Submit` (all or nothing), and fenced by the
    /// manager's token like a verb.
    pub(super) fn delegate(
        &mut self,
        ctx: &mut Ctx,
        parent: TaskId,
        token: FencingToken,
        specs: &[TaskSpec],
        escalate_to: &str,
    ) -> CoordResponse {
        if let Err(response) = self.check_token(parent, token) {
            return response;
        }
        let manager = &self.tasks[&parent];
        let depth = manager.delegation.as_ref().map_or(0, |d| d.depth) + 1;
        let deadline_ms = manager.spec.deadline_ms;
        let traceparent = manager.spec.labels.get(TRACEPARENT_LABEL).cloned();
        if let Err(refusal) = self.admit_delegation(ctx, parent, depth, specs) {
            return refusal;
        }
        let results = specs
            .iter()
            .map(|spec| {
                let mut spec = spec.clone();
                spec.parent_id = parent;
                spec.deadline_ms = earliest_deadline(spec.deadline_ms, deadline_ms);
                if let Some(trace) = &traceparent {
                    spec.labels
                        .entry(TRACEPARENT_LABEL.to_string())
                        .or_insert_with(|| trace.clone());
                }
                let delegation = Delegation {
                    parent,
                    token,
                    depth,
                    escalate_to: escalate_to.to_string(),
                    escalation: None,
                };
                let id = self.submit_task(ctx, &spec, None, Some(delegation)).0;
                (id, false)
            })
            .collect();
        CoordResponse::Submitted { results }
    }

    /// The limits of a delegation: the tree's depth, the manager's open delegated tasks, the
    /// task quota, and each spec as `Submit` checks it (no idempotency key: the request id makes
    /// a retried delegation apply once).
    fn admit_delegation(
        &self,
        ctx: &Ctx,
        parent: TaskId,
        depth: u32,
        specs: &[TaskSpec],
    ) -> Result<(), CoordResponse> {
        let invalid = |reason: String| Err(CoordResponse::Invalid { reason });
        if depth > TASK_TREE_DEPTH_MAX {
            return invalid(format!(
                "parent_task_id: task {parent} is {} deep in a tree of delegated tasks, the most \
                 (TASK_TREE_DEPTH_MAX = {TASK_TREE_DEPTH_MAX})",
                depth - 1
            ));
        }
        for (i, spec) in specs.iter().enumerate() {
            if !spec.idempotency_key.is_empty() {
                return invalid(format!(
                    "tasks[{i}].idempotency_key: a delegated task has none (the request id makes \
                     a retried delegation apply once)"
                ));
            }
            if let Err(reason) = super::verbs::check_task_spec(ctx, spec) {
                return invalid(format!("tasks[{i}].{reason}"));
            }
        }
        let open = self.children.get(&parent).map_or(0, BTreeSet::len);
        if open + specs.len() > DELEGATED_OPEN_MAX {
            return Err(CoordResponse::QuotaExceeded {
                reason: format!(
                    "task {parent} has {open} delegated tasks not finished; {} more would pass \
                     the limit of {DELEGATED_OPEN_MAX} (DELEGATED_OPEN_MAX)",
                    specs.len()
                ),
            });
        }
        if self.tasks.len() as u64 + specs.len() as u64 > TASKS_MAX {
            return Err(CoordResponse::QuotaExceeded {
                reason: format!("the cluster holds its maximum of {TASKS_MAX} tasks (TASKS_MAX)"),
            });
        }
        Ok(())
    }

    /// The lease `token` of `manager` ended: every task delegated under it that is not finished
    /// is canceled (by `Effect::CancelTasks`, in this entry), and theirs in turn.
    pub(super) fn cancel_delegated(
        &self,
        ctx: &mut Ctx,
        manager: TaskId,
        token: FencingToken,
        why: &str,
    ) {
        let Some(open) = self.children.get(&manager) else {
            return;
        };
        let task_ids: Vec<TaskId> = open
            .iter()
            .copied()
            .filter(|id| {
                self.tasks
                    .get(id)
                    .and_then(|t| t.delegation.as_ref())
                    .is_some_and(|d| d.token == token)
            })
            .collect();
        if task_ids.is_empty() {
            return;
        }
        ctx.raise(Effect::CancelTasks {
            task_ids,
            reason: format!("its manager, task {manager}, {why}"),
        });
    }

    /// A delegated dead letter redriven after the lease it was delegated under ended runs on
    /// its own (its `parent_id` stays): no manager is left to cancel it or to escalate to.
    pub(super) fn detach_orphan(&self, task: &mut Task) {
        if task
            .delegation
            .as_ref()
            .is_some_and(|d| !self.lease_holds(d))
        {
            task.delegation = None;
        }
    }

    /// Whether the lease `delegation` was made under is still the manager's.
    fn lease_holds(&self, delegation: &Delegation) -> bool {
        self.tasks
            .get(&delegation.parent)
            .and_then(|m| m.lease.as_ref())
            .is_some_and(|lease| lease.token == delegation.token)
    }

    /// A delegated task dead-lettered or expired (`task`, not yet put back): it escalates to a
    /// new task with the escalation capability, or to its manager; or nowhere when the lease it
    /// was delegated under ended earlier in the same entry (the manager and it lost to one
    /// session's end: the manager's next attempt starts afresh).
    pub(super) fn escalate(&mut self, ctx: &mut Ctx, task: &mut Task) {
        let Some(delegation) = task.delegation.as_ref() else {
            return;
        };
        let manager = self.tasks.get(&delegation.parent);
        let escalation = if !self.lease_holds(delegation) {
            Escalation::Orphaned
        } else if delegation.escalate_to.is_empty() || self.tasks.len() as u64 >= TASKS_MAX {
            Escalation::Manager
        } else {
            let deadline_ms = manager.map_or(0, |m| m.spec.deadline_ms);
            let spec = escalation_spec(task, &delegation.escalate_to, deadline_ms);
            let handler = Delegation {
                escalate_to: String::new(),
                escalation: None,
                ..delegation.clone()
            };
            Escalation::Task(self.submit_task(ctx, &spec, None, Some(handler)).0)
        };
        if let Some(delegation) = task.delegation.as_mut() {
            delegation.escalation = Some(escalation);
        }
        self.task_event(ctx, task, TaskEventKind::Escalated, None);
    }
}

/// Whether a task that reached `state` escalates: a delegated task in the dead letters.
pub(super) fn escalates(task: &Task) -> bool {
    task.delegation.is_some() && task.state.is_dead_letter()
}

/// The earlier of two deadlines, where 0 is none.
fn earliest_deadline(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, other) | (other, 0) => other,
        (a, b) => a.min(b),
    }
}

/// What an escalation task receives (JSON): the dead letter, what it was asked, and why it
/// failed.
#[derive(Serialize)]
struct EscalationPayload<'a> {
    escalated_task_id: TaskId,
    manager_task_id: TaskId,
    queue: &'a str,
    state: &'static str,
    error: &'a str,
    attempts: u32,
    /// The dead letter's payload, when it is UTF-8 and at most ESCALATION_PAYLOAD_BYTES_MAX
    /// (else `task get` it).
    payload: Option<&'a str>,
}

/// The escalation task for dead letter `task`: on the same queue, for agents with `capability`,
/// with the same priority, attempts, backoff and lease, by the manager's deadline.
fn escalation_spec(task: &Task, capability: &str, deadline_ms: u64) -> TaskSpec {
    let payload = EscalationPayload {
        escalated_task_id: task.id,
        manager_task_id: task.spec.parent_id,
        queue: &task.spec.queue,
        state: if task.state == TaskState::Expired {
            "EXPIRED"
        } else {
            "DEAD_LETTERED"
        },
        error: &task.last_error,
        attempts: task.attempts,
        payload: std::str::from_utf8(&task.spec.payload)
            .ok()
            .filter(|text| text.len() <= ESCALATION_PAYLOAD_BYTES_MAX),
    };
    let mut labels = task.spec.labels.clone();
    labels.insert(ESCALATED_FROM_LABEL.to_string(), task.id.to_string());
    TaskSpec {
        queue: task.spec.queue.clone(),
        payload: serde_json::to_vec(&payload).expect("a struct of strings and numbers"),
        content_type: "application/json".to_string(),
        capabilities: BTreeSet::from([capability.to_string()]),
        priority: task.spec.priority,
        max_attempts: task.spec.max_attempts,
        backoff: task.spec.backoff.clone(),
        lease_ms: task.spec.lease_ms,
        deadline_ms,
        not_before_ms: 0,
        idempotency_key: String::new(),
        correlation_id: task.spec.correlation_id.clone(),
        parent_id: task.spec.parent_id,
        labels,
        requires: None,
    }
}
