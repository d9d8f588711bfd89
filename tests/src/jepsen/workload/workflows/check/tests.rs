//! The checker on hand-made histories: one pipeline and one fan-out that ran well, then each
//! property broken on its own.

use serde_json::{json, Value as Json};

use super::check;
use crate::jepsen::history::{Event, Script};
use crate::jepsen::workload::workflows::{step_result, NAME};
use crate::jepsen::workload::{Verdict, FINAL_READ};

/// A history under construction: processes are numbered as they are used.
struct History {
    script: Script,
    next: u64,
}

impl History {
    fn new() -> Self {
        Self {
            script: Script::new(NAME),
            next: 1,
        }
    }

    fn process(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn op(mut self, f: &str, invoke: Json, ok: Json) -> Self {
        let process = self.process();
        self.script = self.script.invoke(process, f, None, invoke).ok(process, ok);
        self
    }

    fn start(self, key: &str, id: u64) -> Self {
        self.op(
            "start",
            json!({"kind": "k", "key": key, "stale": false}),
            json!({"key": key, "id": id}),
        )
    }

    fn assign(self, task: u64, token: u64, workflow: u64, step: &str, results: Json) -> Self {
        let value = json!({"agent": "w", "task": task, "token": token, "attempt": 1,
            "workflow": workflow, "step": step, "branch": null, "results": results});
        self.op("assign", value.clone(), value)
    }

    fn complete(self, task: u64, token: u64) -> Self {
        let value = complete_value(task, token);
        let mut ok = value.clone();
        ok["state"] = json!("SUCCEEDED");
        self.op("complete", value, ok)
    }

    fn refused(mut self, task: u64, token: u64) -> Self {
        let process = self.process();
        self.script = self
            .script
            .invoke(process, "complete", None, complete_value(task, token))
            .fail_with(process, "lease lost: the lease expired");
        self
    }

    fn event(self, sequence: u64, kind: &str, workflow: u64, step: &str) -> Self {
        let value = json!({"sequence": sequence, "kind": kind, "workflow": workflow, "step": step, "state": "RUNNING"});
        self.op("event", value.clone(), value)
    }

    fn finals(self, workflows: &[Json], tasks: &[Json]) -> Self {
        self.op(
            FINAL_READ,
            json!({"consistency": "linearizable"}),
            json!({"consistency": "linearizable", "workflows": workflows}),
        )
        .op("final-tasks", json!({}), json!({"tasks": tasks}))
    }

    fn events(self) -> Vec<Event> {
        self.script.events()
    }
}

fn complete_value(task: u64, token: u64) -> Json {
    json!({"agent": "w", "task": task, "token": token, "attempt": 1,
        "result": step_result(task, 1, token, "w"), "stale": false})
}

fn result(task: u64, token: u64) -> String {
    step_result(task, 1, token, "w")
}

fn parsed(task: u64, token: u64) -> Json {
    serde_json::from_str(&result(task, token)).unwrap()
}

fn step(name: &str, after: &[&str], times: (u64, u64), task: u64, token: u64) -> Json {
    json!({"name": name, "after": after, "compensation": false, "join_k": null,
        "state": "SUCCEEDED", "started": times.0, "finished": times.1, "runs": 1,
        "result": result(task, token),
        "branches": [{"task": task, "state": "SUCCEEDED", "result": ""}]})
}

fn task(id: u64, workflow: u64, step: usize, branch: u64, state: &str, token: u64) -> Json {
    let succeeded = state == "SUCCEEDED";
    json!({"id": id, "state": state, "origin": [workflow, step, branch],
        "result": if succeeded { result(id, token) } else { String::new() },
        "history": [[1, token, if succeeded { "SUCCEEDED" } else { "CANCELED" }]]})
}

/// Workflow 1, the pipeline a (task 10) -> b (11) -> c (12).
fn pipeline_workflow(state: &str) -> Json {
    json!({"id": 1, "name": "p", "key": "s1", "state": state, "compensations": [], "steps": [
        step("a", &[], (100, 110), 10, 1),
        step("b", &["a"], (110, 120), 11, 2),
        step("c", &["b"], (120, 130), 12, 3),
    ]})
}

/// Workflow 2: plan (20) -> fan (21..=25, at least 3: 21-23 succeed) -> aggregate (26).
fn fan_out_workflow(succeeded: &[u64]) -> Json {
    let branches: Vec<Json> = (21..=25)
        .map(|task| {
            if succeeded.contains(&task) {
                json!({"task": task, "state": "SUCCEEDED", "result": result(task, task)})
            } else {
                json!({"task": task, "state": "CANCELED", "result": ""})
            }
        })
        .collect();
    let joined = json!({"succeeded": succeeded.len(), "canceled": 5 - succeeded.len()}).to_string();
    json!({"id": 2, "name": "f", "key": "s2", "state": "SUCCEEDED", "compensations": [], "steps": [
        step("plan", &[], (100, 110), 20, 20),
        {"name": "fan", "after": ["plan"], "compensation": false, "join_k": 3,
            "state": "SUCCEEDED", "started": 110, "finished": 130, "runs": 1,
            "result": joined, "branches": branches},
        step("aggregate", &["fan"], (130, 140), 26, 26),
    ]})
}

fn fan_out_tasks() -> Vec<Json> {
    let mut tasks = vec![task(20, 2, 0, 0, "SUCCEEDED", 20)];
    for id in 21..=25 {
        let state = if id <= 23 { "SUCCEEDED" } else { "CANCELED" };
        tasks.push(task(id, 2, 1, id - 21, state, id));
    }
    tasks.push(task(26, 2, 2, 0, "SUCCEEDED", 26));
    tasks
}

/// The pipeline's and the fan-out's runs, up to (not including) the final reads.
fn good_run() -> History {
    let joined = json!({"succeeded": 3, "canceled": 2});
    let mut history = History::new()
        .start("s1", 1)
        .start("s2", 2)
        .event(1, "STARTED_WORKFLOW", 1, "")
        .event(2, "STARTED_WORKFLOW", 2, "")
        .assign(10, 1, 1, "a", json!({}))
        .complete(10, 1)
        .event(3, "STEP_SUCCEEDED", 1, "a")
        .event(4, "STEP_STARTED", 1, "b")
        .assign(11, 2, 1, "b", json!({"a": parsed(10, 1)}))
        .complete(11, 2)
        .assign(12, 3, 1, "c", json!({"b": parsed(11, 2)}))
        .complete(12, 3)
        .event(5, "FINISHED", 1, "")
        .assign(20, 20, 2, "plan", json!({}))
        .complete(20, 20);
    for id in 21..=25 {
        history = history.assign(id, id, 2, "fan", json!({"plan": parsed(20, 20)}));
    }
    for id in 21..=23 {
        history = history.complete(id, id);
    }
    history
        .event(6, "JOINED", 2, "fan")
        .assign(26, 26, 2, "aggregate", json!({"fan": joined}))
        .complete(26, 26)
        .event(7, "FINISHED", 2, "")
}

fn pipeline_tasks() -> Vec<Json> {
    vec![
        task(10, 1, 0, 0, "SUCCEEDED", 1),
        task(11, 1, 1, 0, "SUCCEEDED", 2),
        task(12, 1, 2, 0, "SUCCEEDED", 3),
    ]
}

fn good_tasks() -> Vec<Json> {
    let mut tasks = pipeline_tasks();
    tasks.extend(fan_out_tasks());
    tasks
}

fn problems_of(events: &[Event]) -> Vec<String> {
    let result = check(events);
    if result.verdict == Verdict::Valid {
        Vec::new()
    } else {
        result.problems
    }
}

fn assert_invalid_with(events: &[Event], words: &str) {
    let result = check(events);
    assert_eq!(result.verdict, Verdict::Invalid, "{:?}", result.problems);
    assert!(
        result
            .problems
            .iter()
            .any(|problem| problem.contains(words)),
        "no problem says {words:?}: {:#?}",
        result.problems
    );
}

#[test]
fn a_pipeline_and_a_fan_out_that_ran_well_are_valid() {
    let events = good_run()
        .finals(
            &[
                pipeline_workflow("SUCCEEDED"),
                fan_out_workflow(&[21, 22, 23]),
            ],
            &good_tasks(),
        )
        .events();
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:#?}", result.problems);
    assert_eq!(result.stats["results_checked"], json!(8));
    assert_eq!(result.stats["joins_succeeded"], json!(1));
}

#[test]
fn a_stale_leases_result_is_caught() {
    // Task 11 (step b): token 2 goes stale, token 4 is assigned, and the stale completion is the
    // one accepted: what `--unsafe-test-mode stale-step-result` lets through.
    let mut workflow = pipeline_workflow("SUCCEEDED");
    workflow["steps"][1] = step("b", &["a"], (110, 120), 11, 2);
    let mut tasks = pipeline_tasks();
    tasks[1] = json!({"id": 11, "state": "SUCCEEDED", "origin": [1, 1, 0],
        "result": result(11, 2), "history": [[1, 2, "LEASE_EXPIRED"], [2, 4, "SUCCEEDED"]]});
    let events = History::new()
        .start("s1", 1)
        .assign(10, 1, 1, "a", json!({}))
        .complete(10, 1)
        .assign(11, 2, 1, "b", json!({"a": parsed(10, 1)}))
        .assign(11, 4, 1, "b", json!({"a": parsed(10, 1)}))
        .complete(11, 2)
        .refused(11, 4)
        .assign(12, 3, 1, "c", json!({"b": parsed(11, 2)}))
        .complete(12, 3)
        .finals(&[workflow], &tasks)
        .events();
    assert_invalid_with(&events, "a stale lease's result");
    assert_invalid_with(&events, "a stale lease completed");
    assert_eq!(
        check(&events).stats["completions_after_a_newer_token"],
        json!(1)
    );
}

#[test]
fn a_refused_stale_completion_is_valid() {
    // The same race with the fence in place: the stale completion is refused, the new holder's
    // result is recorded.
    let mut workflow = pipeline_workflow("SUCCEEDED");
    workflow["steps"][1] = step("b", &["a"], (110, 120), 11, 4);
    let mut tasks = pipeline_tasks();
    tasks[1] = json!({"id": 11, "state": "SUCCEEDED", "origin": [1, 1, 0],
        "result": result(11, 4), "history": [[1, 2, "LEASE_EXPIRED"], [2, 4, "SUCCEEDED"]]});
    let events = History::new()
        .start("s1", 1)
        .assign(10, 1, 1, "a", json!({}))
        .complete(10, 1)
        .assign(11, 2, 1, "b", json!({"a": parsed(10, 1)}))
        .assign(11, 4, 1, "b", json!({"a": parsed(10, 1)}))
        .refused(11, 2)
        .complete(11, 4)
        .assign(12, 3, 1, "c", json!({"b": parsed(11, 4)}))
        .complete(12, 3)
        .finals(&[workflow], &tasks)
        .events();
    let problems = problems_of(&events);
    assert!(problems.is_empty(), "{problems:#?}");
    let stats = check(&events).stats;
    assert_eq!(stats["completions_after_a_newer_token"], json!(1));
    assert_eq!(stats["completions_after_a_newer_token_refused"], json!(1));
}

#[test]
fn a_step_pushed_before_its_dependency_completed_is_caught() {
    let events = History::new()
        .start("s1", 1)
        .assign(10, 1, 1, "a", json!({}))
        .assign(11, 2, 1, "b", json!({"a": parsed(10, 1)}))
        .complete(10, 1)
        .complete(11, 2)
        .assign(12, 3, 1, "c", json!({"b": parsed(11, 2)}))
        .complete(12, 3)
        .finals(&[pipeline_workflow("SUCCEEDED")], &pipeline_tasks())
        .events();
    assert_invalid_with(
        &events,
        "completions that made the result of a had been sent",
    );
}

#[test]
fn a_step_started_before_its_dependency_finished_in_cluster_time_is_caught() {
    let mut workflow = pipeline_workflow("SUCCEEDED");
    workflow["steps"][2]["started"] = json!(115);
    let events = good_run()
        .finals(&[workflow, fan_out_workflow(&[21, 22, 23])], &good_tasks())
        .events();
    assert_invalid_with(
        &events,
        "step c started at 115 but b is SUCCEEDED (finished at 120)",
    );
}

#[test]
fn a_step_that_received_another_result_is_caught() {
    let events = History::new()
        .start("s1", 1)
        .assign(10, 1, 1, "a", json!({}))
        .complete(10, 1)
        .assign(11, 2, 1, "b", json!({"a": parsed(10, 9)}))
        .complete(11, 2)
        .finals(&[pipeline_workflow("SUCCEEDED")], &pipeline_tasks())
        .events();
    assert_invalid_with(&events, "as the result of a, which recorded");
}

#[test]
fn a_join_with_fewer_than_k_results_is_caught() {
    let mut tasks = good_tasks();
    tasks[5] = task(23, 2, 1, 2, "CANCELED", 23);
    let events = good_run()
        .finals(
            &[pipeline_workflow("SUCCEEDED"), fan_out_workflow(&[21, 22])],
            &tasks,
        )
        .events();
    assert_invalid_with(&events, "fewer than k = 3");
}

#[test]
fn a_join_that_fires_twice_is_caught() {
    let events = good_run()
        .event(8, "JOINED", 2, "fan")
        .finals(
            &[
                pipeline_workflow("SUCCEEDED"),
                fan_out_workflow(&[21, 22, 23]),
            ],
            &good_tasks(),
        )
        .events();
    assert_invalid_with(&events, "the join of fan fired 2 times");
}

#[test]
fn a_dependent_started_twice_is_caught() {
    let mut tasks = good_tasks();
    tasks.push(task(27, 2, 2, 0, "SUCCEEDED", 27));
    let events = good_run()
        .finals(
            &[
                pipeline_workflow("SUCCEEDED"),
                fan_out_workflow(&[21, 22, 23]),
            ],
            &tasks,
        )
        .events();
    assert_invalid_with(&events, "step aggregate branch 0 ran 2 tasks");
}

#[test]
fn a_canceled_workflow_with_a_running_task_is_caught() {
    let mut workflow = pipeline_workflow("CANCELED");
    workflow["steps"][2]["state"] = json!("CANCELED");
    workflow["steps"][2]["branches"][0]["state"] = json!("CANCELED");
    let mut tasks = good_tasks();
    tasks[2] = json!({"id": 12, "state": "ASSIGNED", "origin": [1, 2, 0], "result": "",
        "history": [[1, 3, "RUNNING"]]});
    let events = good_run()
        .op(
            "cancel",
            json!({"id": 1}),
            json!({"id": 1, "canceled": true, "state": "CANCELED"}),
        )
        .finals(&[workflow, fan_out_workflow(&[21, 22, 23])], &tasks)
        .events();
    assert_invalid_with(
        &events,
        "workflow 1 is CANCELED but its task 12 is ASSIGNED",
    );
}

#[test]
fn a_workflow_left_running_or_lost_is_caught() {
    let events = good_run()
        .start("s3", 3)
        .finals(
            &[
                pipeline_workflow("RUNNING"),
                fan_out_workflow(&[21, 22, 23]),
            ],
            &good_tasks(),
        )
        .events();
    assert_invalid_with(&events, "workflow 1 is RUNNING after the heal");
    assert_invalid_with(
        &events,
        "start s3 was acknowledged as workflow 3, which no final read has",
    );
}

#[test]
fn an_acknowledged_cancel_that_did_not_cancel_is_caught() {
    let events = good_run()
        .op(
            "cancel",
            json!({"id": 1}),
            json!({"id": 1, "canceled": true, "state": "CANCELED"}),
        )
        .finals(
            &[
                pipeline_workflow("SUCCEEDED"),
                fan_out_workflow(&[21, 22, 23]),
            ],
            &good_tasks(),
        )
        .events();
    assert_invalid_with(&events, "ends SUCCEEDED although the cancel");
}

/// Pipeline task 12 (step c) as a manager whose attempt (token 3) ended at 500, and two tasks it
/// delegated under that lease: one succeeded at `child_end`, one canceled with the lease.
fn delegation_tasks(child_state: &str, child_end: u64) -> Vec<Json> {
    let mut tasks = good_tasks();
    tasks[2]["history"] = json!([[1, 3, "SUCCEEDED", 500]]);
    let outcome = if child_state == "ASSIGNED" {
        "RUNNING"
    } else {
        child_state
    };
    tasks.push(
        json!({"id": 30, "state": child_state, "origin": null, "result": "",
        "history": [[1, 40, outcome, child_end]], "delegation": [12, 3]}),
    );
    tasks.push(
        json!({"id": 31, "state": "CANCELED", "origin": null, "result": "",
        "history": [[1, 41, "CANCELED", 500]], "delegation": [12, 3]}),
    );
    tasks
}

fn delegation_events(tasks: &[Json]) -> Vec<Event> {
    good_run()
        .finals(
            &[
                pipeline_workflow("SUCCEEDED"),
                fan_out_workflow(&[21, 22, 23]),
            ],
            tasks,
        )
        .events()
}

#[test]
fn delegated_tasks_that_ended_with_their_managers_lease_are_valid() {
    let result = check(&delegation_events(&delegation_tasks("SUCCEEDED", 400)));
    assert_eq!(result.verdict, Verdict::Valid, "{:#?}", result.problems);
    assert_eq!(
        result.stats["delegated"],
        json!({"succeeded": 1, "canceled": 1})
    );
}

#[test]
fn a_delegated_task_that_succeeded_after_its_managers_lease_is_caught() {
    assert_invalid_with(
        &delegation_events(&delegation_tasks("SUCCEEDED", 600)),
        "delegated task 30 succeeded at 600, after its manager 12's lease (token 3) ended at 500",
    );
}

#[test]
fn a_delegated_task_left_running_is_caught() {
    assert_invalid_with(
        &delegation_events(&delegation_tasks("ASSIGNED", 0)),
        "delegated task 30 is ASSIGNED after the heal",
    );
}
