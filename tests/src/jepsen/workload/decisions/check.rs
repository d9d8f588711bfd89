//! The decisions workload's checker: a pure function of the history (what the clients record is in
//! the module comment of `decisions.rs`). The history is read once into a [`Recorded`]; each
//! property is then one function of it (and of the reference final read), which returns what it
//! found as [`Problem`]s. [`check`] lists the properties.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Value as Json};

use super::{Proposal, NAME};
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::{CheckResult, Verdict, FINAL_READ};

#[cfg(test)]
mod tests;

/// A decision still OPEN this long after its deadline, in a final read, is a finding: the
/// deadline timer did not fire on a healed cluster.
const OPEN_PAST_DEADLINE_MS: u64 = 10_000;

/// A decision's status, as [`super::snapshot`] records it.
#[derive(Clone, PartialEq, Eq)]
enum Status {
    Open,
    Decided,
    Rejected,
    NoQuorum,
    /// A status this checker does not know (`UNKNOWN(n)`, or a new one).
    Other(String),
}

impl Status {
    fn parse(name: &str) -> Self {
        match name {
            "OPEN" => Self::Open,
            "DECIDED" => Self::Decided,
            "REJECTED" => Self::Rejected,
            "NO_QUORUM" => Self::NoQuorum,
            other => Self::Other(other.to_string()),
        }
    }
}

/// As recorded, `"NO_QUORUM"`: decisions print their status in findings.
impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "OPEN",
            Self::Decided => "DECIDED",
            Self::Rejected => "REJECTED",
            Self::NoQuorum => "NO_QUORUM",
            Self::Other(name) => name,
        })
    }
}

/// One vote a decision holds.
#[derive(Clone, PartialEq)]
struct Cast {
    voter: String,
    choice: String,
    cast_ms: u64,
}

/// As a tuple, `("a", "yes", 100)`: decisions print their votes in findings.
impl fmt::Debug for Cast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("")
            .field(&self.voter)
            .field(&self.choice)
            .field(&self.cast_ms)
            .finish()
    }
}

/// A decision as recorded by [`super::snapshot`], parsed back.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: u64,
    spec: Proposal,
    voters: Vec<String>,
    status: Status,
    outcome: String,
    /// In the order accepted.
    votes: Vec<Cast>,
    closed: u64,
}

impl Seen {
    fn parse(value: &Json) -> Option<Self> {
        let mut spec = value["spec"].clone();
        if spec["tag"].is_null() {
            spec["tag"] = json!(0);
        }
        Some(Self {
            id: value["id"].as_u64()?,
            spec: Proposal::from_json(&spec)?,
            voters: value["voters"]
                .as_array()?
                .iter()
                .map(|voter| voter.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            status: Status::parse(value["status"].as_str()?),
            outcome: value["outcome"].as_str()?.to_string(),
            votes: value["votes"]
                .as_array()?
                .iter()
                .map(|vote| {
                    Some(Cast {
                        voter: vote[0].as_str()?.to_string(),
                        choice: vote[1].as_str()?.to_string(),
                        cast_ms: vote[2].as_u64()?,
                    })
                })
                .collect::<Option<_>>()?,
            closed: value["closed"].as_u64()?,
        })
    }

    /// The (voter, choice) pairs, for the tally.
    fn choices(&self) -> Vec<(&str, &str)> {
        self.votes
            .iter()
            .map(|vote| (vote.voter.as_str(), vote.choice.as_str()))
            .collect()
    }

    /// The tally of all its votes.
    fn tally(&self) -> Tally {
        tally(&self.spec, &self.voters, &self.choices())
    }

    /// The listed vote of `voter`, if any (the first, should there be two).
    fn vote_of(&self, voter: &str) -> Option<&Cast> {
        self.votes.iter().find(|vote| vote.voter == voter)
    }
}

/// A state of a decision that an operation saw during the run (a propose or vote answer, one
/// state a watch received).
#[derive(Clone, Debug, PartialEq)]
enum Observed {
    /// No decision (a vote answered without one).
    Null,
    Parsed(Box<Seen>),
    /// Not a decision [`Seen::parse`] can read; kept as recorded.
    Unparsable(Json),
}

impl Observed {
    fn parse(value: &Json) -> Self {
        if value.is_null() {
            return Self::Null;
        }
        Seen::parse(value).map_or_else(
            || Self::Unparsable(value.clone()),
            |seen| Self::Parsed(Box::new(seen)),
        )
    }

    fn vote_count(&self) -> usize {
        match self {
            Self::Null => 0,
            Self::Parsed(seen) => seen.votes.len(),
            Self::Unparsable(value) => value["votes"].as_array().map_or(0, Vec::len),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Null => false,
            Self::Parsed(seen) => seen.status == Status::Open,
            Self::Unparsable(value) => value["status"] == "OPEN",
        }
    }

    /// Whether it holds a vote of `choice` by `voter`.
    fn holds(&self, voter: &str, choice: &str) -> bool {
        match self {
            Self::Null => false,
            Self::Parsed(seen) => seen
                .votes
                .iter()
                .any(|vote| vote.voter == voter && vote.choice == choice),
            Self::Unparsable(value) => value["votes"].as_array().is_some_and(|votes| {
                votes
                    .iter()
                    .any(|vote| vote[0] == voter && vote[1] == choice)
            }),
        }
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Parsed(seen) => write!(f, "{seen:?}"),
            Self::Unparsable(value) => write!(f, "{value}"),
        }
    }
}

