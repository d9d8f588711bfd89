//! The watch workload's checker: a pure function of the history (what the clients record is in the
//! module comment of `watch.rs`). The history is read once into a [`Recorded`]; each property is
//! then one function of it and of the reference (the first node's replay of the whole history),
//! which returns what it found as [`Problem`]s. [`check`] lists the properties.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::{json, Value as Json};

use super::{END_KEY, FINAL_WATCH, NAME};
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::{CheckResult, Verdict, FINAL_READ};

#[cfg(test)]
mod tests;

/// What a change did to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
    /// A kind the recorder never writes, kept as recorded: it matches no write or delete.
    Other(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Other(kind) => kind,
        })
    }
}

/// One change of the prefix, as a watch stream delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    revision: u64,
    kind: Kind,
    key: String,
    /// The value put (a number, as the writers write, or text when it is not one); `null` for a
    /// delete.
    value: Json,
}

impl Change {
    /// The recorded form, `[revision, "put", key, value]` or `[revision, "delete", key, null]`.
    fn parse(event: &Json) -> Result<Self, String> {
        let Some([revision, kind, key, value]) = event.as_array().map(Vec::as_slice) else {
            return Err(format!("malformed event {event}"));
        };
        let kind = match kind.as_str().unwrap_or_default() {
            "put" => Kind::Put,
            "delete" => Kind::Delete,
            other => Kind::Other(other.to_string()),
        };
        Ok(Self {
            revision: revision
                .as_u64()
                .ok_or_else(|| format!("revision {revision}"))?,
            kind,
            key: key.as_str().unwrap_or_default().to_string(),
            value: value.clone(),
        })
    }

    /// The changes of a recorded `{"events": [...]}`.
    fn parse_all(value: &Json) -> Result<Vec<Self>, String> {
        let Some(events) = value.get("events").and_then(Json::as_array) else {
            return Err(format!("no events in {value}"));
        };
        events.iter().map(Self::parse).collect()
    }

    /// The value, if it puts one.
    fn put(&self) -> Option<&Json> {
        (self.kind == Kind::Put).then_some(&self.value)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            revision,
            kind,
            key,
            value,
        } = self;
        write!(f, "r{revision} {kind} {key} {value}")
    }
}

/// A key's value and the revision that put it, as a final read lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    value: Json,
    revision: u64,
}

/// The prefix's keys and their entries.
type State = BTreeMap<String, Entry>;

/// A state as recorded, `{key: [value, mod_revision]}`.
fn state_json(state: &State) -> Json {
    Json::Object(
        state
            .iter()
            .map(|(key, entry)| (key.clone(), json!([entry.value, entry.revision])))
            .collect(),
    )
}

/// A recorded state parsed back: `None` unless every entry is `[value, revision]`.
fn parse_state(value: &Json) -> Option<State> {
    value
        .as_object()?
        .iter()
        .map(|(key, entry)| match entry.as_array().map(Vec::as_slice) {
            Some([value, revision]) => Some((
                key.clone(),
                Entry {
                    value: value.clone(),
                    revision: revision.as_u64()?,
                },
            )),
            _ => None,
        })
        .collect()
}

/// A write (put) of one unique value: the key it went to and how it ended.
struct Write {
    key: String,
    outcome: OpKind,
}

/// A node's replay of the whole history after healing, that succeeded.
struct Replay {
    node: Option<u64>,
    changes: Result<Vec<Change>, String>,
}

/// A node's listing of the prefix after healing, that succeeded.
struct FinalRead {
    node: Option<u64>,
    /// What it listed, or the recorded value when that is not a state.
    state: Result<State, Json>,
}

/// One stretch of a watcher's stream (a `watch` operation).
struct Stretch {
    /// The revision it asked to start from.
    from: u64,
    node: Option<u64>,
    /// It completed (`ok`); a watcher that was aborted leaves its last stretch open.
    completed: bool,
    /// It ended with the stream failing, and the watcher reconnected.
    failed: bool,
    /// What it received (nothing when the record cannot be read, a problem of its own).
    changes: Vec<Change>,
}

/// Operation counts, for the report.
#[derive(Default)]
struct Counts {
    writes_ok: usize,
    writes_info: usize,
    writes_fail: usize,
    deletes_ok: usize,
}

