//! The rules of a workflow definition (workflows.proto), written once: the node refuses a broken
//! definition with INVALID_ARGUMENT and `conclave workflow check` before sending. Every message
//! starts with the step by index and name and the field (`steps[2] (fan).fan_out.join.k: ...`)
//! and names the limit that was passed.
//!
//! The graph rules: step names are unique; `after` names earlier steps only (so the graph is
//! acyclic by construction and the list order is a run order); `when` names a decision step among
//! the step's ancestors and one of its options; `over` names an ancestor task step that does not
//! fan out; `compensate` names a compensation step, and every compensation step is named.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    capabilities, labels, message, name, non_zero, priority, refuse, short_string, Result,
};
use crate::limits::{
    FAN_OUT_WIDTH_MAX, MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_BACKOFF_MULTIPLIER,
    MAX_DECISION_DEADLINE_MS, MAX_ELECTORATE, MAX_LEASE_MS, MAX_OPTIONS, MAX_WEIGHT, MIN_LEASE_MS,
    WORKFLOW_BYTES_MAX, WORKFLOW_DEADLINE_MS_MAX, WORKFLOW_PARAMS_BYTES_MAX, WORKFLOW_STEPS_MAX,
    WORKFLOW_STEP_NAME_BYTES_MAX,
};
use crate::v1::{
    fan_out, workflow_step, DecisionRule, DecisionTemplate, FanOut, JoinPolicy, TaskTemplate,
    WorkflowDefinition, WorkflowStep,
};

/// Checks a whole definition; the first broken rule, in step order, is the answer.
pub fn definition(definition: &WorkflowDefinition) -> Result {
    name("name", &definition.name)?;
    deadline("deadline_ms", definition.deadline_ms)?;
    let steps = &definition.steps;
    if steps.is_empty() {
        return refuse("steps: a workflow needs at least one step".into());
    }
    if steps.len() > WORKFLOW_STEPS_MAX {
        return refuse(format!(
            "steps: {} steps exceeds the limit of {WORKFLOW_STEPS_MAX} (WORKFLOW_STEPS_MAX)",
            steps.len()
        ));
    }
    let graph = Graph::new(steps)?;
    for (i, step) in steps.iter().enumerate() {
        let at = graph.at(i);
        graph.check_after(&at, i)?;
        match &step.kind {
            Some(workflow_step::Kind::Task(task)) => task_template(&format!("{at}.task"), task)?,
            Some(workflow_step::Kind::Decision(decision)) => {
                decision_template(&format!("{at}.decision"), decision)?
            }
            None => return refuse(format!("{at}: give the step a task or a decision")),
        }
        if step.compensation {
            compensation_shape(&at, step)?;
        }
        if let Some(fan_out) = &step.fan_out {
            graph.check_fan_out(&at, i, fan_out)?;
        }
        graph.check_when(&at, i)?;
        graph.check_compensate(&at, step)?;
    }
    graph.check_compensations_named()
}

/// The steps by name and each step's ancestors (through `after`, transitively).
struct Graph<'a> {
    steps: &'a [WorkflowStep],
    by_name: BTreeMap<&'a str, usize>,
    ancestors: Vec<BTreeSet<usize>>,
}

