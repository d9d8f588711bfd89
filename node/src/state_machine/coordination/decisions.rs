//! Decisions: questions settled by a quorum vote of agents, and the tally that fixes the outcome.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{CoordEventKind, CoordResponse, DecisionEventKind, DecisionId, SessionId};
use super::{Retention, Timer, TimerKind};
use crate::limits::OPEN_DECISIONS_MAX;
use crate::state_machine::kv::Fnv;
use crate::state_machine::primitive::{Ctx, DecisionView, Effect, Primitive};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// An option with more than half of the electorate's votes wins.
    Majority,
    /// Every voter chose the same option.
    Unanimous,
    /// The first option to reach k votes wins.
    AtLeast(u32),
    /// An option whose voters' weights sum to more than half of the total weight wins.
    Weighted,
}

/// Named agents, or (when `agents` is empty) every live agent with `capability` at proposal time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Electorate {
    pub agents: Vec<String>,
    pub capability: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSpec {
    pub question: String,
    pub options: Vec<String>,
    pub electorate: Electorate,
    pub rule: Rule,
    /// Per-voter weights for `Rule::Weighted`; voters missing here weigh 1.
    pub weights: BTreeMap<String, u64>,
    pub veto_option: Option<String>,
    /// Absolute cluster time.
    pub deadline_ms: u64,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DecisionStatus {
    Open,
    Decided,
    Rejected,
    NoQuorum,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub voter: String,
    pub choice: String,
    pub rationale: String,
    pub cast_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: DecisionId,
    pub spec: DecisionSpec,
    /// The electorate as fixed at proposal time, sorted, distinct.
    pub voters: Vec<String>,
    pub status: DecisionStatus,
    /// For DECIDED: the winning option.
    pub outcome: Option<String>,
    pub votes: Vec<Vote>,
    pub proposed_ms: u64,
    /// When the outcome was fixed (0 while open).
    pub closed_ms: u64,
    /// Why it was REJECTED or NO_QUORUM, in words.
    pub reason: String,
}

/// What the tally says after a vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tally {
    Open,
    Decided(String),
    Rejected(String),
}

impl Decision {
    pub fn is_open(&self) -> bool {
        self.status == DecisionStatus::Open
    }

    pub fn has_voted(&self, voter: &str) -> bool {
        self.votes.iter().any(|v| v.voter == voter)
    }

    pub fn is_voter(&self, name: &str) -> bool {
        self.voters
            .binary_search_by(|v| v.as_str().cmp(name))
            .is_ok()
    }

    /// Applies the rule to the votes cast so far (decisions.proto): the winning option, a
    /// rejection (a veto, or no option can win whatever the remaining voters do), or still open.
    pub fn tally(&self) -> Tally {
        if let Some(veto) = &self.spec.veto_option {
            if let Some(vote) = self.votes.iter().find(|v| &v.choice == veto) {
                return Tally::Rejected(format!("vetoed by {}", vote.voter));
            }
        }
        let weight = |voter: &str| match self.spec.rule {
            Rule::Weighted => self.spec.weights.get(voter).copied().unwrap_or(1),
            _ => 1,
        };
        let total: u64 = self
            .voters
            .iter()
            .map(|v| weight(v))
            .fold(0, u64::saturating_add);
        let cast: u64 = self
            .votes
            .iter()
            .map(|v| weight(&v.voter))
            .fold(0, u64::saturating_add);
        let remaining = total.saturating_sub(cast);
        // Per option (the veto option can never win), in the order options first got a vote:
        // the first to reach a threshold is the one reached first.
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let mut first_to_reach: Option<&str> = None;
        let threshold_reached = |count: u64| match self.spec.rule {
            Rule::Majority | Rule::Weighted => count.saturating_mul(2) > total,
            Rule::AtLeast(k) => count >= u64::from(k),
            Rule::Unanimous => false,
        };
        for vote in &self.votes {
            let count = counts.entry(vote.choice.as_str()).or_default();
            *count = count.saturating_add(weight(&vote.voter));
            if first_to_reach.is_none() && threshold_reached(*count) {
                first_to_reach = Some(vote.choice.as_str());
            }
        }
        if let Some(winner) = first_to_reach {
            return Tally::Decided(winner.to_string());
        }
        let best = counts.values().copied().max().unwrap_or(0);
        let reachable = best.saturating_add(remaining);
        match self.spec.rule {
            Rule::Unanimous => {
                if counts.len() > 1 {
                    Tally::Rejected("the voters disagree; unanimity is impossible".into())
                } else if remaining == 0 {
                    match counts.keys().next() {
                        Some(choice) => Tally::Decided((*choice).to_string()),
                        None => Tally::Rejected("no votes".into()),
                    }
                } else {
                    Tally::Open
                }
            }
            Rule::Majority | Rule::Weighted if reachable.saturating_mul(2) <= total => {
                Tally::Rejected("no option can reach a majority any more".into())
            }
            Rule::AtLeast(k) if reachable < u64::from(k) => {
                Tally::Rejected(format!("no option can reach {k} votes any more"))
            }
            _ => Tally::Open,
        }
    }

