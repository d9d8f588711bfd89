//! The workflows workload: starters start workflows that the cluster runs as ordinary tasks, a
//! canceler cancels some of them in the middle, and raw-API agents (the tasks workload's
//! [`run_agent`]: short session TTLs, streams moving between nodes, now and then freezing past
//! their TTL) take the step tasks and complete them with results that say which attempt produced
//! them: `{"task", "attempt", "token", "agent"}`. Workers now and then stall past their lease, so
//! leases expire and tasks are assigned again while the stale worker still means to complete.
//!
//! Every attempt at the pipeline's step [`MANAGER_STEP`] is a manager: it first delegates
//! [`DELEGATED`] tasks under its own lease (agents.proto `Delegate`), which the workers take like
//! any task; the lease's end (its completion, expiry, revocation) cancels those not finished.
//!
//! Two definitions ([`pipeline`], [`fan_out`]): a three-step pipeline `a -> b -> c` whose first
//! step has a compensation (run when the workflow is canceled after `a` succeeded), and a fan-out
//! `plan -> fan (5 branches, join at least 3) -> aggregate`. A pipeline whose start number is a
//! multiple of [`SCRIPT_EVERY`] (about one in three) is started with `{"stale": true}` as input: its step `b` plays a scripted **deposal**, like the
//! elections workload's. The worker of `b`'s first attempt says nothing until the task has been
//! assigned again with a newer token (its lease ran out), then completes with its old token; the
//! new holder completes only once that stale completion was answered. The fence must refuse the
//! stale one (`lease lost`); with `--unsafe-test-mode stale-step-result` the node accepts it and
//! the workflow records the stale attempt's result, which the checker reports, on every run: the
//! order is the script's, not a race's.
//!
//! A watcher follows every workflow's events (Watch with `workflow_id` 0) from the start of the
//! run, resuming after the last sequence on the next node when its stream breaks.
//!
//! After healing, agents complete everything they get until every workflow is terminal
//! (`drain`, bounded); then every node lists and reads every workflow (serializable), one
//! linearizable read follows, and the workflows' queue is listed (linearizable) with each task's
//! origin (workflow, step index, branch), state, result and attempt log.
//!
//! Recorded operations (f: invocation value -> ok value):
//! - `start`: `{"kind", "key", "stale"}` -> `{"key", "id"}`, resent with its request id (and its
//!   idempotency key) while unknown;
//! - `cancel`: `{"id"}` -> `{"id", "canceled", "state"}`;
//! - `assign` (an observation of the agent's stream process): `{"agent", "task", "token",
//!   "attempt", "workflow", "step", "branch", "results"}`, `results` being the payload's results
//!   of the steps this one follows;
//! - `complete`: `{"agent", "task", "token", "attempt", "result"}` -> the same with `"state"`;
//!   `fail` when refused (`lease lost`), `info` when unknown; `fail-step`: a retryable Fail;
//! - `event` (an observation of the watcher): `{"sequence", "kind", "workflow", "step",
//!   "state"}`; `watch-gap` when a resume found the events after its cursor gone;
//! - `register`: an agent's registration; `drain`: the wait for every workflow to be terminal;
//! - `final-read`: `{"consistency"}` -> `{"consistency", "workflows": [...]}` (see
//!   [`workflow_json`]); `final-tasks`: `{}` -> `{"tasks": [...]}` (see [`task_json`]).
//!
//! The checker is [`check::check`], a pure function of the history.

