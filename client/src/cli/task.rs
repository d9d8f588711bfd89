//! `conclave task ...`: submit tasks, read them, watch and wait for them, cancel them.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use conclave_client::{
    is_terminal, unix_ms_now, AgentListOptions, AgentStatus, Backoff, Client, DeadLetterReason,
    DecisionGate, Delegation, EscalationKind, ReadConsistency, Task, TaskEvent, TaskEventKind,
    TaskListOptions, TaskSpec, TaskState, TaskWatchOptions, WaitResult,
};
use futures::StreamExt;
use serde_json::json;

use super::output::{self, header_json};
use super::render::{
    bytes_cell, clip, event_kind_name, labels_text, list_text, outcome_name, parse_key_value,
    parse_state, reason_name, state_name, state_text, task_json,
};
use super::when::{format_duration, format_relative, format_rfc3339, parse_duration, parse_when};
use super::{CliError, CliResult, Globals};

/// How often `task watch --json` looks whether its resume point moved without a printed change.
const BOOKMARK_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest single WaitTask the CLI sends while waiting without a bound; each request returns
/// early once the task is terminal.
const WAIT_CHUNK: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task to a queue.
    ///
    /// The payload is the PAYLOAD argument, the contents of --payload-file, or stdin for `-`
    /// (default: empty). Prints the task id. With --wait, waits for the task to finish and prints
    /// its result (the bytes, unchanged) instead; it then exits 1 if the task ends dead-lettered,
    /// canceled or expired, and 3 if --max-wait passes first. When no live agent has the task's
    /// capabilities, a warning on stderr says so at once (the task waits for one to register).
    #[command(
        override_usage = "conclave task submit [OPTIONS] <QUEUE> [PAYLOAD | --payload-file <PATH>]"
    )]
    Submit(Box<SubmitArgs>),
    /// Show one task: state, lease, attempts, progress, result.
    ///
    /// Exits 1 when the task does not exist. With --result, prints only the result bytes, and
    /// exits 1 unless the task succeeded.
    Get {
        id: u64,
        /// Print only the result, byte for byte.
        #[arg(long, conflicts_with = "json")]
        result: bool,
        /// Read this node's local state instead of confirming with a quorum; may be stale.
        #[arg(long)]
        serializable: bool,
        /// With --json, leave the payload out (it may be up to 1 MiB).
        #[arg(long)]
        no_payload: bool,
    },
    /// List tasks in id order, filtered by queue, state, label and parent.
    ///
    /// Without --limit, pages through every match.
    Ls(ListArgs),
    /// Print task changes as they happen: one task (ID) or a queue (--queue; neither: every task).
    ///
    /// Each change prints as `SEQUENCE KIND task ID STATE ...` (with --json, one document per
    /// line), in sequence order. Where the watch starts is printed first: on stderr as `watching
    /// after sequence N`, or with --json as a `{"kind": "started", "sequence": N}` line. With
    /// --json, a quiet watch also prints `{"kind": "bookmark", "sequence": N}` lines when the
    /// cluster reports that nothing watched happened up to N. After a reconnect to another node
    /// the watch resumes after the last sequence printed, with no gap and no repeat; to continue
    /// in a later run, pass the last sequence printed to --after-sequence. Only when the cluster no longer keeps the events to resume from does it
    /// start again from the current state of the watched tasks: SNAPSHOT lines (sequence 0) then
    /// mean that changes were skipped.
    Watch {
        /// The task to watch.
        id: Option<u64>,
        /// Watch every task of this queue.
        #[arg(long, conflicts_with = "id")]
        queue: Option<String>,
        /// Start with the current state of the watched tasks (SNAPSHOT lines).
        #[arg(long)]
        initial: bool,
        /// Resume: print only the changes with a greater sequence (the last one an earlier watch
        /// printed).
        #[arg(long, value_name = "SEQUENCE", conflicts_with = "initial")]
        after_sequence: Option<u64>,
        /// Exit after printing this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Wait until a task finishes and print its result (as `submit --wait`).
    ///
    /// Exits 0 when it succeeded, 1 when it ended dead-lettered, canceled or expired, 3 when
    /// --max-wait passed first.
    Wait {
        id: u64,
        /// Give up after this long (e.g. 30s, 5m); default: wait as long as it takes.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        max_wait: Option<Duration>,
        /// With --json, leave the payload out (it may be up to 1 MiB).
        #[arg(long)]
        no_payload: bool,
    },
    /// Cancel a task that has not finished. A running task's agent is told to stop.
    ///
    /// Exits 1 when the task had already finished (nothing changes).
    Cancel {
        id: u64,
        /// Why, at most 4096 bytes; shown with the task.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show a task's attempts: agent, fencing token, when, how long, how it ended.
    History { id: u64 },
    /// Hand work to other agents under the lease of the task you hold (a manager-worker tree).
    ///
    /// Run from a task's command under `conclave agent run` (which sets CONCLAVE_TASK_ID and
    /// CONCLAVE_FENCING_TOKEN). Each PAYLOAD becomes one task on QUEUE, a child of the task held:
    /// it is canceled when that task's lease ends (however it ends), has its deadline at the
    /// latest, and if it dead-letters it escalates (to --escalate-to's agents, else to you).
    /// Prints the new ids; with --wait, one JSON line per task as each finishes (escalation
    /// tasks included), and exits 1 if any did not succeed.
    #[command(override_usage = "conclave task delegate [OPTIONS] <QUEUE> <PAYLOAD>... [--wait]")]
    Delegate(Box<super::delegate::DelegateArgs>),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The queue (1..=128 bytes of A-Z a-z 0-9 . _ : / -). Queues need no declaration.
    pub queue: String,
    /// The payload; `-` reads stdin.
    pub payload: Option<String>,
    /// Read the payload from this file (`-`: stdin), byte for byte.
    #[arg(long, value_name = "PATH", conflicts_with = "payload")]
    pub payload_file: Option<PathBuf>,
    /// A capability the agent must have; repeat for several.
    #[arg(long = "capability", value_name = "NAME")]
    pub capabilities: Vec<String>,
    /// -1000..=1000; higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub priority: i32,
    /// Attempts before the task is dead-lettered (1..=100; default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: Option<u32>,
    /// Lease of each attempt (1s..=1h; default 30s); the agent may extend it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// First retry delay (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub backoff_initial: Option<Duration>,
    /// Longest retry delay (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub backoff_max: Option<Duration>,
    /// Growth of the retry delay per attempt, 1.0..=10.0 (default 2).
    #[arg(long, value_name = "FACTOR")]
    pub backoff_multiplier: Option<f64>,
    /// Up to this fraction of each delay is taken off at random, 0.0..=1.0 (default 0).
    #[arg(long, value_name = "FRACTION")]
    pub backoff_jitter: Option<f64>,
    /// When the task expires unless it has succeeded: a duration from now (10m), an RFC 3339
    /// time, or Unix milliseconds.
    #[arg(long, value_name = "WHEN")]
    pub deadline: Option<String>,
    /// Do not assign it before this long from now (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "not_before")]
    pub delay: Option<Duration>,
    /// Do not assign it before this time (as --deadline).
    #[arg(long, value_name = "WHEN")]
    pub not_before: Option<String>,
    /// A second submit with the same key (per queue, within 24 hours) returns the first task.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Carried through to the agent (CONCLAVE_CORRELATION_ID) and to events.
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// The parent task's id (informational; `task ls --parent` finds children).
    #[arg(long, value_name = "TASK_ID")]
    pub parent: Option<u64>,
    /// A label KEY=VALUE; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// A W3C trace context (00-<32 hex>-<16 hex>-<2 hex>) the task carries to its agent (the exec
    /// agent's command gets it as TRACEPARENT). Read from TRACEPARENT too, so a command run by an
    /// exec agent that submits tasks passes its trace on.
    #[arg(long, env = "TRACEPARENT", value_name = "TRACEPARENT")]
    pub traceparent: Option<String>,
    /// Hold the task until decision D is decided with OPTION (canceled otherwise).
    #[arg(long, value_name = "D=OPTION", value_parser = parse_gate)]
    pub requires: Option<DecisionGate>,
    /// The payload's content type, e.g. application/json.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Print only the task id (for scripts: `id=$(conclave task submit -q ...)`).
    #[arg(long, short = 'q', conflicts_with_all = ["wait", "json"])]
    pub quiet: bool,
    /// Wait for the task to finish and print its result.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 3); default: as long as it takes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub max_wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only tasks in this state (pending, delayed, blocked, assigned, retry_wait, succeeded,
    /// dead_lettered, canceled, expired); repeat for several.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    states: Vec<TaskState>,
    /// Only tasks with this label KEY=VALUE; repeat for several (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// Only children of this task.
    #[arg(long, value_name = "TASK_ID")]
    parent: Option<u64>,
    /// Return at most this many tasks (1..=1000), in one page.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
    /// Start after this task id.
    #[arg(long, value_name = "TASK_ID")]
    after: Option<u64>,
    /// Read the serving node's local state instead of confirming with a quorum; may be stale.
    #[arg(long)]
    serializable: bool,
}

pub async fn run(command: TaskCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        TaskCommand::Submit(args) => submit(&client, *args, json).await,
        TaskCommand::Delegate(args) => super::delegate::run(*args, globals).await,
        TaskCommand::Get {
            id,
            result,
            serializable,
            no_payload,
        } => {
            let read = client.get_task_with(id, consistency(serializable)).await;
            let read = not_found_is_failure(read, id)?;
            let task = &read.task;
            if result {
                if task.state() != TaskState::Succeeded {
                    return Err(CliError::failed(format!(
                        "task {id} has no result: it is {}",
                        state_text(task.state())
                    )));
                }
                return output::raw(&task.result);
            }
            if json {
                return output::json_document(&json!({
                    "header": header_json(&read.header),
                    "task": task_document(task, !no_payload),
                }));
            }
            print_task(task)
        }
        TaskCommand::Ls(args) => list(&client, args, json).await,
        TaskCommand::Watch {
            id,
            queue,
            initial,
            after_sequence,
            count,
        } => {
            let options = TaskWatchOptions {
                task_id: id.unwrap_or(0),
                queue: queue.unwrap_or_default(),
                initial_state: initial,
                after_sequence,
            };
            if count == Some(0) {
                return Ok(());
            }
            let mut stream = client.watch_tasks(options).await?;
            // Where a later run can resume from if no change is printed before it stops.
            if json {
                output::json_line(&json!({
                    "kind": event_kind_name(TaskEventKind::Started),
                    "sequence": stream.start_sequence(),
                }))?;
            } else {
                eprintln!("watching after sequence {}", stream.start_sequence());
            }
            let mut printed = 0u64;
            // With --json, a BOOKMARK line whenever the resume point moved without a printed
            // change (a quiet watch), so that the last sequence in the output is always where a
            // later run can resume with --after-sequence.
            let mut shown = stream.start_sequence();
            let mut check = tokio::time::interval(BOOKMARK_CHECK);
            loop {
                tokio::select! {
                    event = stream.next() => {
                        let Some(event) = event else { break };
                        let event = event?;
                        shown = shown.max(event.sequence);
                        print_event(&event, json)?;
                        printed += 1;
                        if count.is_some_and(|count| printed >= count) {
                            return Ok(());
                        }
                    }
                    _ = check.tick(), if json => {
                        let cursor = stream.cursor();
                        if cursor > shown {
                            shown = cursor;
                            output::json_line(&json!({
                                "kind": event_kind_name(TaskEventKind::Bookmark),
                                "sequence": cursor,
                            }))?;
                        }
                    }
                }
            }
            Err(CliError::failed("the watch ended"))
        }
        TaskCommand::Wait {
            id,
            max_wait,
            no_payload,
        } => {
            let json = json.then_some(!no_payload);
            wait_and_print(&client, id, max_wait, json).await
        }
        TaskCommand::Cancel { id, reason } => {
            let result = client.cancel_task(id, &reason).await;
            let result = not_found_is_failure(result, id)?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&result.header),
                    "canceled": result.canceled,
                    "previous_state": state_name(result.previous_state),
                }))?;
            } else if result.canceled {
                output::line(&format!(
                    "canceled task {id} (was {})",
                    state_text(result.previous_state)
                ))?;
            }
            if result.canceled {
                Ok(())
            } else {
                Err(CliError::failed(format!(
                    "task {id} had already finished ({}); nothing changed",
                    state_text(result.previous_state)
                )))
            }
        }
        TaskCommand::History { id } => {
            let read = not_found_is_failure(client.get_task(id).await, id)?;
            let task = &read.task;
            if json {
                return output::json_document(&json!({
                    "id": task.id,
                    "state": state_name(task.state()),
                    "attempts": task.attempts,
                    "history": task.history.iter().map(super::render::attempt_json).collect::<Vec<_>>(),
                }));
            }
            print_history(task)
        }
    }
}

