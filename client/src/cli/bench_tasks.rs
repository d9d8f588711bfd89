//! `conclave bench tasks`: in-process agents that complete every task at once, a submitter, and
//! the end-to-end numbers: throughput from first submit to last completion, and the latency of
//! each step as this process sees it (one monotonic clock, so no clock skew enters).
//!
//! Per task it records when the submit was acknowledged, when the assignment arrived at an agent,
//! and when the completion was acknowledged. submit->assign is the assignment's arrival minus the
//! submit's acknowledgement (an assignment can arrive before its batch's acknowledgement; those
//! count as 0 and are reported); assign->complete is the completion's acknowledgement minus the
//! assignment's arrival.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use conclave_client::{
    AgentConfig, AgentEvent, AgentSession, Client, ClientOptions, Error, TaskListOptions, TaskSpec,
    TaskState,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::when::{format_duration, parse_duration};
use super::{output, CliError, CliResult, Globals};

#[derive(Debug, Args)]
pub struct BenchTasks {
    /// In-process agents, each with its own session.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    agents: u32,
    /// Tasks each agent may hold at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Tasks to submit.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    tasks: u64,
    /// Bytes of payload per task.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    payload_size: u32,
    /// The queue (default: a fresh `bench-<random>`); agents get a capability of the same name,
    /// so that no other agent takes the tasks.
    #[arg(long)]
    queue: Option<String>,
    /// How tasks are submitted: SubmitBatch requests, or one Submit per task.
    #[arg(long, value_enum, default_value_t = SubmitMode::Batch)]
    submit: SubmitMode,
    /// Tasks per SubmitBatch (1..=1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch_size: u32,
    /// Submit requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    submitters: u32,
    /// Idle agents: submit one task, wait for its completion, then the next. Measures the
    /// submit-to-assign latency of an idle fleet rather than throughput.
    #[arg(long)]
    idle: bool,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    max_duration: Duration,
    /// HTTP/2 connections per node.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SubmitMode {
    /// SubmitBatch with --batch-size tasks.
    Batch,
    /// One Submit per task.
    Single,
}

/// What happened to one task, on this process's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    sent: Option<Instant>,
    acked: Option<Instant>,
    assigned: Option<Instant>,
    completed: Option<Instant>,
}

#[derive(Debug, Default)]
struct Ledger {
    tasks: Mutex<HashMap<u64, Times>>,
    submit_errors: AtomicU64,
    complete_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Ledger {
    fn update(&self, task_id: u64, change: impl FnOnce(&mut Times)) {
        let mut tasks = self.tasks.lock().expect("ledger poisoned");
        change(tasks.entry(task_id).or_default());
    }

    fn error(&self, counter: &AtomicU64, error: &Error) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .expect("ledger poisoned")
            .get_or_insert_with(|| error.to_string());
    }
}

