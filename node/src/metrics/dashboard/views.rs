//! The dashboard's JSON: what this node knows of the cluster (its Raft metrics and membership),
//! and pages of its applied state read under the read lock through the state's public read API.
//! Payloads and results are never sent, only their sizes.

use std::collections::BTreeMap;

use openraft::async_runtime::WatchReceiver;
use serde_json::{json, Value};

use super::DASHBOARD_PAGE_MAX;
use crate::limits::METRICS_QUEUES_MAX;
use crate::metrics::scrape::{task_state_name, workflow_state_name};
use crate::node::{wall_clock_ms, Node};
use crate::state_machine::coordination::{
    Agent, Attempt, Decision, DecisionStatus, Rule, Task, TaskFilter, TaskState,
};
use crate::state_machine::locks::Lock;
use crate::state_machine::workflows::definition::StepKind;
use crate::state_machine::workflows::Workflow;
use crate::state_machine::StateMachine;

/// This node's Raft role and positions, its health, and the membership and (on the leader) the
/// replication progress it knows.
pub fn node(node: &Node) -> Value {
    let metrics = node.raft.metrics().borrow_watched().clone();
    let index = |log_id: Option<crate::raft::LogId>| log_id.map_or(0, |id| id.index);
    let committed = index(metrics.local_committed);
    let applied = index(metrics.last_applied);
    let (serving, _) = crate::grpc::health::serving(node, committed.saturating_sub(1));
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members: Vec<Value> = membership
        .nodes()
        .map(|(id, info)| {
            json!({
                "id": id,
                "api_addr": info.api_addr,
                "voter": voters.contains(id),
                "matched": matched(&metrics, *id),
                "last_ack_ms": last_ack_ms(&metrics, *id),
            })
        })
        .collect();
    json!({
        "id": node.id,
        "role": format!("{:?}", metrics.state).to_lowercase(),
        "term": metrics.current_term,
        "leader": metrics.current_leader,
        "last_log_index": metrics.last_log_index.unwrap_or(0),
        "committed": committed,
        "applied": applied,
        "apply_lag": committed.saturating_sub(applied),
        "snapshot_index": index(metrics.snapshot),
        "serving": serving,
        "members": members,
        "wall_clock_ms": wall_clock_ms(),
    })
}

/// On the leader: the last log index `id` is known to hold.
fn matched(metrics: &openraft::RaftMetrics<crate::raft::TypeConfig>, id: u64) -> Option<u64> {
    let replication = metrics.replication.as_ref()?;
    replication
        .get(&id)
        .cloned()
        .flatten()
        .map(|log_id| log_id.index)
}

/// On the leader: how long ago `id` last acknowledged a heartbeat or an append.
fn last_ack_ms(metrics: &openraft::RaftMetrics<crate::raft::TypeConfig>, id: u64) -> Option<u64> {
    use openraft::Instant as _;
    let heartbeat = metrics.heartbeat.as_ref()?;
    let acked = heartbeat.get(&id).cloned().flatten()?;
    Some(acked.elapsed().as_millis() as u64)
}

/// What the event stream pushes: this node, the queues, the agents and the state's counts.
pub fn overview(node_handle: &Node) -> Value {
    let node_view = node(node_handle);
    let now_ms = wall_clock_ms();
    let state = node_handle.state.read();
    let machine = &state.machine;
    let stats = machine.coord_stats();
    json!({
        "node": node_view,
        "queues": queues(machine, now_ms),
        "agents": machine.agents().iter().take(DASHBOARD_PAGE_MAX).map(agent).collect::<Vec<_>>(),
        "agents_total": machine.agents().iter().count(),
        "counts": {
            "tasks": stats.tasks,
            "pending": stats.pending,
            "assigned": stats.assigned,
            "dead_letters": stats.dead_letters,
            "agents_live": stats.agents_live,
            "decisions_open": stats.decisions_open,
            "workflows": machine.workflows().iter().count(),
            "keys": machine.key_count(),
        },
        "last_task_id": machine.tasks().last_ids().0,
        "cluster_time_ms": machine.now_ms(),
        "applied": state.last_applied.map_or(0, |id| id.index),
    })
}

