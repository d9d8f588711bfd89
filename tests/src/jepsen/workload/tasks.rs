//! The tasks workload: submitters add tasks with unique payloads to three queues, with random
//! priorities, some not before a few hundred ms from now, some with a deadline a few seconds
//! ahead, while raw-API agents (short session TTLs, streams on various nodes) take the
//! assignments and complete them, now and then failing (retryably or for good), giving a task
//! back, letting its lease expire, or completing it only after the lease has run out (a stale
//! worker). Some payloads are poison (every attempt fails for good) or flaky (every attempt fails
//! retryably, until the attempts run out): they land in the dead-letter queue, deterministically
//! by payload. Operators ([`operator`]) cancel random tasks, redrive some dead letters (after
//! which agents treat them as ordinary tasks), and gate a few tasks on decisions that agents of
//! the workload vote on. After healing, agents keep working, without misbehaving, until every
//! task is terminal (bounded; a task that stays dead-lettered is terminal), then every node
//! lists the queues (serializable, after convergence) and one linearizable listing follows.
//!
//! Recorded operations (f: invocation value -> ok value):
//! - `submit`: `{"payload", "spec"}` -> `{"payload", "id"}`, resent with its request id while
//!   unknown; `spec` holds queue, priority, not-before, deadline, max_attempts and the gate;
//! - `assign` and `revoked` (observations by the agent's stream process: an assignment, a lease
//!   lost or a cancellation pushed to it): `{"agent", "task", "token", "attempt" or "reason"}`;
//! - `complete`, `fail`, `release`: `{"agent", "task", "token"}` (+ `"retryable"` for fail) ->
//!   the same with `"state"`; `fail` when refused (FAILED_PRECONDITION "lease lost", the outcome
//!   of the request id's one application, with the reason as the error), `info` when unknown;
//! - `cancel`: `{"task", "reason"}` -> the same with `"canceled"` and `"previous"`;
//! - `dead-letters` (a read): `{"queue"}` -> `{"queue", "tasks": [{"id", "state", "queue",
//!   "last_token"}]}`; `redrive`: `{"task", "last_token"}` (the token it was listed with) ->
//!   the same with `"count"`;
//! - `propose` (a gate's decision): `{"deadline"}` -> `{"id"}`; `vote`: `{"id", "voter",
//!   "choice"}`; `final-gates`: `{}` -> `{"decisions": [{"id", "status", "outcome",
//!   "closed_ms"}]}`;
//! - `register`: an agent's registration; `drain`: the wait for every task to be terminal;
//! - `final-read`: `{"consistency"}` -> `{"consistency", "tasks": [...]}`, each task as
//!   [`listed::task_json`] writes it (spec, state, reasons, cluster times, attempt log).
//!
//! The checker is [`check::check`], a pure function of the history.

