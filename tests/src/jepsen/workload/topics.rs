//! The topics workload (in the spirit of Jepsen's NATS JetStream analysis): publishers publish
//! keyed messages, singly and in batches, to one topic created at setup; two consumer groups of
//! several members each fetch, ack, nack and now and then stall past the ack wait; a broadcast
//! subscriber follows the whole topic. Retention is far beyond what a run publishes, so a message
//! missing at the end is lost, not discarded.
//!
//! - **Publishers** (one per node) publish batches of 1-4 messages over [`KEYS`] keys. Each
//!   message's data is its unique id (`p<publisher>-<n>`), which is also its idempotency key. A
//!   publish is resent with its request id to the next nodes while unknown; when it stays
//!   unknown, the same messages are published again under a new request id with the same
//!   idempotency keys (`resend`), up to [`RESENDS`] times; and one acknowledged publish in
//!   twenty is sent again so (`resend` too): the node must answer the original sequences
//!   (`duplicate`) and store nothing twice.
//! - **Members** ([`MEMBERS`] per group, spread over the nodes, moving to the next node when a
//!   call fails) Fetch 1-3 messages (waiting up to [`FETCH_WAIT_MS`]) and, per delivery, ack after
//!   a short pause, or nack (redelivery after 0-300 ms), or stall past the ack wait and then ack
//!   with the old token (the ack must be refused if the message was delivered again meanwhile).
//! - **Scripted stale acks**: every [`SCRIPT_EVERY`]th first delivery to a group's member 0 is
//!   held: that member says nothing until another member's Fetch got the same message under a
//!   newer token (the ack wait passed), then acks with its old token (marked `stale`); the new
//!   holder acks only once that ack was answered. The group must refuse the stale ack (`lease
//!   lost`); with `--unsafe-test-mode topic-stale-ack` the node accepts it, which the checker
//!   reports on every run: the order is the script's, not a race's.
//! - **The subscriber** follows the topic with Subscribe from its first message, resuming after
//!   the last sequence it saw on the next node when its stream breaks and every 2-5 s.
//!
//! After healing, the members fetch and ack (no stalls, no nacks) until both groups have nothing
//! in flight, waiting or unexamined (`drain`, bounded); then every node reads the topic's
//! messages (a Subscribe on that node from the oldest, up to its last sequence), its groups'
//! positions and their dead letters (serializable), and one linearizable read follows.
//!
//! Recorded operations (f: invocation value -> ok value):
//! - `setup`: the topic and the groups created (retried until acknowledged);
//! - `publish`: `{"messages": [{"id", "key"}], "resend"}` -> `{"messages": [{"id", "key", "seq",
//!   "duplicate"}]}`;
//! - `fetch`: `{"group", "member", "max"}` -> `{"group", "member", "deliveries": [{"seq", "token",
//!   "deliveries", "id", "key"}]}`;
//! - `ack`: `{"group", "member", "seq", "token", "stale"}`; `fail` when refused (lease lost);
//!   `nack`: `{"group", "member", "seq", "token", "delay_ms"}`;
//! - `sub-start` (an observation): `{"after", "node"}`, a stream opened after `after` (null: from
//!   the oldest); `sub-message`: `{"seq", "id"}`; `sub-gap`: a resume refused OUT_OF_RANGE;
//! - `drain`: `{}` -> `{"settled", "groups"}`;
//! - `final-read`: `{"consistency"}` -> `{"consistency", "first_seq", "last_seq", "messages":
//!   [[seq, id, key]], "groups": {name: {position}}, "dead": {name: [[seq, deliveries]]}}`.
//!
//! The checker is [`check::check`], a pure function of the history.