/// Per queue (the first METRICS_QUEUES_MAX by name): tasks by state, the backlog, the age of the
/// oldest PENDING task, and the dead letters.
fn queues(machine: &StateMachine, now_ms: u64) -> Vec<Value> {
    let mut by_queue: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (queue, state, count) in machine.tasks().counts_by_queue_state() {
        if by_queue.len() == METRICS_QUEUES_MAX && !by_queue.contains_key(queue) {
            break;
        }
        by_queue
            .entry(queue)
            .or_default()
            .insert(task_state_name(state), count);
    }
    by_queue
        .into_iter()
        .map(|(queue, states)| {
            let count = |name: &str| states.get(name).copied().unwrap_or(0);
            let oldest_ms = machine
                .tasks()
                .oldest_pending(queue)
                .map(|task| now_ms.saturating_sub(task.submitted_ms));
            json!({
                "queue": queue,
                "pending": count("pending"),
                "oldest_pending_age_ms": oldest_ms,
                "dead_letters": count("dead_lettered") + count("expired"),
                "states": states,
            })
        })
        .collect()
}

fn agent(agent: &Agent) -> Value {
    json!({
        "name": agent.name,
        "live": agent.live,
        "capabilities": agent.spec.capabilities,
        "max_concurrent": agent.spec.max_concurrent,
        "running": agent.running,
        "reported_load": agent.reported_load,
        "drained": agent.drained,
        "breaker": format!("{:?}", agent.breaker).to_lowercase(),
        "consecutive_failures": agent.consecutive_failures,
        "completed": agent.completed,
        "failed": agent.failed,
        "version": agent.spec.version,
        "last_heartbeat_ms": agent.last_heartbeat_ms,
    })
}

/// A page of tasks by `queue`, `state` and `after_id` (id order), or the one task `id`.
pub fn tasks(node: &Node, params: &BTreeMap<String, String>) -> Result<Value, String> {
    let filter = task_filter(params)?;
    let after_id = super::after_id(params);
    let state = node.state.read();
    let tasks = state.machine.tasks();
    if let Some(id) = params.get("id").filter(|id| !id.is_empty()) {
        let id: u64 = id
            .parse()
            .map_err(|_| format!("task id {id:?} is not a number"))?;
        let found: Vec<Value> = tasks.task(id).map(task_summary).into_iter().collect();
        return Ok(json!({ "tasks": found, "more": false, "next_after_id": id }));
    }
    let listing = tasks.list_tasks(&filter, after_id, DASHBOARD_PAGE_MAX);
    Ok(json!({
        "tasks": listing.tasks.iter().map(|task| task_summary(task)).collect::<Vec<_>>(),
        "more": listing.more,
        "next_after_id": listing.next_after_id,
    }))
}

fn task_filter(params: &BTreeMap<String, String>) -> Result<TaskFilter, String> {
    let mut filter = TaskFilter {
        queue: params.get("queue").cloned().unwrap_or_default(),
        ..TaskFilter::default()
    };
    if let Some(name) = params.get("state").filter(|name| !name.is_empty()) {
        let state = TaskState::ALL
            .into_iter()
            .find(|state| task_state_name(*state) == name)
            .ok_or_else(|| format!("no task state {name:?}"))?;
        filter.states.push(state);
    }
    Ok(filter)
}

fn task_summary(task: &Task) -> Value {
    json!({
        "id": task.id,
        "queue": task.spec.queue,
        "state": task_state_name(task.state),
        "priority": task.spec.priority,
        "attempts": task.attempts,
        "max_attempts": task.spec.max_attempts,
        "capabilities": task.spec.capabilities,
        "agent": task.lease.as_ref().map(|lease| &lease.agent),
        "submitted_ms": task.submitted_ms,
        "updated_ms": task.updated_ms,
        "last_error": task.last_error,
    })
}

