//! `conclave bench workflow`: in-process agents that complete every step task at once, starters
//! that start workflows of one shape, and the numbers: workflows per second from the first Start
//! sent to the last workflow seen SUCCEEDED, and the step hand-off latency.
//!
//! Every instant is read in this process on one monotonic clock. A step task names its workflow
//! and step in its correlation id (`workflow/<id>/<step>/<branch>`, set by the cluster), so the
//! agents record, per (workflow, step), when each completion was acknowledged and when the step's
//! task arrived. **Hand-off**: the last completion acknowledged of the step a step follows (for a
//! fan-out, of its last branch: the join is ALL) -> the next step's task assigned to an agent
//! ([`handoffs`]). The cluster submits the next task in the entry that applies the completion and
//! assigns it in a later entry (the leader's scheduler), so this is that assignment's planning,
//! commit and delivery; an assignment that arrives before the completion's acknowledgement counts
//! as 0 and is reported. Hand-offs are also shown apart by where the agent's session is: on the
//! leader (which applies the Assign as soon as it commits) or on a follower (which applies it
//! once the next AppendEntries tells it the commit index: one more round). Terminal states come
//! from a watch of every workflow, opened before the first Start.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use conclave_client::{
    parse_definition, AgentConfig, AgentEvent, AgentSession, Assignment, Client, ClientOptions,
    DefinitionFormat, Error, StartWorkflowOptions, WorkflowDefinition, WorkflowEventKind,
    WorkflowState, WorkflowWatchOptions,
};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::render::enum_name;
use super::when::{format_duration, parse_duration};
use super::{output, CliError, CliResult, Globals};

#[derive(Debug, Args)]
pub struct BenchWorkflow {
    /// The workflow's shape: pipeline3 (steps a -> b -> c, each receiving the previous result)
    /// or fanout10 (ten branches joined by ALL, then an aggregator step).
    #[arg(long, value_enum, default_value_t = Shape::Pipeline3)]
    shape: Shape,
    /// In-process agents, each with its own session.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    agents: u32,
    /// Step tasks each agent may hold at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Workflows to start. The cluster runs at most 10,000 open at once (WORKFLOWS_OPEN_MAX);
    /// a Start beyond that is refused and counted as an error.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    workflows: u64,
    /// Start requests in flight at once: the offered load. More raise the throughput until the
    /// cluster saturates, and the hand-off with it (a ready task then waits for the Assign entries
    /// ahead of it); the default keeps a 3-node cluster on a small machine below that point.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    starters: u32,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    max_duration: Duration,
    /// HTTP/2 connections per node.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// Three sequential task steps a -> b -> c.
    Pipeline3,
    /// A fan-out of ten branches joined by ALL, then an aggregator step.
    Fanout10,
}

/// One step of a shape: its name, the step it follows, and how many tasks it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepShape {
    name: &'static str,
    after: Option<usize>,
    branches: u32,
}

const PIPELINE3: [StepShape; 3] = [
    StepShape {
        name: "a",
        after: None,
        branches: 1,
    },
    StepShape {
        name: "b",
        after: Some(0),
        branches: 1,
    },
    StepShape {
        name: "c",
        after: Some(1),
        branches: 1,
    },
];

const FANOUT10: [StepShape; 2] = [
    StepShape {
        name: "fan",
        after: None,
        branches: 10,
    },
    StepShape {
        name: "aggregate",
        after: Some(0),
        branches: 1,
    },
];

impl Shape {
    fn steps(self) -> &'static [StepShape] {
        match self {
            Shape::Pipeline3 => &PIPELINE3,
            Shape::Fanout10 => &FANOUT10,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Pipeline3 => "pipeline3",
            Shape::Fanout10 => "fanout10",
        }
    }

    fn tasks_per_workflow(self) -> u64 {
        self.steps()
            .iter()
            .map(|step| u64::from(step.branches))
            .sum()
    }

    /// The definition file of this shape (the format `conclave workflow check` reads), every
    /// step on `queue` and requiring `capability`, so only this run's agents take its tasks.
    fn definition_yaml(self, queue: &str, capability: &str) -> String {
        let mut yaml = format!("name: bench-{}\nversion: 1\nsteps:\n", self.name());
        for step in self.steps() {
            yaml.push_str(&format!(
                "  - name: {}\n    queue: {queue}\n    capabilities: [{capability}]\n",
                step.name
            ));
            if let Some(after) = step.after {
                yaml.push_str(&format!("    after: [{}]\n", self.steps()[after].name));
            }
            if step.branches > 1 {
                yaml.push_str(&format!(
                    "    fan_out: {{count: {}, join: {{policy: all}}}}\n",
                    step.branches
                ));
            }
        }
        yaml
    }

    fn definition(self, queue: &str, capability: &str) -> Result<WorkflowDefinition, Error> {
        parse_definition(
            &self.definition_yaml(queue, capability),
            DefinitionFormat::Yaml,
        )
    }

    fn step_index(self, name: &str) -> Option<usize> {
        self.steps().iter().position(|step| step.name == name)
    }
}

