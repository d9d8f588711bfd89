//! The watch checker on hand-made histories.

use serde_json::{json, Value as Json};

use super::*;
use crate::jepsen::history::Script;

fn put(revision: u64, key: &str, value: u64) -> Json {
    json!([revision, "put", key, value])
}

const A: &str = "jepsen/watch/a";

/// Writes 1 and 2 to A (revisions 1, 2), the end marker 3 (revision 3); watcher 10 sees
/// everything in two stretches, `replay` is every node's replay.
fn history(watcher_second: Json, replay: Json) -> Vec<Event> {
    Script::new(NAME)
        .invoke(10, "watch", None, json!({"from": 1}))
        .invoke(1, "write", Some(A), json!(1))
        .ok(1, json!({"value": 1, "revision": 1}))
        .ok(10, json!({"events": [put(1, A, 1)]}))
        .invoke(10, "watch", None, json!({"from": 2}))
        .invoke(1, "write", Some(A), json!(2))
        .ok(1, json!({"value": 2, "revision": 2}))
        .invoke(1, "write", Some(END_KEY), json!(3))
        .ok(1, json!({"value": 3, "revision": 3}))
        .ok(10, watcher_second)
        .invoke(20, FINAL_WATCH, None, json!({"from": 1}))
        .ok(20, replay.clone())
        .invoke(21, FINAL_WATCH, None, json!({"from": 1}))
        .ok(21, replay)
        .invoke(22, FINAL_READ, None, Json::Null)
        .ok(22, json!({A: [2, 2], END_KEY: [3, 3]}))
        .events()
}

fn full() -> Json {
    json!({"events": [put(1, A, 1), put(2, A, 2), put(3, END_KEY, 3)]})
}

#[test]
fn a_good_history_is_valid() {
    let second = json!({"events": [put(2, A, 2), put(3, END_KEY, 3)]});
    let result = check(&history(second, full()));
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["changes"], 3);
}

#[test]
fn a_gap_in_a_watcher_is_invalid() {
    let second = json!({"events": [put(3, END_KEY, 3)]});
    let result = check(&history(second, full()));
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems[0].contains("watcher 10"),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_duplicate_in_a_watcher_is_invalid() {
    let second = json!({"events": [put(1, A, 1), put(2, A, 2), put(3, END_KEY, 3)]});
    assert_eq!(check(&history(second, full())).verdict, Verdict::Invalid);
}

#[test]
fn a_watcher_short_of_the_end_is_invalid() {
    let second = json!({"events": [put(2, A, 2)]});
    let result = check(&history(second, full()));
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems[0].contains("short of the end marker"),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_lost_acknowledged_write_is_invalid() {
    let second = json!({"events": [put(3, END_KEY, 3)]});
    let replay = json!({"events": [put(1, A, 1), put(3, END_KEY, 3)]});
    let result = check(&history(second, replay));
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
fn a_value_never_written_is_invalid() {
    let second = json!({"events": [put(2, A, 99), put(3, END_KEY, 3)]});
    let replay = json!({"events": [put(1, A, 1), put(2, A, 99), put(3, END_KEY, 3)]});
    let result = check(&history(second, replay));
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems.iter().any(|p| p.contains("no write wrote")),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_final_state_that_differs_from_the_history_is_invalid() {
    let mut events = history(
        json!({"events": [put(2, A, 2), put(3, END_KEY, 3)]}),
        full(),
    );
    let last = events.len() - 1;
    events[last].value = json!({A: [1, 1], END_KEY: [3, 3]});
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems[0].contains("lists"),
        "{:?}",
        result.problems
    );
}
