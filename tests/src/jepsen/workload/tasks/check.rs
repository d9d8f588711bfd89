//! The tasks workload's checker: a pure function of the history (what the clients record is in
//! the module comment of `tasks.rs`). Times compared here are the cluster's own stamps (when a
//! task was submitted, assigned, ended, expired), never the harness's clock: a check of "not
//! before" or "after the deadline" must hold however the nodes' clocks drift, because the state
//! machine applies every command at the leader's stamped time, which never goes back.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value as Json};

use super::listed::{completion_result, Attempt, Listed, Spec, TERMINAL};
use super::NAME;
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::{CheckResult, FINAL_READ};

#[cfg(test)]
mod tests;

/// Attempt outcomes that count against `max_attempts` (a release does not).
const COUNTED: [&str; 3] = ["FAILED", "LEASE_EXPIRED", "SESSION_LOST"];

/// Tasks of one final read, by id.
type Tasks = BTreeMap<u64, Listed>;

/// A final read: node, consistency, completion index, tasks.
struct FinalRead {
    node: Option<u64>,
    consistency: String,
    index: u64,
    tasks: Tasks,
}

/// A submission: its outcome, the acknowledged id and the spec sent.
struct Submission {
    outcome: OpKind,
    id: Option<u64>,
    spec: Option<Spec>,
}

/// A task verb (`complete`, `fail`, `release`) as the history records it.
struct Verb {
    f: String,
    agent: String,
    task: u64,
    token: u64,
    retryable: Option<bool>,
    outcome: OpKind,
    /// The task's state in an `ok` answer.
    state: Option<String>,
    /// Why a `fail` or `info` ended so.
    error: String,
    index: u64,
    complete_index: Option<u64>,
}

/// A client's CancelTask.
struct Cancel {
    task: u64,
    reason: String,
    outcome: OpKind,
    canceled: Option<bool>,
    previous: Option<String>,
    index: u64,
    complete_index: Option<u64>,
}

/// One task of a dead-letter listing.
struct DeadLetter {
    id: u64,
    state: String,
    last_token: u64,
    queue: String,
}

/// A ListDeadLetters read of one queue that succeeded.
struct DeadLetterRead {
    queue: String,
    index: u64,
    complete_index: u64,
    tasks: Vec<DeadLetter>,
}

/// A Redrive of one task, with the last token the redriver saw it dead-lettered with.
struct Redrive {
    task: u64,
    last_token: u64,
    outcome: OpKind,
    count: Option<u64>,
    index: u64,
    complete_index: Option<u64>,
}

impl Redrive {
    /// Whether it may have moved the task: acknowledged so, or its outcome is unknown.
    fn may_have_moved(&self) -> bool {
        self.applied() || self.outcome == OpKind::Info
    }

    /// Whether the cluster acknowledged that it moved the task.
    fn applied(&self) -> bool {
        self.outcome == OpKind::Ok && self.count == Some(1)
    }
}

/// A gating decision as the gatekeeper saw it at the end: id -> (status, outcome, closed_ms).
type Gates = BTreeMap<u64, (String, String, u64)>;

/// Everything the checker reads from the history.
#[derive(Default)]
struct Recorded {
    /// Payload -> its submission.
    submits: BTreeMap<String, Submission>,
    verbs: Vec<Verb>,
    /// (task, token, agent, index) of every assignment an agent received.
    assigns: Vec<(u64, u64, String, u64)>,
    /// (task, token, index) of every revocation (lease lost, canceled) pushed to an agent.
    revocations: Vec<(u64, u64, u64)>,
    cancels: Vec<Cancel>,
    dead_letter_reads: Vec<DeadLetterRead>,
    redrives: Vec<Redrive>,
    /// Decision ids whose proposal may have taken effect.
    proposed: BTreeSet<u64>,
    /// The final read of the gating decisions, if any.
    gates: Option<Gates>,
    finals: Vec<FinalRead>,
    drain_terminal: Option<bool>,
}

