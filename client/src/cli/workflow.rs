//! `conclave workflow ...`: workflows of tasks and decisions. `check` validates a definition file
//! locally, by the rules the node applies; `start`, `get`, `ls`, `watch`, `cancel` and `retry`
//! drive the cluster's Workflows service.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use conclave_client::{
    human_millis, is_workflow_terminal, load_definition, step_summaries, unix_ms_now,
    ReadConsistency, StartWorkflowOptions, Workflow, WorkflowBranchState, WorkflowDefinition,
    WorkflowEvent, WorkflowEventKind, WorkflowListOptions, WorkflowState, WorkflowStepState,
    WorkflowWatchOptions,
};
use futures::StreamExt;
use serde_json::{json, Value};

use super::output::{self, header_json, table};
use super::render::{clip, enum_name};
use super::when::parse_duration;
use super::{CliError, CliResult, Globals};

/// How much of a result a text line shows.
const RESULT_CELL_CHARS: usize = 60;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Validate a definition file (YAML, or JSON for a .json file) without contacting the
    /// cluster, and print one line per step: its kind, what it follows, its join, its condition
    /// and its compensation. Exits 2 with a one-line error naming the step and the field (and the
    /// line, for a YAML shape error) when the definition is broken.
    Check {
        /// The definition file.
        file: PathBuf,
    },
    /// Start a workflow from a definition file and print its id.
    ///
    /// With --wait, follow it until it is terminal and print it: exits 0 when it succeeded, 1
    /// when it failed, was canceled or timed out.
    Start {
        /// The definition file (YAML, or JSON for a .json file).
        file: PathBuf,
        /// The workflow input, JSON; `@PATH` reads it from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// An idempotency key: a second start with the same key answers the first workflow.
        #[arg(long = "id", value_name = "KEY")]
        idempotency_key: Option<String>,
        /// This workflow's deadline from its start, instead of the definition's (e.g. 10m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        deadline: Option<Duration>,
        /// Wait until the workflow is terminal and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Show a workflow: its state, and its steps as a tree with their tasks, states and results.
    /// Exits 1 when unknown.
    Get { id: u64 },
    /// List workflows in id order.
    Ls {
        /// Only this state (running, waiting, compensating, succeeded, failed, canceled,
        /// timed_out); repeat for several.
        #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
        states: Vec<WorkflowState>,
        /// Only workflows of this definition name.
        #[arg(long)]
        name: Option<String>,
        /// Return at most this many (1..=1000), in one page.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Start after this id.
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
    },
    /// Print a workflow's changes (or every workflow's) as they commit, one per line.
    Watch {
        /// The workflow to watch; none: every workflow.
        id: Option<u64>,
        /// Resume: print only the changes with a greater sequence (the last one an earlier watch
        /// printed).
        #[arg(long, value_name = "SEQUENCE")]
        after_sequence: Option<u64>,
        /// Exit after printing this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Cancel a running or waiting workflow: its running tasks are canceled and the compensations
    /// of its succeeded steps run. Exits 1 when it had already finished.
    Cancel {
        id: u64,
        /// Why, at most 4096 bytes.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Run a failed or timed-out workflow again from its failed steps. Exits 1 in another state.
    Retry { id: u64 },
}

pub async fn run(command: WorkflowCommand, globals: &Globals) -> CliResult {
    let json = globals.json;
    match command {
        WorkflowCommand::Check { file } => {
            let definition = load_definition(&file)?;
            if json {
                output::json_document(&definition_json(&definition))
            } else {
                output::line(&headline(&definition))?;
                for line in step_summaries(&definition) {
                    output::line(&format!("  {line}"))?;
                }
                Ok(())
            }
        }
        WorkflowCommand::Start {
            file,
            input,
            idempotency_key,
            deadline,
            wait,
        } => {
            let definition = load_definition(&file)?;
            let input_json = match input {
                None => String::new(),
                Some(text) => match text.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|error| CliError::usage(format!("reading {path}: {error}")))?,
                    None => text,
                },
            };
            let client = globals.client()?;
            let started = client
                .start_workflow(
                    definition,
                    StartWorkflowOptions {
                        input_json,
                        idempotency_key: idempotency_key.unwrap_or_default(),
                        deadline,
                    },
                )
                .await?;
            if !wait {
                return if json {
                    output::json_document(&json!({
                        "header": header_json(&started.header),
                        "workflow_id": started.workflow_id,
                        "existed": started.existed,
                    }))
                } else {
                    let existed = if started.existed { " (existing)" } else { "" };
                    output::line(&format!("workflow {}{existed}", started.workflow_id))
                };
            }
            if !json {
                eprintln!("workflow {} started; waiting", started.workflow_id);
            }
            let workflow = client.wait_workflow(started.workflow_id).await?;
            print_workflow(&workflow, json)?;
            outcome(&workflow)
        }
        WorkflowCommand::Get { id } => {
            let read = globals.client()?.get_workflow(id).await?;
            print_workflow(&read.workflow, json)
        }
        WorkflowCommand::Ls {
            states,
            name,
            limit,
            after,
        } => {
            let page = globals
                .client()?
                .list_workflows(WorkflowListOptions {
                    states,
                    name: name.unwrap_or_default(),
                    after_id: after.unwrap_or(0),
                    limit: limit.unwrap_or(0),
                    consistency: ReadConsistency::Linearizable,
                })
                .await?;
            if json {
                return output::json_document(&json!({
                    "header": header_json(&page.header),
                    "workflows": page.workflows.iter().map(workflow_json).collect::<Vec<_>>(),
                    "more": page.more,
                    "next_after_id": page.next_after_id,
                }));
            }
            let mut rows = vec![vec![
                "ID".to_string(),
                "NAME".to_string(),
                "STATE".to_string(),
                "STEPS".to_string(),
                "AGE".to_string(),
            ]];
            let now = unix_ms_now();
            for workflow in &page.workflows {
                let done = workflow
                    .steps
                    .iter()
                    .filter(|s| {
                        matches!(
                            s.state(),
                            WorkflowStepState::Succeeded | WorkflowStepState::Skipped
                        )
                    })
                    .count();
                rows.push(vec![
                    workflow.id.to_string(),
                    format!("{} v{}", workflow.name, workflow.version),
                    state_text(workflow.state()),
                    format!("{done}/{}", workflow.steps.len()),
                    human_millis(now.saturating_sub(workflow.created_unix_ms)),
                ]);
            }
            output::line(&table(&rows))?;
            if page.more {
                eprintln!("more: continue with --after {}", page.next_after_id);
            }
            Ok(())
        }
        WorkflowCommand::Watch {
            id,
            after_sequence,
            count,
        } => {
            if count == Some(0) {
                return Ok(());
            }
            let mut stream = globals
                .client()?
                .watch_workflows(WorkflowWatchOptions {
                    workflow_id: id.unwrap_or(0),
                    after_sequence,
                })
                .await?;
            if json {
                output::json_line(&json!({
                    "kind": "started",
                    "sequence": stream.start_sequence(),
                }))?;
            } else {
                eprintln!("watching after sequence {}", stream.start_sequence());
            }
            let mut printed = 0;
            while let Some(event) = stream.next().await {
                print_event(&event?, json)?;
                printed += 1;
                if count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            Err(CliError::failed("the watch ended"))
        }
        WorkflowCommand::Cancel { id, reason } => {
            let change = globals.client()?.cancel_workflow(id, &reason).await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&change.header),
                    "canceled": change.changed,
                    "state": state_name(change.state),
                }))?;
            } else if change.changed {
                output::line(&format!(
                    "workflow {id} canceled ({})",
                    state_text(change.state)
                ))?;
            }
            if change.changed {
                Ok(())
            } else {
                Err(CliError::failed(format!(
                    "workflow {id} is already {}; nothing canceled",
                    state_text(change.state)
                )))
            }
        }
        WorkflowCommand::Retry { id } => {
            let change = globals.client()?.retry_workflow(id).await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&change.header),
                    "state": state_name(change.state),
                }))
            } else {
                output::line(&format!(
                    "workflow {id} retried ({})",
                    state_text(change.state)
                ))
            }
        }
    }
}

