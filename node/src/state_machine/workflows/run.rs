//! The engine of one workflow instance: which steps start, how a step's tasks are joined, how a
//! failure stops the rest and runs the compensations, and what a retry resets. Every entry point
//! leaves the instance consistent: a step leaves RUNNING once (so a join fires once), and the
//! steps it unblocks are started in the same call.

use super::definition::{FanOutSource, JoinPolicy, StepDef, StepKind, TaskTemplate};
use super::payload::{self, BranchView, Envelope};
use super::{
    workflow_event, Branch, BranchState, CompensationRun, Index, StepRun, StepState, Workflow,
    WorkflowEventKind, WorkflowState, WorkflowTimer,
};
use crate::limits::{
    DEFAULT_DECISION_DEADLINE_MS, FAN_OUT_WIDTH_MAX, MAX_PAYLOAD_BYTES, WORKFLOW_BYTES_MAX,
    WORKFLOW_RESULT_BYTES_MAX,
};
use crate::state_machine::coordination::{
    DecisionId, DecisionSpec, DecisionStatus, TaskId, TaskSpec,
};
use crate::state_machine::primitive::{Ctx, Effect, StepTaskOutcome};

/// One workflow, the indexes beside it and the context, for one call.
pub(super) struct Run<'a, 'c> {
    wf: &'a mut Workflow,
    index: &'a mut Index,
    ctx: &'a mut Ctx<'c>,
}

/// Whether a waiting step can start.
enum Readiness {
    NotYet,
    Skip(String),
    Start,
}

impl<'a, 'c> Run<'a, 'c> {
    pub fn new(wf: &'a mut Workflow, index: &'a mut Index, ctx: &'a mut Ctx<'c>) -> Self {
        Run { wf, index, ctx }
    }

    /// (Re)starts the workflow: arms its deadline, announces it, starts its first steps.
    pub fn begin(&mut self, kind: WorkflowEventKind) {
        if self.wf.timeout_ms != 0 {
            self.wf.deadline_ms = self.ctx.now_ms.saturating_add(self.wf.timeout_ms);
            let timer = (self.wf.deadline_ms, WorkflowTimer::Deadline, self.wf.id, 0);
            self.index.timers.insert(timer);
        }
        self.event(kind, "", "");
        self.advance();
    }

    /// Starts every waiting step whose dependencies are done, skips those that will not run (in
    /// definition order, which is a run order), then finishes the workflow if every step is done.
    fn advance(&mut self) {
        for i in 0..self.wf.steps.len() {
            if !self.wf.state.is_active() {
                return;
            }
            if self.def(i).compensation || self.wf.steps[i].state != StepState::Waiting {
                continue;
            }
            match self.readiness(i) {
                Readiness::NotYet => {}
                Readiness::Skip(reason) => self.skip(i, &reason),
                Readiness::Start => self.start_step(i),
            }
        }
        if !self.wf.state.is_active() {
            return;
        }
        let done = self.wf.steps.iter().enumerate().all(|(i, step)| {
            self.def(i).compensation
                || matches!(step.state, StepState::Succeeded | StepState::Skipped)
        });
        if done {
            self.finish(WorkflowState::Succeeded, "");
        } else {
            self.update_waiting();
        }
    }

    fn readiness(&self, i: usize) -> Readiness {
        let def = self.def(i);
        let states: Vec<StepState> = def
            .after
            .iter()
            .map(|&j| self.wf.steps[j as usize].state)
            .collect();
        if states
            .iter()
            .any(|s| !matches!(s, StepState::Succeeded | StepState::Skipped))
        {
            return Readiness::NotYet;
        }
        if !states.is_empty() && states.iter().all(|s| *s == StepState::Skipped) {
            return Readiness::Skip("every step it follows was skipped".into());
        }
        if let Some(when) = &def.when {
            let decision = &self.wf.steps[when.step as usize];
            if decision.state != StepState::Succeeded || decision.outcome != when.outcome {
                return Readiness::Skip(format!(
                    "{} did not decide {:?}",
                    self.def(when.step as usize).name,
                    when.outcome
                ));
            }
        }
        Readiness::Start
    }