mod check;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::topics_client::TopicsClient;
use conclave_proto::v1::{
    AckRequest, CreateGroupRequest, CreateTopicRequest, Delivery, FetchRequest, GetTopicRequest,
    GroupInfo, ListTopicDeadLettersRequest, NackRequest, PublishMessage, PublishRequest,
    ReadConsistency, StartPosition, SubscribeEventKind, SubscribeRequest, TopicConfig,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

pub use self::check::check;
use super::agents::{classify, pace, read_final_state, Actor};
use super::{CheckResult, Tasks, Workload, FINAL_READ};
use crate::jepsen::client::{describe, mix, Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

pub const NAME: &str = "topics";
/// The topic; it captures `jepsen-topic` and `jepsen-topic.>`.
pub const TOPIC: &str = "jepsen-topic";
/// The consumer groups.
pub const GROUPS: [&str; 2] = ["g1", "g2"];
/// Members per group.
pub const MEMBERS: usize = 3;
/// The message keys: a small key space, so a key's messages queue behind each other.
pub const KEYS: u64 = 4;
/// The groups' ack wait (the API's minimum) and allowed deliveries.
pub const ACK_WAIT_MS: u64 = 1_000;
pub const MAX_DELIVERIES: u32 = 5;
/// How long a Fetch waits for a message.
pub const FETCH_WAIT_MS: u64 = 300;
/// Every this many first deliveries, a group's member 0 plays a scripted stale ack.
pub const SCRIPT_EVERY: u64 = 4;
/// Publishes of the same messages under new request ids after one stayed unknown.
pub const RESENDS: usize = 2;
/// Chance that an acknowledged publish is sent again under a new request id (same idempotency
/// keys), to see the duplicates answered.
const REPUBLISH_PROBABILITY: f64 = 0.05;
/// How long one side of a scripted stale ack waits for the other.
const SCRIPT_WAIT: Duration = Duration::from_secs(10);
/// Pause between two looks at the groups while draining.
const DRAIN_POLL: Duration = Duration::from_millis(300);
/// How long the subscriber stays on one node before it resumes on the next (uniform, ms).
const SUBSCRIBER_STAY_MS: (u64, u64) = (2_000, 5_000);
/// Most dead letters a listing page holds.
const PAGE: u32 = 1000;

#[derive(Clone, Debug)]
pub struct Options {
    /// A publisher's mean pause is this many times the run's `op_interval`.
    pub publish_pace: u32,
    /// A member's mean pause between fetches, in `op_interval`s.
    pub fetch_pace: u32,
    pub stall_probability: f64,
    pub nack_probability: f64,
    /// How long the members get after the heal to settle every message.
    pub drain_bound: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            publish_pace: 4,
            fetch_pace: 2,
            stall_probability: 0.06,
            nack_probability: 0.06,
            drain_bound: Duration::from_secs(40),
        }
    }
}

/// One scripted stale ack, per (group, seq).
#[derive(Debug)]
struct Script {
    /// The first delivery's token: the one that goes stale.
    stale_token: u64,
    /// Set once another member's Fetch got the message under a newer token.
    reassigned: watch::Sender<bool>,
    /// Set once the stale ack was answered.
    answered: watch::Sender<bool>,
}

