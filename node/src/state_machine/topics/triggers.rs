//! Triggers: a rule on a topic's subjects that submits a task or starts a workflow for each
//! message it matches, exactly once per stored message.
//!
//! A trigger fires in the apply that stores the message (`store_checked`, the one store path of
//! a Publish, of a batch and of a transaction's publish op): it raises `TriggerSubmitTask` (the
//! tasks answer) or `TriggerStartWorkflow` (the workflows answer), and the answer,
//! `TriggerFired`, comes back within the same entry. A duplicate publish stores nothing and so
//! fires nothing. A refused submit or start (a quota, an invalid spec or definition) is counted
//! on the trigger (`failed`, `last_error`) and recorded as a `TriggerFailed` topic event: never
//! silent, never retried.
//!
//! What a message becomes:
//! - a task: the template's spec with the message data as payload, the labels
//!   `conclave.topic`, `conclave.seq`, `conclave.subject` and `conclave.key` (the key as UTF-8
//!   text; `conclave.key_base64` when it is not UTF-8; neither without a key) added to its own,
//!   and the idempotency key `trigger/<name>/<topic>/<seq>`;
//! - a workflow: the definition started with the input
//!   `{"topic","seq","subject","key","headers","data"}` (key and data as UTF-8 text, or as
//!   `key_base64` / `data_base64` when not UTF-8; key null without one) and the same
//!   idempotency key.

use serde::{Deserialize, Serialize};

use super::{subject, topic_event, unknown_topic, Message, Refusal, RefusalCode, Seq, Topic};
use super::{TopicEventKind, TopicResponse, Topics};
use crate::limits::TOPIC_TRIGGERS_MAX;
use crate::state_machine::coordination::TaskSpec;
use crate::state_machine::primitive::{Ctx, Effect};
use crate::state_machine::workflows::Definition;

/// What a trigger does with each message it matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TriggerAction {
    /// Submits this spec (the template) with the message as payload and labels.
    SubmitTask(Box<TaskSpec>),
    /// Starts this workflow with the message's JSON envelope as input.
    StartWorkflow(Box<Definition>),
}

impl TriggerAction {
    pub const fn code(&self) -> u16 {
        match self {
            TriggerAction::SubmitTask(_) => 0,
            TriggerAction::StartWorkflow(_) => 1,
        }
    }
}

/// One trigger of a topic, and what it has done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub name: String,
    /// The subject pattern (within the topic) of the messages it fires for.
    pub subject: String,
    pub action: TriggerAction,
    pub created_ms: u64,
    /// Tasks submitted or workflows started.
    pub fired: u64,
    /// Submits or starts refused.
    pub failed: u64,
    /// The last refusal, in words (empty: none).
    pub last_error: String,
}

impl Topics {
    /// CreateTrigger: idempotent for the same subject and action; another trigger of that name
    /// is ALREADY_EXISTS; at most TOPIC_TRIGGERS_MAX per topic.
    pub(super) fn create_trigger(
        &mut self,
        ctx: &mut Ctx,
        topic: &str,
        name: &str,
        pattern: &str,
        action: &TriggerAction,
    ) -> Result<TopicResponse, Refusal> {
        check_action(action)?;
        let topic_state = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_topic(topic))?;
        if let Some(existing) = topic_state.triggers.get(name) {
            if existing.subject == pattern && existing.action == *action {
                return Ok(TopicResponse::TriggerCreated { existing: true });
            }
            return Err(Refusal::new(
                RefusalCode::AlreadyExists,
                format!("name: topic {topic:?} has a trigger {name:?} with another rule"),
            ));
        }
        if topic_state.triggers.len() >= TOPIC_TRIGGERS_MAX {
            return Err(Refusal::new(
                RefusalCode::ResourceExhausted,
                format!(
                    "topic {topic:?} has its maximum of {TOPIC_TRIGGERS_MAX} triggers (TOPIC_TRIGGERS_MAX)"
                ),
            ));
        }
        let trigger = Trigger {
            name: name.to_string(),
            subject: pattern.to_string(),
            action: action.clone(),
            created_ms: ctx.now_ms,
            fired: 0,
            failed: 0,
            last_error: String::new(),
        };
        topic_state.triggers.insert(name.to_string(), trigger);
        Ok(TopicResponse::TriggerCreated { existing: false })
    }

    pub(super) fn delete_trigger(
        &mut self,
        topic: &str,
        name: &str,
    ) -> Result<TopicResponse, Refusal> {
        let topic_state = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_topic(topic))?;
        topic_state.triggers.remove(name).ok_or_else(|| {
            Refusal::new(
                RefusalCode::NotFound,
                format!("name: topic {topic:?} has no trigger {name:?}"),
            )
        })?;
        Ok(TopicResponse::TriggerDeleted)
    }

    /// The answer to a trigger's effect: counts it on the trigger (gone since: ignored) and
    /// records a refusal as a `TriggerFailed` event.
    pub(super) fn trigger_fired(
        &mut self,
        ctx: &mut Ctx,
        topic: &str,
        name: &str,
        seq: Seq,
        result: &Result<String, String>,
    ) {
        let Some(trigger) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.triggers.get_mut(name))
        else {
            return;
        };
        match result {
            Ok(_) => trigger.fired += 1,
            Err(error) => {
                trigger.failed += 1;
                trigger.last_error = format!("seq {seq}: {error}");
                let kind = TopicEventKind::TriggerFailed {
                    trigger: name.to_string(),
                    seq,
                    error: error.clone(),
                };
                ctx.event(topic_event(topic, kind));
            }
        }
    }
}

