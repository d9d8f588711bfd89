//! Workflows end to end through `StateMachine::apply`: the real Tasks, Agents and Decisions answer
//! the workflow effects, the scheduler's plan (`plan_assignments`) is applied as `Assign`, and
//! agents complete their tasks with their fencing tokens. Each test checks what one committed
//! entry does as a whole: the result recorded, the join fired, the next step submitted.

use serde_json::{json, Value};

use super::definition::{FanOutSource, JoinPolicy};
use super::tests::{compensated, compensation, definition, fan, pipeline, task, vote, when};
use super::*;
use crate::raft::{decode, encode};
use crate::state_machine::coordination::{
    AgentSpec, CoordCommand, CoordResponse, DecisionStatus, FencingToken, SessionId, StepOrigin,
    Task, TaskEventKind, TaskState,
};
use crate::state_machine::{Command, Request, Response, StateMachine};

const T0: u64 = 1_000_000;

struct Cluster {
    sm: StateMachine,
    index: u64,
    now_ms: u64,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            sm: StateMachine::new(1000),
            index: 0,
            now_ms: T0,
        }
    }

    fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let request = Request {
            now_ms: self.now_ms,
            request_id: None,
            fence: None,
            command,
        };
        let response = self.sm.apply(self.index, &request);
        self.sm.tasks().check_invariants();
        self.sm.agents().check_invariants();
        response
    }

    fn run(&mut self, command: CoordCommand) -> CoordResponse {
        match self.apply(Command::Coordination(command)) {
            Response::Coordination { response, .. } => response,
            other => panic!("coordination answers Coordination, not {other:?}"),
        }
    }

    fn workflow(&mut self, command: WorkflowCommand) -> WorkflowResponse {
        match self.apply(Command::Workflows(command)) {
            Response::Workflows { response, .. } => response,
            other => panic!("workflows answer Workflows, not {other:?}"),
        }
    }

    fn register(&mut self, name: &str, capabilities: &[&str], max_concurrent: u32) -> SessionId {
        let spec = AgentSpec {
            name: name.into(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            labels: Default::default(),
            max_concurrent,
            version: "1".into(),
            metadata: Default::default(),
            ttl_ms: 1_000_000,
            replace: false,
            breaker_failures: 3,
            breaker_cooldown_ms: 30_000,
        };
        match self.run(CoordCommand::RegisterAgent(spec)) {
            CoordResponse::Registered { session_id, .. } => session_id,
            other => panic!("register: {other:?}"),
        }
    }

    fn start(&mut self, definition: Definition, input: &str) -> WorkflowId {
        match self.workflow(WorkflowCommand::Start {
            definition,
            input: input.into(),
            idempotency_key: String::new(),
            deadline_ms: 0,
        }) {
            WorkflowResponse::Started {
                workflow_id,
                existing: false,
            } => workflow_id,
            other => panic!("start: {other:?}"),
        }
    }

    /// What the leader's scheduler does: plans, and applies the plan as one `Assign`. Returns
    /// the assignments that took, with their tokens.
    fn schedule(&mut self) -> Vec<(TaskId, FencingToken)> {
        let plan = self.sm.plan_assignments(self.now_ms, 100);
        if plan.is_empty() {
            return Vec::new();
        }
        let CoordResponse::Assigned { tokens } = self.run(CoordCommand::Assign {
            assignments: plan.clone(),
        }) else {
            panic!("assign answers Assigned");
        };
        plan.iter()
            .zip(tokens)
            .filter_map(|(&(task_id, _), token)| token.map(|t| (task_id, t)))
            .collect()
    }

    fn complete(&mut self, task_id: TaskId, token: FencingToken, result: &str) -> CoordResponse {
        self.run(CoordCommand::Complete {
            task_id,
            token,
            result: result.as_bytes().to_vec(),
        })
    }

    fn tick(&mut self, refresh: bool, retention: Retention) {
        let response = self.run(CoordCommand::Tick { refresh, retention });
        assert!(
            matches!(response, CoordResponse::Ticked { .. }),
            "{response:?}"
        );
    }

    fn wf(&self, id: WorkflowId) -> &Workflow {
        self.sm.workflows().get(id).expect("a workflow")
    }

    fn step(&self, id: WorkflowId, name: &str) -> &StepRun {
        let index = self.index_of(id, name);
        &self.wf(id).steps[index]
    }

    fn index_of(&self, id: WorkflowId, name: &str) -> usize {
        let steps = &self.wf(id).definition.steps;
        steps.iter().position(|s| s.name == name).expect("a step")
    }

    fn task(&self, task_id: TaskId) -> &Task {
        self.sm.tasks().task(task_id).expect("a task")
    }

    /// The tasks of a step, in id order.
    fn tasks_of(&self, id: WorkflowId, name: &str) -> Vec<TaskId> {
        let step = self.index_of(id, name) as u32;
        let (last, _) = self.sm.tasks().last_ids();
        (1..=last)
            .filter(|&t| {
                let origin = self.sm.tasks().task(t).and_then(|t| t.origin);
                origin.is_some_and(|o| o.workflow_id == id && o.step == step)
            })
            .collect()
    }

    /// The one task of a step.
    fn only(&self, id: WorkflowId, name: &str) -> TaskId {
        let tasks = self.tasks_of(id, name);
        assert_eq!(tasks.len(), 1, "one task of {name}: {tasks:?}");
        tasks[0]
    }

    fn payload(&self, task_id: TaskId) -> Value {
        serde_json::from_slice(&self.task(task_id).spec.payload).expect("a JSON payload")
    }

    fn token(&self, task_id: TaskId) -> FencingToken {
        self.task(task_id).lease.as_ref().expect("assigned").token
    }

    /// Every event after `seq`, as short words: the tasks' and workflows' ones.
    fn events_after(&self, seq: u64) -> Vec<String> {
        self.sm
            .events_after(seq)
            .expect("kept")
            .into_iter()
            .filter_map(|e| match &e.kind {
                CoordEventKind::Task {
                    task_id,
                    kind,
                    revoked,
                    ..
                } => Some(format!(
                    "task {task_id} {kind:?}{}",
                    if revoked.is_some() { " revoked" } else { "" }
                )),
                CoordEventKind::Workflow(w) => Some(format!("workflow {:?} {}", w.kind, w.step)),
                _ => None,
            })
            .collect()
    }
}

