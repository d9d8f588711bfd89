//! Publishing: the check (pure, all or nothing, usable by other modules before they store), the
//! store (infallible once checked), and retention by count, bytes and age.

use std::collections::BTreeMap;

use conclave_proto::limits::{TOPIC_PUBLISH_BATCH_BYTES_MAX, TOPIC_PUBLISH_BATCH_MAX};
use conclave_proto::validate::topic as rules;

use super::{
    topic_event, Message, NewMessage, Published, Refusal, RefusalCode, Seq, Topic, TopicEventKind,
    TopicResponse, Topics,
};
use crate::limits::{TOPICS_STORE_BYTES_MAX, TOPIC_DUPLICATE_KEYS_MAX, TOPIC_DUPLICATE_WINDOW_MS};
use crate::state_machine::primitive::Ctx;

impl Topics {
    /// Publish: check, then store. One refused message refuses the batch, and nothing is stored.
    pub(super) fn publish(
        &mut self,
        ctx: &mut Ctx,
        messages: &[NewMessage],
    ) -> Result<TopicResponse, Refusal> {
        self.check_publish(ctx.now_ms, messages)?;
        let results = self.store_checked(ctx, messages);
        Ok(TopicResponse::Published { results })
    }

    /// Whether a Publish of `messages` at cluster time `now_ms` would be accepted: every message
    /// well-formed and captured by a topic, none larger than its topic's max_bytes, and the store
    /// quota (TOPICS_STORE_BYTES_MAX) kept after retention. Pure: another module (a transaction)
    /// checks with this and then stores with [`Topics::store_checked`].
    pub fn check_publish(&self, now_ms: u64, messages: &[NewMessage]) -> Result<(), Refusal> {
        self.check_batch(messages)?;
        let mut added: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut keys: BTreeMap<(&str, &str), ()> = BTreeMap::new();
        for (i, message) in messages.iter().enumerate() {
            let topic = self.route(&message.subject).ok_or_else(|| {
                Refusal::new(
                    RefusalCode::NotFound,
                    format!(
                        "messages[{i}].subject: no topic captures subject {:?}",
                        message.subject
                    ),
                )
            })?;
            let bytes = message.bytes();
            if topic.config.max_bytes > 0 && bytes > topic.config.max_bytes {
                return Err(Refusal::new(
                    RefusalCode::InvalidArgument,
                    format!(
                        "messages[{i}]: {bytes} bytes is more than topic {:?} keeps (max_bytes {})",
                        topic.name, topic.config.max_bytes
                    ),
                ));
            }
            let key = message.idempotency_key.as_str();
            if !key.is_empty()
                && (topic.duplicate_of(key, now_ms).is_some()
                    || keys.insert((&topic.name, key), ()).is_some())
            {
                continue;
            }
            added.entry(&topic.name).or_default().push(bytes);
        }
        self.check_quota(&added)
    }

    /// The batch's own limits and every message's form (what a handler checks too).
    fn check_batch(&self, messages: &[NewMessage]) -> Result<(), Refusal> {
        let invalid = |reason: String| Refusal::new(RefusalCode::InvalidArgument, reason);
        if messages.is_empty() {
            return Err(invalid("messages: a Publish carries at least one".into()));
        }
        if messages.len() > TOPIC_PUBLISH_BATCH_MAX {
            return Err(invalid(format!(
                "messages: {} exceeds the limit of {TOPIC_PUBLISH_BATCH_MAX} (TOPIC_PUBLISH_BATCH_MAX)",
                messages.len()
            )));
        }
        let bytes: u64 = messages.iter().map(NewMessage::bytes).sum();
        if bytes > TOPIC_PUBLISH_BATCH_BYTES_MAX as u64 {
            return Err(invalid(format!(
                "messages: {bytes} bytes exceeds the limit of {TOPIC_PUBLISH_BATCH_BYTES_MAX} (TOPIC_PUBLISH_BATCH_BYTES_MAX)"
            )));
        }
        for (i, message) in messages.iter().enumerate() {
            let field = format!("messages[{i}]");
            rules::subject(&format!("{field}.subject"), &message.subject)
                .and_then(|()| {
                    rules::message(
                        &field,
                        message.key.as_deref().unwrap_or_default(),
                        &message.headers,
                        &message.data,
                        &message.idempotency_key,
                    )
                })
                .map_err(|e| invalid(e.0))?;
        }
        Ok(())
    }

    /// Refuses a publish that would leave more than TOPICS_STORE_BYTES_MAX bytes stored once
    /// each topic's retention has discarded what it would (`added`: the sizes of the messages
    /// each topic would store).
    fn check_quota(&self, added: &BTreeMap<&str, Vec<u64>>) -> Result<(), Refusal> {
        let mut total = self.bytes;
        let mut adding = 0;
        for (name, sizes) in added {
            let topic = &self.topics[*name];
            total = total - topic.bytes + topic.bytes_after(sizes);
            adding += sizes.iter().sum::<u64>();
        }
        if total > self.bytes && total > TOPICS_STORE_BYTES_MAX {
            return Err(Refusal::new(
                RefusalCode::ResourceExhausted,
                format!(
                    "the topics hold {} of their {TOPICS_STORE_BYTES_MAX} bytes (TOPICS_STORE_BYTES_MAX); {adding} more do not fit; nothing was stored",
                    self.bytes
                ),
            ));
        }
        Ok(())
    }

