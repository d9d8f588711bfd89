//! Raw-API agents and logical clients shared by the tasks and decisions workloads.
//!
//! - [`Actor`]: one logical client (a process in the history, a new one after `info`) with its
//!   own connections to every node. Its writes are resent with the SAME request id to the next
//!   nodes while their outcome is unknown, and recorded as one operation, like the KV workloads'
//!   (see [`crate::jepsen::client`] for the ok / fail / info rules).
//! - [`run_agent`]: an agent's life: register (a recorded write), keep one session stream open to
//!   some node (heartbeats every third of the TTL), move the stream to another node now and then
//!   and whenever it breaks, register again once the session is gone (NOT_FOUND on open, or
//!   `closed` pushed). Every pushed event goes to the workload's handler.
//!
//! An agent's stream on a node cut off from the leader sees nothing new and its heartbeats never
//! reach the leader, so its session expires without the agent being told: moving the stream every
//! few seconds is what makes the agent notice (the next open is NOT_FOUND), as a real agent with
//! a watchdog would. Now and then an agent freezes past its TTL (as a process in a long pause
//! would) and its workers then send their verbs with the tokens of leases that were taken away.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::session_request::Kind as RequestKind;
use conclave_proto::v1::SessionRequest;
use conclave_proto::v1::{
    Heartbeat, ReadConsistency, RegisterRequest, RequestId, SessionEvent, SessionOpen,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::Rng as _;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::channel;
use crate::jepsen::client::{
    describe, is_connect_error, is_rejected, Attempt, Client, ClientContext,
};
use crate::jepsen::history::{Completion, OpSpec};

/// Sends of one write whose outcome stays unknown (same request id, next node each time).
pub const ATTEMPTS: usize = 3;
/// Pause before resending a write whose outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a stream stays on one node before the agent moves it (uniform in this range).
const STREAM_STAY_MS: (u64, u64) = (1_500, 5_000);
/// Pause after a failed open or registration before the next try.
const REOPEN_PAUSE: Duration = Duration::from_millis(150);

/// One logical client: a process of the history, its request ids and its connections.
#[derive(Debug)]
pub struct Actor {
    client: Client,
    channels: BTreeMap<u64, Channel>,
    op_timeout: Duration,
}

impl Actor {
    pub fn new(context: &ClientContext, node: u64) -> Self {
        Self {
            client: Client::new(context, node),
            channels: connect(context),
            op_timeout: context.op_timeout,
        }
    }

    /// The node this client sends to first.
    pub fn node(&self) -> u64 {
        self.client.node
    }

    pub fn process(&self) -> u64 {
        self.client.process
    }

    pub fn next_request_id(&mut self) -> Option<RequestId> {
        self.client.next_request_id()
    }

    /// This process's connection to `node` (unary calls, each bounded by the op timeout).
    pub fn channel(&self, node: u64) -> Channel {
        self.channels[&node].clone()
    }

    /// Records `spec`, sends `call` to this client's node and, until one answers definitely, to
    /// the next nodes (up to [`ATTEMPTS`] sends, the caller's request id in every one), and
    /// records the completion: `ok` once a send succeeds, `fail` when the one application was a
    /// refusal or every send was provably not proposed, `info` otherwise (then the process is
    /// retired and continues on new connections).
    pub async fn write<F, Fut>(
        &mut self,
        context: &ClientContext,
        spec: OpSpec,
        call: F,
    ) -> Completion
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let invocation = self.client.invoke(context, spec);
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let first = nodes.iter().position(|n| *n == self.node()).unwrap_or(0);
        let mut maybe_applied = false;
        let mut errors = Vec::new();
        let mut completion = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let node = nodes[(first + attempt) % nodes.len()];
            let sent = tokio::time::timeout(
                self.op_timeout + Duration::from_secs(1),
                call(self.channel(node)),
            )
            .await
            .unwrap_or_else(|_| Attempt::Unknown("no answer".to_string()));
            completion = match sent {
                Attempt::Ok(value) => Some(Completion::Ok(value)),
                Attempt::NotApplied(text) => Some(Completion::Fail(text)),
                // Not sent, or not proposed: the next node may take it.
                Attempt::Rejected(text) => {
                    errors.push(format!("node {node}: {text}"));
                    None
                }
                Attempt::Unknown(text) => {
                    maybe_applied = true;
                    errors.push(format!("node {node}: {text}"));
                    None
                }
            };
            if completion.is_some() {
                break;
            }
        }
        // Every send provably not proposed: `fail`. After an unknown one, a later rejection
        // proves nothing: `info`.
        let completion = completion.unwrap_or_else(|| {
            let errors = errors.join(" | then ");
            if maybe_applied {
                Completion::Info(errors)
            } else {
                Completion::Fail(errors)
            }
        });
        self.complete(context, &invocation, &completion);
        completion
    }

    /// Records `spec` and runs one read on `node`; an error is `fail` (a read has no effect).
    pub async fn read<F, Fut>(
        &mut self,
        context: &ClientContext,
        spec: OpSpec,
        node: u64,
        call: F,
    ) -> Completion
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<Json, String>>,
    {
        let invocation =
            context
                .recorder
                .invoke(context.workload, self.process(), Some(node), spec);
        // Multi-page reads get a few op timeouts.
        let bound = 3 * self.op_timeout;
        let completion = match tokio::time::timeout(bound, call(self.channel(node))).await {
            Ok(Ok(value)) => Completion::Ok(value),
            Ok(Err(error)) => Completion::Fail(error),
            Err(_) => Completion::Fail(format!("no answer within {bound:?}")),
        };
        context.recorder.complete(&invocation, &completion);
        completion
    }

    /// Records something this process saw (an assignment, a ballot) as an operation that
    /// completed `ok` at once: an observation, which has no effect.
    pub fn observe(&self, context: &ClientContext, f: &str, node: u64, value: Json) {
        let spec = OpSpec::new(f, None, value.clone());
        let invocation =
            context
                .recorder
                .invoke(context.workload, self.process(), Some(node), spec);
        context
            .recorder
            .complete(&invocation, &Completion::Ok(value));
    }

    fn complete(
        &mut self,
        context: &ClientContext,
        invocation: &crate::jepsen::history::Invocation,
        completion: &Completion,
    ) {
        self.client.complete(context, invocation, completion);
        if matches!(completion, Completion::Info(_)) {
            // The client retired its process; the old connections may hold the old request.
            self.channels = connect(context);
        }
    }
}

