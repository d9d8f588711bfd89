//! Agents: who is registered, whether its session is live, what it holds, and its breaker.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{SessionId, TaskId};

/// What an agent registers with. The gRPC layer fills in the defaults; values here are concrete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub name: String,
    pub capabilities: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub max_concurrent: u32,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    pub ttl_ms: u64,
    /// Close a live session of the same name instead of answering `AgentExists`.
    pub replace: bool,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
}

/// One heartbeat of one session, as batched by the node that serves the session stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub session_id: SessionId,
    pub load: u32,
}

/// The circuit breaker of agents.proto: CLOSED gets work, OPEN is quarantined until
/// `breaker_until_ms`, HALF_OPEN gets one trial task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    /// The current (or, when gone, the last) session.
    pub session_id: SessionId,
    pub live: bool,
    pub spec: AgentSpec,
    pub expires_at_ms: u64,
    pub registered_ms: u64,
    pub last_heartbeat_ms: u64,
    pub reported_load: u32,
    /// Tasks it holds a lease on now.
    pub running: BTreeSet<TaskId>,
    pub drained: bool,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub breaker_until_ms: u64,
    pub completed: u64,
    pub failed: u64,
    /// When the session ended (0 while live).
    pub gone_ms: u64,
}

impl Agent {
    /// Whether the scheduler may give this agent one more task now (capabilities aside).
    pub fn accepts_work(&self) -> bool {
        self.live
            && !self.drained
            && match self.breaker {
                BreakerState::Closed => self.running.len() < self.spec.max_concurrent as usize,
                BreakerState::Open => false,
                BreakerState::HalfOpen => self.running.is_empty(),
            }
    }

    /// How many more tasks the agent can take now.
    pub fn free_slots(&self) -> usize {
        if !self.accepts_work() {
            return 0;
        }
        match self.breaker {
            BreakerState::HalfOpen => 1,
            _ => (self.spec.max_concurrent as usize).saturating_sub(self.running.len()),
        }
    }

    pub fn has_capabilities(&self, needed: &BTreeSet<String>) -> bool {
        needed.is_subset(&self.spec.capabilities)
    }

    /// A success closes the breaker (agents.proto, "Circuit breaker").
    pub(super) fn breaker_success(&mut self) {
        self.consecutive_failures = 0;
        self.breaker = BreakerState::Closed;
        self.breaker_until_ms = 0;
    }

    /// Counts a failed attempt. Returns the time the breaker reopens when this failure opened it.
    pub(super) fn breaker_failure(&mut self, now_ms: u64) -> Option<u64> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let threshold = self.spec.breaker_failures.max(1);
        let opens = match self.breaker {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.consecutive_failures >= threshold,
            BreakerState::Open => false,
        };
        if !opens {
            return None;
        }
        self.breaker = BreakerState::Open;
        self.breaker_until_ms = now_ms.saturating_add(self.spec.breaker_cooldown_ms);
        Some(self.breaker_until_ms)
    }
}