/// Everything the checker reads from the history.
#[derive(Default)]
struct Recorded {
    /// By value (unique per write).
    writes: HashMap<u64, Write>,
    /// Acknowledged changes, by the revision they were acknowledged with: every `ok` write and
    /// every `ok` delete that deleted something.
    acknowledged: BTreeMap<u64, Change>,
    /// The revision of the end marker, once acknowledged.
    end_revision: Option<u64>,
    replays: Vec<Replay>,
    /// Replays that did not succeed.
    replays_missing: usize,
    finals: Vec<FinalRead>,
    /// By process, in the order invoked.
    watchers: BTreeMap<u64, Vec<Stretch>>,
    counts: Counts,
}

impl Recorded {
    /// Reads every operation; what it cannot read is a problem.
    fn parse(operations: &[Paired<'_>], problems: &mut Vec<Problem>) -> Self {
        let mut recorded = Self::default();
        for operation in operations {
            recorded.add(operation, problems);
        }
        recorded
    }

    fn add(&mut self, operation: &Paired<'_>, problems: &mut Vec<Problem>) {
        let invoke = operation.invoke;
        let key = invoke.key.as_deref().unwrap_or_default();
        match invoke.f.as_str() {
            "write" => self.add_write(operation),
            "delete" if operation.is_ok() => {
                self.counts.deletes_ok += 1;
                if operation.value()["deleted"] == json!(true) {
                    let revision = operation.value()["revision"].as_u64().unwrap_or(0);
                    self.acknowledge(revision, key, Kind::Delete, Json::Null);
                }
            }
            FINAL_WATCH if operation.is_ok() => self.replays.push(Replay {
                node: invoke.node,
                changes: Change::parse_all(operation.value()),
            }),
            FINAL_WATCH => self.replays_missing += 1,
            FINAL_READ if operation.is_ok() => {
                let value = operation.value();
                self.finals.push(FinalRead {
                    node: invoke.node,
                    state: parse_state(value).ok_or_else(|| value.clone()),
                });
            }
            "watch" => self.add_stretch(operation, problems),
            _ => {}
        }
    }

    fn add_write(&mut self, operation: &Paired<'_>) {
        let outcome = operation.outcome();
        match outcome {
            OpKind::Ok => self.counts.writes_ok += 1,
            OpKind::Fail => self.counts.writes_fail += 1,
            _ => self.counts.writes_info += 1,
        }
        let key = operation.invoke.key.as_deref().unwrap_or_default();
        let Some(value) = operation.invoke.value.as_u64() else {
            return;
        };
        self.writes.insert(
            value,
            Write {
                key: key.into(),
                outcome,
            },
        );
        if operation.is_ok() {
            let revision = operation.value()["revision"].as_u64().unwrap_or(0);
            if key == END_KEY {
                self.end_revision = Some(revision);
            }
            self.acknowledge(revision, key, Kind::Put, json!(value));
        }
    }

    fn add_stretch(&mut self, operation: &Paired<'_>, problems: &mut Vec<Problem>) {
        let watcher = operation.invoke.process;
        let changes = if operation.is_ok() {
            Change::parse_all(operation.value()).unwrap_or_else(|error| {
                let problem = WatcherProblem::MalformedStretch { watcher, error };
                problems.push(Problem::Watcher(problem));
                Vec::new()
            })
        } else {
            Vec::new()
        };
        self.watchers.entry(watcher).or_default().push(Stretch {
            from: operation.invoke.value["from"].as_u64().unwrap_or(0),
            node: operation.invoke.node,
            completed: operation.is_ok(),
            failed: operation.is_ok() && operation.value().get("error").is_some(),
            changes,
        });
    }

    fn acknowledge(&mut self, revision: u64, key: &str, kind: Kind, value: Json) {
        let key = key.to_string();
        let change = Change {
            revision,
            kind,
            key,
            value,
        };
        self.acknowledged.insert(revision, change);
    }

    /// What each watcher received, or where its stretches fail to join up.
    fn received(&self) -> impl Iterator<Item = (u64, Result<Received, Box<Problem>>)> + '_ {
        self.watchers
            .iter()
            .map(|(&watcher, stretches)| (watcher, join(watcher, stretches)))
    }