async fn submit(client: &Client, args: SubmitArgs, json: bool) -> CliResult {
    let wait = args.wait;
    let quiet = args.quiet;
    let max_wait = args.max_wait;
    let traceparent = args.traceparent.clone();
    let spec = task_spec(args, unix_ms_now())?;
    let queue = spec.queue.clone();
    let idempotency_key = spec.idempotency_key.clone();
    let capabilities = spec.capabilities.clone();
    let submitted = client.submit_traced(spec, traceparent.as_deref()).await?;
    warn_if_nobody_can_run(client, &capabilities).await;
    let id = submitted.task_id;
    if wait {
        if submitted.existing {
            eprintln!("task {id} (queue {queue}) already existed (idempotency key {idempotency_key:?}); waiting for it");
        } else {
            eprintln!("submitted task {id} (queue {queue}); waiting for it");
        }
        return wait_and_print(client, id, max_wait, json.then_some(true)).await;
    }
    if json {
        return output::json_document(&json!({
            "header": header_json(&submitted.header),
            "task_id": id,
            "existing": submitted.existing,
        }));
    }
    if quiet {
        return output::line(&id.to_string());
    }
    if submitted.existing {
        output::line(&format!(
            "task {id} already exists (idempotency key {idempotency_key:?}); nothing new was submitted"
        ))
    } else {
        output::line(&format!("submitted task {id}"))
    }
}

