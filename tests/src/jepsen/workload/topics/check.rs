//! The topics workload's checker: a pure function of the history (what the clients record is in
//! the module comment of `topics.rs`). The history is read once into a [`Recorded`]; each property
//! is one function. "Before" is the order of the history's events, which is real time (one
//! clock, read under one lock); tokens are one counter per group, so within a group they order
//! deliveries as the cluster applied them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value as Json};

use super::{GROUPS, MAX_DELIVERIES, NAME};
use crate::jepsen::history::{pair, Event, OpKind, Paired};
use crate::jepsen::workload::{CheckResult, FINAL_READ};

#[cfg(test)]
mod tests;

/// A `publish`: the messages it carried and, acknowledged, their sequences.
#[derive(Debug)]
struct Publish {
    /// (id, key) of each message.
    messages: Vec<(String, String)>,
    outcome: OpKind,
    /// (seq, duplicate) of each message, when acknowledged.
    results: Vec<(u64, bool)>,
    resend: bool,
}

/// A delivery some member's acknowledged Fetch got.
#[derive(Debug, Clone)]
struct Delivered {
    group: String,
    member: String,
    seq: u64,
    token: u64,
    deliveries: u64,
    id: String,
    key: Option<String>,
    /// The Fetch's invocation and completion in the history.
    invoked: u64,
    completed: u64,
}

/// An `ack` (or `nack`).
#[derive(Debug)]
struct Settle {
    group: String,
    seq: u64,
    token: u64,
    stale: bool,
    outcome: OpKind,
    invoked: u64,
    /// The completion's position; `None` for unknown outcomes.
    completed: Option<u64>,
}

/// What the subscriber recorded, in order.
#[derive(Debug)]
enum Subscribed {
    Start { after: Option<u64> },
    Message { seq: u64, id: String },
    Gap,
}

/// A final read of one node.
#[derive(Debug, PartialEq)]
struct FinalRead {
    node: Option<u64>,
    consistency: String,
    last_seq: u64,
    /// (seq, id, key) in the order read.
    messages: Vec<(u64, String, Option<String>)>,
    groups: BTreeMap<String, Json>,
    /// Per group: seq -> deliveries.
    dead: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl FinalRead {
    fn message(&self, seq: u64) -> Option<&(u64, String, Option<String>)> {
        self.messages
            .binary_search_by_key(&seq, |(s, _, _)| *s)
            .ok()
            .map(|at| &self.messages[at])
    }
}

/// Everything the checker reads from the history.
#[derive(Debug, Default)]
struct Recorded {
    publishes: Vec<Publish>,
    delivered: Vec<Delivered>,
    acks: Vec<Settle>,
    nacks: Vec<Settle>,
    subscribed: Vec<Subscribed>,
    /// The drain's verdict: every group settled.
    drain_settled: Option<bool>,
    finals: Vec<FinalRead>,
    counts: BTreeMap<String, u64>,
}

impl Recorded {
    fn parse(operations: &[Paired<'_>]) -> Recorded {
        let mut recorded = Recorded::default();
        for operation in operations {
            recorded.add(operation);
        }
        recorded
    }

    fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_string()).or_default() += 1;
    }

