//! Workloads: what the clients do to the cluster during a run, and how their history is checked.
//!
//! A workload is a pluggable unit ([`Workload`]): it spawns its own clients, stops them when told,
//! reads the final state after healing, and checks the history it recorded with a pure function
//! of that history. Workloads share one cluster and one history (each event names its workload),
//! each under its own key prefix, so any set of them can run together. A new workload (tasks,
//! decisions) implements the trait and gets a name in [`build`].

pub mod agents;
pub mod decisions;
pub mod elections;
pub mod fenced;
pub mod locks;
pub mod register;
pub mod set;
pub mod tasks;
pub mod topics;
pub mod transactions;
pub mod watch;
pub mod workflows;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::task::JoinHandle;

use super::client::ClientContext;
use super::history::{pair, Event, OpKind};

/// A workload: its clients, its final reads and its checker.
pub trait Workload: Send + Sync {
    /// The name in histories, results and on the command line.
    fn name(&self) -> &'static str;

    /// Spawns the clients; they run until `context.stop` turns true.
    fn start(&self, context: ClientContext);

    /// Waits (bounded) for the clients to finish their current operations after the stop signal;
    /// an operation still outstanding at the end stays without completion, which means `info`.
    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>>;

    /// After healing and convergence: reads the final state from every node, recording the
    /// reads in the history for the checker.
    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Checks the workload's events of the history. Pure: the same history gives the same
    /// result (up to the time budget of a search).
    fn check(&self, events: &[Event], budget: Duration) -> CheckResult;
}

/// Builds a workload by name (one of [`NAMES`]).
pub fn build(name: &str) -> anyhow::Result<Box<dyn Workload>> {
    Ok(match name {
        register::NAME => Box::new(register::RegisterWorkload::new(register::Options::default())),
        set::NAME => Box::new(set::SetWorkload::new()),
        watch::NAME => Box::new(watch::WatchWorkload::new(watch::Options::default())),
        tasks::NAME => Box::new(tasks::TasksWorkload::new(tasks::Options::default())),
        decisions::NAME => Box::new(decisions::DecisionsWorkload::new(
            decisions::Options::default(),
        )),
        locks::NAME => Box::new(locks::LocksWorkload::new(locks::Options::default())),
        elections::NAME => Box::new(elections::ElectionsWorkload::new(
            elections::Options::default(),
        )),
        workflows::NAME => Box::new(workflows::WorkflowsWorkload::new(
            workflows::Options::default(),
        )),
        transactions::NAME => Box::new(transactions::TransactionsWorkload::new(
            transactions::Options::default(),
        )),
        topics::NAME => Box::new(topics::TopicsWorkload::new(topics::Options::default())),
        other => anyhow::bail!("no workload named {other:?}; known: {}", NAMES.join(", ")),
    })
}

/// Every workload name [`build`] knows.
pub const NAMES: &[&str] = &[
    register::NAME,
    set::NAME,
    watch::NAME,
    tasks::NAME,
    decisions::NAME,
    locks::NAME,
    elections::NAME,
    workflows::NAME,
    transactions::NAME,
    topics::NAME,
];

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The history satisfies the property.
    Valid,
    /// The history breaks it; `problems` says how.
    Invalid,
    /// The checker could not decide (time budget, malformed input): never a pass.
    Unknown,
}

/// What a checker found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub workload: String,
    pub verdict: Verdict,
    /// Human-readable findings, the most important first (bounded).
    pub problems: Vec<String>,
    /// Counts and other facts about the check, for the report.
    pub stats: Json,
}

/// Most problems a result lists; the count of the rest is given instead.
pub const PROBLEMS_MAX: usize = 20;

impl CheckResult {
    /// Valid if `problems` is empty, else invalid; problems beyond [`PROBLEMS_MAX`] are counted.
    pub fn from_problems(workload: &str, mut problems: Vec<String>, stats: Json) -> Self {
        let verdict = if problems.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        if problems.len() > PROBLEMS_MAX {
            let more = problems.len() - PROBLEMS_MAX;
            problems.truncate(PROBLEMS_MAX);
            problems.push(format!("... and {more} more"));
        }
        Self {
            workload: workload.to_string(),
            verdict,
            problems,
            stats,
        }
    }

    pub fn unknown(workload: &str, reason: String) -> Self {
        Self {
            workload: workload.to_string(),
            verdict: Verdict::Unknown,
            problems: vec![reason],
            stats: Json::Null,
        }
    }
}

/// Counts of the workload's operations by `f` and outcome: `{"write": {"ok": 3, "info": 1}}`.
pub fn outcome_counts(events: &[Event], workload: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let Ok(operations) = pair(events, Some(workload)) else {
        return counts;
    };
    for operation in operations {
        let outcome = match operation.outcome() {
            OpKind::Ok => "ok",
            OpKind::Fail => "fail",
            OpKind::Info | OpKind::Invoke => "info",
        };
        *counts
            .entry(operation.invoke.f.clone())
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
    }
    counts
}

/// Spawned client tasks of a workload, awaited by [`Tasks::drain`].
#[derive(Debug, Default)]
pub struct Tasks {
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// How long draining waits for clients beyond their operation timeout.
const DRAIN_SLACK: Duration = Duration::from_secs(5);

impl Tasks {
    pub fn push(&self, handle: JoinHandle<()>) {
        self.lock().push(handle);
    }

    /// Waits for every task up to `op_timeout` plus slack, then aborts the rest. A panicking
    /// client is an error: the history it left is incomplete for a reason that is a bug here.
    pub async fn drain(&self, op_timeout: Duration) -> anyhow::Result<()> {
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.lock());
        let deadline = tokio::time::Instant::now() + op_timeout + DRAIN_SLACK;
        let mut panicked = Vec::new();
        for mut handle in handles {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_panic() => panicked.push(error.to_string()),
                Ok(Err(_cancelled)) => {}
                Err(_elapsed) => {
                    tracing::warn!("a client did not finish in time; aborting it");
                    handle.abort();
                }
            }
        }
        anyhow::ensure!(panicked.is_empty(), "clients panicked: {panicked:?}");
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The f names of final reads, recorded after healing; the checkers know them apart from reads
/// during the run.
pub const FINAL_READ: &str = "final-read";
