//! Agents: the agents primitive. Who is registered, whether its session is live, what it runs,
//! its breaker, and the session expiry and breaker timers.
//!
//! What an agent runs is the tasks' business: `Effect::LeaseGranted` and `Effect::LeaseEnded`
//! keep `Agent::running` and the success and failure counts (and so the breaker). A session that
//! ends (expired, closed or replaced) raises `Effect::SessionEnded`, on which the tasks revoke
//! its leases, and then this primitive announces it (`SessionClosed`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    AttemptOutcome, CoordCommand, CoordEventKind, CoordResponse, Retention, SessionId, TaskId,
    Timer, TimerKind,
};
use crate::limits::AGENTS_MAX;
use crate::state_machine::kv::Fnv;
use crate::state_machine::primitive::{AgentView, Ctx, Effect, Primitive};

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
    /// Tasks it holds a lease on now (`Effect::LeaseGranted` and `LeaseEnded` keep it).
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
    /// Whether the scheduler may give this agent one more task now (capabilities aside), when
    /// it holds `running` leases (the tasks' count, which is current within a command).
    pub fn accepts_work(&self, running: usize) -> bool {
        self.live
            && !self.drained
            && match self.breaker {
                BreakerState::Closed => running < self.spec.max_concurrent as usize,
                BreakerState::Open => false,
                BreakerState::HalfOpen => running == 0,
            }
    }

    /// How many more tasks the agent can take now, when it holds `running` leases.
    pub fn free_slots(&self, running: usize) -> usize {
        if !self.accepts_work(running) {
            return 0;
        }
        match self.breaker {
            BreakerState::HalfOpen => 1,
            _ => (self.spec.max_concurrent as usize).saturating_sub(running),
        }
    }

    pub fn has_capabilities(&self, needed: &BTreeSet<String>) -> bool {
        needed.is_subset(&self.spec.capabilities)
    }

    /// A success closes the breaker (agents.proto, "Circuit breaker").
    fn breaker_success(&mut self) {
        self.consecutive_failures = 0;
        self.breaker = BreakerState::Closed;
        self.breaker_until_ms = 0;
    }

    /// Counts a failed attempt. Returns the time the breaker reopens when this failure opened it.
    fn breaker_failure(&mut self, now_ms: u64) -> Option<u64> {
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

/// Why a session ended; decides whether its leases count as attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Heartbeats stopped for the TTL: leases revoked, attempts counted.
    Expired,
    /// The agent closed it: leases given back, attempts not counted.
    Closed,
    /// A new registration of the same name replaced it: leases revoked, attempts counted.
    Replaced,
}

impl SessionEnd {
    /// Whether the leases the session held count as attempts (all but a close by the agent).
    pub fn counts_attempts(self) -> bool {
        self != SessionEnd::Closed
    }

    pub fn reason(self) -> &'static str {
        match self {
            SessionEnd::Expired => "session expired",
            SessionEnd::Closed => "session closed",
            SessionEnd::Replaced => "session replaced by a new registration",
        }
    }
}

/// The agents primitive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agents {
    /// The last session id issued (the sequence starts at 1).
    last_session_id: SessionId,
    agents: BTreeMap<String, Agent>,
    /// Each agent's current session -> its name (live or gone).
    sessions: BTreeMap<SessionId, String>,
    /// Agents whose session is gone, by (gone at, name), for retention.
    gone_agents: BTreeSet<(u64, String)>,
    /// Session expiries of live agents, and the end of open breakers' cool-down.
    timers: BTreeSet<Timer>,
    /// The retention of the last Tick: what `next_due_ms` plans garbage collection by.
    retention: Retention,
}

impl Agents {
    /// Applies one agent command.
    pub fn apply(&mut self, ctx: &mut Ctx, command: &CoordCommand) -> CoordResponse {
        match command {
            CoordCommand::RegisterAgent(spec) => self.register(ctx, spec),
            CoordCommand::Heartbeats { beats } => self.heartbeats(ctx.now_ms, beats),
            CoordCommand::CloseSession { session_id } => self.close_session(ctx, *session_id),
            CoordCommand::SetDrained { name, drained } => self.set_drained(name, *drained),
            other => unreachable!("{} is not an agents command", other.name()),
        }
    }