/// One task with its attempts, lease, progress and where it came from.
pub fn task(node: &Node, id: u64) -> Option<Value> {
    let state = node.state.read();
    let task = state.machine.tasks().task(id)?;
    let mut value = task_summary(task);
    let details = json!({
        "payload_bytes": task.spec.payload.len(),
        "result_bytes": task.result.len(),
        "content_type": task.spec.content_type,
        "labels": task.spec.labels,
        "history": task.history.iter().map(attempt).collect::<Vec<_>>(),
        "lease_deadline_ms": task.lease.as_ref().map(|lease| lease.deadline_ms),
        "progress": task.progress.as_ref().map(|p| json!({"percent": p.percent, "message": p.message})),
        "dead_letter_reason": task.dead_letter_reason.map(|r| format!("{r:?}")),
        "cancel_reason": task.cancel_reason,
        "workflow_id": task.origin.as_ref().map(|origin| origin.workflow_id),
        "parent_id": task.delegation.as_ref().map(|d| d.parent),
    });
    merge(&mut value, details);
    Some(value)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

fn attempt(attempt: &Attempt) -> Value {
    json!({
        "attempt": attempt.attempt,
        "agent": attempt.agent,
        "fencing_token": attempt.token,
        "assigned_ms": attempt.assigned_ms,
        "ended_ms": attempt.ended_ms,
        "outcome": format!("{:?}", attempt.outcome),
        "error": attempt.error,
    })
}

/// A page of decisions (id order) with their tallies, votes and rationales.
pub fn decisions(node: &Node, after_id: u64) -> Value {
    let state = node.state.read();
    let (page, more) = state
        .machine
        .decisions()
        .list_decisions(&[], after_id, DASHBOARD_PAGE_MAX);
    json!({
        "decisions": page.iter().map(|d| decision(d)).collect::<Vec<_>>(),
        "more": more,
        "next_after_id": page.last().map_or(after_id, |d| d.id),
    })
}

fn decision(decision: &Decision) -> Value {
    let mut tally: BTreeMap<&str, u64> = decision
        .spec
        .options
        .iter()
        .map(|option| (option.as_str(), 0))
        .collect();
    for vote in &decision.votes {
        *tally.entry(vote.choice.as_str()).or_default() += 1;
    }
    let votes: Vec<Value> = decision
        .votes
        .iter()
        .map(|v| json!({"voter": v.voter, "choice": v.choice, "rationale": v.rationale, "cast_ms": v.cast_ms}))
        .collect();
    json!({
        "id": decision.id,
        "question": decision.spec.question,
        "rule": rule(&decision.spec.rule),
        "status": decision_status(decision.status),
        "outcome": decision.outcome,
        "reason": decision.reason,
        "voters": decision.voters,
        "tally": tally,
        "votes": votes,
        "proposed_ms": decision.proposed_ms,
        "deadline_ms": decision.spec.deadline_ms,
    })
}

fn rule(rule: &Rule) -> String {
    match rule {
        Rule::Majority => "majority".into(),
        Rule::Unanimous => "unanimous".into(),
        Rule::AtLeast(k) => format!("at least {k}"),
        Rule::Weighted => "weighted".into(),
    }
}

fn decision_status(status: DecisionStatus) -> &'static str {
    match status {
        DecisionStatus::Open => "open",
        DecisionStatus::Decided => "decided",
        DecisionStatus::Rejected => "rejected",
        DecisionStatus::NoQuorum => "no_quorum",
    }
}

/// Most workflow instances in one page: each carries its steps.
const WORKFLOWS_PAGE_MAX: usize = 50;

/// A page of workflow instances (id order), each with its steps and their dependencies.
pub fn workflows(node: &Node, after_id: u64) -> Value {
    let state = node.state.read();
    let (page, more) = state.machine.workflows().list(after_id, WORKFLOWS_PAGE_MAX);
    json!({
        "workflows": page.iter().map(|w| workflow(w)).collect::<Vec<_>>(),
        "more": more,
        "next_after_id": page.last().map_or(after_id, |w| w.id),
    })
}

fn workflow(workflow: &Workflow) -> Value {
    let steps: Vec<Value> = workflow
        .definition
        .steps
        .iter()
        .zip(&workflow.steps)
        .map(|(def, run)| {
            json!({
                "name": def.name,
                "after": def.after,
                "kind": match def.kind { StepKind::Task { .. } => "task", StepKind::Decision(_) => "decision" },
                "compensation": def.compensation,
                "state": format!("{:?}", run.state).to_lowercase(),
                "tasks": run.branches.iter().map(|b| b.task_id).filter(|id| *id != 0).collect::<Vec<_>>(),
                "decision_id": run.decision_id,
                "outcome": run.outcome,
                "error": run.error,
            })
        })
        .collect();
    json!({
        "id": workflow.id,
        "name": workflow.definition.name,
        "version": workflow.definition.version,
        "state": workflow_state_name(workflow.state),
        "created_ms": workflow.created_ms,
        "error": workflow.error,
        "steps": steps,
    })
}

/// Locks, semaphores and elections in (kind, name) order, the first DASHBOARD_PAGE_MAX: their
/// holders (owner, token, permits, lease end) and how many wait.
pub fn locks(node: &Node) -> Value {
    let state = node.state.read();
    let mut all = state.machine.locks().iter();
    let page: Vec<Value> = all.by_ref().take(DASHBOARD_PAGE_MAX).map(lock).collect();
    json!({"locks": page, "more": all.next().is_some()})
}

fn lock(lock: &Lock) -> Value {
    let holders: Vec<Value> = lock
        .holders
        .values()
        .map(|g| {
            json!({"owner": g.holder.owner, "session_id": g.holder.session_id, "token": g.token,
                "permits": g.permits, "expires_ms": g.expires_at_ms})
        })
        .collect();
    json!({
        "kind": lock.kind.noun(),
        "name": lock.name,
        "limit": lock.limit,
        "holders": holders,
        "waiters": lock.waiters.len(),
        "unavailable_until_ms": lock.unavailable_until_ms,
    })
}