/// Exit 0 for SUCCEEDED, 1 for another terminal state.
fn outcome(workflow: &Workflow) -> CliResult {
    match workflow.state() {
        WorkflowState::Succeeded => Ok(()),
        state if is_workflow_terminal(state) => Err(CliError::failed(format!(
            "workflow {} {}{}",
            workflow.id,
            state_text(state),
            if workflow.error.is_empty() {
                String::new()
            } else {
                format!(": {}", workflow.error)
            }
        ))),
        state => Err(CliError::unknown(format!(
            "workflow {} still {}",
            workflow.id,
            state_text(state)
        ))),
    }
}

fn parse_state(text: &str) -> Result<WorkflowState, String> {
    let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
    WorkflowState::from_str_name(&format!("WORKFLOW_STATE_{wanted}"))
        .filter(|state| *state != WorkflowState::Unspecified)
        .ok_or_else(|| {
            format!(
                "{text:?} is not a workflow state (running, waiting, compensating, succeeded, \
                 failed, canceled, timed_out)"
            )
        })
}

fn state_name(state: WorkflowState) -> String {
    enum_name(state.as_str_name(), "WORKFLOW_STATE_")
}

fn state_text(state: WorkflowState) -> String {
    state_name(state).to_ascii_uppercase()
}

fn step_state_text(state: WorkflowStepState) -> String {
    enum_name(state.as_str_name(), "WORKFLOW_STEP_STATE_").to_ascii_uppercase()
}

