//! Table-driven tests of the coordination state machine: commands in, responses and state out.
//!
//! Every command goes through `StateMachine::apply` (so the ephemeral-key hook is covered too),
//! and after every command `check_invariants` recomputes each index from the tasks, agents and
//! decisions and compares: a bookkeeping slip anywhere fails the step that made it.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::state_machine::primitive::Ctx;
use crate::state_machine::{Command, Request, Response, StateMachine};

const T0: u64 = 1_000_000;

struct Harness {
    sm: StateMachine,
    index: u64,
    now_ms: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            sm: StateMachine::new(1000),
            index: 0,
            now_ms: T0,
        }
    }

    fn agents(&self) -> &Agents {
        self.sm.agents()
    }

    fn tasks(&self) -> &Tasks {
        self.sm.tasks()
    }

    /// Tasks and agents, for comparing before and after.
    fn coordination(&self) -> (Agents, Tasks) {
        (self.agents().clone(), self.tasks().clone())
    }

    fn at(&mut self, now_ms: u64) -> &mut Self {
        self.now_ms = now_ms;
        self
    }

    fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let response = self.sm.apply(
            self.index,
            &Request {
                now_ms: self.now_ms,
                request_id: None,
                fence: None,
                command,
            },
        );
        check_invariants(&self.sm);
        response
    }

    fn run(&mut self, command: CoordCommand) -> CoordResponse {
        match self.apply(Command::Coordination(command)) {
            Response::Coordination { response, .. } => response,
            other => panic!("coordination answers Coordination, not {other:?}"),
        }
    }

    fn register_with(&mut self, spec: AgentSpec) -> SessionId {
        match self.run(CoordCommand::RegisterAgent(spec)) {
            CoordResponse::Registered { session_id, .. } => session_id,
            other => panic!("register: {other:?}"),
        }
    }

    fn register(&mut self, name: &str, capabilities: &[&str], max_concurrent: u32) -> SessionId {
        self.register_with(agent_spec(name, capabilities, max_concurrent))
    }

    fn submit_all(&mut self, specs: Vec<TaskSpec>) -> Vec<TaskId> {
        match self.run(CoordCommand::Submit { tasks: specs }) {
            CoordResponse::Submitted { results } => results.into_iter().map(|r| r.0).collect(),
            other => panic!("submit: {other:?}"),
        }
    }

    fn submit(&mut self, spec: TaskSpec) -> TaskId {
        self.submit_all(vec![spec])[0]
    }

    fn assign(&mut self, task_id: TaskId, session_id: SessionId) -> Option<FencingToken> {
        match self.run(CoordCommand::Assign {
            assignments: vec![(task_id, session_id)],
        }) {
            CoordResponse::Assigned { tokens } => tokens[0],
            other => panic!("assign: {other:?}"),
        }
    }

    fn assigned(&mut self, task_id: TaskId, session_id: SessionId) -> FencingToken {
        self.assign(task_id, session_id)
            .unwrap_or_else(|| panic!("task {task_id} should be assignable to {session_id}"))
    }

    fn tick(&mut self) -> u64 {
        self.tick_with(false, Retention::default())
    }

    fn tick_with(&mut self, refresh: bool, retention: Retention) -> u64 {
        match self.run(CoordCommand::Tick { refresh, retention }) {
            CoordResponse::Ticked { fired } => fired,
            other => panic!("tick: {other:?}"),
        }
    }

    fn task(&self, id: TaskId) -> &Task {
        self.tasks().task(id).expect("task exists")
    }

    fn state(&self, id: TaskId) -> TaskState {
        self.task(id).state
    }

    fn agent(&self, name: &str) -> &Agent {
        self.agents().agent(name).expect("agent exists")
    }

    fn decision(&self, id: DecisionId) -> &Decision {
        self.sm.decisions().decision(id).expect("decision exists")
    }

    fn propose(&mut self, spec: DecisionSpec) -> DecisionId {
        match self.run(CoordCommand::Propose(spec)) {
            CoordResponse::Proposed { decision_id } => decision_id,
            other => panic!("propose: {other:?}"),
        }
    }

    fn vote(
        &mut self,
        session_id: SessionId,
        decision_id: DecisionId,
        choice: &str,
    ) -> CoordResponse {
        self.run(CoordCommand::Vote {
            session_id,
            decision_id,
            choice: choice.into(),
            rationale: String::new(),
        })
    }

    fn put_key(&mut self, key: &str, session_id: SessionId) -> Response {
        self.apply(Command::Put {
            key: key.into(),
            value: b"v".to_vec(),
            session_id,
        })
    }

    /// Task events since `seq`, as (task, kind, state).
    fn task_events_since(&self, seq: u64) -> Vec<(TaskId, TaskEventKind, TaskState)> {
        self.sm
            .events_after(seq)
            .expect("kept")
            .into_iter()
            .filter_map(|e| match &e.kind {
                CoordEventKind::Task {
                    task_id,
                    kind,
                    state,
                    ..
                } => Some((*task_id, *kind, *state)),
                _ => None,
            })
            .collect()
    }
}

fn agent_spec(name: &str, capabilities: &[&str], max_concurrent: u32) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        labels: BTreeMap::new(),
        max_concurrent,
        version: "1".into(),
        metadata: BTreeMap::new(),
        ttl_ms: 1_000_000,
        replace: false,
        breaker_failures: 3,
        breaker_cooldown_ms: 30_000,
    }
}

fn task_spec(queue: &str) -> TaskSpec {
    TaskSpec {
        queue: queue.into(),
        payload: b"payload".to_vec(),
        content_type: String::new(),
        capabilities: BTreeSet::new(),
        priority: 0,
        max_attempts: 3,
        backoff: Backoff {
            initial_ms: 1_000,
            maximum_ms: 60_000,
            multiplier_permille: 2_000,
            jitter_permille: 0,
        },
        lease_ms: 30_000,
        deadline_ms: 0,
        not_before_ms: 0,
        idempotency_key: String::new(),
        correlation_id: String::new(),
        parent_id: 0,
        labels: BTreeMap::new(),
        requires: None,
    }
}

fn needing(queue: &str, capabilities: &[&str]) -> TaskSpec {
    TaskSpec {
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        ..task_spec(queue)
    }
}

fn decision_spec(voters: &[&str], rule: Rule) -> DecisionSpec {
    DecisionSpec {
        question: "ship it?".into(),
        options: vec!["yes".into(), "no".into(), "veto".into()],
        electorate: Electorate {
            agents: voters.iter().map(|v| v.to_string()).collect(),
            capability: String::new(),
        },
        rule,
        weights: BTreeMap::new(),
        veto_option: None,
        deadline_ms: T0 + 60_000,
        labels: BTreeMap::new(),
    }
}

/// Recomputes every index and counter from the primary data and compares: each primitive its
/// own, and here what ties them together (the agents' running sets are the tasks' leases; a
/// closed decision gates nothing).
fn check_invariants(sm: &StateMachine) {
    sm.tasks().check_invariants();
    sm.agents().check_invariants();
    check_running(sm);
    check_decisions(sm);
}

/// Every task holding a lease, in id order (through the listing API).
fn leased(sm: &StateMachine) -> Vec<&Task> {
    let filter = TaskFilter {
        states: vec![TaskState::Assigned],
        ..TaskFilter::default()
    };
    let listing = sm.tasks().list_tasks(&filter, 0, usize::MAX);
    assert!(
        !listing.more,
        "a test holds fewer leases than a listing scans"
    );
    listing.tasks
}

/// Each agent runs exactly the tasks its current session holds leases on, and every lease is
/// held by an agent's current session.
fn check_running(sm: &StateMachine) {
    let mut running: BTreeMap<(String, SessionId), BTreeSet<TaskId>> = BTreeMap::new();
    for task in leased(sm) {
        let lease = task.lease.as_ref().expect("an assigned task holds a lease");
        running
            .entry((lease.agent.clone(), lease.session_id))
            .or_default()
            .insert(task.id);
    }
    for agent in sm.agents().iter() {
        let expected = running
            .remove(&(agent.name.clone(), agent.session_id))
            .unwrap_or_default();
        assert_eq!(agent.running, expected, "agent {}: running", agent.name);
        let held: BTreeSet<TaskId> = sm
            .tasks()
            .assignments(agent.session_id)
            .iter()
            .map(|task| task.id)
            .collect();
        assert_eq!(
            held, expected,
            "agent {}: the tasks' lease index",
            agent.name
        );
    }
    assert!(
        running.is_empty(),
        "leases held by unknown sessions: {running:?}"
    );
}

/// The decisions' indexes and timers, and no task gated on a closed decision.
fn check_decisions(sm: &StateMachine) {
    let (_, decisions, open_decisions, closed_decisions, decision_timers) =
        sm.decisions().indexes();
    let blocked = TaskFilter {
        states: vec![TaskState::Blocked],
        ..TaskFilter::default()
    };
    let gating: BTreeSet<DecisionId> = sm
        .tasks()
        .list_tasks(&blocked, 0, usize::MAX)
        .tasks
        .iter()
        .filter_map(|task| task.spec.requires.as_ref().map(|gate| gate.decision_id))
        .collect();
    let mut open = BTreeSet::new();
    let mut closed = BTreeSet::new();
    let mut timers = BTreeSet::new();
    for (id, decision) in decisions {
        if decision.is_open() {
            open.insert(*id);
            timers.insert((decision.spec.deadline_ms, TimerKind::DecisionDeadline, *id));
            assert_eq!(decision.closed_ms, 0);
        } else {
            closed.insert((decision.closed_ms, *id));
            assert!(
                !gating.contains(id),
                "decision {id} is closed but gates tasks"
            );
        }
    }
    assert_eq!(open_decisions, &open, "open decisions");
    assert_eq!(closed_decisions, &closed, "closed decisions");
    assert_eq!(decision_timers, &timers, "decision timers");
}

// ---- Assignment ----

#[test]
fn assign_checks_every_condition() {
    struct Case {
        why: &'static str,
        setup: fn(&mut Harness, SessionId),
        task: fn() -> TaskSpec,
        assignable: bool,
    }
    let cases = [
        Case {
            why: "an eligible agent gets the task",
            setup: |_, _| {},
            task: || needing("q", &["gpu"]),
            assignable: true,
        },
        Case {
            why: "a missing capability refuses",
            setup: |_, _| {},
            task: || needing("q", &["gpu", "tpu"]),
            assignable: false,
        },
        Case {
            why: "a full agent refuses",
            setup: |h, s| {
                let other = h.submit(task_spec("q"));
                h.assigned(other, s);
            },
            task: || task_spec("q"),
            assignable: false,
        },
        Case {
            why: "a drained agent refuses",
            setup: |h, _| {
                h.run(CoordCommand::SetDrained {
                    name: "a".into(),
                    drained: true,
                });
            },
            task: || task_spec("q"),
            assignable: false,
        },
        Case {
            why: "an undrained agent takes work again",
            setup: |h, _| {
                for drained in [true, false] {
                    h.run(CoordCommand::SetDrained {
                        name: "a".into(),
                        drained,
                    });
                }
            },
            task: || task_spec("q"),
            assignable: true,
        },
        Case {
            why: "an open breaker refuses",
            setup: |h, s| {
                for _ in 0..3 {
                    let t = h.submit(task_spec("other"));
                    let token = h.assigned(t, s);
                    h.run(fail(t, token, true));
                }
                assert_eq!(h.agent("a").breaker, BreakerState::Open);
            },
            task: || task_spec("q"),
            assignable: false,
        },
        Case {
            why: "a gone agent refuses",
            setup: |h, s| {
                h.run(CoordCommand::CloseSession { session_id: s });
            },
            task: || task_spec("q"),
            assignable: false,
        },
        Case {
            why: "a task whose deadline passed is not assigned",
            setup: |h, _| {
                h.at(T0 + 10);
            },
            task: || TaskSpec {
                deadline_ms: T0 + 5,
                ..task_spec("q")
            },
            assignable: false,
        },
        Case {
            why: "a delayed task is not assigned",
            setup: |_, _| {},
            task: || TaskSpec {
                not_before_ms: T0 + 5,
                ..task_spec("q")
            },
            assignable: false,
        },
    ];
    for case in cases {
        let mut h = Harness::new();
        let session = h.register("a", &["gpu"], 1);
        let task = h.submit((case.task)());
        (case.setup)(&mut h, session);
        let token = h.assign(task, session);
        assert_eq!(token.is_some(), case.assignable, "{}", case.why);
        if let Some(token) = token {
            let task = h.task(task);
            assert_eq!(task.state, TaskState::Assigned);
            assert_eq!((task.attempts, task.last_token), (1, token));
            let lease = task.lease.as_ref().expect("leased");
            assert_eq!(lease.deadline_ms, h.now_ms + 30_000);
            assert!(h.agent("a").running.contains(&task.id));
        }
    }
    // An unknown task or session is skipped, not an error.
    let mut h = Harness::new();
    let s = h.register("a", &[], 1);
    assert_eq!(h.assign(99, s), None);
    let t = h.submit(task_spec("q"));
    assert_eq!(h.assign(t, 99), None);
}

