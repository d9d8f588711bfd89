//! How tasks, agents and decisions print: JSON documents for programs, names and short cells for
//! the text tables. Enum values print as the proto name without its prefix, lowercase in JSON
//! (`retry_wait`) and uppercase in text (`RETRY_WAIT`).

use std::collections::HashMap;

use conclave_client::{
    Agent, AgentStatus, Attempt, AttemptOutcome, BreakerState, DeadLetterReason, Decision,
    DecisionRule, DecisionStatus, Delegation, EscalationKind, Lease, Task, TaskEventKind, TaskSpec,
    TaskState,
};
use serde_json::{json, Map, Value};

use super::output::{insert_bytes, text};

/// The proto name of an enum value without `prefix`, lowercase: `TASK_STATE_RETRY_WAIT` ->
/// `retry_wait`.
pub fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn state_name(state: TaskState) -> String {
    enum_name(state.as_str_name(), "TASK_STATE_")
}

pub fn state_text(state: TaskState) -> String {
    state_name(state).to_ascii_uppercase()
}

pub fn outcome_name(outcome: AttemptOutcome) -> String {
    enum_name(outcome.as_str_name(), "ATTEMPT_OUTCOME_")
}

pub fn reason_name(reason: DeadLetterReason) -> String {
    enum_name(reason.as_str_name(), "DEAD_LETTER_REASON_")
}

pub fn event_kind_name(kind: TaskEventKind) -> String {
    enum_name(kind.as_str_name(), "TASK_EVENT_KIND_")
}

pub fn agent_status_name(status: AgentStatus) -> String {
    enum_name(status.as_str_name(), "AGENT_STATUS_")
}

pub fn breaker_name(breaker: BreakerState) -> String {
    enum_name(breaker.as_str_name(), "BREAKER_STATE_")
}

pub fn decision_status_name(status: DecisionStatus) -> String {
    enum_name(status.as_str_name(), "DECISION_STATUS_")
}

pub fn rule_name(rule: DecisionRule) -> String {
    enum_name(rule.as_str_name(), "DECISION_RULE_")
}

/// Parses a task state as the CLI prints it, in either case, `-` or `_` between words.
pub fn parse_state(text: &str) -> Result<TaskState, String> {
    let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
    TaskState::from_str_name(&format!("TASK_STATE_{wanted}"))
        .filter(|state| *state != TaskState::Unspecified)
        .ok_or_else(|| {
            format!(
                "{text:?} is not a task state (pending, delayed, blocked, assigned, retry_wait, \
                 succeeded, dead_lettered, canceled, expired)"
            )
        })
}

/// Parses a decision status: open, decided, rejected, no_quorum.
pub fn parse_decision_status(text: &str) -> Result<DecisionStatus, String> {
    let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
    DecisionStatus::from_str_name(&format!("DECISION_STATUS_{wanted}"))
        .filter(|status| *status != DecisionStatus::Unspecified)
        .ok_or_else(|| {
            format!("{text:?} is not a decision status (open, decided, rejected, no_quorum)")
        })
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: expected KEY=VALUE")),
    }
}

/// Labels as `k=v,k2=v2`, sorted by key; `-` when there are none.
pub fn labels_text(labels: &HashMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_string();
    }
    let mut pairs: Vec<_> = labels.iter().collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A list as `a,b,c`, or `-` when empty.
