//! The decisions checker on hand-made histories.

use serde_json::{json, Value as Json};

use super::*;
use crate::jepsen::history::Script;
use crate::jepsen::workload::decisions::{GHOST, OUTSIDER, VETO};

fn proposal(tag: u64, rule: &str, k: u64, electorate: &[&str], veto: bool) -> Proposal {
    let mut options = vec!["yes".to_string(), "no".to_string()];
    if veto {
        options.push(VETO.to_string());
    }
    Proposal {
        tag,
        rule: rule.to_string(),
        k,
        options,
        veto: veto.then(|| VETO.to_string()),
        electorate: electorate.iter().map(|v| v.to_string()).collect(),
        weights: BTreeMap::new(),
        deadline: 10_000,
    }
}

fn state(
    id: u64,
    spec: &Proposal,
    status: &str,
    outcome: &str,
    votes: &[(&str, &str, u64)],
    closed: u64,
) -> Json {
    json!({
        "id": id,
        "spec": spec.to_json(),
        "voters": spec.electorate,
        "status": status,
        "outcome": outcome,
        "votes": votes.iter().map(|(v, c, t)| json!([v, c, t])).collect::<Vec<_>>(),
        "closed": closed,
    })
}

fn seen(spec: &Proposal) -> Vec<String> {
    spec.electorate.clone()
}

#[test]
fn the_tally_follows_each_rule() {
    let abc = ["a", "b", "c"];
    let majority = proposal(1, "MAJORITY", 0, &abc, true);
    let voters = seen(&majority);
    assert_eq!(tally(&majority, &voters, &[("a", "yes")]), Tally::Open);
    assert_eq!(
        tally(&majority, &voters, &[("a", "yes"), ("b", "yes")]),
        Tally::Decided("yes".into())
    );
    assert_eq!(tally(&majority, &voters, &[("a", "veto")]), Tally::Rejected);
    let unanimous = proposal(2, "UNANIMOUS", 0, &abc, false);
    assert_eq!(
        tally(&unanimous, &voters, &[("a", "yes"), ("b", "yes")]),
        Tally::Open
    );
    assert_eq!(
        tally(&unanimous, &voters, &[("a", "yes"), ("b", "no")]),
        Tally::Rejected
    );
    assert_eq!(
        tally(
            &unanimous,
            &voters,
            &[("a", "no"), ("b", "no"), ("c", "no")]
        ),
        Tally::Decided("no".into())
    );
    let at_least = proposal(3, "AT_LEAST", 2, &abc, false);
    assert_eq!(
        tally(&at_least, &voters, &[("a", "yes"), ("b", "no")]),
        Tally::Open
    );
    assert_eq!(
        tally(
            &at_least,
            &voters,
            &[("a", "yes"), ("b", "no"), ("c", "no")]
        ),
        Tally::Decided("no".into())
    );
    let at_least_3 = proposal(4, "AT_LEAST", 3, &abc, false);
    assert_eq!(
        tally(&at_least_3, &voters, &[("a", "yes"), ("b", "no")]),
        Tally::Rejected
    );
    let mut weighted = proposal(5, "WEIGHTED", 0, &abc, false);
    weighted.weights.insert("a".into(), 3);
    // Total 5: a alone (3) is more than half.
    assert_eq!(
        tally(&weighted, &voters, &[("a", "no")]),
        Tally::Decided("no".into())
    );
    assert_eq!(tally(&weighted, &voters, &[("b", "no")]), Tally::Open);
    // Majority of four with a 2-2 split: nobody can reach 3.
    let four = proposal(6, "MAJORITY", 0, &["a", "b", "c", "d"], false);
    let voters = seen(&four);
    assert_eq!(
        tally(&four, &voters, &[("a", "yes"), ("b", "no")]),
        Tally::Open
    );
    assert_eq!(
        tally(
            &four,
            &voters,
            &[("a", "yes"), ("b", "no"), ("c", "yes"), ("d", "no")]
        ),
        Tally::Rejected
    );
}