mod check;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::workflow_step::Kind as StepKind;
use conclave_proto::v1::workflows_client::WorkflowsClient;
use conclave_proto::v1::{
    fan_out, Backoff, CancelWorkflowRequest, CompleteRequest, DelegateRequest, FailRequest, FanOut,
    GetWorkflowRequest, Join, JoinPolicy, ListTasksRequest, ListWorkflowsRequest, ReadConsistency,
    StartWorkflowRequest, Task, TaskSpec, TaskTemplate, WatchWorkflowsRequest, Workflow,
    WorkflowBranchState, WorkflowDefinition, WorkflowEventKind, WorkflowState, WorkflowStep,
    WorkflowStepState,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

pub use self::check::check;
use super::agents::{
    classify, pace, read_final_state, run_agent, short_name, Actor, AgentConfig, AgentShared,
};
use super::tasks::listed::state_name;
use super::{CheckResult, Tasks, Workload, FINAL_READ};
use crate::jepsen::client::{describe, mix, Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

pub const NAME: &str = "workflows";
/// The queue of every step task.
pub const QUEUE: &str = "jepsen-wf";
/// The capability every step task needs and every agent of the workload has.
pub const CAPABILITY: &str = "jepsen-wf";
/// Definition names.
pub const PIPELINE: &str = "jepsen-wf-pipeline";
pub const FAN_OUT: &str = "jepsen-wf-fan-out";
/// The fan-out's width and its join's k.
pub const FAN_OUT_COUNT: u32 = 5;
pub const JOIN_AT_LEAST: u32 = 3;
/// A pipeline whose start number is a multiple of this plays the scripted deposal on its step `b`.
pub const SCRIPT_EVERY: u64 = 3;
/// The step of a scripted pipeline whose first attempt goes stale.
pub const SCRIPT_STEP: &str = "b";
/// The pipeline step whose workers are managers: each attempt first delegates DELEGATED tasks
/// (agents.proto `Delegate`) under its own lease, which the other workers take like any task.
pub const MANAGER_STEP: &str = "c";
/// How many tasks a manager's attempt delegates.
pub const DELEGATED: u64 = 2;
/// Most tasks or workflows a listing page holds.
const PAGE: u32 = 1000;
/// Pause between two looks at the workflows while draining.
const DRAIN_POLL: Duration = Duration::from_millis(300);
/// How long one side of a scripted deposal waits for the other.
const SCRIPT_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Options {
    pub agents: usize,
    /// Tasks each agent may hold at once.
    pub concurrency: u32,
    /// Session TTL of each agent, at random in this range (ms).
    pub ttl_ms: (u64, u64),
    /// Lease of each step task (the API's minimum is 1,000).
    pub lease_ms: u64,
    pub max_attempts: u32,
    /// A starter's mean pause is this many times the run's `op_interval`.
    pub start_pace: u32,
    /// Starters per node.
    pub starters_per_node: usize,
    /// The canceler's mean pause is this many times the run's `op_interval`.
    pub cancel_pace: u32,
    /// Chance that a worker stalls past its lease before completing.
    pub stall_probability: f64,
    /// Chance that a worker fails its attempt (retryably) or abandons it.
    pub fail_probability: f64,
    pub abandon_probability: f64,
    pub freeze_probability: f64,
    /// How long agents get after the heal to finish every workflow.
    pub drain_bound: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            agents: 5,
            concurrency: 4,
            ttl_ms: (2_000, 4_000),
            lease_ms: 1_000,
            max_attempts: 10,
            start_pace: 15,
            starters_per_node: 1,
            cancel_pace: 40,
            stall_probability: 0.08,
            fail_probability: 0.05,
            abandon_probability: 0.04,
            freeze_probability: 0.08,
            drain_bound: Duration::from_secs(40),
        }
    }
}

fn template(options: &Options, step: &str) -> TaskTemplate {
    TaskTemplate {
        queue: QUEUE.to_string(),
        capabilities: vec![CAPABILITY.to_string()],
        params_json: json!({"step": step}).to_string(),
        max_attempts: options.max_attempts,
        backoff: Some(Backoff {
            initial_ms: 100,
            maximum_ms: 500,
            multiplier: 2.0,
            jitter: 0.5,
        }),
        lease_ms: options.lease_ms,
        ..TaskTemplate::default()
    }
}

fn task_step(options: &Options, name: &str, after: &[&str]) -> WorkflowStep {
    WorkflowStep {
        name: name.to_string(),
        after: after.iter().map(|step| step.to_string()).collect(),
        kind: Some(StepKind::Task(template(options, name))),
        ..WorkflowStep::default()
    }
}

/// `a -> b -> c`, and `undo-a`, the compensation of `a`.
pub fn pipeline(options: &Options) -> WorkflowDefinition {
    let mut a = task_step(options, "a", &[]);
    a.compensate = "undo-a".to_string();
    let mut undo = task_step(options, "undo-a", &[]);
    undo.compensation = true;
    WorkflowDefinition {
        name: PIPELINE.to_string(),
        version: 1,
        deadline_ms: 0,
        steps: vec![
            a,
            task_step(options, "b", &["a"]),
            task_step(options, "c", &["b"]),
            undo,
        ],
    }
}

/// `plan -> fan (5 branches, joined by at least 3) -> aggregate`.
pub fn fan_out(options: &Options) -> WorkflowDefinition {
    let mut fan = task_step(options, "fan", &["plan"]);
    fan.fan_out = Some(FanOut {
        source: Some(fan_out::Source::Count(FAN_OUT_COUNT)),
        join: Some(Join {
            policy: JoinPolicy::AtLeast as i32,
            k: JOIN_AT_LEAST,
            deadline_ms: 0,
        }),
    });
    WorkflowDefinition {
        name: FAN_OUT.to_string(),
        version: 1,
        deadline_ms: 0,
        steps: vec![
            task_step(options, "plan", &[]),
            fan,
            task_step(options, "aggregate", &["fan"]),
        ],
    }
}

/// One side of a scripted deposal, per task.
#[derive(Debug)]
struct Script {
    /// The first attempt's token: the one that goes stale.
    stale_token: u64,
    /// Set once the task was assigned again with a newer token.
    reassigned: watch::Sender<bool>,
    /// Set once the stale completion was answered.
    answered: watch::Sender<bool>,
}

