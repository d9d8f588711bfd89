//! The tasks workload's operators, each one logical client: the canceler cancels random tasks
//! (mostly recent ones, so pending, delayed or assigned; now and then an old one, usually
//! terminal), the redriver looks at the dead-letter queue of every queue and redrives some dead
//! letters (each task at most once, so that the checker knows exactly which redrive may have
//! moved a task), and the gatekeeper puts a question to the workload's first agents and submits
//! a few tasks gated on its outcome.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1::decisions_client::DecisionsClient;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::{
    CancelTaskRequest, DecisionSpec, DecisionStatus, Electorate, GetDecisionRequest,
    ListDeadLettersRequest, ProposeRequest, ReadConsistency, RedriveRequest, Task,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::Rng as _;
use serde_json::{json, Value as Json};
use tonic::transport::Channel;

use super::listed::state_name;
use super::{agent_name, lock, submit, Options, Shared, PAGE};
use crate::jepsen::client::{describe, Attempt, ClientContext};
use crate::jepsen::history::{Completion, OpSpec};
use crate::jepsen::workload::agents::{classify, pace, pause, short_name, unix_ms, Actor};

/// The options of a gating decision; a gated task needs one of them.
pub const GATE_OPTIONS: [&str; 2] = ["run", "skip"];
/// Chance that a voter chooses "skip".
pub const SKIP_PROBABILITY: f64 = 0.35;
/// Recent acknowledged tasks the canceler picks from, most of the time.
const RECENT: usize = 10;
/// Chance that the canceler picks a recent task rather than any.
const RECENT_PROBABILITY: f64 = 0.85;
/// A gating decision's deadline is this far ahead (ms, at random): majority of three voters
/// usually decides well before; a voter that froze or lost its session makes it close later,
/// or without quorum.
const GATE_DEADLINE_MS: (u64, u64) = (1_500, 3_000);
/// Tasks gated on each decision.
const GATED_PER_DECISION: (usize, usize) = (2, 3);

/// What each operator needs.
#[derive(Clone)]
pub(super) struct Operator {
    pub context: ClientContext,
    pub shared: Arc<Shared>,
    pub options: Options,
}

impl Operator {
    /// Cancels random acknowledged tasks until the stop signal.
    pub async fn cancel_tasks(self, node: u64, mut rng: StdRng) {
        let context = &self.context;
        let interval = context.op_interval * self.options.cancel_pace;
        let mut stop = context.stop.clone();
        let mut actor = Actor::new(context, node);
        let mut serial = 0u64;
        while !pace(&mut stop, &mut rng, interval).await {
            let target = {
                let acknowledged = lock(&self.shared.acknowledged);
                let recent = acknowledged.len().saturating_sub(RECENT);
                if rng.gen_bool(RECENT_PROBABILITY) {
                    acknowledged[recent..].choose(&mut rng).copied()
                } else {
                    acknowledged.choose(&mut rng).copied()
                }
            };
            let Some(task) = target else {
                continue;
            };
            serial += 1;
            // Unique, so that a CANCELED task names the cancel that did it.
            let reason = format!("jepsen cancel {} #{serial}", actor.process());
            cancel(&mut actor, context, task, &reason).await;
        }
    }

    /// Lists every queue's dead letters now and then and redrives some of those seen for the
    /// first time, until the stop signal.
    pub async fn redrive_dead_letters(self, node: u64, mut rng: StdRng) {
        let context = &self.context;
        let mut stop = context.stop.clone();
        let mut actor = Actor::new(context, node);
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        // Every dead letter looked at once: redriven or left alone for good.
        let mut decided: HashSet<u64> = HashSet::new();
        let (low, high) = self.options.redrive_pause_ms;
        let mut reads = 0usize;
        loop {
            pause(&mut stop, Duration::from_millis(rng.gen_range(low..=high))).await;
            if *stop.borrow() {
                return;
            }
            for queue in self.options.queues() {
                let node = nodes[reads % nodes.len()];
                reads += 1;
                let Some(dead) = dead_letters(&mut actor, context, node, queue).await else {
                    continue;
                };
                for (id, state, last_token) in dead {
                    if state != "DEAD_LETTERED" || !decided.insert(id) {
                        continue;
                    }
                    if *stop.borrow() || !rng.gen_bool(self.options.redrive_probability) {
                        continue;
                    }
                    // Agents stop failing it on purpose before it can be assigned again.
                    lock(&self.shared.redriven).insert(id);
                    redrive(&mut actor, context, id, last_token).await;
                }
            }
        }
    }

