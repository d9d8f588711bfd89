//! The checker on hand-made histories: a run that went well, then each property broken on its
//! own.

use serde_json::{json, Value as Json};

use super::check;
use crate::jepsen::history::{Event, Script};
use crate::jepsen::workload::topics::NAME;
use crate::jepsen::workload::{Verdict, FINAL_READ};

/// A history under construction: processes are numbered as they are used.
struct History {
    script: Script,
    next: u64,
}

impl History {
    fn new() -> Self {
        Self {
            script: Script::new(NAME),
            next: 1,
        }
    }

    fn op(mut self, f: &str, invoke: Json, ok: Json) -> Self {
        self.next += 1;
        let process = self.next;
        self.script = self.script.invoke(process, f, None, invoke).ok(process, ok);
        self
    }

    fn publish(self, id: &str, key: &str, seq: u64) -> Self {
        self.op(
            "publish",
            json!({"messages": [{"id": id, "key": key}], "resend": false}),
            json!({"messages": [{"id": id, "key": key, "seq": seq, "duplicate": false}]}),
        )
    }

    /// A fetch by `member` of `group` that got `deliveries`: (seq, token, delivery number).
    fn fetch(self, group: &str, member: &str, deliveries: &[(u64, u64, u64)]) -> Self {
        let listed: Vec<Json> = deliveries
            .iter()
            .map(|(seq, token, n)| {
                json!({"seq": seq, "token": token, "deliveries": n,
                    "id": format!("m{seq}"), "key": key_of(*seq)})
            })
            .collect();
        let invoke = json!({"group": group, "member": member, "max": 3});
        let mut ok = invoke.clone();
        ok["deliveries"] = json!(listed);
        self.op("fetch", invoke, ok)
    }

    fn ack(self, group: &str, seq: u64, token: u64) -> Self {
        let value = ack_value(group, seq, token, false);
        self.op("ack", value.clone(), value)
    }

    fn refused_ack(mut self, group: &str, seq: u64, token: u64) -> Self {
        self.next += 1;
        let process = self.next;
        self.script = self
            .script
            .invoke(process, "ack", None, ack_value(group, seq, token, true))
            .fail_with(process, "FailedPrecondition: lease lost: stale token");
        self
    }

    fn sub(self, f: &str, value: Json) -> Self {
        self.op(f, value.clone(), value)
    }

    fn drain(self) -> Self {
        self.op("drain", json!({}), json!({"settled": true, "groups": {}}))
    }

    /// Three final reads (the last linearizable) of messages 1..=`last` and settled groups.
    fn finals(mut self, last: u64, dead: Json) -> Self {
        for consistency in ["serializable", "serializable", "linearizable"] {
            let value = final_value(consistency, last, dead.clone());
            self.next += 1;
            let process = self.next;
            self.script = self
                .script
                .invoke(
                    process,
                    FINAL_READ,
                    None,
                    json!({"consistency": consistency}),
                )
                .ok(process, value);
        }
        self
    }

    fn events(self) -> Vec<Event> {
        self.script.events()
    }
}

fn key_of(seq: u64) -> String {
    format!("k{}", seq % 2)
}

fn ack_value(group: &str, seq: u64, token: u64, stale: bool) -> Json {
    json!({"group": group, "member": "m", "seq": seq, "token": token, "stale": stale})
}

fn final_value(consistency: &str, last: u64, dead: Json) -> Json {
    let settled = json!({"ack_floor": last, "last_delivered": last, "in_flight": 0,
        "waiting": 0, "acked": last, "dead_letters": 0, "lag": 0});
    json!({
        "consistency": consistency,
        "first_seq": 1,
        "last_seq": last,
        "messages": (1..=last).map(|seq| json!([seq, format!("m{seq}"), key_of(seq)])).collect::<Vec<_>>(),
        "groups": {"g1": settled, "g2": settled},
        "dead": dead,
    })
}

fn no_dead() -> Json {
    json!({"g1": [], "g2": []})
}

