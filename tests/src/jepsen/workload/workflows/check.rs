//! The workflows workload's checker: a pure function of the history (what the clients record is
//! in the module comment of `workflows.rs`). The history is read once into a [`Recorded`]; each
//! property is one function. Times of the final reads are the cluster's own stamps; "before" in
//! the history is the order of its events, which is real time (one clock, read under one lock).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value as Json};

use super::NAME;
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::{CheckResult, FINAL_READ};

#[cfg(test)]
mod tests;

/// Terminal workflow states.
const WORKFLOW_TERMINAL: [&str; 4] = ["SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"];
/// Terminal task states.
const TASK_TERMINAL: [&str; 4] = ["SUCCEEDED", "DEAD_LETTERED", "CANCELED", "EXPIRED"];

/// A `start`: its outcome and, when acknowledged, the id.
#[derive(Debug)]
struct Start {
    outcome: OpKind,
    id: Option<u64>,
}

/// A `cancel` answered ok.
#[derive(Debug)]
struct Cancel {
    id: u64,
    canceled: bool,
    index: u64,
}

/// An assignment pushed to an agent, with what its payload carried.
#[derive(Debug)]
struct Assign {
    task: u64,
    token: u64,
    workflow: u64,
    step: String,
    /// The payload's `results`: each dependency's result as the step received it.
    results: Json,
    index: u64,
}

/// A `complete` of a step task.
#[derive(Debug)]
struct Complete {
    task: u64,
    token: u64,
    /// The result sent, parsed.
    result: Json,
    outcome: OpKind,
    index: u64,
}

/// A change the watcher saw.
#[derive(Debug)]
struct Watched {
    sequence: u64,
    kind: String,
    workflow: u64,
    step: String,
}

/// One branch (a plain task step has one) of a step in a final read.
#[derive(Clone, Debug, PartialEq)]
struct Branch {
    task: u64,
    state: String,
    result: Json,
}

/// One step of a workflow in a final read.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    name: String,
    after: Vec<String>,
    compensation: bool,
    /// A fan-out's join k (0 for ALL); `None` for a plain step.
    join_k: Option<u64>,
    state: String,
    started_ms: u64,
    finished_ms: u64,
    runs: u64,
    result: Json,
    branches: Vec<Branch>,
}

/// One workflow in a final read.
#[derive(Clone, Debug, PartialEq)]
struct Workflow {
    key: String,
    state: String,
    steps: Vec<Step>,
    /// (step undone, task, state) of each compensation.
    compensations: Vec<(String, u64, String)>,
}

impl Workflow {
    fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.name == name)
    }
}

/// A final read of every workflow on one node.
#[derive(Debug)]
struct FinalRead {
    node: Option<u64>,
    consistency: String,
    workflows: BTreeMap<u64, Workflow>,
}

/// A step task in the final listing of the queue.
#[derive(Debug)]
struct Task {
    state: String,
    /// (workflow, step index in the definition, branch).
    origin: Option<(u64, usize, u64)>,
    result: Json,
    /// (attempt, token, outcome).
    history: Vec<(u64, u64, String)>,
    /// Token -> when that attempt ended, cluster time (0: running).
    ended: BTreeMap<u64, u64>,
    /// A delegated task's (manager, the manager's lease token).
    delegation: Option<(u64, u64)>,
}

impl Task {
    fn succeeded_token(&self) -> Option<u64> {
        self.history
            .iter()
            .find(|(_, _, outcome)| outcome == "SUCCEEDED")
            .map(|(_, token, _)| *token)
    }
}

/// Everything the checker reads from the history.
#[derive(Debug, Default)]
struct Recorded {
    /// Idempotency key -> start.
    starts: BTreeMap<String, Start>,
    cancels: Vec<Cancel>,
    assigns: Vec<Assign>,
    completes: Vec<Complete>,
    watched: Vec<Watched>,
    /// Resumes that found the events after their cursor gone.
    watch_gaps: usize,
    /// Events the watcher got twice (sequence not after its cursor).
    watch_repeats: Vec<u64>,
    finals: Vec<FinalRead>,
    tasks: Option<BTreeMap<u64, Task>>,
    drain_terminal: Option<bool>,
    counts: BTreeMap<String, u64>,
}

