//! `conclave workflow check`, as a person runs it: every example definition passes with a summary
//! on stdout and exit 0; broken files fail with one line on stderr naming the step and the field,
//! and exit 2 (invalid input). No cluster is involved.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn conclave(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(args)
        .output()
        .expect("the conclave binary runs")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows")
}

/// Writes `text` to a file of this test's own in cargo's scratch directory for integration tests
/// (inside the target directory: nothing is left in /tmp).
fn broken_file(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workflow-check");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

#[test]
fn every_example_definition_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples()).expect("examples/workflows") {
        let path = entry.expect("an entry").path();
        let output = conclave(&["workflow", "check", path.to_str().expect("a UTF-8 path")]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let steps = stdout.lines().count() - 1;
        assert!(steps >= 3, "a headline and a line per step:\n{stdout}");
        checked += 1;
    }
    assert_eq!(checked, 4, "the four examples of issue 10");
}

#[test]
fn check_prints_one_line_per_step() {
    let path = examples().join("fan-out-research.yaml");
    let output = conclave(&["workflow", "check", path.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "fan-out-research v1: 3 steps, deadline 15m\n\
         \x20 plan       task on plan\n\
         \x20 research   fan-out of 5 tasks on research  after plan  join at least 3, partial after 15s\n\
         \x20 aggregate  task on write  after research\n"
    );
    let json = conclave(&["workflow", "check", path.to_str().unwrap(), "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["valid"], true);
    assert_eq!(value["steps"][1]["after"][0], "plan");
}

#[test]
fn broken_definitions_fail_with_one_line_and_exit_2() {
    let cases = [
        (
            "join.yaml",
            "name: w\nsteps:\n  - {name: fan, queue: q, fan_out: {count: 5, join: {policy: at_least, k: 7}}}\n",
            "steps[0] (fan).fan_out.join.k: 7 exceeds the fan-out count 5",
        ),
        (
            "typo.yaml",
            "name: w\nsteps:\n  - name: a\n    queue: q\n    afer: [b]\n",
            "steps[0]: unknown field `afer`",
        ),
        (
            "cycle.json",
            r#"{"name": "w", "steps": [{"name": "a", "queue": "q", "after": ["b"]}, {"name": "b", "queue": "q", "after": ["a"]}]}"#,
            "steps[0] (a).after[0]: \"b\" is steps[1], listed after this step",
        ),
    ];
    for (name, text, expected) in cases {
        let path = broken_file(name, text);
        let output = conclave(&["workflow", "check", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(output.stdout.is_empty(), "{name}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(stderr.starts_with("error: invalid input: "), "{stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains(name), "the file is named: {stderr}");
    }
    let missing = conclave(&["workflow", "check", "/nonexistent/w.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
}
