//! One test per rule of a definition: a definition that keeps it passes, one that breaks it is
//! refused with the step, the field and the limit named.

use super::*;
use crate::v1::{Backoff, Electorate, Join, StepCondition};

fn task(name: &str, after: &[&str]) -> WorkflowStep {
    WorkflowStep {
        name: name.into(),
        after: after.iter().map(|s| s.to_string()).collect(),
        kind: Some(workflow_step::Kind::Task(TaskTemplate {
            queue: "q".into(),
            ..TaskTemplate::default()
        })),
        ..WorkflowStep::default()
    }
}

fn vote(name: &str, after: &[&str]) -> WorkflowStep {
    WorkflowStep {
        name: name.into(),
        after: after.iter().map(|s| s.to_string()).collect(),
        kind: Some(workflow_step::Kind::Decision(DecisionTemplate {
            question: "Publish?".into(),
            options: vec!["yes".into(), "no".into()],
            electorate: Some(Electorate {
                agents: Vec::new(),
                capability: "reviewer".into(),
            }),
            ..DecisionTemplate::default()
        })),
        ..WorkflowStep::default()
    }
}

fn fan(name: &str, after: &[&str], source: fan_out::Source, join: Join) -> WorkflowStep {
    WorkflowStep {
        fan_out: Some(FanOut {
            source: Some(source),
            join: Some(join),
        }),
        ..task(name, after)
    }
}

fn workflow(steps: Vec<WorkflowStep>) -> WorkflowDefinition {
    WorkflowDefinition {
        name: "wf".into(),
        version: 1,
        deadline_ms: 0,
        steps,
    }
}

fn check(steps: Vec<WorkflowStep>) -> Result {
    definition(&workflow(steps))
}

fn refused(steps: Vec<WorkflowStep>) -> String {
    check(steps).expect_err("expected a broken rule").0
}

fn at_least(k: u32) -> Join {
    Join {
        policy: JoinPolicy::AtLeast as i32,
        k,
        deadline_ms: 0,
    }
}

#[test]
fn a_pipeline_passes() {
    let steps = vec![
        task("research", &[]),
        task("write", &["research"]),
        task("edit", &["write"]),
    ];
    assert_eq!(check(steps), Ok(()));
}

#[test]
fn the_workflow_name_and_step_count_are_bounded() {
    let mut w = workflow(vec![task("a", &[])]);
    w.name = "has space".into();
    assert!(definition(&w).unwrap_err().0.starts_with("name: "));
    assert_eq!(
        refused(Vec::new()),
        "steps: a workflow needs at least one step"
    );
    let many: Vec<WorkflowStep> = (0..=WORKFLOW_STEPS_MAX)
        .map(|i| task(&format!("s{i}"), &[]))
        .collect();
    assert_eq!(
        refused(many),
        "steps: 65 steps exceeds the limit of 64 (WORKFLOW_STEPS_MAX)"
    );
}

#[test]
fn step_names_are_unique_and_well_formed() {
    assert_eq!(
        refused(vec![task("a", &[]), task("a", &[])]),
        "steps[1] (a).name: \"a\" is also the name of steps[0]; step names are unique"
    );
    assert_eq!(
        refused(vec![task("a.b", &[])]),
        "steps[0] (a.b).name: \"a.b\" contains '.'; step names are made of [A-Za-z0-9_-]"
    );
    assert_eq!(
        refused(vec![task("", &[])]),
        "steps[0] ().name: must not be empty"
    );
    let long = "s".repeat(WORKFLOW_STEP_NAME_BYTES_MAX + 1);
    assert!(refused(vec![task(&long, &[])]).ends_with("(WORKFLOW_STEP_NAME_BYTES_MAX)"));
    assert_eq!(check(vec![task("Step_1-a", &[])]), Ok(()));
}

#[test]
fn after_names_earlier_steps_only() {
    assert_eq!(
        refused(vec![task("a", &[]), task("b", &["nope"])]),
        "steps[1] (b).after[0]: \"nope\" names no step"
    );
    assert_eq!(
        refused(vec![task("a", &["b"]), task("b", &[])]),
        "steps[0] (a).after[0]: \"b\" is steps[1], listed after this step; a step may only \
         follow steps listed before it (so the graph has no cycle)"
    );
    assert_eq!(
        refused(vec![task("a", &["a"])]),
        "steps[0] (a).after[0]: a step cannot follow itself"
    );
    assert_eq!(
        refused(vec![task("a", &[]), task("b", &["a", "a"])]),
        "steps[1] (b).after[1]: \"a\" appears more than once"
    );
}

