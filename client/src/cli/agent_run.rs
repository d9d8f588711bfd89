//! `conclave agent run`: the exec agent. Every assigned task runs a command with the payload on
//! stdin; the command's exit status decides the verb (exit 0 completes, exit 75 fails retryably,
//! anything else fails for good) and its stdout is the result.
//!
//! One tokio task per assignment runs the command and reports the outcome; the agent's loop
//! hands out assignments, forwards cancellations and lost leases to the tasks they concern, and
//! handles shutdown. Commands run in their own process group so that stopping one stops whatever
//! it started; signals go to that group by id, never by name. A command also dies with the agent:
//! an agent killed outright leaves no command working on a task that will go to another agent.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use conclave_client::{
    limits::MAX_PAYLOAD_BYTES, unix_ms_now, AgentConfig, AgentEvent, AgentEvents, AgentSession,
    Assignment, Error, Failure, TaskState, VerbResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::process_group::{die_with_agent, signal_group, SIGKILL, SIGTERM};
use super::render::{clip, parse_key_value};
use super::when::{format_duration, format_rfc3339, parse_duration};
use super::{CliError, CliResult, Globals};

/// The exit status that fails a task retryably (EX_TEMPFAIL in sysexits.h).
pub const EXIT_RETRYABLE: i32 = 75;
/// The largest result, and so the most stdout kept: the wire contract's payload limit.
const RESULT_MAX_BYTES: usize = MAX_PAYLOAD_BYTES;
/// The error of a failed task ends with at most this much of the command's stderr; the wire
/// contract allows 4096 bytes of error in all.
const ERROR_MAX_BYTES: usize = conclave_client::limits::MAX_MESSAGE_BYTES;
/// How long the output pipes may stay open after the command exits (a background process it left
/// behind still holds them) before the rest of its process group is killed.
const PIPE_DRAIN: Duration = Duration::from_secs(1);
/// Shortest interval between lease extensions.
const EXTEND_MIN: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent's name (1..=128 bytes of A-Z a-z 0-9 . _ : / -).
    #[arg(long)]
    pub name: String,
    /// A capability this agent offers; repeat for several.
    #[arg(long = "capability", value_name = "NAME")]
    pub capabilities: Vec<String>,
    /// Tasks run at once (1..=1024).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Session time-to-live (1s..=5m; default 10s); heartbeats go every third of it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Lease length asked for at each extension (default: the task's own lease).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// A label KEY=VALUE; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// On SIGINT/SIGTERM, how long running commands may go on before they are stopped and their
    /// tasks released.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How long a command has between SIGTERM and SIGKILL when it must stop.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// Fail instead of replacing a live session of the same name.
    #[arg(long)]
    pub no_replace: bool,
    /// Consecutive failures that quarantine the agent (default 5).
    #[arg(long, value_name = "N")]
    pub breaker_failures: Option<u32>,
    /// How long the quarantine lasts (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub breaker_cooldown: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// What every task's run needs to know.
#[derive(Debug)]
struct Settings {
    name: String,
    command: Vec<OsString>,
    lease: Option<Duration>,
    kill_grace: Duration,
    endpoints: String,
}

