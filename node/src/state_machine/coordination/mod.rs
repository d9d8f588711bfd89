//! Agents, tasks and decisions: the coordination state the cluster replicates next to the keys.
//!
//! Like the rest of `state_machine`, this is a pure function of the log: time is the leader's
//! stamp (`now_ms`, passed in by `StateMachine`), maps are ordered, and every index is part of
//! the serialized state. The leader's scheduler reads it (`plan_assignments`, `next_due_ms`) and
//! proposes `Assign` and `Tick` entries; nothing here runs on its own.

pub mod agents;
pub mod decisions;
pub mod events;
pub mod tasks;

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use serde::{Deserialize, Serialize};

use super::kv::Fnv;
use super::primitive::{AgentView, Ctx, Effect, Primitive};

pub use agents::{Agent, AgentSpec, Beat, BreakerState, SessionEnd};
pub use decisions::{
    Decision, DecisionSpec, DecisionStatus, Decisions, Electorate, Rule, Tally, Vote,
};
pub use events::EventRing;
pub use tasks::{
    Attempt, AttemptOutcome, Backoff, DeadLetterReason, DeadLetterSelector, DecisionGate, Lease,
    Progress, ReadyKey, Retention, Task, TaskSpec, TaskState, SCAN_PER_QUEUE,
};

pub type TaskId = u64;
pub type SessionId = u64;
pub type DecisionId = u64;
pub type FencingToken = u64;

/// The coordination commands the log carries (inside `Command::Coordination`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordCommand {
    RegisterAgent(AgentSpec),
    Heartbeats {
        beats: Vec<Beat>,
    },
    CloseSession {
        session_id: SessionId,
    },
    SetDrained {
        name: String,
        drained: bool,
    },
    /// All or nothing.
    Submit {
        tasks: Vec<TaskSpec>,
    },
    /// Proposed by the leader's scheduler only.
    Assign {
        assignments: Vec<(TaskId, SessionId)>,
    },
    Complete {
        task_id: TaskId,
        token: FencingToken,
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    Fail {
        task_id: TaskId,
        token: FencingToken,
        error: String,
        retryable: bool,
        retry_after_ms: u64,
    },
    ExtendLease {
        task_id: TaskId,
        token: FencingToken,
        lease_ms: u64,
    },
    Progress {
        task_id: TaskId,
        token: FencingToken,
        percent: u32,
        message: String,
        checkpoint: String,
        extend_lease: bool,
    },
    Release {
        task_id: TaskId,
        token: FencingToken,
    },
    Cancel {
        task_id: TaskId,
        reason: String,
    },
    Redrive {
        selector: DeadLetterSelector,
    },
    Purge {
        selector: DeadLetterSelector,
    },
    Propose(DecisionSpec),
    Vote {
        session_id: SessionId,
        decision_id: DecisionId,
        choice: String,
        rationale: String,
    },
    /// Proposed by the leader when `next_due_ms() <= now`, and once (with refresh = true) right
    /// after it becomes leader. Fires every due timer at the stamped time; GCs by `retention`.
    Tick {
        refresh: bool,
        retention: Retention,
    },
}

