//! The watch workload: writers put unique values to (and delete) a few keys under a prefix while
//! watchers on every node stream every change of the prefix from revision 1, reconnecting to
//! another node at `last revision + 1` whenever a stream fails.
//!
//! A watcher records what it received as `watch` operations: each covers one stretch of one
//! stream (at most [`CHECKPOINT`] long, so that little is lost if a watcher has to be aborted) and
//! is invoked with the revision it asked to start from, `{"from": r}`, and completed `ok` with
//! the events received, `{"events": [[revision, "put", key, value], [revision, "delete", key,
//! null], ...]}` (plus `error` when the stream failed). A watch has no effect, so it never ends
//! `info` and a watcher keeps one process for the whole run.
//!
//! Writes and deletes whose outcome is unknown are resent with the same request id to other nodes
//! (one recorded operation): a request id applied twice would put one value in the history twice.
//!
//! After the writers stop, one last write (the end marker) gives the revision every watcher must
//! reach. After healing, every node replays the whole prefix history from revision 1
//! (`final-watch`) and lists the prefix (`final-read`).
//!
//! The checker:
//! - every node replays the same history (the reference), in strictly increasing revisions;
//! - the reference holds every acknowledged write and delete at the revision it was acknowledged
//!   with, nothing that was never written or whose write provably failed, and nothing twice;
//! - replaying the reference gives the final state every node lists;
//! - each watcher saw exactly the reference from its first revision to the end marker: the same
//!   events at the same revisions, in order, with no gap and no duplicate, and every reconnect
//!   resumed right after the last revision seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::{
    DeleteRequest, EventType, ListRequest, PutRequest, ReadConsistency, WatchRequest,
};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use rand::Rng as _;
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{CheckResult, Tasks, Verdict, Workload, FINAL_READ};
use crate::channel;
use crate::jepsen::client::{read_error, Attempt, Client, ClientContext};
use crate::jepsen::history::{pair, Completion, Event, OpKind, OpSpec, Paired};

pub const NAME: &str = "watch";
/// Every key of the workload starts with this.
pub const PREFIX: &str = "jepsen/watch/";
/// The key of the end marker.
pub const END_KEY: &str = "jepsen/watch/end";
/// Longest stretch of a stream one `watch` operation covers.
pub const CHECKPOINT: Duration = Duration::from_secs(1);
/// The f of a node's replay of the whole history after healing.
pub const FINAL_WATCH: &str = "final-watch";
/// Sends of one write or delete whose outcome stays unknown (same request id): a request id
/// applied twice would show as the same value twice in the history.
const ATTEMPTS: usize = 3;
/// How long watchers get to reach the end marker once it is written.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Options {
    /// Keys the writers write to.
    pub keys: u64,
    /// Watchers per node.
    pub watchers_per_node: usize,
    /// Fraction of writes that are deletes.
    pub delete_fraction: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keys: 4,
            watchers_per_node: 1,
            delete_fraction: 0.15,
        }
    }
}

pub struct WatchWorkload {
    options: Options,
    values: Arc<AtomicU64>,
    writers: Tasks,
    watchers: Tasks,
    /// The end marker's revision, once written.
    end: watch::Sender<Option<u64>>,
    context: Mutex<Option<ClientContext>>,
}