pub async fn run(args: RunArgs, globals: &Globals) -> CliResult {
    let program = args.command.first().expect("clap requires a command");
    find_program(Path::new(program)).map_err(CliError::usage)?;
    let client = globals.client()?;
    let settings = Arc::new(Settings {
        name: args.name.clone(),
        command: args.command.clone(),
        lease: args.lease,
        kill_grace: args.kill_grace,
        endpoints: client.endpoints().join(","),
    });
    let mut config = AgentConfig::new(&args.name);
    config.capabilities = args.capabilities.clone();
    config.labels = args.labels.iter().cloned().collect();
    config.max_concurrent = args.concurrency;
    config.ttl = args.ttl.unwrap_or(Duration::ZERO);
    config.replace = !args.no_replace;
    config.breaker_failures = args.breaker_failures.unwrap_or(0);
    config.breaker_cooldown = args.breaker_cooldown.unwrap_or(Duration::ZERO);
    config.metadata.insert(
        "command".to_string(),
        clip(
            &args
                .command
                .iter()
                .map(|part| part.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            1000,
        ),
    );
    let mut signals = Signals::new()?;
    let mut first = true;
    loop {
        let (session, events) = match AgentSession::register(&client, &config).await {
            Ok(registered) => registered,
            Err(error) if first => return Err(error.into()),
            Err(error) => {
                log(
                    &settings.name,
                    &format!("registering again failed: {error}; retrying"),
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = signals.recv() => return Ok(()),
                }
            }
        };
        first = false;
        log(
            &settings.name,
            &format!(
                "registered: session {}, ttl {}, capabilities [{}], concurrency {}",
                session.session_id(),
                format_duration(session.ttl()),
                args.capabilities.join(", "),
                args.concurrency
            ),
        );
        let agent = Agent {
            session: session.clone(),
            settings: Arc::clone(&settings),
            shutdown_grace: args.shutdown_grace,
        };
        match agent.serve(events, &mut signals).await {
            Served::Shutdown => {
                match session.close().await {
                    Ok(closed) => log(
                        &settings.name,
                        &format!("session closed ({} leases released)", closed.released),
                    ),
                    Err(error) => log(&settings.name, &format!("closing the session: {error}")),
                }
                return Ok(());
            }
            Served::SessionEnded(reason) => {
                log(
                    &settings.name,
                    &format!("the session ended ({reason}); registering again"),
                );
            }
        }
    }
}

/// How [`Agent::serve`] ended.
enum Served {
    /// A signal asked the agent to stop; every task has been settled.
    Shutdown,
    /// The cluster ended the session; running commands have been stopped.
    SessionEnded(String),
}

/// Why a running command must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopReason {
    Canceled(String),
    LeaseLost(String),
    /// The agent is shutting down: stop; closing the session releases the task.
    Shutdown,
    /// The session is gone, and with it the lease.
    SessionGone,
}

struct Running {
    stop: watch::Sender<Option<StopReason>>,
}

struct Agent {
    session: AgentSession,
    settings: Arc<Settings>,
    shutdown_grace: Duration,
}

