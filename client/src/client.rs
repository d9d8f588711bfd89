//! The `Client` handle: endpoints, leader tracking, and the retry loop every unary call goes through.
//!
//! Routing rules: writes, linearizable reads and membership changes go to the last known leader
//! (learned from `conclave-leader` hints and from a node's status); serializable reads go to the
//! current endpoint of the rotation, which starts at the first endpoint and advances past a node
//! whenever it fails at the transport level.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::v1::cluster_client::ClusterClient;
use conclave_proto::v1::{ReadConsistency, StatusRequest};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::endpoint::{normalize_endpoint, ChannelSettings, Node};
use crate::error::{
    classify, describe, leader_hint, lease_lost, lock_lost, node_removed, op_index, Error,
    LeaderHint, Result, Verdict,
};
use crate::request_id::{PendingWrite, RequestIds};

/// Largest response the client decodes. Responses are bounded by the server's limits (a list page
/// holds at most 1000 keys); this only keeps a broken peer from making the client allocate
/// without bound.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How long the client waits for a node's status when it asks who leads.
const LEADER_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a call goes on while every node it knows refuses the connection (nothing listens
/// there): then it fails as "not reachable" instead of retrying for its whole deadline
/// (etcdctl's dial timeout). A node that answers, or does not answer in time, keeps the full
/// deadline: an answer may still come.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Timeouts and connection settings of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time allowed to open a TCP connection to one endpoint.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt of a unary call (membership changes get the whole deadline,
    /// since adding a learner waits for it to catch up).
    pub request_timeout: Duration,
    /// Time allowed for one call including all its retries; also how long a watch keeps trying to
    /// reconnect before it gives up.
    pub deadline: Duration,
    /// HTTP/2 connections opened to each endpoint; requests are spread over them round-robin.
    /// More than one helps only with many concurrent requests (benchmarks).
    pub channels_per_endpoint: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(10),
            channels_per_endpoint: 1,
        }
    }
}

/// A handle to a Conclave cluster. Cheap to clone; clones share connections, the leader they
/// know of and the request id space.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub options: ClientOptions,
    pub ids: Arc<RequestIds>,
    routing: Mutex<Routing>,
}

/// Which nodes the client knows, which one it believes leads, and where the rotation stands.
#[derive(Debug)]
struct Routing {
    /// The rotation: the configured endpoints, then every leader address learned from hints.
    rotation: Vec<Arc<Node>>,
    cursor: usize,
    leader: Option<Leader>,
    /// Every node the client has a channel to, by normalised address, including addresses outside
    /// the rotation that only status calls reached.
    nodes: HashMap<String, Arc<Node>>,
    settings: ChannelSettings,
}

#[derive(Debug, Clone)]
struct Leader {
    node_id: u64,
    node: Arc<Node>,
}

/// What kind of call the retry loop is running; it decides routing and what a failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Retried freely until the deadline.
    Read(ReadConsistency),
    /// Carries a request id: retried with the same id unless the server refused it.
    Write,
    /// No request id: retried only while the change provably was not proposed.
    Membership,
}

impl CallKind {
    fn wants_leader(self) -> bool {
        !matches!(self, CallKind::Read(ReadConsistency::Serializable))
    }
}

/// Adjustments of one call's timeouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallTimes {
    /// The server may legitimately hold the call this long (a WaitTask): each attempt, and the
    /// deadline of the whole call, get that much more time.
    pub server_wait: Duration,
    /// Give up on one attempt sooner than the client's request timeout, and try again (to another
    /// node if this one does not answer): for calls whose answer is worthless when late, such as
    /// a lease extension during a leader change.
    pub attempt_limit: Option<Duration>,
}

/// Implemented by responses that name the node that served them.
pub(crate) trait ServedBy {
    /// The serving node's id, 0 when the response does not say.
    fn served_by(&self) -> u64;
}

