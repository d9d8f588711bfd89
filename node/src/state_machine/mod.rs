//! The replicated data model: commands in, responses out, deterministically.
//!
//! Nothing here may read a clock, draw randomness or do I/O: every node applies the same log to
//! the same state and must reach the same result, also after a restart. The leader stamps its
//! time into each command (`Request::now_ms`); apply only ever uses that.

pub mod barriers;
pub mod command;
pub mod coordination;
pub mod format;
pub mod history;
pub mod kv;
pub mod locks;
pub mod primitive;
pub mod sessions;
pub mod topics;
pub mod transaction;
pub mod workflows;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use barriers::{BarrierCommand, BarrierResponse, Barriers};
pub use command::{Command, Compare, Fence, Request, RequestId, Response, TxnOp};
pub use coordination::{Agents, CoordCommand, CoordResponse, Tasks};
use coordination::{CoordEvent, CoordStats, Decisions, EventRing, SessionId, TaskId};
pub use history::{Change, Event, EventKind, History};
pub use kv::{KeyValue, KvStore};
pub use locks::{LockCommand, LockKind, LockResponse, Locks};
use primitive::{Ctx, Effect, Primitive};
use sessions::{Lookup, Sessions};
pub use topics::{TopicCommand, TopicResponse, Topics};
pub use transaction::{Transaction, TransactionResponse};
pub use workflows::{WorkflowCommand, WorkflowResponse, Workflows};

use crate::limits::{STORE_BYTES_MAX, STORE_KEYS_MAX};

/// How much of the past one node keeps for its streams. Neither bound changes what apply does,
/// only how far back a watch can resume on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Revisions of KV change history (--watch-history; also bounded by WATCH_HISTORY_BYTES_MAX).
    pub history_revisions_max: usize,
    /// Coordination events (--coord-events, COORD_EVENTS_MAX by default).
    pub coord_events_max: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    /// Log index of the last entry applied (openraft's first entry has index 0).
    last_index: Option<u64>,
    /// The store revision: bumped by one for every applied command that changed at least one key.
    revision: u64,
    /// The greatest leader time seen; cluster time never goes backwards here.
    now_ms: u64,
    /// The coordination events streams follow, every primitive's, numbered in apply order.
    events: EventRing,
    kv: KvStore,
    sessions: Sessions,
    history: History,
    agents: Agents,
    tasks: Tasks,
    decisions: Decisions,
    locks: Locks,
    barriers: Barriers,
    workflows: Workflows,
    topics: Topics,
}

impl StateMachine {
    pub fn new(history_revisions_max: usize) -> Self {
        StateMachine {
            history: History::new(history_revisions_max),
            ..StateMachine::default()
        }
    }

    /// Applies one committed application entry at log index `index`.
    pub fn apply(&mut self, index: u64, request: &Request) -> Response {
        self.advance(index);
        self.now_ms = self.now_ms.max(request.now_ms);
        let Some(id) = request.request_id else {
            return self.execute_fenced(request);
        };
        match self.sessions.lookup(&id) {
            Lookup::Duplicate(response) => response,
            Lookup::Expired => Response::RequestIdExpired {
                revision: self.revision,
            },
            Lookup::Apply => {
                let response = self.execute_fenced(request);
                self.sessions.record(&id, self.now_ms, response.clone());
                response
            }
        }
    }

    /// A command without a request id (internal ones; tests): the fence is still checked.
    fn execute_fenced(&mut self, request: &Request) -> Response {
        match &request.fence {
            Some(fence) if !self.locks.holds(fence.kind, &fence.name, fence.token) => {
                Response::FenceLost {
                    revision: self.revision,
                    reason: format!(
                        "lock lost: token {} does not hold {} {:?}; nothing was applied",
                        fence.token,
                        fence.kind.noun(),
                        fence.name
                    ),
                }
            }
            _ => self.execute(&request.command),
        }
    }

    /// Records a blank or membership entry: it changes nothing but the applied index.
    pub fn apply_empty(&mut self, index: u64) -> Response {
        self.advance(index);
        Response::Empty
    }

    fn advance(&mut self, index: u64) {
        assert!(
            Some(index) > self.last_index,
            "log applied out of order: index {index} after {:?}",
            self.last_index
        );
        self.last_index = Some(index);
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn last_index(&self) -> Option<u64> {
        self.last_index
    }

    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.kv.get(key)
    }