    /// Proposes a decision to the first agents now and then, and submits a few tasks gated on
    /// each option of it, until the stop signal.
    pub async fn gate_tasks(self, node: u64, mut rng: StdRng) {
        let context = &self.context;
        let mut stop = context.stop.clone();
        let mut actor = Actor::new(context, node);
        let voters: Vec<String> = (0..self.options.gate_voters.min(self.options.agents))
            .map(agent_name)
            .collect();
        let (low, high) = self.options.gate_pause_ms;
        loop {
            pause(&mut stop, Duration::from_millis(rng.gen_range(low..=high))).await;
            if *stop.borrow() {
                return;
            }
            let deadline = unix_ms() + rng.gen_range(GATE_DEADLINE_MS.0..=GATE_DEADLINE_MS.1);
            let Some(decision) = propose(&mut actor, context, &voters, deadline).await else {
                continue;
            };
            lock(&self.shared.decisions).push(decision);
            for _ in 0..rng.gen_range(GATED_PER_DECISION.0..=GATED_PER_DECISION.1) {
                let (mut spec, _) = self.options.choose(&mut rng, unix_ms());
                // A deadline could expire the task while it is blocked, which would leave the
                // gate nothing to decide.
                spec.deadline_ms = 0;
                let option = GATE_OPTIONS.choose(&mut rng).expect("two options");
                spec.gate = Some((decision, option.to_string()));
                let payload = self.shared.next_payload("-gated");
                if let Some(id) = submit(&mut actor, context, &payload, &spec, &self.options).await
                {
                    self.shared.acknowledged(id);
                }
            }
        }
    }
}