impl<'a> Graph<'a> {
    /// Checks the names (each valid, all distinct) and indexes them.
    fn new(steps: &'a [WorkflowStep]) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            let at = format!("steps[{i}] ({})", step.name);
            step_name(&format!("{at}.name"), &step.name)?;
            if let Some(first) = by_name.insert(step.name.as_str(), i) {
                return refuse(format!(
                    "{at}.name: {:?} is also the name of steps[{first}]; step names are unique",
                    step.name
                ));
            }
        }
        let mut ancestors: Vec<BTreeSet<usize>> = Vec::with_capacity(steps.len());
        for step in steps {
            let mut mine = BTreeSet::new();
            for parent in &step.after {
                // Only earlier steps count here; `check_after` refuses the others.
                if let Some(&p) = by_name
                    .get(parent.as_str())
                    .filter(|&&p| p < ancestors.len())
                {
                    mine.insert(p);
                    mine.extend(ancestors[p].iter().copied());
                }
            }
            ancestors.push(mine);
        }
        Ok(Graph {
            steps,
            by_name,
            ancestors,
        })
    }

    /// How messages name step `i`: `steps[i] (name)`.
    fn at(&self, i: usize) -> String {
        format!("steps[{i}] ({})", self.steps[i].name)
    }

    fn check_after(&self, at: &str, i: usize) -> Result {
        let mut seen = BTreeSet::new();
        for (j, parent) in self.steps[i].after.iter().enumerate() {
            let field = format!("{at}.after[{j}]");
            let Some(&p) = self.by_name.get(parent.as_str()) else {
                return refuse(format!("{field}: {parent:?} names no step"));
            };
            if p == i {
                return refuse(format!("{field}: a step cannot follow itself"));
            }
            if p > i {
                return refuse(format!(
                    "{field}: {parent:?} is steps[{p}], listed after this step; a step may only \
                     follow steps listed before it (so the graph has no cycle)"
                ));
            }
            if self.steps[p].compensation {
                return refuse(format!(
                    "{field}: {parent:?} is a compensation step, which runs only as an undo"
                ));
            }
            if !seen.insert(p) {
                return refuse(format!("{field}: {parent:?} appears more than once"));
            }
        }
        Ok(())
    }

    fn check_when(&self, at: &str, i: usize) -> Result {
        let Some(when) = &self.steps[i].when else {
            return Ok(());
        };
        let field = format!("{at}.when");
        let Some(&d) = self.by_name.get(when.step.as_str()) else {
            return refuse(format!("{field}.step: {:?} names no step", when.step));
        };
        if !self.ancestors[i].contains(&d) {
            return refuse(format!(
                "{field}.step: {:?} is not among this step's ancestors (its after steps, \
                 transitively)",
                when.step
            ));
        }
        let Some(workflow_step::Kind::Decision(decision)) = &self.steps[d].kind else {
            return refuse(format!(
                "{field}.step: {:?} is not a decision step",
                when.step
            ));
        };
        if !decision.options.contains(&when.outcome) {
            return refuse(format!(
                "{field}.outcome: {:?} is not one of {}'s options {:?}",
                when.outcome, when.step, decision.options
            ));
        }
        Ok(())
    }

    fn check_fan_out(&self, at: &str, i: usize, fan_out: &FanOut) -> Result {
        let field = format!("{at}.fan_out");
        if !matches!(self.steps[i].kind, Some(workflow_step::Kind::Task(_))) {
            return refuse(format!("{field}: only a task step fans out"));
        }
        let width = match &fan_out.source {
            None => return refuse(format!("{field}: give over (a step) or count")),
            Some(fan_out::Source::Count(count)) => {
                non_zero(&format!("{field}.count"), u64::from(*count))?;
                if *count > FAN_OUT_WIDTH_MAX {
                    return refuse(format!(
                        "{field}.count: {count} exceeds the limit of {FAN_OUT_WIDTH_MAX} \
                         (FAN_OUT_WIDTH_MAX)"
                    ));
                }
                Width::Count(*count)
            }
            Some(fan_out::Source::Over(over)) => {
                self.check_over(&format!("{field}.over"), i, over)?;
                Width::Over
            }
        };
        let join = fan_out.join.unwrap_or_default();
        join_rule(&format!("{field}.join"), &join, width)
    }

    fn check_over(&self, field: &str, i: usize, over: &str) -> Result {
        let Some(&source) = self.by_name.get(over) else {
            return refuse(format!("{field}: {over:?} names no step"));
        };
        if !self.ancestors[i].contains(&source) {
            return refuse(format!(
                "{field}: {over:?} is not among this step's ancestors (its after steps, \
                 transitively)"
            ));
        }
        let step = &self.steps[source];
        if !matches!(step.kind, Some(workflow_step::Kind::Task(_))) {
            return refuse(format!(
                "{field}: {over:?} is a decision step; over needs a task step's result list"
            ));
        }
        if step.fan_out.is_some() {
            return refuse(format!(
                "{field}: {over:?} fans out itself, so its result is an object, not a list"
            ));
        }
        Ok(())
    }

    fn check_compensate(&self, at: &str, step: &WorkflowStep) -> Result {
        if step.compensate.is_empty() {
            return Ok(());
        }
        let field = format!("{at}.compensate");
        let Some(&c) = self.by_name.get(step.compensate.as_str()) else {
            return refuse(format!("{field}: {:?} names no step", step.compensate));
        };
        if !self.steps[c].compensation {
            return refuse(format!(
                "{field}: {:?} is not a compensation step (compensation: true)",
                step.compensate
            ));
        }
        Ok(())
    }

    fn check_compensations_named(&self) -> Result {
        for (i, step) in self.steps.iter().enumerate() {
            let named = self.steps.iter().any(|s| s.compensate == step.name);
            if step.compensation && !named {
                return refuse(format!(
                    "{}.compensation: no step names it in compensate, so it would never run",
                    self.at(i)
                ));
            }
        }
        Ok(())
    }
}