impl WatchWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            values: Arc::new(AtomicU64::new(1)),
            writers: Tasks::default(),
            watchers: Tasks::default(),
            end: watch::Sender::new(None),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        self.context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes the end marker, retrying one request id on every node in turn until acknowledged
    /// (one logical write, applied once), and returns its revision.
    async fn write_end_marker(&self, context: &ClientContext) -> anyhow::Result<u64> {
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let mut client = Client::new(context, nodes[0]);
        let value = self.values.fetch_add(1, Ordering::Relaxed);
        let request = PutRequest {
            request_id: client.next_request_id(),
            key: END_KEY.as_bytes().to_vec(),
            value: value.to_string().into_bytes(),
            ..PutRequest::default()
        };
        let spec = OpSpec::new("write", Some(END_KEY.to_string()), json!(value));
        let invocation = client.invoke(context, spec);
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut last_error = String::new();
        for attempt in 0.. {
            let node = nodes[attempt % nodes.len()];
            let mut kv = channel::kv_client(context.nodes[&node]);
            match kv.put(request.clone()).await {
                Ok(response) => {
                    let revision = response.into_inner().header.map_or(0, |h| h.revision);
                    let completion = Completion::Ok(json!({"value": value, "revision": revision}));
                    client.complete(context, &invocation, &completion);
                    return Ok(revision);
                }
                Err(status) => last_error = format!("node {node}: {}", status.message()),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client.complete(context, &invocation, &Completion::Info(last_error.clone()));
        anyhow::bail!("the end marker was not acknowledged: {last_error}")
    }
}

impl Workload for WatchWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self.context.lock().unwrap_or_else(PoisonError::into_inner) = Some(context.clone());
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let values = Arc::clone(&self.values);
            let options = self.options.clone();
            self.writers.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut client = Client::new(&context, node);
                while !context.pace(&mut rng).await {
                    let key = format!("{PREFIX}k{}", rng.gen_range(0..options.keys));
                    if rng.gen_bool(options.delete_fraction) {
                        delete(&mut client, &context, key).await;
                    } else {
                        let value = values.fetch_add(1, Ordering::Relaxed);
                        write(&mut client, &context, key, value).await;
                    }
                }
            }));
        }
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        for (position, home) in nodes.iter().enumerate() {
            for _ in 0..self.options.watchers_per_node {
                // Each watcher starts on its home node and fails over to the next ones in turn.
                let mut order = nodes.clone();
                order.rotate_left(position);
                let context = context.clone();
                let end = self.end.subscribe();
                let process = context.recorder.new_process();
                tracing::debug!(watcher = process, home, "starting watcher");
                self.watchers
                    .push(tokio::spawn(watcher(context, order, end, process)));
            }
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            self.writers.drain(context.op_timeout).await?;
            let end = self.write_end_marker(&context).await;
            if let Ok(revision) = end {
                self.end.send_replace(Some(revision));
            }
            // Watchers stop at the marker; those that cannot reach it are aborted, and the
            // checker reports them.
            self.watchers.drain(CATCH_UP_TIMEOUT).await?;
            end.map(|_| ())
        })
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(end) = *self.end.borrow() else {
                anyhow::bail!("no end marker was written, so there is nothing to replay up to");
            };
            let replays = context.nodes.keys().map(|&node| async move {
                replay(context, node, end).await;
                list(context, node).await;
            });
            futures::future::join_all(replays).await;
            Ok(())
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

async fn write(client: &mut Client, context: &ClientContext, key: String, value: u64) {
    let request = PutRequest {
        request_id: client.next_request_id(),
        key: key.clone().into_bytes(),
        value: value.to_string().into_bytes(),
        ..PutRequest::default()
    };
    let spec = OpSpec::new("write", Some(key), json!(value));
    client
        .run_retrying(context, spec, ATTEMPTS, |mut kv| {
            let request = request.clone();
            async move {
                match kv.put(request).await {
                    Ok(response) => {
                        let revision = response.into_inner().header.map_or(0, |h| h.revision);
                        Attempt::Ok(json!({"value": value, "revision": revision}))
                    }
                    Err(status) => Attempt::from_status(&status),
                }
            }
        })
        .await;
}

async fn delete(client: &mut Client, context: &ClientContext, key: String) {
    let request = DeleteRequest {
        request_id: client.next_request_id(),
        key: key.clone().into_bytes(),
    };
    let spec = OpSpec::new("delete", Some(key), Json::Null);
    client
        .run_retrying(context, spec, ATTEMPTS, |mut kv| {
            let request = request.clone();
            async move {
                match kv.delete(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        let revision = response.header.map_or(0, |h| h.revision);
                        Attempt::Ok(json!({"deleted": response.deleted, "revision": revision}))
                    }
                    Err(status) => Attempt::from_status(&status),
                }
            }
        })
        .await;
}

