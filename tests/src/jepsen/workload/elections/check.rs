//! The elections workload's checker: a pure function of the history (what the clients record is
//! in the module comment of `elections.rs`). The history is read once into a [`Recorded`]; each
//! property is one function of it returning typed [`Problem`]s; the fenced writes' and the
//! tokens' properties are those of `fenced/check.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{json, Value as Json};

use super::{END_KEY, NAME};
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::fenced::check::{
    real_time_violations, Applied, FenceProblem, Fenced, GrantProblem, Granted, FENCE_PROPERTIES,
    GRANT_PROPERTIES,
};
use crate::jepsen::workload::CheckResult;

#[cfg(test)]
mod tests;

/// A leader as someone saw it: its term's token, its holder and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leader {
    token: u64,
    owner: String,
    value: String,
}

impl Leader {
    fn parse(value: &Json) -> Option<Self> {
        Some(Self {
            token: value["token"].as_u64()?,
            owner: value["owner"].as_str()?.to_string(),
            value: value["value"].as_str()?.to_string(),
        })
    }
}

impl fmt::Display for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token {} held by {} ({:?})",
            self.token, self.owner, self.value
        )
    }
}

/// Where a sighting of a leader comes from: the operation's history index and what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    index: u64,
    f: String,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at index {}", self.f, self.index)
    }
}

/// A token seen with its holder, and the value when the sighting shows one.
#[derive(Clone, Debug, PartialEq)]
struct Sighting {
    election: String,
    token: u64,
    owner: String,
    value: Option<String>,
    source: Source,
}

/// A campaign or a proclaim: who published a value, under which token if known, how it ended.
#[derive(Clone, Debug, PartialEq)]
struct Published {
    election: String,
    owner: String,
    /// The proclaim's token, or the token the campaign was answered with.
    token: Option<u64>,
    campaign: bool,
    outcome: OpKind,
    index: u64,
}

/// A linearizable Leader read that saw a leader.
#[derive(Clone, Debug, PartialEq)]
struct LeaderRead {
    election: String,
    token: u64,
    invoked: u64,
    completed: u64,
}

/// One message of an Observe stream.
#[derive(Clone, Debug, PartialEq)]
struct Message {
    sequence: u64,
    kind: String,
    token: u64,
    leader: Option<Leader>,
    index: u64,
}

/// Everything the checker reads from the history.
#[derive(Debug)]
struct Recorded {
    fenced: Fenced,
    granted: Vec<Granted>,
    sightings: Vec<Sighting>,
    /// By value (unique in the run).
    published: HashMap<String, Published>,
    reads: Vec<LeaderRead>,
    /// By (observer, stream): the election and the messages in order.
    streams: BTreeMap<(u64, u64), (String, Vec<Message>)>,
    malformed: Vec<String>,
    counts: BTreeMap<&'static str, usize>,
}

