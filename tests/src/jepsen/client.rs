//! Logical clients: one outstanding operation each, every operation recorded with its outcome.
//!
//! The outcome rules (the checkers are only as sound as these):
//! - a response is `ok` (or, for a compare-and-swap whose compare failed, `fail`: the write did
//!   not happen);
//! - a write error is `fail` only when the write provably did not happen: INVALID_ARGUMENT, a
//!   status carrying `conclave-outcome: rejected` (the node did not propose it), or a connection
//!   that could not even be opened (nothing was sent). Everything else is `info`;
//! - a read error is `fail`: a read has no effect, so "did not happen" is always a valid
//!   explanation.
//!
//! A process whose operation ended `info` is retired, as in Jepsen: its client continues under a
//! new process id, a new connection and a new request-id client, since the old operation may
//! still be in flight.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::RequestId;
use conclave_proto::{OUTCOME_METADATA, OUTCOME_REJECTED};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::history::{Completion, Invocation, OpSpec, Recorder};
use crate::channel;
use crate::writer::RequestIds;

/// Pause before resending a write whose outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What every client of a workload shares.
#[derive(Clone, Debug)]
pub struct ClientContext {
    pub recorder: Arc<Recorder>,
    pub workload: &'static str,
    /// Every node's API address.
    pub nodes: BTreeMap<u64, SocketAddr>,
    /// Bound on one operation; past it the client gives up and records `info` (for writes).
    pub op_timeout: Duration,
    /// Mean pause between two operations of one client (uniform in 0..2x), so a run's history
    /// stays small enough to check.
    pub op_interval: Duration,
    /// Logical clients per node.
    pub clients_per_node: usize,
    /// Seed of this workload's generators; each client derives its own from it.
    pub seed: u64,
    /// Becomes true when the clients must stop after their current operation.
    pub stop: watch::Receiver<bool>,
}

impl ClientContext {
    /// The generator of client number `client`, derived from the run's seed and the workload.
    pub fn rng(&self, client: u64) -> StdRng {
        StdRng::seed_from_u64(mix(self.seed, &[name_hash(self.workload), client]))
    }

    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for a random pause around [`ClientContext::op_interval`]; returns early, with
    /// `true`, if the clients are told to stop meanwhile.
    pub async fn pace(&self, rng: &mut StdRng) -> bool {
        let interval_ms = self.op_interval.as_millis() as u64;
        let pause = Duration::from_millis(rng.gen_range(0..=2 * interval_ms));
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => self.stopped(),
            _ = stop.wait_for(|stop| *stop) => true,
        }
    }

    /// The `(node, client)` slots of this workload's clients: `clients_per_node` per node.
    pub fn slots(&self) -> Vec<u64> {
        self.nodes
            .keys()
            .flat_map(|node| std::iter::repeat_n(*node, self.clients_per_node))
            .collect()
    }
}

/// One logical client bound to one node: a connection, a request-id client, a process id.
#[derive(Debug)]
pub struct Client {
    pub node: u64,
    pub process: u64,
    addr: SocketAddr,
    op_timeout: Duration,
    kv: KvClient<Channel>,
    request_ids: RequestIds,
}

impl Client {
    pub fn new(context: &ClientContext, node: u64) -> Self {
        let addr = context.nodes[&node];
        Self {
            node,
            process: context.recorder.new_process(),
            addr,
            op_timeout: context.op_timeout,
            kv: KvClient::new(channel::channel(addr, Some(context.op_timeout))),
            request_ids: RequestIds::new(),
        }
    }

    /// The KV client of the current process's connection.
    pub fn kv(&self) -> KvClient<Channel> {
        self.kv.clone()
    }

    /// A fresh request id for a new write.
    pub fn next_request_id(&mut self) -> Option<RequestId> {
        Some(self.request_ids.next_id())
    }