impl Agent {
    async fn serve(&self, mut events: AgentEvents, signals: &mut Signals) -> Served {
        let mut running: HashMap<u64, Running> = HashMap::new();
        let mut workers: JoinSet<u64> = JoinSet::new();
        // Set on the first signal: when running commands must be stopped.
        let mut shutdown_at: Option<Instant> = None;
        let mut stopping_all = false;
        let mut connected_once = false;
        // Lease extensions of assignments received while shutting down, never started.
        let mut held: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        loop {
            if shutdown_at.is_some() && workers.is_empty() {
                for extension in held {
                    extension.abort();
                }
                return Served::Shutdown;
            }
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else {
                        self.stop_all(&running, StopReason::SessionGone);
                        self.settle_all(&mut workers).await;
                        return Served::SessionEnded("the session stream stopped".to_string());
                    };
                    match event {
                        AgentEvent::Assignment(assignment) => {
                            let task_id = assignment.task_id;
                            // No check against --concurrency here: the cluster assigns at most
                            // max_concurrent leases, and it frees a slot when it applies a
                            // completion, which can be before this loop has seen the runner end.
                            if shutdown_at.is_some() {
                                // Releasing it now would only have the scheduler hand it straight
                                // back to this still-live agent. Holding it (lease extended) takes
                                // the slot; closing the session releases it without counting.
                                log(&self.settings.name, &format!(
                                    "task {task_id}: not started (shutting down); the session's close releases it"));
                                let (lease_lost, _) = oneshot::channel();
                                held.push(tokio::spawn(extend_lease(
                                    self.session.clone(),
                                    assignment,
                                    self.settings.lease,
                                    lease_lost,
                                )));
                                continue;
                            }
                            let (stop, stopped) = watch::channel(None);
                            running.insert(task_id, Running { stop });
                            workers.spawn(work(
                                self.session.clone(),
                                assignment,
                                Arc::clone(&self.settings),
                                stopped,
                            ));
                        }
                        AgentEvent::Canceled(revocation) => {
                            if let Some(task) = running.get(&revocation.task_id) {
                                let _ = task.stop.send(Some(StopReason::Canceled(revocation.reason)));
                            }
                        }
                        AgentEvent::LeaseLost(revocation) => {
                            if let Some(task) = running.get(&revocation.task_id) {
                                let _ = task.stop.send(Some(StopReason::LeaseLost(revocation.reason)));
                            }
                        }
                        AgentEvent::Ballot(decision) => log(
                            &self.settings.name,
                            &format!(
                                "ballot for decision {} ({:?}): exec agents do not vote; \
                                 use `conclave decision vote {} CHOICE --as {}`",
                                decision.id,
                                decision.spec.as_ref().map(|s| s.question.as_str()).unwrap_or(""),
                                decision.id,
                                self.settings.name
                            ),
                        ),
                        AgentEvent::HoldLost(lost) => log(
                            &self.settings.name,
                            &format!("lost {} (token {}): {}", lost.name, lost.token, lost.reason),
                        ),
                        AgentEvent::Connected { node_id } => {
                            if connected_once {
                                log(&self.settings.name, &format!("session stream reconnected to node {node_id}"));
                            }
                            connected_once = true;
                        }
                        AgentEvent::Disconnected { reason } => log(
                            &self.settings.name,
                            &format!("session stream lost ({reason}); reconnecting"),
                        ),
                        AgentEvent::Closed { reason } => {
                            self.stop_all(&running, StopReason::SessionGone);
                            self.settle_all(&mut workers).await;
                            return Served::SessionEnded(reason);
                        }
                    }
                }
                Some(joined) = workers.join_next() => {
                    match joined {
                        Ok(task_id) => { running.remove(&task_id); }
                        Err(error) => log(&self.settings.name, &format!("a task runner failed: {error}")),
                    }
                    // A runner that panicked leaves its entry; drop entries whose runner is gone.
                    running.retain(|_, task| !task.stop.is_closed());
                }
                () = signals.recv() => {
                    if shutdown_at.is_none() {
                        log(&self.settings.name, &format!(
                            "shutting down: no new tasks; {} running task(s) have {} to finish",
                            running.len(),
                            format_duration(self.shutdown_grace)
                        ));
                        shutdown_at = Some(Instant::now() + self.shutdown_grace);
                    } else {
                        log(&self.settings.name, "second signal: stopping running tasks now");
                        shutdown_at = Some(Instant::now());
                    }
                }
                () = tokio::time::sleep_until(shutdown_at.unwrap_or(far)), if shutdown_at.is_some() && !stopping_all => {
                    stopping_all = true;
                    if !running.is_empty() {
                        log(&self.settings.name, &format!(
                            "stopping {} running task(s); closing the session releases them", running.len()));
                    }
                    self.stop_all(&running, StopReason::Shutdown);
                }
            }
        }
    }

    fn stop_all(&self, running: &HashMap<u64, Running>, reason: StopReason) {
        for task in running.values() {
            let _ = task.stop.send(Some(reason.clone()));
        }
    }

    /// Waits for the runners to finish after [`Agent::stop_all`]: they need the kill grace at
    /// most, plus the time to report.
    async fn settle_all(&self, workers: &mut JoinSet<u64>) {
        let bound = self.settings.kill_grace + PIPE_DRAIN * 2 + Duration::from_secs(5);
        if tokio::time::timeout(bound, async {
            while workers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            workers.abort_all();
        }
    }
}

/// How one run of the command ended.
#[derive(Debug)]
enum Execution {
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr_tail: Vec<u8>,
    },
    /// More than [`RESULT_MAX_BYTES`] on stdout; the command was stopped.
    Overflow {
        stderr_tail: Vec<u8>,
    },
    Stopped(StopReason),
    SpawnFailed(std::io::Error),
}

/// Runs one assignment to the end and reports it; returns the task id.
async fn work(
    session: AgentSession,
    assignment: Assignment,
    settings: Arc<Settings>,
    stop: watch::Receiver<Option<StopReason>>,
) -> u64 {
    let started = Instant::now();
    let execution = execute(&session, &assignment, &settings, stop).await;
    let elapsed = format_duration(started.elapsed());
    let what = settle(&session, &assignment, &settings, execution, &elapsed).await;
    let trace = if assignment.traceparent.is_empty() {
        String::new()
    } else {
        format!(" traceparent {}", assignment.traceparent)
    };
    log(
        &settings.name,
        &format!(
            "task {} attempt {} (queue {}){trace}: {what}",
            assignment.task_id, assignment.attempt, assignment.queue
        ),
    );
    assignment.task_id
}

