//! From the coordination state to the wire: tasks, agents, decisions and their enums. (The table
//! from domain refusals to node errors is `error::refused`.) Times are Unix milliseconds on both
//! sides.

use conclave_proto::v1 as pb;

use crate::state_machine::coordination::{
    Agent, Attempt, AttemptOutcome, BreakerState, DeadLetterReason, Decision, DecisionStatus,
    Delegation, Escalation, Lease, Rule, Task, TaskEventKind, TaskSpec, TaskState,
};

/// A task as the API shows it. `summary` leaves payload and result out (listings and events).
pub fn task(task: &Task, summary: bool) -> pb::Task {
    pb::Task {
        id: task.id,
        spec: Some(task_spec(&task.spec, summary)),
        state: task_state(task.state) as i32,
        submitted_unix_ms: task.submitted_ms,
        updated_unix_ms: task.updated_ms,
        ready_at_unix_ms: task.ready_at_ms,
        attempts: task.attempts,
        lease: task.lease.as_ref().map(lease),
        history: task.history.iter().map(attempt).collect(),
        progress: task.progress.as_ref().map(|p| pb::Progress {
            percent: p.percent,
            message: p.message.clone(),
            checkpoint: p.checkpoint.clone(),
            updated_unix_ms: p.updated_ms,
        }),
        result: if summary {
            Vec::new()
        } else {
            task.result.clone()
        },
        last_error: task.last_error.clone(),
        dead_letter_reason: task
            .dead_letter_reason
            .map_or(pb::DeadLetterReason::Unspecified, dead_letter_reason)
            as i32,
        cancel_reason: task.cancel_reason.clone(),
        last_fencing_token: task.last_token,
        origin: task.origin.as_ref().map(|origin| pb::WorkflowOrigin {
            workflow_id: origin.workflow_id,
            step: origin.step,
            branch: origin.branch,
            step_name: String::new(),
        }),
        delegation: task.delegation.as_ref().map(delegation),
    }
}

fn delegation(delegation: &Delegation) -> pb::Delegation {
    let (escalation, escalation_task_id) = match delegation.escalation {
        None => (pb::EscalationKind::Unspecified, 0),
        Some(Escalation::Manager) => (pb::EscalationKind::Manager, 0),
        Some(Escalation::Task(id)) => (pb::EscalationKind::Task, id),
        Some(Escalation::Orphaned) => (pb::EscalationKind::Orphaned, 0),
    };
    pb::Delegation {
        parent_task_id: delegation.parent,
        fencing_token: delegation.token,
        depth: delegation.depth,
        escalate_to: delegation.escalate_to.clone(),
        escalation: escalation as i32,
        escalation_task_id,
    }
}

pub fn task_spec(spec: &TaskSpec, summary: bool) -> pb::TaskSpec {
    pb::TaskSpec {
        queue: spec.queue.clone(),
        payload: if summary {
            Vec::new()
        } else {
            spec.payload.clone()
        },
        content_type: spec.content_type.clone(),
        capabilities: spec.capabilities.iter().cloned().collect(),
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        backoff: Some(pb::Backoff {
            initial_ms: spec.backoff.initial_ms,
            maximum_ms: spec.backoff.maximum_ms,
            multiplier: f64::from(spec.backoff.multiplier_permille) / 1000.0,
            jitter: f64::from(spec.backoff.jitter_permille) / 1000.0,
        }),
        lease_ms: spec.lease_ms,
        deadline_unix_ms: spec.deadline_ms,
        not_before_unix_ms: spec.not_before_ms,
        idempotency_key: spec.idempotency_key.clone(),
        correlation_id: spec.correlation_id.clone(),
        parent_id: spec.parent_id,
        labels: spec.labels.clone().into_iter().collect(),
        requires: spec.requires.as_ref().map(|gate| pb::DecisionGate {
            decision_id: gate.decision_id,
            option: gate.option.clone(),
        }),
    }
}

pub fn lease(lease: &Lease) -> pb::Lease {
    pb::Lease {
        agent: lease.agent.clone(),
        session_id: lease.session_id,
        attempt: lease.attempt,
        fencing_token: lease.token,
        assigned_unix_ms: lease.assigned_ms,
        deadline_unix_ms: lease.deadline_ms,
    }
}

fn attempt(attempt: &Attempt) -> pb::Attempt {
    pb::Attempt {
        attempt: attempt.attempt,
        agent: attempt.agent.clone(),
        fencing_token: attempt.token,
        assigned_unix_ms: attempt.assigned_ms,
        ended_unix_ms: attempt.ended_ms,
        outcome: attempt_outcome(attempt.outcome) as i32,
        error: attempt.error.clone(),
    }
}