    /// Stores a batch [`Topics::check_publish`] accepted at this cluster time: each message gets
    /// the next sequence of its topic (or, with an idempotency key seen within the window, the
    /// original's), then each topic's retention runs and its subscribers are told.
    pub fn store_checked(&mut self, ctx: &mut Ctx, messages: &[NewMessage]) -> Vec<Published> {
        let mut results = Vec::with_capacity(messages.len());
        let mut stored: BTreeMap<String, (Seq, Seq)> = BTreeMap::new();
        for message in messages {
            let name = self
                .route(&message.subject)
                .map(|topic| topic.name.clone())
                .expect("check_publish routed every message");
            let topic = self.topics.get_mut(&name).expect("routed");
            let key = &message.idempotency_key;
            if let Some(seq) = (!key.is_empty())
                .then(|| topic.duplicate_of(key, ctx.now_ms))
                .flatten()
            {
                results.push(Published {
                    topic: name,
                    seq,
                    duplicate: true,
                });
                continue;
            }
            let seq = topic.append(message, ctx.now_ms);
            topic.fire_triggers(ctx, &topic.messages[&seq]);
            self.bytes += message.bytes();
            stored
                .entry(name.clone())
                .and_modify(|range| range.1 = seq)
                .or_insert((seq, seq));
            results.push(Published {
                topic: name,
                seq,
                duplicate: false,
            });
        }
        for (name, (first_seq, last_seq)) in stored {
            self.enforce_limits(&name);
            ctx.event(topic_event(
                &name,
                TopicEventKind::Published {
                    first_seq,
                    last_seq,
                },
            ));
        }
        results
    }

    /// Discards the oldest messages of `name` while it holds more than its max_msgs or max_bytes.
    fn enforce_limits(&mut self, name: &str) {
        loop {
            let topic = &self.topics[name];
            let over_count =
                topic.config.max_msgs > 0 && topic.messages.len() as u64 > topic.config.max_msgs;
            let over_bytes = topic.config.max_bytes > 0 && topic.bytes > topic.config.max_bytes;
            if !(over_count || over_bytes) {
                return;
            }
            self.discard_oldest(name);
        }
    }

    /// Discards the oldest message of `name` (retention); the groups forget it.
    fn discard_oldest(&mut self, name: &str) {
        let topic = self.topics.get_mut(name).expect("exists");
        let Some((seq, message)) = topic.messages.pop_first() else {
            return;
        };
        topic.bytes -= message.bytes();
        topic.discarded += 1;
        self.bytes -= message.bytes();
        for group in topic.groups.values_mut() {
            group.discard(seq, name, &mut self.timers);
        }
    }

    /// Age retention and the duplicate window, at a Tick.
    pub(super) fn expire(&mut self, ctx: &mut Ctx, name: &str) {
        let now_ms = ctx.now_ms;
        loop {
            let topic = &self.topics[name];
            let max_age_ms = topic.config.max_age_ms;
            let old = max_age_ms > 0
                && topic
                    .messages
                    .first_key_value()
                    .is_some_and(|(_, m)| m.published_ms.saturating_add(max_age_ms) <= now_ms);
            if !old {
                break;
            }
            self.discard_oldest(name);
        }
        let topic = self.topics.get_mut(name).expect("exists");
        while let Some((at_ms, key)) = topic.dedup_by_time.first().cloned() {
            if at_ms.saturating_add(TOPIC_DUPLICATE_WINDOW_MS) > now_ms {
                break;
            }
            topic.dedup_by_time.pop_first();
            topic.dedup.remove(&key);
        }
    }
}

impl Topic {
    /// The sequence an idempotency key was first published under, while within the window.
    fn duplicate_of(&self, key: &str, now_ms: u64) -> Option<Seq> {
        self.dedup
            .get(key)
            .filter(|(_, at_ms)| at_ms.saturating_add(TOPIC_DUPLICATE_WINDOW_MS) > now_ms)
            .map(|(seq, _)| *seq)
    }

    /// Stores one message under the next sequence and remembers its idempotency key.
    fn append(&mut self, new: &NewMessage, now_ms: u64) -> Seq {
        self.last_seq += 1;
        let seq = self.last_seq;
        let message = Message {
            seq,
            subject: new.subject.clone(),
            key: new.key.clone(),
            headers: new.headers.clone(),
            data: new.data.clone(),
            published_ms: now_ms,
        };
        self.bytes += message.bytes();
        self.messages.insert(seq, message);
        if !new.idempotency_key.is_empty() {
            let key = new.idempotency_key.clone();
            if let Some((_, at_ms)) = self.dedup.insert(key.clone(), (seq, now_ms)) {
                self.dedup_by_time.remove(&(at_ms, key.clone()));
            }
            self.dedup_by_time.insert((now_ms, key));
            if self.dedup.len() > TOPIC_DUPLICATE_KEYS_MAX {
                let (_, oldest) = self.dedup_by_time.pop_first().expect("not empty");
                self.dedup.remove(&oldest);
            }
        }
        seq
    }

    /// The bytes this topic would hold after storing messages of `sizes` and discarding the
    /// oldest as its max_msgs and max_bytes require.
    fn bytes_after(&self, sizes: &[u64]) -> u64 {
        let mut count = self.messages.len() as u64 + sizes.len() as u64;
        let mut bytes = self.bytes + sizes.iter().sum::<u64>();
        let oldest_first = self
            .messages
            .values()
            .map(Message::bytes)
            .chain(sizes.iter().copied());
        for size in oldest_first {
            let over_count = self.config.max_msgs > 0 && count > self.config.max_msgs;
            let over_bytes = self.config.max_bytes > 0 && bytes > self.config.max_bytes;
            if !(over_count || over_bytes) {
                break;
            }
            count -= 1;
            bytes -= size;
        }
        bytes
    }
}