fn retention() -> Retention {
    Retention {
        finished_max: 0,
        finished_age_ms: 60_000,
        ..Retention::default()
    }
}

#[test]
fn a_pipeline_runs_through_the_tasks_each_step_reading_the_earlier_results() {
    let mut c = Cluster::new();
    c.register("worker", &[], 4);
    let id = c.start(pipeline(), r#"{"topic":"raft"}"#);
    let research = c.only(id, "research");
    assert_eq!(c.task(research).state, TaskState::Pending);
    assert_eq!(c.payload(research)["input"], json!({"topic": "raft"}));
    assert_eq!(c.schedule(), [(research, c.token(research))]);

    tracing::info!("the entry that completes research records its result and submits write");
    let token = c.token(research);
    let response = c.complete(research, token, r#"{"notes":[1,2]}"#);
    assert!(matches!(
        response,
        CoordResponse::Verb {
            state: TaskState::Succeeded,
            ..
        }
    ));
    assert_eq!(c.step(id, "research").state, StepState::Succeeded);
    let write = c.only(id, "write");
    assert_eq!(c.task(write).state, TaskState::Pending);
    assert_eq!(
        c.payload(write)["results"],
        json!({"research": {"notes": [1, 2]}})
    );
    c.schedule();
    c.complete(write, c.token(write), "\"draft\"");
    let edit = c.only(id, "edit");
    assert_eq!(
        c.task(edit).origin,
        Some(StepOrigin {
            workflow_id: id,
            step: 2,
            branch: 0
        })
    );
    assert_eq!(c.payload(edit)["results"], json!({"write": "draft"}));
    c.schedule();
    c.complete(edit, c.token(edit), "\"final\"");
    assert_eq!(c.wf(id).state, WorkflowState::Succeeded);
    assert_eq!(c.step(id, "edit").result, "\"final\"");
    assert!(c.sm.agents().agent("worker").unwrap().running.is_empty());

    tracing::info!("a finished workflow is forgotten by the Tick's retention, like a task");
    c.tick(false, retention());
    assert!(c.sm.workflows().get(id).is_some());
    assert_eq!(c.sm.next_due_ms(), Some(T0 + 60_000));
    c.now_ms = T0 + 60_000;
    c.tick(false, retention());
    assert!(c.sm.workflows().get(id).is_none());
}

fn fan_then_aggregate(width: u32, policy: JoinPolicy) -> Definition {
    definition(vec![
        fan("fan", &[], FanOutSource::Count(width), policy, 0),
        task("aggregate", &[0]),
    ])
}

#[test]
fn an_at_least_2_of_3_join_fires_once_and_cancels_the_third_branch() {
    let mut c = Cluster::new();
    let sessions = [
        c.register("a1", &[], 1),
        c.register("a2", &[], 1),
        c.register("a3", &[], 1),
    ];
    let id = c.start(fan_then_aggregate(3, JoinPolicy::AtLeast(2)), "");
    let branches = c.tasks_of(id, "fan");
    assert_eq!(branches.len(), 3);
    assert_eq!(c.schedule().len(), 3, "one branch per agent");
    let holder = |c: &Cluster, t: TaskId| c.task(t).lease.as_ref().unwrap().session_id;
    let third_session = holder(&c, branches[2]);
    assert!(sessions.contains(&third_session));

    c.complete(branches[0], c.token(branches[0]), "1");
    assert_eq!(c.step(id, "fan").state, StepState::Running, "1 of 2 needed");
    let seq = c.sm.last_event_seq();
    c.complete(branches[1], c.token(branches[1]), "2");

    tracing::info!("that entry joined, canceled the third branch (its lease revoked) and submitted the aggregator");
    assert_eq!(c.step(id, "fan").state, StepState::Succeeded);
    assert_eq!(c.task(branches[2]).state, TaskState::Canceled);
    assert!(c.sm.tasks().assignments(third_session).is_empty());
    let aggregate = c.only(id, "aggregate");
    let events = c.events_after(seq);
    let position = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e} in {events:?}"))
    };
    let succeeded = position(&format!("task {} Succeeded", branches[1]));
    let joined = position("workflow Joined fan");
    let canceled = position(&format!("task {} Canceled revoked", branches[2]));
    let submitted = position(&format!("task {aggregate} Submitted"));
    assert!(
        succeeded < joined && joined < canceled && canceled < submitted,
        "{events:?}"
    );
    let joins = events
        .iter()
        .filter(|e| e.starts_with("workflow Joined"))
        .count();
    assert_eq!(joins, 1);
    let results = &c.payload(aggregate)["results"]["fan"];
    assert_eq!(results["succeeded"], json!(2), "{results}");
    assert_eq!(results["canceled"], json!(1), "{results}");

    tracing::info!("the third agent's late completion is refused: its lease was revoked");
    let stale = c.task(branches[2]).last_token;
    let before = c.sm.digest();
    let response = c.complete(branches[2], stale, "3");
    assert!(
        matches!(response, CoordResponse::LeaseLost { .. }),
        "{response:?}"
    );
    assert_eq!(c.sm.digest(), before);
    c.schedule();
    c.complete(aggregate, c.token(aggregate), "\"sum\"");
    assert_eq!(c.wf(id).state, WorkflowState::Succeeded);
    let joins = c
        .events_after(0)
        .iter()
        .filter(|e| e.starts_with("workflow Joined"))
        .count();
    assert_eq!(joins, 1, "the join fired once");
}