impl Recorded {
    fn parse(operations: &[Paired<'_>], problems: &mut Vec<String>) -> Recorded {
        let mut recorded = Recorded::default();
        for operation in operations {
            recorded.add(operation, problems);
        }
        recorded
    }

    fn add(&mut self, operation: &Paired<'_>, problems: &mut Vec<String>) {
        let invoke = operation.invoke;
        let value = operation.value();
        let error = operation
            .complete
            .and_then(|event| event.error.clone())
            .unwrap_or_default();
        match invoke.f.as_str() {
            "submit" => {
                let Some(payload) = invoke.value["payload"].as_str() else {
                    problems.push(format!("event {}: submit without a payload", invoke.index));
                    return;
                };
                let id = if operation.is_ok() {
                    value["id"].as_u64()
                } else {
                    None
                };
                let submission = Submission {
                    outcome: operation.outcome(),
                    id,
                    spec: Spec::parse(&invoke.value["spec"]),
                };
                if self
                    .submits
                    .insert(payload.to_string(), submission)
                    .is_some()
                {
                    problems.push(format!(
                        "payload {payload} was submitted twice (event {})",
                        invoke.index
                    ));
                }
            }
            "complete" | "fail" | "release" => {
                let (Some(task), Some(token), Some(agent)) = (
                    invoke.value["task"].as_u64(),
                    invoke.value["token"].as_u64(),
                    invoke.value["agent"].as_str(),
                ) else {
                    problems.push(format!(
                        "event {}: {} without task, token or agent",
                        invoke.index, invoke.f
                    ));
                    return;
                };
                self.verbs.push(Verb {
                    f: invoke.f.clone(),
                    agent: agent.to_string(),
                    task,
                    token,
                    retryable: invoke.value["retryable"].as_bool(),
                    outcome: operation.outcome(),
                    state: operation
                        .is_ok()
                        .then(|| value["state"].as_str().map(str::to_string))
                        .flatten(),
                    error,
                    index: invoke.index,
                    complete_index: operation.complete_index(),
                });
            }
            "assign" => {
                if let (Some(task), Some(token), Some(agent)) = (
                    value["task"].as_u64(),
                    value["token"].as_u64(),
                    value["agent"].as_str(),
                ) {
                    self.assigns
                        .push((task, token, agent.to_string(), invoke.index));
                }
            }
            "revoked" => {
                if let (Some(task), Some(token)) = (value["task"].as_u64(), value["token"].as_u64())
                {
                    self.revocations.push((task, token, invoke.index));
                }
            }
            "cancel" => {
                let Some(task) = invoke.value["task"].as_u64() else {
                    problems.push(format!("event {}: cancel without a task", invoke.index));
                    return;
                };
                self.cancels.push(Cancel {
                    task,
                    reason: invoke.value["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    outcome: operation.outcome(),
                    canceled: operation
                        .is_ok()
                        .then(|| value["canceled"].as_bool())
                        .flatten(),
                    previous: operation
                        .is_ok()
                        .then(|| value["previous"].as_str().map(str::to_string))
                        .flatten(),
                    index: invoke.index,
                    complete_index: operation.complete_index(),
                });
            }
            "dead-letters" if operation.is_ok() => {
                let queue = value["queue"].as_str().unwrap_or_default().to_string();
                let tasks = value["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|task| {
                        Some(DeadLetter {
                            id: task["id"].as_u64()?,
                            state: task["state"].as_str()?.to_string(),
                            last_token: task["last_token"].as_u64()?,
                            queue: task["queue"].as_str()?.to_string(),
                        })
                    })
                    .collect();
                self.dead_letter_reads.push(DeadLetterRead {
                    queue,
                    index: invoke.index,
                    complete_index: operation.complete_index().expect("ok completes"),
                    tasks,
                });
            }
            "redrive" => {
                let (Some(task), Some(last_token)) = (
                    invoke.value["task"].as_u64(),
                    invoke.value["last_token"].as_u64(),
                ) else {
                    problems.push(format!(
                        "event {}: redrive without a task or last token",
                        invoke.index
                    ));
                    return;
                };
                self.redrives.push(Redrive {
                    task,
                    last_token,
                    outcome: operation.outcome(),
                    count: operation.is_ok().then(|| value["count"].as_u64()).flatten(),
                    index: invoke.index,
                    complete_index: operation.complete_index(),
                });
            }
            "propose" if operation.outcome() != OpKind::Fail => {
                if let Some(id) = value["id"].as_u64() {
                    self.proposed.insert(id);
                }
            }
            "final-gates" if operation.is_ok() => {
                let gates = value["decisions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|decision| {
                        Some((
                            decision["id"].as_u64()?,
                            (
                                decision["status"].as_str()?.to_string(),
                                decision["outcome"].as_str().unwrap_or_default().to_string(),
                                decision["closed_ms"].as_u64()?,
                            ),
                        ))
                    })
                    .collect();
                self.gates = Some(gates);
            }
            "drain" if operation.is_ok() => self.drain_terminal = value["terminal"].as_bool(),
            FINAL_READ if operation.is_ok() => {
                let mut tasks = BTreeMap::new();
                for item in value["tasks"].as_array().into_iter().flatten() {
                    match Listed::parse(item) {
                        Some((id, listed)) => {
                            if tasks.insert(id, listed).is_some() {
                                problems.push(format!(
                                    "final read at index {} lists task {id} twice (in two \
                                     queues' listings?)",
                                    invoke.index
                                ));
                            }
                        }
                        None => problems.push(format!(
                            "final read at index {} lists a task it cannot parse: {item}",
                            invoke.index
                        )),
                    }
                }
                self.finals.push(FinalRead {
                    node: invoke.node,
                    consistency: value["consistency"].as_str().unwrap_or("?").to_string(),
                    index: operation.complete_index().expect("ok completes"),
                    tasks,
                });
            }
            _ => {}
        }
    }

    /// The reference final read: the linearizable one if there is one, else the first.
    fn reference(&self) -> Option<&FinalRead> {
        self.finals
            .iter()
            .find(|read| read.consistency == "linearizable")
            .or(self.finals.first())
    }

    fn stats(&self) -> Json {
        let submits = |outcome: OpKind| {
            self.submits
                .values()
                .filter(|submission| submission.outcome == outcome)
                .count()
        };
        let mut stats = json!({
            "submits": self.submits.len(),
            "submits_ok": submits(OpKind::Ok),
            "submits_fail": submits(OpKind::Fail),
            "submits_info": submits(OpKind::Info),
            "assignments_seen": self.assigns.len(),
            "revocations_seen": self.revocations.len(),
            "final_reads": self.finals.len(),
            "drain_terminal": self.drain_terminal,
            "cancels": self.cancels.len(),
            "cancels_canceled": self.cancels.iter().filter(|c| c.canceled == Some(true)).count(),
            "cancels_not_canceled": self.cancels.iter().filter(|c| c.canceled == Some(false)).count(),
            "cancels_unknown": self.cancels.iter().filter(|c| c.outcome == OpKind::Info).count(),
            "dead_letter_reads": self.dead_letter_reads.len(),
            "redrives": self.redrives.len(),
            "redrives_applied": self.redrives.iter().filter(|r| r.applied()).count(),
            "redrives_unknown": self.redrives.iter().filter(|r| r.outcome == OpKind::Info).count(),
        });
        for f in ["complete", "fail", "release"] {
            for (kind, name) in [
                (OpKind::Ok, "ok"),
                (OpKind::Fail, "refused"),
                (OpKind::Info, "info"),
            ] {
                stats[format!("{f}_{name}")] = json!(self
                    .verbs
                    .iter()
                    .filter(|verb| verb.f == f && verb.outcome == kind)
                    .count());
            }
        }
        stats
    }
}