    fn stats(&self, reference: &[Change]) -> Json {
        let stretches = self.watchers.values().flatten();
        json!({
            "writes_ok": self.counts.writes_ok,
            "writes_info": self.counts.writes_info,
            "writes_fail": self.counts.writes_fail,
            "deletes_ok": self.counts.deletes_ok,
            "changes": reference.len(),
            "watchers": self.watchers.len(),
            "watch_operations": stretches.clone().count(),
            "reconnects": stretches.filter(|stretch| stretch.failed).count(),
            "replays": self.replays.len(),
            "end_revision": self.end_revision,
        })
    }
}

/// What one watcher received, its stretches joined up.
struct Received {
    /// The revision its first stretch started from.
    start: u64,
    changes: Vec<Change>,
}

/// Joins a watcher's stretches: each must resume right after the last revision received (the
/// first starts where it starts), and each but an aborted watcher's last must have completed.
fn join(watcher: u64, stretches: &[Stretch]) -> Result<Received, Box<Problem>> {
    let start = stretches.first().map_or(1, |stretch| stretch.from);
    let mut changes: Vec<Change> = Vec::new();
    for stretch in stretches {
        let (from, node) = (stretch.from, stretch.node);
        let expected = changes.last().map_or(start, |last| last.revision + 1);
        if from != expected {
            return Err(Box::new(Problem::Watcher(
                WatcherProblem::ResumedElsewhere {
                    watcher,
                    from,
                    node,
                    expected,
                },
            )));
        }
        if !stretch.completed {
            return Err(Box::new(Problem::Watcher(WatcherProblem::NeverCompleted {
                watcher,
                from,
                node,
            })));
        }
        changes.extend(stretch.changes.iter().cloned());
    }
    Ok(Received { start, changes })
}

/// The reference: the first node's replay, which the others must equal.
struct Reference<'a> {
    node: Option<u64>,
    changes: &'a [Change],
}

/// A property: what it finds in the history, given the reference.
type Property = fn(&Recorded, &Reference<'_>) -> Vec<Problem>;

/// The properties, in the order their findings are listed.
const PROPERTIES: [Property; 13] = [
    replays_agree,
    every_node_replays,
    revisions_unique,
    revisions_increase,
    puts_were_written,
    values_applied_once,
    acknowledged_changes_kept,
    final_state_is_the_replay,
    watchers_resume_in_place,
    watchers_see_the_reference,
    watchers_reach_the_end,
    someone_watched,
    end_marker_acknowledged,
];

/// Checks the watch events of `events` (the properties are in the module comment of `watch.rs`;
/// each has its function here).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let mut problems = Vec::new();
    let recorded = Recorded::parse(&operations, &mut problems);
    let Some(Replay {
        node,
        changes: Ok(changes),
    }) = recorded.replays.first()
    else {
        return CheckResult::unknown(NAME, "no node replayed the history after healing".into());
    };
    let reference = Reference {
        node: *node,
        changes,
    };
    for property in PROPERTIES {
        problems.extend(property(&recorded, &reference));
    }
    let problems = problems.iter().map(ToString::to_string).collect();
    let result = CheckResult::from_problems(NAME, problems, recorded.stats(changes));
    if result.verdict == Verdict::Valid && recorded.finals.is_empty() {
        return CheckResult {
            verdict: Verdict::Unknown,
            problems: vec!["no final read".into()],
            ..result
        };
    }
    result
}

/// Every node replays the same history as the reference.
fn replays_agree(recorded: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for replay in recorded.replays.iter().skip(1) {
        let replayed = match &replay.changes {
            Ok(replayed) if replayed == reference.changes => continue,
            Ok(replayed) => replayed,
            Err(error) => {
                problems.push(Problem::History(HistoryProblem::MalformedReplay(
                    error.clone(),
                )));
                continue;
            }
        };
        let pairs = replayed.iter().zip(reference.changes);
        let difference = match pairs.enumerate().find(|(_, (a, b))| a != b) {
            Some((position, (found, expected))) => Difference::At {
                position,
                expected: expected.clone(),
                found: found.clone(),
            },
            None => Difference::Length {
                expected: reference.changes.len(),
                found: replayed.len(),
            },
        };
        problems.push(Problem::History(HistoryProblem::ReplaysDiffer {
            reference_node: reference.node,
            node: replay.node,
            difference,
        }));
    }
    problems
}