/// One event as recorded: `[revision, "put", key, value]` or `[revision, "delete", key, null]`.
fn event_json(revision: u64, event: &conclave_proto::v1::Event) -> Json {
    let kv = event.kv.clone().unwrap_or_default();
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    if event.r#type == EventType::Delete as i32 {
        json!([revision, "delete", key, null])
    } else {
        let value = String::from_utf8_lossy(&kv.value).into_owned();
        let value = value
            .parse::<u64>()
            .map_or(json!(value), |number| json!(number));
        json!([revision, "put", key, value])
    }
}

/// One watcher: streams the prefix from revision 1 until it has seen `end`, failing over to the
/// next node of `order` whenever a stream fails.
async fn watcher(
    context: ClientContext,
    order: Vec<u64>,
    mut end: watch::Receiver<Option<u64>>,
    process: u64,
) {
    let mut next_revision = 1;
    let mut attempt = 0;
    let reached =
        |next: u64, end: &watch::Receiver<Option<u64>>| end.borrow().is_some_and(|end| next > end);
    while !reached(next_revision, &end) {
        let node = order[attempt % order.len()];
        let mut kv = channel::watch_client(context.nodes[&node]);
        let mut session = Session::open(&context, process, node, next_revision);
        let request = WatchRequest {
            key: PREFIX.as_bytes().to_vec(),
            prefix: true,
            start_revision: next_revision,
        };
        let mut stream = match tokio::time::timeout(context.op_timeout, kv.watch(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                session.close(
                    &context,
                    Some(format!("{:?}: {}", status.code(), status.message())),
                );
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                session.close(&context, Some("no answer to Watch".to_string()));
                attempt += 1;
                continue;
            }
        };
        let mut checkpoint = Instant::now() + CHECKPOINT;
        let error = loop {
            if reached(next_revision, &end) {
                break None;
            }
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(message)) => {
                        for event in &message.events {
                            session.events.push(event_json(message.revision, event));
                        }
                        if !message.events.is_empty() {
                            next_revision = message.revision + 1;
                        }
                    }
                    Some(Err(status)) => {
                        break Some(format!("{:?}: {}", status.code(), status.message()))
                    }
                    None => break Some("the stream ended".to_string()),
                },
                _ = tokio::time::sleep_until(checkpoint) => {
                    session.close(&context, None);
                    session = Session::open(&context, process, node, next_revision);
                    checkpoint = Instant::now() + CHECKPOINT;
                }
                _ = end.changed() => {}
            }
        };
        let failed = error.is_some();
        session.close(&context, error);
        if failed {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One recorded stretch of a watch stream.
struct Session {
    invocation: crate::jepsen::history::Invocation,
    events: Vec<Json>,
}

impl Session {
    fn open(context: &ClientContext, process: u64, node: u64, from: u64) -> Self {
        let spec = OpSpec::new("watch", None, json!({"from": from}));
        let invocation = context.recorder.invoke(NAME, process, Some(node), spec);
        Self {
            invocation,
            events: Vec::new(),
        }
    }

    fn close(&mut self, context: &ClientContext, error: Option<String>) {
        let mut value = json!({"events": std::mem::take(&mut self.events)});
        if let Some(error) = error {
            value["error"] = json!(error);
        }
        context
            .recorder
            .complete(&self.invocation, &Completion::Ok(value));
    }
}

/// Replays the prefix on `node` from revision 1 up to `end`, recorded as one `final-watch`.
async fn replay(context: &ClientContext, node: u64, end: u64) {
    let process = context.recorder.new_process();
    let spec = OpSpec::new(FINAL_WATCH, None, json!({"from": 1}));
    let invocation = context.recorder.invoke(NAME, process, Some(node), spec);
    let completion = tokio::time::timeout(CATCH_UP_TIMEOUT, async {
        let mut kv = channel::watch_client(context.nodes[&node]);
        let request = WatchRequest {
            key: PREFIX.as_bytes().to_vec(),
            prefix: true,
            start_revision: 1,
        };
        let mut stream = match kv.watch(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return read_error(&status),
        };
        let mut events = Vec::new();
        while let Some(message) = stream.next().await {
            match message {
                Ok(message) => {
                    for event in &message.events {
                        events.push(event_json(message.revision, event));
                    }
                    if message.revision >= end && !message.events.is_empty() {
                        return Completion::Ok(json!({ "events": events }));
                    }
                }
                Err(status) => return read_error(&status),
            }
        }
        Completion::Fail("the stream ended before the end marker".to_string())
    })
    .await
    .unwrap_or_else(|_| Completion::Fail("the replay did not reach the end marker".to_string()));
    context.recorder.complete(&invocation, &completion);
}

/// Lists the prefix on `node` (linearizable), recorded as `final-read` with
/// `{key: [value, mod_revision]}`.
async fn list(context: &ClientContext, node: u64) {
    let mut client = Client::new(context, node);
    let spec = OpSpec::new(FINAL_READ, None, Json::Null);
    client
        .run(context, spec, |mut kv| async move {
            let request = ListRequest {
                prefix: PREFIX.as_bytes().to_vec(),
                limit: 1000,
                start_after: Vec::new(),
                consistency: ReadConsistency::Linearizable as i32,
                keys_only: false,
            };
            match kv.list(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    if response.more {
                        return Completion::Fail("more than one page of keys".to_string());
                    }
                    let mut state = serde_json::Map::new();
                    for kv in response.kvs {
                        let key = String::from_utf8_lossy(&kv.key).into_owned();
                        let value = String::from_utf8_lossy(&kv.value).into_owned();
                        let value = value.parse::<u64>().map_or(json!(value), |n| json!(n));
                        state.insert(key, json!([value, kv.mod_revision]));
                    }
                    Completion::Ok(Json::Object(state))
                }
                Err(status) => read_error(&status),
            }
        })
        .await;
}