#[test]
fn a_step_is_exactly_one_kind() {
    let none = WorkflowStep {
        name: "a".into(),
        ..WorkflowStep::default()
    };
    assert_eq!(
        refused(vec![none]),
        "steps[0] (a): give the step a task or a decision"
    );
    let mut fanned_vote = vote("v", &[]);
    fanned_vote.fan_out = Some(FanOut {
        source: Some(fan_out::Source::Count(2)),
        join: None,
    });
    assert_eq!(
        refused(vec![fanned_vote]),
        "steps[0] (v).fan_out: only a task step fans out"
    );
}

#[test]
fn fan_out_needs_a_source_and_a_width_within_the_limit() {
    let mut no_source = task("f", &[]);
    no_source.fan_out = Some(FanOut::default());
    assert_eq!(
        refused(vec![no_source]),
        "steps[0] (f).fan_out: give over (a step) or count"
    );
    let wide = fan("f", &[], fan_out::Source::Count(257), Join::default());
    assert_eq!(
        refused(vec![wide]),
        "steps[0] (f).fan_out.count: 257 exceeds the limit of 256 (FAN_OUT_WIDTH_MAX)"
    );
    let zero = fan("f", &[], fan_out::Source::Count(0), Join::default());
    assert_eq!(
        refused(vec![zero]),
        "steps[0] (f).fan_out.count: must be non-zero"
    );
    let fine = fan("f", &[], fan_out::Source::Count(256), Join::default());
    assert_eq!(check(vec![fine]), Ok(()));
}

#[test]
fn join_k_fits_the_policy_and_the_width() {
    let steps = |join: Join| {
        vec![
            task("plan", &[]),
            task("x", &[]),
            fan("fan", &["plan"], fan_out::Source::Count(5), join),
        ]
    };
    assert_eq!(check(steps(at_least(5))), Ok(()));
    assert_eq!(
        refused(steps(at_least(7))),
        "steps[2] (fan).fan_out.join.k: 7 exceeds the fan-out count 5"
    );
    assert_eq!(
        refused(steps(at_least(0))),
        "steps[2] (fan).fan_out.join.k: the policy AT_LEAST needs k >= 1"
    );
    let any_with_k = Join {
        policy: JoinPolicy::Any as i32,
        k: 2,
        deadline_ms: 0,
    };
    assert_eq!(
        refused(steps(any_with_k)),
        "steps[2] (fan).fan_out.join.k: 2 is given, but k is only for the policy AT_LEAST"
    );
    let over = fan(
        "fan",
        &["plan"],
        fan_out::Source::Over("plan".into()),
        at_least(300),
    );
    assert_eq!(
        refused(vec![task("plan", &[]), over]),
        "steps[1] (fan).fan_out.join.k: 300 exceeds the limit of 256 (FAN_OUT_WIDTH_MAX)"
    );
    let late = Join {
        deadline_ms: WORKFLOW_DEADLINE_MS_MAX + 1,
        ..Join::default()
    };
    assert!(refused(steps(late)).ends_with("(WORKFLOW_DEADLINE_MS_MAX)"));
}