/// The workflow and step a step task belongs to, from its correlation id as the cluster sets it:
/// `workflow/<id>/<step>/<branch>`. None for any other task.
fn step_of(correlation_id: &str) -> Option<(u64, &str)> {
    let mut parts = correlation_id.strip_prefix("workflow/")?.split('/');
    let workflow_id = parts.next()?.parse().ok()?;
    let step = parts.next()?;
    let _branch: u32 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((workflow_id, step))
}

/// What the agents saw of one step of one workflow, in microseconds since the bench started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct StepTimes {
    /// The first of its tasks to arrive at an agent, and whether that agent's session was on the
    /// leader.
    assigned_us: Option<u64>,
    assigned_via_leader: bool,
    /// Its tasks' completions acknowledged, and the last of them.
    completed: u32,
    last_completed_us: Option<u64>,
}

/// The hand-offs [`handoffs`] found, in microseconds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Handoffs {
    handoffs_us: Vec<u64>,
    /// The same, split by where the session that received the task was.
    via_leader_us: Vec<u64>,
    via_follower_us: Vec<u64>,
    /// Steps whose task arrived before the completion it follows was acknowledged (counted as 0).
    assigned_before_ack: u64,
}

/// For every step that follows another: the last completion acknowledged of the step it follows
/// (every branch, as the join is ALL) -> its own task's arrival. A step whose predecessor did not
/// have every completion acknowledged (an error) or that never arrived is left out.
fn handoffs(shape: &[StepShape], steps: &HashMap<(u64, usize), StepTimes>) -> Handoffs {
    let mut found = Handoffs::default();
    for (&(workflow_id, index), times) in steps {
        let Some(after) = shape.get(index).and_then(|step| step.after) else {
            continue;
        };
        let Some(assigned_us) = times.assigned_us else {
            continue;
        };
        let Some(previous) = steps.get(&(workflow_id, after)) else {
            continue;
        };
        if previous.completed != shape[after].branches {
            continue;
        }
        let Some(completed_us) = previous.last_completed_us else {
            continue;
        };
        if assigned_us < completed_us {
            found.assigned_before_ack += 1;
        }
        let handoff_us = assigned_us.saturating_sub(completed_us);
        found.handoffs_us.push(handoff_us);
        if times.assigned_via_leader {
            found.via_leader_us.push(handoff_us);
        } else {
            found.via_follower_us.push(handoff_us);
        }
    }
    found
}