/// What the workload's clients and agents share.
#[derive(Debug, Default)]
struct Shared {
    starts: AtomicU64,
    /// Ids of acknowledged starts, oldest first: what the canceler cancels.
    started: Mutex<Vec<u64>>,
    /// Scripted deposals by task id.
    scripts: Mutex<HashMap<u64, Arc<Script>>>,
    /// Workflows the watcher saw start, and those it saw finish.
    watched_started: Mutex<HashSet<u64>>,
    watched_finished: Mutex<HashSet<u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct WorkflowsWorkload {
    options: Options,
    shared: Arc<Shared>,
    /// Starters and the canceler: they stop at the stop signal.
    clients: Tasks,
    agents: Tasks,
    workers: Arc<Tasks>,
    watcher: Tasks,
    draining: Arc<AtomicBool>,
    agent_states: Mutex<Vec<Arc<AgentShared>>>,
    /// Stops the agents (after the drain).
    agent_stop: watch::Sender<bool>,
    /// Stops the watcher (after the final reads).
    watch_stop: watch::Sender<bool>,
    context: Mutex<Option<ClientContext>>,
}

impl WorkflowsWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            shared: Arc::default(),
            clients: Tasks::default(),
            agents: Tasks::default(),
            workers: Arc::new(Tasks::default()),
            watcher: Tasks::default(),
            draining: Arc::new(AtomicBool::new(false)),
            agent_states: Mutex::default(),
            agent_stop: watch::Sender::new(false),
            watch_stop: watch::Sender::new(false),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        lock(&self.context).clone()
    }

    fn start_agent(&self, context: &ClientContext, number: usize, node: u64) {
        let mut rng = StdRng::seed_from_u64(mix(context.seed, &[0x3f1a, number as u64]));
        let config = AgentConfig {
            name: format!("jepsen-wf-worker-{number}"),
            capabilities: vec![CAPABILITY.to_string()],
            max_concurrent: self.options.concurrency,
            ttl_ms: rng.gen_range(self.options.ttl_ms.0..=self.options.ttl_ms.1),
            // Stalls and abandoned leases count as failures: a breaker opens now and then, briefly.
            breaker_failures: 8,
            breaker_cooldown_ms: 500,
            freeze_probability: self.options.freeze_probability,
        };
        let agent = Arc::new(AgentShared::default());
        lock(&self.agent_states).push(Arc::clone(&agent));
        let mut handler = Handler {
            context: context.clone(),
            options: self.options.clone(),
            name: config.name.clone(),
            agent: Arc::clone(&agent),
            shared: Arc::clone(&self.shared),
            observer: Actor::new(context, node),
            workers: Arc::clone(&self.workers),
            draining: Arc::clone(&self.draining),
            seen: HashSet::new(),
            choices: StdRng::seed_from_u64(mix(context.seed, &[0x3f1b, number as u64])),
            pool: Arc::default(),
        };
        self.agents.push(tokio::spawn(run_agent(
            context.clone(),
            config,
            Actor::new(context, node),
            rng,
            self.agent_stop.subscribe(),
            agent,
            move |_session, stream_node, event| handler.handle(stream_node, event),
        )));
    }

    /// Waits (bounded) until every workflow is terminal, recorded as `drain`.
    async fn wait_for_terminal(&self, context: &ClientContext) {
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let process = context.recorder.new_process();
        let spec = OpSpec::new(
            "drain",
            None,
            json!({"bound_ms": self.options.drain_bound.as_millis() as u64}),
        );
        let invocation = context
            .recorder
            .invoke(context.workload, process, None, spec);
        let started = Instant::now();
        let deadline = started + self.options.drain_bound;
        let actor = Actor::new(context, nodes[0]);
        let mut attempt = 0;
        loop {
            let node = nodes[attempt % nodes.len()];
            attempt += 1;
            let listed = list_workflows(actor.channel(node), ReadConsistency::Linearizable).await;
            let last = match listed {
                Ok(workflows) => {
                    let open: Vec<String> = workflows
                        .iter()
                        .filter(|workflow| !is_terminal(workflow.state))
                        .map(|workflow| {
                            format!("{} {}", workflow.id, workflow_state(workflow.state))
                        })
                        .collect();
                    if open.is_empty() {
                        let value = json!({
                            "terminal": true,
                            "workflows": workflows.len(),
                            "waited_ms": started.elapsed().as_millis() as u64,
                        });
                        context
                            .recorder
                            .complete(&invocation, &Completion::Ok(value));
                        return;
                    }
                    format!(
                        "{} of {} workflows not terminal, e.g. {:?}",
                        open.len(),
                        workflows.len(),
                        &open[..open.len().min(5)]
                    )
                }
                Err(error) => format!("node {node}: {error}"),
            };
            if Instant::now() >= deadline {
                let value = json!({"terminal": false, "last": last});
                context
                    .recorder
                    .complete(&invocation, &Completion::Ok(value));
                tracing::warn!("workflows drain: bound reached: {last}");
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Waits (bounded) until the watcher saw every workflow it saw start finish too.
    async fn wait_for_watcher(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let started = lock(&self.shared.watched_started).clone();
            let finished = lock(&self.shared.watched_finished).clone();
            if started.is_subset(&finished) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Default for WorkflowsWorkload {
    fn default() -> Self {
        Self::new(Options::default())
    }
}

impl Workload for WorkflowsWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *lock(&self.context) = Some(context.clone());
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        self.watcher.push(tokio::spawn(watch_workflows(
            context.clone(),
            Arc::clone(&self.shared),
            self.watch_stop.subscribe(),
        )));
        for number in 0..self.options.agents {
            self.start_agent(&context, number, nodes[number % nodes.len()]);
        }
        let interval = context.op_interval * self.options.start_pace;
        let starters: Vec<u64> = nodes
            .iter()
            .flat_map(|node| std::iter::repeat_n(*node, self.options.starters_per_node))
            .collect();
        for (number, node) in starters.iter().copied().enumerate() {
            let context = context.clone();
            let shared = Arc::clone(&self.shared);
            let options = self.options.clone();
            self.clients.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut stop = context.stop.clone();
                let mut actor = Actor::new(&context, node);
                while !pace(&mut stop, &mut rng, interval).await {
                    let n = shared.starts.fetch_add(1, Ordering::Relaxed) + 1;
                    let (definition, stale) = if rng.gen_bool(0.5) {
                        (pipeline(&options), n.is_multiple_of(SCRIPT_EVERY))
                    } else {
                        (fan_out(&options), false)
                    };
                    let key = format!("s{n}");
                    if let Some(id) = start(&mut actor, &context, definition, &key, stale).await {
                        lock(&shared.started).push(id);
                    }
                }
            }));
        }
        let canceler = starters.len() as u64;
        let context_for_canceler = context.clone();
        let shared = Arc::clone(&self.shared);
        let interval = context.op_interval * self.options.cancel_pace;
        self.clients.push(tokio::spawn(async move {
            let context = context_for_canceler;
            let mut rng = context.rng(canceler);
            let mut stop = context.stop.clone();
            let mut actor = Actor::new(&context, nodes[canceler as usize % nodes.len()]);
            while !pace(&mut stop, &mut rng, interval).await {
                // Among the newest, so mostly in the middle of their steps.
                let id = {
                    let started = lock(&shared.started);
                    if started.is_empty() {
                        continue;
                    }
                    let newest = started.len().saturating_sub(4);
                    started[rng.gen_range(newest..started.len())]
                };
                cancel(&mut actor, &context, id).await;
            }
        }));
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            self.clients.drain(context.op_timeout).await?;
            self.draining.store(true, Ordering::SeqCst);
            for agent in lock(&self.agent_states).iter() {
                agent.behave.store(true, Ordering::SeqCst);
            }
            self.wait_for_terminal(&context).await;
            self.agent_stop.send_replace(true);
            self.agents.drain(context.op_timeout).await?;
            self.workers.drain(context.op_timeout + SCRIPT_WAIT).await
        })
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            read_final_state(context, |actor, context, node, consistency| {
                Box::pin(final_read(actor, context, node, consistency))
            })
            .await;
            final_tasks(context).await;
            self.wait_for_watcher().await;
            self.watch_stop.send_replace(true);
            self.watcher.drain(context.op_timeout).await
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