/// How many branches a fan-out has, as far as the definition knows.
#[derive(Clone, Copy)]
enum Width {
    Count(u32),
    /// One per item of a result list: known at run time, at most FAN_OUT_WIDTH_MAX.
    Over,
}

fn join_rule(field: &str, join: &crate::v1::Join, width: Width) -> Result {
    let Ok(policy) = JoinPolicy::try_from(join.policy) else {
        return refuse(format!("{field}.policy: unknown value {}", join.policy));
    };
    match policy {
        JoinPolicy::All | JoinPolicy::Any if join.k != 0 => {
            return refuse(format!(
                "{field}.k: {} is given, but k is only for the policy AT_LEAST",
                join.k
            ));
        }
        JoinPolicy::AtLeast if join.k == 0 => {
            return refuse(format!("{field}.k: the policy AT_LEAST needs k >= 1"));
        }
        JoinPolicy::AtLeast => match width {
            Width::Count(count) if join.k > count => {
                return refuse(format!(
                    "{field}.k: {} exceeds the fan-out count {count}",
                    join.k
                ));
            }
            Width::Over if join.k > FAN_OUT_WIDTH_MAX => {
                return refuse(format!(
                    "{field}.k: {} exceeds the limit of {FAN_OUT_WIDTH_MAX} (FAN_OUT_WIDTH_MAX)",
                    join.k
                ));
            }
            _ => {}
        },
        _ => {}
    }
    deadline(&format!("{field}.deadline_ms"), join.deadline_ms)
}

/// A compensation step is a plain task: it runs only as the undo of the steps naming it.
fn compensation_shape(at: &str, step: &WorkflowStep) -> Result {
    let broken = if !step.after.is_empty() {
        Some("after")
    } else if step.when.is_some() {
        Some("when")
    } else if step.fan_out.is_some() {
        Some("fan_out")
    } else if !step.compensate.is_empty() {
        Some("compensate")
    } else if matches!(step.kind, Some(workflow_step::Kind::Decision(_))) {
        Some("decision")
    } else {
        None
    };
    match broken {
        Some(field) => refuse(format!(
            "{at}.{field}: a compensation step is a plain task step that runs only as an undo; \
             it has no {field}"
        )),
        None => Ok(()),
    }
}