/// What the agents and starters recorded.
#[derive(Debug)]
struct Ledger {
    shape: Shape,
    started: Instant,
    /// The leader when the bench started, and the node each agent's session is on.
    leader_id: u64,
    session_nodes: Mutex<HashMap<u32, u64>>,
    steps: Mutex<HashMap<(u64, usize), StepTimes>>,
    /// Per workflow started: when its Start was sent and acknowledged (microseconds).
    starts: Mutex<HashMap<u64, (u64, u64)>>,
    /// Assignments whose correlation id names no step of the shape.
    foreign: AtomicU64,
    start_errors: AtomicU64,
    complete_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Ledger {
    fn new(shape: Shape, leader_id: u64) -> Ledger {
        Ledger {
            shape,
            started: Instant::now(),
            leader_id,
            session_nodes: Mutex::default(),
            steps: Mutex::default(),
            starts: Mutex::default(),
            foreign: AtomicU64::new(0),
            start_errors: AtomicU64::new(0),
            complete_errors: AtomicU64::new(0),
            first_error: Mutex::default(),
        }
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The (workflow, step index) of an assignment, or None (counted) for a foreign task.
    fn key(&self, assignment: &Assignment) -> Option<(u64, usize)> {
        let key = step_of(&assignment.correlation_id)
            .and_then(|(workflow_id, step)| Some((workflow_id, self.shape.step_index(step)?)));
        if key.is_none() {
            self.foreign.fetch_add(1, Ordering::Relaxed);
        }
        key
    }

    /// Records a step task's arrival; answers its (workflow, step index).
    fn assigned(&self, assignment: &Assignment, via_leader: bool) -> Option<(u64, usize)> {
        let at_us = self.now_us();
        let key = self.key(assignment)?;
        self.update(key, |times| {
            if times.assigned_us.is_none() {
                times.assigned_us = Some(at_us);
                times.assigned_via_leader = via_leader;
            }
        });
        Some(key)
    }

    fn update(&self, key: (u64, usize), change: impl FnOnce(&mut StepTimes)) {
        let mut steps = self.steps.lock().expect("ledger poisoned");
        change(steps.entry(key).or_default());
    }

    fn error(&self, counter: &AtomicU64, error: &Error) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .expect("ledger poisoned")
            .get_or_insert_with(|| error.to_string());
    }
}

pub async fn run(args: BenchWorkflow, globals: &Globals) -> CliResult {
    let options = ClientOptions {
        channels_per_endpoint: args.connections as usize,
        ..globals.client_options()
    };
    let client = Client::connect_with(&globals.endpoints, options)?;
    let leader = client.find_leader().await?;
    tracing::info!(leader = leader.node_id, "sending to the leader");
    let tag = format!("bench-{:08x}", rand::random::<u32>());
    let definition = args.shape.definition(&tag, &tag)?;
    let ledger = Arc::new(Ledger::new(args.shape, leader.node_id));
    let sessions = start_agents(&client, &args, &tag, &ledger).await?;
    let finishes = watch_finishes(&client).await?;
    let started = Instant::now();
    let give_up = started + args.max_duration;
    let starting = tokio::spawn(start_all(
        client.clone(),
        definition,
        args.workflows,
        args.starters,
        Arc::clone(&ledger),
    ));
    let ids = starting
        .await
        .map_err(|error| CliError::failed(format!("a starter panicked: {error}")))?;
    let mut finished = collect_finishes(finishes, &ids, give_up).await;
    confirm_unseen(&client, &ids, &mut finished, started).await;
    for session in &sessions {
        if let Err(error) = session.close().await {
            tracing::warn!(%error, "closing a bench session");
        }
    }
    cancel_unfinished(&client, &ids, &finished).await;
    let report = Report::new(&args, &ledger, &ids, &finished, started);
    report.print(&args, &tag, globals.json)?;
    report.verdict(args.workflows)
}

/// Registers `args.agents` sessions that complete every step task at once with a small JSON
/// result, recording when each task arrived and when its completion was acknowledged.
async fn start_agents(
    client: &Client,
    args: &BenchWorkflow,
    tag: &str,
    ledger: &Arc<Ledger>,
) -> CliResult<Vec<AgentSession>> {
    let mut sessions = Vec::new();
    for index in 0..args.agents {
        let mut config = AgentConfig::new(format!("{tag}-{index}"));
        config.capabilities = vec![tag.to_string()];
        config.max_concurrent = args.concurrency;
        config.replace = true;
        let (session, mut events) = AgentSession::register(client, &config).await?;
        sessions.push(session.clone());
        let ledger = Arc::clone(ledger);
        tokio::spawn(async move {
            let mut node_id = 0;
            while let Some(event) = events.recv().await {
                match event {
                    AgentEvent::Connected { node_id: now_on } => {
                        node_id = now_on;
                        let mut nodes = ledger.session_nodes.lock().expect("ledger poisoned");
                        nodes.insert(index, node_id);
                    }
                    AgentEvent::Assignment(assignment) => {
                        let key = ledger.assigned(&assignment, node_id == ledger.leader_id);
                        let ledger = Arc::clone(&ledger);
                        tokio::spawn(complete(session.clone(), assignment, key, ledger));
                    }
                    _ => {}
                }
            }
        });
    }
    Ok(sessions)
}

/// Completes one step task with a result naming it (the next step receives it in its payload).
async fn complete(
    session: AgentSession,
    assignment: Assignment,
    key: Option<(u64, usize)>,
    ledger: Arc<Ledger>,
) {
    let result = format!("{{\"task\":{}}}", assignment.task_id).into_bytes();
    match session
        .complete(assignment.task_id, assignment.fencing_token, result)
        .await
    {
        Ok(_) => {
            let at_us = ledger.now_us();
            if let Some(key) = key {
                ledger.update(key, |times| {
                    times.completed += 1;
                    times.last_completed_us = Some(times.last_completed_us.unwrap_or(0).max(at_us));
                });
            }
        }
        Err(error) => ledger.error(&ledger.complete_errors, &error),
    }
}

/// A workflow seen terminal: its id, its state, and when the watch delivered it.
type Finish = (u64, WorkflowState, Instant);

/// Opens a watch of every workflow and forwards each terminal change. Opened before the first
/// Start, so no finish is missed while the watch can resume; should it end (the cluster no longer
/// keeps the events after it), [`confirm_unseen`] reads the workflows it did not report.
async fn watch_finishes(client: &Client) -> CliResult<mpsc::UnboundedReceiver<Finish>> {
    let mut events = client
        .watch_workflows(WorkflowWatchOptions {
            workflow_id: 0,
            after_sequence: None,
        })
        .await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if event.kind() == WorkflowEventKind::Finished => {
                    if sender
                        .send((event.workflow_id, event.state(), Instant::now()))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the workflow watch ended; reading the rest");
                    return;
                }
            }
        }
    });
    Ok(receiver)
}

