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
//! The checker ([`check`], in `watch/check.rs`), one function per property (named in brackets):
//! - every node replays the same history, the reference (`replays_agree`, `every_node_replays`),
//!   in strictly increasing revisions (`revisions_unique`, `revisions_increase`);
//! - the reference holds every acknowledged write and delete at the revision it was acknowledged
//!   with (`acknowledged_changes_kept`), nothing that was never written or whose write provably
//!   failed (`puts_were_written`), and nothing twice (`values_applied_once`);
//! - replaying the reference gives the final state every node lists (`final_state_is_the_replay`);
//! - each watcher saw exactly the reference from its first revision to the end marker: the same
//!   events at the same revisions, in order, with no gap and no duplicate
//!   (`watchers_see_the_reference`, `watchers_reach_the_end`), and every reconnect resumed right
//!   after the last revision seen (`watchers_resume_in_place`);
//! - there was something to check: some watcher recorded something (`someone_watched`) and the
//!   end marker was acknowledged (`end_marker_acknowledged`).

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

use super::{CheckResult, Tasks, Workload, FINAL_READ};
use crate::channel;
use crate::jepsen::client::{read_error, Attempt, Client, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

mod check;

pub use self::check::check;

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
        fence: None,
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
