//! Manager-worker trees (`CoordCommand::Delegate`): children under the manager's lease, the
//! subtree canceled however that lease ends, deadlines down the tree, the limits, and escalation
//! of a dead letter to the manager or to a capability.

use super::*;
use crate::limits::{DELEGATED_OPEN_MAX, TASK_TREE_DEPTH_MAX};

/// A manager agent holding task `task` under `token`, and a worker agent.
struct Tree {
    h: Harness,
    manager: SessionId,
    worker: SessionId,
    task: TaskId,
    token: FencingToken,
}

const MANAGER_DEADLINE: u64 = T0 + 600_000;

fn tree() -> Tree {
    let mut h = Harness::new();
    let manager = h.register("manager", &["manage", "work"], 100);
    let worker = h.register("worker", &["work", "senior"], 100);
    let task = h.submit(TaskSpec {
        deadline_ms: MANAGER_DEADLINE,
        ..needing("reports", &["manage"])
    });
    let token = h.assigned(task, manager);
    Tree {
        h,
        manager,
        worker,
        task,
        token,
    }
}

impl Tree {
    fn delegate_from(
        &mut self,
        parent: TaskId,
        token: FencingToken,
        specs: Vec<TaskSpec>,
        escalate_to: &str,
    ) -> CoordResponse {
        self.h.run(CoordCommand::Delegate {
            parent,
            token,
            tasks: specs,
            escalate_to: escalate_to.into(),
        })
    }

    /// Delegates one worker task from `parent`, which must be accepted.
    fn child_of(&mut self, parent: TaskId, token: FencingToken, escalate_to: &str) -> TaskId {
        match self.delegate_from(parent, token, vec![worker_task()], escalate_to) {
            CoordResponse::Submitted { results } => results[0].0,
            other => panic!("delegate: {other:?}"),
        }
    }

    /// manager -> child (held by the worker) -> grandchild (pending): the ids and the child's
    /// token.
    fn three_levels(&mut self) -> (TaskId, FencingToken, TaskId) {
        let child = self.child_of(self.task, self.token, "");
        let child_token = self.h.assigned(child, self.worker);
        let grandchild = self.child_of(child, child_token, "");
        (child, child_token, grandchild)
    }
}

fn worker_task() -> TaskSpec {
    TaskSpec {
        max_attempts: 1,
        ..needing("reports", &["work"])
    }
}

#[test]
fn delegated_tasks_are_children_under_the_managers_lease() {
    let mut t = tree();
    let (parent, token) = (t.task, t.token);
    let child = t.child_of(parent, token, "senior");
    let task = t.h.task(child);
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.spec.parent_id, parent);
    assert_eq!(
        task.spec.deadline_ms, MANAGER_DEADLINE,
        "the manager's deadline"
    );
    let delegation = task.delegation.clone().expect("delegated");
    assert_eq!(
        (delegation.parent, delegation.token, delegation.depth),
        (parent, token, 1)
    );
    assert_eq!(delegation.escalate_to, "senior");

    // An earlier deadline of its own is kept.
    let early = TaskSpec {
        deadline_ms: T0 + 1_000,
        ..worker_task()
    };
    let CoordResponse::Submitted { results } = t.delegate_from(parent, token, vec![early], "")
    else {
        panic!("delegated")
    };
    assert_eq!(t.h.task(results[0].0).spec.deadline_ms, T0 + 1_000);
}

#[test]
fn a_delegation_is_fenced_checked_and_all_or_nothing() {
    let mut t = tree();
    let (parent, token) = (t.task, t.token);
    let before = t.h.coordination();
    let stale = t.delegate_from(parent, token + 1, vec![worker_task()], "");
    assert!(
        matches!(stale, CoordResponse::LeaseLost { .. }),
        "{stale:?}"
    );
    let keyed = TaskSpec {
        idempotency_key: "k".into(),
        ..worker_task()
    };
    let refused = t.delegate_from(parent, token, vec![worker_task(), keyed], "");
    let CoordResponse::Invalid { reason } = refused else {
        panic!("an idempotency key is refused: {refused:?}")
    };
    assert!(reason.starts_with("tasks[1].idempotency_key"), "{reason}");
    let unknown = t.delegate_from(999, 1, vec![worker_task()], "");
    assert_eq!(unknown, CoordResponse::UnknownTask { task_id: 999 });
    assert!(t.h.coordination() == before, "refusals change nothing");
}