    /// Whether `session_id` is the live session of an agent (ephemeral keys may attach to it).
    pub fn session_live(&self, session_id: SessionId) -> bool {
        self.agent_by_session(session_id).is_some_and(|a| a.live)
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// The agent whose current session (live or gone) is `session_id`.
    pub fn agent_by_session(&self, session_id: SessionId) -> Option<&Agent> {
        let name = self.sessions.get(&session_id)?;
        self.agents
            .get(name)
            .filter(|agent| agent.session_id == session_id)
    }

    /// Every agent, live or gone, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// How many agents have a live session.
    pub fn live_count(&self) -> usize {
        self.agents.values().filter(|a| a.live).count()
    }

    /// The last session id issued (0 before any).
    pub fn last_session_id(&self) -> SessionId {
        self.last_session_id
    }

    fn register(&mut self, ctx: &mut Ctx, spec: &AgentSpec) -> CoordResponse {
        let now_ms = ctx.now_ms;
        if spec.name.is_empty() {
            return invalid("name: must not be empty");
        }
        if spec.ttl_ms == 0 {
            return invalid("ttl_ms: must be positive");
        }
        if spec.max_concurrent == 0 {
            return invalid("max_concurrent: must be positive");
        }
        if let Err(refused) = self.make_room(ctx, spec) {
            return refused;
        }
        // A gone agent of that name is overwritten; its counters and drain survive.
        let previous = self.forget_agent(&spec.name);
        self.last_session_id += 1;
        let session_id = self.last_session_id;
        let expires_at_ms = now_ms.saturating_add(spec.ttl_ms);
        let mut spec = spec.clone();
        spec.replace = false;
        let agent = Agent {
            name: spec.name.clone(),
            session_id,
            live: true,
            expires_at_ms,
            registered_ms: now_ms,
            last_heartbeat_ms: now_ms,
            reported_load: 0,
            running: BTreeSet::new(),
            drained: previous.as_ref().is_some_and(|a| a.drained),
            breaker: BreakerState::Closed,
            consecutive_failures: 0,
            breaker_until_ms: 0,
            completed: previous.as_ref().map_or(0, |a| a.completed),
            failed: previous.as_ref().map_or(0, |a| a.failed),
            gone_ms: 0,
            spec,
        };
        self.sessions.insert(session_id, agent.name.clone());
        self.timers
            .insert((expires_at_ms, TimerKind::SessionExpiry, session_id));
        let ttl_ms = agent.spec.ttl_ms;
        self.agents.insert(agent.name.clone(), agent);
        CoordResponse::Registered {
            session_id,
            ttl_ms,
            expires_at_ms,
        }
    }

    /// Clears the way for registering `spec`: a live session of that name is replaced (or the
    /// registration refused without `replace`), and at AGENTS_MAX the agent gone longest is
    /// forgotten (only live agents are refused).
    fn make_room(&mut self, ctx: &mut Ctx, spec: &AgentSpec) -> Result<(), CoordResponse> {
        match self.agents.get(&spec.name) {
            Some(agent) if agent.live && !spec.replace => Err(CoordResponse::AgentExists {
                name: spec.name.clone(),
            }),
            Some(agent) if agent.live => {
                let session_id = agent.session_id;
                self.end_session(ctx, session_id, SessionEnd::Replaced);
                Ok(())
            }
            Some(_) => Ok(()),
            None if self.agents.len() < AGENTS_MAX => Ok(()),
            None => {
                let Some((_, oldest)) = self.gone_agents.first().cloned() else {
                    return Err(CoordResponse::QuotaExceeded {
                        reason: format!(
                            "the cluster holds its maximum of {AGENTS_MAX} live agents (AGENTS_MAX)"
                        ),
                    });
                };
                self.forget_agent(&oldest);
                Ok(())
            }
        }
    }

    /// Extends each live session by its TTL; unknown and gone sessions are ignored.
    fn heartbeats(&mut self, now_ms: u64, beats: &[Beat]) -> CoordResponse {
        for beat in beats {
            let Some(name) = self.sessions.get(&beat.session_id) else {
                continue;
            };
            let Some(agent) = self.agents.get_mut(name) else {
                continue;
            };
            if !agent.live || agent.session_id != beat.session_id {
                continue;
            }
            let old = agent.expires_at_ms;
            agent.expires_at_ms = old.max(now_ms.saturating_add(agent.spec.ttl_ms));
            agent.last_heartbeat_ms = now_ms;
            agent.reported_load = beat.load;
            let new = agent.expires_at_ms;
            self.timers
                .remove(&(old, TimerKind::SessionExpiry, beat.session_id));
            self.timers
                .insert((new, TimerKind::SessionExpiry, beat.session_id));
        }
        CoordResponse::Ok
    }

    fn close_session(&mut self, ctx: &mut Ctx, session_id: SessionId) -> CoordResponse {
        if !self.session_live(session_id) {
            return CoordResponse::UnknownSession { session_id };
        }
        let released = self.end_session(ctx, session_id, SessionEnd::Closed);
        CoordResponse::Closed { released }
    }

    fn set_drained(&mut self, name: &str, drained: bool) -> CoordResponse {
        match self.agents.get_mut(name) {
            Some(agent) => {
                agent.drained = drained;
                CoordResponse::Ok
            }
            None => CoordResponse::UnknownAgent {
                name: name.to_string(),
            },
        }
    }

    /// The session expiry timer: ends the session if it is still live and due.
    fn session_expired(&mut self, ctx: &mut Ctx, session_id: SessionId) {
        let now_ms = ctx.now_ms;
        let due = self
            .agent_by_session(session_id)
            .is_some_and(|a| a.live && a.expires_at_ms <= now_ms);
        if due {
            self.end_session(ctx, session_id, SessionEnd::Expired);
        }
    }

    /// Ends a live session: the agent is gone and raises `Effect::SessionEnded`, on which the
    /// tasks revoke its leases (counted unless it closed the session itself) and the keys and
    /// locks attached to it go. Returns the leases it held.
    fn end_session(&mut self, ctx: &mut Ctx, session_id: SessionId, end: SessionEnd) -> u32 {
        let now_ms = ctx.now_ms;
        let name = self
            .sessions
            .get(&session_id)
            .cloned()
            .expect("only live sessions are ended");
        let agent = self
            .agents
            .get_mut(&name)
            .expect("a session names an agent");
        debug_assert!(agent.live && agent.session_id == session_id);
        agent.live = false;
        agent.gone_ms = now_ms;
        let held = std::mem::take(&mut agent.running).len();
        let expiry = (agent.expires_at_ms, TimerKind::SessionExpiry, session_id);
        let breaker = (agent.breaker == BreakerState::Open).then_some((
            agent.breaker_until_ms,
            TimerKind::BreakerReopen,
            session_id,
        ));
        self.timers.remove(&expiry);
        if let Some(breaker) = breaker {
            self.timers.remove(&breaker);
        }
        self.gone_agents.insert((now_ms, name.clone()));
        ctx.raise(Effect::SessionEnded {
            session_id,
            agent: name,
            end,
        });
        u32::try_from(held).expect("at most max_concurrent leases")
    }

    /// Announces a session's end (`SessionClosed`), after the tasks revoked its leases: their
    /// events come first, as streams expect.
    fn session_closed(
        &mut self,
        ctx: &mut Ctx,
        session_id: SessionId,
        agent: &str,
        end: SessionEnd,
    ) {
        ctx.event(CoordEventKind::SessionClosed {
            session_id,
            agent: agent.to_string(),
            reason: end.reason().to_string(),
        });
    }

    /// Drops an agent (and its session mapping) entirely; returns it.
    fn forget_agent(&mut self, name: &str) -> Option<Agent> {
        let agent = self.agents.remove(name)?;
        self.sessions.remove(&agent.session_id);
        self.gone_agents
            .remove(&(agent.gone_ms, agent.name.clone()));
        if agent.live {
            self.timers.remove(&(
                agent.expires_at_ms,
                TimerKind::SessionExpiry,
                agent.session_id,
            ));
        }
        if agent.breaker == BreakerState::Open {
            self.timers.remove(&(
                agent.breaker_until_ms,
                TimerKind::BreakerReopen,
                agent.session_id,
            ));
        }
        Some(agent)
    }

    /// The breaker timer: OPEN -> HALF_OPEN once the cool-down is over.
    fn breaker_half_open(&mut self, now_ms: u64, session_id: SessionId) {
        let Some(name) = self.sessions.get(&session_id) else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(name) {
            if agent.session_id == session_id
                && agent.breaker == BreakerState::Open
                && agent.breaker_until_ms <= now_ms
            {
                agent.breaker = BreakerState::HalfOpen;
            }
        }
    }

    /// A task leased to `session_id`: its agent runs it.
    fn lease_granted(&mut self, session_id: SessionId, task_id: TaskId) {
        if let Some(agent) = self.current_agent_mut(session_id) {
            agent.running.insert(task_id);
        }
    }

    /// A lease of `session_id` ended with `outcome`: its agent no longer runs the task, and a
    /// success or a failed attempt is counted (the breaker closes, or may open).
    fn lease_ended(
        &mut self,
        now_ms: u64,
        session_id: SessionId,
        task_id: TaskId,
        outcome: AttemptOutcome,
    ) {
        let Some(agent) = self.current_agent_mut(session_id) else {
            return;
        };
        agent.running.remove(&task_id);
        match outcome {
            AttemptOutcome::Succeeded => {
                agent.completed += 1;
                let reopen = (agent.breaker == BreakerState::Open).then_some((
                    agent.breaker_until_ms,
                    TimerKind::BreakerReopen,
                    session_id,
                ));
                agent.breaker_success();
                if let Some(reopen) = reopen {
                    self.timers.remove(&reopen);
                }
            }
            AttemptOutcome::Failed | AttemptOutcome::LeaseExpired => {
                agent.failed += 1;
                if let Some(until_ms) = agent.breaker_failure(now_ms) {
                    self.timers
                        .insert((until_ms, TimerKind::BreakerReopen, session_id));
                }
            }
            _ => {}
        }
    }

    /// The agent whose current session (live or gone) is `session_id`, for changing it.
    fn current_agent_mut(&mut self, session_id: SessionId) -> Option<&mut Agent> {
        let name = self.sessions.get(&session_id)?;
        self.agents
            .get_mut(name)
            .filter(|agent| agent.session_id == session_id)
    }

    /// Fires one timer (`Primitive::fire_timer` once it is disarmed).
    fn fire(&mut self, ctx: &mut Ctx, timer: Timer) {
        let (_, kind, session_id) = timer;
        match kind {
            TimerKind::SessionExpiry => self.session_expired(ctx, session_id),
            TimerKind::BreakerReopen => self.breaker_half_open(ctx.now_ms, session_id),
            other => unreachable!("{other:?} is not an agent timer"),
        }
    }

    /// A new leader's first tick: the heartbeats that could not reach anyone during the
    /// election must not cost agents their sessions.
    fn refresh_sessions(&mut self, now_ms: u64) {
        for agent in self.agents.values_mut().filter(|a| a.live) {
            let expires_at_ms = agent
                .expires_at_ms
                .max(now_ms.saturating_add(agent.spec.ttl_ms));
            let session_id = agent.session_id;
            let old = agent.expires_at_ms;
            agent.expires_at_ms = expires_at_ms;
            self.timers
                .remove(&(old, TimerKind::SessionExpiry, session_id));
            self.timers
                .insert((expires_at_ms, TimerKind::SessionExpiry, session_id));
        }
    }

    /// Forgets agents gone longer than the retention's `gone_agents_ms`.
    fn collect_garbage(&mut self, now_ms: u64) {
        let age_ms = self.retention.gone_agents_ms;
        while let Some((gone_ms, name)) = self.gone_agents.first().cloned() {
            if age_ms == 0 || gone_ms.saturating_add(age_ms) > now_ms {
                break;
            }
            self.forget_agent(&name);
        }
    }

    /// Every field encoded on its own, named, in declaration order: the snapshot's sections,
    /// which the golden tests pin one by one. Destructured, so a new field cannot be left out.
    #[cfg(test)]
    pub(crate) fn encoded_sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        use crate::raft::encode;
        let Agents {
            last_session_id,
            agents,
            sessions,
            gone_agents,
            timers,
            retention,
        } = self;
        vec![
            ("last_session_id", encode(last_session_id)),
            ("agents", encode(agents)),
            ("sessions", encode(sessions)),
            ("gone_agents", encode(gone_agents)),
            ("timers", encode(timers)),
            ("retention", encode(retention)),
        ]
    }
}