/// A step name: 1 ..= WORKFLOW_STEP_NAME_BYTES_MAX bytes of `[A-Za-z0-9_-]`.
pub fn step_name(field: &str, value: &str) -> Result {
    if value.is_empty() {
        return refuse(format!("{field}: must not be empty"));
    }
    if value.len() > WORKFLOW_STEP_NAME_BYTES_MAX {
        return refuse(format!(
            "{field}: {} bytes exceeds the limit of {WORKFLOW_STEP_NAME_BYTES_MAX} \
             (WORKFLOW_STEP_NAME_BYTES_MAX)",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return refuse(format!(
            "{field}: {value:?} contains {c:?}; step names are made of [A-Za-z0-9_-]"
        ));
    }
    Ok(())
}

/// A relative deadline: 0 (none) ..= WORKFLOW_DEADLINE_MS_MAX.
fn deadline(field: &str, value_ms: u64) -> Result {
    if value_ms > WORKFLOW_DEADLINE_MS_MAX {
        return refuse(format!(
            "{field}: {value_ms} exceeds the limit of {WORKFLOW_DEADLINE_MS_MAX} \
             (WORKFLOW_DEADLINE_MS_MAX)"
        ));
    }
    Ok(())
}

/// Params: JSON text (empty means null) of at most WORKFLOW_PARAMS_BYTES_MAX bytes.
pub fn params_json(field: &str, value: &str) -> Result {
    if value.len() > WORKFLOW_PARAMS_BYTES_MAX {
        return refuse(format!(
            "{field}: {} bytes exceeds the limit of {WORKFLOW_PARAMS_BYTES_MAX} \
             (WORKFLOW_PARAMS_BYTES_MAX)",
            value.len()
        ));
    }
    if value.is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(_) => Ok(()),
        Err(error) => refuse(format!("{field}: not JSON: {error}")),
    }
}

fn task_template(field: &str, task: &TaskTemplate) -> Result {
    name(&format!("{field}.queue"), &task.queue)?;
    capabilities(&format!("{field}.capabilities"), &task.capabilities)?;
    params_json(&format!("{field}.params_json"), &task.params_json)?;
    priority(&format!("{field}.priority"), task.priority)?;
    if task.max_attempts > MAX_ATTEMPTS {
        return refuse(format!(
            "{field}.max_attempts: {} exceeds the limit of {MAX_ATTEMPTS} (MAX_ATTEMPTS)",
            task.max_attempts
        ));
    }
    if task.lease_ms != 0 && !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&task.lease_ms) {
        return refuse(format!(
            "{field}.lease_ms: {} is outside the allowed range {MIN_LEASE_MS} ..= {MAX_LEASE_MS}",
            task.lease_ms
        ));
    }
    if let Some(backoff) = &task.backoff {
        backoff_rule(&format!("{field}.backoff"), backoff)?;
    }
    deadline(&format!("{field}.deadline_ms"), task.deadline_ms)?;
    labels(&format!("{field}.labels"), &task.labels)
}

fn backoff_rule(field: &str, backoff: &crate::v1::Backoff) -> Result {
    for (name, value) in [
        ("initial_ms", backoff.initial_ms),
        ("maximum_ms", backoff.maximum_ms),
    ] {
        if value > MAX_BACKOFF_MS {
            return refuse(format!(
                "{field}.{name}: {value} exceeds the limit of {MAX_BACKOFF_MS} (MAX_BACKOFF_MS)"
            ));
        }
    }
    if backoff.maximum_ms != 0 && backoff.maximum_ms < backoff.initial_ms {
        return refuse(format!(
            "{field}.maximum_ms: {} is below initial_ms {}",
            backoff.maximum_ms, backoff.initial_ms
        ));
    }
    let multiplier = backoff.multiplier;
    // `contains` is false for NaN, so NaN is refused too.
    if multiplier != 0.0 && !(1.0..=MAX_BACKOFF_MULTIPLIER).contains(&multiplier) {
        return refuse(format!(
            "{field}.multiplier: {multiplier} is outside the allowed range 1.0 ..= \
             {MAX_BACKOFF_MULTIPLIER:.1} (MAX_BACKOFF_MULTIPLIER)"
        ));
    }
    if !(0.0..=1.0).contains(&backoff.jitter) {
        return refuse(format!(
            "{field}.jitter: {} is outside the allowed range 0.0 ..= 1.0",
            backoff.jitter
        ));
    }
    Ok(())
}