#[test]
fn over_names_an_ancestor_task_list() {
    let over = |name: &str| fan_out::Source::Over(name.into());
    let ok = vec![
        task("plan", &[]),
        task("mid", &["plan"]),
        fan("fan", &["mid"], over("plan"), Join::default()),
    ];
    assert_eq!(check(ok), Ok(()), "an ancestor through another step");
    let not_ancestor = vec![
        task("plan", &[]),
        task("other", &[]),
        fan("fan", &["other"], over("plan"), Join::default()),
    ];
    assert_eq!(
        refused(not_ancestor),
        "steps[2] (fan).fan_out.over: \"plan\" is not among this step's ancestors (its after \
         steps, transitively)"
    );
    let of_vote = vec![
        vote("v", &[]),
        fan("fan", &["v"], over("v"), Join::default()),
    ];
    assert_eq!(
        refused(of_vote),
        "steps[1] (fan).fan_out.over: \"v\" is a decision step; over needs a task step's result \
         list"
    );
    let of_fan = vec![
        fan("a", &[], fan_out::Source::Count(2), Join::default()),
        fan("b", &["a"], over("a"), Join::default()),
    ];
    assert_eq!(
        refused(of_fan),
        "steps[1] (b).fan_out.over: \"a\" fans out itself, so its result is an object, not a list"
    );
    let unknown = vec![fan("b", &[], over("zz"), Join::default())];
    assert_eq!(
        refused(unknown),
        "steps[0] (b).fan_out.over: \"zz\" names no step"
    );
}

fn when(step: &str, outcome: &str) -> Option<StepCondition> {
    Some(StepCondition {
        step: step.into(),
        outcome: outcome.into(),
    })
}

#[test]
fn when_names_an_ancestor_decision_and_one_of_its_options() {
    let mut publish = task("publish", &["vote"]);
    publish.when = when("vote", "yes");
    assert_eq!(check(vec![vote("vote", &[]), publish.clone()]), Ok(()));
    publish.when = when("vote", "maybe");
    assert_eq!(
        refused(vec![vote("vote", &[]), publish.clone()]),
        "steps[1] (publish).when.outcome: \"maybe\" is not one of vote's options [\"yes\", \"no\"]"
    );
    let mut sibling = task("publish", &[]);
    sibling.when = when("vote", "yes");
    assert_eq!(
        refused(vec![vote("vote", &[]), sibling]),
        "steps[1] (publish).when.step: \"vote\" is not among this step's ancestors (its after \
         steps, transitively)"
    );
    let mut on_task = task("publish", &["write"]);
    on_task.when = when("write", "yes");
    assert_eq!(
        refused(vec![task("write", &[]), on_task]),
        "steps[1] (publish).when.step: \"write\" is not a decision step"
    );
}

fn compensation(name: &str) -> WorkflowStep {
    WorkflowStep {
        compensation: true,
        ..task(name, &[])
    }
}

#[test]
fn compensate_names_a_compensation_step_and_each_is_named() {
    let mut publish = task("publish", &[]);
    publish.compensate = "unpublish".into();
    assert_eq!(
        check(vec![publish.clone(), compensation("unpublish")]),
        Ok(())
    );
    assert_eq!(
        refused(vec![publish.clone(), task("unpublish", &[])]),
        "steps[0] (publish).compensate: \"unpublish\" is not a compensation step (compensation: \
         true)"
    );
    assert_eq!(
        refused(vec![publish]),
        "steps[0] (publish).compensate: \"unpublish\" names no step"
    );
    assert_eq!(
        refused(vec![task("a", &[]), compensation("undo")]),
        "steps[1] (undo).compensation: no step names it in compensate, so it would never run"
    );
}

#[test]
fn a_compensation_step_is_a_plain_task_outside_the_flow() {
    let mut publish = task("publish", &[]);
    publish.compensate = "undo".into();
    let mut undo = compensation("undo");
    undo.after = vec!["publish".into()];
    assert_eq!(
        refused(vec![publish.clone(), undo]),
        "steps[1] (undo).after: a compensation step is a plain task step that runs only as an \
         undo; it has no after"
    );
    let later = task("later", &["undo"]);
    assert_eq!(
        refused(vec![publish, compensation("undo"), later]),
        "steps[2] (later).after[0]: \"undo\" is a compensation step, which runs only as an undo"
    );
}

