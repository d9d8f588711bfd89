//! The decisions checker on hand-made histories: a good one, and for each property (each function
//! of `check.rs`) a history that breaks it, checked by that property alone and by [`check`].

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
/// refused as closed, a's second vote as already voted; the outsider is refused; a watch sees
/// it from the proposal to the outcome. Decision 2 (unanimous of a, b, ghost; proposal unknown):
/// a votes, then the deadline passes.
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
    let states = [one_open, one_a(), one_decided.clone()];
    let script = watch(script, 30, 1, &states, None);
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

// Each property on its own: the good history passes it, a history that breaks it fails it (and
// [`check`] reports what it found).

/// Decision 1 of the good history: majority of a, b and c, with a veto.
fn one() -> Proposal {
    proposal(1, "MAJORITY", 0, &["a", "b", "c"], true)
}

/// Decision 2 of the good history: unanimity of a, b and the ghost.
fn two() -> Proposal {
    proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false)
}

/// Decision 1 open with a's vote.
fn one_a() -> Json {
    state(1, &one(), "OPEN", "", &[("a", "yes", 100)], 0)
}

/// Decision 1 as `status` `outcome` with `votes`, closed at 200.
fn one_with(status: &str, outcome: &str, votes: &[(&str, &str, u64)]) -> Json {
    state(1, &one(), status, outcome, votes, 200)
}

/// The final state of decision 2.
fn two_final() -> Json {
    state(2, &two(), "NO_QUORUM", "", &[("a", "no", 300)], 10_500)
}

/// A watch of decision `id` that received `states`, and ended with `error` (or by itself).
fn watch(script: Script, process: u64, id: u64, states: &[Json], error: Option<&str>) -> Script {
    let mut value = json!({"id": id, "states": states});
    if let Some(error) = error {
        value["error"] = json!(error);
    }
    script
        .invoke(process, "watch", None, json!({"id": id}))
        .ok(process, value)
}

/// The good history, then `script`'s operations, then final reads of `decisions` on every node.
fn good_with(script: Script, decisions: &[Json]) -> Vec<Event> {
    let (mut events, _) = good();
    append(&mut events, script, None);
    finals(events, decisions)
}

/// The good history with final reads of `decisions` on every node.
fn listing(decisions: &[Json]) -> Vec<Event> {
    good_with(Script::new(NAME), decisions)
}

/// What `property` finds in `events`, which must parse and have a final read.
fn found(
    property: impl Fn(&Recorded, &FinalRead) -> Vec<Problem>,
    events: &[Event],
) -> Vec<Problem> {
    let operations = pair(events, Some(NAME)).expect("a well-formed history");
    let mut problems = Vec::new();
    let recorded = Recorded::parse(&operations, &mut problems);
    assert_eq!(problems, [], "the history does not parse");
    property(&recorded, recorded.reference().expect("a final read"))
}

/// `property` finds nothing in the good history.
fn passes(property: impl Fn(&Recorded, &FinalRead) -> Vec<Problem>) {
    let (events, decisions) = good();
    assert_eq!(found(property, &finals(events, &decisions)), []);
}

/// What `property` finds in `events`: something, which [`check`] reports.
fn violations(
    property: impl Fn(&Recorded, &FinalRead) -> Vec<Problem>,
    events: &[Event],
) -> Vec<Problem> {
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

/// A property that needs no final read, as one that ignores it.
fn anywhere(property: Property) -> impl Fn(&Recorded, &FinalRead) -> Vec<Problem> {
    move |recorded: &Recorded, _: &FinalRead| property(recorded)
}

#[test]
fn what_the_history_cannot_say_is_a_problem() {
    let script = Script::new(NAME)
        .invoke(1, "propose", None, json!({"tag": 1}))
        .info(1)
        .invoke(2, "vote", None, json!({"id": 1, "choice": "yes"}))
        .info(2)
        .invoke(3, FINAL_READ, None, json!({"consistency": "linearizable"}))
        .ok(
            3,
            json!({"consistency": "linearizable", "decisions": [{"id": 1}]}),
        );
    let events = script.events();
    let operations = pair(&events, Some(NAME)).expect("a well-formed history");
    let mut problems = Vec::new();
    let recorded = Recorded::parse(&operations, &mut problems);
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Record(RecordProblem::Proposal { index: 0 }),
            Problem::Record(RecordProblem::Vote { index: 2 }),
            Problem::Record(RecordProblem::Listed { index: 4, .. }),
        ]
    ));
    assert!(recorded.proposals.is_empty() && recorded.votes.is_empty());
    assert_eq!(check(&events).verdict, Verdict::Invalid);
}

