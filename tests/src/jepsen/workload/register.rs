//! The register workload: reads, writes and compare-and-swaps of unique values on many
//! independent keys, checked for linearizability.
//!
//! Each key is a register holding a `u64` (as decimal text), absent until first written. Values
//! are unique across the run, so a value identifies the write that put it there.
//!
//! Conclave's compare-and-swap compares a key's `mod_revision`, not its value, so `cas(expected,
//! new)` is built from two operations: a linearizable read that returned `expected` at
//! `mod_revision` r (recorded as an ordinary read), then `CompareAndSwap(expected_mod_revision =
//! r, value = new)`, recorded as `cas [expected, new]`. It is sound as a value compare: the key's
//! mod_revision is r exactly while the write of revision r is the key's last one, and that write
//! put `expected` there (the read returned value and mod_revision from one state). A compare that
//! does not hold answers "not succeeded": `fail`, nothing was written.
//!
//! A write or compare-and-swap whose outcome is unknown is resent with the same request id to
//! other nodes (up to three sends, one recorded operation): if the cluster applied a request id
//! twice, a value would come back after a later write and the history would not be linearizable.
//!
//! Clients pick among a few active keys; a key retires after [`Options::ops_per_key`] operations
//! and a fresh one takes its place (Jepsen's independent keys), which keeps each key's search
//! small. After healing, every key is read on every node (ordinary reads in the history).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::{CompareAndSwapRequest, GetRequest, PutRequest, ReadConsistency};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::Rng as _;
use serde_json::{json, Value as Json};

use super::{CheckResult, Tasks, Verdict, Workload};
use crate::checker::history::{History, Op};
use crate::checker::{self, linearizable};
use crate::jepsen::client::{read_error, Attempt, Client, ClientContext};
use crate::jepsen::history::{Completion, Event, OpKind, OpSpec};

pub const NAME: &str = "register";
/// Every key of the workload starts with this.
pub const PREFIX: &str = "jepsen/register/";
/// Sends of one write or compare-and-swap whose outcome stays unknown (same request id each time,
/// to the next node): the retries test that a request id applies once.
const ATTEMPTS: usize = 3;

/// The mix of operations and the key rotation.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keys in use at once.
    pub active_keys: usize,
    /// Operations on a key before it retires.
    pub ops_per_key: u64,
    /// Fractions of reads and writes; the rest are compare-and-swaps.
    pub read_fraction: f64,
    pub write_fraction: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            active_keys: 6,
            ops_per_key: 120,
            read_fraction: 0.4,
            write_fraction: 0.35,
        }
    }
}

pub struct RegisterWorkload {
    options: Options,
    keys: Arc<KeyPool>,
    values: Arc<AtomicU64>,
    tasks: Tasks,
    op_timeout: Mutex<Duration>,
}

impl RegisterWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            keys: Arc::new(KeyPool::new(options.active_keys, options.ops_per_key)),
            options,
            values: Arc::new(AtomicU64::new(1)),
            tasks: Tasks::default(),
            op_timeout: Mutex::new(Duration::from_secs(5)),
        }
    }
}

impl Workload for RegisterWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self
            .op_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = context.op_timeout;
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let keys = Arc::clone(&self.keys);
            let values = Arc::clone(&self.values);
            let options = self.options.clone();
            self.tasks.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut client = Client::new(&context, node);
                while !context.pace(&mut rng).await {
                    let key = keys.pick(&mut rng);
                    let roll: f64 = rng.gen();
                    if roll < options.read_fraction {
                        read(&mut client, &context, &key).await;
                    } else if roll < options.read_fraction + options.write_fraction {
                        let value = values.fetch_add(1, Ordering::Relaxed);
                        write(&mut client, &context, &key, value).await;
                    } else {
                        let new = values.fetch_add(1, Ordering::Relaxed);
                        if let Some((expected, mod_revision)) =
                            read(&mut client, &context, &key).await
                        {
                            cas(&mut client, &context, &key, expected, mod_revision, new).await;
                        }
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
        Box::pin(self.tasks.drain(op_timeout))
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let keys = self.keys.used();
            let readers = context.nodes.keys().map(|&node| {
                let keys = keys.clone();
                async move {
                    let mut client = Client::new(context, node);
                    for key in &keys {
                        read(&mut client, context, key).await;
                    }
                }
            });
            futures::future::join_all(readers).await;
            Ok(())
        })
    }

    fn check(&self, events: &[Event], budget: Duration) -> CheckResult {
        check(events, budget)
    }
}