/// Every node's replay succeeded.
fn every_node_replays(recorded: &Recorded, _: &Reference<'_>) -> Vec<Problem> {
    match recorded.replays_missing {
        0 => Vec::new(),
        count => vec![Problem::History(HistoryProblem::ReplaysMissing(count))],
    }
}

/// No revision holds two changes.
fn revisions_unique(_: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let mut seen = BTreeSet::new();
    reference
        .changes
        .iter()
        .filter(|change| !seen.insert(change.revision))
        .map(|change| Problem::History(HistoryProblem::RevisionTwice(change.revision)))
        .collect()
}

/// Revisions strictly increase along the history.
fn revisions_increase(_: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let changes = reference.changes;
    if changes.windows(2).any(|w| w[0].revision >= w[1].revision) {
        vec![Problem::History(HistoryProblem::OutOfOrder)]
    } else {
        Vec::new()
    }
}

/// The write of a put's value to its key was invoked and did not provably fail.
fn puts_were_written(recorded: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for change in reference.changes {
        let Some(value) = change.put() else {
            continue;
        };
        match value.as_u64().and_then(|value| recorded.writes.get(&value)) {
            None => problems.push(Problem::Writes(WriteProblem::NeverWritten(change.clone()))),
            Some(write) if write.key != change.key => {
                problems.push(Problem::Writes(WriteProblem::WrittenElsewhere {
                    change: change.clone(),
                    key: write.key.clone(),
                }))
            }
            Some(write) if write.outcome == OpKind::Fail => {
                problems.push(Problem::Writes(WriteProblem::WriteFailed(change.clone())))
            }
            Some(_) => {}
        }
    }
    problems
}

/// A value that was written (to that key, by a write that did not fail) is put once.
fn values_applied_once(recorded: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut applied: HashMap<u64, u64> = HashMap::new();
    for change in reference.changes {
        let Some(value) = change.put() else {
            continue;
        };
        let Some(value) = value.as_u64() else {
            continue;
        };
        let written = recorded
            .writes
            .get(&value)
            .is_some_and(|write| write.key == change.key && write.outcome != OpKind::Fail);
        if !written {
            continue;
        }
        if let Some(previous) = applied.insert(value, change.revision) {
            problems.push(Problem::Writes(WriteProblem::AppliedTwice {
                change: change.clone(),
                previous,
            }));
        }
    }
    problems
}

/// Every acknowledged write and delete is in the history, at the revision it was acknowledged
/// with.
fn acknowledged_changes_kept(recorded: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    // The last change of a revision, should there be two (a problem of its own).
    let by_revision: BTreeMap<u64, &Change> = reference
        .changes
        .iter()
        .map(|change| (change.revision, change))
        .collect();
    let mut problems = Vec::new();
    for (revision, change) in &recorded.acknowledged {
        match by_revision.get(revision) {
            Some(&found) if found == change => {}
            Some(&found) => problems.push(Problem::Writes(WriteProblem::AcknowledgedDiffers {
                acknowledged: change.clone(),
                found: found.clone(),
            })),
            None => problems.push(Problem::Writes(WriteProblem::AcknowledgedMissing(
                change.clone(),
            ))),
        }
    }
    problems
}

/// Every node lists the state the history replays to.
fn final_state_is_the_replay(recorded: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let mut replayed = State::new();
    for change in reference.changes {
        // Whatever does not put removes (a delete, or a kind the recorder never writes).
        match change.put() {
            Some(value) => {
                let value = value.clone();
                let entry = Entry {
                    value,
                    revision: change.revision,
                };
                replayed.insert(change.key.clone(), entry);
            }
            None => {
                replayed.remove(&change.key);
            }
        }
    }
    recorded
        .finals
        .iter()
        .filter(|read| read.state.as_ref() != Ok(&replayed))
        .map(|read| {
            Problem::History(HistoryProblem::FinalStateDiffers {
                node: read.node,
                listed: read.state.as_ref().map_or_else(Clone::clone, state_json),
                replayed: state_json(&replayed),
            })
        })
        .collect()
}