/// A result as the workflow or a worker holds it: JSON as it is, other text as a string.
fn parse_result(text: &str) -> Json {
    if text.is_empty() {
        return Json::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

impl Recorded {
    fn parse(operations: &[Paired<'_>]) -> Recorded {
        let mut recorded = Recorded::default();
        for operation in operations {
            recorded.add(operation);
        }
        recorded
    }

    fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_string()).or_default() += 1;
    }

    fn add(&mut self, operation: &Paired<'_>) {
        let invoke = operation.invoke;
        let value = operation.value();
        let outcome = operation.outcome();
        let u64_of = |field: &str| value[field].as_u64().unwrap_or(0);
        let text_of = |field: &str| value[field].as_str().unwrap_or_default().to_string();
        match invoke.f.as_str() {
            "start" => {
                self.count(&format!("start_{}", outcome_name(outcome)));
                let key = invoke.value["key"].as_str().unwrap_or_default().to_string();
                let id = (outcome == OpKind::Ok).then(|| u64_of("id"));
                self.starts.insert(key, Start { outcome, id });
            }
            "cancel" => {
                self.count(&format!("cancel_{}", outcome_name(outcome)));
                if outcome == OpKind::Ok {
                    let canceled = value["canceled"] == json!(true);
                    if canceled {
                        self.count("cancel_canceled");
                    }
                    self.cancels.push(Cancel {
                        id: u64_of("id"),
                        canceled,
                        index: invoke.index,
                    });
                }
            }
            "assign" => {
                self.count("assign");
                self.assigns.push(Assign {
                    task: u64_of("task"),
                    token: u64_of("token"),
                    workflow: u64_of("workflow"),
                    step: text_of("step"),
                    results: value["results"].clone(),
                    index: invoke.index,
                });
            }
            "complete" => {
                self.count(&format!("complete_{}", outcome_name(outcome)));
                if invoke.value["stale"] == json!(true) {
                    self.count("deposals");
                }
                self.completes.push(Complete {
                    task: invoke.value["task"].as_u64().unwrap_or(0),
                    token: invoke.value["token"].as_u64().unwrap_or(0),
                    result: parse_result(invoke.value["result"].as_str().unwrap_or_default()),
                    outcome,
                    index: invoke.index,
                });
            }
            "fail-step" => self.count(&format!("fail_step_{}", outcome_name(outcome))),
            "delegate" => self.count(&format!("delegate_{}", outcome_name(outcome))),
            "event" => self.watched.push(Watched {
                sequence: u64_of("sequence"),
                kind: text_of("kind"),
                workflow: u64_of("workflow"),
                step: text_of("step"),
            }),
            "watch-gap" => self.watch_gaps += 1,
            "event-repeated" => self.watch_repeats.push(u64_of("sequence")),
            "drain" if outcome == OpKind::Ok => {
                self.drain_terminal = value["terminal"].as_bool();
            }
            FINAL_READ if outcome == OpKind::Ok => {
                let workflows = value["workflows"]
                    .as_array()
                    .map(|workflows| workflows.iter().filter_map(parse_workflow).collect())
                    .unwrap_or_default();
                self.finals.push(FinalRead {
                    node: invoke.node,
                    consistency: text_of("consistency"),
                    workflows,
                });
            }
            "final-tasks" if outcome == OpKind::Ok => {
                self.tasks = value["tasks"]
                    .as_array()
                    .map(|tasks| tasks.iter().filter_map(parse_task).collect());
            }
            _ => {}
        }
    }

    /// The final read the properties are checked against: the linearizable one, else the first.
    fn reference(&self) -> Option<&FinalRead> {
        self.finals
            .iter()
            .find(|read| read.consistency == "linearizable")
            .or_else(|| self.finals.first())
    }

    /// The accepted (or maybe accepted) completion of `task` with `token`: the earliest one not
    /// refused.
    fn completion(&self, task: u64, token: u64) -> Option<&Complete> {
        self.completes
            .iter()
            .find(|c| c.task == task && c.token == token && c.outcome != OpKind::Fail)
    }
}

fn outcome_name(outcome: OpKind) -> &'static str {
    match outcome {
        OpKind::Ok => "ok",
        OpKind::Fail => "fail",
        OpKind::Info | OpKind::Invoke => "info",
    }
}

