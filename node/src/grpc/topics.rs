//! The Topics service (topics.proto): validate, write or forward, long-poll Fetch, read, convert;
//! `subscribe.rs` serves Subscribe from this node's applied state.

mod subscribe;
mod triggers;

use std::collections::BTreeMap;
use std::time::Duration;

use conclave_proto::limits::{
    TOPIC_ACK_WAIT_MS_DEFAULT, TOPIC_ACK_WAIT_MS_MAX, TOPIC_ACK_WAIT_MS_MIN,
    TOPIC_DEAD_LETTER_SEQS_MAX, TOPIC_FETCH_BYTES_MAX, TOPIC_FETCH_DEFAULT, TOPIC_FETCH_MAX,
    TOPIC_FETCH_WAIT_MS_MAX, TOPIC_MAX_AGE_MS_MAX, TOPIC_MAX_BYTES_MAX,
    TOPIC_MAX_DELIVERIES_DEFAULT, TOPIC_MAX_DELIVERIES_MAX, TOPIC_MAX_MSGS_MAX,
    TOPIC_NACK_DELAY_MS_MAX, TOPIC_SUBJECTS_MAX,
};
use conclave_proto::v1 as pb;
use conclave_proto::v1::topics_client::TopicsClient;
use conclave_proto::v1::topics_server::Topics as TopicsApi;
use conclave_proto::validate::{self, topic as rules};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::gateway::{
    bounded_page, check_request_size, invalid, read_consistency, request_id, Gateway,
};
use super::status::to_status;
use super::streams::{stopped, EventStream};
use super::validation::{self, name, rule};
use crate::error::{refused, Error};
use crate::limits::MAX_REQUEST_BYTES;
use crate::node::Consistency;
use crate::state_machine::coordination::CoordEventKind;
use crate::state_machine::topics::{
    DeadLetter, DeadLetterSelector, Delivery, Group, GroupConfig, Message, NewMessage,
    StartPosition, Topic, TopicCommand, TopicConfig, TopicEventKind, TopicResponse,
};
use crate::state_machine::{Command, Response as SmResponse, StateMachine};

pub struct TopicsService {
    gateway: Gateway,
}

impl TopicsService {
    pub fn new(gateway: Gateway) -> Self {
        TopicsService { gateway }
    }
}

fn client(channel: Channel) -> TopicsClient<Channel> {
    TopicsClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

/// The answer to a topic write for `write_or_forward`, made by `answer` from the store revision
/// and the (successful) topic response.
fn topic_answer<Resp>(
    answer: impl FnOnce(u64, TopicResponse) -> Result<Resp, Status>,
) -> impl FnOnce(SmResponse) -> Result<Response<Resp>, Status> {
    move |response| match response {
        SmResponse::Topics { revision, response } => answer(revision, response).map(Response::new),
        other => Err(to_status(Error::Fatal(format!(
            "a topic command was answered {other:?}"
        )))),
    }
}

fn unexpected(response: TopicResponse) -> Status {
    Status::internal(format!("unexpected topic response {response:?}"))
}

// --- conversions ---------------------------------------------------------------------------------

pub(crate) fn message_to_pb(topic: &str, message: &Message) -> pb::Message {
    pb::Message {
        topic: topic.to_string(),
        seq: message.seq,
        subject: message.subject.clone(),
        key: message.key.clone(),
        headers: message
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        data: message.data.clone(),
        published_ms: message.published_ms,
    }
}

fn group_to_pb(topic: &Topic, group: &Group) -> pb::GroupInfo {
    let stats = group.stats(topic.first_seq(), topic.last_seq);
    pb::GroupInfo {
        name: group.name.clone(),
        filter: group.config.filter.clone(),
        ack_wait_ms: group.config.ack_wait_ms,
        max_deliveries: group.config.max_deliveries,
        ordered_keys: group.config.ordered_keys,
        created_ms: group.created_ms,
        ack_floor: stats.ack_floor,
        last_delivered: stats.last_delivered,
        in_flight: stats.in_flight,
        waiting: stats.waiting,
        redeliveries: stats.redeliveries,
        acked: stats.acked,
        dead_letters: stats.dead_letters,
        dead_letters_dropped: stats.dead_letters_dropped,
        lag: stats.lag,
        members: stats.members,
    }
}

fn topic_to_pb(topic: &Topic) -> pb::TopicInfo {
    pb::TopicInfo {
        name: topic.name.clone(),
        config: Some(pb::TopicConfig {
            subjects: topic.config.subjects.clone(),
            max_msgs: topic.config.max_msgs,
            max_bytes: topic.config.max_bytes,
            max_age_ms: topic.config.max_age_ms,
        }),
        created_ms: topic.created_ms,
        first_seq: topic.first_seq(),
        last_seq: topic.last_seq,
        messages: topic.message_count(),
        bytes: topic.bytes,
        discarded: topic.discarded,
        groups: topic.groups().map(|g| group_to_pb(topic, g)).collect(),
    }
}

fn dead_letter_to_pb(topic: &str, dead: &DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        message: Some(message_to_pb(topic, &dead.message)),
        reason: dead.reason.clone(),
        deliveries: dead.deliveries,
        dead_ms: dead.dead_ms,
    }
}

