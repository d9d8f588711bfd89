//! The transactions checker on hand-made histories: a good one, and one breaking each property.

use serde_json::{json, Value as Json};

use super::*;

const BUDGET: Duration = Duration::from_secs(5);
use crate::jepsen::history::Script;
use crate::jepsen::workload::Verdict;

/// Transaction `txn` on `task` (counter 0, compared at `compare`), acknowledged at `rev` with
/// follow-up task `follow_up`.
fn txn_ok(
    script: Script,
    p: u64,
    txn: u64,
    task: u64,
    compare: u64,
    rev: u64,
    follow_up: u64,
) -> Script {
    let sent = json!({"txn": txn, "task": task, "token": 7, "counter": 0, "compare": compare, "stale": false});
    let mut answer = sent.clone();
    answer["revision"] = json!(rev);
    answer["follow_up"] = json!(follow_up);
    script.invoke(p, "txn", None, sent).ok(p, answer)
}

fn txn_refused(script: Script, p: u64, txn: u64, task: u64, stale: bool, error: &str) -> Script {
    let sent = json!({"txn": txn, "task": task, "token": 6, "counter": 0, "compare": null, "stale": stale});
    script.invoke(p, "txn", None, sent).fail_with(p, error)
}

/// A reader's look at `task`: its result key, its state and result, the follow-ups found, and
/// counter 1, which no transaction here writes.
fn read(
    script: Script,
    p: u64,
    task: u64,
    key: (Json, u64),
    state: &str,
    result: Json,
    follow_ups: Json,
) -> Script {
    script
        .invoke(p, "read", None, json!({"task": task, "counter": 1}))
        .ok(
            p,
            json!({
                "task": task, "key": key.0, "key_rev": key.1, "state": state, "result": result,
                "follow_ups": follow_ups, "counter": 1, "counter_value": null, "counter_rev": 0,
            }),
        )
}

fn final_read(script: Script, p: u64, keys: Json, tasks: Json, follow_ups: Json) -> Script {
    script.invoke(p, FINAL_READ, None, json!({"node": 1})).ok(
        p,
        json!({"node": 1, "consistency": "LINEARIZABLE", "keys": keys, "tasks": tasks, "follow_ups": follow_ups}),
    )
}

/// Transaction 1 on task 10 (revision 5, follow-up 100), whole at the end.
fn whole_final(script: Script, p: u64) -> Script {
    final_read(
        script,
        p,
        json!({"jepsen/txn/r/10": {"value": 1, "rev": 5}, "jepsen/txn/c/0": {"value": 1, "rev": 5}}),
        json!({"10": {"state": "SUCCEEDED", "result": 1}}),
        json!([{"id": 100, "txn": 1}]),
    )
}

fn problems(script: Script) -> Vec<String> {
    let result = check(&script.events(), BUDGET);
    assert_eq!(result.verdict, Verdict::Invalid, "{:?}", result.stats);
    result.problems
}

#[test]
fn a_good_history_is_valid() {
    let script = txn_refused(
        Script::new(NAME),
        1,
        2,
        10,
        true,
        "FailedPrecondition: ops[3]: lease lost [rejected]",
    );
    let script = read(
        script,
        2,
        10,
        (Json::Null, 0),
        "ASSIGNED",
        Json::Null,
        json!({}),
    );
    let script = txn_refused(script, 1, 3, 10, false, "compare failed at revision 4");
    let script = txn_ok(script, 1, 1, 10, 0, 5, 100);
    let script = read(
        script,
        2,
        10,
        (json!(1), 5),
        "SUCCEEDED",
        json!(1),
        json!({"1": 1}),
    );
    // Applied between the key's read and the task's: the key missed it, the rest saw it.
    let script = read(
        script,
        3,
        10,
        (Json::Null, 0),
        "SUCCEEDED",
        json!(1),
        json!({"1": 1}),
    );
    let script = whole_final(script, 4);
    let result = check(&script.events(), BUDGET);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["stale_refused"], 1);
    assert_eq!(result.stats["txns_compare_failed"], 1);
}