    /// Whether a task gated on `option` may run (Ok) or is canceled (Err(reason)); the decision
    /// must be closed.
    pub fn gate_outcome(&self, option: &str) -> Result<(), String> {
        gate_outcome(self.id, self.status, self.outcome.as_deref(), option)
    }
}

/// Whether a task gated on `option` of decision `id`, closed with `status` (and `outcome`), may
/// run (Ok) or is canceled (Err(reason)).
pub fn gate_outcome(
    id: DecisionId,
    status: DecisionStatus,
    outcome: Option<&str>,
    option: &str,
) -> Result<(), String> {
    match (status, outcome) {
        (DecisionStatus::Decided, Some(outcome)) if outcome == option => Ok(()),
        (DecisionStatus::Decided, Some(outcome)) => {
            Err(format!("decision {id}: outcome {outcome}"))
        }
        (DecisionStatus::Rejected, _) => Err(format!("decision {id} rejected")),
        (DecisionStatus::NoQuorum, _) => Err(format!("decision {id}: no quorum")),
        (status, _) => Err(format!("decision {id} is {status:?}")),
    }
}

/// The decisions primitive: every decision kept, the open ones, the closed ones by age, and
/// their deadline timers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decisions {
    /// The last id issued (the sequence starts at 1).
    last_decision_id: DecisionId,
    decisions: BTreeMap<DecisionId, Decision>,
    open_decisions: BTreeSet<DecisionId>,
    /// Closed decisions by (closed at, id), for retention.
    closed_decisions: BTreeSet<(u64, DecisionId)>,
    /// The deadline timers of open decisions.
    timers: BTreeSet<Timer>,
    /// The retention of the last Tick: what `next_due_ms` plans garbage collection by.
    retention: Retention,
}

impl Decisions {
    /// Applies `Propose` and `Vote` (the agents are read through `ctx.agents()`); a decision that
    /// closes raises `Effect::DecisionClosed`.
    pub fn apply(&mut self, ctx: &mut Ctx, command: &super::CoordCommand) -> CoordResponse {
        match command {
            super::CoordCommand::Propose(spec) => self.propose(ctx, spec),
            super::CoordCommand::Vote {
                session_id,
                decision_id,
                choice,
                rationale,
            } => self.vote(ctx, *session_id, *decision_id, choice, rationale),
            other => unreachable!("{} is not a decisions command", other.name()),
        }
    }

    pub fn decision(&self, id: DecisionId) -> Option<&Decision> {
        self.decisions.get(&id)
    }

    /// Decisions with ids after `after_id` in one of `statuses` (empty: any), at most `limit`,
    /// and whether more follow.
    pub fn list_decisions(
        &self,
        statuses: &[DecisionStatus],
        after_id: DecisionId,
        limit: usize,
    ) -> (Vec<&Decision>, bool) {
        let matching = self
            .decisions
            .range(after_id.saturating_add(1)..)
            .map(|(_, decision)| decision)
            .filter(|decision| statuses.is_empty() || statuses.contains(&decision.status));
        super::page(matching, limit)
    }