/// What the session stream pushes for the task's current lease (None when it has none).
pub fn assignment(task: &Task) -> Option<pb::Assignment> {
    let lease = task.lease.as_ref()?;
    Some(pb::Assignment {
        task_id: task.id,
        queue: task.spec.queue.clone(),
        attempt: lease.attempt,
        fencing_token: lease.token,
        lease_deadline_unix_ms: lease.deadline_ms,
        lease_ms: task.spec.lease_ms,
        payload: task.spec.payload.clone(),
        content_type: task.spec.content_type.clone(),
        correlation_id: task.spec.correlation_id.clone(),
        labels: task.spec.labels.clone().into_iter().collect(),
        deadline_unix_ms: task.spec.deadline_ms,
        checkpoint: task
            .progress
            .as_ref()
            .map(|p| p.checkpoint.clone())
            .unwrap_or_default(),
        traceparent: task
            .spec
            .labels
            .get(conclave_proto::TRACEPARENT_LABEL)
            .cloned()
            .unwrap_or_default(),
    })
}

pub fn agent(agent: &Agent) -> pb::Agent {
    pb::Agent {
        name: agent.name.clone(),
        status: if agent.live {
            pb::AgentStatus::Live
        } else {
            pb::AgentStatus::Gone
        } as i32,
        session_id: agent.session_id,
        capabilities: agent.spec.capabilities.iter().cloned().collect(),
        labels: agent.spec.labels.clone().into_iter().collect(),
        max_concurrent: agent.spec.max_concurrent,
        version: agent.spec.version.clone(),
        metadata: agent.spec.metadata.clone().into_iter().collect(),
        ttl_ms: agent.spec.ttl_ms,
        session_expires_unix_ms: agent.expires_at_ms,
        registered_unix_ms: agent.registered_ms,
        last_heartbeat_unix_ms: agent.last_heartbeat_ms,
        reported_load: agent.reported_load,
        running: agent.running.iter().copied().collect(),
        drained: agent.drained,
        breaker: breaker_state(agent.breaker) as i32,
        consecutive_failures: agent.consecutive_failures,
        breaker_until_unix_ms: agent.breaker_until_ms,
        completed: agent.completed,
        failed: agent.failed,
    }
}

pub fn decision(decision: &Decision) -> pb::Decision {
    let spec = &decision.spec;
    let (rule, k) = match spec.rule {
        Rule::Majority => (pb::DecisionRule::Majority, 0),
        Rule::Unanimous => (pb::DecisionRule::Unanimous, 0),
        Rule::AtLeast(k) => (pb::DecisionRule::AtLeast, k),
        Rule::Weighted => (pb::DecisionRule::Weighted, 0),
    };
    pb::Decision {
        id: decision.id,
        spec: Some(pb::DecisionSpec {
            question: spec.question.clone(),
            options: spec.options.clone(),
            electorate: Some(pb::Electorate {
                agents: spec.electorate.agents.clone(),
                capability: spec.electorate.capability.clone(),
            }),
            rule: rule as i32,
            k,
            weights: spec.weights.clone().into_iter().collect(),
            veto_option: spec.veto_option.clone().unwrap_or_default(),
            deadline_unix_ms: spec.deadline_ms,
            labels: spec.labels.clone().into_iter().collect(),
        }),
        voters: decision.voters.clone(),
        status: decision_status(decision.status) as i32,
        outcome: decision.outcome.clone().unwrap_or_default(),
        votes: decision
            .votes
            .iter()
            .map(|v| pb::Vote {
                voter: v.voter.clone(),
                choice: v.choice.clone(),
                rationale: v.rationale.clone(),
                cast_unix_ms: v.cast_ms,
            })
            .collect(),
        proposed_unix_ms: decision.proposed_ms,
        closed_unix_ms: decision.closed_ms,
        reason: decision.reason.clone(),
    }
}

pub fn task_state(state: TaskState) -> pb::TaskState {
    match state {
        TaskState::Pending => pb::TaskState::Pending,
        TaskState::Delayed => pb::TaskState::Delayed,
        TaskState::Blocked => pb::TaskState::Blocked,
        TaskState::Assigned => pb::TaskState::Assigned,
        TaskState::RetryWait => pb::TaskState::RetryWait,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::DeadLettered => pb::TaskState::DeadLettered,
        TaskState::Canceled => pb::TaskState::Canceled,
        TaskState::Expired => pb::TaskState::Expired,
    }
}

