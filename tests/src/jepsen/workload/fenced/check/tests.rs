//! The shared fenced-write and token properties on hand-made histories: for each property (each
//! function of `check.rs`) a history that passes it and one that breaks it.

use serde_json::{json, Value as Json};

use super::*;
use crate::jepsen::history::{pair, Event, Script};

const W: &str = "test";
const K: &str = "jepsen/test/lock-0";
const END_KEY: &str = "jepsen/test/~end";

/// A write's invocation value.
fn write(write: u64, token: u64) -> Json {
    json!({"name": "lock-0", "token": token, "write": write, "stale": false})
}

fn acked(write_id: u64, token: u64, revision: u64) -> Json {
    let mut value = write(write_id, token);
    value["revision"] = json!(revision);
    value
}

/// A replayed change of `K`.
fn change(revision: u64, token: u64, write: u64) -> Json {
    json!([revision, K, {"token": token, "write": write, "process": 1}])
}

/// Everything read from `events`.
fn fenced(events: &[Event]) -> Fenced {
    let mut fenced = Fenced::new(END_KEY);
    for operation in pair(events, Some(W)).unwrap() {
        assert!(fenced.add(&operation), "{operation:?}");
    }
    fenced
}

/// Replays `changes` (plus the end marker at `end`) on two nodes.
fn finals(script: Script, changes: &[Json], end: u64) -> Script {
    let mut events: Vec<Json> = changes.to_vec();
    events.push(json!([end, END_KEY, "end"]));
    script
        .invoke(90, END, Some(END_KEY), json!({}))
        .ok(90, json!({ "revision": end }))
        .invoke(91, FINAL_WATCH, None, json!({"from": 1}))
        .ok(91, json!({ "events": events }))
        .invoke(92, FINAL_WATCH, None, json!({"from": 1}))
        .ok(92, json!({ "events": events }))
}

/// Write 1 (token 5) acknowledged at r1, write 2 (token 7) acknowledged at r2, write 3 (token 5,
/// stale) refused as lock-lost, write 4 (token 9) unknown and applied at r3.
fn good_writes() -> Script {
    Script::new(W)
        .invoke(1, "write", Some(K), write(1, 5))
        .ok(1, acked(1, 5, 1))
        .invoke(2, "write", Some(K), write(2, 7))
        .ok(2, acked(2, 7, 2))
        .invoke(1, "write", Some(K), write(3, 5))
        .fail_with(1, "FailedPrecondition: lock lost [lock-lost]")
        .invoke(3, "write", Some(K), write(4, 9))
        .info(3)
}

fn good_changes() -> Vec<Json> {
    vec![change(1, 5, 1), change(2, 7, 2), change(3, 9, 4)]
}

/// Runs one property on a history.
fn run(property: FenceProperty, events: &[Event]) -> Vec<FenceProblem> {
    let fenced = fenced(events);
    let reference = fenced.reference().expect("a replay").to_vec();
    property(&fenced, &reference)
}

fn good() -> Vec<Event> {
    finals(good_writes(), &good_changes(), 4).events()
}

#[test]
fn a_good_history_passes_every_fence_property() {
    let events = good();
    for property in FENCE_PROPERTIES {
        assert_eq!(run(property, &events), Vec::new());
    }
    let fenced = fenced(&events);
    assert_eq!(
        fenced.reference().unwrap().len(),
        3,
        "the end marker is left out"
    );
    let stats = fenced.stats(fenced.reference().unwrap());
    assert_eq!(stats["writes_lock_lost"], 1);
    assert_eq!(stats["writes_info"], 1);
    assert_eq!(
        stats["writes_after_a_newer_token"], 1,
        "write 3 (token 5) came after write 2 (token 7) was acknowledged"
    );
}

