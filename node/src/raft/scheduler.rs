//! The leader's background work: the ticker (lease, deadline, session and decision timers, and
//! retention) and the scheduler (assigning ready tasks to agents). Runs only while this node leads.
//!
//! Invariants:
//! - Only the leader proposes `Assign` and `Tick`, always stamped with its own clock (`now_ms`),
//!   and only after it has applied everything committed before its term (ReadIndex), so it plans
//!   on the latest state.
//! - At most one `Assign` is in flight: the next plan is made only after the previous entry has
//!   applied, so a plan never books a task or an agent's capacity twice. (Should an entry time
//!   out and commit later anyway, the state machine validates every assignment at apply time and
//!   skips the ones that no longer hold.)
//! - A new leader's first entry after catching up is `Tick { refresh: true }`: sessions and leases
//!   whose heartbeats or extensions could not reach anyone during the election get a fresh
//!   deadline instead of expiring at once (ARCHITECTURE.md, "Time, leases and leader changes").

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use crate::error::Error;
use crate::limits::{GONE_AGENTS_RETENTION_MS, IDEMPOTENCY_RETENTION_MS, MAX_ASSIGN_BATCH};
use crate::node::{wall_clock_ms, Node};
use crate::state_machine::coordination::{CoordCommand, CoordResponse, Retention};
use crate::state_machine::{Command, Response};

/// How long the leader waits before trying again after a failed proposal.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often the loop looks at this node's role when nothing changed.
const LEADERSHIP_RECHECK: Duration = Duration::from_secs(1);
/// The longest the ticker sleeps without looking at the clock again (wall clocks can jump).
const TICK_SLEEP_MAX: Duration = Duration::from_secs(1);

/// What a tick may forget, from the node's options.
pub fn retention(config: &crate::config::Config) -> Retention {
    Retention {
        finished_max: config.task_retention_count,
        finished_age_ms: config.task_retention_ms,
        idempotency_ms: IDEMPOTENCY_RETENTION_MS,
        gone_agents_ms: GONE_AGENTS_RETENTION_MS,
    }
}

/// Runs the leader's work for every term this node leads, until the node stops.
pub async fn run(node: Arc<Node>, mut stopping: watch::Receiver<bool>) {
    let mut server = node.raft.server_metrics();
    loop {
        let leading = {
            let metrics = server.borrow_watched();
            metrics.state == ServerState::Leader
        };
        if leading {
            let term = node.term();
            tracing::info!(term, "leading: starting the ticker and the scheduler");
            tokio::select! {
                () = lead(&node, term) => {}
                () = leadership_lost(&node, &mut server, term) => {}
                () = stopped(&mut stopping) => return,
            }
            tracing::info!(term, "no longer leading: the ticker and the scheduler stop");
        }
        // Metrics can lag the Raft core by a moment: look again after a while even without a
        // change, so a leader whose loop ended on a stale "not leader" does not stay idle.
        tokio::select! {
            changed = server.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(LEADERSHIP_RECHECK) => {}
            () = stopped(&mut stopping) => return,
        }
    }
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

/// Resolves once this node is no longer the leader of `term`.
async fn leadership_lost(
    node: &Node,
    server: &mut openraft::alias::WatchReceiverOf<
        crate::raft::TypeConfig,
        openraft::metrics::RaftServerMetrics<crate::raft::TypeConfig>,
    >,
    term: u64,
) {
    loop {
        {
            let metrics = server.borrow_watched();
            if metrics.state != ServerState::Leader || node.term() != term {
                return;
            }
        }
        if server.changed().await.is_err() {
            return;
        }
    }
}

/// The leader's loop for one term. Returns when a proposal finds that this node no longer leads.
async fn lead(node: &Node, term: u64) {
    let retention = retention(&node.config);
    // Catch up first: plans and due times read the local state, which must hold everything
    // committed before this term.
    while let Err(e) = node.linearize().await {
        if matches!(e, Error::NotLeader { .. }) {
            return;
        }
        tracing::debug!(term, error = %e, "new leader not caught up yet");
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    let refresh = CoordCommand::Tick {
        refresh: true,
        retention: retention.clone(),
    };
    loop {
        match propose(node, refresh.clone()).await {
            Ok(_) => break,
            Err(Error::NotLeader { .. }) => return,
            Err(e) => {
                tracing::warn!(term, error = %e, "refresh tick failed; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }

    let mut changes = node.state.subscribe_coordination();
    let mut stuck_due = None;
    loop {
        changes.borrow_and_update();
        let (now, plan, next_due) = {
            let state = node.state.read();
            // Cluster time never goes backwards: a Tick stamped now applies at the later of
            // this clock and the greatest stamp so far, so plan and compare with that.
            let now = wall_clock_ms().max(state.machine.now_ms());
            (
                now,
                state.machine.plan_assignments(now, MAX_ASSIGN_BATCH),
                state.machine.next_due_ms(),
            )
        };

        if !plan.is_empty() {
            let planned = plan.len();
            match propose(node, CoordCommand::Assign { assignments: plan }).await {
                Ok(CoordResponse::Assigned { tokens }) => {
                    let assigned = tokens.iter().filter(|t| t.is_some()).count();
                    tracing::debug!(planned, assigned, "assigned tasks");
                    if assigned == 0 {
                        // The plan and apply disagree; do not spin on it.
                        tracing::warn!(planned, "no planned assignment was valid at apply");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                }
                Ok(other) => {
                    tracing::warn!(response = ?other, "unexpected answer to Assign");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(Error::NotLeader { .. }) => return,
                Err(e) => {
                    tracing::warn!(planned, error = %e, "Assign failed; planning again");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
            // No `continue`: under a steady stream of assignable tasks the plan is never empty,
            // and expiries (leases, sessions, deadlines) must not wait for the queue to dry up.
        }

        if let Some(due) = next_due.filter(|due| *due <= now) {
            if stuck_due == Some(due) {
                // A tick at `due` applied and the same timer is still due: a state machine bug.
                // Tick again, but not in a tight loop.
                tracing::warn!(due, "a tick left the same timer due; backing off");
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            let tick = CoordCommand::Tick {
                refresh: false,
                retention: retention.clone(),
            };
            match propose(node, tick).await {
                Ok(_) => stuck_due = Some(due),
                Err(Error::NotLeader { .. }) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "tick failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
            continue;
        }
        stuck_due = None;

        let sleep = next_due.map_or(TICK_SLEEP_MAX, |due| {
            Duration::from_millis(due.saturating_sub(now)).min(TICK_SLEEP_MAX)
        });
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

async fn propose(node: &Node, command: CoordCommand) -> Result<CoordResponse, Error> {
    match node
        .propose_internal(Command::Coordination(command))
        .await?
    {
        Response::Coordination { response, .. } => Ok(response),
        other => Err(Error::Fatal(format!(
            "a coordination command was answered {other:?}"
        ))),
    }
}