#[cfg(test)]
impl Agents {
    /// Recomputes the timers and the session and gone indexes from the agents and compares (for
    /// `coordination::tests`).
    pub(in crate::state_machine) fn check_invariants(&self) {
        let mut timers = BTreeSet::new();
        for agent in self.agents.values() {
            let session_id = agent.session_id;
            if agent.live {
                timers.insert((agent.expires_at_ms, TimerKind::SessionExpiry, session_id));
                if agent.breaker == BreakerState::Open {
                    timers.insert((agent.breaker_until_ms, TimerKind::BreakerReopen, session_id));
                }
            } else {
                assert!(agent.running.is_empty(), "a gone agent runs nothing");
                assert!(self
                    .gone_agents
                    .contains(&(agent.gone_ms, agent.name.clone())));
            }
            assert_eq!(
                self.sessions.get(&session_id),
                Some(&agent.name),
                "agent {}: session index",
                agent.name
            );
        }
        let gone = self.agents.values().filter(|a| !a.live).count();
        assert_eq!(self.gone_agents.len(), gone);
        assert_eq!(self.timers, timers, "agent timers");
    }
}

impl Primitive for Agents {
    /// Garbage collection by the `Tick`'s retention (the timers fire through `fire_timer`).
    fn tick(&mut self, ctx: &mut Ctx) {
        if let Some(retention) = ctx.retention() {
            self.retention = retention.clone();
        }
        self.collect_garbage(ctx.now_ms);
    }