/// What an agent does with its assignments.
struct Handler {
    context: ClientContext,
    options: Options,
    name: String,
    agent: Arc<AgentShared>,
    shared: Arc<Shared>,
    observer: Actor,
    workers: Arc<Tasks>,
    draining: Arc<AtomicBool>,
    /// (task, token) pairs already handled: a stream resends current assignments.
    seen: HashSet<(u64, u64)>,
    choices: StdRng,
    pool: Arc<Mutex<Vec<Actor>>>,
}

/// What a worker does with one assignment.
#[derive(Clone, Debug)]
enum Action {
    /// Work a little, then complete.
    Complete { work_ms: u64 },
    /// Complete only after the lease has run out.
    Stall { after_ms: u64 },
    /// Fail retryably.
    Fail,
    /// Do nothing: the lease expires.
    Abandon,
    /// The first, stale side of a scripted deposal: wait until the task is assigned again, then
    /// complete with this (old) token.
    Deposed(Arc<Script>),
    /// The second side: wait until the stale completion was answered, then complete.
    Successor(Arc<Script>),
}

impl Handler {
    fn handle(&mut self, stream_node: u64, event: conclave_proto::v1::SessionEvent) {
        let Some(EventKind::Assignment(assignment)) = event.kind else {
            return;
        };
        if !self
            .seen
            .insert((assignment.task_id, assignment.fencing_token))
        {
            return;
        }
        let payload: Json = serde_json::from_slice(&assignment.payload).unwrap_or(Json::Null);
        let step = payload["step"].as_str().unwrap_or_default().to_string();
        self.observer.observe(
            &self.context,
            "assign",
            stream_node,
            json!({
                "agent": self.name,
                "task": assignment.task_id,
                "token": assignment.fencing_token,
                "attempt": assignment.attempt,
                "workflow": payload["workflow_id"],
                "step": step,
                "branch": payload["branch"]["index"],
                "results": payload["results"],
            }),
        );
        let action = self.choose(&payload, &step, &assignment);
        let job = Job {
            agent: Arc::clone(&self.agent),
            name: self.name.clone(),
            task: assignment.task_id,
            token: assignment.fencing_token,
            attempt: assignment.attempt,
            action,
            manages: (step == MANAGER_STEP).then_some(self.options.lease_ms),
        };
        let context = self.context.clone();
        let pool = Arc::clone(&self.pool);
        self.workers.push(tokio::spawn(async move {
            let taken = lock(&pool).pop();
            let mut actor = taken.unwrap_or_else(|| Actor::new(&context, stream_node));
            job.run(&mut actor, &context).await;
            lock(&pool).push(actor);
        }));
    }

