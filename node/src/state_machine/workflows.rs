//! Workflows (workflows.proto): declared graphs of steps that run as ordinary tasks and
//! decisions, every transition in the apply of a committed entry.
//!
//! The primitive never touches a task or a decision: it asks Tasks to submit or cancel tasks and
//! Decisions to open a decision through effects (`SubmitStepTasks`, `CancelTasks`,
//! `ProposeStepDecision`), and learns what became of them the same way (`StepTaskSubmitted`,
//! `StepTaskFinished`, `StepDecisionProposed`, `DecisionClosed`). Effects are routed within the
//! apply of the entry that raised them, so the entry that completes a step's last needed task
//! (its fencing token checked by Tasks) also records the result, fires the join (once: the step
//! leaves RUNNING) and submits the steps it unblocks.
//!
//! `run.rs` is the engine (what happens to one instance); this file holds the state, the
//! commands, the timers and the garbage collection.

pub mod definition;
pub mod payload;
mod run;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::coordination::{CoordEventKind, DecisionId, Retention, TaskId};
use super::kv::Fnv;
use super::primitive::{Ctx, Effect, Primitive};
use super::transaction::OpResult;
use crate::limits::{WORKFLOWS_OPEN_MAX, WORKFLOW_BYTES_MAX};
pub use definition::Definition;
use run::Run;

/// Assigned at start, increasing, never reused.
pub type WorkflowId = u64;

/// Where a workflow instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkflowState {
    /// Steps are running.
    Running,
    /// Only decision steps are open: the workflow waits for input (A2A's input-required).
    Waiting,
    /// A step failed, or the workflow was canceled or timed out: compensations are running.
    Compensating,
    Succeeded,
    Failed,
    Canceled,
    TimedOut,
}

impl WorkflowState {
    /// SUCCEEDED, FAILED, CANCELED or TIMED_OUT: kept for the retention, then forgotten.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowState::Succeeded
                | WorkflowState::Failed
                | WorkflowState::Canceled
                | WorkflowState::TimedOut
        )
    }

    /// Running or waiting: steps may still start.
    pub fn is_active(self) -> bool {
        matches!(self, WorkflowState::Running | WorkflowState::Waiting)
    }
}

/// Where one step of an instance is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    /// Not started: waits for the steps it follows.
    #[default]
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// Its `when` did not hold, or every step it follows was skipped.
    Skipped,
    /// Stopped by a cancel, by a failure elsewhere, or (a join) by its partial deadline.
    Canceled,
    TimedOut,
}

/// Where one task of a step (or one compensation) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BranchState {
    /// A compensation not submitted yet.
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
    TimedOut,
}

/// One task of a step (a plain task step has one, a fan-out one per branch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// 0 until Tasks answers the submission.
    pub task_id: TaskId,
    pub state: BranchState,
    /// An `over` fan-out's item (JSON); empty otherwise.
    pub item: String,
    /// The task's result as JSON (fan-out branches; a plain step's result is the step's).
    pub result: String,
    pub error: String,
}

/// One step of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    pub state: StepState,
    pub branches: Vec<Branch>,
    /// A decision step's decision (0 until opened).
    pub decision_id: DecisionId,
    /// A decision step's winning option.
    pub outcome: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Its place in the order steps succeeded (1 for the first; 0: not succeeded): the
    /// compensations run in reverse of it.
    pub completion: u32,
    /// The result its dependents see (JSON; empty until it succeeds).
    pub result: String,
    pub error: String,
    /// How many times it started (retries start it again).
    pub runs: u32,
    /// Its compensation ran.
    pub compensated: bool,
}

/// The undo of a succeeded step, run when the workflow fails, is canceled or times out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationRun {
    /// The step undone.
    pub step: u32,
    /// The compensation step that undoes it.
    pub compensation: u32,
    pub task_id: TaskId,
    pub state: BranchState,
    pub error: String,
}

