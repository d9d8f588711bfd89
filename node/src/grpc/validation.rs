//! From the wire to the coordination state: every request checked against the limits of the wire
//! contract (`conclave_proto::limits`), with the defaults filled in ("0 means ..."), so the state
//! machine only ever sees concrete, valid values. An error names the field and the limit. The
//! rules on single fields are `conclave_proto::validate`'s, which the client checks too; here
//! they are answered as INVALID_ARGUMENT.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use conclave_proto::v1 as pb;
use conclave_proto::{validate, TRACEPARENT_LABEL, TRACEPARENT_METADATA};
use tonic::Status;

use super::convert::{decision_status_from, task_state_from};
use super::gateway::invalid;
use crate::limits::*;
use crate::state_machine::coordination::{
    AgentSpec, Backoff, DeadLetterSelector, DecisionGate, DecisionSpec, DecisionStatus, Electorate,
    Rule, TaskId, TaskSpec, TaskState,
};

/// The longest breaker cool-down an agent may ask for (agents.proto gives no bound; a day is
/// beyond any sensible quarantine and keeps deadline arithmetic far from overflow).
pub const BREAKER_COOLDOWN_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// The most task ids one redrive or purge may name (a list page's worth).
pub const MAX_SELECTED_IDS: usize = MAX_TASK_LIST_LIMIT as usize;

/// A broken wire rule as the node answers it: INVALID_ARGUMENT with the rule's message.
pub fn rule<T>(result: validate::Result<T>) -> Result<T, Status> {
    result.map_err(invalid)
}

/// A queue or agent name: 1 ..= MAX_NAME_BYTES bytes of `[A-Za-z0-9._:/-]`.
pub fn name(field: &str, value: &str) -> Result<(), Status> {
    rule(validate::name(field, value))
}

/// An optional name: empty, or a valid name.
pub fn optional_name(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Ok(())
    } else {
        name(field, value)
    }
}

pub fn max_bytes(field: &str, value: &[u8], limit: usize, limit_name: &str) -> Result<(), Status> {
    rule(validate::max_bytes(field, value, limit, limit_name))
}

fn short_string(field: &str, value: &str) -> Result<(), Status> {
    rule(validate::short_string(field, value))
}

pub fn non_zero(field: &str, value: u64) -> Result<(), Status> {
    rule(validate::non_zero(field, value))
}

/// A fencing token as handed out with an assignment: never 0.
/// A fenced write's fence (kv.proto Fence): None when unset (empty name).
pub fn fence(fence: Option<&pb::Fence>) -> Result<Option<crate::state_machine::Fence>, Status> {
    use crate::state_machine::LockKind;
    let Some(fence) = fence.filter(|f| !f.name.is_empty()) else {
        return Ok(None);
    };
    name("fence.name", &fence.name)?;
    if fence.token == 0 {
        return Err(invalid(
            "fence.token: must be the non-zero token of the grant",
        ));
    }
    let kind = match pb::FenceKind::try_from(fence.kind) {
        Ok(pb::FenceKind::Lock) => LockKind::Lock,
        Ok(pb::FenceKind::Semaphore) => LockKind::Semaphore,
        Ok(pb::FenceKind::Election) => LockKind::Election,
        Err(_) => return Err(invalid(format!("fence.kind: unknown value {}", fence.kind))),
    };
    Ok(Some(crate::state_machine::Fence {
        kind,
        name: fence.name.clone(),
        token: fence.token,
    }))
}

pub fn fencing_token(value: u64) -> Result<u64, Status> {
    if value == 0 {
        return Err(invalid(
            "fencing_token: must be the non-zero token of the assignment",
        ));
    }
    Ok(value)
}

pub fn capabilities(field: &str, values: &[String]) -> Result<BTreeSet<String>, Status> {
    rule(validate::capabilities(field, values))?;
    Ok(values.iter().cloned().collect())
}

/// The W3C `traceparent` in a request's metadata (tasks.proto, Tracing), checked; None without
/// one.
pub fn traceparent_metadata(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<String>, Status> {
    let Some(value) = metadata.get(TRACEPARENT_METADATA) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| invalid(format!("{TRACEPARENT_METADATA}: not printable ASCII")))?;
    rule(validate::traceparent(TRACEPARENT_METADATA, value))?;
    Ok(Some(value.to_string()))
}