    /// Records `spec`, runs `call`, records its completion and returns it. After `info` the
    /// process is retired and the client continues as a new process on a new connection.
    pub async fn run<F, Fut>(
        &mut self,
        context: &ClientContext,
        spec: OpSpec,
        call: F,
    ) -> Completion
    where
        F: FnOnce(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Completion>,
    {
        let invocation = self.invoke(context, spec);
        // The channel's own timeout ends the call; this one only guards a hung connect.
        let completion =
            match tokio::time::timeout(self.op_timeout + Duration::from_secs(1), call(self.kv()))
                .await
            {
                Ok(completion) => completion,
                Err(_) => Completion::Info(format!("no answer within {:?}", self.op_timeout)),
            };
        self.complete(context, &invocation, &completion);
        completion
    }

    /// Like [`Client::run`] for a write, but an attempt with an unknown outcome is resent with
    /// the SAME request (same request id) to the next nodes, up to `attempts` sends, all recorded
    /// as one operation: the cluster promises that a request id applies at most once, so the
    /// operation still takes effect once, somewhere between its invocation and its completion.
    /// A double application is what the checkers then catch (a value coming back, a watch event
    /// twice). Only when every attempt was provably not proposed is the operation `fail`.
    pub async fn run_retrying<F, Fut>(
        &mut self,
        context: &ClientContext,
        spec: OpSpec,
        attempts: usize,
        call: F,
    ) -> Completion
    where
        F: Fn(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let invocation = self.invoke(context, spec);
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let first = nodes
            .iter()
            .position(|node| *node == self.node)
            .unwrap_or(0);
        let mut maybe_applied = false;
        let mut errors = Vec::new();
        let mut completion = None;
        for attempt in 0..attempts.max(1) {
            let kv = if attempt == 0 {
                self.kv()
            } else {
                tokio::time::sleep(RETRY_PAUSE).await;
                let node = nodes[(first + attempt) % nodes.len()];
                KvClient::new(channel::channel(
                    context.nodes[&node],
                    Some(self.op_timeout),
                ))
            };
            let result = tokio::time::timeout(self.op_timeout + Duration::from_secs(1), call(kv))
                .await
                .unwrap_or_else(|_| Attempt::Unknown("no answer".to_string()));
            completion = settle(result, &mut maybe_applied, &mut errors);
            if completion.is_some() {
                break;
            }
        }
        let completion = completion.unwrap_or_else(|| Completion::Info(errors.join(" | then ")));
        self.complete(context, &invocation, &completion);
        completion
    }

    /// Records an invocation by this client's process.
    pub fn invoke(&self, context: &ClientContext, spec: OpSpec) -> Invocation {
        context
            .recorder
            .invoke(context.workload, self.process, Some(self.node), spec)
    }

    /// Records a completion, retiring the process after `info`.
    pub fn complete(
        &mut self,
        context: &ClientContext,
        invocation: &Invocation,
        completion: &Completion,
    ) {
        context.recorder.complete(invocation, completion);
        if matches!(completion, Completion::Info(_)) {
            self.retire(context);
        }
    }

    /// Continues as a new process on a new connection with a new request-id client.
    pub fn retire(&mut self, context: &ClientContext) {
        self.process = context.recorder.new_process();
        self.kv = KvClient::new(channel::channel(self.addr, Some(self.op_timeout)));
        self.request_ids = RequestIds::new();
    }
}

/// What one attempt of a write learned (see [`Client::run_retrying`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// Applied, with this result (for a retry: the result of the request id's one application).
    Ok(serde_json::Value),
    /// The request id's one application was "no change" (a compare that did not hold): whichever
    /// attempt reached the log first decided it, so the write did not happen.
    NotApplied(String),
    /// This attempt was provably not proposed; an earlier attempt may still apply.
    Rejected(String),
    /// Unknown.
    Unknown(String),
}

impl Attempt {
    /// Classifies a failed call (see [`write_error`]).
    pub fn from_status(status: &Status) -> Self {
        match write_error(status) {
            Completion::Fail(text) => Attempt::Rejected(text),
            Completion::Info(text) => Attempt::Unknown(text),
            Completion::Ok(_) => unreachable!("write_error never answers ok"),
        }
    }
}

/// What one attempt means for its operation: the completion, or `None` to send again. A rejection
/// proves nothing once an earlier attempt may have been applied.
fn settle(
    attempt: Attempt,
    maybe_applied: &mut bool,
    errors: &mut Vec<String>,
) -> Option<Completion> {
    match attempt {
        Attempt::Ok(value) => Some(Completion::Ok(value)),
        Attempt::NotApplied(text) => Some(Completion::Fail(text)),
        Attempt::Rejected(text) if !*maybe_applied => Some(Completion::Fail(text)),
        Attempt::Rejected(text) => {
            errors.push(text);
            None
        }
        Attempt::Unknown(text) => {
            *maybe_applied = true;
            errors.push(text);
            None
        }
    }
}