/// Appends `script`'s events to `events`, renumbered, with `error` on its `fail` completions.
fn append(events: &mut Vec<Event>, script: Script, error: Option<&str>) {
    let offset = events.len() as u64;
    for mut event in script.events() {
        event.index += offset;
        event.time_ns = event.index * 1_000;
        if event.kind == OpKind::Fail {
            event.error = error.map(str::to_string);
        }
        events.push(event);
    }
}

/// Decision 1 (majority of a, b, c; veto): a and b vote yes, decided; c's late vote is
/// refused as closed, a's second vote as already voted; the outsider is refused. Decision 2
/// (unanimous of a, b, ghost; proposal unknown): a votes, then the deadline passes.
fn good() -> (Vec<Event>, Vec<Json>) {
    let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
    let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
    let one_open = state(1, &one, "OPEN", "", &[], 0);
    let one_decided = state(
        1,
        &one,
        "DECIDED",
        "yes",
        &[("a", "yes", 100), ("b", "yes", 200)],
        200,
    );
    let two_final = state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 10_500);
    let script = Script::new(NAME)
        .invoke(1, "propose", None, one.to_json())
        .ok(1, json!({"tag": 1, "id": 1, "decision": one_open}))
        .invoke(2, "propose", None, two.to_json())
        .info(2);
    let ballot = |script: Script, process: u64, voter: &str, id: u64| {
        let value = json!({"voter": voter, "id": id});
        script
            .invoke(process, "ballot", None, value.clone())
            .ok(process, value)
    };
    let script = ballot(script, 20, "a", 1);
    let script = ballot(script, 21, "b", 1);
    let script = vote(script, 3, 1, "a", "yes").ok(
        3,
        json!({"id": 1, "voter": "a", "choice": "yes", "decision": state(1, &one, "OPEN", "", &[("a", "yes", 100)], 0)}),
    );
    let script = vote(script, 4, 1, "b", "yes").ok(
        4,
        json!({"id": 1, "voter": "b", "choice": "yes", "decision": one_decided.clone()}),
    );
    let script = vote(script, 5, 2, "a", "no").info(5);
    let mut events = Vec::new();
    append(&mut events, script, None);
    let refusals = [
        (1, "c", "no", "FailedPrecondition: decision 1 is closed [rejected]"),
        (1, "a", "no", "FailedPrecondition: agent a already voted in decision 1 [rejected]"),
        (1, OUTSIDER, "yes", "FailedPrecondition: agent jepsen-outsider is not in the electorate of decision 1 [rejected]"),
    ];
    for (n, (id, voter, choice, error)) in refusals.into_iter().enumerate() {
        let process = 40 + n as u64;
        append(
            &mut events,
            vote(Script::new(NAME), process, id, voter, choice).fail(process),
            Some(error),
        );
    }
    (events, vec![one_decided, two_final])
}

fn vote(script: Script, process: u64, id: u64, voter: &str, choice: &str) -> Script {
    script.invoke(
        process,
        "vote",
        None,
        json!({"id": id, "voter": voter, "choice": choice}),
    )
}

fn final_read(
    events: &mut Vec<Event>,
    process: u64,
    consistency: &str,
    read_unix_ms: u64,
    decisions: &[Json],
) {
    let script = Script::new(NAME)
        .invoke(process, FINAL_READ, None, json!({"consistency": consistency}))
        .ok(
            process,
            json!({"consistency": consistency, "read_unix_ms": read_unix_ms, "decisions": decisions}),
        );
    append(events, script, None);
}

fn finals(mut events: Vec<Event>, decisions: &[Json]) -> Vec<Event> {
    for (process, consistency) in [
        (90, "serializable"),
        (91, "serializable"),
        (92, "linearizable"),
    ] {
        final_read(&mut events, process, consistency, 12_000, decisions);
    }
    events
}

fn problems_of(events: Vec<Event>) -> Vec<String> {
    let result = check(&events);
    assert_eq!(result.verdict, Verdict::Invalid, "expected a violation");
    result.problems
}

fn assert_found(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {problems:#?}"
    );
}