/// Gives a task spec the traceparent of its request, as the reserved label; the request body then
/// carries it when it is forwarded to the leader.
pub fn set_traceparent(spec: &mut pb::TaskSpec, traceparent: &str) {
    spec.labels
        .insert(TRACEPARENT_LABEL.to_string(), traceparent.to_string());
}

/// Labels or metadata: at most MAX_LABELS entries, keys 1 ..= 128 bytes, values <= 1024 bytes.
pub fn labels(
    field: &str,
    values: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    rule(validate::labels(field, values))?;
    Ok(values.clone().into_iter().collect())
}

/// A task's labels (or a workflow task step's): [`labels`], and the reserved
/// `conclave.traceparent`, when set, a W3C traceparent.
pub fn task_labels(
    field: &str,
    values: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    let labels = labels(field, values)?;
    if let Some(traceparent) = labels.get(TRACEPARENT_LABEL) {
        rule(validate::traceparent(
            &format!("{field}[{TRACEPARENT_LABEL:?}]"),
            traceparent,
        ))?;
    }
    Ok(labels)
}

/// `value` with 0 meaning `default`, checked to lie in `min ..= max`.
fn defaulted_u64(field: &str, value: u64, default: u64, min: u64, max: u64) -> Result<u64, Status> {
    rule(validate::defaulted(field, value, default, min, max))
}

fn defaulted_u32(field: &str, value: u32, default: u32, min: u32, max: u32) -> Result<u32, Status> {
    defaulted_u64(field, value.into(), default.into(), min.into(), max.into()).map(|v| v as u32)
}

/// The specs of a SubmitBatch or a Delegate: 1 ..= MAX_SUBMIT_BATCH, each named `tasks[i]`.
pub fn task_specs(specs: &[pb::TaskSpec]) -> Result<Vec<TaskSpec>, Status> {
    if specs.is_empty() {
        return Err(invalid("tasks: give at least one task"));
    }
    if specs.len() > MAX_SUBMIT_BATCH {
        return Err(invalid(format!(
            "tasks: {} tasks exceeds the limit of {MAX_SUBMIT_BATCH} (MAX_SUBMIT_BATCH)",
            specs.len()
        )));
    }
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| task_spec(&format!("tasks[{i}]"), spec))
        .collect()
}

/// A Delegate's escalation capability: "" (the manager) or a capability.
pub fn escalate_to(value: &str) -> Result<String, Status> {
    if !value.is_empty() {
        capabilities("escalate_to", &[value.to_string()])?;
    }
    Ok(value.to_string())
}

