//! Table tests of the workflows primitive, driven directly with a `Ctx`. The harness plays the
//! Tasks and Decisions sides by hand: it answers `SubmitStepTasks` with `StepTaskSubmitted`,
//! `CancelTasks` with `StepTaskFinished { Canceled }` for the tasks still open, and
//! `ProposeStepDecision` with `StepDecisionProposed`, as the real handlers will.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::definition::{
    DecisionTemplate, FanOut, FanOutSource, JoinPolicy, StepDef, StepKind, TaskTemplate, When,
};
use super::*;
use crate::limits::{DEFAULT_DECISION_DEADLINE_MS, FAN_OUT_WIDTH_MAX, MAX_PAYLOAD_BYTES};
use crate::state_machine::coordination::{
    DeadLetterReason, DecisionSpec, DecisionStatus, Electorate, EventRing, Rule, TaskSpec,
};
use crate::state_machine::primitive::StepTaskOutcome;

const T0: u64 = 1_000_000;

/// A task the fake Tasks side holds.
struct FakeTask {
    workflow_id: WorkflowId,
    step: u32,
    branch: u32,
    spec: TaskSpec,
    open: bool,
}

#[derive(Default)]
struct Harness {
    workflows: Workflows,
    events: EventRing,
    now_ms: u64,
    tasks: BTreeMap<TaskId, FakeTask>,
    last_task_id: TaskId,
    last_decision_id: DecisionId,
    /// Decisions opened: (workflow, step, decision, spec).
    decisions: Vec<(WorkflowId, u32, DecisionId, DecisionSpec)>,
    /// Every effect the workflows raised, in order.
    raised: Vec<Effect>,
    /// Decisions refuse proposals with this reason while it is set.
    refuse_decisions: Option<String>,
}

fn harness() -> Harness {
    Harness {
        now_ms: T0,
        ..Harness::default()
    }
}

impl Harness {
    fn apply(&mut self, command: WorkflowCommand) -> WorkflowResponse {
        let mut ctx = Ctx::new(self.now_ms, &mut self.events);
        let response = self.workflows.apply(&mut ctx, &command);
        let effects = ctx.take_effects();
        self.settle(effects);
        response
    }

    fn start(&mut self, definition: Definition, input: &str) -> WorkflowId {
        let command = WorkflowCommand::Start {
            definition,
            input: input.into(),
            idempotency_key: String::new(),
            deadline_ms: 0,
        };
        match self.apply(command) {
            WorkflowResponse::Started {
                workflow_id,
                existing: false,
            } => workflow_id,
            other => panic!("{other:?}"),
        }
    }

    /// Routes an effect to the workflows, then plays the other side of what they raise.
    fn feed(&mut self, effect: Effect) {
        let mut ctx = Ctx::new(self.now_ms, &mut self.events);
        self.workflows.on_effect(&mut ctx, &effect);
        let effects = ctx.take_effects();
        self.settle(effects);
    }