#[test]
fn tokens_grow_with_every_assignment() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 4);
    let t1 = h.submit(task_spec("q"));
    let t2 = h.submit(task_spec("q"));
    let first = h.assigned(t1, s);
    h.run(CoordCommand::Release {
        task_id: t1,
        token: first,
    });
    let other = h.assigned(t2, s);
    let second = h.assigned(t1, s);
    assert!(
        first < other && other < second,
        "{first} < {other} < {second}"
    );
    assert_eq!(h.task(t1).attempts, 1, "a release is not counted");
    let history: Vec<_> = h
        .task(t1)
        .history
        .iter()
        .map(|a| (a.token, a.outcome))
        .collect();
    assert_eq!(
        history,
        vec![
            (first, AttemptOutcome::Released),
            (second, AttemptOutcome::Running)
        ]
    );
}

#[test]
fn plan_prefers_the_least_loaded_agent_and_counts_capacity() {
    let mut h = Harness::new();
    let big = h.register("big", &[], 4);
    let small = h.register("small", &[], 1);
    let busy = h.submit(task_spec("q"));
    h.assigned(busy, big);
    let tasks = h.submit_all((0..6).map(|_| task_spec("q")).collect());
    // big runs 1/4, small 0/1: small first (0), then big (1/4, 2/4, 3/4), then nobody.
    let plan = h.sm.plan_assignments(h.now_ms, 100);
    assert_eq!(
        plan,
        vec![
            (tasks[0], small),
            (tasks[1], big),
            (tasks[2], big),
            (tasks[3], big)
        ]
    );
    // Ties go by name.
    let mut h = Harness::new();
    let b = h.register("b", &[], 1);
    let a = h.register("a", &[], 1);
    let tasks = h.submit_all(vec![task_spec("q"), task_spec("q")]);
    assert_eq!(
        h.sm.plan_assignments(h.now_ms, 100),
        vec![(tasks[0], a), (tasks[1], b)]
    );
    assert_eq!(h.sm.plan_assignments(h.now_ms, 1), vec![(tasks[0], a)]);
    assert_eq!(h.sm.plan_assignments(h.now_ms, 0), vec![]);
}

#[test]
fn plan_orders_by_priority_then_deadline_then_arrival() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 10);
    let spec = |priority: i32, deadline_ms: u64| TaskSpec {
        priority,
        deadline_ms,
        ..task_spec("q")
    };
    let ids = h.submit_all(vec![
        spec(0, 0),
        spec(5, 0),
        spec(5, T0 + 9_000),
        spec(-3, 0),
        spec(5, T0 + 5_000),
        spec(0, 0),
    ]);
    let order: Vec<TaskId> =
        h.sm.plan_assignments(h.now_ms, 100)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
    assert_eq!(order, vec![ids[4], ids[2], ids[1], ids[0], ids[5], ids[3]]);
    assert!(h
        .sm
        .plan_assignments(h.now_ms, 100)
        .iter()
        .all(|p| p.1 == s));
}

#[test]
fn plan_is_fair_across_queues() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 100);
    let a = h.submit_all((0..5).map(|_| task_spec("a")).collect());
    let b = h.submit_all((0..2).map(|_| task_spec("b")).collect());
    let c = h.submit_all((0..1).map(|_| task_spec("c")).collect());
    let order: Vec<TaskId> =
        h.sm.plan_assignments(h.now_ms, 100)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
    // Round-robin: one per queue per round, queues in name order.
    assert_eq!(order, vec![a[0], b[0], c[0], a[1], b[1], a[2], a[3], a[4]]);
    // Across plans: the next plan starts after the queue of the last assignment.
    h.assigned(a[0], s);
    let next: Vec<TaskId> =
        h.sm.plan_assignments(h.now_ms, 3)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
    assert_eq!(next, vec![b[0], c[0], a[1]]);
}

#[test]
fn plan_skips_what_no_agent_can_take_and_scans_a_bounded_prefix() {
    let mut h = Harness::new();
    let s = h.register("a", &["cpu"], 10);
    // Higher-priority tasks no agent can take do not block the queue.
    let gpu = h.submit(TaskSpec {
        priority: 9,
        ..needing("q", &["gpu"])
    });
    let cpu = h.submit(needing("q", &["cpu"]));
    assert_eq!(h.sm.plan_assignments(h.now_ms, 10), vec![(cpu, s)]);
    // But only SCAN_PER_QUEUE ready tasks are looked at per queue and plan.
    let blockers: Vec<TaskSpec> = (0..SCAN_PER_QUEUE)
        .map(|_| TaskSpec {
            priority: 5,
            ..needing("q", &["gpu"])
        })
        .collect();
    h.submit_all(blockers);
    assert_eq!(h.sm.plan_assignments(h.now_ms, 10), vec![]);
    let other = h.submit(task_spec("r"));
    assert_eq!(h.sm.plan_assignments(h.now_ms, 10), vec![(other, s)]);
    assert_eq!(h.state(gpu), TaskState::Pending);
}

#[test]
fn plan_stays_bounded_with_100k_pending_tasks() {
    let mut h = Harness::new();
    let s = h.register("a", &["cpu"], 10);
    // 100,000 ready tasks no agent can take, ahead of one it can, plus another queue.
    for _ in 0..100 {
        let batch: Vec<TaskSpec> = (0..1000)
            .map(|_| TaskSpec {
                priority: 1,
                ..needing("big", &["gpu"])
            })
            .collect();
        h.sm.apply(
            {
                h.index += 1;
                h.index
            },
            &Request {
                now_ms: h.now_ms,
                request_id: None,
                fence: None,
                command: Command::Coordination(CoordCommand::Submit { tasks: batch }),
            },
        );
    }
    let reachable = h.submit(task_spec("small"));
    assert_eq!(h.sm.coord_stats().pending, 100_001);
    let started = std::time::Instant::now();
    let plan = h.sm.plan_assignments(h.now_ms, 1024);
    eprintln!(
        "plan over 100,001 pending tasks took {:?} (debug build)",
        started.elapsed()
    );
    assert_eq!(plan, vec![(reachable, s)]);
}

// ---- Verbs and fencing ----

fn fail(task_id: TaskId, token: FencingToken, retryable: bool) -> CoordCommand {
    CoordCommand::Fail {
        task_id,
        token,
        error: "boom".into(),
        retryable,
        retry_after_ms: 0,
    }
}

#[test]
fn every_verb_is_fenced_by_the_current_token() {
    type Verb = fn(TaskId, FencingToken) -> CoordCommand;
    let verbs: [(&str, Verb, CoordResponse); 5] = [
        (
            "complete",
            |task_id, token| CoordCommand::Complete {
                task_id,
                token,
                result: b"done".to_vec(),
            },
            CoordResponse::Verb {
                state: TaskState::Succeeded,
                lease_deadline_ms: 0,
            },
        ),
        (
            "fail",
            |task_id, token| fail(task_id, token, true),
            CoordResponse::Verb {
                state: TaskState::RetryWait,
                lease_deadline_ms: 0,
            },
        ),
        (
            "extend",
            |task_id, token| CoordCommand::ExtendLease {
                task_id,
                token,
                lease_ms: 50_000,
            },
            CoordResponse::Verb {
                state: TaskState::Assigned,
                lease_deadline_ms: T0 + 100 + 50_000,
            },
        ),
        (
            "progress",
            |task_id, token| CoordCommand::Progress {
                task_id,
                token,
                percent: 40,
                message: "halfway".into(),
                checkpoint: "ckpt/1".into(),
                extend_lease: true,
            },
            CoordResponse::Verb {
                state: TaskState::Assigned,
                lease_deadline_ms: T0 + 100 + 30_000,
            },
        ),
        (
            "release",
            |task_id, token| CoordCommand::Release { task_id, token },
            CoordResponse::Verb {
                state: TaskState::Pending,
                lease_deadline_ms: 0,
            },
        ),
    ];
    for (name, verb, expected) in verbs {
        // Current token: applies.
        let mut h = Harness::new();
        let s = h.register("a", &[], 2);
        let t = h.submit(task_spec("q"));
        let token = h.assigned(t, s);
        h.at(T0 + 100);
        assert_eq!(
            h.run(verb(t, token)),
            expected,
            "{name} with the current token"
        );

        // Stale tokens: the lease expired and the task was reassigned; or it was canceled; or
        // the token was never issued. Each changes nothing at all.
        let mut h = Harness::new();
        let s = h.register("a", &[], 2);
        let t = h.submit(task_spec("q"));
        let old = h.assigned(t, s);
        h.at(T0 + 30_000);
        h.tick();
        assert_eq!(h.task(t).history[0].outcome, AttemptOutcome::LeaseExpired);
        let current = h.assigned(t, s);
        let stale_cases = [
            (
                old,
                format!("lease lost: task {t} is now assigned with token {current}"),
            ),
            (
                current + 100,
                format!("lease lost: task {t} is now assigned with token {current}"),
            ),
        ];
        for (token, reason) in stale_cases {
            let before = h.coordination();
            let digest = h.sm.digest();
            assert_eq!(
                h.run(verb(t, token)),
                CoordResponse::LeaseLost { reason },
                "{name} with stale token {token}"
            );
            assert_eq!(
                h.sm.digest(),
                digest,
                "{name}: a stale verb changes nothing"
            );
            assert!(
                h.coordination() == before,
                "{name}: a stale verb changes nothing"
            );
        }
        let canceled = h.submit(task_spec("q"));
        let token = h.assigned(canceled, s);
        h.run(CoordCommand::Cancel {
            task_id: canceled,
            reason: "no longer needed".into(),
        });
        let digest = h.sm.digest();
        assert_eq!(
            h.run(verb(canceled, token)),
            CoordResponse::LeaseLost {
                reason: format!("lease lost: task {canceled} was canceled")
            }
        );
        assert_eq!(h.sm.digest(), digest);
        assert_eq!(
            h.run(verb(999, 1)),
            CoordResponse::UnknownTask { task_id: 999 }
        );
    }
}

