//! The cross-primitive transaction through `StateMachine::apply`, with the real keys, tasks,
//! agents, workflows and locks: a failed compare or a refused op applies nothing (the digest, the
//! revision and the event ring stay as they were); a transaction that commits applies every op
//! in its one entry, its key writes at one revision, and its effects reach the other primitives.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::limits::{TXN_COMPARE_TOKENS_MAX, WORKFLOWS_OPEN_MAX};
use crate::state_machine::coordination::{
    AgentSpec, Backoff, CoordCommand, CoordResponse, DecisionGate, SessionId, TaskSpec,
};
use crate::state_machine::locks::{Holder, LockCommand, LockResponse};
use crate::state_machine::topics::{
    NewMessage, Refusal, RefusalCode, TopicCommand, TopicConfig, TopicOp, TopicResponse,
};
use crate::state_machine::workflows::definition::{StepDef, StepKind, TaskTemplate};
use crate::state_machine::workflows::{Definition, WorkflowCommand, WorkflowResponse};
use crate::state_machine::{Command, Fence, Request, RequestId};

const T0: u64 = 1_000_000;

struct Harness {
    sm: StateMachine,
    index: u64,
}

/// What a refused transaction must leave as it was.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    digest: u64,
    revision: u64,
    last_event_seq: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            sm: StateMachine::new(1000),
            index: 0,
        }
    }

    fn request(&mut self, request: &Request) -> Response {
        self.index += 1;
        let response = self.sm.apply(self.index, request);
        self.sm.tasks().check_invariants();
        self.sm.agents().check_invariants();
        response
    }

    fn apply(&mut self, command: Command) -> Response {
        self.request(&Request {
            now_ms: T0,
            request_id: None,
            fence: None,
            command,
        })
    }

    fn run(&mut self, command: CoordCommand) -> CoordResponse {
        match self.apply(Command::Coordination(command)) {
            Response::Coordination { response, .. } => response,
            other => panic!("coordination answers Coordination, not {other:?}"),
        }
    }

    fn transaction(&mut self, compares: Vec<Compare>, ops: Vec<Op>) -> TransactionResponse {
        match self.apply(Command::Transaction(Transaction { compares, ops })) {
            Response::Transaction { response, .. } => response,
            other => panic!("a transaction answers Transaction, not {other:?}"),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            digest: self.sm.digest(),
            revision: self.sm.revision(),
            last_event_seq: self.sm.last_event_seq(),
        }
    }

    fn put(&mut self, key: &str) -> u64 {
        self.apply(Command::Put {
            key: key.into(),
            value: b"v".to_vec(),
            session_id: 0,
        })
        .revision()
    }

    fn register(&mut self, name: &str) -> SessionId {
        let spec = AgentSpec {
            name: name.into(),
            capabilities: BTreeSet::new(),
            labels: BTreeMap::new(),
            max_concurrent: 4,
            version: "1".into(),
            metadata: BTreeMap::new(),
            ttl_ms: 1_000_000,
            replace: false,
            breaker_failures: 3,
            breaker_cooldown_ms: 30_000,
        };
        match self.run(CoordCommand::RegisterAgent(spec)) {
            CoordResponse::Registered { session_id, .. } => session_id,
            other => panic!("register: {other:?}"),
        }
    }

    fn submit(&mut self, queue: &str) -> TaskId {
        match self.run(CoordCommand::Submit {
            tasks: vec![spec(queue)],
        }) {
            CoordResponse::Submitted { results } => results[0].0,
            other => panic!("submit: {other:?}"),
        }
    }

    /// Leases `task_id` to `session_id`; returns the token.
    fn assign(&mut self, task_id: TaskId, session_id: SessionId) -> FencingToken {
        match self.run(CoordCommand::Assign {
            assignments: vec![(task_id, session_id)],
        }) {
            CoordResponse::Assigned { tokens } => tokens[0].expect("the assignment took"),
            other => panic!("assign: {other:?}"),
        }
    }

    fn acquire(&mut self, name: &str) -> Token {
        let command = LockCommand::Acquire {
            kind: LockKind::Lock,
            name: name.into(),
            holder: Holder {
                session_id: 0,
                ttl_ms: 60_000,
                owner: "test".into(),
            },
            permits: 1,
            limit: 1,
            wait_ms: 0,
            lock_delay_ms: 0,
            value: Vec::new(),
        };
        match self.apply(Command::Locks(command)) {
            Response::Locks {
                response:
                    LockResponse::Acquired {
                        token,
                        granted: true,
                        ..
                    },
                ..
            } => token,
            other => panic!("acquire: {other:?}"),
        }
    }
}