#[test]
fn a_stale_tokens_complete_is_refused_and_records_nothing() {
    let mut c = Cluster::new();
    c.register("worker", &[], 1);
    let id = c.start(pipeline(), "");
    let research = c.only(id, "research");
    c.schedule();
    let old = c.token(research);
    let response = c.run(CoordCommand::Release {
        task_id: research,
        token: old,
    });
    assert!(
        matches!(response, CoordResponse::Verb { .. }),
        "{response:?}"
    );
    c.schedule();
    let current = c.token(research);
    assert!(current > old);

    let (workflows, digest) = (c.sm.workflows().clone(), c.sm.digest());
    let response = c.complete(research, old, "\"stale\"");
    assert!(
        matches!(response, CoordResponse::LeaseLost { .. }),
        "{response:?}"
    );
    assert_eq!(c.sm.workflows(), &workflows, "no result recorded");
    assert_eq!(c.sm.digest(), digest);
    assert!(c.tasks_of(id, "write").is_empty());

    c.complete(research, current, "\"fresh\"");
    assert_eq!(c.step(id, "research").result, "\"fresh\"");
    assert_eq!(c.tasks_of(id, "write").len(), 1);
}

#[test]
fn a_decision_step_waits_for_the_votes_then_runs_its_when_branch() {
    let mut c = Cluster::new();
    c.register("worker", &[], 4);
    let r1 = c.register("r1", &["reviewer"], 1);
    let r2 = c.register("r2", &["reviewer"], 1);
    let def = definition(vec![
        task("draft", &[]),
        vote("vote", &[0]),
        when(task("publish", &[1]), 1, "yes"),
        when(task("archive", &[1]), 1, "no"),
    ]);
    let id = c.start(def, "");
    c.schedule();
    let draft = c.only(id, "draft");
    c.complete(draft, c.token(draft), "\"text\"");

    tracing::info!("the decision opened in the completing entry; the workflow waits for input");
    assert_eq!(c.wf(id).state, WorkflowState::Waiting);
    let decision_id = c.step(id, "vote").decision_id;
    let decision = c.sm.decisions().decision(decision_id).expect("opened");
    assert!(decision.is_open());
    assert_eq!(decision.voters, ["r1", "r2"]);
    assert!(c.schedule().is_empty(), "nothing runs while it waits");

    for session_id in [r1, r2] {
        let response = c.run(CoordCommand::Vote {
            session_id,
            decision_id,
            choice: "yes".into(),
            rationale: "fine".into(),
        });
        assert!(
            matches!(response, CoordResponse::Voted { .. }),
            "{response:?}"
        );
    }
    tracing::info!("the vote that decided also started publish and skipped archive");
    assert_eq!(c.step(id, "vote").outcome, "yes");
    assert_eq!(c.step(id, "archive").state, StepState::Skipped);
    let publish = c.only(id, "publish");
    assert_eq!(
        c.payload(publish)["results"]["vote"]["outcome"],
        json!("yes")
    );
    c.schedule();
    c.complete(publish, c.token(publish), "1");
    assert_eq!(c.wf(id).state, WorkflowState::Succeeded);
}