#[test]
fn lease_lost_reasons_name_what_happened() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 4);
    let t = h.submit(TaskSpec {
        max_attempts: 1,
        ..task_spec("q")
    });
    let token = h.assigned(t, s);
    h.at(T0 + 30_000);
    h.tick();
    assert_eq!(h.state(t), TaskState::DeadLettered);
    let complete = |token| CoordCommand::Complete {
        task_id: t,
        token,
        result: vec![],
    };
    assert_eq!(
        h.run(complete(token)),
        CoordResponse::LeaseLost {
            reason: "lease lost: the lease expired".into()
        }
    );
    let done = h.submit(task_spec("q"));
    let token = h.assigned(done, s);
    h.run(CoordCommand::Complete {
        task_id: done,
        token,
        result: vec![],
    });
    assert_eq!(
        h.run(CoordCommand::Release {
            task_id: done,
            token
        }),
        CoordResponse::LeaseLost {
            reason: format!("lease lost: task {done} already succeeded with token {token}")
        }
    );
}

#[test]
fn complete_stores_the_result_and_closes_the_attempt() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 1);
    let t = h.submit(task_spec("q"));
    let token = h.assigned(t, s);
    h.at(T0 + 5);
    h.run(CoordCommand::Progress {
        task_id: t,
        token,
        percent: 250,
        message: "m".into(),
        checkpoint: "c".into(),
        extend_lease: false,
    });
    assert_eq!(h.task(t).progress.as_ref().map(|p| p.percent), Some(100));
    assert_eq!(
        h.task(t).lease.as_ref().map(|l| l.deadline_ms),
        Some(T0 + 30_000)
    );
    h.run(CoordCommand::Complete {
        task_id: t,
        token,
        result: b"42".to_vec(),
    });
    let task = h.task(t);
    assert_eq!(
        (task.state, task.result.as_slice()),
        (TaskState::Succeeded, &b"42"[..])
    );
    assert_eq!(task.history[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(task.history[0].ended_ms, T0 + 5);
    assert!(task.lease.is_none());
    let agent = h.agent("a");
    assert_eq!((agent.completed, agent.running.len()), (1, 0));
}

// ---- Failures, backoff, dead letters ----

#[test]
fn backoff_is_exponential_capped_and_deterministically_jittered() {
    let backoff = |initial_ms, maximum_ms, multiplier_permille, jitter_permille| Backoff {
        initial_ms,
        maximum_ms,
        multiplier_permille,
        jitter_permille,
    };
    // (backoff, attempt, expected delay) without jitter.
    let cases = [
        (backoff(1_000, 60_000, 2_000, 0), 1, 1_000),
        (backoff(1_000, 60_000, 2_000, 0), 2, 2_000),
        (backoff(1_000, 60_000, 2_000, 0), 3, 4_000),
        (backoff(1_000, 60_000, 2_000, 0), 7, 60_000),
        (backoff(1_000, 60_000, 2_000, 0), 100, 60_000),
        (backoff(1_000, 60_000, 2_000, 0), u32::MAX, 60_000),
        (backoff(500, 10_000, 1_000, 0), 9, 500),
        (backoff(0, 10_000, 3_000, 0), 4, 0),
        (backoff(1_000, 5_000, 10_000, 0), 2, 5_000),
        // Thousandths grow exactly: 1000 * 1.5^3, 5000 * 1.501 (7504.999... in f64).
        (backoff(1_000, 60_000, 1_500, 0), 4, 3_375),
        (backoff(5_000, 60_000, 1_501, 0), 2, 7_505),
        // Rounded down: 7 * 1.1^2 = 8.47.
        (backoff(7, 60_000, 1_100, 0), 3, 8),
        // A maximum below the initial delay caps it.
        (backoff(2_000, 1_000, 2_000, 0), 1, 1_000),
        // Nonsense is not a panic: below 1.0 grows like 1.0, jitter above 1.0 is 1.0.
        (backoff(1_000, 5_000, 0, 0), 3, 1_000),
        (backoff(u64::MAX, u64::MAX, u32::MAX, 0), u32::MAX, u64::MAX),
        (backoff(u64::MAX / 3, u64::MAX, u32::MAX, 0), 2, u64::MAX),
        (backoff(1, u64::MAX, u32::MAX, 0), 1024, u64::MAX),
    ];
    for (b, attempt, expected) in cases {
        assert_eq!(b.delay_ms(7, attempt), expected, "{b:?} attempt {attempt}");
    }
    assert!(backoff(1_000, 5_000, 2_000, u32::MAX).delay_ms(7, 1) <= 1_000);
    let jittered = backoff(10_000, 60_000, 2_000, 500);
    let mut seen = BTreeSet::new();
    for task_id in 1..50 {
        let delay = jittered.delay_ms(task_id, 1);
        assert_eq!(delay, jittered.delay_ms(task_id, 1), "deterministic");
        assert!((5_000..=10_000).contains(&delay), "within jitter: {delay}");
        // Exactly floor(10000 * (1 - 0.5 * X / 2^53)) = 10000 - ceil(5000 * X / 2^53).
        let fraction = u128::from(super::tasks::jitter_fraction(task_id, 1));
        let cut = (5_000 * fraction).div_ceil(1 << 53) as u64;
        assert_eq!(delay, 10_000 - cut, "task {task_id}");
        seen.insert(delay);
    }
    assert!(
        seen.len() > 40,
        "jitter spreads retries: {} distinct",
        seen.len()
    );
    // Full jitter can take the whole delay away, never more.
    let full = backoff(1_000, 1_000, 1_000, 1_000);
    assert!((0..2_000).all(|task_id| full.delay_ms(task_id, 1) <= 1_000));
    for task_id in 0..1000 {
        let frac = super::tasks::jitter_fraction(task_id, 3);
        assert!(frac < 1 << 53);
    }
}

#[test]
fn failures_retry_after_backoff_then_dead_letter() {
    let mut h = Harness::new();
    let s = h.register_with(AgentSpec {
        breaker_failures: 100,
        ..agent_spec("a", &[], 1)
    });
    let t = h.submit(task_spec("q"));
    // Attempt 1 fails: retry after 1 s (backoff); retry_after_ms 5 s wins over a shorter backoff.
    let token = h.assigned(t, s);
    h.run(fail(t, token, true));
    assert_eq!(
        (
            h.state(t),
            h.task(t).ready_at_ms,
            h.task(t).last_error.as_str()
        ),
        (TaskState::RetryWait, T0 + 1_000, "boom")
    );
    assert_eq!(h.assign(t, s), None, "not assignable while waiting");
    h.at(T0 + 999).tick();
    assert_eq!(h.state(t), TaskState::RetryWait);
    h.at(T0 + 1_000).tick();
    assert_eq!(h.state(t), TaskState::Pending);
    let token = h.assigned(t, s);
    h.run(CoordCommand::Fail {
        task_id: t,
        token,
        error: "rate limited".into(),
        retryable: true,
        retry_after_ms: 5_000,
    });
    assert_eq!(h.task(t).ready_at_ms, T0 + 1_000 + 5_000);
    h.at(T0 + 6_000).tick();
    // Attempt 3 of 3 fails: dead-lettered, attempts exhausted.
    let token = h.assigned(t, s);
    let seq = h.sm.last_event_seq();
    h.run(fail(t, token, true));
    let task = h.task(t);
    assert_eq!(
        (task.state, task.dead_letter_reason, task.attempts),
        (
            TaskState::DeadLettered,
            Some(DeadLetterReason::AttemptsExhausted),
            3
        )
    );
    assert_eq!(
        h.task_events_since(seq),
        vec![
            (t, TaskEventKind::Failed, TaskState::DeadLettered),
            (t, TaskEventKind::DeadLettered, TaskState::DeadLettered)
        ]
    );
    // A non-retryable failure dead-letters at once.
    let u = h.submit(task_spec("q"));
    let token = h.assigned(u, s);
    h.run(fail(u, token, false));
    assert_eq!(
        (h.state(u), h.task(u).dead_letter_reason),
        (
            TaskState::DeadLettered,
            Some(DeadLetterReason::NotRetryable)
        )
    );
    assert_eq!(h.agent("a").failed, 4);
    let (listed, more) = h.tasks().dead_letters("q", 0, 10);
    assert_eq!(
        (listed.iter().map(|t| t.id).collect::<Vec<_>>(), more),
        (vec![t, u], false)
    );
    assert!(h.tasks().dead_letters("q", 0, 1).1);
    assert_eq!(h.tasks().dead_letters("other", 0, 10).0.len(), 0);
    assert_eq!(h.sm.coord_stats().dead_letters, 2);
}

#[test]
fn lease_expiry_counts_the_attempt_and_requeues_or_dead_letters() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 1);
    let t = h.submit(TaskSpec {
        max_attempts: 2,
        ..task_spec("q")
    });
    for attempt in 1..=2u32 {
        let token = h.assigned(t, s);
        let deadline = h.task(t).lease.as_ref().expect("leased").deadline_ms;
        assert_eq!(h.sm.next_due_ms(), Some(deadline));
        h.at(deadline - 1).tick();
        assert_eq!(h.state(t), TaskState::Assigned);
        let seq = h.sm.last_event_seq();
        h.at(deadline).tick();
        let expected = if attempt == 1 {
            TaskState::Pending
        } else {
            TaskState::DeadLettered
        };
        assert_eq!(h.state(t), expected, "after attempt {attempt}");
        let revoked =
            h.sm.events_after(seq)
                .expect("kept")
                .into_iter()
                .find_map(|e| match &e.kind {
                    CoordEventKind::Task { revoked, .. } => revoked.clone(),
                    _ => None,
                });
        assert_eq!(
            revoked,
            Some(Revoked {
                session_id: s,
                token,
                canceled: false,
                reason: "the lease expired".into()
            })
        );
    }
    assert_eq!(h.task(t).attempts, 2);
}

#[test]
fn redrive_and_purge_dead_letters_by_ids_and_by_queue() {
    let mut h = Harness::new();
    let s = h.register_with(AgentSpec {
        breaker_failures: 100,
        ..agent_spec("a", &[], 10)
    });
    let dead = |h: &mut Harness, queue: &str| {
        let t = h.submit(task_spec(queue));
        let token = h.assigned(t, s);
        h.run(fail(t, token, false));
        t
    };
    let a1 = dead(&mut h, "a");
    let a2 = dead(&mut h, "a");
    let b1 = dead(&mut h, "b");
    let live = h.submit(task_spec("a"));
    let redrive = |selector| CoordCommand::Redrive { selector };
    // Ids that are not dead letters are skipped.
    assert_eq!(
        h.run(redrive(DeadLetterSelector::Ids(vec![a1, live, 999, a1]))),
        CoordResponse::DeadLetters { count: 1 }
    );
    let task = h.task(a1);
    assert_eq!(
        (
            task.state,
            task.attempts,
            task.dead_letter_reason,
            task.history.len()
        ),
        (TaskState::Pending, 0, None, 1),
        "redriven as new; the attempt log is kept"
    );
    assert_eq!(
        h.run(redrive(DeadLetterSelector::Queue("a".into()))),
        CoordResponse::DeadLetters { count: 1 }
    );
    assert_eq!(h.state(a2), TaskState::Pending);
    let a3 = dead(&mut h, "a");
    assert_eq!(
        h.run(CoordCommand::Purge {
            selector: DeadLetterSelector::Queue(String::new())
        }),
        CoordResponse::DeadLetters { count: 2 }
    );
    assert!(h.tasks().task(b1).is_none() && h.tasks().task(a3).is_none());
    assert_eq!(
        h.run(CoordCommand::Purge {
            selector: DeadLetterSelector::Ids(vec![a1])
        }),
        CoordResponse::DeadLetters { count: 0 },
        "a1 is pending, not a dead letter"
    );
}

