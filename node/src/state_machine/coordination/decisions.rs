//! Decisions: questions settled by a quorum vote of agents, and the tally that fixes the outcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DecisionId;

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

    /// Applies the rule to the votes cast so far (decisions.proto).
    pub fn tally(&self) -> Tally {
        let _ = self;
        unimplemented!("phase 2")
    }
}