    fn settle(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            self.raised.push(effect.clone());
            match effect {
                Effect::SubmitStepTasks {
                    workflow_id,
                    step,
                    specs,
                } => self.submit(workflow_id, step, specs),
                Effect::CancelTasks { task_ids, reason } => {
                    for task_id in task_ids {
                        self.end(
                            task_id,
                            StepTaskOutcome::Canceled {
                                reason: reason.clone(),
                            },
                        );
                    }
                }
                Effect::ProposeStepDecision {
                    workflow_id,
                    step,
                    spec,
                } => self.propose(workflow_id, step, spec),
                other => panic!("workflows raised {other:?}"),
            }
        }
    }

    fn submit(&mut self, workflow_id: WorkflowId, step: u32, specs: Vec<(u32, TaskSpec)>) {
        for (branch, spec) in specs {
            self.last_task_id += 1;
            let task_id = self.last_task_id;
            let task = FakeTask {
                workflow_id,
                step,
                branch,
                spec,
                open: true,
            };
            self.tasks.insert(task_id, task);
            self.feed(Effect::StepTaskSubmitted {
                workflow_id,
                step,
                branch,
                task_id,
            });
        }
    }

    fn propose(&mut self, workflow_id: WorkflowId, step: u32, spec: DecisionSpec) {
        let decision = match self.refuse_decisions.clone() {
            Some(reason) => Err(reason),
            None => {
                self.last_decision_id += 1;
                let id = self.last_decision_id;
                self.decisions.push((workflow_id, step, id, spec));
                Ok(id)
            }
        };
        self.feed(Effect::StepDecisionProposed {
            workflow_id,
            step,
            decision,
        });
    }

    /// The task reaches a terminal state (a no-op for one already terminal, as in Tasks).
    fn end(&mut self, task_id: TaskId, outcome: StepTaskOutcome) {
        let task = self.tasks.get_mut(&task_id).expect("a submitted task");
        if !task.open {
            return;
        }
        task.open = false;
        let (workflow_id, step, branch) = (task.workflow_id, task.step, task.branch);
        self.feed(Effect::StepTaskFinished {
            workflow_id,
            step,
            branch,
            task_id,
            outcome,
        });
    }

    fn complete(&mut self, task_id: TaskId, result: &str) {
        let result = result.as_bytes().to_vec();
        self.end(task_id, StepTaskOutcome::Succeeded { result });
    }

    fn fail(&mut self, task_id: TaskId) {
        self.end(
            task_id,
            StepTaskOutcome::Failed {
                error: "boom".into(),
                reason: Some(DeadLetterReason::AttemptsExhausted),
            },
        );
    }

    fn tick(&mut self, now_ms: u64, retention: &Retention) {
        self.now_ms = now_ms;
        let mut ctx = Ctx::new(self.now_ms, &mut self.events).with_retention(retention);
        self.workflows.tick(&mut ctx);
        let effects = ctx.take_effects();
        self.settle(effects);
    }

    fn close_decision(&mut self, decision_id: DecisionId, status: DecisionStatus, outcome: &str) {
        self.feed(Effect::DecisionClosed {
            decision_id,
            status,
            outcome: (!outcome.is_empty()).then(|| outcome.to_string()),
        });
    }

    fn wf(&self, id: WorkflowId) -> &Workflow {
        self.workflows.get(id).expect("a workflow")
    }

    fn state(&self, id: WorkflowId) -> WorkflowState {
        self.wf(id).state
    }

    fn step_state(&self, id: WorkflowId, step: &str) -> StepState {
        self.wf(id).steps[self.index_of(id, step)].state
    }

    fn index_of(&self, id: WorkflowId, step: &str) -> usize {
        let steps = &self.wf(id).definition.steps;
        steps.iter().position(|s| s.name == step).expect("a step")
    }

    /// The open tasks of a step, by branch.
    fn open(&self, id: WorkflowId, step: &str) -> Vec<TaskId> {
        let index = self.index_of(id, step) as u32;
        self.tasks
            .iter()
            .filter(|(_, t)| t.open && t.workflow_id == id && t.step == index)
            .map(|(&task_id, _)| task_id)
            .collect()
    }

    /// The one open task of a step.
    fn only(&self, id: WorkflowId, step: &str) -> TaskId {
        let open = self.open(id, step);
        assert_eq!(open.len(), 1, "one open task of {step}: {open:?}");
        open[0]
    }

    fn payload(&self, task_id: TaskId) -> Value {
        serde_json::from_slice(&self.tasks[&task_id].spec.payload).expect("a JSON payload")
    }

    fn result(&self, id: WorkflowId, step: &str) -> Value {
        let run = &self.wf(id).steps[self.index_of(id, step)];
        serde_json::from_str(&run.result).expect("a JSON result")
    }

    /// The task ids of every CancelTasks raised so far.
    fn canceled(&self) -> Vec<Vec<TaskId>> {
        self.raised
            .iter()
            .filter_map(|e| match e {
                Effect::CancelTasks { task_ids, .. } => Some(task_ids.clone()),
                _ => None,
            })
            .collect()
    }

    /// The workflow events in the ring, as (kind, step).
    fn events(&self, id: WorkflowId) -> Vec<(WorkflowEventKind, String)> {
        self.events
            .after(0)
            .expect("kept")
            .into_iter()
            .filter_map(|e| match &e.kind {
                CoordEventKind::Workflow(w) if w.workflow_id == id => {
                    Some((w.kind, w.step.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

// ---- Definitions ----

pub(super) fn template(queue: &str) -> TaskTemplate {
    TaskTemplate {
        queue: queue.into(),
        params: "null".into(),
        max_attempts: 3,
        lease_ms: 30_000,
        ..TaskTemplate::default()
    }
}

pub(super) fn task(name: &str, after: &[u32]) -> StepDef {
    StepDef {
        name: name.into(),
        after: after.to_vec(),
        when: None,
        kind: StepKind::Task {
            template: template(name),
            fan_out: None,
        },
        compensate: None,
        compensation: false,
    }
}

pub(super) fn fan(
    name: &str,
    after: &[u32],
    source: FanOutSource,
    policy: JoinPolicy,
    deadline: u64,
) -> StepDef {
    StepDef {
        kind: StepKind::Task {
            template: template(name),
            fan_out: Some(FanOut {
                source,
                policy,
                join_deadline_ms: deadline,
            }),
        },
        ..task(name, after)
    }
}

pub(super) fn vote(name: &str, after: &[u32]) -> StepDef {
    StepDef {
        kind: StepKind::Decision(DecisionTemplate {
            question: "Publish?".into(),
            options: vec!["yes".into(), "no".into()],
            electorate: Electorate {
                agents: Vec::new(),
                capability: "reviewer".into(),
            },
            rule: Rule::Majority,
            weights: BTreeMap::new(),
            veto_option: None,
            deadline_ms: 0,
            labels: BTreeMap::new(),
        }),
        ..task(name, after)
    }
}

pub(super) fn when(step: StepDef, decision: u32, outcome: &str) -> StepDef {
    StepDef {
        when: Some(When {
            step: decision,
            outcome: outcome.into(),
        }),
        ..step
    }
}

pub(super) fn compensated(step: StepDef, by: u32) -> StepDef {
    StepDef {
        compensate: Some(by),
        ..step
    }
}

pub(super) fn compensation(name: &str) -> StepDef {
    StepDef {
        compensation: true,
        ..task(name, &[])
    }
}

pub(super) fn definition(steps: Vec<StepDef>) -> Definition {
    Definition {
        name: "wf".into(),
        version: 1,
        deadline_ms: 0,
        steps,
    }
}

pub(crate) fn pipeline() -> Definition {
    definition(vec![
        task("research", &[]),
        task("write", &[0]),
        task("edit", &[1]),
    ])
}

fn retention() -> Retention {
    Retention {
        finished_max: 0,
        finished_age_ms: 60_000,
        ..Retention::default()
    }
}

// ---- Sequential ----

#[test]
fn a_pipeline_hands_each_step_its_dependencies_results() {
    let mut h = harness();
    let id = h.start(pipeline(), r#"{"topic":"raft"}"#);
    assert_eq!(h.state(id), WorkflowState::Running);
    assert!(h.open(id, "write").is_empty(), "write waits for research");
    let research = h.only(id, "research");
    assert_eq!(
        h.payload(research),
        json!({"workflow_id": id, "workflow": "wf", "step": "research",
               "input": {"topic": "raft"}, "params": null, "results": {}})
    );
    assert_eq!(h.tasks[&research].spec.content_type, "application/json");
    h.complete(research, r#"{"notes":[1.5,2]}"#);
    let write = h.only(id, "write");
    assert_eq!(
        h.payload(write)["results"],
        json!({"research": {"notes": [1.5, 2]}})
    );
    h.complete(write, "a draft, not JSON");
    let edit = h.only(id, "edit");
    assert_eq!(
        h.payload(edit)["results"],
        json!({"write": "a draft, not JSON"})
    );
    assert_eq!(h.state(id), WorkflowState::Running);
    h.complete(edit, "\"final\"");
    assert_eq!(h.state(id), WorkflowState::Succeeded);
    assert_eq!(h.wf(id).finished_ms, T0);
    let kinds: Vec<WorkflowEventKind> = h.events(id).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds.first(), Some(&WorkflowEventKind::Started));
    assert_eq!(kinds.last(), Some(&WorkflowEventKind::Finished));
}

#[test]
fn a_report_about_another_task_is_ignored() {
    let mut h = harness();
    let id = h.start(pipeline(), "");
    let research = h.only(id, "research");
    h.feed(Effect::StepTaskFinished {
        workflow_id: id,
        step: 0,
        branch: 0,
        task_id: research + 100,
        outcome: StepTaskOutcome::Succeeded {
            result: b"stale".to_vec(),
        },
    });
    assert_eq!(h.step_state(id, "research"), StepState::Running);
    h.complete(research, "1");
    let digest = h.workflows.digest();
    h.feed(Effect::StepTaskFinished {
        workflow_id: id,
        step: 0,
        branch: 0,
        task_id: research,
        outcome: StepTaskOutcome::Succeeded {
            result: b"again".to_vec(),
        },
    });
    assert_eq!(h.result(id, "research"), json!(1), "recorded exactly once");
    assert_eq!(h.workflows.digest(), digest);
}

// ---- Fan-out and joins ----

fn fan_then_aggregate(source: FanOutSource, policy: JoinPolicy, deadline: u64) -> Definition {
    definition(vec![
        task("plan", &[]),
        fan("fan", &[0], source, policy, deadline),
        task("aggregate", &[1]),
    ])
}

#[test]
fn a_fixed_fan_out_joins_all_branches() {
    let mut h = harness();
    let def = fan_then_aggregate(FanOutSource::Count(3), JoinPolicy::All, 0);
    let id = h.start(def, "");
    h.complete(h.only(id, "plan"), "[]");
    let branches = h.open(id, "fan");
    assert_eq!(branches.len(), 3);
    assert_eq!(h.payload(branches[2])["branch"], json!({"index": 2}));
    h.complete(branches[1], "\"b\"");
    h.complete(branches[0], "\"a\"");
    assert!(h.open(id, "aggregate").is_empty(), "the join waits for all");
    h.complete(branches[2], "\"c\"");
    let aggregate = h.only(id, "aggregate");
    assert_eq!(
        h.payload(aggregate)["results"]["fan"],
        json!({"branches": [
            {"index": 0, "state": "succeeded", "result": "a"},
            {"index": 1, "state": "succeeded", "result": "b"},
            {"index": 2, "state": "succeeded", "result": "c"}],
            "succeeded": 3, "failed": 0, "timed_out": 0, "canceled": 0})
    );
}

#[test]
fn a_fan_out_over_a_result_list_runs_one_branch_per_item() {
    let mut h = harness();
    let def = fan_then_aggregate(FanOutSource::Over(0), JoinPolicy::All, 0);
    let id = h.start(def, "");
    h.complete(h.only(id, "plan"), r#"["raft", {"topic": "paxos"}]"#);
    let branches = h.open(id, "fan");
    assert_eq!(branches.len(), 2);
    assert_eq!(
        h.payload(branches[1])["branch"],
        json!({"index": 1, "item": {"topic": "paxos"}})
    );
    h.complete(branches[0], "1");
    h.complete(branches[1], "2");
    let joined = h.result(id, "fan");
    assert_eq!(joined["branches"][1]["item"], json!({"topic": "paxos"}));
    assert_eq!(joined["succeeded"], json!(2));
    h.complete(h.only(id, "aggregate"), "3");
    assert_eq!(h.state(id), WorkflowState::Succeeded);
}

#[test]
fn an_empty_list_joins_at_once_and_a_non_list_fails_naming_it() {
    let mut h = harness();
    let id = h.start(
        fan_then_aggregate(FanOutSource::Over(0), JoinPolicy::All, 0),
        "",
    );
    h.complete(h.only(id, "plan"), "[]");
    assert_eq!(h.step_state(id, "fan"), StepState::Succeeded);
    assert_eq!(h.open(id, "aggregate").len(), 1);

    let id = h.start(
        fan_then_aggregate(FanOutSource::Over(0), JoinPolicy::All, 0),
        "",
    );
    h.complete(h.only(id, "plan"), r#"{"not": "a list"}"#);
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert_eq!(
        h.wf(id).error,
        "step fan failed: fan_out.over: the result of plan is not a JSON array"
    );
}

#[test]
fn a_list_wider_than_the_limit_fails_naming_it() {
    let mut h = harness();
    let id = h.start(
        fan_then_aggregate(FanOutSource::Over(0), JoinPolicy::All, 0),
        "",
    );
    let items: Vec<String> = (0..=FAN_OUT_WIDTH_MAX).map(|i| i.to_string()).collect();
    h.complete(h.only(id, "plan"), &format!("[{}]", items.join(",")));
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert!(
        h.wf(id).error.ends_with("(FAN_OUT_WIDTH_MAX)"),
        "{}",
        h.wf(id).error
    );
}

#[test]
fn join_any_fires_once_and_cancels_the_rest() {
    let mut h = harness();
    let id = h.start(
        fan_then_aggregate(FanOutSource::Count(3), JoinPolicy::Any, 0),
        "",
    );
    h.complete(h.only(id, "plan"), "0");
    let branches = h.open(id, "fan");
    h.fail(branches[0]);
    assert_eq!(
        h.step_state(id, "fan"),
        StepState::Running,
        "any still possible"
    );
    h.complete(branches[1], "\"won\"");
    assert_eq!(h.step_state(id, "fan"), StepState::Succeeded);
    assert_eq!(
        h.canceled(),
        vec![vec![branches[2]]],
        "exactly the one still running"
    );
    let joined = h.result(id, "fan");
    assert_eq!(joined["branches"][2]["state"], json!("canceled"));
    assert_eq!(joined["failed"], json!(1));
    let joins = h
        .events(id)
        .iter()
        .filter(|e| e.0 == WorkflowEventKind::Joined)
        .count();
    assert_eq!(joins, 1);
    assert_eq!(h.open(id, "aggregate").len(), 1);
}

#[test]
fn join_at_least_k_fires_on_the_kth_success() {
    let mut h = harness();
    let id = h.start(
        fan_then_aggregate(FanOutSource::Count(5), JoinPolicy::AtLeast(3), 0),
        "",
    );
    h.complete(h.only(id, "plan"), "0");
    let branches = h.open(id, "fan");
    for &b in &branches[..2] {
        h.complete(b, "1");
    }
    h.fail(branches[2]);
    assert_eq!(h.step_state(id, "fan"), StepState::Running);
    h.complete(branches[3], "1");
    assert_eq!(h.step_state(id, "fan"), StepState::Succeeded);
    assert_eq!(h.canceled(), vec![vec![branches[4]]]);
    assert_eq!(h.result(id, "fan")["succeeded"], json!(3));
}

#[test]
fn a_join_that_can_no_longer_be_met_fails_the_workflow() {
    let mut h = harness();
    let id = h.start(
        fan_then_aggregate(FanOutSource::Count(3), JoinPolicy::AtLeast(2), 0),
        "",
    );
    h.complete(h.only(id, "plan"), "0");
    let branches = h.open(id, "fan");
    h.fail(branches[0]);
    h.fail(branches[1]);
    assert_eq!(h.step_state(id, "fan"), StepState::Failed);
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert_eq!(h.canceled(), vec![vec![branches[2]]]);
    assert_eq!(
        h.wf(id).steps[1].error,
        "the join needs 2 of 3 branches to succeed; 0 did, 2 failed, 0 timed out, 0 were canceled, \
         1 still running"
    );
}

#[test]
fn a_partial_deadline_takes_what_has_finished_exactly_once() {
    let mut h = harness();
    let def = fan_then_aggregate(FanOutSource::Count(5), JoinPolicy::AtLeast(3), 120_000);
    let id = h.start(def, "");
    h.complete(h.only(id, "plan"), "0");
    let branches = h.open(id, "fan");
    h.complete(branches[0], "\"r0\"");
    h.fail(branches[1]);
    h.complete(branches[3], "\"r3\"");
    assert_eq!(h.workflows.next_due_ms(T0), Some(T0 + 120_000));
    h.tick(T0 + 119_999, &retention());
    assert_eq!(h.step_state(id, "fan"), StepState::Running);
    h.tick(T0 + 120_000, &retention());
    assert_eq!(
        h.step_state(id, "fan"),
        StepState::Succeeded,
        "partial results"
    );
    assert_eq!(h.canceled(), vec![vec![branches[2], branches[4]]]);
    let aggregate = h.only(id, "aggregate");
    let joined = &h.payload(aggregate)["results"]["fan"];
    let states: Vec<&str> = (0..5)
        .map(|i| joined["branches"][i]["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["succeeded", "failed", "timed_out", "succeeded", "timed_out"]
    );
    assert_eq!(joined["timed_out"], json!(2));
    let joins = h
        .events(id)
        .iter()
        .filter(|e| e.0 == WorkflowEventKind::Joined)
        .count();
    assert_eq!(joins, 1, "the join fires once");
    h.tick(T0 + 240_000, &retention());
    assert_eq!(h.open(id, "aggregate"), vec![aggregate]);
}

#[test]
fn a_partial_deadline_with_no_success_fails() {
    let mut h = harness();
    let def = fan_then_aggregate(FanOutSource::Count(2), JoinPolicy::All, 1_000);
    let id = h.start(def, "");
    h.complete(h.only(id, "plan"), "0");
    let branches = h.open(id, "fan");
    h.fail(branches[0]);
    assert_eq!(
        h.step_state(id, "fan"),
        StepState::Running,
        "a deadline waits"
    );
    h.tick(T0 + 1_000, &retention());
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert_eq!(h.canceled(), vec![vec![branches[1]]]);
}

// ---- Decisions and branches ----

fn vote_then_branch() -> Definition {
    definition(vec![
        task("draft", &[]),
        vote("vote", &[0]),
        when(task("publish", &[1]), 1, "yes"),
        when(task("archive", &[1]), 1, "no"),
        task("after-publish", &[2]),
        task("notify", &[2, 3]),
    ])
}

#[test]
fn a_decision_step_waits_for_input_then_branches() {
    let mut h = harness();
    let id = h.start(vote_then_branch(), "");
    h.complete(h.only(id, "draft"), "\"text\"");
    assert_eq!(
        h.state(id),
        WorkflowState::Waiting,
        "only a decision is open"
    );
    let (_, step, decision_id, spec) = h.decisions[0].clone();
    assert_eq!(step, 1);
    assert_eq!(spec.options, ["yes", "no"]);
    assert_eq!(spec.deadline_ms, T0 + DEFAULT_DECISION_DEADLINE_MS);
    assert!(h
        .events(id)
        .contains(&(WorkflowEventKind::Waiting, String::new())));
    h.close_decision(decision_id, DecisionStatus::Decided, "no");
    assert_eq!(h.state(id), WorkflowState::Running);
    assert_eq!(h.step_state(id, "publish"), StepState::Skipped);
    assert_eq!(
        h.step_state(id, "after-publish"),
        StepState::Skipped,
        "every step it follows was skipped"
    );
    let archive = h.only(id, "archive");
    assert_eq!(
        h.payload(archive)["results"]["vote"],
        json!({"decision_id": decision_id, "status": "decided", "outcome": "no"})
    );
    h.complete(archive, "1");
    let notify = h.only(id, "notify");
    assert_eq!(
        h.payload(notify)["results"],
        json!({"publish": null, "archive": 1}),
        "a skipped step's result is null"
    );
    h.complete(notify, "1");
    assert_eq!(h.state(id), WorkflowState::Succeeded);
}

#[test]
fn the_branch_taken_runs_and_the_other_is_skipped() {
    let mut h = harness();
    let id = h.start(vote_then_branch(), "");
    h.complete(h.only(id, "draft"), "1");
    h.close_decision(1, DecisionStatus::Decided, "yes");
    assert_eq!(h.step_state(id, "archive"), StepState::Skipped);
    h.complete(h.only(id, "publish"), "1");
    assert_eq!(h.open(id, "after-publish").len(), 1);
    assert_eq!(h.open(id, "notify").len(), 1);
}

#[test]
fn a_rejected_or_unopened_decision_fails_the_workflow() {
    let mut h = harness();
    let id = h.start(vote_then_branch(), "");
    h.complete(h.only(id, "draft"), "1");
    h.close_decision(1, DecisionStatus::Rejected, "");
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert_eq!(
        h.wf(id).error,
        "step vote failed: the decision was rejected"
    );

    h.refuse_decisions = Some("no live agent has capability \"reviewer\"".into());
    let id = h.start(vote_then_branch(), "");
    h.complete(h.only(id, "draft"), "1");
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert!(h
        .wf(id)
        .error
        .contains("the decision was not opened: no live agent"));
}

// ---- Failure, compensation, cancel, retry ----

/// a (undone by undo-a) -> b (undone by undo-b) -> c; c fails.
fn saga() -> Definition {
    definition(vec![
        compensated(task("a", &[]), 3),
        compensated(task("b", &[0]), 4),
        task("c", &[1]),
        compensation("undo-a"),
        compensation("undo-b"),
    ])
}

#[test]
fn a_failure_runs_the_compensations_in_reverse_order_then_fails() {
    let mut h = harness();
    let id = h.start(saga(), "");
    assert!(
        h.open(id, "undo-a").is_empty(),
        "compensations never run in the flow"
    );
    h.complete(h.only(id, "a"), "\"A\"");
    h.complete(h.only(id, "b"), "\"B\"");
    h.fail(h.only(id, "c"));
    assert_eq!(h.state(id), WorkflowState::Compensating);
    assert!(h.open(id, "undo-a").is_empty(), "one at a time, b's first");
    let undo_b = h.only(id, "undo-b");
    assert_eq!(
        h.payload(undo_b),
        json!({"workflow_id": id, "workflow": "wf", "step": "undo-b", "input": null,
               "params": null, "results": {"b": "B"}, "compensating": "b"})
    );
    h.complete(undo_b, "1");
    let undo_a = h.only(id, "undo-a");
    h.fail(undo_a);
    assert_eq!(
        h.state(id),
        WorkflowState::Failed,
        "a failed compensation still ends it"
    );
    assert_eq!(
        h.wf(id).error,
        "step c failed: dead-lettered (AttemptsExhausted): boom"
    );
    let compensations: Vec<(u32, BranchState)> = h
        .wf(id)
        .compensations
        .iter()
        .map(|c| (c.step, c.state))
        .collect();
    assert_eq!(
        compensations,
        [(1, BranchState::Succeeded), (0, BranchState::Failed)]
    );
}

#[test]
fn cancel_in_the_middle_of_a_fan_out_cancels_exactly_the_running_tasks() {
    let mut h = harness();
    let def = definition(vec![
        compensated(task("plan", &[]), 3),
        fan("fan", &[0], FanOutSource::Count(4), JoinPolicy::All, 0),
        task("aggregate", &[1]),
        compensation("unplan"),
    ]);
    let id = h.start(def, "");
    h.complete(h.only(id, "plan"), "1");
    let branches = h.open(id, "fan");
    h.complete(branches[0], "1");
    h.fail(branches[1]);
    assert_eq!(
        h.step_state(id, "fan"),
        StepState::Failed,
        "all can no longer be met"
    );
    assert_eq!(h.state(id), WorkflowState::Compensating);
    assert_eq!(h.canceled(), vec![vec![branches[2], branches[3]]]);

    let id = h.start(saga_fan(), "");
    h.complete(h.only(id, "plan"), "1");
    let branches = h.open(id, "fan");
    h.complete(branches[0], "1");
    h.raised.clear();
    let response = h.apply(WorkflowCommand::Cancel {
        workflow_id: id,
        reason: "the user changed their mind".into(),
    });
    assert_eq!(
        response,
        WorkflowResponse::Canceled {
            canceled: true,
            state: WorkflowState::Compensating
        }
    );
    assert_eq!(h.canceled(), vec![branches[1..].to_vec()]);
    assert_eq!(h.step_state(id, "fan"), StepState::Canceled);
    h.complete(h.only(id, "unplan"), "1");
    assert_eq!(h.state(id), WorkflowState::Canceled);
    assert_eq!(h.wf(id).error, "the user changed their mind");
    let again = h.apply(WorkflowCommand::Cancel {
        workflow_id: id,
        reason: String::new(),
    });
    assert_eq!(
        again,
        WorkflowResponse::Canceled {
            canceled: false,
            state: WorkflowState::Canceled
        }
    );
}

fn saga_fan() -> Definition {
    definition(vec![
        compensated(task("plan", &[]), 3),
        fan("fan", &[0], FanOutSource::Count(4), JoinPolicy::All, 0),
        task("aggregate", &[1]),
        compensation("unplan"),
    ])
}

#[test]
fn retry_runs_a_failed_workflow_again_from_its_failed_steps() {
    let mut h = harness();
    let id = h.start(pipeline(), "");
    h.complete(h.only(id, "research"), "\"notes\"");
    let write = h.only(id, "write");
    h.fail(write);
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert_eq!(
        h.apply(WorkflowCommand::Retry { workflow_id: id }),
        WorkflowResponse::Retried {
            state: WorkflowState::Running
        }
    );
    assert_eq!(h.step_state(id, "research"), StepState::Succeeded, "kept");
    let write = h.only(id, "write");
    assert_eq!(h.payload(write)["results"], json!({"research": "notes"}));
    assert_eq!(h.wf(id).steps[1].runs, 2);
    h.complete(write, "1");
    h.complete(h.only(id, "edit"), "1");
    assert_eq!(h.state(id), WorkflowState::Succeeded);
    assert_eq!(h.wf(id).retries, 1);
    assert_eq!(
        h.apply(WorkflowCommand::Retry { workflow_id: id }),
        WorkflowResponse::NotRetryable {
            state: WorkflowState::Succeeded
        }
    );
    assert_eq!(
        h.apply(WorkflowCommand::Retry { workflow_id: 99 }),
        WorkflowResponse::UnknownWorkflow { workflow_id: 99 }
    );
}

#[test]
fn retry_runs_compensated_steps_again() {
    let mut h = harness();
    let id = h.start(saga(), "");
    h.complete(h.only(id, "a"), "1");
    h.complete(h.only(id, "b"), "1");
    h.fail(h.only(id, "c"));
    h.complete(h.only(id, "undo-b"), "1");
    h.complete(h.only(id, "undo-a"), "1");
    assert_eq!(h.state(id), WorkflowState::Failed);
    h.apply(WorkflowCommand::Retry { workflow_id: id });
    assert_eq!(
        h.open(id, "a").len(),
        1,
        "its effect was undone, so it runs again"
    );
    assert!(h.wf(id).compensations.is_empty());
}

// ---- Deadlines ----

#[test]
fn the_workflow_deadline_times_it_out() {
    let mut h = harness();
    let mut def = saga();
    def.deadline_ms = 600_000;
    let id = h.start(def, "");
    assert_eq!(h.wf(id).deadline_ms, T0 + 600_000);
    h.complete(h.only(id, "a"), "1");
    let b = h.only(id, "b");
    assert_eq!(
        h.tasks[&b].spec.deadline_ms,
        T0 + 600_000,
        "a step's task never outlives its workflow"
    );
    h.tick(T0 + 600_000, &retention());
    assert_eq!(h.step_state(id, "b"), StepState::TimedOut);
    assert_eq!(h.canceled(), vec![vec![b]]);
    h.complete(h.only(id, "undo-a"), "1");
    assert_eq!(h.state(id), WorkflowState::TimedOut);
    assert_eq!(h.wf(id).error, "the workflow deadline passed");
    h.apply(WorkflowCommand::Retry { workflow_id: id });
    assert_eq!(
        h.wf(id).deadline_ms,
        T0 + 1_200_000,
        "a retry gets a new deadline"
    );
}

// ---- Start, limits, retention ----

#[test]
fn start_is_idempotent_by_key() {
    let mut h = harness();
    let start = || WorkflowCommand::Start {
        definition: pipeline(),
        input: String::new(),
        idempotency_key: "job-1".into(),
        deadline_ms: 0,
    };
    let first = h.apply(start());
    assert_eq!(
        first,
        WorkflowResponse::Started {
            workflow_id: 1,
            existing: false
        }
    );
    assert_eq!(
        h.apply(start()),
        WorkflowResponse::Started {
            workflow_id: 1,
            existing: true
        }
    );
    assert_eq!(h.tasks.len(), 1, "nothing new was started");
}

#[test]
fn too_many_open_workflows_are_refused_by_name() {
    let mut h = harness();
    let tiny = definition(vec![task("t", &[])]);
    for _ in 0..WORKFLOWS_OPEN_MAX {
        h.start(tiny.clone(), "");
    }
    let refused = h.apply(WorkflowCommand::Start {
        definition: tiny,
        input: String::new(),
        idempotency_key: String::new(),
        deadline_ms: 0,
    });
    let WorkflowResponse::QuotaExceeded { reason } = refused else {
        panic!("{refused:?}");
    };
    assert!(reason.ends_with("(WORKFLOWS_OPEN_MAX)"), "{reason}");
    h.complete(1, "1");
    assert_eq!(h.workflows.open_count(), WORKFLOWS_OPEN_MAX - 1);
}

#[test]
fn bytes_per_instance_are_bounded_by_name() {
    let mut h = harness();
    let big = format!("\"{}\"", "x".repeat(WORKFLOW_BYTES_MAX));
    let refused = h.apply(WorkflowCommand::Start {
        definition: pipeline(),
        input: big,
        idempotency_key: String::new(),
        deadline_ms: 0,
    });
    let WorkflowResponse::Invalid { reason } = refused else {
        panic!("{refused:?}");
    };
    assert!(reason.ends_with("(WORKFLOW_BYTES_MAX)"), "{reason}");
    let not_json = h.apply(WorkflowCommand::Start {
        definition: pipeline(),
        input: "{".into(),
        idempotency_key: String::new(),
        deadline_ms: 0,
    });
    assert_eq!(
        not_json,
        WorkflowResponse::Invalid {
            reason: "input: not JSON".into()
        }
    );

    // Ten parallel steps of 900,000-byte results: the tenth takes the instance past 8 MiB.
    let parallel = (0..10).map(|i| task(&format!("s{i}"), &[])).collect();
    let id = h.start(definition(parallel), "");
    let result = format!("\"{}\"", "y".repeat(900_000));
    for i in 0..9 {
        h.complete(h.only(id, &format!("s{i}")), &result);
    }
    assert_eq!(h.state(id), WorkflowState::Running);
    h.complete(h.only(id, "s9"), &result);
    assert_eq!(h.state(id), WorkflowState::Failed);
    assert!(
        h.wf(id).error.ends_with("(WORKFLOW_BYTES_MAX)"),
        "{}",
        h.wf(id).error
    );
    assert!(h.wf(id).bytes <= WORKFLOW_BYTES_MAX as u64);

    // An input too large for a step's payload fails the step, naming the task limit.
    let input = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
    let id = h.start(pipeline(), &input);
    assert!(
        h.wf(id).error.ends_with("(MAX_PAYLOAD_BYTES)"),
        "{}",
        h.wf(id).error
    );
}

#[test]
fn a_broken_structure_is_refused_not_panicked_on() {
    let mut h = harness();
    let forward = definition(vec![task("a", &[1]), task("b", &[])]);
    let refused = h.apply(WorkflowCommand::Start {
        definition: forward,
        input: String::new(),
        idempotency_key: String::new(),
        deadline_ms: 0,
    });
    assert!(matches!(refused, WorkflowResponse::Invalid { .. }));
    assert_eq!(h.workflows.open_count(), 0);
}

#[test]
fn finished_workflows_are_forgotten_after_the_retention() {
    let mut h = harness();
    let start = |key: &str| WorkflowCommand::Start {
        definition: definition(vec![task("t", &[])]),
        input: String::new(),
        idempotency_key: key.into(),
        deadline_ms: 0,
    };
    h.apply(start("k"));
    h.complete(1, "1");
    assert_eq!(h.state(1), WorkflowState::Succeeded);
    h.tick(T0 + 1, &retention());
    assert_eq!(h.workflows.next_due_ms(T0 + 1), Some(T0 + 60_000));
    h.tick(T0 + 59_999, &retention());
    assert!(h.workflows.get(1).is_some());
    h.tick(T0 + 60_000, &retention());
    assert!(h.workflows.get(1).is_none());
    assert_eq!(h.workflows.next_due_ms(T0 + 60_000), None);
    assert_eq!(
        h.apply(start("k")),
        WorkflowResponse::Started {
            workflow_id: 2,
            existing: false
        },
        "the key went with the workflow"
    );
}

#[test]
fn finished_workflows_beyond_the_count_are_forgotten_oldest_first() {
    let mut h = harness();
    for _ in 0..3 {
        let id = h.start(definition(vec![task("t", &[])]), "");
        h.complete(h.only(id, "t"), "1");
        h.now_ms += 1;
    }
    let keep_two = Retention {
        finished_max: 2,
        ..Retention::default()
    };
    h.tick(h.now_ms, &keep_two);
    assert!(h.workflows.get(1).is_none());
    assert!(h.workflows.get(2).is_some() && h.workflows.get(3).is_some());
}

#[test]
fn equal_histories_give_equal_digests() {
    let run = || {
        let mut h = harness();
        let id = h.start(vote_then_branch(), "{}");
        h.complete(h.only(id, "draft"), "1");
        h.close_decision(1, DecisionStatus::Decided, "yes");
        h.workflows.digest()
    };
    assert_eq!(run(), run());
    let mut h = harness();
    let before = h.workflows.digest();
    h.start(pipeline(), "");
    assert_ne!(h.workflows.digest(), before);
}