// --- validation ----------------------------------------------------------------------------------

fn topic_config(name: &str, config: Option<pb::TopicConfig>) -> Result<TopicConfig, Status> {
    let config = config.unwrap_or_default();
    if config.subjects.len() > TOPIC_SUBJECTS_MAX {
        return Err(invalid(format!(
            "config.subjects: {} patterns exceeds the limit of {TOPIC_SUBJECTS_MAX} (TOPIC_SUBJECTS_MAX)",
            config.subjects.len()
        )));
    }
    for (i, pattern) in config.subjects.iter().enumerate() {
        rule(rules::pattern(&format!("config.subjects[{i}]"), pattern))?;
    }
    for (field, value, max, limit) in [
        (
            "max_msgs",
            config.max_msgs,
            TOPIC_MAX_MSGS_MAX,
            "TOPIC_MAX_MSGS_MAX",
        ),
        (
            "max_bytes",
            config.max_bytes,
            TOPIC_MAX_BYTES_MAX,
            "TOPIC_MAX_BYTES_MAX",
        ),
        (
            "max_age_ms",
            config.max_age_ms,
            TOPIC_MAX_AGE_MS_MAX,
            "TOPIC_MAX_AGE_MS_MAX",
        ),
    ] {
        if value > max {
            return Err(invalid(format!(
                "config.{field}: {value} exceeds the limit of {max} ({limit})"
            )));
        }
    }
    rule(rules::topic_name("name", name))?;
    Ok(TopicConfig {
        subjects: config.subjects,
        max_msgs: config.max_msgs,
        max_bytes: config.max_bytes,
        max_age_ms: config.max_age_ms,
    })
}

/// The wire's messages as the state machine's, each checked (`validate::topic`).
pub(crate) fn new_messages(messages: Vec<pb::PublishMessage>) -> Result<Vec<NewMessage>, Status> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("messages[{i}]");
            let headers: BTreeMap<String, String> = m.headers.into_iter().collect();
            rule(rules::subject(&format!("{field}.subject"), &m.subject))?;
            let key = m.key.as_deref().unwrap_or_default();
            rule(rules::message(
                &field,
                key,
                &headers,
                &m.data,
                &m.idempotency_key,
            ))?;
            Ok(NewMessage {
                subject: m.subject,
                key: m.key,
                headers,
                data: m.data,
                idempotency_key: m.idempotency_key,
            })
        })
        .collect()
}

fn start_position(start: i32, seq: u64, time_ms: u64) -> Result<StartPosition, Status> {
    match pb::StartPosition::try_from(start) {
        Ok(pb::StartPosition::All) => Ok(StartPosition::All),
        Ok(pb::StartPosition::New) => Ok(StartPosition::New),
        Ok(pb::StartPosition::Sequence) => {
            rule(validate::non_zero("start_seq", seq))?;
            Ok(StartPosition::FromSeq(seq))
        }
        Ok(pb::StartPosition::Time) => Ok(StartPosition::FromTimeMs(time_ms)),
        Err(_) => Err(invalid(format!("start: unknown value {start}"))),
    }
}

fn group_config(req: &pb::CreateGroupRequest) -> Result<GroupConfig, Status> {
    if !req.filter.is_empty() {
        rule(rules::pattern("filter", &req.filter))?;
    }
    let ack_wait_ms = rule(validate::defaulted(
        "ack_wait_ms",
        req.ack_wait_ms,
        TOPIC_ACK_WAIT_MS_DEFAULT,
        TOPIC_ACK_WAIT_MS_MIN,
        TOPIC_ACK_WAIT_MS_MAX,
    ))?;
    let max_deliveries = rule(validate::defaulted(
        "max_deliveries",
        u64::from(req.max_deliveries),
        u64::from(TOPIC_MAX_DELIVERIES_DEFAULT),
        1,
        u64::from(TOPIC_MAX_DELIVERIES_MAX),
    ))?;
    Ok(GroupConfig {
        filter: req.filter.clone(),
        start: start_position(req.start, req.start_seq, req.start_time_ms)?,
        ack_wait_ms,
        max_deliveries: max_deliveries as u32,
        ordered_keys: !req.unordered,
    })
}