#[test]
fn a_dead_lettered_step_fails_the_workflow_after_its_compensation() {
    let mut c = Cluster::new();
    c.register("worker", &[], 4);
    let def = definition(vec![
        compensated(task("book", &[]), 2),
        task("pay", &[0]),
        compensation("unbook"),
    ]);
    let id = c.start(def, "");
    c.schedule();
    let book = c.only(id, "book");
    c.complete(book, c.token(book), "\"booking-7\"");
    c.schedule();
    let pay = c.only(id, "pay");
    let response = c.run(CoordCommand::Fail {
        task_id: pay,
        token: c.token(pay),
        error: "card declined".into(),
        retryable: false,
        retry_after_ms: 0,
    });
    assert!(matches!(
        response,
        CoordResponse::Verb {
            state: TaskState::DeadLettered,
            ..
        }
    ));

    tracing::info!("the dead letter failed the step and submitted the compensation, in one entry");
    assert_eq!(c.step(id, "pay").state, StepState::Failed);
    assert_eq!(c.wf(id).state, WorkflowState::Compensating);
    let unbook = c.only(id, "unbook");
    assert_eq!(c.payload(unbook)["results"], json!({"book": "booking-7"}));
    assert_eq!(c.payload(unbook)["compensating"], json!("book"));
    c.schedule();
    c.complete(unbook, c.token(unbook), "1");
    assert_eq!(c.wf(id).state, WorkflowState::Failed);
    assert!(
        c.wf(id).error.contains("card declined"),
        "{}",
        c.wf(id).error
    );
    assert_eq!(c.wf(id).compensations[0].state, BranchState::Succeeded);
}