/// A task spec from a Submit (`field` is `task` or `tasks[i]`).
pub fn task_spec(field: &str, spec: &pb::TaskSpec) -> Result<TaskSpec, Status> {
    name(&format!("{field}.queue"), &spec.queue)?;
    max_bytes(
        &format!("{field}.payload"),
        &spec.payload,
        MAX_PAYLOAD_BYTES,
        "MAX_PAYLOAD_BYTES",
    )?;
    max_bytes(
        &format!("{field}.content_type"),
        spec.content_type.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    let capabilities = capabilities(&format!("{field}.capabilities"), &spec.capabilities)?;
    rule(validate::priority(
        &format!("{field}.priority"),
        spec.priority,
    ))?;
    let max_attempts = defaulted_u32(
        &format!("{field}.max_attempts"),
        spec.max_attempts,
        DEFAULT_ATTEMPTS,
        1,
        MAX_ATTEMPTS,
    )?;
    let lease_ms = defaulted_u64(
        &format!("{field}.lease_ms"),
        spec.lease_ms,
        DEFAULT_LEASE_MS,
        MIN_LEASE_MS,
        MAX_LEASE_MS,
    )?;
    let backoff = backoff(&format!("{field}.backoff"), spec.backoff.as_ref())?;
    rule(validate::id_string(
        &format!("{field}.idempotency_key"),
        &spec.idempotency_key,
    ))?;
    rule(validate::id_string(
        &format!("{field}.correlation_id"),
        &spec.correlation_id,
    ))?;
    let labels = task_labels(&format!("{field}.labels"), &spec.labels)?;
    let requires = match &spec.requires {
        None => None,
        Some(gate) => {
            non_zero(&format!("{field}.requires.decision_id"), gate.decision_id)?;
            short_string(&format!("{field}.requires.option"), &gate.option)?;
            Some(DecisionGate {
                decision_id: gate.decision_id,
                option: gate.option.clone(),
            })
        }
    };
    Ok(TaskSpec {
        queue: spec.queue.clone(),
        payload: spec.payload.clone(),
        content_type: spec.content_type.clone(),
        capabilities,
        priority: spec.priority,
        max_attempts,
        backoff,
        lease_ms,
        deadline_ms: spec.deadline_unix_ms,
        not_before_ms: spec.not_before_unix_ms,
        idempotency_key: spec.idempotency_key.clone(),
        correlation_id: spec.correlation_id.clone(),
        parent_id: spec.parent_id,
        labels,
        requires,
    })
}

pub fn backoff(field: &str, backoff: Option<&pb::Backoff>) -> Result<Backoff, Status> {
    let given = backoff.copied().unwrap_or_default();
    let initial_ms = if given.initial_ms == 0 {
        DEFAULT_BACKOFF_INITIAL_MS
    } else {
        given.initial_ms
    };
    let maximum_ms = if given.maximum_ms == 0 {
        DEFAULT_BACKOFF_MAXIMUM_MS.max(initial_ms)
    } else {
        given.maximum_ms
    };
    for (name, value) in [("initial_ms", initial_ms), ("maximum_ms", maximum_ms)] {
        if value > MAX_BACKOFF_MS {
            return Err(invalid(format!(
                "{field}.{name}: {value} exceeds the limit of {MAX_BACKOFF_MS} (MAX_BACKOFF_MS)"
            )));
        }
    }
    if maximum_ms < initial_ms {
        return Err(invalid(format!(
            "{field}.maximum_ms: {maximum_ms} is below initial_ms {initial_ms}"
        )));
    }
    let multiplier = if given.multiplier == 0.0 {
        DEFAULT_BACKOFF_MULTIPLIER
    } else {
        given.multiplier
    };
    // `contains` is false for NaN, so NaN is refused too.
    if !(1.0..=MAX_BACKOFF_MULTIPLIER).contains(&multiplier) {
        return Err(invalid(format!(
            "{field}.multiplier: {multiplier} is outside the allowed range 1.0 ..= {MAX_BACKOFF_MULTIPLIER:.1} (MAX_BACKOFF_MULTIPLIER)"
        )));
    }
    if !(0.0..=1.0).contains(&given.jitter) {
        return Err(invalid(format!(
            "{field}.jitter: {} is outside the allowed range 0.0 ..= 1.0",
            given.jitter
        )));
    }
    Ok(Backoff {
        initial_ms,
        maximum_ms,
        multiplier_permille: permille(multiplier),
        jitter_permille: permille(given.jitter),
    })
}

/// A double already checked to lie in 0.0 ..= MAX_BACKOFF_MULTIPLIER, in whole thousandths
/// (rounded to the nearest, halves away from zero): the state machine holds no floating point.
fn permille(value: f64) -> u32 {
    (value * 1000.0).round() as u32
}

pub fn agent_spec(req: &pb::RegisterRequest) -> Result<AgentSpec, Status> {
    name("name", &req.name)?;
    let capabilities = capabilities("capabilities", &req.capabilities)?;
    let agent_labels = labels("labels", &req.labels)?;
    let max_concurrent = defaulted_u32("max_concurrent", req.max_concurrent, 1, 1, MAX_CONCURRENT)?;
    max_bytes(
        "version",
        req.version.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    let metadata = labels("metadata", &req.metadata)?;
    let ttl_ms = defaulted_u64("ttl_ms", req.ttl_ms, DEFAULT_TTL_MS, MIN_TTL_MS, MAX_TTL_MS)?;
    let breaker_failures = defaulted_u32(
        "breaker_failures",
        req.breaker_failures,
        DEFAULT_BREAKER_FAILURES,
        1,
        u32::MAX,
    )?;
    let breaker_cooldown_ms = defaulted_u64(
        "breaker_cooldown_ms",
        req.breaker_cooldown_ms,
        DEFAULT_BREAKER_COOLDOWN_MS,
        1,
        BREAKER_COOLDOWN_MS_MAX,
    )?;
    Ok(AgentSpec {
        name: req.name.clone(),
        capabilities,
        labels: agent_labels,
        max_concurrent,
        version: req.version.clone(),
        metadata,
        ttl_ms,
        replace: req.replace,
        breaker_failures,
        breaker_cooldown_ms,
    })
}

/// A decision spec; `now_ms` is the proposing node's clock, for the default and the bound of the
/// deadline.
pub fn decision_spec(spec: Option<&pb::DecisionSpec>, now_ms: u64) -> Result<DecisionSpec, Status> {
    let spec = spec.ok_or_else(|| invalid("decision: required"))?;
    message("decision.question", &spec.question)?;
    if spec.options.len() < 2 || spec.options.len() > MAX_OPTIONS {
        return Err(invalid(format!(
            "decision.options: {} options; give 2 ..= {MAX_OPTIONS} (MAX_OPTIONS)",
            spec.options.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for (i, option) in spec.options.iter().enumerate() {
        short_string(&format!("decision.options[{i}]"), option)?;
        if !seen.insert(option.as_str()) {
            return Err(invalid(format!(
                "decision.options[{i}]: {option:?} appears more than once; options must be distinct"
            )));
        }
    }
    let electorate = spec.electorate.clone().unwrap_or_default();
    match (
        electorate.agents.is_empty(),
        electorate.capability.is_empty(),
    ) {
        (true, true) => {
            return Err(invalid(
                "decision.electorate: name the agents or a capability",
            ))
        }
        (false, false) => {
            return Err(invalid(
                "decision.electorate: name the agents or a capability, not both",
            ))
        }
        (false, true) => {
            if electorate.agents.len() > MAX_ELECTORATE {
                return Err(invalid(format!(
                    "decision.electorate.agents: {} agents exceeds the limit of {MAX_ELECTORATE} (MAX_ELECTORATE)",
                    electorate.agents.len()
                )));
            }
            let mut seen = BTreeSet::new();
            for (i, agent) in electorate.agents.iter().enumerate() {
                name(&format!("decision.electorate.agents[{i}]"), agent)?;
                if !seen.insert(agent.as_str()) {
                    return Err(invalid(format!(
                        "decision.electorate.agents[{i}]: {agent:?} appears more than once"
                    )));
                }
            }
        }
        (true, false) => short_string("decision.electorate.capability", &electorate.capability)?,
    }
    let rule = match pb::DecisionRule::try_from(spec.rule) {
        Ok(pb::DecisionRule::Majority) => Rule::Majority,
        Ok(pb::DecisionRule::Unanimous) => Rule::Unanimous,
        Ok(pb::DecisionRule::Weighted) => Rule::Weighted,
        Ok(pb::DecisionRule::AtLeast) => {
            // With a capability the electorate is known only at apply; the state machine checks.
            let size = if electorate.agents.is_empty() {
                MAX_ELECTORATE
            } else {
                electorate.agents.len()
            };
            if spec.k == 0 || spec.k as usize > size {
                return Err(invalid(format!(
                    "decision.k: {} is outside the allowed range 1 ..= {size} (the electorate's size)",
                    spec.k
                )));
            }
            Rule::AtLeast(spec.k)
        }
        Err(_) => {
            return Err(invalid(format!(
                "decision.rule: unknown value {}",
                spec.rule
            )))
        }
    };
    if spec.weights.len() > MAX_ELECTORATE {
        return Err(invalid(format!(
            "decision.weights: {} entries exceeds the limit of {MAX_ELECTORATE} (MAX_ELECTORATE)",
            spec.weights.len()
        )));
    }
    let weights: BTreeMap<String, u64> = spec.weights.clone().into_iter().collect();
    for (voter, weight) in &weights {
        name(&format!("decision.weights key {voter:?}"), voter)?;
        if *weight == 0 || *weight > MAX_WEIGHT {
            return Err(invalid(format!(
                "decision.weights[{voter:?}]: {weight} is outside the allowed range 1 ..= {MAX_WEIGHT} (MAX_WEIGHT)"
            )));
        }
    }
    let veto_option = if spec.veto_option.is_empty() {
        None
    } else if spec.options.contains(&spec.veto_option) {
        Some(spec.veto_option.clone())
    } else {
        return Err(invalid(format!(
            "decision.veto_option: {:?} is not one of the options",
            spec.veto_option
        )));
    };
    let deadline_ms = if spec.deadline_unix_ms == 0 {
        now_ms + DEFAULT_DECISION_DEADLINE_MS
    } else {
        spec.deadline_unix_ms
    };
    if deadline_ms <= now_ms {
        return Err(invalid(format!(
            "decision.deadline_unix_ms: {deadline_ms} is not in the future (now {now_ms})"
        )));
    }
    if deadline_ms - now_ms > MAX_DECISION_DEADLINE_MS {
        return Err(invalid(format!(
            "decision.deadline_unix_ms: {deadline_ms} is more than {MAX_DECISION_DEADLINE_MS} ms after now (MAX_DECISION_DEADLINE_MS)"
        )));
    }
    let decision_labels = labels("decision.labels", &spec.labels)?;
    Ok(DecisionSpec {
        question: spec.question.clone(),
        options: spec.options.clone(),
        electorate: Electorate {
            agents: electorate.agents,
            capability: electorate.capability,
        },
        rule,
        weights,
        veto_option,
        deadline_ms,
        labels: decision_labels,
    })
}

/// Redrive and purge select ids or a queue: exactly one of them.
pub fn dead_letter_selector(ids: &[u64], queue: &str) -> Result<DeadLetterSelector, Status> {
    match (ids.is_empty(), queue.is_empty()) {
        (true, true) => Err(invalid("task_ids, queue: give task ids or a queue")),
        (false, false) => Err(invalid(
            "task_ids, queue: give task ids or a queue, not both",
        )),
        (true, false) => {
            name("queue", queue)?;
            Ok(DeadLetterSelector::Queue(queue.to_string()))
        }
        (false, true) => {
            if ids.len() > MAX_SELECTED_IDS {
                return Err(invalid(format!(
                    "task_ids: {} ids exceeds the limit of {MAX_SELECTED_IDS} (MAX_TASK_LIST_LIMIT)",
                    ids.len()
                )));
            }
            if let Some(i) = ids.iter().position(|id| *id == 0) {
                return Err(invalid(format!("task_ids[{i}]: must be non-zero")));
            }
            let distinct: BTreeSet<TaskId> = ids.iter().copied().collect();
            Ok(DeadLetterSelector::Ids(distinct.into_iter().collect()))
        }
    }
}

/// A page size: 0 means DEFAULT_TASK_LIST_LIMIT, at most MAX_TASK_LIST_LIMIT.
pub fn page_limit(limit: u32) -> Result<usize, Status> {
    if limit > MAX_TASK_LIST_LIMIT {
        return Err(invalid(format!(
            "limit: {limit} exceeds the limit of {MAX_TASK_LIST_LIMIT} (MAX_TASK_LIST_LIMIT)"
        )));
    }
    Ok(if limit == 0 {
        DEFAULT_TASK_LIST_LIMIT
    } else {
        limit
    } as usize)
}

pub fn task_states(values: &[i32]) -> Result<Vec<TaskState>, Status> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            task_state_from(*value)
                .ok_or_else(|| invalid(format!("states[{i}]: {value} is not a task state")))
        })
        .collect()
}

pub fn decision_statuses(values: &[i32]) -> Result<Vec<DecisionStatus>, Status> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            decision_status_from(*value)
                .ok_or_else(|| invalid(format!("statuses[{i}]: {value} is not a decision status")))
        })
        .collect()
}