/// A change as the checker compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    revision: u64,
    kind: String,
    key: String,
    value: Json,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "r{} {} {} {}",
            self.revision, self.kind, self.key, self.value
        )
    }
}

fn changes(value: &Json) -> Result<Vec<Change>, String> {
    let Some(events) = value.get("events").and_then(Json::as_array) else {
        return Err(format!("no events in {value}"));
    };
    events
        .iter()
        .map(|event| match event.as_array().map(Vec::as_slice) {
            Some([revision, kind, key, value]) => Ok(Change {
                revision: revision
                    .as_u64()
                    .ok_or_else(|| format!("revision {revision}"))?,
                kind: kind.as_str().unwrap_or_default().to_string(),
                key: key.as_str().unwrap_or_default().to_string(),
                value: value.clone(),
            }),
            _ => Err(format!("malformed event {event}")),
        })
        .collect()
}

/// Checks the watch events of `events` (see the module comment).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let mut problems = Vec::new();

    // Writes by value (unique), and acknowledged changes by revision.
    let mut writes: HashMap<u64, (&str, OpKind)> = HashMap::new();
    let mut acknowledged: BTreeMap<u64, Change> = BTreeMap::new();
    let mut end_revision = None;
    for operation in &operations {
        let invoke = operation.invoke;
        let key = invoke.key.as_deref().unwrap_or_default();
        match invoke.f.as_str() {
            "write" => {
                let Some(value) = invoke.value.as_u64() else {
                    continue;
                };
                writes.insert(value, (key, operation.outcome()));
                if operation.is_ok() {
                    let revision = operation.value()["revision"].as_u64().unwrap_or(0);
                    if key == END_KEY {
                        end_revision = Some(revision);
                    }
                    acknowledged.insert(
                        revision,
                        Change {
                            revision,
                            kind: "put".into(),
                            key: key.into(),
                            value: json!(value),
                        },
                    );
                }
            }
            "delete" if operation.is_ok() && operation.value()["deleted"] == json!(true) => {
                let revision = operation.value()["revision"].as_u64().unwrap_or(0);
                acknowledged.insert(
                    revision,
                    Change {
                        revision,
                        kind: "delete".into(),
                        key: key.into(),
                        value: Json::Null,
                    },
                );
            }
            _ => {}
        }
    }

    // Every node's replay must be the same: that is the reference.
    let replays: Vec<(&Paired, Result<Vec<Change>, String>)> = operations
        .iter()
        .filter(|operation| operation.invoke.f == FINAL_WATCH && operation.is_ok())
        .map(|operation| (operation, changes(operation.value())))
        .collect();
    let Some((first_replay, Ok(reference))) = replays.first().map(|(o, c)| (*o, c.clone())) else {
        return CheckResult::unknown(NAME, "no node replayed the history after healing".into());
    };
    for (replay, replayed) in &replays[1..] {
        match replayed {
            Ok(replayed) if *replayed == reference => {}
            Ok(replayed) => {
                let position = replayed.iter().zip(&reference).position(|(a, b)| a != b);
                problems.push(format!(
                    "nodes {:?} and {:?} replay different histories: {}",
                    first_replay.invoke.node,
                    replay.invoke.node,
                    match position {
                        Some(position) => format!(
                            "at position {position}: {} vs {}",
                            reference[position], replayed[position]
                        ),
                        None => format!("{} vs {} changes", reference.len(), replayed.len()),
                    }
                ));
            }
            Err(error) => problems.push(format!("malformed replay: {error}")),
        }
    }
    let missing_replays = operations
        .iter()
        .filter(|operation| operation.invoke.f == FINAL_WATCH && !operation.is_ok())
        .count();
    if missing_replays > 0 {
        problems.push(format!(
            "{missing_replays} node(s) could not replay the history after healing"
        ));
    }

    // The reference itself: increasing revisions, only written values, every acknowledged change.
    let mut by_revision: BTreeMap<u64, &Change> = BTreeMap::new();
    let mut seen_values = HashMap::new();
    for change in &reference {
        if by_revision.insert(change.revision, change).is_some() {
            problems.push(format!(
                "revision {} appears twice in the history",
                change.revision
            ));
        }
        if change.kind == "put" {
            match change
                .value
                .as_u64()
                .and_then(|value| writes.get(&value).map(|w| (value, w)))
            {
                None => problems.push(format!("{change}: no write wrote this value")),
                Some((_, (key, _))) if *key != change.key => {
                    problems.push(format!("{change}: that value was written to {key}"))
                }
                Some((_, (_, OpKind::Fail))) => problems.push(format!(
                    "{change}: its write failed, promising it was not applied"
                )),
                Some((value, _)) => {
                    if let Some(previous) = seen_values.insert(value, change.revision) {
                        problems.push(format!(
                            "{change}: the value was applied before, at r{previous}"
                        ));
                    }
                }
            }
        }
    }
    if reference
        .windows(2)
        .any(|pair| pair[0].revision >= pair[1].revision)
    {
        problems.push("the replayed history is not in increasing revision order".into());
    }
    for (revision, change) in &acknowledged {
        match by_revision.get(revision) {
            Some(seen) if *seen == change => {}
            Some(seen) => {
                problems.push(format!("acknowledged {change}, but the history has {seen}"))
            }
            None => problems.push(format!("acknowledged {change} is missing from the history")),
        }
    }

    // The final state is the reference replayed.
    let mut state: BTreeMap<&str, Json> = BTreeMap::new();
    for change in &reference {
        if change.kind == "put" {
            state.insert(&change.key, json!([change.value, change.revision]));
        } else {
            state.remove(change.key.as_str());
        }
    }
    let state_json = Json::Object(
        state
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    );
    let final_reads: Vec<&Paired> = operations
        .iter()
        .filter(|o| o.invoke.f == FINAL_READ && o.is_ok())
        .collect();
    for read in &final_reads {
        if *read.value() != state_json {
            problems.push(format!(
                "node {:?} lists {} but the history replays to {}",
                read.invoke.node,
                read.value(),
                state_json
            ));
        }
    }

    // Each watcher: the reference, from where it started to the end marker.
    let mut watchers: BTreeMap<u64, Vec<&Paired>> = BTreeMap::new();
    for operation in operations.iter().filter(|o| o.invoke.f == "watch") {
        watchers
            .entry(operation.invoke.process)
            .or_default()
            .push(operation);
    }
    let mut sessions_total = 0;
    let mut reconnects = 0;
    for (watcher, sessions) in &watchers {
        sessions_total += sessions.len();
        let mut seen: Vec<Change> = Vec::new();
        let mut first_from = None;
        let mut broken = false;
        for session in sessions {
            let from = session.invoke.value["from"].as_u64().unwrap_or(0);
            first_from.get_or_insert(from);
            let expected_from = seen
                .last()
                .map_or(first_from.unwrap_or(from), |last| last.revision + 1);
            if from != expected_from {
                problems.push(format!(
                    "watcher {watcher} resumed at r{from} on node {:?}, not at r{expected_from}",
                    session.invoke.node
                ));
                broken = true;
                break;
            }
            if !session.is_ok() {
                problems.push(format!(
                    "watcher {watcher}: a stretch from r{from} on node {:?} never completed",
                    session.invoke.node
                ));
                broken = true;
                break;
            }
            if session.value().get("error").is_some() {
                reconnects += 1;
            }
            match changes(session.value()) {
                Ok(received) => seen.extend(received),
                Err(error) => problems.push(format!("watcher {watcher}: {error}")),
            }
        }
        if broken {
            continue;
        }
        let start = first_from.unwrap_or(1);
        let last = seen.last().map_or(0, |change| change.revision);
        let expected: Vec<&Change> = reference
            .iter()
            .filter(|change| change.revision >= start && change.revision <= last)
            .collect();
        let position = seen.iter().zip(&expected).position(|(a, b)| a != *b);
        if let Some(position) = position {
            problems.push(format!(
                "watcher {watcher} saw {} where the history has {} (its change #{position})",
                seen[position], expected[position]
            ));
        } else if seen.len() != expected.len() {
            problems.push(format!(
                "watcher {watcher} saw {} changes between r{start} and r{last}, the history has {}",
                seen.len(),
                expected.len()
            ));
        }
        if let Some(end) = end_revision {
            if last < end {
                problems.push(format!(
                    "watcher {watcher} stopped at r{last}, short of the end marker at r{end}"
                ));
            }
        }
    }
    if watchers.is_empty() {
        problems.push("no watcher recorded anything".into());
    }
    if end_revision.is_none() {
        problems.push("the end marker was never acknowledged".into());
    }

    let count = |f: &str, kind: OpKind| {
        operations
            .iter()
            .filter(|o| o.invoke.f == f && o.outcome() == kind)
            .count()
    };
    let stats = json!({
        "writes_ok": count("write", OpKind::Ok),
        "writes_info": count("write", OpKind::Info),
        "writes_fail": count("write", OpKind::Fail),
        "deletes_ok": count("delete", OpKind::Ok),
        "changes": reference.len(),
        "watchers": watchers.len(),
        "watch_operations": sessions_total,
        "reconnects": reconnects,
        "replays": replays.len(),
        "end_revision": end_revision,
    });
    let result = CheckResult::from_problems(NAME, problems, stats);
    if result.verdict == Verdict::Valid && final_reads.is_empty() {
        return CheckResult {
            verdict: Verdict::Unknown,
            problems: vec!["no final read".into()],
            ..result
        };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::history::Script;

    fn put(revision: u64, key: &str, value: u64) -> Json {
        json!([revision, "put", key, value])
    }

    const A: &str = "jepsen/watch/a";

    /// Writes 1 and 2 to A (revisions 1, 2), the end marker 3 (revision 3); watcher 10 sees
    /// everything in two stretches, `replay` is every node's replay.
    fn history(watcher_second: Json, replay: Json) -> Vec<Event> {
        Script::new(NAME)
            .invoke(10, "watch", None, json!({"from": 1}))
            .invoke(1, "write", Some(A), json!(1))
            .ok(1, json!({"value": 1, "revision": 1}))
            .ok(10, json!({"events": [put(1, A, 1)]}))
            .invoke(10, "watch", None, json!({"from": 2}))
            .invoke(1, "write", Some(A), json!(2))
            .ok(1, json!({"value": 2, "revision": 2}))
            .invoke(1, "write", Some(END_KEY), json!(3))
            .ok(1, json!({"value": 3, "revision": 3}))
            .ok(10, watcher_second)
            .invoke(20, FINAL_WATCH, None, json!({"from": 1}))
            .ok(20, replay.clone())
            .invoke(21, FINAL_WATCH, None, json!({"from": 1}))
            .ok(21, replay)
            .invoke(22, FINAL_READ, None, Json::Null)
            .ok(22, json!({A: [2, 2], END_KEY: [3, 3]}))
            .events()
    }

    fn full() -> Json {
        json!({"events": [put(1, A, 1), put(2, A, 2), put(3, END_KEY, 3)]})
    }

    #[test]
    fn a_good_history_is_valid() {
        let second = json!({"events": [put(2, A, 2), put(3, END_KEY, 3)]});
        let result = check(&history(second, full()));
        assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
        assert_eq!(result.stats["changes"], 3);
    }

    #[test]
    fn a_gap_in_a_watcher_is_invalid() {
        let second = json!({"events": [put(3, END_KEY, 3)]});
        let result = check(&history(second, full()));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(
            result.problems[0].contains("watcher 10"),
            "{:?}",
            result.problems
        );
    }

    #[test]
    fn a_duplicate_in_a_watcher_is_invalid() {
        let second = json!({"events": [put(1, A, 1), put(2, A, 2), put(3, END_KEY, 3)]});
        assert_eq!(check(&history(second, full())).verdict, Verdict::Invalid);
    }

    #[test]
    fn a_watcher_short_of_the_end_is_invalid() {
        let second = json!({"events": [put(2, A, 2)]});
        let result = check(&history(second, full()));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(
            result.problems[0].contains("short of the end marker"),
            "{:?}",
            result.problems
        );
    }

    #[test]
    fn a_lost_acknowledged_write_is_invalid() {
        let second = json!({"events": [put(3, END_KEY, 3)]});
        let replay = json!({"events": [put(1, A, 1), put(3, END_KEY, 3)]});
        let result = check(&history(second, replay));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(
            result
                .problems
                .iter()
                .any(|p| p.contains("missing from the history")),
            "{:?}",
            result.problems
        );
    }

    #[test]
    fn a_value_never_written_is_invalid() {
        let second = json!({"events": [put(2, A, 99), put(3, END_KEY, 3)]});
        let replay = json!({"events": [put(1, A, 1), put(2, A, 99), put(3, END_KEY, 3)]});
        let result = check(&history(second, replay));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(
            result.problems.iter().any(|p| p.contains("no write wrote")),
            "{:?}",
            result.problems
        );
    }

    #[test]
    fn a_final_state_that_differs_from_the_history_is_invalid() {
        let mut events = history(
            json!({"events": [put(2, A, 2), put(3, END_KEY, 3)]}),
            full(),
        );
        let last = events.len() - 1;
        events[last].value = json!({A: [1, 1], END_KEY: [3, 3]});
        let result = check(&events);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(
            result.problems[0].contains("lists"),
            "{:?}",
            result.problems
        );
    }
}