#[test]
fn only_writes_invoked_after_a_newer_token_was_acknowledged_count_as_exposed() {
    // Write 2 (token 5) is invoked while write 1 (token 7) is outstanding: not exposed, its
    // order against write 1 is the cluster's to choose. Write 3 (token 5) is invoked after write
    // 1 was acknowledged: exposed. Write 4 (token 3) goes to another key: not exposed. Write 5
    // (token 8) follows write 6 (token 9), which failed: not exposed.
    let other = "jepsen/test/lock-1";
    let writes = Script::new(W)
        .invoke(1, "write", Some(K), write(1, 7))
        .invoke(2, "write", Some(K), write(2, 5))
        .ok(1, acked(1, 7, 1))
        .fail_with(2, "FailedPrecondition: lock lost [lock-lost]")
        .invoke(2, "write", Some(K), write(3, 5))
        .fail_with(2, "FailedPrecondition: lock lost [lock-lost]")
        .invoke(
            3,
            "write",
            Some(other),
            json!({"name": "lock-1", "token": 3, "write": 4}),
        )
        .fail_with(3, "FailedPrecondition: lock lost [lock-lost]")
        .invoke(1, "write", Some(K), write(6, 9))
        .fail_with(1, "FailedPrecondition: lock lost [lock-lost]")
        .invoke(2, "write", Some(K), write(5, 8))
        .ok(2, acked(5, 8, 2));
    let fenced = fenced(&finals(writes, &[change(1, 7, 1), change(2, 8, 5)], 3).events());
    assert_eq!(fenced.writes_after_a_newer_token(), 1);
}

#[test]
fn a_smaller_token_after_a_larger_one_is_a_stale_holder() {
    // The stale write 3 (token 5) applied after write 2 (token 7): what skip-fence lets through.
    let writes = Script::new(W)
        .invoke(1, "write", Some(K), write(1, 5))
        .ok(1, acked(1, 5, 1))
        .invoke(2, "write", Some(K), write(2, 7))
        .ok(2, acked(2, 7, 2))
        .invoke(1, "write", Some(K), write(3, 5))
        .ok(1, acked(3, 5, 3));
    let changes = [change(1, 5, 1), change(2, 7, 2), change(3, 5, 3)];
    let problems = run(tokens_never_decrease, &finals(writes, &changes, 4).events());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(matches!(
        &problems[0],
        FenceProblem::TokenWentBack { earlier, later } if earlier.revision == 2 && later.revision == 3
    ));
    assert!(problems[0].to_string().contains("stale holder wrote"));
}

#[test]
fn tokens_of_other_keys_do_not_interfere() {
    // Token 9 on another lock's key, then token 5 on K: each key has its own order.
    let other = "jepsen/test/lock-1";
    let writes = Script::new(W)
        .invoke(
            1,
            "write",
            Some(other),
            json!({"name": "lock-1", "token": 9, "write": 1}),
        )
        .ok(
            1,
            json!({"name": "lock-1", "token": 9, "write": 1, "revision": 1}),
        )
        .invoke(1, "write", Some(K), write(2, 5))
        .ok(1, acked(2, 5, 2));
    let changes = [
        json!([1, other, {"token": 9, "write": 1, "process": 1}]),
        change(2, 5, 2),
    ];
    let events = finals(writes, &changes, 3).events();
    for property in FENCE_PROPERTIES {
        assert_eq!(run(property, &events), Vec::new());
    }
}

#[test]
fn a_refused_write_in_the_history_is_a_problem() {
    let mut changes = good_changes();
    changes.push(change(4, 9, 3)); // write 3 was refused as lock-lost
    let problems = run(
        failed_writes_absent,
        &finals(good_writes(), &changes, 5).events(),
    );
    assert!(
        matches!(
            &problems[..],
            [FenceProblem::FailedButApplied {
                lock_lost: true,
                ..
            }]
        ),
        "{problems:?}"
    );
    assert!(problems[0].to_string().contains("refused as lock-lost"));
}

