//! Topics (topics.proto): durable event topics in the replicated log, each capturing a set of
//! subject patterns, with retention, idempotent batched publishing and durable consumer groups
//! (leased, fenced deliveries, redelivery, dead letters, per-key order).
//!
//! `subject.rs` matches subjects and patterns, `publish.rs` checks and stores messages and
//! applies retention, `groups.rs` is one consumer group's deliveries.

mod groups;
mod publish;
pub mod subject;
mod transaction;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::coordination::CoordEventKind;
use super::kv::Fnv;
use super::primitive::{Ctx, Primitive};
use crate::limits::{TOPICS_MAX, TOPIC_DUPLICATE_WINDOW_MS, TOPIC_GROUPS_MAX};
pub use groups::{DeadLetter, Group, GroupStats, Member, Pending, PendingState};
pub use transaction::TopicOp;

/// A message's position in its topic: 1, 2, ... per topic, never reused.
pub type Seq = u64;

/// How a topic keeps its messages (0: no limit of that kind). The oldest go first (JetStream's
/// limits policy): retention can discard messages a group has not delivered or acked yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// The subject patterns the topic captures; no two topics capture a common subject.
    pub subjects: Vec<String>,
    pub max_msgs: u64,
    pub max_bytes: u64,
    pub max_age_ms: u64,
}

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: Seq,
    pub subject: String,
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Cluster time of the Publish that stored it.
    pub published_ms: u64,
}

impl Message {
    /// What the message counts against retention and the store quota: subject, key, header
    /// names and values, data.
    pub fn bytes(&self) -> u64 {
        message_bytes(
            &self.subject,
            self.key.as_deref(),
            &self.headers,
            &self.data,
        )
    }
}

pub(crate) fn message_bytes(
    subject: &str,
    key: Option<&[u8]>,
    headers: &BTreeMap<String, String>,
    data: &[u8],
) -> u64 {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (subject.len() + key.map_or(0, <[u8]>::len) + headers + data.len()) as u64
}

/// A message to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub subject: String,
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Empty: none. A key seen on the same topic within TOPIC_DUPLICATE_WINDOW_MS answers the
    /// original sequence and stores nothing.
    pub idempotency_key: String,
}

impl NewMessage {
    pub fn bytes(&self) -> u64 {
        message_bytes(
            &self.subject,
            self.key.as_deref(),
            &self.headers,
            &self.data,
        )
    }
}

/// Where a new consumer group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    /// The oldest message kept.
    All,
    /// After the last message stored when the group is created.
    New,
    /// At this sequence (or the oldest kept, if later).
    FromSeq(Seq),
    /// At the first message published at or after this cluster time (Unix ms).
    FromTimeMs(u64),
}

/// A consumer group's settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// The subject pattern of the messages it consumes; empty: all of the topic's.
    pub filter: String,
    pub start: StartPosition,
    pub ack_wait_ms: u64,
    pub max_deliveries: u32,
    /// One keyed message in flight per key, in sequence order.
    pub ordered_keys: bool,
}

/// Which dead letters a Redrive or Purge takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterSelector {
    Seqs(Vec<Seq>),
    All,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicCommand {
    Create {
        name: String,
        config: TopicConfig,
    },
    Delete {
        name: String,
    },
    /// All or nothing: one refused message refuses the batch.
    Publish {
        messages: Vec<NewMessage>,
    },
    CreateGroup {
        topic: String,
        group: String,
        config: GroupConfig,
    },
    DeleteGroup {
        topic: String,
        group: String,
    },
    /// Leases up to `max` available messages to `member`, stopping once they hold `max_bytes`
    /// (the last may pass it).
    Fetch {
        topic: String,
        group: String,
        member: String,
        max: u32,
        max_bytes: u64,
    },
    Ack {
        topic: String,
        group: String,
        seq: Seq,
        token: u64,
    },
    /// Gives the delivery back, to be redelivered `delay_ms` later.
    Nack {
        topic: String,
        group: String,
        seq: Seq,
        token: u64,
        delay_ms: u64,
    },
    /// Restarts the delivery's ack wait (JetStream's +WPI).
    InProgress {
        topic: String,
        group: String,
        seq: Seq,
        token: u64,
    },
    Redrive {
        topic: String,
        group: String,
        selector: DeadLetterSelector,
    },
    Purge {
        topic: String,
        group: String,
        selector: DeadLetterSelector,
    },
}