/// Checks the tasks events of `events`:
/// - every final read lists the same tasks in the same state with the same attempts;
/// - no acknowledged submission is lost (its id is listed with its payload and spec: queue,
///   priority, not-before, deadline, attempts, gate), each in its queue's listing only;
/// - nothing unexpected: every listed task carries the payload of a submission that was invoked
///   and did not provably fail, and no payload is listed twice (a submission applied twice);
/// - attempts: at most one accepted completion per task, with the token of its one SUCCEEDED
///   attempt, which is the last, and the result sent with it; fencing tokens strictly increase
///   along a task's attempts (across redrives too), are never shared between tasks, and
///   `last_fencing_token` is the greatest; attempt numbers count up within a life (a release is
///   not counted) and restart at 1 after each redrive, never beyond `max_attempts`; CANCELED
///   and DEADLINE_EXCEEDED attempts end their task; the dead-letter and cancel reasons agree
///   with the state and the attempt log;
/// - cluster time ([`times`]): no attempt assigned before its task's not-before or at or after
///   its deadline; an EXPIRED task expired at or after its deadline and no attempt of it ended
///   later (no completion after it expired);
/// - verbs ([`verbs`]): an accepted verb ended its attempt so and answered the state that
///   follows; a refused one did not take effect, and a refusal because the task was canceled or
///   expired is borne out by the final state; no verb invoked after its lease's revocation was
///   pushed is accepted; every assignment pushed is an attempt of that task, agent and token;
/// - cancels ([`cancels`]), redrives and the dead-letter queue ([`dead_letters`]), gates
///   ([`gates`]): see there;
/// - every task is terminal after the drain.
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let mut problems: Vec<String> = Vec::new();
    let recorded = Recorded::parse(&operations, &mut problems);
    let mut stats = recorded.stats();
    let Some(reference) = recorded.reference() else {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        if !problems.is_empty() {
            result.verdict = super::super::Verdict::Invalid;
            result.problems.extend(problems);
        }
        return result;
    };
    reads_agree(&recorded, reference, &mut problems);
    submissions(&recorded, &reference.tasks, &mut problems, &mut stats);
    attempts(&recorded, &reference.tasks, &mut problems, &mut stats);
    times(&reference.tasks, &mut problems, &mut stats);
    verbs(&recorded, &reference.tasks, &mut problems);
    assignments(&recorded, &reference.tasks, &mut problems);
    cancels(&recorded, &reference.tasks, &mut problems);
    dead_letters(&recorded, &reference.tasks, &mut problems, &mut stats);
    gates(&recorded, &reference.tasks, &mut problems, &mut stats);
    CheckResult::from_problems(NAME, problems, stats)
}

/// Every node lists the same tasks, in the same state, with the same attempts.
fn reads_agree(recorded: &Recorded, reference: &FinalRead, problems: &mut Vec<String>) {
    for read in &recorded.finals {
        let ids: BTreeSet<u64> = read
            .tasks
            .keys()
            .chain(reference.tasks.keys())
            .copied()
            .collect();
        let mut differences = Vec::new();
        for id in ids {
            match (reference.tasks.get(&id), read.tasks.get(&id)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => differences.push(format!("task {id}: {a:?} vs {b:?}")),
            }
        }
        if !differences.is_empty() {
            problems.push(format!(
                "the final read on node {:?} ({}, index {}) disagrees with the reference read on \
                 node {:?} (index {}) on {} task(s), e.g. {}",
                read.node,
                read.consistency,
                read.index,
                reference.node,
                reference.index,
                differences.len(),
                differences[0]
            ));
        }
    }
}

/// Nothing lost, nothing unexpected, nothing twice; each task listed with the spec it was
/// submitted with, in its queue's listing.
fn submissions(
    recorded: &Recorded,
    reference: &Tasks,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    for (payload, submission) in &recorded.submits {
        let (OpKind::Ok, Some(id)) = (submission.outcome, submission.id) else {
            continue;
        };
        for read in &recorded.finals {
            match read.tasks.get(&id) {
                Some(listed) if &listed.payload == payload => {}
                Some(listed) => problems.push(format!(
                    "submission of {payload} was acknowledged as task {id}, but the final read on \
                     node {:?} ({}, index {}) lists task {id} with payload {}",
                    read.node, read.consistency, read.index, listed.payload
                )),
                None => problems.push(format!(
                    "task {id} ({payload}, acknowledged) is missing from the final read on node \
                     {:?} ({}, index {}): lost",
                    read.node, read.consistency, read.index
                )),
            }
        }
    }
    let mut by_payload: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (id, listed) in reference {
        by_payload.entry(&listed.payload).or_default().push(*id);
        match recorded.submits.get(&listed.payload) {
            None => problems.push(format!(
                "task {id} with payload {} is listed, but no submission of it was invoked",
                listed.payload
            )),
            Some(Submission {
                outcome: OpKind::Fail,
                ..
            }) => problems.push(format!(
                "task {id} with payload {} is listed, but its submission failed, which promised it \
                 was not applied",
                listed.payload
            )),
            Some(Submission {
                spec: Some(spec), ..
            }) if *spec != listed.spec => problems.push(format!(
                "task {id} ({}) is listed with spec {:?}, but was submitted with {spec:?}",
                listed.payload, listed.spec
            )),
            _ => {}
        }
        if listed.listed_in != listed.spec.queue {
            problems.push(format!(
                "task {id} of queue {:?} was listed by the listing of queue {:?}",
                listed.spec.queue, listed.listed_in
            ));
        }
    }
    for (payload, ids) in &by_payload {
        if ids.len() > 1 {
            problems.push(format!(
                "payload {payload} is listed as {} tasks {ids:?}: one submission applied more than once",
                ids.len()
            ));
        }
    }
    stats["submits_info_present_at_end"] = json!(recorded
        .submits
        .iter()
        .filter(|(payload, submission)| {
            submission.outcome == OpKind::Info && by_payload.contains_key(payload.as_str())
        })
        .count());
    let queues: BTreeSet<&str> = reference.values().map(|l| l.spec.queue.as_str()).collect();
    stats["queues"] = json!(queues);
}