#[test]
fn a_read_of_part_of_a_transaction_is_invalid() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 0, 5, 100);
    let script = read(
        script,
        2,
        10,
        (json!(1), 5),
        "ASSIGNED",
        Json::Null,
        json!({"1": 1}),
    );
    let script = read(
        script,
        2,
        10,
        (Json::Null, 0),
        "SUCCEEDED",
        json!(1),
        json!({"1": 0}),
    );
    let script = whole_final(script, 4);
    let found = problems(script);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().all(|p| p.contains("part of a transaction")),
        "{found:?}"
    );
    assert!(reads_see_whole_transactions(
        &parse(&whole_final(Script::new(NAME), 1).events()).unwrap()
    )
    .is_empty());
}

#[test]
fn a_final_state_with_part_of_a_transaction_is_invalid() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 0, 5, 100);
    let script = final_read(
        script,
        4,
        json!({"jepsen/txn/r/10": {"value": 1, "rev": 5}}),
        json!({"10": {"state": "ASSIGNED", "result": null}}),
        json!([{"id": 100, "txn": 1}]),
    );
    let history = parse(&script.events()).unwrap();
    let found = final_state_is_whole(&history);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(!acknowledged_transactions_are_visible(&history).is_empty());
}

#[test]
fn a_refused_transaction_that_left_a_trace_is_invalid() {
    // What txn-partial does: the stale transaction's submit applied, its completion was refused.
    let script = txn_refused(
        Script::new(NAME),
        1,
        2,
        10,
        true,
        "FailedPrecondition: ops[0]: lease lost",
    );
    let script = txn_ok(script, 1, 1, 10, 0, 5, 100);
    let script = final_read(
        script,
        4,
        json!({"jepsen/txn/r/10": {"value": 1, "rev": 5}}),
        json!({"10": {"state": "SUCCEEDED", "result": 1}}),
        json!([{"id": 99, "txn": 2}, {"id": 100, "txn": 1}]),
    );
    let history = parse(&script.events()).unwrap();
    let found = refused_transactions_left_no_trace(&history);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("left a trace") && found[0].contains("stale token"),
        "{found:?}"
    );
    // A value no transaction was sent with.
    let script = final_read(
        Script::new(NAME),
        4,
        json!({}),
        json!({}),
        json!([{"id": 1, "txn": 9}]),
    );
    assert!(problems(script)[0].contains("never sent"));
}

#[test]
fn an_acknowledged_stale_token_is_invalid() {
    let sent =
        json!({"txn": 2, "task": 10, "token": 6, "counter": 0, "compare": null, "stale": true});
    let script = Script::new(NAME)
        .invoke(1, "txn", None, sent.clone())
        .ok(1, sent);
    let found = refused_transactions_left_no_trace(&parse(&script.events()).unwrap());
    assert!(
        found[0].contains("stale token and was acknowledged"),
        "{found:?}"
    );
}

#[test]
fn a_lost_acknowledged_transaction_is_invalid() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 0, 5, 100);
    let script = final_read(
        script,
        4,
        json!({}),
        json!({"10": {"state": "PENDING", "result": null}}),
        json!([]),
    );
    let found = problems(script);
    assert!(found.iter().any(|p| p.contains("lost")), "{found:?}");
}

#[test]
fn a_transaction_applied_twice_is_invalid() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 0, 5, 100);
    let script = read(
        script,
        2,
        10,
        (json!(1), 5),
        "SUCCEEDED",
        json!(1),
        json!({"1": 2}),
    );
    let script = final_read(
        script,
        4,
        json!({"jepsen/txn/r/10": {"value": 1, "rev": 5}}),
        json!({"10": {"state": "SUCCEEDED", "result": 1}}),
        json!([{"id": 100, "txn": 1}, {"id": 101, "txn": 1}]),
    );
    let found = applied_at_most_once(&parse(&script.events()).unwrap());
    assert_eq!(found.len(), 1, "reported once per transaction: {found:?}");
    assert!(found[0].contains("more than once"));
}

#[test]
fn revisions_against_real_time_and_lost_updates_are_invalid() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 3, 5, 100);
    // Began after 1 was acknowledged, yet an older revision; and replaced the same revision 3.
    let script = txn_ok(script, 2, 2, 11, 3, 4, 101);
    let found = revisions_follow_real_time(&parse(&script.events()).unwrap());
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("acknowledged before it began"),
        "{found:?}"
    );
    assert!(found[1].contains("lost update"), "{found:?}");
    // Concurrent ones may come in either order.
    let script = Script::new(NAME)
        .invoke(
            1,
            "txn",
            None,
            json!({"txn": 1, "task": 10, "counter": 0, "compare": 3}),
        )
        .invoke(
            2,
            "txn",
            None,
            json!({"txn": 2, "task": 11, "counter": 0, "compare": 5}),
        )
        .ok(
            2,
            json!({"txn": 2, "task": 11, "counter": 0, "compare": 5, "revision": 6}),
        )
        .ok(
            1,
            json!({"txn": 1, "task": 10, "counter": 0, "compare": 3, "revision": 5}),
        );
    assert!(revisions_follow_real_time(&parse(&script.events()).unwrap()).is_empty());
}