/// Which operation observed a decision.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// The answer to the proposal with this tag.
    Proposal(u64),
    /// The answer to an accepted vote.
    Vote { voter: String, choice: String },
    /// A watch of the decision with this id.
    Watch(Option<u64>),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Proposal(tag) => write!(f, "the response to proposal {tag}"),
            Self::Vote { voter, choice } => write!(f, "the response to {voter}'s vote {choice}"),
            Self::Watch(id) => write!(f, "a watch of decision {}", Id(*id)),
        }
    }
}

/// A decision id as recorded in a watch's invocation: `null` when missing.
struct Id(Option<u64>);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("null"),
        }
    }
}

/// One observation of a decision besides the final reads.
struct Observation {
    source: Source,
    /// The invocation's index.
    index: u64,
    state: Observed,
}

/// A proposal: its spec, how it ended and the id it was acknowledged with.
struct Proposed {
    proposal: Proposal,
    outcome: OpKind,
    id: Option<u64>,
}

/// A vote as the history records it.
struct Vote {
    decision: u64,
    voter: String,
    choice: String,
    outcome: OpKind,
    /// Why it was refused (or ended unknown).
    error: String,
    index: u64,
    /// The decision it answered, when accepted.
    answer: Option<Observed>,
}

/// A watch of one decision that ended (`ok`: a watch always does, with what it received).
struct Watch {
    decision: Option<u64>,
    index: u64,
    states: Vec<Observed>,
    /// The stream ended by itself (no error, no bound reached).
    ended: bool,
}

/// A ballot a voter's session stream delivered.
struct Ballot {
    decision: u64,
    voter: String,
    index: u64,
}

/// A final read that succeeded.
struct FinalRead {
    node: Option<u64>,
    consistency: String,
    /// The completion's index.
    index: u64,
    read_unix_ms: u64,
    decisions: BTreeMap<u64, Seen>,
}

/// Everything the checker reads from the history.
#[derive(Default)]
struct Recorded {
    /// By tag (unique per proposal).
    proposals: BTreeMap<u64, Proposed>,
    votes: Vec<Vote>,
    /// In the order invoked.
    observations: Vec<Observation>,
    watches: Vec<Watch>,
    ballots: Vec<Ballot>,
    finals: Vec<FinalRead>,
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
        let value = operation.value();
        match invoke.f.as_str() {
            "propose" => self.add_proposal(operation, problems),
            "vote" => self.add_vote(operation, problems),
            "ballot" => {
                if let (Some(decision), Some(voter)) =
                    (value["id"].as_u64(), value["voter"].as_str())
                {
                    self.ballots.push(Ballot {
                        decision,
                        voter: voter.to_string(),
                        index: invoke.index,
                    });
                }
            }
            "watch" if operation.is_ok() => self.add_watch(operation),
            FINAL_READ if operation.is_ok() => self.add_final_read(operation, problems),
            _ => {}
        }
    }

    fn add_proposal(&mut self, operation: &Paired<'_>, problems: &mut Vec<Problem>) {
        let index = operation.invoke.index;
        let value = operation.value();
        let Some(proposal) = Proposal::from_json(&operation.invoke.value) else {
            problems.push(Problem::Record(RecordProblem::Proposal { index }));
            return;
        };
        let id = operation.is_ok().then(|| value["id"].as_u64()).flatten();
        if operation.is_ok() {
            self.observations.push(Observation {
                source: Source::Proposal(proposal.tag),
                index,
                state: Observed::parse(&value["decision"]),
            });
        }
        let proposed = Proposed {
            proposal,
            outcome: operation.outcome(),
            id,
        };
        self.proposals.insert(proposed.proposal.tag, proposed);
    }

    fn add_vote(&mut self, operation: &Paired<'_>, problems: &mut Vec<Problem>) {
        let invoke = operation.invoke;
        let index = invoke.index;
        let (Some(decision), Some(voter), Some(choice)) = (
            invoke.value["id"].as_u64(),
            invoke.value["voter"].as_str(),
            invoke.value["choice"].as_str(),
        ) else {
            problems.push(Problem::Record(RecordProblem::Vote { index }));
            return;
        };
        let (voter, choice) = (voter.to_string(), choice.to_string());
        let answer = operation
            .is_ok()
            .then(|| Observed::parse(&operation.value()["decision"]));
        if let Some(answer) = &answer {
            self.observations.push(Observation {
                source: Source::Vote {
                    voter: voter.clone(),
                    choice: choice.clone(),
                },
                index,
                state: answer.clone(),
            });
        }
        self.votes.push(Vote {
            decision,
            voter,
            choice,
            outcome: operation.outcome(),
            error: operation
                .complete
                .and_then(|event| event.error.clone())
                .unwrap_or_default(),
            index,
            answer,
        });
    }

    fn add_watch(&mut self, operation: &Paired<'_>) {
        let (invoke, value) = (operation.invoke, operation.value());
        let decision = invoke.value["id"].as_u64();
        let states: Vec<Observed> = value["states"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Observed::parse)
            .collect();
        for state in &states {
            self.observations.push(Observation {
                source: Source::Watch(decision),
                index: invoke.index,
                state: state.clone(),
            });
        }
        self.watches.push(Watch {
            decision,
            index: invoke.index,
            states,
            ended: value["error"].is_null(),
        });
    }

    fn add_final_read(&mut self, operation: &Paired<'_>, problems: &mut Vec<Problem>) {
        let (invoke, value) = (operation.invoke, operation.value());
        let mut decisions = BTreeMap::new();
        for item in value["decisions"].as_array().into_iter().flatten() {
            match Seen::parse(item) {
                Some(seen) => {
                    decisions.insert(seen.id, seen);
                }
                None => problems.push(Problem::Record(RecordProblem::Listed {
                    index: invoke.index,
                    item: item.clone(),
                })),
            }
        }
        self.finals.push(FinalRead {
            node: invoke.node,
            consistency: value["consistency"].as_str().unwrap_or("?").to_string(),
            index: operation.complete_index().expect("ok completes"),
            read_unix_ms: value["read_unix_ms"].as_u64().unwrap_or(0),
            decisions,
        });
    }

    /// The reference final read: the linearizable one if there is one, else the first.
    fn reference(&self) -> Option<&FinalRead> {
        self.finals
            .iter()
            .find(|read| read.consistency == "linearizable")
            .or(self.finals.first())
    }

    fn stats(&self) -> Json {
        let proposals = |kind: OpKind| {
            self.proposals
                .values()
                .filter(|proposed| proposed.outcome == kind)
                .count()
        };
        let votes = |kind: OpKind| {
            self.votes
                .iter()
                .filter(|vote| vote.outcome == kind)
                .count()
        };
        json!({
            "proposals": self.proposals.len(),
            "proposals_ok": proposals(OpKind::Ok),
            "proposals_fail": proposals(OpKind::Fail),
            "proposals_info": proposals(OpKind::Info),
            "votes": self.votes.len(),
            "votes_ok": votes(OpKind::Ok),
            "votes_refused": votes(OpKind::Fail),
            "votes_info": votes(OpKind::Info),
            "ballots": self.ballots.len(),
            "watches": self.watches.len(),
            "final_reads": self.finals.len(),
        })
    }
}

