//! The properties the locks and elections checkers share: of fenced writes against the replayed
//! history of their keys ([`Fenced`], [`FENCE_PROPERTIES`]), and of the tokens grants were
//! acknowledged with ([`Granted`], [`GRANT_PROPERTIES`]). Each property is one function returning
//! typed problems; the workloads' checkers parse their histories once and run these lists.
//!
//! Why these hold (locks.proto): a fenced write applies only while its token's grant is current;
//! a lock (or election) has at most one holder at a time; its grants follow queue order and the
//! token is issued when a request is queued, from one counter, so along the log the tokens of
//! one lock's successive holders grow. Hence, in revision order, the tokens of the applied writes
//! to one lock's key never decrease: a smaller token after a larger one is a holder that wrote
//! after it lost the lock (Jepsen's etcd lock analysis). And as a token is issued when its request
//! is applied, an acquire invoked after another one was acknowledged has a larger token.
//!
//! Only what is guaranteed is checked: a write with an unknown outcome may or may not be in the
//! history (but if it is, its token counts); an acquire answered "not acquired" may still have
//! been granted later (its token still counts for order and uniqueness).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{json, Value as Json};

use super::{END, FINAL_WATCH};
use crate::jepsen::history::{OpKind, Paired};

#[cfg(test)]
mod tests;

/// One fenced write as the client recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// Index of the invocation in the history.
    pub index: u64,
    pub key: String,
    pub name: String,
    pub token: u64,
    pub stale: bool,
    pub outcome: OpKind,
    /// The revision it was acknowledged with (`ok` only).
    pub revision: Option<u64>,
    /// Index of its `ok` completion in the history.
    pub acknowledged: Option<u64>,
    /// `fail` because the grant was not current (`lock-lost`).
    pub lock_lost: bool,
}

/// One change of a replayed key: who wrote it, under which token.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub revision: u64,
    pub key: String,
    /// `(token, write)` as stored, or `None` when the value is not what the writers write.
    pub record: Option<(u64, u64)>,
    /// The value as replayed.
    pub value: Json,
}

impl Applied {
    fn parse(event: &Json) -> Result<Self, String> {
        let Some([revision, key, value]) = event.as_array().map(Vec::as_slice) else {
            return Err(format!("malformed event {event}"));
        };
        let record = value["token"].as_u64().zip(value["write"].as_u64());
        Ok(Self {
            revision: revision
                .as_u64()
                .ok_or_else(|| format!("revision {revision}"))?,
            key: key.as_str().unwrap_or_default().to_string(),
            record,
            value: value.clone(),
        })
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{} {} = {}", self.revision, self.key, self.value)
    }
}

/// One node's replay after healing.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub node: Option<u64>,
    /// Without the end marker.
    pub applied: Result<Vec<Applied>, String>,
}

/// The fenced writes, the end marker and the replays of a history.
#[derive(Debug, Default)]
pub struct Fenced {
    /// The end marker's key: its change is left out of the replays.
    pub end_key: String,
    /// By write id (unique).
    pub writes: BTreeMap<u64, Write>,
    pub replays: Vec<Replay>,
    pub replays_missing: usize,
    /// The end marker's revision, once acknowledged.
    pub end: Option<u64>,
}

impl Fenced {
    pub fn new(end_key: &str) -> Self {
        Self {
            end_key: end_key.to_string(),
            ..Self::default()
        }
    }