fn branch_state_text(state: WorkflowBranchState) -> String {
    enum_name(state.as_str_name(), "WORKFLOW_BRANCH_STATE_").to_ascii_uppercase()
}

fn event_kind_name(kind: WorkflowEventKind) -> String {
    enum_name(kind.as_str_name(), "WORKFLOW_EVENT_KIND_")
}

fn print_event(event: &WorkflowEvent, json: bool) -> CliResult {
    if json {
        return output::json_line(&json!({
            "sequence": event.sequence,
            "kind": event_kind_name(event.kind()),
            "workflow_id": event.workflow_id,
            "step": event.step,
            "state": state_name(event.state()),
            "reason": event.reason,
        }));
    }
    let step = if event.step.is_empty() {
        String::new()
    } else {
        format!(" {}", event.step)
    };
    let reason = if event.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", event.reason)
    };
    output::line(&format!(
        "{} workflow {} {}{step} -> {}{reason}",
        event.sequence,
        event.workflow_id,
        event_kind_name(event.kind()),
        state_text(event.state()),
    ))
}

/// The workflow, then its steps as a tree: a step's line, under it its branches (fan-outs) and,
/// for a finished step, its result.
fn print_workflow(workflow: &Workflow, json: bool) -> CliResult {
    if json {
        return output::json_document(&workflow_json(workflow));
    }
    let error = if workflow.error.is_empty() {
        String::new()
    } else {
        format!(": {}", workflow.error)
    };
    output::line(&format!(
        "workflow {} {} v{}: {}{error}",
        workflow.id,
        workflow.name,
        workflow.version,
        state_text(workflow.state())
    ))?;
    let mut rows = Vec::new();
    for step in &workflow.steps {
        let task = match step.branches.as_slice() {
            [] if step.decision_id != 0 => format!("decision {}", step.decision_id),
            [] => "-".to_string(),
            [only] if only.task_id != 0 => format!("task {}", only.task_id),
            [_] => "-".to_string(),
            many => format!("{} branches", many.len()),
        };
        let detail = if !step.error.is_empty() {
            step.error.clone()
        } else if !step.outcome.is_empty() {
            format!("outcome {}", step.outcome)
        } else {
            clip(&step.result_json, RESULT_CELL_CHARS)
        };
        rows.push(vec![
            format!("├─ {}", step.name),
            step_state_text(step.state()),
            task,
            detail,
        ]);
        if step.branches.len() > 1 {
            for (i, branch) in step.branches.iter().enumerate() {
                let last = i + 1 == step.branches.len();
                let detail = if branch.error.is_empty() {
                    clip(&branch.result_json, RESULT_CELL_CHARS)
                } else {
                    branch.error.clone()
                };
                rows.push(vec![
                    format!("│  {} [{i}]", if last { "└─" } else { "├─" }),
                    branch_state_text(branch.state()),
                    format!("task {}", branch.task_id),
                    detail,
                ]);
            }
        }
    }
    if let Some(last) = rows.iter_mut().rev().find(|row| row[0].starts_with("├─ ")) {
        last[0] = last[0].replacen("├─", "└─", 1);
    }
    for compensation in &workflow.compensations {
        rows.push(vec![
            format!(
                "   undo {} with {}",
                compensation.step, compensation.compensation
            ),
            branch_state_text(compensation.state()),
            format!("task {}", compensation.task_id),
            compensation.error.clone(),
        ]);
    }
    output::line(&table(&rows))
}

