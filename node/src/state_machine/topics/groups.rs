//! One consumer group's deliveries: what it has examined (`next_seq`), what is outstanding
//! (delivered and not acked, or waiting for redelivery), leases to members under fencing tokens,
//! per-key order, and dead letters.
//!
//! A message below `next_seq` that matched the filter is outstanding until it is acked,
//! dead-lettered or discarded by retention. A keyed message (with `ordered_keys`) is delivered
//! only while no other message of its key is in flight and no earlier one is outstanding: its
//! key's partition is owned by the member holding that delivery, fenced by its token, and passes
//! to another member only when the delivery is acked, nacked or its ack wait passes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    subject, topic_event, Delivery, GroupConfig, GroupRef, Message, Refusal, RefusalCode, Seq,
    TopicEventKind, TopicResponse, Topics,
};
use crate::limits::{
    TOPIC_FETCH_SCAN_MAX, TOPIC_GROUP_DEAD_LETTERS_MAX, TOPIC_GROUP_IN_FLIGHT_MAX,
    TOPIC_GROUP_MEMBERS_MAX,
};
use crate::state_machine::kv::Fnv;
use crate::state_machine::primitive::Ctx;

type Timers = BTreeSet<(u64, String, String, Seq)>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingState {
    /// Available from `at_ms` (0: at once): never delivered yet, nacked, or its ack wait passed.
    Ready { at_ms: u64 },
    /// Leased to `member` under `token` until `deadline_ms`.
    InFlight {
        member: String,
        token: u64,
        deadline_ms: u64,
    },
}

/// An outstanding message of the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The message's key when the group orders by it.
    pub key: Option<Vec<u8>>,
    pub deliveries: u32,
    pub state: PendingState,
}

/// A message the group gave up on, with a copy of it (retention may discard the original).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message: Message,
    pub reason: String,
    pub deliveries: u32,
    pub dead_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyState {
    outstanding: BTreeSet<Seq>,
    in_flight: Option<Seq>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub last_seen_ms: u64,
    pub in_flight: u32,
}

/// A group's position, as GetGroup shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Every matching message at or below it is acked, dead-lettered or discarded.
    pub ack_floor: Seq,
    pub last_delivered: Seq,
    /// Deliveries in flight.
    pub in_flight: u64,
    /// Outstanding messages not in flight (waiting for their first delivery, a redelivery, or
    /// their key).
    pub waiting: u64,
    pub redeliveries: u64,
    pub acked: u64,
    pub dead_letters: u64,
    pub dead_letters_dropped: u64,
    /// Outstanding messages plus the topic's messages the group has not examined yet (whether
    /// or not they match its filter: an upper bound when it has one).
    pub lag: u64,
    pub members: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub config: GroupConfig,
    pub created_ms: u64,
    /// The first sequence not examined yet.
    next_seq: Seq,
    outstanding: BTreeMap<Seq, Pending>,
    keys: BTreeMap<Vec<u8>, KeyState>,
    members: BTreeMap<String, Member>,
    /// The last fencing token issued: one counter per group, bumped per delivery.
    last_token: u64,
    last_delivered: Seq,
    in_flight: u64,
    redeliveries: u64,
    acked: u64,
    dead: BTreeMap<Seq, DeadLetter>,
    dead_bytes: u64,
    dead_dropped: u64,
}

impl Group {
    pub(super) fn new(name: &str, config: GroupConfig, now_ms: u64, start: Seq) -> Self {
        Group {
            name: name.to_string(),
            config,
            created_ms: now_ms,
            next_seq: start,
            outstanding: BTreeMap::new(),
            keys: BTreeMap::new(),
            members: BTreeMap::new(),
            last_token: 0,
            last_delivered: 0,
            in_flight: 0,
            redeliveries: 0,
            acked: 0,
            dead: BTreeMap::new(),
            dead_bytes: 0,
            dead_dropped: 0,
        }
    }

    pub fn stats(&self, first_seq: Seq, last_seq: Seq) -> GroupStats {
        let examined_to = self.next_seq.max(first_seq).saturating_sub(1);
        let ack_floor = self
            .outstanding
            .first_key_value()
            .map_or(examined_to, |(seq, _)| seq - 1);
        GroupStats {
            ack_floor,
            last_delivered: self.last_delivered,
            in_flight: self.in_flight,
            waiting: self.outstanding.len() as u64 - self.in_flight,
            redeliveries: self.redeliveries,
            acked: self.acked,
            dead_letters: self.dead.len() as u64,
            dead_letters_dropped: self.dead_dropped,
            lag: self.outstanding.len() as u64 + last_seq.saturating_sub(examined_to),
            members: self.members.len() as u64,
        }
    }