/// Messages 1..=3 (keys k1, k0, k1) published, delivered to both groups in order, acked; the
/// subscriber saw all three across one resume.
fn good_run() -> History {
    History::new()
        .publish("m1", "k1", 1)
        .publish("m2", "k0", 2)
        .publish("m3", "k1", 3)
        .sub("sub-start", json!({"after": null, "node": 1}))
        .sub("sub-message", json!({"seq": 1, "id": "m1"}))
        .sub("sub-start", json!({"after": 1, "node": 2}))
        .sub("sub-message", json!({"seq": 2, "id": "m2"}))
        .sub("sub-message", json!({"seq": 3, "id": "m3"}))
        .fetch("g1", "a", &[(1, 1, 1), (2, 2, 1)])
        .ack("g1", 1, 1)
        .ack("g1", 2, 2)
        .fetch("g1", "b", &[(3, 3, 1)])
        .ack("g1", 3, 3)
        .fetch("g2", "c", &[(1, 1, 1)])
        // The ack wait passed: another member got it again; the stale ack is refused.
        .fetch("g2", "d", &[(1, 2, 2), (2, 3, 1)])
        .refused_ack("g2", 1, 1)
        .ack("g2", 1, 2)
        .ack("g2", 2, 3)
        .fetch("g2", "c", &[(3, 4, 1)])
        .ack("g2", 3, 4)
        .drain()
}

fn verdict(events: &[Event]) -> (Verdict, Vec<String>) {
    let result = check(events);
    (result.verdict, result.problems)
}

fn assert_caught(history: History, last: u64, dead: Json, words: &str) {
    let (verdict, problems) = verdict(&history.finals(last, dead).events());
    assert_eq!(verdict, Verdict::Invalid, "{problems:?}");
    assert!(
        problems.iter().any(|problem| problem.contains(words)),
        "expected {words:?} in {problems:?}"
    );
}

#[test]
fn a_good_run_is_valid() {
    let events = good_run().finals(3, no_dead()).events();
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(
        result.stats["acks_after_a_newer_delivery_refused"],
        json!(1)
    );
}

#[test]
fn a_lost_acknowledged_publish_is_caught() {
    let history = good_run().publish("m4", "k0", 4);
    assert_caught(history, 3, no_dead(), "is lost");
}

#[test]
fn a_republished_message_must_be_a_duplicate() {
    let resend = |seq: u64, duplicate: bool| {
        good_run().op(
            "publish",
            json!({"messages": [{"id": "m2", "key": "k0"}], "resend": true}),
            json!({"messages": [{"id": "m2", "key": "k0", "seq": seq, "duplicate": duplicate}]}),
        )
    };
    let events = resend(2, true).finals(3, no_dead()).events();
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["duplicate_answers"], json!(1));
    assert_caught(resend(4, false), 3, no_dead(), "published again");
}

#[test]
fn a_message_stored_twice_is_caught() {
    let history = History::new().publish("m1", "k1", 1);
    let mut events = history.drain().finals(1, no_dead()).events();
    // The final reads hold m1 at 1 and again at 2.
    for event in events.iter_mut().filter(|e| e.f == FINAL_READ) {
        if event.value["messages"].is_array() {
            event.value["messages"] = json!([[1, "m1", "k1"], [2, "m1", "k1"]]);
            event.value["last_seq"] = json!(2);
        }
    }
    let (verdict, problems) = verdict(&events);
    assert_eq!(verdict, Verdict::Invalid);
    assert!(
        problems.iter().any(|p| p.contains("stored twice")),
        "{problems:?}"
    );
}

#[test]
fn an_accepted_stale_ack_is_caught() {
    let history = History::new()
        .publish("m1", "k1", 1)
        .sub("sub-start", json!({"after": null, "node": 1}))
        .sub("sub-message", json!({"seq": 1, "id": "m1"}))
        .fetch("g1", "a", &[(1, 1, 1)])
        .fetch("g1", "b", &[(1, 2, 2)])
        .ack("g1", 1, 1)
        .fetch("g2", "c", &[(1, 1, 1)])
        .ack("g2", 1, 1)
        .drain();
    assert_caught(history, 1, no_dead(), "stale token 1");
}