impl Recorded {
    fn parse(operations: &[Paired<'_>]) -> Self {
        let mut recorded = Self {
            fenced: Fenced::new(END_KEY),
            granted: Vec::new(),
            sightings: Vec::new(),
            published: HashMap::new(),
            reads: Vec::new(),
            streams: BTreeMap::new(),
            malformed: Vec::new(),
            counts: BTreeMap::new(),
        };
        for operation in operations {
            if !recorded.fenced.add(operation) {
                recorded.add(operation);
            }
        }
        recorded
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn add(&mut self, operation: &Paired<'_>) {
        let invoke = operation.invoke;
        let election = invoke.key.clone().unwrap_or_default();
        let source = Source {
            index: invoke.index,
            f: invoke.f.clone(),
        };
        match invoke.f.as_str() {
            "campaign" => self.add_campaign(operation, election, source),
            "proclaim" => {
                let value = &invoke.value;
                self.count(match operation.outcome() {
                    OpKind::Ok => "proclaims_ok",
                    OpKind::Fail => "proclaims_refused",
                    _ => "proclaims_unknown",
                });
                self.publish(
                    value,
                    Published {
                        election,
                        owner: value["owner"].as_str().unwrap_or_default().to_string(),
                        token: value["token"].as_u64(),
                        campaign: false,
                        outcome: operation.outcome(),
                        index: invoke.index,
                    },
                );
            }
            "leader" if operation.is_ok() => {
                let leader = &operation.value()["leader"];
                if leader.is_null() {
                    self.count("leader_reads_none");
                    return;
                }
                self.count("leader_reads");
                let Some(leader) = Leader::parse(leader) else {
                    self.malformed.push(format!("{source}: leader {leader}"));
                    return;
                };
                self.reads.push(LeaderRead {
                    election: election.clone(),
                    token: leader.token,
                    invoked: invoke.index,
                    completed: operation.complete.map_or(u64::MAX, |event| event.index),
                });
                self.sight(&election, &leader, source);
            }
            "observe" if operation.is_ok() => self.add_stretch(operation, election, source),
            _ => {}
        }
    }

    fn add_campaign(&mut self, operation: &Paired<'_>, election: String, source: Source) {
        let spec = &operation.invoke.value;
        let owner = spec["owner"].as_str().unwrap_or_default().to_string();
        let answer = operation.is_ok().then(|| operation.value());
        let token = answer
            .and_then(|answer| answer["token"].as_u64())
            .filter(|t| *t != 0);
        let elected = answer.is_some_and(|answer| answer["elected"] == json!(true));
        self.count(match (operation.outcome(), elected) {
            (OpKind::Ok, true) => "campaigns_elected",
            (OpKind::Ok, false) => "campaigns_not_elected",
            (OpKind::Fail, _) => "campaigns_failed",
            _ => "campaigns_unknown",
        });
        if let (Some(token), Some(complete)) = (token, operation.complete) {
            self.granted.push(Granted {
                name: election.clone(),
                token,
                acquired: elected,
                invoked: operation.invoke.index,
                completed: complete.index,
            });
            // Whether or not it leads now, that token's term (if any) is this candidate's.
            self.sightings.push(Sighting {
                election: election.clone(),
                token,
                owner: owner.clone(),
                value: None,
                source,
            });
        }
        self.publish(
            spec,
            Published {
                election,
                owner,
                token,
                campaign: true,
                outcome: operation.outcome(),
                index: operation.invoke.index,
            },
        );
    }

    fn publish(&mut self, spec: &Json, published: Published) {
        if let Some(value) = spec["value"].as_str() {
            self.published.insert(value.to_string(), published);
        }
    }

    fn sight(&mut self, election: &str, leader: &Leader, source: Source) {
        self.sightings.push(Sighting {
            election: election.to_string(),
            token: leader.token,
            owner: leader.owner.clone(),
            value: Some(leader.value.clone()),
            source,
        });
    }

    fn add_stretch(&mut self, operation: &Paired<'_>, election: String, source: Source) {
        let invoke = operation.invoke;
        let stream = invoke.value["stream"].as_u64().unwrap_or(0);
        let Some(events) = operation.value()["events"].as_array() else {
            self.malformed.push(format!("{source}: no events"));
            return;
        };
        self.count("observe_stretches");
        let mut messages = Vec::new();
        for event in events {
            let Some([sequence, kind, token, leader]) = event.as_array().map(Vec::as_slice) else {
                self.malformed.push(format!("{source}: message {event}"));
                continue;
            };
            let leader = if leader.is_null() {
                None
            } else {
                match Leader::parse(leader) {
                    Some(leader) => Some(leader),
                    None => {
                        self.malformed.push(format!("{source}: leader {leader}"));
                        continue;
                    }
                }
            };
            if let Some(leader) = &leader {
                self.sight(&election, leader, source.clone());
            }
            messages.push(Message {
                sequence: sequence.as_u64().unwrap_or(0),
                kind: kind.as_str().unwrap_or_default().to_string(),
                token: token.as_u64().unwrap_or(0),
                leader,
                index: invoke.index,
            });
        }
        self.count_messages(messages.len());
        self.streams
            .entry((invoke.process, stream))
            .or_insert_with(|| (election, Vec::new()))
            .1
            .extend(messages);
    }

    fn count_messages(&mut self, count: usize) {
        *self.counts.entry("observed_messages").or_default() += count;
    }

    fn stats(&self, reference: &[Applied]) -> Json {
        let mut stats = self.fenced.stats(reference);
        for (what, count) in &self.counts {
            stats[*what] = json!(count);
        }
        stats["observe_streams"] = json!(self.streams.len());
        stats["terms_seen"] = json!(self
            .sightings
            .iter()
            .filter(|s| s.value.is_some())
            .map(|s| s.token)
            .collect::<std::collections::BTreeSet<_>>()
            .len());
        stats
    }
}

/// An elections property.
type Property = fn(&Recorded) -> Vec<Problem>;

const PROPERTIES: [Property; 5] = [
    one_owner_per_token,
    values_come_from_their_leader,
    observers_never_go_back,
    leader_reads_never_go_back,
    records_are_readable,
];

/// Every sighting of a token names one holder and one election: a term has one leader.
fn one_owner_per_token(recorded: &Recorded) -> Vec<Problem> {
    let mut first: HashMap<u64, &Sighting> = HashMap::new();
    let mut problems = Vec::new();
    for sighting in &recorded.sightings {
        match first.get(&sighting.token) {
            None => {
                first.insert(sighting.token, sighting);
            }
            Some(seen) if seen.owner != sighting.owner || seen.election != sighting.election => {
                problems.push(Problem::TwoLeaders {
                    token: sighting.token,
                    first: (
                        seen.election.clone(),
                        seen.owner.clone(),
                        seen.source.clone(),
                    ),
                    second: (
                        sighting.election.clone(),
                        sighting.owner.clone(),
                        sighting.source.clone(),
                    ),
                });
            }
            Some(_) => {}
        }
    }
    problems
}

/// A leader's value was published by that leader in that term: its campaign (not failed, and
/// answered with that token if answered at all) or a proclaim under that token (not failed).
fn values_come_from_their_leader(recorded: &Recorded) -> Vec<Problem> {
    let mut problems = Vec::new();
    for sighting in &recorded.sightings {
        let Some(value) = &sighting.value else {
            continue;
        };
        let why = match recorded.published.get(value) {
            None => Some("nobody published it"),
            Some(published) if published.owner != sighting.owner => {
                Some("another candidate published it")
            }
            Some(published) if published.election != sighting.election => {
                Some("it was published in another election")
            }
            Some(published) if published.outcome == OpKind::Fail => {
                Some("its campaign or proclaim failed")
            }
            Some(published) if published.token.is_some_and(|t| t != sighting.token) => {
                Some("it was published under another token")
            }
            Some(published) if !published.campaign && published.token.is_none() => {
                Some("its proclaim named no token")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            problems.push(Problem::ValueNotTheLeaders {
                election: sighting.election.clone(),
                leader: Leader {
                    token: sighting.token,
                    owner: sighting.owner.clone(),
                    value: value.clone(),
                },
                source: sighting.source.clone(),
                why,
            });
        }
    }
    problems
}

/// Within one Observe stream (one node's applied state, which only moves forward): the leader's
/// token never decreases, granted tokens increase, and event sequences increase.
fn observers_never_go_back(recorded: &Recorded) -> Vec<Problem> {
    let mut problems = Vec::new();
    for ((observer, stream), (election, messages)) in &recorded.streams {
        let mut leader: Option<&Message> = None;
        let mut granted: Option<&Message> = None;
        let mut sequence: Option<&Message> = None;
        for message in messages {
            let went_back = |what: &'static str, before: &Message| Problem::ObserverWentBack {
                election: election.clone(),
                observer: *observer,
                stream: *stream,
                what,
                before: (before.sequence, before.index),
                after: (message.sequence, message.index),
            };
            if let Some(now) = &message.leader {
                if let Some(before) =
                    leader.filter(|b| b.leader.as_ref().is_some_and(|l| l.token > now.token))
                {
                    problems.push(went_back("leader token", before));
                } else {
                    leader = Some(message);
                }
            }
            if message.kind == "GRANTED" {
                if let Some(before) = granted.filter(|b| b.token >= message.token) {
                    problems.push(went_back("granted token", before));
                } else {
                    granted = Some(message);
                }
            }
            let strict = message.kind != "CURRENT";
            if let Some(before) = sequence.filter(|b| {
                b.sequence > message.sequence || (strict && b.sequence == message.sequence)
            }) {
                problems.push(went_back("sequence", before));
            } else {
                sequence = Some(message);
            }
        }
    }
    problems
}

/// A linearizable Leader read invoked after another one (of the same election) completed names a
/// leader whose token is not smaller: terms only move forward.
fn leader_reads_never_go_back(recorded: &Recorded) -> Vec<Problem> {
    let mut by_election: BTreeMap<&str, Vec<&LeaderRead>> = BTreeMap::new();
    for read in &recorded.reads {
        by_election.entry(&read.election).or_default().push(read);
    }
    let mut problems = Vec::new();
    for (election, reads) in by_election {
        let violations = real_time_violations(&reads, |r| (r.invoked, r.completed, r.token), false);
        for (before, after) in violations {
            problems.push(Problem::ReadWentBack {
                election: election.to_string(),
                before: (before.token, before.completed),
                after: (after.token, after.invoked),
            });
        }
    }
    problems
}

/// Every recorded leader and message could be read.
fn records_are_readable(recorded: &Recorded) -> Vec<Problem> {
    recorded
        .malformed
        .iter()
        .map(|what| Problem::Malformed(what.clone()))
        .collect()
}

/// What a property found.
#[derive(Clone, Debug, PartialEq)]
enum Problem {
    Fence(FenceProblem),
    Grant(GrantProblem),
    /// (election, owner, where) of the first sighting and of the other.
    TwoLeaders {
        token: u64,
        first: (String, String, Source),
        second: (String, String, Source),
    },
    ValueNotTheLeaders {
        election: String,
        leader: Leader,
        source: Source,
        why: &'static str,
    },
    /// (sequence, history index) of the earlier message and of the later one.
    ObserverWentBack {
        election: String,
        observer: u64,
        stream: u64,
        what: &'static str,
        before: (u64, u64),
        after: (u64, u64),
    },
    /// (token, completion index) of the earlier read; (token, invocation index) of the later.
    ReadWentBack {
        election: String,
        before: (u64, u64),
        after: (u64, u64),
    },
    Malformed(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fence(problem) => problem.fmt(f),
            Self::Grant(problem) => problem.fmt(f),
            Self::TwoLeaders {
                token,
                first,
                second,
            } => write!(
                f,
                "token {token} names two leaders: {} in {:?} ({}) and {} in {:?} ({})",
                first.1, first.0, first.2, second.1, second.0, second.2
            ),
            Self::ValueNotTheLeaders {
                election,
                leader,
                source,
                why,
            } => write!(f, "{election:?}: {source} saw {leader}, but {why}"),
            Self::ObserverWentBack {
                election,
                observer,
                stream,
                what,
                before,
                after,
            } => write!(
                f,
                "{election:?}: observer {observer}, stream {stream}: the {what} went back from \
                 sequence {} (index {}) to sequence {} (index {})",
                before.0, before.1, after.0, after.1
            ),
            Self::ReadWentBack {
                election,
                before,
                after,
            } => write!(
                f,
                "{election:?}: a Leader read invoked at index {} saw token {}, older than token \
                 {} read before (completed at index {})",
                after.1, after.0, before.0, before.1
            ),
            Self::Malformed(what) => write!(f, "malformed record: {what}"),
        }
    }
}

/// Every property's findings, in order: the elections', the tokens', the fenced writes'.
fn problems(recorded: &Recorded, reference: &[Applied]) -> Vec<Problem> {
    let own = PROPERTIES.iter().flat_map(|property| property(recorded));
    let grant = GRANT_PROPERTIES
        .iter()
        .flat_map(|property| property(&recorded.granted))
        .map(Problem::Grant);
    let fence = FENCE_PROPERTIES
        .iter()
        .flat_map(|property| property(&recorded.fenced, reference))
        .map(Problem::Fence);
    own.chain(grant).chain(fence).collect()
}

/// Checks the elections events of `events` (the properties are in the module comment of
/// `elections.rs`).
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
