//! The transactions workload: the cross-primitive transaction (transactions.proto) as a
//! transactional outbox, and readers that look for any part of a transaction without the rest.
//!
//! - Submitters put work tasks in the queue `jepsen-txn` (recorded `submit`).
//! - Raw-API agents ([`run_agent`]: a session stream on some node, moved now and then) take them.
//!   A worker holding a task's lease reads one of [`COUNTERS`] counter keys (recorded `counter`,
//!   a linearizable Get) and commits, as one request (recorded `txn`, resent with the same
//!   request id while its outcome is unknown):
//!   compares `[counter's mod_revision == the one read]`, ops `[put jepsen/txn/r/<task> = T,
//!   put the counter = T, submit a follow-up task in jepsen-txn-next labelled and carrying T,
//!   complete the task with its token and result T]`, where T is the transaction's unique id.
//!   Now and then the compare is deliberately wrong (a revision below the one read), and other
//!   workers race on the same counters, so compares fail (nothing applied; the worker tries
//!   again with a new T). Every fourth assignment of each agent, the worker first commits the same
//!   shape with a stale token (its token - 1), the completion LAST: it must be refused as lease
//!   lost and apply nothing, also its puts and its submit before the refused op. No agent has the
//!   follow-up queue's capability, so follow-ups stay pending, a permanent witness.
//! - Readers pick a known work task and read, in this order, each linearizable: its result key,
//!   the task, the follow-up tasks labelled with what they found, and a counter key (recorded
//!   `read`). Each later read is served after the earlier ones, and a transaction's effects,
//!   once applied, stay (only counters are overwritten), so a transaction seen by an earlier read
//!   must be whole in the later ones.
//! - After healing, every node reads everything (`final-read`: the key prefix, both queues).
//!
//! The checker (`transactions/check.rs`) holds one function per property; see there.

pub mod check;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::transactions_client::TransactionsClient;
use conclave_proto::v1::{
    transaction_compare, transaction_op, CommitRequest, CompleteTaskOp, GetRequest, GetTaskRequest,
    KeyCompare, ListRequest, ListTasksRequest, ReadConsistency, SubmitRequest, SubmitTaskOp, Task,
    TaskSpec, TaskState, TransactionCompare, TransactionOp, TxnPut,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::agents::{
    classify, read_final_state, run_agent, short_name, Actor, AgentConfig, AgentShared,
};
use super::{CheckResult, Tasks, Workload, FINAL_READ};
use crate::jepsen::client::{describe, mix, Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

pub const NAME: &str = "transactions";
/// Every key of the workload starts with this.
pub const PREFIX: &str = "jepsen/txn/";
/// A work task's result key: this and its id.
pub const RESULT_PREFIX: &str = "jepsen/txn/r/";
/// A counter key: this and its number.
pub const COUNTER_PREFIX: &str = "jepsen/txn/c/";
/// Counter keys the transactions compare and set.
pub const COUNTERS: u64 = 3;
/// The work tasks' queue and the capability they need.
pub const QUEUE: &str = "jepsen-txn";
const CAPABILITY: &str = "jepsen-txn";
/// The follow-ups' queue; their capability is nobody's, so they stay pending.
pub const FOLLOW_QUEUE: &str = "jepsen-txn-next";
const NOBODY: &str = "jepsen-txn-nobody";
/// The label naming a follow-up's transaction.
pub const TXN_LABEL: &str = "jepsen-txn";
/// Every this-many-th assignment of an agent (from its first) gets a stale-token transaction.
const STALE_EVERY: u64 = 4;
/// Real transactions a worker tries per assignment (a failed compare is tried again).
const TRIES: usize = 3;
/// Page size of the listings.
const PAGE: u32 = 1000;

/// The workload's knobs.
#[derive(Clone, Debug)]
pub struct Options {
    pub agents_per_node: usize,
    /// Tasks each agent may hold at once.
    pub concurrency: u32,
    pub ttl_ms: u64,
    pub lease_ms: u64,
    /// Chance that a real transaction's compare names a revision below the one read.
    pub wrong_compare_probability: f64,
    /// Chance that a client operation is a submit (else a read).
    pub submit_probability: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            agents_per_node: 1,
            concurrency: 2,
            ttl_ms: 3_000,
            lease_ms: 4_000,
            wrong_compare_probability: 0.15,
            submit_probability: 0.2,
        }
    }
}