/// Implements [`ServedBy`] for responses with an optional `header: ResponseHeader`.
macro_rules! served_by_header {
    ($($response:ty),* $(,)?) => {
        $(impl $crate::client::ServedBy for $response {
            fn served_by(&self) -> u64 {
                self.header.map_or(0, |header| header.node_id)
            }
        })*
    };
}
pub(crate) use served_by_header;

impl Client {
    /// A client for the cluster reachable at `endpoints` (`host:port`, with or without `http://`),
    /// with default [`ClientOptions`]. Connects lazily: nothing is sent until the first call, so
    /// this only fails on malformed or missing endpoints.
    pub fn connect<I>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::connect_with(endpoints, ClientOptions::default())
    }

    /// Like [`Client::connect`], with explicit options.
    pub fn connect_with<I>(endpoints: I, options: ClientOptions) -> Result<Client>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let settings = ChannelSettings {
            connect_timeout: options.connect_timeout,
            channels_per_endpoint: options.channels_per_endpoint,
        };
        let mut routing = Routing {
            rotation: Vec::new(),
            cursor: 0,
            leader: None,
            nodes: HashMap::new(),
            settings,
        };
        for endpoint in endpoints {
            let node = routing.node(endpoint.as_ref())?;
            if !routing
                .rotation
                .iter()
                .any(|known| Arc::ptr_eq(known, &node))
            {
                routing.rotation.push(node);
            }
        }
        if routing.rotation.is_empty() {
            return Err(Error::invalid_input("no endpoints given"));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                options,
                ids: RequestIds::new(),
                routing: Mutex::new(routing),
            }),
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> ClientOptions {
        self.inner.options
    }

    /// The random id that, with a serial, identifies each of this client's writes.
    pub fn client_id(&self) -> u64 {
        self.inner.ids.client_id()
    }

    /// The endpoints in the rotation, normalised: the configured ones, then leaders learned from
    /// hints.
    pub fn endpoints(&self) -> Vec<String> {
        let routing = self.routing();
        routing
            .rotation
            .iter()
            .map(|node| node.address.clone())
            .collect()
    }

    /// The leader this client currently believes in, if any.
    pub fn leader(&self) -> Option<LeaderHint> {
        let routing = self.routing();
        routing.leader.as_ref().map(|leader| LeaderHint {
            node_id: leader.node_id,
            api_addr: leader.node.address.clone(),
        })
    }

    /// Asks the nodes who leads, one endpoint after another, until one names a leader or the
    /// deadline passes. Calls find the leader by themselves; this only makes the first write of a
    /// benchmark go straight to it.
    pub async fn find_leader(&self) -> Result<LeaderHint> {
        let deadline = Instant::now() + self.inner.options.deadline;
        let mut backoff = Backoff::new();
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable {
                    message: format!(
                        "no node named a leader within {:?}",
                        self.inner.options.deadline
                    ),
                });
            }
            let node = self.cursor_node();
            if !self.probe_leader(&node, remaining).await {
                self.node_failed(&node);
                backoff.wait(deadline).await;
            }
        }
    }

    /// Starts a write: the request id its attempts share.
    pub(crate) fn begin_write(&self) -> PendingWrite {
        self.inner.ids.begin()
    }

    /// Runs one unary call with routing and retries. `attempt` sends the request once on the
    /// channel it is given; it is called again for each retry and must resend the same request
    /// (for writes, with the same request id).
    pub(crate) async fn call<Response, Attempt, Fut>(
        &self,
        kind: CallKind,
        attempt: Attempt,
    ) -> Result<Response>
    where
        Response: ServedBy,
        Attempt: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Response>, Status>>,
    {
        self.call_with(kind, CallTimes::default(), attempt).await
    }

    /// Like [`Client::call`], with the attempt timeout and deadline adjusted by `times`.
    pub(crate) async fn call_with<Response, Attempt, Fut>(
        &self,
        kind: CallKind,
        times: CallTimes,
        mut attempt: Attempt,
    ) -> Result<Response>
    where
        Response: ServedBy,
        Attempt: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Response>, Status>>,
    {
        let mut options = self.inner.options;
        options.deadline += times.server_wait;
        options.request_timeout += times.server_wait;
        if let Some(limit) = times.attempt_limit {
            options.request_timeout = options.request_timeout.min(limit);
        }
        let deadline = Instant::now() + options.deadline;
        let mut backoff = Backoff::new();
        // Set once an attempt of a write may have been proposed: from then on, no later failure
        // can prove the write was not applied.
        let mut maybe_applied = false;
        let mut last_failure = String::from("no attempt was made");
        // Nodes that answered FAILED_PRECONDITION (removed from the cluster) during this call.
        let mut removed_nodes: Vec<String> = Vec::new();
        let mut refusals = Refusals::new(self.routing().rotation.len());
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(give_up(
                    kind,
                    maybe_applied,
                    &last_failure,
                    options.deadline,
                ));
            }
            let node = self.route(kind, remaining).await;
            let attempt_timeout = match kind {
                CallKind::Membership => remaining,
                _ => options.request_timeout.min(remaining),
            };
            let status = match tokio::time::timeout(attempt_timeout, attempt(node.channel())).await
            {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    self.observe_success(kind, &node, response.served_by());
                    return Ok(response);
                }
                Ok(Err(status)) => {
                    if refusals.all_refused(&node.address, &status) {
                        return Err(unreachable(kind, maybe_applied, &refusals));
                    }
                    status
                }
                Err(_elapsed) => {
                    refusals.clear();
                    last_failure =
                        format!("{}: no answer within {attempt_timeout:?}", node.address);
                    tracing::debug!(kind = ?kind, failure = %last_failure, "attempt timed out");
                    match kind {
                        CallKind::Write => maybe_applied = true,
                        CallKind::Membership => {
                            return Err(Error::Indeterminate {
                                message: last_failure,
                            })
                        }
                        CallKind::Read(_) => {}
                    }
                    self.node_failed(&node);
                    backoff.wait(deadline).await;
                    continue;
                }
            };
            last_failure = format!("{}: {}", node.address, describe(&status));
            tracing::debug!(kind = ?kind, failure = %last_failure, "attempt failed");
            match classify(&status) {
                Verdict::Refused => {
                    // A stale fencing token is definite whatever happened before: a retry carries
                    // the same request id, so had an earlier attempt applied, the server would
                    // have answered with that attempt's result instead.
                    // A transaction's refused op is marked with its index
                    // (`conclave-op-index`), around the op's own error.
                    let definite = |error: Error| match op_index(&status) {
                        Some(index) if !error.is_indeterminate() => Error::OpRefused {
                            index,
                            error: Box::new(error),
                        },
                        _ => error,
                    };
                    if lease_lost(&status) {
                        return Err(definite(Error::LeaseLost {
                            message: status.message().to_string(),
                        }));
                    }
                    // The same holds for a stale fence or lock token (`lock-lost`).
                    if lock_lost(&status) {
                        return Err(definite(Error::LockLost {
                            message: status.message().to_string(),
                        }));
                    }
                    if node_removed(&status) && kind != CallKind::Membership {
                        // This node left the cluster; another node may still serve the call.
                        removed_nodes.push(node.address.clone());
                        self.node_failed(&node);
                        if self.has_node_outside(&removed_nodes) {
                            continue;
                        }
                    }
                    return Err(definite(refused(&status, maybe_applied, last_failure)));
                }
                Verdict::NotApplied => {}
                Verdict::Unknown => match kind {
                    CallKind::Write => maybe_applied = true,
                    CallKind::Membership => {
                        return Err(Error::Indeterminate {
                            message: last_failure,
                        })
                    }
                    CallKind::Read(_) => {}
                },
            }
            let moved = match leader_hint(&status) {
                Some(hint) if kind.wants_leader() => self.follow_hint(&hint, &node),
                _ if should_move_on(&status) => {
                    self.node_failed(&node);
                    false
                }
                // The node is there and may still lead (a commit that timed out, say): retry it.
                _ => false,
            };
            if !moved {
                backoff.wait(deadline).await;
            }
        }
    }

    /// The node a call of this kind should go to now.
    async fn route(&self, kind: CallKind, remaining: Duration) -> Arc<Node> {
        if !kind.wants_leader() {
            return self.cursor_node();
        }
        if let Some(leader) = self.routing().leader.as_ref() {
            return Arc::clone(&leader.node);
        }
        let node = self.cursor_node();
        // Ask who leads, so the call goes straight to the leader rather than being forwarded, and
        // later calls know where to go. If the node cannot say, the call goes to it anyway.
        self.probe_leader(&node, remaining).await;
        match self.routing().leader.as_ref() {
            Some(leader) => Arc::clone(&leader.node),
            None => node,
        }
    }

    /// Reads `node`'s status and adopts the leader it names. Returns false when the node did not
    /// answer at all.
    async fn probe_leader(&self, node: &Arc<Node>, remaining: Duration) -> bool {
        let timeout = LEADER_PROBE_TIMEOUT.min(remaining);
        let mut cluster = ClusterClient::new(node.channel());
        let status = match tokio::time::timeout(timeout, cluster.status(StatusRequest {})).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                tracing::debug!(node = %node.address, status = %describe(&status), "leader probe failed");
                // A status from the server still means the node is there.
                return !crate::error::never_connected(&status)
                    && status.code() != Code::Unavailable;
            }
            Err(_) => return false,
        };
        if let (Some(node_id), Some(api_addr)) = (status.leader_id, status.leader_api_addr) {
            if node_id != 0 && !api_addr.is_empty() {
                self.set_leader(&LeaderHint { node_id, api_addr });
            }
        }
        true
    }

    /// True when `node` answers a status request within the probe timeout and is neither shut
    /// down nor outside a cluster.
    pub(crate) async fn node_serves(&self, node: &Arc<Node>) -> bool {
        let mut cluster = ClusterClient::new(node.channel());
        match tokio::time::timeout(LEADER_PROBE_TIMEOUT, cluster.status(StatusRequest {})).await {
            Ok(Ok(response)) => {
                let status = response.into_inner();
                status.initialized && status.role != conclave_proto::v1::Role::Shutdown as i32
            }
            // A node that does not implement status is not known to be broken.
            Ok(Err(status)) => status.code() == Code::Unimplemented,
            Err(_) => false,
        }
    }

    /// True when `node` serves (as [`Client::node_serves`]) and knows a leader, so what it is sent
    /// (an agent's heartbeats) can reach the leader. A node cut off from the majority loses its
    /// leader once its election timeout passes.
    pub(crate) async fn node_serves_with_leader(&self, node: &Arc<Node>) -> bool {
        let mut cluster = ClusterClient::new(node.channel());
        match tokio::time::timeout(LEADER_PROBE_TIMEOUT, cluster.status(StatusRequest {})).await {
            Ok(Ok(response)) => {
                let status = response.into_inner();
                status.initialized
                    && status.role != conclave_proto::v1::Role::Shutdown as i32
                    && status.leader_id.is_some_and(|id| id != 0)
            }
            Ok(Err(status)) => status.code() == Code::Unimplemented,
            Err(_) => false,
        }
    }

    /// Adopts a leader hint. Returns true when the leader is now a different node than `from`, so
    /// the next attempt can go at once.
    fn follow_hint(&self, hint: &LeaderHint, from: &Arc<Node>) -> bool {
        match self.set_leader(hint) {
            Some(leader) => !Arc::ptr_eq(&leader, from),
            None => false,
        }
    }

    fn set_leader(&self, hint: &LeaderHint) -> Option<Arc<Node>> {
        let mut routing = self.routing();
        let node = match routing.node(&hint.api_addr) {
            Ok(node) => node,
            Err(error) => {
                tracing::warn!(hint = ?hint, %error, "ignoring a leader hint with a bad address");
                return None;
            }
        };
        if !routing
            .rotation
            .iter()
            .any(|known| Arc::ptr_eq(known, &node))
        {
            routing.rotation.push(Arc::clone(&node));
        }
        routing.leader = Some(Leader {
            node_id: hint.node_id,
            node: Arc::clone(&node),
        });
        Some(node)
    }

    /// Forgets the leader, so the next call asks a node who leads now.
    pub(crate) fn forget_leader(&self) {
        self.routing().leader = None;
    }

    /// Records that `node` failed: it is no longer believed to lead, and the rotation moves past it.
    pub(crate) fn node_failed(&self, node: &Arc<Node>) {
        let mut routing = self.routing();
        if routing
            .leader
            .as_ref()
            .is_some_and(|leader| Arc::ptr_eq(&leader.node, node))
        {
            routing.leader = None;
        }
        let cursor = routing.cursor;
        if Arc::ptr_eq(&routing.rotation[cursor], node) {
            routing.cursor = (cursor + 1) % routing.rotation.len();
        }
    }

    fn observe_success(&self, kind: CallKind, node: &Arc<Node>, served_by: u64) {
        if !kind.wants_leader() || served_by == 0 {
            return;
        }
        let mut routing = self.routing();
        let forwarded = routing
            .leader
            .as_ref()
            .is_some_and(|leader| Arc::ptr_eq(&leader.node, node) && leader.node_id != served_by);
        if forwarded {
            // The node we took for the leader forwarded the call: leadership moved. The next call
            // asks again instead of paying a forwarding hop every time.
            routing.leader = None;
        }
    }

    /// The current node of the rotation.
    pub(crate) fn cursor_node(&self) -> Arc<Node> {
        let routing = self.routing();
        Arc::clone(&routing.rotation[routing.cursor])
    }

    /// A node for `address`, reusing its channels if the client already has some. Does not add it
    /// to the rotation.
    pub(crate) fn node(&self, address: &str) -> Result<Arc<Node>> {
        self.routing().node(address)
    }

    fn has_node_outside(&self, excluded: &[String]) -> bool {
        self.routing()
            .rotation
            .iter()
            .any(|node| !excluded.contains(&node.address))
    }

    fn routing(&self) -> std::sync::MutexGuard<'_, Routing> {
        self.inner.routing.lock().expect("routing state poisoned")
    }
}