mod check;
pub(super) mod listed;
mod operator;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::{
    Backoff, CompleteRequest, DecisionGate, FailRequest, ListTasksRequest, ReadConsistency,
    ReleaseRequest, SubmitRequest, Task, TaskSpec, TaskState, TaskVerbResponse,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

pub use self::check::check;
use self::listed::{completion_result, state_name, task_json, Spec};
use super::agents::{
    classify, pace, read_final_state, run_agent, unix_ms, Actor, AgentConfig, AgentShared,
};
use super::{CheckResult, Tasks, Workload, FINAL_READ};
use crate::jepsen::client::{mix, Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

pub const NAME: &str = "tasks";
/// The queues of the workload; a run uses the first `Options::queues`.
pub const QUEUES: [&str; 3] = ["jepsen-tasks-a", "jepsen-tasks-b", "jepsen-tasks-c"];
/// The capability every task needs and every agent of the workload has.
pub const CAPABILITY: &str = "jepsen-tasks";
/// Most tasks a listing page holds (the API's limit).
const PAGE: u32 = 1000;
/// Pause between two checks of the queues while draining.
const DRAIN_POLL: Duration = Duration::from_millis(300);
/// Payload suffixes that make agents fail a task on purpose until it is redriven.
const POISON: &str = "-poison";
const FLAKY: &str = "-flaky";

#[derive(Clone, Debug)]
pub struct Options {
    /// Agents, spread over the nodes for their first stream.
    pub agents: usize,
    /// Tasks each agent may hold at once.
    pub concurrency: u32,
    /// Session TTL of each agent, at random in this range (ms).
    pub ttl_ms: (u64, u64),
    /// Lease of each attempt.
    pub lease_ms: u64,
    pub max_attempts: u32,
    /// A submitter's mean pause is this many times the run's `op_interval`.
    pub submit_pace: u32,
    /// How long agents get after the heal to make every task terminal.
    pub drain_bound: Duration,
    /// Chance that an agent freezes past its TTL when it moves its stream.
    pub freeze_probability: f64,
    /// Queues in use (1 ..= 3); each task goes to one at random.
    pub queues: usize,
    /// Priorities are drawn from this range (tasks.proto allows -1000 ..= 1000).
    pub priority: (i32, i32),
    /// Chance that a task gets a not-before this far ahead (ms, at random in the range).
    pub delay_probability: f64,
    pub delay_ms: (u64, u64),
    /// Chance that a task gets a deadline this far after it may start (ms): short enough to
    /// expire now and then, under faults or behind a stale worker.
    pub deadline_probability: f64,
    pub deadline_ms: (u64, u64),
    /// Chance that a payload is poison (every attempt fails for good) or flaky (every attempt
    /// fails retryably, with `flaky_max_attempts`), until the task is redriven.
    pub poison_probability: f64,
    pub flaky_probability: f64,
    pub flaky_max_attempts: u32,
    /// The canceler's mean pause is this many times the run's `op_interval`.
    pub cancel_pace: u32,
    /// Pause of the redriver between two looks at the dead-letter queue (ms, at random).
    pub redrive_pause_ms: (u64, u64),
    /// Chance that the redriver redrives a dead letter it sees for the first time.
    pub redrive_probability: f64,
    /// Pause of the gatekeeper between two gating decisions (ms, at random); none if zero.
    pub gate_pause_ms: (u64, u64),
    /// Agents (the first ones) that vote on the gates.
    pub gate_voters: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            agents: 6,
            concurrency: 3,
            ttl_ms: (2_000, 4_000),
            lease_ms: 2_000,
            max_attempts: 6,
            submit_pace: 8,
            drain_bound: Duration::from_secs(40),
            freeze_probability: 0.1,
            queues: QUEUES.len(),
            priority: (-1000, 1000),
            delay_probability: 0.2,
            delay_ms: (100, 800),
            deadline_probability: 0.2,
            deadline_ms: (1_000, 4_000),
            poison_probability: 0.03,
            flaky_probability: 0.03,
            flaky_max_attempts: 2,
            cancel_pace: 8,
            redrive_pause_ms: (400, 1_200),
            redrive_probability: 0.6,
            gate_pause_ms: (1_500, 3_000),
            gate_voters: 3,
        }
    }
}

impl Options {
    /// A random spec and payload suffix for a new task, with times from `now_ms` on.
    fn choose(&self, rng: &mut StdRng, now_ms: u64) -> (Spec, &'static str) {
        let queue = QUEUES[rng.gen_range(0..self.queues.clamp(1, QUEUES.len()))].to_string();
        let priority = i64::from(rng.gen_range(self.priority.0..=self.priority.1));
        let not_before_ms = if rng.gen_bool(self.delay_probability) {
            now_ms + rng.gen_range(self.delay_ms.0..=self.delay_ms.1)
        } else {
            0
        };
        let deadline_ms = if rng.gen_bool(self.deadline_probability) {
            now_ms.max(not_before_ms) + rng.gen_range(self.deadline_ms.0..=self.deadline_ms.1)
        } else {
            0
        };
        let roll: f64 = rng.gen();
        let (suffix, max_attempts) = if roll < self.poison_probability {
            (POISON, self.max_attempts)
        } else if roll < self.poison_probability + self.flaky_probability {
            (FLAKY, self.flaky_max_attempts)
        } else {
            ("", self.max_attempts)
        };
        let spec = Spec {
            queue,
            priority,
            not_before_ms,
            deadline_ms,
            max_attempts: u64::from(max_attempts),
            gate: None,
        };
        (spec, suffix)
    }

    fn queues(&self) -> &'static [&'static str] {
        &QUEUES[..self.queues.clamp(1, QUEUES.len())]
    }
}

/// What the workload's clients and agents share.
#[derive(Debug, Default)]
struct Shared {
    /// The next payload number.
    payloads: AtomicU64,
    /// Ids of acknowledged submissions, oldest first: what the canceler cancels.
    acknowledged: Mutex<Vec<u64>>,
    /// Tasks whose redrive was sent: agents no longer fail them on purpose.
    redriven: Mutex<HashSet<u64>>,
    /// Acknowledged gating decisions, for the final read of the gates.
    decisions: Mutex<Vec<u64>>,
}