/// Runs the command for one assignment until it exits or must stop.
async fn execute(
    session: &AgentSession,
    assignment: &Assignment,
    settings: &Settings,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Execution {
    let mut command = tokio::process::Command::new(&settings.command[0]);
    command
        .args(&settings.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env("CONCLAVE_TASK_ID", assignment.task_id.to_string())
        .env("CONCLAVE_ATTEMPT", assignment.attempt.to_string())
        .env("CONCLAVE_QUEUE", &assignment.queue)
        .env(
            "CONCLAVE_FENCING_TOKEN",
            assignment.fencing_token.to_string(),
        )
        .env("CONCLAVE_CORRELATION_ID", &assignment.correlation_id)
        .env("CONCLAVE_CHECKPOINT", &assignment.checkpoint)
        .env("CONCLAVE_CONTENT_TYPE", &assignment.content_type)
        .env("CONCLAVE_AGENT", &settings.name)
        .env("CONCLAVE_ENDPOINTS", &settings.endpoints);
    // The task's W3C trace context, so the command continues the submitter's trace; an untraced
    // task must not inherit one from the agent's own environment.
    if assignment.traceparent.is_empty() {
        command.env_remove("TRACEPARENT");
    } else {
        command.env("TRACEPARENT", &assignment.traceparent);
    }
    die_with_agent(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Execution::SpawnFailed(error),
    };
    let pgid = child.id().expect("a child not yet waited for has a pid");

    if let Some(mut stdin) = child.stdin.take() {
        let payload = assignment.payload.clone();
        // A command that does not read its stdin closes the pipe: that is its business.
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        });
    }
    let mut stdout_reader = tokio::spawn(read_bounded(
        child.stdout.take().expect("stdout is piped"),
        RESULT_MAX_BYTES,
    ));
    let stderr_reader = tokio::spawn(read_tail(
        child.stderr.take().expect("stderr is piped"),
        ERROR_MAX_BYTES,
    ));
    let (lease_lost_sender, mut lease_lost) = oneshot::channel();
    let extender = tokio::spawn(extend_lease(
        session.clone(),
        assignment.clone(),
        settings.lease,
        lease_lost_sender,
    ));

    let mut stdout: Option<(Vec<u8>, bool)> = None;
    let mut stop_reason: Option<StopReason> = None;
    let mut overflow = false;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    // Sends SIGTERM now and schedules SIGKILL.
    let terminate = |kill_at: &mut Option<Instant>| {
        if kill_at.is_none() {
            if let Err(error) = signal_group(pgid, SIGTERM) {
                log(
                    &settings.name,
                    &format!("SIGTERM to process group {pgid}: {error}"),
                );
            }
            *kill_at = Some(Instant::now() + settings.kill_grace);
        }
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            changed = stop.changed(), if stop_reason.is_none() => {
                if changed.is_err() {
                    // The agent's loop is gone; treat it as a shutdown.
                    stop_reason = Some(StopReason::Shutdown);
                } else {
                    stop_reason = stop.borrow().clone();
                }
                if stop_reason.is_some() {
                    terminate(&mut kill_at);
                }
            }
            message = &mut lease_lost, if stop_reason.is_none() => {
                if let Ok(message) = message {
                    stop_reason = Some(StopReason::LeaseLost(message));
                    terminate(&mut kill_at);
                }
            }
            read = &mut stdout_reader, if stdout.is_none() => {
                let read = read.unwrap_or_else(|_| (Vec::new(), false));
                if read.1 {
                    overflow = true;
                    terminate(&mut kill_at);
                }
                stdout = Some(read);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed => {
                killed = true;
                if let Err(error) = signal_group(pgid, SIGKILL) {
                    log(&settings.name, &format!("SIGKILL to process group {pgid}: {error}"));
                }
            }
        }
    };
    extender.abort();

    // Whatever the command left running in its group may still hold the pipes open.
    let stdout = match stdout {
        Some(read) => read,
        None => match tokio::time::timeout(PIPE_DRAIN, &mut stdout_reader).await {
            Ok(read) => read.unwrap_or_else(|_| (Vec::new(), false)),
            Err(_) => {
                let _ = signal_group(pgid, SIGKILL);
                match tokio::time::timeout(PIPE_DRAIN, &mut stdout_reader).await {
                    Ok(read) => read.unwrap_or_else(|_| (Vec::new(), false)),
                    Err(_) => {
                        stdout_reader.abort();
                        (Vec::new(), false)
                    }
                }
            }
        },
    };
    let stderr_tail = match tokio::time::timeout(PIPE_DRAIN, stderr_reader).await {
        Ok(Ok(tail)) => tail,
        _ => {
            let _ = signal_group(pgid, SIGKILL);
            Vec::new()
        }
    };
    if let Some(reason) = stop_reason {
        return Execution::Stopped(reason);
    }
    if overflow || stdout.1 {
        return Execution::Overflow { stderr_tail };
    }
    match status {
        Ok(status) => Execution::Exited {
            status,
            stdout: stdout.0,
            stderr_tail,
        },
        Err(error) => Execution::SpawnFailed(error),
    }
}