fn spec(queue: &str) -> TaskSpec {
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

/// One task step, then another after it.
fn two_steps() -> Definition {
    let step = |name: &str, after: Vec<u32>| StepDef {
        name: name.into(),
        after,
        when: None,
        kind: StepKind::Task {
            template: TaskTemplate {
                queue: name.into(),
                params: "null".into(),
                max_attempts: 3,
                lease_ms: 30_000,
                ..TaskTemplate::default()
            },
            fan_out: None,
        },
        compensate: None,
        compensation: false,
    };
    Definition {
        name: "wf".into(),
        version: 1,
        deadline_ms: 0,
        steps: vec![step("draft", vec![]), step("review", vec![0])],
    }
}

fn put(key: &str, value: &str) -> Op {
    Op::Keys(KeyOp::Put {
        key: key.into(),
        value: value.into(),
    })
}

fn complete(task_id: TaskId, token: FencingToken, result: &str) -> Op {
    Op::Tasks(TaskOp::Complete {
        task_id,
        token,
        result: result.into(),
    })
}

fn submit(queue: &str) -> Op {
    Op::Tasks(TaskOp::Submit(Box::new(spec(queue))))
}

fn start(definition: Definition, idempotency_key: &str) -> Op {
    Op::Workflows(WorkflowOp::Start {
        definition,
        input: r#"{"topic":"raft"}"#.into(),
        idempotency_key: idempotency_key.into(),
        deadline_ms: 0,
    })
}

fn release(name: &str, token: Token) -> Op {
    Op::Locks(LockOp::Release {
        kind: LockKind::Lock,
        name: name.into(),
        token,
    })
}

/// A key "config" at `revision`, a lock "L" held with `lock`, and a task of queue "work" leased
/// to agent "a1" with `token`.
struct World {
    h: Harness,
    revision: u64,
    lock: Token,
    task_id: TaskId,
    token: FencingToken,
}

fn world() -> World {
    let mut h = Harness::new();
    let revision = h.put("config");
    let lock = h.acquire("L");
    let session = h.register("a1");
    let task_id = h.submit("work");
    let token = h.assign(task_id, session);
    World {
        h,
        revision,
        lock,
        task_id,
        token,
    }
}

/// Every op kind at once, each one valid in `world()`.
fn every_op(w: &World) -> Vec<Op> {
    vec![
        complete(w.task_id, w.token, "done"),
        put("result/1", "42"),
        Op::Keys(KeyOp::Delete {
            key: b"config".to_vec(),
        }),
        submit("follow-up"),
        start(two_steps(), ""),
        release("L", w.lock),
    ]
}

#[test]
fn every_kind_of_failed_compare_applies_nothing() {
    let mut w = world();
    let cases = [
        (
            Compare::Key {
                key: b"config".to_vec(),
                mod_revision: w.revision + 7,
            },
            Current::Key {
                mod_revision: w.revision,
            },
        ),
        (
            Compare::Key {
                key: b"absent".to_vec(),
                mod_revision: 3,
            },
            Current::Key { mod_revision: 0 },
        ),
        (
            Compare::Key {
                key: b"config".to_vec(),
                mod_revision: 0,
            },
            Current::Key {
                mod_revision: w.revision,
            },
        ),
        (
            Compare::Holds {
                kind: LockKind::Lock,
                name: "L".into(),
                token: w.lock + 100,
            },
            Current::Grants {
                tokens: vec![w.lock],
            },
        ),
        (
            Compare::Holds {
                kind: LockKind::Semaphore,
                name: "L".into(),
                token: w.lock,
            },
            Current::Grants { tokens: vec![] },
        ),
        (
            Compare::Task {
                task_id: w.task_id,
                state: TaskState::Pending,
                token: 0,
            },
            Current::Task {
                state: Some(TaskState::Assigned),
                token: w.token,
            },
        ),
        (
            Compare::Task {
                task_id: w.task_id,
                state: TaskState::Assigned,
                token: w.token + 1,
            },
            Current::Task {
                state: Some(TaskState::Assigned),
                token: w.token,
            },
        ),
        (
            Compare::Task {
                task_id: 999,
                state: TaskState::Assigned,
                token: 0,
            },
            Current::Task {
                state: None,
                token: 0,
            },
        ),
    ];
    let holds = Compare::Task {
        task_id: w.task_id,
        state: TaskState::Assigned,
        token: w.token,
    };
    for (compare, current) in cases {
        let before = w.h.fingerprint();
        let ops = every_op(&w);
        let response = w.h.transaction(vec![holds.clone(), compare.clone()], ops);
        assert_eq!(
            response,
            TransactionResponse::CompareFailed {
                failed: vec![(1, current)]
            },
            "{compare:?}"
        );
        assert_eq!(w.h.fingerprint(), before, "{compare:?} applied something");
    }
}

#[test]
fn every_failed_compare_is_named() {
    let mut w = world();
    let compares = vec![
        Compare::Key {
            key: b"config".to_vec(),
            mod_revision: 0,
        },
        Compare::Key {
            key: b"config".to_vec(),
            mod_revision: w.revision,
        },
        Compare::Holds {
            kind: LockKind::Lock,
            name: "M".into(),
            token: 1,
        },
    ];
    let ops = every_op(&w);
    let TransactionResponse::CompareFailed { failed } = w.h.transaction(compares, ops) else {
        panic!("two compares fail");
    };
    let indexes: Vec<u32> = failed.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, [0, 2]);
}

