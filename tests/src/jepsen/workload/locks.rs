//! The locks workload: clients take a few fenced locks in turn, write to each lock's key under
//! the lock's fencing token, and give it back; now and then a holder sleeps past its TTL first, so
//! that it writes as a stale holder after the lock went to the next waiter. Holders are leases
//! (TTL 1-2 s, never kept alive) with a short lock-delay, so stale holders are frequent.
//!
//! Each client (a raw-API [`Actor`], every write resent with its request id while unknown):
//! pace, then
//! 1. `acquire` a random lock, waiting up to 0.5-2.5 s in its queue: `{"name", "ttl_ms",
//!    "wait_ms"}` -> `{"name", "token", "acquired", "expires_at_ms"}`;
//! 2. if acquired: with probability `stale_fraction` sleep past the TTL and the lock-delay (the
//!    write is then marked `stale`), else a moment; then a fenced `write` to `jepsen/locks/<name>`
//!    (`fenced.rs`: the value names the token, the write and the process);
//! 3. `release` it (`{"name", "token"}`), except now and then, leaving it to expire: refused as
//!    lock-lost (`fail`) once the grant is gone.
//!
//! After healing the end marker is written and every node replays the prefix from revision 1
//! (`fenced.rs`).
//!
//! The checker ([`check`], in `locks/check.rs`), one function per property:
//! - mutual exclusion through the fence: along each lock's replayed history the tokens of the
//!   applied writes never decrease (`tokens_never_decrease`): a write under a smaller token after
//!   a larger one is a stale holder that wrote;
//! - a write refused as lock-lost (or otherwise failed) is not in the history
//!   (`failed_writes_absent`); every acknowledged write is, at its revision
//!   (`acknowledged_writes_kept`); everything in it was written by a write invoked to that key
//!   with that token, once (`applied_writes_were_written`); every node replays the same history
//!   (`replays_agree`, `every_node_replays`, `end_marker_acknowledged`);
//! - tokens: no two acquires were answered the same token (`tokens_unique`), and an acquire of a
//!   lock invoked after another acquire of it was acknowledged has a larger token
//!   (`tokens_follow_real_time`).
//!
//! With `--unsafe-test-mode skip-fence` the nodes drop the fences, and the stale holders' writes
//! land after their successors': `tokens_never_decrease` must then fail
//! (`scenarios::unsafe_skip_fence_is_caught`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::locks_client::LocksClient;
use conclave_proto::v1::{AcquireRequest, FenceKind, Holder, LockKind, ReleaseLockRequest};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::Rng as _;
use serde_json::json;

use super::agents::Actor;
use super::fenced::{classify, FencedKeys};
use super::{CheckResult, Tasks, Workload};
use crate::jepsen::client::{Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

mod check;

pub use self::check::check;

pub const NAME: &str = "locks";
/// Every key of the workload starts with this.
pub const PREFIX: &str = "jepsen/locks/";
/// The end marker's key.
pub const END_KEY: &str = "jepsen/locks/~end";

#[derive(Clone, Debug)]
pub struct Options {
    /// Lock names the clients share.
    pub locks: usize,
    /// Lease TTL of each hold (ms, uniform).
    pub ttl_ms: (u64, u64),
    /// How long an acquire waits in the queue (ms, uniform); below the op timeout.
    pub wait_ms: (u64, u64),
    /// The locks' lock-delay after a lost holder.
    pub lock_delay_ms: u64,
    /// Fraction of holds that sleep past their TTL before writing.
    pub stale_fraction: f64,
    /// Fraction of holds left to expire instead of released.
    pub abandon_fraction: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            locks: 3,
            ttl_ms: (1_000, 2_000),
            wait_ms: (500, 2_500),
            lock_delay_ms: 200,
            stale_fraction: 0.15,
            abandon_fraction: 0.05,
        }
    }
}

pub struct LocksWorkload {
    options: Options,
    keys: Arc<FencedKeys>,
    clients: Tasks,
    context: Mutex<Option<ClientContext>>,
}