    pub fn pending(&self, seq: Seq) -> Option<&Pending> {
        self.outstanding.get(&seq)
    }

    pub fn outstanding(&self) -> impl Iterator<Item = (&Seq, &Pending)> {
        self.outstanding.iter()
    }

    pub fn dead_letters(&self) -> impl Iterator<Item = &DeadLetter> {
        self.dead.values()
    }

    pub fn members(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter()
    }

    pub(super) fn dead_letter_bytes(&self) -> u64 {
        self.dead_bytes
    }

    /// Retention discarded `seq`: the group forgets it (an in-flight delivery of it can no
    /// longer be acked).
    pub(super) fn discard(&mut self, seq: Seq, topic: &str, timers: &mut Timers) {
        if self.outstanding.contains_key(&seq) {
            self.settle(seq, topic, timers);
        }
    }

    /// Takes `seq` out of the outstanding messages (acked, dead-lettered, discarded), with its
    /// lease, key and timer.
    fn settle(&mut self, seq: Seq, topic: &str, timers: &mut Timers) -> Pending {
        let pending = self.outstanding.remove(&seq).expect("outstanding");
        self.end_lease(seq, &pending, topic, timers);
        if let Some(key) = &pending.key {
            let state = self.keys.get_mut(key).expect("indexed");
            state.outstanding.remove(&seq);
            if state.outstanding.is_empty() {
                self.keys.remove(key);
            }
        }
        pending
    }

    /// Ends an in-flight lease of `seq` (counts, key ownership) and disarms its timer.
    fn end_lease(&mut self, seq: Seq, pending: &Pending, topic: &str, timers: &mut Timers) {
        match &pending.state {
            PendingState::InFlight {
                member,
                deadline_ms,
                ..
            } => {
                self.in_flight -= 1;
                if let Some(m) = self.members.get_mut(member) {
                    m.in_flight -= 1;
                }
                if let Some(key) = &pending.key {
                    self.keys.get_mut(key).expect("indexed").in_flight = None;
                }
                timers.remove(&(*deadline_ms, topic.into(), self.name.clone(), seq));
            }
            PendingState::Ready { at_ms } => {
                timers.remove(&(*at_ms, topic.into(), self.name.clone(), seq));
            }
        }
    }

    /// Whether `seq` may be delivered now: ready, and first of its key with none in flight.
    fn deliverable(&self, seq: Seq, now_ms: u64) -> bool {
        let Some(pending) = self.outstanding.get(&seq) else {
            return false;
        };
        if !matches!(pending.state, PendingState::Ready { at_ms } if at_ms <= now_ms) {
            return false;
        }
        pending.key.as_ref().is_none_or(|key| {
            let state = &self.keys[key];
            state.in_flight.is_none() && state.outstanding.first() == Some(&seq)
        })
    }

    /// Adds a newly examined matching message to the outstanding ones.
    fn examine(&mut self, message: &Message) {
        let key = message.key.clone().filter(|_| self.config.ordered_keys);
        if let Some(key) = &key {
            self.keys
                .entry(key.clone())
                .or_default()
                .outstanding
                .insert(message.seq);
        }
        self.outstanding.insert(
            message.seq,
            Pending {
                key,
                deliveries: 0,
                state: PendingState::Ready { at_ms: 0 },
            },
        );
    }

    /// Makes room for `member` among the remembered ones: forgets the least recently seen that
    /// holds nothing, or refuses when every one holds a delivery.
    fn admit(&mut self, member: &str, now_ms: u64) -> Result<(), Refusal> {
        if !self.members.contains_key(member) && self.members.len() >= TOPIC_GROUP_MEMBERS_MAX {
            let idle = self
                .members
                .iter()
                .filter(|(_, m)| m.in_flight == 0)
                .min_by_key(|(name, m)| (m.last_seen_ms, name.as_str()))
                .map(|(name, _)| name.clone());
            let Some(idle) = idle else {
                return Err(Refusal::new(
                    RefusalCode::ResourceExhausted,
                    format!(
                        "group {:?} has its maximum of {TOPIC_GROUP_MEMBERS_MAX} members holding deliveries (TOPIC_GROUP_MEMBERS_MAX)",
                        self.name
                    ),
                ));
            };
            self.members.remove(&idle);
        }
        let entry = self.members.entry(member.to_string()).or_insert(Member {
            last_seen_ms: now_ms,
            in_flight: 0,
        });
        entry.last_seen_ms = now_ms;
        Ok(())
    }