#[test]
fn a_stale_task_token_refuses_everything() {
    let mut w = world();
    // The lease goes back and the task is leased again: the first token is stale.
    let stale = w.token;
    assert!(matches!(
        w.h.run(CoordCommand::Release {
            task_id: w.task_id,
            token: stale
        }),
        CoordResponse::Verb { .. }
    ));
    let session = w.h.sm.agents().agent("a1").expect("registered").session_id;
    w.token = w.h.assign(w.task_id, session);
    let before = w.h.fingerprint();
    let mut ops = every_op(&w);
    ops[0] = complete(w.task_id, stale, "late");
    let response = w.h.transaction(vec![], ops);
    let TransactionResponse::OpRefused { index: 0, refusal } = response else {
        panic!("the completion is refused: {response:?}");
    };
    assert!(
        matches!(
            &*refusal,
            Response::Coordination {
                response: CoordResponse::LeaseLost { reason },
                ..
            } if reason.contains(&format!("assigned with token {}", w.token))
        ),
        "{refusal:?}"
    );
    assert_eq!(w.h.fingerprint(), before);
    assert_eq!(
        w.h.sm.tasks().task(w.task_id).expect("kept").state,
        TaskState::Assigned
    );
}

#[test]
fn a_stale_lock_token_refuses_everything() {
    let mut w = world();
    let before = w.h.fingerprint();
    let mut ops = every_op(&w);
    ops[5] = release("L", w.lock + 1);
    let response = w.h.transaction(vec![], ops);
    assert!(
        matches!(
            &response,
            TransactionResponse::OpRefused { index: 5, refusal }
                if matches!(**refusal, Response::Locks { response: LockResponse::LockLost { .. }, .. })
        ),
        "{response:?}"
    );
    assert_eq!(w.h.fingerprint(), before);
    assert!(w.h.sm.locks().holds(LockKind::Lock, "L", w.lock));
}

#[test]
fn a_refused_submit_refuses_everything_as_submit_would() {
    let mut w = world();
    let gated = TaskSpec {
        requires: Some(DecisionGate {
            decision_id: 77,
            option: "yes".into(),
        }),
        ..spec("gated")
    };
    let refused_alone = w.h.run(CoordCommand::Submit {
        tasks: vec![gated.clone()],
    });
    assert!(matches!(refused_alone, CoordResponse::Invalid { .. }));
    let before = w.h.fingerprint();
    let mut ops = every_op(&w);
    ops.insert(4, Op::Tasks(TaskOp::Submit(Box::new(gated))));
    let response = w.h.transaction(vec![], ops);
    let TransactionResponse::OpRefused { index: 4, refusal } = response else {
        panic!("the gated submit is refused: {response:?}");
    };
    let Response::Coordination {
        response: CoordResponse::Invalid { reason },
        ..
    } = *refusal
    else {
        panic!("refused as invalid: {refusal:?}");
    };
    // The same words as the plain Submit's, without its `tasks[0].` prefix.
    let CoordResponse::Invalid { reason: alone } = refused_alone else {
        unreachable!()
    };
    assert_eq!(alone, format!("tasks[0].{reason}"));
    assert_eq!(w.h.fingerprint(), before);
}