    pub fn list(&self, prefix: &[u8], start_after: &[u8], limit: usize) -> (Vec<KeyValue>, bool) {
        self.kv.list(prefix, start_after, limit)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Bounds what this copy keeps for streams: node options, so a state restored from a peer's
    /// snapshot takes this node's bounds, not the peer's.
    pub fn set_retention(&mut self, retention: Retention) {
        self.history
            .set_revisions_max(retention.history_revisions_max);
        self.events.set_max(retention.coord_events_max);
    }

    pub fn key_count(&self) -> u64 {
        self.kv.key_count()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.client_count()
    }

    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// Counts over agents, tasks and decisions.
    pub fn coord_stats(&self) -> CoordStats {
        CoordStats {
            agents_live: self.agents.live_count() as u64,
            decisions_open: self.decisions.open_count() as u64,
            ..self.tasks.stats()
        }
    }

    /// The assignments the leader should propose now, at most `max` (`Tasks::plan_assignments`
    /// over every agent).
    pub fn plan_assignments(&self, now_ms: u64, max: usize) -> Vec<(TaskId, SessionId)> {
        self.tasks.plan_assignments(self.agents.iter(), now_ms, max)
    }

    /// Cluster time: the greatest leader stamp applied so far.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The sequence of the last coordination event (0 before any).
    pub fn last_event_seq(&self) -> u64 {
        self.events.last_seq()
    }

    /// Every coordination event after `seq`, or `Err(oldest seq still kept)` when `seq + 1` fell
    /// out of the ring.
    pub fn events_after(&self, seq: u64) -> Result<Vec<&CoordEvent>, u64> {
        self.events.after(seq)
    }

    /// A digest of the key-value content, the revision and the coordination state: equal on
    /// replicas with equal state.
    pub fn digest(&self) -> u64 {
        let (last_task_id, last_token) = self.tasks.last_ids();
        let counters =
            coordination::counters_digest(last_task_id, self.agents.last_session_id(), last_token);
        let agents_and_tasks = self.agents.digest() ^ self.tasks.digest() ^ counters;
        self.kv.digest()
            ^ self.revision.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ agents_and_tasks.rotate_left(17)
            ^ self.decisions.digest().rotate_left(23)
            ^ self.locks.digest().rotate_left(29)
            ^ self.barriers.digest().rotate_left(41)
            ^ self.workflows.digest().rotate_left(47)
            ^ self.topics.digest().rotate_left(53)
            ^ self.events.last_seq().wrapping_mul(0xff51_afd7_ed55_8ccd)
    }

    fn execute(&mut self, command: &Command) -> Response {
        match command {
            Command::Put {
                key,
                value,
                session_id,
            } => self.put(key, value, *session_id),
            Command::Delete { key } => self.delete(key),
            Command::CompareAndSwap {
                key,
                expected_mod_revision,
                value,
            } => self.compare_and_swap(key, *expected_mod_revision, value.as_deref()),
            Command::Txn { compares, ops } => self.txn(compares, ops),
            Command::Coordination(command) => self.coordinate(command),
            Command::Locks(command) => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events).with_agents(&self.agents);
                let response = self.locks.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                Response::Locks {
                    revision: self.revision,
                    response,
                }
            }
            Command::Barriers(command) => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events).with_agents(&self.agents);
                let response = self.barriers.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                Response::Barriers {
                    revision: self.revision,
                    response,
                }
            }
            Command::Workflows(command) => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events);
                let response = self.workflows.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                Response::Workflows {
                    revision: self.revision,
                    response,
                }
            }
            Command::Topics(command) => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events);
                let response = self.topics.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                Response::Topics {
                    revision: self.revision,
                    response,
                }
            }
            Command::Transaction(transaction) => self.transaction(transaction),
        }
    }

    /// Routes effects to every primitive: to the coordination primitives first (and what they
    /// raise in turn), then all of them to the others.
    fn route(&mut self, effects: Vec<Effect>) {
        let mut routed = Vec::new();
        self.route_coordination(effects, &mut routed);
        self.route_others(routed);
    }

    /// Routes effects, in the order raised, to the coordination primitives, and what they raise
    /// reacting to them too, until none is left. Every effect routed is appended to `routed`, for
    /// the others.
    ///
    /// One queue, first in first out, for the whole entry: so a round trip between primitives
    /// completes within it. A workflow step that starts raises `SubmitStepTasks`; the tasks
    /// submit and answer `StepTaskSubmitted`, which reaches the workflows later in the same
    /// loop; a task that ends raises `StepTaskFinished`, and what the workflow starts or cancels
    /// in response goes round again. Each round is driven by a committed change (a verb, a
    /// timer, a command), and each step starts at most once per run, so the queue drains.
    fn route_coordination(&mut self, effects: Vec<Effect>, routed: &mut Vec<Effect>) {
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            queue.extend(self.coordination_on_effect(&effect));
            routed.push(effect);
        }
    }

    /// One effect to each coordination primitive in the tier's order (tasks, agents, decisions,
    /// workflows; see `Parts`), each lent the views it is lent for its own commands: the tasks
    /// read the agents and the gating decisions when they submit a workflow's step tasks, the
    /// decisions the live agents when they open a step's decision. Returns what they raised, in
    /// order.
    fn coordination_on_effect(&mut self, effect: &Effect) -> Vec<Effect> {
        let now_ms = self.now_ms;
        let mut ctx = Ctx::new(now_ms, &mut self.events)
            .with_agents(&self.agents)
            .with_decisions(&self.decisions);
        self.tasks.on_effect(&mut ctx, effect);
        let mut raised = ctx.take_effects();
        let mut ctx = Ctx::new(now_ms, &mut self.events);
        self.agents.on_effect(&mut ctx, effect);
        raised.extend(ctx.take_effects());
        let mut ctx = Ctx::new(now_ms, &mut self.events).with_agents(&self.agents);
        self.decisions.on_effect(&mut ctx, effect);
        raised.extend(ctx.take_effects());
        let mut ctx = Ctx::new(now_ms, &mut self.events);
        self.workflows.on_effect(&mut ctx, effect);
        raised.extend(ctx.take_effects());
        raised
    }

    /// Routes effects to the keys, locks and barriers. The keys of every session that ended go
    /// in one revision (none when there were none).
    fn route_others(&mut self, effects: Vec<Effect>) {
        let mut deleted = Vec::new();
        let mut raised = Vec::new();
        for effect in &effects {
            self.kv_on_effect(effect, &mut deleted);
            let mut parts = self.parts();
            for primitive in parts.others.iter_mut() {
                primitive.on_effect(&mut parts.ctx, effect);
            }
            raised.extend(parts.ctx.take_effects());
        }
        if !deleted.is_empty() {
            self.commit_revision(deleted);
        }
        if !raised.is_empty() {
            self.route(raised);
        }
    }

    /// The keys' reaction to an effect: a session's end deletes the keys attached to it, adding
    /// their delete events to `deleted` for the next revision.
    fn kv_on_effect(&mut self, effect: &Effect, deleted: &mut Vec<Event>) {
        let Effect::SessionEnded { session_id, .. } = effect else {
            return;
        };
        let revision = self.revision + 1;
        for key in self.kv.session_keys(*session_id) {
            if self.kv.remove(&key).is_some() {
                deleted.push(delete_event(&key, revision));
            }
        }
    }

    /// The state machine borrowed apart: a context for one call, and the primitives in their
    /// two tiers.
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            ctx: Ctx::new(self.now_ms, &mut self.events),
            coordination: [
                &mut self.tasks,
                &mut self.agents,
                &mut self.decisions,
                &mut self.workflows,
            ],
            others: [&mut self.locks, &mut self.barriers, &mut self.topics],
        }
    }

    /// A `Tick`. First the coordination primitives: a new leader's refresh if asked, then every
    /// due timer of theirs in one order (each timer's effects routed among them at once), then
    /// garbage collection. Their effects then reach the others, which then refresh and tick.
    fn tick(&mut self, refresh: bool, retention: &coordination::Retention) -> CoordResponse {
        let mut routed = Vec::new();
        if refresh {
            let mut parts = self.parts();
            for primitive in parts.coordination.iter_mut() {
                primitive.refresh(&mut parts.ctx);
            }
            let effects = parts.ctx.take_effects();
            self.route_coordination(effects, &mut routed);
        }
        let fired = self.fire_coordination_timers(&mut routed);
        let mut parts = self.parts();
        let mut ctx = parts.ctx.with_retention(retention);
        for primitive in parts.coordination.iter_mut() {
            primitive.tick(&mut ctx);
        }
        let effects = ctx.take_effects();
        self.route_coordination(effects, &mut routed);
        self.route_others(routed);
        let mut parts = self.parts();
        let mut ctx = parts.ctx.with_retention(retention);
        for primitive in parts.others.iter_mut() {
            if refresh {
                primitive.refresh(&mut ctx);
            }
            primitive.tick(&mut ctx);
        }
        let effects = ctx.take_effects();
        self.route(effects);
        CoordResponse::Ticked { fired }
    }

    /// Fires the coordination primitives' due timers, earliest first over all of them, routing
    /// each one's effects among them before the next. Returns how many fired.
    fn fire_coordination_timers(&mut self, routed: &mut Vec<Effect>) -> u64 {
        let mut fired = 0;
        loop {
            let mut parts = self.parts();
            let now_ms = parts.ctx.now_ms;
            let due = parts
                .coordination
                .iter()
                .enumerate()
                .filter_map(|(i, primitive)| primitive.first_timer().map(|timer| (timer, i)))
                .min()
                .filter(|(timer, _)| timer.0 <= now_ms);
            let Some((timer, i)) = due else {
                return fired;
            };
            parts.coordination[i].fire_timer(&mut parts.ctx, timer);
            fired += 1;
            let effects = parts.ctx.take_effects();
            self.route_coordination(effects, routed);
        }
    }

    /// The earliest cluster time at which a `Tick` would change something, over every primitive.
    pub fn next_due_ms(&self) -> Option<u64> {
        let primitives: [&dyn Primitive; 7] = [
            &self.agents,
            &self.tasks,
            &self.decisions,
            &self.workflows,
            &self.locks,
            &self.barriers,
            &self.topics,
        ];
        primitives
            .into_iter()
            .filter_map(|primitive| primitive.next_due_ms(self.now_ms))
            .min()
    }

    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    pub fn barriers(&self) -> &Barriers {
        &self.barriers
    }

    pub fn workflows(&self) -> &Workflows {
        &self.workflows
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// A coordination command: `Tick` drives every primitive; any other goes to the primitive
    /// that owns it, and the effects it raised are routed.
    fn coordinate(&mut self, command: &CoordCommand) -> Response {
        let response = match command {
            CoordCommand::Tick { refresh, retention } => self.tick(*refresh, retention),
            CoordCommand::RegisterAgent(_)
            | CoordCommand::Heartbeats { .. }
            | CoordCommand::CloseSession { .. }
            | CoordCommand::SetDrained { .. } => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events);
                let response = self.agents.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                response
            }
            CoordCommand::Propose(_) | CoordCommand::Vote { .. } => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events).with_agents(&self.agents);
                let response = self.decisions.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                response
            }
            CoordCommand::Submit { .. }
            | CoordCommand::Assign { .. }
            | CoordCommand::Complete { .. }
            | CoordCommand::Fail { .. }
            | CoordCommand::ExtendLease { .. }
            | CoordCommand::Progress { .. }
            | CoordCommand::Release { .. }
            | CoordCommand::Cancel { .. }
            | CoordCommand::Redrive { .. }
            | CoordCommand::Purge { .. }
            | CoordCommand::Delegate { .. } => {
                let mut ctx = Ctx::new(self.now_ms, &mut self.events)
                    .with_agents(&self.agents)
                    .with_decisions(&self.decisions);
                let response = self.tasks.apply(&mut ctx, command);
                let effects = ctx.take_effects();
                self.route(effects);
                response
            }
        };
        Response::Coordination {
            revision: self.revision,
            response,
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8], session_id: u64) -> Response {
        if session_id != 0 && !self.agents.session_live(session_id) {
            return Response::SessionNotLive {
                revision: self.revision,
                session_id,
            };
        }
        if let Err(reason) = self.check_quota(&[(key, Some(value))]) {
            return Response::QuotaExceeded {
                revision: self.revision,
                reason,
            };
        }
        let revision = self.revision + 1;
        let (written, previous) = self.kv.put(key, value.to_vec(), revision, session_id);
        self.commit_revision(vec![put_event(written)]);
        Response::Put {
            revision,
            previous: previous.map(|kv| kv.without_value()),
        }
    }

    fn delete(&mut self, key: &[u8]) -> Response {
        let Some(previous) = self.kv.remove(key) else {
            return Response::Delete {
                revision: self.revision,
                previous: None,
            };
        };
        let revision = self.revision + 1;
        self.commit_revision(vec![delete_event(key, revision)]);
        Response::Delete {
            revision,
            previous: Some(previous.without_value()),
        }
    }

    fn compare_and_swap(&mut self, key: &[u8], expected: u64, value: Option<&[u8]>) -> Response {
        if self.kv.mod_revision(key) != expected {
            return Response::CompareAndSwap {
                revision: self.revision,
                succeeded: false,
                current: self.kv.get(key).map(|kv| kv.without_value()),
            };
        }
        match value {
            Some(value) => match self.put(key, value, 0) {
                Response::Put { revision, .. } => Response::CompareAndSwap {
                    revision,
                    succeeded: true,
                    current: self.kv.get(key).map(|kv| kv.without_value()),
                },
                quota_exceeded => quota_exceeded,
            },
            None => {
                let revision = match self.delete(key) {
                    Response::Delete { revision, .. } => revision,
                    other => unreachable!("delete answers Delete, not {other:?}"),
                };
                Response::CompareAndSwap {
                    revision,
                    succeeded: true,
                    current: None,
                }
            }
        }
    }

    fn txn(&mut self, compares: &[Compare], ops: &[TxnOp]) -> Response {
        let failed_compares: Vec<(u32, u64)> = compares
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let current = self.kv.mod_revision(&c.key);
                (current != c.mod_revision).then_some((i as u32, current))
            })
            .collect();
        if !failed_compares.is_empty() {
            return Response::Txn {
                revision: self.revision,
                succeeded: false,
                failed_compares,
            };
        }
        let writes: Vec<(&[u8], Option<&[u8]>)> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => (key.as_slice(), Some(value.as_slice())),
                TxnOp::Delete { key } => (key.as_slice(), None),
            })
            .collect();
        if let Err(reason) = self.check_quota(&writes) {
            return Response::QuotaExceeded {
                revision: self.revision,
                reason,
            };
        }
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for (key, value) in writes {
            match value {
                Some(value) => {
                    events.push(put_event(self.kv.put(key, value.to_vec(), revision, 0).0))
                }
                None => {
                    if self.kv.remove(key).is_some() {
                        events.push(delete_event(key, revision));
                    }
                }
            }
        }
        let revision = if events.is_empty() {
            self.revision
        } else {
            self.commit_revision(events);
            revision
        };
        Response::Txn {
            revision,
            succeeded: true,
            failed_compares: Vec::new(),
        }
    }

    /// Rejects a set of writes (distinct keys; `None` deletes) that would take the store past
    /// STORE_KEYS_MAX or STORE_BYTES_MAX. Writes that shrink the store always pass.
    fn check_quota(&self, writes: &[(&[u8], Option<&[u8]>)]) -> Result<(), String> {
        let mut keys = self.kv.key_count() as i64;
        let mut bytes = self.kv.bytes() as i64;
        for (key, value) in writes {
            let old = self.kv.get(key);
            if let Some(old) = &old {
                keys -= 1;
                bytes -= (key.len() + old.value.len()) as i64;
            }
            if let Some(value) = value {
                keys += 1;
                bytes += (key.len() + value.len()) as i64;
            }
        }
        if keys > self.kv.key_count() as i64 && keys as u64 > STORE_KEYS_MAX {
            return Err(format!(
                "the store holds its maximum of {STORE_KEYS_MAX} keys (STORE_KEYS_MAX)"
            ));
        }
        if bytes > self.kv.bytes() as i64 && bytes as u64 > STORE_BYTES_MAX {
            return Err(format!(
                "the store holds its maximum of {STORE_BYTES_MAX} key and value bytes (STORE_BYTES_MAX)"
            ));
        }
        Ok(())
    }

    fn commit_revision(&mut self, events: Vec<Event>) {
        self.revision += 1;
        self.history.push(Change {
            revision: self.revision,
            events,
        });
    }
}

/// The state machine borrowed apart for one call (`StateMachine::parts`).
struct Parts<'a> {
    ctx: Ctx<'a>,
    /// Tasks, agents, decisions, workflows: their timers fire in one order, and their effects
    /// reach each other at once, in this order (`coordination_on_effect`). The tasks come before
    /// the agents: a session's end revokes its leases (task events) before the agents announce
    /// it (`SessionClosed`), as streams expect. The workflows come last and are in this tier
    /// because they converse with the tasks and decisions within one entry (`SubmitStepTasks`,
    /// `StepTaskFinished`, ...): they see a task's or decision's end after the tasks gated on
    /// the same decision did. Their timers (deadlines, partial joins) fire in their `tick`, after
    /// the others' timers and garbage collection, and are not counted in `fired`.
    coordination: [&'a mut dyn Primitive; 4],
    /// Locks, barriers and topics.
    others: [&'a mut dyn Primitive; 3],
}

fn put_event(kv: KeyValue) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
    }
}

fn delete_event(key: &[u8], revision: u64) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_vec(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            session_id: 0,
        },
    }
}

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trace_tests;
