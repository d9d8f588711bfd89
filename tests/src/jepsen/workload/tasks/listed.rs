//! A task as the workload records it in a final read ([`task_json`]) and the checker reads it
//! back ([`Listed::parse`]): its spec, state, reasons, cluster times and attempt log.

use conclave_proto::v1::{AttemptOutcome, DeadLetterReason, Task, TaskState};
use serde_json::{json, Value as Json};

use crate::jepsen::workload::agents::short_name;

/// The states a task ends in (DEAD_LETTERED and EXPIRED until redriven).
pub const TERMINAL: [&str; 4] = ["SUCCEEDED", "DEAD_LETTERED", "CANCELED", "EXPIRED"];
/// Attempts a task keeps in its history (tasks.proto: at most the last 100).
const HISTORY_MAX: usize = 100;

/// The fields of a task's spec that the workload chooses and the checker compares with what the
/// cluster lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    pub queue: String,
    pub priority: i64,
    /// Unix ms, cluster time; 0: none.
    pub not_before_ms: u64,
    /// Unix ms, cluster time; 0: none.
    pub deadline_ms: u64,
    pub max_attempts: u64,
    /// The decision gate: (decision id, option).
    pub gate: Option<(u64, String)>,
}

impl Spec {
    pub fn to_json(&self) -> Json {
        json!({
            "queue": self.queue,
            "priority": self.priority,
            "not_before": self.not_before_ms,
            "deadline": self.deadline_ms,
            "max_attempts": self.max_attempts,
            "gate": self.gate.as_ref().map(|(id, option)| json!([id, option])),
        })
    }

    pub fn parse(value: &Json) -> Option<Spec> {
        let gate = match &value["gate"] {
            Json::Null => None,
            gate => Some((gate[0].as_u64()?, gate[1].as_str()?.to_string())),
        };
        Some(Spec {
            queue: value["queue"].as_str()?.to_string(),
            priority: value["priority"].as_i64()?,
            not_before_ms: value["not_before"].as_u64()?,
            deadline_ms: value["deadline"].as_u64()?,
            max_attempts: value["max_attempts"].as_u64()?,
            gate,
        })
    }

    fn of(task: &Task) -> Spec {
        let spec = task.spec.clone().unwrap_or_default();
        Spec {
            queue: spec.queue,
            priority: i64::from(spec.priority),
            not_before_ms: spec.not_before_unix_ms,
            deadline_ms: spec.deadline_unix_ms,
            max_attempts: u64::from(spec.max_attempts),
            gate: spec
                .requires
                .map(|gate| (gate.decision_id, gate.option.clone())),
        }
    }
}

/// One attempt of a task, as its attempt log lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first counted attempt since submission or the last redrive.
    pub number: u64,
    pub token: u64,
    pub outcome: String,
    pub agent: String,
    /// Cluster time.
    pub assigned_ms: u64,
    /// Cluster time; 0 while running.
    pub ended_ms: u64,
}

/// One task as a final read lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub payload: String,
    pub spec: Spec,
    /// The queue whose listing held it.
    pub listed_in: String,
    pub state: String,
    /// Attempts counted since submission or the last redrive.
    pub attempts: u64,
    pub last_token: u64,
    pub submitted_ms: u64,
    /// When the task last changed state (for a terminal task: when it ended).
    pub updated_ms: u64,
    pub dead_letter_reason: String,
    pub cancel_reason: String,
    /// Oldest first.
    pub history: Vec<Attempt>,
    /// For SUCCEEDED: the result of the accepted completion.
    pub result: String,
}

/// A task of a final read as JSON (what [`Listed::parse`] reads back).
pub fn task_json(task: &Task, listed_in: &str) -> Json {
    let history: Vec<Json> = task
        .history
        .iter()
        .map(|attempt| {
            json!([
                attempt.attempt,
                attempt.fencing_token,
                outcome_name(attempt.outcome),
                attempt.agent,
                attempt.assigned_unix_ms,
                attempt.ended_unix_ms,
            ])
        })
        .collect();
    json!({
        "id": task.id,
        "payload": String::from_utf8_lossy(task.spec.as_ref().map_or(&[][..], |s| &s.payload[..])),
        "spec": Spec::of(task).to_json(),
        "listed_in": listed_in,
        "state": state_name(task.state),
        "attempts": task.attempts,
        "last_token": task.last_fencing_token,
        "submitted_ms": task.submitted_unix_ms,
        "updated_ms": task.updated_unix_ms,
        "dead_letter_reason": dead_letter_reason_name(task.dead_letter_reason),
        "cancel_reason": task.cancel_reason,
        "history": history,
        "result": String::from_utf8_lossy(&task.result),
    })
}

pub fn state_name(state: i32) -> String {
    TaskState::try_from(state).map_or_else(
        |_| format!("UNKNOWN({state})"),
        |state| short_name(state.as_str_name(), "TASK_STATE_"),
    )
}

fn outcome_name(outcome: i32) -> String {
    AttemptOutcome::try_from(outcome).map_or_else(
        |_| format!("UNKNOWN({outcome})"),
        |outcome| short_name(outcome.as_str_name(), "ATTEMPT_OUTCOME_"),
    )
}

fn dead_letter_reason_name(reason: i32) -> String {
    DeadLetterReason::try_from(reason).map_or_else(
        |_| format!("UNKNOWN({reason})"),
        |reason| short_name(reason.as_str_name(), "DEAD_LETTER_REASON_"),
    )
}

/// The result an agent completes a task with: who, with which token. The checker finds it again
/// in the task, as the result of its SUCCEEDED attempt.
pub fn completion_result(agent: &str, token: u64) -> String {
    format!("{agent} token {token}")
}

impl Listed {
    pub fn parse(value: &Json) -> Option<(u64, Listed)> {
        let history = value["history"]
            .as_array()?
            .iter()
            .map(|attempt| {
                Some(Attempt {
                    number: attempt[0].as_u64()?,
                    token: attempt[1].as_u64()?,
                    outcome: attempt[2].as_str()?.to_string(),
                    agent: attempt[3].as_str()?.to_string(),
                    assigned_ms: attempt[4].as_u64()?,
                    ended_ms: attempt[5].as_u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let text = |field: &str| value[field].as_str().unwrap_or_default().to_string();
        Some((
            value["id"].as_u64()?,
            Listed {
                payload: value["payload"].as_str()?.to_string(),
                spec: Spec::parse(&value["spec"])?,
                listed_in: text("listed_in"),
                state: value["state"].as_str()?.to_string(),
                attempts: value["attempts"].as_u64()?,
                last_token: value["last_token"].as_u64()?,
                submitted_ms: value["submitted_ms"].as_u64()?,
                updated_ms: value["updated_ms"].as_u64()?,
                dead_letter_reason: text("dead_letter_reason"),
                cancel_reason: text("cancel_reason"),
                history,
                result: text("result"),
            },
        ))
    }

    /// The attempt with `token`, if the history still holds it.
    pub fn attempt(&self, token: u64) -> Option<&Attempt> {
        self.history.iter().find(|attempt| attempt.token == token)
    }

    /// Whether the history may have dropped old attempts.
    pub fn truncated(&self) -> bool {
        self.history.len() >= HISTORY_MAX
    }

    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.state.as_str())
    }
}