fn parse_workflow(value: &Json) -> Option<(u64, Workflow)> {
    let steps = value["steps"]
        .as_array()?
        .iter()
        .map(|step| {
            Some(Step {
                name: step["name"].as_str()?.to_string(),
                after: step["after"]
                    .as_array()?
                    .iter()
                    .filter_map(|name| name.as_str().map(str::to_string))
                    .collect(),
                compensation: step["compensation"].as_bool().unwrap_or(false),
                join_k: step["join_k"].as_u64(),
                state: step["state"].as_str()?.to_string(),
                started_ms: step["started"].as_u64()?,
                finished_ms: step["finished"].as_u64()?,
                runs: step["runs"].as_u64()?,
                result: parse_result(step["result"].as_str().unwrap_or_default()),
                branches: step["branches"]
                    .as_array()?
                    .iter()
                    .map(|branch| {
                        Some(Branch {
                            task: branch["task"].as_u64()?,
                            state: branch["state"].as_str()?.to_string(),
                            result: parse_result(branch["result"].as_str().unwrap_or_default()),
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let compensations = value["compensations"]
        .as_array()?
        .iter()
        .map(|c| {
            Some((
                c["step"].as_str()?.to_string(),
                c["task"].as_u64()?,
                c["state"].as_str()?.to_string(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((
        value["id"].as_u64()?,
        Workflow {
            key: value["key"].as_str()?.to_string(),
            state: value["state"].as_str()?.to_string(),
            steps,
            compensations,
        },
    ))
}

fn parse_task(value: &Json) -> Option<(u64, Task)> {
    let origin = match &value["origin"] {
        Json::Null => None,
        origin => Some((
            origin[0].as_u64()?,
            usize::try_from(origin[1].as_u64()?).ok()?,
            origin[2].as_u64()?,
        )),
    };
    let attempts = value["history"].as_array()?;
    let history = attempts
        .iter()
        .map(|a| Some((a[0].as_u64()?, a[1].as_u64()?, a[2].as_str()?.to_string())))
        .collect::<Option<Vec<_>>>()?;
    let ended = attempts
        .iter()
        .map(|a| Some((a[1].as_u64()?, a[3].as_u64().unwrap_or(0))))
        .collect::<Option<BTreeMap<_, _>>>()?;
    let delegation = match &value["delegation"] {
        Json::Null => None,
        pair => Some((pair[0].as_u64()?, pair[1].as_u64()?)),
    };
    Some((
        value["id"].as_u64()?,
        Task {
            state: value["state"].as_str()?.to_string(),
            origin,
            result: parse_result(value["result"].as_str().unwrap_or_default()),
            history,
            ended,
            delegation,
        },
    ))
}

/// The (task, token) a worker's result names.
fn result_source(result: &Json) -> Option<(u64, u64)> {
    Some((result["task"].as_u64()?, result["token"].as_u64()?))
}

/// Checks the workflows history. Properties, one function each:
/// - [`reads_agree`]: every node reads the same workflows, states, results and branches;
/// - [`workflows_terminate`]: every acknowledged start is read back, terminal after the heal;
///   nothing read that was never started; an acknowledged cancel ends CANCELED;
/// - [`steps_follow_dependencies`]: no step started before the steps it follows finished
///   (cluster times; the watch's order; the history's real time: no step task was pushed to an
///   agent before the completions that made its dependencies' results were even sent), and each
///   step received the results its dependencies recorded;
/// - [`results_come_from_current_leases`]: every recorded step and branch result is the result a
///   worker sent under the token of the task's one successful attempt, the task's own result; no
///   completion sent after a newer token of its task was pushed is accepted; at most one accepted
///   completion per task;
/// - [`joins_fire_once`]: a k-of-n join that succeeded has at least k succeeded branches, says so
///   in its result, ran once, fired once (one JOINED in the watch) and started its dependent
///   once;
/// - [`stopped_workflows_leave_no_running_task`]: every task of a terminal workflow (canceled
///   ones in particular) is terminal;
/// - [`delegated_tasks_live_under_their_managers_lease`]: a task a manager delegated is terminal
///   after the heal, and never succeeded after the lease it was delegated under had ended;
/// - [`watch_has_no_repeats`]: the watcher never got an event twice.
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let recorded = Recorded::parse(&operations);
    let mut stats = json!({"counts": recorded.counts});
    let Some(reference) = recorded.reference() else {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        return result;
    };
    let mut problems = Vec::new();
    let Some(tasks) = recorded.tasks.as_ref() else {
        let mut result = CheckResult::unknown(NAME, "the final listing of tasks failed".into());
        result.stats = stats;
        return result;
    };
    reads_agree(&recorded, reference, &mut problems);
    workflows_terminate(&recorded, reference, &mut problems, &mut stats);
    steps_follow_dependencies(&recorded, reference, &mut problems);
    results_come_from_current_leases(&recorded, reference, tasks, &mut problems, &mut stats);
    joins_fire_once(&recorded, reference, tasks, &mut problems, &mut stats);
    stopped_workflows_leave_no_running_task(reference, tasks, &mut problems);
    delegated_tasks_live_under_their_managers_lease(tasks, &mut problems, &mut stats);
    watch_has_no_repeats(&recorded, &mut problems, &mut stats);
    CheckResult::from_problems(NAME, problems, stats)
}

/// Every node's final read holds the same workflows as the reference, step for step.
fn reads_agree(recorded: &Recorded, reference: &FinalRead, problems: &mut Vec<String>) {
    for read in &recorded.finals {
        if read.workflows.len() != reference.workflows.len() {
            problems.push(format!(
                "node {:?} ({}) reads {} workflows, the reference {}",
                read.node,
                read.consistency,
                read.workflows.len(),
                reference.workflows.len()
            ));
        }
        for (id, workflow) in &read.workflows {
            if reference.workflows.get(id) != Some(workflow) {
                problems.push(format!(
                    "node {:?} ({}) reads workflow {id} as {workflow:?}, the reference as {:?}",
                    read.node,
                    read.consistency,
                    reference.workflows.get(id)
                ));
            }
        }
    }
}

/// Every acknowledged start is read back under its key and is terminal; every workflow read was
/// started by a start that did not fail; a cancel acknowledged `canceled` ends CANCELED.
fn workflows_terminate(
    recorded: &Recorded,
    reference: &FinalRead,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let by_key: BTreeMap<&str, u64> = reference
        .workflows
        .iter()
        .map(|(id, workflow)| (workflow.key.as_str(), *id))
        .collect();
    for (key, start) in &recorded.starts {
        if let Some(id) = start.id {
            match by_key.get(key.as_str()) {
                Some(&listed) if listed == id => {}
                Some(&listed) => problems.push(format!(
                    "start {key} was acknowledged as workflow {id}, but the key belongs to {listed}"
                )),
                None => problems.push(format!(
                    "start {key} was acknowledged as workflow {id}, which no final read has (lost)"
                )),
            }
        }
    }
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, workflow) in &reference.workflows {
        *states.entry(workflow.state.as_str()).or_default() += 1;
        match recorded.starts.get(&workflow.key) {
            Some(start) if start.outcome != OpKind::Fail => {}
            Some(_) => problems.push(format!(
                "workflow {id} (key {}) exists although its start provably failed",
                workflow.key
            )),
            None => problems.push(format!(
                "workflow {id} (key {}) was never started by this workload",
                workflow.key
            )),
        }
        if !WORKFLOW_TERMINAL.contains(&workflow.state.as_str()) {
            problems.push(format!(
                "workflow {id} is {} after the heal and the drain, not terminal",
                workflow.state
            ));
        }
    }
    if recorded.drain_terminal == Some(false) {
        problems.push("the drain ran out of time before every workflow was terminal".into());
    }
    for cancel in recorded.cancels.iter().filter(|cancel| cancel.canceled) {
        match reference.workflows.get(&cancel.id) {
            Some(workflow) if workflow.state == "CANCELED" => {}
            Some(workflow) => problems.push(format!(
                "workflow {} ends {} although the cancel at index {} was acknowledged canceled",
                cancel.id, workflow.state, cancel.index
            )),
            None => problems.push(format!(
                "workflow {} was canceled (index {}) but no final read has it",
                cancel.id, cancel.index
            )),
        }
    }
    stats["workflows"] = json!(reference.workflows.len());
    stats["final_states"] = json!(states);
}

/// No step started before its dependencies finished, by three clocks: the cluster's stamps in
/// the final read; the watch's event order; and the history's real time (a step task is only
/// submitted by the entry that records its dependencies' results, so its assignment cannot be
/// pushed before the completions that made those results were sent). And each step task's
/// payload carries its dependencies' results as the workflow recorded them.
fn steps_follow_dependencies(
    recorded: &Recorded,
    reference: &FinalRead,
    problems: &mut Vec<String>,
) {
    for (id, workflow) in &reference.workflows {
        for step in workflow.steps.iter().filter(|step| step.runs > 0) {
            for dep_name in &step.after {
                let Some(dep) = workflow.step(dep_name) else {
                    problems.push(format!(
                        "workflow {id}: step {} follows unknown {dep_name}",
                        step.name
                    ));
                    continue;
                };
                let finished = matches!(dep.state.as_str(), "SUCCEEDED" | "SKIPPED");
                if !finished || dep.finished_ms == 0 || dep.finished_ms > step.started_ms {
                    problems.push(format!(
                        "workflow {id}: step {} started at {} but {dep_name} is {} (finished at {})",
                        step.name, step.started_ms, dep.state, dep.finished_ms
                    ));
                }
            }
        }
    }
    // The watch: a step's STEP_STARTED comes after each dependency's STEP_SUCCEEDED.
    let mut first: BTreeMap<(u64, &str, &str), u64> = BTreeMap::new();
    for event in &recorded.watched {
        first
            .entry((event.workflow, event.step.as_str(), event.kind.as_str()))
            .or_insert(event.sequence);
    }
    for ((workflow_id, step_name, kind), sequence) in &first {
        if *kind != "STEP_STARTED" {
            continue;
        }
        let Some(step) = reference
            .workflows
            .get(workflow_id)
            .and_then(|workflow| workflow.step(step_name))
        else {
            continue;
        };
        for dep in &step.after {
            if let Some(succeeded) = first.get(&(*workflow_id, dep.as_str(), "STEP_SUCCEEDED")) {
                if succeeded > sequence {
                    problems.push(format!(
                        "workflow {workflow_id}: the watch saw {step_name} start (sequence \
                         {sequence}) before {dep} succeeded (sequence {succeeded})"
                    ));
                }
            }
        }
    }
    // Real time and payloads.
    for assign in &recorded.assigns {
        let Some(workflow) = reference.workflows.get(&assign.workflow) else {
            continue;
        };
        let Some(step) = workflow.step(&assign.step) else {
            continue;
        };
        for dep_name in &step.after {
            let Some(dep) = workflow.step(dep_name) else {
                continue;
            };
            let received = &assign.results[dep_name.as_str()];
            if *received != dep.result {
                problems.push(format!(
                    "workflow {}: task {} of step {} (index {}) received {received} as the result \
                     of {dep_name}, which recorded {}",
                    assign.workflow, assign.task, assign.step, assign.index, dep.result
                ));
            }
            let sources: Vec<(u64, u64)> = match dep.join_k {
                None => result_source(&dep.result).into_iter().collect(),
                Some(_) => dep
                    .branches
                    .iter()
                    .filter(|branch| branch.state == "SUCCEEDED")
                    .filter_map(|branch| result_source(&branch.result))
                    .collect(),
            };
            let needed = match dep.join_k {
                None => sources.len().min(1),
                Some(0) => sources.len(),
                Some(k) => (k as usize).min(sources.len()),
            };
            let sent_before = sources
                .iter()
                .filter_map(|(task, token)| recorded.completion(*task, *token))
                .filter(|complete| complete.index < assign.index)
                .count();
            if sent_before < needed {
                problems.push(format!(
                    "workflow {}: task {} of step {} was pushed to an agent (index {}) when only \
                     {sent_before} of the {needed} completions that made the result of \
                     {dep_name} had been sent",
                    assign.workflow, assign.task, assign.step, assign.index
                ));
            }
        }
    }
}

/// Every step or branch result the workflow recorded is what a worker sent, under the token of
/// the task's one successful attempt (the lease current when the completion was accepted), and is
/// the task's own result; a completion sent after a newer token of its task had been pushed to an
/// agent is never accepted; no task accepts two completions.
fn results_come_from_current_leases(
    recorded: &Recorded,
    reference: &FinalRead,
    tasks: &BTreeMap<u64, Task>,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let mut results_checked = 0u64;
    for (id, workflow) in &reference.workflows {
        for step in workflow.steps.iter().filter(|step| !step.compensation) {
            for (index, branch) in step.branches.iter().enumerate() {
                if branch.state != "SUCCEEDED" {
                    continue;
                }
                let result = match step.join_k {
                    None => &step.result,
                    Some(_) => &branch.result,
                };
                results_checked += 1;
                let place = format!("workflow {id} step {} branch {index}", step.name);
                let Some((task_id, token)) = result_source(result) else {
                    problems.push(format!("{place}: recorded {result}, which no worker sent"));
                    continue;
                };
                if task_id != branch.task {
                    problems.push(format!(
                        "{place}: the result came from task {task_id}, the branch ran task {}",
                        branch.task
                    ));
                }
                let Some(task) = tasks.get(&branch.task) else {
                    problems.push(format!("{place}: task {} is not listed", branch.task));
                    continue;
                };
                match task.succeeded_token() {
                    Some(current) if current == token => {}
                    current => problems.push(format!(
                        "{place}: the recorded result came from token {token}, but the task's \
                         successful attempt held token {current:?}: a stale lease's result"
                    )),
                }
                if task.result != *result {
                    problems.push(format!(
                        "{place}: recorded {result}, the task's own result is {}",
                        task.result
                    ));
                }
                let sent = recorded
                    .completes
                    .iter()
                    .filter(|c| c.task == task_id && c.token == token && c.result == *result)
                    .collect::<Vec<_>>();
                if sent.is_empty() {
                    problems.push(format!(
                        "{place}: no worker sent the recorded result {result}"
                    ));
                } else if sent.iter().all(|c| c.outcome == OpKind::Fail) {
                    problems.push(format!(
                        "{place}: recorded the result of a completion that was refused: {result}"
                    ));
                }
            }
        }
    }
    // A completion sent after its task's newer token was pushed: its lease was gone.
    let mut after_newer = 0u64;
    let mut after_newer_refused = 0u64;
    let mut after_newer_accepted = 0u64;
    let mut accepted: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for complete in &recorded.completes {
        if complete.outcome == OpKind::Ok {
            accepted
                .entry(complete.task)
                .or_default()
                .push(complete.token);
        }
        let newer = recorded.assigns.iter().find(|assign| {
            assign.task == complete.task
                && assign.token > complete.token
                && assign.index < complete.index
        });
        let Some(newer) = newer else {
            continue;
        };
        after_newer += 1;
        match complete.outcome {
            OpKind::Fail => after_newer_refused += 1,
            OpKind::Ok => {
                after_newer_accepted += 1;
                problems.push(format!(
                "task {}: the completion with token {} (index {}) was accepted although token {} \
                 had been assigned before it was sent (index {}): a stale lease completed",
                complete.task, complete.token, complete.index, newer.token, newer.index
                ));
            }
            _ => {}
        }
    }
    for (task, tokens) in &accepted {
        if tokens.len() > 1 {
            problems.push(format!(
                "task {task} accepted {} completions, tokens {tokens:?}",
                tokens.len()
            ));
        }
    }
    stats["results_checked"] = json!(results_checked);
    stats["completions_after_a_newer_token"] = json!(after_newer);
    stats["completions_after_a_newer_token_refused"] = json!(after_newer_refused);
    stats["completions_after_a_newer_token_accepted"] = json!(after_newer_accepted);
}

/// A fan-out joined by at least k that SUCCEEDED has at least k SUCCEEDED branches and says so in
/// its result; it ran once and its join fired once (one JOINED in a watch without gaps, never
/// two); every step started at most as many tasks as it ran (the dependent of a join once).
fn joins_fire_once(
    recorded: &Recorded,
    reference: &FinalRead,
    tasks: &BTreeMap<u64, Task>,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let mut joined: BTreeMap<(u64, &str), u64> = BTreeMap::new();
    let mut watched_start: BTreeSet<u64> = BTreeSet::new();
    let mut watched_end: BTreeSet<u64> = BTreeSet::new();
    for event in &recorded.watched {
        match event.kind.as_str() {
            "JOINED" => {
                *joined
                    .entry((event.workflow, event.step.as_str()))
                    .or_default() += 1
            }
            "STARTED_WORKFLOW" => {
                watched_start.insert(event.workflow);
            }
            "FINISHED" => {
                watched_end.insert(event.workflow);
            }
            _ => {}
        }
    }
    let mut joins = 0u64;
    for (id, workflow) in &reference.workflows {
        for step in &workflow.steps {
            let Some(k) = step.join_k else {
                continue;
            };
            let fired = joined.get(&(*id, step.name.as_str())).copied().unwrap_or(0);
            if fired > 1 {
                problems.push(format!(
                    "workflow {id}: the join of {} fired {fired} times",
                    step.name
                ));
            }
            if step.state != "SUCCEEDED" {
                continue;
            }
            joins += 1;
            let succeeded = step
                .branches
                .iter()
                .filter(|b| b.state == "SUCCEEDED")
                .count() as u64;
            if succeeded < k.max(1) {
                problems.push(format!(
                    "workflow {id}: {} SUCCEEDED with {succeeded} succeeded branches, fewer than k = {k}",
                    step.name
                ));
            }
            if step.result["succeeded"].as_u64() != Some(succeeded) {
                problems.push(format!(
                    "workflow {id}: the joined result of {} says {} succeeded, the branches {succeeded}",
                    step.name, step.result["succeeded"]
                ));
            }
            if step.runs != 1 {
                problems.push(format!(
                    "workflow {id}: {} ran {} times",
                    step.name, step.runs
                ));
            }
            let whole = watched_start.contains(id) && watched_end.contains(id);
            if recorded.watch_gaps == 0 && whole && fired != 1 {
                problems.push(format!(
                    "workflow {id}: {} succeeded but the watch, which saw the workflow start and \
                     finish and lost nothing, saw its join fire {fired} times",
                    step.name
                ));
            }
        }
    }
    // Tasks per (workflow, step, branch): one per run.
    let mut started: BTreeMap<(u64, usize, u64), BTreeSet<u64>> = BTreeMap::new();
    for (task_id, task) in tasks {
        if let Some((workflow, step, branch)) = &task.origin {
            started
                .entry((*workflow, *step, *branch))
                .or_default()
                .insert(*task_id);
        }
    }
    for ((workflow_id, step_index, branch), task_ids) in &started {
        let step = reference
            .workflows
            .get(workflow_id)
            .and_then(|workflow| workflow.steps.get(*step_index));
        let runs = step.map_or(1, |step| step.runs.max(1));
        if task_ids.len() as u64 > runs {
            problems.push(format!(
                "workflow {workflow_id}: step {} branch {branch} ran {} tasks {task_ids:?} in \
                 {runs} run(s)",
                step.map_or("?", |step| step.name.as_str()),
                task_ids.len()
            ));
        }
    }
    stats["joins_succeeded"] = json!(joins);
    stats["joined_events"] = json!(joined.values().sum::<u64>());
}

/// Once a workflow is terminal (canceled, failed, succeeded), none of its tasks runs: every task
/// with its origin, every branch's and compensation's task, is terminal.
fn stopped_workflows_leave_no_running_task(
    reference: &FinalRead,
    tasks: &BTreeMap<u64, Task>,
    problems: &mut Vec<String>,
) {
    let mut of_workflow: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (task_id, task) in tasks {
        if let Some((workflow, _, _)) = &task.origin {
            of_workflow.entry(*workflow).or_default().insert(*task_id);
        }
    }
    for (id, workflow) in &reference.workflows {
        if !WORKFLOW_TERMINAL.contains(&workflow.state.as_str()) {
            continue;
        }
        let mut task_ids = of_workflow.get(id).cloned().unwrap_or_default();
        task_ids.extend(
            workflow
                .steps
                .iter()
                .flat_map(|step| step.branches.iter().map(|branch| branch.task))
                .chain(workflow.compensations.iter().map(|(_, task, _)| *task))
                .filter(|task| *task != 0),
        );
        for task_id in task_ids {
            match tasks.get(&task_id) {
                Some(task) if TASK_TERMINAL.contains(&task.state.as_str()) => {}
                Some(task) => problems.push(format!(
                    "workflow {id} is {} but its task {task_id} is {}",
                    workflow.state, task.state
                )),
                None => problems.push(format!(
                    "workflow {id} names task {task_id}, which the queue does not list"
                )),
            }
        }
    }
}

/// A delegated task lives under the lease it was delegated under (agents.proto `Delegate`): its
/// manager's attempt with that token has ended after the heal, the task is terminal, and if it
/// succeeded it did so no later than that attempt ended (cluster time): the lease's end cancels
/// the tasks not finished in the same entry.
fn delegated_tasks_live_under_their_managers_lease(
    tasks: &BTreeMap<u64, Task>,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (id, task) in tasks {
        let Some((manager, token)) = task.delegation else {
            continue;
        };
        *counts.entry(task.state.to_lowercase()).or_default() += 1;
        if !TASK_TERMINAL.contains(&task.state.as_str()) {
            problems.push(format!(
                "delegated task {id} is {} after the heal",
                task.state
            ));
        }
        let lease_end = tasks
            .get(&manager)
            .and_then(|m| m.ended.get(&token).copied());
        let Some(lease_end) = lease_end.filter(|end| *end != 0) else {
            problems.push(format!(
                "delegated task {id}: its manager {manager}'s attempt with token {token} is not \
                 listed as ended"
            ));
            continue;
        };
        let succeeded_at = task
            .succeeded_token()
            .and_then(|t| task.ended.get(&t).copied());
        if let Some(at) = succeeded_at.filter(|at| *at > lease_end) {
            problems.push(format!(
                "delegated task {id} succeeded at {at}, after its manager {manager}'s lease \
                 (token {token}) ended at {lease_end}"
            ));
        }
    }
    stats["delegated"] = json!(counts);
}

/// The watcher got no event twice (a resume repeats nothing).
fn watch_has_no_repeats(recorded: &Recorded, problems: &mut Vec<String>, stats: &mut Json) {
    if !recorded.watch_repeats.is_empty() {
        problems.push(format!(
            "the workflow watch delivered sequences {:?} again after resuming",
            recorded.watch_repeats
        ));
    }
    stats["watched_events"] = json!(recorded.watched.len());
    stats["watch_gaps"] = json!(recorded.watch_gaps);
}