/// A workflow instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: WorkflowId,
    pub definition: Definition,
    /// JSON.
    pub input: String,
    pub state: WorkflowState,
    /// In the definition's order.
    pub steps: Vec<StepRun>,
    /// In the order they run (reverse order of completion of the steps undone).
    pub compensations: Vec<CompensationRun>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// 0 until terminal.
    pub finished_ms: u64,
    /// Absolute cluster time; 0: none.
    pub deadline_ms: u64,
    /// The deadline relative to a (re)start; 0: none.
    pub timeout_ms: u64,
    pub idempotency_key: String,
    /// Why it failed, was canceled or timed out.
    pub error: String,
    /// The input and every result recorded (WORKFLOW_BYTES_MAX).
    pub bytes: u64,
    /// Steps succeeded so far (the last `StepRun::completion` given).
    pub completions: u32,
    pub retries: u32,
    /// The state compensation ends in (FAILED, CANCELED or TIMED_OUT).
    pub ending: WorkflowState,
}

/// The workflow commands the log carries (inside `Command::Workflows`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowCommand {
    /// Idempotent by `idempotency_key` (when not empty) while the workflow is kept.
    Start {
        definition: Definition,
        /// JSON; empty means null.
        input: String,
        idempotency_key: String,
        /// Absolute cluster time; 0: the definition's (relative) deadline, if any.
        deadline_ms: u64,
    },
    Cancel {
        workflow_id: WorkflowId,
        reason: String,
    },
    /// A FAILED or TIMED_OUT workflow runs again from its failed, canceled, timed-out and
    /// compensated steps.
    Retry { workflow_id: WorkflowId },
}

impl WorkflowCommand {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            WorkflowCommand::Start { .. } => "workflow_start",
            WorkflowCommand::Cancel { .. } => "workflow_cancel",
            WorkflowCommand::Retry { .. } => "workflow_retry",
        }
    }
}

/// A workflow op of a transaction (`state_machine::transaction`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkflowOp {
    /// Starts a workflow as `WorkflowCommand::Start` does, with the same fields.
    Start {
        definition: Definition,
        input: String,
        idempotency_key: String,
        deadline_ms: u64,
    },
}

/// What a workflow command answers; a refusal is a value, never an error of apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowResponse {
    Started {
        workflow_id: WorkflowId,
        /// An idempotency key hit: nothing new was started.
        existing: bool,
    },
    /// `canceled`: false when the workflow was already finished or compensating.
    Canceled {
        canceled: bool,
        state: WorkflowState,
    },
    Retried {
        state: WorkflowState,
    },
    UnknownWorkflow {
        workflow_id: WorkflowId,
    },
    /// Retry of a workflow that is not FAILED or TIMED_OUT.
    NotRetryable {
        state: WorkflowState,
    },
    Invalid {
        reason: String,
    },
    QuotaExceeded {
        reason: String,
    },
}

/// What changed, in a `WorkflowEvent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowEventKind {
    Started,
    StepStarted,
    StepSucceeded,
    StepFailed,
    StepSkipped,
    StepCanceled,
    StepTimedOut,
    /// A fan-out's join fired (its step then succeeds or fails).
    Joined,
    Waiting,
    Compensating,
    Finished,
    Retried,
}

/// One change to one workflow, in the coordination event ring (`WatchWorkflow` follows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    pub workflow_id: WorkflowId,
    pub kind: WorkflowEventKind,
    /// The step the change is about ("" for the workflow itself).
    pub step: String,
    /// The workflow's state after the change.
    pub state: WorkflowState,
    pub reason: String,
}

/// What a timer does when it fires; the order breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkflowTimer {
    /// The workflow deadline (step 0).
    Deadline,
    /// A fan-out's partial-results deadline.
    JoinDeadline,
}

/// (due at, what, workflow, step).
pub type TimerEntry = (u64, WorkflowTimer, WorkflowId, u32);

/// The indexes the engine keeps beside the instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Open decisions of decision steps.
    pub by_decision: BTreeMap<DecisionId, (WorkflowId, u32)>,
    pub timers: BTreeSet<TimerEntry>,
    /// Terminal workflows by (finished at, id), for retention.
    pub finished: BTreeSet<(u64, WorkflowId)>,
}