/// What the clients and workers share.
#[derive(Debug, Default)]
struct Shared {
    /// Acknowledged work tasks, for the readers.
    tasks: Mutex<Vec<u64>>,
    /// The next transaction id.
    next_txn: AtomicU64,
}

pub struct TransactionsWorkload {
    options: Options,
    shared: Arc<Shared>,
    clients: Tasks,
    agents: Tasks,
    workers: Arc<Tasks>,
    op_timeout: Mutex<Duration>,
}

impl TransactionsWorkload {
    pub fn new(options: Options) -> Self {
        let shared = Shared {
            next_txn: AtomicU64::new(1),
            ..Shared::default()
        };
        Self {
            options,
            shared: Arc::new(shared),
            clients: Tasks::default(),
            agents: Tasks::default(),
            workers: Arc::new(Tasks::default()),
            op_timeout: Mutex::new(Duration::from_secs(5)),
        }
    }

    fn start_agent(&self, context: &ClientContext, number: usize, node: u64) {
        let rng = StdRng::seed_from_u64(mix(context.seed, &[0x7a01, number as u64]));
        let config = AgentConfig {
            name: format!("jepsen-txn-agent-{number}"),
            capabilities: vec![CAPABILITY.to_string()],
            max_concurrent: self.options.concurrency,
            ttl_ms: self.options.ttl_ms,
            breaker_failures: 0,
            breaker_cooldown_ms: 0,
            freeze_probability: 0.0,
        };
        let mut choices = StdRng::seed_from_u64(mix(context.seed, &[0x7a02, number as u64]));
        let mut assignments = 0_u64;
        let mut seen = std::collections::HashSet::new();
        let (workers, shared, options) = (
            Arc::clone(&self.workers),
            Arc::clone(&self.shared),
            self.options.clone(),
        );
        let job_context = context.clone();
        let handler =
            move |_session: u64, stream_node: u64, event: conclave_proto::v1::SessionEvent| {
                use conclave_proto::v1::session_event::Kind;
                let Some(Kind::Assignment(assignment)) = event.kind else {
                    return;
                };
                // A moved stream may push an assignment again.
                if !seen.insert((assignment.task_id, assignment.fencing_token)) {
                    return;
                }
                let stale = assignment.fencing_token > 1 && assignments.is_multiple_of(STALE_EVERY);
                assignments += 1;
                let job = Job {
                    task: assignment.task_id,
                    token: assignment.fencing_token,
                    stale,
                    seed: choices.gen(),
                    shared: Arc::clone(&shared),
                    options: options.clone(),
                };
                let context = job_context.clone();
                workers.push(tokio::spawn(async move {
                    let mut actor = Actor::new(&context, stream_node);
                    job.run(&mut actor, &context).await;
                }));
            };
        self.agents.push(tokio::spawn(run_agent(
            context.clone(),
            config,
            Actor::new(context, node),
            rng,
            context.stop.clone(),
            Arc::new(AgentShared::default()),
            handler,
        )));
    }
}