impl Routing {
    fn node(&mut self, address: &str) -> Result<Arc<Node>> {
        let normalized = normalize_endpoint(address)?;
        if let Some(node) = self.nodes.get(&normalized) {
            return Ok(Arc::clone(node));
        }
        let node = Arc::new(Node::new(&normalized, self.settings)?);
        self.nodes.insert(normalized, Arc::clone(&node));
        Ok(node)
    }
}

/// True when a failed attempt says its node cannot serve the call now: the transport failed
/// (tonic keeps the cause as the status' source; a status sent by a server has none), or the node
/// answered UNAVAILABLE without naming a leader.
fn should_move_on(status: &Status) -> bool {
    std::error::Error::source(status).is_some() || status.code() == Code::Unavailable
}

/// The error for a call the server refused. After an attempt whose outcome is unknown, a refusal
/// of a later attempt does not prove the earlier one was not applied, except INVALID_ARGUMENT,
/// which depends only on the request and so would have refused the earlier attempt too.
fn refused(status: &Status, maybe_applied: bool, last_failure: String) -> Error {
    if maybe_applied && status.code() != Code::InvalidArgument {
        return Error::Indeterminate {
            message: format!("{last_failure} (an earlier attempt may have been applied)"),
        };
    }
    Error::Rejected {
        code: status.code(),
        message: last_failure,
    }
}