/// The completion of a write that failed with `status` (see the module comment).
pub fn write_error(status: &Status) -> Completion {
    let text = describe(status);
    if status.code() == Code::InvalidArgument || is_rejected(status) || is_connect_error(status) {
        Completion::Fail(text)
    } else {
        Completion::Info(text)
    }
}

/// The completion of a read that failed with `status`: a read has no effect.
pub fn read_error(status: &Status) -> Completion {
    Completion::Fail(describe(status))
}

/// True when the node marked the failure "provably not proposed".
pub fn is_rejected(status: &Status) -> bool {
    status
        .metadata()
        .get(OUTCOME_METADATA)
        .and_then(|value| value.to_str().ok())
        == Some(OUTCOME_REJECTED)
}

/// True when the call failed opening its connection, so not a byte of the request was sent.
/// tonic reports that as UNAVAILABLE with the transport's connect error as its message.
///
/// Only a status this process's client made counts (tonic keeps the transport error as its
/// source): a node that fails to forward a write to an unreachable leader relays the same words,
/// and it may have proposed the write itself first, so from a node they prove nothing.
pub fn is_connect_error(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status.message().contains("tcp connect error")
        && std::error::Error::source(status).is_some()
}

/// A status in one line: code and message.
pub fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if is_rejected(status) {
        text.push_str(" [rejected]");
    }
    text
}

/// A seed derived from `seed` and `parts`: splitmix64 over them, so that nearby seeds and parts
/// give unrelated generators.
pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut state = seed;
    for part in parts {
        state = splitmix64(state ^ splitmix64(*part));
    }
    splitmix64(state)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable hash of a name (FNV-1a), for deriving seeds.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn write_errors_are_fail_only_when_provably_not_applied() {
        let mut rejected = Status::unavailable("no leader");
        rejected.metadata_mut().insert(
            OUTCOME_METADATA,
            MetadataValue::from_static(OUTCOME_REJECTED),
        );
        let cases = [
            (Status::invalid_argument("key: too long"), true),
            (rejected, true),
            // The words alone, as a node relays them after failing to forward: unknown.
            (Status::unavailable("tcp connect error"), false),
            (Status::unavailable("no leader"), false),
            (Status::deadline_exceeded("not committed in time"), false),
            (Status::cancelled("Timeout expired"), false),
            (Status::internal("fatal"), false),
            (Status::unknown("transport error"), false),
        ];
        for (status, fail) in cases {
            let completion = write_error(&status);
            assert_eq!(
                matches!(completion, Completion::Fail(_)),
                fail,
                "{status:?} -> {completion:?}"
            );
        }
        assert!(matches!(
            read_error(&Status::internal("x")),
            Completion::Fail(_)
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let mut kv = KvClient::new(channel::channel(addr, Some(Duration::from_secs(2))));
        let status = kv
            .get(conclave_proto::v1::GetRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(is_connect_error(&status), "{status:?}");
        assert!(matches!(write_error(&status), Completion::Fail(_)));
    }

    #[test]
    fn retries_are_fail_only_when_no_attempt_may_have_applied() {
        let settle_all = |attempts: Vec<Attempt>| {
            let (mut maybe_applied, mut errors) = (false, Vec::new());
            attempts
                .into_iter()
                .find_map(|attempt| settle(attempt, &mut maybe_applied, &mut errors))
                .unwrap_or(Completion::Info(errors.join(" | ")))
        };
        let unknown = || Attempt::Unknown("deadline".into());
        let rejected = || Attempt::Rejected("no leader [rejected]".into());
        assert!(matches!(settle_all(vec![rejected()]), Completion::Fail(_)));
        assert!(matches!(
            settle_all(vec![unknown(), rejected(), rejected()]),
            Completion::Info(_)
        ));
        assert!(matches!(
            settle_all(vec![unknown(), Attempt::NotApplied("compare".into())]),
            Completion::Fail(_)
        ));
        assert_eq!(
            settle_all(vec![
                unknown(),
                rejected(),
                Attempt::Ok(serde_json::json!(1))
            ]),
            Completion::Ok(serde_json::json!(1))
        );
    }

    #[test]
    fn derived_seeds_differ_and_replay() {
        assert_eq!(mix(7, &[1, 2]), mix(7, &[1, 2]));
        assert_ne!(mix(7, &[1, 2]), mix(7, &[2, 1]));
        assert_ne!(mix(7, &[1]), mix(8, &[1]));
        assert_ne!(name_hash("set"), name_hash("register"));
    }
}