/// Checks the register events of `events` for linearizability within `budget`.
pub fn check(events: &[Event], budget: Duration) -> CheckResult {
    let history = match to_register_history(events) {
        Ok(history) => history,
        Err(problem) => {
            return CheckResult::from_problems(NAME, vec![format!("{problem:#}")], Json::Null)
        }
    };
    let report = match checker::check(&history, budget) {
        Ok(report) => report,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let stats = json!({
        "keys": report.keys.len(),
        "operations_checked": report.operations_checked,
        "info_operations_pruned": report.info_operations_pruned,
        "elapsed_ms": report.elapsed.as_millis() as u64,
    });
    let (verdict, problems) = match &report.verdict {
        linearizable::Verdict::Valid => (Verdict::Valid, Vec::new()),
        invalid @ linearizable::Verdict::Invalid { .. } => {
            let mut problems = vec![invalid.to_string()];
            let others = report
                .keys
                .values()
                .filter(|verdict| matches!(verdict, linearizable::Verdict::Invalid { .. }))
                .count();
            if others > 1 {
                problems.push(format!("{} keys are not linearizable in all", others));
            }
            (Verdict::Invalid, problems)
        }
        unknown @ linearizable::Verdict::Unknown { .. } => {
            (Verdict::Unknown, vec![unknown.to_string()])
        }
    };
    CheckResult {
        workload: NAME.to_string(),
        verdict,
        problems,
        stats,
    }
}

/// The register events as the linearizability checker's history. A read that returned something
/// other than a number or nil is an error: no write put it there.
pub fn to_register_history(events: &[Event]) -> anyhow::Result<History> {
    let mut history = History::new();
    let mut invocations: std::collections::HashMap<u64, Op> = std::collections::HashMap::new();
    for event in events.iter().filter(|event| event.workload == NAME) {
        let key = event.key.clone().unwrap_or_default();
        let op = if event.kind == OpKind::Invoke {
            let op = match (event.f.as_str(), &event.value) {
                ("read", _) => Op::invoke_read(event.process, key),
                ("write", value) => Op::invoke_write(event.process, key, as_u64(value)?),
                ("cas", Json::Array(pair)) if pair.len() == 2 => {
                    Op::invoke_cas(event.process, key, as_u64(&pair[0])?, as_u64(&pair[1])?)
                }
                (f, value) => anyhow::bail!("event {}: unknown op {f} {value}", event.index),
            };
            invocations.insert(event.process, op.clone());
            op
        } else {
            let invocation = invocations
                .remove(&event.process)
                .ok_or_else(|| anyhow::anyhow!("event {} completes nothing", event.index))?;
            let completion = invocation.complete(event.kind);
            if event.kind == OpKind::Ok && event.f == "read" {
                let value = match &event.value {
                    Json::Null => None,
                    value => Some(as_u64(value).map_err(|_| {
                        anyhow::anyhow!(
                            "event {}: process {} read {} from {key:?}, which no write put there",
                            event.index,
                            event.process,
                            event.value
                        )
                    })?),
                };
                completion.with_value(value)
            } else {
                completion
            }
        };
        history.push(op, event.time_ns);
    }
    Ok(history)
}

fn as_u64(value: &Json) -> anyhow::Result<u64> {
    value
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("{value} is not a register value"))
}

