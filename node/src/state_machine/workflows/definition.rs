//! A workflow definition as the state machine holds it: workflows.proto's `WorkflowDefinition`
//! after validation (`conclave_proto::validate::workflow`) and conversion, with the defaults
//! filled in, step names resolved to indexes and the backoff in whole thousandths. Stored in the
//! log (`Start`) and with every instance (the snapshot).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::state_machine::coordination::{Backoff, Electorate, Rule};

/// A validated definition: every index names an earlier step (`after`, `when`, `over`) or a
/// compensation step (`compensate`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    /// Relative to the start; 0: none.
    pub deadline_ms: u64,
    pub steps: Vec<StepDef>,
}

/// One step: its dependencies, condition and kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDef {
    pub name: String,
    /// Indexes of earlier steps, distinct.
    pub after: Vec<u32>,
    pub when: Option<When>,
    pub kind: StepKind,
    /// The index of the compensation step that undoes this one.
    pub compensate: Option<u32>,
    /// A compensation step: runs only as an undo.
    pub compensation: bool,
}

/// Run only when decision step `step` (an ancestor) decided `outcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    pub step: u32,
    pub outcome: String,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    /// One task, or with `fan_out` one per branch.
    Task {
        template: TaskTemplate,
        fan_out: Option<FanOut>,
    },
    /// A vote among agents.
    Decision(DecisionTemplate),
}

/// A task template with its defaults filled in (attempts, lease, backoff).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTemplate {
    pub queue: String,
    pub capabilities: BTreeSet<String>,
    /// JSON text ("null" when none was given).
    pub params: String,
    pub priority: i32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub lease_ms: u64,
    /// Relative to the step's start; 0: none.
    pub deadline_ms: u64,
    pub labels: BTreeMap<String, String>,
}

/// A task step expanded into branches, and how they are joined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    pub source: FanOutSource,
    pub policy: JoinPolicy,
    /// Partial results after this long, relative to the step's start; 0: none.
    pub join_deadline_ms: u64,
}

/// Where a fan-out's branches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FanOutSource {
    /// A fixed number of branches.
    Count(u32),
    /// One branch per item of this (ancestor) step's result, a JSON array.
    Over(u32),
}

/// How many branches must succeed (workflows.proto, `Join`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinPolicy {
    All,
    Any,
    AtLeast(u32),
}

impl JoinPolicy {
    /// How many branches must succeed, out of `width`.
    pub fn needed(self, width: usize) -> usize {
        match self {
            JoinPolicy::All => width,
            JoinPolicy::Any => 1,
            JoinPolicy::AtLeast(k) => k as usize,
        }
    }
}

/// A decision template (decisions.proto's DecisionSpec with a relative deadline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionTemplate {
    pub question: String,
    pub options: Vec<String>,
    pub electorate: Electorate,
    pub rule: Rule,
    pub weights: BTreeMap<String, u64>,
    pub veto_option: Option<String>,
    /// Relative to the step's start; 0 means DEFAULT_DECISION_DEADLINE_MS.
    pub deadline_ms: u64,
    pub labels: BTreeMap<String, String>,
}

impl Definition {
    /// The structural rules apply relies on (indexes in range and pointing backwards, a step of
    /// each kind where one is expected), so a definition that bypassed validation is refused
    /// rather than panicking every replica. The full rules are `validate::workflow`'s.
    pub fn check_structure(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("a workflow needs at least one step".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            let earlier = |j: u32| (j as usize) < i;
            let fine = step.after.iter().all(|&j| earlier(j))
                && step
                    .when
                    .as_ref()
                    .is_none_or(|w| earlier(w.step) && self.steps[w.step as usize].is_decision())
                && step.compensate.is_none_or(|c| {
                    self.steps
                        .get(c as usize)
                        .is_some_and(|s| s.compensation && !s.is_decision())
                })
                && match &step.kind {
                    StepKind::Task {
                        fan_out: Some(fan_out),
                        ..
                    } => match fan_out.source {
                        FanOutSource::Over(j) => earlier(j),
                        FanOutSource::Count(n) => n > 0,
                    },
                    _ => true,
                };
            if !fine {
                return Err(format!(
                    "steps[{i}] ({}): a reference that is not an earlier step of the right kind",
                    step.name
                ));
            }
        }
        Ok(())
    }
}

impl StepDef {
    /// A decision step (else a task step).
    pub fn is_decision(&self) -> bool {
        matches!(self.kind, StepKind::Decision(_))
    }

    /// The fan-out of a task step, if it has one.
    pub fn fan_out(&self) -> Option<&FanOut> {
        match &self.kind {
            StepKind::Task { fan_out, .. } => fan_out.as_ref(),
            StepKind::Decision(_) => None,
        }
    }
}

// ---- The encoding contract (`format.rs`): each variant's tag, in the log (Start) and the
// snapshot (instances). New variants are appended with the next code; any other change bumps
// LOG_FORMAT and SNAPSHOT_FORMAT. ----

impl StepKind {
    pub const fn code(&self) -> u16 {
        match self {
            StepKind::Task { .. } => 0,
            StepKind::Decision(_) => 1,
        }
    }
}

impl FanOutSource {
    pub const fn code(&self) -> u16 {
        match self {
            FanOutSource::Count(_) => 0,
            FanOutSource::Over(_) => 1,
        }
    }
}

impl JoinPolicy {
    pub const fn code(&self) -> u16 {
        match self {
            JoinPolicy::All => 0,
            JoinPolicy::Any => 1,
            JoinPolicy::AtLeast(_) => 2,
        }
    }
}