pub async fn run(args: BenchTasks, globals: &Globals) -> CliResult {
    let options = ClientOptions {
        channels_per_endpoint: args.connections as usize,
        ..globals.client_options()
    };
    let client = Client::connect_with(&globals.endpoints, options)?;
    let leader = client.find_leader().await?;
    tracing::info!(leader = leader.node_id, "sending to the leader");
    let tag = format!("bench-{:08x}", rand::random::<u32>());
    let queue = args.queue.clone().unwrap_or_else(|| tag.clone());
    let capability = tag.clone();
    let ledger = Arc::new(Ledger::default());
    let (completions, mut completed) = mpsc::unbounded_channel::<u64>();

    let mut sessions = Vec::new();
    for index in 0..args.agents {
        let mut config = AgentConfig::new(format!("{tag}-{index}"));
        config.capabilities = vec![capability.clone()];
        config.max_concurrent = args.concurrency;
        config.replace = true;
        let (session, mut events) = AgentSession::register(&client, &config).await?;
        sessions.push(session.clone());
        let ledger = Arc::clone(&ledger);
        let completions = completions.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let AgentEvent::Assignment(assignment) = event else {
                    continue;
                };
                ledger.update(assignment.task_id, |times| {
                    times.assigned.get_or_insert(Instant::now());
                });
                let session = session.clone();
                let ledger = Arc::clone(&ledger);
                let completions = completions.clone();
                tokio::spawn(async move {
                    let task_id = assignment.task_id;
                    match session
                        .complete(task_id, assignment.fencing_token, Vec::new())
                        .await
                    {
                        Ok(_) => {
                            ledger.update(task_id, |times| times.completed = Some(Instant::now()));
                            let _ = completions.send(task_id);
                        }
                        Err(error) => ledger.error(&ledger.complete_errors, &error),
                    }
                });
            }
        });
    }
    drop(completions);

    let payload = vec![b'x'; args.payload_size as usize];
    let spec = TaskSpec {
        queue: queue.clone(),
        payload,
        capabilities: vec![capability.clone()],
        ..TaskSpec::default()
    };
    let started = Instant::now();
    let give_up = started + args.max_duration;
    let mut done = 0u64;
    let submitted;
    let submit_elapsed;
    if args.idle {
        let mut count = 0;
        for _ in 0..args.tasks {
            if Instant::now() >= give_up {
                break;
            }
            let sent = Instant::now();
            match client.submit(spec.clone()).await {
                Ok(result) => {
                    count += 1;
                    ledger.update(result.task_id, |times| {
                        times.sent = Some(sent);
                        times.acked = Some(Instant::now());
                    });
                    // Wait for this one's completion before the next.
                    while let Ok(Some(task_id)) =
                        tokio::time::timeout_at(give_up, completed.recv()).await
                    {
                        done += 1;
                        if task_id == result.task_id {
                            break;
                        }
                    }
                }
                Err(error) => ledger.error(&ledger.submit_errors, &error),
            }
        }
        submitted = count;
        submit_elapsed = started.elapsed();
    } else {
        let (count, elapsed) = submit_all(&client, &args, &spec, &ledger).await;
        submitted = count;
        submit_elapsed = elapsed;
        while done < submitted {
            match tokio::time::timeout_at(give_up, completed.recv()).await {
                Ok(Some(_)) => done += 1,
                _ => break,
            }
        }
    }
    let elapsed = started.elapsed();

    for session in &sessions {
        if let Err(error) = session.close().await {
            tracing::warn!(%error, "closing a bench session");
        }
    }
    if done < submitted {
        cancel_leftovers(&client, &queue).await;
    }
    let report = Report::new(&args, &ledger, submitted, done, submit_elapsed, elapsed);
    report.print(&args, &queue, globals.json)?;
    if done == 0 {
        return Err(CliError::failed(format!(
            "no task completed{}",
            report
                .first_error
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// Submits every task with `args.submitters` requests in flight; returns how many were
/// acknowledged and how long it took.
async fn submit_all(
    client: &Client,
    args: &BenchTasks,
    spec: &TaskSpec,
    ledger: &Arc<Ledger>,
) -> (u64, Duration) {
    let per_request = match args.submit {
        SubmitMode::Batch => u64::from(args.batch_size),
        SubmitMode::Single => 1,
    };
    let requests = args.tasks.div_ceil(per_request);
    let next = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.submitters)
        .map(|_| {
            let client = client.clone();
            let spec = spec.clone();
            let ledger = Arc::clone(ledger);
            let next = Arc::clone(&next);
            let acknowledged = Arc::clone(&acknowledged);
            let total = args.tasks;
            let mode = args.submit;
            tokio::spawn(async move {
                loop {
                    let request = next.fetch_add(1, Ordering::Relaxed);
                    if request >= requests {
                        return;
                    }
                    let count = per_request.min(total - request * per_request);
                    let sent = Instant::now();
                    let ids = match mode {
                        SubmitMode::Single => client
                            .submit(spec.clone())
                            .await
                            .map(|result| vec![result.task_id]),
                        SubmitMode::Batch => client
                            .submit_batch(vec![spec.clone(); count as usize])
                            .await
                            .map(|result| result.results.iter().map(|r| r.task_id).collect()),
                    };
                    let acked = Instant::now();
                    match ids {
                        Ok(ids) => {
                            acknowledged.fetch_add(ids.len() as u64, Ordering::Relaxed);
                            for id in ids {
                                ledger.update(id, |times| {
                                    times.sent = Some(sent);
                                    times.acked = Some(acked);
                                });
                            }
                        }
                        Err(error) => ledger.error(&ledger.submit_errors, &error),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    (acknowledged.load(Ordering::Relaxed), started.elapsed())
}

/// Cancels what the run left unfinished in its queue, so no task waits for agents that are gone.
async fn cancel_leftovers(client: &Client, queue: &str) {
    let options = TaskListOptions {
        queue: queue.to_string(),
        states: vec![
            TaskState::Pending,
            TaskState::Assigned,
            TaskState::RetryWait,
            TaskState::Delayed,
        ],
        summary: true,
        ..TaskListOptions::default()
    };
    match client.list_all_tasks(options).await {
        Ok(tasks) => {
            for task in tasks {
                let _ = client.cancel_task(task.id, "bench run ended").await;
            }
        }
        Err(error) => tracing::warn!(%error, "listing the tasks left behind"),
    }
}

struct Report {
    submitted: u64,
    completed: u64,
    submit_elapsed: Duration,
    elapsed: Duration,
    submit_to_assign_us: Histogram,
    send_to_assign_us: Histogram,
    assign_to_complete_us: Histogram,
    assigned_before_ack: u64,
    submit_errors: u64,
    complete_errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn new(
        _args: &BenchTasks,
        ledger: &Ledger,
        submitted: u64,
        completed: u64,
        submit_elapsed: Duration,
        elapsed: Duration,
    ) -> Report {
        let mut report = Report {
            submitted,
            completed,
            submit_elapsed,
            elapsed,
            submit_to_assign_us: Histogram::default(),
            send_to_assign_us: Histogram::default(),
            assign_to_complete_us: Histogram::default(),
            assigned_before_ack: 0,
            submit_errors: ledger.submit_errors.load(Ordering::Relaxed),
            complete_errors: ledger.complete_errors.load(Ordering::Relaxed),
            first_error: ledger.first_error.lock().expect("ledger poisoned").clone(),
        };
        let micros =
            |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
        for times in ledger.tasks.lock().expect("ledger poisoned").values() {
            if let (Some(acked), Some(assigned)) = (times.acked, times.assigned) {
                if assigned < acked {
                    report.assigned_before_ack += 1;
                }
                report.submit_to_assign_us.record(micros(acked, assigned));
            }
            if let (Some(sent), Some(assigned)) = (times.sent, times.assigned) {
                report.send_to_assign_us.record(micros(sent, assigned));
            }
            if let (Some(assigned), Some(completed)) = (times.assigned, times.completed) {
                report
                    .assign_to_complete_us
                    .record(micros(assigned, completed));
            }
        }
        report
    }

    fn print(&self, args: &BenchTasks, queue: &str, json: bool) -> CliResult {
        let rate = |count: u64, elapsed: Duration| count as f64 / elapsed.as_secs_f64().max(1e-9);
        let throughput = rate(self.completed, self.elapsed);
        let quantiles = |histogram: &Histogram| {
            json!({
                "count": histogram.count(),
                "p50": histogram.quantile(0.50),
                "p90": histogram.quantile(0.90),
                "p99": histogram.quantile(0.99),
                "max": histogram.max(),
            })
        };
        let mode = if args.idle {
            "idle".to_string()
        } else {
            match args.submit {
                SubmitMode::Batch => format!("batch of {}", args.batch_size),
                SubmitMode::Single => "single".to_string(),
            }
        };
        if json {
            return output::json_document(&json!({
                "agents": args.agents,
                "concurrency": args.concurrency,
                "tasks": args.tasks,
                "payload_size": args.payload_size,
                "queue": queue,
                "submit": mode,
                "submitters": if args.idle { 1 } else { args.submitters },
                "submitted": self.submitted,
                "completed": self.completed,
                "submit_s": self.submit_elapsed.as_secs_f64(),
                "elapsed_s": self.elapsed.as_secs_f64(),
                "submit_throughput_per_s": rate(self.submitted, self.submit_elapsed),
                "throughput_tasks_per_s": throughput,
                "submit_to_assign_us": quantiles(&self.submit_to_assign_us),
                "send_to_assign_us": quantiles(&self.send_to_assign_us),
                "assign_to_complete_us": quantiles(&self.assign_to_complete_us),
                "assigned_before_ack": self.assigned_before_ack,
                "errors": {
                    "submit": self.submit_errors,
                    "complete": self.complete_errors,
                    "first": self.first_error,
                },
            }));
        }
        let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
        let line = |histogram: &Histogram| {
            format!(
                "p50 {}  p90 {}  p99 {}  max {}  (n={})",
                ms(histogram.quantile(0.50)),
                ms(histogram.quantile(0.90)),
                ms(histogram.quantile(0.99)),
                ms(histogram.max()),
                histogram.count()
            )
        };
        output::line(&format!(
            "bench tasks: agents={} concurrency={} tasks={} payload={}B submit={mode}{} queue={queue}",
            args.agents,
            args.concurrency,
            args.tasks,
            args.payload_size,
            if args.idle {
                String::new()
            } else {
                format!(" submitters={}", args.submitters)
            },
        ))?;
        output::line(&format!(
            "submitted        {} in {} ({:.0}/s)",
            self.submitted,
            format_duration(self.submit_elapsed),
            rate(self.submitted, self.submit_elapsed)
        ))?;
        output::line(&format!(
            "completed        {} in {} end to end ({throughput:.0} tasks/s)",
            self.completed,
            format_duration(self.elapsed)
        ))?;
        output::line(&format!(
            "submit->assign   {}",
            line(&self.submit_to_assign_us)
        ))?;
        if self.assigned_before_ack > 0 {
            output::line(&format!(
                "                 ({} assignments arrived before their submit was acknowledged; counted as 0)",
                self.assigned_before_ack
            ))?;
        }
        output::line(&format!(
            "send->assign     {}",
            line(&self.send_to_assign_us)
        ))?;
        output::line(&format!(
            "assign->complete {}",
            line(&self.assign_to_complete_us)
        ))?;
        output::line(&format!(
            "errors           {} submit, {} complete",
            self.submit_errors, self.complete_errors
        ))?;
        if let Some(error) = &self.first_error {
            output::line(&format!("first error      {error}"))?;
        }
        Ok(())
    }
}