/// A linearizable read; returns the value and its mod_revision when it read a number.
async fn read(client: &mut Client, context: &ClientContext, key: &str) -> Option<(u64, u64)> {
    let spec = OpSpec::new("read", Some(key.to_string()), Json::Null);
    let invocation = client.invoke(context, spec);
    let mut kv = client.kv();
    let request = GetRequest {
        key: key.as_bytes().to_vec(),
        consistency: ReadConsistency::Linearizable as i32,
    };
    let (completion, found) = match kv.get(request).await {
        Ok(response) => match response.into_inner().kv {
            None => (Completion::Ok(Json::Null), None),
            Some(kv) => {
                let text = String::from_utf8_lossy(&kv.value).into_owned();
                match text.parse::<u64>() {
                    Ok(value) => (Completion::Ok(json!(value)), Some((value, kv.mod_revision))),
                    // Recorded as read, so that the checker reports it.
                    Err(_) => (Completion::Ok(json!(text)), None),
                }
            }
        },
        Err(status) => (read_error(&status), None),
    };
    client.complete(context, &invocation, &completion);
    found
}

async fn write(client: &mut Client, context: &ClientContext, key: &str, value: u64) {
    let request = PutRequest {
        request_id: client.next_request_id(),
        key: key.as_bytes().to_vec(),
        value: value.to_string().into_bytes(),
        ..PutRequest::default()
    };
    let spec = OpSpec::new("write", Some(key.to_string()), json!(value));
    client
        .run_retrying(context, spec, ATTEMPTS, |mut kv| {
            let request = request.clone();
            async move {
                match kv.put(request).await {
                    Ok(_) => Attempt::Ok(json!(value)),
                    Err(status) => Attempt::from_status(&status),
                }
            }
        })
        .await;
}

async fn cas(
    client: &mut Client,
    context: &ClientContext,
    key: &str,
    expected: u64,
    mod_revision: u64,
    new: u64,
) {
    let request = CompareAndSwapRequest {
        request_id: client.next_request_id(),
        key: key.as_bytes().to_vec(),
        expected_mod_revision: mod_revision,
        value: new.to_string().into_bytes(),
        ..CompareAndSwapRequest::default()
    };
    let spec = OpSpec::new("cas", Some(key.to_string()), json!([expected, new]));
    client
        .run_retrying(context, spec, ATTEMPTS, |mut kv| {
            let request = request.clone();
            async move {
                match kv.compare_and_swap(request).await {
                    Ok(response) if response.get_ref().succeeded => {
                        Attempt::Ok(json!([expected, new]))
                    }
                    Ok(_) => Attempt::NotApplied("compare failed".to_string()),
                    Err(status) => Attempt::from_status(&status),
                }
            }
        })
        .await;
}

/// The active keys and how many operations each has had.
#[derive(Debug)]
struct KeyPool {
    state: Mutex<KeyPoolState>,
    ops_per_key: u64,
}

#[derive(Debug)]
struct KeyPoolState {
    /// (key number, operations so far)
    active: Vec<(u64, u64)>,
    next: u64,
    used: BTreeSet<u64>,
}

impl KeyPool {
    fn new(active_keys: usize, ops_per_key: u64) -> Self {
        let active_keys = active_keys.max(1) as u64;
        Self {
            state: Mutex::new(KeyPoolState {
                active: (0..active_keys).map(|key| (key, 0)).collect(),
                next: active_keys,
                used: BTreeSet::new(),
            }),
            ops_per_key,
        }
    }

    /// A random active key for one more operation; a key that reaches its quota is replaced.
    fn pick(&self, rng: &mut StdRng) -> String {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = rng.gen_range(0..state.active.len());
        let (key, ops) = state.active[slot];
        state.used.insert(key);
        if ops + 1 >= self.ops_per_key {
            let next = state.next;
            state.next += 1;
            state.active[slot] = (next, 0);
        } else {
            state.active[slot].1 += 1;
        }
        key_name(key)
    }

    fn used(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.used.iter().map(|key| key_name(*key)).collect()
    }
}

