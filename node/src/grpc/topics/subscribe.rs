//! Subscribe (topics.proto): a broadcast subscriber's stream, served by any node from its applied
//! state, following the topic's sequences.
//!
//! The same loop as the watches of `streams.rs`: mark the apply notification seen, read the
//! messages after the cursor under the read lock (at most TOPIC_SUBSCRIBE_READ_MAX at a time),
//! send the matching ones, and wait for the next notification; a caught-up stream whose cursor
//! moved without a match sends PROGRESS after --watch-progress-ms (`progress.rs`), so a resume
//! starts near where it was. A cursor that retention overtook is OUT_OF_RANGE with the oldest
//! kept sequence (`Error::EventsGone`).
//!
//! Start: the topic must be visible here (a follower waits up to the leader wait for one just
//! created). A start position is taken from this node's applied state: on a follower behind the
//! leader, NEW starts at an earlier sequence, so the stream sees more, never less, of what was
//! published after the call.

use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1 as pb;
use conclave_proto::validate::topic as rules;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{message_to_pb, start_position};
use crate::error::Error;
use crate::grpc::gateway::{invalid, Gateway};
use crate::grpc::progress::{self, Progress};
use crate::grpc::status::to_status;
use crate::grpc::streams::{await_visible, shutting_down, stopped, EventStream};
use crate::grpc::validation::rule;
use crate::limits::{STREAM_BUFFER_EVENTS, TOPIC_SUBSCRIBE_READ_MAX};
use crate::node::Node;
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
    let node = gateway.node.clone();
    let mut events = node.state.subscribe_events();
    events.borrow_and_update();
    let (topic, cursor) = {
        let state = node.state.read();
        let topic = resolve(&state.machine, &req.topic, &req.subject).map_err(to_status)?;
        let cursor =
            start_cursor(&state.machine, &topic, start, req.after_seq).map_err(to_status)?;
        (topic, cursor)
    };
    let stream = Follow {
        node,
        stopping: gateway.stopping.clone(),
        events,
        topic,
        pattern: req.subject,
        cursor,
    };
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
    tokio::spawn(async move {
        let _permit = permit;
        stream.run(sender).await;
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// A started subscription: what it reads and how far it has read.
struct Follow {
    node: Arc<Node>,
    stopping: watch::Receiver<bool>,
    events: watch::Receiver<u64>,
    topic: String,
    pattern: String,
    cursor: u64,
}

type Sender = mpsc::Sender<Result<pb::SubscribeEvent, Status>>;

impl Follow {
    fn event(&self, kind: pb::SubscribeEventKind, seq: u64) -> pb::SubscribeEvent {
        pb::SubscribeEvent {
            kind: kind as i32,
            topic: self.topic.clone(),
            seq,
            message: None,
        }
    }

    /// STARTED, then the matching messages as they are applied, until the client goes, the
    /// node stops, or the topic's retention (or its deletion) ends the stream.
    async fn run(mut self, sender: Sender) {
        let interval = Duration::from_millis(self.node.config.watch_progress_ms);
        let mut progress = Progress::new(interval, self.cursor, Instant::now());
        let mut messages = vec![self.event(pb::SubscribeEventKind::Started, self.cursor)];
        loop {
            for message in messages.drain(..) {
                let seq = message.seq;
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
                progress.sent(seq, Instant::now());
            }
            let step = {
                self.events.borrow_and_update();
                let state = self.node.state.read();
                let (topic, pattern) = (&self.topic, &self.pattern);
                read_after(
                    &state.machine,
                    topic,
                    pattern,
                    &mut self.cursor,
                    &mut messages,
                )
            };
            let caught_up = match step {
                Ok(caught_up) => caught_up,
                Err(error) => {
                    let _ = sender.send(Err(to_status(error))).await;
                    return;
                }
            };
            if !messages.is_empty() || !caught_up {
                continue;
            }
            if let Some(seq) = progress.due(self.cursor, Instant::now()) {
                let notice = self.event(pb::SubscribeEventKind::Progress, seq);
                if sender.send(Ok(notice)).await.is_err() {
                    return;
                }
                progress.sent(seq, Instant::now());
            }
            tokio::select! {
                changed = self.events.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
                () = progress::until(progress.deadline(self.cursor)) => {}
                () = stopped(&mut self.stopping) => {
                    let _ = sender.send(Err(shutting_down())).await;
                    return;
                }
            }
        }
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
