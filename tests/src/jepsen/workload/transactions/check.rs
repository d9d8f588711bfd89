//! The transactions checker: a pure function of the history, one function per property.
//!
//! A transaction T (`txn`) writes T into its task's result key and a counter key, submits one
//! follow-up labelled T and completes its task with result T, in one request. The properties:
//!
//! - [`reads_see_whole_transactions`]: a reader's later reads show the rest of every transaction
//!   an earlier read showed: a result key holding T means the task (read next) SUCCEEDED with
//!   result T and T's follow-up (listed next) exists; a task SUCCEEDED with T means the follow-up
//!   exists. Effects stay once applied, so any miss is a partial transaction.
//! - [`final_state_is_whole`]: in every node's final state, each result key, each SUCCEEDED task
//!   and each follow-up comes with the other two effects of its transaction.
//! - [`refused_transactions_left_no_trace`]: a value seen anywhere names a transaction that was
//!   sent and not refused (a failed compare, a stale token's lease lost or a provable non-proposal
//!   applied nothing); no stale-token transaction was acknowledged.
//! - [`acknowledged_transactions_are_visible`]: every acknowledged transaction is whole in every
//!   final read, its follow-up the task it returned.
//! - [`applied_at_most_once`]: at most one follow-up per transaction in any read, and at most one
//!   acknowledged transaction per task.
//! - [`revisions_follow_real_time`]: an acknowledged transaction that completed before another
//!   began has a lower revision; two acknowledged transactions never both replaced the same
//!   counter revision (a lost update), and each one's revision is above the one it compared.
//! - [`keys_carry_their_transactions_revision`]: every key seen holding T (result key or counter,
//!   by readers, workers and final reads) has one mod_revision, the revision T returned when it
//!   was acknowledged: the key writes of one transaction share its one revision.
//! - [`counters_are_linearizable`]: each counter key is a register, checked by the
//!   linearizability search of `src/checker` (Wing & Gong + Lowe): the workers' and readers' reads,
//!   every transaction's counter put as a compare-and-swap from the value its worker read (a write
//!   when the counter was absent or the transaction had no compare; a value nobody wrote for a
//!   deliberately wrong compare); refused ones are `fail`, so they may not have happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value as Json};

use super::{COUNTER_PREFIX, NAME, RESULT_PREFIX, WRONG_COMPARE};
use crate::checker::{self, linearizable, Function, History as Register, Op as RegisterOp};
use crate::jepsen::history::{pair, Event, OpKind};
use crate::jepsen::workload::{CheckResult, FINAL_READ};

/// One `txn` operation.
#[derive(Clone, Debug)]
pub struct Txn {
    pub txn: u64,
    pub outcome: OpKind,
    pub task: u64,
    pub counter: u64,
    pub compare: Option<u64>,
    pub stale: bool,
    pub revision: Option<u64>,
    pub follow_up: Option<u64>,
    pub invoke: u64,
    /// `None` for `info` (or never completed): +infinity.
    pub complete: Option<u64>,
    pub error: Option<String>,
}

/// One reader's `read`.
#[derive(Clone, Debug)]
pub struct Read {
    pub index: u64,
    pub task: u64,
    pub key: Option<u64>,
    pub state: String,
    pub result: Option<u64>,
    pub follow_ups: BTreeMap<u64, u64>,
}

/// A key seen holding a transaction's value, at a mod_revision.
#[derive(Clone, Debug)]
pub struct Seen {
    pub key: String,
    pub txn: u64,
    pub rev: u64,
    pub index: u64,
}

/// One node's final state.
#[derive(Clone, Debug)]
pub struct Final {
    pub index: u64,
    pub node: Json,
    pub keys: BTreeMap<String, (u64, u64)>,
    pub tasks: BTreeMap<u64, (String, Option<u64>)>,
    pub follow_ups: Vec<(u64, Option<u64>)>,
}

/// The workload's history, parsed.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub txns: BTreeMap<u64, Txn>,
    pub reads: Vec<Read>,
    pub finals: Vec<Final>,
    pub seen: Vec<Seen>,
    /// Values that are no transaction id at all, where one was read.
    pub foreign: Vec<String>,
}