impl LocksWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            keys: Arc::new(FencedKeys::new(PREFIX, END_KEY)),
            clients: Tasks::default(),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        self.context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Workload for LocksWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self.context.lock().unwrap_or_else(PoisonError::into_inner) = Some(context.clone());
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let keys = Arc::clone(&self.keys);
            let options = self.options.clone();
            self.clients.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut actor = Actor::new(&context, node);
                while !context.pace(&mut rng).await {
                    hold(&mut actor, &context, &keys, &options, &mut rng).await;
                }
            }));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            // A hold may sleep past its TTL and then write with three sends.
            let bound = context.op_timeout * 2 + Duration::from_millis(self.options.ttl_ms.1);
            self.clients.drain(bound).await
        })
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let end = self.keys.write_end(context).await?;
            self.keys.replay_everywhere(context, end).await;
            Ok(())
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

/// One hold: acquire, maybe sleep past the TTL, write under the fence, release.
async fn hold(
    actor: &mut Actor,
    context: &ClientContext,
    keys: &FencedKeys,
    options: &Options,
    rng: &mut StdRng,
) {
    let name = format!("lock-{}", rng.gen_range(0..options.locks));
    let ttl_ms = rng.gen_range(options.ttl_ms.0..=options.ttl_ms.1);
    let wait_ms = rng.gen_range(options.wait_ms.0..=options.wait_ms.1);
    let Some(token) = acquire(actor, context, &name, ttl_ms, wait_ms, options).await else {
        return;
    };
    let stale = rng.gen_bool(options.stale_fraction) && !context.stopped();
    let pause = if stale {
        // Past the TTL (from the grant, before the answer) and the lock-delay, with room for the
        // next waiter to be granted and write first.
        ttl_ms + options.lock_delay_ms + rng.gen_range(500..=1_200)
    } else {
        rng.gen_range(0..=50)
    };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let written = keys
        .write(actor, context, (FenceKind::Lock, &name, token), stale)
        .await;
    if matches!(written, Completion::Info(_)) {
        // The process was retired: the new one does not hold the lock.
        return;
    }
    if rng.gen_bool(options.abandon_fraction) {
        return;
    }
    release(actor, context, &name, token).await;
}

/// Acquires `name`; the token when granted.
async fn acquire(
    actor: &mut Actor,
    context: &ClientContext,
    name: &str,
    ttl_ms: u64,
    wait_ms: u64,
    options: &Options,
) -> Option<u64> {
    let request = AcquireRequest {
        request_id: actor.next_request_id(),
        kind: LockKind::Lock as i32,
        name: name.to_string(),
        holder: Some(Holder {
            session_id: 0,
            ttl_ms,
            owner: format!("p{}", actor.process()),
        }),
        permits: 0,
        limit: 0,
        wait_ms,
        lock_delay_ms: Some(options.lock_delay_ms),
    };
    let spec = OpSpec::new(
        "acquire",
        Some(name.to_string()),
        json!({"name": name, "ttl_ms": ttl_ms, "wait_ms": wait_ms}),
    );
    let completion = actor
        .write(context, spec, |channel| {
            let request = request.clone();
            async move {
                match LocksClient::new(channel).acquire(request.clone()).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        Attempt::Ok(json!({
                            "name": request.name,
                            "token": response.token,
                            "acquired": response.acquired,
                            "expires_at_ms": response.expires_at_ms,
                        }))
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
    match completion {
        Completion::Ok(value) if value["acquired"] == json!(true) => value["token"].as_u64(),
        _ => None,
    }
}

/// Releases `token` of `name`: `fail` when refused as lock-lost (the grant had gone).
async fn release(actor: &mut Actor, context: &ClientContext, name: &str, token: u64) {
    let request = ReleaseLockRequest {
        request_id: actor.next_request_id(),
        kind: LockKind::Lock as i32,
        name: name.to_string(),
        token,
    };
    let spec = OpSpec::new(
        "release",
        Some(name.to_string()),
        json!({"name": name, "token": token}),
    );
    actor
        .write(context, spec, |channel| {
            let request = request.clone();
            async move {
                match LocksClient::new(channel).release(request).await {
                    Ok(_) => Attempt::Ok(json!({"name": name, "token": token})),
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
}