/// The error for a call that ran out of time.
/// The nodes that refused the connection during one call, since the last one that did not.
struct Refusals {
    started: Instant,
    known: usize,
    refused: BTreeSet<String>,
}

impl Refusals {
    fn new(known: usize) -> Refusals {
        Refusals {
            started: Instant::now(),
            known,
            refused: BTreeSet::new(),
        }
    }

    /// Records an attempt's failure; true when every known node has refused the connection and
    /// UNREACHABLE_AFTER has passed.
    fn all_refused(&mut self, address: &str, status: &Status) -> bool {
        if !crate::error::never_connected(status) {
            self.clear();
            return false;
        }
        self.refused.insert(address.to_string());
        self.refused.len() >= self.known && self.started.elapsed() >= UNREACHABLE_AFTER
    }

    fn clear(&mut self) {
        self.refused.clear();
    }
}

/// Every node refused the connection: the cluster is not running there, or not reachable.
fn unreachable(kind: CallKind, maybe_applied: bool, refusals: &Refusals) -> Error {
    let nodes: Vec<&str> = refusals.refused.iter().map(String::as_str).collect();
    let message = format!(
        "the cluster is not reachable: every node refused the connection for {:.1}s ({})",
        refusals.started.elapsed().as_secs_f64(),
        nodes.join(", ")
    );
    give_up_with(kind, maybe_applied, message)
}

