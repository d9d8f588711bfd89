//! The tasks checker on hand-made histories: a good one for every part of the life cycle, and
//! for each property a history that breaks it.

use serde_json::{json, Value as Json};

use super::*;
use crate::jepsen::history::Script;
use crate::jepsen::workload::Verdict;

/// A task as a final read lists it, built attempt by attempt. Attempt numbers follow the node's
/// rules (a release is not counted, a redrive starts again at 1) unless set; times are
/// `1000 + 10 * token` for an assignment and 5 ms later for its end, unless set.
#[derive(Clone)]
struct Built {
    id: u64,
    payload: String,
    state: String,
    spec: Spec,
    history: Vec<Attempt>,
    submitted_ms: u64,
    updated_ms: Option<u64>,
    dead_letter_reason: Option<String>,
    cancel_reason: String,
    result: Option<String>,
    listed_in: Option<String>,
    /// The next attempt starts at number 1 (a redrive came before it).
    restart: bool,
}

fn spec() -> Spec {
    Spec {
        queue: "q".to_string(),
        priority: 0,
        not_before_ms: 0,
        deadline_ms: 0,
        max_attempts: 6,
        gate: None,
    }
}

fn task(id: u64, payload: &str, state: &str) -> Built {
    Built {
        id,
        payload: payload.to_string(),
        state: state.to_string(),
        spec: spec(),
        history: Vec::new(),
        submitted_ms: 1000,
        updated_ms: None,
        dead_letter_reason: None,
        cancel_reason: String::new(),
        result: None,
        listed_in: None,
        restart: false,
    }
}

impl Built {
    fn attempt(mut self, token: u64, outcome: &str, agent: &str) -> Self {
        let number = match self.history.last() {
            _ if self.restart => 1,
            None => 1,
            Some(last) if COUNTED.contains(&last.outcome.as_str()) => last.number + 1,
            Some(last) => last.number,
        };
        self.restart = false;
        let assigned_ms = 1000 + 10 * token;
        self.history.push(Attempt {
            number,
            token,
            outcome: outcome.to_string(),
            agent: agent.to_string(),
            assigned_ms,
            ended_ms: if outcome == "RUNNING" {
                0
            } else {
                assigned_ms + 5
            },
        });
        self
    }

    /// The last attempt was assigned at `assigned_ms` and ended at `ended_ms`.
    fn at(mut self, assigned_ms: u64, ended_ms: u64) -> Self {
        let last = self.history.last_mut().expect("an attempt");
        last.assigned_ms = assigned_ms;
        last.ended_ms = ended_ms;
        self
    }

    fn redriven(mut self) -> Self {
        self.restart = true;
        self
    }

    fn with_spec(mut self, change: impl FnOnce(&mut Spec)) -> Self {
        change(&mut self.spec);
        self
    }

    fn canceled_with(mut self, reason: &str) -> Self {
        self.cancel_reason = reason.to_string();
        self
    }

    fn updated(mut self, updated_ms: u64) -> Self {
        self.updated_ms = Some(updated_ms);
        self
    }

    fn json(&self) -> Json {
        let last = self.history.last();
        let attempts = last.map_or(0, |a| {
            if a.outcome == "RELEASED" {
                a.number - 1
            } else {
                a.number
            }
        });
        let dead_letter_reason = self.dead_letter_reason.clone().unwrap_or_else(|| {
            match (self.state.as_str(), last.map(|a| a.outcome.as_str())) {
                ("DEAD_LETTERED", Some("FAILED")) if attempts < self.spec.max_attempts => {
                    "NOT_RETRYABLE"
                }
                ("DEAD_LETTERED", _) => "ATTEMPTS_EXHAUSTED",
                ("EXPIRED", _) => "DEADLINE_EXCEEDED",
                _ => "UNSPECIFIED",
            }
            .to_string()
        });
        let result = self.result.clone().unwrap_or_else(|| match last {
            Some(a) if self.state == "SUCCEEDED" => completion_result(&a.agent, a.token),
            _ => String::new(),
        });
        let history: Vec<Json> = self
            .history
            .iter()
            .map(|a| {
                json!([
                    a.number,
                    a.token,
                    a.outcome,
                    a.agent,
                    a.assigned_ms,
                    a.ended_ms
                ])
            })
            .collect();
        json!({
            "id": self.id,
            "payload": self.payload,
            "spec": self.spec.to_json(),
            "listed_in": self.listed_in.clone().unwrap_or_else(|| self.spec.queue.clone()),
            "state": self.state,
            "attempts": attempts,
            "last_token": self.history.iter().map(|a| a.token).max().unwrap_or(0),
            "submitted_ms": self.submitted_ms,
            "updated_ms": self
                .updated_ms
                .unwrap_or_else(|| last.map_or(self.submitted_ms, |a| a.ended_ms.max(a.assigned_ms))),
            "dead_letter_reason": dead_letter_reason,
            "cancel_reason": self.cancel_reason,
            "history": history,
            "result": result,
        })
    }
}