#[test]
fn an_acknowledged_write_missing_or_elsewhere_is_a_problem() {
    let missing = [change(2, 7, 2), change(3, 9, 4)];
    let problems = run(
        acknowledged_writes_kept,
        &finals(good_writes(), &missing, 4).events(),
    );
    assert!(
        matches!(
            &problems[..],
            [FenceProblem::AcknowledgedMissing {
                write: 1,
                found: None,
                ..
            }]
        ),
        "{problems:?}"
    );
    // Write 1 at another revision than it was acknowledged with.
    let moved = [change(2, 7, 2), change(3, 5, 1), change(4, 9, 4)];
    let problems = run(
        acknowledged_writes_kept,
        &finals(good_writes(), &moved, 5).events(),
    );
    assert!(
        matches!(
            &problems[..],
            [FenceProblem::AcknowledgedMissing {
                write: 1,
                found: Some(_),
                ..
            }]
        ),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_write_may_be_missing() {
    let changes = [change(1, 5, 1), change(2, 7, 2)];
    let events = finals(good_writes(), &changes, 3).events();
    for property in FENCE_PROPERTIES {
        assert_eq!(run(property, &events), Vec::new());
    }
}

#[test]
fn a_change_nobody_wrote_or_written_twice_is_a_problem() {
    let mut changes = good_changes();
    changes.push(change(4, 9, 77));
    let problems = run(
        applied_writes_were_written,
        &finals(good_writes(), &changes, 5).events(),
    );
    assert!(
        matches!(&problems[..], [FenceProblem::NeverWritten(_)]),
        "{problems:?}"
    );

    let mut changes = good_changes();
    changes.push(change(4, 9, 4));
    let problems = run(
        applied_writes_were_written,
        &finals(good_writes(), &changes, 5).events(),
    );
    assert!(
        matches!(
            &problems[..],
            [FenceProblem::AppliedTwice { previous: 3, .. }]
        ),
        "{problems:?}"
    );

    // Write 4 was sent with token 9, not 8.
    let changes = [change(1, 5, 1), change(2, 7, 2), change(3, 8, 4)];
    let problems = run(
        applied_writes_were_written,
        &finals(good_writes(), &changes, 4).events(),
    );
    assert!(
        matches!(
            &problems[..],
            [FenceProblem::WrittenOtherwise { token: 9, .. }]
        ),
        "{problems:?}"
    );
}

#[test]
fn replays_that_differ_or_are_missing_are_problems() {
    let mut events = good();
    let last = events.len() - 1;
    events[last].value = json!({"events": [change(1, 5, 1), json!([4, END_KEY, "end"])]});
    let problems = run(replays_agree, &events);
    assert!(
        matches!(
            &problems[..],
            [FenceProblem::ReplaysDiffer { position: 1, .. }]
        ),
        "{problems:?}"
    );

    let events = good_writes()
        .invoke(91, FINAL_WATCH, None, json!({"from": 1}))
        .ok(91, json!({"events": good_changes()}))
        .invoke(92, FINAL_WATCH, None, json!({"from": 1}))
        .fail(92)
        .events();
    assert_eq!(
        run(every_node_replays, &events),
        vec![FenceProblem::ReplaysMissing(1)]
    );
    assert_eq!(
        run(end_marker_acknowledged, &events),
        vec![FenceProblem::NoEndMarker]
    );
}

/// A grant: (name, token, invoked, completed).
fn granted(name: &str, token: u64, invoked: u64, completed: u64) -> Granted {
    Granted {
        name: name.to_string(),
        token,
        acquired: true,
        invoked,
        completed,
    }
}

#[test]
fn concurrent_acquires_may_get_tokens_in_any_order() {
    // Overlapping in time: 8 completes before 5 does, both were in flight together.
    let grants = [
        granted("a", 8, 0, 3),
        granted("a", 5, 1, 4),
        // After both: larger than either.
        granted("a", 9, 5, 6),
        // Another lock has its own tokens, but tokens are never shared.
        granted("b", 2, 7, 8),
        // Not granted (token 0: a try that found the lock busy) is no token at all.
        granted("a", 0, 9, 10),
    ];
    for property in GRANT_PROPERTIES {
        assert_eq!(property(&grants), Vec::new());
    }
}

#[test]
fn a_token_given_twice_is_a_problem() {
    let grants = [granted("a", 8, 0, 1), granted("b", 8, 2, 3)];
    let problems = tokens_unique(&grants);
    assert!(
        matches!(&problems[..], [GrantProblem::TokenTwice { token: 8, .. }]),
        "{problems:?}"
    );
}

#[test]
fn a_token_below_one_acknowledged_before_is_a_problem() {
    let grants = [
        granted("a", 8, 0, 1),
        granted("a", 3, 2, 3),
        granted("a", 9, 4, 5),
        granted("a", 6, 6, 7),
    ];
    let problems = tokens_follow_real_time(&grants);
    assert_eq!(
        problems,
        vec![
            GrantProblem::TokenBeforeItsTime {
                name: "a".into(),
                before: (8, 1),
                after: (3, 2),
            },
            GrantProblem::TokenBeforeItsTime {
                name: "a".into(),
                before: (9, 5),
                after: (6, 6),
            },
        ]
    );
}

#[test]
fn real_time_violations_respect_strictness() {
    let items = [(0, 1, 4), (2, 3, 4)];
    assert_eq!(real_time_violations(&items, |i| *i, false), Vec::new());
    assert_eq!(
        real_time_violations(&items, |i| *i, true),
        vec![(&items[0], &items[1])]
    );
}
