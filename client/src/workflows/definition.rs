//! Workflow definition files (YAML or JSON, one shape) into workflows.proto's
//! `WorkflowDefinition`, checked by the same rules the node applies
//! (`conclave_proto::validate::workflow`).
//!
//! The file is a person's: task fields sit on the step itself (`queue`, `capabilities`,
//! `params`, ...), durations are written `"500ms"`, `"30s"`, `"10m"`, `"2h"` (or `"1h30m"`), and
//! `params` is any JSON (a YAML mapping is JSON too). A field the format does not know is an
//! error (a typo is not silently ignored). Errors name the step and the field; a shape error in a
//! YAML file also names the line and column where the parser found it.

use std::collections::HashMap;
use std::path::Path;

use conclave_proto::v1::{
    fan_out, workflow_step, Backoff, DecisionRule, DecisionTemplate, Electorate, FanOut, Join,
    JoinPolicy, StepCondition, TaskTemplate, WorkflowDefinition, WorkflowStep,
};
use conclave_proto::validate;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::error::{Error, Result};

/// How a definition file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefinitionFormat {
    /// YAML 1.2 (which reads JSON too).
    Yaml,
    /// JSON, exactly.
    Json,
}

impl DefinitionFormat {
    /// JSON for a `.json` file, YAML otherwise (YAML 1.2 reads JSON too).
    pub fn of_path(path: &Path) -> DefinitionFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(extension) if extension.eq_ignore_ascii_case("json") => DefinitionFormat::Json,
            _ => DefinitionFormat::Yaml,
        }
    }
}

/// Reads, parses and validates a definition file. Errors are [`Error::InvalidInput`] naming the
/// file.
pub fn load_definition(path: &Path) -> Result<WorkflowDefinition> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::InvalidInput {
        message: format!("{}: {error}", path.display()),
    })?;
    parse_definition(&text, DefinitionFormat::of_path(path)).map_err(|error| match error {
        Error::InvalidInput { message } => Error::InvalidInput {
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    })
}

/// Parses and validates a definition written as `format`.
pub fn parse_definition(text: &str, format: DefinitionFormat) -> Result<WorkflowDefinition> {
    let file: FileDefinition = match format {
        DefinitionFormat::Yaml => serde_norway::from_str(text).map_err(invalid)?,
        DefinitionFormat::Json => serde_json::from_str(text).map_err(invalid)?,
    };
    let definition = file.into_proto()?;
    validate::workflow::definition(&definition).map_err(|rule| Error::InvalidInput {
        message: in_file_terms(&rule.0),
    })?;
    Ok(definition)
}

fn invalid(error: impl std::fmt::Display) -> Error {
    Error::InvalidInput {
        message: error.to_string(),
    }
}

/// The validator names the wire's fields; a file writes task fields on the step itself.
fn in_file_terms(message: &str) -> String {
    message
        .replace(").task.", ").")
        .replace("params_json", "params")
}