/// Cancels `task`, recorded as `cancel`.
async fn cancel(actor: &mut Actor, context: &ClientContext, task: u64, reason: &str) {
    let request = CancelTaskRequest {
        request_id: actor.next_request_id(),
        task_id: task,
        reason: reason.to_string(),
    };
    let value = json!({"task": task, "reason": reason});
    let spec = OpSpec::new("cancel", None, value.clone());
    actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let value = value.clone();
            async move {
                match TasksClient::new(channel).cancel_task(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        let mut value = value;
                        value["canceled"] = json!(response.canceled);
                        value["previous"] = json!(state_name(response.previous_state));
                        Attempt::Ok(value)
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
}

/// Lists the dead letters of `queue` on `node` (linearizable), recorded as `dead-letters`:
/// (id, state, last token) of each, if the read succeeded.
async fn dead_letters(
    actor: &mut Actor,
    context: &ClientContext,
    node: u64,
    queue: &str,
) -> Option<Vec<(u64, String, u64)>> {
    let spec = OpSpec::new("dead-letters", None, json!({"queue": queue}));
    let completion = actor
        .read(context, spec, node, |channel| async move {
            let tasks = list_dead_letters(channel, queue).await?;
            let tasks: Vec<Json> = tasks
                .iter()
                .map(|task| {
                    json!({
                        "id": task.id,
                        "state": state_name(task.state),
                        "queue": task.spec.as_ref().map_or("", |spec| spec.queue.as_str()),
                        "last_token": task.last_fencing_token,
                    })
                })
                .collect();
            Ok(json!({"queue": queue, "tasks": tasks}))
        })
        .await;
    let Completion::Ok(value) = completion else {
        return None;
    };
    value["tasks"].as_array().map(|tasks| {
        tasks
            .iter()
            .filter_map(|task| {
                Some((
                    task["id"].as_u64()?,
                    task["state"].as_str()?.to_string(),
                    task["last_token"].as_u64()?,
                ))
            })
            .collect()
    })
}

async fn list_dead_letters(channel: Channel, queue: &str) -> Result<Vec<Task>, String> {
    let mut client = TasksClient::new(channel);
    let mut tasks: Vec<Task> = Vec::new();
    let mut after_id = 0;
    loop {
        let request = ListDeadLettersRequest {
            queue: queue.to_string(),
            limit: PAGE,
            after_id,
            consistency: ReadConsistency::Linearizable as i32,
        };
        let page = client
            .list_dead_letters(request)
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        tasks.extend(page.tasks);
        if !page.more {
            return Ok(tasks);
        }
        let last = tasks.last().map_or(after_id, |task| task.id);
        if last <= after_id {
            return Err("ListDeadLetters did not advance".to_string());
        }
        after_id = last;
    }
}

/// Redrives `task` (by id), recorded as `redrive` with the last token it was listed with.
async fn redrive(actor: &mut Actor, context: &ClientContext, task: u64, last_token: u64) {
    let request = RedriveRequest {
        request_id: actor.next_request_id(),
        task_ids: vec![task],
        queue: String::new(),
    };
    let value = json!({"task": task, "last_token": last_token});
    let spec = OpSpec::new("redrive", None, value.clone());
    actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let value = value.clone();
            async move {
                match TasksClient::new(channel).redrive(request).await {
                    Ok(response) => {
                        let mut value = value;
                        value["count"] = json!(response.into_inner().count);
                        Attempt::Ok(value)
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
}

/// Proposes a gating decision (majority of `voters`, options [`GATE_OPTIONS`]), recorded as
/// `propose`; its id if acknowledged.
async fn propose(
    actor: &mut Actor,
    context: &ClientContext,
    voters: &[String],
    deadline_ms: u64,
) -> Option<u64> {
    let request = ProposeRequest {
        request_id: actor.next_request_id(),
        decision: Some(DecisionSpec {
            question: "may these jepsen tasks run?".to_string(),
            options: GATE_OPTIONS.iter().map(|o| o.to_string()).collect(),
            electorate: Some(Electorate {
                agents: voters.to_vec(),
                capability: String::new(),
            }),
            deadline_unix_ms: deadline_ms,
            ..DecisionSpec::default()
        }),
    };
    let spec = OpSpec::new("propose", None, json!({"deadline": deadline_ms}));
    let completion = actor
        .write(context, spec, |channel| {
            let request = request.clone();
            async move {
                match DecisionsClient::new(channel).propose(request).await {
                    Ok(response) => match response.into_inner().decision {
                        Some(decision) => {
                            Attempt::Ok(json!({"deadline": deadline_ms, "id": decision.id}))
                        }
                        None => Attempt::Unknown("Propose answered without a decision".into()),
                    },
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
    match completion {
        Completion::Ok(value) => value["id"].as_u64(),
        _ => None,
    }
}

/// Reads every gating decision (linearizable, from the first node that answers all), recorded
/// as `final-gates`.
pub(super) async fn final_gates(context: &ClientContext, decisions: &[u64]) {
    let mut actor = Actor::new(context, *context.nodes.keys().next().expect("nodes"));
    for &node in context.nodes.keys() {
        let spec = OpSpec::new("final-gates", None, json!({}));
        let completion = actor
            .read(context, spec, node, |channel| async move {
                let mut client = DecisionsClient::new(channel);
                let mut read = Vec::new();
                for &decision_id in decisions {
                    let request = GetDecisionRequest {
                        decision_id,
                        consistency: ReadConsistency::Linearizable as i32,
                    };
                    let decision = client
                        .get_decision(request)
                        .await
                        .map_err(|status| describe(&status))?
                        .into_inner()
                        .decision
                        .ok_or_else(|| format!("decision {decision_id}: answered without it"))?;
                    let status = DecisionStatus::try_from(decision.status).map_or_else(
                        |_| format!("UNKNOWN({})", decision.status),
                        |status| short_name(status.as_str_name(), "DECISION_STATUS_"),
                    );
                    read.push(json!({
                        "id": decision.id,
                        "status": status,
                        "outcome": decision.outcome,
                        "closed_ms": decision.closed_unix_ms,
                    }));
                }
                Ok(json!({"decisions": read}))
            })
            .await;
        if matches!(completion, Completion::Ok(_)) {
            return;
        }
    }
}
