//! The tasks workload: submitters add tasks with unique payloads to one queue while raw-API agents
//! (short session TTLs, streams on various nodes) take the assignments and complete them, now and
//! then failing (retryably or for good), giving a task back, letting its lease expire, or
//! completing it only after the lease has run out (a stale worker). After healing, agents keep
//! working, without misbehaving, until every task is terminal (bounded), then every node lists
//! the queue (serializable, after convergence) and one linearizable listing follows.
//!
//! Recorded operations (f: invocation value -> ok value):
//! - `submit`: `{"payload"}` -> `{"payload", "id"}`, resent with its request id while unknown;
//! - `assign` and `revoked` (observations by the agent's stream process: an assignment, a lease
//!   lost or a cancellation pushed to it): `{"agent", "task", "token", "attempt" or "reason"}`;
//! - `complete`, `fail`, `release`: `{"agent", "task", "token"}` (+ `"retryable"` for fail) ->
//!   the same with `"state"`; `fail` when refused (FAILED_PRECONDITION "lease lost", the outcome
//!   of the request id's one application), `info` when unknown;
//! - `register`: an agent's registration; `drain`: the wait for every task to be terminal;
//! - `final-read`: `{"consistency"}` -> `{"consistency", "tasks": [{"id", "payload", "state",
//!   "last_token", "history": [[attempt, token, outcome, agent], ...], "result"}]}`.
//!
//! The checker ([`check`]), a pure function of the history:
//! - every final read lists the same tasks in the same state with the same attempts;
//! - no acknowledged submission is lost (its id is listed with its payload);
//! - nothing unexpected: every listed task carries the payload of a submission that was invoked
//!   and did not provably fail, and no payload is listed twice (a submission applied twice);
//! - at most one accepted completion per task, and its token is the token of the task's one
//!   SUCCEEDED attempt, which is its last; a task is SUCCEEDED exactly when it has that attempt,
//!   and its result is the one that attempt's agent sent with that token;
//! - a refused verb did not take effect; an accepted `fail` or `release` ended its attempt so;
//! - fencing tokens strictly increase along each task's attempts, are never shared between
//!   tasks, and `last_fencing_token` is the greatest; every assignment an agent received is an
//!   attempt of that task, by that agent, with that token; no verb invoked after its lease's
//!   revocation was pushed is accepted;
//! - every task is terminal after the drain.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::{
    AttemptOutcome, Backoff, CompleteRequest, FailRequest, ListTasksRequest, ReadConsistency,
    ReleaseRequest, SubmitRequest, Task, TaskSpec, TaskState, TaskVerbResponse,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::agents::{
    classify, pace, read_final_state, run_agent, short_name, Actor, AgentConfig, AgentShared,
};
use super::{CheckResult, Tasks, Verdict, Workload, FINAL_READ};
use crate::jepsen::client::{mix, Attempt, ClientContext};
use crate::jepsen::history::{pair, Completion, Event, OpKind, OpSpec};

pub const NAME: &str = "tasks";
/// The queue every task of the workload goes to.
pub const QUEUE: &str = "jepsen-tasks";
/// The capability every task needs and every agent of the workload has.
pub const CAPABILITY: &str = "jepsen-tasks";
/// Most tasks a listing page holds (the API's limit).
const PAGE: u32 = 1000;
/// Pause between two checks of the queue while draining.
const DRAIN_POLL: Duration = Duration::from_millis(300);

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
        }
    }
}

pub struct TasksWorkload {
    options: Options,
    payloads: Arc<AtomicU64>,
    submitters: Tasks,
    agents: Tasks,
    workers: Arc<Tasks>,
    /// Set once the drain begins: agents then complete everything they get.
    draining: Arc<AtomicBool>,
    /// Every agent's shared state, to tell them to stop freezing at the drain.
    shared: Mutex<Vec<Arc<AgentShared>>>,
    /// Stops the agents (after the drain).
    agent_stop: watch::Sender<bool>,
    context: Mutex<Option<ClientContext>>,
}