    fn first_timer(&self) -> Option<Timer> {
        self.timers.first().copied()
    }

    fn fire_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        self.timers.remove(&timer);
        self.fire(ctx, timer);
        debug_assert!(
            !self.timers.contains(&timer),
            "a fired timer must not be rearmed at the same time: {timer:?}"
        );
    }

    fn refresh(&mut self, ctx: &mut Ctx) {
        self.refresh_sessions(ctx.now_ms);
    }

    /// A lease granted or ended counts for its agent; a session's end, once the tasks have
    /// revoked its leases, is announced.
    fn on_effect(&mut self, ctx: &mut Ctx, effect: &Effect) {
        match effect {
            Effect::SessionEnded {
                session_id,
                agent,
                end,
            } => self.session_closed(ctx, *session_id, agent, *end),
            Effect::LeaseGranted {
                session_id,
                task_id,
            } => self.lease_granted(*session_id, *task_id),
            Effect::LeaseEnded {
                session_id,
                task_id,
                outcome,
            } => self.lease_ended(ctx.now_ms, *session_id, *task_id, *outcome),
            Effect::DecisionClosed { .. }
            | Effect::SubmitStepTasks { .. }
            | Effect::StepTaskSubmitted { .. }
            | Effect::StepTaskFinished { .. }
            | Effect::CancelTasks { .. }
            | Effect::ProposeStepDecision { .. }
            | Effect::StepDecisionProposed { .. }
            | Effect::WithdrawDecision { .. }
            | Effect::TriggerSubmitTask { .. }
            | Effect::TriggerStartWorkflow { .. }
            | Effect::TriggerFired { .. } => {}
        }
    }

    /// The first timer, or when the agent gone longest is to be forgotten.
    fn next_due_ms(&self, _now_ms: u64) -> Option<u64> {
        let age_ms = self.retention.gone_agents_ms;
        let forget = (age_ms > 0)
            .then(|| self.gone_agents.first())
            .flatten()
            .map(|gone| gone.0.saturating_add(age_ms));
        [self.timers.first().map(|timer| timer.0), forget]
            .into_iter()
            .flatten()
            .min()
    }

    /// Agents (at most AGENTS_MAX) are digested here. The session counter is not: the state
    /// machine hashes it together with the tasks' (`coordination::counters_digest`).
    fn digest(&self) -> u64 {
        self.agents
            .values()
            .fold(0, |digest, agent| digest ^ agent_digest(agent))
    }
}