fn submit(script: Script, process: u64, payload: &str, id: Option<u64>) -> Script {
    submit_spec(script, process, payload, id, &spec())
}

fn submit_spec(
    script: Script,
    process: u64,
    payload: &str,
    id: Option<u64>,
    spec: &Spec,
) -> Script {
    let script = script.invoke(
        process,
        "submit",
        None,
        json!({"payload": payload, "spec": spec.to_json()}),
    );
    match id {
        Some(id) => script.ok(process, json!({"payload": payload, "id": id})),
        None => script.info(process),
    }
}

/// How a verb ended.
enum Answer<'a> {
    /// Accepted; the task's state after it.
    Ok(&'a str),
    /// Refused, with these words.
    Refused(&'a str),
}

#[allow(clippy::too_many_arguments)] // a verb is all of these
fn verb_by(
    script: Script,
    process: u64,
    f: &str,
    task: u64,
    token: u64,
    agent: &str,
    retryable: Option<bool>,
    answer: Answer,
) -> Script {
    let mut value = json!({"agent": agent, "task": task, "token": token});
    if let Some(retryable) = retryable {
        value["retryable"] = json!(retryable);
    }
    let script = script.invoke(process, f, None, value.clone());
    match answer {
        Answer::Ok(state) => {
            value["state"] = json!(state);
            script.ok(process, value)
        }
        Answer::Refused(error) => script.fail_with(process, error),
    }
}

/// A verb by agent "a": accepted (with the state that follows it) or refused.
fn verb(script: Script, process: u64, f: &str, task: u64, token: u64, ok: bool) -> Script {
    let state = match f {
        "complete" => "SUCCEEDED",
        "fail" => "RETRY_WAIT",
        _ => "PENDING",
    };
    let answer = if ok {
        Answer::Ok(state)
    } else {
        Answer::Refused("FailedPrecondition: lease lost: the lease expired")
    };
    verb_by(script, process, f, task, token, "a", None, answer)
}

fn assign(script: Script, process: u64, task: u64, token: u64, agent: &str) -> Script {
    let value = json!({"agent": agent, "task": task, "token": token, "attempt": 1});
    script
        .invoke(process, "assign", None, value.clone())
        .ok(process, value)
}

fn revoked(script: Script, process: u64, task: u64, token: u64, reason: &str) -> Script {
    let value = json!({"agent": "a", "task": task, "token": token, "reason": reason});
    script
        .invoke(process, "revoked", None, value.clone())
        .ok(process, value)
}

/// A cancel answered (canceled, previous state), or unknown.
fn cancel(
    script: Script,
    process: u64,
    task: u64,
    reason: &str,
    answer: Option<(bool, &str)>,
) -> Script {
    let value = json!({"task": task, "reason": reason});
    let script = script.invoke(process, "cancel", None, value.clone());
    match answer {
        Some((canceled, previous)) => {
            let mut value = value;
            value["canceled"] = json!(canceled);
            value["previous"] = json!(previous);
            script.ok(process, value)
        }
        None => script.info(process),
    }
}

/// A dead-letter listing of queue "q": (id, state, last token).
fn dead_letters(script: Script, process: u64, tasks: &[(u64, &str, u64)]) -> Script {
    let tasks: Vec<Json> = tasks
        .iter()
        .map(|(id, state, token)| json!({"id": id, "state": state, "queue": "q", "last_token": token}))
        .collect();
    script
        .invoke(process, "dead-letters", None, json!({"queue": "q"}))
        .ok(process, json!({"queue": "q", "tasks": tasks}))
}

fn redrive(script: Script, process: u64, task: u64, last_token: u64, count: Option<u64>) -> Script {
    let value = json!({"task": task, "last_token": last_token});
    let script = script.invoke(process, "redrive", None, value.clone());
    match count {
        Some(count) => {
            let mut value = value;
            value["count"] = json!(count);
            script.ok(process, value)
        }
        None => script.info(process),
    }
}

fn propose(script: Script, process: u64, id: u64) -> Script {
    script
        .invoke(process, "propose", None, json!({"deadline": 9000}))
        .ok(process, json!({"deadline": 9000, "id": id}))
}

/// The final read of the gates: (id, status, outcome, closed_ms).
fn final_gates(script: Script, decisions: &[(u64, &str, &str, u64)]) -> Script {
    let decisions: Vec<Json> = decisions
        .iter()
        .map(|(id, status, outcome, closed)| {
            json!({"id": id, "status": status, "outcome": outcome, "closed_ms": closed})
        })
        .collect();
    script
        .invoke(93, "final-gates", None, json!({}))
        .ok(93, json!({"decisions": decisions}))
}

fn finals(mut script: Script, tasks: &[Built]) -> Script {
    let tasks: Vec<Json> = tasks.iter().map(Built::json).collect();
    for (process, consistency) in [
        (90, "serializable"),
        (91, "serializable"),
        (92, "linearizable"),
    ] {
        script = script
            .invoke(
                process,
                FINAL_READ,
                None,
                json!({"consistency": consistency}),
            )
            .ok(process, json!({"consistency": consistency, "tasks": tasks}));
    }
    script
}

/// Task 1 (p1): assigned to a with token 3, which let the lease expire; then to b with token
/// 5, which completed it; a's late completion with token 3 was refused. Task 2 (p2, submit
/// unknown) dead-lettered after a failure.
fn good() -> (Script, Vec<Built>) {
    let script = submit(Script::new(NAME), 1, "p1", Some(1));
    let script = submit(script, 2, "p2", None);
    let script = assign(script, 10, 1, 3, "a");
    let script = assign(script, 11, 1, 5, "b");
    let script = assign(script, 11, 2, 6, "b");
    let script = verb_by(
        script,
        3,
        "complete",
        1,
        5,
        "b",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    let script = verb(script, 4, "complete", 1, 3, false);
    let tasks = vec![
        task(1, "p1", "SUCCEEDED")
            .attempt(3, "LEASE_EXPIRED", "a")
            .attempt(5, "SUCCEEDED", "b"),
        task(2, "p2", "DEAD_LETTERED").attempt(6, "FAILED", "b"),
    ];
    (script, tasks)
}

fn problems_of(script: Script) -> Vec<String> {
    let result = check(&script.events());
    assert_eq!(result.verdict, Verdict::Invalid, "expected a violation");
    result.problems
}

fn assert_found(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {problems:#?}"
    );
}

fn assert_valid(script: Script) -> Json {
    let result = check(&script.events());
    assert_eq!(result.verdict, Verdict::Valid, "{:#?}", result.problems);
    result.stats
}

#[test]
fn a_good_history_is_valid() {
    let (script, tasks) = good();
    let stats = assert_valid(finals(script, &tasks));
    assert_eq!(stats["submits_info_present_at_end"], 1);
    assert_eq!(stats["complete_ok"], 1);
    assert_eq!(stats["complete_refused"], 1);
}

#[test]
fn two_accepted_completions_of_one_task_are_invalid() {
    let (script, tasks) = good();
    // a's late completion with the stale token 3 accepted as well.
    let script = verb(script, 5, "complete", 1, 3, true);
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "2 completions were accepted");
}

#[test]
fn an_accepted_completion_whose_attempt_did_not_succeed_is_invalid() {
    let (script, _) = good();
    let tasks = vec![
        // Token 5's completion was acknowledged, but the task says token 3 succeeded.
        task(1, "p1", "SUCCEEDED")
            .attempt(3, "SUCCEEDED", "a")
            .attempt(5, "LEASE_EXPIRED", "b"),
        task(2, "p2", "DEAD_LETTERED").attempt(6, "FAILED", "b"),
    ];
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "with token 5 by b was accepted");
    assert_found(&problems, "exactly one SUCCEEDED attempt, the last");
    assert_found(&problems, "with token 3 by a was refused");
}

