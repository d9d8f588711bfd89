//! Topics (topics.proto): create, read and delete topics, publish (batched, all or nothing,
//! idempotent), consumer groups (fetch, ack, nack, in-progress, dead letters) and broadcast
//! subscriptions that resume by sequence on any node.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use conclave_proto::limits::{
    MAX_REQUEST_BYTES, MAX_TASK_LIST_LIMIT, TOPIC_ACK_WAIT_MS_MAX, TOPIC_DEAD_LETTER_SEQS_MAX,
    TOPIC_FETCH_MAX, TOPIC_FETCH_WAIT_MS_MAX, TOPIC_MAX_DELIVERIES_MAX, TOPIC_NACK_DELAY_MS_MAX,
    TOPIC_PUBLISH_BATCH_MAX, TOPIC_SUBJECTS_MAX,
};
use conclave_proto::v1::topics_client::TopicsClient;
use conclave_proto::v1::{
    self as proto, AckRequest, CreateGroupRequest, CreateTopicRequest, DeleteGroupRequest,
    DeleteTopicRequest, FetchRequest, GetGroupRequest, GetTopicRequest, InProgressRequest,
    ListTopicDeadLettersRequest, ListTopicsRequest, NackRequest, PublishMessage, PublishRequest,
    PublishResult, PurgeDeadLettersRequest, ReadConsistency, RedriveDeadLettersRequest,
    SubscribeEvent, SubscribeEventKind, SubscribeRequest, TopicConfig,
};
use conclave_proto::validate::{self, topic as rules};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use futures::{FutureExt, TryFutureExt};
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, Client, MAX_RESPONSE_BYTES};
use crate::endpoint::Node;
use crate::error::{Error, Result};
use crate::feed::{self, FeedSpec, Mark, Messages, Resume};
use crate::kv::Header;
use crate::locks::waiting;

pub use conclave_proto::v1::{
    trigger::Action as TriggerAction, DeadLetter as TopicDeadLetter, Delivery, GroupInfo,
    Message as TopicMessage, TopicInfo, Trigger as TopicTrigger,
};

/// A topic's subjects and retention ([`Client::create_topic`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicOptions {
    /// The subject patterns it captures; empty: `NAME` and `NAME.>`.
    pub subjects: Vec<String>,
    /// Retention: 0 / zero for no limit of that kind.
    pub max_msgs: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// Where a group or a subscription starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TopicStart {
    /// The oldest message kept.
    #[default]
    All,
    /// Messages stored from now on.
    New,
    /// From this sequence.
    Sequence(u64),
    /// From the first message published at or after this Unix time in ms.
    Time(u64),
}

impl TopicStart {
    fn wire(self) -> (i32, u64, u64) {
        match self {
            TopicStart::All => (proto::StartPosition::All as i32, 0, 0),
            TopicStart::New => (proto::StartPosition::New as i32, 0, 0),
            TopicStart::Sequence(seq) => (proto::StartPosition::Sequence as i32, seq, 0),
            TopicStart::Time(ms) => (proto::StartPosition::Time as i32, 0, ms),
        }
    }
}

/// A consumer group's settings ([`Client::create_group`]); zero values take the server's
/// defaults (ack wait 30 s, 5 deliveries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupOptions {
    /// A subject pattern; empty: all of the topic's messages.
    pub filter: String,
    pub start: TopicStart,
    pub ack_wait: Duration,
    pub max_deliveries: u32,
    /// Turn per-key order off.
    pub unordered: bool,
}

/// A message to publish: `PublishMessage::new(subject, data)` and the builder methods.
pub trait PublishMessageExt: Sized {
    fn new(subject: impl Into<String>, data: impl Into<Vec<u8>>) -> Self;
    fn with_key(self, key: impl Into<Vec<u8>>) -> Self;
    fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> Self;
    fn with_idempotency_key(self, key: impl Into<String>) -> Self;
}

impl PublishMessageExt for PublishMessage {
    fn new(subject: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        PublishMessage {
            subject: subject.into(),
            data: data.into(),
            ..PublishMessage::default()
        }
    }

    fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = key.into();
        self
    }
}

/// The answer to a Publish: one result per message, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub header: Header,
    pub results: Vec<PublishResult>,
}