/// Each task's attempt log: tokens, attempt numbers, the one success, the outcomes that end a
/// task, the reasons; every task terminal.
fn attempts(recorded: &Recorded, reference: &Tasks, problems: &mut Vec<String>, stats: &mut Json) {
    let mut token_owner: BTreeMap<u64, u64> = BTreeMap::new();
    let mut not_terminal = Vec::new();
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (id, listed) in reference {
        *states.entry(&listed.state).or_default() += 1;
        if !listed.is_terminal() {
            not_terminal.push(format!("{id} {}", listed.state));
        }
        if !listed.dead_letter_reason.is_empty() && listed.dead_letter_reason != "UNSPECIFIED" {
            *reasons
                .entry(listed.dead_letter_reason.clone())
                .or_default() += 1;
        }
        let tokens: Vec<u64> = listed.history.iter().map(|attempt| attempt.token).collect();
        if tokens.windows(2).any(|pair| pair[0] >= pair[1]) {
            problems.push(format!(
                "task {id}: fencing tokens of its attempts do not strictly increase: {tokens:?}"
            ));
        }
        if let Some(&greatest) = tokens.iter().max() {
            if listed.last_token != greatest {
                problems.push(format!(
                    "task {id}: last_fencing_token {} but its greatest attempt token is {greatest}",
                    listed.last_token
                ));
            }
        }
        for token in &tokens {
            if let Some(other) = token_owner.insert(*token, *id) {
                if other != *id {
                    problems.push(format!(
                        "fencing token {token} was issued to both task {other} and task {id}"
                    ));
                }
            }
        }
        success(*id, listed, problems);
        numbering(recorded, *id, listed, problems);
        endings(*id, listed, problems);
    }
    if !not_terminal.is_empty() {
        problems.push(format!(
            "{} task(s) not terminal after the drain, e.g. {:?}",
            not_terminal.len(),
            &not_terminal[..not_terminal.len().min(10)]
        ));
    }
    stats["tasks"] = json!(reference.len());
    stats["states"] = json!(states);
    stats["dead_letter_reasons"] = json!(reasons);
    stats["attempts"] = json!(reference.values().map(|l| l.history.len()).sum::<usize>());
    let outcome_count = |outcome: &str| {
        reference
            .values()
            .flat_map(|listed| &listed.history)
            .filter(|attempt| attempt.outcome == outcome)
            .count()
    };
    for outcome in [
        "LEASE_EXPIRED",
        "SESSION_LOST",
        "FAILED",
        "RELEASED",
        "CANCELED",
        "DEADLINE_EXCEEDED",
    ] {
        stats[format!("attempts_{}", outcome.to_lowercase())] = json!(outcome_count(outcome));
    }
}

/// A task is SUCCEEDED exactly when it has one SUCCEEDED attempt, its last, whose agent sent the
/// result it holds.
fn success(id: u64, listed: &Listed, problems: &mut Vec<String>) {
    let successes: Vec<usize> = listed
        .history
        .iter()
        .enumerate()
        .filter(|(_, attempt)| attempt.outcome == "SUCCEEDED")
        .map(|(position, _)| position)
        .collect();
    match (listed.state.as_str(), successes.as_slice()) {
        ("SUCCEEDED", [position]) if *position + 1 == listed.history.len() => {
            let attempt = &listed.history[*position];
            if listed.result != completion_result(&attempt.agent, attempt.token) {
                problems.push(format!(
                    "task {id} succeeded with token {} by {}, but its result is {:?}, not that \
                     completion's",
                    attempt.token, attempt.agent, listed.result
                ));
            }
        }
        ("SUCCEEDED", []) if listed.truncated() => {}
        ("SUCCEEDED", _) => problems.push(format!(
            "task {id} is SUCCEEDED but its attempts are {:?}: it needs exactly one SUCCEEDED \
             attempt, the last",
            listed.history
        )),
        (_, []) => {}
        (state, _) => problems.push(format!(
            "task {id} is {state} but has a SUCCEEDED attempt: {:?}",
            listed.history
        )),
    }
}

/// Attempt numbers: the first is 1; after a counted attempt the next is one more, after a
/// release the same (a release is not counted); after a redrive 1 again (tasks.proto: the
/// attempt count is reset, the log kept). None exceeds `max_attempts`, nor does the count.
fn numbering(recorded: &Recorded, id: u64, listed: &Listed, problems: &mut Vec<String>) {
    let max = listed.spec.max_attempts;
    if max > 0 && listed.attempts > max {
        problems.push(format!(
            "task {id} counts {} attempts, more than its max_attempts {max}",
            listed.attempts
        ));
    }
    if listed.truncated() {
        return;
    }
    // Redrives that may have applied, by the last token the task had when dead-lettered.
    let redriven_after: BTreeMap<u64, bool> = recorded
        .redrives
        .iter()
        .filter(|redrive| redrive.task == id && redrive.may_have_moved())
        .map(|redrive| (redrive.last_token, redrive.applied()))
        .collect();
    let mut expected = 1;
    for (position, attempt) in listed.history.iter().enumerate() {
        let after_redrive = position
            .checked_sub(1)
            .and_then(|previous| redriven_after.get(&listed.history[previous].token));
        let fits = match after_redrive {
            Some(true) => attempt.number == 1,
            // A redrive whose outcome is unknown: either.
            Some(false) => attempt.number == 1 || attempt.number == expected,
            None => attempt.number == expected,
        };
        if !fits {
            problems.push(format!(
                "task {id}: attempt with token {} is number {}, expected {}{}: {:?}",
                attempt.token,
                attempt.number,
                if after_redrive == Some(&true) {
                    1
                } else {
                    expected
                },
                if after_redrive.is_some() {
                    " (it follows a redrive)"
                } else {
                    ""
                },
                listed.history
            ));
            return;
        }
        if max > 0 && attempt.number > max {
            problems.push(format!(
                "task {id}: attempt number {} exceeds max_attempts {max}",
                attempt.number
            ));
        }
        expected = if COUNTED.contains(&attempt.outcome.as_str()) {
            attempt.number + 1
        } else {
            attempt.number
        };
    }
}