    /// Open decisions that have `agent` among their voters and no vote from it yet.
    pub fn open_ballots(&self, agent: &str) -> Vec<&Decision> {
        self.open_decisions
            .iter()
            .filter_map(|id| self.decisions.get(id))
            .filter(|decision| decision.is_voter(agent) && !decision.has_voted(agent))
            .collect()
    }

    pub fn open_count(&self) -> usize {
        self.open_decisions.len()
    }

    fn propose(&mut self, ctx: &mut Ctx, spec: &DecisionSpec) -> CoordResponse {
        let now_ms = ctx.now_ms;
        let invalid = |reason: String| CoordResponse::Invalid { reason };
        // The deadline runs on cluster time, which can be ahead of the clock the API checked it
        // against: after a leader whose clock was ahead, cluster time stays ahead (it never goes
        // back) until the clocks catch up. Accepted, such a decision would close NO_QUORUM at the
        // next tick, before anyone could vote, under an answer that said it was proposed.
        if spec.deadline_ms <= now_ms {
            return invalid(format!(
                "deadline_unix_ms: {} is not after cluster time {now_ms}",
                spec.deadline_ms
            ));
        }
        if spec.options.len() < 2 {
            return invalid("options: at least 2 are needed".into());
        }
        let distinct: BTreeSet<&String> = spec.options.iter().collect();
        if distinct.len() != spec.options.len() || spec.options.iter().any(String::is_empty) {
            return invalid("options: must be distinct and not empty".into());
        }
        if let Some(veto) = &spec.veto_option {
            if !spec.options.contains(veto) {
                return invalid(format!("veto_option: {veto:?} is not one of the options"));
            }
        }
        let voters: Vec<String> = if !spec.electorate.agents.is_empty() {
            let names: BTreeSet<&String> = spec.electorate.agents.iter().collect();
            names.into_iter().cloned().collect()
        } else if !spec.electorate.capability.is_empty() {
            ctx.agents().live_agents_with(&spec.electorate.capability)
        } else {
            return invalid("electorate: name agents or a capability".into());
        };
        if voters.is_empty() {
            return invalid(format!(
                "electorate: no live agent has capability {:?}",
                spec.electorate.capability
            ));
        }
        if let Rule::AtLeast(k) = spec.rule {
            if k == 0 || k as usize > voters.len() {
                return invalid(format!(
                    "k: must be 1 ..= {} (the electorate size), not {k}",
                    voters.len()
                ));
            }
        }
        if self.open_decisions.len() >= OPEN_DECISIONS_MAX {
            return CoordResponse::QuotaExceeded {
                reason: format!(
                    "the cluster holds its maximum of {OPEN_DECISIONS_MAX} open decisions \
                     (OPEN_DECISIONS_MAX)"
                ),
            };
        }
        self.last_decision_id += 1;
        let id = self.last_decision_id;
        self.decisions.insert(
            id,
            Decision {
                id,
                spec: spec.clone(),
                voters,
                status: DecisionStatus::Open,
                outcome: None,
                votes: Vec::new(),
                proposed_ms: now_ms,
                closed_ms: 0,
                reason: String::new(),
            },
        );
        self.open_decisions.insert(id);
        self.timers
            .insert((spec.deadline_ms, TimerKind::DecisionDeadline, id));
        ctx.event(CoordEventKind::Decision {
            decision_id: id,
            kind: DecisionEventKind::Proposed,
        });
        CoordResponse::Proposed { decision_id: id }
    }