/// What the rule says about a decision given the votes so far (decisions.proto).
#[derive(Clone, Debug, PartialEq)]
pub enum Tally {
    Open,
    Decided(String),
    Rejected,
}

/// The tally of `votes` (voter, choice, in the order accepted) under `spec` with electorate
/// `voters`, from the rules in decisions.proto: a vote for the veto option rejects; MAJORITY and
/// WEIGHTED need more than half of the electorate's (weighted) votes, AT_LEAST k votes, UNANIMOUS
/// every voter on one option; when no option can get there whatever the voters who have not
/// voted do, the decision is rejected. Written from the API's text, apart from the node's code.
fn tally(spec: &Proposal, voters: &[String], votes: &[(&str, &str)]) -> Tally {
    if let Some(veto) = &spec.veto {
        if votes.iter().any(|(_, choice)| choice == veto) {
            return Tally::Rejected;
        }
    }
    let weighted = spec.rule == "WEIGHTED";
    let weight = |voter: &str| {
        if weighted {
            spec.weights.get(voter).copied().unwrap_or(1)
        } else {
            1
        }
    };
    let total: u64 = voters.iter().map(|voter| weight(voter)).sum();
    let cast: u64 = votes.iter().map(|(voter, _)| weight(voter)).sum();
    let remaining = total.saturating_sub(cast);
    let candidates: Vec<&String> = spec
        .options
        .iter()
        .filter(|option| Some(*option) != spec.veto.as_ref())
        .collect();
    let count = |option: &str| -> u64 {
        votes
            .iter()
            .filter(|(_, choice)| *choice == option)
            .map(|(voter, _)| weight(voter))
            .sum()
    };
    let wins = |option: &str| match spec.rule.as_str() {
        "MAJORITY" | "WEIGHTED" => 2 * count(option) > total,
        "AT_LEAST" => count(option) >= spec.k,
        "UNANIMOUS" => votes.len() == voters.len() && count(option) == total,
        _ => false,
    };
    let can_still_win = |option: &str| match spec.rule.as_str() {
        "MAJORITY" | "WEIGHTED" => 2 * (count(option) + remaining) > total,
        "AT_LEAST" => count(option) + remaining >= spec.k,
        "UNANIMOUS" => votes.iter().all(|(_, choice)| *choice == option),
        _ => true,
    };
    let winners: Vec<&&String> = candidates.iter().filter(|option| wins(option)).collect();
    if let Some(winner) = winners.first() {
        // With every earlier prefix open, only the last vote's option can have just won.
        let last = votes.last().map(|(_, choice)| *choice);
        let winner = winners
            .iter()
            .find(|option| Some(option.as_str()) == last)
            .unwrap_or(winner);
        return Tally::Decided((**winner).clone());
    }
    if candidates.iter().any(|option| can_still_win(option)) {
        Tally::Open
    } else {
        Tally::Rejected
    }
}

/// A property that needs no final read.
type Property = fn(&Recorded) -> Vec<Problem>;

/// A property of the history against the reference final read.
type ReferenceProperty = fn(&Recorded, &FinalRead) -> Vec<Problem>;

/// The properties that need no final read, in the order their findings are listed.
const PROPERTIES: [Property; 3] = [
    answers_hold_their_votes,
    watches_never_lose_votes,
    watches_end_closed,
];

/// The properties against the reference final read, in the order their findings are listed.
const REFERENCE_PROPERTIES: [ReferenceProperty; 17] = [
    reads_agree,
    listed_decisions_were_proposed,
    electorates_are_the_named_agents,
    proposals_applied_once,
    acknowledged_proposals_listed,
    one_vote_per_voter,
    votes_from_the_electorate,
    votes_for_options,
    votes_before_the_close,
    no_votes_after_the_tally_ended,
    outcomes_follow_the_rule,
    open_not_long_past_the_deadline,
    accepted_votes_listed,
    refusals_agree,
    listed_votes_were_cast,
    observations_agree,
    ballots_go_to_voters,
];

