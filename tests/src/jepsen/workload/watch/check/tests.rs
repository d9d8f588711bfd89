//! The watch checker on hand-made histories: a good one, and for each property (each function of
//! `check.rs`) a history that breaks it, checked by that property alone and by [`check`].

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

// Each property on its own: the good history passes it, a history that breaks it fails it (and
// [`check`] reports what it found).

const B: &str = "jepsen/watch/b";

fn delete(revision: u64, key: &str) -> Json {
    json!([revision, "delete", key, null])
}

/// A=1 at r1, B=2 at r2, B deleted at r3, the end marker 3 at r4.
fn changes() -> Vec<Json> {
    vec![put(1, A, 1), put(2, B, 2), delete(3, B), put(4, END_KEY, 3)]
}

fn events(changes: &[Json]) -> Json {
    json!({ "events": changes })
}

/// The writes and the delete of [`changes`], all acknowledged.
fn writes() -> Script {
    Script::new(NAME)
        .invoke(1, "write", Some(A), json!(1))
        .ok(1, json!({"value": 1, "revision": 1}))
        .invoke(1, "write", Some(B), json!(2))
        .ok(1, json!({"value": 2, "revision": 2}))
        .invoke(1, "delete", Some(B), Json::Null)
        .ok(1, json!({"deleted": true, "revision": 3}))
        .invoke(1, "write", Some(END_KEY), json!(3))
        .ok(1, json!({"value": 3, "revision": 4}))
}

/// Watcher 10's stretches: (from, what it received); `None` for one that never completed.
fn watcher(mut script: Script, stretches: &[(u64, Option<Json>)]) -> Script {
    for (from, received) in stretches {
        script = script.invoke(10, "watch", None, json!({"from": from}));
        if let Some(received) = received {
            script = script.ok(10, received.clone());
        }
    }
    script
}

/// Watcher 10 sees r1 and r2, its stream fails, it resumes at r3 and sees the rest.
fn stretches() -> Vec<(u64, Option<Json>)> {
    let changes = changes();
    let mut first = events(&changes[..2]);
    first["error"] = json!("Unavailable: leader lost");
    vec![(1, Some(first)), (3, Some(events(&changes[2..])))]
}

/// Every node's replay (one each), and one final read listing `listed`.
fn finals(mut script: Script, replays: &[Json], listed: Json) -> Script {
    for (process, replay) in (20..).zip(replays) {
        script = script
            .invoke(process, FINAL_WATCH, None, json!({"from": 1}))
            .ok(process, replay.clone());
    }
    script
        .invoke(29, FINAL_READ, None, Json::Null)
        .ok(29, listed)
}

fn listed() -> Json {
    json!({A: [1, 1], END_KEY: [3, 4]})
}

/// The good history with these stretches of watcher 10 and these replays.
fn good_with(stretches: &[(u64, Option<Json>)], replays: &[Json]) -> Vec<Event> {
    finals(watcher(writes(), stretches), replays, listed()).events()
}

/// Every node replays `changes`.
fn replayed(changes: &[Json]) -> Vec<Event> {
    let replay = events(changes);
    good_with(&stretches(), &[replay.clone(), replay])
}

fn good() -> Vec<Event> {
    replayed(&changes())
}

/// What `property` finds in `events`, which must parse and have a reference replay.
fn found(property: Property, events: &[Event]) -> Vec<Problem> {
    let operations = pair(events, Some(NAME)).expect("a well-formed history");
    let mut problems = Vec::new();
    let recorded = Recorded::parse(&operations, &mut problems);
    assert_eq!(problems, [], "the history does not parse");
    let Some(Replay {
        node,
        changes: Ok(changes),
    }) = recorded.replays.first()
    else {
        panic!("no reference replay");
    };
    let reference = Reference {
        node: *node,
        changes,
    };
    property(&recorded, &reference)
}

/// `property` finds nothing in the good history.
fn passes(property: Property) {
    assert_eq!(found(property, &good()), []);
}

/// What `property` finds in `events`: something, which [`check`] reports.
fn violations(property: Property, events: &[Event]) -> Vec<Problem> {
    let problems = found(property, events);
    assert!(!problems.is_empty(), "the property found nothing");
    let result = check(events);
    assert_eq!(result.verdict, Verdict::Invalid);
    for problem in &problems {
        let text = problem.to_string();
        assert!(
            result.problems.contains(&text),
            "check does not report {text:?}: {:#?}",
            result.problems
        );
    }
    problems
}

fn change(revision: u64, key: &str, value: u64) -> Change {
    let key = key.to_string();
    Change {
        revision,
        kind: Kind::Put,
        key,
        value: json!(value),
    }
}