    fn skip(&mut self, i: usize, reason: &str) {
        let step = &mut self.wf.steps[i];
        step.state = StepState::Skipped;
        step.finished_ms = self.ctx.now_ms;
        self.step_event(WorkflowEventKind::StepSkipped, i, reason);
    }

    fn start_step(&mut self, i: usize) {
        let now_ms = self.ctx.now_ms;
        let step = &mut self.wf.steps[i];
        step.state = StepState::Running;
        step.started_ms = now_ms;
        step.runs += 1;
        self.step_event(WorkflowEventKind::StepStarted, i, "");
        match self.def(i).kind.clone() {
            StepKind::Decision(template) => {
                let deadline_ms = match template.deadline_ms {
                    0 => DEFAULT_DECISION_DEADLINE_MS,
                    relative => relative,
                };
                let spec = DecisionSpec {
                    question: template.question,
                    options: template.options,
                    electorate: template.electorate,
                    rule: template.rule,
                    weights: template.weights,
                    veto_option: template.veto_option,
                    deadline_ms: now_ms.saturating_add(deadline_ms),
                    labels: template.labels,
                };
                self.ctx.raise(Effect::ProposeStepDecision {
                    workflow_id: self.wf.id,
                    step: i as u32,
                    spec,
                });
            }
            StepKind::Task { template, fan_out } => {
                if let Err(reason) = self.submit(i, &template, fan_out.map(|f| f.source)) {
                    self.step_failed(i, &reason);
                }
            }
        }
    }