/// Checks the decisions events of `events` (the properties are in the module comment of
/// `decisions.rs`; each has its function here).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let mut problems = Vec::new();
    let recorded = Recorded::parse(&operations, &mut problems);
    for property in PROPERTIES {
        problems.extend(property(&recorded));
    }
    let mut stats = recorded.stats();
    let texts = |problems: Vec<Problem>| -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    };
    let Some(reference) = recorded.reference() else {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        if !problems.is_empty() {
            result.verdict = Verdict::Invalid;
            result.problems.extend(texts(problems));
        }
        return result;
    };
    for property in REFERENCE_PROPERTIES {
        problems.extend(property(&recorded, reference));
    }
    reference_stats(&recorded, reference, &mut stats);
    CheckResult::from_problems(NAME, texts(problems), stats)
}

/// Counts of the reference read, for the report.
fn reference_stats(recorded: &Recorded, reference: &FinalRead, stats: &mut Json) {
    let decisions = &reference.decisions;
    let tags: BTreeSet<u64> = decisions.values().map(|seen| seen.spec.tag).collect();
    stats["decisions"] = json!(decisions.len());
    stats["proposals_info_present_at_end"] = json!(recorded
        .proposals
        .iter()
        .filter(|(tag, proposed)| proposed.outcome == OpKind::Info && tags.contains(tag))
        .count());
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut rules: BTreeMap<&str, u64> = BTreeMap::new();
    for seen in decisions.values() {
        *statuses.entry(seen.status.to_string()).or_default() += 1;
        *rules.entry(&seen.spec.rule).or_default() += 1;
    }
    stats["statuses"] = json!(statuses);
    stats["rules"] = json!(rules);
    let votes = || decisions.values().flat_map(|seen| &seen.votes);
    stats["votes_listed"] = json!(votes().count());
    // Accepted after the deadline but before the deadline timer fired: allowed (timers fire late
    // by up to a tick and the time without a leader; ARCHITECTURE.md), counted for the report.
    stats["votes_after_deadline"] = json!(decisions
        .values()
        .map(|seen| {
            let late = |vote: &&Cast| vote.cast_ms > seen.spec.deadline;
            seen.votes.iter().filter(late).count()
        })
        .sum::<usize>());
}

/// The state an accepted vote answered holds that vote.
fn answers_hold_their_votes(recorded: &Recorded) -> Vec<Problem> {
    let mut problems = Vec::new();
    for vote in &recorded.votes {
        let Some(answer) = &vote.answer else {
            continue;
        };
        if !answer.holds(&vote.voter, &vote.choice) {
            problems.push(Problem::Observation(
                ObservationProblem::AnswerWithoutVote {
                    voter: vote.voter.clone(),
                    choice: vote.choice.clone(),
                    decision: vote.decision,
                    index: vote.index,
                    answer: answer.clone(),
                },
            ));
        }
    }
    problems
}

/// The states a watch receives never hold fewer votes than the one before.
fn watches_never_lose_votes(recorded: &Recorded) -> Vec<Problem> {
    let mut problems = Vec::new();
    for watch in &recorded.watches {
        let mut previous = 0;
        for state in &watch.states {
            let count = state.vote_count();
            if count < previous {
                problems.push(Problem::Observation(ObservationProblem::WatchLostVotes {
                    decision: watch.decision,
                    index: watch.index,
                    from: previous,
                    to: count,
                }));
            }
            previous = count;
        }
    }
    problems
}

/// A watch stream ends by itself only after the decision closed.
fn watches_end_closed(recorded: &Recorded) -> Vec<Problem> {
    recorded
        .watches
        .iter()
        .filter(|watch| watch.ended && watch.states.last().is_some_and(Observed::is_open))
        .map(|watch| {
            Problem::Observation(ObservationProblem::WatchEndedOpen {
                decision: watch.decision,
                index: watch.index,
            })
        })
        .collect()
}

/// Every final read lists the same decisions as the reference, with the same votes, status and
/// outcome.
fn reads_agree(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for read in &recorded.finals {
        let ids: BTreeSet<u64> = read
            .decisions
            .keys()
            .chain(reference.decisions.keys())
            .copied()
            .collect();
        let differences: Vec<u64> = ids
            .into_iter()
            .filter(|id| read.decisions.get(id) != reference.decisions.get(id))
            .collect();
        if let Some(&first) = differences.first() {
            problems.push(Problem::Listing(ListingProblem::ReadsDisagree {
                node: read.node,
                consistency: read.consistency.clone(),
                index: read.index,
                reference_node: reference.node,
                reference_index: reference.index,
                count: differences.len(),
                first,
                expected: reference.decisions.get(&first).cloned().map(Box::new),
                found: read.decisions.get(&first).cloned().map(Box::new),
            }));
        }
    }
    problems
}

/// Every listed decision was proposed, by a proposal that did not fail, with the spec listed.
fn listed_decisions_were_proposed(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        let tag = seen.spec.tag;
        match recorded.proposals.get(&tag) {
            None => problems.push(Problem::Listing(ListingProblem::NeverProposed { id, tag })),
            Some(Proposed {
                outcome: OpKind::Fail,
                ..
            }) => problems.push(Problem::Listing(ListingProblem::ProposalFailed { id, tag })),
            Some(proposed) if proposed.proposal != seen.spec => {
                problems.push(Problem::Listing(ListingProblem::SpecChanged {
                    id,
                    listed: Box::new(seen.spec.clone()),
                    proposed: Box::new(proposed.proposal.clone()),
                }))
            }
            Some(_) => {}
        }
    }
    problems
}