#[test]
fn cancel_in_the_middle_of_a_fan_out_cancels_exactly_the_running_tasks() {
    let mut c = Cluster::new();
    c.register("a1", &[], 1);
    c.register("a2", &[], 1);
    let id = c.start(fan_then_aggregate(3, JoinPolicy::All), "");
    let branches = c.tasks_of(id, "fan");
    assert_eq!(c.schedule().len(), 2, "two agents, one task each");
    let assigned: Vec<TaskId> = branches
        .iter()
        .copied()
        .filter(|&t| c.task(t).state == TaskState::Assigned)
        .collect();
    c.complete(assigned[0], c.token(assigned[0]), "1");
    let response = c.workflow(WorkflowCommand::Cancel {
        workflow_id: id,
        reason: "user".into(),
    });
    assert!(
        matches!(response, WorkflowResponse::Canceled { canceled: true, .. }),
        "{response:?}"
    );
    assert_eq!(c.wf(id).state, WorkflowState::Canceled);
    for &t in &branches {
        let expected = if t == assigned[0] {
            TaskState::Succeeded
        } else {
            TaskState::Canceled
        };
        assert_eq!(c.task(t).state, expected, "task {t}");
    }
    assert!(c.tasks_of(id, "aggregate").is_empty());
    for name in ["a1", "a2"] {
        assert!(c.sm.agents().agent(name).unwrap().running.is_empty());
    }
    assert!(c.schedule().is_empty());
    let response = c.workflow(WorkflowCommand::Cancel {
        workflow_id: id,
        reason: "again".into(),
    });
    assert!(matches!(
        response,
        WorkflowResponse::Canceled {
            canceled: false,
            ..
        }
    ));
    let response = c.workflow(WorkflowCommand::Retry { workflow_id: 99 });
    assert_eq!(
        response,
        WorkflowResponse::UnknownWorkflow { workflow_id: 99 }
    );
}

/// Runs a workflow to the end from `c`'s current state: schedules, then completes every task
/// assigned, in id order, one entry each. Returns the digest after every entry.
fn drive_to_the_end(c: &mut Cluster, id: WorkflowId) -> Vec<u64> {
    let mut digests = Vec::new();
    while !c.wf(id).state.is_terminal() {
        c.now_ms += 10;
        c.schedule();
        digests.push(c.sm.digest());
        let (last, _) = c.sm.tasks().last_ids();
        let assigned: Vec<TaskId> = (1..=last)
            .filter(|&t| {
                c.sm.tasks()
                    .task(t)
                    .is_some_and(|t| t.state == TaskState::Assigned)
            })
            .collect();
        assert!(!assigned.is_empty(), "progress: {:?}", c.wf(id));
        for task_id in assigned {
            c.now_ms += 10;
            c.complete(task_id, c.token(task_id), &task_id.to_string());
            digests.push(c.sm.digest());
        }
    }
    digests
}

#[test]
fn a_snapshot_taken_mid_workflow_continues_identically() {
    let mut c = Cluster::new();
    c.register("a1", &[], 1);
    c.register("a2", &[], 1);
    let id = c.start(fan_then_aggregate(3, JoinPolicy::All), "");
    let assigned = c.schedule();
    c.complete(assigned[0].0, assigned[0].1, "1");

    let bytes = encode(&c.sm);
    let restored: StateMachine = decode(&bytes).expect("decodes");
    assert_eq!(restored, c.sm);
    assert_eq!(restored.digest(), c.sm.digest());
    let mut copy = Cluster {
        sm: restored,
        index: c.index,
        now_ms: c.now_ms,
    };
    let original = drive_to_the_end(&mut c, id);
    let replica = drive_to_the_end(&mut copy, id);
    assert_eq!(original, replica);
    assert_eq!(c.sm, copy.sm);
    assert_eq!(c.wf(id).state, WorkflowState::Succeeded);
}