impl AgentView for Agents {
    fn session_live(&self, session_id: SessionId) -> bool {
        Agents::session_live(self, session_id)
    }

    fn live_agent(&self, session_id: SessionId) -> Option<&str> {
        self.agent_by_session(session_id)
            .filter(|agent| agent.live)
            .map(|agent| agent.name.as_str())
    }

    fn agent_by_session(&self, session_id: SessionId) -> Option<&Agent> {
        Agents::agent_by_session(self, session_id)
    }

    fn live_agents_with(&self, capability: &str) -> Vec<String> {
        self.agents
            .values()
            .filter(|a| a.live && a.spec.capabilities.contains(capability))
            .map(|a| a.name.clone())
            .collect()
    }
}

fn agent_digest(agent: &Agent) -> u64 {
    let mut hash = Fnv::default();
    hash.write(&(agent.name.len() as u64).to_be_bytes());
    hash.write(agent.name.as_bytes());
    for n in [
        agent.session_id,
        u64::from(agent.live),
        agent.expires_at_ms,
        u64::from(agent.drained),
        agent.breaker as u64,
        u64::from(agent.consecutive_failures),
        agent.completed,
        agent.failed,
    ] {
        hash.write(&n.to_be_bytes());
    }
    for id in &agent.running {
        hash.write(&id.to_be_bytes());
    }
    hash.finish()
}

fn invalid(reason: &str) -> CoordResponse {
    CoordResponse::Invalid {
        reason: reason.to_string(),
    }
}