/// Every listed decision's voters are the agents its spec names.
fn electorates_are_the_named_agents(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        let mut electorate = seen.spec.electorate.clone();
        electorate.dedup();
        if seen.voters != electorate {
            problems.push(Problem::Listing(ListingProblem::ElectorateChanged {
                id,
                voters: seen.voters.clone(),
                electorate,
            }));
        }
    }
    problems
}

/// No proposal is listed as two decisions.
fn proposals_applied_once(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut by_tag: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (&id, seen) in &reference.decisions {
        by_tag.entry(seen.spec.tag).or_default().push(id);
    }
    by_tag
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(tag, ids)| Problem::Listing(ListingProblem::AppliedTwice { tag, ids }))
        .collect()
}

/// Every acknowledged proposal is listed, under the id it was acknowledged with.
fn acknowledged_proposals_listed(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&tag, proposed) in &recorded.proposals {
        let (OpKind::Ok, Some(id)) = (proposed.outcome, proposed.id) else {
            continue;
        };
        match reference.decisions.get(&id) {
            Some(seen) if seen.spec.tag == tag => {}
            Some(seen) => problems.push(Problem::Listing(ListingProblem::TagChanged {
                tag,
                id,
                listed_tag: seen.spec.tag,
            })),
            None => problems.push(Problem::Listing(ListingProblem::ProposalLost { tag, id })),
        }
    }
    problems
}

/// No voter has two votes in one decision.
fn one_vote_per_voter(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        let mut voted = BTreeSet::new();
        for vote in &seen.votes {
            if !voted.insert(&vote.voter) {
                problems.push(Problem::Tally(TallyProblem::VotedTwice {
                    id,
                    voter: vote.voter.clone(),
                    votes: seen.votes.clone(),
                }));
            }
        }
    }
    problems
}

/// Only the decision's voters vote in it.
fn votes_from_the_electorate(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        for vote in &seen.votes {
            if !seen.voters.contains(&vote.voter) {
                problems.push(Problem::Tally(TallyProblem::OutsiderVoted {
                    id,
                    voter: vote.voter.clone(),
                    voters: seen.voters.clone(),
                }));
            }
        }
    }
    problems
}

/// Every vote is for one of the decision's options.
fn votes_for_options(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        for vote in &seen.votes {
            if !seen.spec.options.contains(&vote.choice) {
                problems.push(Problem::Tally(TallyProblem::NotAnOption {
                    id,
                    voter: vote.voter.clone(),
                    choice: vote.choice.clone(),
                }));
            }
        }
    }
    problems
}

/// No vote of a closed decision was cast after it closed (by the cluster's stamps).
fn votes_before_the_close(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        if seen.status == Status::Open {
            continue;
        }
        for vote in seen.votes.iter().filter(|vote| vote.cast_ms > seen.closed) {
            problems.push(Problem::Tally(TallyProblem::VoteAfterClose {
                id,
                voter: vote.voter.clone(),
                cast_ms: vote.cast_ms,
                closed: seen.closed,
            }));
        }
    }
    problems
}

/// No vote was accepted once the tally of the votes before it had ended the decision.
fn no_votes_after_the_tally_ended(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        let choices = seen.choices();
        let ended = (0..choices.len())
            .map(|count| (count, tally(&seen.spec, &seen.voters, &choices[..count])))
            .find(|(_, tally)| *tally != Tally::Open);
        if let Some((after, tally)) = ended {
            problems.push(Problem::Tally(TallyProblem::VotesAfterTally {
                id,
                after,
                tally,
                votes: seen.votes.clone(),
                spec: Box::new(seen.spec.clone()),
            }));
        }
    }
    problems
}

/// Each decision's status and outcome are what its rule makes of its votes: DECIDED and REJECTED
/// are the tally after the last vote, which closed it; NO_QUORUM only while the tally is open, at
/// or after the deadline; OPEN only while the tally is open.
fn outcomes_follow_the_rule(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for seen in reference.decisions.values() {
        let tally = seen.tally();
        let closed_by_last_vote = seen.votes.last().is_some_and(|v| v.cast_ms == seen.closed);
        let valid = match (&seen.status, &tally) {
            (Status::Decided, Tally::Decided(winner)) => {
                *winner == seen.outcome && closed_by_last_vote
            }
            (Status::Rejected, Tally::Rejected) => seen.outcome.is_empty() && closed_by_last_vote,
            (Status::NoQuorum, Tally::Open) => {
                seen.outcome.is_empty() && seen.closed >= seen.spec.deadline
            }
            (Status::Open, Tally::Open) => true,
            _ => false,
        };
        if !valid {
            problems.push(Problem::Tally(TallyProblem::WrongOutcome {
                seen: Box::new(seen.clone()),
                tally,
            }));
        }
    }
    problems
}

/// An undecided decision is not still OPEN long after its deadline (at the reference read).
fn open_not_long_past_the_deadline(_: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    reference
        .decisions
        .iter()
        .filter(|(_, seen)| seen.status == Status::Open && seen.tally() == Tally::Open)
        .filter(|(_, seen)| reference.read_unix_ms > seen.spec.deadline + OPEN_PAST_DEADLINE_MS)
        .map(|(&id, seen)| {
            Problem::Tally(TallyProblem::OpenPastDeadline {
                id,
                late_ms: reference.read_unix_ms - seen.spec.deadline,
            })
        })
        .collect()
}