    fn add(&mut self, operation: &Paired<'_>) {
        let invoke = operation.invoke;
        let value = operation.value();
        let outcome = operation.outcome();
        let text = |value: &Json| value.as_str().unwrap_or_default().to_string();
        match invoke.f.as_str() {
            "publish" => {
                self.count(&format!("publish_{}", outcome_name(outcome)));
                self.publishes
                    .push(parse_publish(&invoke.value, value, outcome));
            }
            "fetch" => {
                self.count(&format!("fetch_{}", outcome_name(outcome)));
                let (Some(completed), OpKind::Ok) = (operation.complete_index(), outcome) else {
                    return;
                };
                for delivery in value["deliveries"].as_array().into_iter().flatten() {
                    self.count("delivered");
                    self.delivered.push(Delivered {
                        group: text(&value["group"]),
                        member: text(&value["member"]),
                        seq: delivery["seq"].as_u64().unwrap_or(0),
                        token: delivery["token"].as_u64().unwrap_or(0),
                        deliveries: delivery["deliveries"].as_u64().unwrap_or(0),
                        id: text(&delivery["id"]),
                        key: delivery["key"].as_str().map(str::to_string),
                        invoked: invoke.index,
                        completed,
                    });
                }
            }
            "ack" | "nack" => {
                self.count(&format!("{}_{}", invoke.f, outcome_name(outcome)));
                let settle = Settle {
                    group: text(&invoke.value["group"]),
                    seq: invoke.value["seq"].as_u64().unwrap_or(0),
                    token: invoke.value["token"].as_u64().unwrap_or(0),
                    stale: invoke.value["stale"] == json!(true),
                    outcome,
                    invoked: invoke.index,
                    completed: operation.complete_index(),
                };
                if settle.stale {
                    self.count("scripted_stale_acks");
                }
                if invoke.f == "ack" {
                    self.acks.push(settle);
                } else {
                    self.nacks.push(settle);
                }
            }
            "sub-start" => self.subscribed.push(Subscribed::Start {
                after: value["after"].as_u64(),
            }),
            "sub-message" => self.subscribed.push(Subscribed::Message {
                seq: value["seq"].as_u64().unwrap_or(0),
                id: text(&value["id"]),
            }),
            "sub-gap" => self.subscribed.push(Subscribed::Gap),
            "drain" if outcome == OpKind::Ok => self.drain_settled = value["settled"].as_bool(),
            FINAL_READ if outcome == OpKind::Ok => {
                if let Some(read) = parse_final(invoke.node, value) {
                    self.finals.push(read);
                }
            }
            _ => {}
        }
    }

    /// The final read the properties are checked against: the linearizable one, else the first.
    fn reference(&self) -> Option<&FinalRead> {
        self.finals
            .iter()
            .find(|read| read.consistency == "linearizable")
            .or_else(|| self.finals.first())
    }
}

fn outcome_name(outcome: OpKind) -> &'static str {
    match outcome {
        OpKind::Ok => "ok",
        OpKind::Fail => "fail",
        OpKind::Info | OpKind::Invoke => "info",
    }
}