// ---- Deadlines, delays, idempotency, cancellation ----

#[test]
fn deadlines_expire_tasks_in_every_live_state() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 10);
    let d = h.propose(decision_spec(&["a"], Rule::Majority));
    let deadline = |spec: TaskSpec| TaskSpec {
        deadline_ms: T0 + 1_000,
        ..spec
    };
    let pending = h.submit(deadline(task_spec("q")));
    let assigned = h.submit(deadline(task_spec("q")));
    let delayed = h.submit(deadline(TaskSpec {
        not_before_ms: T0 + 5_000,
        ..task_spec("q")
    }));
    let blocked = h.submit(deadline(TaskSpec {
        requires: Some(DecisionGate {
            decision_id: d,
            option: "yes".into(),
        }),
        ..task_spec("q")
    }));
    let done = h.submit(deadline(task_spec("q")));
    let token = h.assigned(assigned, s);
    let done_token = h.assigned(done, s);
    h.run(CoordCommand::Complete {
        task_id: done,
        token: done_token,
        result: vec![],
    });
    assert_eq!(h.state(delayed), TaskState::Delayed);
    assert_eq!(h.state(blocked), TaskState::Blocked);
    let seq = h.sm.last_event_seq();
    h.at(T0 + 1_000).tick();
    for t in [pending, assigned, delayed, blocked] {
        let task = h.task(t);
        assert_eq!(
            (task.state, task.dead_letter_reason),
            (TaskState::Expired, Some(DeadLetterReason::DeadlineExceeded)),
            "task {t}"
        );
    }
    assert_eq!(
        h.state(done),
        TaskState::Succeeded,
        "terminal tasks do not expire"
    );
    assert!(h.agent("a").running.is_empty());
    assert_eq!(
        h.task(assigned).history[0].outcome,
        AttemptOutcome::DeadlineExceeded
    );
    let revoked: Vec<Revoked> =
        h.sm.events_after(seq)
            .expect("kept")
            .into_iter()
            .filter_map(|e| match &e.kind {
                CoordEventKind::Task { revoked, .. } => revoked.clone(),
                _ => None,
            })
            .collect();
    assert_eq!(
        revoked,
        vec![Revoked {
            session_id: s,
            token,
            canceled: false,
            reason: "the task's deadline passed".into()
        }]
    );
    // Redriving an expired task clears its deadline.
    h.run(CoordCommand::Redrive {
        selector: DeadLetterSelector::Ids(vec![pending]),
    });
    assert_eq!(
        (h.state(pending), h.task(pending).spec.deadline_ms),
        (TaskState::Pending, 0)
    );
}

#[test]
fn delayed_tasks_become_pending_at_not_before() {
    let mut h = Harness::new();
    let t = h.submit(TaskSpec {
        not_before_ms: T0 + 500,
        ..task_spec("q")
    });
    let past = h.submit(TaskSpec {
        not_before_ms: T0 - 500,
        ..task_spec("q")
    });
    assert_eq!(
        (h.state(t), h.task(t).ready_at_ms),
        (TaskState::Delayed, T0 + 500)
    );
    assert_eq!(h.state(past), TaskState::Pending);
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 500));
    h.at(T0 + 499).tick();
    assert_eq!(h.state(t), TaskState::Delayed);
    assert_eq!(h.at(T0 + 500).tick(), 1);
    assert_eq!(h.state(t), TaskState::Pending);
    assert_eq!(
        h.sm.next_due_ms(),
        None,
        "nothing else is due: no tick storm"
    );
}

#[test]
fn idempotency_keys_return_the_original_task_within_the_window() {
    let mut h = Harness::new();
    let keyed = |queue: &str, key: &str| TaskSpec {
        idempotency_key: key.into(),
        ..task_spec(queue)
    };
    let first = h.submit(keyed("q", "k"));
    // A hit, within a batch too; another queue or key is another task.
    assert_eq!(
        h.run(CoordCommand::Submit {
            tasks: vec![
                keyed("q", "k"),
                keyed("r", "k"),
                keyed("q", "j"),
                keyed("q", "j")
            ]
        }),
        CoordResponse::Submitted {
            results: vec![
                (first, true),
                (first + 1, false),
                (first + 2, false),
                (first + 2, true)
            ]
        }
    );
    assert_eq!(h.sm.coord_stats().tasks, 3);
    // After the window the key is forgotten and the same key makes a new task.
    let retention = Retention {
        idempotency_ms: 60_000,
        ..Retention::default()
    };
    h.tick_with(false, retention.clone());
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 60_000));
    h.at(T0 + 60_000).tick_with(false, retention);
    assert_eq!(h.sm.next_due_ms(), None);
    assert_eq!(
        h.run(CoordCommand::Submit {
            tasks: vec![keyed("q", "k")]
        }),
        CoordResponse::Submitted {
            results: vec![(first + 3, false)]
        }
    );
    // A purged task frees its key at once.
    let s = h.register("a", &[], 1);
    let token = h.assigned(first + 3, s);
    h.run(fail(first + 3, token, false));
    h.run(CoordCommand::Purge {
        selector: DeadLetterSelector::Ids(vec![first + 3]),
    });
    assert_eq!(h.submit(keyed("q", "k")), first + 4);
}

#[test]
fn cancel_pending_assigned_blocked_and_terminal_tasks() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 10);
    let d = h.propose(decision_spec(&["a"], Rule::Majority));
    let pending = h.submit(task_spec("q"));
    let assigned = h.submit(task_spec("q"));
    let blocked = h.submit(TaskSpec {
        requires: Some(DecisionGate {
            decision_id: d,
            option: "yes".into(),
        }),
        ..task_spec("q")
    });
    let token = h.assigned(assigned, s);
    let cancel = |task_id| CoordCommand::Cancel {
        task_id,
        reason: "operator".into(),
    };
    for (t, previous) in [(pending, TaskState::Pending), (blocked, TaskState::Blocked)] {
        assert_eq!(
            h.run(cancel(t)),
            CoordResponse::Canceled {
                canceled: true,
                previous
            }
        );
        assert_eq!(
            (h.state(t), h.task(t).cancel_reason.as_str()),
            (TaskState::Canceled, "operator")
        );
    }
    let seq = h.sm.last_event_seq();
    assert_eq!(
        h.run(cancel(assigned)),
        CoordResponse::Canceled {
            canceled: true,
            previous: TaskState::Assigned
        }
    );
    let event = &h.sm.events_after(seq).expect("kept")[0].kind;
    assert_eq!(
        event,
        &CoordEventKind::Task {
            task_id: assigned,
            queue: "q".into(),
            kind: TaskEventKind::Canceled,
            state: TaskState::Canceled,
            attempts: 1,
            lease: None,
            revoked: Some(Revoked {
                session_id: s,
                token,
                canceled: true,
                reason: "operator".into()
            })
        }
    );
    assert!(h.agent("a").running.is_empty());
    assert_eq!(
        h.task(assigned).history[0].outcome,
        AttemptOutcome::Canceled
    );
    // Terminal: left as it was.
    let before = h.task(assigned).clone();
    assert_eq!(
        h.run(cancel(assigned)),
        CoordResponse::Canceled {
            canceled: false,
            previous: TaskState::Canceled
        }
    );
    assert_eq!(h.task(assigned), &before);
    assert_eq!(
        h.run(cancel(999)),
        CoordResponse::UnknownTask { task_id: 999 }
    );
}

// ---- Sessions and ephemeral keys ----

#[test]
fn session_expiry_revokes_leases_requeues_and_deletes_ephemeral_keys() {
    let mut h = Harness::new();
    let s = h.register_with(AgentSpec {
        ttl_ms: 10_000,
        ..agent_spec("a", &[], 10)
    });
    let other = h.register("b", &[], 10);
    let requeued = h.submit(task_spec("q"));
    let last_try = h.submit(TaskSpec {
        max_attempts: 1,
        ..task_spec("q")
    });
    h.assigned(requeued, s);
    h.assigned(last_try, s);
    for key in ["lock/a", "lock/b", "member/a"] {
        assert!(matches!(h.put_key(key, s), Response::Put { .. }));
    }
    h.put_key("member/b", other);
    h.put_key("plain", 0);
    // Re-put without a session detaches the key: it survives the session.
    h.put_key("lock/b", 0);
    assert_eq!(h.sm.get(b"lock/b").map(|kv| kv.session_id), Some(0));
    assert_eq!(h.sm.get(b"lock/a").map(|kv| kv.session_id), Some(s));
    let revision = h.sm.revision();

    // A heartbeat extends the session; then heartbeats stop.
    h.at(T0 + 4_000);
    h.run(CoordCommand::Heartbeats {
        beats: vec![
            Beat {
                session_id: s,
                load: 2,
            },
            Beat {
                session_id: 999,
                load: 0,
            },
        ],
    });
    assert_eq!(h.agent("a").expires_at_ms, T0 + 14_000);
    assert_eq!(h.agent("a").reported_load, 2);
    h.at(T0 + 13_999).tick();
    assert!(h.agent("a").live);
    h.run(CoordCommand::Heartbeats {
        beats: vec![Beat {
            session_id: other,
            load: 0,
        }],
    });
    h.at(T0 + 14_000).tick();

    let agent = h.agent("a");
    assert!(!agent.live && agent.running.is_empty());
    assert_eq!(agent.gone_ms, T0 + 14_000);
    assert!(!h.agents().session_live(s));
    assert_eq!(h.state(requeued), TaskState::Pending);
    assert_eq!(
        h.task(requeued).attempts,
        1,
        "a lost session counts the attempt"
    );
    assert_eq!(
        h.task(requeued).history[0].outcome,
        AttemptOutcome::SessionLost
    );
    assert_eq!(
        (h.state(last_try), h.task(last_try).dead_letter_reason),
        (
            TaskState::DeadLettered,
            Some(DeadLetterReason::AttemptsExhausted)
        )
    );
    // Both ephemeral keys gone in exactly one new revision.
    assert_eq!(h.sm.revision(), revision + 1);
    let change = &h.sm.history().since(revision + 1, 10).expect("kept")[0];
    let deleted: Vec<_> = change.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(deleted, vec![b"lock/a".to_vec(), b"member/a".to_vec()]);
    assert!(h.sm.get(b"lock/b").is_some() && h.sm.get(b"member/b").is_some());
    assert!(h.sm.get(b"plain").is_some());
    // A put on the gone session is refused and writes nothing.
    assert_eq!(
        h.put_key("lock/a", s),
        Response::SessionNotLive {
            revision: revision + 1,
            session_id: s
        }
    );
    assert_eq!(
        h.put_key("x", 12345),
        Response::SessionNotLive {
            revision: revision + 1,
            session_id: 12345
        }
    );
    // Heartbeats of a gone session are ignored; the session stays gone.
    h.run(CoordCommand::Heartbeats {
        beats: vec![Beat {
            session_id: s,
            load: 0,
        }],
    });
    assert!(!h.agent("a").live);
    let closed =
        h.sm.events_after(0)
            .expect("kept")
            .into_iter()
            .filter_map(|e| match &e.kind {
                CoordEventKind::SessionClosed {
                    session_id, reason, ..
                } => Some((*session_id, reason.clone())),
                _ => None,
            })
            .collect::<Vec<_>>();
    assert_eq!(closed, vec![(s, "session expired".to_string())]);
    assert_eq!(h.agents().agent_by_session(s).map(|a| a.live), Some(false));
}