    /// Takes `operation` if it is a fenced write, the end marker or a replay; true if it was.
    pub fn add(&mut self, operation: &Paired<'_>) -> bool {
        let invoke = operation.invoke;
        match invoke.f.as_str() {
            "write" => {
                let value = &invoke.value;
                let Some(write) = value["write"].as_u64() else {
                    return true;
                };
                let lock_lost = operation.outcome() == OpKind::Fail
                    && operation
                        .complete
                        .and_then(|event| event.error.as_deref())
                        .is_some_and(|error| error.contains(conclave_proto::REASON_LOCK_LOST));
                self.writes.insert(
                    write,
                    Write {
                        index: invoke.index,
                        key: invoke.key.clone().unwrap_or_default(),
                        name: value["name"].as_str().unwrap_or_default().to_string(),
                        token: value["token"].as_u64().unwrap_or(0),
                        stale: value["stale"] == json!(true),
                        outcome: operation.outcome(),
                        revision: operation
                            .is_ok()
                            .then(|| operation.value()["revision"].as_u64())
                            .flatten(),
                        acknowledged: operation
                            .is_ok()
                            .then(|| operation.complete.map(|event| event.index))
                            .flatten(),
                        lock_lost,
                    },
                );
            }
            END if operation.is_ok() => self.end = operation.value()["revision"].as_u64(),
            END => {}
            FINAL_WATCH if operation.is_ok() => {
                let applied = match operation.value()["events"].as_array() {
                    Some(events) => events
                        .iter()
                        .map(Applied::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map(|applied| self.without_end(applied)),
                    None => Err(format!("no events in {}", operation.value())),
                };
                self.replays.push(Replay {
                    node: invoke.node,
                    applied,
                });
            }
            FINAL_WATCH => self.replays_missing += 1,
            _ => return false,
        }
        true
    }

    /// The replayed changes but the end marker's.
    fn without_end(&self, applied: Vec<Applied>) -> Vec<Applied> {
        applied
            .into_iter()
            .filter(|change| change.key != self.end_key)
            .collect()
    }

    /// The first node's replay, which the others must equal; `None` when no replay succeeded.
    pub fn reference(&self) -> Option<&[Applied]> {
        match self.replays.first() {
            Some(Replay {
                applied: Ok(applied),
                ..
            }) => Some(applied),
            _ => None,
        }
    }

    /// Writes invoked after a write to the same key under a larger token was acknowledged: each
    /// one comes from a holder that lost its grant to a successor who has written since, so the
    /// fence must refuse it; had it been applied, it would follow the acknowledged one in the
    /// history and [`tokens_never_decrease`] would report it. A run that means to show the fence
    /// at work (or, in `--unsafe-test-mode skip-fence`, the checker catching its absence) counts
    /// these to prove it had some.
    pub fn writes_after_a_newer_token(&self) -> usize {
        // Per key: (history index of the acknowledgement, token) of the acknowledged writes.
        let mut acknowledged: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for write in self.writes.values() {
            if let Some(at) = write.acknowledged {
                acknowledged
                    .entry(write.key.as_str())
                    .or_default()
                    .push((at, write.token));
            }
        }
        self.writes
            .values()
            .filter(|write| {
                acknowledged.get(write.key.as_str()).is_some_and(|acks| {
                    acks.iter()
                        .any(|&(at, token)| at < write.index && token > write.token)
                })
            })
            .count()
    }

    pub fn stats(&self, reference: &[Applied]) -> Json {
        let count =
            |pick: &dyn Fn(&Write) -> bool| self.writes.values().filter(|w| pick(w)).count();
        json!({
            "writes_ok": count(&|w| w.outcome == OpKind::Ok),
            "writes_fail": count(&|w| w.outcome == OpKind::Fail),
            "writes_info": count(&|w| !matches!(w.outcome, OpKind::Ok | OpKind::Fail)),
            "writes_lock_lost": count(&|w| w.lock_lost),
            "stale_writes": count(&|w| w.stale),
            "stale_writes_ok": count(&|w| w.stale && w.outcome == OpKind::Ok),
            "stale_writes_lock_lost": count(&|w| w.stale && w.lock_lost),
            "writes_after_a_newer_token": self.writes_after_a_newer_token(),
            "applied": reference.len(),
            "replays": self.replays.len(),
            "end_revision": self.end,
        })
    }
}

/// A property of the fenced writes, given the reference replay.
pub type FenceProperty = fn(&Fenced, &[Applied]) -> Vec<FenceProblem>;

/// The fenced writes' properties, in the order their findings are listed.
pub const FENCE_PROPERTIES: [FenceProperty; 7] = [
    tokens_never_decrease,
    failed_writes_absent,
    acknowledged_writes_kept,
    applied_writes_were_written,
    replays_agree,
    every_node_replays,
    end_marker_acknowledged,
];

/// Mutual exclusion, by fencing-token order: along one key's replayed history (revision order),
/// the tokens of the applied writes never decrease.
pub fn tokens_never_decrease(_: &Fenced, reference: &[Applied]) -> Vec<FenceProblem> {
    let mut highest: HashMap<&str, &Applied> = HashMap::new();
    let mut problems = Vec::new();
    for change in reference {
        let Some((token, _)) = change.record else {
            continue;
        };
        match highest.get(change.key.as_str()) {
            Some(previous) if previous.record.is_some_and(|(high, _)| high > token) => {
                problems.push(FenceProblem::TokenWentBack {
                    earlier: (*previous).clone(),
                    later: change.clone(),
                });
            }
            _ => {
                highest.insert(&change.key, change);
            }
        }
    }
    problems
}

/// A write that failed (refused as lock-lost, or provably not proposed) is not in the history.
pub fn failed_writes_absent(fenced: &Fenced, reference: &[Applied]) -> Vec<FenceProblem> {
    reference
        .iter()
        .filter_map(|change| {
            let (_, write) = change.record?;
            let recorded = fenced.writes.get(&write)?;
            (recorded.outcome == OpKind::Fail).then(|| FenceProblem::FailedButApplied {
                change: change.clone(),
                lock_lost: recorded.lock_lost,
                index: recorded.index,
            })
        })
        .collect()
}

/// Every acknowledged write is in the history, at the revision it was acknowledged with.
pub fn acknowledged_writes_kept(fenced: &Fenced, reference: &[Applied]) -> Vec<FenceProblem> {
    let by_write: HashMap<u64, &Applied> = reference
        .iter()
        .filter_map(|change| change.record.map(|(_, write)| (write, change)))
        .collect();
    let mut problems = Vec::new();
    for (write, recorded) in &fenced.writes {
        let Some(revision) = recorded.revision else {
            continue;
        };
        match by_write.get(write) {
            Some(change) if change.revision == revision && change.key == recorded.key => {}
            found => problems.push(FenceProblem::AcknowledgedMissing {
                write: *write,
                key: recorded.key.clone(),
                revision,
                found: found.map(|change| (*change).clone()),
            }),
        }
    }
    problems
}

/// Every replayed change is the record of a write that was invoked, to that key, with that
/// token, and no write is applied twice.
pub fn applied_writes_were_written(fenced: &Fenced, reference: &[Applied]) -> Vec<FenceProblem> {
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut problems = Vec::new();
    for change in reference {
        let Some((token, write)) = change.record else {
            problems.push(FenceProblem::NeverWritten(change.clone()));
            continue;
        };
        match fenced.writes.get(&write) {
            None => problems.push(FenceProblem::NeverWritten(change.clone())),
            Some(recorded) if recorded.key != change.key || recorded.token != token => problems
                .push(FenceProblem::WrittenOtherwise {
                    change: change.clone(),
                    key: recorded.key.clone(),
                    token: recorded.token,
                }),
            Some(_) => {}
        }
        if let Some(previous) = seen.insert(write, change.revision) {
            problems.push(FenceProblem::AppliedTwice {
                change: change.clone(),
                previous,
            });
        }
    }
    problems
}

/// Every node replays the same history as the first one.
pub fn replays_agree(fenced: &Fenced, reference: &[Applied]) -> Vec<FenceProblem> {
    let reference_node = fenced.replays.first().and_then(|replay| replay.node);
    fenced
        .replays
        .iter()
        .skip(1)
        .filter_map(|replay| match &replay.applied {
            Ok(applied) if applied == reference => None,
            Ok(applied) => Some(FenceProblem::ReplaysDiffer {
                reference_node,
                node: replay.node,
                position: applied
                    .iter()
                    .zip(reference)
                    .position(|(a, b)| a != b)
                    .unwrap_or(applied.len().min(reference.len())),
            }),
            Err(error) => Some(FenceProblem::MalformedReplay(error.clone())),
        })
        .collect()
}

/// Every node's replay reached the end marker.
pub fn every_node_replays(fenced: &Fenced, _: &[Applied]) -> Vec<FenceProblem> {
    match fenced.replays_missing {
        0 => Vec::new(),
        count => vec![FenceProblem::ReplaysMissing(count)],
    }
}

/// The end marker was acknowledged (else how far the replays had to go is unknown).
pub fn end_marker_acknowledged(fenced: &Fenced, _: &[Applied]) -> Vec<FenceProblem> {
    match fenced.end {
        None => vec![FenceProblem::NoEndMarker],
        Some(_) => Vec::new(),
    }
}

/// What a fenced-write property found.
#[derive(Clone, Debug, PartialEq)]
pub enum FenceProblem {
    TokenWentBack {
        earlier: Applied,
        later: Applied,
    },
    FailedButApplied {
        change: Applied,
        lock_lost: bool,
        index: u64,
    },
    AcknowledgedMissing {
        write: u64,
        key: String,
        revision: u64,
        found: Option<Applied>,
    },
    NeverWritten(Applied),
    WrittenOtherwise {
        change: Applied,
        key: String,
        token: u64,
    },
    AppliedTwice {
        change: Applied,
        previous: u64,
    },
    ReplaysDiffer {
        reference_node: Option<u64>,
        node: Option<u64>,
        position: usize,
    },
    MalformedReplay(String),
    ReplaysMissing(usize),
    NoEndMarker,
}

impl fmt::Display for FenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenWentBack { earlier, later } => write!(
                f,
                "stale holder wrote: {later} carries a smaller token than {earlier} before it \
                 (fencing tokens must not decrease along a lock's or election's history)"
            ),
            Self::FailedButApplied {
                change,
                lock_lost,
                index,
            } => {
                let why = if *lock_lost {
                    "refused as lock-lost"
                } else {
                    "failed"
                };
                write!(f, "{change}: its write (index {index}) {why}, promising it was not applied")
            }
            Self::AcknowledgedMissing {
                write,
                key,
                revision,
                found,
            } => match found {
                None => write!(
                    f,
                    "write {write} acknowledged at r{revision} on {key} is missing from the history"
                ),
                Some(found) => write!(
                    f,
                    "write {write} acknowledged at r{revision} on {key}, but the history has it as {found}"
                ),
            },
            Self::NeverWritten(change) => write!(f, "{change}: no fenced write wrote this"),
            Self::WrittenOtherwise { change, key, token } => write!(
                f,
                "{change}: that write went to {key} with token {token}"
            ),
            Self::AppliedTwice { change, previous } => {
                write!(f, "{change}: the write was applied before, at r{previous}")
            }
            Self::ReplaysDiffer {
                reference_node,
                node,
                position,
            } => write!(
                f,
                "nodes {reference_node:?} and {node:?} replay different histories (from change \
                 #{position})"
            ),
            Self::MalformedReplay(error) => write!(f, "malformed replay: {error}"),
            Self::ReplaysMissing(count) => write!(
                f,
                "{count} node(s) could not replay the history after healing"
            ),
            Self::NoEndMarker => f.write_str("the end marker was never acknowledged"),
        }
    }
}