/// Every vote acknowledged `ok` is listed, with its choice.
fn accepted_votes_listed(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for vote in recorded.votes.iter().filter(|v| v.outcome == OpKind::Ok) {
        let Some(seen) = reference.decisions.get(&vote.decision) else {
            problems.push(Problem::Voting(VotingProblem::AcceptedVoteUnlisted {
                voter: vote.voter.clone(),
                id: vote.decision,
                index: vote.index,
            }));
            continue;
        };
        if seen.vote_of(&vote.voter).map(|listed| &listed.choice) != Some(&vote.choice) {
            problems.push(Problem::Voting(VotingProblem::AcceptedVoteLost {
                voter: vote.voter.clone(),
                choice: vote.choice.clone(),
                id: vote.decision,
                index: vote.index,
                votes: seen.votes.clone(),
            }));
        }
    }
    problems
}

/// Refusals agree with the final state: an "already voted" voter did vote, a "closed" decision is
/// closed, a "not in the electorate" voter is not in it.
fn refusals_agree(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for vote in recorded.votes.iter().filter(|v| v.outcome == OpKind::Fail) {
        let Some(seen) = reference.decisions.get(&vote.decision) else {
            continue;
        };
        let (voter, id, index) = (vote.voter.clone(), vote.decision, vote.index);
        let error = &vote.error;
        if error.contains("already voted") && seen.vote_of(&voter).is_none() {
            let votes = seen.votes.clone();
            problems.push(Problem::Voting(VotingProblem::SecondVoteWithoutFirst {
                voter,
                id,
                index,
                votes,
            }));
        } else if error.contains("is closed") && seen.status == Status::Open {
            problems.push(Problem::Voting(VotingProblem::RefusedClosedButOpen {
                voter,
                id,
                index,
            }));
        } else if error.contains("not in the electorate") && seen.voters.contains(&voter) {
            let voters = seen.voters.clone();
            problems.push(Problem::Voting(VotingProblem::RefusedVoter {
                voter,
                id,
                index,
                voters,
            }));
        }
    }
    problems
}

/// Every listed vote was invoked and not refused.
fn listed_votes_were_cast(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (&id, seen) in &reference.decisions {
        for listed in &seen.votes {
            let cast = recorded.votes.iter().any(|vote| {
                vote.decision == id
                    && vote.voter == listed.voter
                    && vote.choice == listed.choice
                    && vote.outcome != OpKind::Fail
            });
            if !cast {
                problems.push(Problem::Voting(VotingProblem::VoteNeverCast {
                    id,
                    voter: listed.voter.clone(),
                    choice: listed.choice.clone(),
                }));
            }
        }
    }
    problems
}

/// Every observation during the run (propose and vote answers, watches) agrees with the final
/// read: its votes are a prefix of the final votes, with the same spec and voters; an OPEN state
/// came before the last vote or the decision is still open (or ended without quorum); a closed
/// state is the final one.
fn observations_agree(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for observation in &recorded.observations {
        let (source, index) = (observation.source.clone(), observation.index);
        let seen = match &observation.state {
            Observed::Null => continue,
            Observed::Unparsable(state) => {
                let state = state.clone();
                problems.push(Problem::Observation(
                    ObservationProblem::ObservationUnparsable {
                        source,
                        index,
                        state,
                    },
                ));
                continue;
            }
            Observed::Parsed(seen) => seen,
        };
        let Some(listed) = reference.decisions.get(&seen.id) else {
            let id = seen.id;
            problems.push(Problem::Observation(
                ObservationProblem::ObservationUnlisted { source, index, id },
            ));
            continue;
        };
        if !agrees(seen, listed) {
            problems.push(Problem::Observation(
                ObservationProblem::ObservationContradicts {
                    source,
                    index,
                    seen: seen.clone(),
                    listed: Box::new(listed.clone()),
                },
            ));
        }
    }
    problems
}

/// Whether `seen`, observed during the run, can be an earlier state of `listed`.
fn agrees(seen: &Seen, listed: &Seen) -> bool {
    let prefix = listed.votes.starts_with(&seen.votes);
    prefix
        && seen.spec == listed.spec
        && seen.voters == listed.voters
        && match seen.status {
            Status::Open => {
                seen.votes.len() < listed.votes.len()
                    || matches!(listed.status, Status::Open | Status::NoQuorum)
            }
            _ => seen == listed,
        }
}

/// Ballots go only to the decision's voters.
fn ballots_go_to_voters(recorded: &Recorded, reference: &FinalRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    for ballot in &recorded.ballots {
        let Some(seen) = reference.decisions.get(&ballot.decision) else {
            continue;
        };
        if !seen.voters.contains(&ballot.voter) {
            problems.push(Problem::Voting(VotingProblem::BallotToOutsider {
                voter: ballot.voter.clone(),
                id: ballot.decision,
                index: ballot.index,
                voters: seen.voters.clone(),
            }));
        }
    }
    problems
}

/// What a property found: one anomaly, with what it is about. [`fmt::Display`] says it in words,
/// for the report.
#[derive(Clone, Debug, PartialEq)]
enum Problem {
    /// An operation the checker cannot read.
    Record(RecordProblem),
    /// The final reads against each other and against the proposals.
    Listing(ListingProblem),
    /// A listed decision's votes and outcome against its rule.
    Tally(TallyProblem),
    /// The votes and ballots of the run against the final read.
    Voting(VotingProblem),
    /// A state of a decision seen during the run (an answer, a watch).
    Observation(ObservationProblem),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record(problem) => problem.fmt(f),
            Self::Listing(problem) => problem.fmt(f),
            Self::Tally(problem) => problem.fmt(f),
            Self::Voting(problem) => problem.fmt(f),
            Self::Observation(problem) => problem.fmt(f),
        }
    }
}