/// The workflows primitive: every instance kept, its indexes, and the retention of the last
/// Tick. Its serde encoding is its snapshot section (`workflows`, the last of `StateMachine`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Workflows {
    last_id: WorkflowId,
    workflows: BTreeMap<WorkflowId, Workflow>,
    /// Idempotency key -> workflow, while the workflow is kept.
    by_key: BTreeMap<String, WorkflowId>,
    index: Index,
    /// The retention of the last Tick: what `next_due_ms` plans garbage collection by.
    retention: Retention,
}

impl Workflows {
    /// Applies one workflow command; what it asks of tasks and decisions goes out as effects.
    pub fn apply(&mut self, ctx: &mut Ctx, command: &WorkflowCommand) -> WorkflowResponse {
        match command {
            WorkflowCommand::Start {
                definition,
                input,
                idempotency_key,
                deadline_ms,
            } => self.start(ctx, definition, input, idempotency_key, *deadline_ms),
            WorkflowCommand::Cancel {
                workflow_id,
                reason,
            } => self.cancel(ctx, *workflow_id, reason),
            WorkflowCommand::Retry { workflow_id } => self.retry(ctx, *workflow_id),
        }
    }

    /// One instance (None: unknown, or forgotten after its retention).
    pub fn get(&self, id: WorkflowId) -> Option<&Workflow> {
        self.workflows.get(&id)
    }

    /// Workflows with ids after `after_id`, in id order, at most `limit`, and whether more follow.
    pub fn list(&self, after_id: WorkflowId, limit: usize) -> (Vec<&Workflow>, bool) {
        let mut matching = self
            .workflows
            .range(after_id.saturating_add(1)..)
            .map(|(_, w)| w);
        let page: Vec<&Workflow> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// Every instance kept, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values()
    }

    /// Workflows not yet terminal.
    pub fn open_count(&self) -> usize {
        self.workflows.len() - self.index.finished.len()
    }

    fn start(
        &mut self,
        ctx: &mut Ctx,
        definition: &Definition,
        input: &str,
        idempotency_key: &str,
        deadline_ms: u64,
    ) -> WorkflowResponse {
        if let Some(&workflow_id) = self.by_key.get(idempotency_key) {
            return WorkflowResponse::Started {
                workflow_id,
                existing: true,
            };
        }
        if let Err(reason) = self.admit() {
            return WorkflowResponse::QuotaExceeded { reason };
        }
        let input = if input.is_empty() { "null" } else { input };
        if let Err(reason) = check_start(ctx.now_ms, definition, input, deadline_ms) {
            return WorkflowResponse::Invalid { reason };
        }
        self.last_id += 1;
        let id = self.last_id;
        let timeout_ms = match deadline_ms {
            0 => definition.deadline_ms,
            absolute => absolute - ctx.now_ms,
        };
        let workflow = Workflow {
            id,
            definition: definition.clone(),
            input: input.to_string(),
            state: WorkflowState::Running,
            steps: vec![StepRun::default(); definition.steps.len()],
            compensations: Vec::new(),
            created_ms: ctx.now_ms,
            updated_ms: ctx.now_ms,
            finished_ms: 0,
            deadline_ms: 0,
            timeout_ms,
            idempotency_key: idempotency_key.to_string(),
            error: String::new(),
            bytes: input.len() as u64,
            completions: 0,
            retries: 0,
            ending: WorkflowState::Failed,
        };
        self.workflows.insert(id, workflow);
        if !idempotency_key.is_empty() {
            self.by_key.insert(idempotency_key.to_string(), id);
        }
        self.run(ctx, id, |run| run.begin(WorkflowEventKind::Started));
        WorkflowResponse::Started {
            workflow_id: id,
            existing: false,
        }
    }

    /// Checks the workflow ops of one transaction (`(op index, op)`) without changing anything:
    /// the first refusal is the one `Start` would answer (`QuotaExceeded`, `Invalid`); the starts
    /// count against WORKFLOWS_OPEN_MAX together. An idempotency key hit passes (it starts
    /// nothing).
    pub fn check_txn(
        &self,
        ctx: &Ctx,
        ops: &[(u32, &WorkflowOp)],
    ) -> Result<(), (u32, WorkflowResponse)> {
        let mut starting = 0;
        for &(index, op) in ops {
            let WorkflowOp::Start {
                definition,
                input,
                idempotency_key,
                deadline_ms,
            } = op;
            if self.by_key.contains_key(idempotency_key) {
                continue;
            }
            if self.open_count() + starting >= WORKFLOWS_OPEN_MAX {
                let reason = open_max_reason();
                return Err((index, WorkflowResponse::QuotaExceeded { reason }));
            }
            let input = if input.is_empty() { "null" } else { input };
            if let Err(reason) = check_start(ctx.now_ms, definition, input, *deadline_ms) {
                return Err((index, WorkflowResponse::Invalid { reason }));
            }
            starting += 1;
        }
        Ok(())
    }