#[test]
fn the_good_history_with_a_reconnect_and_a_delete_is_valid() {
    let result = check(&good());
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["reconnects"], 1);
    assert_eq!(result.stats["deletes_ok"], 1);
    assert_eq!(result.stats["end_revision"], 4);
}

#[test]
fn without_a_replay_or_a_final_read_the_check_is_unknown() {
    let no_replay = finals(watcher(writes(), &stretches()), &[], listed()).events();
    assert_eq!(check(&no_replay).verdict, Verdict::Unknown);
    let malformed = good_with(&stretches(), &[json!({}), events(&changes())]);
    assert_eq!(check(&malformed).verdict, Verdict::Unknown);
    let mut no_read = good();
    no_read.truncate(no_read.len() - 2);
    let result = check(&no_read);
    assert_eq!(result.verdict, Verdict::Unknown);
    assert_eq!(result.problems, ["no final read"]);
}

#[test]
fn a_stretch_that_cannot_be_read_is_a_problem() {
    let mut stretches = stretches();
    stretches[1].1 = Some(json!({"events": [[3, "delete", B]]}));
    let events = good_with(&stretches, &[events(&changes())]);
    let operations = pair(&events, Some(NAME)).expect("a well-formed history");
    let mut problems = Vec::new();
    Recorded::parse(&operations, &mut problems);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Watcher(WatcherProblem::MalformedStretch { watcher: 10, error })] if error.contains("malformed event")
    ));
    assert_eq!(check(&events).verdict, Verdict::Invalid);
}

#[test]
fn every_node_replays_the_same_history() {
    passes(replays_agree);
    let full = events(&changes());
    let mut other = changes();
    other[1] = put(2, B, 9);
    let replays = [
        full.clone(),
        events(&other),
        events(&changes()[..3]),
        json!({}),
    ];
    let problems = violations(replays_agree, &good_with(&stretches(), &replays));
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::History(HistoryProblem::ReplaysDiffer {
                difference: Difference::At { position: 1, .. },
                ..
            }),
            Problem::History(HistoryProblem::ReplaysDiffer {
                difference: Difference::Length {
                    expected: 4,
                    found: 3
                },
                ..
            }),
            Problem::History(HistoryProblem::MalformedReplay(_)),
        ]
    ));
}

#[test]
fn every_node_can_replay() {
    passes(every_node_replays);
    let events = finals(
        watcher(writes(), &stretches()),
        &[events(&changes())],
        listed(),
    )
    .invoke(28, FINAL_WATCH, None, json!({"from": 1}))
    .fail(28)
    .events();
    assert_eq!(
        violations(every_node_replays, &events),
        [Problem::History(HistoryProblem::ReplaysMissing(1))]
    );
}

#[test]
fn a_revision_holds_one_change() {
    passes(revisions_unique);
    let mut twice = changes();
    twice.insert(2, put(2, B, 2));
    assert_eq!(
        violations(revisions_unique, &replayed(&twice)),
        [Problem::History(HistoryProblem::RevisionTwice(2))]
    );
}

#[test]
fn revisions_strictly_increase() {
    passes(revisions_increase);
    let mut swapped = changes();
    swapped.swap(0, 1);
    assert_eq!(found(revisions_unique, &replayed(&swapped)), []);
    assert_eq!(
        violations(revisions_increase, &replayed(&swapped)),
        [Problem::History(HistoryProblem::OutOfOrder)]
    );
}

#[test]
fn a_put_value_was_written_to_its_key_by_a_write_that_did_not_fail() {
    passes(puts_were_written);
    let changes = [
        put(1, B, 1),
        put(2, A, 99),
        put(3, A, 5),
        put(4, END_KEY, 3),
    ];
    let replay = events(&changes);
    let script = writes().invoke(2, "write", Some(A), json!(5)).fail(2);
    let events = finals(watcher(script, &stretches()), &[replay], listed()).events();
    let problems = violations(puts_were_written, &events);
    assert_eq!(
        problems,
        [
            Problem::Writes(WriteProblem::WrittenElsewhere {
                change: change(1, B, 1),
                key: A.to_string()
            }),
            Problem::Writes(WriteProblem::NeverWritten(change(2, A, 99))),
            Problem::Writes(WriteProblem::WriteFailed(change(3, A, 5))),
        ]
    );
}

#[test]
fn a_value_is_applied_once() {
    passes(values_applied_once);
    let mut again = changes();
    again.push(put(5, A, 1));
    let problems = violations(values_applied_once, &replayed(&again));
    assert_eq!(
        problems,
        [Problem::Writes(WriteProblem::AppliedTwice {
            change: change(5, A, 1),
            previous: 1
        })]
    );
}