fn topic_and_group(topic: &str, group: &str) -> Result<(), Status> {
    rule(rules::topic_name("topic", topic))?;
    name("group", group)
}

fn selector(seqs: Vec<u64>, all: bool) -> Result<DeadLetterSelector, Status> {
    match (all, seqs.is_empty()) {
        (true, true) => Ok(DeadLetterSelector::All),
        (true, false) => Err(invalid("seqs: give sequences or `all`, not both")),
        (false, true) => Err(invalid("seqs: name at least one sequence, or set `all`")),
        (false, false) if seqs.len() > TOPIC_DEAD_LETTER_SEQS_MAX => Err(invalid(format!(
            "seqs: {} exceeds the limit of {TOPIC_DEAD_LETTER_SEQS_MAX} (TOPIC_DEAD_LETTER_SEQS_MAX)",
            seqs.len()
        ))),
        (false, false) => Ok(DeadLetterSelector::Seqs(seqs)),
    }
}

// --- Fetch ---------------------------------------------------------------------------------------

/// The deliveries as the wire's, with their messages read from this node's applied state (the
/// leader's, which applied the Fetch). A message retention discarded meanwhile is left out: its
/// delivery is gone from the group too.
fn deliveries_to_pb(
    machine: &StateMachine,
    topic: &str,
    group: &str,
    deliveries: &[Delivery],
) -> Vec<pb::Delivery> {
    let Some(state) = machine.topics().get(topic) else {
        return Vec::new();
    };
    deliveries
        .iter()
        .filter_map(|d| {
            let message = state.message(d.seq)?;
            let deadline_ms = state
                .group(group)
                .and_then(|g| g.pending(d.seq))
                .and_then(|p| match &p.state {
                    crate::state_machine::topics::PendingState::InFlight {
                        token,
                        deadline_ms,
                        ..
                    } if *token == d.token => Some(*deadline_ms),
                    _ => None,
                })
                .unwrap_or(0);
            Some(pb::Delivery {
                message: Some(message_to_pb(topic, message)),
                token: d.token,
                deliveries: d.deliveries,
                deadline_ms,
            })
        })
        .collect()
}

fn fetched(response: SmResponse) -> Result<(u64, Vec<Delivery>), Error> {
    match response {
        SmResponse::Topics {
            revision,
            response: TopicResponse::Fetched { deliveries },
        } => Ok((revision, deliveries)),
        other => Err(Error::Fatal(format!("a fetch was answered {other:?}"))),
    }
}

/// Waits until the topic changes in a way that may give `group` something to deliver (a publish,
/// an ack, nack, redelivery or redrive in the group, the topic's deletion) or `until`; false when
/// the wait ended without such a change.
async fn await_topic_change(
    gateway: &Gateway,
    (topic, group): (&str, &str),
    after: u64,
    until: Instant,
) -> bool {
    let mut events = gateway.node.state.subscribe_events();
    let mut stopping = gateway.stopping.clone();
    loop {
        events.borrow_and_update();
        let changed = {
            let state = gateway.node.state.read();
            match state.machine.events_after(after) {
                Ok(new) => new.iter().any(|e| match &e.kind {
                    CoordEventKind::Topic(t) if t.topic == topic => match &t.kind {
                        TopicEventKind::GroupChanged { group: changed } => changed == group,
                        TopicEventKind::Published { .. } | TopicEventKind::Deleted => true,
                        TopicEventKind::TriggerFailed { .. } => false,
                    },
                    _ => false,
                }),
                Err(_) => true,
            }
        };
        if changed {
            return true;
        }
        tokio::select! {
            changed = events.changed() => if changed.is_err() { return false },
            () = tokio::time::sleep_until(until) => return false,
            () = stopped(&mut stopping) => return false,
        }
    }
}

/// Fetch on the leader: the first proposal carries the request's id (a retry answers the same
/// deliveries); while nothing was leased, waits for the topic to change and proposes again
/// without one (a lost answer leaves its leases to time out and be redelivered).
async fn fetch_here(
    gateway: &Gateway,
    req: &pb::FetchRequest,
    command: Command,
) -> Result<pb::FetchResponse, Error> {
    let started = Instant::now();
    let until = started + Duration::from_millis(req.wait_ms);
    let request_id =
        request_id(req.request_id).map_err(|s| Error::InvalidArgument(s.message().into()))?;
    let mut seen = gateway.node.state.read().machine.last_event_seq();
    let (mut revision, mut deliveries) =
        fetched(gateway.write(request_id, command.clone()).await?)?;
    while deliveries.is_empty() && Instant::now() < until {
        let watched = (req.topic.as_str(), req.group.as_str());
        if !await_topic_change(gateway, watched, seen, until).await {
            break;
        }
        seen = gateway.node.state.read().machine.last_event_seq();
        let response = gateway.node.propose_internal(command.clone()).await?;
        (revision, deliveries) = fetched(refused(response, None)?)?;
    }
    let state = gateway.node.state.read();
    Ok(pb::FetchResponse {
        header: gateway.header(revision, Consistency::Linearizable),
        deliveries: deliveries_to_pb(&state.machine, &req.topic, &req.group, &deliveries),
    })
}