#[test]
fn an_accepted_vote_is_in_the_state_it_answered() {
    passes(anywhere(answers_hold_their_votes));
    // c's vote accepted, answered with a state without it.
    let script = vote(Script::new(NAME), 6, 1, "c", "no").ok(
        6,
        json!({"id": 1, "voter": "c", "choice": "no", "decision": one_with("DECIDED", "yes", &[("a", "yes", 100), ("b", "yes", 200)])}),
    );
    let events = good_with(
        script,
        &[
            one_with("DECIDED", "yes", &[("a", "yes", 100), ("b", "yes", 200)]),
            two_final(),
        ],
    );
    let problems = violations(anywhere(answers_hold_their_votes), &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Observation(ObservationProblem::AnswerWithoutVote { voter, decision: 1, .. })] if voter == "c"
    ));
}

#[test]
fn a_watch_never_loses_votes() {
    passes(anywhere(watches_never_lose_votes));
    let states = [one_a(), state(1, &one(), "OPEN", "", &[], 0)];
    let events = good_with(
        watch(Script::new(NAME), 31, 1, &states, Some("no end")),
        &good().1,
    );
    let problems = violations(anywhere(watches_never_lose_votes), &events);
    assert_eq!(
        problems,
        [Problem::Observation(ObservationProblem::WatchLostVotes {
            decision: Some(1),
            index: invoked_at(&events, 31),
            from: 1,
            to: 0
        })]
    );
}

/// The index of the invocation by `process` (its last).
fn invoked_at(events: &[Event], process: u64) -> u64 {
    events
        .iter()
        .rev()
        .find(|event| event.process == process && event.kind == OpKind::Invoke)
        .expect("an invocation")
        .index
}

#[test]
fn a_watch_ends_only_after_the_outcome() {
    passes(anywhere(watches_end_closed));
    // Cut off while the decision was open: not a finding.
    let cut = watch(
        Script::new(NAME),
        31,
        1,
        &[one_a()],
        Some("no end within 5s"),
    );
    assert_eq!(
        found(anywhere(watches_end_closed), &good_with(cut, &good().1)),
        []
    );
    let ended = watch(Script::new(NAME), 31, 1, &[one_a()], None);
    let problems = violations(anywhere(watches_end_closed), &good_with(ended, &good().1));
    assert!(matches!(
        problems.as_slice(),
        [Problem::Observation(ObservationProblem::WatchEndedOpen {
            decision: Some(1),
            ..
        })]
    ));
}

#[test]
fn every_final_read_lists_the_same_decisions() {
    passes(reads_agree);
    let (mut events, decisions) = good();
    final_read(&mut events, 90, "serializable", 12_000, &decisions[..1]);
    final_read(&mut events, 92, "linearizable", 12_000, &decisions);
    let problems = violations(reads_agree, &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Listing(ListingProblem::ReadsDisagree {
            node: None,
            count: 1,
            first: 2,
            expected: Some(_),
            found: None,
            ..
        })]
    ));
}