fn decision_template(field: &str, decision: &DecisionTemplate) -> Result {
    message(&format!("{field}.question"), &decision.question)?;
    options(&format!("{field}.options"), &decision.options)?;
    let size = electorate(&format!("{field}.electorate"), decision)?;
    let Ok(rule) = DecisionRule::try_from(decision.rule) else {
        return refuse(format!("{field}.rule: unknown value {}", decision.rule));
    };
    if rule == DecisionRule::AtLeast && (decision.k == 0 || decision.k as usize > size) {
        return refuse(format!(
            "{field}.k: {} is outside the allowed range 1 ..= {size} (the electorate's size)",
            decision.k
        ));
    }
    if decision.weights.len() > MAX_ELECTORATE {
        return refuse(format!(
            "{field}.weights: {} entries exceeds the limit of {MAX_ELECTORATE} (MAX_ELECTORATE)",
            decision.weights.len()
        ));
    }
    let weights: BTreeMap<&String, &u64> = decision.weights.iter().collect();
    for (voter, weight) in weights {
        name(&format!("{field}.weights key {voter:?}"), voter)?;
        if *weight == 0 || *weight > MAX_WEIGHT {
            return refuse(format!(
                "{field}.weights[{voter:?}]: {weight} is outside the allowed range 1 ..= \
                 {MAX_WEIGHT} (MAX_WEIGHT)"
            ));
        }
    }
    if !decision.veto_option.is_empty() && !decision.options.contains(&decision.veto_option) {
        return refuse(format!(
            "{field}.veto_option: {:?} is not one of the options",
            decision.veto_option
        ));
    }
    if decision.deadline_ms > MAX_DECISION_DEADLINE_MS {
        return refuse(format!(
            "{field}.deadline_ms: {} exceeds the limit of {MAX_DECISION_DEADLINE_MS} \
             (MAX_DECISION_DEADLINE_MS)",
            decision.deadline_ms
        ));
    }
    labels(&format!("{field}.labels"), &decision.labels)
}

fn options(field: &str, options: &[String]) -> Result {
    if options.len() < 2 || options.len() > MAX_OPTIONS {
        return refuse(format!(
            "{field}: {} options; give 2 ..= {MAX_OPTIONS} (MAX_OPTIONS)",
            options.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, option) in options.iter().enumerate() {
        short_string(&format!("{field}[{i}]"), option)?;
        if !seen.insert(option.as_str()) {
            return refuse(format!(
                "{field}[{i}]: {option:?} appears more than once; options must be distinct"
            ));
        }
    }
    Ok(())
}

/// The electorate's rule; answers its size (MAX_ELECTORATE for a capability, known at run time).
fn electorate(field: &str, decision: &DecisionTemplate) -> Result<usize> {
    let electorate = decision.electorate.clone().unwrap_or_default();
    match (
        electorate.agents.is_empty(),
        electorate.capability.is_empty(),
    ) {
        (true, true) => refuse(format!("{field}: name the agents or a capability")),
        (false, false) => refuse(format!(
            "{field}: name the agents or a capability, not both"
        )),
        (true, false) => {
            short_string(&format!("{field}.capability"), &electorate.capability)?;
            Ok(MAX_ELECTORATE)
        }
        (false, true) => {
            if electorate.agents.len() > MAX_ELECTORATE {
                return refuse(format!(
                    "{field}.agents: {} agents exceeds the limit of {MAX_ELECTORATE} \
                     (MAX_ELECTORATE)",
                    electorate.agents.len()
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, agent) in electorate.agents.iter().enumerate() {
                name(&format!("{field}.agents[{i}]"), agent)?;
                if !seen.insert(agent.as_str()) {
                    return refuse(format!(
                        "{field}.agents[{i}]: {agent:?} appears more than once"
                    ));
                }
            }
            Ok(electorate.agents.len())
        }
    }
}

/// A workflow's input: JSON text (empty means null) of at most WORKFLOW_BYTES_MAX bytes, the
/// budget of the whole instance.
pub fn input_json(field: &str, value: &str) -> Result {
    if value.len() > WORKFLOW_BYTES_MAX {
        return refuse(format!(
            "{field}: {} bytes exceeds the limit of {WORKFLOW_BYTES_MAX} (WORKFLOW_BYTES_MAX)",
            value.len()
        ));
    }
    if value.is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(_) => Ok(()),
        Err(error) => refuse(format!("{field}: not JSON: {error}")),
    }
}

#[cfg(test)]
mod tests;