/// A token an acquire (or campaign) was acknowledged with.
#[derive(Clone, Debug, PartialEq)]
pub struct Granted {
    /// The lock (or election).
    pub name: String,
    pub token: u64,
    /// Whether the answer said it holds now.
    pub acquired: bool,
    /// History indexes of the invocation and the completion.
    pub invoked: u64,
    pub completed: u64,
}

/// A property of the acknowledged tokens.
pub type GrantProperty = fn(&[Granted]) -> Vec<GrantProblem>;

pub const GRANT_PROPERTIES: [GrantProperty; 2] = [tokens_unique, tokens_follow_real_time];

/// No two acquires were answered with the same token: tokens come from one cluster-wide
/// counter and are never reused (locks.proto).
pub fn tokens_unique(granted: &[Granted]) -> Vec<GrantProblem> {
    let mut by_token: HashMap<u64, &Granted> = HashMap::new();
    let mut problems = Vec::new();
    for grant in granted.iter().filter(|grant| grant.token != 0) {
        if let Some(first) = by_token.insert(grant.token, grant) {
            problems.push(GrantProblem::TokenTwice {
                token: grant.token,
                first: (first.name.clone(), first.invoked),
                second: (grant.name.clone(), grant.invoked),
            });
        }
    }
    problems
}