#[test]
fn refresh_tick_extends_sessions_and_leases() {
    let mut h = Harness::new();
    let s = h.register_with(AgentSpec {
        ttl_ms: 10_000,
        ..agent_spec("a", &[], 1)
    });
    let t = h.submit(task_spec("q"));
    h.assigned(t, s);
    // A new leader takes over late: everything would be due, but the refresh comes first.
    h.at(T0 + 40_000);
    let seq = h.sm.last_event_seq();
    assert_eq!(h.tick_with(true, Retention::default()), 0);
    assert!(h.agent("a").live);
    assert_eq!(h.agent("a").expires_at_ms, T0 + 50_000);
    assert_eq!(
        h.task(t).lease.as_ref().map(|l| l.deadline_ms),
        Some(T0 + 70_000)
    );
    assert_eq!(h.sm.last_event_seq(), seq);
    // A refresh never shortens anything.
    h.at(T0 + 40_001).tick_with(true, Retention::default());
    assert_eq!(
        h.task(t).lease.as_ref().map(|l| l.deadline_ms),
        Some(T0 + 70_001)
    );
}

#[test]
fn close_session_gives_leases_back_without_counting() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 2);
    let t = h.submit(TaskSpec {
        max_attempts: 1,
        ..task_spec("q")
    });
    h.assigned(t, s);
    h.put_key("lock", s);
    let revision = h.sm.revision();
    assert_eq!(
        h.run(CoordCommand::CloseSession { session_id: s }),
        CoordResponse::Closed { released: 1 }
    );
    let task = h.task(t);
    assert_eq!((task.state, task.attempts), (TaskState::Pending, 0));
    assert_eq!(task.history[0].outcome, AttemptOutcome::Released);
    assert!(h.sm.get(b"lock").is_none());
    assert_eq!(h.sm.revision(), revision + 1);
    assert_eq!(
        h.run(CoordCommand::CloseSession { session_id: s }),
        CoordResponse::UnknownSession { session_id: s }
    );
    assert_eq!(
        h.run(CoordCommand::CloseSession { session_id: 77 }),
        CoordResponse::UnknownSession { session_id: 77 }
    );
    // With no keys the revision does not move.
    let s2 = h.register("b", &[], 1);
    let revision = h.sm.revision();
    h.run(CoordCommand::CloseSession { session_id: s2 });
    assert_eq!(h.sm.revision(), revision);
}

#[test]
fn register_replace_and_reregister() {
    let mut h = Harness::new();
    let s1 = h.register("a", &["x"], 2);
    let t = h.submit(task_spec("q"));
    let token = h.assigned(t, s1);
    h.put_key("lock", s1);
    let done = h.submit(task_spec("q"));
    let done_token = h.assigned(done, s1);
    h.run(CoordCommand::Complete {
        task_id: done,
        token: done_token,
        result: vec![],
    });
    h.run(CoordCommand::SetDrained {
        name: "a".into(),
        drained: true,
    });
    assert_eq!(
        h.run(CoordCommand::RegisterAgent(agent_spec("a", &["x"], 2))),
        CoordResponse::AgentExists { name: "a".into() }
    );
    let s2 = h.register_with(AgentSpec {
        replace: true,
        ..agent_spec("a", &["x", "y"], 3)
    });
    assert!(s2 > s1);
    let agent = h.agent("a");
    assert!(agent.live && agent.session_id == s2 && agent.running.is_empty());
    assert_eq!(agent.spec.max_concurrent, 3);
    assert_eq!(
        (agent.completed, agent.drained),
        (1, true),
        "counters and the drain survive"
    );
    assert!(
        h.agents().agent_by_session(s1).is_none(),
        "the old session is gone"
    );
    assert_eq!(
        (h.state(t), h.task(t).attempts),
        (TaskState::Pending, 1),
        "the replaced session's lease is revoked and counted"
    );
    assert_eq!(h.task(t).history[0].outcome, AttemptOutcome::SessionLost);
    assert!(
        h.sm.get(b"lock").is_none(),
        "the old session's keys are deleted"
    );
    assert!(matches!(
        h.run(CoordCommand::Complete {
            task_id: t,
            token,
            result: vec![]
        }),
        CoordResponse::LeaseLost { .. }
    ));
    // A gone agent of that name is simply overwritten.
    h.run(CoordCommand::CloseSession { session_id: s2 });
    let s3 = h.register("a", &[], 1);
    assert!(h.agent("a").live && h.agent("a").session_id == s3);
    // Nonsense is Invalid.
    for spec in [
        agent_spec("", &[], 1),
        agent_spec("z", &[], 0),
        AgentSpec {
            ttl_ms: 0,
            ..agent_spec("z", &[], 1)
        },
    ] {
        assert!(matches!(
            h.run(CoordCommand::RegisterAgent(spec)),
            CoordResponse::Invalid { .. }
        ));
    }
    assert_eq!(
        h.run(CoordCommand::SetDrained {
            name: "nobody".into(),
            drained: true
        }),
        CoordResponse::UnknownAgent {
            name: "nobody".into()
        }
    );
}

#[test]
fn agents_quota_makes_room_by_forgetting_gone_agents() {
    let mut h = Harness::new();
    let max = crate::limits::AGENTS_MAX;
    let mut agents = Vec::new();
    for i in 0..max {
        let spec = agent_spec(&format!("agent-{i:05}"), &[], 1);
        let response = h.sm.agents.apply(
            &mut Ctx::new(T0, &mut h.sm.events),
            &CoordCommand::RegisterAgent(spec),
        );
        let CoordResponse::Registered { session_id, .. } = response else {
            panic!("{response:?}");
        };
        agents.push(session_id);
    }
    assert!(matches!(
        h.run(CoordCommand::RegisterAgent(agent_spec("one-more", &[], 1))),
        CoordResponse::QuotaExceeded { .. }
    ));
    h.run(CoordCommand::CloseSession {
        session_id: agents[7],
    });
    h.register("one-more", &[], 1);
    assert!(h.agents().agent("agent-00007").is_none());
    assert_eq!(h.agents().iter().count(), max);
}

// ---- Breaker ----

#[test]
fn breaker_opens_half_opens_and_closes_or_reopens() {
    let mut h = Harness::new();
    let s = h.register_with(AgentSpec {
        breaker_failures: 2,
        breaker_cooldown_ms: 10_000,
        ..agent_spec("a", &[], 5)
    });
    let fail_one = |h: &mut Harness| {
        let t = h.submit(task_spec("q"));
        let token = h.assigned(t, s);
        h.run(fail(t, token, true));
    };
    fail_one(&mut h);
    assert_eq!(h.agent("a").breaker, BreakerState::Closed);
    // The second consecutive failure is a lease expiry: it counts too.
    let t = h.submit(task_spec("q"));
    h.assigned(t, s);
    h.at(T0 + 30_000);
    h.run(CoordCommand::Heartbeats {
        beats: vec![Beat {
            session_id: s,
            load: 0,
        }],
    });
    h.tick();
    let agent = h.agent("a");
    assert_eq!(
        (
            agent.breaker,
            agent.consecutive_failures,
            agent.breaker_until_ms
        ),
        (BreakerState::Open, 2, T0 + 40_000)
    );
    let waiting = h.submit(task_spec("q"));
    assert_eq!(h.assign(waiting, s), None, "quarantined");
    assert!(h.sm.plan_assignments(h.now_ms, 10).is_empty());
    h.at(T0 + 39_999).tick();
    assert_eq!(h.agent("a").breaker, BreakerState::Open);
    h.run(CoordCommand::Heartbeats {
        beats: vec![Beat {
            session_id: s,
            load: 0,
        }],
    });
    h.at(T0 + 40_000).tick();
    assert_eq!(h.agent("a").breaker, BreakerState::HalfOpen);
    // Half-open: exactly one trial task.
    assert_eq!(h.sm.plan_assignments(h.now_ms, 10).len(), 1);
    let trial = h.assigned(waiting, s);
    let second = h.submit(task_spec("q"));
    assert_eq!(h.assign(second, s), None, "one trial task only");
    // The trial fails: open again.
    h.run(fail(waiting, trial, true));
    assert_eq!(
        (h.agent("a").breaker, h.agent("a").breaker_until_ms),
        (BreakerState::Open, T0 + 50_000)
    );
    h.run(CoordCommand::Heartbeats {
        beats: vec![Beat {
            session_id: s,
            load: 0,
        }],
    });
    h.at(T0 + 50_000).tick();
    assert_eq!(h.agent("a").breaker, BreakerState::HalfOpen);
    // The next trial succeeds: closed, failures forgotten.
    let token = h.assigned(second, s);
    h.run(CoordCommand::Complete {
        task_id: second,
        token,
        result: vec![],
    });
    let agent = h.agent("a");
    assert_eq!(
        (agent.breaker, agent.consecutive_failures),
        (BreakerState::Closed, 0)
    );
    assert_eq!(
        h.sm.plan_assignments(h.now_ms, 10).len(),
        3,
        "closed: no longer one trial task at a time"
    );
}

// ---- Decisions ----

/// One decision scenario: voters vote in order; after each vote, the expected status.
struct DecisionCase {
    why: &'static str,
    rule: Rule,
    voters: &'static [&'static str],
    weights: &'static [(&'static str, u64)],
    veto: bool,
    votes: &'static [(&'static str, &'static str, DecisionStatus)],
    outcome: Option<&'static str>,
}