    pub(super) fn digest_into(&self, hash: &mut Fnv) {
        hash.write(&(self.name.len() as u64).to_be_bytes());
        hash.write(self.name.as_bytes());
        for n in [
            self.next_seq,
            self.last_token,
            self.last_delivered,
            self.in_flight,
            self.redeliveries,
            self.acked,
            self.dead_bytes,
            self.dead_dropped,
            self.keys.len() as u64,
        ] {
            hash.write(&n.to_be_bytes());
        }
        for (seq, pending) in &self.outstanding {
            hash.write(&seq.to_be_bytes());
            hash.write(&pending.deliveries.to_be_bytes());
            let (a, b) = match &pending.state {
                PendingState::Ready { at_ms } => (*at_ms, 0),
                PendingState::InFlight {
                    token, deadline_ms, ..
                } => (*deadline_ms, *token),
            };
            hash.write(&a.to_be_bytes());
            hash.write(&b.to_be_bytes());
        }
        for (seq, dead) in &self.dead {
            hash.write(&seq.to_be_bytes());
            hash.write(&dead.deliveries.to_be_bytes());
        }
        for (name, member) in &self.members {
            hash.write(name.as_bytes());
            hash.write(&member.in_flight.to_be_bytes());
        }
    }
}

#[cfg(test)]
impl Group {
    /// The group's counts and indexes recomputed from its outstanding messages; adds the timers
    /// it must have armed to `timers`, and those it may still have (a nack delay passed whose
    /// timer has not fired yet) to `allowed`.
    pub(super) fn check_invariants(
        &self,
        topic: &str,
        messages: &BTreeMap<Seq, Message>,
        now_ms: u64,
        (timers, allowed): (&mut Timers, &mut Timers),
    ) {
        let mut in_flight = 0;
        let mut per_member: BTreeMap<&str, u32> = BTreeMap::new();
        let mut keys: BTreeMap<Vec<u8>, KeyState> = BTreeMap::new();
        for (seq, pending) in &self.outstanding {
            assert!(*seq < self.next_seq, "outstanding {seq} was examined");
            assert!(messages.contains_key(seq), "outstanding {seq} is kept");
            if let Some(key) = pending.key.clone() {
                keys.entry(key).or_default().outstanding.insert(*seq);
            }
            match &pending.state {
                PendingState::InFlight {
                    member,
                    token,
                    deadline_ms,
                } => {
                    in_flight += 1;
                    *per_member.entry(member).or_default() += 1;
                    assert!(*token <= self.last_token);
                    timers.insert((*deadline_ms, topic.into(), self.name.clone(), *seq));
                    if let Some(key) = &pending.key {
                        let state = keys.get_mut(key).expect("inserted");
                        assert!(state.in_flight.is_none(), "one in flight per key");
                        state.in_flight = Some(*seq);
                    }
                }
                PendingState::Ready { at_ms } if *at_ms > now_ms => {
                    timers.insert((*at_ms, topic.into(), self.name.clone(), *seq));
                }
                PendingState::Ready { at_ms } => {
                    allowed.insert((*at_ms, topic.into(), self.name.clone(), *seq));
                }
            }
        }
        assert_eq!(in_flight, self.in_flight);
        assert_eq!(keys, self.keys, "the key index");
        for (name, member) in &self.members {
            assert_eq!(
                member.in_flight,
                per_member.get(name.as_str()).copied().unwrap_or(0)
            );
        }
        let dead: u64 = self.dead.values().map(|d| d.message.bytes()).sum();
        assert_eq!(dead, self.dead_bytes);
    }
}

/// What one Fetch may still lease: a count and bytes (the last delivery may pass the bytes).
struct Budget {
    count: u64,
    max_bytes: u64,
    bytes: u64,
}

impl Budget {
    fn spent(&self, delivered: usize) -> bool {
        delivered as u64 >= self.count || self.bytes >= self.max_bytes
    }
}