impl TopicCommand {
    pub fn name(&self) -> &'static str {
        match self {
            TopicCommand::Create { .. } => "topic_create",
            TopicCommand::Delete { .. } => "topic_delete",
            TopicCommand::Publish { .. } => "topic_publish",
            TopicCommand::CreateGroup { .. } => "topic_group_create",
            TopicCommand::DeleteGroup { .. } => "topic_group_delete",
            TopicCommand::Fetch { .. } => "topic_fetch",
            TopicCommand::Ack { .. } => "topic_ack",
            TopicCommand::Nack { .. } => "topic_nack",
            TopicCommand::InProgress { .. } => "topic_in_progress",
            TopicCommand::Redrive { .. } => "topic_redrive",
            TopicCommand::Purge { .. } => "topic_purge",
        }
    }
}

/// Where one published message went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub topic: String,
    pub seq: Seq,
    /// Its idempotency key was seen within the window: `seq` is the original's, nothing stored.
    pub duplicate: bool,
}

/// One delivery a Fetch leased: the message (read from the state by sequence, so the answer
/// stays small), the fencing token that acks it, and how many times it has been delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: Seq,
    pub token: u64,
    pub deliveries: u32,
}

/// Why a topic command changed nothing; the code picks the gRPC status (`error::refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    /// An Ack, Nack or InProgress whose token is not the message's current delivery.
    StaleToken,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub reason: String,
}

impl Refusal {
    fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicResponse {
    /// `existing`: a topic of that name and the same config was there already.
    Created {
        existing: bool,
    },
    Deleted,
    Published {
        results: Vec<Published>,
    },
    GroupCreated {
        existing: bool,
    },
    GroupDeleted,
    Fetched {
        deliveries: Vec<Delivery>,
    },
    Acked,
    Nacked,
    Extended {
        deadline_ms: u64,
    },
    /// How many dead letters went back to the group, and how many were left because retention
    /// had discarded their message from the topic.
    Redriven {
        redriven: u64,
        discarded: u64,
    },
    Purged {
        purged: u64,
    },
    Refused(Refusal),
}

/// What changed in a topic, for the streams (the event ring): subscriptions wake on
/// `Published`, waiting fetches on any of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicEventKind {
    Published {
        first_seq: Seq,
        last_seq: Seq,
    },
    /// Something in the group may have become deliverable (an ack, a nack, an ack wait or a nack
    /// delay that passed, a redrive).
    GroupChanged {
        group: String,
    },
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEvent {
    pub topic: String,
    pub kind: TopicEventKind,
}

/// One topic: its messages, idempotency keys and groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub config: TopicConfig,
    pub created_ms: u64,
    /// The sequence of the last message stored (0: none yet).
    pub last_seq: Seq,
    /// Bytes of the messages kept.
    pub bytes: u64,
    /// Messages discarded by retention so far.
    pub discarded: u64,
    messages: BTreeMap<Seq, Message>,
    /// Idempotency key -> (sequence, cluster time published).
    dedup: BTreeMap<String, (Seq, u64)>,
    dedup_by_time: BTreeSet<(u64, String)>,
    groups: BTreeMap<String, Group>,
}

impl Topic {
    /// The oldest sequence kept (last_seq + 1 when empty).
    pub fn first_seq(&self) -> Seq {
        self.messages
            .first_key_value()
            .map_or(self.last_seq + 1, |(seq, _)| *seq)
    }

    pub fn message_count(&self) -> u64 {
        self.messages.len() as u64
    }