fn connect(context: &ClientContext) -> BTreeMap<u64, Channel> {
    context
        .nodes
        .iter()
        .map(|(id, addr)| (*id, channel::channel(*addr, Some(context.op_timeout))))
        .collect()
}

/// What one send of a write learned from a failed call. A FAILED_PRECONDITION that the state
/// machine answered (a lost lease, a refused vote) is the outcome of the request id's one
/// application, so it settles the operation as `fail` even after an earlier send was unknown;
/// every other error is classified by the client's rules.
///
/// "tcp connect error" proves nothing was sent only when this client failed to connect. A node
/// that forwards a write to a leader it cannot reach answers with the same words, and it may
/// have proposed the write itself before it learned it no longer leads (then the node also drops
/// the "rejected" mark): from a node, that answer is unknown unless marked rejected.
pub fn classify(status: &Status) -> Attempt {
    if is_refusal(status) {
        Attempt::NotApplied(describe(status))
    } else if is_connect_error(status) && !is_local(status) && !is_rejected(status) {
        Attempt::Unknown(format!("{} (from a node)", describe(status)))
    } else {
        Attempt::from_status(status)
    }
}

/// True when `status` was made by this process's gRPC client (a transport error, which tonic
/// keeps as the status's source), not received from a node.
pub fn is_local(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// True for the refusals the state machine answers (nothing changed): a stale fencing token
/// ("lease lost", agents.proto) or a refused vote (already voted, closed, not a voter, session
/// not live).
pub fn is_refusal(status: &Status) -> bool {
    let message = status.message();
    status.code() == Code::FailedPrecondition
        && (message.starts_with("lease lost")
            || message.contains("already voted")
            || message.contains("is closed")
            || message.contains("is not in the electorate")
            || message.contains("is not live"))
}

/// How an agent registers, and how often it freezes.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub name: String,
    pub capabilities: Vec<String>,
    pub max_concurrent: u32,
    pub ttl_ms: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// Chance, each time the agent moves its stream, that it freezes instead (a long GC pause, a
    /// stopped VM): no stream and no heartbeats for longer than its TTL, so its session expires;
    /// its workers hold their verbs until it thaws, then send them with the old tokens.
    pub freeze_probability: f64,
}

/// What an agent shares with its workers.
#[derive(Debug, Default)]
pub struct AgentShared {
    /// The current session id; 0 while there is none.
    pub session: AtomicU64,
    /// Set when the agent must stop freezing (the drain: the run must finish).
    pub behave: std::sync::atomic::AtomicBool,
    frozen_until: std::sync::Mutex<Option<Instant>>,
}

impl AgentShared {
    pub fn session(&self) -> u64 {
        self.session.load(Ordering::SeqCst)
    }

