//! The extension point of the state machine: what every primitive implements, what it shares
//! with the others ([`Ctx`]), and how it affects them ([`Effect`]).
//!
//! A primitive owns its state in its own module and is one field of `StateMachine`. The state
//! machine drives it: it applies the primitive's own commands (an inherent `apply` taking the
//! context and returning the primitive's response), fires its timers and collects its garbage on
//! every `Tick`, extends its holders' deadlines on a new leader's first tick, routes other
//! primitives' effects to it, asks when it is next due, and mixes its digest into the state
//! digest. Its serde encoding is its snapshot section. Nothing here may read a clock, draw
//! randomness or do I/O (see `state_machine`).
//!
//! A primitive never reads another's fields: what it needs to know of another comes through a
//! read-only view in the context, lent for one command ([`AgentView`], [`DecisionView`]), and
//! what it does to another goes back as an [`Effect`].

use super::coordination::{
    Agent, AttemptOutcome, CoordEventKind, DeadLetterReason, Decision, DecisionId, DecisionSpec,
    DecisionStatus, EventRing, Retention, SessionEnd, SessionId, TaskId, TaskSpec, Timer,
};
use super::workflows::{Definition, WorkflowId};

/// What primitives share, handed to each call: cluster time, the event ring streams follow, the
/// effects raised for the others, the retention of a `Tick`, and the views lent for a command.
pub struct Ctx<'a> {
    /// Cluster time: the greatest leader stamp applied so far.
    pub now_ms: u64,
    events: &'a mut EventRing,
    effects: Vec<Effect>,
    retention: Option<&'a Retention>,
    agents: Option<&'a dyn AgentView>,
    decisions: Option<&'a dyn DecisionView>,
}

impl<'a> Ctx<'a> {
    pub fn new(now_ms: u64, events: &'a mut EventRing) -> Self {
        Ctx {
            now_ms,
            events,
            effects: Vec::new(),
            retention: None,
            agents: None,
            decisions: None,
        }
    }

    /// Lends the agents' view (for a command of another primitive).
    pub fn with_agents(mut self, agents: &'a dyn AgentView) -> Self {
        self.agents = Some(agents);
        self
    }

    /// Lends the decisions' view (for a command of another primitive).
    pub fn with_decisions(mut self, decisions: &'a dyn DecisionView) -> Self {
        self.decisions = Some(decisions);
        self
    }

    /// The retention a `Tick` carries (node options): what garbage collection goes by.
    pub fn with_retention(mut self, retention: &'a Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Appends an event to the ring, numbered and stamped with cluster time.
    pub fn event(&mut self, kind: CoordEventKind) {
        self.events.push(self.now_ms, kind);
    }

    /// The sequence the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.events.last_seq() + 1
    }

    /// Raises an effect for the state machine to route to the other primitives after this call.
    pub fn raise(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// The effects raised so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The retention of the `Tick` being applied (None outside a `Tick`).
    pub fn retention(&self) -> Option<&Retention> {
        self.retention
    }

    /// The agents, read-only. Lent to the commands of the primitives that are not the agents'.
    pub fn agents(&self) -> &'a dyn AgentView {
        self.agents
            .expect("the agents' view is lent to other primitives' commands only")
    }

    /// The decisions, read-only. Lent to the commands of the primitives that are not decisions.
    pub fn decisions(&self) -> &'a dyn DecisionView {
        self.decisions
            .expect("the decisions' view is lent to other primitives' commands only")
    }

    /// Whether `session_id` is the live session of an agent.
    pub fn session_live(&self, session_id: SessionId) -> bool {
        self.agents().session_live(session_id)
    }
}

/// What other primitives may read of the agents and their sessions.
pub trait AgentView {
    /// Whether `session_id` is the live session of an agent.
    fn session_live(&self, session_id: SessionId) -> bool;