pub fn list_text(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    let single_line = text.replace(['\n', '\r', '\t'], " ");
    if single_line.chars().count() <= max {
        return single_line;
    }
    let mut clipped: String = single_line.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// Bytes for a one-line cell: text when printable, escaped otherwise, clipped to `max`.
pub fn bytes_cell(bytes: &[u8], max: usize) -> String {
    clip(&text(bytes), max)
}

fn sorted_object<V: Into<Value> + Clone>(map: &HashMap<String, V>) -> Value {
    let mut pairs: Vec<_> = map.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    Value::Object(
        pairs
            .into_iter()
            .map(|(key, value)| (key.clone(), value.clone().into()))
            .collect(),
    )
}

pub fn lease_json(lease: &Lease) -> Value {
    json!({
        "agent": lease.agent,
        "session_id": lease.session_id,
        "attempt": lease.attempt,
        "fencing_token": lease.fencing_token,
        "assigned_unix_ms": lease.assigned_unix_ms,
        "deadline_unix_ms": lease.deadline_unix_ms,
    })
}

pub fn attempt_json(attempt: &Attempt) -> Value {
    json!({
        "attempt": attempt.attempt,
        "agent": attempt.agent,
        "fencing_token": attempt.fencing_token,
        "assigned_unix_ms": attempt.assigned_unix_ms,
        "ended_unix_ms": attempt.ended_unix_ms,
        "outcome": outcome_name(attempt.outcome()),
        "error": attempt.error,
    })
}

pub fn spec_json(spec: &TaskSpec) -> Value {
    let mut object = Map::new();
    object.insert("queue".into(), spec.queue.clone().into());
    insert_bytes(&mut object, "payload", &spec.payload);
    object.insert("content_type".into(), spec.content_type.clone().into());
    object.insert("capabilities".into(), spec.capabilities.clone().into());
    object.insert("priority".into(), spec.priority.into());
    object.insert("max_attempts".into(), spec.max_attempts.into());
    object.insert(
        "backoff".into(),
        spec.backoff.map_or(Value::Null, |backoff| {
            json!({
                "initial_ms": backoff.initial_ms,
                "maximum_ms": backoff.maximum_ms,
                "multiplier": backoff.multiplier,
                "jitter": backoff.jitter,
            })
        }),
    );
    object.insert("lease_ms".into(), spec.lease_ms.into());
    object.insert("deadline_unix_ms".into(), spec.deadline_unix_ms.into());
    object.insert("not_before_unix_ms".into(), spec.not_before_unix_ms.into());
    object.insert(
        "idempotency_key".into(),
        spec.idempotency_key.clone().into(),
    );
    object.insert("correlation_id".into(), spec.correlation_id.clone().into());
    object.insert("parent_id".into(), spec.parent_id.into());
    object.insert("labels".into(), sorted_object(&spec.labels));
    object.insert(
        "requires".into(),
        spec.requires.as_ref().map_or(
            Value::Null,
            |gate| json!({ "decision_id": gate.decision_id, "option": gate.option }),
        ),
    );
    Value::Object(object)
}

/// A task as one JSON object; the spec's fields are inlined next to the task's own.
pub fn task_json(task: &Task) -> Value {
    let mut object = match task.spec.as_ref().map(spec_json) {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    };
    object.insert("id".into(), task.id.into());
    object.insert("state".into(), state_name(task.state()).into());
    object.insert("submitted_unix_ms".into(), task.submitted_unix_ms.into());
    object.insert("updated_unix_ms".into(), task.updated_unix_ms.into());
    object.insert("ready_at_unix_ms".into(), task.ready_at_unix_ms.into());
    object.insert("attempts".into(), task.attempts.into());
    object.insert(
        "lease".into(),
        task.lease.as_ref().map_or(Value::Null, lease_json),
    );
    object.insert(
        "history".into(),
        task.history.iter().map(attempt_json).collect(),
    );
    object.insert(
        "progress".into(),
        task.progress.as_ref().map_or(Value::Null, |progress| {
            json!({
                "percent": progress.percent,
                "message": progress.message,
                "checkpoint": progress.checkpoint,
                "updated_unix_ms": progress.updated_unix_ms,
            })
        }),
    );
    insert_bytes(&mut object, "result", &task.result);
    object.insert("last_error".into(), task.last_error.clone().into());
    object.insert(
        "dead_letter_reason".into(),
        match task.dead_letter_reason() {
            DeadLetterReason::Unspecified => Value::Null,
            reason => reason_name(reason).into(),
        },
    );
    object.insert("cancel_reason".into(), task.cancel_reason.clone().into());
    object.insert("last_fencing_token".into(), task.last_fencing_token.into());
    object.insert(
        "origin".into(),
        task.origin.as_ref().map_or(Value::Null, |origin| {
            json!({
                "workflow_id": origin.workflow_id,
                "step": origin.step,
                "step_name": origin.step_name,
                "branch": origin.branch,
            })
        }),
    );
    object.insert(
        "delegation".into(),
        task.delegation
            .as_ref()
            .map_or(Value::Null, delegation_json),
    );
    Value::Object(object)
}

fn delegation_json(delegation: &Delegation) -> Value {
    json!({
        "parent_task_id": delegation.parent_task_id,
        "fencing_token": delegation.fencing_token,
        "depth": delegation.depth,
        "escalate_to": delegation.escalate_to,
        "escalation": escalation_name(delegation.escalation()),
        "escalation_task_id": delegation.escalation_task_id,
    })
}

/// Where a delegated task's dead letter went, for people and JSON (null: not escalated).
pub fn escalation_name(kind: EscalationKind) -> Option<&'static str> {
    match kind {
        EscalationKind::Unspecified => None,
        EscalationKind::Manager => Some("manager"),
        EscalationKind::Task => Some("task"),
        EscalationKind::Orphaned => Some("orphaned"),
    }
}