/// A free-form message (error, cancel reason, rationale) of at most MAX_MESSAGE_BYTES.
pub fn message(field: &str, value: &str) -> Result<(), Status> {
    rule(validate::message(field, value))
}

/// A progress message or checkpoint of at most MAX_LABEL_VALUE_BYTES.
pub fn progress_text(field: &str, value: &str) -> Result<(), Status> {
    rule(validate::progress_text(field, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(result: Result<impl std::fmt::Debug, Status>) -> String {
        let status = result.expect_err("expected INVALID_ARGUMENT");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_string()
    }

    fn spec(queue: &str) -> pb::TaskSpec {
        pb::TaskSpec {
            queue: queue.into(),
            ..Default::default()
        }
    }

    #[test]
    fn task_defaults_are_filled_in() {
        let spec = task_spec("task", &spec("emails")).expect("valid");
        assert_eq!(spec.max_attempts, DEFAULT_ATTEMPTS);
        assert_eq!(spec.lease_ms, DEFAULT_LEASE_MS);
        assert_eq!(spec.backoff.initial_ms, DEFAULT_BACKOFF_INITIAL_MS);
        assert_eq!(spec.backoff.maximum_ms, DEFAULT_BACKOFF_MAXIMUM_MS);
        assert_eq!(spec.backoff.multiplier_permille, 2_000);
        assert_eq!(DEFAULT_BACKOFF_MULTIPLIER, 2.0);
        assert_eq!(spec.backoff.jitter_permille, 0);
    }

    #[test]
    fn task_limits_name_the_field_and_the_limit() {
        let mut big = spec("q");
        big.payload = vec![0; 2_000_000];
        assert_eq!(
            message_of(task_spec("tasks[3]", &big)),
            "tasks[3].payload: 2000000 bytes exceeds the limit of 1048576 (MAX_PAYLOAD_BYTES)"
        );
        let mut capability = spec("q");
        capability.capabilities = vec!["gpu".into(), String::new()];
        assert_eq!(
            message_of(task_spec("task", &capability)),
            "task.capabilities[1]: must not be empty"
        );
        let mut priority = spec("q");
        priority.priority = 1001;
        assert!(message_of(task_spec("task", &priority)).contains("MAX_PRIORITY"));
        assert!(message_of(task_spec("task", &spec("bad queue"))).starts_with("task.queue:"));
        assert!(message_of(task_spec("task", &spec(""))).starts_with("task.queue:"));
        let mut backoff = spec("q");
        backoff.backoff = Some(pb::Backoff {
            multiplier: f64::NAN,
            ..Default::default()
        });
        assert!(message_of(task_spec("task", &backoff)).starts_with("task.backoff.multiplier"));
        let mut lease = spec("q");
        lease.lease_ms = 10;
        assert!(message_of(task_spec("task", &lease)).starts_with("task.lease_ms"));
    }

    #[test]
    fn decision_options_must_be_distinct_and_the_electorate_named() {
        let mut decision = pb::DecisionSpec {
            options: vec!["yes".into(), "yes".into()],
            electorate: Some(pb::Electorate {
                agents: vec!["a".into()],
                capability: String::new(),
            }),
            ..Default::default()
        };
        assert!(message_of(decision_spec(Some(&decision), 1_000)).contains("distinct"));
        decision.options = vec!["yes".into(), "no".into()];
        let valid = decision_spec(Some(&decision), 1_000).expect("valid");
        assert_eq!(valid.deadline_ms, 1_000 + DEFAULT_DECISION_DEADLINE_MS);
        decision.electorate = None;
        assert!(
            message_of(decision_spec(Some(&decision), 1_000)).starts_with("decision.electorate")
        );
    }

    #[test]
    fn backoff_doubles_become_whole_thousandths() {
        let of = |multiplier: f64, jitter: f64| {
            let given = pb::Backoff {
                multiplier,
                jitter,
                ..Default::default()
            };
            let backoff = super::backoff("b", Some(&given)).expect("valid");
            (backoff.multiplier_permille, backoff.jitter_permille)
        };
        assert_eq!(of(0.0, 0.0), (2_000, 0));
        assert_eq!(of(1.0, 1.0), (1_000, 1_000));
        assert_eq!(of(1.1, 0.1), (1_100, 100));
        assert_eq!(of(10.0, 0.5), (10_000, 500));
        assert_eq!(of(1.0004, 0.0006), (1_000, 1));
        assert_eq!(of(1.0006, 0.1234), (1_001, 123));
        assert_eq!(of(9.9996, 0.9996), (10_000, 1_000));
    }

    /// The retry delay exactly as apply computed it in f64 before the state held integers only:
    /// the delay and the f64 value it truncated.
    fn f64_delay_ms(
        initial_ms: u64,
        maximum_ms: u64,
        multiplier: f64,
        jitter: f64,
        task_id: u64,
        attempt: u32,
    ) -> (u64, f64) {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        let raw = initial_ms as f64 * multiplier.powi(exponent);
        let capped = if raw.is_finite() {
            raw.min(maximum_ms as f64)
        } else {
            maximum_ms as f64
        };
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let fraction = crate::state_machine::coordination::tasks::jitter_fraction(task_id, attempt)
            as f64
            / (1u64 << 53) as f64;
        let reduced = capped * (1.0 - jitter * fraction);
        (reduced.max(0.0) as u64, reduced)
    }

    /// Every multiplier the wire allows once taken to thousandths (1.000 ..= 10.000), each with
    /// no jitter and with one of the 1001 jitters, for a spread of initial and maximum delays and
    /// attempts: the integer delay equals the old f64 one, except where the exact delay is a whole
    /// millisecond that f64 rounding missed from below (the f64 value lies within 1e-9 under
    /// it): there the integer delay is that whole millisecond, 1 more than the f64 one.
    #[test]
    fn integer_backoff_matches_the_old_f64_backoff() {
        let delays = [
            (1, 1),
            (1, 3_600_000),
            (7, 60_000),
            (100, 60_000),
            (999, 3_600_000),
            (1_000, 60_000),
            (5_000, 3_600_000),
            (60_000, 3_600_000),
        ];
        let (mut compared, mut off_by_rounding) = (0u64, 0u64);
        for multiplier in 1_000..=10_000u32 {
            let wire = multiplier as f64 / 1000.0;
            for jitter in [0, (multiplier * 7) % 1001] {
                let wire_jitter = jitter as f64 / 1000.0;
                let given = pb::Backoff {
                    initial_ms: 1_000,
                    maximum_ms: 1_000,
                    multiplier: wire,
                    jitter: wire_jitter,
                };
                let converted = super::backoff("b", Some(&given)).expect("valid");
                assert_eq!(
                    (converted.multiplier_permille, converted.jitter_permille),
                    (multiplier, jitter)
                );
                for (initial_ms, maximum_ms) in delays {
                    let backoff = Backoff {
                        initial_ms,
                        maximum_ms,
                        ..converted.clone()
                    };
                    for attempt in 1..=24 {
                        let task_id = u64::from(multiplier * 31 + attempt);
                        let new = backoff.delay_ms(task_id, attempt);
                        let (old, exact_f64) = f64_delay_ms(
                            initial_ms,
                            maximum_ms,
                            wire,
                            wire_jitter,
                            task_id,
                            attempt,
                        );
                        compared += 1;
                        if new == old {
                            continue;
                        }
                        assert!(
                            jitter == 0
                                && new == old + 1
                                && (new as f64 - exact_f64) <= 1e-9 * exact_f64.max(1.0),
                            "{backoff:?} attempt {attempt} task {task_id}: integer {new} ms, \
                             f64 {old} ms ({exact_f64})"
                        );
                        off_by_rounding += 1;
                    }
                }
            }
        }
        assert!(compared > 3_000_000, "{compared}");
        // 1408 of 3456384 when written: whole milliseconds f64 missed, all without jitter.
        assert!(
            off_by_rounding > 0 && off_by_rounding * 1_000 < compared,
            "{off_by_rounding} of {compared}"
        );
    }

    #[test]
    fn selectors_take_ids_or_a_queue() {
        assert!(dead_letter_selector(&[], "").is_err());
        assert!(dead_letter_selector(&[1], "q").is_err());
        assert!(dead_letter_selector(&[0], "").is_err());
        assert_eq!(
            dead_letter_selector(&[3, 1, 3], "").expect("valid"),
            DeadLetterSelector::Ids(vec![1, 3])
        );
    }
}