impl GroupRef<'_> {
    /// Leases up to `max` deliverable messages, and up to `max_bytes` of them (the last may pass
    /// it), to `member`: first outstanding ones that are ready (redeliveries, in sequence order),
    /// then messages not examined yet. At most TOPIC_FETCH_SCAN_MAX messages are examined.
    fn fetch(
        &mut self,
        ctx: &mut Ctx,
        member: &str,
        (max, max_bytes): (u32, u64),
    ) -> Result<TopicResponse, Refusal> {
        self.group.admit(member, ctx.now_ms)?;
        let messages = self.messages;
        let mut budget = Budget {
            count: (max as u64).min(TOPIC_GROUP_IN_FLIGHT_MAX as u64 - self.group.in_flight),
            max_bytes,
            bytes: 0,
        };
        let mut deliveries = Vec::new();
        let ready: Vec<Seq> = self
            .group
            .outstanding
            .iter()
            .filter(
                |(_, p)| matches!(p.state, PendingState::Ready { at_ms } if at_ms <= ctx.now_ms),
            )
            .map(|(seq, _)| *seq)
            .take(TOPIC_FETCH_SCAN_MAX)
            .collect();
        let mut scanned = ready.len();
        for seq in ready {
            if self.group.deliverable(seq, ctx.now_ms) {
                if budget.spent(deliveries.len()) {
                    break;
                }
                budget.bytes += messages.get(&seq).map_or(0, Message::bytes);
                deliveries.push(self.deliver(ctx, member, seq));
            }
        }
        let first = self
            .messages
            .first_key_value()
            .map_or(Seq::MAX, |(s, _)| *s);
        let start = self.group.next_seq.max(first);
        for message in messages.range(start..).map(|(_, m)| m) {
            if budget.spent(deliveries.len()) || scanned >= TOPIC_FETCH_SCAN_MAX {
                break;
            }
            scanned += 1;
            self.group.next_seq = message.seq + 1;
            let filter = &self.group.config.filter;
            if !filter.is_empty() && !subject::matches(filter, &message.subject) {
                continue;
            }
            self.group.examine(message);
            if self.group.deliverable(message.seq, ctx.now_ms) {
                budget.bytes += message.bytes();
                deliveries.push(self.deliver(ctx, member, message.seq));
            }
        }
        Ok(TopicResponse::Fetched { deliveries })
    }

    /// Leases `seq` to `member` under the next token until the ack wait passes.
    fn deliver(&mut self, ctx: &mut Ctx, member: &str, seq: Seq) -> Delivery {
        let group = &mut *self.group;
        group.last_token += 1;
        let token = group.last_token;
        let deadline_ms = ctx.now_ms.saturating_add(group.config.ack_wait_ms);
        let pending = group.outstanding.get_mut(&seq).expect("outstanding");
        if let PendingState::Ready { at_ms } = pending.state {
            self.timers
                .remove(&(at_ms, self.topic.clone(), group.name.clone(), seq));
        }
        pending.deliveries += 1;
        if pending.deliveries > 1 {
            group.redeliveries += 1;
        }
        pending.state = PendingState::InFlight {
            member: member.to_string(),
            token,
            deadline_ms,
        };
        let deliveries = pending.deliveries;
        if let Some(key) = &pending.key {
            group.keys.get_mut(key).expect("indexed").in_flight = Some(seq);
        }
        group.in_flight += 1;
        group.members.get_mut(member).expect("admitted").in_flight += 1;
        group.last_delivered = group.last_delivered.max(seq);
        self.timers
            .insert((deadline_ms, self.topic.clone(), group.name.clone(), seq));
        Delivery {
            seq,
            token,
            deliveries,
        }
    }

    /// The delivery of `seq` under `token`, if it is the current one; else why not.
    fn current(&self, seq: Seq, token: u64) -> Result<(), Refusal> {
        let stale = |reason: String| Err(Refusal::new(RefusalCode::StaleToken, reason));
        let name = &self.group.name;
        match self.group.outstanding.get(&seq).map(|p| &p.state) {
            Some(PendingState::InFlight { token: current, .. }) if *current == token => Ok(()),
            Some(PendingState::InFlight { token: current, member, .. }) => stale(format!(
                "token: {token} is stale: message {seq} of group {name:?} is delivered to {member:?} under token {current} now"
            )),
            Some(PendingState::Ready { .. }) => stale(format!(
                "token: {token} is stale: the delivery of message {seq} of group {name:?} ended (its ack wait passed or it was nacked); it awaits redelivery"
            )),
            None if seq < self.group.next_seq => stale(format!(
                "token: {token} is stale: message {seq} of group {name:?} is no longer outstanding (acked, dead-lettered or discarded by retention)"
            )),
            None => stale(format!(
                "seq: message {seq} was never delivered to group {name:?}"
            )),
        }
    }

    fn ack(&mut self, ctx: &mut Ctx, seq: Seq, token: u64) -> Result<TopicResponse, Refusal> {
        self.current(seq, token)?;
        self.group.settle(seq, &self.topic, self.timers);
        self.group.acked += 1;
        self.changed(ctx);
        Ok(TopicResponse::Acked)
    }

    fn nack(
        &mut self,
        ctx: &mut Ctx,
        seq: Seq,
        token: u64,
        delay_ms: u64,
    ) -> Result<TopicResponse, Refusal> {
        self.current(seq, token)?;
        let reason = |n: u32, max: u32| format!("nacked on delivery {n} of {max} (max_deliveries)");
        self.release(ctx, seq, delay_ms, reason);
        self.changed(ctx);
        Ok(TopicResponse::Nacked)
    }

    fn in_progress(
        &mut self,
        ctx: &mut Ctx,
        seq: Seq,
        token: u64,
    ) -> Result<TopicResponse, Refusal> {
        self.current(seq, token)?;
        let deadline = ctx.now_ms.saturating_add(self.group.config.ack_wait_ms);
        let pending = self.group.outstanding.get_mut(&seq).expect("current");
        if let PendingState::InFlight { deadline_ms, .. } = &mut pending.state {
            self.timers.remove(&(
                *deadline_ms,
                self.topic.clone(),
                self.group.name.clone(),
                seq,
            ));
            *deadline_ms = deadline;
            self.timers
                .insert((deadline, self.topic.clone(), self.group.name.clone(), seq));
        }
        Ok(TopicResponse::Extended {
            deadline_ms: deadline,
        })
    }

    /// Ends the in-flight delivery of `seq`: ready again `delay_ms` from now, or dead-lettered
    /// with `reason` once it has had max_deliveries.
    fn release(
        &mut self,
        ctx: &mut Ctx,
        seq: Seq,
        delay_ms: u64,
        reason: impl Fn(u32, u32) -> String,
    ) {
        let max = self.group.config.max_deliveries;
        let pending = self.group.outstanding[&seq].clone();
        if pending.deliveries >= max {
            let pending = self.group.settle(seq, &self.topic, self.timers);
            self.dead_letter(ctx, seq, &pending, reason(pending.deliveries, max));
            return;
        }
        self.group
            .end_lease(seq, &pending, &self.topic, self.timers);
        let at_ms = ctx.now_ms.saturating_add(delay_ms);
        if delay_ms > 0 {
            self.timers
                .insert((at_ms, self.topic.clone(), self.group.name.clone(), seq));
        }
        self.group
            .outstanding
            .get_mut(&seq)
            .expect("outstanding")
            .state = PendingState::Ready { at_ms };
    }

    /// Keeps a copy of `seq` in the group's dead letters, dropping the oldest past
    /// TOPIC_GROUP_DEAD_LETTERS_MAX.
    fn dead_letter(&mut self, ctx: &mut Ctx, seq: Seq, pending: &Pending, reason: String) {
        let message = self
            .messages
            .get(&seq)
            .expect("outstanding messages are kept")
            .clone();
        let bytes = message.bytes();
        self.group.dead.insert(
            seq,
            DeadLetter {
                message,
                reason,
                deliveries: pending.deliveries,
                dead_ms: ctx.now_ms,
            },
        );
        self.group.dead_bytes += bytes;
        *self.bytes += bytes;
        if self.group.dead.len() > TOPIC_GROUP_DEAD_LETTERS_MAX {
            let (_, oldest) = self.group.dead.pop_first().expect("not empty");
            self.group.dead_bytes -= oldest.message.bytes();
            *self.bytes -= oldest.message.bytes();
            self.group.dead_dropped += 1;
        }
    }

    /// A timer of `seq` due at `due` fired: an ack wait passed (redelivery or a dead letter) or
    /// a nack delay did (the message is available again).
    fn fire(&mut self, ctx: &mut Ctx, seq: Seq, due: u64) {
        let Some(pending) = self.group.outstanding.get(&seq) else {
            return;
        };
        match pending.state {
            PendingState::InFlight { deadline_ms, .. } if deadline_ms == due => {
                let ack_wait_ms = self.group.config.ack_wait_ms;
                let reason = move |n: u32, max: u32| {
                    format!("the ack wait ({ack_wait_ms} ms) passed on delivery {n} of {max} (max_deliveries)")
                };
                self.release(ctx, seq, 0, reason);
            }
            PendingState::Ready { at_ms } if at_ms == due => {}
            _ => return,
        }
        self.changed(ctx);
    }

    fn changed(&self, ctx: &mut Ctx) {
        ctx.event(topic_event(
            &self.topic,
            TopicEventKind::GroupChanged {
                group: self.group.name.clone(),
            },
        ));
    }

    fn redrive(&mut self, ctx: &mut Ctx, seqs: &[Seq]) -> TopicResponse {
        let (mut redriven, mut discarded) = (0, 0);
        for &seq in seqs {
            if !self.group.dead.contains_key(&seq) {
                continue;
            }
            let Some(message) = self.messages.get(&seq) else {
                discarded += 1;
                continue;
            };
            let dead = self.group.dead.remove(&seq).expect("present");
            self.group.dead_bytes -= dead.message.bytes();
            *self.bytes -= dead.message.bytes();
            self.group.examine(message);
            redriven += 1;
        }
        if redriven > 0 {
            self.changed(ctx);
        }
        TopicResponse::Redriven {
            redriven,
            discarded,
        }
    }

    fn purge(&mut self, seqs: &[Seq]) -> TopicResponse {
        let mut purged = 0;
        for seq in seqs {
            if let Some(dead) = self.group.dead.remove(seq) {
                self.group.dead_bytes -= dead.message.bytes();
                *self.bytes -= dead.message.bytes();
                purged += 1;
            }
        }
        TopicResponse::Purged { purged }
    }

    fn selected(&self, selector: &super::DeadLetterSelector) -> Vec<Seq> {
        match selector {
            super::DeadLetterSelector::Seqs(seqs) => seqs.clone(),
            super::DeadLetterSelector::All => self.group.dead.keys().copied().collect(),
        }
    }
}

