//! `conclave task delegate`: a manager agent hands work to other agents under its own lease
//! (agents.proto `Delegate`), and waits for what they did.

use std::io::BufRead;
use std::time::Duration;

use clap::Args;
use conclave_client::{unix_ms_now, Client, EscalationKind, Task, TaskSpec, TaskState};
use serde_json::{json, Value};

use super::output;
use super::render::{parse_key_value, state_name};
use super::task::{ending, wait_until_terminal};
use super::when::{parse_duration, parse_when};
use super::{CliError, CliResult, Globals};

#[derive(Debug, Args)]
pub struct DelegateArgs {
    /// The queue of the delegated tasks.
    pub queue: String,
    /// One delegated task per PAYLOAD; `-` reads stdin, one task per non-empty line.
    #[arg(required = true)]
    pub payloads: Vec<String>,
    /// The task held, the manager (default: $CONCLAVE_TASK_ID, which `conclave agent run` sets).
    #[arg(long, env = "CONCLAVE_TASK_ID", value_name = "ID")]
    pub task: u64,
    /// Its fencing token (default: $CONCLAVE_FENCING_TOKEN).
    #[arg(long, env = "CONCLAVE_FENCING_TOKEN", value_name = "TOKEN")]
    pub token: u64,
    /// A capability the agents must have; repeat for several.
    #[arg(long = "capability", value_name = "NAME")]
    pub capabilities: Vec<String>,
    /// Where a delegated task that dead-letters escalates: a new task for agents with this
    /// capability (default: to the manager, whose --wait then reports it).
    #[arg(long, value_name = "CAPABILITY")]
    pub escalate_to: Option<String>,
    /// -1000..=1000; higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub priority: i32,
    /// Attempts before a delegated task is dead-lettered (1..=100; default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: Option<u32>,
    /// Lease of each attempt (1s..=1h; default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// An earlier deadline than the manager's (which every delegated task gets at the latest).
    #[arg(long, value_name = "WHEN")]
    pub deadline: Option<String>,
    /// A label KEY=VALUE; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// The payloads' content type, e.g. application/json.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Wait until every delegated task (and every escalation task) has finished, printing one
    /// JSON line each: `{"task_id", "state", "result", "error", "escalated_to"}`.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 3).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub max_wait: Option<Duration>,
}

/// Delegates; prints the ids (one a line), or with --wait each task's outcome. Exits 1 when a
/// delegated task did not succeed (after printing every outcome), 3 when --max-wait passes.
pub async fn run(args: DelegateArgs, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let (task, token, wait, max_wait) = (args.task, args.token, args.wait, args.max_wait);
    let escalate_to = args.escalate_to.clone().unwrap_or_default();
    let specs = specs(args, unix_ms_now())?;
    let ids = client.delegate(task, token, specs, &escalate_to).await?;
    if !wait {
        let lines: Vec<String> = ids.iter().map(u64::to_string).collect();
        return output::line(&lines.join("\n"));
    }
    eprintln!(
        "delegated {} tasks under task {task}; waiting for them",
        ids.len()
    );
    wait_all(&client, ids, max_wait).await
}

/// One spec per payload, with the flags' options; times relative to `now_ms`.
fn specs(args: DelegateArgs, now_ms: u64) -> CliResult<Vec<TaskSpec>> {
    let deadline_unix_ms = match &args.deadline {
        None => 0,
        Some(text) => {
            parse_when(text, now_ms).map_err(|e| CliError::usage(format!("--deadline: {e}")))?
        }
    };
    let lease_ms = args.lease.map_or(0, |lease| lease.as_millis() as u64);
    let template = TaskSpec {
        queue: args.queue,
        content_type: args.content_type.unwrap_or_default(),
        capabilities: args.capabilities,
        priority: args.priority,
        max_attempts: args.max_attempts.unwrap_or(0),
        lease_ms,
        deadline_unix_ms,
        labels: args.labels.into_iter().collect(),
        ..TaskSpec::default()
    };
    Ok(payloads(args.payloads)?
        .into_iter()
        .map(|payload| TaskSpec {
            payload,
            ..template.clone()
        })
        .collect())
}

/// The payloads given, `-` replaced by stdin's non-empty lines.
fn payloads(given: Vec<String>) -> CliResult<Vec<Vec<u8>>> {
    let mut payloads = Vec::new();
    for payload in given {
        if payload != "-" {
            payloads.push(payload.into_bytes());
            continue;
        }
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| CliError::failed(format!("reading stdin: {e}")))?;
            if !line.trim().is_empty() {
                payloads.push(line.into_bytes());
            }
        }
    }
    Ok(payloads)
}

/// Waits for each task in turn (they run side by side), printing its outcome as it ends; an
/// escalation task is waited for too, after the task it handles.
async fn wait_all(client: &Client, ids: Vec<u64>, max_wait: Option<Duration>) -> CliResult {
    let started = tokio::time::Instant::now();
    let mut queue = std::collections::VecDeque::from(ids);
    let mut failures = Vec::new();
    while let Some(id) = queue.pop_front() {
        let task = wait_one(client, id, started, max_wait).await?;
        output::line(&outcome(&task).to_string())?;
        if let Some(handler) = escalation_task(&task) {
            queue.push_back(handler);
        }
        if task.state() != TaskState::Succeeded {
            failures.push(ending(&task));
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(CliError::failed(failures.remove(0))),
        n => Err(CliError::failed(format!(
            "{n} delegated tasks did not succeed; the first: {}",
            failures[0]
        ))),
    }
}

async fn wait_one(
    client: &Client,
    id: u64,
    started: tokio::time::Instant,
    max_wait: Option<Duration>,
) -> CliResult<Task> {
    let waited = wait_until_terminal(client, id, started, max_wait).await?;
    if !waited.terminal {
        return Err(CliError::unknown(format!(
            "delegated task {id} has not finished after --max-wait"
        )));
    }
    Ok(waited.task)
}

/// The escalation task a dead letter was handed to, if any.
fn escalation_task(task: &Task) -> Option<u64> {
    let delegation = task.delegation.as_ref()?;
    (delegation.escalation() == EscalationKind::Task).then_some(delegation.escalation_task_id)
}

/// One task's outcome as a JSON line: its result as JSON when it is JSON, else as text.
fn outcome(task: &Task) -> Value {
    let result = if task.result.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&task.result)
            .unwrap_or_else(|_| String::from_utf8_lossy(&task.result).into_owned().into())
    };
    let escalated_to = match task.delegation.as_ref().map(|d| d.escalation()) {
        Some(EscalationKind::Manager) => json!("manager"),
        Some(EscalationKind::Task) => json!(escalation_task(task)),
        Some(EscalationKind::Orphaned) => json!("nobody"),
        _ => Value::Null,
    };
    json!({
        "task_id": task.id,
        "state": state_name(task.state()),
        "result": result,
        "error": if task.state() == TaskState::Succeeded { String::new() } else { ending(task) },
        "escalated_to": escalated_to,
    })
}