    fn choose(
        &mut self,
        payload: &Json,
        step: &str,
        assignment: &conclave_proto::v1::Assignment,
    ) -> Action {
        let task = assignment.task_id;
        let token = assignment.fencing_token;
        let script = lock(&self.shared.scripts).get(&task).cloned();
        if let Some(script) = script {
            if token > script.stale_token && !*script.reassigned.borrow() {
                script.reassigned.send_replace(true);
                return Action::Successor(script);
            }
        } else if payload["input"]["stale"] == json!(true)
            && step == SCRIPT_STEP
            && assignment.attempt == 1
            && !self.draining.load(Ordering::SeqCst)
        {
            let script = Arc::new(Script {
                stale_token: token,
                reassigned: watch::Sender::new(false),
                answered: watch::Sender::new(false),
            });
            lock(&self.shared.scripts).insert(task, Arc::clone(&script));
            return Action::Deposed(script);
        }
        if self.draining.load(Ordering::SeqCst) {
            return Action::Complete { work_ms: 0 };
        }
        let options = &self.options;
        let roll: f64 = self.choices.gen();
        if roll < options.stall_probability {
            Action::Stall {
                after_ms: options.lease_ms + self.choices.gen_range(200..=1_200),
            }
        } else if roll < options.stall_probability + options.fail_probability {
            Action::Fail
        } else if roll
            < options.stall_probability + options.fail_probability + options.abandon_probability
        {
            Action::Abandon
        } else {
            Action::Complete {
                work_ms: self.choices.gen_range(20..=300),
            }
        }
    }
}

/// One assignment being worked on.
struct Job {
    agent: Arc<AgentShared>,
    name: String,
    task: u64,
    token: u64,
    attempt: u32,
    action: Action,
    /// A manager's attempt: delegate first (the delegated tasks' lease).
    manages: Option<u64>,
}

impl Job {
    async fn run(self, actor: &mut Actor, context: &ClientContext) {
        if let Some(lease_ms) = self.manages {
            self.delegate(actor, context, lease_ms).await;
        }
        match &self.action {
            Action::Complete { work_ms } | Action::Stall { after_ms: work_ms } => {
                tokio::time::sleep(Duration::from_millis(*work_ms)).await;
            }
            Action::Deposed(script) => {
                let mut reassigned = script.reassigned.subscribe();
                let _ = tokio::time::timeout(SCRIPT_WAIT, reassigned.wait_for(|r| *r)).await;
            }
            Action::Successor(script) => {
                let mut answered = script.answered.subscribe();
                let _ = tokio::time::timeout(SCRIPT_WAIT, answered.wait_for(|a| *a)).await;
            }
            Action::Fail | Action::Abandon => {}
        }
        // A frozen agent's workers are frozen too.
        self.agent.thaw().await;
        match &self.action {
            Action::Abandon => {}
            Action::Fail => self.fail(actor, context).await,
            Action::Deposed(script) => {
                self.complete(actor, context, true).await;
                script.answered.send_replace(true);
            }
            Action::Complete { .. } | Action::Stall { .. } | Action::Successor(_) => {
                self.complete(actor, context, false).await;
            }
        }
    }