#[test]
fn a_start_past_the_open_workflows_maximum_refuses_everything() {
    let mut w = world();
    for _ in 0..WORKFLOWS_OPEN_MAX - 1 {
        // Without the invariant checks of every apply, which would make this quadratic.
        w.h.index += 1;
        let request = Request {
            now_ms: T0,
            request_id: None,
            fence: None,
            command: Command::Workflows(WorkflowCommand::Start {
                definition: two_steps(),
                input: String::new(),
                idempotency_key: String::new(),
                deadline_ms: 0,
            }),
        };
        let response = w.h.sm.apply(w.h.index, &request);
        assert!(matches!(
            response,
            Response::Workflows {
                response: WorkflowResponse::Started { .. },
                ..
            }
        ));
    }
    // One more fits; two in one transaction do not, and the second is the one named.
    let before = w.h.fingerprint();
    let mut ops = every_op(&w);
    ops.push(start(two_steps(), ""));
    let response = w.h.transaction(vec![], ops);
    assert!(
        matches!(
            &response,
            TransactionResponse::OpRefused { index: 6, refusal }
                if matches!(&**refusal, Response::Workflows {
                    response: WorkflowResponse::QuotaExceeded { reason }, ..
                } if reason.ends_with("(WORKFLOWS_OPEN_MAX)"))
        ),
        "{response:?}"
    );
    assert_eq!(w.h.fingerprint(), before);
}

#[test]
fn the_lowest_refused_op_is_named() {
    let mut w = world();
    let mut ops = every_op(&w);
    ops[0] = complete(w.task_id, w.token + 5, "late");
    ops[5] = release("L", w.lock + 1);
    let response = w.h.transaction(vec![], ops);
    assert!(
        matches!(response, TransactionResponse::OpRefused { index: 0, .. }),
        "{response:?}"
    );
}

#[test]
fn a_committed_transaction_applies_every_op_in_one_entry() {
    let mut w = world();
    let revision = w.h.sm.revision();
    let compares = vec![
        Compare::Key {
            key: b"config".to_vec(),
            mod_revision: w.revision,
        },
        Compare::Key {
            key: b"result/1".to_vec(),
            mod_revision: 0,
        },
        Compare::Holds {
            kind: LockKind::Lock,
            name: "L".into(),
            token: w.lock,
        },
        Compare::Task {
            task_id: w.task_id,
            state: TaskState::Assigned,
            token: w.token,
        },
    ];
    let ops = every_op(&w);
    let response =
        w.h.apply(Command::Transaction(Transaction { compares, ops }));
    let Response::Transaction {
        revision: after,
        response: TransactionResponse::Committed { results },
    } = response
    else {
        panic!("committed: {response:?}");
    };
    tracing::info!("the key writes share one new revision, with both events");
    assert_eq!(after, revision + 1);
    let changes = w.h.sm.history().since(after, 10).expect("kept");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].events.len(), 2);
    assert_eq!(w.h.sm.get(b"result/1").expect("written").value, b"42");
    assert!(w.h.sm.get(b"config").is_none());
    tracing::info!("every op answered, in order");
    use OpResult::*;
    let [TaskCompleted { task_id }, KeyPut, KeyDeleted { existed: true }, TaskSubmitted {
        task_id: follow_up,
        existing: false,
    }, WorkflowStarted {
        workflow_id,
        existing: false,
    }, LockReleased] = results.as_slice()
    else {
        panic!("one result per op: {results:?}");
    };
    assert_eq!(*task_id, w.task_id);
    let task = w.h.sm.tasks().task(w.task_id).expect("kept");
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.result, b"done");
    let follow_up = w.h.sm.tasks().task(*follow_up).expect("submitted");
    assert_eq!(
        (follow_up.state, follow_up.spec.queue.as_str()),
        (TaskState::Pending, "follow-up")
    );
    assert!(!w.h.sm.locks().holds(LockKind::Lock, "L", w.lock));
    tracing::info!(
        "the effects were routed: the agent runs nothing, the workflow's first step task is queued"
    );
    let agent = w.h.sm.agents().agent("a1").expect("registered");
    assert!(agent.running.is_empty(), "{:?}", agent.running);
    let workflow = w.h.sm.workflows().get(*workflow_id).expect("started");
    let draft_tasks: Vec<_> =
        w.h.sm
            .tasks()
            .counts_by_queue_state()
            .filter(|(queue, _, _)| *queue == "draft")
            .collect();
    assert_eq!(draft_tasks, [("draft", TaskState::Pending, 1)]);
    assert_eq!(workflow.input, r#"{"topic":"raft"}"#);
}