    /// Applies one workflow op that `check_txn` passed.
    pub fn apply_txn(&mut self, ctx: &mut Ctx, op: &WorkflowOp) -> OpResult {
        let WorkflowOp::Start {
            definition,
            input,
            idempotency_key,
            deadline_ms,
        } = op;
        match self.start(ctx, definition, input, idempotency_key, *deadline_ms) {
            WorkflowResponse::Started {
                workflow_id,
                existing,
            } => OpResult::WorkflowStarted {
                workflow_id,
                existing,
            },
            other => unreachable!("a checked start answered {other:?}"),
        }
    }

    /// Refuses a workflow past WORKFLOWS_OPEN_MAX.
    fn admit(&self) -> Result<(), String> {
        if self.open_count() >= WORKFLOWS_OPEN_MAX {
            return Err(open_max_reason());
        }
        Ok(())
    }

    fn cancel(&mut self, ctx: &mut Ctx, id: WorkflowId, reason: &str) -> WorkflowResponse {
        let Some(state) = self.workflows.get(&id).map(|w| w.state) else {
            return WorkflowResponse::UnknownWorkflow { workflow_id: id };
        };
        if !state.is_active() {
            return WorkflowResponse::Canceled {
                canceled: false,
                state,
            };
        }
        let reason = if reason.is_empty() {
            "canceled"
        } else {
            reason
        };
        self.run(ctx, id, |run| run.stop(reason, WorkflowState::Canceled));
        WorkflowResponse::Canceled {
            canceled: true,
            state: self.workflows[&id].state,
        }
    }

    fn retry(&mut self, ctx: &mut Ctx, id: WorkflowId) -> WorkflowResponse {
        let Some(workflow) = self.workflows.get(&id) else {
            return WorkflowResponse::UnknownWorkflow { workflow_id: id };
        };
        if !matches!(
            workflow.state,
            WorkflowState::Failed | WorkflowState::TimedOut
        ) {
            return WorkflowResponse::NotRetryable {
                state: workflow.state,
            };
        }
        if let Err(reason) = self.admit() {
            return WorkflowResponse::QuotaExceeded { reason };
        }
        let finished = (workflow.finished_ms, id);
        self.index.finished.remove(&finished);
        self.run(ctx, id, |run| run.retry());
        WorkflowResponse::Retried {
            state: self.workflows[&id].state,
        }
    }

    /// Runs `action` on the engine of workflow `id` (nothing when it is gone).
    fn run(&mut self, ctx: &mut Ctx, id: WorkflowId, action: impl FnOnce(&mut Run)) {
        if let Some(workflow) = self.workflows.get_mut(&id) {
            action(&mut Run::new(workflow, &mut self.index, ctx));
        }
    }

    fn fire(&mut self, ctx: &mut Ctx, (_, timer, id, step): TimerEntry) {
        match timer {
            WorkflowTimer::Deadline => self.run(ctx, id, |run| run.deadline_passed()),
            WorkflowTimer::JoinDeadline => self.run(ctx, id, |run| run.join_deadline(step)),
        }
    }

    /// Forgets terminal workflows beyond the retention: older than `finished_age_ms`, or the
    /// oldest beyond `finished_max` (0 turns a bound off).
    fn collect_garbage(&mut self, now_ms: u64) {
        let retention = &self.retention;
        while let Some(&(finished_ms, id)) = self.index.finished.first() {
            let too_old = retention.finished_age_ms != 0
                && finished_ms.saturating_add(retention.finished_age_ms) <= now_ms;
            let too_many = retention.finished_max != 0
                && self.index.finished.len() as u64 > retention.finished_max;
            if !too_old && !too_many {
                break;
            }
            self.index.finished.pop_first();
            if let Some(workflow) = self.workflows.remove(&id) {
                if self.by_key.get(&workflow.idempotency_key) == Some(&id) {
                    self.by_key.remove(&workflow.idempotency_key);
                }
            }
        }
    }
}