fn parse_publish(invoked: &Json, value: &Json, outcome: OpKind) -> Publish {
    let text = |value: &Json| value.as_str().unwrap_or_default().to_string();
    let messages = invoked["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|message| (text(&message["id"]), text(&message["key"])))
        .collect();
    let results = if outcome == OpKind::Ok {
        value["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|message| {
                (
                    message["seq"].as_u64().unwrap_or(0),
                    message["duplicate"] == json!(true),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    Publish {
        messages,
        outcome,
        results,
        resend: invoked["resend"] == json!(true),
    }
}

fn parse_final(node: Option<u64>, value: &Json) -> Option<FinalRead> {
    let messages = value["messages"]
        .as_array()?
        .iter()
        .map(|m| {
            Some((
                m[0].as_u64()?,
                m[1].as_str()?.to_string(),
                m[2].as_str().map(str::to_string),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let groups = value["groups"]
        .as_object()?
        .iter()
        .map(|(name, group)| (name.clone(), group.clone()))
        .collect();
    let dead = value["dead"]
        .as_object()?
        .iter()
        .map(|(name, letters)| {
            let letters = letters
                .as_array()?
                .iter()
                .map(|letter| Some((letter[0].as_u64()?, letter[1].as_u64()?)))
                .collect::<Option<BTreeMap<_, _>>>()?;
            Some((name.clone(), letters))
        })
        .collect::<Option<BTreeMap<_, _>>>()?;
    Some(FinalRead {
        node,
        consistency: value["consistency"].as_str()?.to_string(),
        last_seq: value["last_seq"].as_u64()?,
        messages,
        groups,
        dead,
    })
}

/// Checks the topics history. Properties, one function each:
/// - [`acknowledged_publishes_kept`]: every acknowledged publish is in the final read at the
///   sequence it was acknowledged with, once; nothing stored twice (idempotent resends, request
///   ids), nothing stored that was never published or whose every publish failed;
/// - [`groups_deliver_until_acked`]: after the drain each group has nothing outstanding, every
///   message was acked by each group or is in its dead letters, never delivered again after an
///   accepted ack, never delivered more than `max_deliveries` times, and delivered as stored;
/// - [`stale_acks_refused`]: an accepted ack carries the token of the message's latest delivery
///   to the group: no delivery with a newer token had been fetched before the ack was sent, and
///   no message was accepted under two tokens;
/// - [`per_key_order`]: within a group, a key's messages are delivered in sequence order, and
///   none while an earlier one of its key was in flight under a lease that was still live;
/// - [`subscriber_sees_every_sequence`]: the subscriber saw every sequence in order, with no gap
///   and no repeat across its resumes, as stored, up to the last one;
/// - [`reads_agree`]: every node reads the same messages, group positions and dead letters.
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let recorded = Recorded::parse(&operations);
    let mut stats = json!({"counts": recorded.counts});
    let Some(reference) = recorded.reference() else {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        return result;
    };
    let mut problems = Vec::new();
    acknowledged_publishes_kept(&recorded, reference, &mut problems, &mut stats);
    groups_deliver_until_acked(&recorded, reference, &mut problems, &mut stats);
    stale_acks_refused(&recorded, &mut problems, &mut stats);
    per_key_order(&recorded, reference, &mut problems, &mut stats);
    subscriber_sees_every_sequence(&recorded, reference, &mut problems, &mut stats);
    reads_agree(&recorded, reference, &mut problems);
    stats["messages"] = json!(reference.messages.len());
    stats["final_reads"] = json!(recorded.finals.len());
    CheckResult::from_problems(NAME, problems, stats)
}

/// Every acknowledged publish is in the final read at its acknowledged sequence, with its id and
/// key, once; the read holds sequences 1..=last without a hole (retention discards nothing in a
/// run); every stored id was published by an operation that did not fail.
fn acknowledged_publishes_kept(
    recorded: &Recorded,
    reference: &FinalRead,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let mut ids: BTreeMap<&str, u64> = BTreeMap::new();
    for (expected, (seq, id, _)) in (1..).zip(&reference.messages) {
        if *seq != expected {
            problems.push(format!(
                "topics: the final read has sequence {seq} where {expected} belongs (a hole: \
                 a message lost after it was stored)"
            ));
            break;
        }
        if let Some(first) = ids.insert(id, *seq) {
            problems.push(format!(
                "topics: message {id} stored twice, at sequences {first} and {seq} (an \
                 idempotent resend or a retried request id applied twice)"
            ));
        }
    }
    // id -> (key, some publish of it did not fail).
    let mut published: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
    // id -> the sequence its first acknowledged publish answered.
    let mut acknowledged_at: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut acknowledged, mut duplicates, mut resends) = (0u64, 0u64, 0u64);
    for publish in &recorded.publishes {
        resends += u64::from(publish.resend);
        for (at, (id, key)) in publish.messages.iter().enumerate() {
            let entry = published.entry(id).or_insert((key, false));
            entry.1 |= publish.outcome != OpKind::Fail;
            let Some(&(seq, duplicate)) = publish.results.get(at) else {
                continue;
            };
            duplicates += u64::from(duplicate);
            if let Some(first) = acknowledged_at.get(id.as_str()) {
                if *first != seq || !duplicate {
                    problems.push(format!(
                        "topics: {id} acknowledged at sequence {first}, then published again \
                         with its idempotency key and answered sequence {seq} (duplicate: \
                         {duplicate})"
                    ));
                }
                continue;
            }
            acknowledged_at.insert(id, seq);
            acknowledged += 1;
            match reference.message(seq) {
                Some((_, stored, stored_key))
                    if stored == id && stored_key.as_deref() == Some(key) => {}
                Some((_, stored, stored_key)) => problems.push(format!(
                    "topics: publish of {id} (key {key}) acknowledged at sequence {seq}, which \
                     holds {stored} (key {stored_key:?})"
                )),
                None => problems.push(format!(
                    "topics: acknowledged publish of {id} at sequence {seq} is lost (the final \
                     read ends at {})",
                    reference.last_seq
                )),
            }
        }
    }
    for (seq, id, key) in &reference.messages {
        match published.get(id.as_str()) {
            None => problems.push(format!(
                "topics: sequence {seq} holds {id}, which nobody published"
            )),
            Some((_, false)) => problems.push(format!(
                "topics: sequence {seq} holds {id}, whose every publish failed"
            )),
            Some((published_key, true)) if key.as_deref() != Some(*published_key) => problems
                .push(format!(
                    "topics: sequence {seq} holds {id} with key {key:?}, published with {published_key}"
                )),
            Some(_) => {}
        }
    }
    stats["messages_acknowledged"] = json!(acknowledged);
    stats["duplicate_answers"] = json!(duplicates);
    stats["publish_resends"] = json!(resends);
}

/// After the drain every group settled; each stored message was acked by each group (an ack sent
/// and not refused) or is in its dead letters, not both after an accepted ack; no delivery after
/// an accepted ack; deliveries counted up to `max_deliveries`; deliveries carry what was stored.
fn groups_deliver_until_acked(
    recorded: &Recorded,
    reference: &FinalRead,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    if recorded.drain_settled != Some(true) {
        problems.push(format!(
            "topics: the groups did not settle after the heal (drain: {:?})",
            recorded.drain_settled
        ));
    }
    for group in GROUPS {
        let position = &reference.groups.get(group).cloned().unwrap_or(Json::Null);
        if position["lag"] != json!(0) || position["in_flight"] != json!(0) {
            problems.push(format!(
                "topics: group {group} still has work after the drain: {position}"
            ));
        }
        let dead = reference.dead.get(group).cloned().unwrap_or_default();
        let acked: BTreeSet<u64> = acks_of(recorded, group, |outcome| outcome != OpKind::Fail);
        let accepted = acks_of(recorded, group, |outcome| outcome == OpKind::Ok);
        for (seq, id, _) in &reference.messages {
            if !acked.contains(seq) && !dead.contains_key(seq) {
                problems.push(format!(
                    "topics: group {group} settled message {seq} ({id}) though no ack of it was \
                     sent and it is not in the dead letters"
                ));
            }
            if accepted.contains(seq) && dead.contains_key(seq) {
                problems.push(format!(
                    "topics: group {group} dead-lettered message {seq} after an ack of it was \
                     accepted"
                ));
            }
        }
        for (seq, deliveries) in &dead {
            if *deliveries > u64::from(MAX_DELIVERIES) {
                problems.push(format!(
                    "topics: group {group}'s dead letter {seq} was delivered {deliveries} times \
                     (max {MAX_DELIVERIES})"
                ));
            }
        }
        stats["dead_letters"][group] = json!(dead.len());
    }
    for delivery in &recorded.delivered {
        if delivery.deliveries == 0 || delivery.deliveries > u64::from(MAX_DELIVERIES) {
            problems.push(format!(
                "topics: group {} delivered message {} as delivery {} (max {MAX_DELIVERIES})",
                delivery.group, delivery.seq, delivery.deliveries
            ));
        }
        if let Some((_, id, key)) = reference.message(delivery.seq) {
            if *id != delivery.id || *key != delivery.key {
                problems.push(format!(
                    "topics: group {} delivered {} ({:?}) as message {}, which holds {id} ({key:?})",
                    delivery.group, delivery.id, delivery.key, delivery.seq
                ));
            }
        }
        let acked_before = recorded.acks.iter().any(|ack| {
            ack.outcome == OpKind::Ok
                && ack.group == delivery.group
                && ack.seq == delivery.seq
                && ack.completed.is_some_and(|done| done < delivery.invoked)
        });
        if acked_before {
            problems.push(format!(
                "topics: group {} delivered message {} again (token {}, to {}) after an ack of it \
                 was accepted",
                delivery.group, delivery.seq, delivery.token, delivery.member
            ));
        }
    }
    let redeliveries = recorded
        .delivered
        .iter()
        .filter(|d| d.deliveries > 1)
        .count();
    stats["redeliveries_seen"] = json!(redeliveries);
}

/// The sequences `group` sent an ack of whose outcome passes `keep`.
fn acks_of(recorded: &Recorded, group: &str, keep: impl Fn(OpKind) -> bool) -> BTreeSet<u64> {
    recorded
        .acks
        .iter()
        .filter(|ack| ack.group == group && keep(ack.outcome))
        .map(|ack| ack.seq)
        .collect()
}

/// An accepted ack carries the token of the latest delivery of its message to its group: no
/// Fetch that got the message under a newer token had completed before the ack was sent; and no
/// message is accepted under two tokens. Counted: acks sent after a newer delivery was fetched,
/// and how many of those were refused or accepted.
fn stale_acks_refused(recorded: &Recorded, problems: &mut Vec<String>, stats: &mut Json) {
    let (mut sent, mut refused, mut accepted) = (0u64, 0u64, 0u64);
    for ack in &recorded.acks {
        let newer = recorded.delivered.iter().find(|delivery| {
            delivery.group == ack.group
                && delivery.seq == ack.seq
                && delivery.token > ack.token
                && delivery.completed < ack.invoked
        });
        let Some(newer) = newer else {
            continue;
        };
        sent += 1;
        match ack.outcome {
            OpKind::Fail => refused += 1,
            OpKind::Ok => {
                accepted += 1;
                problems.push(format!(
                    "topics: group {} accepted an ack of message {} with the stale token {}{} \
                     after {} had fetched it under token {}",
                    ack.group,
                    ack.seq,
                    ack.token,
                    if ack.stale { " (scripted)" } else { "" },
                    newer.member,
                    newer.token
                ));
            }
            OpKind::Info | OpKind::Invoke => {}
        }
    }
    let mut tokens: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for ack in recorded.acks.iter().filter(|ack| ack.outcome == OpKind::Ok) {
        if let Some(other) = tokens.insert((ack.group.as_str(), ack.seq), ack.token) {
            if other != ack.token {
                problems.push(format!(
                    "topics: group {} accepted acks of message {} under two tokens, {other} and {}",
                    ack.group, ack.seq, ack.token
                ));
            }
        }
    }
    stats["acks_after_a_newer_delivery"] = json!(sent);
    stats["acks_after_a_newer_delivery_refused"] = json!(refused);
    stats["acks_after_a_newer_delivery_accepted"] = json!(accepted);
}

/// Within a group, a key's messages are delivered in sequence order (in token order, which is
/// the group's apply order, no delivery of an earlier message follows one of a later message),
/// and none was delivered while an earlier message of its key was in flight under a live lease:
/// an accepted ack of the earlier message with its token, sent after the later one's Fetch had
/// completed, proves that lease was still the message's current delivery then.
fn per_key_order(
    recorded: &Recorded,
    reference: &FinalRead,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let key_of = |delivery: &Delivered| {
        delivery
            .key
            .clone()
            .or_else(|| reference.message(delivery.seq).and_then(|m| m.2.clone()))
    };
    let mut by_key: BTreeMap<(String, String), Vec<&Delivered>> = BTreeMap::new();
    for delivery in &recorded.delivered {
        if let Some(key) = key_of(delivery) {
            by_key
                .entry((delivery.group.clone(), key))
                .or_default()
                .push(delivery);
        }
    }
    let mut overlaps = 0u64;
    for ((group, key), deliveries) in &mut by_key {
        deliveries.sort_by_key(|delivery| delivery.token);
        let mut latest: Option<&Delivered> = None;
        for delivery in deliveries.iter() {
            if let Some(later) = latest.filter(|later| later.seq > delivery.seq) {
                problems.push(format!(
                    "topics: group {group}, key {key}: message {} delivered (token {}) after \
                     the later message {} (token {})",
                    delivery.seq, delivery.token, later.seq, later.token
                ));
            }
            if latest.is_none_or(|latest| delivery.seq >= latest.seq) {
                latest = Some(delivery);
            }
        }
        for ack in recorded
            .acks
            .iter()
            .filter(|ack| ack.outcome == OpKind::Ok && ack.group == *group)
        {
            let earlier = deliveries
                .iter()
                .any(|d| d.seq == ack.seq && d.token == ack.token);
            if !earlier {
                continue;
            }
            let overlapping = deliveries
                .iter()
                .find(|d| d.seq > ack.seq && d.token > ack.token && d.completed < ack.invoked);
            if let Some(later) = overlapping {
                overlaps += 1;
                problems.push(format!(
                    "topics: group {group}, key {key}: message {} was delivered to {} (token {}) \
                     while the earlier message {} was still in flight (its ack under token {} \
                     was accepted afterwards)",
                    later.seq, later.member, later.token, ack.seq, ack.token
                ));
            }
        }
    }
    stats["keys_checked"] = json!(by_key.len());
    stats["key_overlaps"] = json!(overlaps);
}

/// The subscriber saw sequences 1, 2, ... in order, each with the id stored there, no repeat and
/// no gap across its resumes (unless a gap was recorded: retention passed its cursor), and each
/// resume started after the last sequence it had seen, up to the topic's last sequence.
fn subscriber_sees_every_sequence(
    recorded: &Recorded,
    reference: &FinalRead,
    problems: &mut Vec<String>,
    stats: &mut Json,
) {
    let mut last: u64 = 0;
    let (mut seen, mut resumes, mut gaps) = (0u64, 0u64, 0u64);
    let mut gap_allowed = false;
    for event in &recorded.subscribed {
        match event {
            Subscribed::Start { after } => {
                resumes += u64::from(after.is_some());
                if after.unwrap_or(0) > last {
                    problems.push(format!(
                        "topics: the subscriber resumed after {after:?} although it had seen only \
                         up to {last}"
                    ));
                }
            }
            Subscribed::Gap => {
                gaps += 1;
                gap_allowed = true;
            }
            Subscribed::Message { seq, id } => {
                seen += 1;
                if *seq <= last {
                    problems.push(format!(
                        "topics: the subscriber saw sequence {seq} again (after {last})"
                    ));
                    continue;
                }
                if *seq != last + 1 && !gap_allowed {
                    problems.push(format!(
                        "topics: the subscriber skipped from {last} to {seq}"
                    ));
                }
                gap_allowed = false;
                if let Some((_, stored, _)) = reference.message(*seq) {
                    if stored != id {
                        problems.push(format!(
                            "topics: the subscriber saw {id} at sequence {seq}, which holds {stored}"
                        ));
                    }
                }
                last = *seq;
            }
        }
    }
    if last < reference.last_seq {
        problems.push(format!(
            "topics: the subscriber saw up to sequence {last} of {}",
            reference.last_seq
        ));
    }
    stats["subscriber"] = json!({"messages": seen, "resumes": resumes, "gaps": gaps});
}

/// Every node reads the same messages, group positions and dead letters as the reference.
fn reads_agree(recorded: &Recorded, reference: &FinalRead, problems: &mut Vec<String>) {
    for read in &recorded.finals {
        let node = read.node.unwrap_or(0);
        if read.messages != reference.messages {
            let differ = read
                .messages
                .iter()
                .zip(&reference.messages)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("{a:?} vs {b:?}"))
                .unwrap_or_else(|| {
                    format!(
                        "{} messages vs {}",
                        read.messages.len(),
                        reference.messages.len()
                    )
                });
            problems.push(format!(
                "topics: node {node} ({}) reads other messages than the reference: {differ}",
                read.consistency
            ));
        }
        if read.groups != reference.groups {
            problems.push(format!(
                "topics: node {node} ({}) reads other group positions: {:?} vs {:?}",
                read.consistency, read.groups, reference.groups
            ));
        }
        if read.dead != reference.dead {
            problems.push(format!(
                "topics: node {node} ({}) reads other dead letters",
                read.consistency
            ));
        }
    }
}