    pub fn message(&self, seq: Seq) -> Option<&Message> {
        self.messages.get(&seq)
    }

    /// Messages from `from` on, in sequence order.
    pub fn messages_from(&self, from: Seq) -> impl Iterator<Item = &Message> {
        self.messages.range(from..).map(|(_, message)| message)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Whether `subject` is one this topic captures.
    pub fn captures(&self, subject: &str) -> bool {
        self.config
            .subjects
            .iter()
            .any(|pattern| subject::matches(pattern, subject))
    }

    /// The first sequence published at or after `time_ms` (last_seq + 1 when none).
    pub fn seq_at_time(&self, time_ms: u64) -> Seq {
        self.messages
            .values()
            .find(|m| m.published_ms >= time_ms)
            .map_or(self.last_seq + 1, |m| m.seq)
    }

    fn dead_letter_bytes(&self) -> u64 {
        self.groups.values().map(Group::dead_letter_bytes).sum()
    }
}

/// Every topic, the bytes they hold, and the delivery timers of every group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Topics {
    topics: BTreeMap<String, Topic>,
    /// Bytes of every topic's messages and every group's dead letters (TOPICS_STORE_BYTES_MAX).
    bytes: u64,
    /// (due, topic, group, sequence): an in-flight delivery's ack wait, or a nacked message's
    /// redelivery time.
    timers: BTreeSet<(u64, String, String, Seq)>,
}

