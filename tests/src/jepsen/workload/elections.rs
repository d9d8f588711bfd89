//! The elections workload: candidates campaign in a few elections as lease holders with a short
//! TTL (leadership cannot be kept alive: it lasts one TTL), proclaim new values while leading,
//! write under their leadership's fencing token, now and then only after sleeping past the TTL
//! (a deposed leader that does not know it), and resign; observers stream every election
//! (Observe) from every node, and readers ask who leads (Leader, linearizable).
//!
//! Besides the candidates, one pair of clients plays scripted deposals on an election of their
//! own, [`DEPOSAL_ELECTION`], round after round ([`deposal`]): the first is elected with the
//! shortest TTL and then says nothing (a paused process), the second campaigns, is elected once
//! that term ran out, writes under its token and is acknowledged; only then does the deposed
//! leader write under its old token. The order of the two writes is the script's, not a race's:
//! every round is a stale write after a newer token's acknowledged write, which the fence must
//! refuse (`writes_after_a_newer_token` counts them). Without the fence (`--unsafe-test-mode
//! skip-fence`) each one lands behind its successor's and `tokens_never_decrease` fails
//! (`scenarios::unsafe_skip_fence_is_caught_by_elections`), however the run is timed.
//!
//! Recorded operations (f: invocation value -> ok value), besides the fenced `write`s, the end
//! marker and the replays of `fenced.rs` (keys `jepsen/elections/<name>`):
//! - `campaign`: `{"name", "owner", "value", "ttl_ms", "wait_ms"}` -> the same with `"token"` and
//!   `"elected"`. `owner` is `p<process>` (the holder's owner); `value` is `p<process>/<n>`,
//!   unique in the run, as is every proclaimed value;
//! - `proclaim`: `{"name", "owner", "token", "value"}` -> the same; `fail` when refused as
//!   lock-lost;
//! - `resign`: `{"name", "token"}` -> the same;
//! - `leader`: `{"name"}` -> `{"name", "leader": null | {"token", "owner", "value"}}`;
//! - `observe`: one stretch (at most [`CHECKPOINT`]) of one Observe stream of one observer (a
//!   process for the whole run: observing has no effect): `{"name", "stream"}` -> `{"events":
//!   [[sequence, kind, token, leader], ...]}` (plus `error` when the stream failed), `leader` as
//!   above, from the election the message carries (the node's state when it sent it). A new
//!   stream (after a failure, on the next node) gets the next `stream` number.
//!
//! The checker ([`check`], in `elections/check.rs`), one function per property:
//! - one leader per term: every sighting of a token (campaign answers, Leader reads, Observe
//!   messages) names the same holder (owner) and election (`one_owner_per_token`); a leader's
//!   value was published by that holder: its campaign value, or a proclaim under that very token
//!   that did not fail (`values_come_from_their_leader`);
//! - Observe streams never go back: within one stream the leader's token never decreases, granted
//!   tokens increase and event sequences increase (`observers_never_go_back`); a linearizable
//!   Leader read invoked after another one completed never names an older leader
//!   (`leader_reads_never_go_back`);
//! - tokens: unique (`tokens_unique`), and a campaign invoked after another one of the same
//!   election was acknowledged has a larger token (`tokens_follow_real_time`);
//! - the fenced writes of the leaders, as in the locks workload: tokens never decrease along each
//!   election's key (`tokens_never_decrease`), refused writes absent, acknowledged ones kept, every
//!   node replays the same history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::elections_client::ElectionsClient;
use conclave_proto::v1::{
    CampaignRequest, FenceKind, Grant, Holder, LeaderRequest, Lock, LockEvent, ObserveRequest,
    ProclaimRequest, ReadConsistency, ResignRequest,
};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::Rng as _;
use serde_json::{json, Value as Json};
use tokio::time::Instant;
use tonic::Code;

use super::agents::{short_name, Actor};
use super::fenced::{classify, FencedKeys};
use super::{CheckResult, Tasks, Workload};
use crate::channel;
use crate::jepsen::client::{describe, Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, Invocation, OpSpec};