#[test]
fn an_acknowledged_change_is_kept_at_its_revision() {
    passes(acknowledged_changes_kept);
    // B's write is gone, and its delete became a put.
    let changes = [put(1, A, 1), put(3, B, 7), put(4, END_KEY, 3)];
    let problems = violations(acknowledged_changes_kept, &replayed(&changes));
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Writes(WriteProblem::AcknowledgedMissing(missing)),
            Problem::Writes(WriteProblem::AcknowledgedDiffers { acknowledged, found }),
        ] if *missing == change(2, B, 2)
            && acknowledged.kind == Kind::Delete
            && *found == change(3, B, 7)
    ));
}

#[test]
fn the_final_state_is_the_history_replayed() {
    passes(final_state_is_the_replay);
    for listed in [
        json!({A: [1, 1]}),
        json!({A: [1, 1], END_KEY: [3, 4], B: [2, 2]}),
        json!("?"),
    ] {
        let events = finals(
            watcher(writes(), &stretches()),
            &[events(&changes())],
            listed.clone(),
        )
        .events();
        let problems = violations(final_state_is_the_replay, &events);
        assert_eq!(
            problems,
            [Problem::History(HistoryProblem::FinalStateDiffers {
                node: None,
                listed,
                replayed: json!({A: [1, 1], END_KEY: [3, 4]}),
            })]
        );
    }
}

#[test]
fn a_watcher_resumes_right_after_what_it_received() {
    passes(watchers_resume_in_place);
    let mut skipped = stretches();
    skipped[1].0 = 4;
    let problems = violations(
        watchers_resume_in_place,
        &good_with(&skipped, &[events(&changes())]),
    );
    assert_eq!(
        problems,
        [Problem::Watcher(WatcherProblem::ResumedElsewhere {
            watcher: 10,
            from: 4,
            node: None,
            expected: 3
        })]
    );
    let mut aborted = stretches();
    aborted[1].1 = None;
    let problems = violations(
        watchers_resume_in_place,
        &good_with(&aborted, &[events(&changes())]),
    );
    assert_eq!(
        problems,
        [Problem::Watcher(WatcherProblem::NeverCompleted {
            watcher: 10,
            from: 3,
            node: None
        })]
    );
}

#[test]
fn a_watcher_sees_the_history() {
    passes(watchers_see_the_reference);
    let changes = changes();
    let replays = [events(&changes)];
    let with_second = |second: &[Json]| {
        let mut stretches = stretches();
        stretches[1].1 = Some(events(second));
        good_with(&stretches, &replays)
    };
    // A gap: r3 is missing.
    let problems = violations(watchers_see_the_reference, &with_second(&changes[3..]));
    assert!(matches!(
        problems.as_slice(),
        [Problem::Watcher(WatcherProblem::WatcherSawOther { watcher: 10, position: 2, saw, .. })] if saw.revision == 4
    ));
    // r4 twice.
    let twice = [changes[2].clone(), changes[3].clone(), changes[3].clone()];
    let problems = violations(watchers_see_the_reference, &with_second(&twice));
    assert_eq!(
        problems,
        [Problem::Watcher(WatcherProblem::WatcherSawCount {
            watcher: 10,
            start: 1,
            last: 4,
            saw: 5,
            expected: 4
        })]
    );
}

#[test]
fn a_watcher_reaches_the_end_marker() {
    passes(watchers_reach_the_end);
    let mut short = stretches();
    short[1].1 = Some(events(&changes()[2..3]));
    let problems = violations(
        watchers_reach_the_end,
        &good_with(&short, &[events(&changes())]),
    );
    assert_eq!(
        problems,
        [Problem::Watcher(WatcherProblem::ShortOfTheEnd {
            watcher: 10,
            last: 3,
            end: 4
        })]
    );
}

#[test]
fn someone_watches() {
    passes(someone_watched);
    let events = finals(writes(), &[events(&changes())], listed()).events();
    assert_eq!(violations(someone_watched, &events), [Problem::NoWatcher]);
}

#[test]
fn the_end_marker_is_acknowledged() {
    passes(end_marker_acknowledged);
    let script = Script::new(NAME)
        .invoke(1, "write", Some(A), json!(1))
        .ok(1, json!({"value": 1, "revision": 1}))
        .invoke(1, "write", Some(B), json!(2))
        .ok(1, json!({"value": 2, "revision": 2}))
        .invoke(1, "delete", Some(B), Json::Null)
        .ok(1, json!({"deleted": true, "revision": 3}))
        .invoke(1, "write", Some(END_KEY), json!(3))
        .info(1);
    let events = finals(
        watcher(script, &stretches()),
        &[events(&changes())],
        listed(),
    )
    .events();
    assert_eq!(
        violations(end_marker_acknowledged, &events),
        [Problem::NoEndMarker]
    );
}