/// An operation the checker cannot read.
#[derive(Clone, Debug, PartialEq)]
enum RecordProblem {
    /// A `propose` whose invocation is not a proposal.
    Proposal { index: u64 },
    /// A `vote` without a decision id, voter or choice.
    Vote { index: u64 },
    /// A final read lists something that is not a decision.
    Listed { index: u64, item: Json },
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Proposal { index } => {
                write!(f, "event {index}: a proposal it cannot parse")
            }
            Self::Vote { index } => write!(f, "event {index}: a vote it cannot parse"),
            Self::Listed { index, item } => write!(
                f,
                "final read at index {index} lists a decision it cannot parse: {item}"
            ),
        }
    }
}

/// The final reads against each other and against the proposals.
#[derive(Clone, Debug, PartialEq)]
enum ListingProblem {
    ReadsDisagree {
        node: Option<u64>,
        consistency: String,
        index: u64,
        reference_node: Option<u64>,
        reference_index: u64,
        /// How many decisions differ; the first of them, as the reference and this read list it.
        count: usize,
        first: u64,
        expected: Option<Box<Seen>>,
        found: Option<Box<Seen>>,
    },
    NeverProposed {
        id: u64,
        tag: u64,
    },
    ProposalFailed {
        id: u64,
        tag: u64,
    },
    SpecChanged {
        id: u64,
        listed: Box<Proposal>,
        proposed: Box<Proposal>,
    },
    ElectorateChanged {
        id: u64,
        voters: Vec<String>,
        electorate: Vec<String>,
    },
    AppliedTwice {
        tag: u64,
        ids: Vec<u64>,
    },
    TagChanged {
        tag: u64,
        id: u64,
        listed_tag: u64,
    },
    ProposalLost {
        tag: u64,
        id: u64,
    },
}

impl fmt::Display for ListingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadsDisagree {
                node,
                consistency,
                index,
                reference_node,
                reference_index,
                count,
                first,
                expected,
                found,
            } => write!(
                f,
                "the final read on node {node:?} ({consistency}, index {index}) disagrees with the \
                 reference read on node {reference_node:?} (index {reference_index}) on {count} \
                 decision(s), e.g. decision {first}: {expected:?} vs {found:?}"
            ),
            Self::NeverProposed { id, tag } => write!(
                f,
                "decision {id} (tag {tag}) is listed, but no such proposal was invoked"
            ),
            Self::ProposalFailed { id, tag } => write!(
                f,
                "decision {id} (tag {tag}) is listed, but its proposal failed, which promised it \
                 was not applied"
            ),
            Self::SpecChanged {
                id,
                listed,
                proposed,
            } => write!(
                f,
                "decision {id} is listed with spec {listed:?}, but was proposed as {proposed:?}"
            ),
            Self::ElectorateChanged {
                id,
                voters,
                electorate,
            } => write!(
                f,
                "decision {id}: voters {voters:?}, but the named electorate is {electorate:?}"
            ),
            Self::AppliedTwice { tag, ids } => write!(
                f,
                "proposal {tag} is listed as {} decisions {ids:?}: applied more than once",
                ids.len()
            ),
            Self::TagChanged {
                tag,
                id,
                listed_tag,
            } => write!(
                f,
                "proposal {tag} was acknowledged as decision {id}, which is listed with tag \
                 {listed_tag}"
            ),
            Self::ProposalLost { tag, id } => write!(
                f,
                "decision {id} (proposal {tag}, acknowledged) is missing from the final read: lost"
            ),
        }
    }
}

/// A listed decision's votes and outcome against its rule.
#[derive(Clone, Debug, PartialEq)]
enum TallyProblem {
    VotedTwice {
        id: u64,
        voter: String,
        votes: Vec<Cast>,
    },
    OutsiderVoted {
        id: u64,
        voter: String,
        voters: Vec<String>,
    },
    NotAnOption {
        id: u64,
        voter: String,
        choice: String,
    },
    VoteAfterClose {
        id: u64,
        voter: String,
        cast_ms: u64,
        closed: u64,
    },
    /// The tally was already `tally` after the first `after` votes.
    VotesAfterTally {
        id: u64,
        after: usize,
        tally: Tally,
        votes: Vec<Cast>,
        spec: Box<Proposal>,
    },
    WrongOutcome {
        seen: Box<Seen>,
        tally: Tally,
    },
    OpenPastDeadline {
        id: u64,
        late_ms: u64,
    },
}

impl fmt::Display for TallyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VotedTwice { id, voter, votes } => {
                write!(f, "decision {id}: {voter} voted twice: {votes:?}")
            }
            Self::OutsiderVoted { id, voter, voters } => write!(
                f,
                "decision {id}: {voter} voted but is not in the electorate {voters:?}"
            ),
            Self::NotAnOption { id, voter, choice } => write!(
                f,
                "decision {id}: {voter} voted {choice}, which is not an option"
            ),
            Self::VoteAfterClose {
                id,
                voter,
                cast_ms,
                closed,
            } => write!(
                f,
                "decision {id}: {voter}'s vote was cast at {cast_ms}, after the decision closed at \
                 {closed}"
            ),
            Self::VotesAfterTally {
                id,
                after,
                tally,
                votes,
                spec,
            } => write!(
                f,
                "decision {id}: the tally was {tally:?} after {after} vote(s), yet more votes were \
                 accepted: {votes:?} under {spec:?}"
            ),
            Self::WrongOutcome { seen, tally } => write!(
                f,
                "decision {} is {} {:?} (closed at {}, deadline {}), but its votes {:?} under \
                 {:?} give {tally:?}",
                seen.id,
                seen.status,
                seen.outcome,
                seen.closed,
                seen.spec.deadline,
                seen.votes,
                seen.spec
            ),
            Self::OpenPastDeadline { id, late_ms } => write!(
                f,
                "decision {id} is still OPEN {late_ms} ms after its deadline"
            ),
        }
    }
}