mod check;

pub use self::check::check;

pub const NAME: &str = "elections";
pub const PREFIX: &str = "jepsen/elections/";
pub const END_KEY: &str = "jepsen/elections/~end";
/// Longest stretch of an Observe stream one `observe` operation covers.
pub const CHECKPOINT: Duration = Duration::from_secs(1);
/// The election of the scripted deposals; the candidates never campaign in it.
pub const DEPOSAL_ELECTION: &str = "deposal";
/// How much longer than the deposed term (and the lock-delay) the successor may wait to be
/// elected: room for the leader's ticker to expire the term, kept under the op timeout.
const SUCCESSOR_WAIT_SLACK_MS: u64 = 1_500;

#[derive(Clone, Debug)]
pub struct Options {
    pub elections: usize,
    /// Leadership TTL (ms, uniform): how long a term lasts unless resigned.
    pub ttl_ms: (u64, u64),
    /// How long a campaign waits to lead (ms, uniform); below the op timeout.
    pub wait_ms: (u64, u64),
    pub lock_delay_ms: u64,
    /// Proclaims per term (uniform, inclusive).
    pub proclaims: (u32, u32),
    /// Fraction of terms whose leader sleeps past its TTL before writing.
    pub stale_fraction: f64,
    /// A reader's mean pause is this many times the run's `op_interval`.
    pub read_pace: u32,
    /// Play scripted deposals on [`DEPOSAL_ELECTION`] ([`deposal`]) beside the candidates.
    pub deposals: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            elections: 2,
            ttl_ms: (1_500, 2_500),
            wait_ms: (500, 2_000),
            lock_delay_ms: 200,
            proclaims: (0, 2),
            stale_fraction: 0.15,
            read_pace: 5,
            deposals: true,
        }
    }
}

pub struct ElectionsWorkload {
    options: Options,
    keys: Arc<FencedKeys>,
    values: Arc<AtomicU64>,
    candidates: Tasks,
    observers: Tasks,
    context: Mutex<Option<ClientContext>>,
}

impl ElectionsWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            keys: Arc::new(FencedKeys::new(PREFIX, END_KEY)),
            values: Arc::new(AtomicU64::new(1)),
            candidates: Tasks::default(),
            observers: Tasks::default(),
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

fn election_name(number: usize) -> String {
    format!("election-{number}")
}

/// Every election observers stream and readers read: the candidates' and the deposals'.
fn observed_elections(options: &Options) -> Vec<String> {
    let mut names: Vec<String> = (0..options.elections).map(election_name).collect();
    if options.deposals {
        names.push(DEPOSAL_ELECTION.to_string());
    }
    names
}