#[test]
fn a_tree_is_at_most_task_tree_depth_max_deep() {
    let mut t = tree();
    let (mut parent, mut token) = (t.task, t.token);
    for depth in 1..=TASK_TREE_DEPTH_MAX {
        let child = t.child_of(parent, token, "");
        assert_eq!(
            t.h.task(child).delegation.as_ref().map(|d| d.depth),
            Some(depth)
        );
        token = t.h.assigned(child, t.worker);
        parent = child;
    }
    let refused = t.delegate_from(parent, token, vec![worker_task()], "");
    let CoordResponse::Invalid { reason } = refused else {
        panic!("too deep: {refused:?}")
    };
    assert!(reason.contains("TASK_TREE_DEPTH_MAX"), "{reason}");
}

#[test]
fn a_manager_has_at_most_delegated_open_max_open_children() {
    let mut t = tree();
    let (parent, token) = (t.task, t.token);
    let all = vec![worker_task(); DELEGATED_OPEN_MAX];
    assert!(matches!(
        t.delegate_from(parent, token, all, ""),
        CoordResponse::Submitted { .. }
    ));
    let refused = t.delegate_from(parent, token, vec![worker_task()], "");
    let CoordResponse::QuotaExceeded { reason } = refused else {
        panic!("over the limit: {refused:?}")
    };
    assert!(reason.contains("DELEGATED_OPEN_MAX"), "{reason}");
    // A finished child frees its place.
    let first =
        t.h.tasks()
            .list_tasks(&TaskFilter::default(), parent, 1)
            .tasks[0]
            .id;
    t.h.run(CoordCommand::Cancel {
        task_id: first,
        reason: "done with it".into(),
    });
    assert!(matches!(
        t.delegate_from(parent, token, vec![worker_task()], ""),
        CoordResponse::Submitted { .. }
    ));
}

/// Every way a manager's lease ends: why, in the words of the children's cancel reason, and
/// the commands (at their times) that end it. The child's lease is extended where time passes,
/// so that only the manager's ends.
fn lease_enders(
    t: &Tree,
    child: TaskId,
    child_token: FencingToken,
) -> Vec<(&'static str, Vec<(u64, CoordCommand)>)> {
    let (task_id, token) = (t.task, t.token);
    let extend = |task_id, token| CoordCommand::ExtendLease {
        task_id,
        token,
        lease_ms: 700_000,
    };
    let at_once = |command| vec![(T0, command)];
    vec![
        (
            "succeeded",
            at_once(CoordCommand::Complete {
                task_id,
                token,
                result: b"done".to_vec(),
            }),
        ),
        ("failed", at_once(fail(task_id, token, true))),
        (
            "was released by its agent",
            at_once(CoordCommand::Release { task_id, token }),
        ),
        (
            "was canceled",
            at_once(CoordCommand::Cancel {
                task_id,
                reason: "operator".into(),
            }),
        ),
        (
            // Closing a session gives its leases back, as a release does.
            "was released by its agent",
            at_once(CoordCommand::CloseSession {
                session_id: t.manager,
            }),
        ),
        (
            "lost its lease (it expired)",
            vec![
                (T0 + 25_000, extend(child, child_token)),
                (T0 + 40_000, tick()),
            ],
        ),
        (
            "passed its deadline",
            vec![
                (T0 + 25_000, extend(child, child_token)),
                (T0 + 25_000, extend(task_id, token)),
                (MANAGER_DEADLINE, tick()),
            ],
        ),
    ]
}