#[test]
fn decisions_follow_their_rule() {
    use DecisionStatus::{Decided, Open, Rejected};
    let cases = [
        DecisionCase {
            why: "majority: more than half wins",
            rule: Rule::Majority,
            voters: &["a", "b", "c"],
            weights: &[],
            veto: false,
            votes: &[("a", "yes", Open), ("b", "no", Open), ("c", "yes", Decided)],
            outcome: Some("yes"),
        },
        DecisionCase {
            why: "majority: half is not enough; rejected once no option can pass half",
            rule: Rule::Majority,
            voters: &["a", "b", "c", "d"],
            weights: &[],
            veto: false,
            votes: &[
                ("a", "yes", Open),
                ("b", "yes", Open),
                ("c", "no", Open),
                ("d", "no", Rejected),
            ],
            outcome: None,
        },
        DecisionCase {
            why: "majority: early rejection when votes split three ways",
            rule: Rule::Majority,
            voters: &["a", "b", "c", "d"],
            weights: &[],
            veto: false,
            votes: &[
                ("a", "yes", Open),
                ("b", "no", Open),
                ("c", "veto", Rejected),
            ],
            outcome: None,
        },
        DecisionCase {
            why: "unanimous: everyone agrees",
            rule: Rule::Unanimous,
            voters: &["a", "b"],
            weights: &[],
            veto: false,
            votes: &[("a", "no", Open), ("b", "no", Decided)],
            outcome: Some("no"),
        },
        DecisionCase {
            why: "unanimous: the first disagreement rejects",
            rule: Rule::Unanimous,
            voters: &["a", "b", "c"],
            weights: &[],
            veto: false,
            votes: &[("a", "yes", Open), ("b", "no", Rejected)],
            outcome: None,
        },
        DecisionCase {
            why: "at least k: the first option to reach k wins",
            rule: Rule::AtLeast(2),
            voters: &["a", "b", "c", "d", "e"],
            weights: &[],
            veto: false,
            votes: &[("a", "no", Open), ("b", "yes", Open), ("c", "yes", Decided)],
            outcome: Some("yes"),
        },
        DecisionCase {
            why: "at least k: rejected when no option can reach k",
            rule: Rule::AtLeast(3),
            voters: &["a", "b", "c", "d"],
            weights: &[],
            veto: false,
            votes: &[
                ("a", "no", Open),
                ("b", "yes", Open),
                ("c", "veto", Rejected),
            ],
            outcome: None,
        },
        DecisionCase {
            why: "weighted: the heavy voter carries it",
            rule: Rule::Weighted,
            voters: &["a", "b", "c"],
            weights: &[("a", 5)],
            veto: false,
            votes: &[("b", "no", Open), ("a", "yes", Decided)],
            outcome: Some("yes"),
        },
        DecisionCase {
            why: "weighted: rejected when no option can pass half the weight",
            rule: Rule::Weighted,
            voters: &["a", "b", "c", "d"],
            weights: &[("a", 2), ("b", 2), ("c", 2)],
            veto: false,
            votes: &[
                ("a", "yes", Open),
                ("b", "no", Open),
                ("c", "veto", Rejected),
            ],
            outcome: None,
        },
        DecisionCase {
            why: "veto: one vote rejects at once",
            rule: Rule::Majority,
            voters: &["a", "b", "c"],
            weights: &[],
            veto: true,
            votes: &[("a", "yes", Open), ("b", "veto", Rejected)],
            outcome: None,
        },
        DecisionCase {
            why: "veto: a majority reached first stands",
            rule: Rule::Majority,
            voters: &["a", "b", "c"],
            weights: &[],
            veto: true,
            votes: &[("a", "yes", Open), ("b", "yes", Decided)],
            outcome: Some("yes"),
        },
    ];
    for case in cases {
        let mut h = Harness::new();
        let mut sessions = BTreeMap::new();
        for &voter in case.voters {
            sessions.insert(voter, h.register(voter, &[], 1));
        }
        let mut spec = decision_spec(case.voters, case.rule.clone());
        spec.weights = case
            .weights
            .iter()
            .map(|(v, w)| (v.to_string(), *w))
            .collect();
        spec.veto_option = case.veto.then(|| "veto".to_string());
        let d = h.propose(spec);
        for &(voter, choice, status) in case.votes {
            assert_eq!(
                h.vote(sessions[voter], d, choice),
                CoordResponse::Voted { decision_id: d },
                "{}: {voter} votes {choice}",
                case.why
            );
            assert_eq!(h.decision(d).status, status, "{}: after {voter}", case.why);
        }
        let decision = h.decision(d).clone();
        assert_eq!(decision.outcome.as_deref(), case.outcome, "{}", case.why);
        assert_eq!(decision.closed_ms, T0, "{}", case.why);
        if decision.status == Rejected {
            assert!(
                !decision.reason.is_empty(),
                "{}: a reason is given",
                case.why
            );
        }
        // The outcome never changes: later votes are refused, the deadline passes quietly.
        for &voter in case.voters {
            assert!(
                matches!(
                    h.vote(sessions[voter], d, "yes"),
                    CoordResponse::VoteRefused { .. }
                ),
                "{}: a vote after the outcome is refused",
                case.why
            );
        }
        h.at(T0 + 60_000).tick();
        assert_eq!(h.decision(d), &decision, "{}: fixed once", case.why);
    }
}

#[test]
fn votes_are_refused_or_invalid_when_they_must_be() {
    let mut h = Harness::new();
    let a = h.register("a", &[], 1);
    let b = h.register("b", &[], 1);
    let outsider = h.register("outsider", &[], 1);
    let d = h.propose(decision_spec(&["a", "b", "c"], Rule::Majority));
    let refused = |reason: &str| CoordResponse::VoteRefused {
        reason: reason.into(),
    };
    assert_eq!(h.vote(a, d, "yes"), CoordResponse::Voted { decision_id: d });
    assert_eq!(
        h.vote(a, d, "no"),
        refused(&format!("agent a already voted in decision {d}"))
    );
    assert_eq!(
        h.vote(outsider, d, "yes"),
        refused(&format!(
            "agent outsider is not in the electorate of decision {d}"
        ))
    );
    assert_eq!(
        h.vote(b, d, "maybe"),
        CoordResponse::Invalid {
            reason: format!("choice: \"maybe\" is not an option of decision {d}")
        }
    );
    h.run(CoordCommand::CloseSession { session_id: b });
    assert_eq!(
        h.vote(b, d, "yes"),
        refused(&format!("session {b} is not live"))
    );
    assert_eq!(
        h.vote(a, 99, "yes"),
        CoordResponse::UnknownDecision { decision_id: 99 }
    );
    assert_eq!(h.decision(d).votes.len(), 1);
    assert_eq!(h.sm.decisions().open_ballots("a"), Vec::<&Decision>::new());
    assert_eq!(
        h.sm.decisions().open_ballots("c").len(),
        1,
        "named voters need not be registered"
    );
    // The deadline passes undecided: NO_QUORUM.
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 60_000));
    h.at(T0 + 60_000).tick();
    let decision = h.decision(d);
    assert_eq!(
        (decision.status, decision.reason.as_str()),
        (DecisionStatus::NoQuorum, "the deadline passed undecided")
    );
}

#[test]
fn propose_fixes_the_electorate_and_validates() {
    let mut h = Harness::new();
    h.register("b", &["review"], 1);
    h.register("a", &["review"], 1);
    h.register("c", &["build"], 1);
    let gone = h.register("d", &["review"], 1);
    h.run(CoordCommand::CloseSession { session_id: gone });
    let by_capability = DecisionSpec {
        electorate: Electorate {
            agents: vec![],
            capability: "review".into(),
        },
        ..decision_spec(&[], Rule::Majority)
    };
    let d = h.propose(by_capability.clone());
    assert_eq!(h.decision(d).voters, vec!["a".to_string(), "b".to_string()]);
    let named = h.propose(decision_spec(&["z", "a", "z"], Rule::Unanimous));
    assert_eq!(
        h.decision(named).voters,
        vec!["a".to_string(), "z".to_string()]
    );
    let invalid = [
        DecisionSpec {
            electorate: Electorate {
                agents: vec![],
                capability: "nobody-has-it".into(),
            },
            ..by_capability.clone()
        },
        DecisionSpec {
            electorate: Electorate::default(),
            ..by_capability.clone()
        },
        decision_spec(&["a"], Rule::AtLeast(0)),
        decision_spec(&["a", "b"], Rule::AtLeast(3)),
        DecisionSpec {
            options: vec!["only".into()],
            ..decision_spec(&["a"], Rule::Majority)
        },
        DecisionSpec {
            options: vec!["x".into(), "x".into()],
            ..decision_spec(&["a"], Rule::Majority)
        },
        DecisionSpec {
            veto_option: Some("nope".into()),
            ..decision_spec(&["a"], Rule::Majority)
        },
    ];
    for spec in invalid {
        assert!(
            matches!(
                h.run(CoordCommand::Propose(spec.clone())),
                CoordResponse::Invalid { .. }
            ),
            "{spec:?}"
        );
    }
    assert_eq!(h.sm.coord_stats().decisions_open, 2);
}

#[test]
fn open_decisions_are_bounded() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 1);
    for _ in 0..crate::limits::OPEN_DECISIONS_MAX {
        let command = CoordCommand::Propose(decision_spec(&["a"], Rule::Majority));
        let mut ctx = Ctx::new(T0, &mut h.sm.events).with_agents(&h.sm.agents);
        let response = h.sm.decisions.apply(&mut ctx, &command);
        assert!(
            matches!(response, CoordResponse::Proposed { .. }),
            "{response:?}"
        );
    }
    assert!(matches!(
        h.run(CoordCommand::Propose(decision_spec(&["a"], Rule::Majority))),
        CoordResponse::QuotaExceeded { .. }
    ));
    // Closing one makes room for one.
    assert_eq!(h.vote(s, 1, "yes"), CoordResponse::Voted { decision_id: 1 });
    h.propose(decision_spec(&["a"], Rule::Majority));
    assert_eq!(
        h.sm.coord_stats().decisions_open as usize,
        crate::limits::OPEN_DECISIONS_MAX
    );
}

#[test]
fn gated_tasks_follow_their_decision() {
    struct Case {
        why: &'static str,
        votes: &'static [&'static str],
        deadline_passes: bool,
        gate: &'static str,
        state: TaskState,
        reason: &'static str,
    }
    let cases = [
        Case {
            why: "the outcome matches: the task runs",
            votes: &["yes", "yes"],
            deadline_passes: false,
            gate: "yes",
            state: TaskState::Pending,
            reason: "",
        },
        Case {
            why: "another outcome: canceled",
            votes: &["no", "no"],
            deadline_passes: false,
            gate: "yes",
            state: TaskState::Canceled,
            reason: "decision 1: outcome no",
        },
        Case {
            why: "rejected: canceled",
            votes: &["yes", "no"],
            deadline_passes: false,
            gate: "yes",
            state: TaskState::Canceled,
            reason: "decision 1 rejected",
        },
        Case {
            why: "no quorum: canceled",
            votes: &["yes"],
            deadline_passes: true,
            gate: "yes",
            state: TaskState::Canceled,
            reason: "decision 1: no quorum",
        },
    ];
    for case in cases {
        for submit_after_close in [false, true] {
            let mut h = Harness::new();
            let a = h.register("a", &[], 1);
            let b = h.register("b", &[], 1);
            let d = h.propose(decision_spec(&["a", "b"], Rule::Majority));
            let gated = TaskSpec {
                requires: Some(DecisionGate {
                    decision_id: d,
                    option: case.gate.into(),
                }),
                ..task_spec("q")
            };
            let early = (!submit_after_close).then(|| h.submit(gated.clone()));
            if let Some(t) = early {
                assert_eq!(h.state(t), TaskState::Blocked);
                assert!(h.sm.plan_assignments(h.now_ms, 10).is_empty());
            }
            for (session, choice) in [a, b].into_iter().zip(case.votes) {
                h.vote(session, d, choice);
            }
            if case.deadline_passes {
                h.at(T0 + 60_000);
                h.run(CoordCommand::Heartbeats {
                    beats: vec![Beat {
                        session_id: a,
                        load: 0,
                    }],
                });
                h.tick();
            }
            assert!(!h.decision(d).is_open(), "{}", case.why);
            let t = early.unwrap_or_else(|| h.submit(gated.clone()));
            let task = h.task(t);
            assert_eq!(
                (task.state, task.cancel_reason.as_str()),
                (case.state, case.reason),
                "{} (submitted after the outcome: {submit_after_close})",
                case.why
            );
        }
    }
    let mut h = Harness::new();
    assert_eq!(
        h.run(CoordCommand::Submit {
            tasks: vec![
                task_spec("q"),
                TaskSpec {
                    requires: Some(DecisionGate {
                        decision_id: 5,
                        option: "yes".into()
                    }),
                    ..task_spec("q")
                }
            ]
        }),
        CoordResponse::Invalid {
            reason: "tasks[1].requires.decision_id: decision 5 does not exist".into()
        }
    );
    assert_eq!(h.sm.coord_stats().tasks, 0, "a batch is all or nothing");
}

// ---- Retention, events, queries ----