    fn vote(
        &mut self,
        ctx: &mut Ctx,
        session_id: SessionId,
        decision_id: DecisionId,
        choice: &str,
        rationale: &str,
    ) -> CoordResponse {
        let now_ms = ctx.now_ms;
        let refused = |reason: String| CoordResponse::VoteRefused { reason };
        let Some(decision) = self.decisions.get(&decision_id) else {
            return CoordResponse::UnknownDecision { decision_id };
        };
        let Some(voter) = ctx.agents().live_agent(session_id).map(str::to_string) else {
            return refused(format!("session {session_id} is not live"));
        };
        if !decision.spec.options.iter().any(|o| o == choice) {
            return CoordResponse::Invalid {
                reason: format!("choice: {choice:?} is not an option of decision {decision_id}"),
            };
        }
        if !decision.is_open() {
            return refused(format!("decision {decision_id} is closed"));
        }
        if !decision.is_voter(&voter) {
            return refused(format!(
                "agent {voter} is not in the electorate of decision {decision_id}"
            ));
        }
        if decision.has_voted(&voter) {
            return refused(format!(
                "agent {voter} already voted in decision {decision_id}"
            ));
        }
        let decision = self.decisions.get_mut(&decision_id).expect("found above");
        decision.votes.push(Vote {
            voter,
            choice: choice.to_string(),
            rationale: rationale.to_string(),
            cast_ms: now_ms,
        });
        let tally = decision.tally();
        ctx.event(CoordEventKind::Decision {
            decision_id,
            kind: DecisionEventKind::Voted,
        });
        match tally {
            Tally::Open => {}
            Tally::Decided(outcome) => self.close_decision(
                ctx,
                decision_id,
                DecisionStatus::Decided,
                Some(outcome),
                String::new(),
            ),
            Tally::Rejected(reason) => {
                self.close_decision(ctx, decision_id, DecisionStatus::Rejected, None, reason)
            }
        }
        CoordResponse::Voted { decision_id }
    }

    /// The decision deadline timer: an open decision ends NO_QUORUM.
    fn decision_deadline_passed(&mut self, ctx: &mut Ctx, decision_id: DecisionId) {
        let now_ms = ctx.now_ms;
        let due = self
            .decisions
            .get(&decision_id)
            .is_some_and(|d| d.is_open() && d.spec.deadline_ms <= now_ms);
        if due {
            self.close_decision(
                ctx,
                decision_id,
                DecisionStatus::NoQuorum,
                None,
                "the deadline passed undecided".into(),
            );
        }
    }

    /// Fixes the outcome (once: the decision never changes status again) and raises
    /// `Effect::DecisionClosed` for the tasks gated on it.
    fn close_decision(
        &mut self,
        ctx: &mut Ctx,
        decision_id: DecisionId,
        status: DecisionStatus,
        outcome: Option<String>,
        reason: String,
    ) {
        let now_ms = ctx.now_ms;
        let decision = self
            .decisions
            .get_mut(&decision_id)
            .expect("closing a known decision");
        assert!(decision.is_open(), "a decision's outcome is fixed once");
        decision.status = status;
        decision.outcome = outcome;
        decision.reason = reason;
        decision.closed_ms = now_ms;
        let deadline_ms = decision.spec.deadline_ms;
        let effect = Effect::DecisionClosed {
            decision_id,
            status: decision.status,
            outcome: decision.outcome.clone(),
        };
        self.timers
            .remove(&(deadline_ms, TimerKind::DecisionDeadline, decision_id));
        self.open_decisions.remove(&decision_id);
        self.closed_decisions.insert((now_ms, decision_id));
        ctx.event(CoordEventKind::Decision {
            decision_id,
            kind: DecisionEventKind::Closed,
        });
        ctx.raise(effect);
    }
}

impl Primitive for Decisions {
    /// Forgets closed decisions older than the retention's `finished_age_ms`.
    fn tick(&mut self, ctx: &mut Ctx) {
        if let Some(retention) = ctx.retention() {
            self.retention = retention.clone();
        }
        let age_ms = self.retention.finished_age_ms;
        while let Some(&(closed_ms, decision_id)) = self.closed_decisions.first() {
            if age_ms == 0 || closed_ms.saturating_add(age_ms) > ctx.now_ms {
                break;
            }
            self.closed_decisions.pop_first();
            self.decisions.remove(&decision_id);
        }
    }

    fn first_timer(&self) -> Option<Timer> {
        self.timers.first().copied()
    }