// --- the service ---------------------------------------------------------------------------------

#[tonic::async_trait]
impl TopicsApi for TopicsService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        let config = topic_config(&req.name, req.config.clone())?;
        let command = Command::Topics(TopicCommand::Create {
            name: req.name.clone(),
            config,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Created { existing } => Ok(pb::CreateTopicResponse {
                header: header(revision),
                existing,
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).create_topic(r).await
            })
            .await
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        rule(rules::topic_name("name", &req.name))?;
        let command = Command::Topics(TopicCommand::Delete {
            name: req.name.clone(),
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Deleted => Ok(pb::DeleteTopicResponse {
                header: header(revision),
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).delete_topic(r).await
            })
            .await
    }

    async fn get_topic(
        &self,
        request: Request<pb::GetTopicRequest>,
    ) -> Result<Response<pb::GetTopicResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        rule(rules::topic_name("name", &req.name))?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).get_topic(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let topic = state.machine.topics().get(&req.name).ok_or_else(|| {
            to_status(Error::NotFound(format!(
                "name: topic {:?} does not exist",
                req.name
            )))
        })?;
        Ok(Response::new(pb::GetTopicResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            topic: Some(topic_to_pb(topic)),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        if !req.after.is_empty() {
            rule(rules::topic_name("after", &req.after))?;
        }
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_topics(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (topics, more) = state.machine.topics().list(&req.after, limit);
        let (topics, more) = bounded_page(topics.into_iter().map(topic_to_pb), more);
        Ok(Response::new(pb::ListTopicsResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            topics,
            more,
        }))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let id = request_id(req.request_id)?;
        let messages = new_messages(req.messages.clone())?;
        let command = Command::Topics(TopicCommand::Publish { messages });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Published { results } => Ok(pb::PublishResponse {
                header: header(revision),
                results: results
                    .into_iter()
                    .map(|r| pb::PublishResult {
                        topic: r.topic,
                        seq: r.seq,
                        duplicate: r.duplicate,
                    })
                    .collect(),
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).publish(r).await
            })
            .await
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        let command = Command::Topics(TopicCommand::CreateGroup {
            topic: req.topic.clone(),
            group: req.group.clone(),
            config: group_config(&req)?,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::GroupCreated { existing } => Ok(pb::CreateGroupResponse {
                header: header(revision),
                existing,
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).create_group(r).await
            })
            .await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        let command = Command::Topics(TopicCommand::DeleteGroup {
            topic: req.topic.clone(),
            group: req.group.clone(),
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::GroupDeleted => Ok(pb::DeleteGroupResponse {
                header: header(revision),
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).delete_group(r).await
            })
            .await
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        topic_and_group(&req.topic, &req.group)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).get_group(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (topic, group) = find_group(&state.machine, &req.topic, &req.group)?;
        Ok(Response::new(pb::GetGroupResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            group: Some(group_to_pb(topic, group)),
        }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        name("member", &req.member)?;
        let max = rule(validate::defaulted(
            "max",
            u64::from(req.max),
            u64::from(TOPIC_FETCH_DEFAULT),
            1,
            u64::from(TOPIC_FETCH_MAX),
        ))? as u32;
        if req.wait_ms > TOPIC_FETCH_WAIT_MS_MAX {
            return Err(invalid(format!(
                "wait_ms: {} exceeds the limit of {TOPIC_FETCH_WAIT_MS_MAX} (TOPIC_FETCH_WAIT_MS_MAX)",
                req.wait_ms
            )));
        }
        let command = Command::Topics(TopicCommand::Fetch {
            topic: req.topic.clone(),
            group: req.group.clone(),
            member: req.member.clone(),
            max,
            max_bytes: TOPIC_FETCH_BYTES_MAX,
        });
        match fetch_here(&self.gateway, &req, command).await {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => {
                let deadline =
                    self.gateway.node.leader_wait() * 2 + Duration::from_millis(req.wait_ms);
                self.gateway
                    .forward(e, forwarded, req, |c, mut r| async move {
                        r.set_timeout(deadline);
                        client(c).fetch(r).await
                    })
                    .await
            }
        }
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        let command = Command::Topics(TopicCommand::Ack {
            topic: req.topic.clone(),
            group: req.group.clone(),
            seq: req.seq,
            token: req.token,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Acked => Ok(pb::AckResponse {
                header: header(revision),
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).ack(r).await
            })
            .await
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        if req.delay_ms > TOPIC_NACK_DELAY_MS_MAX {
            return Err(invalid(format!(
                "delay_ms: {} exceeds the limit of {TOPIC_NACK_DELAY_MS_MAX} (TOPIC_NACK_DELAY_MS_MAX)",
                req.delay_ms
            )));
        }
        let command = Command::Topics(TopicCommand::Nack {
            topic: req.topic.clone(),
            group: req.group.clone(),
            seq: req.seq,
            token: req.token,
            delay_ms: req.delay_ms,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Nacked => Ok(pb::NackResponse {
                header: header(revision),
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).nack(r).await
            })
            .await
    }

    async fn in_progress(
        &self,
        request: Request<pb::InProgressRequest>,
    ) -> Result<Response<pb::InProgressResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        let command = Command::Topics(TopicCommand::InProgress {
            topic: req.topic.clone(),
            group: req.group.clone(),
            seq: req.seq,
            token: req.token,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Extended { deadline_ms } => Ok(pb::InProgressResponse {
                header: header(revision),
                deadline_ms,
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).in_progress(r).await
            })
            .await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListTopicDeadLettersRequest>,
    ) -> Result<Response<pb::ListTopicDeadLettersResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        topic_and_group(&req.topic, &req.group)?;
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_dead_letters(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (_, group) = find_group(&state.machine, &req.topic, &req.group)?;
        let mut after = group
            .dead_letters()
            .filter(|d| d.message.seq > req.after_seq);
        let page: Vec<pb::DeadLetter> = after
            .by_ref()
            .take(limit)
            .map(|d| dead_letter_to_pb(&req.topic, d))
            .collect();
        let more = after.next().is_some();
        let (dead_letters, more) = bounded_page(page.into_iter(), more);
        Ok(Response::new(pb::ListTopicDeadLettersResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            dead_letters,
            more,
        }))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<pb::RedriveDeadLettersRequest>,
    ) -> Result<Response<pb::RedriveDeadLettersResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        let command = Command::Topics(TopicCommand::Redrive {
            topic: req.topic.clone(),
            group: req.group.clone(),
            selector: selector(req.seqs.clone(), req.all)?,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Redriven {
                redriven,
                discarded,
            } => Ok(pb::RedriveDeadLettersResponse {
                header: header(revision),
                redriven,
                discarded,
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).redrive_dead_letters(r).await
            })
            .await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        topic_and_group(&req.topic, &req.group)?;
        let command = Command::Topics(TopicCommand::Purge {
            topic: req.topic.clone(),
            group: req.group.clone(),
            selector: selector(req.seqs.clone(), req.all)?,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::Purged { purged } => Ok(pb::PurgeDeadLettersResponse {
                header: header(revision),
                purged,
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).purge_dead_letters(r).await
            })
            .await
    }

    type SubscribeStream = EventStream<pb::SubscribeEvent>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (_, req) = self.gateway.accept(request)?;
        subscribe::subscribe(&self.gateway, req)
            .await
            .map(Response::new)
    }

    async fn create_trigger(
        &self,
        request: Request<pb::CreateTriggerRequest>,
    ) -> Result<Response<pb::CreateTriggerResponse>, Status> {
        self.create_trigger_(request).await
    }

    async fn delete_trigger(
        &self,
        request: Request<pb::DeleteTriggerRequest>,
    ) -> Result<Response<pb::DeleteTriggerResponse>, Status> {
        self.delete_trigger_(request).await
    }

    async fn list_triggers(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::ListTriggersResponse>, Status> {
        self.list_triggers_(request).await
    }
}

fn find_group<'a>(
    machine: &'a StateMachine,
    topic: &str,
    group: &str,
) -> Result<(&'a Topic, &'a Group), Status> {
    let state = machine.topics().get(topic).ok_or_else(|| {
        to_status(Error::NotFound(format!(
            "topic: topic {topic:?} does not exist"
        )))
    })?;
    let group_state = state.group(group).ok_or_else(|| {
        to_status(Error::NotFound(format!(
            "group: topic {topic:?} has no group {group:?}"
        )))
    })?;
    Ok((state, group_state))
}