/// The rules a start is checked by in apply: the structure of the definition, the input (JSON,
/// within WORKFLOW_BYTES_MAX), and an explicit deadline still ahead.
fn open_max_reason() -> String {
    format!(
        "the cluster runs its maximum of {WORKFLOWS_OPEN_MAX} open workflows (WORKFLOWS_OPEN_MAX)"
    )
}

fn check_start(
    now_ms: u64,
    definition: &Definition,
    input: &str,
    deadline_ms: u64,
) -> Result<(), String> {
    definition.check_structure()?;
    if input.len() > WORKFLOW_BYTES_MAX {
        return Err(format!(
            "input: {} bytes exceeds the limit of {WORKFLOW_BYTES_MAX} (WORKFLOW_BYTES_MAX)",
            input.len()
        ));
    }
    if !payload::is_json(input) {
        return Err("input: not JSON".into());
    }
    if deadline_ms != 0 && deadline_ms <= now_ms {
        return Err(format!(
            "deadline_ms: {deadline_ms} is not in the future (cluster time {now_ms})"
        ));
    }
    Ok(())
}

impl Primitive for Workflows {
    fn tick(&mut self, ctx: &mut Ctx) {
        if let Some(retention) = ctx.retention() {
            self.retention = retention.clone();
        }
        while let Some(&first) = self.index.timers.first() {
            if first.0 > ctx.now_ms {
                break;
            }
            self.index.timers.pop_first();
            self.fire(ctx, first);
        }
        self.collect_garbage(ctx.now_ms);
    }

    fn on_effect(&mut self, ctx: &mut Ctx, effect: &Effect) {
        match effect {
            Effect::StepTaskSubmitted {
                workflow_id,
                step,
                branch,
                task_id,
            } => self.run(ctx, *workflow_id, |run| {
                run.task_submitted(*step, *branch, *task_id)
            }),
            Effect::StepTaskFinished {
                workflow_id,
                step,
                branch,
                task_id,
                outcome,
            } => self.run(ctx, *workflow_id, |run| {
                run.task_finished(*step, *branch, *task_id, outcome)
            }),
            Effect::StepDecisionProposed {
                workflow_id,
                step,
                decision,
            } => self.run(ctx, *workflow_id, |run| {
                run.decision_proposed(*step, decision.clone())
            }),
            Effect::DecisionClosed {
                decision_id,
                status,
                outcome,
            } => {
                if let Some((id, step)) = self.index.by_decision.remove(decision_id) {
                    self.run(ctx, id, |run| {
                        run.decision_closed(step, *decision_id, *status, outcome.as_deref())
                    });
                }
            }
            _ => {}
        }
    }

    fn next_due_ms(&self, now_ms: u64) -> Option<u64> {
        let timer = self.index.timers.first().map(|t| t.0);
        let retention = &self.retention;
        let forget = self.index.finished.first().and_then(|&(finished_ms, _)| {
            if retention.finished_max != 0
                && self.index.finished.len() as u64 > retention.finished_max
            {
                Some(now_ms)
            } else if retention.finished_age_ms != 0 {
                Some(finished_ms.saturating_add(retention.finished_age_ms))
            } else {
                None
            }
        });
        timer.into_iter().chain(forget).min()
    }

    /// 0 until the first workflow starts, so a state without workflows digests as it did before
    /// they were registered (the behaviour trace pins those digests).
    fn digest(&self) -> u64 {
        if self.last_id == 0 {
            return 0;
        }
        let mut hash = Fnv::default();
        hash.write(&self.last_id.to_be_bytes());
        for workflow in self.workflows.values() {
            hash.write(&workflow_digest(workflow).to_be_bytes());
        }
        hash.finish()
    }
}