#[test]
fn a_good_history_is_valid() {
    let (events, decisions) = good();
    let result = check(&finals(events, &decisions));
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
    assert_eq!(result.stats["votes_refused"], 3);
    assert_eq!(result.stats["statuses"]["NO_QUORUM"], 1);
}

#[test]
fn an_outcome_that_contradicts_the_votes_is_invalid() {
    let (events, _) = good();
    let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
    let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
    // Two yes of three, yet "no" is said to have won.
    let decisions = vec![
        state(
            1,
            &one,
            "DECIDED",
            "no",
            &[("a", "yes", 100), ("b", "yes", 200)],
            200,
        ),
        // One vote of three under unanimity cannot be decided.
        state(2, &two, "DECIDED", "no", &[("a", "no", 300)], 300),
    ];
    let problems = problems_of(finals(events, &decisions));
    assert_found(&problems, "decision 1 is DECIDED \"no\"");
    assert_found(&problems, "decision 2 is DECIDED \"no\"");
    // The vote response said DECIDED yes: the observation contradicts the final state too.
    assert_found(&problems, "contradicts the final DECIDED \"no\"");
}

#[test]
fn a_no_quorum_before_the_deadline_or_a_rejection_that_could_still_pass_is_invalid() {
    let (events, _) = good();
    let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
    let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
    let decisions = vec![
        state(
            1,
            &one,
            "REJECTED",
            "",
            &[("a", "yes", 100), ("b", "yes", 200)],
            200,
        ),
        state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 9_000),
    ];
    let problems = problems_of(finals(events, &decisions));
    assert_found(&problems, "decision 1 is REJECTED");
    assert_found(&problems, "decision 2 is NO_QUORUM");
}

#[test]
fn votes_after_the_outcome_twice_or_from_outsiders_are_invalid() {
    let (events, _) = good();
    let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
    let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
    let decisions = vec![
        state(
            1,
            &one,
            "DECIDED",
            "yes",
            &[
                ("a", "yes", 100),
                ("b", "yes", 200),
                ("c", "no", 250),
                ("a", "no", 260),
                (OUTSIDER, "yes", 270),
            ],
            // Closed by b's deciding vote: every later vote came after the close.
            200,
        ),
        state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 10_500),
    ];
    let problems = problems_of(finals(events, &decisions));
    assert_found(&problems, "yet more votes were accepted");
    assert_found(&problems, "a voted twice");
    assert_found(
        &problems,
        "jepsen-outsider voted but is not in the electorate",
    );
    assert_found(&problems, "no such vote was invoked without being refused");
    assert_found(&problems, "after the decision closed at 200");
}

#[test]
fn a_lost_vote_or_decision_and_disagreeing_nodes_are_invalid() {
    let (events, _) = good();
    let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
    // Decision 1 lost b's acknowledged vote and stays open; decision 2 is gone on one node.
    let open = state(1, &one, "OPEN", "", &[("a", "yes", 100)], 0);
    let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
    let two_final = state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 10_500);
    let mut events = events;
    final_read(
        &mut events,
        90,
        "serializable",
        30_000,
        std::slice::from_ref(&open),
    );
    final_read(&mut events, 92, "linearizable", 30_000, &[open, two_final]);
    let problems = problems_of(events);
    assert_found(&problems, "b's vote yes in decision 1 was accepted");
    assert_found(&problems, "still OPEN");
    assert_found(&problems, "disagrees with the reference read");
    assert_found(&problems, "contradicts the final OPEN");
}

#[test]
fn an_unexpected_or_duplicated_decision_is_invalid() {
    let (events, decisions) = good();
    let mut decisions = decisions;
    let other = proposal(9, "MAJORITY", 0, &["a", "b", "c"], false);
    decisions.push(state(3, &other, "OPEN", "", &[], 0));
    let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
    decisions.push(state(4, &two, "NO_QUORUM", "", &[], 10_400));
    let problems = problems_of(finals(events, &decisions));
    assert_found(&problems, "no such proposal was invoked");
    assert_found(&problems, "applied more than once");
}

#[test]
fn without_a_final_read_the_check_is_unknown() {
    let (events, _) = good();
    assert_eq!(check(&events).verdict, Verdict::Unknown);
}