/// Extends the lease every third of its length until aborted; sends the message of a lost lease.
async fn extend_lease(
    session: AgentSession,
    assignment: Assignment,
    lease: Option<Duration>,
    lease_lost: oneshot::Sender<String>,
) {
    let lease_length = lease.unwrap_or(Duration::from_millis(match assignment.lease_ms {
        0 => conclave_client::limits::DEFAULT_LEASE_MS,
        ms => ms,
    }));
    let every = (lease_length / 3).max(EXTEND_MIN);
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match session
            .extend_lease(
                assignment.task_id,
                assignment.fencing_token,
                lease.unwrap_or(Duration::ZERO),
            )
            .await
        {
            Ok(_) => {}
            Err(Error::LeaseLost { message }) => {
                let _ = lease_lost.send(message);
                return;
            }
            Err(error) => log(
                session.name(),
                &format!(
                    "task {}: extending the lease failed ({error}); trying again",
                    assignment.task_id
                ),
            ),
        }
    }
}

/// Reports the outcome of a run with the matching verb; returns the log line's text.
async fn settle(
    session: &AgentSession,
    assignment: &Assignment,
    settings: &Settings,
    execution: Execution,
    elapsed: &str,
) -> String {
    let (task_id, token) = (assignment.task_id, assignment.fencing_token);
    match execution {
        Execution::Stopped(StopReason::Canceled(reason)) => {
            format!("canceled after {elapsed} ({reason}); command stopped")
        }
        Execution::Stopped(StopReason::LeaseLost(reason)) => {
            format!("lease lost after {elapsed} ({reason}); command stopped")
        }
        Execution::Stopped(StopReason::SessionGone) => {
            format!("the session ended after {elapsed}; command stopped, task not reported")
        }
        // Not released here: the scheduler would assign it straight back to this agent, which is
        // still live. Closing the session releases every lease still held, uncounted.
        Execution::Stopped(StopReason::Shutdown) => format!(
            "stopped at shutdown after {elapsed}; the session's close releases it (the attempt \
             does not count)"
        ),
        Execution::SpawnFailed(error) => {
            let failure = Failure {
                error: clip_error(&format!(
                    "agent {} could not run {:?}: {error}",
                    settings.name,
                    settings.command[0].to_string_lossy()
                )),
                retryable: true,
                retry_after: Duration::ZERO,
            };
            let outcome = session.fail(task_id, token, &failure).await;
            describe_fail(
                &format!("could not start the command ({error})"),
                true,
                outcome,
            )
        }
        Execution::Overflow { stderr_tail } => {
            let error = error_with_tail(
                &format!(
                    "the command wrote more than {RESULT_MAX_BYTES} bytes to stdout, the result \
                     limit; it was stopped"
                ),
                &stderr_tail,
            );
            let failure = Failure {
                error,
                retryable: false,
                retry_after: Duration::ZERO,
            };
            let outcome = session.fail(task_id, token, &failure).await;
            describe_fail(
                &format!("output over {RESULT_MAX_BYTES} bytes after {elapsed}"),
                false,
                outcome,
            )
        }
        Execution::Exited {
            status,
            stdout,
            stderr_tail,
        } => match verdict(status) {
            Verdict::Complete => {
                let bytes = stdout.len();
                match session.complete(task_id, token, stdout).await {
                    Ok(_) => format!("completed in {elapsed} ({bytes} bytes)"),
                    Err(Error::LeaseLost { message }) => format!(
                        "finished in {elapsed}, but the lease was lost; result discarded ({message})"
                    ),
                    Err(error) => format!("finished in {elapsed}; completing failed: {error}"),
                }
            }
            Verdict::Fail { retryable, summary } => {
                let failure = Failure {
                    error: error_with_tail(&summary, &stderr_tail),
                    retryable,
                    retry_after: Duration::ZERO,
                };
                let outcome = session.fail(task_id, token, &failure).await;
                describe_fail(&format!("{summary} after {elapsed}"), retryable, outcome)
            }
        },
    }
}

