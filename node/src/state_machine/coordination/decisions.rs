//! Decisions: questions settled by a quorum vote of agents, and the tally that fixes the outcome.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::tasks::make_ready;
use super::DecisionId;
use super::{
    CoordResponse, Coordination, DecisionEventKind, SessionId, TaskEventKind, TaskState, TimerKind,
};
use crate::limits::OPEN_DECISIONS_MAX;
use crate::state_machine::primitive::Ctx;

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
        let id = self.id;
        match (self.status, &self.outcome) {
            (DecisionStatus::Decided, Some(outcome)) if outcome == option => Ok(()),
            (DecisionStatus::Decided, Some(outcome)) => {
                Err(format!("decision {id}: outcome {outcome}"))
            }
            (DecisionStatus::Rejected, _) => Err(format!("decision {id} rejected")),
            (DecisionStatus::NoQuorum, _) => Err(format!("decision {id}: no quorum")),
            (status, _) => Err(format!("decision {id} is {status:?}")),
        }
    }
}

impl Coordination {
    pub(super) fn propose(&mut self, ctx: &mut Ctx, spec: &DecisionSpec) -> CoordResponse {
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
            self.agents
                .values()
                .filter(|a| a.live && a.spec.capabilities.contains(&spec.electorate.capability))
                .map(|a| a.name.clone())
                .collect()
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
        self.decision_event(ctx, id, DecisionEventKind::Proposed);
        CoordResponse::Proposed { decision_id: id }
    }

    pub(super) fn vote(
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
        let voter = match self.agent_by_session(session_id) {
            Some(agent) if agent.live => agent.name.clone(),
            _ => return refused(format!("session {session_id} is not live")),
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
        self.decision_event(ctx, decision_id, DecisionEventKind::Voted);
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
    pub(super) fn decision_deadline_passed(&mut self, ctx: &mut Ctx, decision_id: DecisionId) {
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

    /// Fixes the outcome (once: the decision never changes status again) and resolves every
    /// task gated on it.
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
        let decision = decision.clone();
        self.timers
            .remove(&(deadline_ms, TimerKind::DecisionDeadline, decision_id));
        self.open_decisions.remove(&decision_id);
        self.closed_decisions.insert((now_ms, decision_id));
        self.decision_event(ctx, decision_id, DecisionEventKind::Closed);

        let gated: Vec<_> = self
            .gates
            .get(&decision_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for task_id in gated {
            let mut task = self.take_task(task_id).expect("the gate index lists tasks");
            debug_assert_eq!(task.state, TaskState::Blocked);
            let option = task
                .spec
                .requires
                .as_ref()
                .map_or("", |g| g.option.as_str());
            let kind = match decision.gate_outcome(option) {
                Ok(()) => {
                    make_ready(&mut task, now_ms);
                    TaskEventKind::Unblocked
                }
                Err(reason) => {
                    task.state = TaskState::Canceled;
                    task.updated_ms = now_ms;
                    task.cancel_reason = reason;
                    TaskEventKind::Canceled
                }
            };
            self.task_event(ctx, &task, kind, None);
            self.put_task(task);
        }
    }
}