    /// The name of the agent whose live session is `session_id`.
    fn live_agent(&self, session_id: SessionId) -> Option<&str>;

    /// The agent whose current session (live or gone) is `session_id`.
    fn agent_by_session(&self, session_id: SessionId) -> Option<&Agent>;

    /// The live agents that have `capability`, in name order.
    fn live_agents_with(&self, capability: &str) -> Vec<String>;
}

/// What other primitives may read of the decisions.
pub trait DecisionView {
    fn decision(&self, id: DecisionId) -> Option<&Decision>;
}

/// What one primitive does to the others, routed by the state machine in the order raised.
///
/// Not stored (an effect lives within the apply of one entry), so it has no code table; it is
/// not `Eq` because a `TaskSpec` is not.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// An agent session ended (`end`: expired, closed or replaced): the tasks it holds leases on
    /// go back to their queues (the attempt counted unless the agent closed the session), the
    /// agents announce the end, the keys attached to it go, and its locks, permits and
    /// leaderships are lost.
    SessionEnded {
        session_id: SessionId,
        agent: String,
        end: SessionEnd,
    },
    /// A decision closed with `status` (and, when DECIDED, the winning `outcome`): the tasks
    /// gated on it become ready or are canceled, and a workflow's decision step waiting on it
    /// completes.
    DecisionClosed {
        decision_id: DecisionId,
        status: DecisionStatus,
        outcome: Option<String>,
    },
    /// A task was leased to an agent's session: the agent runs one more task.
    LeaseGranted {
        session_id: SessionId,
        task_id: TaskId,
    },
    /// A task's lease ended with `outcome`: the agent runs one task fewer; a success closes its
    /// breaker, a failed attempt (a FAIL verb, an expired lease) counts towards opening it.
    LeaseEnded {
        session_id: SessionId,
        task_id: TaskId,
        outcome: AttemptOutcome,
    },
    /// Workflows: a step became runnable (or a compensation is due). Tasks submits each spec,
    /// remembering its origin (workflow, step, branch) in the task, and answers each with
    /// `StepTaskSubmitted`; a spec it refuses (a quota) is answered with `StepTaskFinished`,
    /// task id 0, outcome `Failed`. The workflow checked its own limits; these are not all or
    /// nothing. For a compensation task `step` is the compensation step and `branch` the index
    /// of the step it undoes.
    SubmitStepTasks {
        workflow_id: WorkflowId,
        step: u32,
        specs: Vec<(u32, TaskSpec)>,
    },
    /// Tasks: the task of a workflow step's branch was submitted with this id.
    StepTaskSubmitted {
        workflow_id: WorkflowId,
        step: u32,
        branch: u32,
        task_id: TaskId,
    },
    /// Tasks: a task with a workflow origin reached a terminal state (SUCCEEDED, DEAD_LETTERED,
    /// EXPIRED, CANCELED), in the same entry as the verb or timer that ended it; so a result
    /// reaches its workflow exactly once, from the attempt whose token was current.
    StepTaskFinished {
        workflow_id: WorkflowId,
        step: u32,
        branch: u32,
        task_id: TaskId,
        outcome: StepTaskOutcome,
    },
    /// Workflows: cancel these tasks (a workflow canceled, failed or timed out, or a join met
    /// early). Tasks cancels each that is not terminal, as a CancelTask would (its agent is told
    /// on its stream), and reports each as `StepTaskFinished` (which the workflow then ignores).
    CancelTasks {
        task_ids: Vec<TaskId>,
        reason: String,
    },
    /// Workflows: a decision step started. Decisions opens the decision (its electorate fixed
    /// now) and answers with `StepDecisionProposed`.
    ProposeStepDecision {
        workflow_id: WorkflowId,
        step: u32,
        spec: DecisionSpec,
    },
    /// Workflows: a stopped workflow (canceled, failed, timed out) withdraws the open decision
    /// of its decision step. Decisions closes it REJECTED with `reason` (ballots end; tasks
    /// gated on it are canceled); a decision already closed is left.
    WithdrawDecision {
        decision_id: DecisionId,
        reason: String,
    },
    /// Decisions: the decision of a workflow step was opened with this id, or refused (no live
    /// agent has the capability, the open decisions quota): why, in words.
    StepDecisionProposed {
        workflow_id: WorkflowId,
        step: u32,
        decision: Result<DecisionId, String>,
    },
    /// Topics: a trigger matched the message stored at `seq` (`topics/triggers.rs`). Tasks
    /// submits `spec` (checked as a Submit of it alone would be, TASKS_MAX) and answers with
    /// `TriggerFired`.
    TriggerSubmitTask {
        topic: String,
        trigger: String,
        seq: u64,
        spec: Box<TaskSpec>,
    },
    /// Topics: a trigger matched the message stored at `seq`. Workflows starts `definition` with
    /// `input` (the message's JSON envelope) as a Start would, and answers with `TriggerFired`.
    TriggerStartWorkflow {
        topic: String,
        trigger: String,
        seq: u64,
        definition: Box<Definition>,
        input: String,
        idempotency_key: String,
    },
    /// Tasks or Workflows: what a trigger's effect did: `Ok` names the task or workflow
    /// started, `Err` the refusal. Topics counts it on the trigger.
    TriggerFired {
        topic: String,
        trigger: String,
        seq: u64,
        result: Result<String, String>,
    },
}