#[test]
fn a_lost_acknowledged_completion_is_invalid() {
    let (script, _) = good();
    let tasks = vec![
        task(1, "p1", "DEAD_LETTERED")
            .attempt(3, "LEASE_EXPIRED", "a")
            .attempt(5, "FAILED", "b"),
        task(2, "p2", "DEAD_LETTERED").attempt(6, "FAILED", "b"),
    ];
    assert_found(
        &problems_of(finals(script, &tasks)),
        "acknowledged completion was lost",
    );
}

#[test]
fn a_lost_submission_and_an_unexpected_task_are_invalid() {
    let (script, _) = good();
    let tasks = vec![
        task(2, "p2", "DEAD_LETTERED").attempt(6, "FAILED", "b"),
        task(3, "p9", "SUCCEEDED").attempt(7, "SUCCEEDED", "b"),
    ];
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "task 1 (p1, acknowledged) is missing");
    assert_found(
        &problems,
        "payload p9 is listed, but no submission of it was invoked",
    );
}

#[test]
fn a_submission_applied_twice_is_invalid() {
    let (script, mut tasks) = good();
    tasks.push(task(3, "p2", "SUCCEEDED").attempt(7, "SUCCEEDED", "b"));
    assert_found(
        &problems_of(finals(script, &tasks)),
        "applied more than once",
    );
}