#[test]
fn retention_forgets_finished_tasks_gone_agents_and_closed_decisions() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 10);
    let voter = h.register("v", &[], 1);
    let mut finished = Vec::new();
    for i in 0..4 {
        h.at(T0 + i);
        let t = h.submit(task_spec("q"));
        let token = h.assigned(t, s);
        h.run(CoordCommand::Complete {
            task_id: t,
            token,
            result: vec![],
        });
        finished.push(t);
    }
    let canceled = h.submit(task_spec("q"));
    h.run(CoordCommand::Cancel {
        task_id: canceled,
        reason: String::new(),
    });
    let dead = h.submit(task_spec("q"));
    let token = h.assigned(dead, s);
    h.run(fail(dead, token, false));
    let d = h.propose(decision_spec(&["v"], Rule::Majority));
    h.vote(voter, d, "yes");
    h.run(CoordCommand::CloseSession { session_id: voter });
    let retention = Retention {
        finished_max: 3,
        finished_age_ms: 100_000,
        idempotency_ms: 0,
        gone_agents_ms: 50_000,
    };
    // Over the count: due at once, the oldest go first.
    h.tick();
    assert_eq!(
        h.sm.next_due_ms(),
        Some(T0 + 1_000_000),
        "retention unknown yet: only timers (a's session)"
    );
    h.tick_with(false, retention.clone());
    assert!(h.tasks().task(finished[0]).is_none() && h.tasks().task(finished[1]).is_none());
    assert!(h.tasks().task(finished[2]).is_some() && h.tasks().task(canceled).is_some());
    assert_eq!(
        h.state(dead),
        TaskState::DeadLettered,
        "dead letters wait for a purge"
    );
    h.run(CoordCommand::Heartbeats {
        beats: vec![Beat {
            session_id: s,
            load: 0,
        }],
    });
    // Then by age, each at its own due time.
    let mut now = h.now_ms;
    while let Some(due) = h.sm.next_due_ms() {
        assert!(
            due >= now,
            "never due in the past after a tick: {due} < {now}"
        );
        if due > T0 + 200_000 {
            break;
        }
        now = due;
        h.at(now);
        h.run(CoordCommand::Heartbeats {
            beats: vec![Beat {
                session_id: s,
                load: 0,
            }],
        });
        h.tick_with(false, retention.clone());
    }
    assert!(h.agents().agent("v").is_none(), "gone agents are forgotten");
    assert!(
        h.sm.decisions().decision(d).is_none(),
        "closed decisions are forgotten"
    );
    assert!(h.tasks().task(finished[3]).is_none() && h.tasks().task(canceled).is_none());
    assert_eq!(h.state(dead), TaskState::DeadLettered);
    assert_eq!(h.sm.coord_stats().tasks, 1);
}

#[test]
fn events_after_reports_compaction() {
    let mut h = Harness::new();
    h.sm.events.set_max(5);
    assert_eq!(h.sm.last_event_seq(), 0);
    assert_eq!(h.sm.events_after(0).map(|e| e.len()), Ok(0));
    for _ in 0..8 {
        h.submit(task_spec("q"));
    }
    assert_eq!(h.sm.last_event_seq(), 8);
    assert_eq!(h.sm.events_after(0), Err(4));
    assert_eq!(h.sm.events_after(2), Err(4));
    let seqs = |seq| -> Vec<u64> {
        h.sm.events_after(seq)
            .expect("kept")
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(3), vec![4, 5, 6, 7, 8]);
    assert_eq!(seqs(6), vec![7, 8]);
    assert_eq!(seqs(8), Vec::<u64>::new());
    assert_eq!(seqs(100), Vec::<u64>::new());
}

/// A watch resumed on a node that has not applied its sequence yet (a lagging follower) finds
/// nothing, then exactly the events after that sequence once the node has caught up, or the
/// compaction if the ring moved past it meanwhile.
#[test]
fn events_after_a_sequence_not_applied_yet_come_once_applied() {
    let mut h = Harness::new();
    h.sm.events.set_max(5);
    let seqs = |h: &Harness, seq| -> Result<Vec<u64>, u64> {
        h.sm.events_after(seq)
            .map(|events| events.iter().map(|e| e.seq).collect())
    };
    assert_eq!(seqs(&h, 3), Ok(vec![]), "an empty ring, nothing applied");
    h.submit(task_spec("q"));
    h.submit(task_spec("q"));
    assert_eq!(h.sm.last_event_seq(), 2);
    assert_eq!(seqs(&h, 3), Ok(vec![]), "still behind");
    for _ in 0..3 {
        h.submit(task_spec("q"));
    }
    assert_eq!(seqs(&h, 3), Ok(vec![4, 5]), "caught up: only what follows");
    for _ in 0..4 {
        h.submit(task_spec("q"));
    }
    assert_eq!(h.sm.last_event_seq(), 9);
    assert_eq!(seqs(&h, 3), Err(5), "the ring moved past it");
    assert_eq!(seqs(&h, 4), Ok(vec![5, 6, 7, 8, 9]));
}

#[test]
fn listings_use_the_queue_state_index_and_bound_their_scan() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 10);
    let ids = h.submit_all(vec![
        task_spec("q"),
        task_spec("r"),
        task_spec("q"),
        task_spec("r"),
        task_spec("q"),
    ]);
    h.assigned(ids[2], s);
    h.assigned(ids[3], s);
    let list = |h: &Harness, filter: &TaskFilter, after, limit| {
        let listing = h.tasks().list_tasks(filter, after, limit);
        (
            listing.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
            listing.more,
            listing.next_after_id,
        )
    };
    // One queue in several states, and several queues in one state: merged in id order.
    let q = TaskFilter {
        queue: "q".into(),
        ..TaskFilter::default()
    };
    assert_eq!(
        list(&h, &q, 0, 10),
        (vec![ids[0], ids[2], ids[4]], false, ids[4])
    );
    assert_eq!(list(&h, &q, ids[0], 1), (vec![ids[2]], true, ids[2]));
    let assigned = TaskFilter {
        states: vec![TaskState::Assigned],
        ..TaskFilter::default()
    };
    assert_eq!(
        list(&h, &assigned, 0, 10),
        (vec![ids[2], ids[3]], false, ids[3])
    );
    let pending_r = TaskFilter {
        queue: "r".into(),
        states: vec![TaskState::Pending, TaskState::Succeeded],
        ..TaskFilter::default()
    };
    assert_eq!(list(&h, &pending_r, 0, 10), (vec![ids[1]], false, ids[1]));
    let none = TaskFilter {
        queue: "nobody".into(),
        ..TaskFilter::default()
    };
    assert_eq!(list(&h, &none, 0, 10), (vec![], false, 0));

    // A label filter the index cannot answer examines at most TASK_LIST_SCAN_MAX tasks a page.
    let scan = crate::limits::TASK_LIST_SCAN_MAX;
    let mut bulk = Vec::new();
    for chunk in 0..scan.div_ceil(1000) {
        bulk.extend(h.submit_all((0..1000).map(|_| task_spec("bulk")).collect()));
        assert!(chunk < 100);
    }
    let red = TaskSpec {
        labels: [("team".to_string(), "red".to_string())].into(),
        ..task_spec("bulk")
    };
    let reds = h.submit_all(vec![red.clone(), red]);
    let red_filter = TaskFilter {
        labels: [("team".to_string(), "red".to_string())].into(),
        ..TaskFilter::default()
    };
    let (first, more, next) = list(&h, &red_filter, 0, 10);
    assert_eq!(
        (first, more),
        (vec![], true),
        "the scan bound ends the page early"
    );
    assert_eq!(next, ids[0] + scan as u64 - 1, "the last task examined");
    let mut after = next;
    let mut found = Vec::new();
    loop {
        let (page, more, next) = list(&h, &red_filter, after, 10);
        found.extend(page);
        if !more {
            break;
        }
        assert!(next > after, "every page moves on");
        after = next;
    }
    assert_eq!(found, reds);
    assert_eq!(bulk.len(), scan.div_ceil(1000) * 1000);
}

#[test]
fn queries_list_filter_and_page() {
    let mut h = Harness::new();
    let s = h.register("a", &[], 10);
    let labeled = |queue: &str, team: &str, parent_id| TaskSpec {
        labels: [("team".to_string(), team.to_string())].into(),
        parent_id,
        ..task_spec(queue)
    };
    let ids = h.submit_all(vec![
        labeled("q", "red", 0),
        labeled("q", "blue", 0),
        labeled("r", "red", 1),
        labeled("q", "red", 1),
    ]);
    h.assigned(ids[3], s);
    let list = |h: &Harness, filter: TaskFilter, after, limit| {
        let listing = h.tasks().list_tasks(&filter, after, limit);
        (
            listing.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
            listing.more,
        )
    };
    let by_queue = TaskFilter {
        queue: "q".into(),
        ..TaskFilter::default()
    };
    assert_eq!(
        list(&h, by_queue.clone(), 0, 10),
        (vec![ids[0], ids[1], ids[3]], false)
    );
    assert_eq!(
        list(&h, by_queue.clone(), 0, 2),
        (vec![ids[0], ids[1]], true)
    );
    assert_eq!(list(&h, by_queue, ids[1], 2), (vec![ids[3]], false));
    let red = TaskFilter {
        labels: [("team".to_string(), "red".to_string())].into(),
        ..TaskFilter::default()
    };
    assert_eq!(list(&h, red, 0, 10), (vec![ids[0], ids[2], ids[3]], false));
    let assigned_children = TaskFilter {
        states: vec![TaskState::Assigned],
        parent_id: 1,
        ..TaskFilter::default()
    };
    assert_eq!(list(&h, assigned_children, 0, 10), (vec![ids[3]], false));
    assert_eq!(
        h.tasks()
            .assignments(s)
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        vec![ids[3]]
    );
    assert!(h.tasks().assignments(999).is_empty());
    let stats = h.sm.coord_stats();
    assert_eq!(
        (
            stats.tasks,
            stats.pending,
            stats.assigned,
            stats.agents_live
        ),
        (4, 3, 1, 1)
    );
    let d1 = h.propose(decision_spec(&["a"], Rule::Majority));
    let d2 = h.propose(decision_spec(&["a"], Rule::Majority));
    h.vote(s, d1, "yes");
    let listed = |statuses: &[DecisionStatus]| {
        let (page, more) = h.sm.decisions().list_decisions(statuses, 0, 10);
        (page.iter().map(|d| d.id).collect::<Vec<_>>(), more)
    };
    assert_eq!(listed(&[]), (vec![d1, d2], false));
    assert_eq!(listed(&[DecisionStatus::Open]), (vec![d2], false));
    assert_eq!(listed(&[DecisionStatus::Decided]), (vec![d1], false));
    assert_eq!(
        h.sm.decisions()
            .open_ballots("a")
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![d2]
    );
    assert_eq!(
        h.agents()
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a"]
    );
}