/// What the workload's clients share.
#[derive(Debug, Default)]
struct Shared {
    /// Scripted stale acks by (group, seq).
    scripts: Mutex<HashMap<(String, u64), Arc<Script>>>,
    /// First deliveries to each group's member 0, for choosing the scripted ones.
    first_deliveries: AtomicU64,
    /// The subscriber's cursor: the greatest sequence it saw.
    subscribed_to: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct TopicsWorkload {
    options: Options,
    shared: Arc<Shared>,
    /// Publishers: they stop at the stop signal.
    publishers: Tasks,
    members: Tasks,
    /// Scripted stale acks, run apart from their member.
    workers: Arc<Tasks>,
    subscriber: Tasks,
    /// Set once the topic and groups exist.
    ready: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    member_stop: watch::Sender<bool>,
    subscriber_stop: watch::Sender<bool>,
    context: Mutex<Option<ClientContext>>,
}

impl TopicsWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            shared: Arc::default(),
            publishers: Tasks::default(),
            members: Tasks::default(),
            workers: Arc::new(Tasks::default()),
            subscriber: Tasks::default(),
            ready: watch::Sender::new(false),
            draining: Arc::new(AtomicBool::new(false)),
            member_stop: watch::Sender::new(false),
            subscriber_stop: watch::Sender::new(false),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        lock(&self.context).clone()
    }

    /// Waits (bounded) until both groups have nothing outstanding, recorded as `drain`.
    async fn wait_until_settled(&self, context: &ClientContext) {
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let actor = Actor::new(context, nodes[0]);
        let spec = OpSpec::new("drain", None, json!({}));
        let invocation = context
            .recorder
            .invoke(context.workload, actor.process(), None, spec);
        let deadline = Instant::now() + self.options.drain_bound;
        let mut attempt = 0;
        loop {
            let node = nodes[attempt % nodes.len()];
            attempt += 1;
            let read = get_topic(actor.channel(node), ReadConsistency::Linearizable).await;
            let (settled, groups) = match read {
                Ok((_, _, groups)) => {
                    let settled = GROUPS.iter().all(|name| {
                        groups.get(*name).is_some_and(|group| {
                            group["lag"] == json!(0) && group["in_flight"] == json!(0)
                        })
                    });
                    (settled, json!(groups))
                }
                Err(error) => (false, json!(error)),
            };
            if settled || Instant::now() >= deadline {
                let value = json!({"settled": settled, "groups": groups});
                context
                    .recorder
                    .complete(&invocation, &Completion::Ok(value));
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Waits (bounded) until the subscriber has seen the topic's last sequence.
    async fn wait_for_subscriber(&self, context: &ClientContext) {
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let actor = Actor::new(context, nodes[0]);
        let last = match get_topic(actor.channel(nodes[0]), ReadConsistency::Linearizable).await {
            Ok((_, last, _)) => last,
            Err(_) => return,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.shared.subscribed_to.load(Ordering::SeqCst) < last {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Default for TopicsWorkload {
    fn default() -> Self {
        Self::new(Options::default())
    }
}

impl Workload for TopicsWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *lock(&self.context) = Some(context.clone());
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let ready = self.ready.clone();
        let setup_context = context.clone();
        self.publishers.push(tokio::spawn(async move {
            setup(&setup_context).await;
            ready.send_replace(true);
        }));
        self.subscriber.push(tokio::spawn(subscribe(
            context.clone(),
            Arc::clone(&self.shared),
            self.ready.subscribe(),
            self.subscriber_stop.subscribe(),
        )));
        for (number, node) in nodes.iter().copied().enumerate() {
            let publisher = Publisher {
                number: number as u64,
                context: context.clone(),
                actor: Actor::new(&context, node),
                rng: context.rng(number as u64),
                sent: 0,
            };
            let mut ready = self.ready.subscribe();
            let interval = context.op_interval * self.options.publish_pace;
            self.publishers.push(tokio::spawn(async move {
                let _ = ready.wait_for(|ready| *ready).await;
                publisher.run(interval).await;
            }));
        }
        for (group_number, group) in GROUPS.iter().enumerate() {
            for index in 0..MEMBERS {
                let number = (group_number * MEMBERS + index) as u64;
                let member = Member {
                    group: group.to_string(),
                    name: format!("{group}-m{index}"),
                    index,
                    nodes: nodes.clone(),
                    node_index: index % nodes.len(),
                    actor: Actor::new(&context, nodes[index % nodes.len()]),
                    context: context.clone(),
                    options: self.options.clone(),
                    shared: Arc::clone(&self.shared),
                    draining: Arc::clone(&self.draining),
                    workers: Arc::clone(&self.workers),
                    rng: StdRng::seed_from_u64(mix(context.seed, &[0x70c1, number])),
                };
                let mut ready = self.ready.subscribe();
                let stop = self.member_stop.subscribe();
                self.members.push(tokio::spawn(async move {
                    let _ = ready.wait_for(|ready| *ready).await;
                    member.run(stop).await;
                }));
            }
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            self.publishers.drain(context.op_timeout).await?;
            self.draining.store(true, Ordering::SeqCst);
            self.wait_until_settled(&context).await;
            self.member_stop.send_replace(true);
            self.members.drain(context.op_timeout + SCRIPT_WAIT).await?;
            self.workers.drain(context.op_timeout + SCRIPT_WAIT).await
        })
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            read_final_state(context, |actor, context, node, consistency| {
                Box::pin(final_read(actor, context, node, consistency))
            })
            .await;
            self.wait_for_subscriber(context).await;
            self.subscriber_stop.send_replace(true);
            self.subscriber.drain(context.op_timeout).await
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

/// Creates the topic and the groups, each resent until acknowledged (bounded), recorded as
/// `setup`.
async fn setup(context: &ClientContext) {
    let nodes: Vec<u64> = context.nodes.keys().copied().collect();
    let mut actor = Actor::new(context, nodes[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = false;
    while !done && Instant::now() < deadline {
        let request_id = actor.next_request_id();
        let spec = OpSpec::new("setup", None, json!({"what": "topic"}));
        let topic = actor
            .write(context, spec, |channel| {
                let request = CreateTopicRequest {
                    request_id,
                    name: TOPIC.to_string(),
                    // Retention far beyond a run: nothing is discarded, so missing is lost.
                    config: Some(TopicConfig {
                        subjects: Vec::new(),
                        max_msgs: 0,
                        max_bytes: 0,
                        max_age_ms: 0,
                    }),
                };
                async move {
                    match TopicsClient::new(channel).create_topic(request).await {
                        Ok(_) => Attempt::Ok(json!({"what": "topic"})),
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
        done = matches!(topic, Completion::Ok(_));
        for group in GROUPS {
            if !done {
                break;
            }
            done = create_group(&mut actor, context, group).await;
        }
    }
}

async fn create_group(actor: &mut Actor, context: &ClientContext, group: &str) -> bool {
    let request = CreateGroupRequest {
        request_id: actor.next_request_id(),
        topic: TOPIC.to_string(),
        group: group.to_string(),
        filter: String::new(),
        start: StartPosition::All as i32,
        ack_wait_ms: ACK_WAIT_MS,
        max_deliveries: MAX_DELIVERIES,
        ..CreateGroupRequest::default()
    };
    let spec = OpSpec::new("setup", None, json!({"what": "group", "group": group}));
    let value = json!({"what": "group", "group": group});
    let completion = actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let value = value.clone();
            async move {
                match TopicsClient::new(channel).create_group(request).await {
                    Ok(_) => Attempt::Ok(value),
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
    matches!(completion, Completion::Ok(_))
}

/// One publisher: batches of keyed messages with unique ids as idempotency keys.
struct Publisher {
    number: u64,
    context: ClientContext,
    actor: Actor,
    rng: StdRng,
    sent: u64,
}

impl Publisher {
    async fn run(mut self, interval: Duration) {
        let mut stop = self.context.stop.clone();
        while !pace(&mut stop, &mut self.rng, interval).await {
            let count = if self.rng.gen_bool(0.6) {
                1
            } else {
                self.rng.gen_range(2..=4)
            };
            let messages: Vec<(String, String)> = (0..count)
                .map(|_| {
                    self.sent += 1;
                    let id = format!("p{}-{}", self.number, self.sent);
                    (id, format!("k{}", self.rng.gen_range(0..KEYS)))
                })
                .collect();
            for resend in 0..=RESENDS {
                let completion = self.publish(&messages, resend > 0).await;
                match completion {
                    Completion::Info(_) => continue,
                    // Now and then the same messages again, although acknowledged: the node
                    // must answer the original sequences as duplicates and store nothing.
                    Completion::Ok(_) if self.rng.gen_bool(REPUBLISH_PROBABILITY) => {
                        self.publish(&messages, true).await;
                    }
                    _ => {}
                }
                break;
            }
        }
    }

    async fn publish(&mut self, messages: &[(String, String)], resend: bool) -> Completion {
        let request = PublishRequest {
            request_id: self.actor.next_request_id(),
            messages: messages
                .iter()
                .map(|(id, key)| PublishMessage {
                    subject: format!("{TOPIC}.{key}"),
                    key: Some(key.clone().into_bytes()),
                    headers: Default::default(),
                    data: id.clone().into_bytes(),
                    idempotency_key: id.clone(),
                })
                .collect(),
        };
        let listed: Vec<Json> = messages
            .iter()
            .map(|(id, key)| json!({"id": id, "key": key}))
            .collect();
        let spec = OpSpec::new(
            "publish",
            None,
            json!({"messages": listed, "resend": resend}),
        );
        self.actor
            .write(&self.context, spec, |channel| {
                let request = request.clone();
                let listed = listed.clone();
                async move {
                    match TopicsClient::new(channel).publish(request).await {
                        Ok(response) => {
                            let results = response.into_inner().results;
                            let messages: Vec<Json> = listed
                                .iter()
                                .zip(&results)
                                .map(|(message, result)| {
                                    let mut message = message.clone();
                                    message["seq"] = json!(result.seq);
                                    message["duplicate"] = json!(result.duplicate);
                                    message
                                })
                                .collect();
                            Attempt::Ok(json!({"messages": messages, "count": results.len()}))
                        }
                        Err(status) => classify(&status),
                    }
                }
            })
            .await
    }
}

/// One member of a consumer group.
struct Member {
    group: String,
    name: String,
    index: usize,
    nodes: Vec<u64>,
    node_index: usize,
    actor: Actor,
    context: ClientContext,
    options: Options,
    shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    workers: Arc<Tasks>,
    rng: StdRng,
}

/// What a member does with one delivery.
enum Action {
    /// Ack after a short pause.
    Ack {
        work_ms: u64,
    },
    /// Ack only after the ack wait has passed.
    Stall {
        after_ms: u64,
    },
    Nack {
        delay_ms: u64,
    },
    /// The stale side of a scripted ack.
    Deposed(Arc<Script>),
    /// The new holder of a scripted message: ack once the stale ack was answered.
    Successor(Arc<Script>),
}

impl Member {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let interval = self.context.op_interval * self.options.fetch_pace;
        while !pace(&mut stop, &mut self.rng, interval).await {
            let max = self.rng.gen_range(1..=3);
            match self.fetch(max).await {
                Some(deliveries) => {
                    for delivery in deliveries {
                        self.handle(delivery).await;
                    }
                }
                None => self.move_on(),
            }
        }
    }

    /// Moves to the next node (after a failed call).
    fn move_on(&mut self) {
        self.node_index = (self.node_index + 1) % self.nodes.len();
        self.actor = Actor::new(&self.context, self.nodes[self.node_index]);
    }

    async fn fetch(&mut self, max: u32) -> Option<Vec<Delivery>> {
        let request = FetchRequest {
            request_id: self.actor.next_request_id(),
            topic: TOPIC.to_string(),
            group: self.group.clone(),
            member: self.name.clone(),
            max,
            wait_ms: FETCH_WAIT_MS,
        };
        let value = json!({"group": self.group, "member": self.name, "max": max});
        let spec = OpSpec::new("fetch", None, value.clone());
        let fetched: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let completion = self
            .actor
            .write(&self.context, spec, |channel| {
                let request = request.clone();
                let value = value.clone();
                let fetched = Arc::clone(&fetched);
                async move {
                    match TopicsClient::new(channel).fetch(request).await {
                        Ok(response) => {
                            let deliveries = response.into_inner().deliveries;
                            let mut value = value;
                            value["deliveries"] =
                                Json::Array(deliveries.iter().map(delivery_json).collect());
                            *lock(&fetched) = deliveries;
                            Attempt::Ok(value)
                        }
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
        match completion {
            Completion::Ok(_) => Some(std::mem::take(&mut *lock(&fetched))),
            _ => None,
        }
    }

    async fn handle(&mut self, delivery: Delivery) {
        let seq = delivery.message.as_ref().map_or(0, |message| message.seq);
        let token = delivery.token;
        match self.choose(seq, &delivery) {
            Action::Ack { work_ms } => {
                tokio::time::sleep(Duration::from_millis(work_ms)).await;
                self.ack(seq, token, false).await;
            }
            Action::Stall { after_ms } => {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                self.ack(seq, token, false).await;
            }
            Action::Nack { delay_ms } => self.nack(seq, token, delay_ms).await,
            Action::Successor(script) => {
                let mut answered = script.answered.subscribe();
                let _ = tokio::time::timeout(SCRIPT_WAIT, answered.wait_for(|a| *a)).await;
                self.ack(seq, token, false).await;
            }
            Action::Deposed(script) => {
                // Run apart, so that this member keeps fetching while its delivery goes stale.
                let mut deposed = Member {
                    group: self.group.clone(),
                    name: self.name.clone(),
                    index: self.index,
                    nodes: self.nodes.clone(),
                    node_index: self.node_index,
                    actor: Actor::new(&self.context, self.nodes[self.node_index]),
                    context: self.context.clone(),
                    options: self.options.clone(),
                    shared: Arc::clone(&self.shared),
                    draining: Arc::clone(&self.draining),
                    workers: Arc::clone(&self.workers),
                    rng: StdRng::seed_from_u64(token),
                };
                self.workers.push(tokio::spawn(async move {
                    let mut reassigned = script.reassigned.subscribe();
                    let _ = tokio::time::timeout(SCRIPT_WAIT, reassigned.wait_for(|r| *r)).await;
                    deposed.ack(seq, token, true).await;
                    script.answered.send_replace(true);
                }));
            }
        }
    }

    fn choose(&mut self, seq: u64, delivery: &Delivery) -> Action {
        let token = delivery.token;
        let key = (self.group.clone(), seq);
        let script = lock(&self.shared.scripts).get(&key).cloned();
        if let Some(script) = script {
            if token > script.stale_token && !*script.reassigned.borrow() {
                script.reassigned.send_replace(true);
                return Action::Successor(script);
            }
        } else if self.index == 0
            && delivery.deliveries == 1
            && !self.draining.load(Ordering::SeqCst)
        {
            let first = self.shared.first_deliveries.fetch_add(1, Ordering::Relaxed);
            if first % SCRIPT_EVERY == SCRIPT_EVERY - 1 {
                let script = Arc::new(Script {
                    stale_token: token,
                    reassigned: watch::Sender::new(false),
                    answered: watch::Sender::new(false),
                });
                lock(&self.shared.scripts).insert(key, Arc::clone(&script));
                return Action::Deposed(script);
            }
        }
        if self.draining.load(Ordering::SeqCst) {
            return Action::Ack { work_ms: 0 };
        }
        let roll: f64 = self.rng.gen();
        if roll < self.options.stall_probability {
            Action::Stall {
                after_ms: ACK_WAIT_MS + self.rng.gen_range(200..=1_200),
            }
        } else if roll < self.options.stall_probability + self.options.nack_probability {
            Action::Nack {
                delay_ms: self.rng.gen_range(0..=300),
            }
        } else {
            Action::Ack {
                work_ms: self.rng.gen_range(0..=40),
            }
        }
    }

    async fn ack(&mut self, seq: u64, token: u64, stale: bool) {
        let request = AckRequest {
            request_id: self.actor.next_request_id(),
            topic: TOPIC.to_string(),
            group: self.group.clone(),
            seq,
            token,
        };
        let value = json!({"group": self.group, "member": self.name, "seq": seq,
            "token": token, "stale": stale});
        let spec = OpSpec::new("ack", None, value.clone());
        let completion = self
            .actor
            .write(&self.context, spec, |channel| {
                let request = request.clone();
                let value = value.clone();
                async move {
                    match TopicsClient::new(channel).ack(request).await {
                        Ok(_) => Attempt::Ok(value),
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
        if matches!(completion, Completion::Info(_)) {
            self.move_on();
        }
    }

    async fn nack(&mut self, seq: u64, token: u64, delay_ms: u64) {
        let request = NackRequest {
            request_id: self.actor.next_request_id(),
            topic: TOPIC.to_string(),
            group: self.group.clone(),
            seq,
            token,
            delay_ms,
        };
        let value = json!({"group": self.group, "member": self.name, "seq": seq,
            "token": token, "delay_ms": delay_ms});
        let spec = OpSpec::new("nack", None, value.clone());
        self.actor
            .write(&self.context, spec, |channel| {
                let request = request.clone();
                let value = value.clone();
                async move {
                    match TopicsClient::new(channel).nack(request).await {
                        Ok(_) => Attempt::Ok(value),
                        Err(status) => classify(&status),
                    }
                }
            })
            .await;
    }
}

fn delivery_json(delivery: &Delivery) -> Json {
    let message = delivery.message.clone().unwrap_or_default();
    json!({
        "seq": message.seq,
        "token": delivery.token,
        "deliveries": delivery.deliveries,
        "id": String::from_utf8_lossy(&message.data),
        "key": message.key.as_ref().map(|key| String::from_utf8_lossy(key).to_string()),
    })
}

/// Follows the whole topic from its oldest message until `stop`, recording every message:
/// resumes after the last sequence it saw (a message or a PROGRESS) on the next node when the
/// stream breaks; records `sub-gap` and resumes from the oldest kept when retention passed it.
async fn subscribe(
    context: ClientContext,
    shared: Arc<Shared>,
    mut ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = ready.wait_for(|ready| *ready) => {}
        _ = stop.wait_for(|stop| *stop) => return,
    }
    let nodes: Vec<u64> = context.nodes.keys().copied().collect();
    let actor = Actor::new(&context, nodes[0]);
    let mut cursor: Option<u64> = None;
    let mut attempt = 0usize;
    let mut rng = context.rng(0x50b);
    while !*stop.borrow() {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let mut client = TopicsClient::new(crate::channel::channel(context.nodes[&node], None));
        let request = SubscribeRequest {
            topic: TOPIC.to_string(),
            start: StartPosition::All as i32,
            after_seq: cursor,
            ..SubscribeRequest::default()
        };
        let opened = tokio::select! {
            opened = tokio::time::timeout(context.op_timeout, client.subscribe(request)) => opened,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) if status.code() == Code::OutOfRange => {
                actor.observe(
                    &context,
                    "sub-gap",
                    node,
                    json!({"after": cursor, "error": describe(&status)}),
                );
                cursor = None;
                continue;
            }
            Ok(Err(status)) => {
                tracing::debug!(node, "topic subscription: {}", describe(&status));
                tokio::time::sleep(Duration::from_millis(150)).await;
                continue;
            }
            Err(_) => continue,
        };
        actor.observe(
            &context,
            "sub-start",
            node,
            json!({"after": cursor, "node": node}),
        );
        // Move to the next node now and then, as a subscriber with a watchdog would: a stream on
        // a node cut off from the leader sees nothing new without breaking.
        let stay =
            Duration::from_millis(rng.gen_range(SUBSCRIBER_STAY_MS.0..=SUBSCRIBER_STAY_MS.1));
        let moving = tokio::time::sleep(stay);
        tokio::pin!(moving);
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = &mut moving => break,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let Ok(Some(event)) = message else {
                break;
            };
            match SubscribeEventKind::try_from(event.kind).unwrap_or_default() {
                SubscribeEventKind::Message => {
                    let id = event
                        .message
                        .as_ref()
                        .map(|message| String::from_utf8_lossy(&message.data).to_string());
                    actor.observe(
                        &context,
                        "sub-message",
                        node,
                        json!({"seq": event.seq, "id": id}),
                    );
                    cursor = Some(cursor.unwrap_or(0).max(event.seq));
                }
                SubscribeEventKind::Progress => {
                    cursor = Some(cursor.unwrap_or(0).max(event.seq));
                }
                _ => {}
            }
            shared
                .subscribed_to
                .store(cursor.unwrap_or(0), Ordering::SeqCst);
        }
    }
}

/// The topic's first and last sequence and its groups' positions, as `node` holds them.
async fn get_topic(
    channel: Channel,
    consistency: ReadConsistency,
) -> Result<(u64, u64, BTreeMap<String, Json>), String> {
    let topic = TopicsClient::new(channel)
        .get_topic(GetTopicRequest {
            name: TOPIC.to_string(),
            consistency: consistency as i32,
        })
        .await
        .map_err(|status| describe(&status))?
        .into_inner()
        .topic
        .ok_or("GetTopic answered no topic")?;
    let groups = topic
        .groups
        .iter()
        .map(|group| (group.name.clone(), group_json(group)))
        .collect();
    Ok((topic.first_seq, topic.last_seq, groups))
}

/// A group's position as the final reads record it.
pub fn group_json(group: &GroupInfo) -> Json {
    json!({
        "ack_floor": group.ack_floor,
        "last_delivered": group.last_delivered,
        "in_flight": group.in_flight,
        "waiting": group.waiting,
        "acked": group.acked,
        "dead_letters": group.dead_letters,
        "lag": group.lag,
    })
}

/// Every message of the topic `node` holds, from the oldest up to `last_seq`, through a
/// Subscribe served from that node's applied state: `[seq, id, key]` each.
async fn read_messages(channel: Channel, last_seq: u64) -> Result<Vec<Json>, String> {
    let mut messages = Vec::new();
    if last_seq == 0 {
        return Ok(messages);
    }
    let mut stream = TopicsClient::new(channel)
        .subscribe(SubscribeRequest {
            topic: TOPIC.to_string(),
            start: StartPosition::All as i32,
            ..SubscribeRequest::default()
        })
        .await
        .map_err(|status| describe(&status))?
        .into_inner();
    loop {
        let event = stream
            .message()
            .await
            .map_err(|status| describe(&status))?
            .ok_or("the subscription ended")?;
        let Some(message) = event.message else {
            if event.seq >= last_seq {
                return Ok(messages);
            }
            continue;
        };
        messages.push(json!([
            message.seq,
            String::from_utf8_lossy(&message.data),
            message
                .key
                .as_ref()
                .map(|key| String::from_utf8_lossy(key).to_string()),
        ]));
        if message.seq >= last_seq {
            return Ok(messages);
        }
    }
}

/// A group's dead letters on `node`, all pages: `[seq, deliveries]` each.
async fn read_dead_letters(
    channel: Channel,
    group: &str,
    consistency: ReadConsistency,
) -> Result<Vec<Json>, String> {
    let mut client = TopicsClient::new(channel);
    let mut dead = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .list_dead_letters(ListTopicDeadLettersRequest {
                topic: TOPIC.to_string(),
                group: group.to_string(),
                after_seq,
                limit: PAGE,
                consistency: consistency as i32,
            })
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        for letter in &page.dead_letters {
            let seq = letter.message.as_ref().map_or(0, |message| message.seq);
            dead.push(json!([seq, letter.deliveries]));
            after_seq = after_seq.max(seq);
        }
        if !page.more || page.dead_letters.is_empty() {
            return Ok(dead);
        }
    }
}

/// Reads the topic, its groups and their dead letters on `node`, recorded as `final-read`.
async fn final_read(
    actor: &mut Actor,
    context: &ClientContext,
    node: u64,
    consistency: ReadConsistency,
) -> bool {
    let name = match consistency {
        ReadConsistency::Linearizable => "linearizable",
        _ => "serializable",
    };
    let spec = OpSpec::new(FINAL_READ, None, json!({"consistency": name}));
    let completion = actor
        .read(context, spec, node, |channel| async move {
            let (first_seq, last_seq, groups) = get_topic(channel.clone(), consistency).await?;
            let messages = read_messages(channel.clone(), last_seq).await?;
            let mut dead = BTreeMap::new();
            for group in GROUPS {
                dead.insert(
                    group,
                    read_dead_letters(channel.clone(), group, consistency).await?,
                );
            }
            Ok(json!({
                "consistency": name,
                "first_seq": first_seq,
                "last_seq": last_seq,
                "messages": messages,
                "groups": groups,
                "dead": dead,
            }))
        })
        .await;
    matches!(completion, Completion::Ok(_))
}