/// One page of topics, in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPage {
    pub header: Header,
    pub topics: Vec<TopicInfo>,
    pub more: bool,
}

pub(crate) fn check_publish(messages: &[PublishMessage]) -> Result<()> {
    if messages.is_empty() || messages.len() > TOPIC_PUBLISH_BATCH_MAX {
        return Err(Error::invalid_input(format!(
            "messages: {} messages; a Publish carries 1 ..= {TOPIC_PUBLISH_BATCH_MAX}",
            messages.len()
        )));
    }
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        rules::subject(&format!("{field}.subject"), &m.subject)?;
        let headers: BTreeMap<String, String> = m
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = m.key.as_deref().unwrap_or_default();
        rules::message(&field, key, &headers, &m.data, &m.idempotency_key)?;
    }
    Ok(())
}

fn check_group(topic: &str, group: &str) -> Result<()> {
    rules::topic_name("topic", topic)?;
    validate::name("group", group)?;
    Ok(())
}

fn millis(field: &str, value: Duration, max: u64) -> Result<u64> {
    let ms = value.as_millis() as u64;
    if ms > max {
        return Err(Error::invalid_input(format!(
            "{field}: {ms} ms exceeds the limit of {max} ms"
        )));
    }
    Ok(ms)
}

impl Client {
    /// Creates topic `name`; `Ok(true)` when it existed already with the same configuration.
    pub async fn create_topic(&self, name: &str, options: &TopicOptions) -> Result<bool> {
        rules::topic_name("name", name)?;
        if options.subjects.len() > TOPIC_SUBJECTS_MAX {
            return Err(Error::invalid_input(format!(
                "subjects: at most {TOPIC_SUBJECTS_MAX} patterns"
            )));
        }
        for (i, pattern) in options.subjects.iter().enumerate() {
            rules::pattern(&format!("subjects[{i}]"), pattern)?;
        }
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CreateTopicRequest {
                    request_id: Some(pending.request_id()),
                    name: name.to_string(),
                    config: Some(TopicConfig {
                        subjects: options.subjects.clone(),
                        max_msgs: options.max_msgs,
                        max_bytes: options.max_bytes,
                        max_age_ms: options.max_age.as_millis() as u64,
                    }),
                };
                async move { topics(channel).create_topic(request).await }
            })
            .await?;
        Ok(response.existing)
    }

    /// Deletes a topic with its messages, groups and dead letters.
    pub async fn delete_topic(&self, name: &str) -> Result<Header> {
        rules::topic_name("name", name)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = DeleteTopicRequest {
                    request_id: Some(pending.request_id()),
                    name: name.to_string(),
                };
                async move { topics(channel).delete_topic(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Reads one topic with its groups' positions, linearizably.
    pub async fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        rules::topic_name("name", name)?;
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetTopicRequest {
                    name: name.to_string(),
                    consistency: consistency.into(),
                };
                async move { topics(channel).get_topic(request).await }
            })
            .await?;
        response.topic.ok_or_else(|| missing("topic"))
    }

    /// One page of topics after `after`, in name order.
    pub async fn list_topics(&self, after: &str, limit: u32) -> Result<TopicPage> {
        if limit > MAX_TASK_LIST_LIMIT {
            return Err(Error::invalid_input(format!(
                "limit is {limit}; a page holds at most {MAX_TASK_LIST_LIMIT}"
            )));
        }
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = ListTopicsRequest {
                    after: after.to_string(),
                    limit,
                    consistency: consistency.into(),
                };
                async move { topics(channel).list_topics(request).await }
            })
            .await?;
        Ok(TopicPage {
            header: response.header.into(),
            topics: response.topics,
            more: response.more,
        })
    }

    /// Publishes a batch, all or nothing. A retry after an unknown outcome carries the same
    /// request id, so each message is stored once; idempotency keys cover retries across calls.
    pub async fn publish(&self, messages: Vec<PublishMessage>) -> Result<Published> {
        check_publish(&messages)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = PublishRequest {
                    request_id: Some(pending.request_id()),
                    messages: messages.clone(),
                };
                async move { topics(channel).publish(request).await }
            })
            .await?;
        Ok(Published {
            header: response.header.into(),
            results: response.results,
        })
    }

    /// Creates consumer group `group` of `topic`; `Ok(true)` when it existed already alike.
    pub async fn create_group(
        &self,
        topic: &str,
        group: &str,
        options: &GroupOptions,
    ) -> Result<bool> {
        check_group(topic, group)?;
        if !options.filter.is_empty() {
            rules::pattern("filter", &options.filter)?;
        }
        let ack_wait_ms = millis("ack_wait", options.ack_wait, TOPIC_ACK_WAIT_MS_MAX)?;
        if options.max_deliveries > TOPIC_MAX_DELIVERIES_MAX {
            return Err(Error::invalid_input(format!(
                "max_deliveries: at most {TOPIC_MAX_DELIVERIES_MAX}"
            )));
        }
        let (start, start_seq, start_time_ms) = options.start.wire();
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CreateGroupRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    filter: options.filter.clone(),
                    start,
                    start_seq,
                    start_time_ms,
                    ack_wait_ms,
                    max_deliveries: options.max_deliveries,
                    unordered: options.unordered,
                };
                async move { topics(channel).create_group(request).await }
            })
            .await?;
        Ok(response.existing)
    }

    /// Deletes a consumer group with its deliveries and dead letters.
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<Header> {
        check_group(topic, group)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = DeleteGroupRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                };
                async move { topics(channel).delete_group(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Reads one group's position, linearizably.
    pub async fn get_group(&self, topic: &str, group: &str) -> Result<GroupInfo> {
        check_group(topic, group)?;
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetGroupRequest {
                    topic: topic.to_string(),
                    group: group.to_string(),
                    consistency: consistency.into(),
                };
                async move { topics(channel).get_group(request).await }
            })
            .await?;
        response.group.ok_or_else(|| missing("group"))
    }

    /// Leases up to `max` messages of the group to `member`, waiting up to `wait` for one
    /// (empty when none came). Each delivery is acked ([`Client::ack`]) with its token.
    pub async fn fetch(
        &self,
        topic: &str,
        group: &str,
        member: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        check_group(topic, group)?;
        validate::name("member", member)?;
        if !(1..=TOPIC_FETCH_MAX).contains(&max) {
            return Err(Error::invalid_input(format!(
                "max: {max} is outside 1 ..= {TOPIC_FETCH_MAX}"
            )));
        }
        let wait_ms = millis("wait", wait, TOPIC_FETCH_WAIT_MS_MAX)?;
        let pending = self.begin_write();
        let response = self
            .call_with(CallKind::Write, waiting(wait), |channel| {
                let request = FetchRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    member: member.to_string(),
                    max,
                    wait_ms,
                };
                async move { topics(channel).fetch(request).await }
            })
            .await?;
        Ok(response.deliveries)
    }

    /// Acks a delivery. A token that is no longer the message's current delivery is
    /// [`Error::LeaseLost`]: the message was (or will be) delivered again elsewhere.
    pub async fn ack(&self, topic: &str, group: &str, seq: u64, token: u64) -> Result<Header> {
        check_group(topic, group)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = AckRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    seq,
                    token,
                };
                async move { topics(channel).ack(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Gives a delivery back, to be redelivered after `delay`.
    pub async fn nack(
        &self,
        topic: &str,
        group: &str,
        (seq, token): (u64, u64),
        delay: Duration,
    ) -> Result<Header> {
        check_group(topic, group)?;
        let delay_ms = millis("delay", delay, TOPIC_NACK_DELAY_MS_MAX)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = NackRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    seq,
                    token,
                    delay_ms,
                };
                async move { topics(channel).nack(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Restarts a delivery's ack wait; answers the new deadline (cluster time, Unix ms).
    pub async fn in_progress(&self, topic: &str, group: &str, seq: u64, token: u64) -> Result<u64> {
        check_group(topic, group)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = InProgressRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    seq,
                    token,
                };
                async move { topics(channel).in_progress(request).await }
            })
            .await?;
        Ok(response.deadline_ms)
    }

    /// One page of a group's dead letters after `after_seq`; and whether more follow.
    pub async fn list_topic_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<(Vec<TopicDeadLetter>, bool)> {
        check_group(topic, group)?;
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = ListTopicDeadLettersRequest {
                    topic: topic.to_string(),
                    group: group.to_string(),
                    after_seq,
                    limit,
                    consistency: consistency.into(),
                };
                async move { topics(channel).list_dead_letters(request).await }
            })
            .await?;
        Ok((response.dead_letters, response.more))
    }

    /// Sends dead letters back to their group (`seqs`, or every one when empty); answers
    /// (redriven, left because retention discarded their message).
    pub async fn redrive_topic_dead_letters(
        &self,
        topic: &str,
        group: &str,
        seqs: &[u64],
    ) -> Result<(u64, u64)> {
        check_group(topic, group)?;
        check_seqs(seqs)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = RedriveDeadLettersRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    seqs: seqs.to_vec(),
                    all: seqs.is_empty(),
                };
                async move { topics(channel).redrive_dead_letters(request).await }
            })
            .await?;
        Ok((response.redriven, response.discarded))
    }

    /// Forgets dead letters (`seqs`, or every one when empty); answers how many.
    pub async fn purge_topic_dead_letters(
        &self,
        topic: &str,
        group: &str,
        seqs: &[u64],
    ) -> Result<u64> {
        check_group(topic, group)?;
        check_seqs(seqs)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = PurgeDeadLettersRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    seqs: seqs.to_vec(),
                    all: seqs.is_empty(),
                };
                async move { topics(channel).purge_dead_letters(request).await }
            })
            .await?;
        Ok(response.purged)
    }

    /// Adds `trigger` to `topic`: a task (the `Task` action: a submit template) or a workflow (the
    /// `Workflow` action) per message stored from now on whose subject matches its pattern,
    /// exactly once. `Ok(true)` when the same trigger existed already.
    pub async fn create_trigger(&self, topic: &str, trigger: TopicTrigger) -> Result<bool> {
        rules::topic_name("topic", topic)?;
        validate::name("trigger.name", &trigger.name)?;
        rules::pattern("trigger.subject", &trigger.subject)?;
        if trigger.action.is_none() {
            return Err(Error::invalid_input(
                "trigger.action: a task or a workflow is required",
            ));
        }
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = proto::CreateTriggerRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    trigger: Some(trigger.clone()),
                };
                async move { topics(channel).create_trigger(request).await }
            })
            .await?;
        Ok(response.existing)
    }

    /// Removes a trigger: messages stored afterwards do not fire it.
    pub async fn delete_trigger(&self, topic: &str, name: &str) -> Result<Header> {
        rules::topic_name("topic", topic)?;
        validate::name("name", name)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = proto::DeleteTriggerRequest {
                    request_id: Some(pending.request_id()),
                    topic: topic.to_string(),
                    name: name.to_string(),
                };
                async move { topics(channel).delete_trigger(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// A topic's triggers with what they did (fired, failed, the last refusal).
    pub async fn list_triggers(&self, topic: &str) -> Result<Vec<TopicTrigger>> {
        rules::topic_name("topic", topic)?;
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = proto::ListTriggersRequest {
                    topic: topic.to_string(),
                    consistency: consistency.into(),
                };
                async move { topics(channel).list_triggers(request).await }
            })
            .await?;
        Ok(response.triggers)
    }

    /// Subscribes to the messages matching `subject` (a pattern; it must overlap one topic's
    /// subjects unless `topic` is given) from `start`. The stream resumes on another node after
    /// the last sequence it yielded, with no gap and no repeat; a sequence retention discarded
    /// ends it with `Rejected { code: OutOfRange }`.
    pub async fn subscribe(
        &self,
        subject: &str,
        topic: &str,
        start: TopicStart,
    ) -> Result<Subscription> {
        if !subject.is_empty() {
            rules::pattern("subject", subject)?;
        }
        if !topic.is_empty() {
            rules::topic_name("topic", topic)?;
        }
        let feed = SubscriptionFeed {
            subject: subject.to_string(),
            topic: Arc::new(Mutex::new(topic.to_string())),
            start,
        };
        let named = Arc::clone(&feed.topic);
        let stream = feed::follow(self, feed, None).await?;
        let topic = named.lock().expect("not poisoned").clone();
        let inner = stream
            .filter_map(|event| async move {
                match event {
                    Ok(event) => event.message.map(Ok),
                    Err(error) => Some(Err(error)),
                }
            })
            .boxed();
        Ok(Subscription { inner, topic })
    }
}