/// The parts of a rule that do not depend on the state at fire time: a task template without an
/// idempotency key (each message gets its own), a decision gate (one decision's), a parent, or
/// absolute times (a template serves messages yet to come).
fn check_action(action: &TriggerAction) -> Result<(), Refusal> {
    let invalid = |reason: &str| Err(Refusal::new(RefusalCode::InvalidArgument, reason));
    match action {
        TriggerAction::SubmitTask(spec) => {
            if spec.queue.is_empty() {
                return invalid("task.queue: must not be empty");
            }
            if !spec.idempotency_key.is_empty() {
                return invalid("task.idempotency_key: a trigger sets each task's own");
            }
            if spec.requires.is_some() {
                return invalid("task.requires: a trigger's task has no decision gate");
            }
            if spec.deadline_ms != 0 || spec.not_before_ms != 0 || spec.parent_id != 0 {
                return invalid(
                    "task: a trigger's template has no deadline_ms, not_before_ms or parent_id",
                );
            }
            Ok(())
        }
        TriggerAction::StartWorkflow(_) => Ok(()),
    }
}

impl Topic {
    /// Raises the effect of every trigger whose pattern matches the message just stored.
    pub(super) fn fire_triggers(&self, ctx: &mut Ctx, message: &Message) {
        for trigger in self.triggers.values() {
            if !subject::matches(&trigger.subject, &message.subject) {
                continue;
            }
            let idempotency_key = format!("trigger/{}/{}/{}", trigger.name, self.name, message.seq);
            let effect = match &trigger.action {
                TriggerAction::SubmitTask(template) => {
                    let mut spec = template.as_ref().clone();
                    spec.payload = message.data.clone();
                    spec.idempotency_key = idempotency_key;
                    spec.labels.extend(task_labels(&self.name, message));
                    Effect::TriggerSubmitTask {
                        topic: self.name.clone(),
                        trigger: trigger.name.clone(),
                        seq: message.seq,
                        spec: Box::new(spec),
                    }
                }
                TriggerAction::StartWorkflow(definition) => Effect::TriggerStartWorkflow {
                    topic: self.name.clone(),
                    trigger: trigger.name.clone(),
                    seq: message.seq,
                    definition: definition.clone(),
                    input: envelope(&self.name, message),
                    idempotency_key,
                },
            };
            ctx.raise(effect);
        }
    }
}

fn task_labels(topic: &str, message: &Message) -> Vec<(String, String)> {
    let mut labels = vec![
        ("conclave.topic".to_string(), topic.to_string()),
        ("conclave.seq".to_string(), message.seq.to_string()),
        ("conclave.subject".to_string(), message.subject.clone()),
    ];
    if let Some(key) = &message.key {
        match std::str::from_utf8(key) {
            Ok(text) => labels.push(("conclave.key".into(), text.to_string())),
            Err(_) => labels.push(("conclave.key_base64".into(), base64(key))),
        }
    }
    labels
}

/// The workflow input: `{"topic","seq","subject","key","headers","data"}`, key and data as
/// UTF-8 text or, when not UTF-8, as `key_base64` / `data_base64`.
pub(crate) fn envelope(topic: &str, message: &Message) -> String {
    let mut object = serde_json::Map::new();
    object.insert("topic".into(), topic.into());
    object.insert("seq".into(), message.seq.into());
    object.insert("subject".into(), message.subject.clone().into());
    let mut bytes_field = |name: &str, bytes: Option<&[u8]>| match bytes {
        None => {
            object.insert(name.into(), serde_json::Value::Null);
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => {
                object.insert(name.into(), text.into());
            }
            Err(_) => {
                object.insert(format!("{name}_base64"), base64(bytes).into());
            }
        },
    };
    bytes_field("key", message.key.as_deref());
    bytes_field("data", Some(&message.data));
    let headers = message
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
        .collect::<serde_json::Map<_, _>>();
    object.insert("headers".into(), headers.into());
    serde_json::Value::Object(object).to_string()
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(&[0xff, 0xfe]), "//4=");
    }
}