#[test]
fn keys_of_one_transaction_at_two_revisions_are_invalid() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 0, 5, 100);
    let script = read(
        script,
        2,
        10,
        (json!(1), 6),
        "SUCCEEDED",
        json!(1),
        json!({"1": 1}),
    );
    let found = keys_carry_their_transactions_revision(&parse(&script.events()).unwrap());
    assert_eq!(found.len(), 1, "{found:?}");
    // An unknown transaction's keys must agree among themselves.
    let script = Script::new(NAME)
        .invoke(1, "txn", None, json!({"txn": 1, "task": 10, "counter": 0}))
        .info(1)
        .invoke(2, "counter", None, json!({"counter": 0}))
        .ok(2, json!({"counter": 0, "value": 1, "rev": 8}));
    let script = read(
        script,
        3,
        10,
        (json!(1), 9),
        "SUCCEEDED",
        json!(1),
        json!({"1": 1}),
    );
    let found = keys_carry_their_transactions_revision(&parse(&script.events()).unwrap());
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn without_a_final_read_the_check_is_unknown() {
    let script = txn_ok(Script::new(NAME), 1, 1, 10, 0, 5, 100);
    assert_eq!(check(&script.events(), BUDGET).verdict, Verdict::Unknown);
}

#[test]
fn a_counter_that_is_not_linearizable_is_invalid() {
    // Transaction 2 replaced the value 1 that its worker read, but a read after transaction 2
    // was acknowledged still returned 1.
    let cas = |txn: u64, expected: Json| json!({"txn": txn, "task": 10 + txn, "counter": 0, "compare": 5, "expected": expected, "stale": false});
    let script = Script::new(NAME)
        .invoke(1, "txn", None, json!({"txn": 1, "task": 11, "counter": 0, "compare": 0, "expected": null}))
        .ok(1, json!({"txn": 1, "task": 11, "counter": 0, "compare": 0, "expected": null, "revision": 5}))
        .invoke(2, "counter", None, json!({"counter": 0}))
        .ok(2, json!({"counter": 0, "value": 1, "rev": 5}))
        .invoke(2, "txn", None, cas(2, json!(1)))
        .ok(2, cas(2, json!(1)))
        .invoke(3, "counter", None, json!({"counter": 0}))
        .ok(3, json!({"counter": 0, "value": 1, "rev": 5}));
    let found = counters_are_linearizable(&script.events(), BUDGET).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    // A deliberately wrong compare that was acknowledged cannot be placed either.
    let script = Script::new(NAME)
        .invoke(
            1,
            "txn",
            None,
            json!({"txn": 1, "task": 11, "counter": 0, "compare": 0, "expected": null}),
        )
        .ok(
            1,
            json!({"txn": 1, "task": 11, "counter": 0, "compare": 0, "expected": null}),
        )
        .invoke(2, "txn", None, cas(2, json!(WRONG_COMPARE)))
        .ok(2, cas(2, json!(WRONG_COMPARE)));
    assert_eq!(
        counters_are_linearizable(&script.events(), BUDGET)
            .unwrap()
            .len(),
        1
    );
    // Refused, it is fine, and a read then still sees 1.
    let script = Script::new(NAME)
        .invoke(
            1,
            "txn",
            None,
            json!({"txn": 1, "task": 11, "counter": 0, "compare": 0, "expected": null}),
        )
        .ok(
            1,
            json!({"txn": 1, "task": 11, "counter": 0, "compare": 0, "expected": null}),
        )
        .invoke(2, "txn", None, cas(2, json!(WRONG_COMPARE)))
        .fail_with(2, "compare failed")
        .invoke(3, "counter", None, json!({"counter": 0}))
        .ok(3, json!({"counter": 0, "value": 1, "rev": 5}));
    assert!(counters_are_linearizable(&script.events(), BUDGET)
        .unwrap()
        .is_empty());
}
