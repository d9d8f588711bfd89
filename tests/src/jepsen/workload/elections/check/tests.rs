//! The elections checker on hand-made histories: a good one, and for each property (each
//! function of `check.rs`) a history that breaks it, checked by that property alone and by
//! [`check`].

use serde_json::{json, Value as Json};

use super::*;
use crate::jepsen::history::Script;
use crate::jepsen::workload::fenced::{END, FINAL_WATCH};
use crate::jepsen::workload::Verdict;

const E: &str = "election-0";
const KEY: &str = "jepsen/elections/election-0";

fn campaign(owner: &str, value: &str) -> Json {
    json!({"name": E, "owner": owner, "value": value, "ttl_ms": 2000, "wait_ms": 1000})
}

fn answered(owner: &str, value: &str, token: u64, elected: bool) -> Json {
    let mut answer = campaign(owner, value);
    answer["token"] = json!(token);
    answer["elected"] = json!(elected);
    answer
}

fn leader(token: u64, owner: &str, value: &str) -> Json {
    json!({"token": token, "owner": owner, "value": value})
}

fn proclaim(owner: &str, token: u64, value: &str) -> Json {
    json!({"name": E, "owner": owner, "token": token, "value": value})
}

/// An Observe message.
fn message(sequence: u64, kind: &str, token: u64, leader: Json) -> Json {
    json!([sequence, kind, token, leader])
}

fn observe(script: Script, stream: u64, messages: &[Json]) -> Script {
    script
        .invoke(50, "observe", Some(E), json!({"name": E, "stream": stream}))
        .ok(50, json!({ "events": messages }))
}

fn read(script: Script, process: u64, seen: Json) -> Script {
    script
        .invoke(process, "leader", Some(E), json!({"name": E}))
        .ok(process, json!({"name": E, "leader": seen}))
}

fn finals(script: Script, changes: &[Json], end: u64) -> Vec<Event> {
    let mut events: Vec<Json> = changes.to_vec();
    events.push(json!([end, END_KEY, "end"]));
    let mut script = script
        .invoke(90, END, Some(END_KEY), json!({}))
        .ok(90, json!({ "revision": end }));
    for process in 91..93 {
        script = script
            .invoke(process, FINAL_WATCH, None, json!({"from": 1}))
            .ok(process, json!({ "events": events }));
    }
    script.events()
}

/// p1 is elected (token 4) with "p1/1", proclaims "p1/2", writes and resigns; p2 campaigned
/// concurrently (token 5), is elected once p1 resigned; p3's campaign is unknown. An observer
/// sees it all in one stream; readers see p1 then p2.
fn good_script() -> Script {
    let script = Script::new(NAME)
        .invoke(1, "campaign", Some(E), campaign("p1", "p1/1"))
        .ok(1, answered("p1", "p1/1", 4, true))
        .invoke(2, "campaign", Some(E), campaign("p2", "p2/3"))
        .invoke(3, "campaign", Some(E), campaign("p3", "p3/4"))
        .info(3)
        .invoke(1, "proclaim", Some(E), proclaim("p1", 4, "p1/2"))
        .ok(1, proclaim("p1", 4, "p1/2"));
    let script = read(script, 10, leader(4, "p1", "p1/2"))
        .invoke(
            1,
            "write",
            Some(KEY),
            json!({"name": E, "token": 4, "write": 1, "stale": false}),
        )
        .ok(
            1,
            json!({"name": E, "token": 4, "write": 1, "stale": false, "revision": 1}),
        )
        .invoke(1, "resign", Some(E), json!({"name": E, "token": 4}))
        .ok(1, json!({"name": E, "token": 4}))
        .ok(2, answered("p2", "p2/3", 5, true));
    let script = read(script, 11, leader(5, "p2", "p2/3"));
    observe(
        script,
        1,
        &[
            message(10, "CURRENT", 0, leader(4, "p1", "p1/1")),
            message(11, "QUEUED", 5, leader(4, "p1", "p1/1")),
            message(12, "PROCLAIMED", 4, leader(4, "p1", "p1/2")),
            message(13, "RELEASED", 4, leader(5, "p2", "p2/3")),
            message(14, "GRANTED", 5, leader(5, "p2", "p2/3")),
        ],
    )
}

fn good_changes() -> Vec<Json> {
    vec![json!([1, KEY, {"token": 4, "write": 1, "process": 1}])]
}

fn recorded(events: &[Event]) -> Recorded {
    Recorded::parse(&pair(events, Some(NAME)).unwrap())
}

#[test]
fn a_good_history_is_valid() {
    let events = finals(good_script(), &good_changes(), 2);
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["campaigns_elected"], 2);
    assert_eq!(result.stats["terms_seen"], 2);
    let recorded = recorded(&events);
    for property in PROPERTIES {
        assert_eq!(property(&recorded), Vec::new());
    }
}