fn check_seqs(seqs: &[u64]) -> Result<()> {
    if seqs.len() > TOPIC_DEAD_LETTER_SEQS_MAX {
        return Err(Error::invalid_input(format!(
            "seqs: at most {TOPIC_DEAD_LETTER_SEQS_MAX} a call"
        )));
    }
    Ok(())
}

fn missing(what: &str) -> Error {
    Error::Unavailable {
        message: format!("the server's answer lacks its {what}"),
    }
}

/// A subscription's messages, in sequence order ([`Client::subscribe`]).
pub struct Subscription {
    inner: BoxStream<'static, Result<TopicMessage>>,
    topic: String,
}

impl Subscription {
    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<TopicMessage>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

/// A subscription as a feed: STARTED names the topic (a subscription by pattern learns it
/// there, and a resume names it), PROGRESS moves the cursor, a sequence retention discarded ends
/// it (`gone`).
struct SubscriptionFeed {
    subject: String,
    /// Empty until the first STARTED names it.
    topic: Arc<Mutex<String>>,
    start: TopicStart,
}

impl FeedSpec for SubscriptionFeed {
    type Message = SubscribeEvent;
    const WHAT: &'static str = "subscription";
    const STARTED: bool = true;

    fn open(
        &self,
        channel: Channel,
        resume: Resume,
    ) -> BoxFuture<'static, std::result::Result<Messages<SubscribeEvent>, tonic::Status>> {
        let (start, start_seq, start_time_ms) = self.start.wire();
        let request = SubscribeRequest {
            subject: self.subject.clone(),
            topic: self.topic.lock().expect("not poisoned").clone(),
            start,
            start_seq,
            start_time_ms,
            after_seq: match resume {
                Resume::After(seq) => Some(seq),
                Resume::Beginning | Resume::Again => None,
            },
        };
        let opening = async move { topics(channel).subscribe(request).await };
        opening.map_ok(|r| r.into_inner().boxed()).boxed()
    }