#[test]
fn a_transaction_of_tasks_only_leaves_the_revision() {
    let mut w = world();
    let revision = w.h.sm.revision();
    let response = w.h.apply(Command::Transaction(Transaction {
        compares: vec![],
        ops: vec![complete(w.task_id, w.token, "done"), submit("next")],
    }));
    assert_eq!(response.revision(), revision);
    assert!(matches!(
        response,
        Response::Transaction {
            response: TransactionResponse::Committed { .. },
            ..
        }
    ));
}

#[test]
fn interacting_ops_are_invalid_and_apply_nothing() {
    let mut w = world();
    let delete_config = || {
        Op::Keys(KeyOp::Delete {
            key: b"config".to_vec(),
        })
    };
    let keyed = |queue: &str| {
        Op::Tasks(TaskOp::Submit(Box::new(TaskSpec {
            idempotency_key: "k".into(),
            ..spec(queue)
        })))
    };
    let cases = [
        (
            vec![put("config", "1"), submit("q"), delete_config()],
            "ops[2]: acts on key \"config\" as ops[0] does",
        ),
        (
            vec![
                complete(w.task_id, w.token, "a"),
                complete(w.task_id, w.token, "b"),
            ],
            "ops[1]: acts on task",
        ),
        (
            vec![release("L", w.lock), release("L", w.lock + 1)],
            "ops[1]: acts on lock \"L\"",
        ),
        (
            vec![keyed("q"), keyed("q")],
            "ops[1]: acts on idempotency key \"k\" of queue \"q\"",
        ),
        (
            vec![start(two_steps(), "w"), start(two_steps(), "w")],
            "ops[1]: acts on workflow idempotency key \"w\"",
        ),
    ];
    for (ops, expected) in cases {
        let before = w.h.fingerprint();
        let response = w.h.transaction(vec![], ops);
        assert!(
            matches!(&response, TransactionResponse::Invalid { reason } if reason.starts_with(expected)),
            "{response:?}"
        );
        assert_eq!(w.h.fingerprint(), before);
    }
    // The same idempotency key in two queues, and submits without a key, do not interact.
    let response = w.h.transaction(
        vec![],
        vec![keyed("q"), keyed("r"), submit("q"), submit("q")],
    );
    assert!(matches!(response, TransactionResponse::Committed { .. }));
}

#[test]
fn a_fenced_transaction_applies_only_while_the_fence_holds() {
    let mut w = world();
    let fenced = |token| Request {
        now_ms: T0,
        request_id: None,
        fence: Some(Fence {
            kind: LockKind::Lock,
            name: "L".into(),
            token,
        }),
        command: Command::Transaction(Transaction {
            compares: vec![],
            ops: vec![put("fenced", "1")],
        }),
    };
    let before = w.h.fingerprint();
    let lost = w.h.request(&fenced(w.lock + 1));
    assert!(matches!(lost, Response::FenceLost { .. }), "{lost:?}");
    assert_eq!(w.h.fingerprint(), before);
    let held = w.h.request(&fenced(w.lock));
    assert!(matches!(
        held,
        Response::Transaction {
            response: TransactionResponse::Committed { .. },
            ..
        }
    ));
}