impl CoordCommand {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CoordCommand::RegisterAgent(_) => "register_agent",
            CoordCommand::Heartbeats { .. } => "heartbeats",
            CoordCommand::CloseSession { .. } => "close_session",
            CoordCommand::SetDrained { .. } => "set_drained",
            CoordCommand::Submit { .. } => "submit",
            CoordCommand::Assign { .. } => "assign",
            CoordCommand::Complete { .. } => "complete",
            CoordCommand::Fail { .. } => "fail",
            CoordCommand::ExtendLease { .. } => "extend_lease",
            CoordCommand::Progress { .. } => "progress",
            CoordCommand::Release { .. } => "release",
            CoordCommand::Cancel { .. } => "cancel",
            CoordCommand::Redrive { .. } => "redrive",
            CoordCommand::Purge { .. } => "purge",
            CoordCommand::Propose(_) => "propose",
            CoordCommand::Vote { .. } => "vote",
            CoordCommand::Tick { .. } => "tick",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordResponse {
    Registered {
        session_id: SessionId,
        ttl_ms: u64,
        expires_at_ms: u64,
    },
    /// A live session exists and `replace` was not set.
    AgentExists {
        name: String,
    },
    Ok,
    UnknownSession {
        session_id: SessionId,
    },
    UnknownAgent {
        name: String,
    },
    UnknownTask {
        task_id: TaskId,
    },
    UnknownDecision {
        decision_id: DecisionId,
    },
    /// Per submitted task: its id and whether it already existed (idempotency hit).
    Submitted {
        results: Vec<(TaskId, bool)>,
    },
    /// None: that assignment was no longer valid and was skipped.
    Assigned {
        tokens: Vec<Option<FencingToken>>,
    },
    Verb {
        state: TaskState,
        lease_deadline_ms: u64,
    },
    /// A stale fencing token: nothing changed.
    LeaseLost {
        reason: String,
    },
    Canceled {
        canceled: bool,
        previous: TaskState,
    },
    DeadLetters {
        count: u64,
    },
    Closed {
        released: u32,
    },
    Proposed {
        decision_id: DecisionId,
    },
    Voted {
        decision_id: DecisionId,
    },
    /// Already voted, closed, not in the electorate, or the session is not live.
    VoteRefused {
        reason: String,
    },
    Invalid {
        reason: String,
    },
    QuotaExceeded {
        reason: String,
    },
    Ticked {
        fired: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: CoordEventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordEventKind {
    /// `state`, `attempts` and `lease` are the task's after the change (the task itself may have
    /// moved on).
    Task {
        task_id: TaskId,
        queue: String,
        kind: TaskEventKind,
        state: TaskState,
        attempts: u32,
        lease: Option<Lease>,
        revoked: Option<Revoked>,
    },
    Decision {
        decision_id: DecisionId,
        kind: DecisionEventKind,
    },
    SessionClosed {
        session_id: SessionId,
        agent: String,
        reason: String,
    },
    /// A lock, semaphore or election changed (`state_machine::locks`).
    Lock(super::locks::LockEvent),
    /// A barrier changed (`state_machine::barriers`).
    Barrier(super::barriers::BarrierEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskEventKind {
    Submitted,
    Assigned,
    Progress,
    LeaseExtended,
    Succeeded,
    Failed,
    RetryScheduled,
    Requeued,
    DeadLettered,
    Canceled,
    Redriven,
    Unblocked,
    Purged,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionEventKind {
    Proposed,
    Voted,
    Closed,
}

/// A lease taken away from a session: the session's stream tells the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub session_id: SessionId,
    pub token: FencingToken,
    /// True when the task was canceled (the agent should stop), false when only the lease is gone.
    pub canceled: bool,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// "": any queue.
    pub queue: String,
    /// Empty: any state.
    pub states: Vec<TaskState>,
    /// Every label given must match.
    pub labels: BTreeMap<String, String>,
    /// 0: any.
    pub parent_id: TaskId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordStats {
    pub tasks: u64,
    pub pending: u64,
    pub assigned: u64,
    pub dead_letters: u64,
    pub agents_live: u64,
    pub decisions_open: u64,
}

/// What a timer does when it fires. The order breaks ties between timers due at the same time.
/// Stored in the snapshot: codes in `state_machine/format.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    TaskDeadline,
    LeaseExpiry,
    SessionExpiry,
    TaskReady,
    DecisionDeadline,
    BreakerReopen,
}

/// (due at, what, task / session / decision id): the order in which a `Tick` fires the
/// coordination primitives' timers.
pub type Timer = (u64, TimerKind, u64);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coordination {
    /// The last ids and token issued (each sequence starts at 1).
    last_task_id: TaskId,
    last_session_id: SessionId,
    last_token: FencingToken,

    tasks: BTreeMap<TaskId, Task>,
    /// Tasks per state, indexed by `TaskState::index`.
    state_counts: [u64; 9],
    /// Every task by (queue, state), for listings. Empty sets are removed.
    by_queue_state: BTreeMap<(String, TaskState), BTreeSet<TaskId>>,
    /// PENDING tasks per queue, in the order they should run. Empty queues are removed.
    ready: BTreeMap<String, BTreeSet<ReadyKey>>,
    timers: BTreeSet<Timer>,
    /// SUCCEEDED and CANCELED tasks by (finished at, id), for retention.
    finished: BTreeSet<(u64, TaskId)>,
    /// DEAD_LETTERED and EXPIRED tasks, all and per queue.
    dead_letters: BTreeSet<TaskId>,
    dead_by_queue: BTreeMap<String, BTreeSet<TaskId>>,
    /// (queue, idempotency key) -> (task, submitted at), and the same by time for retention.
    idempotency: BTreeMap<(String, String), (TaskId, u64)>,
    idempotency_by_time: BTreeSet<(u64, String, String)>,
    /// BLOCKED tasks per gating decision.
    gates: BTreeMap<DecisionId, BTreeSet<TaskId>>,
    /// ASSIGNED tasks per session holding their lease: the tasks' own count of what each agent
    /// runs (current within a command, unlike the agents' `running`, which follows by effects).
    leases: BTreeMap<SessionId, BTreeSet<TaskId>>,
    /// XOR of `task_digest` over every task, kept as tasks change.
    tasks_digest: u64,

    agents: BTreeMap<String, Agent>,
    /// Each agent's current session -> its name (live or gone).
    sessions: BTreeMap<SessionId, String>,
    /// Agents whose session is gone, by (gone at, name), for retention.
    gone_agents: BTreeSet<(u64, String)>,

    /// The retention of the last Tick: what `next_due_ms` plans garbage collection by.
    retention: Retention,
    /// The queue of the last assignment: the next plan starts after it (fairness across plans).
    last_assigned_queue: String,
}

impl Coordination {
    /// Applies one coordination command (not `Tick`: the state machine drives timers through
    /// `Primitive`). A session that ends (expired, closed or replaced) raises
    /// `Effect::SessionEnded`.
    pub fn apply(&mut self, ctx: &mut Ctx, command: &CoordCommand) -> CoordResponse {
        let now_ms = ctx.now_ms;
        match command {
            CoordCommand::RegisterAgent(spec) => self.register(ctx, spec),
            CoordCommand::Heartbeats { beats } => self.heartbeats(now_ms, beats),
            CoordCommand::CloseSession { session_id } => self.close_session(ctx, *session_id),
            CoordCommand::SetDrained { name, drained } => self.set_drained(name, *drained),
            CoordCommand::Submit { tasks } => self.submit(ctx, tasks),
            CoordCommand::Assign { assignments } => self.assign(ctx, assignments),
            CoordCommand::Complete {
                task_id,
                token,
                result,
            } => self.complete(ctx, *task_id, *token, result),
            CoordCommand::Fail {
                task_id,
                token,
                error,
                retryable,
                retry_after_ms,
            } => self.fail(ctx, *task_id, *token, error, *retryable, *retry_after_ms),
            CoordCommand::ExtendLease {
                task_id,
                token,
                lease_ms,
            } => self.extend_lease(ctx, *task_id, *token, *lease_ms),
            CoordCommand::Progress {
                task_id,
                token,
                percent,
                message,
                checkpoint,
                extend_lease,
            } => self.progress(
                ctx,
                *task_id,
                *token,
                Progress {
                    percent: (*percent).min(100),
                    message: message.clone(),
                    checkpoint: checkpoint.clone(),
                    updated_ms: now_ms,
                },
                *extend_lease,
            ),
            CoordCommand::Release { task_id, token } => self.release(ctx, *task_id, *token),
            CoordCommand::Cancel { task_id, reason } => self.cancel(ctx, *task_id, reason),
            CoordCommand::Redrive { selector } => self.redrive(ctx, selector),
            CoordCommand::Purge { selector } => self.purge(ctx, selector),
            CoordCommand::Propose(_) | CoordCommand::Vote { .. } | CoordCommand::Tick { .. } => {
                unreachable!("the state machine routes {} elsewhere", command.name())
            }
        }
    }

    /// Whether `session_id` is the live session of an agent (ephemeral keys may attach to it).
    pub fn session_live(&self, session_id: SessionId) -> bool {
        self.agent_by_session(session_id).is_some_and(|a| a.live)
    }

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// Tasks with ids after `after_id` that match `filter`, in id order, at most `limit`.
    ///
    /// Queue and state come from an index; labels and parent are checked task by task, at most
    /// TASK_LIST_SCAN_MAX of them per call: when that runs out first, the page ends early (maybe
    /// empty) with `more` set and `next_after_id` at the last task examined.
    pub fn list_tasks(
        &self,
        filter: &TaskFilter,
        after_id: TaskId,
        limit: usize,
    ) -> TaskListing<'_> {
        let mut listing = TaskListing {
            tasks: Vec::new(),
            more: false,
            next_after_id: after_id,
        };
        for (examined, id) in self.candidate_ids(filter, after_id).enumerate() {
            if examined == crate::limits::TASK_LIST_SCAN_MAX {
                listing.more = true;
                return listing;
            }
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            let full = listing.tasks.len() == limit;
            if filter.matches(task) {
                if full {
                    listing.more = true;
                    return listing;
                }
                listing.tasks.push(task);
            }
            if !full {
                listing.next_after_id = id;
            }
        }
        listing
    }

    /// Ids after `after_id`, in id order, of the tasks in the filter's queue and states (any when
    /// not given): from the (queue, state) index when either is given, else every task.
    fn candidate_ids<'a>(
        &'a self,
        filter: &TaskFilter,
        after_id: TaskId,
    ) -> Box<dyn Iterator<Item = TaskId> + 'a> {
        let from = after_id.saturating_add(1);
        if filter.queue.is_empty() && filter.states.is_empty() {
            return Box::new(self.tasks.range(from..).map(|(id, _)| *id));
        }
        let wanted = |state: &TaskState| filter.states.is_empty() || filter.states.contains(state);
        let sets: Vec<&BTreeSet<TaskId>> = if filter.queue.is_empty() {
            self.by_queue_state
                .iter()
                .filter(|((_, state), _)| wanted(state))
                .map(|(_, ids)| ids)
                .collect()
        } else {
            TaskState::ALL
                .iter()
                .filter(|state| wanted(state))
                .filter_map(|state| self.by_queue_state.get(&(filter.queue.clone(), *state)))
                .collect()
        };
        Box::new(MergedIds::new(
            sets.into_iter()
                .map(|ids| Box::new(ids.range(from..).copied()) as Box<dyn Iterator<Item = TaskId>>)
                .collect(),
        ))
    }

    /// DEAD_LETTERED and EXPIRED tasks of `queue` ("" for every queue) in id order.
    pub fn dead_letters(&self, queue: &str, after_id: TaskId, limit: usize) -> (Vec<&Task>, bool) {
        let ids = if queue.is_empty() {
            Some(&self.dead_letters)
        } else {
            self.dead_by_queue.get(queue)
        };
        let Some(ids) = ids else {
            return (Vec::new(), false);
        };
        let tasks = ids
            .range(after_id.saturating_add(1)..)
            .filter_map(|id| self.tasks.get(id));
        page(tasks, limit)
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
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// Tasks whose lease is held by `session_id`, in id order.
    pub fn assignments(&self, session_id: SessionId) -> Vec<&Task> {
        self.leases
            .get(&session_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
            .collect()
    }

    /// The assignments the leader should propose now, at most `max` (see `tasks::plan`).
    pub fn plan_assignments(&self, now_ms: u64, max: usize) -> Vec<(TaskId, SessionId)> {
        tasks::plan(
            &self.ready,
            &self.tasks,
            &self.leases,
            &self.agents,
            &self.last_assigned_queue,
            now_ms,
            max,
        )
    }

    pub fn stats(&self) -> CoordStats {
        let count = |state: TaskState| self.state_counts[state.index()];
        CoordStats {
            tasks: self.tasks.len() as u64,
            pending: count(TaskState::Pending),
            assigned: count(TaskState::Assigned),
            dead_letters: count(TaskState::DeadLettered) + count(TaskState::Expired),
            agents_live: self.agents.values().filter(|a| a.live).count() as u64,
            decisions_open: 0,
        }
    }

    // ---- Tick: timers and garbage collection ----

    /// Fires one timer (`Primitive::fire_timer` once it is disarmed).
    fn fire(&mut self, ctx: &mut Ctx, timer: Timer) {
        let (_, kind, id) = timer;
        match kind {
            TimerKind::TaskDeadline => self.task_deadline_passed(ctx, id),
            TimerKind::LeaseExpiry => self.lease_expired(ctx, id),
            TimerKind::SessionExpiry => self.session_expired(ctx, id),
            TimerKind::TaskReady => self.task_ready(ctx, id),
            TimerKind::DecisionDeadline => unreachable!("decisions fire their own timers"),
            TimerKind::BreakerReopen => self.breaker_half_open(ctx.now_ms, id),
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

    /// A new leader's first tick: the lease extensions that could not reach anyone during the
    /// election must not cost agents their work. Every lease is held by a live session.
    fn refresh_leases(&mut self, now_ms: u64) {
        let leased: Vec<TaskId> = self.leases.values().flatten().copied().collect();
        for task_id in leased {
            let mut task = self
                .take_task(task_id)
                .expect("the lease index lists tasks");
            let lease_ms = task.spec.lease_ms;
            let lease = task.lease.as_mut().expect("the lease index lists leases");
            lease.deadline_ms = lease.deadline_ms.max(now_ms.saturating_add(lease_ms));
            self.put_task(task);
        }
    }

    fn collect_garbage(&mut self, now_ms: u64) {
        let retention = self.retention.clone();
        let aged = |at: u64, age_ms: u64| age_ms > 0 && at.saturating_add(age_ms) <= now_ms;
        while let Some(&(finished_ms, task_id)) = self.finished.first() {
            let over_count =
                retention.finished_max > 0 && self.finished.len() as u64 > retention.finished_max;
            if !over_count && !aged(finished_ms, retention.finished_age_ms) {
                break;
            }
            self.forget_task(task_id);
        }
        while let Some((at_ms, queue, key)) = self.idempotency_by_time.first().cloned() {
            if !aged(at_ms, retention.idempotency_ms) {
                break;
            }
            self.idempotency_by_time.pop_first();
            let entry = (queue, key);
            if self.idempotency.get(&entry).is_some_and(|e| e.1 == at_ms) {
                self.idempotency.remove(&entry);
            }
        }
        while let Some((gone_ms, name)) = self.gone_agents.first().cloned() {
            if !aged(gone_ms, retention.gone_agents_ms) {
                break;
            }
            self.forget_agent(&name);
        }
    }

    // ---- Task bookkeeping: every change of a task goes through take_task / put_task ----

    /// Removes a task from the map and from every index, for changing it.
    fn take_task(&mut self, id: TaskId) -> Option<Task> {
        let task = self.tasks.remove(&id)?;
        self.index(&task, false);
        Some(task)
    }

    /// Puts a (changed) task back and indexes it by its new state.
    fn put_task(&mut self, task: Task) {
        self.index(&task, true);
        self.tasks.insert(task.id, task);
    }

    /// Forgets a task for good (retention, purge: finished and dead letters, never leased),
    /// with its idempotency key.
    fn forget_task(&mut self, id: TaskId) -> Option<Task> {
        let task = self.take_task(id)?;
        debug_assert!(task.lease.is_none(), "a forgotten task holds no lease");
        if !task.spec.idempotency_key.is_empty() {
            let entry = (task.spec.queue.clone(), task.spec.idempotency_key.clone());
            if let Some(&(owner, at_ms)) = self.idempotency.get(&entry) {
                if owner == id {
                    self.idempotency.remove(&entry);
                    self.idempotency_by_time.remove(&(at_ms, entry.0, entry.1));
                }
            }
        }
        Some(task)
    }

    /// Adds (`insert`) or removes a task's entries in every index derived from its fields.
    fn index(&mut self, task: &Task, insert: bool) {
        fn toggle<T: Ord>(set: &mut BTreeSet<T>, item: T, insert: bool) {
            if insert {
                set.insert(item);
            } else {
                set.remove(&item);
            }
        }
        self.tasks_digest ^= task_digest(task);
        let count = &mut self.state_counts[task.state.index()];
        *count = if insert { *count + 1 } else { *count - 1 };
        let id = task.id;
        match self
            .by_queue_state
            .entry((task.spec.queue.clone(), task.state))
        {
            Entry::Occupied(mut listed) => {
                toggle(listed.get_mut(), id, insert);
                if listed.get().is_empty() {
                    listed.remove();
                }
            }
            Entry::Vacant(slot) => {
                if insert {
                    slot.insert(BTreeSet::from([id]));
                }
            }
        }
        match task.state {
            TaskState::Pending => {
                let queue = self.ready.entry(task.spec.queue.clone()).or_default();
                toggle(queue, task.ready_key(), insert);
                if queue.is_empty() {
                    self.ready.remove(&task.spec.queue);
                }
            }
            TaskState::Delayed | TaskState::RetryWait => {
                toggle(
                    &mut self.timers,
                    (task.ready_at_ms, TimerKind::TaskReady, id),
                    insert,
                );
            }
            TaskState::Blocked => {
                if let Some(gate) = &task.spec.requires {
                    let gated = self.gates.entry(gate.decision_id).or_default();
                    toggle(gated, id, insert);
                    if gated.is_empty() {
                        self.gates.remove(&gate.decision_id);
                    }
                }
            }
            TaskState::Assigned => {}
            TaskState::Succeeded | TaskState::Canceled => {
                toggle(&mut self.finished, (task.updated_ms, id), insert);
            }
            TaskState::DeadLettered | TaskState::Expired => {
                toggle(&mut self.dead_letters, id, insert);
                let queue = self
                    .dead_by_queue
                    .entry(task.spec.queue.clone())
                    .or_default();
                toggle(queue, id, insert);
                if queue.is_empty() {
                    self.dead_by_queue.remove(&task.spec.queue);
                }
            }
        }
        if let Some(lease) = &task.lease {
            toggle(
                &mut self.timers,
                (lease.deadline_ms, TimerKind::LeaseExpiry, id),
                insert,
            );
            let held = self.leases.entry(lease.session_id).or_default();
            toggle(held, id, insert);
            if held.is_empty() {
                self.leases.remove(&lease.session_id);
            }
        }
        if !task.state.is_terminal() && task.spec.deadline_ms != 0 {
            toggle(
                &mut self.timers,
                (task.spec.deadline_ms, TimerKind::TaskDeadline, id),
                insert,
            );
        }
    }

    // ---- Events ----

    fn task_event(
        &mut self,
        ctx: &mut Ctx,
        task: &Task,
        kind: TaskEventKind,
        revoked: Option<Revoked>,
    ) {
        ctx.event(CoordEventKind::Task {
            task_id: task.id,
            queue: task.spec.queue.clone(),
            kind,
            state: task.state,
            attempts: task.attempts,
            lease: task.lease.clone(),
            revoked,
        });
    }

    /// Every field encoded on its own, named, in declaration order: the snapshot's sections,
    /// which the golden tests pin one by one. Destructured, so a new field cannot be left out.
    #[cfg(test)]
    pub(crate) fn encoded_sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        use crate::raft::encode;
        let Coordination {
            last_task_id,
            last_session_id,
            last_token,
            tasks,
            state_counts,
            by_queue_state,
            ready,
            timers,
            finished,
            dead_letters,
            dead_by_queue,
            idempotency,
            idempotency_by_time,
            gates,
            leases,
            tasks_digest,
            agents,
            sessions,
            gone_agents,
            retention,
            last_assigned_queue,
        } = self;
        vec![
            ("last_task_id", encode(last_task_id)),
            ("last_session_id", encode(last_session_id)),
            ("last_token", encode(last_token)),
            ("tasks", encode(tasks)),
            ("state_counts", encode(state_counts)),
            ("by_queue_state", encode(by_queue_state)),
            ("ready", encode(ready)),
            ("timers", encode(timers)),
            ("finished", encode(finished)),
            ("dead_letters", encode(dead_letters)),
            ("dead_by_queue", encode(dead_by_queue)),
            ("idempotency", encode(idempotency)),
            ("idempotency_by_time", encode(idempotency_by_time)),
            ("gates", encode(gates)),
            ("leases", encode(leases)),
            ("tasks_digest", encode(tasks_digest)),
            ("agents", encode(agents)),
            ("sessions", encode(sessions)),
            ("gone_agents", encode(gone_agents)),
            ("retention", encode(retention)),
            ("last_assigned_queue", encode(last_assigned_queue)),
        ]
    }

    /// Recomputes the task digest from scratch (tests compare it with the running one).
    #[cfg(test)]
    fn tasks_digest_recomputed(&self) -> u64 {
        self.tasks.values().fold(0, |d, t| d ^ task_digest(t))
    }
}

impl Primitive for Coordination {
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
        self.refresh_leases(ctx.now_ms);
    }

    /// A session's end revokes its leases and then is announced; a closed decision resolves
    /// the tasks gated on it; a lease granted or ended is counted for its agent.
    fn on_effect(&mut self, ctx: &mut Ctx, effect: &Effect) {
        match effect {
            Effect::SessionEnded {
                session_id,
                agent,
                end,
            } => {
                self.revoke_session_leases(ctx, *session_id, *end);
                self.session_closed(ctx, *session_id, agent, *end);
            }
            Effect::DecisionClosed {
                decision_id,
                status,
                outcome,
            } => self.decision_closed(ctx, *decision_id, *status, outcome.as_deref()),
            Effect::LeaseGranted {
                session_id,
                task_id,
            } => self.lease_granted(*session_id, *task_id),
            Effect::LeaseEnded {
                session_id,
                task_id,
                outcome,
            } => self.lease_ended(ctx.now_ms, *session_id, *task_id, *outcome),
        }
    }

    /// The first timer, or the first retention bound (by the last Tick's retention) that
    /// garbage collection would act on.
    fn next_due_ms(&self, now_ms: u64) -> Option<u64> {
        let retention = &self.retention;
        let age_due = |age_ms: u64, first: Option<u64>| {
            (age_ms > 0)
                .then_some(first)
                .flatten()
                .map(|at| at.saturating_add(age_ms))
        };
        let over_count =
            retention.finished_max > 0 && self.finished.len() as u64 > retention.finished_max;
        [
            self.timers.first().map(|timer| timer.0),
            over_count.then_some(now_ms),
            age_due(
                retention.finished_age_ms,
                self.finished.first().map(|f| f.0),
            ),
            age_due(
                retention.idempotency_ms,
                self.idempotency_by_time.first().map(|i| i.0),
            ),
            age_due(
                retention.gone_agents_ms,
                self.gone_agents.first().map(|g| g.0),
            ),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tasks are digested as they change; agents (at most AGENTS_MAX) are digested here.
    fn digest(&self) -> u64 {
        let mut digest = self.tasks_digest;
        for agent in self.agents.values() {
            digest ^= agent_digest(agent);
        }
        let mut counters = Fnv::default();
        for n in [self.last_task_id, self.last_session_id, self.last_token] {
            counters.write(&n.to_be_bytes());
        }
        digest ^ counters.finish()
    }
}

impl AgentView for Coordination {
    fn session_live(&self, session_id: SessionId) -> bool {
        Coordination::session_live(self, session_id)
    }

    fn live_agent(&self, session_id: SessionId) -> Option<&str> {
        self.agent_by_session(session_id)
            .filter(|agent| agent.live)
            .map(|agent| agent.name.as_str())
    }

    fn live_agents_with(&self, capability: &str) -> Vec<String> {
        self.agents
            .values()
            .filter(|a| a.live && a.spec.capabilities.contains(capability))
            .map(|a| a.name.clone())
            .collect()
    }
}

/// At most `limit` items and whether more follow.
/// One page of [`Coordination::list_tasks`].
#[derive(Debug)]
pub struct TaskListing<'a> {
    pub tasks: Vec<&'a Task>,
    /// More tasks may match after `next_after_id`.
    pub more: bool,
    /// Where the next page starts: the last task listed, or the last examined when the scan
    /// bound ended the page.
    pub next_after_id: TaskId,
}

impl TaskFilter {
    fn matches(&self, task: &Task) -> bool {
        (self.queue.is_empty() || task.spec.queue == self.queue)
            && (self.states.is_empty() || self.states.contains(&task.state))
            && (self.parent_id == 0 || task.spec.parent_id == self.parent_id)
            && self
                .labels
                .iter()
                .all(|(k, v)| task.spec.labels.get(k) == Some(v))
    }
}

/// Ascending ids merged from ascending, disjoint iterators.
struct MergedIds<'a> {
    sources: Vec<Box<dyn Iterator<Item = TaskId> + 'a>>,
    heads: BinaryHeap<Reverse<(TaskId, usize)>>,
}

impl<'a> MergedIds<'a> {
    fn new(mut sources: Vec<Box<dyn Iterator<Item = TaskId> + 'a>>) -> Self {
        let heads = sources
            .iter_mut()
            .enumerate()
            .filter_map(|(source, ids)| ids.next().map(|id| Reverse((id, source))))
            .collect();
        MergedIds { sources, heads }
    }
}

impl Iterator for MergedIds<'_> {
    type Item = TaskId;

    fn next(&mut self) -> Option<TaskId> {
        let Reverse((id, source)) = self.heads.pop()?;
        if let Some(next) = self.sources[source].next() {
            self.heads.push(Reverse((next, source)));
        }
        Some(id)
    }
}

fn page<T>(mut items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, bool) {
    let page: Vec<T> = items.by_ref().take(limit).collect();
    let more = items.next().is_some();
    (page, more)
}

fn task_digest(task: &Task) -> u64 {
    let mut hash = Fnv::default();
    let lease = task.lease.as_ref();
    for n in [
        task.id,
        task.state.index() as u64,
        u64::from(task.attempts),
        task.last_token,
        lease.map_or(0, |l| l.token),
        lease.map_or(0, |l| l.deadline_ms),
        task.ready_at_ms,
        task.updated_ms,
    ] {
        hash.write(&n.to_be_bytes());
    }
    hash.finish()
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

#[cfg(test)]
mod tests;