impl Topics {
    pub fn apply(&mut self, ctx: &mut Ctx, command: &TopicCommand) -> TopicResponse {
        let result = match command {
            TopicCommand::Create { name, config } => self.create(ctx, name, config),
            TopicCommand::Delete { name } => self.delete(ctx, name),
            TopicCommand::Publish { messages } => self.publish(ctx, messages),
            TopicCommand::CreateGroup {
                topic,
                group,
                config,
            } => self.create_group(ctx, topic, group, config),
            TopicCommand::DeleteGroup { topic, group } => self.delete_group(topic, group),
            TopicCommand::Fetch {
                topic,
                group,
                member,
                max,
                max_bytes,
            } => self.fetch(ctx, (topic, group), member, (*max, *max_bytes)),
            TopicCommand::Ack {
                topic,
                group,
                seq,
                token,
            } => self.ack(ctx, topic, group, *seq, *token),
            TopicCommand::Nack {
                topic,
                group,
                seq,
                token,
                delay_ms,
            } => self.nack(ctx, (topic, group), *seq, *token, *delay_ms),
            TopicCommand::InProgress {
                topic,
                group,
                seq,
                token,
            } => self.in_progress(ctx, topic, group, *seq, *token),
            TopicCommand::Redrive {
                topic,
                group,
                selector,
            } => self.redrive(ctx, topic, group, selector),
            TopicCommand::Purge {
                topic,
                group,
                selector,
            } => self.purge(topic, group, selector),
        };
        result.unwrap_or_else(TopicResponse::Refused)
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Topics named after `after`, at most `limit`, and whether more follow.
    pub fn list(&self, after: &str, limit: usize) -> (Vec<&Topic>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut matching = self
            .topics
            .range::<str, _>((Excluded(after), Unbounded))
            .map(|(_, topic)| topic);
        let page: Vec<&Topic> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Bytes held over all topics (messages and dead letters).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The topic that captures `subject`, if any.
    pub fn route(&self, subject: &str) -> Option<&Topic> {
        self.topics.values().find(|topic| topic.captures(subject))
    }

    /// The topics whose subjects overlap `pattern` (a subscription's).
    pub fn overlapping(&self, pattern: &str) -> Vec<&Topic> {
        self.topics
            .values()
            .filter(|topic| {
                topic
                    .config
                    .subjects
                    .iter()
                    .any(|own| subject::overlap(own, pattern))
            })
            .collect()
    }

    fn create(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        config: &TopicConfig,
    ) -> Result<TopicResponse, Refusal> {
        let config = TopicConfig {
            subjects: if config.subjects.is_empty() {
                vec![name.to_string(), format!("{name}.>")]
            } else {
                config.subjects.clone()
            },
            ..config.clone()
        };
        if let Some(existing) = self.topics.get(name) {
            if existing.config == config {
                return Ok(TopicResponse::Created { existing: true });
            }
            return Err(Refusal::new(
                RefusalCode::AlreadyExists,
                format!("name: topic {name:?} exists with another configuration"),
            ));
        }
        if self.topics.len() >= TOPICS_MAX {
            return Err(Refusal::new(
                RefusalCode::ResourceExhausted,
                format!("the cluster holds its maximum of {TOPICS_MAX} topics (TOPICS_MAX)"),
            ));
        }
        for pattern in &config.subjects {
            for other in self.topics.values() {
                if let Some(theirs) = other
                    .config
                    .subjects
                    .iter()
                    .find(|theirs| subject::overlap(pattern, theirs))
                {
                    return Err(Refusal::new(
                        RefusalCode::AlreadyExists,
                        format!(
                            "subjects: {pattern:?} overlaps {theirs:?} of topic {:?}; a subject belongs to one topic",
                            other.name
                        ),
                    ));
                }
            }
        }
        self.topics.insert(
            name.to_string(),
            Topic {
                name: name.to_string(),
                config,
                created_ms: ctx.now_ms,
                last_seq: 0,
                bytes: 0,
                discarded: 0,
                messages: BTreeMap::new(),
                dedup: BTreeMap::new(),
                dedup_by_time: BTreeSet::new(),
                groups: BTreeMap::new(),
            },
        );
        Ok(TopicResponse::Created { existing: false })
    }

    fn delete(&mut self, ctx: &mut Ctx, name: &str) -> Result<TopicResponse, Refusal> {
        let topic = self
            .topics
            .remove(name)
            .ok_or_else(|| unknown_topic(name))?;
        self.bytes -= topic.bytes + topic.dead_letter_bytes();
        self.timers.retain(|(_, t, _, _)| t != name);
        ctx.event(topic_event(name, TopicEventKind::Deleted));
        Ok(TopicResponse::Deleted)
    }

    fn create_group(
        &mut self,
        ctx: &mut Ctx,
        topic: &str,
        name: &str,
        config: &GroupConfig,
    ) -> Result<TopicResponse, Refusal> {
        let topic = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_topic(topic))?;
        if let Some(existing) = topic.groups.get(name) {
            if existing.config == *config {
                return Ok(TopicResponse::GroupCreated { existing: true });
            }
            return Err(Refusal::new(
                RefusalCode::AlreadyExists,
                format!(
                    "group: group {name:?} of topic {:?} exists with another configuration",
                    topic.name
                ),
            ));
        }
        if topic.groups.len() >= TOPIC_GROUPS_MAX {
            return Err(Refusal::new(
                RefusalCode::ResourceExhausted,
                format!(
                    "topic {:?} has its maximum of {TOPIC_GROUPS_MAX} groups (TOPIC_GROUPS_MAX)",
                    topic.name
                ),
            ));
        }
        let start = match config.start {
            StartPosition::All => topic.first_seq(),
            StartPosition::New => topic.last_seq + 1,
            StartPosition::FromSeq(seq) => seq.max(1),
            StartPosition::FromTimeMs(time_ms) => topic.seq_at_time(time_ms),
        };
        let group = Group::new(name, config.clone(), ctx.now_ms, start);
        topic.groups.insert(name.to_string(), group);
        Ok(TopicResponse::GroupCreated { existing: false })
    }

    fn delete_group(&mut self, topic: &str, name: &str) -> Result<TopicResponse, Refusal> {
        let topic_state = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_topic(topic))?;
        let group = topic_state
            .groups
            .remove(name)
            .ok_or_else(|| unknown_group(topic, name))?;
        self.bytes -= group.dead_letter_bytes();
        self.timers
            .retain(|(_, t, g, _)| !(t == topic && g == name));
        Ok(TopicResponse::GroupDeleted)
    }