fn key_name(key: u64) -> String {
    format!("{PREFIX}k{key:05}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::history::Script;

    const BUDGET: Duration = Duration::from_secs(5);

    fn verdict(script: Script) -> (Verdict, Vec<String>) {
        let result = check(&script.events(), BUDGET);
        (result.verdict, result.problems)
    }

    fn k() -> Option<&'static str> {
        Some("k")
    }

    #[test]
    fn sequential_writes_and_reads_are_valid() {
        let script = Script::new(NAME)
            .invoke(1, "write", k(), json!(1))
            .ok(1, json!(1))
            .invoke(2, "read", k(), Json::Null)
            .ok(2, json!(1))
            .invoke(1, "cas", k(), json!([1, 2]))
            .ok(1, json!([1, 2]))
            .invoke(2, "read", k(), Json::Null)
            .ok(2, json!(2));
        assert_eq!(verdict(script).0, Verdict::Valid);
    }

    #[test]
    fn a_stale_read_is_invalid() {
        let script = Script::new(NAME)
            .invoke(1, "write", k(), json!(1))
            .ok(1, json!(1))
            .invoke(1, "write", k(), json!(2))
            .ok(1, json!(2))
            .invoke(2, "read", k(), Json::Null)
            .ok(2, json!(1));
        let (verdict, problems) = verdict(script);
        assert_eq!(verdict, Verdict::Invalid);
        assert!(problems[0].contains("read -> 1"), "{problems:?}");
    }

    #[test]
    fn an_info_write_may_appear_later_but_a_failed_one_may_not() {
        let info = Script::new(NAME)
            .invoke(1, "write", k(), json!(1))
            .info(1)
            .invoke(2, "read", k(), Json::Null)
            .ok(2, json!(1));
        assert_eq!(verdict(info).0, Verdict::Valid);
        let fail = Script::new(NAME)
            .invoke(1, "write", k(), json!(1))
            .fail(1)
            .invoke(2, "read", k(), Json::Null)
            .ok(2, json!(1));
        assert_eq!(verdict(fail).0, Verdict::Invalid);
    }

    #[test]
    fn a_lost_acknowledged_write_is_invalid() {
        let script = Script::new(NAME)
            .invoke(1, "write", k(), json!(1))
            .ok(1, json!(1))
            .invoke(2, "read", k(), Json::Null)
            .ok(2, Json::Null);
        assert_eq!(verdict(script).0, Verdict::Invalid);
    }

    #[test]
    fn a_value_nobody_wrote_is_invalid() {
        let script = Script::new(NAME)
            .invoke(2, "read", k(), Json::Null)
            .ok(2, json!("garbage"));
        let (verdict, problems) = verdict(script);
        assert_eq!(verdict, Verdict::Invalid);
        assert!(problems[0].contains("no write put there"), "{problems:?}");
    }

    #[test]
    fn other_workloads_are_ignored_and_keys_are_independent() {
        let mut events = Script::new(NAME)
            .invoke(1, "write", Some("a"), json!(1))
            .ok(1, json!(1))
            .invoke(1, "write", Some("b"), json!(2))
            .ok(1, json!(2))
            .invoke(2, "read", Some("a"), Json::Null)
            .ok(2, json!(1))
            .events();
        events.extend(
            Script::new("set")
                .invoke(9, "add", None, json!(5))
                .ok(9, json!(5))
                .events()
                .into_iter()
                .map(|mut event| {
                    event.index += 6;
                    event.time_ns += 6_000;
                    event
                }),
        );
        let result = check(&events, BUDGET);
        assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
        assert_eq!(result.stats["keys"], 2);
    }

    #[test]
    fn a_zero_budget_is_unknown() {
        let script = Script::new(NAME)
            .invoke(1, "write", k(), json!(1))
            .ok(1, json!(1));
        assert_eq!(
            check(&script.events(), Duration::ZERO).verdict,
            Verdict::Unknown
        );
    }
}