#[test]
fn a_retried_transaction_applies_once() {
    let mut w = world();
    let request = Request {
        now_ms: T0,
        request_id: Some(RequestId {
            client_id: 9,
            serial: 1,
            min_pending_serial: 1,
        }),
        fence: None,
        command: Command::Transaction(Transaction {
            compares: vec![],
            ops: vec![put("once", "1"), submit("once")],
        }),
    };
    let first = w.h.request(&request);
    let after_first = w.h.fingerprint();
    let second = w.h.request(&request);
    assert_eq!(first, second);
    assert_eq!(w.h.fingerprint(), after_first);
}

#[test]
fn a_failed_holds_compare_reports_at_most_the_lowest_tokens() {
    let mut h = Harness::new();
    let mut tokens = Vec::new();
    for _ in 0..TXN_COMPARE_TOKENS_MAX + 4 {
        let command = LockCommand::Acquire {
            kind: LockKind::Semaphore,
            name: "gpus".into(),
            holder: Holder {
                session_id: 0,
                ttl_ms: 60_000,
                owner: "test".into(),
            },
            permits: 1,
            limit: 100,
            wait_ms: 0,
            lock_delay_ms: 0,
            value: Vec::new(),
        };
        let Response::Locks {
            response: LockResponse::Acquired { token, .. },
            ..
        } = h.apply(Command::Locks(command))
        else {
            panic!("a permit is free");
        };
        tokens.push(token);
    }
    let compare = Compare::Holds {
        kind: LockKind::Semaphore,
        name: "gpus".into(),
        token: 9_999,
    };
    let response = h.transaction(vec![compare], vec![put("k", "v")]);
    let expected = Current::Grants {
        tokens: tokens[..TXN_COMPARE_TOKENS_MAX].to_vec(),
    };
    assert_eq!(
        response,
        TransactionResponse::CompareFailed {
            failed: vec![(0, expected)]
        }
    );
}

fn create_topic(h: &mut Harness) {
    let command = TopicCommand::Create {
        name: "research".into(),
        config: TopicConfig {
            subjects: vec!["research.>".into()],
            ..TopicConfig::default()
        },
    };
    assert!(matches!(
        h.apply(Command::Topics(command)),
        Response::Topics {
            response: TopicResponse::Created { .. },
            ..
        }
    ));
}

fn publish(subject: &str, data: &str) -> Op {
    Op::Topics(TopicOp::Publish(NewMessage {
        subject: subject.into(),
        key: None,
        headers: BTreeMap::new(),
        data: data.into(),
        idempotency_key: String::new(),
    }))
}

#[test]
fn a_publish_commits_with_the_rest_and_a_refused_one_refuses_all() {
    let mut w = world();
    create_topic(&mut w.h);
    tracing::info!("a message no topic captures refuses the whole, naming its op");
    let before = w.h.fingerprint();
    let mut ops = every_op(&w);
    ops.push(publish("nowhere.done", "x"));
    let response = w.h.transaction(vec![], ops);
    assert!(
        matches!(
            &response,
            TransactionResponse::OpRefused { index: 6, refusal }
                if matches!(&**refusal, Response::Topics {
                    response: TopicResponse::Refused(Refusal { code: RefusalCode::NotFound, .. }),
                    ..
                })
        ),
        "{response:?}"
    );
    assert_eq!(w.h.fingerprint(), before);
    assert_eq!(
        w.h.sm
            .topics()
            .get("research")
            .expect("created")
            .message_count(),
        0
    );
    tracing::info!("captured, it is stored in the same entry as the completion and the submit");
    let mut ops = every_op(&w);
    ops.push(publish("research.done", "chapter 1"));
    ops.push(publish("research.started", "chapter 2"));
    let TransactionResponse::Committed { results } = w.h.transaction(vec![], ops) else {
        panic!("committed");
    };
    assert_eq!(
        results[6..],
        [
            OpResult::Published {
                topic: "research".into(),
                seq: 1,
                duplicate: false
            },
            OpResult::Published {
                topic: "research".into(),
                seq: 2,
                duplicate: false
            },
        ]
    );
    let topic = w.h.sm.topics().get("research").expect("created");
    assert_eq!(topic.message(1).expect("stored").data, b"chapter 1");
    assert_eq!(
        w.h.sm.tasks().task(w.task_id).expect("kept").state,
        TaskState::Succeeded
    );
}