#[test]
fn a_leader_change_mid_workflow_only_extends_the_leases() {
    let mut c = Cluster::new();
    c.register("a1", &[], 1);
    c.register("a2", &[], 1);
    let id = c.start(fan_then_aggregate(3, JoinPolicy::All), "");
    let assigned = c.schedule();
    let workflow = c.wf(id).clone();
    let seq = c.sm.last_event_seq();

    c.now_ms += 5_000;
    c.tick(true, retention());
    assert_eq!(c.wf(id), &workflow, "the workflow is as it was");
    assert!(c.events_after(seq).is_empty(), "{:?}", c.events_after(seq));
    for &(task_id, token) in &assigned {
        let lease = c.task(task_id).lease.clone().expect("still assigned");
        assert_eq!(lease.token, token);
        assert!(lease.deadline_ms >= c.now_ms + 30_000, "refreshed");
    }
    drive_to_the_end(&mut c, id);
    assert_eq!(c.wf(id).state, WorkflowState::Succeeded);
    let kinds: Vec<String> = c.events_after(0);
    assert_eq!(
        kinds
            .iter()
            .filter(|e| e.contains(&format!(" {:?}", TaskEventKind::Canceled)))
            .count(),
        0
    );
}

/// A manager step delegating work: the workers' results reach the manager, a dead letter
/// escalates to it, and canceling the workflow cancels what it delegated, in the same entry.
#[test]
fn a_managers_step_delegates_escalates_and_is_canceled_with_its_subtree() {
    let mut c = Cluster::new();
    c.register("manager", &[], 1);
    c.register("worker", &["work"], 4);
    let id = c.start(definition(vec![task("manage", &[])]), "");
    let manager = c.only(id, "manage");
    let assigned = c.schedule();
    assert_eq!(assigned, vec![(manager, c.token(manager))]);
    let delegate = |specs: usize| CoordCommand::Delegate {
        parent: manager,
        token: assigned[0].1,
        tasks: (0..specs)
            .map(|i| crate::state_machine::coordination::TaskSpec {
                queue: "sections".into(),
                payload: format!("section {i}").into_bytes(),
                capabilities: ["work".to_string()].into(),
                max_attempts: 1,
                lease_ms: 30_000,
                ..Default::default()
            })
            .collect(),
        escalate_to: String::new(),
    };
    let CoordResponse::Submitted { results } = c.run(delegate(3)) else {
        panic!("delegated")
    };
    let children: Vec<TaskId> = results.iter().map(|r| r.0).collect();
    let workers = c.schedule();
    assert_eq!(workers.len(), 3);
    c.complete(children[0], c.token(children[0]), "\"done\"");
    c.run(CoordCommand::Fail {
        task_id: children[1],
        token: c.token(children[1]),
        error: "cannot".into(),
        retryable: false,
        retry_after_ms: 0,
    });
    let escalated = c.task(children[1]).delegation.as_ref().unwrap().escalation;
    assert_eq!(
        escalated,
        Some(crate::state_machine::coordination::Escalation::Manager)
    );
    assert_eq!(
        c.step(id, "manage").state,
        StepState::Running,
        "the manager decides"
    );

    let seq = c.sm.last_event_seq();
    c.workflow(WorkflowCommand::Cancel {
        workflow_id: id,
        reason: "stop".into(),
    });
    assert_eq!(c.task(manager).state, TaskState::Canceled);
    assert_eq!(c.task(children[2]).state, TaskState::Canceled);
    assert_eq!(
        c.task(children[0]).state,
        TaskState::Succeeded,
        "finished stays"
    );
    let events = c.events_after(seq);
    let manager_canceled = format!("task {manager} Canceled revoked");
    let child_canceled = format!("task {} Canceled revoked", children[2]);
    let position = |e: &str| events.iter().position(|x| x == e).expect(e);
    assert!(
        position(&manager_canceled) < position(&child_canceled),
        "{events:?}"
    );
    assert_eq!(c.wf(id).state, WorkflowState::Canceled);
}