/// CANCELED and DEADLINE_EXCEEDED attempts end their task (the last attempt, in that state), a
/// terminal task runs nothing, and the reasons agree with the state and the log.
fn endings(id: u64, listed: &Listed, problems: &mut Vec<String>) {
    let state = listed.state.as_str();
    for (position, attempt) in listed.history.iter().enumerate() {
        let last = position + 1 == listed.history.len();
        let ends_as = match attempt.outcome.as_str() {
            "CANCELED" => "CANCELED",
            "DEADLINE_EXCEEDED" => "EXPIRED",
            _ => continue,
        };
        if !last || state != ends_as {
            problems.push(format!(
                "task {id} is {state}, but its attempt with token {} ended {}{}: {:?}",
                attempt.token,
                attempt.outcome,
                if last { "" } else { " and another followed" },
                listed.history
            ));
        }
    }
    if listed.is_terminal() && listed.history.iter().any(|a| a.outcome == "RUNNING") {
        problems.push(format!(
            "task {id} is {state} but an attempt is still RUNNING: {:?}",
            listed.history
        ));
    }
    let last_outcome = listed.history.last().map(|a| a.outcome.as_str());
    let reason = listed.dead_letter_reason.as_str();
    let reason_problem = match (state, reason) {
        ("DEAD_LETTERED", "NOT_RETRYABLE") if last_outcome != Some("FAILED") => Some(format!(
            "dead-lettered as NOT_RETRYABLE, but its last attempt ended {last_outcome:?}"
        )),
        ("DEAD_LETTERED", "NOT_RETRYABLE") => None,
        ("DEAD_LETTERED", "ATTEMPTS_EXHAUSTED")
            if listed.attempts < listed.spec.max_attempts
                || !last_outcome.is_some_and(|outcome| COUNTED.contains(&outcome)) =>
        {
            Some(format!(
                "dead-lettered as ATTEMPTS_EXHAUSTED after {} of {} attempts, the last ended \
                 {last_outcome:?}",
                listed.attempts, listed.spec.max_attempts
            ))
        }
        ("DEAD_LETTERED", "ATTEMPTS_EXHAUSTED") | ("EXPIRED", "DEADLINE_EXCEEDED") => None,
        ("DEAD_LETTERED" | "EXPIRED", reason) => {
            Some(format!("its dead-letter reason is {reason:?}"))
        }
        (_, "" | "UNSPECIFIED") => None,
        (_, reason) => Some(format!("it carries the dead-letter reason {reason}")),
    };
    if let Some(text) = reason_problem {
        problems.push(format!("task {id} is {state}, but {text}"));
    }
    if state != "CANCELED" && !listed.cancel_reason.is_empty() {
        problems.push(format!(
            "task {id} is {state}, but carries the cancel reason {:?}",
            listed.cancel_reason
        ));
    }
}

/// Cluster time. Every time compared is a stamp the cluster applied (the leader's clock, never
/// going back in the state machine), so these hold however the nodes' clocks drift:
/// - no attempt is assigned before its task was submitted or before its not-before, nor at or
///   after its deadline (the scheduler skips such tasks and Assign refuses them at apply time);
/// - an EXPIRED task has a deadline, expired at or after it, and no attempt of it ended after it
///   expired: no completion after it expired.
///
/// Completions accepted after the deadline but before its timer fired are counted
/// (`completed_after_deadline`): how late timers fire is not a safety property.
fn times(reference: &Tasks, problems: &mut Vec<String>, stats: &mut Json) {
    let mut delayed = 0;
    let mut with_deadline = 0;
    let mut completed_after_deadline = 0;
    // Smallest (first assignment - not-before) over delayed tasks.
    let mut delay_margin_min: Option<i64> = None;
    // Priority band -> (tasks, summed wait for the first assignment).
    let mut waits: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (id, listed) in reference {
        let spec = &listed.spec;
        delayed += u64::from(spec.not_before_ms != 0);
        with_deadline += u64::from(spec.deadline_ms != 0);
        for attempt in &listed.history {
            if attempt.assigned_ms < listed.submitted_ms {
                problems.push(format!(
                    "task {id}: attempt with token {} was assigned at {} (cluster time), before \
                     the task was submitted at {}",
                    attempt.token, attempt.assigned_ms, listed.submitted_ms
                ));
            }
            if spec.not_before_ms != 0 && attempt.assigned_ms < spec.not_before_ms {
                problems.push(format!(
                    "task {id}: attempt with token {} was assigned at {} (cluster time), {} ms \
                     before its not-before {}",
                    attempt.token,
                    attempt.assigned_ms,
                    spec.not_before_ms - attempt.assigned_ms,
                    spec.not_before_ms
                ));
            }
            if spec.deadline_ms != 0 && attempt.assigned_ms >= spec.deadline_ms {
                problems.push(format!(
                    "task {id}: attempt with token {} was assigned at {} (cluster time), at or \
                     after its deadline {}",
                    attempt.token, attempt.assigned_ms, spec.deadline_ms
                ));
            }
            if spec.deadline_ms != 0
                && attempt.outcome == "SUCCEEDED"
                && attempt.ended_ms >= spec.deadline_ms
            {
                completed_after_deadline += 1;
            }
        }
        if let Some(first) = listed.history.first() {
            if spec.not_before_ms != 0 {
                let margin = first.assigned_ms as i64 - spec.not_before_ms as i64;
                delay_margin_min = Some(delay_margin_min.map_or(margin, |m| m.min(margin)));
            }
            let ready = listed.submitted_ms.max(spec.not_before_ms);
            let band = match spec.priority {
                p if p > 0 => "positive",
                0 => "zero",
                _ => "negative",
            };
            let entry = waits.entry(band).or_default();
            entry.0 += 1;
            entry.1 += first.assigned_ms.saturating_sub(ready);
        }
        if listed.state == "EXPIRED" {
            if spec.deadline_ms == 0 {
                problems.push(format!("task {id} is EXPIRED but has no deadline"));
            } else if listed.updated_ms < spec.deadline_ms {
                problems.push(format!(
                    "task {id} expired at {} (cluster time), {} ms before its deadline {}",
                    listed.updated_ms,
                    spec.deadline_ms - listed.updated_ms,
                    spec.deadline_ms
                ));
            }
            for attempt in &listed.history {
                if attempt.ended_ms > listed.updated_ms {
                    problems.push(format!(
                        "task {id} expired at {} (cluster time), but its attempt with token {} \
                         ended {} at {}, after it expired",
                        listed.updated_ms, attempt.token, attempt.outcome, attempt.ended_ms
                    ));
                }
            }
        }
    }
    stats["tasks_delayed"] = json!(delayed);
    stats["tasks_with_deadline"] = json!(with_deadline);
    stats["completed_after_deadline"] = json!(completed_after_deadline);
    stats["delay_margin_min_ms"] = json!(delay_margin_min);
    stats["first_assignment_wait_mean_ms"] = json!(waits
        .iter()
        .map(|(band, (count, total))| (*band, total / (*count).max(1)))
        .collect::<BTreeMap<_, _>>());
}

