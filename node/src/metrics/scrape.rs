//! The families computed when scraped: Raft's state from its metrics watch, the applied state's
//! counts under its read lock, storage sizes, and the process (`process.rs`).
//!
//! The read lock is held for one pass over per-(queue, state) counts (series for at most
//! METRICS_QUEUES_MAX queues), the agents (at most AGENTS_MAX), the locks (at most LOCKS_MAX)
//! and the kept workflows; nothing is copied but the numbers. Apply waits for that pass, as it
//! waits for a listing.

use std::time::{SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, ServerState};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, GaugeVec, IntCounter, Opts, Registry};

use crate::limits::METRICS_QUEUES_MAX;
use crate::node::Node;
use crate::state_machine::coordination::{BreakerState, TaskState};
use crate::state_machine::locks::LockKind;
use crate::state_machine::workflows::WorkflowState;
use crate::storage::StorageStats;

/// Every family computed now.
pub(super) fn gather(node: &Node, storage: &StorageStats) -> Vec<MetricFamily> {
    let families = Families::default();
    raft(node, &families);
    storage_sizes(storage, &families);
    state(node, &families);
    super::process::gather(&families);
    families.registry.gather()
}

/// A registry for one scrape, with shorthands for its one-sample families.
#[derive(Default)]
pub(super) struct Families {
    registry: Registry,
}

impl Families {
    fn add(&self, collector: impl Collector + 'static) {
        self.registry
            .register(Box::new(collector))
            .expect("every family is registered once, under its own name");
    }

    pub(super) fn gauge(&self, name: &str, help: &str, value: f64) {
        let gauge = Gauge::new(name, help).expect("valid gauge");
        gauge.set(value);
        self.add(gauge);
    }

    pub(super) fn counter(&self, name: &str, help: &str, value: u64) {
        let counter = IntCounter::new(name, help).expect("valid counter");
        counter.inc_by(value);
        self.add(counter);
    }

    pub(super) fn counter_f64(&self, name: &str, help: &str, value: f64) {
        let counter = Counter::new(name, help).expect("valid counter");
        counter.inc_by(value);
        self.add(counter);
    }

    pub(super) fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let gauge = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
        self.add(gauge.clone());
        gauge
    }
}

fn raft(node: &Node, families: &Families) {
    let metrics = node.raft.metrics().borrow_watched().clone();
    let index = |log_id: Option<crate::raft::LogId>| log_id.map_or(0, |id| id.index);
    families.gauge(
        "conclave_raft_term",
        "The current Raft term this node knows.",
        metrics.current_term as f64,
    );
    let state = families.gauge_vec(
        "conclave_raft_state",
        "1 for this node's Raft role (leader, follower, candidate, learner, shutdown), 0 for the \
         others.",
        &["state"],
    );
    for (name, role) in [
        ("leader", ServerState::Leader),
        ("follower", ServerState::Follower),
        ("candidate", ServerState::Candidate),
        ("learner", ServerState::Learner),
        ("shutdown", ServerState::Shutdown),
    ] {
        state
            .with_label_values(&[name])
            .set(f64::from(u8::from(metrics.state == role)));
    }
    families.gauge(
        "conclave_raft_is_leader",
        "1 while this node is the leader.",
        f64::from(u8::from(metrics.state == ServerState::Leader)),
    );
    families.gauge(
        "conclave_raft_has_leader",
        "1 while this node knows of a leader of its term.",
        f64::from(u8::from(metrics.current_leader.is_some())),
    );
    families.gauge(
        "conclave_raft_leader_id",
        "The id of the leader this node knows of; 0 when none.",
        metrics.current_leader.unwrap_or(0) as f64,
    );
    let committed = index(metrics.local_committed);
    let applied = index(metrics.last_applied);
    families.gauge(
        "conclave_raft_last_log_index",
        "The index of the last entry in this node's log.",
        metrics.last_log_index.unwrap_or(0) as f64,
    );
    families.gauge(
        "conclave_raft_commit_index",
        "The last index this node knows to be committed.",
        committed as f64,
    );
    families.gauge(
        "conclave_raft_applied_index",
        "The last index applied to this node's state machine.",
        applied as f64,
    );
    families.gauge(
        "conclave_raft_apply_lag_entries",
        "Entries this node knows to be committed but has not applied yet.",
        committed.saturating_sub(applied) as f64,
    );
    families.gauge(
        "conclave_raft_snapshot_index",
        "The last index the latest snapshot covers.",
        index(metrics.snapshot) as f64,
    );
    families.gauge(
        "conclave_raft_purged_index",
        "The last index purged from the log (covered by a snapshot).",
        index(metrics.purged) as f64,
    );
    let voters = metrics.membership_config.membership().voter_ids().count();
    families.gauge(
        "conclave_raft_voters",
        "Voters in the membership this node knows.",
        voters as f64,
    );
    if let Some(acked) = metrics.last_quorum_acked {
        families.gauge(
            "conclave_raft_quorum_ack_age_seconds",
            "On the leader: time since a quorum last acknowledged it.",
            acked.elapsed().as_secs_f64(),
        );
    }
    let counters = &node.raft_counters;
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    families.counter(
        "conclave_raft_vote_requests_total",
        "Vote requests this node answered.",
        load(&counters.votes),
    );
    families.counter(
        "conclave_raft_append_requests_total",
        "AppendEntries requests this node handled (as a follower).",
        load(&counters.appends),
    );
    families.counter(
        "conclave_raft_heartbeats_total",
        "Heartbeat rounds this node sent (as the leader).",
        load(&counters.heartbeats),
    );
}