    fn mark(&self, event: &SubscribeEvent) -> Mark {
        match event.kind() {
            SubscribeEventKind::Started => {
                if !event.topic.is_empty() {
                    *self.topic.lock().expect("not poisoned") = event.topic.clone();
                }
                Mark::Started(event.seq)
            }
            SubscribeEventKind::Progress => Mark::Progress(event.seq),
            _ => Mark::Change(event.seq),
        }
    }

    fn gone(&self, node: &Node, status: &tonic::Status) -> Option<Error> {
        Some(feed::rejected(node, status))
    }
}

/// A Topics stub on `channel`, accepting responses up to the client's bound.
fn topics(channel: Channel) -> TopicsClient<Channel> {
    TopicsClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

/// Converts a header map of the wire to a sorted one, for printing.
pub fn sorted_headers(headers: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

served_by_header!(
    proto::CreateTopicResponse,
    proto::DeleteTopicResponse,
    proto::GetTopicResponse,
    proto::ListTopicsResponse,
    proto::PublishResponse,
    proto::CreateGroupResponse,
    proto::CreateTriggerResponse,
    proto::DeleteTriggerResponse,
    proto::ListTriggersResponse,
    proto::DeleteGroupResponse,
    proto::GetGroupResponse,
    proto::FetchResponse,
    proto::AckResponse,
    proto::NackResponse,
    proto::InProgressResponse,
    proto::ListTopicDeadLettersResponse,
    proto::RedriveDeadLettersResponse,
    proto::PurgeDeadLettersResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn topic_input_is_checked_locally() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        let message = |result: Result<Published>| match result {
            Err(Error::InvalidInput { message }) => message,
            other => panic!("expected invalid input, got {other:?}"),
        };
        let wildcard = client
            .publish(vec![PublishMessage::new("orders.*", "x")])
            .await;
        assert!(message(wildcard).starts_with("messages[0].subject"));
        assert!(message(client.publish(Vec::new()).await).contains("1 ..= 1000"));
        let big = PublishMessage::new("orders", vec![0; 1024 * 1024 + 1]);
        assert!(message(client.publish(vec![big]).await).contains("TOPIC_MESSAGE_DATA_BYTES_MAX"));
        let fetch = client
            .fetch("orders", "g", "m", 0, Duration::ZERO)
            .await
            .expect_err("max 0");
        assert!(matches!(fetch, Error::InvalidInput { .. }));
    }
}