/// The state a wire value names; None for UNSPECIFIED and unknown values.
pub fn task_state_from(value: i32) -> Option<TaskState> {
    Some(match pb::TaskState::try_from(value).ok()? {
        pb::TaskState::Unspecified => return None,
        pb::TaskState::Pending => TaskState::Pending,
        pb::TaskState::Delayed => TaskState::Delayed,
        pb::TaskState::Blocked => TaskState::Blocked,
        pb::TaskState::Assigned => TaskState::Assigned,
        pb::TaskState::RetryWait => TaskState::RetryWait,
        pb::TaskState::Succeeded => TaskState::Succeeded,
        pb::TaskState::DeadLettered => TaskState::DeadLettered,
        pb::TaskState::Canceled => TaskState::Canceled,
        pb::TaskState::Expired => TaskState::Expired,
    })
}

fn attempt_outcome(outcome: AttemptOutcome) -> pb::AttemptOutcome {
    match outcome {
        AttemptOutcome::Running => pb::AttemptOutcome::Running,
        AttemptOutcome::Succeeded => pb::AttemptOutcome::Succeeded,
        AttemptOutcome::Failed => pb::AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired => pb::AttemptOutcome::LeaseExpired,
        AttemptOutcome::SessionLost => pb::AttemptOutcome::SessionLost,
        AttemptOutcome::Released => pb::AttemptOutcome::Released,
        AttemptOutcome::Canceled => pb::AttemptOutcome::Canceled,
        AttemptOutcome::DeadlineExceeded => pb::AttemptOutcome::DeadlineExceeded,
    }
}

fn dead_letter_reason(reason: DeadLetterReason) -> pb::DeadLetterReason {
    match reason {
        DeadLetterReason::AttemptsExhausted => pb::DeadLetterReason::AttemptsExhausted,
        DeadLetterReason::NotRetryable => pb::DeadLetterReason::NotRetryable,
        DeadLetterReason::DeadlineExceeded => pb::DeadLetterReason::DeadlineExceeded,
    }
}

fn breaker_state(state: BreakerState) -> pb::BreakerState {
    match state {
        BreakerState::Closed => pb::BreakerState::Closed,
        BreakerState::Open => pb::BreakerState::Open,
        BreakerState::HalfOpen => pb::BreakerState::HalfOpen,
    }
}

pub fn decision_status(status: DecisionStatus) -> pb::DecisionStatus {
    match status {
        DecisionStatus::Open => pb::DecisionStatus::Open,
        DecisionStatus::Decided => pb::DecisionStatus::Decided,
        DecisionStatus::Rejected => pb::DecisionStatus::Rejected,
        DecisionStatus::NoQuorum => pb::DecisionStatus::NoQuorum,
    }
}

/// The status a wire value names; None for UNSPECIFIED and unknown values.
pub fn decision_status_from(value: i32) -> Option<DecisionStatus> {
    Some(match pb::DecisionStatus::try_from(value).ok()? {
        pb::DecisionStatus::Unspecified => return None,
        pb::DecisionStatus::Open => DecisionStatus::Open,
        pb::DecisionStatus::Decided => DecisionStatus::Decided,
        pb::DecisionStatus::Rejected => DecisionStatus::Rejected,
        pb::DecisionStatus::NoQuorum => DecisionStatus::NoQuorum,
    })
}

pub fn task_event_kind(kind: TaskEventKind) -> pb::TaskEventKind {
    match kind {
        TaskEventKind::Submitted => pb::TaskEventKind::Submitted,
        TaskEventKind::Assigned => pb::TaskEventKind::Assigned,
        TaskEventKind::Progress => pb::TaskEventKind::Progress,
        TaskEventKind::LeaseExtended => pb::TaskEventKind::LeaseExtended,
        TaskEventKind::Succeeded => pb::TaskEventKind::Succeeded,
        TaskEventKind::Failed => pb::TaskEventKind::Failed,
        TaskEventKind::RetryScheduled => pb::TaskEventKind::RetryScheduled,
        TaskEventKind::Requeued => pb::TaskEventKind::Requeued,
        TaskEventKind::DeadLettered => pb::TaskEventKind::DeadLettered,
        TaskEventKind::Canceled => pb::TaskEventKind::Canceled,
        TaskEventKind::Redriven => pb::TaskEventKind::Redriven,
        TaskEventKind::Unblocked => pb::TaskEventKind::Unblocked,
        TaskEventKind::Purged => pb::TaskEventKind::Purged,
        TaskEventKind::Expired => pb::TaskEventKind::Expired,
        TaskEventKind::Escalated => pb::TaskEventKind::Escalated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_round_trip_and_unspecified_is_none() {
        for state in TaskState::ALL {
            assert_eq!(task_state_from(task_state(state) as i32), Some(state));
        }
        assert_eq!(task_state_from(pb::TaskState::Unspecified as i32), None);
        assert_eq!(task_state_from(99), None);
    }
}