#[test]
fn a_listed_decision_was_proposed_as_listed() {
    passes(listed_decisions_were_proposed);
    // Tag 9 was never proposed; tag 3's proposal failed; decision 1's deadline moved.
    let three = proposal(3, "MAJORITY", 0, &["a", "b", "c"], false);
    let failed = Script::new(NAME)
        .invoke(7, "propose", None, three.to_json())
        .fail(7);
    let mut moved = one();
    moved.deadline = 20_000;
    let decisions = [
        state(
            1,
            &moved,
            "DECIDED",
            "yes",
            &[("a", "yes", 100), ("b", "yes", 200)],
            200,
        ),
        two_final(),
        state(3, &three, "OPEN", "", &[], 0),
        state(
            4,
            &proposal(9, "MAJORITY", 0, &["a"], false),
            "OPEN",
            "",
            &[],
            0,
        ),
    ];
    let problems = violations(
        listed_decisions_were_proposed,
        &good_with(failed, &decisions),
    );
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Listing(ListingProblem::SpecChanged { id: 1, listed, proposed }),
            Problem::Listing(ListingProblem::ProposalFailed { id: 3, tag: 3 }),
            Problem::Listing(ListingProblem::NeverProposed { id: 4, tag: 9 }),
        ] if listed.deadline == 20_000 && proposed.deadline == 10_000
    ));
}

#[test]
fn the_voters_are_the_named_electorate() {
    passes(electorates_are_the_named_agents);
    let mut one = one_with("DECIDED", "yes", &[("a", "yes", 100), ("b", "yes", 200)]);
    one["voters"] = json!(["a", "b"]);
    let problems = violations(
        electorates_are_the_named_agents,
        &listing(&[one, two_final()]),
    );
    assert!(matches!(
        problems.as_slice(),
        [Problem::Listing(ListingProblem::ElectorateChanged { id: 1, voters, electorate })]
            if voters.len() == 2 && electorate.len() == 3
    ));
}

#[test]
fn a_proposal_is_applied_once() {
    passes(proposals_applied_once);
    let (_, mut decisions) = good();
    decisions.push(state(4, &two(), "NO_QUORUM", "", &[], 10_400));
    let problems = violations(proposals_applied_once, &listing(&decisions));
    assert_eq!(
        problems,
        [Problem::Listing(ListingProblem::AppliedTwice {
            tag: 2,
            ids: vec![2, 4]
        })]
    );
}

#[test]
fn an_acknowledged_proposal_is_listed_under_its_id() {
    passes(acknowledged_proposals_listed);
    let lost = violations(acknowledged_proposals_listed, &listing(&[two_final()]));
    assert_eq!(
        lost,
        [Problem::Listing(ListingProblem::ProposalLost {
            tag: 1,
            id: 1
        })]
    );
    // Decision 1 listed as another proposal's.
    let other = proposal(5, "MAJORITY", 0, &["a", "b", "c"], true);
    let decisions = [
        state(
            1,
            &other,
            "DECIDED",
            "yes",
            &[("a", "yes", 100), ("b", "yes", 200)],
            200,
        ),
        two_final(),
    ];
    let moved = violations(acknowledged_proposals_listed, &listing(&decisions));
    assert_eq!(
        moved,
        [Problem::Listing(ListingProblem::TagChanged {
            tag: 1,
            id: 1,
            listed_tag: 5
        })]
    );
}

#[test]
fn a_voter_votes_once() {
    passes(one_vote_per_voter);
    let votes = [("a", "yes", 100), ("a", "no", 150), ("b", "yes", 200)];
    let events = listing(&[one_with("DECIDED", "yes", &votes), two_final()]);
    let problems = violations(one_vote_per_voter, &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Tally(TallyProblem::VotedTwice { id: 1, voter, votes })] if voter == "a" && votes.len() == 3
    ));
}

#[test]
fn only_the_electorate_votes() {
    passes(votes_from_the_electorate);
    let votes = [("a", "yes", 100), (OUTSIDER, "yes", 150), ("b", "yes", 200)];
    let events = listing(&[one_with("DECIDED", "yes", &votes), two_final()]);
    let problems = violations(votes_from_the_electorate, &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Tally(TallyProblem::OutsiderVoted { id: 1, voter, .. })] if voter == OUTSIDER
    ));
}