/// Verbs: at most one accepted completion per task, with the token of its SUCCEEDED attempt; an
/// accepted verb ended its attempt so and answered the state that follows; a refused one changed
/// nothing, and "canceled" or "expired" refusals agree with the final state; nothing is accepted
/// after its lease's revocation was pushed.
fn verbs(recorded: &Recorded, reference: &Tasks, problems: &mut Vec<String>) {
    let mut accepted: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for verb in recorded
        .verbs
        .iter()
        .filter(|v| v.f == "complete" && v.outcome == OpKind::Ok)
    {
        accepted
            .entry(verb.task)
            .or_default()
            .push((verb.token, verb.index));
    }
    for (task, completions) in &accepted {
        if completions.len() > 1 {
            problems.push(format!(
                "task {task}: {} completions were accepted (token, event): {completions:?}",
                completions.len()
            ));
        }
    }
    let expected_outcome = |f: &str| match f {
        "complete" => "SUCCEEDED",
        "fail" => "FAILED",
        _ => "RELEASED",
    };
    for verb in &recorded.verbs {
        let Some(listed) = reference.get(&verb.task) else {
            problems.push(format!(
                "{} of task {} by {} (event {}) names a task the final read does not list",
                verb.f, verb.task, verb.agent, verb.index
            ));
            continue;
        };
        let attempt = listed.attempt(verb.token);
        let expected = expected_outcome(&verb.f);
        match verb.outcome {
            OpKind::Ok => {
                match attempt {
                    Some(attempt) if attempt.outcome == expected => {}
                    None if listed.truncated() => {}
                    other => problems.push(format!(
                        "{} of task {} with token {} by {} was accepted (event {}), but that \
                         attempt is {other:?} in the final read: {:?}",
                        verb.f, verb.task, verb.token, verb.agent, verb.index, listed.history
                    )),
                }
                if verb.f == "complete" && listed.state == "EXPIRED" {
                    problems.push(format!(
                        "the completion of task {} with token {} was accepted (event {}), but \
                         the task EXPIRED at {} (cluster time): a completion after it expired, \
                         or an acknowledged completion lost",
                        verb.task, verb.token, verb.index, listed.updated_ms
                    ));
                } else if verb.f == "complete" && listed.state != "SUCCEEDED" {
                    problems.push(format!(
                        "the completion of task {} with token {} was accepted (event {}), but the \
                         task is {} in the final read: an acknowledged completion was lost",
                        verb.task, verb.token, verb.index, listed.state
                    ));
                }
                let answered_ok = match (verb.f.as_str(), verb.retryable, verb.state.as_deref()) {
                    (_, _, None) => true,
                    ("complete", _, Some(state)) => state == "SUCCEEDED",
                    ("fail", Some(false), Some(state)) => state == "DEAD_LETTERED",
                    ("fail", _, Some(state)) => state == "RETRY_WAIT" || state == "DEAD_LETTERED",
                    (_, _, Some(state)) => state == "PENDING",
                };
                if !answered_ok {
                    problems.push(format!(
                        "{} of task {} with token {} (event {}{}) answered the state {:?}",
                        verb.f,
                        verb.task,
                        verb.token,
                        verb.index,
                        match verb.retryable {
                            Some(true) => ", retryable",
                            Some(false) => ", not retryable",
                            None => "",
                        },
                        verb.state
                    ));
                }
            }
            OpKind::Fail => {
                // Refused. Only this verb ever carried this token (one verb per assignment), so
                // the attempt must not have ended the way the verb would have ended it.
                let others = recorded.verbs.iter().any(|other| {
                    other.index != verb.index
                        && other.task == verb.task
                        && other.token == verb.token
                        && other.f == verb.f
                        && other.outcome != OpKind::Fail
                });
                if let Some(attempt) = attempt {
                    if attempt.outcome == expected && !others {
                        problems.push(format!(
                            "{} of task {} with token {} by {} was refused (event {}), yet that \
                             attempt ended {expected}: {:?}",
                            verb.f, verb.task, verb.token, verb.agent, verb.index, listed.history
                        ));
                    }
                }
                // The refusal names the state it saw; CANCELED is final, and the workload never
                // redrives an EXPIRED task.
                let said = if verb.error.contains("was canceled") {
                    Some("CANCELED")
                } else if verb.error.contains("expired (its deadline passed)") {
                    Some("EXPIRED")
                } else {
                    None
                };
                if let Some(said) = said {
                    if listed.state != said {
                        problems.push(format!(
                            "{} of task {} with token {} was refused because the task was {said} \
                             (event {}: {:?}), but it is {} in the final read",
                            verb.f, verb.task, verb.token, verb.index, verb.error, listed.state
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    // A verb invoked after its lease's revocation was pushed must not be accepted.
    for (task, token, revoked_at) in &recorded.revocations {
        for verb in &recorded.verbs {
            if verb.task == *task
                && verb.token == *token
                && verb.index > *revoked_at
                && verb.outcome == OpKind::Ok
            {
                problems.push(format!(
                    "{} of task {task} with token {token} by {} was accepted (event {}), though \
                     the lease had been revoked (pushed at event {revoked_at})",
                    verb.f, verb.agent, verb.index
                ));
            }
        }
    }
}

/// Every assignment an agent received is an attempt of that task, by that agent, with that
/// token, and no token was pushed for two tasks or agents.
fn assignments(recorded: &Recorded, reference: &Tasks, problems: &mut Vec<String>) {
    let mut seen_tokens: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
    for (task, token, agent, index) in &recorded.assigns {
        if let Some((other_task, other_agent)) = seen_tokens.insert(*token, (*task, agent)) {
            if other_task != *task || other_agent != agent {
                problems.push(format!(
                    "fencing token {token} was pushed for task {task} to {agent} (event {index}) \
                     and for task {other_task} to {other_agent}"
                ));
            }
        }
        let Some(listed) = reference.get(task) else {
            problems.push(format!(
                "{agent} was assigned task {task} with token {token} (event {index}), which the \
                 final read does not list"
            ));
            continue;
        };
        match listed.attempt(*token) {
            Some(attempt) if &attempt.agent == agent => {}
            None if listed.truncated() => {}
            other => problems.push(format!(
                "{agent} was assigned task {task} with token {token} (event {index}), but the \
                 task's attempt with that token is {other:?}: a committed assignment is lost"
            )),
        }
    }
}

/// Cancellation. A cancel answered `canceled=true` found the task not terminal and made it
/// CANCELED, which is final; so:
/// - the task ends CANCELED with that cancel's reason, its `previous` state was not terminal,
///   and if that state was ASSIGNED the running attempt ended CANCELED (else no attempt did);
/// - no completion of the task is ever accepted: one acknowledged before the cancel was invoked
///   would have made it SUCCEEDED (and the cancel answer `false`), one after would be a
///   completion of a canceled task; no verb invoked after the cancel was acknowledged is
///   accepted.
///
/// A cancel answered `canceled=false` found the task terminal: its `previous` is a terminal
/// state, and SUCCEEDED or CANCELED stay so. A CANCELED task carries the reason of a cancel of
/// it that was invoked and not refused, or the reason of its decision gate.
fn cancels(recorded: &Recorded, reference: &Tasks, problems: &mut Vec<String>) {
    for (id, listed) in reference.iter().filter(|(_, l)| l.state == "CANCELED") {
        let cancel = recorded
            .cancels
            .iter()
            .find(|cancel| cancel.task == *id && cancel.reason == listed.cancel_reason);
        match cancel {
            Some(cancel) if cancel.outcome == OpKind::Fail => problems.push(format!(
                "task {id} is CANCELED with the reason of the cancel at event {}, which failed \
                 (promising it was not applied)",
                cancel.index
            )),
            Some(cancel) if cancel.canceled == Some(false) => problems.push(format!(
                "task {id} is CANCELED with the reason of the cancel at event {}, which answered \
                 canceled=false",
                cancel.index
            )),
            Some(_) => {}
            // A gate's reason; `gates` checks it.
            None if listed.spec.gate.is_some() => {}
            None => problems.push(format!(
                "task {id} is CANCELED ({:?}), but no cancel of it with that reason was invoked",
                listed.cancel_reason
            )),
        }
    }
    for cancel in &recorded.cancels {
        let Some(listed) = reference.get(&cancel.task) else {
            if cancel.outcome == OpKind::Ok {
                problems.push(format!(
                    "the cancel of task {} (event {}) was answered, but the final read does not \
                     list the task",
                    cancel.task, cancel.index
                ));
            }
            continue;
        };
        let previous = cancel.previous.as_deref().unwrap_or("?");
        let previous_terminal = TERMINAL.contains(&previous);
        match cancel.canceled {
            Some(true) => {
                let here = format!(
                    "the cancel of task {} at event {} answered canceled=true (previous {previous})",
                    cancel.task, cancel.index
                );
                if previous_terminal {
                    problems.push(format!("{here}, but that state is terminal"));
                }
                if listed.state != "CANCELED" || listed.cancel_reason != cancel.reason {
                    problems.push(format!(
                        "{here}, but the task is {} with cancel reason {:?}, not CANCELED with \
                         {:?}",
                        listed.state, listed.cancel_reason, cancel.reason
                    ));
                }
                let last = listed.history.last();
                let canceled_attempt = last.is_some_and(|a| a.outcome == "CANCELED");
                if previous == "ASSIGNED" && !canceled_attempt && !listed.truncated() {
                    problems.push(format!(
                        "{here}, but the task's last attempt did not end CANCELED: {:?}",
                        listed.history
                    ));
                } else if previous != "ASSIGNED" && canceled_attempt {
                    problems.push(format!(
                        "{here}, but an attempt of it ended CANCELED: {:?}",
                        listed.history
                    ));
                }
                for verb in recorded
                    .verbs
                    .iter()
                    .filter(|v| v.task == cancel.task && v.outcome == OpKind::Ok)
                {
                    let when = if cancel.complete_index.is_some_and(|c| verb.index > c) {
                        "invoked after the cancel was acknowledged"
                    } else if verb.f != "complete" {
                        // A fail or release that committed before the cancel: the task went
                        // back to its queue, where the cancel found it.
                        continue;
                    } else if verb.complete_index.is_some_and(|c| c < cancel.index) {
                        "acknowledged before the cancel was invoked"
                    } else {
                        "concurrent with the cancel"
                    };
                    problems.push(format!(
                        "{here}, yet {} with token {} by {} was accepted (event {}), {when}",
                        verb.f, verb.token, verb.agent, verb.index
                    ));
                }
            }
            Some(false) => {
                let here = format!(
                    "the cancel of task {} at event {} answered canceled=false (previous \
                     {previous})",
                    cancel.task, cancel.index
                );
                if !previous_terminal {
                    problems.push(format!("{here}, but that state is not terminal"));
                }
                if matches!(previous, "SUCCEEDED" | "CANCELED") && listed.state != previous {
                    problems.push(format!(
                        "{here}, but the task is {} in the final read",
                        listed.state
                    ));
                }
            }
            None => {}
        }
    }
}

/// The dead-letter queue and redrive (the workload never purges, never redrives a task twice,
/// and redrives only tasks it listed DEAD_LETTERED):
/// - a dead-letter listing holds only DEAD_LETTERED and EXPIRED tasks of its queue;
/// - nothing leaves the DLQ unless redriven: a task listed as a dead letter that no redrive may
///   have moved since is in the final read in the same state with the same last token;
/// - a redrive answered count=1 moved the task: it ends terminal, and if it ends SUCCEEDED or
///   DEAD_LETTERED again it ran again, with tokens greater than every token before the redrive
///   and attempt numbers starting at 1 (`numbering`); a redrive answered count=0 for a task
///   listed DEAD_LETTERED with that last token, before it and with no other redrive between, is
///   a dead letter the cluster failed to find.
fn dead_letters(
    recorded: &Recorded,
    reference: &Tasks,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    // Task -> the last listing (index into reads, position) that named it a dead letter.
    let mut last_listed: BTreeMap<u64, (&DeadLetterRead, &DeadLetter)> = BTreeMap::new();
    for read in &recorded.dead_letter_reads {
        for dead in &read.tasks {
            if !matches!(dead.state.as_str(), "DEAD_LETTERED" | "EXPIRED") {
                problems.push(format!(
                    "the dead-letter listing of queue {} (event {}) lists task {} as {}",
                    read.queue, read.index, dead.id, dead.state
                ));
            }
            if dead.queue != read.queue {
                problems.push(format!(
                    "the dead-letter listing of queue {} (event {}) lists task {} of queue {}",
                    read.queue, read.index, dead.id, dead.queue
                ));
            }
            last_listed.insert(dead.id, (read, dead));
        }
    }
    for (id, (read, dead)) in &last_listed {
        // A redrive not provably failed and not over before this listing began may have moved it.
        let moved = recorded.redrives.iter().any(|redrive| {
            redrive.task == *id
                && redrive.may_have_moved()
                && redrive.complete_index.is_none_or(|c| c > read.index)
        });
        if moved {
            continue;
        }
        match reference.get(id) {
            None => problems.push(format!(
                "task {id}, listed as a dead letter (event {}), is missing from the final read: \
                 lost from the dead-letter queue",
                read.index
            )),
            Some(listed) if listed.state != dead.state || listed.last_token != dead.last_token => {
                problems.push(format!(
                    "task {id} was listed {} with last token {} (event {}) and never redriven, \
                     but is {} with last token {} in the final read: it left the dead-letter \
                     queue by itself",
                    dead.state, dead.last_token, read.index, listed.state, listed.last_token
                ))
            }
            Some(_) => {}
        }
    }
    let mut ran_again = 0;
    for redrive in &recorded.redrives {
        let Some(listed) = reference.get(&redrive.task) else {
            continue;
        };
        let here = format!(
            "the redrive of task {} at event {} (dead-lettered with last token {})",
            redrive.task, redrive.index, redrive.last_token
        );
        if redrive.applied() {
            let again: Vec<&Attempt> = listed
                .history
                .iter()
                .filter(|attempt| attempt.token > redrive.last_token)
                .collect();
            ran_again += usize::from(!again.is_empty());
            if matches!(listed.state.as_str(), "SUCCEEDED" | "DEAD_LETTERED") && again.is_empty() {
                problems.push(format!(
                    "{here} answered count=1, but the task is {} with no attempt after it: {}",
                    listed.state,
                    if listed.state == "DEAD_LETTERED" {
                        "the redrive was lost"
                    } else {
                        "it succeeded before it was dead-lettered"
                    }
                ));
            }
            if listed.history.iter().any(|attempt| {
                attempt.token <= redrive.last_token && attempt.outcome == "SUCCEEDED"
            }) {
                problems.push(format!(
                    "{here} answered count=1, but the task had succeeded before it: {:?}",
                    listed.history
                ));
            }
        } else if redrive.outcome == OpKind::Ok && redrive.count == Some(0) {
            // Listed DEAD_LETTERED with this token before the redrive, and no other redrive that
            // may have moved it in between: it was a dead letter when the redrive applied.
            let listed_before = recorded.dead_letter_reads.iter().any(|read| {
                read.complete_index < redrive.index
                    && read.tasks.iter().any(|dead| {
                        dead.id == redrive.task
                            && dead.state == "DEAD_LETTERED"
                            && dead.last_token == redrive.last_token
                    })
                    && !recorded.redrives.iter().any(|other| {
                        other.task == redrive.task
                            && other.index != redrive.index
                            && other.may_have_moved()
                            && other.complete_index.is_none_or(|c| c > read.index)
                            && other.index < redrive.complete_index.unwrap_or(u64::MAX)
                    })
            });
            if listed_before {
                problems.push(format!(
                    "{here} answered count=0, though the task was listed DEAD_LETTERED with that \
                     token before it and nothing else could have moved it"
                ));
            }
        }
    }
    stats["redriven_ran_again"] = json!(ran_again);
    stats["dead_letters_listed"] = json!(last_listed.len());
}

/// Decision gates: a gated task stays BLOCKED until its decision closes; it runs only if the
/// outcome is its option (then it is never assigned before the decision closed), and is
/// otherwise CANCELED with a reason naming the decision, never having run.
fn gates(recorded: &Recorded, reference: &Tasks, problems: &mut Vec<String>, stats: &mut Json) {
    let mut gated = 0;
    // Gated tasks whose decision let them through, and whose decision went the other way.
    let mut passed = 0;
    let mut refused = 0;
    for (id, listed) in reference {
        let Some((decision, option)) = &listed.spec.gate else {
            continue;
        };
        gated += 1;
        if !recorded.proposed.contains(decision) {
            problems.push(format!(
                "task {id} is gated on decision {decision}, which no proposal of the workload \
                 returned"
            ));
        }
        let Some(gates) = &recorded.gates else {
            continue;
        };
        let Some((status, outcome, closed_ms)) = gates.get(decision) else {
            problems.push(format!(
                "task {id} is gated on decision {decision}, which the final read of the gates \
                 does not list"
            ));
            continue;
        };
        let passes = status == "DECIDED" && outcome == option;
        let gate_reason = listed
            .cancel_reason
            .contains(&format!("decision {decision}"));
        if status == "OPEN" {
            if listed.state != "BLOCKED" && listed.state != "CANCELED" {
                problems.push(format!(
                    "task {id} is {} while its decision {decision} is still OPEN",
                    listed.state
                ));
            }
            continue;
        }
        if passes {
            passed += 1;
            if gate_reason {
                problems.push(format!(
                    "task {id} needs {option:?} of decision {decision}, which decided {outcome:?}, \
                     yet it was canceled by its gate ({:?})",
                    listed.cancel_reason
                ));
            }
        } else {
            refused += 1;
            if listed.state != "CANCELED" {
                problems.push(format!(
                    "task {id} needs {option:?} of decision {decision}, which ended {status} \
                     {outcome:?}, yet it is {}",
                    listed.state
                ));
            } else if !gate_reason && !recorded.cancels.iter().any(|c| c.task == *id) {
                problems.push(format!(
                    "task {id} was canceled by its gate (decision {decision} ended {status}), but \
                     its reason {:?} does not name the decision",
                    listed.cancel_reason
                ));
            }
            if let Some(attempt) = listed.history.first() {
                problems.push(format!(
                    "task {id} needs {option:?} of decision {decision}, which ended {status} \
                     {outcome:?}, yet it ran: {attempt:?}"
                ));
            }
        }
        for attempt in &listed.history {
            if attempt.assigned_ms < *closed_ms {
                problems.push(format!(
                    "task {id} was assigned at {} (cluster time), before its decision {decision} \
                     closed at {closed_ms}",
                    attempt.assigned_ms
                ));
            }
        }
    }
    stats["gated"] = json!(gated);
    stats["gated_passed"] = json!(passed);
    stats["gated_refused"] = json!(refused);
}