/// Says on stderr, at once, when no live agent has every capability the task asks for: it then
/// waits (and `--wait` with it) until one registers. Best effort: a failed look is silent.
async fn warn_if_nobody_can_run(client: &Client, capabilities: &[String]) {
    let options = AgentListOptions {
        capability: capabilities.first().cloned().unwrap_or_default(),
        ..AgentListOptions::default()
    };
    let Ok(list) = client.list_agents(options).await else {
        return;
    };
    let able = list.agents.iter().any(|agent| {
        agent.status() == AgentStatus::Live
            && capabilities.iter().all(|c| agent.capabilities.contains(c))
    });
    if !able {
        let needed = if capabilities.is_empty() {
            "any agent".to_string()
        } else {
            format!("an agent with {}", capabilities.join(", "))
        };
        eprintln!(
            "warning: no live agent can run it: it waits for {needed} to register \
             (bound a wait with --max-wait)"
        );
    }
}

/// The spec the submit flags describe; times relative to `now_ms`.
pub fn task_spec(args: SubmitArgs, now_ms: u64) -> CliResult<TaskSpec> {
    let payload = read_payload(args.payload, args.payload_file)?;
    let backoff = if args.backoff_initial.is_some()
        || args.backoff_max.is_some()
        || args.backoff_multiplier.is_some()
        || args.backoff_jitter.is_some()
    {
        Some(Backoff {
            initial_ms: args.backoff_initial.map_or(0, |d| d.as_millis() as u64),
            maximum_ms: args.backoff_max.map_or(0, |d| d.as_millis() as u64),
            multiplier: args.backoff_multiplier.unwrap_or(0.0),
            jitter: args.backoff_jitter.unwrap_or(0.0),
        })
    } else {
        None
    };
    let when = |flag: &str, text: &Option<String>| -> CliResult<u64> {
        match text {
            None => Ok(0),
            Some(text) => parse_when(text, now_ms)
                .map_err(|error| CliError::usage(format!("--{flag}: {error}"))),
        }
    };
    let lease_ms = args.lease.map_or(0, |lease| lease.as_millis() as u64);
    if args.lease.is_some() && lease_ms == 0 {
        return Err(CliError::usage("--lease must be at least 1s"));
    }
    let not_before_unix_ms = match args.delay {
        Some(delay) => now_ms + delay.as_millis() as u64,
        None => when("not-before", &args.not_before)?,
    };
    Ok(TaskSpec {
        queue: args.queue,
        payload,
        content_type: args.content_type.unwrap_or_default(),
        capabilities: args.capabilities,
        priority: args.priority,
        max_attempts: args.max_attempts.unwrap_or(0),
        backoff,
        lease_ms,
        deadline_unix_ms: when("deadline", &args.deadline)?,
        not_before_unix_ms,
        idempotency_key: args.idempotency_key.unwrap_or_default(),
        correlation_id: args.correlation_id.unwrap_or_default(),
        parent_id: args.parent.unwrap_or(0),
        labels: args.labels.into_iter().collect(),
        requires: args.requires,
    })
}