/// Checks the transactions events of `events` (see the module comment).
pub fn check(events: &[Event], budget: Duration) -> CheckResult {
    let history = match parse(events) {
        Ok(history) => history,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    // The final state's findings first: they do not depend on when a reader happened to look.
    let mut problems = history.foreign.clone();
    problems.extend(refused_transactions_left_no_trace(&history));
    problems.extend(acknowledged_transactions_are_visible(&history));
    problems.extend(final_state_is_whole(&history));
    problems.extend(reads_see_whole_transactions(&history));
    problems.extend(applied_at_most_once(&history));
    problems.extend(revisions_follow_real_time(&history));
    problems.extend(keys_carry_their_transactions_revision(&history));
    let stats = stats(&history);
    match counters_are_linearizable(events, budget) {
        Ok(found) => problems.extend(found),
        Err(reason) => {
            let mut result = CheckResult::unknown(NAME, reason);
            result.stats = stats;
            if !problems.is_empty() {
                result.verdict = crate::jepsen::workload::Verdict::Invalid;
                result.problems.extend(problems);
            }
            return result;
        }
    }
    if history.finals.is_empty() {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        if !problems.is_empty() {
            result.verdict = crate::jepsen::workload::Verdict::Invalid;
            result.problems.extend(problems);
        }
        return result;
    }
    CheckResult::from_problems(NAME, problems, stats)
}

/// A transaction id read as JSON: `Ok(None)` for null, `Err` for text (no transaction wrote it).
fn txn_of(value: &Json) -> Result<Option<u64>, String> {
    match value {
        Json::Null => Ok(None),
        Json::Number(_) => value.as_u64().map(Some).ok_or_else(|| value.to_string()),
        other => Err(other.to_string()),
    }
}

fn parse(events: &[Event]) -> anyhow::Result<History> {
    let mut history = History::default();
    for operation in pair(events, Some(NAME))? {
        let value = operation.value();
        let index = operation.complete_index().unwrap_or(operation.invoke.index);
        match operation.invoke.f.as_str() {
            "txn" => {
                let txn = value["txn"].as_u64().context("a txn without an id")?;
                let entry = Txn {
                    txn,
                    outcome: operation.outcome(),
                    task: value["task"].as_u64().context("a txn without a task")?,
                    counter: value["counter"].as_u64().unwrap_or(0),
                    compare: value["compare"].as_u64(),
                    stale: value["stale"] == json!(true),
                    revision: value["revision"].as_u64(),
                    follow_up: value["follow_up"].as_u64(),
                    invoke: operation.invoke.index,
                    complete: operation.complete_index(),
                    error: operation.complete.and_then(|event| event.error.clone()),
                };
                if history.txns.insert(txn, entry).is_some() {
                    bail!("transaction {txn} was sent twice as two operations");
                }
            }
            "read" if operation.is_ok() => parse_read(&mut history, value, index)?,
            "counter" if operation.is_ok() => {
                let key = format!("{COUNTER_PREFIX}{}", value["counter"]);
                note(&mut history, &key, &value["value"], &value["rev"], index);
            }
            FINAL_READ if operation.is_ok() => parse_final(&mut history, value, index)?,
            _ => {}
        }
    }
    Ok(history)
}

/// Records a key seen holding `value` at `rev`.
fn note(history: &mut History, key: &str, value: &Json, rev: &Json, index: u64) -> Option<u64> {
    match txn_of(value) {
        Ok(Some(txn)) => {
            history.seen.push(Seen {
                key: key.to_string(),
                txn,
                rev: rev.as_u64().unwrap_or(0),
                index,
            });
            Some(txn)
        }
        Ok(None) => None,
        Err(text) => {
            history.foreign.push(format!(
                "key {key} held {text} (index {index}), which no transaction wrote"
            ));
            None
        }
    }
}

fn parse_read(history: &mut History, value: &Json, index: u64) -> anyhow::Result<()> {
    let task = value["task"].as_u64().context("a read without a task")?;
    let key = note(
        history,
        &format!("{RESULT_PREFIX}{task}"),
        &value["key"],
        &value["key_rev"],
        index,
    );
    let counter = format!("{COUNTER_PREFIX}{}", value["counter"]);
    note(
        history,
        &counter,
        &value["counter_value"],
        &value["counter_rev"],
        index,
    );
    let result = txn_of(&value["result"]).unwrap_or_else(|text| {
        history.foreign.push(format!(
            "task {task} had result {text} (index {index}), which no transaction gave it"
        ));
        None
    });
    let follow_ups = value["follow_ups"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(txn, count)| Some((txn.parse().ok()?, count.as_u64()?)))
        .collect();
    history.reads.push(Read {
        index,
        task,
        key,
        state: value["state"].as_str().unwrap_or_default().to_string(),
        result,
        follow_ups,
    });
    Ok(())
}

fn parse_final(history: &mut History, value: &Json, index: u64) -> anyhow::Result<()> {
    let mut keys = BTreeMap::new();
    for (key, held) in value["keys"]
        .as_object()
        .context("a final read without keys")?
    {
        if let Some(txn) = note(history, key, &held["value"], &held["rev"], index) {
            keys.insert(key.clone(), (txn, held["rev"].as_u64().unwrap_or(0)));
        }
    }
    let mut tasks = BTreeMap::new();
    for (id, task) in value["tasks"]
        .as_object()
        .context("a final read without tasks")?
    {
        let id: u64 = id.parse().context("a task id")?;
        let result = txn_of(&task["result"]).unwrap_or_else(|text| {
            history.foreign.push(format!(
                "task {id} had result {text} in the final read at index {index}"
            ));
            None
        });
        let state = task["state"].as_str().unwrap_or_default().to_string();
        tasks.insert(id, (state, result));
    }
    let follow_ups = value["follow_ups"]
        .as_array()
        .context("a final read without follow-ups")?
        .iter()
        .map(|task| (task["id"].as_u64().unwrap_or(0), task["txn"].as_u64()))
        .collect();
    history.finals.push(Final {
        index,
        node: value["node"].clone(),
        keys,
        tasks,
        follow_ups,
    });
    Ok(())
}

const SUCCEEDED: &str = "SUCCEEDED";

/// See the module comment.
pub fn reads_see_whole_transactions(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    for read in &history.reads {
        let follow_ups = |txn: u64| read.follow_ups.get(&txn).copied().unwrap_or(0);
        if let Some(txn) = read.key {
            if read.state != SUCCEEDED || read.result != Some(txn) {
                problems.push(format!(
                    "read at index {}: result key of task {} held transaction {txn}, then the \
                     task was {} with result {:?}: part of a transaction",
                    read.index, read.task, read.state, read.result
                ));
            }
            if follow_ups(txn) == 0 {
                problems.push(format!(
                    "read at index {}: result key of task {} held transaction {txn}, then its \
                     follow-up was absent: part of a transaction",
                    read.index, read.task
                ));
            }
        }
        if let (true, Some(txn)) = (read.state == SUCCEEDED, read.result) {
            if follow_ups(txn) == 0 {
                problems.push(format!(
                    "read at index {}: task {} SUCCEEDED with transaction {txn}, then its \
                     follow-up was absent: part of a transaction",
                    read.index, read.task
                ));
            }
        }
    }
    problems
}

/// See the module comment.
pub fn final_state_is_whole(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    for last in &history.finals {
        let mut follow_ups: BTreeMap<u64, usize> = BTreeMap::new();
        for txn in last.follow_ups.iter().filter_map(|(_, txn)| *txn) {
            *follow_ups.entry(txn).or_default() += 1;
        }
        let at = format!("final read at index {} (node {})", last.index, last.node);
        for (task, (state, result)) in &last.tasks {
            let (Some(txn), true) = (result, state == SUCCEEDED) else {
                continue;
            };
            let key = last
                .keys
                .get(&format!("{RESULT_PREFIX}{task}"))
                .map(|k| k.0);
            if key != Some(*txn) || !follow_ups.contains_key(txn) {
                problems.push(format!(
                    "{at}: task {task} SUCCEEDED with transaction {txn}, but its result key holds \
                     {key:?} and it has {} follow-up(s): part of a transaction",
                    follow_ups.get(txn).copied().unwrap_or(0)
                ));
            }
        }
        for (key, (txn, _)) in &last.keys {
            let Some(task) = key.strip_prefix(RESULT_PREFIX).and_then(|t| t.parse().ok()) else {
                continue;
            };
            let found = last.tasks.get(&task);
            if found.map(|(state, result)| (state.as_str(), *result))
                != Some((SUCCEEDED, Some(*txn)))
            {
                problems.push(format!(
                    "{at}: result key of task {task} holds transaction {txn}, but the task is \
                     {found:?}: part of a transaction"
                ));
            }
        }
        for txn in follow_ups.keys() {
            let Some(sent) = history.txns.get(txn) else {
                continue; // refused_transactions_left_no_trace names it
            };
            let found = last.tasks.get(&sent.task);
            if found.map(|(state, result)| (state.as_str(), *result))
                != Some((SUCCEEDED, Some(*txn)))
            {
                problems.push(format!(
                    "{at}: a follow-up of transaction {txn} exists, but its task {} is {found:?}: \
                     part of a transaction",
                    sent.task
                ));
            }
        }
    }
    problems
}

/// Every transaction id seen anywhere, with the index of its first sighting.
fn sightings(history: &History) -> BTreeMap<u64, u64> {
    let mut first: BTreeMap<u64, u64> = BTreeMap::new();
    let mut saw = |txn: u64, index: u64| {
        let at = first.entry(txn).or_insert(index);
        *at = (*at).min(index);
    };
    for seen in &history.seen {
        saw(seen.txn, seen.index);
    }
    for read in &history.reads {
        read.result.into_iter().for_each(|txn| saw(txn, read.index));
        for (txn, count) in &read.follow_ups {
            if *count > 0 {
                saw(*txn, read.index);
            }
        }
    }
    for last in &history.finals {
        let results = last.tasks.values().filter_map(|(_, result)| *result);
        let labels = last.follow_ups.iter().filter_map(|(_, txn)| *txn);
        for txn in results.chain(labels) {
            saw(txn, last.index);
        }
    }
    first
}

/// See the module comment.
pub fn refused_transactions_left_no_trace(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    for (txn, index) in sightings(history) {
        match history.txns.get(&txn) {
            None => problems.push(format!(
                "transaction {txn} was seen (index {index}) but never sent"
            )),
            Some(sent) if sent.outcome == OpKind::Fail => problems.push(format!(
                "transaction {txn} (task {}, {}) was refused ({}) but its effects were seen \
                 (index {index}): a refused transaction left a trace",
                sent.task,
                if sent.stale {
                    "stale token"
                } else {
                    "current token"
                },
                sent.error.as_deref().unwrap_or("fail")
            )),
            Some(_) => {}
        }
    }
    for sent in history.txns.values() {
        if sent.stale && sent.outcome == OpKind::Ok {
            problems.push(format!(
                "transaction {} completed task {} with a stale token and was acknowledged",
                sent.txn, sent.task
            ));
        }
    }
    problems
}

/// See the module comment.
pub fn acknowledged_transactions_are_visible(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    for sent in history.txns.values() {
        if sent.outcome != OpKind::Ok {
            continue;
        }
        for last in &history.finals {
            let key = last
                .keys
                .get(&format!("{RESULT_PREFIX}{}", sent.task))
                .map(|k| k.0);
            let task = last.tasks.get(&sent.task);
            let follow_ups: Vec<u64> = last
                .follow_ups
                .iter()
                .filter(|(_, txn)| *txn == Some(sent.txn))
                .map(|(id, _)| *id)
                .collect();
            let task_done =
                task.is_some_and(|(state, result)| state == SUCCEEDED && *result == Some(sent.txn));
            let follow_up_there = sent.follow_up.is_some_and(|id| follow_ups.contains(&id));
            if key != Some(sent.txn) || !task_done || !follow_up_there {
                problems.push(format!(
                    "acknowledged transaction {} (index {}) is not whole in the final read at \
                     index {} (node {}): result key {key:?}, task {} {task:?}, follow-up {:?} \
                     among {follow_ups:?}: lost",
                    sent.txn,
                    sent.complete.unwrap_or(sent.invoke),
                    last.index,
                    last.node,
                    sent.task,
                    sent.follow_up
                ));
            }
        }
    }
    problems
}

/// See the module comment.
pub fn applied_at_most_once(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    let mut reported = BTreeSet::new();
    for read in &history.reads {
        for (txn, count) in &read.follow_ups {
            if *count > 1 && reported.insert(*txn) {
                problems.push(format!(
                    "read at index {}: transaction {txn} has {count} follow-ups: applied more \
                     than once",
                    read.index
                ));
            }
        }
    }
    for last in &history.finals {
        let mut counts: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (id, txn) in last
            .follow_ups
            .iter()
            .filter_map(|(id, txn)| Some((*id, (*txn)?)))
        {
            counts.entry(txn).or_default().push(id);
        }
        for (txn, ids) in counts {
            if ids.len() > 1 && reported.insert(txn) {
                problems.push(format!(
                    "final read at index {}: transaction {txn} has follow-ups {ids:?}: applied \
                     more than once",
                    last.index
                ));
            }
        }
    }
    let mut by_task: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for sent in history.txns.values().filter(|t| t.outcome == OpKind::Ok) {
        by_task.entry(sent.task).or_default().push(sent.txn);
    }
    for (task, txns) in by_task {
        if txns.len() > 1 {
            problems.push(format!(
                "task {task} was completed by acknowledged transactions {txns:?}: more than once"
            ));
        }
    }
    problems
}

/// See the module comment.
pub fn revisions_follow_real_time(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    let mut acknowledged: Vec<(&Txn, u64, u64)> = history
        .txns
        .values()
        .filter(|t| t.outcome == OpKind::Ok)
        .filter_map(|t| Some((t, t.complete?, t.revision?)))
        .collect();
    acknowledged.sort_by_key(|(t, _, _)| t.invoke);
    // Sweep in invocation order, with the completions seen so far ordered by index.
    let mut by_completion: Vec<(u64, u64, u64)> = acknowledged
        .iter()
        .map(|(t, complete, revision)| (*complete, *revision, t.txn))
        .collect();
    by_completion.sort_unstable();
    let mut done = 0;
    let mut highest: Option<(u64, u64)> = None; // (revision, txn) of those completed so far
    for (sent, _, revision) in &acknowledged {
        while done < by_completion.len() && by_completion[done].0 < sent.invoke {
            let (_, rev, txn) = by_completion[done];
            if highest.is_none_or(|(top, _)| rev > top) {
                highest = Some((rev, txn));
            }
            done += 1;
        }
        if let Some((top, before)) = highest.filter(|(top, _)| *top >= *revision) {
            problems.push(format!(
                "transaction {} (invoked at index {}) got revision {revision}, not above the \
                 revision {top} of transaction {before}, acknowledged before it began",
                sent.txn, sent.invoke
            ));
        }
    }
    let mut replaced: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (sent, _, revision) in &acknowledged {
        let Some(compare) = sent.compare else {
            continue;
        };
        if *revision <= compare {
            problems.push(format!(
                "transaction {} compared counter {} at revision {compare} and got revision \
                 {revision}, not above it",
                sent.txn, sent.counter
            ));
        }
        if let Some(other) = replaced.insert((sent.counter, compare), sent.txn) {
            problems.push(format!(
                "transactions {other} and {} both replaced counter {} at revision {compare}: a \
                 lost update",
                sent.txn, sent.counter
            ));
        }
    }
    problems
}

/// See the module comment.
pub fn keys_carry_their_transactions_revision(history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    let mut revisions: BTreeMap<u64, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
    for seen in &history.seen {
        revisions
            .entry(seen.txn)
            .or_default()
            .entry(seen.rev)
            .or_insert((seen.key.clone(), seen.index));
    }
    for (txn, seen) in revisions {
        let acknowledged = history.txns.get(&txn).and_then(|t| t.revision);
        let wrong: Vec<_> = seen
            .iter()
            .filter(|(rev, _)| acknowledged.is_some_and(|at| at != **rev))
            .collect();
        if seen.len() > 1 || !wrong.is_empty() {
            problems.push(format!(
                "the keys of transaction {txn} (acknowledged at revision {acknowledged:?}) were \
                 seen at revisions {:?}: its writes are not one revision",
                seen.iter()
                    .map(|(rev, (key, index))| format!("{key}@{rev} (index {index})"))
                    .collect::<Vec<_>>()
            ));
        }
    }
    problems
}

/// See the module comment. `Err` when the search ran out of its budget (unknown).
pub fn counters_are_linearizable(
    events: &[Event],
    budget: Duration,
) -> Result<Vec<String>, String> {
    let history = match counter_history(events) {
        Ok(history) => history,
        Err(problem) => return Ok(vec![format!("counters: {problem:#}")]),
    };
    let report = checker::check(&history, budget)
        .map_err(|error| format!("counters: malformed register history: {error:#}"))?;
    match &report.verdict {
        linearizable::Verdict::Valid => Ok(Vec::new()),
        invalid @ linearizable::Verdict::Invalid { .. } => {
            Ok(vec![format!("counters are not linearizable: {invalid}")])
        }
        unknown @ linearizable::Verdict::Unknown { .. } => Err(format!("counters: {unknown}")),
    }
}

/// The counter operations as the register checker's history, in the order they were recorded.
fn counter_history(events: &[Event]) -> anyhow::Result<Register> {
    let mut history = Register::new();
    let mut open: HashMap<u64, RegisterOp> = HashMap::new();
    for event in events.iter().filter(|event| event.workload == NAME) {
        if event.kind == OpKind::Invoke {
            if let Some(op) = counter_invocation(event)? {
                open.insert(event.process, op.clone());
                history.push(op, event.time_ns);
            }
            continue;
        }
        let Some(invocation) = open.remove(&event.process) else {
            continue;
        };
        let mut op = invocation.complete(event.kind);
        if event.kind == OpKind::Ok && invocation.f == Function::Read {
            let value = match event.f.as_str() {
                "read" => &event.value["counter_value"],
                _ => &event.value["value"],
            };
            let read = txn_of(value).map_err(|text| {
                anyhow::anyhow!("event {}: read {text} from {}", event.index, invocation.key)
            })?;
            op = op.with_value(read);
        }
        history.push(op, event.time_ns);
    }
    Ok(history)
}

/// The register operation an invocation is on its counter, if any.
fn counter_invocation(event: &Event) -> anyhow::Result<Option<RegisterOp>> {
    let value = &event.value;
    let key = format!("{COUNTER_PREFIX}{}", value["counter"]);
    let process = event.process;
    Ok(Some(match event.f.as_str() {
        "read" | "counter" => RegisterOp::invoke_read(process, key),
        "txn" => {
            let txn = value["txn"].as_u64().context("a txn without an id")?;
            match (&value["expected"], value["compare"].as_u64()) {
                (Json::Null, _) | (_, None) => RegisterOp::invoke_write(process, key, txn),
                (expected, Some(_)) if *expected == json!(WRONG_COMPARE) => {
                    RegisterOp::invoke_cas(process, key, u64::MAX, txn)
                }
                (expected, Some(_)) => {
                    let expected = expected.as_u64().context("an expected counter value")?;
                    RegisterOp::invoke_cas(process, key, expected, txn)
                }
            }
        }
        _ => return Ok(None),
    }))
}

fn stats(history: &History) -> Json {
    let txns = || history.txns.values();
    let count = |stale: bool, kind: OpKind| {
        txns()
            .filter(|t| t.stale == stale && t.outcome == kind)
            .count()
    };
    let compare_failed = txns()
        .filter(|t| {
            t.outcome == OpKind::Fail
                && t.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(super::COMPARE_FAILED))
        })
        .count();
    let deliberate = txns()
        .filter(|t| t.outcome == OpKind::Fail && !t.stale)
        .count();
    let seen = sightings(history);
    let info_visible = txns()
        .filter(|t| t.outcome == OpKind::Info && seen.contains_key(&t.txn))
        .count();
    let last = history.finals.first();
    json!({
        "txns": history.txns.len(),
        "txns_ok": count(false, OpKind::Ok),
        "txns_fail": deliberate,
        "txns_compare_failed": compare_failed,
        "txns_info": count(false, OpKind::Info),
        "txns_info_visible": info_visible,
        "stale_sent": txns().filter(|t| t.stale).count(),
        "stale_refused": count(true, OpKind::Fail),
        "stale_info": count(true, OpKind::Info),
        "stale_acknowledged": count(true, OpKind::Ok),
        "reads": history.reads.len(),
        "reads_seeing_a_txn": history.reads.iter().filter(|r| r.key.is_some() || r.result.is_some()).count(),
        "final_reads": history.finals.len(),
        "final_succeeded_tasks": last.map_or(0, |f| f.tasks.values().filter(|(s, _)| s == SUCCEEDED).count()),
        "final_follow_ups": last.map_or(0, |f| f.follow_ups.len()),
    })
}

#[cfg(test)]
mod tests;