/// Starts `count` workflows with `starters` requests in flight; answers the ids started.
async fn start_all(
    client: Client,
    definition: WorkflowDefinition,
    count: u64,
    starters: u32,
    ledger: Arc<Ledger>,
) -> Vec<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..starters)
        .map(|_| {
            let (client, definition) = (client.clone(), definition.clone());
            let (next, ledger) = (Arc::clone(&next), Arc::clone(&ledger));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return;
                    }
                    let options = StartWorkflowOptions {
                        input_json: format!("{{\"n\":{n}}}"),
                        ..StartWorkflowOptions::default()
                    };
                    let sent_us = ledger.now_us();
                    match client.start_workflow(definition.clone(), options).await {
                        Ok(started) => {
                            let acked_us = ledger.now_us();
                            let mut starts = ledger.starts.lock().expect("ledger poisoned");
                            starts.insert(started.workflow_id, (sent_us, acked_us));
                        }
                        Err(error) => ledger.error(&ledger.start_errors, &error),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let starts = ledger.starts.lock().expect("ledger poisoned");
    starts.keys().copied().collect()
}

/// Receives finishes until every workflow in `ids` has one, or `give_up`, or the watch ended.
async fn collect_finishes(
    mut finishes: mpsc::UnboundedReceiver<Finish>,
    ids: &[u64],
    give_up: Instant,
) -> HashMap<u64, (WorkflowState, Instant)> {
    let ours: HashSet<u64> = ids.iter().copied().collect();
    let mut finished = HashMap::new();
    while finished.len() < ours.len() {
        match tokio::time::timeout_at(give_up, finishes.recv()).await {
            Ok(Some((workflow_id, state, at))) => {
                if ours.contains(&workflow_id) {
                    finished.insert(workflow_id, (state, at));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    finished
}

/// Reads the workflows the watch did not report finished; a terminal one counts as finished
/// now (later than it did, so the throughput errs low).
async fn confirm_unseen(
    client: &Client,
    ids: &[u64],
    finished: &mut HashMap<u64, (WorkflowState, Instant)>,
    started: Instant,
) {
    let unseen: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !finished.contains_key(id))
        .collect();
    if unseen.is_empty() {
        return;
    }
    tracing::warn!(
        unseen = unseen.len(),
        after = %format_duration(started.elapsed()),
        "workflows not seen finished; reading them"
    );
    for id in unseen {
        match client.get_workflow(id).await {
            Ok(read) if conclave_client::is_workflow_terminal(read.workflow.state()) => {
                finished.insert(id, (read.workflow.state(), Instant::now()));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(id, %error, "reading a workflow"),
        }
    }
}

/// Cancels the workflows of this run that did not finish, so no task waits for agents that
/// are gone.
async fn cancel_unfinished(
    client: &Client,
    ids: &[u64],
    finished: &HashMap<u64, (WorkflowState, Instant)>,
) {
    for &id in ids.iter().filter(|id| !finished.contains_key(id)) {
        if let Err(error) = client.cancel_workflow(id, "bench run ended").await {
            tracing::warn!(id, %error, "canceling a workflow left behind");
        }
    }
}

struct Report {
    started: u64,
    succeeded: u64,
    /// Terminal in another state, by state.
    other: Vec<(WorkflowState, u64)>,
    unfinished: u64,
    elapsed: Duration,
    start_us: Histogram,
    workflow_us: Histogram,
    handoff_us: Histogram,
    handoff_via_leader_us: Histogram,
    handoff_via_follower_us: Histogram,
    assigned_before_ack: u64,
    leader_id: u64,
    /// Agents' sessions on the leader, of all.
    sessions_on_leader: usize,
    sessions: usize,
    foreign: u64,
    start_errors: u64,
    complete_errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn new(
        args: &BenchWorkflow,
        ledger: &Ledger,
        ids: &[u64],
        finished: &HashMap<u64, (WorkflowState, Instant)>,
        started: Instant,
    ) -> Report {
        let count = |state| finished.values().filter(|(s, _)| *s == state).count() as u64;
        let succeeded = count(WorkflowState::Succeeded);
        let other = [
            WorkflowState::Failed,
            WorkflowState::Canceled,
            WorkflowState::TimedOut,
        ]
        .into_iter()
        .map(|state| (state, count(state)))
        .filter(|&(_, n)| n > 0)
        .collect();
        let last = finished.values().map(|&(_, at)| at).max();
        let (start_us, workflow_us) = start_histograms(ledger, finished);
        let steps = ledger.steps.lock().expect("ledger poisoned");
        let found = handoffs(args.shape.steps(), &steps);
        let nodes = ledger.session_nodes.lock().expect("ledger poisoned");
        Report {
            started: ids.len() as u64,
            succeeded,
            other,
            unfinished: (ids.len() - finished.len()) as u64,
            elapsed: last.map_or(started.elapsed(), |at| at.duration_since(started)),
            start_us,
            workflow_us,
            handoff_us: histogram(&found.handoffs_us),
            handoff_via_leader_us: histogram(&found.via_leader_us),
            handoff_via_follower_us: histogram(&found.via_follower_us),
            assigned_before_ack: found.assigned_before_ack,
            leader_id: ledger.leader_id,
            sessions_on_leader: nodes.values().filter(|&&n| n == ledger.leader_id).count(),
            sessions: nodes.len(),
            foreign: ledger.foreign.load(Ordering::Relaxed),
            start_errors: ledger.start_errors.load(Ordering::Relaxed),
            complete_errors: ledger.complete_errors.load(Ordering::Relaxed),
            first_error: ledger.first_error.lock().expect("ledger poisoned").clone(),
        }
    }

    /// Every workflow asked for must have SUCCEEDED.
    fn verdict(&self, asked: u64) -> CliResult {
        if self.succeeded == asked {
            return Ok(());
        }
        let other: Vec<String> = self
            .other
            .iter()
            .map(|&(state, n)| format!("{n} {}", enum_name(state.as_str_name(), "WORKFLOW_STATE_")))
            .collect();
        Err(CliError::failed(format!(
            "{} of {asked} workflows succeeded ({} started, {} errors starting, {} unfinished{}{})",
            self.succeeded,
            self.started,
            self.start_errors,
            self.unfinished,
            other
                .iter()
                .map(|text| format!(", {text}"))
                .collect::<String>(),
            self.first_error
                .as_ref()
                .map(|error| format!("; first error: {error}"))
                .unwrap_or_default()
        )))
    }
}

fn histogram(values_us: &[u64]) -> Histogram {
    let mut histogram = Histogram::default();
    values_us.iter().for_each(|&us| histogram.record(us));
    histogram
}

/// Start latency (sent -> acknowledged) and workflow latency (Start sent -> seen terminal).
fn start_histograms(
    ledger: &Ledger,
    finished: &HashMap<u64, (WorkflowState, Instant)>,
) -> (Histogram, Histogram) {
    let mut start_us = Histogram::default();
    let mut workflow_us = Histogram::default();
    for (id, &(sent_us, acked_us)) in ledger.starts.lock().expect("ledger poisoned").iter() {
        start_us.record(acked_us.saturating_sub(sent_us));
        if let Some(&(_, at)) = finished.get(id) {
            let finished_us = at.saturating_duration_since(ledger.started).as_micros() as u64;
            workflow_us.record(finished_us.saturating_sub(sent_us));
        }
    }
    (start_us, workflow_us)
}

impl Report {
    fn print(&self, args: &BenchWorkflow, tag: &str, json: bool) -> CliResult {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let workflows_per_s = self.succeeded as f64 / seconds;
        let tasks_per_s = (self.succeeded * args.shape.tasks_per_workflow()) as f64 / seconds;
        if json {
            return output::json_document(&self.json(args, tag, workflows_per_s, tasks_per_s));
        }
        output::line(&format!(
            "bench workflow: shape={} ({} tasks each) agents={} concurrency={} workflows={} starters={} queue={tag}",
            args.shape.name(),
            args.shape.tasks_per_workflow(),
            args.agents,
            args.concurrency,
            args.workflows,
            args.starters
        ))?;
        output::line(&format!(
            "succeeded        {} of {} started in {} ({workflows_per_s:.0} workflows/s, {tasks_per_s:.0} step tasks/s)",
            self.succeeded,
            self.started,
            format_duration(self.elapsed)
        ))?;
        for (state, n) in &self.other {
            output::line(&format!(
                "                 {n} {}",
                enum_name(state.as_str_name(), "WORKFLOW_STATE_")
            ))?;
        }
        if self.unfinished > 0 {
            output::line(&format!("unfinished       {}", self.unfinished))?;
        }
        self.print_latencies()
    }

    fn print_latencies(&self) -> CliResult {
        output::line(&format!("start            {}", line(&self.start_us)))?;
        output::line(&format!("hand-off         {}", line(&self.handoff_us)))?;
        if self.handoff_via_leader_us.count() > 0 && self.handoff_via_follower_us.count() > 0 {
            output::line(&format!(
                "  via leader     {}",
                line(&self.handoff_via_leader_us)
            ))?;
            output::line(&format!(
                "  via follower   {}",
                line(&self.handoff_via_follower_us)
            ))?;
        }
        if self.assigned_before_ack > 0 {
            output::line(&format!(
                "                 ({} counted as 0: the task arrived before the completion it follows was acknowledged)",
                self.assigned_before_ack
            ))?;
        }
        output::line(&format!("workflow         {}", line(&self.workflow_us)))?;
        let later = if self.sessions_on_leader < self.sessions {
            "; a follower applies an Assign one replication round after the leader"
        } else {
            ""
        };
        output::line(&format!(
            "sessions         {} of {} agents on the leader (node {}){later}",
            self.sessions_on_leader, self.sessions, self.leader_id
        ))?;
        output::line(&format!(
            "errors           {} start, {} complete, {} foreign tasks",
            self.start_errors, self.complete_errors, self.foreign
        ))?;
        if let Some(error) = &self.first_error {
            output::line(&format!("first error      {error}"))?;
        }
        Ok(())
    }

    fn json(
        &self,
        args: &BenchWorkflow,
        tag: &str,
        workflows_per_s: f64,
        tasks_per_s: f64,
    ) -> serde_json::Value {
        json!({
            "shape": args.shape.name(),
            "agents": args.agents,
            "concurrency": args.concurrency,
            "workflows": args.workflows,
            "starters": args.starters,
            "queue": tag,
            "started": self.started,
            "succeeded": self.succeeded,
            "other": self.other.iter().map(|&(state, n)| {
                (enum_name(state.as_str_name(), "WORKFLOW_STATE_"), n)
            }).collect::<HashMap<_, _>>(),
            "unfinished": self.unfinished,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "workflows_per_s": workflows_per_s,
            "step_tasks_per_s": tasks_per_s,
            "start_us": quantiles(&self.start_us),
            "handoff_us": quantiles(&self.handoff_us),
            "handoff_via_leader_us": quantiles(&self.handoff_via_leader_us),
            "handoff_via_follower_us": quantiles(&self.handoff_via_follower_us),
            "leader_id": self.leader_id,
            "sessions_on_leader": self.sessions_on_leader,
            "sessions": self.sessions,
            "assigned_before_ack": self.assigned_before_ack,
            "workflow_us": quantiles(&self.workflow_us),
            "errors": {
                "start": self.start_errors,
                "complete": self.complete_errors,
                "foreign_tasks": self.foreign,
                "first": self.first_error,
            },
        })
    }
}

fn quantiles(histogram: &Histogram) -> serde_json::Value {
    json!({
        "count": histogram.count(),
        "p50": histogram.quantile(0.50),
        "p90": histogram.quantile(0.90),
        "p99": histogram.quantile(0.99),
        "max": histogram.max(),
    })
}

fn line(histogram: &Histogram) -> String {
    let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
    format!(
        "p50 {}  p90 {}  p99 {}  max {}  (n={})",
        ms(histogram.quantile(0.50)),
        ms(histogram.quantile(0.90)),
        ms(histogram.quantile(0.99)),
        ms(histogram.max()),
        histogram.count()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_are_valid_definitions_of_the_steps_they_declare() {
        for shape in [Shape::Pipeline3, Shape::Fanout10] {
            let definition = shape.definition("bench-q", "bench-c").expect("valid");
            assert_eq!(definition.name, format!("bench-{}", shape.name()));
            let names: Vec<&str> = definition.steps.iter().map(|s| s.name.as_str()).collect();
            let expected: Vec<&str> = shape.steps().iter().map(|s| s.name).collect();
            assert_eq!(names, expected);
            for (step, declared) in definition.steps.iter().zip(shape.steps()) {
                let after: Vec<&str> = declared
                    .after
                    .map(|i| shape.steps()[i].name)
                    .into_iter()
                    .collect();
                assert_eq!(step.after, after, "{}", step.name);
            }
        }
        assert_eq!(Shape::Pipeline3.tasks_per_workflow(), 3);
        assert_eq!(Shape::Fanout10.tasks_per_workflow(), 11);
        let yaml = Shape::Fanout10.definition_yaml("q", "c");
        assert!(
            yaml.contains("fan_out: {count: 10, join: {policy: all}}"),
            "{yaml}"
        );
    }

    #[test]
    fn a_step_task_names_its_workflow_and_step_in_its_correlation_id() {
        assert_eq!(step_of("workflow/17/b/0"), Some((17, "b")));
        assert_eq!(step_of("workflow/3/fan/9"), Some((3, "fan")));
        assert_eq!(step_of("article-2"), None);
        assert_eq!(step_of("workflow/x/b/0"), None);
        assert_eq!(step_of("workflow/1/b"), None);
        assert_eq!(step_of("workflow/1/b/0/extra"), None);
        assert_eq!(Shape::Pipeline3.step_index("c"), Some(2));
        assert_eq!(Shape::Pipeline3.step_index("fan"), None);
    }

    fn times(assigned_us: Option<u64>, completed: u32, last_completed_us: u64) -> StepTimes {
        StepTimes {
            assigned_us,
            assigned_via_leader: false,
            completed,
            last_completed_us: (completed > 0).then_some(last_completed_us),
        }
    }

    #[test]
    fn a_pipeline_hands_off_from_each_completion_to_the_next_steps_assignment() {
        // Workflow 1: a completed at 100, b assigned at 130 and completed at 200, c assigned at
        // 240. Workflow 2: b arrived at 90, before a's completion (95) was acknowledged.
        let via_leader = StepTimes {
            assigned_via_leader: true,
            ..times(Some(130), 1, 200)
        };
        let steps = HashMap::from([
            ((1, 0), times(Some(10), 1, 100)),
            ((1, 1), via_leader),
            ((1, 2), times(Some(240), 1, 300)),
            ((2, 0), times(Some(10), 1, 95)),
            ((2, 1), times(Some(90), 0, 0)),
        ]);
        let mut found = handoffs(&PIPELINE3, &steps);
        found.handoffs_us.sort_unstable();
        assert_eq!(found.handoffs_us, vec![0, 30, 40]);
        assert_eq!(
            found.via_leader_us,
            vec![30],
            "b of workflow 1 arrived through the leader"
        );
        found.via_follower_us.sort_unstable();
        assert_eq!(found.via_follower_us, vec![0, 40]);
        assert_eq!(found.assigned_before_ack, 1);
    }

    #[test]
    fn a_fan_out_hands_off_from_its_last_branch_and_only_when_every_branch_completed() {
        // Workflow 1: ten branches, the last acknowledged at 500; the aggregator arrived at 520.
        // Workflow 2: one branch's completion failed (9 of 10): no hand-off counted.
        // Workflow 3: all ten completed, the aggregator never arrived.
        let steps = HashMap::from([
            ((1, 0), times(Some(5), 10, 500)),
            ((1, 1), times(Some(520), 1, 600)),
            ((2, 0), times(Some(5), 9, 400)),
            ((2, 1), times(Some(450), 0, 0)),
            ((3, 0), times(Some(5), 10, 400)),
        ]);
        let found = handoffs(&FANOUT10, &steps);
        assert_eq!(found.handoffs_us, vec![20]);
        assert_eq!(found.assigned_before_ack, 0);
    }
}
