//! The locks checker on hand-made histories: a good one (with stale holders refused, unknown
//! outcomes and concurrent acquires), and for each property a history that breaks it, checked
//! by [`check`]. The properties themselves are tested one by one in `fenced/check/tests.rs`.

use serde_json::{json, Value as Json};

use super::*;
use crate::jepsen::history::Script;
use crate::jepsen::workload::fenced::{END, FINAL_WATCH};
use crate::jepsen::workload::Verdict;

const KEY: &str = "jepsen/locks/lock-0";

fn acquire(process: u64, script: Script) -> Script {
    script.invoke(
        process,
        "acquire",
        Some("lock-0"),
        json!({"name": "lock-0", "ttl_ms": 1000, "wait_ms": 2000}),
    )
}

fn granted(token: u64) -> Json {
    json!({"name": "lock-0", "token": token, "acquired": true, "expires_at_ms": 1})
}

fn write(write: u64, token: u64, stale: bool) -> Json {
    json!({"name": "lock-0", "token": token, "write": write, "stale": stale})
}

fn acked(write_id: u64, token: u64, stale: bool, revision: u64) -> Json {
    let mut value = write(write_id, token, stale);
    value["revision"] = json!(revision);
    value
}

fn change(revision: u64, token: u64, write: u64) -> Json {
    json!([revision, KEY, {"token": token, "write": write, "process": 1}])
}

fn finals(script: Script, changes: &[Json], end: u64) -> Vec<Event> {
    let mut events: Vec<Json> = changes.to_vec();
    events.push(json!([end, END_KEY, "end"]));
    let mut script = script
        .invoke(90, END, Some(END_KEY), json!({}))
        .ok(90, json!({ "revision": end }));
    for process in 91..94 {
        script = script
            .invoke(process, FINAL_WATCH, None, json!({"from": 1}))
            .ok(process, json!({ "events": events }));
    }
    script.events()
}

/// Process 1 takes the lock (token 3) and sleeps past its TTL; process 2 queues (token 4), is
/// granted once 3 expired, writes (r1) and releases; process 1 wakes, its stale write is refused
/// as lock-lost and so is its release. Process 3's acquire (concurrent with 2's) got token 5 and
/// was answered "not acquired" (its wait ended); process 4's write is unknown and applied.
fn stale_holder(stale_write: fn(Script) -> Script) -> Script {
    let script = acquire(1, Script::new(NAME)).ok(1, granted(3));
    let script = acquire(2, script);
    let script = acquire(3, script)
        .ok(2, granted(4))
        .ok(
            3,
            json!({"name": "lock-0", "token": 5, "acquired": false, "expires_at_ms": 0}),
        )
        .invoke(2, "write", Some(KEY), write(1, 4, false))
        .ok(2, acked(1, 4, false, 1))
        .invoke(
            2,
            "release",
            Some("lock-0"),
            json!({"name": "lock-0", "token": 4}),
        )
        .ok(2, json!({"name": "lock-0", "token": 4}))
        .invoke(1, "write", Some(KEY), write(2, 3, true));
    let script = stale_write(script)
        .invoke(
            1,
            "release",
            Some("lock-0"),
            json!({"name": "lock-0", "token": 3}),
        )
        .fail_with(1, "FailedPrecondition: lock lost [lock-lost]");
    acquire(4, script)
        .ok(4, granted(6))
        .invoke(4, "write", Some(KEY), write(3, 6, false))
        .info(4)
}

fn refused(script: Script) -> Script {
    script.fail_with(1, "FailedPrecondition: lock lost: token 3 [lock-lost]")
}

#[test]
fn a_good_history_is_valid() {
    let events = finals(
        stale_holder(refused),
        &[change(1, 4, 1), change(2, 6, 3)],
        3,
    );
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["stale_writes_lock_lost"], 1);
    assert_eq!(result.stats["releases_lock_lost"], 1);
    assert_eq!(result.stats["acquires_granted"], 3);
    assert_eq!(result.stats["applied"], 2);
}

#[test]
fn a_stale_holder_whose_write_lands_is_invalid() {
    // What the nodes do with `--unsafe-test-mode skip-fence`: the stale write is applied after
    // its successor's, and acknowledged.
    let applied = |script: Script| script.ok(1, acked(2, 3, true, 2));
    let events = finals(
        stale_holder(applied),
        &[change(1, 4, 1), change(2, 3, 2)],
        3,
    );
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems[0].contains("stale holder wrote"),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_stale_write_refused_but_applied_is_invalid() {
    let events = finals(
        stale_holder(refused),
        &[change(1, 4, 1), change(2, 6, 3), change(3, 6, 2)],
        4,
    );
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.contains("refused as lock-lost")),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_lost_acknowledged_write_is_invalid() {
    let events = finals(stale_holder(refused), &[change(2, 6, 3)], 3);
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.contains("missing from the history")),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_token_before_its_time_is_invalid() {
    // Process 5 acquires after process 1's token 3 was acknowledged, and gets token 2.
    let script = acquire(5, stale_holder(refused)).ok(5, granted(2));
    let events = finals(script, &[change(1, 4, 1), change(2, 6, 3)], 3);
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems.iter().any(|p| p.contains("got token 2")),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_token_twice_is_invalid() {
    let script = acquire(5, stale_holder(refused)).ok(5, granted(6));
    let events = finals(script, &[change(1, 4, 1), change(2, 6, 3)], 3);
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.contains("token 6 was given twice")),
        "{:?}",
        result.problems
    );
}

#[test]
fn no_replay_is_unknown() {
    let events = stale_holder(refused).events();
    assert_eq!(check(&events).verdict, Verdict::Unknown);
}
