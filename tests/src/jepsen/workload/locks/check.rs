//! The locks workload's checker: a pure function of the history (what the clients record is in
//! the module comment of `locks.rs`). The history is read once into a [`Recorded`]: the fenced
//! writes and replays ([`Fenced`]) and the acknowledged tokens ([`Granted`]); each property is one
//! function of `fenced/check.rs` returning typed problems.

use std::fmt;

use serde_json::{json, Value as Json};

use super::{END_KEY, NAME};
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::fenced::check::{
    Applied, FenceProblem, Fenced, GrantProblem, Granted, FENCE_PROPERTIES, GRANT_PROPERTIES,
};
use crate::jepsen::workload::CheckResult;

#[cfg(test)]
mod tests;

/// Operation counts, for the report.
#[derive(Debug, Default)]
struct Counts {
    acquires_granted: usize,
    acquires_not_granted: usize,
    acquires_unknown: usize,
    releases_ok: usize,
    releases_lock_lost: usize,
}

/// Everything the checker reads from the history.
#[derive(Debug)]
struct Recorded {
    fenced: Fenced,
    granted: Vec<Granted>,
    counts: Counts,
}

impl Recorded {
    fn parse(operations: &[Paired<'_>]) -> Self {
        let mut recorded = Self {
            fenced: Fenced::new(END_KEY),
            granted: Vec::new(),
            counts: Counts::default(),
        };
        for operation in operations {
            if recorded.fenced.add(operation) {
                continue;
            }
            match operation.invoke.f.as_str() {
                "acquire" => recorded.add_acquire(operation),
                "release" if operation.is_ok() => recorded.counts.releases_ok += 1,
                "release" if lock_lost(operation) => recorded.counts.releases_lock_lost += 1,
                _ => {}
            }
        }
        recorded
    }

    fn add_acquire(&mut self, operation: &Paired<'_>) {
        let (Some(complete), true) = (operation.complete, operation.is_ok()) else {
            if operation.outcome() != OpKind::Fail {
                self.counts.acquires_unknown += 1;
            }
            return;
        };
        let value = operation.value();
        let acquired = value["acquired"] == json!(true);
        if acquired {
            self.counts.acquires_granted += 1;
        } else {
            self.counts.acquires_not_granted += 1;
        }
        self.granted.push(Granted {
            name: value["name"].as_str().unwrap_or_default().to_string(),
            token: value["token"].as_u64().unwrap_or(0),
            acquired,
            invoked: operation.invoke.index,
            completed: complete.index,
        });
    }

    fn stats(&self, reference: &[Applied]) -> Json {
        let mut stats = self.fenced.stats(reference);
        let counts = &self.counts;
        stats["acquires_granted"] = json!(counts.acquires_granted);
        stats["acquires_not_granted"] = json!(counts.acquires_not_granted);
        stats["acquires_unknown"] = json!(counts.acquires_unknown);
        stats["releases_ok"] = json!(counts.releases_ok);
        stats["releases_lock_lost"] = json!(counts.releases_lock_lost);
        stats
    }
}

fn lock_lost(operation: &Paired<'_>) -> bool {
    operation.outcome() == OpKind::Fail
        && operation
            .complete
            .and_then(|event| event.error.as_deref())
            .is_some_and(|error| error.contains(conclave_proto::REASON_LOCK_LOST))
}

/// What a property found.
#[derive(Clone, Debug, PartialEq)]
enum Problem {
    Fence(FenceProblem),
    Grant(GrantProblem),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fence(problem) => problem.fmt(f),
            Self::Grant(problem) => problem.fmt(f),
        }
    }
}

/// Every property's findings, in order: the fenced writes', then the tokens'.
fn problems(recorded: &Recorded, reference: &[Applied]) -> Vec<Problem> {
    let fence = FENCE_PROPERTIES
        .iter()
        .flat_map(|property| property(&recorded.fenced, reference))
        .map(Problem::Fence);
    let grant = GRANT_PROPERTIES
        .iter()
        .flat_map(|property| property(&recorded.granted))
        .map(Problem::Grant);
    fence.chain(grant).collect()
}

/// Checks the locks events of `events` (the properties are in the module comment of `locks.rs`).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let recorded = Recorded::parse(&operations);
    let Some(reference) = recorded.fenced.reference() else {
        return CheckResult::unknown(NAME, "no node replayed the history after healing".into());
    };
    let problems = problems(&recorded, reference)
        .iter()
        .map(ToString::to_string)
        .collect();
    CheckResult::from_problems(NAME, problems, recorded.stats(reference))
}