fn storage_sizes(storage: &StorageStats, families: &Families) {
    families.gauge(
        "conclave_snapshot_size_bytes",
        "The encoded size of the latest snapshot (built, installed or loaded at start).",
        storage.snapshot_bytes() as f64,
    );
    families.counter(
        "conclave_storage_log_appended_bytes_total",
        "Bytes of log entries this node appended since it started.",
        storage.appended_bytes(),
    );
}

fn state(node: &Node, families: &Families) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // The families are made before the lock is taken; only the numbers are read under it.
    let tasks = families.gauge_vec(
        "conclave_tasks",
        "Tasks kept, by queue and state.",
        &["queue", "state"],
    );
    let pending = families.gauge_vec(
        "conclave_queue_pending_tasks",
        "The backlog: PENDING tasks (ready to run, waiting for an agent), by queue.",
        &["queue"],
    );
    let oldest = families.gauge_vec(
        "conclave_queue_oldest_pending_age_seconds",
        "Age of the queue's PENDING task submitted first; 0 when none is pending.",
        &["queue"],
    );
    let agents = families.gauge_vec(
        "conclave_agents",
        "Registered agents: live (session open) or gone (kept for a while after).",
        &["status"],
    );
    let workflows = families.gauge_vec(
        "conclave_workflows",
        "Workflow instances kept, by state.",
        &["state"],
    );
    let locks = families.gauge_vec(
        "conclave_locks_held",
        "Locks, semaphores and elections with at least one holder, by kind.",
        &["kind"],
    );
    let waiters = families.gauge_vec(
        "conclave_lock_waiters",
        "Requests queued for a lock, semaphore or election, by kind.",
        &["kind"],
    );

    // Every state and kind has a sample, 0 when none: a series that appears only when non-zero
    // breaks rate() and absent() alerts.
    for name in WORKFLOW_STATES {
        workflows.with_label_values(&[name]).set(0.0);
    }
    for kind in [LockKind::Lock, LockKind::Semaphore, LockKind::Election] {
        locks.with_label_values(&[kind.noun()]).set(0.0);
        waiters.with_label_values(&[kind.noun()]).set(0.0);
    }

    let state = node.state.read();
    let machine = &state.machine;
    let stats = machine.coord_stats();
    let (mut drained, mut breaker_open) = (0u64, 0u64);
    let (mut live, mut gone) = (0u64, 0u64);
    for agent in machine.agents().iter() {
        if agent.live {
            live += 1;
            drained += u64::from(agent.drained);
            breaker_open += u64::from(agent.breaker != BreakerState::Closed);
        } else {
            gone += 1;
        }
    }
    // Pairs come in queue order, so each queue's are together.
    let (mut queues, mut omitted) = (0usize, 0u64);
    let mut last_queue = None;
    for (queue, task_state, count) in machine.tasks().counts_by_queue_state() {
        if last_queue != Some(queue) {
            last_queue = Some(queue);
            queues += 1;
            if queues > METRICS_QUEUES_MAX {
                omitted += 1;
            }
        }
        if queues > METRICS_QUEUES_MAX {
            continue;
        }
        tasks
            .with_label_values(&[queue, task_state_name(task_state)])
            .set(count as f64);
        if task_state == TaskState::Pending {
            pending.with_label_values(&[queue]).set(count as f64);
            let age_ms = machine
                .tasks()
                .oldest_pending(queue)
                .map_or(0, |task| now_ms.saturating_sub(task.submitted_ms));
            oldest
                .with_label_values(&[queue])
                .set(age_ms as f64 / 1000.0);
        }
    }
    for workflow in machine.workflows().iter() {
        workflows
            .with_label_values(&[workflow_state_name(workflow.state)])
            .inc();
    }
    for lock in machine.locks().iter() {
        let kind = lock.kind.noun();
        if !lock.holders.is_empty() {
            locks.with_label_values(&[kind]).inc();
        }
        waiters
            .with_label_values(&[kind])
            .add(lock.waiters.len() as f64);
    }
    let keys = machine.key_count();
    let revision = machine.revision();
    let decisions_open = machine.decisions().open_count();
    drop(state);

    agents.with_label_values(&["live"]).set(live as f64);
    agents.with_label_values(&["gone"]).set(gone as f64);
    families.gauge(
        "conclave_agents_drained",
        "Live agents drained by an operator (given no new work).",
        drained as f64,
    );
    families.gauge(
        "conclave_agents_breaker_open",
        "Live agents whose circuit breaker is open or half-open.",
        breaker_open as f64,
    );
    families.gauge(
        "conclave_dead_letter_tasks",
        "Tasks in the dead-letter queue (DEAD_LETTERED or EXPIRED).",
        stats.dead_letters as f64,
    );
    families.gauge(
        "conclave_decisions_open",
        "Decisions still open for votes.",
        decisions_open as f64,
    );
    families.gauge(
        "conclave_metrics_queues_omitted",
        "Queues without per-queue series: past the first METRICS_QUEUES_MAX (1000) by name.",
        omitted as f64,
    );
    families.gauge("conclave_kv_keys", "Keys in the store.", keys as f64);
    families.gauge(
        "conclave_kv_revision",
        "The store's revision (bumped once per write that changed a key).",
        revision as f64,
    );
}

pub(super) fn task_state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Delayed => "delayed",
        TaskState::Blocked => "blocked",
        TaskState::Assigned => "assigned",
        TaskState::RetryWait => "retry_wait",
        TaskState::Succeeded => "succeeded",
        TaskState::DeadLettered => "dead_lettered",
        TaskState::Canceled => "canceled",
        TaskState::Expired => "expired",
    }
}

const WORKFLOW_STATES: [&str; 7] = [
    "running",
    "waiting",
    "compensating",
    "succeeded",
    "failed",
    "canceled",
    "timed_out",
];

pub(super) fn workflow_state_name(state: WorkflowState) -> &'static str {
    match state {
        WorkflowState::Running => "running",
        WorkflowState::Waiting => "waiting",
        WorkflowState::Compensating => "compensating",
        WorkflowState::Succeeded => "succeeded",
        WorkflowState::Failed => "failed",
        WorkflowState::Canceled => "canceled",
        WorkflowState::TimedOut => "timed_out",
    }
}