#[test]
fn a_message_never_acked_nor_dead_is_caught() {
    let history = History::new()
        .publish("m1", "k1", 1)
        .sub("sub-start", json!({"after": null, "node": 1}))
        .sub("sub-message", json!({"seq": 1, "id": "m1"}))
        .fetch("g1", "a", &[(1, 1, 1)])
        .ack("g1", 1, 1)
        .drain();
    assert_caught(history, 1, no_dead(), "group g2 settled message 1");
}

#[test]
fn a_dead_letter_is_as_good_as_an_ack() {
    let history = History::new()
        .publish("m1", "k1", 1)
        .sub("sub-start", json!({"after": null, "node": 1}))
        .sub("sub-message", json!({"seq": 1, "id": "m1"}))
        .fetch("g1", "a", &[(1, 1, 1)])
        .ack("g1", 1, 1)
        .drain();
    let events = history
        .finals(1, json!({"g1": [], "g2": [[1, 5]]}))
        .events();
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
}

#[test]
fn a_key_delivered_out_of_order_is_caught() {
    // m1 and m3 share key k1: m3 delivered before m1's (re)delivery.
    let history = good_run()
        .fetch("g1", "c", &[(3, 9, 1)])
        .fetch("g1", "a", &[(1, 10, 2)]);
    assert_caught(history, 3, no_dead(), "after the later message 3");
}

#[test]
fn a_key_delivered_twice_at_once_is_caught() {
    // One fetch gets m1 and m3 (both k1) and m1 is acked afterwards: m3 went out while m1 was in
    // flight, what a group without per-key order does.
    let history = History::new()
        .publish("m1", "k1", 1)
        .publish("m2", "k0", 2)
        .publish("m3", "k1", 3)
        .sub("sub-start", json!({"after": null, "node": 1}))
        .sub("sub-message", json!({"seq": 1, "id": "m1"}))
        .sub("sub-message", json!({"seq": 2, "id": "m2"}))
        .sub("sub-message", json!({"seq": 3, "id": "m3"}))
        .fetch("g1", "a", &[(1, 1, 1), (2, 2, 1), (3, 3, 1)])
        .ack("g1", 1, 1)
        .ack("g1", 2, 2)
        .ack("g1", 3, 3)
        .fetch("g2", "a", &[(1, 1, 1), (2, 2, 1)])
        .ack("g2", 1, 1)
        .ack("g2", 2, 2)
        .fetch("g2", "a", &[(3, 3, 1)])
        .ack("g2", 3, 3)
        .drain();
    assert_caught(
        history,
        3,
        no_dead(),
        "message 3 was delivered to a (token 3) while the earlier message 1 was still in flight",
    );
}

#[test]
fn a_subscriber_gap_or_repeat_is_caught() {
    let history = good_run()
        .sub("sub-start", json!({"after": 3, "node": 3}))
        .sub("sub-message", json!({"seq": 3, "id": "m3"}));
    assert_caught(history, 3, no_dead(), "saw sequence 3 again");
    let skipping = History::new()
        .publish("m1", "k1", 1)
        .publish("m2", "k0", 2)
        .sub("sub-start", json!({"after": null, "node": 1}))
        .sub("sub-message", json!({"seq": 2, "id": "m2"}))
        .fetch("g1", "a", &[(1, 1, 1), (2, 2, 1)])
        .ack("g1", 1, 1)
        .ack("g1", 2, 2)
        .fetch("g2", "a", &[(1, 1, 1), (2, 2, 1)])
        .ack("g2", 1, 1)
        .ack("g2", 2, 2)
        .drain();
    assert_caught(skipping, 2, no_dead(), "skipped from 0 to 2");
}

#[test]
fn nodes_that_disagree_are_caught() {
    let mut events = good_run().finals(3, no_dead()).events();
    let read = events
        .iter_mut()
        .find(|e| e.f == FINAL_READ && e.value["messages"].is_array())
        .expect("a final read");
    read.value["groups"]["g1"]["lag"] = json!(1);
    let (verdict, problems) = verdict(&events);
    assert_eq!(verdict, Verdict::Invalid);
    assert!(
        problems.iter().any(|p| p.contains("other group positions")),
        "{problems:?}"
    );
}