impl Workload for TransactionsWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self
            .op_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = context.op_timeout;
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        for number in 0..nodes.len() * self.options.agents_per_node {
            self.start_agent(&context, number, nodes[number % nodes.len()]);
        }
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let shared = Arc::clone(&self.shared);
            let submit_probability = self.options.submit_probability;
            let lease_ms = self.options.lease_ms;
            self.clients.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut actor = Actor::new(&context, node);
                while !context.pace(&mut rng).await {
                    let known = lock(&shared.tasks).len();
                    if known == 0 || rng.gen_bool(submit_probability) {
                        if let Some(id) = submit(&mut actor, &context, lease_ms).await {
                            lock(&shared.tasks).push(id);
                        }
                    } else {
                        let task = {
                            let tasks = lock(&shared.tasks);
                            // Mostly recent tasks, whose transactions are under way.
                            let recent = &tasks[tasks.len().saturating_sub(30)..];
                            *recent.choose(&mut rng).expect("known > 0")
                        };
                        let counter = rng.gen_range(0..COUNTERS);
                        read(&mut actor, &context, task, counter).await;
                    }
                }
            }));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        let op_timeout = *self
            .op_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Box::pin(async move {
            self.clients.drain(op_timeout).await?;
            self.agents.drain(op_timeout).await?;
            // A job's transaction is up to three sends, after a read.
            self.workers.drain(4 * op_timeout).await
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

    fn check(&self, events: &[Event], budget: Duration) -> CheckResult {
        check::check(events, budget)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn result_key(task: u64) -> String {
    format!("{RESULT_PREFIX}{task}")
}

fn counter_key(counter: u64) -> String {
    format!("{COUNTER_PREFIX}{counter}")
}

/// Submits one work task, recorded `submit` (completed `{"task": id}`).
async fn submit(actor: &mut Actor, context: &ClientContext, lease_ms: u64) -> Option<u64> {
    let request = SubmitRequest {
        request_id: actor.next_request_id(),
        task: Some(TaskSpec {
            queue: QUEUE.to_string(),
            capabilities: vec![CAPABILITY.to_string()],
            lease_ms,
            max_attempts: 20,
            ..TaskSpec::default()
        }),
    };
    let completion = actor
        .write(
            context,
            OpSpec::new("submit", None, Json::Null),
            |channel| {
                let request = request.clone();
                async move {
                    match TasksClient::new(channel).submit(request).await {
                        Ok(response) => Attempt::Ok(json!({"task": response.into_inner().task_id})),
                        Err(status) => classify(&status),
                    }
                }
            },
        )
        .await;
    match completion {
        Completion::Ok(value) => value["task"].as_u64(),
        _ => None,
    }
}

/// One assignment's work.
struct Job {
    task: u64,
    token: u64,
    stale: bool,
    seed: u64,
    shared: Arc<Shared>,
    options: Options,
}

impl Job {
    async fn run(self, actor: &mut Actor, context: &ClientContext) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        if self.stale {
            let counter = rng.gen_range(0..COUNTERS);
            let txn = self.shared.next_txn.fetch_add(1, Ordering::Relaxed);
            let shape = Shape {
                txn,
                task: self.task,
                token: self.token - 1,
                counter,
                compare: None,
                expected: Json::Null,
                stale: true,
            };
            commit(actor, context, &shape).await;
        }
        for _ in 0..TRIES {
            if context.stopped() {
                return;
            }
            let counter = rng.gen_range(0..COUNTERS);
            let Some((value, revision)) = read_counter(actor, context, counter).await else {
                return;
            };
            let wrong = revision > 0 && rng.gen_bool(self.options.wrong_compare_probability);
            let (compare, expected) = if wrong {
                (revision - 1, json!(WRONG_COMPARE))
            } else {
                (revision, value)
            };
            let txn = self.shared.next_txn.fetch_add(1, Ordering::Relaxed);
            let shape = Shape {
                txn,
                task: self.task,
                token: self.token,
                counter,
                compare: Some(compare),
                expected,
                stale: false,
            };
            match commit(actor, context, &shape).await {
                Outcome::CompareFailed => continue,
                Outcome::Done => return,
            }
        }
    }
}

/// One transaction as the workload builds it.
struct Shape {
    txn: u64,
    task: u64,
    token: u64,
    counter: u64,
    /// The counter's mod_revision the transaction compares (none: no compare).
    compare: Option<u64>,
    /// The counter's value at that revision, as the worker read it (null: absent), or
    /// [`WRONG_COMPARE`] when the compare names a revision below the one read.
    expected: Json,
    /// Sent with a token that is not the lease's: must apply nothing.
    stale: bool,
}

impl Shape {
    fn to_json(&self) -> Json {
        json!({
            "txn": self.txn,
            "task": self.task,
            "token": self.token,
            "counter": self.counter,
            "compare": self.compare,
            "expected": self.expected,
            "stale": self.stale,
        })
    }

    fn request(&self, request_id: Option<conclave_proto::v1::RequestId>) -> CommitRequest {
        use transaction_op::Op;
        let value = self.txn.to_string().into_bytes();
        let put = |key: String| TransactionOp {
            op: Some(Op::Put(TxnPut {
                key: key.into_bytes(),
                value: value.clone(),
            })),
        };
        let follow_up = TaskSpec {
            queue: FOLLOW_QUEUE.to_string(),
            payload: value.clone(),
            capabilities: vec![NOBODY.to_string()],
            labels: [(TXN_LABEL.to_string(), self.txn.to_string())].into(),
            ..TaskSpec::default()
        };
        let compares = self
            .compare
            .map(|mod_revision| TransactionCompare {
                compare: Some(transaction_compare::Compare::Key(KeyCompare {
                    key: counter_key(self.counter).into_bytes(),
                    mod_revision,
                })),
            })
            .into_iter()
            .collect();
        CommitRequest {
            request_id,
            compares,
            ops: vec![
                put(result_key(self.task)),
                put(counter_key(self.counter)),
                TransactionOp {
                    op: Some(Op::Submit(SubmitTaskOp {
                        task: Some(follow_up),
                    })),
                },
                // Last, so that an atomicity bug that applies the ops before a refused one shows.
                TransactionOp {
                    op: Some(Op::CompleteTask(CompleteTaskOp {
                        task_id: self.task,
                        fencing_token: self.token,
                        result: value.clone(),
                    })),
                },
            ],
            fence: None,
        }
    }
}

enum Outcome {
    CompareFailed,
    Done,
}

/// Commits `shape`, recorded `txn`: ok `{..shape, "revision", "follow_up"}`; a failed compare
/// or a refused op is `fail` (nothing applied), with the answer as the error.
async fn commit(actor: &mut Actor, context: &ClientContext, shape: &Shape) -> Outcome {
    let request = shape.request(actor.next_request_id());
    let recorded = shape.to_json();
    let spec = OpSpec::new("txn", None, recorded.clone());
    let completion = actor
        .write(context, spec, |channel| {
            let (request, recorded) = (request.clone(), recorded.clone());
            async move {
                match TransactionsClient::new(channel).commit(request).await {
                    Ok(response) => committed(recorded, response.into_inner()),
                    Err(status) => classify_commit(&status),
                }
            }
        })
        .await;
    match completion {
        Completion::Fail(error) if error.starts_with(COMPARE_FAILED) => Outcome::CompareFailed,
        _ => Outcome::Done,
    }
}

/// The `expected` of a transaction whose compare is deliberately wrong (it can never hold: the
/// counter's mod_revision is already above it).
pub const WRONG_COMPARE: &str = "wrong";

/// The words a failed compare is recorded with.
pub const COMPARE_FAILED: &str = "compare failed";

fn committed(mut recorded: Json, response: conclave_proto::v1::CommitResponse) -> Attempt {
    let revision = response.header.map_or(0, |header| header.revision);
    if !response.succeeded {
        let found: Vec<String> = response
            .failed_compares
            .iter()
            .map(|failed| format!("{failed:?}"))
            .collect();
        return Attempt::NotApplied(format!(
            "{COMPARE_FAILED} at revision {revision}: {}",
            found.join(", ")
        ));
    }
    let follow_up = response
        .results
        .iter()
        .find_map(|result| match result.result {
            Some(conclave_proto::v1::op_result::Result::Submitted(ref submitted)) => {
                Some(submitted.task_id)
            }
            _ => None,
        });
    recorded["revision"] = json!(revision);
    recorded["follow_up"] = json!(follow_up);
    recorded["results"] = json!(response.results.len());
    Attempt::Ok(recorded)
}

/// A refused op (a stale token is `lease lost`, an unknown task NOT_FOUND) is the request id's
/// one application: nothing applied, whatever earlier sends did. The rest as the agents' rules.
fn classify_commit(status: &Status) -> Attempt {
    let refused_op = status.metadata().contains_key("conclave-op-index")
        || status.message().contains("lease lost");
    if refused_op && matches!(status.code(), Code::FailedPrecondition | Code::NotFound) {
        Attempt::NotApplied(describe(status))
    } else {
        classify(status)
    }
}

/// A worker's linearizable read of a counter, recorded `counter`: `{"counter", "value", "rev"}`.
/// The counter's value and mod_revision (0: absent), or `None` when the read failed.
async fn read_counter(
    actor: &mut Actor,
    context: &ClientContext,
    counter: u64,
) -> Option<(Json, u64)> {
    let node = actor.node();
    let spec = OpSpec::new("counter", None, json!({"counter": counter}));
    let completion = actor
        .read(context, spec, node, |channel| async move {
            let (value, rev) = get(&mut KvClient::new(channel), &counter_key(counter)).await?;
            Ok(json!({"counter": counter, "value": value, "rev": rev}))
        })
        .await;
    match completion {
        Completion::Ok(value) => Some((value["value"].clone(), value["rev"].as_u64()?)),
        _ => None,
    }
}

/// A linearizable Get: the value as a transaction id (a string when it is not one) and the
/// mod_revision (0: absent).
async fn get(kv: &mut KvClient<Channel>, key: &str) -> Result<(Json, u64), String> {
    let request = GetRequest {
        key: key.as_bytes().to_vec(),
        consistency: ReadConsistency::Linearizable as i32,
    };
    let response = kv.get(request).await.map_err(|status| describe(&status))?;
    Ok(match response.into_inner().kv {
        Some(kv) => (txn_value(&kv.value), kv.mod_revision),
        None => (Json::Null, 0),
    })
}

/// A stored transaction id as JSON: the number, or the text when it is not one.
fn txn_value(bytes: &[u8]) -> Json {
    let text = String::from_utf8_lossy(bytes);
    text.parse::<u64>()
        .map_or_else(|_| json!(text.into_owned()), |txn| json!(txn))
}

/// A reader's look at one task, recorded `read` (see the module comment for the order).
async fn read(actor: &mut Actor, context: &ClientContext, task: u64, counter: u64) {
    let node = actor.node();
    let spec = OpSpec::new("read", None, json!({"task": task, "counter": counter}));
    actor
        .read(context, spec, node, |channel| async move {
            let mut kv = KvClient::new(channel.clone());
            let mut tasks = TasksClient::new(channel);
            let (key, key_rev) = get(&mut kv, &result_key(task)).await?;
            let got = tasks
                .get_task(GetTaskRequest {
                    task_id: task,
                    consistency: ReadConsistency::Linearizable as i32,
                })
                .await
                .map_err(|status| describe(&status))?
                .into_inner();
            let found = got.task.ok_or("GetTask answered no task")?;
            let (state, result) = task_state(&found);
            let mut looked: BTreeSet<u64> = BTreeSet::new();
            looked.extend(key.as_u64());
            looked.extend(result.as_u64());
            let mut follow_ups = BTreeMap::new();
            for txn in looked {
                let listed = list_tasks(
                    &mut tasks,
                    FOLLOW_QUEUE,
                    Some(txn),
                    ReadConsistency::Linearizable,
                )
                .await?;
                follow_ups.insert(txn.to_string(), json!(listed.len()));
            }
            let (counter_value, counter_rev) = get(&mut kv, &counter_key(counter)).await?;
            Ok(json!({
                "task": task,
                "key": key,
                "key_rev": key_rev,
                "state": state,
                "result": result,
                "follow_ups": follow_ups,
                "counter": counter,
                "counter_value": counter_value,
                "counter_rev": counter_rev,
            }))
        })
        .await;
}

/// A task's state name and its result as a transaction id (null when it has none).
fn task_state(task: &Task) -> (String, Json) {
    let state = TaskState::try_from(task.state).map_or_else(
        |_| format!("UNKNOWN({})", task.state),
        |state| short_name(state.as_str_name(), "TASK_STATE_"),
    );
    let result = if task.result.is_empty() {
        Json::Null
    } else {
        txn_value(&task.result)
    };
    (state, result)
}

/// Every task of `queue` (with the label of `txn` when given), all pages.
async fn list_tasks(
    client: &mut TasksClient<Channel>,
    queue: &str,
    txn: Option<u64>,
    consistency: ReadConsistency,
) -> Result<Vec<Task>, String> {
    let mut tasks = Vec::new();
    let mut after_id = 0;
    loop {
        let request = ListTasksRequest {
            queue: queue.to_string(),
            labels: txn
                .map(|txn| (TXN_LABEL.to_string(), txn.to_string()))
                .into_iter()
                .collect(),
            limit: PAGE,
            after_id,
            consistency: consistency as i32,
            ..ListTasksRequest::default()
        };
        let page = client
            .list_tasks(request)
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        tasks.extend(page.tasks);
        if !page.more {
            return Ok(tasks);
        }
        if page.next_after_id <= after_id {
            return Err("ListTasks did not advance".to_string());
        }
        after_id = page.next_after_id;
    }
}

/// Every key under [`PREFIX`]: key -> {"value", "rev"}.
async fn list_keys(
    kv: &mut KvClient<Channel>,
    consistency: ReadConsistency,
) -> Result<BTreeMap<String, Json>, String> {
    let mut keys = BTreeMap::new();
    let mut start_after = Vec::new();
    loop {
        let request = ListRequest {
            prefix: PREFIX.as_bytes().to_vec(),
            limit: PAGE,
            start_after: start_after.clone(),
            consistency: consistency as i32,
            keys_only: false,
        };
        let page = kv
            .list(request)
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        for kv in &page.kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            keys.insert(
                key,
                json!({"value": txn_value(&kv.value), "rev": kv.mod_revision}),
            );
        }
        if !page.more {
            return Ok(keys);
        }
        if page.next_start_after <= start_after {
            return Err("List did not advance".to_string());
        }
        start_after = page.next_start_after;
    }
}

/// The final state on `node`, recorded `final-read`: `{"keys", "tasks": {id: {"state",
/// "result"}}, "follow_ups": [{"id", "txn"}]}`.
async fn final_read(
    actor: &mut Actor,
    context: &ClientContext,
    node: u64,
    consistency: ReadConsistency,
) -> bool {
    let mode = short_name(consistency.as_str_name(), "READ_CONSISTENCY_");
    let spec = OpSpec::new(FINAL_READ, None, json!({"node": node, "consistency": mode}));
    let completion = actor
        .read(context, spec, node, |channel| async move {
            let keys = list_keys(&mut KvClient::new(channel.clone()), consistency).await?;
            let mut client = TasksClient::new(channel);
            let mut tasks = BTreeMap::new();
            for task in list_tasks(&mut client, QUEUE, None, consistency).await? {
                let (state, result) = task_state(&task);
                tasks.insert(
                    task.id.to_string(),
                    json!({"state": state, "result": result}),
                );
            }
            let follow_ups: Vec<Json> = list_tasks(&mut client, FOLLOW_QUEUE, None, consistency)
                .await?
                .iter()
                .map(|task| {
                    let label = task
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.labels.get(TXN_LABEL));
                    let txn = label.map_or(Json::Null, |label| txn_value(label.as_bytes()));
                    json!({"id": task.id, "txn": txn})
                })
                .collect();
            Ok(json!({
                "node": node,
                "consistency": mode,
                "keys": keys,
                "tasks": tasks,
                "follow_ups": follow_ups,
            }))
        })
        .await;
    matches!(completion, Completion::Ok(_))
}