/// Waits in WAIT_CHUNK requests until task `id` is terminal or `max_wait` (counted from
/// `started`) has passed; the last answer says which. An unknown task is a failure.
pub async fn wait_until_terminal(
    client: &Client,
    id: u64,
    started: tokio::time::Instant,
    max_wait: Option<Duration>,
) -> CliResult<WaitResult> {
    loop {
        let chunk = match max_wait {
            Some(max_wait) => max_wait.saturating_sub(started.elapsed()).min(WAIT_CHUNK),
            None => WAIT_CHUNK,
        };
        let waited = not_found_is_failure(client.wait_task(id, chunk).await, id)?;
        let out_of_time = max_wait.is_some_and(|max_wait| started.elapsed() >= max_wait);
        if waited.terminal || out_of_time {
            return Ok(waited);
        }
    }
}

/// Waits for the task to finish and prints it: the result for a success; exits 1 for another
/// end, 3 when `max_wait` passes first. `json`: print a JSON document instead, with the payload
/// (Some(true)) or without it (Some(false)).
pub async fn wait_and_print(
    client: &Client,
    id: u64,
    max_wait: Option<Duration>,
    json: Option<bool>,
) -> CliResult {
    let started = tokio::time::Instant::now();
    let waited = wait_until_terminal(client, id, started, max_wait).await?;
    let (header, task, terminal) = (waited.header, waited.task, waited.terminal);
    let state = task.state();
    if let Some(payload) = json {
        output::json_document(&json!({
            "header": header_json(&header),
            "task_id": id,
            "terminal": terminal,
            "state": state_name(state),
            "task": task_document(&task, payload),
        }))?;
    }
    if !terminal {
        return Err(CliError::unknown(format!(
            "task {id} has not finished after {}: it is {}",
            format_duration(started.elapsed()),
            state_text(state)
        )));
    }
    if state == TaskState::Succeeded {
        return if json.is_some() {
            Ok(())
        } else {
            output::raw(&task.result)
        };
    }
    Err(CliError::failed(ending(&task)))
}

/// A task as JSON, with or without its payload.
fn task_document(task: &Task, payload: bool) -> serde_json::Value {
    let mut value = task_json(task);
    if let Some(object) = value.as_object_mut().filter(|_| !payload) {
        object.retain(|key, _| !key.starts_with("payload"));
    }
    value
}

