//! The tasks' part of the cross-primitive transaction (`state_machine::transaction`): its ops,
//! a pure check answering the refusal the plain verb would, and an apply that cannot fail once
//! the check passed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::verbs::check_task_spec;
use super::{TaskSpec, TaskState, Tasks};
use crate::limits::TASKS_MAX;
use crate::state_machine::coordination::{CoordResponse, FencingToken, TaskId};
use crate::state_machine::primitive::Ctx;
use crate::state_machine::transaction::OpResult;

/// A task op of a transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskOp {
    /// Completes the task as `Complete` does: fenced by the current lease's token.
    Complete {
        task_id: TaskId,
        token: FencingToken,
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    /// Submits one task as `Submit` does (an idempotency key hit answers the existing task).
    Submit(Box<TaskSpec>),
}

impl Tasks {
    /// Checks the task ops of one transaction (`(op index, op)`, in order) against the state as
    /// it is, without changing it: the first refusal, with its op index, is the one the plain
    /// verb would answer (`LeaseLost`, `UnknownTask`, `Invalid`, `QuotaExceeded`). The submits
    /// count against TASKS_MAX together, as one `Submit` of them all would.
    pub fn check_txn(&self, ctx: &Ctx, ops: &[(u32, &TaskOp)]) -> Result<(), (u32, CoordResponse)> {
        let mut new_tasks = 0u64;
        let mut keys_in_txn = BTreeSet::new();
        for &(index, op) in ops {
            match op {
                TaskOp::Complete { task_id, token, .. } => self
                    .check_token(*task_id, *token)
                    .map_err(|refusal| (index, refusal))?,
                TaskOp::Submit(spec) => {
                    check_task_spec(ctx, spec)
                        .map_err(|reason| (index, CoordResponse::Invalid { reason }))?;
                    let key = (spec.queue.clone(), spec.idempotency_key.clone());
                    let hit = !spec.idempotency_key.is_empty()
                        && (self.idempotency.contains_key(&key) || !keys_in_txn.insert(key));
                    if !hit {
                        new_tasks += 1;
                    }
                    if self.tasks.len() as u64 + new_tasks > TASKS_MAX {
                        return Err((index, tasks_max_refusal()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies one task op that `check_txn` passed.
    pub fn apply_txn(&mut self, ctx: &mut Ctx, op: &TaskOp) -> OpResult {
        match op {
            TaskOp::Complete {
                task_id,
                token,
                result,
            } => match self.complete(ctx, *task_id, *token, result) {
                CoordResponse::Verb {
                    state: TaskState::Succeeded,
                    ..
                } => OpResult::TaskCompleted { task_id: *task_id },
                other => unreachable!("a checked completion answered {other:?}"),
            },
            TaskOp::Submit(spec) => {
                let (task_id, existing) = self.submit_task(ctx, spec, None, None);
                OpResult::TaskSubmitted { task_id, existing }
            }
        }
    }

    /// A transaction's compare on a task: its state and its current lease's token (0: none);
    /// None for a task that does not exist (any more).
    pub fn state_and_token(&self, task_id: TaskId) -> Option<(TaskState, FencingToken)> {
        let task = self.tasks.get(&task_id)?;
        Some((
            task.state,
            task.lease.as_ref().map_or(0, |lease| lease.token),
        ))
    }
}

/// `Submit`'s refusal at TASKS_MAX, word for word.
pub(super) fn tasks_max_refusal() -> CoordResponse {
    CoordResponse::QuotaExceeded {
        reason: format!(
            "the cluster holds its maximum of {TASKS_MAX} tasks (TASKS_MAX); \
             purge dead letters or wait for finished tasks to be forgotten"
        ),
    }
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT. ----

impl TaskOp {
    pub const fn code(&self) -> u16 {
        match self {
            TaskOp::Complete { .. } => 0,
            TaskOp::Submit(_) => 1,
        }
    }
}