fn describe_fail(
    what: &str,
    retryable: bool,
    outcome: conclave_client::Result<VerbResult>,
) -> String {
    match outcome {
        Ok(result) => match result.state {
            TaskState::RetryWait | TaskState::Pending => format!("{what}; failed, will be retried"),
            TaskState::DeadLettered if retryable => {
                format!("{what}; failed, dead-lettered (no attempts left)")
            }
            TaskState::DeadLettered => format!("{what}; failed, dead-lettered (not retryable)"),
            state => format!("{what}; failed (task is now {state:?})"),
        },
        Err(Error::LeaseLost { message }) => {
            format!("{what}; the lease was lost, failure not recorded ({message})")
        }
        Err(error) => format!("{what}; reporting the failure failed: {error}"),
    }
}

/// What an exit status means for the task.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Complete,
    Fail { retryable: bool, summary: String },
}

fn verdict(status: ExitStatus) -> Verdict {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Verdict::Complete,
        (Some(EXIT_RETRYABLE), _) => Verdict::Fail {
            retryable: true,
            summary: format!("exit {EXIT_RETRYABLE}"),
        },
        (Some(code), _) => Verdict::Fail {
            retryable: false,
            summary: format!("exit {code}"),
        },
        (None, Some(signal)) => Verdict::Fail {
            retryable: false,
            summary: format!("killed by signal {signal}"),
        },
        (None, None) => Verdict::Fail {
            retryable: false,
            summary: "ended without an exit status".to_string(),
        },
    }
}

/// `summary: <the end of stderr>`, at most [`ERROR_MAX_BYTES`] bytes, cut at the front of the
/// stderr part so the last lines (usually the error) survive.
fn error_with_tail(summary: &str, stderr_tail: &[u8]) -> String {
    let tail = String::from_utf8_lossy(stderr_tail);
    let tail = tail.trim();
    if tail.is_empty() {
        return clip_error(&format!("{summary} (nothing on stderr)"));
    }
    let prefix = format!("{summary}: ");
    let budget = ERROR_MAX_BYTES.saturating_sub(prefix.len());
    let mut start = tail.len().saturating_sub(budget);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    format!("{prefix}{}", &tail[start..])
}

fn clip_error(text: &str) -> String {
    let mut end = text.len().min(ERROR_MAX_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Reads until EOF, keeping at most `limit` bytes; returns early with `true` once more arrive.
async fn read_bounded(mut reader: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, false),
            Ok(read) => {
                if kept.len() + read > limit {
                    let room = limit - kept.len();
                    kept.extend_from_slice(&chunk[..room]);
                    return (kept, true);
                }
                kept.extend_from_slice(&chunk[..read]);
            }
        }
    }
}

/// Reads until EOF, keeping the last `limit` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(limit * 2);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return tail,
            Ok(read) => {
                tail.extend_from_slice(&chunk[..read]);
                if tail.len() > limit {
                    tail.drain(..tail.len() - limit);
                }
            }
        }
    }
}

