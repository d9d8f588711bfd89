//! What the locks and elections workloads share: fenced writes to one key per lock (or election),
//! the end marker, the replay of every key's history after healing, and (in `fenced/check.rs`)
//! the properties of those writes and of the grants' tokens.
//!
//! Recorded operations (f: invocation value -> ok value):
//! - `write` on key `<prefix><name>`: `{"name", "token", "write", "stale"}` -> `{"name", "token",
//!   "write", "stale", "revision"}`. The write carries a Fence (kv.proto) naming the grant; the
//!   key's value is the JSON text `{"token", "write", "process"}`, so a replay tells who wrote what
//!   under which token. `write` ids are unique in the run. `fail` when provably not applied
//!   (refused as `lock-lost`: the request id's one application, so also after an unknown send);
//!   `info` unknown. `stale` marks a write its holder sent after sleeping past its TTL.
//! - `end` on the end key: `{}` -> `{"revision"}`: an unfenced write after the clients stopped,
//!   the revision every replay must reach.
//! - `final-watch`: `{"from": 1}` -> `{"events": [[revision, key, value], ...]}`: one node's KV
//!   watch of the whole prefix from revision 1 up to the end marker, after healing. `value` is the
//!   stored JSON parsed (or the text when it is not JSON).

use std::sync::atomic::{AtomicU64, Ordering};

use conclave_proto::v1::{Fence, FenceKind, PutRequest, WatchRequest};
use conclave_proto::{REASON_LOCK_LOST, REASON_METADATA};
use futures::StreamExt as _;
use serde_json::{json, Value as Json};
use tokio::time::Instant;
use tonic::Status;

use super::agents::{classify as classify_agents, Actor};
use crate::channel;
use crate::jepsen::client::{describe, read_error, Attempt, ClientContext};
use crate::jepsen::history::{Completion, OpSpec};

pub mod check;

/// The f of a node's replay of the prefix after healing.
pub const FINAL_WATCH: &str = "final-watch";
/// The f of the end marker's write.
pub const END: &str = "end";
/// How long the end marker and each replay may take.
const FINAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// True when the node refused `status` because the grant is not current (`conclave-reason:
/// lock-lost`): the state machine's answer to the request id's one application.
pub fn is_lock_lost(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status
            .metadata()
            .get(REASON_METADATA)
            .and_then(|value| value.to_str().ok())
            == Some(REASON_LOCK_LOST)
}

/// What one send learned from a failed call: a `lock-lost` refusal settles the operation as not
/// applied (`fail`); everything else as for the agent workloads ([`classify_agents`]).
pub fn classify(status: &Status) -> Attempt {
    if is_lock_lost(status) {
        Attempt::NotApplied(format!("{} [{REASON_LOCK_LOST}]", describe(status)))
    } else {
        classify_agents(status)
    }
}

/// The keys of one workload: `<prefix><name>` per lock, and the end marker.
#[derive(Debug)]
pub struct FencedKeys {
    pub prefix: &'static str,
    pub end_key: &'static str,
    writes: AtomicU64,
}

impl FencedKeys {
    pub const fn new(prefix: &'static str, end_key: &'static str) -> Self {
        Self {
            prefix,
            end_key,
            writes: AtomicU64::new(1),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Writes `{"token", "write", "process"}` to `name`'s key under `fence`, resent with its
    /// request id while unknown; recorded as `write`.
    pub async fn write(
        &self,
        actor: &mut Actor,
        context: &ClientContext,
        (kind, name, token): (FenceKind, &str, u64),
        stale: bool,
    ) -> Completion {
        let write = self.writes.fetch_add(1, Ordering::Relaxed);
        let key = self.key(name);
        let stored = json!({"token": token, "write": write, "process": actor.process()});
        let request = PutRequest {
            request_id: actor.next_request_id(),
            key: key.clone().into_bytes(),
            value: stored.to_string().into_bytes(),
            fence: Some(Fence {
                kind: kind as i32,
                name: name.to_string(),
                token,
            }),
            ..PutRequest::default()
        };
        let value = json!({"name": name, "token": token, "write": write, "stale": stale});
        let spec = OpSpec::new("write", Some(key), value.clone());
        actor
            .write(context, spec, |channel| {
                let request = request.clone();
                let mut value = value.clone();
                async move {
                    let mut kv = conclave_proto::v1::kv_client::KvClient::new(channel);
                    match kv.put(request).await {
                        Ok(response) => {
                            let revision = response.into_inner().header.map_or(0, |h| h.revision);
                            value["revision"] = json!(revision);
                            Attempt::Ok(value)
                        }
                        Err(status) => classify(&status),
                    }
                }
            })
            .await
    }

    /// Writes the end marker (unfenced), one request id resent to every node in turn until
    /// acknowledged; recorded as `end`. Its revision, or an error when it never was.
    pub async fn write_end(&self, context: &ClientContext) -> anyhow::Result<u64> {
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let mut actor = Actor::new(context, nodes[0]);
        let request = PutRequest {
            request_id: actor.next_request_id(),
            key: self.end_key.as_bytes().to_vec(),
            value: b"end".to_vec(),
            ..PutRequest::default()
        };
        let spec = OpSpec::new(END, Some(self.end_key.to_string()), json!({}));
        let invocation =
            context
                .recorder
                .invoke(context.workload, actor.process(), Some(nodes[0]), spec);
        let deadline = Instant::now() + FINAL_TIMEOUT;
        let mut last_error = String::new();
        for attempt in 0.. {
            let node = nodes[attempt % nodes.len()];
            let mut kv = channel::kv_client(context.nodes[&node]);
            match kv.put(request.clone()).await {
                Ok(response) => {
                    let revision = response.into_inner().header.map_or(0, |h| h.revision);
                    let completion = Completion::Ok(json!({ "revision": revision }));
                    context.recorder.complete(&invocation, &completion);
                    return Ok(revision);
                }
                Err(status) => last_error = format!("node {node}: {}", status.message()),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let completion = Completion::Info(last_error.clone());
        context.recorder.complete(&invocation, &completion);
        anyhow::bail!("the end marker was not acknowledged: {last_error}")
    }

    /// Replays the prefix on every node from revision 1 up to `end`, each recorded as one
    /// `final-watch`.
    pub async fn replay_everywhere(&self, context: &ClientContext, end: u64) {
        let replays = context
            .nodes
            .keys()
            .map(|&node| self.replay(context, node, end));
        futures::future::join_all(replays).await;
    }

    async fn replay(&self, context: &ClientContext, node: u64, end: u64) {
        let process = context.recorder.new_process();
        let spec = OpSpec::new(FINAL_WATCH, None, json!({"from": 1}));
        let invocation = context
            .recorder
            .invoke(context.workload, process, Some(node), spec);
        let prefix = self.prefix.as_bytes().to_vec();
        let completion = tokio::time::timeout(FINAL_TIMEOUT, async {
            let mut kv = channel::watch_client(context.nodes[&node]);
            let request = WatchRequest {
                key: prefix,
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
                            let kv = event.kv.clone().unwrap_or_default();
                            let key = String::from_utf8_lossy(&kv.key).into_owned();
                            let text = String::from_utf8_lossy(&kv.value).into_owned();
                            let value = serde_json::from_str::<Json>(&text).unwrap_or(json!(text));
                            events.push(json!([message.revision, key, value]));
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
        .unwrap_or_else(|_| Completion::Fail("the replay did not reach the end marker".into()));
        context.recorder.complete(&invocation, &completion);
    }
}