fn tick() -> CoordCommand {
    CoordCommand::Tick {
        refresh: false,
        retention: Retention::default(),
    }
}

fn last_seq(h: &Harness) -> u64 {
    h.sm.events_after(0)
        .expect("kept")
        .last()
        .map_or(0, |e| e.seq)
}

#[test]
fn however_a_managers_lease_ends_its_subtree_is_canceled() {
    for case in 0..7 {
        let mut t = tree();
        let (child, child_token, grandchild) = t.three_levels();
        let (why, steps) = lease_enders(&t, child, child_token).swap_remove(case);
        let seq = last_seq(&t.h);
        for (at, command) in steps {
            t.h.at(at).run(command);
        }
        for id in [child, grandchild] {
            let task = t.h.task(id);
            assert_eq!(task.state, TaskState::Canceled, "{why}: task {id}");
            let expected = if id == child {
                format!("its manager, task {}, {why}", t.task)
            } else {
                format!("its manager, task {child}, was canceled")
            };
            assert_eq!(task.cancel_reason, expected);
        }
        // The child's agent is told to stop, on its stream.
        let told =
            t.h.sm
                .events_after(seq)
                .expect("kept")
                .into_iter()
                .any(|e| {
                    matches!(&e.kind, CoordEventKind::Task { task_id, revoked: Some(r), .. }
                if *task_id == child && r.canceled && r.token == child_token)
                });
        assert!(told, "{why}: the child's agent is told");
    }
}

#[test]
fn finished_children_are_left_alone_when_the_manager_ends() {
    let mut t = tree();
    let child = t.child_of(t.task, t.token, "");
    let token = t.h.assigned(child, t.worker);
    t.h.run(CoordCommand::Complete {
        task_id: child,
        token,
        result: b"section".to_vec(),
    });
    t.h.run(CoordCommand::Complete {
        task_id: t.task,
        token: t.token,
        result: b"report".to_vec(),
    });
    assert_eq!(t.h.state(child), TaskState::Succeeded);
    assert_eq!(t.h.task(child).result, b"section");
}

#[test]
fn a_dead_letter_escalates_to_its_manager() {
    let mut t = tree();
    let child = t.child_of(t.task, t.token, "");
    let token = t.h.assigned(child, t.worker);
    let seq = last_seq(&t.h);
    t.h.run(fail(child, token, false));
    let delegation = t.h.task(child).delegation.clone().expect("delegated");
    assert_eq!(delegation.escalation, Some(Escalation::Manager));
    assert_eq!(
        t.h.task_events_since(seq),
        vec![
            (child, TaskEventKind::Failed, TaskState::DeadLettered),
            (child, TaskEventKind::DeadLettered, TaskState::DeadLettered),
            (child, TaskEventKind::Escalated, TaskState::DeadLettered),
        ]
    );
    assert_eq!(
        t.h.state(t.task),
        TaskState::Assigned,
        "the manager runs on"
    );
}

#[test]
fn a_dead_letter_escalates_to_a_capability_then_to_the_manager() {
    let mut t = tree();
    let child = t.child_of(t.task, t.token, "senior");
    let token = t.h.assigned(child, t.worker);
    t.h.run(fail(child, token, false));
    let Some(Escalation::Task(handler)) = t.h.task(child).delegation.clone().unwrap().escalation
    else {
        panic!("escalated to a task")
    };
    let task = t.h.task(handler).clone();
    assert_eq!(
        task.spec.capabilities,
        BTreeSet::from(["senior".to_string()])
    );
    assert_eq!(task.spec.parent_id, t.task);
    assert_eq!(task.spec.deadline_ms, MANAGER_DEADLINE);
    assert_eq!(
        task.spec.labels.get(ESCALATED_FROM_LABEL),
        Some(&child.to_string())
    );
    let payload: serde_json::Value = serde_json::from_slice(&task.spec.payload).unwrap();
    assert_eq!(payload["escalated_task_id"], child);
    assert_eq!(payload["manager_task_id"], t.task);
    assert_eq!(payload["state"], "DEAD_LETTERED");
    assert_eq!(payload["error"], "boom");
    assert_eq!(payload["payload"], "payload");
    let delegation = task.delegation.clone().expect("delegated");
    assert_eq!(
        (delegation.token, delegation.escalate_to.as_str()),
        (t.token, "")
    );

    // The handler fails too: that escalates to the manager, never silently.
    let handler_token = t.h.assigned(handler, t.worker);
    t.h.run(fail(handler, handler_token, false));
    let escalation = t.h.task(handler).delegation.as_ref().unwrap().escalation;
    assert_eq!(escalation, Some(Escalation::Manager));
}