#[test]
fn a_result_that_is_not_the_accepted_completions_is_invalid() {
    let (script, mut tasks) = good();
    // The stale completion's result (token 3) stored with the attempt of token 5.
    tasks[0].result = Some(completion_result("a", 3));
    assert_found(
        &problems_of(finals(script, &tasks)),
        "not that completion's",
    );
}

#[test]
fn a_verb_accepted_after_its_revocation_was_pushed_is_invalid() {
    let script = revoked(Script::new(NAME), 12, 1, 5, "lease lost");
    let script = submit(script, 1, "p1", Some(1));
    let script = verb(script, 3, "complete", 1, 5, true);
    let tasks = vec![task(1, "p1", "SUCCEEDED").attempt(5, "SUCCEEDED", "a")];
    assert_found(
        &problems_of(finals(script, &tasks)),
        "though the lease had been revoked",
    );
}

#[test]
fn tokens_that_do_not_increase_or_are_shared_are_invalid() {
    let (script, _) = good();
    let tasks = vec![
        task(1, "p1", "SUCCEEDED")
            .attempt(5, "LEASE_EXPIRED", "a")
            .attempt(3, "SUCCEEDED", "b"),
        task(2, "p2", "DEAD_LETTERED").attempt(5, "FAILED", "b"),
    ];
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "do not strictly increase");
    assert_found(&problems, "fencing token 5 was issued to both");
}

#[test]
fn a_task_left_open_or_nodes_that_disagree_are_invalid() {
    let (script, tasks) = good();
    let mut open = tasks.clone();
    open[1] = task(2, "p2", "RETRY_WAIT").attempt(6, "FAILED", "b");
    let as_json = |tasks: &[Built]| tasks.iter().map(Built::json).collect::<Vec<_>>();
    let script = script
        .invoke(90, FINAL_READ, None, json!({"consistency": "serializable"}))
        .ok(
            90,
            json!({"consistency": "serializable", "tasks": as_json(&tasks)}),
        )
        .invoke(92, FINAL_READ, None, json!({"consistency": "linearizable"}))
        .ok(
            92,
            json!({"consistency": "linearizable", "tasks": as_json(&open)}),
        );
    let problems = problems_of(script);
    assert_found(&problems, "not terminal after the drain");
    assert_found(&problems, "disagrees with the reference read");
}

#[test]
fn an_assignment_missing_from_the_history_is_invalid() {
    let (script, tasks) = good();
    let script = assign(script, 12, 2, 9, "c");
    assert_found(
        &problems_of(finals(script, &tasks)),
        "a committed assignment is lost",
    );
}

#[test]
fn without_a_final_read_the_check_is_unknown() {
    let (script, _) = good();
    assert_eq!(check(&script.events()).verdict, Verdict::Unknown);
}

#[test]
fn a_task_listed_with_another_spec_or_by_another_queue_is_invalid() {
    let (script, mut tasks) = good();
    tasks[0].spec.priority = 7;
    tasks[1].listed_in = Some("other".to_string());
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "but was submitted with");
    assert_found(&problems, "was listed by the listing of queue \"other\"");
}

// The whole life cycle: cancels, dead letters and a redrive, delays, deadlines, gates.