    fn fire_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        self.timers.remove(&timer);
        let (_, kind, decision_id) = timer;
        debug_assert_eq!(kind, TimerKind::DecisionDeadline);
        self.decision_deadline_passed(ctx, decision_id);
    }

    /// A workflow's decision step opens its decision, checked as a `Propose` is (the agents read
    /// through `ctx.agents()`), and learns its id or why it was refused.
    fn on_effect(&mut self, ctx: &mut Ctx, effect: &Effect) {
        match effect {
            Effect::ProposeStepDecision {
                workflow_id,
                step,
                spec,
            } => {
                let decision = match self.propose(ctx, spec) {
                    CoordResponse::Proposed { decision_id } => Ok(decision_id),
                    CoordResponse::Invalid { reason } | CoordResponse::QuotaExceeded { reason } => {
                        Err(reason)
                    }
                    other => unreachable!("propose answered {other:?}"),
                };
                ctx.raise(Effect::StepDecisionProposed {
                    workflow_id: *workflow_id,
                    step: *step,
                    decision,
                });
            }
            Effect::WithdrawDecision {
                decision_id,
                reason,
            } => {
                if self
                    .decisions
                    .get(decision_id)
                    .is_some_and(Decision::is_open)
                {
                    let (status, reason) = (DecisionStatus::Rejected, reason.clone());
                    self.close_decision(ctx, *decision_id, status, None, reason);
                }
            }
            Effect::SessionEnded { .. }
            | Effect::DecisionClosed { .. }
            | Effect::LeaseGranted { .. }
            | Effect::LeaseEnded { .. }
            | Effect::SubmitStepTasks { .. }
            | Effect::StepTaskSubmitted { .. }
            | Effect::StepTaskFinished { .. }
            | Effect::CancelTasks { .. }
            | Effect::StepDecisionProposed { .. }
            | Effect::TriggerSubmitTask { .. }
            | Effect::TriggerStartWorkflow { .. }
            | Effect::TriggerFired { .. } => {}
        }
    }

    fn next_due_ms(&self, _now_ms: u64) -> Option<u64> {
        let age_ms = self.retention.finished_age_ms;
        let aged = (age_ms > 0)
            .then(|| self.closed_decisions.first())
            .flatten()
            .map(|closed| closed.0.saturating_add(age_ms));
        [self.timers.first().map(|timer| timer.0), aged]
            .into_iter()
            .flatten()
            .min()
    }

    fn digest(&self) -> u64 {
        let mut digest = self
            .decisions
            .values()
            .fold(0, |d, x| d ^ decision_digest(x));
        let mut counter = Fnv::default();
        counter.write(&self.last_decision_id.to_be_bytes());
        digest ^= counter.finish();
        digest
    }
}

impl DecisionView for Decisions {
    fn decision(&self, id: DecisionId) -> Option<&Decision> {
        Decisions::decision(self, id)
    }
}

fn decision_digest(decision: &Decision) -> u64 {
    let mut hash = Fnv::default();
    hash.write(&decision.id.to_be_bytes());
    hash.write(&[decision.status as u8]);
    if let Some(outcome) = &decision.outcome {
        hash.write(&(outcome.len() as u64).to_be_bytes());
        hash.write(outcome.as_bytes());
    }
    hash.write(&(decision.votes.len() as u64).to_be_bytes());
    hash.finish()
}

/// What the checks of `coordination::tests` read: the last id, every decision, the open ones,
/// the closed ones by age, and the timers.
#[cfg(test)]
pub(super) type Indexes<'a> = (
    DecisionId,
    &'a BTreeMap<DecisionId, Decision>,
    &'a BTreeSet<DecisionId>,
    &'a BTreeSet<(u64, DecisionId)>,
    &'a BTreeSet<Timer>,
);

#[cfg(test)]
impl Decisions {
    pub(super) fn indexes(&self) -> Indexes<'_> {
        (
            self.last_decision_id,
            &self.decisions,
            &self.open_decisions,
            &self.closed_decisions,
            &self.timers,
        )
    }
}
