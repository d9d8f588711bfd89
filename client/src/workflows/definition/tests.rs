//! Definition files: the examples pass, durations are exact, and broken files are refused with
//! the step, the field and (for YAML shape errors) the line named.

use std::path::PathBuf;

use super::*;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows")
}

fn yaml(text: &str) -> Result<WorkflowDefinition> {
    parse_definition(text, DefinitionFormat::Yaml)
}

fn refused(text: &str) -> String {
    match yaml(text) {
        Err(Error::InvalidInput { message }) => message,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[test]
fn every_example_passes_with_its_summary() {
    let load = |name: &str| load_definition(&examples().join(name)).expect(name);
    let pipeline = load("content-pipeline.yaml");
    assert_eq!(pipeline.deadline_ms, 30 * 60_000);
    assert_eq!(
        step_summaries(&pipeline),
        [
            "research  task on research",
            "write     task on write  after research",
            "edit      task on edit  after write",
        ]
    );
    let Some(workflow_step::Kind::Task(research)) = &pipeline.steps[0].kind else {
        panic!("a task");
    };
    assert_eq!(research.params_json, r#"{"depth":2}"#);
    assert_eq!(research.lease_ms, 30_000);
    assert_eq!(research.backoff.unwrap().jitter, 0.1);

    let fan = load("fan-out-research.yaml");
    assert_eq!(
        step_summaries(&fan)[1],
        "research   fan-out of 5 tasks on research  after plan  join at least 3, partial after 15s"
    );
    let manager = load("manager-worker.yaml");
    assert_eq!(
        step_summaries(&manager)[1],
        "manage  task on manage  after plan"
    );
    let Some(workflow_step::Kind::Task(manage)) = &manager.steps[1].kind else {
        panic!("a task");
    };
    assert_eq!(
        manage.deadline_ms,
        20 * 60_000,
        "the deadline its sections inherit"
    );
    let vote = load("vote-publish.yaml");
    let lines = step_summaries(&vote);
    assert_eq!(lines[1], "vote       decision (yes|no)  after draft");
    assert_eq!(
        lines[2],
        "publish    task on publish  after vote  when vote = yes  compensate unpublish"
    );
    assert_eq!(lines[5], "unpublish  compensation task on publish");
}

#[test]
fn json_files_have_the_same_shape() {
    let text = r#"{
        "name": "pipeline",
        "steps": [
            {"name": "a", "queue": "q", "params": {"n": 1.25, "tags": ["x"]}, "lease": "30s"},
            {"name": "b", "after": ["a"], "queue": "q"}
        ]
    }"#;
    let definition = parse_definition(text, DefinitionFormat::Json).expect("valid");
    assert_eq!(definition.steps.len(), 2);
    let Some(workflow_step::Kind::Task(a)) = &definition.steps[0].kind else {
        panic!("a task");
    };
    assert_eq!(a.params_json, r#"{"n":1.25,"tags":["x"]}"#);
    assert_eq!(
        DefinitionFormat::of_path(Path::new("x.JSON")),
        DefinitionFormat::Json
    );
    assert_eq!(
        DefinitionFormat::of_path(Path::new("x.yml")),
        DefinitionFormat::Yaml
    );
    let broken = parse_definition(r#"{"name": "x", "stepz": []}"#, DefinitionFormat::Json);
    let Err(Error::InvalidInput { message }) = broken else {
        panic!("{broken:?}");
    };
    assert!(message.starts_with("unknown field `stepz`"), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn durations_are_exact_milliseconds() {
    assert_eq!(parse_millis("500ms"), Ok(500));
    assert_eq!(parse_millis("30s"), Ok(30_000));
    assert_eq!(parse_millis("10m"), Ok(600_000));
    assert_eq!(parse_millis("2h"), Ok(7_200_000));
    assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
    assert_eq!(parse_millis("1.5s"), Ok(1_500));
    assert_eq!(parse_millis("0.1s"), Ok(100));
    assert!(parse_millis("0.0005s").is_err(), "not whole milliseconds");
    assert!(parse_millis("30").unwrap_err().contains("has no unit"));
    assert!(parse_millis("5x").is_err());
    assert!(parse_millis("").is_err());
    assert!(parse_millis("99999999999999999999d").is_err());
    for ms in [1, 999, 1_500, 60_000, 90_061_001] {
        assert_eq!(parse_millis(&human_millis(ms)), Ok(ms));
    }
    assert_eq!(human_millis(5_400_000), "1h30m");
}

#[test]
fn a_bare_number_duration_is_refused_with_its_line() {
    let message = refused("name: w\nsteps:\n  - name: a\n    queue: q\n    lease: 30\n");
    assert!(
        message.starts_with("steps[0].lease: 30 has no unit; write \"30ms\" or \"30s\""),
        "{message}"
    );
    assert!(message.contains("line 5"), "{message}");
}

#[test]
fn an_unknown_field_is_refused_with_its_path_and_line() {
    let text = "\
name: w
steps:
  - name: plan
    queue: q
  - name: fan
    after: [plan]
    queue: q
    fan_out:
      cout: 5
";
    let message = refused(text);
    assert!(
        message.starts_with("steps[1].fan_out: unknown field `cout`, expected one of"),
        "{message}"
    );
    assert!(message.contains("line 9 column 7"), "{message}");
}

#[test]
fn broken_graphs_name_the_step_and_the_field() {
    let cases = [
        (
            "name: w\nsteps:\n  - {name: a, queue: q}\n  - {name: a, queue: q}\n",
            "steps[1] (a).name: \"a\" is also the name of steps[0]; step names are unique",
        ),
        (
            "name: w\nsteps:\n  - {name: a, queue: q, after: [b]}\n  - {name: b, queue: q}\n",
            "steps[0] (a).after[0]: \"b\" is steps[1], listed after this step; a step may only \
             follow steps listed before it (so the graph has no cycle)",
        ),
        (
            "name: w\nsteps:\n  - {name: fan, queue: q, fan_out: {count: 5, join: {policy: \
             at_least, k: 7}}}\n",
            "steps[0] (fan).fan_out.join.k: 7 exceeds the fan-out count 5",
        ),
        (
            "name: w\nsteps:\n  - {name: v, queue: q, decision: {question: q, options: [a, b], \
             electorate: {capability: c}}}\n",
            "steps[0] (v): a step is a task (queue, capabilities, params, backoff, fan_out) or a \
             decision, not both",
        ),
        (
            "name: w\nsteps:\n  - {name: p, queue: q}\n  - {name: f, after: [p], queue: q, \
             fan_out: {over: p, count: 2}}\n",
            "steps[1] (f).fan_out: give over (a step) or count, not both",
        ),
        (
            "name: w\nsteps:\n  - {name: a, capabilities: [x]}\n",
            "steps[0] (a).queue: must not be empty",
        ),
        (
            "name: w\nsteps:\n  - {name: a, queue: q, params: {}, compensate: undo}\n  - {name: \
             undo, queue: q}\n",
            "steps[0] (a).compensate: \"undo\" is not a compensation step (compensation: true)",
        ),
        (
            "name: w\nsteps:\n  - name: v\n    decision: {question: q, options: [yes, no], \
             electorate: {capability: c}}\n  - {name: p, after: [v], queue: q, when: {step: v, \
             outcome: maybe}}\n",
            "steps[1] (p).when.outcome: \"maybe\" is not one of v's options [\"yes\", \"no\"]",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(refused(text), expected, "for:\n{text}");
    }
}

#[test]
fn an_unreadable_file_names_the_file() {
    let missing = examples().join("no-such-file.yaml");
    let Err(Error::InvalidInput { message }) = load_definition(&missing) else {
        panic!("a missing file is invalid input");
    };
    assert!(message.contains("no-such-file.yaml: "), "{message}");
}