/// [`good`], plus:
/// - task 3 (p3) failed retryably by a with token 7, then canceled while waiting to retry ("c1");
/// - task 4 (p4) canceled while assigned to a with token 8 ("c2"); a's completion refused;
/// - task 5 (p5) completed by b with token 9, then a cancel that found it SUCCEEDED ("c3");
/// - task 6 (p6-poison) failed for good with token 10, listed as a dead letter, redriven, then
///   completed by b with token 12 as attempt 1;
/// - task 7 (p7-flaky, 2 attempts) failed retryably with tokens 11 and 13, dead-lettered,
///   listed, left alone;
/// - task 8 (p8) not before 5000, assigned at 5100 with token 14, completed;
/// - task 9 (p9) with deadline 3000, assigned at 2000 with token 15, expired at 3010; the
///   agent's completion refused;
/// - tasks 10 and 11 gated on decision 40 ("run", "skip"), which decided "run" at 6000: task 10
///   ran (token 16, at 6100), task 11 was canceled by the gate.
fn lifecycle() -> (Script, Vec<Built>) {
    let (script, mut tasks) = good();
    let script = submit(script, 5, "p3", Some(3));
    let script = assign(script, 10, 3, 7, "a");
    let script = verb_by(
        script,
        3,
        "fail",
        3,
        7,
        "a",
        Some(true),
        Answer::Ok("RETRY_WAIT"),
    );
    let script = cancel(script, 20, 3, "c1", Some((true, "RETRY_WAIT")));
    tasks.push(
        task(3, "p3", "CANCELED")
            .attempt(7, "FAILED", "a")
            .canceled_with("c1"),
    );

    let script = submit(script, 5, "p4", Some(4));
    let script = assign(script, 10, 4, 8, "a");
    let script = cancel(script, 20, 4, "c2", Some((true, "ASSIGNED")));
    let script = revoked(script, 10, 4, 8, "c2");
    let script = verb_by(
        script,
        3,
        "complete",
        4,
        8,
        "a",
        None,
        Answer::Refused("FailedPrecondition: lease lost: task 4 was canceled"),
    );
    tasks.push(
        task(4, "p4", "CANCELED")
            .attempt(8, "CANCELED", "a")
            .canceled_with("c2"),
    );

    let script = submit(script, 5, "p5", Some(5));
    let script = assign(script, 11, 5, 9, "b");
    let script = verb_by(
        script,
        3,
        "complete",
        5,
        9,
        "b",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    let script = cancel(script, 20, 5, "c3", Some((false, "SUCCEEDED")));
    tasks.push(task(5, "p5", "SUCCEEDED").attempt(9, "SUCCEEDED", "b"));

    let flaky = Spec {
        max_attempts: 2,
        ..spec()
    };
    let script = submit(script, 5, "p6-poison", Some(6));
    let script = submit_spec(script, 5, "p7-flaky", Some(7), &flaky);
    let script = assign(script, 10, 6, 10, "a");
    let script = verb_by(
        script,
        3,
        "fail",
        6,
        10,
        "a",
        Some(false),
        Answer::Ok("DEAD_LETTERED"),
    );
    let script = assign(script, 10, 7, 11, "a");
    let script = verb_by(
        script,
        3,
        "fail",
        7,
        11,
        "a",
        Some(true),
        Answer::Ok("RETRY_WAIT"),
    );
    let script = assign(script, 10, 7, 13, "a");
    let script = verb_by(
        script,
        3,
        "fail",
        7,
        13,
        "a",
        Some(true),
        Answer::Ok("DEAD_LETTERED"),
    );
    let script = dead_letters(
        script,
        21,
        &[(6, "DEAD_LETTERED", 10), (7, "DEAD_LETTERED", 13)],
    );
    let script = redrive(script, 21, 6, 10, Some(1));
    let script = assign(script, 11, 6, 12, "b");
    let script = verb_by(
        script,
        3,
        "complete",
        6,
        12,
        "b",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    tasks.push(
        task(6, "p6-poison", "SUCCEEDED")
            .attempt(10, "FAILED", "a")
            .redriven()
            .attempt(12, "SUCCEEDED", "b"),
    );
    let mut flaky_task = task(7, "p7-flaky", "DEAD_LETTERED")
        .attempt(11, "FAILED", "a")
        .attempt(13, "FAILED", "a");
    flaky_task.spec = flaky;
    tasks.push(flaky_task);

    let delayed = Spec {
        not_before_ms: 5000,
        ..spec()
    };
    let script = submit_spec(script, 5, "p8", Some(8), &delayed);
    let script = assign(script, 11, 8, 14, "b");
    let script = verb_by(
        script,
        3,
        "complete",
        8,
        14,
        "b",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    tasks.push(
        task(8, "p8", "SUCCEEDED")
            .with_spec(|s| s.not_before_ms = 5000)
            .attempt(14, "SUCCEEDED", "b")
            .at(5100, 5150),
    );

    let with_deadline = Spec {
        deadline_ms: 3000,
        ..spec()
    };
    let script = submit_spec(script, 5, "p9", Some(9), &with_deadline);
    let script = assign(script, 10, 9, 15, "a");
    let script = revoked(script, 10, 9, 15, "the task's deadline passed");
    let script = verb_by(
        script,
        3,
        "complete",
        9,
        15,
        "a",
        None,
        Answer::Refused("FailedPrecondition: lease lost: task 9 expired (its deadline passed)"),
    );
    tasks.push(
        task(9, "p9", "EXPIRED")
            .with_spec(|s| s.deadline_ms = 3000)
            .attempt(15, "DEADLINE_EXCEEDED", "a")
            .at(2000, 3010),
    );

    let script = propose(script, 22, 40);
    let run = Spec {
        gate: Some((40, "run".to_string())),
        ..spec()
    };
    let skip = Spec {
        gate: Some((40, "skip".to_string())),
        ..spec()
    };
    let script = submit_spec(script, 22, "p10-gated", Some(10), &run);
    let script = submit_spec(script, 22, "p11-gated", Some(11), &skip);
    let script = assign(script, 11, 10, 16, "b");
    let script = verb_by(
        script,
        3,
        "complete",
        10,
        16,
        "b",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    let mut gated_run = task(10, "p10-gated", "SUCCEEDED")
        .attempt(16, "SUCCEEDED", "b")
        .at(6100, 6150);
    gated_run.spec = run;
    let mut gated_skip = task(11, "p11-gated", "CANCELED")
        .canceled_with("decision 40: outcome run")
        .updated(6000);
    gated_skip.spec = skip;
    tasks.push(gated_run);
    tasks.push(gated_skip);
    let script = final_gates(script, &[(40, "DECIDED", "run", 6000)]);
    (script, tasks)
}

#[test]
fn the_whole_life_cycle_is_valid() {
    let (script, tasks) = lifecycle();
    let stats = assert_valid(finals(script, &tasks));
    assert_eq!(stats["cancels_canceled"], 2);
    assert_eq!(stats["cancels_not_canceled"], 1);
    assert_eq!(stats["redrives_applied"], 1);
    assert_eq!(stats["redriven_ran_again"], 1);
    assert_eq!(stats["tasks_delayed"], 1);
    assert_eq!(stats["delay_margin_min_ms"], 100);
    assert_eq!(stats["gated_passed"], 1);
    assert_eq!(stats["gated_refused"], 1);
}

/// The life cycle with task `id` listed as `replacement` instead.
fn lifecycle_with(id: u64, replacement: Built) -> Script {
    let (script, mut tasks) = lifecycle();
    let position = tasks.iter().position(|t| t.id == id).expect("a task");
    tasks[position] = replacement;
    finals(script, &tasks)
}

fn lifecycle_task(id: u64) -> Built {
    lifecycle()
        .1
        .into_iter()
        .find(|t| t.id == id)
        .expect("a task")
}

#[test]
fn a_canceled_task_that_then_succeeds_is_invalid() {
    // Task 3's cancel said canceled=true; a completion invoked after that was accepted.
    let (script, mut tasks) = lifecycle();
    let script = assign(script, 11, 3, 17, "b");
    let script = verb_by(
        script,
        3,
        "complete",
        3,
        17,
        "b",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    tasks[2] = task(3, "p3", "SUCCEEDED")
        .attempt(7, "FAILED", "a")
        .attempt(17, "SUCCEEDED", "b");
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "not CANCELED with \"c1\"");
    assert_found(&problems, "invoked after the cancel was acknowledged");
}

#[test]
fn a_cancel_that_claims_a_task_completed_before_it_is_invalid() {
    // Task 5 was completed (acknowledged) before the cancel was invoked, yet the cancel said it
    // canceled the task, and from a terminal state.
    let (script, tasks) = lifecycle();
    let script = cancel(script, 20, 5, "c4", Some((true, "SUCCEEDED")));
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "acknowledged before the cancel was invoked");
    assert_found(&problems, "but that state is terminal");
}

#[test]
fn a_cancel_that_found_an_open_task_but_did_not_cancel_it_is_invalid() {
    let (script, tasks) = lifecycle();
    let script = cancel(script, 20, 8, "c5", Some((false, "PENDING")));
    assert_found(
        &problems_of(finals(script, &tasks)),
        "but that state is not terminal",
    );
}

#[test]
fn a_task_canceled_by_nobody_is_invalid() {
    let script = lifecycle_with(8, lifecycle_task(8).canceled_with("nobody"));
    let problems = problems_of(script);
    assert_found(&problems, "carries the cancel reason");
    let mut canceled = lifecycle_task(8).canceled_with("nobody");
    canceled.state = "CANCELED".to_string();
    canceled.history.clear();
    assert_found(
        &problems_of(lifecycle_with(8, canceled)),
        "no cancel of it with that reason was invoked",
    );
}

#[test]
fn an_assigned_task_canceled_without_ending_its_attempt_so_is_invalid() {
    let listed = task(4, "p4", "CANCELED")
        .attempt(8, "LEASE_EXPIRED", "a")
        .canceled_with("c2");
    assert_found(
        &problems_of(lifecycle_with(4, listed)),
        "last attempt did not end CANCELED",
    );
    let listed = task(4, "p4", "CANCELED")
        .attempt(8, "CANCELED", "a")
        .attempt(18, "LEASE_EXPIRED", "b")
        .canceled_with("c2");
    assert_found(
        &problems_of(lifecycle_with(4, listed)),
        "ended CANCELED and another followed",
    );
}

#[test]
fn a_refusal_because_of_a_cancel_that_did_not_happen_is_invalid() {
    let (script, tasks) = lifecycle();
    let script = verb_by(
        script,
        3,
        "complete",
        9,
        15,
        "a",
        None,
        Answer::Refused("FailedPrecondition: lease lost: task 9 was canceled"),
    );
    assert_found(
        &problems_of(finals(script, &tasks)),
        "refused because the task was CANCELED",
    );
}

#[test]
fn a_lost_redrive_is_invalid() {
    // Task 6 redriven (count 1), yet still dead-lettered with its old attempt only.
    let (script, mut tasks) = good();
    let script = submit(script, 5, "p6-poison", Some(6));
    let script = assign(script, 10, 6, 10, "a");
    let script = dead_letters(script, 21, &[(6, "DEAD_LETTERED", 10)]);
    let script = redrive(script, 21, 6, 10, Some(1));
    tasks.push(task(6, "p6-poison", "DEAD_LETTERED").attempt(10, "FAILED", "a"));
    assert_found(&problems_of(finals(script, &tasks)), "the redrive was lost");
}

#[test]
fn a_redrive_that_misses_a_listed_dead_letter_is_invalid() {
    let (script, mut tasks) = good();
    let script = submit(script, 5, "p6-poison", Some(6));
    let script = dead_letters(script, 21, &[(6, "DEAD_LETTERED", 10)]);
    let script = redrive(script, 21, 6, 10, Some(0));
    tasks.push(task(6, "p6-poison", "DEAD_LETTERED").attempt(10, "FAILED", "a"));
    assert_found(&problems_of(finals(script, &tasks)), "answered count=0");
}

#[test]
fn a_dead_letter_that_leaves_the_queue_by_itself_or_is_lost_is_invalid() {
    // Task 7 was listed dead-lettered with token 13 and never redriven.
    let mut listed = lifecycle_task(7).attempt(19, "FAILED", "b");
    listed.dead_letter_reason = Some("NOT_RETRYABLE".to_string());
    listed.spec.max_attempts = 3;
    let problems = problems_of(lifecycle_with(7, listed));
    assert_found(&problems, "left the dead-letter queue by itself");
    let (script, mut tasks) = lifecycle();
    tasks.retain(|t| t.id != 7);
    let problems = problems_of(finals(script, &tasks));
    assert_found(&problems, "lost from the dead-letter queue");
}

#[test]
fn a_dead_letter_listing_of_a_live_task_is_invalid() {
    let (script, tasks) = lifecycle();
    let script = dead_letters(script, 21, &[(1, "SUCCEEDED", 5)]);
    assert_found(
        &problems_of(finals(script, &tasks)),
        "lists task 1 as SUCCEEDED",
    );
}

#[test]
fn attempt_numbers_that_do_not_restart_after_a_redrive_or_do_without_one_are_invalid() {
    let mut listed = lifecycle_task(6);
    listed.history[1].number = 2;
    assert_found(
        &problems_of(lifecycle_with(6, listed)),
        "expected 1 (it follows a redrive)",
    );
    let mut listed = lifecycle_task(7);
    listed.history[1].number = 1;
    assert_found(
        &problems_of(lifecycle_with(7, listed)),
        "is number 1, expected 2",
    );
}

#[test]
fn more_attempts_than_allowed_or_a_wrong_dead_letter_reason_are_invalid() {
    let listed = lifecycle_task(7).attempt(19, "FAILED", "a");
    let problems = problems_of(lifecycle_with(7, listed));
    assert_found(&problems, "more than its max_attempts 2");
    let mut listed = lifecycle_task(2);
    listed.dead_letter_reason = Some("ATTEMPTS_EXHAUSTED".to_string());
    assert_found(
        &problems_of(lifecycle_with(2, listed)),
        "dead-lettered as ATTEMPTS_EXHAUSTED after 1 of 6 attempts",
    );
}

#[test]
fn an_assignment_before_the_not_before_is_invalid() {
    let listed = lifecycle_task(8).at(4900, 4950);
    assert_found(
        &problems_of(lifecycle_with(8, listed)),
        "before its not-before 5000",
    );
}

#[test]
fn an_assignment_after_the_deadline_or_an_early_expiry_is_invalid() {
    let listed = lifecycle_task(9).at(3000, 3010);
    assert_found(
        &problems_of(lifecycle_with(9, listed)),
        "at or after its deadline 3000",
    );
    let listed = lifecycle_task(9).at(2000, 2900).updated(2900);
    assert_found(
        &problems_of(lifecycle_with(9, listed)),
        "100 ms before its deadline 3000",
    );
}

#[test]
fn a_completion_after_the_task_expired_is_invalid() {
    // An attempt that ended after the expiry, and a completion accepted for an EXPIRED task.
    let listed = lifecycle_task(9).at(2000, 3010).updated(3005);
    assert_found(&problems_of(lifecycle_with(9, listed)), "after it expired");
    let (script, tasks) = lifecycle();
    let script = verb_by(
        script,
        3,
        "complete",
        9,
        15,
        "a",
        None,
        Answer::Ok("SUCCEEDED"),
    );
    assert_found(
        &problems_of(finals(script, &tasks)),
        "a completion after it expired",
    );
}

#[test]
fn a_verb_that_answers_the_wrong_state_is_invalid() {
    let (script, tasks) = lifecycle();
    // Task 6's first attempt failed for good, but the answer said it would be retried.
    let script = verb_by(
        script,
        3,
        "fail",
        6,
        10,
        "a",
        Some(false),
        Answer::Ok("RETRY_WAIT"),
    );
    assert_found(
        &problems_of(finals(script, &tasks)),
        "not retryable) answered the state",
    );
}

#[test]
fn a_gate_that_does_not_hold_is_invalid() {
    // Task 11 needs "skip", decision 40 decided "run": it must not run.
    let mut listed = lifecycle_task(11);
    listed.state = "SUCCEEDED".to_string();
    listed.cancel_reason.clear();
    listed.updated_ms = None;
    let listed = listed.attempt(20, "SUCCEEDED", "b").at(6200, 6250);
    let problems = problems_of(lifecycle_with(11, listed));
    assert_found(&problems, "yet it is SUCCEEDED");
    assert_found(&problems, "yet it ran");
    // Task 10 needs "run": it must not be canceled by the gate, nor run before it closed.
    let mut listed = lifecycle_task(10);
    listed.state = "CANCELED".to_string();
    listed.history.clear();
    let listed = listed.canceled_with("decision 40: outcome skip");
    assert_found(
        &problems_of(lifecycle_with(10, listed)),
        "yet it was canceled by its gate",
    );
    let listed = lifecycle_task(10).at(5900, 5950);
    assert_found(
        &problems_of(lifecycle_with(10, listed)),
        "before its decision 40 closed at 6000",
    );
}

#[test]
fn a_task_gated_on_an_unknown_decision_is_invalid() {
    let mut listed = lifecycle_task(10);
    listed.spec.gate = Some((41, "run".to_string()));
    let problems = problems_of(lifecycle_with(10, listed));
    assert_found(&problems, "which no proposal of the workload returned");
    assert_found(&problems, "which the final read of the gates does not list");
}

#[test]
fn a_verb_accepted_after_a_cancel_was_acknowledged_is_invalid() {
    // Task 4 was canceled while a held it with token 8; a's release comes after the answer.
    let (script, tasks) = lifecycle();
    let script = verb(script, 3, "release", 4, 8, true);
    assert_found(
        &problems_of(finals(script, &tasks)),
        "release with token 8 by a was accepted (event",
    );
}
