//! Subscribe (topics.proto): a broadcast subscriber's stream, served by any node from its applied
//! state, following the topic's sequences.
//!
//! A feed source (`feed.rs`) whose cursor is the topic's sequence: each read takes at most
//! TOPIC_SUBSCRIBE_READ_MAX messages after the cursor and sends the matching ones; the engine
//! sends PROGRESS (the source's bookmark) when a caught-up stream's cursor moved without a match
//! for --watch-progress-ms, so a resume starts near where it was. A cursor that retention overtook is OUT_OF_RANGE with the oldest
//! kept sequence (`Error::EventsGone`).
//!
//! Start: the topic must be visible here (a follower waits up to the leader wait for one just
//! created). A start position is taken from this node's applied state: on a follower behind the
//! leader, NEW starts at an earlier sequence, so the stream sees more, never less, of what was
//! published after the call.

use conclave_proto::v1 as pb;
use conclave_proto::validate::topic as rules;
use tonic::Status;

use super::{message_to_pb, start_position};
use crate::error::Error;
use crate::grpc::feed::{self, FeedSource, Read, Wake};
use crate::grpc::gateway::{invalid, Gateway};
use crate::grpc::status::to_status;
use crate::grpc::streams::{await_visible, EventStream};
use crate::grpc::validation::rule;
use crate::limits::TOPIC_SUBSCRIBE_READ_MAX;
use crate::state_machine::topics::{subject, StartPosition};
use crate::state_machine::StateMachine;

/// The topic a subscription reads: the one named, or the one whose subjects overlap the pattern.
fn resolve(machine: &StateMachine, topic: &str, pattern: &str) -> Result<String, Error> {
    if !topic.is_empty() {
        return machine
            .topics()
            .get(topic)
            .map(|t| t.name.clone())
            .ok_or_else(|| Error::NotFound(format!("topic: topic {topic:?} does not exist")));
    }
    let overlapping = machine.topics().overlapping(pattern);
    match overlapping.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(Error::NotFound(format!(
            "subject: no topic captures subjects matching {pattern:?}"
        ))),
        many => Err(Error::InvalidArgument(format!(
            "subject: {pattern:?} matches subjects of topics {:?}; name one in `topic`",
            many.iter().map(|t| t.name.as_str()).collect::<Vec<_>>()
        ))),
    }
}

/// The sequence the stream starts after.
fn start_cursor(
    machine: &StateMachine,
    topic: &str,
    start: StartPosition,
    resume: Option<u64>,
) -> Result<u64, Error> {
    let state = machine.topics().get(topic).expect("resolved");
    let cursor = match (resume, start) {
        (Some(after), _) => after,
        (None, StartPosition::All) => state.first_seq() - 1,
        (None, StartPosition::New) => state.last_seq,
        (None, StartPosition::FromSeq(seq)) => seq - 1,
        (None, StartPosition::FromTimeMs(time_ms)) => state.seq_at_time(time_ms) - 1,
    };
    check_kept(cursor, state.first_seq(), "start")?;
    Ok(cursor)
}

/// OUT_OF_RANGE when the message after `cursor` was discarded by retention.
fn check_kept(cursor: u64, first_seq: u64, what: &str) -> Result<(), Error> {
    if cursor.saturating_add(1) >= first_seq {
        return Ok(());
    }
    Err(Error::EventsGone {
        message: format!(
            "{what}: message {} was discarded by retention (the oldest kept is {first_seq}); subscribe again from there",
            cursor + 1
        ),
        oldest_kept: first_seq,
    })
}

pub async fn subscribe(
    gateway: &Gateway,
    req: pb::SubscribeRequest,
) -> Result<EventStream<pb::SubscribeEvent>, Status> {
    if req.subject.is_empty() && req.topic.is_empty() {
        return Err(invalid("subject: required unless `topic` names the topic"));
    }
    if !req.subject.is_empty() {
        rule(rules::pattern("subject", &req.subject))?;
    }
    if !req.topic.is_empty() {
        rule(rules::topic_name("topic", &req.topic))?;
    }
    let start = start_position(req.start, req.start_seq, req.start_time_ms)?;
    let permit = gateway.watch_slot()?;
    let (topic_arg, pattern) = (req.topic.clone(), req.subject.clone());
    await_visible(gateway, |m| resolve(m, &topic_arg, &pattern).is_ok()).await;
    let source = SubscriptionFeed {
        topic: String::new(),
        req,
        start,
    };
    feed::serve(gateway, permit, source)
}

/// A subscription as a feed source: its cursor is the topic's message sequence; publishes
/// append topic events to the ring, so it wakes on those.
struct SubscriptionFeed {
    req: pb::SubscribeRequest,
    start: StartPosition,
    /// The topic read, resolved at the start.
    topic: String,
}

impl SubscriptionFeed {
    fn event(&self, kind: pb::SubscribeEventKind, seq: u64) -> pb::SubscribeEvent {
        pb::SubscribeEvent {
            kind: kind as i32,
            topic: self.topic.clone(),
            seq,
            message: None,
        }
    }
}

impl FeedSource for SubscriptionFeed {
    type Message = pb::SubscribeEvent;
    const WAKE: Wake = Wake::Events;

    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<pb::SubscribeEvent>), Status> {
        self.topic = resolve(machine, &self.req.topic, &self.req.subject).map_err(to_status)?;
        let cursor = start_cursor(machine, &self.topic, self.start, self.req.after_seq)
            .map_err(to_status)?;
        let started = self.event(pb::SubscribeEventKind::Started, cursor);
        Ok((cursor, vec![started]))
    }

    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<pb::SubscribeEvent>,
    ) -> Result<Read, Status> {
        let mut cursor = cursor;
        let caught_up = read_after(machine, &self.topic, &self.req.subject, &mut cursor, out)
            .map_err(to_status)?;
        Ok(Read {
            cursor,
            caught_up,
            ended: false,
        })
    }

    fn bookmark(&self, cursor: u64) -> Option<pb::SubscribeEvent> {
        Some(self.event(pb::SubscribeEventKind::Progress, cursor))
    }

    fn cursor_of(message: &pb::SubscribeEvent) -> u64 {
        message.seq
    }
}

/// Reads up to TOPIC_SUBSCRIBE_READ_MAX messages after `cursor`, moving it, and adds those
/// matching `pattern` (empty: all) to `out`. Answers whether it read everything there was.
fn read_after(
    machine: &StateMachine,
    topic: &str,
    pattern: &str,
    cursor: &mut u64,
    out: &mut Vec<pb::SubscribeEvent>,
) -> Result<bool, Error> {
    let Some(state) = machine.topics().get(topic) else {
        return Err(Error::NotFound(format!(
            "topic: topic {topic:?} was deleted"
        )));
    };
    check_kept(*cursor, state.first_seq(), "the subscription fell behind")?;
    let mut read = 0;
    for message in state
        .messages_from(*cursor + 1)
        .take(TOPIC_SUBSCRIBE_READ_MAX)
    {
        read += 1;
        *cursor = message.seq;
        if pattern.is_empty() || subject::matches(pattern, &message.subject) {
            out.push(pb::SubscribeEvent {
                kind: pb::SubscribeEventKind::Message as i32,
                topic: topic.to_string(),
                seq: message.seq,
                message: Some(message_to_pb(topic, message)),
            });
        }
    }
    Ok(read < TOPIC_SUBSCRIBE_READ_MAX)
}