/// A step's task that fails retryably runs again after its backoff; the step records the result
/// of the attempt that succeeded, once, and the failed attempt's late completion is refused.
#[test]
fn a_step_retries_its_task_and_records_the_attempt_that_succeeded() {
    let mut c = Cluster::new();
    c.register("worker", &[], 1);
    let id = c.start(pipeline(), "");
    let research = c.only(id, "research");
    c.schedule();
    let first = c.token(research);
    c.run(CoordCommand::Fail {
        task_id: research,
        token: first,
        error: "flaky".into(),
        retryable: true,
        retry_after_ms: 0,
    });
    assert_eq!(c.task(research).state, TaskState::RetryWait);
    assert_eq!(
        c.step(id, "research").state,
        StepState::Running,
        "not failed"
    );
    c.now_ms = c.task(research).ready_at_ms;
    c.tick(false, retention());
    c.schedule();
    let second = c.token(research);
    assert!(second > first);
    let stale = c.complete(research, first, "\"first\"");
    assert!(
        matches!(stale, CoordResponse::LeaseLost { .. }),
        "{stale:?}"
    );
    c.complete(research, second, "\"second\"");
    let step = c.step(id, "research");
    assert_eq!(
        (step.state, step.result.as_str()),
        (StepState::Succeeded, "\"second\"")
    );
    assert_eq!(step.runs, 1, "the step ran once; its task twice");
    assert_eq!(c.tasks_of(id, "write").len(), 1);
}

/// The workflow deadline is cluster time: a leader change (its refresh) does not move it, and it
/// fires at the same moment afterwards.
#[test]
fn a_workflow_deadline_holds_across_a_leader_change() {
    let mut c = Cluster::new();
    c.register("worker", &[], 1);
    let mut def = pipeline();
    def.deadline_ms = 60_000;
    let id = c.start(def, "");
    let deadline = c.wf(id).deadline_ms;
    assert_eq!(deadline, T0 + 60_000);
    c.schedule();
    c.now_ms += 20_000;
    c.tick(true, retention());
    assert_eq!(
        c.wf(id).deadline_ms,
        deadline,
        "a new leader keeps the deadline"
    );
    c.now_ms = deadline - 1;
    c.tick(false, retention());
    assert_eq!(c.wf(id).state, WorkflowState::Running);
    c.now_ms = deadline;
    c.tick(false, retention());
    assert_eq!(
        c.wf(id).state,
        WorkflowState::TimedOut,
        "{:?}",
        c.wf(id).error
    );
    assert_eq!(c.wf(id).error, "the workflow deadline passed");
    // Its task's deadline is the workflow's: it expired in the same tick.
    assert_eq!(c.task(c.only(id, "research")).state, TaskState::Expired);
    let timers = &c.sm.workflows().index.timers;
    assert!(timers.is_empty(), "no timer left: {timers:?}");
}

/// A workflow stopped while it waits for a vote withdraws the decision in the same entry: it
/// closes REJECTED with the reason, so no ballot stays open for a workflow that is gone.
#[test]
fn a_canceled_workflow_withdraws_its_open_decision() {
    let mut c = Cluster::new();
    let voter = c.register("r1", &["reviewer"], 1);
    let id = c.start(definition(vec![vote("vote", &[])]), "");
    assert_eq!(c.wf(id).state, WorkflowState::Waiting);
    let decision_id = c.step(id, "vote").decision_id;
    c.workflow(WorkflowCommand::Cancel {
        workflow_id: id,
        reason: "not needed".into(),
    });
    assert_eq!(c.wf(id).state, WorkflowState::Canceled);
    let decision = c.sm.decisions().decision(decision_id).expect("kept");
    assert_eq!(decision.status, DecisionStatus::Rejected);
    assert_eq!(
        decision.reason,
        format!("withdrawn by workflow {id}: not needed")
    );
    let late = c.run(CoordCommand::Vote {
        session_id: voter,
        decision_id,
        choice: "yes".into(),
        rationale: String::new(),
    });
    assert!(!matches!(late, CoordResponse::Voted { .. }), "{late:?}");
}