    async fn complete(&self, actor: &mut Actor, context: &ClientContext, stale: bool) {
        let result = step_result(self.task, self.attempt, self.token, &self.name);
        let request = CompleteRequest {
            request_id: actor.next_request_id(),
            task_id: self.task,
            fencing_token: self.token,
            result: result.clone().into_bytes(),
            fence: None,
        };
        let value = json!({
            "agent": self.name,
            "task": self.task,
            "token": self.token,
            "attempt": self.attempt,
            "result": result,
            "stale": stale,
        });
        let spec = OpSpec::new("complete", None, value.clone());
        actor
            .write(context, spec, |channel| {
                let request = request.clone();
                let value = value.clone();
                async move {
                    match AgentsClient::new(channel).complete(request).await {
                        Ok(response) => {
                            let mut value = value;
                            value["state"] = json!(state_name(response.into_inner().state));
                            Attempt::Ok(value)
                        }
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
    }

    /// Delegates DELEGATED tasks under this attempt's lease, recorded as `delegate`.
    async fn delegate(&self, actor: &mut Actor, context: &ClientContext, lease_ms: u64) {
        let tasks = (0..DELEGATED)
            .map(|n| TaskSpec {
                queue: QUEUE.to_string(),
                payload: json!({"delegated_by": self.task, "n": n})
                    .to_string()
                    .into_bytes(),
                capabilities: vec![CAPABILITY.to_string()],
                max_attempts: 3,
                lease_ms,
                ..TaskSpec::default()
            })
            .collect::<Vec<_>>();
        let request = DelegateRequest {
            request_id: actor.next_request_id(),
            task_id: self.task,
            fencing_token: self.token,
            tasks,
            escalate_to: String::new(),
        };
        let value = json!({"agent": self.name, "task": self.task, "token": self.token});
        let spec = OpSpec::new("delegate", None, value.clone());
        actor
            .write(context, spec, |channel| {
                let request = request.clone();
                let value = value.clone();
                async move {
                    match AgentsClient::new(channel).delegate(request).await {
                        Ok(response) => {
                            let mut value = value;
                            value["children"] = json!(response.into_inner().task_ids);
                            Attempt::Ok(value)
                        }
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
    }

    async fn fail(&self, actor: &mut Actor, context: &ClientContext) {
        let request = FailRequest {
            request_id: actor.next_request_id(),
            task_id: self.task,
            fencing_token: self.token,
            error: "the jepsen worker failed on purpose".to_string(),
            retryable: true,
            retry_after_ms: 0,
        };
        let value = json!({"agent": self.name, "task": self.task, "token": self.token});
        let spec = OpSpec::new("fail-step", None, value.clone());
        actor
            .write(context, spec, |channel| {
                let request = request.clone();
                let value = value.clone();
                async move {
                    match AgentsClient::new(channel).fail(request).await {
                        Ok(_) => Attempt::Ok(value),
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
    }
}

/// The result a worker completes a step task with: which attempt, under which token, produced it.
/// The workflow records it as the step's (or branch's) result, JSON as it is.
pub fn step_result(task: u64, attempt: u32, token: u64, agent: &str) -> String {
    json!({"task": task, "attempt": attempt, "token": token, "agent": agent}).to_string()
}

/// Starts one workflow, recorded as `start`; its id if acknowledged.
async fn start(
    actor: &mut Actor,
    context: &ClientContext,
    definition: WorkflowDefinition,
    key: &str,
    stale: bool,
) -> Option<u64> {
    let kind = definition.name.clone();
    let request = StartWorkflowRequest {
        request_id: actor.next_request_id(),
        definition: Some(definition),
        input_json: json!({"key": key, "stale": stale}).to_string(),
        idempotency_key: key.to_string(),
        deadline_ms: 0,
    };
    let spec = OpSpec::new(
        "start",
        None,
        json!({"kind": kind, "key": key, "stale": stale}),
    );
    let completion = actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let key = key.to_string();
            async move {
                match WorkflowsClient::new(channel).start(request).await {
                    Ok(response) => {
                        let id = response.into_inner().workflow_id;
                        Attempt::Ok(json!({"key": key, "id": id}))
                    }
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

/// Cancels one workflow, recorded as `cancel`.
async fn cancel(actor: &mut Actor, context: &ClientContext, id: u64) {
    let request = CancelWorkflowRequest {
        request_id: actor.next_request_id(),
        workflow_id: id,
        reason: "jepsen cancel".to_string(),
    };
    let spec = OpSpec::new("cancel", None, json!({"id": id}));
    actor
        .write(context, spec, |channel| {
            let request = request.clone();
            async move {
                match WorkflowsClient::new(channel).cancel(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        Attempt::Ok(json!({
                            "id": id,
                            "canceled": response.canceled,
                            "state": workflow_state(response.state),
                        }))
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
}

/// Follows every workflow's events from now until `stop`, recording each change as `event`:
/// resumes after the last sequence it got (a change, a bookmark or STARTED) on the next node when
/// the stream breaks; records `watch-gap` and starts again from now when the events after its
/// cursor are gone.
async fn watch_workflows(
    context: ClientContext,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let nodes: Vec<u64> = context.nodes.keys().copied().collect();
    let actor = Actor::new(&context, nodes[0]);
    let mut cursor: Option<u64> = None;
    let mut attempt = 0usize;
    while !*stop.borrow() {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let mut client = WorkflowsClient::new(crate::channel::channel(context.nodes[&node], None));
        let request = WatchWorkflowsRequest {
            workflow_id: 0,
            after_sequence: cursor,
        };
        let opened = tokio::select! {
            opened = tokio::time::timeout(context.op_timeout, client.watch(request)) => opened,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) if status.code() == Code::OutOfRange => {
                actor.observe(
                    &context,
                    "watch-gap",
                    node,
                    json!({"after": cursor, "error": describe(&status)}),
                );
                cursor = None;
                continue;
            }
            Ok(Err(status)) => {
                tracing::debug!(node, "workflow watch: {}", describe(&status));
                tokio::time::sleep(Duration::from_millis(150)).await;
                continue;
            }
            Err(_) => continue,
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let Ok(Some(event)) = message else {
                break;
            };
            let kind = WorkflowEventKind::try_from(event.kind).unwrap_or_default();
            match kind {
                WorkflowEventKind::Started | WorkflowEventKind::Bookmark => {
                    cursor = Some(event.sequence);
                    continue;
                }
                _ => {}
            }
            if cursor.is_some_and(|cursor| event.sequence <= cursor) {
                // Never expected: recorded anyway, so the checker can say so.
                actor.observe(
                    &context,
                    "event-repeated",
                    node,
                    json!({"sequence": event.sequence, "cursor": cursor}),
                );
                continue;
            }
            cursor = Some(event.sequence);
            match kind {
                WorkflowEventKind::StartedWorkflow => {
                    lock(&shared.watched_started).insert(event.workflow_id);
                }
                WorkflowEventKind::Finished => {
                    lock(&shared.watched_finished).insert(event.workflow_id);
                }
                _ => {}
            }
            actor.observe(
                &context,
                "event",
                node,
                json!({
                    "sequence": event.sequence,
                    "kind": short_name(kind.as_str_name(), "WORKFLOW_EVENT_KIND_"),
                    "workflow": event.workflow_id,
                    "step": event.step,
                    "state": workflow_state(event.state),
                }),
            );
        }
    }
}

/// Every workflow the node lists, all pages (listings leave results out).
async fn list_workflows(
    channel: Channel,
    consistency: ReadConsistency,
) -> Result<Vec<Workflow>, String> {
    let mut client = WorkflowsClient::new(channel);
    let mut workflows = Vec::new();
    let mut after_id = 0;
    loop {
        let page = client
            .list(ListWorkflowsRequest {
                after_id,
                limit: PAGE,
                consistency: consistency as i32,
                ..ListWorkflowsRequest::default()
            })
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        workflows.extend(page.workflows);
        if !page.more {
            return Ok(workflows);
        }
        if page.next_after_id <= after_id {
            return Err("ListWorkflows did not advance".to_string());
        }
        after_id = page.next_after_id;
    }
}

/// Every workflow the node lists, each read in full (Get).
async fn read_workflows(
    channel: Channel,
    consistency: ReadConsistency,
) -> Result<Vec<Workflow>, String> {
    let listed = list_workflows(channel.clone(), consistency).await?;
    let mut client = WorkflowsClient::new(channel);
    let mut workflows = Vec::new();
    for workflow in listed {
        let read = client
            .get(GetWorkflowRequest {
                workflow_id: workflow.id,
                consistency: consistency as i32,
            })
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        workflows.extend(read.workflow);
    }
    Ok(workflows)
}

/// A workflow as a final read records it: its state, and per step its dependencies (from the
/// stored definition), state, cluster times, runs, result and branches.
pub fn workflow_json(workflow: &Workflow) -> Json {
    let definition = workflow.definition.clone().unwrap_or_default();
    let steps: Vec<Json> = workflow
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let declared = definition.steps.get(index);
            let join_k = declared
                .and_then(|declared| declared.fan_out.as_ref())
                .map(|fan_out| fan_out.join.map_or(0, |join| join.k));
            json!({
                "name": step.name,
                "after": declared.map_or(Vec::new(), |declared| declared.after.clone()),
                "compensation": declared.is_some_and(|declared| declared.compensation),
                "join_k": join_k,
                "state": step_state(step.state),
                "started": step.started_unix_ms,
                "finished": step.finished_unix_ms,
                "runs": step.runs,
                "result": step.result_json,
                "branches": step.branches.iter().map(|branch| json!({
                    "task": branch.task_id,
                    "state": branch_state(branch.state),
                    "result": branch.result_json,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "id": workflow.id,
        "name": workflow.name,
        "key": workflow.idempotency_key,
        "state": workflow_state(workflow.state),
        "steps": steps,
        "compensations": workflow.compensations.iter().map(|compensation| json!({
            "step": compensation.step,
            "task": compensation.task_id,
            "state": branch_state(compensation.state),
        })).collect::<Vec<_>>(),
    })
}

/// A step task as `final-tasks` records it: origin, state, result and attempt log.
pub fn task_json(task: &Task) -> Json {
    json!({
        "id": task.id,
        "state": state_name(task.state),
        // The step by index: ListTasks leaves `step_name` empty (only GetTask fills it in).
        "origin": task.origin.as_ref().map(|origin| json!([origin.workflow_id, origin.step, origin.branch])),
        "result": String::from_utf8_lossy(&task.result),
        "history": task.history.iter().map(|attempt| json!([
            attempt.attempt,
            attempt.fencing_token,
            short_name(
                conclave_proto::v1::AttemptOutcome::try_from(attempt.outcome)
                    .unwrap_or_default()
                    .as_str_name(),
                "ATTEMPT_OUTCOME_",
            ),
            attempt.ended_unix_ms,
        ])).collect::<Vec<_>>(),
        // A delegated task: its manager and the manager's lease token.
        "delegation": task.delegation.as_ref().map(|d| json!([d.parent_task_id, d.fencing_token])),
    })
}

/// Reads every workflow on `node`, recorded as `final-read`; true if it succeeded.
async fn final_read(
    actor: &mut Actor,
    context: &ClientContext,
    node: u64,
    consistency: ReadConsistency,
) -> bool {
    let name = match consistency {
        ReadConsistency::Linearizable => "linearizable",
        _ => "serializable",
    };
    let spec = OpSpec::new(FINAL_READ, None, json!({"consistency": name}));
    let completion = actor
        .read(context, spec, node, |channel| async move {
            let workflows = read_workflows(channel, consistency).await?;
            Ok(json!({
                "consistency": name,
                "workflows": workflows.iter().map(workflow_json).collect::<Vec<_>>(),
            }))
        })
        .await;
    matches!(completion, Completion::Ok(_))
}

/// Lists the workflows' queue (linearizable) from the first node that answers, recorded as
/// `final-tasks`.
async fn final_tasks(context: &ClientContext) {
    let nodes: Vec<u64> = context.nodes.keys().copied().collect();
    let mut actor = Actor::new(context, nodes[0]);
    for node in nodes {
        let spec = OpSpec::new("final-tasks", None, json!({}));
        let completion = actor
            .read(context, spec, node, |channel| async move {
                let tasks = list_queue(channel).await?;
                Ok(json!({"tasks": tasks.iter().map(task_json).collect::<Vec<_>>()}))
            })
            .await;
        if matches!(completion, Completion::Ok(_)) {
            return;
        }
    }
}

async fn list_queue(channel: Channel) -> Result<Vec<Task>, String> {
    let mut client = TasksClient::new(channel);
    let mut tasks: Vec<Task> = Vec::new();
    let mut after_id = 0;
    loop {
        let page = client
            .list_tasks(ListTasksRequest {
                queue: QUEUE.to_string(),
                limit: PAGE,
                after_id,
                consistency: ReadConsistency::Linearizable as i32,
                ..ListTasksRequest::default()
            })
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        tasks.extend(page.tasks);
        if !page.more {
            return Ok(tasks);
        }
        let last = tasks.last().map_or(after_id, |task| task.id);
        if last <= after_id {
            return Err("ListTasks did not advance".to_string());
        }
        after_id = last;
    }
}

fn is_terminal(state: i32) -> bool {
    matches!(
        WorkflowState::try_from(state),
        Ok(WorkflowState::Succeeded
            | WorkflowState::Failed
            | WorkflowState::Canceled
            | WorkflowState::TimedOut)
    )
}

fn workflow_state(state: i32) -> String {
    WorkflowState::try_from(state).map_or_else(
        |_| format!("UNKNOWN({state})"),
        |state| short_name(state.as_str_name(), "WORKFLOW_STATE_"),
    )
}

fn step_state(state: i32) -> String {
    WorkflowStepState::try_from(state).map_or_else(
        |_| format!("UNKNOWN({state})"),
        |state| short_name(state.as_str_name(), "WORKFLOW_STEP_STATE_"),
    )
}

fn branch_state(state: i32) -> String {
    WorkflowBranchState::try_from(state).map_or_else(
        |_| format!("UNKNOWN({state})"),
        |state| short_name(state.as_str_name(), "WORKFLOW_BRANCH_STATE_"),
    )
}