impl Workload for ElectionsWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self.context.lock().unwrap_or_else(PoisonError::into_inner) = Some(context.clone());
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let keys = Arc::clone(&self.keys);
            let values = Arc::clone(&self.values);
            let options = self.options.clone();
            self.candidates.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut actor = Actor::new(&context, node);
                while !context.pace(&mut rng).await {
                    term(&mut actor, &context, &keys, &values, &options, &mut rng).await;
                }
            }));
        }
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        if self.options.deposals {
            let context = context.clone();
            let keys = Arc::clone(&self.keys);
            let values = Arc::clone(&self.values);
            let options = self.options.clone();
            // On two nodes, so that one's sends are forwarded (or not) independently of the other's.
            let (deposed_node, successor_node) = (nodes[0], nodes[1 % nodes.len()]);
            self.candidates.push(tokio::spawn(async move {
                let mut rng = context.rng(2000);
                let mut deposed = Actor::new(&context, deposed_node);
                let mut successor = Actor::new(&context, successor_node);
                while !context.pace(&mut rng).await {
                    let actors = (&mut deposed, &mut successor);
                    deposal(actors, &context, &keys, &values, &options).await;
                }
            }));
        }
        let observed = observed_elections(&self.options);
        for (position, &node) in nodes.iter().enumerate() {
            let mut order = nodes.clone();
            order.rotate_left(position);
            for name in &observed {
                let context = context.clone();
                let order = order.clone();
                self.observers
                    .push(tokio::spawn(observer(context, order, name.clone())));
            }
            let context = context.clone();
            let options = self.options.clone();
            let observed = observed.clone();
            self.observers.push(tokio::spawn(async move {
                let mut rng = context.rng(1000 + position as u64);
                let mut actor = Actor::new(&context, node);
                let interval = context.op_interval * options.read_pace;
                let mut stop = context.stop.clone();
                while !super::agents::pace(&mut stop, &mut rng, interval).await {
                    let name = &observed[rng.gen_range(0..observed.len())];
                    read_leader(&mut actor, &context, node, name).await;
                }
            }));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            let bound = context.op_timeout * 2 + Duration::from_millis(self.options.ttl_ms.1);
            self.candidates.drain(bound).await?;
            self.observers.drain(context.op_timeout).await
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

/// One term: campaign; if elected, proclaim, maybe sleep past the TTL, write, resign.
async fn term(
    actor: &mut Actor,
    context: &ClientContext,
    keys: &FencedKeys,
    values: &AtomicU64,
    options: &Options,
    rng: &mut StdRng,
) {
    let name = election_name(rng.gen_range(0..options.elections));
    let owner = format!("p{}", actor.process());
    let value = || format!("{owner}/{}", values.fetch_add(1, Ordering::Relaxed));
    let ttl_ms = rng.gen_range(options.ttl_ms.0..=options.ttl_ms.1);
    let wait_ms = rng.gen_range(options.wait_ms.0..=options.wait_ms.1);
    let campaign = json!({
        "name": name, "owner": owner, "value": value(), "ttl_ms": ttl_ms, "wait_ms": wait_ms,
    });
    let Some(token) = campaign_for(actor, context, campaign, options.lock_delay_ms).await else {
        return;
    };
    for _ in 0..rng.gen_range(options.proclaims.0..=options.proclaims.1) {
        let proclaim = json!({"name": name, "owner": owner, "token": token, "value": value()});
        match proclaim_value(actor, context, proclaim).await {
            Completion::Ok(_) => {}
            // Deposed (or unknown, and the process retired): this term is over.
            Completion::Fail(_) | Completion::Info(_) => return,
        }
    }
    let stale = rng.gen_bool(options.stale_fraction) && !context.stopped();
    if stale {
        let pause = ttl_ms + options.lock_delay_ms + rng.gen_range(500..=1_200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let written = keys
        .write(actor, context, (FenceKind::Election, &name, token), stale)
        .await;
    if matches!(written, Completion::Info(_)) {
        return;
    }
    resign(actor, context, &name, token).await;
}

/// One scripted deposal on [`DEPOSAL_ELECTION`], in this order, each step started only once the
/// one before was answered:
/// 1. the first client (`deposed`) is elected with the shortest TTL of the options;
/// 2. the second (`successor`) campaigns, queued behind it, waiting longer than that TTL and the
///    lock-delay: the leader's ticker ends the term and elects it with a larger token (issued
///    from the one counter after the first one's, since its campaign was invoked after the first
///    was answered);
/// 3. the successor writes under its token, and the write is acknowledged (applied);
/// 4. only now does the deposed leader, which has said nothing since it was elected (a process
///    paused past its term, unaware of it), write under its old token (recorded `stale`), then
///    resigns; the successor resigns.
///
/// Step 4's write is invoked after a newer token's write was acknowledged, whatever the timing:
/// the fence must refuse it (`lock-lost`), and if it were applied it would follow the
/// successor's in the key's history with a smaller token. A round whose first three steps do not
/// all succeed (a fault, a slow cluster) ends without the stale write and is simply not counted.
async fn deposal(
    (deposed, successor): (&mut Actor, &mut Actor),
    context: &ClientContext,
    keys: &FencedKeys,
    values: &AtomicU64,
    options: &Options,
) {
    let name = DEPOSAL_ELECTION;
    let deposed_ttl_ms = options.ttl_ms.0;
    let successor_wait_ms = (deposed_ttl_ms + options.lock_delay_ms + SUCCESSOR_WAIT_SLACK_MS)
        .min((context.op_timeout.as_millis() as u64).saturating_sub(500));
    let campaign = |actor: &Actor, ttl_ms: u64, wait_ms: u64| {
        let owner = format!("p{}", actor.process());
        let value = format!("{owner}/{}", values.fetch_add(1, Ordering::Relaxed));
        json!({
            "name": name, "owner": owner, "value": value, "ttl_ms": ttl_ms, "wait_ms": wait_ms,
        })
    };
    // The election may still be held for a moment (a resign that did not get through).
    let spec = campaign(deposed, deposed_ttl_ms, options.wait_ms.1);
    let lock_delay_ms = options.lock_delay_ms;
    let Some(stale_token) = campaign_for(deposed, context, spec, lock_delay_ms).await else {
        return;
    };
    let spec = campaign(successor, options.ttl_ms.1, successor_wait_ms);
    let Some(token) = campaign_for(successor, context, spec, lock_delay_ms).await else {
        return;
    };
    let fence = (FenceKind::Election, name, token);
    let written = keys.write(successor, context, fence, false).await;
    if matches!(written, Completion::Ok(_)) {
        let stale_fence = (FenceKind::Election, name, stale_token);
        let stale = keys.write(deposed, context, stale_fence, true).await;
        if !matches!(stale, Completion::Info(_)) {
            resign(deposed, context, name, stale_token).await;
        }
    }
    if !matches!(written, Completion::Info(_)) {
        resign(successor, context, name, token).await;
    }
}

/// Campaigns as `spec` says; the token when elected.
async fn campaign_for(
    actor: &mut Actor,
    context: &ClientContext,
    spec: Json,
    lock_delay_ms: u64,
) -> Option<u64> {
    let request = CampaignRequest {
        request_id: actor.next_request_id(),
        election: spec["name"].as_str().unwrap_or_default().to_string(),
        holder: Some(Holder {
            session_id: 0,
            ttl_ms: spec["ttl_ms"].as_u64().unwrap_or(1_000),
            owner: spec["owner"].as_str().unwrap_or_default().to_string(),
        }),
        value: spec["value"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
        wait_ms: spec["wait_ms"].as_u64().unwrap_or(0),
        lock_delay_ms: Some(lock_delay_ms),
    };
    let op = OpSpec::new("campaign", Some(request.election.clone()), spec.clone());
    let completion = actor
        .write(context, op, |channel| {
            let request = request.clone();
            let mut value = spec.clone();
            async move {
                match ElectionsClient::new(channel).campaign(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        value["token"] = json!(response.token);
                        value["elected"] = json!(response.elected);
                        Attempt::Ok(value)
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
    match completion {
        Completion::Ok(value) if value["elected"] == json!(true) => value["token"].as_u64(),
        _ => None,
    }
}

async fn proclaim_value(actor: &mut Actor, context: &ClientContext, spec: Json) -> Completion {
    let request = ProclaimRequest {
        request_id: actor.next_request_id(),
        election: spec["name"].as_str().unwrap_or_default().to_string(),
        token: spec["token"].as_u64().unwrap_or(0),
        value: spec["value"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
    };
    let op = OpSpec::new("proclaim", Some(request.election.clone()), spec.clone());
    actor
        .write(context, op, |channel| {
            let request = request.clone();
            let value = spec.clone();
            async move {
                match ElectionsClient::new(channel).proclaim(request).await {
                    Ok(_) => Attempt::Ok(value),
                    Err(status) => classify(&status),
                }
            }
        })
        .await
}

async fn resign(actor: &mut Actor, context: &ClientContext, name: &str, token: u64) {
    let request = ResignRequest {
        request_id: actor.next_request_id(),
        election: name.to_string(),
        token,
    };
    let value = json!({"name": name, "token": token});
    let op = OpSpec::new("resign", Some(name.to_string()), value.clone());
    actor
        .write(context, op, |channel| {
            let request = request.clone();
            let value = value.clone();
            async move {
                match ElectionsClient::new(channel).resign(request).await {
                    Ok(_) => Attempt::Ok(value),
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
}

/// A grant as recorded: `{"token", "owner", "value"}`.
fn grant_json(grant: &Grant) -> Json {
    json!({
        "token": grant.token,
        "owner": grant.holder.as_ref().map(|h| h.owner.clone()).unwrap_or_default(),
        "value": String::from_utf8_lossy(&grant.value),
    })
}

/// The leader of an election as recorded, `null` when none.
fn leader_json(election: Option<&Lock>) -> Json {
    election
        .and_then(|election| election.holders.first())
        .map_or(Json::Null, grant_json)
}

/// One linearizable Leader read, recorded as `leader`; NOT_FOUND is "nobody leads".
async fn read_leader(actor: &mut Actor, context: &ClientContext, node: u64, name: &str) {
    let spec = OpSpec::new("leader", Some(name.to_string()), json!({"name": name}));
    let name = name.to_string();
    actor
        .read(context, spec, node, |channel| async move {
            let request = LeaderRequest {
                election: name.clone(),
                consistency: ReadConsistency::Linearizable as i32,
            };
            match ElectionsClient::new(channel).leader(request).await {
                Ok(response) => {
                    let leader = response.into_inner().leader;
                    Ok(json!({"name": name, "leader": leader.as_ref().map_or(Json::Null, grant_json)}))
                }
                Err(status) if status.code() == Code::NotFound => {
                    Ok(json!({"name": name, "leader": null}))
                }
                Err(status) => Err(describe(&status)),
            }
        })
        .await;
}

/// One recorded message: `[sequence, kind, token, leader]`.
fn event_json(event: &LockEvent) -> Json {
    let kind = conclave_proto::v1::lock_event::Kind::try_from(event.kind).map_or_else(
        |_| event.kind.to_string(),
        |kind| short_name(kind.as_str_name(), "KIND_"),
    );
    json!([
        event.sequence,
        kind,
        event.token,
        leader_json(event.lock.as_ref())
    ])
}

/// One observer of `name`: an Observe stream on the first node of `order`, then (whenever it
/// fails) on the next, recorded in stretches of at most [`CHECKPOINT`], until the clients stop.
async fn observer(context: ClientContext, order: Vec<u64>, name: String) {
    let process = context.recorder.new_process();
    let mut stop = context.stop.clone();
    let mut stream_number = 0u64;
    while !context.stopped() {
        stream_number += 1;
        let node = order[(stream_number as usize - 1) % order.len()];
        let mut stretch = Stretch::open(&context, process, node, &name, stream_number);
        let mut client = ElectionsClient::new(channel::channel(context.nodes[&node], None));
        let request = ObserveRequest {
            election: name.clone(),
        };
        let opened = tokio::time::timeout(context.op_timeout, client.observe(request)).await;
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                stretch.close(&context, Some(describe(&status)));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                stretch.close(&context, Some("no answer to Observe".into()));
                continue;
            }
        };
        let mut checkpoint = Instant::now() + CHECKPOINT;
        let error = loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(event)) => stretch.events.push(event_json(&event)),
                    Some(Err(status)) => break Some(describe(&status)),
                    None => break Some("the stream ended".to_string()),
                },
                _ = tokio::time::sleep_until(checkpoint) => {
                    stretch.close(&context, None);
                    stretch = Stretch::open(&context, process, node, &name, stream_number);
                    checkpoint = Instant::now() + CHECKPOINT;
                }
                _ = stop.wait_for(|stop| *stop) => break None,
            }
        };
        let failed = error.is_some();
        stretch.close(&context, error);
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One recorded stretch of an Observe stream.
struct Stretch {
    invocation: Invocation,
    events: Vec<Json>,
}

impl Stretch {
    fn open(context: &ClientContext, process: u64, node: u64, name: &str, stream: u64) -> Self {
        let spec = OpSpec::new(
            "observe",
            Some(name.to_string()),
            json!({"name": name, "stream": stream}),
        );
        Self {
            invocation: context.recorder.invoke(NAME, process, Some(node), spec),
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