impl TasksWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            payloads: Arc::new(AtomicU64::new(1)),
            submitters: Tasks::default(),
            agents: Tasks::default(),
            workers: Arc::new(Tasks::default()),
            draining: Arc::new(AtomicBool::new(false)),
            shared: Mutex::default(),
            agent_stop: watch::Sender::new(false),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        self.context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn start_agent(&self, context: &ClientContext, number: usize, node: u64) {
        let mut rng = StdRng::seed_from_u64(mix(context.seed, &[0x7a5c, number as u64]));
        let config = AgentConfig {
            name: format!("jepsen-worker-{number}"),
            capabilities: vec![CAPABILITY.to_string()],
            max_concurrent: self.options.concurrency,
            ttl_ms: rng.gen_range(self.options.ttl_ms.0..=self.options.ttl_ms.1),
            // A breaker does open now and then, but only briefly: the drain must finish.
            breaker_failures: 4,
            breaker_cooldown_ms: 1_000,
            freeze_probability: self.options.freeze_probability,
        };
        let shared = Arc::new(AgentShared::default());
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&shared));
        let handler_shared = Arc::clone(&shared);
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
        let mut choices = StdRng::seed_from_u64(mix(context.seed, &[0x7a5d, number as u64]));
        let handler =
            move |_session: u64, stream_node: u64, event: conclave_proto::v1::SessionEvent| {
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
                let action = if draining.load(Ordering::SeqCst) {
                    Action::Complete { work_ms: 0 }
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
                    let taken = pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let mut actor = taken.unwrap_or_else(|| Actor::new(&context, node));
                    job.run(&mut actor, &context).await;
                    pool.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(actor);
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

    /// Waits (bounded) until every task of the queue is terminal, recorded as `drain`.
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
            let last = match list(actor.channel(node), ReadConsistency::Linearizable).await {
                Ok(tasks) => {
                    let open: Vec<String> = tasks
                        .iter()
                        .filter(|task| !is_terminal(task.state))
                        .map(|task| format!("{} {}", task.id, state_name(task.state)))
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
        *self.context.lock().unwrap_or_else(PoisonError::into_inner) = Some(context.clone());
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        for number in 0..self.options.agents {
            self.start_agent(&context, number, nodes[number % nodes.len()]);
        }
        let interval = context.op_interval * self.options.submit_pace;
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let payloads = Arc::clone(&self.payloads);
            let lease_ms = self.options.lease_ms;
            let max_attempts = self.options.max_attempts;
            self.submitters.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut stop = context.stop.clone();
                let mut actor = Actor::new(&context, node);
                while !pace(&mut stop, &mut rng, interval).await {
                    let payload = format!("p{}", payloads.fetch_add(1, Ordering::Relaxed));
                    submit(&mut actor, &context, payload, lease_ms, max_attempts).await;
                }
            }));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            self.submitters.drain(context.op_timeout).await?;
            self.draining.store(true, Ordering::SeqCst);
            for shared in self
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
            {
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
            Ok(())
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
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

/// The result an agent completes a task with: who, with which token. The checker finds it again
/// in the task, as the result of its SUCCEEDED attempt.
fn completion_result(agent: &str, token: u64) -> String {
    format!("{agent} token {token}")
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

fn task_spec(payload: &str, lease_ms: u64, max_attempts: u32) -> TaskSpec {
    TaskSpec {
        queue: QUEUE.to_string(),
        payload: payload.as_bytes().to_vec(),
        capabilities: vec![CAPABILITY.to_string()],
        max_attempts,
        lease_ms,
        backoff: Some(Backoff {
            initial_ms: 100,
            maximum_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.5,
        }),
        ..TaskSpec::default()
    }
}

async fn submit(
    actor: &mut Actor,
    context: &ClientContext,
    payload: String,
    lease_ms: u64,
    max_attempts: u32,
) {
    let request = SubmitRequest {
        request_id: actor.next_request_id(),
        task: Some(task_spec(&payload, lease_ms, max_attempts)),
    };
    let spec = OpSpec::new("submit", None, json!({"payload": payload}));
    actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let payload = payload.clone();
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
}

/// Every task of the queue, all pages, with payloads and attempt histories.
async fn list(channel: Channel, consistency: ReadConsistency) -> Result<Vec<Task>, String> {
    let mut client = TasksClient::new(channel);
    let mut tasks: Vec<Task> = Vec::new();
    let mut after_id = 0;
    loop {
        let request = ListTasksRequest {
            queue: QUEUE.to_string(),
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

/// Lists the queue on `node`, recorded as `final-read`; true if it succeeded.
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
            let tasks = list(channel, consistency).await?;
            Ok(json!({
                "consistency": name,
                "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
            }))
        })
        .await;
    matches!(completion, Completion::Ok(_))
}

fn task_json(task: &Task) -> Json {
    let history: Vec<Json> = task
        .history
        .iter()
        .map(|attempt| {
            json!([
                attempt.attempt,
                attempt.fencing_token,
                outcome_name(attempt.outcome),
                attempt.agent
            ])
        })
        .collect();
    json!({
        "id": task.id,
        "payload": String::from_utf8_lossy(task.spec.as_ref().map_or(&[][..], |s| &s.payload[..])),
        "state": state_name(task.state),
        "last_token": task.last_fencing_token,
        "history": history,
        "result": String::from_utf8_lossy(&task.result),
    })
}

fn state_name(state: i32) -> String {
    TaskState::try_from(state).map_or_else(
        |_| format!("UNKNOWN({state})"),
        |state| short_name(state.as_str_name(), "TASK_STATE_"),
    )
}

fn outcome_name(outcome: i32) -> String {
    AttemptOutcome::try_from(outcome).map_or_else(
        |_| format!("UNKNOWN({outcome})"),
        |outcome| short_name(outcome.as_str_name(), "ATTEMPT_OUTCOME_"),
    )
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

const TERMINAL: [&str; 4] = ["SUCCEEDED", "DEAD_LETTERED", "CANCELED", "EXPIRED"];
/// Attempts a task keeps in its history (tasks.proto: at most the last 100).
const HISTORY_MAX: usize = 100;

/// One task as a final read lists it.
#[derive(Clone, Debug, PartialEq)]
struct Listed {
    payload: String,
    state: String,
    last_token: u64,
    /// (attempt, token, outcome, agent), oldest first.
    history: Vec<(u64, u64, String, String)>,
    /// For SUCCEEDED: the result of the accepted completion.
    result: String,
}

impl Listed {
    fn parse(value: &Json) -> Option<(u64, Listed)> {
        let history = value["history"]
            .as_array()?
            .iter()
            .map(|attempt| {
                Some((
                    attempt[0].as_u64()?,
                    attempt[1].as_u64()?,
                    attempt[2].as_str()?.to_string(),
                    attempt[3].as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some((
            value["id"].as_u64()?,
            Listed {
                payload: value["payload"].as_str()?.to_string(),
                state: value["state"].as_str()?.to_string(),
                last_token: value["last_token"].as_u64()?,
                history,
                result: value["result"].as_str().unwrap_or_default().to_string(),
            },
        ))
    }

    /// The outcome of the attempt with `token`, if the history still holds it.
    fn attempt(&self, token: u64) -> Option<&(u64, u64, String, String)> {
        self.history.iter().find(|attempt| attempt.1 == token)
    }

    /// Whether the history may have dropped old attempts.
    fn truncated(&self) -> bool {
        self.history.len() >= HISTORY_MAX
    }
}

/// A final read: node, consistency, completion index, tasks by id.
type FinalRead = (Option<u64>, String, u64, BTreeMap<u64, Listed>);

/// A verb (`complete`, `fail`, `release`) as the history records it.
struct Verb {
    f: String,
    agent: String,
    task: u64,
    token: u64,
    outcome: OpKind,
    index: u64,
}

/// Checks the tasks events of `events` (see the module comment).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let mut problems: Vec<String> = Vec::new();
    // Payload -> (outcome of its submission, acknowledged id).
    let mut submits: BTreeMap<String, (OpKind, Option<u64>)> = BTreeMap::new();
    let mut verbs: Vec<Verb> = Vec::new();
    // (task, token, agent, index) of every assignment an agent received.
    let mut assigns: Vec<(u64, u64, String, u64)> = Vec::new();
    // (task, token, index) of every revocation (lease lost, canceled) pushed to an agent.
    let mut revocations: Vec<(u64, u64, u64)> = Vec::new();
    // (node, consistency, index, tasks) of every final read that succeeded.
    let mut finals: Vec<FinalRead> = Vec::new();
    let mut drain_terminal = None;
    for operation in &operations {
        let invoke = operation.invoke;
        let value = operation.value();
        match invoke.f.as_str() {
            "submit" => {
                let Some(payload) = invoke.value["payload"].as_str() else {
                    problems.push(format!("event {}: submit without a payload", invoke.index));
                    continue;
                };
                let id = if operation.is_ok() {
                    value["id"].as_u64()
                } else {
                    None
                };
                if submits
                    .insert(payload.to_string(), (operation.outcome(), id))
                    .is_some()
                {
                    problems.push(format!(
                        "payload {payload} was submitted twice (event {})",
                        invoke.index
                    ));
                }
            }
            "complete" | "fail" | "release" => {
                let (Some(task), Some(token), Some(agent)) = (
                    invoke.value["task"].as_u64(),
                    invoke.value["token"].as_u64(),
                    invoke.value["agent"].as_str(),
                ) else {
                    problems.push(format!(
                        "event {}: {} without task, token or agent",
                        invoke.index, invoke.f
                    ));
                    continue;
                };
                verbs.push(Verb {
                    f: invoke.f.clone(),
                    agent: agent.to_string(),
                    task,
                    token,
                    outcome: operation.outcome(),
                    index: invoke.index,
                });
            }
            "assign" => {
                if let (Some(task), Some(token), Some(agent)) = (
                    value["task"].as_u64(),
                    value["token"].as_u64(),
                    value["agent"].as_str(),
                ) {
                    assigns.push((task, token, agent.to_string(), invoke.index));
                }
            }
            "revoked" => {
                if let (Some(task), Some(token)) = (value["task"].as_u64(), value["token"].as_u64())
                {
                    revocations.push((task, token, invoke.index));
                }
            }
            "drain" if operation.is_ok() => drain_terminal = value["terminal"].as_bool(),
            FINAL_READ if operation.is_ok() => {
                let mut tasks = BTreeMap::new();
                for item in value["tasks"].as_array().into_iter().flatten() {
                    match Listed::parse(item) {
                        Some((id, listed)) => {
                            tasks.insert(id, listed);
                        }
                        None => problems.push(format!(
                            "final read at index {} lists a task it cannot parse: {item}",
                            invoke.index
                        )),
                    }
                }
                let consistency = value["consistency"].as_str().unwrap_or("?").to_string();
                let index = operation.complete_index().expect("ok completes");
                finals.push((invoke.node, consistency, index, tasks));
            }
            _ => {}
        }
    }

    let mut stats = json!({
        "submits": submits.len(),
        "submits_ok": submits.values().filter(|(o, _)| *o == OpKind::Ok).count(),
        "submits_fail": submits.values().filter(|(o, _)| *o == OpKind::Fail).count(),
        "submits_info": submits.values().filter(|(o, _)| *o == OpKind::Info).count(),
        "assignments_seen": assigns.len(),
        "final_reads": finals.len(),
        "drain_terminal": drain_terminal,
    });
    for f in ["complete", "fail", "release"] {
        for (kind, name) in [
            (OpKind::Ok, "ok"),
            (OpKind::Fail, "refused"),
            (OpKind::Info, "info"),
        ] {
            stats[format!("{f}_{name}")] = json!(verbs
                .iter()
                .filter(|verb| verb.f == f && verb.outcome == kind)
                .count());
        }
    }
    // The reference: the linearizable read if there is one, else the first.
    let Some(reference_position) = finals
        .iter()
        .position(|(_, consistency, _, _)| consistency == "linearizable")
        .or(if finals.is_empty() { None } else { Some(0) })
    else {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        if !problems.is_empty() {
            result.verdict = Verdict::Invalid;
            result.problems.extend(problems);
        }
        return result;
    };
    let (reference_node, _, reference_index, reference) = &finals[reference_position];

    // Every node lists the same tasks, in the same state, with the same attempts.
    for (node, consistency, index, tasks) in &finals {
        let ids: BTreeSet<u64> = tasks.keys().chain(reference.keys()).copied().collect();
        let mut differences = Vec::new();
        for id in ids {
            match (reference.get(&id), tasks.get(&id)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => differences.push(format!("task {id}: {a:?} vs {b:?}")),
            }
        }
        if !differences.is_empty() {
            problems.push(format!(
                "the final read on node {node:?} ({consistency}, index {index}) disagrees with the \
                 reference read on node {reference_node:?} (index {reference_index}) on {} task(s), e.g. {}",
                differences.len(),
                differences[0]
            ));
        }
    }

    // Nothing lost, nothing unexpected, nothing twice.
    for (payload, (outcome, id)) in &submits {
        let (OpKind::Ok, Some(id)) = (outcome, id) else {
            continue;
        };
        for (node, consistency, index, tasks) in &finals {
            match tasks.get(id) {
                Some(listed) if &listed.payload == payload => {}
                Some(listed) => problems.push(format!(
                    "submission of {payload} was acknowledged as task {id}, but the final read on \
                     node {node:?} ({consistency}, index {index}) lists task {id} with payload {}",
                    listed.payload
                )),
                None => problems.push(format!(
                    "task {id} ({payload}, acknowledged) is missing from the final read on node \
                     {node:?} ({consistency}, index {index}): lost"
                )),
            }
        }
    }
    let mut by_payload: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (id, listed) in reference {
        by_payload.entry(&listed.payload).or_default().push(*id);
        match submits.get(&listed.payload) {
            None => problems.push(format!(
                "task {id} with payload {} is listed, but no submission of it was invoked",
                listed.payload
            )),
            Some((OpKind::Fail, _)) => problems.push(format!(
                "task {id} with payload {} is listed, but its submission failed, which promised it \
                 was not applied",
                listed.payload
            )),
            _ => {}
        }
    }
    for (payload, ids) in &by_payload {
        if ids.len() > 1 {
            problems.push(format!(
                "payload {payload} is listed as {} tasks {ids:?}: one submission applied more than once",
                ids.len()
            ));
        }
    }
    let submitted_info_present = submits
        .iter()
        .filter(|(payload, (outcome, _))| {
            *outcome == OpKind::Info && by_payload.contains_key(payload.as_str())
        })
        .count();

    // Each task's attempts: tokens, the one success, terminal states.
    let mut token_owner: BTreeMap<u64, u64> = BTreeMap::new();
    let mut not_terminal = Vec::new();
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, listed) in reference {
        *states.entry(&listed.state).or_default() += 1;
        if !TERMINAL.contains(&listed.state.as_str()) {
            not_terminal.push(format!("{id} {}", listed.state));
        }
        let tokens: Vec<u64> = listed.history.iter().map(|attempt| attempt.1).collect();
        if tokens.windows(2).any(|pair| pair[0] >= pair[1]) {
            problems.push(format!(
                "task {id}: fencing tokens of its attempts do not strictly increase: {tokens:?}"
            ));
        }
        if let Some(&greatest) = tokens.iter().max() {
            if listed.last_token != greatest {
                problems.push(format!(
                    "task {id}: last_fencing_token {} but its greatest attempt token is {greatest}",
                    listed.last_token
                ));
            }
        }
        for token in &tokens {
            if let Some(other) = token_owner.insert(*token, *id) {
                if other != *id {
                    problems.push(format!(
                        "fencing token {token} was issued to both task {other} and task {id}"
                    ));
                }
            }
        }
        let successes: Vec<usize> = listed
            .history
            .iter()
            .enumerate()
            .filter(|(_, attempt)| attempt.2 == "SUCCEEDED")
            .map(|(position, _)| position)
            .collect();
        match (listed.state.as_str(), successes.as_slice()) {
            ("SUCCEEDED", [position]) if *position + 1 == listed.history.len() => {
                let (_, token, _, agent) = &listed.history[*position];
                if listed.result != completion_result(agent, *token) {
                    problems.push(format!(
                        "task {id} succeeded with token {token} by {agent}, but its result is {:?}, \
                         not that completion's",
                        listed.result
                    ));
                }
            }
            ("SUCCEEDED", []) if listed.truncated() => {}
            ("SUCCEEDED", _) => problems.push(format!(
                "task {id} is SUCCEEDED but its attempts are {:?}: it needs exactly one SUCCEEDED \
                 attempt, the last",
                listed.history
            )),
            (_, []) => {}
            (state, _) => problems.push(format!(
                "task {id} is {state} but has a SUCCEEDED attempt: {:?}",
                listed.history
            )),
        }
        if TERMINAL.contains(&listed.state.as_str())
            && listed.history.iter().any(|attempt| attempt.2 == "RUNNING")
        {
            problems.push(format!(
                "task {id} is {} but an attempt is still RUNNING: {:?}",
                listed.state, listed.history
            ));
        }
    }
    if !not_terminal.is_empty() {
        problems.push(format!(
            "{} task(s) not terminal after the drain, e.g. {:?}",
            not_terminal.len(),
            &not_terminal[..not_terminal.len().min(10)]
        ));
    }

    // Verbs: at most one accepted completion per task, with the token of its SUCCEEDED attempt;
    // an accepted verb ended its attempt so; a refused one changed nothing.
    let mut accepted: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for verb in verbs
        .iter()
        .filter(|v| v.f == "complete" && v.outcome == OpKind::Ok)
    {
        accepted
            .entry(verb.task)
            .or_default()
            .push((verb.token, verb.index));
    }
    for (task, completions) in &accepted {
        if completions.len() > 1 {
            problems.push(format!(
                "task {task}: {} completions were accepted (token, event): {completions:?}",
                completions.len()
            ));
        }
    }
    let expected_outcome = |f: &str| match f {
        "complete" => "SUCCEEDED",
        "fail" => "FAILED",
        _ => "RELEASED",
    };
    for verb in &verbs {
        let Some(listed) = reference.get(&verb.task) else {
            problems.push(format!(
                "{} of task {} by {} (event {}) names a task the final read does not list",
                verb.f, verb.task, verb.agent, verb.index
            ));
            continue;
        };
        let attempt = listed.attempt(verb.token);
        let expected = expected_outcome(&verb.f);
        match verb.outcome {
            OpKind::Ok => {
                match attempt {
                    Some(attempt) if attempt.2 == expected => {}
                    None if listed.truncated() => {}
                    other => problems.push(format!(
                        "{} of task {} with token {} by {} was accepted (event {}), but that \
                         attempt is {other:?} in the final read: {:?}",
                        verb.f, verb.task, verb.token, verb.agent, verb.index, listed.history
                    )),
                }
                if verb.f == "complete" && listed.state != "SUCCEEDED" {
                    problems.push(format!(
                        "the completion of task {} with token {} was accepted (event {}), but the \
                         task is {} in the final read: an acknowledged completion was lost",
                        verb.task, verb.token, verb.index, listed.state
                    ));
                }
            }
            OpKind::Fail => {
                // Refused. Only this verb ever carried this token (one verb per assignment), so
                // the attempt must not have ended the way the verb would have ended it.
                let others = verbs.iter().any(|other| {
                    other.index != verb.index
                        && other.task == verb.task
                        && other.token == verb.token
                        && other.f == verb.f
                        && other.outcome != OpKind::Fail
                });
                if let Some(attempt) = attempt {
                    if attempt.2 == expected && !others {
                        problems.push(format!(
                            "{} of task {} with token {} by {} was refused (event {}), yet that \
                             attempt ended {expected}: {:?}",
                            verb.f, verb.task, verb.token, verb.agent, verb.index, listed.history
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    // A verb invoked after its lease's revocation was pushed must not be accepted.
    for (task, token, revoked_at) in &revocations {
        for verb in &verbs {
            if verb.task == *task
                && verb.token == *token
                && verb.index > *revoked_at
                && verb.outcome == OpKind::Ok
            {
                problems.push(format!(
                    "{} of task {task} with token {token} by {} was accepted (event {}), though \
                     the lease had been revoked (pushed at event {revoked_at})",
                    verb.f, verb.agent, verb.index
                ));
            }
        }
    }
    stats["revocations_seen"] = json!(revocations.len());

    // Every assignment an agent received is an attempt of that task, by that agent.
    let mut seen_tokens: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
    for (task, token, agent, index) in &assigns {
        if let Some((other_task, other_agent)) = seen_tokens.insert(*token, (*task, agent)) {
            if other_task != *task || other_agent != agent {
                problems.push(format!(
                    "fencing token {token} was pushed for task {task} to {agent} (event {index}) \
                     and for task {other_task} to {other_agent}"
                ));
            }
        }
        let Some(listed) = reference.get(task) else {
            problems.push(format!(
                "{agent} was assigned task {task} with token {token} (event {index}), which the \
                 final read does not list"
            ));
            continue;
        };
        match listed.attempt(*token) {
            Some(attempt) if &attempt.3 == agent => {}
            None if listed.truncated() => {}
            other => problems.push(format!(
                "{agent} was assigned task {task} with token {token} (event {index}), but the \
                 task's attempt with that token is {other:?}: a committed assignment is lost"
            )),
        }
    }

    stats["tasks"] = json!(reference.len());
    stats["states"] = json!(states);
    stats["submits_info_present_at_end"] = json!(submitted_info_present);
    stats["attempts"] = json!(reference.values().map(|l| l.history.len()).sum::<usize>());
    let outcome_count = |outcome: &str| {
        reference
            .values()
            .flat_map(|listed| &listed.history)
            .filter(|attempt| attempt.2 == outcome)
            .count()
    };
    for outcome in ["LEASE_EXPIRED", "SESSION_LOST", "FAILED", "RELEASED"] {
        stats[format!("attempts_{}", outcome.to_lowercase())] = json!(outcome_count(outcome));
    }
    CheckResult::from_problems(NAME, problems, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::history::Script;

    fn listed(id: u64, payload: &str, state: &str, history: &[(u64, &str, &str)]) -> Json {
        let history: Vec<Json> = history
            .iter()
            .enumerate()
            .map(|(n, (token, outcome, agent))| json!([n + 1, token, outcome, agent]))
            .collect();
        let last = history
            .last()
            .map_or(0, |attempt| attempt[1].as_u64().unwrap());
        let result = match (state, history.last()) {
            ("SUCCEEDED", Some(attempt)) => {
                completion_result(attempt[3].as_str().unwrap(), attempt[1].as_u64().unwrap())
            }
            _ => String::new(),
        };
        json!({"id": id, "payload": payload, "state": state, "last_token": last, "history": history, "result": result})
    }

    fn submit(script: Script, process: u64, payload: &str, id: Option<u64>) -> Script {
        let script = script.invoke(process, "submit", None, json!({"payload": payload}));
        match id {
            Some(id) => script.ok(process, json!({"payload": payload, "id": id})),
            None => script.info(process),
        }
    }

    fn verb(script: Script, process: u64, f: &str, task: u64, token: u64, ok: bool) -> Script {
        let value = json!({"agent": "a", "task": task, "token": token});
        let script = script.invoke(process, f, None, value.clone());
        if ok {
            let mut value = value;
            value["state"] = json!("SUCCEEDED");
            script.ok(process, value)
        } else {
            script.fail(process)
        }
    }

    fn assign(script: Script, process: u64, task: u64, token: u64, agent: &str) -> Script {
        let value = json!({"agent": agent, "task": task, "token": token, "attempt": 1});
        script
            .invoke(process, "assign", None, value.clone())
            .ok(process, value)
    }

    fn finals(mut script: Script, tasks: &[Json]) -> Script {
        for (process, consistency) in [
            (90, "serializable"),
            (91, "serializable"),
            (92, "linearizable"),
        ] {
            script = script
                .invoke(
                    process,
                    FINAL_READ,
                    None,
                    json!({"consistency": consistency}),
                )
                .ok(process, json!({"consistency": consistency, "tasks": tasks}));
        }
        script
    }

    /// Task 1 (p1): assigned to a with token 3, which let the lease expire; then to b with token
    /// 5, which completed it; a's late completion with token 3 was refused. Task 2 (p2, submit
    /// unknown) dead-lettered after a failure.
    fn good() -> (Script, Vec<Json>) {
        let script = submit(Script::new(NAME), 1, "p1", Some(1));
        let script = submit(script, 2, "p2", None);
        let script = assign(script, 10, 1, 3, "a");
        let script = assign(script, 11, 1, 5, "b");
        let script = assign(script, 11, 2, 6, "b");
        let script = verb(script, 3, "complete", 1, 5, true);
        let script = verb(script, 4, "complete", 1, 3, false);
        let tasks = vec![
            listed(
                1,
                "p1",
                "SUCCEEDED",
                &[(3, "LEASE_EXPIRED", "a"), (5, "SUCCEEDED", "b")],
            ),
            listed(2, "p2", "DEAD_LETTERED", &[(6, "FAILED", "b")]),
        ];
        (script, tasks)
    }

    #[test]
    fn a_good_history_is_valid() {
        let (script, tasks) = good();
        let result = check(&finals(script, &tasks).events());
        assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
        assert_eq!(result.stats["submits_info_present_at_end"], 1);
        assert_eq!(result.stats["complete_ok"], 1);
        assert_eq!(result.stats["complete_refused"], 1);
    }

    fn problems_of(script: Script) -> Vec<String> {
        let result = check(&script.events());
        assert_eq!(result.verdict, Verdict::Invalid, "expected a violation");
        result.problems
    }

    fn assert_found(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle:?}: {problems:#?}"
        );
    }

    #[test]
    fn two_accepted_completions_of_one_task_are_invalid() {
        let (script, tasks) = good();
        // a's late completion with the stale token 3 accepted as well.
        let script = verb(script, 5, "complete", 1, 3, true);
        let problems = problems_of(finals(script, &tasks));
        assert_found(&problems, "2 completions were accepted");
    }

    #[test]
    fn an_accepted_completion_whose_attempt_did_not_succeed_is_invalid() {
        let (script, _) = good();
        let tasks = vec![
            // Token 5's completion was acknowledged, but the task says token 3 succeeded.
            listed(
                1,
                "p1",
                "SUCCEEDED",
                &[(3, "SUCCEEDED", "a"), (5, "LEASE_EXPIRED", "b")],
            ),
            listed(2, "p2", "DEAD_LETTERED", &[(6, "FAILED", "b")]),
        ];
        let problems = problems_of(finals(script, &tasks));
        assert_found(&problems, "with token 5 by a was accepted");
        assert_found(&problems, "exactly one SUCCEEDED attempt, the last");
        assert_found(&problems, "with token 3 by a was refused");
    }

    #[test]
    fn a_lost_acknowledged_completion_is_invalid() {
        let (script, _) = good();
        let tasks = vec![
            listed(
                1,
                "p1",
                "DEAD_LETTERED",
                &[(3, "LEASE_EXPIRED", "a"), (5, "FAILED", "b")],
            ),
            listed(2, "p2", "DEAD_LETTERED", &[(6, "FAILED", "b")]),
        ];
        assert_found(
            &problems_of(finals(script, &tasks)),
            "acknowledged completion was lost",
        );
    }

    #[test]
    fn a_lost_submission_and_an_unexpected_task_are_invalid() {
        let (script, _) = good();
        let tasks = vec![
            listed(2, "p2", "DEAD_LETTERED", &[(6, "FAILED", "b")]),
            listed(3, "p9", "SUCCEEDED", &[(7, "SUCCEEDED", "b")]),
        ];
        let problems = problems_of(finals(script, &tasks));
        assert_found(&problems, "task 1 (p1, acknowledged) is missing");
        assert_found(
            &problems,
            "payload p9 is listed, but no submission of it was invoked",
        );
    }

    #[test]
    fn a_submission_applied_twice_is_invalid() {
        let (script, mut tasks) = good();
        tasks.push(listed(3, "p2", "SUCCEEDED", &[(7, "SUCCEEDED", "b")]));
        assert_found(
            &problems_of(finals(script, &tasks)),
            "applied more than once",
        );
    }

    #[test]
    fn a_result_that_is_not_the_accepted_completions_is_invalid() {
        let (script, mut tasks) = good();
        // The stale completion's result (token 3) stored with the attempt of token 5.
        tasks[0]["result"] = json!(completion_result("a", 3));
        assert_found(
            &problems_of(finals(script, &tasks)),
            "not that completion's",
        );
    }

    #[test]
    fn a_verb_accepted_after_its_revocation_was_pushed_is_invalid() {
        let value = json!({"agent": "b", "task": 1, "token": 5, "reason": "lease lost"});
        let script = Script::new(NAME)
            .invoke(12, "revoked", None, value.clone())
            .ok(12, value);
        let script = submit(script, 1, "p1", Some(1));
        let script = verb(script, 3, "complete", 1, 5, true);
        let tasks = vec![listed(1, "p1", "SUCCEEDED", &[(5, "SUCCEEDED", "b")])];
        assert_found(
            &problems_of(finals(script, &tasks)),
            "though the lease had been revoked",
        );
    }

    #[test]
    fn tokens_that_do_not_increase_or_are_shared_are_invalid() {
        let (script, _) = good();
        let tasks = vec![
            listed(
                1,
                "p1",
                "SUCCEEDED",
                &[(5, "LEASE_EXPIRED", "a"), (3, "SUCCEEDED", "b")],
            ),
            listed(2, "p2", "DEAD_LETTERED", &[(5, "FAILED", "b")]),
        ];
        let problems = problems_of(finals(script, &tasks));
        assert_found(&problems, "do not strictly increase");
        assert_found(&problems, "fencing token 5 was issued to both");
    }

    #[test]
    fn a_task_left_open_or_nodes_that_disagree_are_invalid() {
        let (script, tasks) = good();
        let mut open = tasks.clone();
        open[1] = listed(2, "p2", "RETRY_WAIT", &[(6, "FAILED", "b")]);
        let script = script
            .invoke(90, FINAL_READ, None, json!({"consistency": "serializable"}))
            .ok(90, json!({"consistency": "serializable", "tasks": tasks}))
            .invoke(92, FINAL_READ, None, json!({"consistency": "linearizable"}))
            .ok(92, json!({"consistency": "linearizable", "tasks": open}));
        let problems = problems_of(script);
        assert_found(&problems, "not terminal after the drain");
        assert_found(&problems, "disagrees with the reference read");
    }

    #[test]
    fn an_assignment_missing_from_the_history_is_invalid() {
        let (script, tasks) = good();
        let script = assign(script, 12, 2, 9, "c");
        assert_found(
            &problems_of(finals(script, &tasks)),
            "a committed assignment is lost",
        );
    }

    #[test]
    fn without_a_final_read_the_check_is_unknown() {
        let (script, _) = good();
        assert_eq!(check(&script.events()).verdict, Verdict::Unknown);
    }
}