    /// Submits a task step's branches (one for a plain step), or joins at once when there are
    /// none (an empty list to fan out over).
    fn submit(
        &mut self,
        i: usize,
        template: &TaskTemplate,
        source: Option<FanOutSource>,
    ) -> Result<(), String> {
        let items = self.branch_items(source)?;
        let mut specs = Vec::with_capacity(items.len());
        for (b, item) in items.iter().enumerate() {
            let branch = source.map(|_| (b as u32, item.as_deref()));
            let payload = self.envelope(i, branch, None, &template.params).to_json();
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(format!(
                    "the payload of branch {b} is {} bytes, above the task limit of \
                     {MAX_PAYLOAD_BYTES} (MAX_PAYLOAD_BYTES)",
                    payload.len()
                ));
            }
            specs.push((b as u32, self.task_spec(template, payload, i, b)));
        }
        let item_bytes: usize = items.iter().flatten().map(String::len).sum();
        self.charge(item_bytes)?;
        self.wf.steps[i].branches = items
            .into_iter()
            .map(|item| Branch {
                task_id: 0,
                state: BranchState::Running,
                item: item.unwrap_or_default(),
                result: String::new(),
                error: String::new(),
            })
            .collect();
        if let Some(deadline_ms) = self.def(i).fan_out().map(|f| f.join_deadline_ms) {
            if deadline_ms != 0 {
                let due = self.ctx.now_ms.saturating_add(deadline_ms);
                let timer = (due, WorkflowTimer::JoinDeadline, self.wf.id, i as u32);
                self.index.timers.insert(timer);
            }
        }
        if specs.is_empty() {
            self.evaluate_join(i);
        } else {
            self.ctx.raise(Effect::SubmitStepTasks {
                workflow_id: self.wf.id,
                step: i as u32,
                specs,
            });
        }
        Ok(())
    }

    /// The branches of a task step: one, `count`, or one per item of an earlier result list.
    fn branch_items(&self, source: Option<FanOutSource>) -> Result<Vec<Option<String>>, String> {
        match source {
            None => Ok(vec![None]),
            Some(FanOutSource::Count(n)) => Ok(vec![None; n as usize]),
            Some(FanOutSource::Over(j)) => {
                let over = self.def(j as usize).name.clone();
                let Some(items) = payload::array_items(&self.wf.steps[j as usize].result) else {
                    return Err(format!(
                        "fan_out.over: the result of {over} is not a JSON array"
                    ));
                };
                if items.len() > FAN_OUT_WIDTH_MAX as usize {
                    return Err(format!(
                        "fan_out.over: the result of {over} has {} items, above the limit of \
                         {FAN_OUT_WIDTH_MAX} (FAN_OUT_WIDTH_MAX)",
                        items.len()
                    ));
                }
                Ok(items
                    .into_iter()
                    .map(|item| Some(item.to_string()))
                    .collect())
            }
        }
    }

    /// The payload of a task of step `i` (a compensation's when `compensating` names the step
    /// it undoes).
    fn envelope<'s>(
        &'s self,
        i: usize,
        branch: Option<(u32, Option<&'s str>)>,
        compensating: Option<usize>,
        params: &'s str,
    ) -> Envelope<'s> {
        let results = match compensating {
            Some(undone) => vec![(
                self.def(undone).name.as_str(),
                Some(self.wf.steps[undone].result.as_str()),
            )],
            None => self
                .def(i)
                .after
                .iter()
                .map(|&j| {
                    let step = &self.wf.steps[j as usize];
                    let result =
                        (step.state == StepState::Succeeded).then_some(step.result.as_str());
                    (self.def(j as usize).name.as_str(), result)
                })
                .collect(),
        };
        Envelope {
            workflow_id: self.wf.id,
            workflow: &self.wf.definition.name,
            step: &self.def(i).name,
            input: &self.wf.input,
            params,
            results,
            branch,
            compensating: compensating.map(|undone| self.def(undone).name.as_str()),
        }
    }

    fn task_spec(&self, template: &TaskTemplate, payload: String, i: usize, b: usize) -> TaskSpec {
        let step_deadline_ms = match template.deadline_ms {
            0 => 0,
            relative => self.ctx.now_ms.saturating_add(relative),
        };
        // Deadlines propagate down: a step's task never outlives its workflow.
        let deadline_ms = [step_deadline_ms, self.wf.deadline_ms]
            .into_iter()
            .filter(|&d| d != 0)
            .min()
            .unwrap_or(0);
        TaskSpec {
            queue: template.queue.clone(),
            payload: payload.into_bytes(),
            content_type: "application/json".into(),
            capabilities: template.capabilities.clone(),
            priority: template.priority,
            max_attempts: template.max_attempts,
            backoff: template.backoff.clone(),
            lease_ms: template.lease_ms,
            deadline_ms,
            not_before_ms: 0,
            idempotency_key: String::new(),
            correlation_id: format!("workflow/{}/{}/{b}", self.wf.id, self.def(i).name),
            parent_id: 0,
            labels: template.labels.clone(),
            requires: None,
        }
    }

    /// Tasks answered a submission: the branch's task id. A branch stopped meanwhile (the
    /// workflow failed in the same entry) has its new task canceled at once.
    pub fn task_submitted(&mut self, step: u32, branch: u32, task_id: TaskId) {
        let i = step as usize;
        if self.def_checked(i).is_some_and(|d| d.compensation) {
            if let Some(c) = self.compensation_mut(step, branch, 0) {
                c.task_id = task_id;
            }
            return;
        }
        let Some(b) = self
            .wf
            .steps
            .get_mut(i)
            .and_then(|s| s.branches.get_mut(branch as usize))
        else {
            return;
        };
        if b.task_id != 0 {
            return;
        }
        b.task_id = task_id;
        if b.state != BranchState::Running {
            self.ctx.raise(Effect::CancelTasks {
                task_ids: vec![task_id],
                reason: format!("workflow {} no longer needs it", self.wf.id),
            });
        }
    }

    /// A step task ended: records the branch, evaluates the join, starts what it unblocks. A
    /// report about a branch no longer running (canceled by the workflow, an old attempt) is
    /// ignored.
    pub fn task_finished(
        &mut self,
        step: u32,
        branch: u32,
        task_id: TaskId,
        outcome: &StepTaskOutcome,
    ) {
        let i = step as usize;
        let Some(def) = self.def_checked(i) else {
            return;
        };
        if def.compensation {
            self.compensation_finished(step, branch, task_id, outcome);
            return;
        }
        let running = self.wf.steps[i].state == StepState::Running
            && self.wf.steps[i]
                .branches
                .get(branch as usize)
                .is_some_and(|b| b.state == BranchState::Running && b.task_id == task_id);
        if !running {
            return;
        }
        if *outcome == StepTaskOutcome::Expired && self.deadline_reached() {
            // A step's task never outlives its workflow: at the workflow deadline the task's
            // own timer fires first (the coordination timers go before the workflows' tick).
            // That is the workflow timing out, not the step failing.
            self.deadline_passed();
            return;
        }
        let (state, result, error) = self.branch_outcome(outcome);
        let b = &mut self.wf.steps[i].branches[branch as usize];
        b.state = state;
        b.result = result;
        b.error = error;
        self.evaluate_join(i);
        self.advance();
    }

    /// A branch's state, result (JSON, charged to the workflow) and error from its task's end.
    fn branch_outcome(&mut self, outcome: &StepTaskOutcome) -> (BranchState, String, String) {
        match outcome {
            StepTaskOutcome::Succeeded { result } => {
                let json = payload::result_json(result);
                if json.len() > WORKFLOW_RESULT_BYTES_MAX {
                    let error = format!(
                        "its result is {} bytes as JSON, above the limit of \
                         {WORKFLOW_RESULT_BYTES_MAX} (WORKFLOW_RESULT_BYTES_MAX)",
                        json.len()
                    );
                    return (BranchState::Failed, String::new(), error);
                }
                match self.charge(json.len()) {
                    Ok(()) => (BranchState::Succeeded, json, String::new()),
                    Err(error) => (BranchState::Failed, String::new(), error),
                }
            }
            StepTaskOutcome::Failed { error, reason } => {
                let why = match reason {
                    Some(reason) => format!("dead-lettered ({reason:?}): {error}"),
                    None => format!("not submitted: {error}"),
                };
                (BranchState::Failed, String::new(), why)
            }
            StepTaskOutcome::Canceled { reason } => (
                BranchState::Canceled,
                String::new(),
                format!("canceled: {reason}"),
            ),
            StepTaskOutcome::Expired => (
                BranchState::TimedOut,
                String::new(),
                "its task's deadline passed".into(),
            ),
        }
    }

    /// Fires the join of a running task step when its policy is met, can no longer be met, or
    /// (with a partial deadline) nothing is left to wait for.
    fn evaluate_join(&mut self, i: usize) {
        let (policy, partial) = match self.def(i).fan_out() {
            Some(fan_out) => (fan_out.policy, fan_out.join_deadline_ms != 0),
            None => (JoinPolicy::All, false),
        };
        let branches = &self.wf.steps[i].branches;
        let width = branches.len();
        let count = |state| branches.iter().filter(|b| b.state == state).count();
        let (succeeded, running) = (count(BranchState::Succeeded), count(BranchState::Running));
        let needed = policy.needed(width);
        // Met; or, with a partial deadline, nothing left to wait for and something succeeded.
        let partial_results = running == 0 && partial && succeeded >= 1;
        if succeeded >= needed || partial_results {
            self.join(i, Ok(()));
        } else if running == 0 || (!partial && succeeded + running < needed) {
            let reason = if self.def(i).fan_out().is_none() {
                branches[0].error.clone()
            } else {
                format!(
                    "the join needs {needed} of {width} branches to succeed; {succeeded} did, \
                     {} failed, {} timed out, {} were canceled, {running} still running",
                    count(BranchState::Failed),
                    count(BranchState::TimedOut),
                    count(BranchState::Canceled)
                )
            };
            self.join(i, Err(reason));
        }
    }

    /// The join fires: branches still running are canceled, then the step succeeds with its
    /// result (the task's, or the joined branches') or fails.
    fn join(&mut self, i: usize, verdict: Result<(), String>) {
        let ids = self.stop_branches(i, BranchState::Canceled, "the join no longer needs it");
        self.cancel_tasks(ids, "the workflow's join no longer needs it");
        self.disarm_join(i);
        let fan_out = self.def(i).fan_out().is_some();
        if fan_out {
            self.step_event(WorkflowEventKind::Joined, i, "");
        }
        if let Err(reason) = verdict {
            return self.step_failed(i, &reason);
        }
        let result = if fan_out {
            let step = &self.wf.steps[i];
            let views: Vec<BranchView> = step
                .branches
                .iter()
                .map(|b| BranchView {
                    state: b.state,
                    item: (!b.item.is_empty()).then_some(b.item.as_str()),
                    result: &b.result,
                    error: &b.error,
                })
                .collect();
            let joined = payload::joined(&views);
            if let Err(reason) = self.result_fits(&joined) {
                return self.step_failed(i, &reason);
            }
            joined
        } else {
            std::mem::take(&mut self.wf.steps[i].branches[0].result)
        };
        self.step_succeeded(i, result);
    }

    /// A fan-out's joined result within WORKFLOW_RESULT_BYTES_MAX and the workflow's budget.
    fn result_fits(&mut self, result: &str) -> Result<(), String> {
        if result.len() > WORKFLOW_RESULT_BYTES_MAX {
            return Err(format!(
                "its joined result is {} bytes, above the limit of {WORKFLOW_RESULT_BYTES_MAX} \
                 (WORKFLOW_RESULT_BYTES_MAX)",
                result.len()
            ));
        }
        self.charge(result.len())
    }

    /// Adds `bytes` to what the workflow records, within WORKFLOW_BYTES_MAX.
    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        let total = self.wf.bytes.saturating_add(bytes as u64);
        if total > WORKFLOW_BYTES_MAX as u64 {
            return Err(format!(
                "recording {bytes} more bytes would take the workflow to {total} bytes, above \
                 the limit of {WORKFLOW_BYTES_MAX} (WORKFLOW_BYTES_MAX)"
            ));
        }
        self.wf.bytes = total;
        Ok(())
    }

    fn step_succeeded(&mut self, i: usize, result: String) {
        self.wf.completions += 1;
        let step = &mut self.wf.steps[i];
        step.state = StepState::Succeeded;
        step.finished_ms = self.ctx.now_ms;
        step.completion = self.wf.completions;
        step.result = result;
        self.step_event(WorkflowEventKind::StepSucceeded, i, "");
    }

    /// The step fails, and with it the workflow (the others stop, compensations run).
    fn step_failed(&mut self, i: usize, reason: &str) {
        let ids = self.stop_branches(i, BranchState::Canceled, "its step failed");
        self.cancel_tasks(ids, "its workflow step failed");
        self.disarm_join(i);
        let step = &mut self.wf.steps[i];
        step.state = StepState::Failed;
        step.finished_ms = self.ctx.now_ms;
        step.error = reason.to_string();
        self.step_event(WorkflowEventKind::StepFailed, i, reason);
        let name = self.def(i).name.clone();
        self.stop(
            &format!("step {name} failed: {reason}"),
            WorkflowState::Failed,
        );
    }

    /// Marks the running branches of step `i` as `state`; answers the task ids to cancel.
    fn stop_branches(&mut self, i: usize, state: BranchState, why: &str) -> Vec<TaskId> {
        let mut ids = Vec::new();
        for branch in &mut self.wf.steps[i].branches {
            if branch.state == BranchState::Running {
                branch.state = state;
                branch.error = why.to_string();
                if branch.task_id != 0 {
                    ids.push(branch.task_id);
                }
            }
        }
        ids
    }

    fn cancel_tasks(&mut self, task_ids: Vec<TaskId>, reason: &str) {
        if !task_ids.is_empty() {
            self.ctx.raise(Effect::CancelTasks {
                task_ids,
                reason: format!("workflow {}: {reason}", self.wf.id),
            });
        }
    }

    fn disarm_join(&mut self, i: usize) {
        let Some(deadline_ms) = self.def(i).fan_out().map(|f| f.join_deadline_ms) else {
            return;
        };
        if deadline_ms != 0 {
            let due = self.wf.steps[i].started_ms.saturating_add(deadline_ms);
            let timer = (due, WorkflowTimer::JoinDeadline, self.wf.id, i as u32);
            self.index.timers.remove(&timer);
        }
    }

    /// Stops an active workflow (a step failed, a cancel, the deadline): every running step is
    /// stopped and its tasks canceled, then the compensations run, then it ends as `ending`.
    pub fn stop(&mut self, reason: &str, ending: WorkflowState) {
        if !self.wf.state.is_active() {
            return;
        }
        self.wf.error = reason.to_string();
        self.wf.ending = ending;
        self.disarm_deadline();
        let (step_state, branch_state, kind) = match ending {
            WorkflowState::TimedOut => (
                StepState::TimedOut,
                BranchState::TimedOut,
                WorkflowEventKind::StepTimedOut,
            ),
            _ => (
                StepState::Canceled,
                BranchState::Canceled,
                WorkflowEventKind::StepCanceled,
            ),
        };
        let mut ids = Vec::new();
        for i in 0..self.wf.steps.len() {
            if self.wf.steps[i].state != StepState::Running {
                continue;
            }
            ids.extend(self.stop_branches(i, branch_state, reason));
            self.disarm_join(i);
            let step = &mut self.wf.steps[i];
            if self.index.by_decision.remove(&step.decision_id).is_some() {
                self.ctx.raise(Effect::WithdrawDecision {
                    decision_id: step.decision_id,
                    reason: format!("withdrawn by workflow {}: {reason}", self.wf.id),
                });
            }
            step.state = step_state;
            step.finished_ms = self.ctx.now_ms;
            step.error = reason.to_string();
            self.step_event(kind, i, reason);
        }
        self.cancel_tasks(ids, reason);
        self.compensate(reason, ending);
    }

    /// Lists the compensations of the steps that succeeded, latest completion first, and runs
    /// the first; with none, the workflow ends at once.
    fn compensate(&mut self, reason: &str, ending: WorkflowState) {
        let mut undo: Vec<(u32, usize, u32)> = (0..self.wf.steps.len())
            .filter_map(|i| {
                let step = &self.wf.steps[i];
                let compensation = self.def(i).compensate?;
                let due = step.state == StepState::Succeeded && !step.compensated;
                due.then_some((step.completion, i, compensation))
            })
            .collect();
        undo.sort_unstable_by(|a, b| b.cmp(a));
        self.wf.compensations = undo
            .into_iter()
            .map(|(_, step, compensation)| CompensationRun {
                step: step as u32,
                compensation,
                task_id: 0,
                state: BranchState::Pending,
                error: String::new(),
            })
            .collect();
        if self.wf.compensations.is_empty() {
            return self.finish(ending, reason);
        }
        self.wf.state = WorkflowState::Compensating;
        self.event(WorkflowEventKind::Compensating, "", reason);
        self.compensate_next();
    }

    /// Submits the next pending compensation, or ends the workflow when none is left.
    fn compensate_next(&mut self) {
        while let Some(k) = self
            .wf
            .compensations
            .iter()
            .position(|c| c.state == BranchState::Pending)
        {
            let CompensationRun {
                step, compensation, ..
            } = self.wf.compensations[k];
            let (undone, c) = (step as usize, compensation as usize);
            let StepKind::Task { template, .. } = self.def(c).kind.clone() else {
                unreachable!("check_structure: a compensation step is a task step");
            };
            let payload = self
                .envelope(c, None, Some(undone), &template.params)
                .to_json();
            if payload.len() > MAX_PAYLOAD_BYTES {
                let run = &mut self.wf.compensations[k];
                run.state = BranchState::Failed;
                run.error = format!(
                    "its payload is {} bytes, above the task limit of {MAX_PAYLOAD_BYTES} \
                     (MAX_PAYLOAD_BYTES)",
                    payload.len()
                );
                continue;
            }
            let spec = self.task_spec(&template, payload, c, undone);
            self.wf.compensations[k].state = BranchState::Running;
            let reason = format!("compensating {}", self.def(undone).name);
            self.step_event(WorkflowEventKind::StepStarted, c, &reason);
            self.ctx.raise(Effect::SubmitStepTasks {
                workflow_id: self.wf.id,
                step: compensation,
                specs: vec![(step, spec)],
            });
            return;
        }
        let (ending, reason) = (self.wf.ending, self.wf.error.clone());
        self.finish(ending, &reason);
    }

    fn compensation_mut(
        &mut self,
        compensation: u32,
        step: u32,
        task_id: TaskId,
    ) -> Option<&mut CompensationRun> {
        self.wf.compensations.iter_mut().find(|c| {
            c.compensation == compensation
                && c.step == step
                && c.state == BranchState::Running
                && c.task_id == task_id
        })
    }

    fn compensation_finished(
        &mut self,
        compensation: u32,
        step: u32,
        task_id: TaskId,
        outcome: &StepTaskOutcome,
    ) {
        if self.compensation_mut(compensation, step, task_id).is_none() {
            return;
        }
        let (state, _, error) = self.branch_outcome(outcome);
        let run = self
            .compensation_mut(compensation, step, task_id)
            .expect("found above");
        run.state = state;
        run.error = error.clone();
        self.wf.steps[step as usize].compensated = true;
        let kind = match state {
            BranchState::Succeeded => WorkflowEventKind::StepSucceeded,
            _ => WorkflowEventKind::StepFailed,
        };
        self.step_event(kind, compensation as usize, &error);
        self.compensate_next();
    }

    /// Decisions answered a decision step's proposal.
    pub fn decision_proposed(&mut self, step: u32, decision: Result<DecisionId, String>) {
        let i = step as usize;
        let running = self.def_checked(i).is_some_and(StepDef::is_decision)
            && self.wf.steps[i].state == StepState::Running
            && self.wf.steps[i].decision_id == 0;
        if !running {
            return;
        }
        match decision {
            Ok(decision_id) => {
                self.wf.steps[i].decision_id = decision_id;
                self.index
                    .by_decision
                    .insert(decision_id, (self.wf.id, step));
            }
            Err(reason) => {
                self.step_failed(i, &format!("the decision was not opened: {reason}"));
                self.advance();
            }
        }
    }

    /// A decision step's decision closed: DECIDED is success (its outcome is what `when`
    /// conditions read), anything else fails the step.
    pub fn decision_closed(
        &mut self,
        step: u32,
        decision_id: DecisionId,
        status: DecisionStatus,
        outcome: Option<&str>,
    ) {
        let i = step as usize;
        let current = self
            .wf
            .steps
            .get(i)
            .is_some_and(|s| s.state == StepState::Running && s.decision_id == decision_id);
        if !current {
            return;
        }
        match (status, outcome) {
            (DecisionStatus::Decided, Some(outcome)) => {
                let result = payload::decision(decision_id, "decided", Some(outcome));
                self.wf.bytes = self.wf.bytes.saturating_add(result.len() as u64);
                self.wf.steps[i].outcome = outcome.to_string();
                self.step_succeeded(i, result);
            }
            (DecisionStatus::Rejected, _) => self.step_failed(i, "the decision was rejected"),
            (DecisionStatus::NoQuorum, _) => {
                self.step_failed(i, "the decision's deadline passed without a quorum")
            }
            _ => return,
        }
        self.advance();
    }

    /// A fan-out's partial deadline: the branches still running time out, and the join takes
    /// what has finished.
    pub fn join_deadline(&mut self, step: u32) {
        let i = step as usize;
        if self.wf.steps.get(i).map(|s| s.state) != Some(StepState::Running) {
            return;
        }
        let ids = self.stop_branches(i, BranchState::TimedOut, "the join's deadline passed");
        self.cancel_tasks(ids, "the join's deadline passed");
        self.evaluate_join(i);
        self.advance();
    }

    /// Whether the workflow deadline is armed and has come.
    fn deadline_reached(&self) -> bool {
        self.wf.deadline_ms != 0 && self.wf.deadline_ms <= self.ctx.now_ms
    }

    /// The workflow deadline passed.
    pub fn deadline_passed(&mut self) {
        self.disarm_deadline();
        self.wf.deadline_ms = 0;
        self.stop("the workflow deadline passed", WorkflowState::TimedOut);
    }

    /// A FAILED or TIMED_OUT workflow runs again: its failed, canceled, timed-out and compensated
    /// steps wait again (their results and errors forgotten), then it restarts.
    pub fn retry(&mut self) {
        for i in 0..self.wf.steps.len() {
            let step = &self.wf.steps[i];
            let again = step.compensated
                || matches!(
                    step.state,
                    StepState::Failed | StepState::Canceled | StepState::TimedOut
                );
            if again && !self.def(i).compensation {
                let runs = step.runs;
                self.wf.steps[i] = StepRun {
                    runs,
                    ..StepRun::default()
                };
            }
        }
        self.wf.compensations.clear();
        self.wf.error.clear();
        self.wf.finished_ms = 0;
        self.wf.retries += 1;
        self.wf.state = WorkflowState::Running;
        self.wf.bytes = recorded_bytes(self.wf);
        self.begin(WorkflowEventKind::Retried);
    }

    fn finish(&mut self, state: WorkflowState, reason: &str) {
        self.disarm_deadline();
        self.wf.state = state;
        self.wf.finished_ms = self.ctx.now_ms;
        self.index.finished.insert((self.ctx.now_ms, self.wf.id));
        self.event(WorkflowEventKind::Finished, "", reason);
    }

    fn disarm_deadline(&mut self) {
        if self.wf.deadline_ms != 0 {
            let timer = (self.wf.deadline_ms, WorkflowTimer::Deadline, self.wf.id, 0);
            self.index.timers.remove(&timer);
        }
    }

    /// RUNNING, or WAITING when only decision steps are open.
    fn update_waiting(&mut self) {
        let running = |decision: bool| {
            self.wf.steps.iter().enumerate().any(|(i, s)| {
                s.state == StepState::Running && self.def(i).is_decision() == decision
            })
        };
        let state = if running(true) && !running(false) {
            WorkflowState::Waiting
        } else {
            WorkflowState::Running
        };
        if state != self.wf.state {
            self.wf.state = state;
            if state == WorkflowState::Waiting {
                self.event(WorkflowEventKind::Waiting, "", "a decision step is open");
            }
        }
    }

    fn def(&self, i: usize) -> &StepDef {
        &self.wf.definition.steps[i]
    }

    /// The step definition at an index that came from another primitive.
    fn def_checked(&self, i: usize) -> Option<&StepDef> {
        self.wf.definition.steps.get(i)
    }

    fn event(&mut self, kind: WorkflowEventKind, step: &str, reason: &str) {
        self.wf.updated_ms = self.ctx.now_ms;
        self.ctx.event(workflow_event(self.wf, kind, step, reason));
    }

    fn step_event(&mut self, kind: WorkflowEventKind, i: usize, reason: &str) {
        let name = self.def(i).name.clone();
        self.event(kind, &name, reason);
    }
}

/// What an instance records: its input, its items and every result.
fn recorded_bytes(wf: &Workflow) -> u64 {
    let steps: usize = wf
        .steps
        .iter()
        .map(|s| {
            let branches: usize = s
                .branches
                .iter()
                .map(|b| b.item.len() + b.result.len())
                .sum();
            s.result.len() + branches
        })
        .sum();
    (wf.input.len() + steps) as u64
}