#[test]
fn an_expired_child_escalates_by_the_managers_deadline() {
    let mut t = tree();
    let early = TaskSpec {
        deadline_ms: T0 + 5_000,
        ..worker_task()
    };
    let CoordResponse::Submitted { results } =
        t.delegate_from(t.task, t.token, vec![early], "senior")
    else {
        panic!("delegated")
    };
    let child = results[0].0;
    t.h.at(T0 + 5_000).tick();
    assert_eq!(t.h.state(child), TaskState::Expired);
    let Some(Escalation::Task(handler)) = t.h.task(child).delegation.as_ref().unwrap().escalation
    else {
        panic!("escalated to a task")
    };
    assert_eq!(t.h.state(handler), TaskState::Pending);
    assert_eq!(t.h.task(handler).spec.deadline_ms, MANAGER_DEADLINE);
}

#[test]
fn a_dead_letter_redriven_after_its_manager_ended_runs_on_its_own() {
    let mut t = tree();
    let child = t.child_of(t.task, t.token, "");
    let token = t.h.assigned(child, t.worker);
    t.h.run(fail(child, token, false));
    t.h.run(CoordCommand::Complete {
        task_id: t.task,
        token: t.token,
        result: Vec::new(),
    });
    t.h.run(CoordCommand::Redrive {
        selector: DeadLetterSelector::Ids(vec![child]),
    });
    let task = t.h.task(child);
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.delegation, None, "no manager left");
    assert_eq!(task.spec.parent_id, t.task, "the link stays");
}

#[test]
fn a_dead_letter_redriven_while_its_manager_runs_stays_in_the_tree() {
    let mut t = tree();
    let child = t.child_of(t.task, t.token, "");
    let token = t.h.assigned(child, t.worker);
    t.h.run(fail(child, token, false));
    t.h.run(CoordCommand::Redrive {
        selector: DeadLetterSelector::Ids(vec![child]),
    });
    assert!(t.h.task(child).delegation.is_some());
    t.h.run(CoordCommand::Cancel {
        task_id: t.task,
        reason: "stop".into(),
    });
    assert_eq!(t.h.state(child), TaskState::Canceled);
}

#[test]
fn a_managers_trace_reaches_what_it_delegates() {
    let label = conclave_proto::TRACEPARENT_LABEL.to_string();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
    let mut h = Harness::new();
    let manager = h.register("manager", &["manage"], 1);
    let mut spec = needing("reports", &["manage"]);
    spec.labels.insert(label.clone(), trace.clone());
    let task = h.submit(spec);
    let token = h.assigned(task, manager);
    let own = "00-11111111111111111111111111111111-2222222222222222-01".to_string();
    let mut traced = worker_task();
    traced.labels.insert(label.clone(), own.clone());
    let CoordResponse::Submitted { results } = h.run(CoordCommand::Delegate {
        parent: task,
        token,
        tasks: vec![worker_task(), traced],
        escalate_to: String::new(),
    }) else {
        panic!("delegated")
    };
    let trace_of = |h: &Harness, id: TaskId| h.task(id).spec.labels.get(&label).cloned();
    assert_eq!(trace_of(&h, results[0].0), Some(trace), "inherited");
    assert_eq!(trace_of(&h, results[1].0), Some(own), "its own kept");
}