    /// Waits while the agent is frozen.
    pub async fn thaw(&self) {
        let until = *self
            .frozen_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    fn freeze(&self, until: Instant) {
        *self
            .frozen_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    /// Forgets `session_id` if it is still the current session.
    fn forget(&self, session_id: u64) {
        let _ = self
            .session
            .compare_exchange(session_id, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Registers `config` (replacing a live session of that name), recorded as `register`:
/// `{"agent": name}`, completed `{"agent": name, "session": id}`. `None` unless acknowledged.
pub async fn register(
    actor: &mut Actor,
    context: &ClientContext,
    config: &AgentConfig,
) -> Option<u64> {
    let request = RegisterRequest {
        request_id: actor.next_request_id(),
        name: config.name.clone(),
        capabilities: config.capabilities.clone(),
        max_concurrent: config.max_concurrent,
        ttl_ms: config.ttl_ms,
        replace: true,
        breaker_failures: config.breaker_failures,
        breaker_cooldown_ms: config.breaker_cooldown_ms,
        ..RegisterRequest::default()
    };
    let name = config.name.clone();
    let spec = OpSpec::new("register", None, json!({"agent": name}));
    let completion = actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let name = name.clone();
            async move {
                match AgentsClient::new(channel).register(request).await {
                    Ok(response) => {
                        let session = response.into_inner().session_id;
                        Attempt::Ok(json!({"agent": name, "session": session}))
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
    match completion {
        Completion::Ok(value) => value["session"].as_u64(),
        _ => None,
    }
}

/// An open session stream with its heartbeats; dropping it closes the stream and stops them.
pub struct SessionStream {
    pub node: u64,
    incoming: Streaming<SessionEvent>,
    heartbeats: JoinHandle<()>,
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

/// How opening a stream went.
pub enum Opened {
    Stream(Box<SessionStream>),
    /// NOT_FOUND: the session expired, was closed or replaced; register again.
    Gone(String),
    Failed(String),
}

impl SessionStream {
    /// Opens the stream of `session_id` on `node` and waits for `opened` (bounded by `timeout`).
    pub async fn open(
        context: &ClientContext,
        node: u64,
        session_id: u64,
        ttl_ms: u64,
        timeout: Duration,
    ) -> Opened {
        let (requests, outgoing) = mpsc::channel::<SessionRequest>(8);
        let open = SessionRequest {
            kind: Some(RequestKind::Open(SessionOpen { session_id })),
        };
        requests.send(open).await.expect("the receiver is alive");
        // No per-call timeout on a stream's channel: it would cut the stream.
        let mut client = AgentsClient::new(channel::channel(context.nodes[&node], None));
        let opened = tokio::time::timeout(timeout, async {
            let mut incoming = client
                .session(tokio_stream::wrappers::ReceiverStream::new(outgoing))
                .await?
                .into_inner();
            let first = incoming.message().await?;
            Ok::<_, Status>((incoming, first))
        })
        .await;
        let (incoming, first) = match opened {
            Err(_) => {
                return Opened::Failed(format!("node {node}: no `opened` within {timeout:?}"))
            }
            Ok(Err(status)) if status.code() == Code::NotFound => {
                return Opened::Gone(describe(&status))
            }
            Ok(Err(status)) => {
                return Opened::Failed(format!("node {node}: {}", describe(&status)))
            }
            Ok(Ok(answer)) => answer,
        };
        match first.and_then(|event| event.kind) {
            Some(EventKind::Opened(opened)) if opened.session_id == session_id => {}
            Some(EventKind::Closed(closed)) => return Opened::Gone(closed.reason),
            other => {
                return Opened::Failed(format!(
                    "node {node}: expected `opened` first, got {other:?}"
                ))
            }
        }
        let interval = Duration::from_millis((ttl_ms / 3).max(100));
        let heartbeats = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let beat = SessionRequest {
                    kind: Some(RequestKind::Heartbeat(Heartbeat { load: 0 })),
                };
                if requests.send(beat).await.is_err() {
                    return;
                }
            }
        });
        Opened::Stream(Box::new(SessionStream {
            node,
            incoming,
            heartbeats,
        }))
    }

    /// The next pushed event; `None` when the stream ended or broke.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        self.incoming.message().await.ok().flatten()
    }
}

/// Runs one agent until `stop` turns true: registers (recorded by `actor`), keeps a stream open
/// on a random node, moves it every few seconds and whenever it breaks (or, now and then,
/// freezes instead), registers again when the session is gone, and hands every pushed event
/// other than `opened`/`closed` to `handler` with the session id and the stream's node.
/// `shared.session` always holds the current session id (0: none).
pub async fn run_agent<H>(
    context: ClientContext,
    config: AgentConfig,
    mut actor: Actor,
    mut rng: StdRng,
    mut stop: watch::Receiver<bool>,
    shared: Arc<AgentShared>,
    mut handler: H,
) where
    H: FnMut(u64, u64, SessionEvent),
{
    let nodes: Vec<u64> = context.nodes.keys().copied().collect();
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    while !stopped(&stop) {
        let session_id = shared.session();
        if session_id == 0 {
            match register(&mut actor, &context, &config).await {
                Some(id) => shared.session.store(id, Ordering::SeqCst),
                None => pause(&mut stop, REOPEN_PAUSE).await,
            }
            continue;
        }
        let node = *nodes.choose(&mut rng).expect("a cluster has nodes");
        let mut stream = match SessionStream::open(
            &context,
            node,
            session_id,
            config.ttl_ms,
            context.op_timeout,
        )
        .await
        {
            Opened::Stream(stream) => stream,
            Opened::Gone(reason) => {
                tracing::debug!(agent = %config.name, session_id, %reason, "session gone");
                shared.forget(session_id);
                continue;
            }
            Opened::Failed(reason) => {
                tracing::debug!(agent = %config.name, %reason, "open failed");
                pause(&mut stop, REOPEN_PAUSE).await;
                continue;
            }
        };
        let stay = Duration::from_millis(rng.gen_range(STREAM_STAY_MS.0..=STREAM_STAY_MS.1));
        let move_at = Instant::now() + stay;
        let mut broke = false;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(SessionEvent { kind: Some(EventKind::Closed(closed)) }) => {
                        tracing::debug!(agent = %config.name, session_id, reason = %closed.reason, "session closed");
                        shared.forget(session_id);
                        break;
                    }
                    Some(event) => handler(session_id, stream.node, event),
                    None => {
                        broke = true;
                        break;
                    }
                },
                () = tokio::time::sleep_until(move_at) => break,
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        drop(stream);
        if broke {
            pause(&mut stop, REOPEN_PAUSE).await;
        } else if !stopped(&stop)
            && !shared.behave.load(Ordering::SeqCst)
            && rng.gen_bool(config.freeze_probability)
        {
            let frozen = Duration::from_millis(config.ttl_ms + rng.gen_range(300..=1_500));
            tracing::debug!(agent = %config.name, ?frozen, "agent freezes");
            shared.freeze(Instant::now() + frozen);
            pause(&mut stop, frozen).await;
        }
    }
}

/// Sleeps for `duration`, or less if `stop` turns true.
pub async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// Sleeps a random pause of 0 to 2 x `mean`; true if `stop` turned true meanwhile.
pub async fn pace(stop: &mut watch::Receiver<bool>, rng: &mut StdRng, mean: Duration) -> bool {
    let mean_ms = mean.as_millis() as u64;
    pause(stop, Duration::from_millis(rng.gen_range(0..=2 * mean_ms))).await;
    *stop.borrow()
}

/// Milliseconds since the Unix epoch on this machine's clock, which is the nodes' clock: the
/// nodes run on this machine and stamp cluster time from their wall clocks.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A proto enum's name without its prefix: `TASK_STATE_SUCCEEDED` -> `SUCCEEDED`.
pub fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_string()
}

/// One read of a workload's final state from `node` with `consistency`; true when answered.
pub type FinalRead =
    for<'a> fn(&'a mut Actor, &'a ClientContext, u64, ReadConsistency) -> BoxFuture<'a, bool>;

/// The final reads of the agent workloads: a serializable read on every node at once (what each
/// replica holds), then one linearizable read, from the first node that answers.
pub async fn read_final_state(context: &ClientContext, read: FinalRead) {
    let readers = context.nodes.keys().map(|&node| async move {
        let mut actor = Actor::new(context, node);
        read(&mut actor, context, node, ReadConsistency::Serializable).await
    });
    futures::future::join_all(readers).await;
    let mut actor = Actor::new(context, *context.nodes.keys().next().expect("nodes"));
    for &node in context.nodes.keys() {
        if read(&mut actor, context, node, ReadConsistency::Linearizable).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use conclave_proto::v1::RegisterRequest;

    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_local_and_rejected_but_a_relayed_one_is_unknown() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let mut client = AgentsClient::new(channel::channel(addr, Some(Duration::from_secs(2))));
        let status = client
            .register(RegisterRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(is_connect_error(&status), "{status:?}");
        assert!(is_local(&status));
        assert!(matches!(classify(&status), Attempt::Rejected(_)));
        // The same words from a node that forwarded the write.
        let relayed = Status::unavailable(status.message().to_string());
        assert!(matches!(classify(&relayed), Attempt::Unknown(_)));
        let refused = Status::failed_precondition("lease lost: the lease expired");
        assert!(matches!(classify(&refused), Attempt::NotApplied(_)));
    }
}