/// Why a finished task did not succeed, in one line.
pub fn ending(task: &Task) -> String {
    let id = task.id;
    let attempts = match task.attempts {
        1 => "1 attempt".to_string(),
        n => format!("{n} attempts"),
    };
    match task.state() {
        TaskState::DeadLettered => {
            let reason = match task.dead_letter_reason() {
                DeadLetterReason::Unspecified => String::new(),
                reason => format!(" ({})", reason_name(reason).replace('_', " ")),
            };
            // The error may hold several lines of a command's stderr; the CLI's error is one.
            let error = if task.last_error.is_empty() {
                String::new()
            } else {
                format!(": {}", clip(task.last_error.trim_end(), 1000))
            };
            format!("task {id} was dead-lettered{reason} after {attempts}{error}")
        }
        TaskState::Canceled => format!(
            "task {id} was canceled{}",
            if task.cancel_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", task.cancel_reason)
            }
        ),
        TaskState::Expired => format!("task {id} expired (its deadline passed) after {attempts}"),
        state => format!("task {id} is {}", state_text(state)),
    }
}

async fn list(client: &Client, args: ListArgs, json: bool) -> CliResult {
    let options = TaskListOptions {
        queue: args.queue.unwrap_or_default(),
        states: args.states,
        labels: args.labels.into_iter().collect(),
        parent_id: args.parent.unwrap_or(0),
        limit: args.limit.unwrap_or(0),
        after_id: args.after.unwrap_or(0),
        consistency: consistency(args.serializable),
        summary: true,
    };
    let (tasks, more, next_after_id) = if args.limit.is_some() {
        let page = client.list_tasks(options).await?;
        (page.tasks, page.more, page.next_after_id)
    } else {
        (client.list_all_tasks(options).await?, false, 0)
    };
    if json {
        // Listings leave payloads and results out (ListTasks `summary`): say so by omission
        // rather than with empty strings.
        let summaries: Vec<_> = tasks
            .iter()
            .map(|task| {
                let mut value = task_json(task);
                if let Some(object) = value.as_object_mut() {
                    object
                        .retain(|key, _| !key.starts_with("payload") && !key.starts_with("result"));
                }
                value
            })
            .collect();
        return output::json_document(&json!({
            "tasks": summaries,
            "count": tasks.len(),
            "more": more,
            "next_after_id": next_after_id,
        }));
    }
    output::line(&tasks_table(&tasks, unix_ms_now()))?;
    if more {
        eprintln!("(more tasks follow; continue with --after {next_after_id})");
    }
    Ok(())
}

/// The `task ls` table.
pub fn tasks_table(tasks: &[Task], now_ms: u64) -> String {
    let mut rows = vec![[
        "ID",
        "QUEUE",
        "STATE",
        "PRIO",
        "ATTEMPTS",
        "AGENT",
        "SUBMITTED",
        "UPDATED",
        "INFO",
    ]
    .map(String::from)
    .to_vec()];
    for task in tasks {
        let spec = task.spec.clone().unwrap_or_default();
        let max_attempts = match spec.max_attempts {
            0 => conclave_client::limits::DEFAULT_ATTEMPTS,
            n => n,
        };
        let agent = task
            .lease
            .as_ref()
            .map_or_else(|| "-".to_string(), |lease| lease.agent.clone());
        rows.push(vec![
            task.id.to_string(),
            spec.queue.clone(),
            state_text(task.state()),
            spec.priority.to_string(),
            format!("{}/{max_attempts}", task.attempts),
            agent,
            format_relative(task.submitted_unix_ms, now_ms),
            format_relative(task.updated_unix_ms, now_ms),
            clip(&info(task, now_ms), 60),
        ]);
    }
    output::table(&rows)
}

/// The most useful extra fact about a task, for the INFO column.
fn info(task: &Task, now_ms: u64) -> String {
    match task.state() {
        TaskState::Canceled if !task.cancel_reason.is_empty() => task.cancel_reason.clone(),
        TaskState::DeadLettered | TaskState::Expired | TaskState::RetryWait
            if !task.last_error.is_empty() =>
        {
            task.last_error.clone()
        }
        TaskState::Delayed | TaskState::RetryWait => {
            format!("ready {}", format_relative(task.ready_at_unix_ms, now_ms))
        }
        TaskState::Assigned => match &task.progress {
            Some(progress) if !progress.message.is_empty() || progress.percent > 0 => {
                format!("{}% {}", progress.percent, progress.message)
            }
            _ => task.lease.as_ref().map_or_else(String::new, |lease| {
                format!(
                    "lease ends {}",
                    format_relative(lease.deadline_unix_ms, now_ms)
                )
            }),
        },
        TaskState::Blocked => task
            .spec
            .as_ref()
            .and_then(|spec| spec.requires.as_ref())
            .map_or_else(String::new, |gate| {
                format!("waits for decision {} = {}", gate.decision_id, gate.option)
            }),
        _ => String::new(),
    }
}