/// An acquire of a lock invoked after another acquire of it was acknowledged has a larger token:
/// the token is issued when the request is applied, and the tokens of one lock grow.
pub fn tokens_follow_real_time(granted: &[Granted]) -> Vec<GrantProblem> {
    let mut by_name: BTreeMap<&str, Vec<&Granted>> = BTreeMap::new();
    for grant in granted.iter().filter(|grant| grant.token != 0) {
        by_name.entry(&grant.name).or_default().push(grant);
    }
    let mut problems = Vec::new();
    for grants in by_name.values() {
        problems.extend(
            real_time_violations(grants, |g| (g.invoked, g.completed, g.token), true)
                .into_iter()
                .map(|(before, after)| GrantProblem::TokenBeforeItsTime {
                    name: after.name.clone(),
                    before: (before.token, before.completed),
                    after: (after.token, after.invoked),
                }),
        );
    }
    problems
}

/// Pairs `(before, after)` where `before` completed before `after` was invoked and yet `after`'s
/// number is smaller (`strict`: or equal) than `before`'s. `key` gives (invoked, completed,
/// number) as history indexes and the number. One pair per `after`, with the largest `before`.
pub fn real_time_violations<T>(
    items: &[T],
    key: impl Fn(&T) -> (u64, u64, u64),
    strict: bool,
) -> Vec<(&T, &T)> {
    let mut by_completion: Vec<&T> = items.iter().collect();
    by_completion.sort_by_key(|item| key(item).1);
    // The item with the largest number among the first i completions.
    let mut best: Vec<&T> = Vec::with_capacity(by_completion.len());
    for item in &by_completion {
        let keep = match best.last() {
            Some(previous) if key(previous).2 >= key(item).2 => *previous,
            _ => *item,
        };
        best.push(keep);
    }
    let mut violations = Vec::new();
    for after in items {
        let (invoked, _, number) = key(after);
        let completed_before = by_completion.partition_point(|item| key(item).1 < invoked);
        if completed_before == 0 {
            continue;
        }
        let before = best[completed_before - 1];
        let high = key(before).2;
        if high > number || (strict && high == number) {
            violations.push((before, after));
        }
    }
    violations
}

/// What a grant property found.
#[derive(Clone, Debug, PartialEq)]
pub enum GrantProblem {
    /// (name, invocation index) of the two acquires.
    TokenTwice {
        token: u64,
        first: (String, u64),
        second: (String, u64),
    },
    /// (token, completion index) of the acquire acknowledged first; (token, invocation index) of
    /// the one invoked after it.
    TokenBeforeItsTime {
        name: String,
        before: (u64, u64),
        after: (u64, u64),
    },
}

impl fmt::Display for GrantProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenTwice {
                token,
                first,
                second,
            } => write!(
                f,
                "token {token} was given twice: to {:?} (index {}) and to {:?} (index {})",
                first.0, first.1, second.0, second.1
            ),
            Self::TokenBeforeItsTime {
                name,
                before,
                after,
            } => write!(
                f,
                "{name:?}: an acquire invoked at index {} got token {}, not above token {} \
                 acknowledged earlier (index {})",
                after.1, after.0, before.0, before.1
            ),
        }
    }
}