/// A definition file, field for field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDefinition {
    name: String,
    #[serde(default)]
    version: u32,
    #[serde(default)]
    deadline: Millis,
    steps: Vec<FileStep>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStep {
    name: String,
    #[serde(default)]
    after: Vec<String>,
    when: Option<FileWhen>,
    // The task template, on the step itself.
    queue: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    params: Option<serde_json::Value>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    max_attempts: u32,
    backoff: Option<FileBackoff>,
    #[serde(default)]
    lease: Millis,
    #[serde(default)]
    deadline: Millis,
    #[serde(default)]
    labels: HashMap<String, String>,
    fan_out: Option<FileFanOut>,
    decision: Option<FileDecision>,
    #[serde(default)]
    compensate: String,
    #[serde(default)]
    compensation: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWhen {
    step: String,
    outcome: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackoff {
    #[serde(default)]
    initial: Millis,
    #[serde(default)]
    maximum: Millis,
    #[serde(default)]
    multiplier: f64,
    #[serde(default)]
    jitter: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFanOut {
    over: Option<String>,
    count: Option<u32>,
    join: Option<FileJoin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJoin {
    #[serde(default)]
    policy: FilePolicy,
    #[serde(default)]
    k: u32,
    #[serde(default)]
    deadline: Millis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FilePolicy {
    #[default]
    All,
    Any,
    AtLeast,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDecision {
    question: String,
    options: Vec<String>,
    electorate: FileElectorate,
    #[serde(default)]
    rule: FileRule,
    #[serde(default)]
    k: u32,
    #[serde(default)]
    weights: HashMap<String, u64>,
    #[serde(default)]
    veto: String,
    #[serde(default)]
    deadline: Millis,
    #[serde(default)]
    labels: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileElectorate {
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    capability: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileRule {
    #[default]
    Majority,
    Unanimous,
    AtLeast,
    Weighted,
}

impl FileDefinition {
    fn into_proto(self) -> Result<WorkflowDefinition> {
        let steps = self
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| step.into_proto(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(WorkflowDefinition {
            name: self.name,
            version: self.version,
            deadline_ms: self.deadline.0,
            steps,
        })
    }
}

impl FileStep {
    fn into_proto(self, i: usize) -> Result<WorkflowStep> {
        let at = format!("steps[{i}] ({})", self.name);
        let task_fields = self.queue.is_some()
            || !self.capabilities.is_empty()
            || self.params.is_some()
            || self.backoff.is_some()
            || self.fan_out.is_some();
        let kind = match (self.decision, task_fields) {
            (Some(_), true) => {
                return Err(invalid(format!(
                    "{at}: a step is a task (queue, capabilities, params, backoff, fan_out) or a \
                     decision, not both"
                )))
            }
            (Some(decision), false) => Some(workflow_step::Kind::Decision(decision.into_proto())),
            (None, true) => Some(workflow_step::Kind::Task(TaskTemplate {
                queue: self.queue.unwrap_or_default(),
                capabilities: self.capabilities,
                params_json: self.params.map(|p| p.to_string()).unwrap_or_default(),
                priority: self.priority,
                max_attempts: self.max_attempts,
                backoff: self.backoff.map(FileBackoff::into_proto),
                lease_ms: self.lease.0,
                deadline_ms: self.deadline.0,
                labels: self.labels,
            })),
            (None, false) => None,
        };
        let fan_out = match self.fan_out {
            Some(fan_out) => Some(fan_out.into_proto(&at)?),
            None => None,
        };
        Ok(WorkflowStep {
            name: self.name,
            after: self.after,
            when: self.when.map(|w| StepCondition {
                step: w.step,
                outcome: w.outcome,
            }),
            kind,
            fan_out,
            compensate: self.compensate,
            compensation: self.compensation,
        })
    }
}

impl FileBackoff {
    fn into_proto(self) -> Backoff {
        Backoff {
            initial_ms: self.initial.0,
            maximum_ms: self.maximum.0,
            multiplier: self.multiplier,
            jitter: self.jitter,
        }
    }
}

impl FileFanOut {
    fn into_proto(self, at: &str) -> Result<FanOut> {
        let source = match (self.over, self.count) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "{at}.fan_out: give over (a step) or count, not both"
                )))
            }
            (Some(over), None) => Some(fan_out::Source::Over(over)),
            (None, Some(count)) => Some(fan_out::Source::Count(count)),
            (None, None) => None,
        };
        let join = self.join.map(|join| Join {
            policy: match join.policy {
                FilePolicy::All => JoinPolicy::All,
                FilePolicy::Any => JoinPolicy::Any,
                FilePolicy::AtLeast => JoinPolicy::AtLeast,
            } as i32,
            k: join.k,
            deadline_ms: join.deadline.0,
        });
        Ok(FanOut { source, join })
    }
}

impl FileDecision {
    fn into_proto(self) -> DecisionTemplate {
        let rule = match self.rule {
            FileRule::Majority => DecisionRule::Majority,
            FileRule::Unanimous => DecisionRule::Unanimous,
            FileRule::AtLeast => DecisionRule::AtLeast,
            FileRule::Weighted => DecisionRule::Weighted,
        };
        DecisionTemplate {
            question: self.question,
            options: self.options,
            electorate: Some(Electorate {
                agents: self.electorate.agents,
                capability: self.electorate.capability,
            }),
            rule: rule as i32,
            k: self.k,
            weights: self.weights,
            veto_option: self.veto,
            deadline_ms: self.deadline.0,
            labels: self.labels,
        }
    }
}

/// A duration written for people ("500ms", "30s", "10m", "2h", "1h30m", "1.5s"), in whole
/// milliseconds; absent is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Millis(u64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(MillisVisitor)
    }
}

struct MillisVisitor;

impl de::Visitor<'_> for MillisVisitor {
    type Value = Millis;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as \"500ms\", \"30s\", \"10m\" or \"2h\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Millis, E> {
        parse_millis(text).map(Millis).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Millis, E> {
        Err(E::custom(format!(
            "{n} has no unit; write \"{n}ms\" or \"{n}s\" (units: ms, s, m, h, d)"
        )))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Millis, E> {
        Err(E::custom(format!("{n} is not a duration")))
    }
}

/// Parses `<number><unit>` terms (units ms, s, m, h, d; a number may have a fraction) into whole
/// milliseconds, exactly: integer arithmetic, so "0.1s" is 100 ms and "0.0005s" is refused.
pub fn parse_millis(text: &str) -> std::result::Result<u64, String> {
    let usage = || format!("{text:?} is not a duration (examples: 500ms, 30s, 10m, 2h, 1h30m)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(usage());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has no unit (units: ms, s, m, h, d)"))?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(usage()),
        };
        let term = term_millis(number, unit_ms).ok_or_else(usage)?;
        total = total.checked_add(term).ok_or_else(usage)?;
        rest = next;
    }
    Ok(total)
}