#[test]
fn a_token_with_two_holders_is_two_leaders() {
    // An observer sees token 4 held by p2: two leaders of one term.
    let script = observe(
        good_script(),
        2,
        &[message(20, "CURRENT", 0, leader(4, "p2", "p2/3"))],
    );
    let events = finals(script, &good_changes(), 2);
    let problems = one_owner_per_token(&recorded(&events));
    assert!(
        matches!(&problems[..], [Problem::TwoLeaders { token: 4, .. }]),
        "{problems:?}"
    );
    assert_eq!(check(&events).verdict, Verdict::Invalid);
}

#[test]
fn a_value_the_leader_did_not_publish_is_a_problem() {
    // p2's value under p1's token; a value proclaimed under another token; a refused proclaim's.
    let script = good_script()
        .invoke(2, "proclaim", Some(E), proclaim("p2", 5, "p2/7"))
        .fail_with(2, "FailedPrecondition: lock lost [lock-lost]");
    let script = read(script, 12, leader(4, "p1", "p2/3"));
    let script = read(script, 13, leader(5, "p2", "p2/7"));
    let events = finals(script, &good_changes(), 2);
    let problems = values_come_from_their_leader(&recorded(&events));
    let whys: Vec<&str> = problems
        .iter()
        .map(|problem| match problem {
            Problem::ValueNotTheLeaders { why, .. } => *why,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        whys,
        vec![
            "another candidate published it",
            "its campaign or proclaim failed"
        ]
    );
    // p1's proclaimed value under a token p1 did not proclaim it with.
    let script = read(good_script(), 12, leader(6, "p1", "p1/2"));
    let problems = values_come_from_their_leader(&recorded(&finals(script, &good_changes(), 2)));
    assert!(
        matches!(
            &problems[..],
            [Problem::ValueNotTheLeaders {
                why: "it was published under another token",
                ..
            }]
        ),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_campaign_value_may_lead() {
    // p3's campaign was unknown: it may have been granted (token 6) with its value.
    let script = read(good_script(), 12, leader(6, "p3", "p3/4"));
    let events = finals(script, &good_changes(), 2);
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
}

#[test]
fn an_observer_going_back_is_a_problem() {
    let script = observe(
        Script::new(NAME),
        1,
        &[
            message(10, "GRANTED", 5, leader(5, "p2", "p2/3")),
            message(11, "GRANTED", 4, leader(4, "p1", "p1/1")),
            message(11, "RELEASED", 4, Json::Null),
        ],
    );
    let problems = observers_never_go_back(&recorded(&script.events()));
    let whats: Vec<&str> = problems
        .iter()
        .map(|problem| match problem {
            Problem::ObserverWentBack { what, .. } => *what,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(whats, vec!["leader token", "granted token", "sequence"]);
}

#[test]
fn a_new_stream_may_start_behind() {
    // Stream 2 on another node starts behind what stream 1 showed: not a problem.
    let script = observe(
        good_script(),
        2,
        &[message(9, "CURRENT", 0, leader(4, "p1", "p1/1"))],
    );
    let events = finals(script, &good_changes(), 2);
    assert_eq!(observers_never_go_back(&recorded(&events)), Vec::new());
}

#[test]
fn a_leader_read_going_back_is_a_problem() {
    let script = read(good_script(), 12, leader(4, "p1", "p1/2"));
    let events = finals(script, &good_changes(), 2);
    let problems = leader_reads_never_go_back(&recorded(&events));
    assert!(
        matches!(
            &problems[..],
            [Problem::ReadWentBack {
                before: (5, _),
                after: (4, _),
                ..
            }]
        ),
        "{problems:?}"
    );
    assert_eq!(check(&events).verdict, Verdict::Invalid);
}

#[test]
fn a_deposed_leaders_write_after_its_successors_is_invalid() {
    let changes = vec![
        json!([1, KEY, {"token": 5, "write": 2, "process": 2}]),
        json!([2, KEY, {"token": 4, "write": 1, "process": 1}]),
    ];
    let script = good_script()
        .invoke(
            2,
            "write",
            Some(KEY),
            json!({"name": E, "token": 5, "write": 2, "stale": false}),
        )
        .info(2);
    let mut events = finals(script, &changes, 3);
    // Write 1 was acknowledged at r2 in this history.
    for event in &mut events {
        if event.f == "write" && event.kind == OpKind::Ok {
            event.value["revision"] = json!(2);
        }
    }
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.contains("stale holder wrote")),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_campaign_token_before_its_time_is_invalid() {
    let script = good_script()
        .invoke(4, "campaign", Some(E), campaign("p4", "p4/9"))
        .ok(4, answered("p4", "p4/9", 3, false));
    let result = check(&finals(script, &good_changes(), 2));
    assert_eq!(result.verdict, Verdict::Invalid);
    assert!(
        result.problems.iter().any(|p| p.contains("got token 3")),
        "{:?}",
        result.problems
    );
}

#[test]
fn unreadable_records_are_problems() {
    let script = read(good_script(), 12, json!({"token": "four"}));
    let problems = records_are_readable(&recorded(&finals(script, &good_changes(), 2)));
    assert_eq!(problems.len(), 1, "{problems:?}");
}