fn print_task(task: &Task) -> CliResult {
    let now = unix_ms_now();
    let spec = task.spec.clone().unwrap_or_default();
    let when = |ms: u64| {
        if ms == 0 {
            "-".to_string()
        } else {
            format!("{} ({})", format_rfc3339(ms), format_relative(ms, now))
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |name: &str, value: String| rows.push(vec![name.to_string(), value]);
    row("task", format!("{}", task.id));
    row("state", state_text(task.state()));
    row("queue", spec.queue.clone());
    row(
        "payload",
        format!(
            "{} ({} bytes{})",
            bytes_cell(&spec.payload, 80),
            spec.payload.len(),
            if spec.content_type.is_empty() {
                String::new()
            } else {
                format!(", {}", spec.content_type)
            }
        ),
    );
    row("capabilities", list_text(&spec.capabilities));
    row("labels", labels_text(&spec.labels));
    row("priority", spec.priority.to_string());
    let max_attempts = match spec.max_attempts {
        0 => conclave_client::limits::DEFAULT_ATTEMPTS,
        n => n,
    };
    row("attempts", format!("{} of {max_attempts}", task.attempts));
    let lease_ms = match spec.lease_ms {
        0 => conclave_client::limits::DEFAULT_LEASE_MS,
        n => n,
    };
    row("lease", format_duration(Duration::from_millis(lease_ms)));
    row("submitted", when(task.submitted_unix_ms));
    row("updated", when(task.updated_unix_ms));
    if matches!(
        task.state(),
        TaskState::Pending | TaskState::Delayed | TaskState::RetryWait
    ) {
        row("ready at", when(task.ready_at_unix_ms));
    }
    if spec.deadline_unix_ms != 0 {
        row("deadline", when(spec.deadline_unix_ms));
    }
    if spec.not_before_unix_ms != 0 {
        row("not before", when(spec.not_before_unix_ms));
    }
    if !spec.idempotency_key.is_empty() {
        row("idempotency key", spec.idempotency_key.clone());
    }
    if !spec.correlation_id.is_empty() {
        row("correlation id", spec.correlation_id.clone());
    }
    if spec.parent_id != 0 {
        row("parent", spec.parent_id.to_string());
    }
    if let Some(delegation) = &task.delegation {
        row("delegated", delegation_text(delegation));
    }
    if let Some(origin) = &task.origin {
        let step = if origin.step_name.is_empty() {
            format!("step #{}", origin.step)
        } else {
            format!("step {}", origin.step_name)
        };
        row(
            "workflow",
            format!("{} {step}, branch {}", origin.workflow_id, origin.branch),
        );
    }
    if let Some(gate) = &spec.requires {
        row(
            "requires",
            format!("decision {} = {}", gate.decision_id, gate.option),
        );
    }
    if let Some(lease) = &task.lease {
        row(
            "held by",
            format!(
                "{} (session {}), attempt {}, fencing token {}, lease ends {}",
                lease.agent,
                lease.session_id,
                lease.attempt,
                lease.fencing_token,
                format_relative(lease.deadline_unix_ms, now)
            ),
        );
    }
    if let Some(progress) = &task.progress {
        let mut text = format!("{}%", progress.percent);
        if !progress.message.is_empty() {
            text.push_str(&format!(" {}", progress.message));
        }
        if !progress.checkpoint.is_empty() {
            text.push_str(&format!(" (checkpoint {})", progress.checkpoint));
        }
        text.push_str(&format!(
            ", {}",
            format_relative(progress.updated_unix_ms, now)
        ));
        row("progress", text);
    }
    if task.state() == TaskState::Succeeded {
        row(
            "result",
            format!(
                "{} ({} bytes)",
                bytes_cell(&task.result, 80),
                task.result.len()
            ),
        );
    }
    if !task.last_error.is_empty() {
        row("last error", clip(&task.last_error, 200));
    }
    if task.dead_letter_reason() != DeadLetterReason::Unspecified {
        row(
            "dead letter",
            reason_name(task.dead_letter_reason()).replace('_', " "),
        );
    }
    if !task.cancel_reason.is_empty() {
        row("cancel reason", task.cancel_reason.clone());
    }
    output::line(&output::table(&rows))?;
    if !task.history.is_empty() {
        output::line("")?;
        print_history(task)?;
    }
    Ok(())
}

fn print_history(task: &Task) -> CliResult {
    let now = unix_ms_now();
    let mut rows = vec![[
        "ATTEMPT", "AGENT", "TOKEN", "ASSIGNED", "DURATION", "OUTCOME", "ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for attempt in &task.history {
        let duration = if attempt.ended_unix_ms == 0 {
            format!(
                "{} so far",
                format_duration(Duration::from_millis(
                    now.saturating_sub(attempt.assigned_unix_ms)
                ))
            )
        } else {
            format_duration(Duration::from_millis(
                attempt
                    .ended_unix_ms
                    .saturating_sub(attempt.assigned_unix_ms),
            ))
        };
        rows.push(vec![
            attempt.attempt.to_string(),
            attempt.agent.clone(),
            attempt.fencing_token.to_string(),
            format_relative(attempt.assigned_unix_ms, now),
            duration,
            outcome_name(attempt.outcome()).to_ascii_uppercase(),
            if attempt.error.is_empty() {
                "-".to_string()
            } else {
                clip(&attempt.error, 80)
            },
        ]);
    }
    if task.history.is_empty() {
        return output::line(&format!("task {} has not been assigned yet", task.id));
    }
    output::line(&output::table(&rows))
}

fn print_event(event: &TaskEvent, json: bool) -> CliResult {
    let task = event.task.clone().unwrap_or_default();
    if json {
        return output::json_line(&json!({
            "sequence": event.sequence,
            "kind": event_kind_name(event.kind()),
            "task": task_json(&task),
        }));
    }
    let mut line = format!(
        "{} {} task {} {}",
        event.sequence,
        event_kind_name(event.kind()).to_ascii_uppercase(),
        task.id,
        state_text(task.state())
    );
    if let Some(queue) = task.spec.as_ref().map(|spec| &spec.queue) {
        line.push_str(&format!(" queue={queue}"));
    }
    line.push_str(&format!(" attempts={}", task.attempts));
    if let Some(lease) = &task.lease {
        line.push_str(&format!(
            " agent={} token={}",
            lease.agent, lease.fencing_token
        ));
    }
    if is_terminal(task.state()) || task.state() == TaskState::RetryWait {
        let detail = match task.state() {
            TaskState::Canceled => task.cancel_reason.clone(),
            TaskState::Succeeded => String::new(),
            _ => task.last_error.clone(),
        };
        if !detail.is_empty() {
            line.push_str(&format!(" ({})", clip(&detail, 120)));
        }
    }
    output::line(&line)
}

/// A NOT_FOUND answer as the CLI says it: exit 1, naming the task.
/// "by task 7 (token 12), depth 1; escalated to task 9".
fn delegation_text(delegation: &Delegation) -> String {
    let mut text = format!(
        "by task {} (token {}), depth {}",
        delegation.parent_task_id, delegation.fencing_token, delegation.depth
    );
    let to = match delegation.escalation() {
        EscalationKind::Unspecified => None,
        EscalationKind::Manager => Some("its manager".to_string()),
        EscalationKind::Task => Some(format!("task {}", delegation.escalation_task_id)),
        EscalationKind::Orphaned => Some("nobody (its manager's lease had ended)".to_string()),
    };
    match to {
        Some(to) => text.push_str(&format!("; escalated to {to}")),
        None if !delegation.escalate_to.is_empty() => {
            text.push_str(&format!("; escalates to {}", delegation.escalate_to));
        }
        None => {}
    }
    text
}

fn not_found_is_failure<T>(result: conclave_client::Result<T>, id: u64) -> CliResult<T> {
    match result {
        Err(error) if error.is_not_found() => Err(CliError::failed(format!("task {id} not found"))),
        other => Ok(other?),
    }
}

fn consistency(serializable: bool) -> ReadConsistency {
    if serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    }
}

/// Parses `D=OPTION`.
fn parse_gate(text: &str) -> Result<DecisionGate, String> {
    let (id, option) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected DECISION_ID=OPTION"))?;
    let decision_id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {id:?} is not a decision id"))?;
    if decision_id == 0 || option.is_empty() {
        return Err(format!("{text:?}: expected DECISION_ID=OPTION"));
    }
    Ok(DecisionGate {
        decision_id,
        option: option.to_string(),
    })
}

/// The payload: the argument, a file, stdin for `-`, or nothing.
fn read_payload(payload: Option<String>, file: Option<PathBuf>) -> CliResult<Vec<u8>> {
    let read_stdin = || {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|error| CliError::failed(format!("reading stdin: {error}")))?;
        Ok(bytes)
    };
    match (payload, file) {
        (Some(payload), None) if payload == "-" => read_stdin(),
        (Some(payload), None) => Ok(payload.into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => read_stdin(),
        (None, Some(path)) => std::fs::read(&path)
            .map_err(|error| CliError::usage(format!("reading {}: {error}", path.display()))),
        (None, None) => Ok(Vec::new()),
        (Some(_), Some(_)) => Err(CliError::usage(
            "give either PAYLOAD or --payload-file, not both",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn submit_args(args: &[&str]) -> SubmitArgs {
        let mut line = vec!["conclave", "task", "submit"];
        line.extend_from_slice(args);
        match Cli::try_parse_from(line).expect("parses").command {
            Command::Task(TaskCommand::Submit(args)) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn submit_flags_make_a_spec() {
        let now = 1_700_000_000_000;
        let args = submit_args(&[
            "research",
            "the topic",
            "--capability",
            "search",
            "--capability",
            "web",
            "--priority",
            "-5",
            "--max-attempts",
            "5",
            "--lease",
            "2m",
            "--backoff-initial",
            "500ms",
            "--backoff-max",
            "10s",
            "--backoff-multiplier",
            "3",
            "--deadline",
            "10m",
            "--delay",
            "30s",
            "--idempotency-key",
            "k1",
            "--correlation-id",
            "c1",
            "--parent",
            "9",
            "--label",
            "team=a",
            "--label",
            "x=y",
            "--requires",
            "4=yes",
            "--content-type",
            "text/plain",
        ]);
        let spec = task_spec(args, now).expect("valid");
        assert_eq!(spec.queue, "research");
        assert_eq!(spec.payload, b"the topic");
        assert_eq!(spec.capabilities, ["search", "web"]);
        assert_eq!(spec.priority, -5);
        assert_eq!(spec.max_attempts, 5);
        assert_eq!(spec.lease_ms, 120_000);
        let backoff = spec.backoff.expect("backoff given");
        assert_eq!((backoff.initial_ms, backoff.maximum_ms), (500, 10_000));
        assert_eq!(backoff.multiplier, 3.0);
        assert_eq!(spec.deadline_unix_ms, now + 600_000);
        assert_eq!(spec.not_before_unix_ms, now + 30_000);
        assert_eq!(spec.idempotency_key, "k1");
        assert_eq!(spec.correlation_id, "c1");
        assert_eq!(spec.parent_id, 9);
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(spec.labels.len(), 2);
        let gate = spec.requires.expect("gate given");
        assert_eq!((gate.decision_id, gate.option.as_str()), (4, "yes"));
        assert_eq!(spec.content_type, "text/plain");
    }

    #[test]
    fn submit_defaults_leave_the_server_defaults() {
        let spec = task_spec(submit_args(&["q"]), 5).expect("valid");
        assert!(spec.payload.is_empty());
        assert_eq!((spec.max_attempts, spec.lease_ms, spec.priority), (0, 0, 0));
        assert!(spec.backoff.is_none());
        assert_eq!((spec.deadline_unix_ms, spec.not_before_unix_ms), (0, 0));
        let spec = task_spec(
            submit_args(&["q", "--not-before", "2023-11-14T22:13:20Z"]),
            5,
        )
        .expect("valid");
        assert_eq!(spec.not_before_unix_ms, 1_700_000_000_000);
    }

    #[test]
    fn bad_submit_flags_are_usage_errors() {
        let bad = [
            vec!["q", "--priority", "1001"],
            vec!["q", "--max-attempts", "0"],
            vec!["q", "--lease", "30"],
            vec!["q", "--delay", "1s", "--not-before", "5m"],
            vec!["q", "p", "--payload-file", "f"],
            vec!["q", "--max-wait", "5s"],
            vec!["q", "--requires", "yes"],
            vec!["q", "--label", "novalue"],
        ];
        for args in bad {
            let mut line = vec!["conclave", "task", "submit"];
            line.extend_from_slice(&args);
            assert!(
                Cli::try_parse_from(&line).is_err(),
                "{args:?} should be refused"
            );
        }
        let spec = task_spec(submit_args(&["q", "--deadline", "soon"]), 5);
        assert!(matches!(
            spec,
            Err(CliError {
                exit: super::super::Exit::Usage,
                ..
            })
        ));
    }

    #[test]
    fn the_table_shows_one_row_per_task() {
        let now = 1_700_000_010_000;
        let tasks = vec![
            Task {
                id: 1,
                spec: Some(TaskSpec {
                    queue: "research".into(),
                    ..TaskSpec::default()
                }),
                state: TaskState::DeadLettered.into(),
                attempts: 3,
                submitted_unix_ms: now - 5_000,
                updated_unix_ms: now - 1_000,
                last_error: "exit 2: boom".into(),
                ..Task::default()
            },
            Task {
                id: 2,
                spec: Some(TaskSpec {
                    queue: "edit".into(),
                    max_attempts: 5,
                    ..TaskSpec::default()
                }),
                state: TaskState::Assigned.into(),
                attempts: 1,
                lease: Some(conclave_client::Lease {
                    agent: "editor".into(),
                    deadline_unix_ms: now + 20_000,
                    ..Default::default()
                }),
                ..Task::default()
            },
        ];
        let table = tasks_table(&tasks, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  QUEUE"));
        assert!(lines[1].contains("DEAD_LETTERED") && lines[1].contains("3/3"));
        assert!(lines[1].contains("exit 2: boom") && lines[1].contains("5s ago"));
        assert!(lines[2].contains("editor") && lines[2].contains("1/5"));
        assert!(lines[2].contains("lease ends in 20s"));
    }

    #[test]
    fn endings_say_why() {
        let task = Task {
            id: 4,
            state: TaskState::DeadLettered.into(),
            dead_letter_reason: DeadLetterReason::NotRetryable.into(),
            attempts: 1,
            last_error: "exit 3: line 1\nbad input\n".into(),
            ..Task::default()
        };
        assert_eq!(
            ending(&task),
            "task 4 was dead-lettered (not retryable) after 1 attempt: exit 3: line 1 bad input"
        );
        let canceled = Task {
            id: 5,
            state: TaskState::Canceled.into(),
            cancel_reason: "no longer needed".into(),
            ..Task::default()
        };
        assert_eq!(ending(&canceled), "task 5 was canceled: no longer needed");
    }
}