#[test]
fn impossible_values_are_invalid_not_panics() {
    let mut h = Harness::new();
    for (spec, field) in [
        (task_spec(""), "tasks[0].queue"),
        (
            TaskSpec {
                max_attempts: 0,
                ..task_spec("q")
            },
            "tasks[0].max_attempts",
        ),
        (
            TaskSpec {
                lease_ms: 0,
                ..task_spec("q")
            },
            "tasks[0].lease_ms",
        ),
    ] {
        match h.run(CoordCommand::Submit { tasks: vec![spec] }) {
            CoordResponse::Invalid { reason } => assert!(reason.starts_with(field), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        h.run(CoordCommand::Submit { tasks: vec![] }),
        CoordResponse::Submitted { results: vec![] }
    );
    // Extreme times saturate instead of overflowing.
    let s = h.register_with(AgentSpec {
        ttl_ms: u64::MAX,
        ..agent_spec("a", &[], 1)
    });
    let t = h.submit(TaskSpec {
        lease_ms: u64::MAX,
        backoff: Backoff {
            initial_ms: u64::MAX,
            maximum_ms: u64::MAX,
            multiplier_permille: 10_000,
            jitter_permille: 1_000,
        },
        ..task_spec("q")
    });
    let token = h.assigned(t, s);
    h.run(CoordCommand::Fail {
        task_id: t,
        token,
        error: String::new(),
        retryable: true,
        retry_after_ms: u64::MAX,
    });
    assert_eq!(h.task(t).ready_at_ms, u64::MAX);
    h.tick_with(
        true,
        Retention {
            finished_max: 1,
            finished_age_ms: u64::MAX,
            idempotency_ms: u64::MAX,
            gone_agents_ms: u64::MAX,
        },
    );
}

// ---- Snapshots and determinism ----

/// xorshift64: the tests' only randomness, seeded and printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Drives `h` through a seeded mix of every command, chosen from the current state (the
/// scheduler's plan, current and stale tokens, live and gone sessions), and returns the commands
/// it applied with their times: a log to replay elsewhere.
fn drive(h: &mut Harness, seed: u64, steps: usize) -> Vec<(u64, Command)> {
    let mut rng = Rng(seed.max(1));
    let mut log = Vec::new();
    for _ in 0..steps {
        let now_ms = h.now_ms + rng.below(3_000);
        let assigned: Vec<(TaskId, FencingToken)> = leased(&h.sm)
            .into_iter()
            .map(|task| (task.id, task.last_token))
            .collect();
        let (last_task_id, last_token) = h.tasks().last_ids();
        let last_session_id = h.agents().last_session_id();
        let verb_target = |rng: &mut Rng| -> (TaskId, FencingToken) {
            if assigned.is_empty() || rng.one_in(5) {
                (
                    1 + rng.below(last_task_id + 1),
                    1 + rng.below(last_token + 1),
                )
            } else {
                assigned[rng.below(assigned.len() as u64) as usize]
            }
        };
        let command = match rng.below(16) {
            0 | 1 => CoordCommand::RegisterAgent(AgentSpec {
                replace: rng.one_in(2),
                ttl_ms: 5_000 + rng.below(20_000),
                breaker_failures: 2,
                breaker_cooldown_ms: 5_000,
                ..agent_spec(
                    &format!("agent-{}", rng.below(5)),
                    if rng.one_in(2) { &["gpu"] } else { &[] },
                    1 + rng.below(3) as u32,
                )
            }),
            2 | 3 => CoordCommand::Submit {
                tasks: (0..1 + rng.below(4))
                    .map(|_| TaskSpec {
                        priority: rng.below(3) as i32,
                        max_attempts: 1 + rng.below(3) as u32,
                        lease_ms: 1_000 + rng.below(20_000),
                        deadline_ms: if rng.one_in(4) {
                            now_ms + rng.below(60_000)
                        } else {
                            0
                        },
                        not_before_ms: if rng.one_in(5) {
                            now_ms + rng.below(5_000)
                        } else {
                            0
                        },
                        idempotency_key: if rng.one_in(3) {
                            format!("k{}", rng.below(10))
                        } else {
                            String::new()
                        },
                        requires: (rng.one_in(6) && h.sm.decisions().indexes().0 > 0).then(|| {
                            DecisionGate {
                                decision_id: 1 + rng.below(h.sm.decisions().indexes().0),
                                option: if rng.one_in(2) { "yes" } else { "no" }.into(),
                            }
                        }),
                        ..needing(
                            &format!("q{}", rng.below(3)),
                            if rng.one_in(4) { &["gpu"] } else { &[] },
                        )
                    })
                    .collect(),
            },
            4..=6 => CoordCommand::Assign {
                assignments: h.sm.plan_assignments(now_ms, 1 + rng.below(4) as usize),
            },
            7 => {
                let (task_id, token) = verb_target(&mut rng);
                CoordCommand::Complete {
                    task_id,
                    token,
                    result: vec![1, 2, 3],
                }
            }
            8 => {
                let (task_id, token) = verb_target(&mut rng);
                CoordCommand::Fail {
                    task_id,
                    token,
                    error: "e".into(),
                    retryable: !rng.one_in(3),
                    retry_after_ms: rng.below(2_000),
                }
            }
            9 => {
                let (task_id, token) = verb_target(&mut rng);
                match rng.below(3) {
                    0 => CoordCommand::Release { task_id, token },
                    1 => CoordCommand::ExtendLease {
                        task_id,
                        token,
                        lease_ms: 1_000 + rng.below(10_000),
                    },
                    _ => CoordCommand::Progress {
                        task_id,
                        token,
                        percent: rng.below(101) as u32,
                        message: "m".into(),
                        checkpoint: "c".into(),
                        extend_lease: rng.one_in(2),
                    },
                }
            }
            10 => CoordCommand::Heartbeats {
                beats: (1..=last_session_id)
                    .filter(|_| !rng.one_in(4))
                    .map(|session_id| Beat {
                        session_id,
                        load: 0,
                    })
                    .collect(),
            },
            11 => CoordCommand::Tick {
                refresh: rng.one_in(10),
                retention: Retention {
                    finished_max: 20,
                    finished_age_ms: 30_000,
                    idempotency_ms: 20_000,
                    gone_agents_ms: 10_000,
                },
            },
            12 => CoordCommand::Propose(DecisionSpec {
                deadline_ms: now_ms + rng.below(30_000),
                veto_option: rng.one_in(3).then(|| "veto".to_string()),
                ..decision_spec(
                    &["agent-0", "agent-1", "agent-2"],
                    [
                        Rule::Majority,
                        Rule::Unanimous,
                        Rule::AtLeast(2),
                        Rule::Weighted,
                    ][rng.below(4) as usize]
                        .clone(),
                )
            }),
            13 => CoordCommand::Vote {
                session_id: 1 + rng.below(last_session_id + 1),
                decision_id: 1 + rng.below(h.sm.decisions().indexes().0 + 1),
                choice: ["yes", "no", "veto"][rng.below(3) as usize].into(),
                rationale: String::new(),
            },
            14 => match rng.below(4) {
                0 => CoordCommand::Cancel {
                    task_id: 1 + rng.below(last_task_id + 1),
                    reason: "r".into(),
                },
                1 => CoordCommand::Redrive {
                    selector: DeadLetterSelector::Queue(String::new()),
                },
                2 => CoordCommand::Purge {
                    selector: DeadLetterSelector::Ids(vec![1 + rng.below(last_task_id + 1)]),
                },
                _ => CoordCommand::CloseSession {
                    session_id: 1 + rng.below(last_session_id + 1),
                },
            },
            _ => CoordCommand::SetDrained {
                name: format!("agent-{}", rng.below(5)),
                drained: rng.one_in(3),
            },
        };
        let mut commands = vec![Command::Coordination(command)];
        if rng.one_in(4) {
            commands.push(Command::Put {
                key: format!("key/{}", rng.below(20)).into_bytes(),
                value: b"v".to_vec(),
                session_id: rng.below(last_session_id + 2),
            });
        }
        h.at(now_ms);
        for command in commands {
            h.apply(command.clone());
            log.push((now_ms, command));
        }
    }
    log
}

fn replay(commands: &[(u64, Command)]) -> (StateMachine, Vec<Response>) {
    let mut h = Harness::new();
    let mut responses = Vec::new();
    for (now_ms, command) in commands {
        h.at(*now_ms);
        responses.push(h.apply(command.clone()));
    }
    (h.sm, responses)
}

#[test]
fn the_same_log_gives_the_same_state() {
    for seed in [1u64, 7, 42, 0x5eed] {
        eprintln!("scenario seed {seed}");
        let mut h = Harness::new();
        let log = drive(&mut h, seed, 600);
        let stats = h.sm.coord_stats();
        let (last_task_id, last_token) = h.tasks().last_ids();
        assert!(
            last_token > 20 && last_task_id > 50 && h.sm.decisions().indexes().0 > 5,
            "seed {seed}: the scenario exercises the machine: {stats:?}"
        );
        let (one, responses_one) = replay(&log);
        let (two, responses_two) = replay(&log);
        assert_eq!(responses_one, responses_two, "seed {seed}");
        assert_eq!(one.digest(), two.digest(), "seed {seed}");
        assert_eq!(one.digest(), h.sm.digest(), "seed {seed}");
        assert!(one == two && one == h.sm, "seed {seed}: equal state");
        let mut other = Harness::new();
        drive(&mut other, seed + 1, 600);
        assert_ne!(one.digest(), other.sm.digest(), "seed {seed}");
    }
}

#[test]
fn a_snapshot_round_trip_keeps_the_state() {
    let mut h = Harness::new();
    drive(&mut h, 3, 500);
    let bytes = crate::raft::encode(&h.sm);
    let restored: StateMachine = crate::raft::decode(&bytes).expect("decodes");
    assert_eq!(restored.digest(), h.sm.digest());
    assert!(restored == h.sm, "every field, indexes included, survives");
    check_invariants(&restored);
    // And it goes on identically.
    let mut copy = Harness {
        sm: restored,
        index: h.index,
        now_ms: h.now_ms,
    };
    let log = drive(&mut h, 4, 200);
    for (now_ms, command) in log {
        copy.at(now_ms);
        copy.apply(command);
    }
    assert_eq!(copy.sm.digest(), h.sm.digest());
    assert!(copy.sm == h.sm);
}

#[test]
fn snapshot_bytes_per_pending_task() {
    let mut h = Harness::new();
    let tasks_per_batch = 1000;
    let batches = 100;
    for _ in 0..batches {
        let batch: Vec<TaskSpec> = (0..tasks_per_batch)
            .map(|_| TaskSpec {
                payload: vec![7u8; 100],
                ..task_spec("queue")
            })
            .collect();
        h.index += 1;
        h.sm.apply(
            h.index,
            &Request {
                now_ms: h.now_ms,
                request_id: None,
                fence: None,
                command: Command::Coordination(CoordCommand::Submit { tasks: batch }),
            },
        );
    }
    let tasks = (tasks_per_batch * batches) as u64;
    assert_eq!(h.sm.coord_stats().pending, tasks);
    let with_events = crate::raft::encode(&h.sm).len() as u64;
    h.sm.events.set_max(1);
    let without_events = crate::raft::encode(&h.sm).len() as u64;
    eprintln!(
        "snapshot of {tasks} pending tasks with 100-byte payloads: {with_events} bytes, {} per task \
         ({} per task without the event ring); in memory a Task is {} bytes before its heap parts",
        with_events / tasks,
        without_events / tasks,
        std::mem::size_of::<Task>()
    );
    assert!(
        without_events / tasks < 400,
        "{} bytes per task",
        without_events / tasks
    );
}

/// A deadline is in cluster time: one cluster time has reached is refused at apply, and nothing
/// is stored, also when the proposing node's clock (which the API checked it against) is behind
/// cluster time, as after a leader whose clock was ahead. Found by the clock-skew nemesis
/// (tests/README.md, bugs found).
#[test]
fn a_deadline_cluster_time_has_reached_is_refused() {
    let mut h = Harness::new();
    h.register("a", &[], 1);
    // A leader 30 s ahead stamps one entry; then leaders with true clocks (T0 + 1 s) stamp theirs.
    h.at(T0 + 30_000).register("b", &[], 1);
    h.at(T0 + 1_000);
    for deadline_ms in [T0 + 5_000, T0 + 30_000] {
        let spec = DecisionSpec {
            deadline_ms,
            ..decision_spec(&["a", "b"], Rule::Majority)
        };
        match h.run(CoordCommand::Propose(spec)) {
            CoordResponse::Invalid { reason } => assert!(
                reason.contains("is not after cluster time 1030000"),
                "{reason}"
            ),
            other => panic!("deadline {deadline_ms}: {other:?}"),
        }
    }
    assert_eq!(h.sm.coord_stats().decisions_open, 0);
    assert!(h.sm.decisions().decision(1).is_none());
    let spec = DecisionSpec {
        deadline_ms: T0 + 30_001,
        ..decision_spec(&["a", "b"], Rule::Majority)
    };
    let id = h.propose(spec);
    assert_eq!(h.decision(id).status, DecisionStatus::Open);
}

mod delegation;