pub fn agent_json(agent: &Agent) -> Value {
    json!({
        "name": agent.name,
        "status": agent_status_name(agent.status()),
        "session_id": agent.session_id,
        "capabilities": agent.capabilities,
        "labels": sorted_object(&agent.labels),
        "max_concurrent": agent.max_concurrent,
        "version": agent.version,
        "metadata": sorted_object(&agent.metadata),
        "ttl_ms": agent.ttl_ms,
        "session_expires_unix_ms": agent.session_expires_unix_ms,
        "registered_unix_ms": agent.registered_unix_ms,
        "last_heartbeat_unix_ms": agent.last_heartbeat_unix_ms,
        "reported_load": agent.reported_load,
        "running": agent.running,
        "drained": agent.drained,
        "breaker": breaker_name(agent.breaker()),
        "consecutive_failures": agent.consecutive_failures,
        "breaker_until_unix_ms": agent.breaker_until_unix_ms,
        "completed": agent.completed,
        "failed": agent.failed,
    })
}

pub fn decision_json(decision: &Decision) -> Value {
    let spec = decision.spec.clone().unwrap_or_default();
    let electorate = spec.electorate.clone().unwrap_or_default();
    json!({
        "id": decision.id,
        "question": spec.question,
        "options": spec.options,
        "electorate": { "agents": electorate.agents, "capability": electorate.capability },
        "rule": rule_name(spec.rule()),
        "k": spec.k,
        "weights": sorted_object(&spec.weights),
        "veto_option": spec.veto_option,
        "deadline_unix_ms": spec.deadline_unix_ms,
        "labels": sorted_object(&spec.labels),
        "voters": decision.voters,
        "status": decision_status_name(decision.status()),
        "outcome": decision.outcome,
        "votes": decision.votes.iter().map(|vote| json!({
            "voter": vote.voter,
            "choice": vote.choice,
            "rationale": vote.rationale,
            "cast_unix_ms": vote.cast_unix_ms,
        })).collect::<Vec<_>>(),
        "proposed_unix_ms": decision.proposed_unix_ms,
        "closed_unix_ms": decision.closed_unix_ms,
        "reason": decision.reason,
    })
}

/// Votes per option, in the decision's option order: `yes 2, no 1`.
pub fn tally_text(decision: &Decision) -> String {
    let options = decision
        .spec
        .as_ref()
        .map(|spec| spec.options.clone())
        .unwrap_or_default();
    options
        .iter()
        .map(|option| {
            let votes = decision
                .votes
                .iter()
                .filter(|vote| &vote.choice == option)
                .count();
            format!("{option} {votes}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_drop_the_prefix() {
        assert_eq!(state_name(TaskState::RetryWait), "retry_wait");
        assert_eq!(state_text(TaskState::DeadLettered), "DEAD_LETTERED");
        assert_eq!(breaker_name(BreakerState::HalfOpen), "half_open");
        assert_eq!(parse_state("dead-lettered"), Ok(TaskState::DeadLettered));
        assert_eq!(parse_state("PENDING"), Ok(TaskState::Pending));
        assert!(parse_state("unspecified").is_err());
        assert!(parse_state("done").is_err());
        assert_eq!(
            parse_decision_status("no-quorum"),
            Ok(DecisionStatus::NoQuorum)
        );
    }

    #[test]
    fn cells_stay_on_one_line() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("a\nb", 10), "a b");
        assert_eq!(clip("abcdefghijkl", 5), "abcd…");
        let mut labels = HashMap::new();
        assert_eq!(labels_text(&labels), "-");
        labels.insert("b".to_string(), "2".to_string());
        labels.insert("a".to_string(), "1".to_string());
        assert_eq!(labels_text(&labels), "a=1,b=2");
        assert_eq!(parse_key_value("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("k").is_err());
    }

    #[test]
    fn tasks_print_as_one_json_object() {
        let task = Task {
            id: 7,
            spec: Some(TaskSpec {
                queue: "q".into(),
                payload: vec![0xff],
                ..TaskSpec::default()
            }),
            state: TaskState::Succeeded.into(),
            result: b"ok".to_vec(),
            ..Task::default()
        };
        let value = task_json(&task);
        assert_eq!(value["id"], 7);
        assert_eq!(value["queue"], "q");
        assert_eq!(value["state"], "succeeded");
        assert_eq!(value["payload_base64"], "/w==");
        assert_eq!(value["result"], "ok");
        assert_eq!(value["dead_letter_reason"], Value::Null);
    }
}