/// `number` (digits, optionally a fraction) times `unit_ms`, when that is whole milliseconds.
fn term_millis(number: &str, unit_ms: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10u64.pow(fraction.len() as u32);
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let fraction_ms = fraction.checked_mul(unit_ms)?;
    if fraction_ms % scale != 0 {
        return None;
    }
    whole.checked_mul(unit_ms)?.checked_add(fraction_ms / scale)
}

/// One line per step, for `conclave workflow check`: its kind, what it follows, its join, its
/// condition and its compensation.
pub fn step_summaries(definition: &WorkflowDefinition) -> Vec<String> {
    let width = definition
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    definition
        .steps
        .iter()
        .map(|step| {
            let mut line = format!("{:<width$}  {}", step.name, step_kind(step));
            if !step.after.is_empty() {
                line.push_str(&format!("  after {}", step.after.join(", ")));
            }
            if let Some(fan_out) = &step.fan_out {
                line.push_str(&format!("  join {}", join_summary(fan_out)));
            }
            if let Some(when) = &step.when {
                line.push_str(&format!("  when {} = {}", when.step, when.outcome));
            }
            if !step.compensate.is_empty() {
                line.push_str(&format!("  compensate {}", step.compensate));
            }
            line
        })
        .collect()
}

fn step_kind(step: &WorkflowStep) -> String {
    match (&step.kind, &step.fan_out) {
        (Some(workflow_step::Kind::Decision(d)), _) => {
            format!("decision ({})", d.options.join("|"))
        }
        (Some(workflow_step::Kind::Task(t)), _) if step.compensation => {
            format!("compensation task on {}", t.queue)
        }
        (Some(workflow_step::Kind::Task(t)), Some(fan_out)) => match &fan_out.source {
            Some(fan_out::Source::Count(n)) => format!("fan-out of {n} tasks on {}", t.queue),
            Some(fan_out::Source::Over(over)) => {
                format!("fan-out of a task per item of {over} on {}", t.queue)
            }
            None => format!("fan-out on {}", t.queue),
        },
        (Some(workflow_step::Kind::Task(t)), None) => format!("task on {}", t.queue),
        (None, _) => "no kind".into(),
    }
}

fn join_summary(fan_out: &FanOut) -> String {
    let join = fan_out.join.unwrap_or_default();
    let mut text = match JoinPolicy::try_from(join.policy) {
        Ok(JoinPolicy::All) => "all".to_string(),
        Ok(JoinPolicy::Any) => "any".to_string(),
        Ok(JoinPolicy::AtLeast) => format!("at least {}", join.k),
        Err(_) => "?".to_string(),
    };
    if join.deadline_ms != 0 {
        text.push_str(&format!(
            ", partial after {}",
            human_millis(join.deadline_ms)
        ));
    }
    text
}

/// Milliseconds the way a file writes them: "2m", "1h30m", "1s500ms".
pub fn human_millis(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let mut rest = ms;
    let mut text = String::new();
    for (size, unit) in units {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests;