#[test]
fn task_template_fields_follow_the_task_limits() {
    let with = |edit: fn(&mut TaskTemplate)| {
        let mut step = task("t", &[]);
        if let Some(workflow_step::Kind::Task(template)) = &mut step.kind {
            edit(template);
        }
        check(vec![step])
    };
    assert_eq!(
        with(|t| t.queue.clear()).unwrap_err().0,
        "steps[0] (t).task.queue: must not be empty"
    );
    assert_eq!(
        with(|t| t.params_json = r#"{"topic": "raft", "n": 1.5}"#.into()),
        Ok(())
    );
    assert!(with(|t| t.params_json = "{topic".into())
        .unwrap_err()
        .0
        .starts_with("steps[0] (t).task.params_json: not JSON: "));
    assert!(
        with(|t| t.params_json = format!("\"{}\"", "x".repeat(WORKFLOW_PARAMS_BYTES_MAX)))
            .unwrap_err()
            .0
            .ends_with("(WORKFLOW_PARAMS_BYTES_MAX)")
    );
    assert!(with(|t| t.max_attempts = 101)
        .unwrap_err()
        .0
        .ends_with("(MAX_ATTEMPTS)"));
    assert!(with(|t| t.lease_ms = 10).is_err());
    assert!(with(|t| t.priority = 5000)
        .unwrap_err()
        .0
        .ends_with("(MAX_PRIORITY)"));
    assert_eq!(
        with(|t| t.backoff = Some(Backoff {
            initial_ms: 1000,
            maximum_ms: 30_000,
            multiplier: 11.0,
            jitter: 0.1,
        }))
        .unwrap_err()
        .0,
        "steps[0] (t).task.backoff.multiplier: 11 is outside the allowed range 1.0 ..= 10.0 \
         (MAX_BACKOFF_MULTIPLIER)"
    );
    assert!(with(|t| t.deadline_ms = WORKFLOW_DEADLINE_MS_MAX + 1)
        .unwrap_err()
        .0
        .ends_with("(WORKFLOW_DEADLINE_MS_MAX)"));
}

#[test]
fn decision_template_fields_follow_the_decision_limits() {
    let with = |edit: fn(&mut DecisionTemplate)| {
        let mut step = vote("v", &[]);
        if let Some(workflow_step::Kind::Decision(template)) = &mut step.kind {
            edit(template);
        }
        check(vec![step])
    };
    assert_eq!(
        with(|d| d.options = vec!["yes".into()]).unwrap_err().0,
        "steps[0] (v).decision.options: 1 options; give 2 ..= 32 (MAX_OPTIONS)"
    );
    assert_eq!(
        with(|d| d.options = vec!["yes".into(), "yes".into()])
            .unwrap_err()
            .0,
        "steps[0] (v).decision.options[1]: \"yes\" appears more than once; options must be distinct"
    );
    assert_eq!(
        with(|d| d.electorate = None).unwrap_err().0,
        "steps[0] (v).decision.electorate: name the agents or a capability"
    );
    assert_eq!(
        with(|d| {
            d.electorate = Some(Electorate {
                agents: vec!["a".into(), "b".into()],
                capability: String::new(),
            });
            d.rule = DecisionRule::AtLeast as i32;
            d.k = 3;
        })
        .unwrap_err()
        .0,
        "steps[0] (v).decision.k: 3 is outside the allowed range 1 ..= 2 (the electorate's size)"
    );
    assert_eq!(
        with(|d| d.veto_option = "maybe".into()).unwrap_err().0,
        "steps[0] (v).decision.veto_option: \"maybe\" is not one of the options"
    );
    assert!(with(|d| d.deadline_ms = MAX_DECISION_DEADLINE_MS + 1)
        .unwrap_err()
        .0
        .ends_with("(MAX_DECISION_DEADLINE_MS)"));
}

#[test]
fn the_workflow_deadline_and_input_are_bounded() {
    let mut w = workflow(vec![task("a", &[])]);
    w.deadline_ms = WORKFLOW_DEADLINE_MS_MAX;
    assert_eq!(definition(&w), Ok(()));
    w.deadline_ms += 1;
    assert_eq!(
        definition(&w).unwrap_err().0,
        "deadline_ms: 2592000001 exceeds the limit of 2592000000 (WORKFLOW_DEADLINE_MS_MAX)"
    );
    assert_eq!(input_json("input", ""), Ok(()));
    assert_eq!(input_json("input", "[1, 2.5, {\"a\": null}]"), Ok(()));
    assert!(input_json("input", "nope").is_err());
    let big = format!("\"{}\"", "x".repeat(WORKFLOW_BYTES_MAX));
    assert!(input_json("input", &big)
        .unwrap_err()
        .0
        .ends_with("(WORKFLOW_BYTES_MAX)"));
}