#[test]
fn a_vote_is_for_an_option() {
    passes(votes_for_options);
    let votes = [("a", "maybe", 100), ("b", "yes", 150), ("c", "yes", 200)];
    let events = listing(&[one_with("DECIDED", "yes", &votes), two_final()]);
    let problems = violations(votes_for_options, &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Tally(TallyProblem::NotAnOption { id: 1, voter, choice })] if voter == "a" && choice == "maybe"
    ));
}

#[test]
fn no_vote_is_cast_after_the_close() {
    passes(votes_before_the_close);
    // An open decision has no close: votes after its "closed" stamp of 0 are fine.
    let open_two = state(2, &two(), "OPEN", "", &[("a", "no", 300)], 0);
    let (_, decisions) = good();
    let events = listing(&[decisions[0].clone(), open_two]);
    assert_eq!(found(votes_before_the_close, &events), []);
    let votes = [("a", "yes", 100), ("b", "yes", 200), ("c", "no", 250)];
    let events = listing(&[one_with("DECIDED", "yes", &votes), two_final()]);
    let problems = violations(votes_before_the_close, &events);
    assert_eq!(
        problems,
        [Problem::Tally(TallyProblem::VoteAfterClose {
            id: 1,
            voter: "c".to_string(),
            cast_ms: 250,
            closed: 200
        })]
    );
}

#[test]
fn no_vote_is_accepted_once_the_tally_ended() {
    passes(no_votes_after_the_tally_ended);
    let votes = [("a", "yes", 100), ("b", "yes", 200), ("c", "no", 200)];
    let events = listing(&[one_with("DECIDED", "yes", &votes), two_final()]);
    let problems = violations(no_votes_after_the_tally_ended, &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Tally(TallyProblem::VotesAfterTally { id: 1, after: 2, tally: Tally::Decided(winner), .. })]
            if winner == "yes"
    ));
}

#[test]
fn the_outcome_is_what_the_rule_makes_of_the_votes() {
    passes(outcomes_follow_the_rule);
    // Two yes of three, yet "no" won; no quorum before the deadline.
    let votes = [("a", "yes", 100), ("b", "yes", 200)];
    let early = state(2, &two(), "NO_QUORUM", "", &[("a", "no", 300)], 9_000);
    let events = listing(&[one_with("DECIDED", "no", &votes), early]);
    let problems = violations(outcomes_follow_the_rule, &events);
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Tally(TallyProblem::WrongOutcome { seen: no, tally: Tally::Decided(yes) }),
            Problem::Tally(TallyProblem::WrongOutcome { seen: no_quorum, tally: Tally::Open }),
        ] if no.outcome == "no" && yes == "yes" && no_quorum.status == Status::NoQuorum
    ));
    // A rejection that did not close with the last vote.
    let votes = [("a", "veto", 100)];
    let rejected = state(1, &one(), "REJECTED", "", &votes, 150);
    let problems = found(outcomes_follow_the_rule, &listing(&[rejected, two_final()]));
    assert!(matches!(
        problems.as_slice(),
        [Problem::Tally(TallyProblem::WrongOutcome {
            tally: Tally::Rejected,
            ..
        })]
    ));
}

#[test]
fn an_undecided_decision_closes_soon_after_its_deadline() {
    passes(open_not_long_past_the_deadline);
    let open_two = state(2, &two(), "OPEN", "", &[("a", "no", 300)], 0);
    let (mut events, decisions) = good();
    let both = [decisions[0].clone(), open_two];
    final_read(&mut events, 92, "linearizable", 30_000, &both);
    let problems = violations(open_not_long_past_the_deadline, &events);
    assert_eq!(
        problems,
        [Problem::Tally(TallyProblem::OpenPastDeadline {
            id: 2,
            late_ms: 20_000
        })]
    );
}

#[test]
fn an_accepted_vote_is_listed() {
    passes(accepted_votes_listed);
    // b's acknowledged vote is gone.
    let events = listing(&[one_a(), two_final()]);
    let problems = violations(accepted_votes_listed, &events);
    assert!(matches!(
        problems.as_slice(),
        [Problem::Voting(VotingProblem::AcceptedVoteLost { voter, id: 1, .. })] if voter == "b"
    ));
    // Decision 1 is gone, with both acknowledged votes.
    let problems = violations(accepted_votes_listed, &listing(&[two_final()]));
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Voting(VotingProblem::AcceptedVoteUnlisted { id: 1, .. }),
            Problem::Voting(VotingProblem::AcceptedVoteUnlisted { id: 1, .. }),
        ]
    ));
}