/// Each watcher's stretches join up: every reconnect resumed right after the last revision
/// received, and no stretch was left open.
fn watchers_resume_in_place(recorded: &Recorded, _: &Reference<'_>) -> Vec<Problem> {
    recorded
        .received()
        .filter_map(|(_, received)| received.err().map(|problem| *problem))
        .collect()
}

/// Each watcher received exactly the history from where it started to the last revision it
/// received: the same changes at the same revisions, in order, with no gap and no duplicate.
fn watchers_see_the_reference(recorded: &Recorded, reference: &Reference<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (watcher, received) in recorded.received() {
        let Ok(Received { start, changes }) = received else {
            continue;
        };
        let last = changes.last().map_or(0, |change| change.revision);
        let expected: Vec<&Change> = reference
            .changes
            .iter()
            .filter(|change| change.revision >= start && change.revision <= last)
            .collect();
        let pairs = changes.iter().zip(&expected);
        if let Some((position, (saw, history))) = pairs.enumerate().find(|(_, (a, b))| a != *b) {
            problems.push(Problem::Watcher(WatcherProblem::WatcherSawOther {
                watcher,
                position,
                saw: saw.clone(),
                expected: (*history).clone(),
            }));
        } else if changes.len() != expected.len() {
            problems.push(Problem::Watcher(WatcherProblem::WatcherSawCount {
                watcher,
                start,
                last,
                saw: changes.len(),
                expected: expected.len(),
            }));
        }
    }
    problems
}

/// Each watcher received the history up to the end marker.
fn watchers_reach_the_end(recorded: &Recorded, _: &Reference<'_>) -> Vec<Problem> {
    let Some(end) = recorded.end_revision else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (watcher, received) in recorded.received() {
        let Ok(received) = received else {
            continue;
        };
        let last = received.changes.last().map_or(0, |change| change.revision);
        if last < end {
            problems.push(Problem::Watcher(WatcherProblem::ShortOfTheEnd {
                watcher,
                last,
                end,
            }));
        }
    }
    problems
}

/// Some watcher recorded something (else nothing was checked of the streams).
fn someone_watched(recorded: &Recorded, _: &Reference<'_>) -> Vec<Problem> {
    if recorded.watchers.is_empty() {
        vec![Problem::NoWatcher]
    } else {
        Vec::new()
    }
}

/// The end marker was acknowledged (else how far watchers had to get is unknown).
fn end_marker_acknowledged(recorded: &Recorded, _: &Reference<'_>) -> Vec<Problem> {
    match recorded.end_revision {
        None => vec![Problem::NoEndMarker],
        Some(_) => Vec::new(),
    }
}

/// Where a replay first differs from the reference.
#[derive(Clone, Debug, PartialEq)]
enum Difference {
    At {
        position: usize,
        expected: Change,
        found: Change,
    },
    /// One is the other's prefix.
    Length { expected: usize, found: usize },
}

/// What a property found: one anomaly, with what it is about. [`fmt::Display`] says it in words,
/// for the report.
#[derive(Clone, Debug, PartialEq)]
enum Problem {
    /// The nodes' replays of the history and what they list.
    History(HistoryProblem),
    /// The history against the writes and deletes of the run.
    Writes(WriteProblem),
    /// What one watcher received against the history.
    Watcher(WatcherProblem),
    NoWatcher,
    NoEndMarker,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::History(problem) => problem.fmt(f),
            Self::Writes(problem) => problem.fmt(f),
            Self::Watcher(problem) => problem.fmt(f),
            Self::NoWatcher => f.write_str("no watcher recorded anything"),
            Self::NoEndMarker => f.write_str("the end marker was never acknowledged"),
        }
    }
}

/// The nodes' replays of the history and what they list.
#[derive(Clone, Debug, PartialEq)]
enum HistoryProblem {
    MalformedReplay(String),
    ReplaysDiffer {
        reference_node: Option<u64>,
        node: Option<u64>,
        difference: Difference,
    },
    ReplaysMissing(usize),
    RevisionTwice(u64),
    OutOfOrder,
    FinalStateDiffers {
        node: Option<u64>,
        listed: Json,
        replayed: Json,
    },
}