impl Topics {
    pub(super) fn fetch(
        &mut self,
        ctx: &mut Ctx,
        (topic, group): (&str, &str),
        member: &str,
        limits: (u32, u64),
    ) -> Result<TopicResponse, Refusal> {
        self.group_mut(topic, group)?.fetch(ctx, member, limits)
    }

    pub(super) fn ack(
        &mut self,
        ctx: &mut Ctx,
        topic: &str,
        group: &str,
        seq: Seq,
        token: u64,
    ) -> Result<TopicResponse, Refusal> {
        self.group_mut(topic, group)?.ack(ctx, seq, token)
    }

    pub(super) fn nack(
        &mut self,
        ctx: &mut Ctx,
        (topic, group): (&str, &str),
        seq: Seq,
        token: u64,
        delay_ms: u64,
    ) -> Result<TopicResponse, Refusal> {
        self.group_mut(topic, group)?
            .nack(ctx, seq, token, delay_ms)
    }

    pub(super) fn in_progress(
        &mut self,
        ctx: &mut Ctx,
        topic: &str,
        group: &str,
        seq: Seq,
        token: u64,
    ) -> Result<TopicResponse, Refusal> {
        self.group_mut(topic, group)?.in_progress(ctx, seq, token)
    }

    pub(super) fn redrive(
        &mut self,
        ctx: &mut Ctx,
        topic: &str,
        group: &str,
        selector: &super::DeadLetterSelector,
    ) -> Result<TopicResponse, Refusal> {
        let mut group = self.group_mut(topic, group)?;
        let seqs = group.selected(selector);
        Ok(group.redrive(ctx, &seqs))
    }

    pub(super) fn purge(
        &mut self,
        topic: &str,
        group: &str,
        selector: &super::DeadLetterSelector,
    ) -> Result<TopicResponse, Refusal> {
        let mut group = self.group_mut(topic, group)?;
        let seqs = group.selected(selector);
        Ok(group.purge(&seqs))
    }

    /// A delivery timer due at `due` fired (the group may be gone: then nothing).
    pub(super) fn fire(&mut self, ctx: &mut Ctx, topic: &str, group: &str, seq: Seq, due: u64) {
        if let Ok(mut group) = self.group_mut(topic, group) {
            group.fire(ctx, seq, due);
        }
    }
}