    /// The group `name` of `topic`, for a command on it, with the topic's messages and the
    /// shared timers and byte count beside it.
    fn group_mut(&mut self, topic: &str, name: &str) -> Result<GroupRef<'_>, Refusal> {
        let topic_state = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_topic(topic))?;
        let group = topic_state
            .groups
            .get_mut(name)
            .ok_or_else(|| unknown_group(topic, name))?;
        Ok(GroupRef {
            topic: topic.to_string(),
            messages: &topic_state.messages,
            group,
            timers: &mut self.timers,
            bytes: &mut self.bytes,
        })
    }
}

/// One group borrowed for a command: its topic's messages, and the shared timers and byte
/// count it keeps current.
pub(crate) struct GroupRef<'a> {
    topic: String,
    messages: &'a BTreeMap<Seq, Message>,
    group: &'a mut Group,
    timers: &'a mut BTreeSet<(u64, String, String, Seq)>,
    bytes: &'a mut u64,
}

impl Primitive for Topics {
    /// Fires the due delivery timers (an ack wait passed: redelivery or a dead letter; a nack
    /// delay passed: the message is available again), then discards messages older than their
    /// topic's max age and forgets idempotency keys older than the duplicate window.
    fn tick(&mut self, ctx: &mut Ctx) {
        while let Some((due, topic, group, seq)) = self.timers.first().cloned() {
            if due > ctx.now_ms {
                break;
            }
            self.timers.pop_first();
            self.fire(ctx, &topic, &group, seq, due);
        }
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            self.expire(ctx, &name);
        }
    }

    fn next_due_ms(&self, _now_ms: u64) -> Option<u64> {
        let timer = self.timers.first().map(|t| t.0);
        let retention = self.topics.values().filter_map(|topic| {
            let age = (topic.config.max_age_ms > 0)
                .then(|| topic.messages.first_key_value())
                .flatten()
                .map(|(_, m)| m.published_ms.saturating_add(topic.config.max_age_ms));
            let dedup = topic
                .dedup_by_time
                .first()
                .map(|(at, _)| at.saturating_add(TOPIC_DUPLICATE_WINDOW_MS));
            age.into_iter().chain(dedup).min()
        });
        timer.into_iter().chain(retention).min()
    }

    /// 0 with no topics, so that states without topics digest as before they existed.
    fn digest(&self) -> u64 {
        if self.topics.is_empty() {
            return 0;
        }
        let mut hash = Fnv::default();
        hash.write(&self.bytes.to_be_bytes());
        hash.write(&(self.timers.len() as u64).to_be_bytes());
        for topic in self.topics.values() {
            hash.write(&(topic.name.len() as u64).to_be_bytes());
            hash.write(topic.name.as_bytes());
            for n in [
                topic.last_seq,
                topic.bytes,
                topic.discarded,
                topic.messages.len() as u64,
                topic.first_seq(),
                topic.dedup.len() as u64,
            ] {
                hash.write(&n.to_be_bytes());
            }
            for group in topic.groups.values() {
                group.digest_into(&mut hash);
            }
        }
        hash.finish()
    }
}

pub(crate) fn topic_event(topic: &str, kind: TopicEventKind) -> CoordEventKind {
    CoordEventKind::Topic(TopicEvent {
        topic: topic.to_string(),
        kind,
    })
}

fn unknown_topic(name: &str) -> Refusal {
    Refusal::new(
        RefusalCode::NotFound,
        format!("topic: topic {name:?} does not exist"),
    )
}