impl fmt::Display for HistoryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedReplay(error) => write!(f, "malformed replay: {error}"),
            Self::ReplaysDiffer {
                reference_node,
                node,
                difference,
            } => {
                write!(
                    f,
                    "nodes {reference_node:?} and {node:?} replay different histories: "
                )?;
                match difference {
                    Difference::At {
                        position,
                        expected,
                        found,
                    } => write!(f, "at position {position}: {expected} vs {found}"),
                    Difference::Length { expected, found } => {
                        write!(f, "{expected} vs {found} changes")
                    }
                }
            }
            Self::ReplaysMissing(count) => write!(
                f,
                "{count} node(s) could not replay the history after healing"
            ),
            Self::RevisionTwice(revision) => {
                write!(f, "revision {revision} appears twice in the history")
            }
            Self::OutOfOrder => {
                f.write_str("the replayed history is not in increasing revision order")
            }
            Self::FinalStateDiffers {
                node,
                listed,
                replayed,
            } => write!(
                f,
                "node {node:?} lists {listed} but the history replays to {replayed}"
            ),
        }
    }
}

/// The history against the writes and deletes of the run.
#[derive(Clone, Debug, PartialEq)]
enum WriteProblem {
    NeverWritten(Change),
    WrittenElsewhere { change: Change, key: String },
    WriteFailed(Change),
    AppliedTwice { change: Change, previous: u64 },
    AcknowledgedDiffers { acknowledged: Change, found: Change },
    AcknowledgedMissing(Change),
}

impl fmt::Display for WriteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NeverWritten(change) => write!(f, "{change}: no write wrote this value"),
            Self::WrittenElsewhere { change, key } => {
                write!(f, "{change}: that value was written to {key}")
            }
            Self::WriteFailed(change) => write!(
                f,
                "{change}: its write failed, promising it was not applied"
            ),
            Self::AppliedTwice { change, previous } => {
                write!(f, "{change}: the value was applied before, at r{previous}")
            }
            Self::AcknowledgedDiffers {
                acknowledged,
                found,
            } => write!(
                f,
                "acknowledged {acknowledged}, but the history has {found}"
            ),
            Self::AcknowledgedMissing(change) => {
                write!(f, "acknowledged {change} is missing from the history")
            }
        }
    }
}

/// What one watcher received against the history.
#[derive(Clone, Debug, PartialEq)]
enum WatcherProblem {
    /// A stretch whose events cannot be read.
    MalformedStretch {
        watcher: u64,
        error: String,
    },
    ResumedElsewhere {
        watcher: u64,
        from: u64,
        node: Option<u64>,
        expected: u64,
    },
    NeverCompleted {
        watcher: u64,
        from: u64,
        node: Option<u64>,
    },
    /// The watcher's change number `position` is not the history's.
    WatcherSawOther {
        watcher: u64,
        position: usize,
        saw: Change,
        expected: Change,
    },
    WatcherSawCount {
        watcher: u64,
        start: u64,
        last: u64,
        saw: usize,
        expected: usize,
    },
    ShortOfTheEnd {
        watcher: u64,
        last: u64,
        end: u64,
    },
}

impl fmt::Display for WatcherProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedStretch { watcher, error } => write!(f, "watcher {watcher}: {error}"),
            Self::ResumedElsewhere {
                watcher,
                from,
                node,
                expected,
            } => write!(
                f,
                "watcher {watcher} resumed at r{from} on node {node:?}, not at r{expected}"
            ),
            Self::NeverCompleted {
                watcher,
                from,
                node,
            } => write!(
                f,
                "watcher {watcher}: a stretch from r{from} on node {node:?} never completed"
            ),
            Self::WatcherSawOther {
                watcher,
                position,
                saw,
                expected,
            } => write!(
                f,
                "watcher {watcher} saw {saw} where the history has {expected} (its change \
                 #{position})"
            ),
            Self::WatcherSawCount {
                watcher,
                start,
                last,
                saw,
                expected,
            } => write!(
                f,
                "watcher {watcher} saw {saw} changes between r{start} and r{last}, the history \
                 has {expected}"
            ),
            Self::ShortOfTheEnd { watcher, last, end } => write!(
                f,
                "watcher {watcher} stopped at r{last}, short of the end marker at r{end}"
            ),
        }
    }
}
