//! The tasks' invariants, for `coordination::tests`: every index and counter recomputed from the
//! tasks themselves and compared.

use std::collections::{BTreeMap, BTreeSet};

use super::{task_digest, AttemptOutcome, ReadyKey, Task, TaskState, Tasks};
use crate::state_machine::coordination::{DecisionId, SessionId, TaskId, Timer, TimerKind};

/// Every index, as the tasks say it should be.
#[derive(Default)]
struct Derived {
    counts: [u64; 9],
    by_queue_state: BTreeMap<(String, TaskState), BTreeSet<TaskId>>,
    ready: BTreeMap<String, BTreeSet<ReadyKey>>,
    timers: BTreeSet<Timer>,
    finished: BTreeSet<(u64, TaskId)>,
    dead: BTreeSet<TaskId>,
    gates: BTreeMap<DecisionId, BTreeSet<TaskId>>,
    leases: BTreeMap<SessionId, BTreeSet<TaskId>>,
    children: BTreeMap<TaskId, BTreeSet<TaskId>>,
}

impl Derived {
    fn add(&mut self, task: &Task) {
        let id = task.id;
        self.counts[task.state.index()] += 1;
        self.by_queue_state
            .entry((task.spec.queue.clone(), task.state))
            .or_default()
            .insert(id);
        match task.state {
            TaskState::Pending => {
                self.ready
                    .entry(task.spec.queue.clone())
                    .or_default()
                    .insert(task.ready_key());
            }
            TaskState::Delayed | TaskState::RetryWait => {
                self.timers
                    .insert((task.ready_at_ms, TimerKind::TaskReady, id));
            }
            TaskState::Blocked => {
                let gate = task
                    .spec
                    .requires
                    .as_ref()
                    .expect("blocked tasks have a gate");
                self.gates.entry(gate.decision_id).or_default().insert(id);
            }
            TaskState::Succeeded | TaskState::Canceled => {
                self.finished.insert((task.updated_ms, id));
            }
            TaskState::DeadLettered | TaskState::Expired => {
                self.dead.insert(id);
            }
            TaskState::Assigned => {}
        }
        if let Some(lease) = &task.lease {
            self.timers
                .insert((lease.deadline_ms, TimerKind::LeaseExpiry, id));
            self.leases.entry(lease.session_id).or_default().insert(id);
        }
        if !task.state.is_terminal() && task.spec.deadline_ms != 0 {
            self.timers
                .insert((task.spec.deadline_ms, TimerKind::TaskDeadline, id));
        }
        if let Some(delegation) = task
            .delegation
            .as_ref()
            .filter(|_| !task.state.is_terminal())
        {
            self.children
                .entry(delegation.parent)
                .or_default()
                .insert(id);
        }
    }
}

impl Tasks {
    /// Recomputes every index and counter from the tasks and compares.
    pub(in crate::state_machine) fn check_invariants(&self) {
        let mut derived = Derived::default();
        for (id, task) in &self.tasks {
            assert_eq!(*id, task.id);
            check_task(task);
            derived.add(task);
        }
        assert_eq!(self.state_counts, derived.counts, "state counts");
        assert_eq!(
            self.by_queue_state, derived.by_queue_state,
            "(queue, state) index"
        );
        assert_eq!(self.ready, derived.ready, "ready index");
        assert_eq!(self.timers, derived.timers, "task timers");
        assert_eq!(self.finished, derived.finished, "finished index");
        assert_eq!(self.dead_letters, derived.dead, "dead letters");
        let by_queue: BTreeSet<TaskId> = self.dead_by_queue.values().flatten().copied().collect();
        assert_eq!(by_queue, derived.dead, "dead letters by queue");
        assert_eq!(self.gates, derived.gates, "gates");
        assert_eq!(self.leases, derived.leases, "leases by session");
        assert_eq!(
            self.children, derived.children,
            "delegated tasks by manager"
        );
        self.check_delegations();
        let digest = self.tasks.values().fold(0, |d, t| d ^ task_digest(t));
        assert_eq!(self.tasks_digest, digest, "running task digest");
        self.check_idempotency();
    }

    /// A delegated task not finished lives under its manager's current lease, no deeper than
    /// TASK_TREE_DEPTH_MAX, with a deadline no later than its manager's.
    fn check_delegations(&self) {
        for task in self.tasks.values().filter(|t| !t.state.is_terminal()) {
            let Some(delegation) = &task.delegation else {
                continue;
            };
            let manager = &self.tasks[&delegation.parent];
            let id = task.id;
            assert_eq!(
                manager.lease.as_ref().map(|l| l.token),
                Some(delegation.token),
                "task {id}: delegated under its manager's current lease"
            );
            assert_eq!(task.spec.parent_id, delegation.parent);
            assert!(delegation.depth <= crate::limits::TASK_TREE_DEPTH_MAX);
            let depth = manager.delegation.as_ref().map_or(0, |d| d.depth) + 1;
            assert_eq!(
                delegation.depth, depth,
                "task {id}: one deeper than its manager"
            );
            if manager.spec.deadline_ms != 0 {
                assert!(
                    task.spec.deadline_ms != 0 && task.spec.deadline_ms <= manager.spec.deadline_ms,
                    "task {id}: a deadline no later than its manager's"
                );
            }
        }
    }

    fn check_idempotency(&self) {
        for ((queue, key), (task_id, at_ms)) in &self.idempotency {
            assert!(self
                .idempotency_by_time
                .contains(&(*at_ms, queue.clone(), key.clone())));
            let task = self
                .tasks
                .get(task_id)
                .expect("an idempotency key names a kept task");
            assert_eq!((&task.spec.queue, &task.spec.idempotency_key), (queue, key));
        }
    }
}

/// A lease exactly while assigned, with the last token and a running attempt.
fn check_task(task: &Task) {
    let id = task.id;
    assert_eq!(
        task.lease.is_some(),
        task.state == TaskState::Assigned,
        "task {id}: a lease exactly while assigned"
    );
    if let Some(lease) = &task.lease {
        assert_eq!(
            lease.token, task.last_token,
            "task {id}: the lease has the last token"
        );
        let attempt = task
            .history
            .last()
            .expect("an assigned task has an attempt");
        assert_eq!(
            (attempt.token, attempt.outcome),
            (lease.token, AttemptOutcome::Running)
        );
    }
    assert!(task.history.len() <= crate::limits::ATTEMPT_HISTORY_MAX);
}