/// How the task of a workflow step ended (`Effect::StepTaskFinished`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepTaskOutcome {
    /// SUCCEEDED, with the agent's result.
    Succeeded { result: Vec<u8> },
    /// DEAD_LETTERED (attempts exhausted, a failure that is not retryable), or not submitted at
    /// all (task id 0: `reason` None).
    Failed {
        error: String,
        reason: Option<DeadLetterReason>,
    },
    /// CANCELED, by a client or by the workflow.
    Canceled { reason: String },
    /// EXPIRED: its deadline passed before it succeeded.
    Expired,
}

/// The part of a primitive that the state machine drives the same way for every primitive.
///
/// A `Tick` runs in two rounds. First the coordination primitives (tasks, agents, decisions,
/// workflows):
/// `refresh` if asked, then their due timers in one order over all of them (`first_timer`,
/// `fire_timer`; by due time, then kind, then id, as when they shared one timer set), each
/// timer's effects routed among them at once, then `tick` (garbage collection). The effects of
/// that round then reach the other primitives (keys, locks, barriers), which then `refresh` and
/// `tick` in turn. The `fired` count of the `Tick` counts the first round's timers.
pub trait Primitive {
    /// Fires every timer due at `ctx.now_ms` that `first_timer` does not list, and forgets what
    /// retention allows (`ctx.retention()`).
    fn tick(&mut self, ctx: &mut Ctx);

    /// The earliest timer armed, for the first round of a `Tick` (None: none, or the primitive
    /// fires its timers in `tick`).
    fn first_timer(&self) -> Option<Timer> {
        None
    }

    /// Disarms and fires `timer`, the one `first_timer` answered.
    fn fire_timer(&mut self, _ctx: &mut Ctx, _timer: Timer) {}

    /// A new leader's first tick: deadlines that the election kept from being renewed (TTL
    /// holders) are pushed to at least now + their TTL.
    fn refresh(&mut self, _ctx: &mut Ctx) {}

    /// Reacts to another primitive's effect.
    fn on_effect(&mut self, _ctx: &mut Ctx, _effect: &Effect) {}

    /// The earliest cluster time at which a `Tick` would change something (`now_ms`, cluster
    /// time, when something is due already); never a time at which a tick would leave the same
    /// thing due.
    fn next_due_ms(&self, now_ms: u64) -> Option<u64>;

    /// Order-independent: equal state, equal digest.
    fn digest(&self) -> u64;
}