fn workflow_digest(workflow: &Workflow) -> u64 {
    let mut hash = Fnv::default();
    for n in [
        workflow.id,
        u64::from(workflow.state.code()),
        workflow.updated_ms,
        workflow.deadline_ms,
        workflow.bytes,
    ] {
        hash.write(&n.to_be_bytes());
    }
    for step in &workflow.steps {
        hash.write(&[step.state.code() as u8]);
        hash.write(&u64::from(step.completion).to_be_bytes());
        hash.write(&step.decision_id.to_be_bytes());
        hash.write(&(step.result.len() as u64).to_be_bytes());
        hash.write(step.result.as_bytes());
        for branch in &step.branches {
            hash.write(&branch.task_id.to_be_bytes());
            hash.write(&[branch.state.code() as u8]);
        }
    }
    for compensation in &workflow.compensations {
        hash.write(&compensation.task_id.to_be_bytes());
        hash.write(&[compensation.state.code() as u8]);
    }
    hash.finish()
}

fn workflow_event(
    workflow: &Workflow,
    kind: WorkflowEventKind,
    step: &str,
    reason: &str,
) -> CoordEventKind {
    CoordEventKind::Workflow(WorkflowEvent {
        workflow_id: workflow.id,
        kind,
        step: step.to_string(),
        state: workflow.state,
        reason: reason.to_string(),
    })
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT (the command) or SNAPSHOT_FORMAT (the rest). ----

impl WorkflowCommand {
    pub const fn code(&self) -> u16 {
        match self {
            WorkflowCommand::Start { .. } => 0,
            WorkflowCommand::Cancel { .. } => 1,
            WorkflowCommand::Retry { .. } => 2,
        }
    }
}

impl WorkflowOp {
    pub const fn code(&self) -> u16 {
        match self {
            WorkflowOp::Start { .. } => 0,
        }
    }
}

impl WorkflowResponse {
    pub const fn code(&self) -> u16 {
        match self {
            WorkflowResponse::Started { .. } => 0,
            WorkflowResponse::Canceled { .. } => 1,
            WorkflowResponse::Retried { .. } => 2,
            WorkflowResponse::UnknownWorkflow { .. } => 3,
            WorkflowResponse::NotRetryable { .. } => 4,
            WorkflowResponse::Invalid { .. } => 5,
            WorkflowResponse::QuotaExceeded { .. } => 6,
        }
    }
}

impl WorkflowState {
    pub const fn code(&self) -> u16 {
        match self {
            WorkflowState::Running => 0,
            WorkflowState::Waiting => 1,
            WorkflowState::Compensating => 2,
            WorkflowState::Succeeded => 3,
            WorkflowState::Failed => 4,
            WorkflowState::Canceled => 5,
            WorkflowState::TimedOut => 6,
        }
    }
}

impl StepState {
    pub const fn code(&self) -> u16 {
        match self {
            StepState::Waiting => 0,
            StepState::Running => 1,
            StepState::Succeeded => 2,
            StepState::Failed => 3,
            StepState::Skipped => 4,
            StepState::Canceled => 5,
            StepState::TimedOut => 6,
        }
    }
}

impl BranchState {
    pub const fn code(&self) -> u16 {
        match self {
            BranchState::Pending => 0,
            BranchState::Running => 1,
            BranchState::Succeeded => 2,
            BranchState::Failed => 3,
            BranchState::Canceled => 4,
            BranchState::TimedOut => 5,
        }
    }
}

impl WorkflowEventKind {
    pub const fn code(&self) -> u16 {
        match self {
            WorkflowEventKind::Started => 0,
            WorkflowEventKind::StepStarted => 1,
            WorkflowEventKind::StepSucceeded => 2,
            WorkflowEventKind::StepFailed => 3,
            WorkflowEventKind::StepSkipped => 4,
            WorkflowEventKind::StepCanceled => 5,
            WorkflowEventKind::StepTimedOut => 6,
            WorkflowEventKind::Joined => 7,
            WorkflowEventKind::Waiting => 8,
            WorkflowEventKind::Compensating => 9,
            WorkflowEventKind::Finished => 10,
            WorkflowEventKind::Retried => 11,
        }
    }
}

impl WorkflowTimer {
    pub const fn code(&self) -> u16 {
        match self {
            WorkflowTimer::Deadline => 0,
            WorkflowTimer::JoinDeadline => 1,
        }
    }
}

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod tests;