/// The votes and ballots of the run against the final read.
#[derive(Clone, Debug, PartialEq)]
enum VotingProblem {
    AcceptedVoteUnlisted {
        voter: String,
        id: u64,
        index: u64,
    },
    AcceptedVoteLost {
        voter: String,
        choice: String,
        id: u64,
        index: u64,
        votes: Vec<Cast>,
    },
    SecondVoteWithoutFirst {
        voter: String,
        id: u64,
        index: u64,
        votes: Vec<Cast>,
    },
    RefusedClosedButOpen {
        voter: String,
        id: u64,
        index: u64,
    },
    RefusedVoter {
        voter: String,
        id: u64,
        index: u64,
        voters: Vec<String>,
    },
    VoteNeverCast {
        id: u64,
        voter: String,
        choice: String,
    },
    BallotToOutsider {
        voter: String,
        id: u64,
        index: u64,
        voters: Vec<String>,
    },
}

impl fmt::Display for VotingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AcceptedVoteUnlisted { voter, id, index } => write!(
                f,
                "{voter}'s vote in decision {id} was accepted (index {index}), but the decision is \
                 not listed"
            ),
            Self::AcceptedVoteLost {
                voter,
                choice,
                id,
                index,
                votes,
            } => write!(
                f,
                "{voter}'s vote {choice} in decision {id} was accepted (index {index}), but the \
                 final votes are {votes:?}: lost"
            ),
            Self::SecondVoteWithoutFirst {
                voter,
                id,
                index,
                votes,
            } => write!(
                f,
                "{voter}'s vote in decision {id} was refused as a second vote (index {index}), but \
                 {voter} has no vote in the final votes {votes:?}"
            ),
            Self::RefusedClosedButOpen { voter, id, index } => write!(
                f,
                "{voter}'s vote in decision {id} was refused as closed (index {index}), but the \
                 decision is OPEN"
            ),
            Self::RefusedVoter {
                voter,
                id,
                index,
                voters,
            } => write!(
                f,
                "{voter}'s vote in decision {id} was refused as not a voter (index {index}), but \
                 {voter} is in the electorate {voters:?}"
            ),
            Self::VoteNeverCast { id, voter, choice } => write!(
                f,
                "decision {id} lists {voter}'s vote {choice}, but no such vote was invoked without \
                 being refused"
            ),
            Self::BallotToOutsider {
                voter,
                id,
                index,
                voters,
            } => write!(
                f,
                "{voter} got a ballot for decision {id} (index {index}), but is not in its \
                 electorate {voters:?}"
            ),
        }
    }
}

/// A state of a decision seen during the run (an answer, a watch).
#[derive(Clone, Debug, PartialEq)]
enum ObservationProblem {
    AnswerWithoutVote {
        voter: String,
        choice: String,
        decision: u64,
        index: u64,
        answer: Observed,
    },
    WatchLostVotes {
        decision: Option<u64>,
        index: u64,
        from: usize,
        to: usize,
    },
    WatchEndedOpen {
        decision: Option<u64>,
        index: u64,
    },
    ObservationUnparsable {
        source: Source,
        index: u64,
        state: Json,
    },
    ObservationUnlisted {
        source: Source,
        index: u64,
        id: u64,
    },
    ObservationContradicts {
        source: Source,
        index: u64,
        seen: Box<Seen>,
        listed: Box<Seen>,
    },
}

impl fmt::Display for ObservationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnswerWithoutVote {
                voter,
                choice,
                decision,
                index,
                answer,
            } => write!(
                f,
                "{voter}'s vote {choice} in decision {decision} was accepted (index {index}), but \
                 the decision it answered does not hold it: {answer}"
            ),
            Self::WatchLostVotes {
                decision,
                index,
                from,
                to,
            } => write!(
                f,
                "the watch of decision {} (index {index}) went back from {from} votes to {to}",
                Id(*decision)
            ),
            Self::WatchEndedOpen { decision, index } => write!(
                f,
                "the watch of decision {} (index {index}) ended while the decision was OPEN",
                Id(*decision)
            ),
            Self::ObservationUnparsable {
                source,
                index,
                state,
            } => write!(
                f,
                "{source} (index {index}) holds a decision it cannot parse: {state}"
            ),
            Self::ObservationUnlisted { source, index, id } => write!(
                f,
                "{source} (index {index}) shows decision {id}, which is not listed"
            ),
            Self::ObservationContradicts {
                source,
                index,
                seen,
                listed,
            } => write!(
                f,
                "{source} (index {index}) shows decision {} as {} {:?} with votes {:?}, which \
                 contradicts the final {} {:?} with votes {:?}",
                seen.id,
                seen.status,
                seen.outcome,
                seen.votes,
                listed.status,
                listed.outcome,
                listed.votes
            ),
        }
    }
}