#[test]
fn a_refusal_agrees_with_the_final_state() {
    passes(refusals_agree);
    // Decision 1 open without votes, the outsider among its voters: each refusal is wrong.
    let mut open = state(1, &one(), "OPEN", "", &[], 0);
    open["voters"] = json!(["a", "b", "c", OUTSIDER]);
    let problems = violations(refusals_agree, &listing(&[open, two_final()]));
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Voting(VotingProblem::RefusedClosedButOpen { voter: c, id: 1, .. }),
            Problem::Voting(VotingProblem::SecondVoteWithoutFirst { voter: a, id: 1, .. }),
            Problem::Voting(VotingProblem::RefusedVoter { voter: outsider, id: 1, .. }),
        ] if c == "c" && a == "a" && outsider == OUTSIDER
    ));
}

#[test]
fn a_listed_vote_was_cast() {
    passes(listed_votes_were_cast);
    // b never voted in decision 2; c's vote in decision 1 was refused.
    let votes = [("a", "yes", 100), ("c", "no", 150), ("b", "yes", 200)];
    let two = state(
        2,
        &two(),
        "NO_QUORUM",
        "",
        &[("a", "no", 300), ("b", "no", 400)],
        10_500,
    );
    let events = listing(&[one_with("DECIDED", "yes", &votes), two]);
    let problems = violations(listed_votes_were_cast, &events);
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Voting(VotingProblem::VoteNeverCast { id: 1, voter: c, .. }),
            Problem::Voting(VotingProblem::VoteNeverCast { id: 2, voter: b, .. }),
        ] if c == "c" && b == "b"
    ));
}

#[test]
fn what_was_seen_during_the_run_agrees_with_the_final_state() {
    passes(observations_agree);
    let states = [
        one_with("DECIDED", "no", &[("a", "yes", 100), ("b", "no", 200)]),
        state(7, &one(), "OPEN", "", &[], 0),
        json!({"id": 1}),
        Json::Null,
    ];
    let script = watch(Script::new(NAME), 31, 1, &states, Some("no end"));
    let problems = violations(observations_agree, &good_with(script, &good().1));
    assert!(matches!(
        problems.as_slice(),
        [
            Problem::Observation(ObservationProblem::ObservationContradicts { source: Source::Watch(Some(1)), seen, listed, .. }),
            Problem::Observation(ObservationProblem::ObservationUnlisted { id: 7, .. }),
            Problem::Observation(ObservationProblem::ObservationUnparsable { .. }),
        ] if seen.outcome == "no" && listed.outcome == "yes"
    ));
    // An open state with every final vote, of a decision that was then decided: a state the
    // decision never had.
    let early = Script::new(NAME).invoke(8, "propose", None, one().to_json()).ok(
        8,
        json!({"tag": 1, "id": 1, "decision": one_with("OPEN", "", &[("a", "yes", 100), ("b", "yes", 200)])}),
    );
    let problems = found(observations_agree, &good_with(early, &good().1));
    assert!(matches!(
        problems.as_slice(),
        [Problem::Observation(
            ObservationProblem::ObservationContradicts {
                source: Source::Proposal(1),
                ..
            }
        )]
    ));
}

#[test]
fn ballots_go_to_the_voters() {
    passes(ballots_go_to_voters);
    let value = json!({"voter": "d", "id": 1});
    let ballot = Script::new(NAME)
        .invoke(22, "ballot", None, value.clone())
        .ok(22, value);
    let problems = violations(ballots_go_to_voters, &good_with(ballot, &good().1));
    assert!(matches!(
        problems.as_slice(),
        [Problem::Voting(VotingProblem::BallotToOutsider { voter, id: 1, .. })] if voter == "d"
    ));
}