fn workflow_json(workflow: &Workflow) -> Value {
    let steps: Vec<Value> = workflow
        .steps
        .iter()
        .map(|step| {
            json!({
                "name": step.name,
                "state": enum_name(step.state().as_str_name(), "WORKFLOW_STEP_STATE_"),
                "branches": step.branches.iter().map(|b| json!({
                    "task_id": b.task_id,
                    "state": enum_name(b.state().as_str_name(), "WORKFLOW_BRANCH_STATE_"),
                    "item": json_text(&b.item_json),
                    "result": json_text(&b.result_json),
                    "error": b.error,
                })).collect::<Vec<_>>(),
                "decision_id": step.decision_id,
                "outcome": step.outcome,
                "started_unix_ms": step.started_unix_ms,
                "finished_unix_ms": step.finished_unix_ms,
                "result": json_text(&step.result_json),
                "error": step.error,
                "runs": step.runs,
                "compensated": step.compensated,
            })
        })
        .collect();
    json!({
        "id": workflow.id,
        "name": workflow.name,
        "version": workflow.version,
        "state": state_name(workflow.state()),
        "input": json_text(&workflow.input_json),
        "steps": steps,
        "compensations": workflow.compensations.iter().map(|c| json!({
            "step": c.step,
            "compensation": c.compensation,
            "task_id": c.task_id,
            "state": enum_name(c.state().as_str_name(), "WORKFLOW_BRANCH_STATE_"),
            "error": c.error,
        })).collect::<Vec<_>>(),
        "created_unix_ms": workflow.created_unix_ms,
        "updated_unix_ms": workflow.updated_unix_ms,
        "finished_unix_ms": workflow.finished_unix_ms,
        "deadline_unix_ms": workflow.deadline_unix_ms,
        "error": workflow.error,
        "idempotency_key": workflow.idempotency_key,
        "retries": workflow.retries,
    })
}

/// JSON text as a value (null when empty; a string when it does not parse).
fn json_text(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn headline(definition: &WorkflowDefinition) -> String {
    let deadline = match definition.deadline_ms {
        0 => String::new(),
        ms => format!(", deadline {}", human_millis(ms)),
    };
    format!(
        "{} v{}: {} steps{deadline}",
        definition.name,
        definition.version,
        definition.steps.len()
    )
}

fn definition_json(definition: &WorkflowDefinition) -> Value {
    let steps: Vec<Value> = definition
        .steps
        .iter()
        .zip(step_summaries(definition))
        .map(|(step, summary)| {
            json!({
                "name": step.name,
                "after": step.after,
                "summary": summary.trim_start_matches(step.name.as_str()).trim(),
            })
        })
        .collect();
    json!({
        "valid": true,
        "name": definition.name,
        "version": definition.version,
        "deadline_ms": definition.deadline_ms,
        "steps": steps,
    })
}