/// Checks that `program` can be run: a path to a file, or a name found on PATH.
pub(super) fn find_program(program: &Path) -> Result<PathBuf, String> {
    if program.components().count() > 1 || program.is_absolute() {
        return if program.is_file() {
            Ok(program.to_path_buf())
        } else {
            Err(format!("command {} does not exist", program.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("command {:?} is not on PATH", program.display().to_string()))
}

/// One line on stderr: time, agent, what happened.
fn log(agent: &str, text: &str) {
    eprintln!("{} agent {agent}: {text}", format_rfc3339(unix_ms_now()));
}

/// SIGINT and SIGTERM as one stream.
pub(super) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(super) fn new() -> CliResult<Signals> {
        let listen = |kind| {
            signal(kind)
                .map_err(|error| CliError::failed(format!("listening for signals: {error}")))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
        })
    }

    pub(super) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_decide_the_verb() {
        assert_eq!(verdict(ExitStatus::from_raw(0)), Verdict::Complete);
        assert_eq!(
            verdict(ExitStatus::from_raw(75 << 8)),
            Verdict::Fail {
                retryable: true,
                summary: "exit 75".into()
            }
        );
        assert_eq!(
            verdict(ExitStatus::from_raw(3 << 8)),
            Verdict::Fail {
                retryable: false,
                summary: "exit 3".into()
            }
        );
        assert_eq!(
            verdict(ExitStatus::from_raw(9)),
            Verdict::Fail {
                retryable: false,
                summary: "killed by signal 9".into()
            }
        );
    }

    #[test]
    fn errors_keep_the_end_of_stderr_within_the_limit() {
        assert_eq!(error_with_tail("exit 2", b"boom\n"), "exit 2: boom");
        assert_eq!(error_with_tail("exit 2", b""), "exit 2 (nothing on stderr)");
        let long: Vec<u8> = "é".repeat(5000).into_bytes();
        let error = error_with_tail("exit 2", &[&long[..], b"the end"].concat());
        assert!(error.len() <= ERROR_MAX_BYTES, "{}", error.len());
        assert!(error.starts_with("exit 2: ") && error.ends_with("the end"));
    }

    /// A real child: stdout up to the bound is kept, beyond it the reader stops and says so.
    #[tokio::test]
    async fn output_is_captured_up_to_the_bound() {
        let run = |script: &str| {
            tokio::process::Command::new("sh")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("sh runs")
        };
        let mut child = run("printf hello; printf oops >&2; exit 75");
        let (stdout, overflow) = read_bounded(child.stdout.take().expect("piped"), 10).await;
        let stderr = read_tail(child.stderr.take().expect("piped"), 3).await;
        let status = child.wait().await.expect("exits");
        assert_eq!((stdout.as_slice(), overflow), (&b"hello"[..], false));
        assert_eq!(stderr, b"ops");
        assert!(matches!(
            verdict(status),
            Verdict::Fail {
                retryable: true,
                ..
            }
        ));

        let mut child = run("head -c 100000 /dev/zero");
        let (stdout, overflow) = read_bounded(child.stdout.take().expect("piped"), 1000).await;
        assert!(overflow);
        assert_eq!(stdout.len(), 1000);
        let _ = child.kill().await;

        let mut child = run("head -c 1000 /dev/zero");
        let (stdout, overflow) = read_bounded(child.stdout.take().expect("piped"), 1000).await;
        assert!(!overflow, "exactly the bound is fine");
        assert_eq!(stdout.len(), 1000);
        let _ = child.wait().await;
    }

    #[test]
    fn programs_are_found_on_path() {
        assert!(find_program(Path::new("sh")).is_ok());
        assert!(find_program(Path::new("/bin/sh")).is_ok());
        assert!(find_program(Path::new("no-such-command-conclave")).is_err());
        assert!(find_program(Path::new("./no/such/file")).is_err());
    }

    #[test]
    fn run_takes_the_command_after_the_separator() {
        use crate::cli::{agent::AgentCommand, Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "conclave",
            "agent",
            "run",
            "--name",
            "w",
            "--capability",
            "write",
            "--concurrency",
            "4",
            "--ttl",
            "2000ms",
            "--",
            "sh",
            "-c",
            "cat; exit 75",
        ])
        .expect("parses");
        let Command::Agent(AgentCommand::Run(args)) = cli.command else {
            panic!("not agent run");
        };
        assert_eq!(args.name, "w");
        assert_eq!(args.concurrency, 4);
        assert_eq!(args.ttl, Some(Duration::from_secs(2)));
        assert_eq!(args.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            args.command,
            ["sh", "-c", "cat; exit 75"].map(OsString::from)
        );
        assert!(Cli::try_parse_from(["conclave", "agent", "run", "--name", "w"]).is_err());
    }
}