impl Shared {
    fn next_payload(&self, suffix: &str) -> String {
        format!(
            "p{}{suffix}",
            self.payloads.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    fn acknowledged(&self, id: u64) {
        lock(&self.acknowledged).push(id);
    }

    fn is_redriven(&self, id: u64) -> bool {
        lock(&self.redriven).contains(&id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct TasksWorkload {
    options: Options,
    shared: Arc<Shared>,
    /// Submitters and operators: they stop at the stop signal.
    clients: Tasks,
    agents: Tasks,
    workers: Arc<Tasks>,
    /// Set once the drain begins: agents then complete everything they get.
    draining: Arc<AtomicBool>,
    /// Every agent's shared state, to tell them to stop freezing at the drain.
    agent_states: Mutex<Vec<Arc<AgentShared>>>,
    /// Stops the agents (after the drain).
    agent_stop: watch::Sender<bool>,
    context: Mutex<Option<ClientContext>>,
}

impl TasksWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            shared: Arc::default(),
            clients: Tasks::default(),
            agents: Tasks::default(),
            workers: Arc::new(Tasks::default()),
            draining: Arc::new(AtomicBool::new(false)),
            agent_states: Mutex::default(),
            agent_stop: watch::Sender::new(false),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        lock(&self.context).clone()
    }

    fn start_agent(&self, context: &ClientContext, number: usize, node: u64) {
        let mut rng = StdRng::seed_from_u64(mix(context.seed, &[0x7a5c, number as u64]));
        let config = AgentConfig {
            name: agent_name(number),
            capabilities: vec![CAPABILITY.to_string()],
            max_concurrent: self.options.concurrency,
            ttl_ms: rng.gen_range(self.options.ttl_ms.0..=self.options.ttl_ms.1),
            // A breaker does open now and then, but only briefly: the drain must finish.
            breaker_failures: 4,
            breaker_cooldown_ms: 1_000,
            freeze_probability: self.options.freeze_probability,
        };
        let shared = Arc::new(AgentShared::default());
        lock(&self.agent_states).push(Arc::clone(&shared));
        let handler_shared = Arc::clone(&shared);
        let workload = Arc::clone(&self.shared);
        let register_actor = Actor::new(context, node);
        let observer = Actor::new(context, node);
        let context_for_handler = context.clone();
        let workers = Arc::clone(&self.workers);
        let draining = Arc::clone(&self.draining);
        let lease_ms = self.options.lease_ms;
        let name = config.name.clone();
        let pool: Arc<Mutex<Vec<Actor>>> = Arc::default();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut revoked: HashSet<(u64, u64)> = HashSet::new();
        let ballots: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let mut choices = StdRng::seed_from_u64(mix(context.seed, &[0x7a5d, number as u64]));
        let handler = move |_session: u64,
                            stream_node: u64,
                            event: conclave_proto::v1::SessionEvent| {
            let context = &context_for_handler;
            let assignment = match event.kind {
                Some(EventKind::Assignment(assignment)) => assignment,
                Some(EventKind::LeaseLost(revocation) | EventKind::Canceled(revocation)) => {
                    // Pushed from committed state: no verb with this token may be accepted
                    // from now on.
                    if revoked.insert((revocation.task_id, revocation.fencing_token)) {
                        observer.observe(
                            context,
                            "revoked",
                            stream_node,
                            json!({
                                "agent": name,
                                "task": revocation.task_id,
                                "token": revocation.fencing_token,
                                "reason": revocation.reason,
                            }),
                        );
                    }
                    return;
                }
                Some(EventKind::Ballot(ballot)) => {
                    let Some(decision) = ballot.decision else {
                        return;
                    };
                    // A ballot pushed again after a reconnect is one.
                    if !lock(&ballots).insert(decision.id) {
                        return;
                    }
                    let choice = operator::GATE_OPTIONS
                        [usize::from(choices.gen_bool(operator::SKIP_PROBABILITY))];
                    let delay = Duration::from_millis(choices.gen_range(0..=400));
                    let context = context.clone();
                    let shared = Arc::clone(&handler_shared);
                    let ballots = Arc::clone(&ballots);
                    let name = name.clone();
                    workers.push(tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            shared.thaw().await;
                            let mut actor = Actor::new(&context, stream_node);
                            let voted = crate::jepsen::workload::decisions::vote(
                                &mut actor,
                                &context,
                                &name,
                                shared.session(),
                                decision.id,
                                choice,
                            )
                            .await;
                            if matches!(&voted, Completion::Fail(error) if error.contains("is not live"))
                            {
                                // The ballot comes again on the next session's stream.
                                lock(&ballots).remove(&decision.id);
                            }
                        }));
                    return;
                }
                _ => return,
            };
            // A stream resends current assignments after a reconnect: one assignment is one.
            if !seen.insert((assignment.task_id, assignment.fencing_token)) {
                return;
            }
            observer.observe(
                context,
                "assign",
                stream_node,
                json!({
                    "agent": name,
                    "task": assignment.task_id,
                    "token": assignment.fencing_token,
                    "attempt": assignment.attempt,
                }),
            );
            let payload = String::from_utf8_lossy(&assignment.payload);
            let action = if draining.load(Ordering::SeqCst) {
                Action::Complete { work_ms: 0 }
            } else if workload.is_redriven(assignment.task_id) {
                Action::choose(&mut choices, lease_ms)
            } else if payload.ends_with(POISON) {
                Action::Fail { retryable: false }
            } else if payload.ends_with(FLAKY) {
                Action::Fail { retryable: true }
            } else {
                Action::choose(&mut choices, lease_ms)
            };
            let job = Job {
                shared: Arc::clone(&handler_shared),
                agent: name.clone(),
                task: assignment.task_id,
                token: assignment.fencing_token,
                action,
            };
            let context = context.clone();
            let pool = Arc::clone(&pool);
            let node = stream_node;
            workers.push(tokio::spawn(async move {
                let taken = lock(&pool).pop();
                let mut actor = taken.unwrap_or_else(|| Actor::new(&context, node));
                job.run(&mut actor, &context).await;
                lock(&pool).push(actor);
            }));
        };
        self.agents.push(tokio::spawn(run_agent(
            context.clone(),
            config,
            register_actor,
            rng,
            self.agent_stop.subscribe(),
            shared,
            handler,
        )));
    }

    /// Waits (bounded) until every task of the queues is terminal, recorded as `drain`.
    async fn wait_for_terminal(&self, context: &ClientContext) -> anyhow::Result<()> {
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
            let listed = list_queues(
                actor.channel(node),
                self.options.queues(),
                ReadConsistency::Linearizable,
            )
            .await;
            let last = match listed {
                Ok(tasks) => {
                    let open: Vec<String> = tasks
                        .iter()
                        .filter(|(task, _)| !is_terminal(task.state))
                        .map(|(task, _)| format!("{} {}", task.id, state_name(task.state)))
                        .collect();
                    if open.is_empty() {
                        let value = json!({
                            "terminal": true,
                            "tasks": tasks.len(),
                            "waited_ms": started.elapsed().as_millis() as u64,
                        });
                        context
                            .recorder
                            .complete(&invocation, &Completion::Ok(value));
                        return Ok(());
                    }
                    format!(
                        "{} of {} tasks not terminal, e.g. {:?}",
                        open.len(),
                        tasks.len(),
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
                // The checker reports the tasks left open, from the final reads.
                tracing::warn!("tasks drain: bound reached: {last}");
                return Ok(());
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

impl Default for TasksWorkload {
    fn default() -> Self {
        Self::new(Options::default())
    }
}

impl Workload for TasksWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *lock(&self.context) = Some(context.clone());
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        for number in 0..self.options.agents {
            self.start_agent(&context, number, nodes[number % nodes.len()]);
        }
        let interval = context.op_interval * self.options.submit_pace;
        let slots = context.slots();
        for (number, node) in slots.iter().copied().enumerate() {
            let context = context.clone();
            let shared = Arc::clone(&self.shared);
            let options = self.options.clone();
            self.clients.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut stop = context.stop.clone();
                let mut actor = Actor::new(&context, node);
                while !pace(&mut stop, &mut rng, interval).await {
                    let (spec, suffix) = options.choose(&mut rng, unix_ms());
                    let payload = shared.next_payload(suffix);
                    if let Some(id) = submit(&mut actor, &context, &payload, &spec, &options).await
                    {
                        shared.acknowledged(id);
                    }
                }
            }));
        }
        // The operators' generators follow the submitters'.
        let operators = slots.len() as u64;
        let operator = operator::Operator {
            context: context.clone(),
            shared: Arc::clone(&self.shared),
            options: self.options.clone(),
        };
        self.clients.push(tokio::spawn(
            operator
                .clone()
                .cancel_tasks(nodes[0], context.rng(operators)),
        ));
        self.clients.push(tokio::spawn(
            operator
                .clone()
                .redrive_dead_letters(nodes[1 % nodes.len()], context.rng(operators + 1)),
        ));
        if self.options.gate_pause_ms.1 > 0 && self.options.gate_voters > 0 {
            self.clients.push(tokio::spawn(
                operator.gate_tasks(nodes[2 % nodes.len()], context.rng(operators + 2)),
            ));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            self.clients.drain(context.op_timeout).await?;
            self.draining.store(true, Ordering::SeqCst);
            for shared in lock(&self.agent_states).iter() {
                shared.behave.store(true, Ordering::SeqCst);
            }
            self.wait_for_terminal(&context).await?;
            self.agent_stop.send_replace(true);
            self.agents.drain(context.op_timeout).await?;
            self.workers.drain(context.op_timeout).await
        })
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            read_final_state(context, |actor, context, node, consistency| {
                Box::pin(final_read(actor, context, node, consistency))
            })
            .await;
            let decisions = lock(&self.shared.decisions).clone();
            if !decisions.is_empty() {
                operator::final_gates(context, &decisions).await;
            }
            Ok(())
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

/// The name of agent `number`; the first `Options::gate_voters` vote on the gates.
fn agent_name(number: usize) -> String {
    format!("jepsen-worker-{number}")
}

/// What an agent does with one assignment.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    /// Work a little, then complete.
    Complete { work_ms: u64 },
    /// Fail; retryable or for good (dead-lettered at once).
    Fail { retryable: bool },
    /// Give the task back.
    Release,
    /// Do nothing: the lease expires.
    Abandon,
    /// Complete only after the lease has run out: a stale worker.
    LateComplete { after_ms: u64 },
}

impl Action {
    fn choose(rng: &mut StdRng, lease_ms: u64) -> Self {
        let roll: f64 = rng.gen();
        match roll {
            r if r < 0.70 => Action::Complete {
                work_ms: rng.gen_range(0..=120),
            },
            r if r < 0.79 => Action::Fail { retryable: true },
            r if r < 0.81 => Action::Fail { retryable: false },
            r if r < 0.85 => Action::Release,
            r if r < 0.92 => Action::Abandon,
            _ => Action::LateComplete {
                after_ms: lease_ms + rng.gen_range(200..=1_500),
            },
        }
    }
}

/// One assignment being worked on.
struct Job {
    shared: Arc<AgentShared>,
    agent: String,
    task: u64,
    token: u64,
    action: Action,
}

impl Job {
    async fn run(self, actor: &mut Actor, context: &ClientContext) {
        let value = json!({"agent": self.agent, "task": self.task, "token": self.token});
        let work_ms = match self.action {
            Action::Complete { work_ms } | Action::LateComplete { after_ms: work_ms } => work_ms,
            _ => 0,
        };
        tokio::time::sleep(Duration::from_millis(work_ms)).await;
        // A frozen agent's workers are frozen too.
        self.shared.thaw().await;
        match self.action {
            Action::Abandon => {}
            Action::Complete { .. } | Action::LateComplete { .. } => {
                let request = CompleteRequest {
                    request_id: actor.next_request_id(),
                    task_id: self.task,
                    fencing_token: self.token,
                    result: completion_result(&self.agent, self.token).into_bytes(),
                    fence: None,
                };
                let spec = OpSpec::new("complete", None, value.clone());
                actor
                    .write(context, spec, |channel| {
                        let request = request.clone();
                        verb(value.clone(), async move {
                            AgentsClient::new(channel).complete(request).await
                        })
                    })
                    .await;
            }
            Action::Fail { retryable } => {
                let request = FailRequest {
                    request_id: actor.next_request_id(),
                    task_id: self.task,
                    fencing_token: self.token,
                    error: "the jepsen agent failed on purpose".to_string(),
                    retryable,
                    retry_after_ms: 0,
                };
                let mut value = value;
                value["retryable"] = json!(retryable);
                let spec = OpSpec::new("fail", None, value.clone());
                actor
                    .write(context, spec, |channel| {
                        let request = request.clone();
                        verb(value.clone(), async move {
                            AgentsClient::new(channel).fail(request).await
                        })
                    })
                    .await;
            }
            Action::Release => {
                let request = ReleaseRequest {
                    request_id: actor.next_request_id(),
                    task_id: self.task,
                    fencing_token: self.token,
                };
                let spec = OpSpec::new("release", None, value.clone());
                actor
                    .write(context, spec, |channel| {
                        verb(value.clone(), async move {
                            AgentsClient::new(channel).release(request).await
                        })
                    })
                    .await;
            }
        }
    }
}

/// One send of a task verb: ok carries the task's state after it.
async fn verb(
    value: Json,
    call: impl std::future::Future<Output = Result<tonic::Response<TaskVerbResponse>, tonic::Status>>,
) -> Attempt {
    match call.await {
        Ok(response) => {
            let mut value = value;
            value["state"] = json!(state_name(response.into_inner().state));
            Attempt::Ok(value)
        }
        Err(status) => classify(&status),
    }
}

fn task_spec(payload: &str, spec: &Spec, options: &Options) -> TaskSpec {
    TaskSpec {
        queue: spec.queue.clone(),
        payload: payload.as_bytes().to_vec(),
        capabilities: vec![CAPABILITY.to_string()],
        priority: i32::try_from(spec.priority).expect("priorities are drawn in range"),
        max_attempts: u32::try_from(spec.max_attempts).expect("attempts are small"),
        lease_ms: options.lease_ms,
        deadline_unix_ms: spec.deadline_ms,
        not_before_unix_ms: spec.not_before_ms,
        backoff: Some(Backoff {
            initial_ms: 100,
            maximum_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.5,
        }),
        requires: spec
            .gate
            .as_ref()
            .map(|(decision_id, option)| DecisionGate {
                decision_id: *decision_id,
                option: option.clone(),
            }),
        ..TaskSpec::default()
    }
}

/// Submits one task, recorded as `submit`; its id if acknowledged.
async fn submit(
    actor: &mut Actor,
    context: &ClientContext,
    payload: &str,
    spec: &Spec,
    options: &Options,
) -> Option<u64> {
    let request = SubmitRequest {
        request_id: actor.next_request_id(),
        task: Some(task_spec(payload, spec, options)),
    };
    let recorded = OpSpec::new(
        "submit",
        None,
        json!({"payload": payload, "spec": spec.to_json()}),
    );
    let completion = actor
        .write(context, recorded, |channel| {
            let request = request.clone();
            let payload = payload.to_string();
            async move {
                match TasksClient::new(channel).submit(request).await {
                    Ok(response) => {
                        let id = response.into_inner().task_id;
                        Attempt::Ok(json!({"payload": payload, "id": id}))
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

/// Every task of one queue, all pages, with payloads and attempt logs.
async fn list(
    client: &mut TasksClient<Channel>,
    queue: &str,
    consistency: ReadConsistency,
) -> Result<Vec<Task>, String> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut after_id = 0;
    loop {
        let request = ListTasksRequest {
            queue: queue.to_string(),
            limit: PAGE,
            after_id,
            consistency: consistency as i32,
            ..ListTasksRequest::default()
        };
        let page = client
            .list_tasks(request)
            .await
            .map_err(|status| crate::jepsen::client::describe(&status))?
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

/// Every task of `queues`, each with the queue whose listing held it.
async fn list_queues(
    channel: Channel,
    queues: &[&'static str],
    consistency: ReadConsistency,
) -> Result<Vec<(Task, &'static str)>, String> {
    let mut client = TasksClient::new(channel);
    let mut tasks = Vec::new();
    for queue in queues {
        let listed = list(&mut client, queue, consistency).await?;
        tasks.extend(listed.into_iter().map(|task| (task, *queue)));
    }
    Ok(tasks)
}

/// Lists the queues on `node`, recorded as `final-read`; true if it succeeded.
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
            // Every queue the workload may have used: the options are not at hand here.
            let tasks = list_queues(channel, &QUEUES, consistency).await?;
            Ok(json!({
                "consistency": name,
                "tasks": tasks
                    .iter()
                    .map(|(task, queue)| task_json(task, queue))
                    .collect::<Vec<_>>(),
            }))
        })
        .await;
    matches!(completion, Completion::Ok(_))
}

fn is_terminal(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Succeeded
            | TaskState::DeadLettered
            | TaskState::Canceled
            | TaskState::Expired)
    )
}