fn unknown_group(topic: &str, group: &str) -> Refusal {
    Refusal::new(
        RefusalCode::NotFound,
        format!("group: topic {topic:?} has no group {group:?}"),
    )
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT (the commands) or SNAPSHOT_FORMAT (the rest). ----

impl TopicCommand {
    pub const fn code(&self) -> u16 {
        match self {
            TopicCommand::Create { .. } => 0,
            TopicCommand::Delete { .. } => 1,
            TopicCommand::Publish { .. } => 2,
            TopicCommand::CreateGroup { .. } => 3,
            TopicCommand::DeleteGroup { .. } => 4,
            TopicCommand::Fetch { .. } => 5,
            TopicCommand::Ack { .. } => 6,
            TopicCommand::Nack { .. } => 7,
            TopicCommand::InProgress { .. } => 8,
            TopicCommand::Redrive { .. } => 9,
            TopicCommand::Purge { .. } => 10,
        }
    }
}

impl StartPosition {
    pub const fn code(&self) -> u16 {
        match self {
            StartPosition::All => 0,
            StartPosition::New => 1,
            StartPosition::FromSeq(_) => 2,
            StartPosition::FromTimeMs(_) => 3,
        }
    }
}

impl DeadLetterSelector {
    pub const fn code(&self) -> u16 {
        match self {
            DeadLetterSelector::Seqs(_) => 0,
            DeadLetterSelector::All => 1,
        }
    }
}

impl TopicResponse {
    pub const fn code(&self) -> u16 {
        match self {
            TopicResponse::Created { .. } => 0,
            TopicResponse::Deleted => 1,
            TopicResponse::Published { .. } => 2,
            TopicResponse::GroupCreated { .. } => 3,
            TopicResponse::GroupDeleted => 4,
            TopicResponse::Fetched { .. } => 5,
            TopicResponse::Acked => 6,
            TopicResponse::Nacked => 7,
            TopicResponse::Extended { .. } => 8,
            TopicResponse::Redriven { .. } => 9,
            TopicResponse::Purged { .. } => 10,
            TopicResponse::Refused(_) => 11,
        }
    }
}

impl RefusalCode {
    pub const fn code(&self) -> u16 {
        match self {
            RefusalCode::NotFound => 0,
            RefusalCode::AlreadyExists => 1,
            RefusalCode::FailedPrecondition => 2,
            RefusalCode::InvalidArgument => 3,
            RefusalCode::ResourceExhausted => 4,
            RefusalCode::StaleToken => 5,
        }
    }
}

impl TopicEventKind {
    pub const fn code(&self) -> u16 {
        match self {
            TopicEventKind::Published { .. } => 0,
            TopicEventKind::GroupChanged { .. } => 1,
            TopicEventKind::Deleted => 2,
        }
    }
}

impl PendingState {
    pub const fn code(&self) -> u16 {
        match self {
            PendingState::Ready { .. } => 0,
            PendingState::InFlight { .. } => 1,
        }
    }
}

#[cfg(test)]
impl Topics {
    /// Recomputes every count and index from the records and compares (the table tests run it
    /// after each command).
    pub(crate) fn check_invariants(&self, now_ms: u64) {
        let mut bytes = 0;
        let (mut timers, mut allowed) = (BTreeSet::new(), BTreeSet::new());
        for topic in self.topics.values() {
            let own: u64 = topic.messages.values().map(Message::bytes).sum();
            assert_eq!(own, topic.bytes, "topic {} bytes", topic.name);
            assert!(topic.messages.keys().all(|seq| *seq <= topic.last_seq));
            assert_eq!(topic.dedup.len(), topic.dedup_by_time.len());
            bytes += own + topic.dead_letter_bytes();
            for group in topic.groups.values() {
                let sets = (&mut timers, &mut allowed);
                group.check_invariants(&topic.name, &topic.messages, now_ms, sets);
            }
        }
        assert_eq!(bytes, self.bytes, "store bytes");
        assert!(
            timers.is_subset(&self.timers),
            "every timer that must be armed"
        );
        assert!(
            self.timers
                .iter()
                .all(|t| timers.contains(t) || allowed.contains(t)),
            "only timers of outstanding messages"
        );
    }
}

#[cfg(test)]
mod tests;