fn give_up(kind: CallKind, maybe_applied: bool, last_failure: &str, deadline: Duration) -> Error {
    let message = format!("no definite answer within {deadline:?}; last failure: {last_failure}");
    give_up_with(kind, maybe_applied, message)
}

fn give_up_with(kind: CallKind, maybe_applied: bool, message: String) -> Error {
    match kind {
        CallKind::Read(_) => Error::Unavailable { message },
        CallKind::Write | CallKind::Membership if maybe_applied => Error::Indeterminate { message },
        CallKind::Write | CallKind::Membership => Error::Rejected {
            code: Code::Unavailable,
            message,
        },
    }
}

/// Exponential backoff with jitter between attempts, never sleeping past a deadline.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    pub async fn wait(&mut self, deadline: Instant) {
        let jitter: f64 = rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..1.0);
        let sleep = self.next.mul_f64(jitter);
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(sleep.min(remaining)).await;
        self.next = (self.next * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_normalises_and_deduplicates_endpoints() {
        let client = Client::connect(["127.0.0.1:7001", "http://127.0.0.1:7001/", "h:2"])
            .expect("valid endpoints");
        assert_eq!(client.endpoints(), vec!["127.0.0.1:7001", "h:2"]);
        assert!(client.leader().is_none());
        assert!(matches!(
            Client::connect(Vec::<String>::new()),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            Client::connect(["127.0.0.1"]),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn hints_add_the_leader_to_the_rotation() {
        let client = Client::connect(["127.0.0.1:7001"]).expect("valid endpoint");
        let first = client.cursor_node();
        let hint = LeaderHint {
            node_id: 4,
            api_addr: "127.0.0.1:7004".to_string(),
        };
        assert!(client.follow_hint(&hint, &first));
        assert_eq!(client.leader(), Some(hint.clone()));
        assert_eq!(client.endpoints(), vec!["127.0.0.1:7001", "127.0.0.1:7004"]);

        // The leader itself naming itself is not a move.
        let leader = client.node("127.0.0.1:7004").expect("valid");
        assert!(!client.follow_hint(&hint, &leader));

        // A failed leader is forgotten; the rotation only moves when its current node fails.
        client.node_failed(&leader);
        assert_eq!(client.leader(), None);
        assert_eq!(client.cursor_node().address, "127.0.0.1:7001");
        client.node_failed(&first);
        assert_eq!(client.cursor_node().address, "127.0.0.1:7004");
    }

    #[test]
    fn a_forwarding_leader_is_forgotten() {
        let client = Client::connect(["127.0.0.1:7001"]).expect("valid endpoint");
        let first = client.cursor_node();
        client.set_leader(&LeaderHint {
            node_id: 1,
            api_addr: "127.0.0.1:7001".to_string(),
        });
        client.observe_success(CallKind::Write, &first, 1);
        assert!(client.leader().is_some());
        client.observe_success(CallKind::Write, &first, 2);
        assert!(client.leader().is_none());
    }

    #[test]
    fn only_transport_failures_and_leaderless_nodes_are_left() {
        assert!(should_move_on(&Status::unavailable("no leader")));
        assert!(!should_move_on(&Status::deadline_exceeded(
            "commit timed out"
        )));
        assert!(!should_move_on(&Status::internal("bug")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(should_move_on(&Status::from_error(Box::new(io))));
    }

    #[test]
    fn running_out_of_time_keeps_applied_and_not_applied_apart() {
        let deadline = Duration::from_secs(1);
        assert!(matches!(
            give_up(CallKind::Write, false, "x", deadline),
            Error::Rejected {
                code: Code::Unavailable,
                ..
            }
        ));
        assert!(matches!(
            give_up(CallKind::Write, true, "x", deadline),
            Error::Indeterminate { .. }
        ));
        assert!(matches!(
            give_up(
                CallKind::Read(ReadConsistency::Linearizable),
                true,
                "x",
                deadline
            ),
            Error::Unavailable { .. }
        ));
        let quota = Status::resource_exhausted("full");
        assert!(matches!(
            refused(&quota, false, String::new()),
            Error::Rejected {
                code: Code::ResourceExhausted,
                ..
            }
        ));
        assert!(matches!(
            refused(&quota, true, String::new()),
            Error::Indeterminate { .. }
        ));
        let invalid = Status::invalid_argument("key too long");
        assert!(matches!(
            refused(&invalid, true, String::new()),
            Error::Rejected {
                code: Code::InvalidArgument,
                ..
            }
        ));
    }

    /// A write to a port nobody listens on never leaves the process, so it must end as Rejected,
    /// never Indeterminate.
    #[tokio::test]
    async fn refused_connections_reject_writes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let address = listener.local_addr().expect("bound").to_string();
        drop(listener);
        let options = ClientOptions {
            deadline: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        let client = Client::connect_with([address], options).expect("valid endpoint");
        let error = client.put("k", "v").await.expect_err("nobody listens");
        assert!(
            matches!(
                error,
                Error::Rejected {
                    code: Code::Unavailable,
                    ..
                }
            ),
            "{error:?}"
        );
        let error = client.get("k").await.expect_err("nobody listens");
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    }

    /// With every node refusing the connection, a call with the default 10 s deadline says the
    /// cluster is not reachable, naming every node, instead of "no definite answer" at its
    /// deadline; a write so refused was not applied.
    #[tokio::test]
    async fn a_cluster_nobody_listens_on_is_not_reachable() {
        let free = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("bound").to_string()
        };
        let (a, b) = (free(), free());
        let client = Client::connect([a.clone(), b.clone()]).expect("valid endpoints");
        let error = client.get("k").await.expect_err("nobody listens");
        let Error::Unavailable { message } = &error else {
            panic!("{error:?}")
        };
        assert!(
            message.starts_with("the cluster is not reachable"),
            "{message}"
        );
        assert!(message.contains(&a) && message.contains(&b), "{message}");
        let error = client.put("k", "v").await.expect_err("nobody listens");
        assert!(
            matches!(&error, Error::Rejected { code: Code::Unavailable, message }
                if message.starts_with("the cluster is not reachable")),
            "{error:?}"
        );
    }
}
