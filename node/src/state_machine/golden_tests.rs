//! The log and snapshot encodings, pinned (see `format.rs`).
//!
//! - Tags: every variant of every stored enum is encoded with the tag its `code()` names.
//! - Log: the exact bytes of a full `Request` for every command, and of openraft's envelope.
//! - Snapshot: the exact bytes of each section (each field of `StateMachine`, of `Agents` and of
//!   `Tasks`, encoded on its own) of a small state built by applying commands.
//!
//! A failure means the encoding changed. If on purpose, bump LOG_FORMAT or SNAPSHOT_FORMAT and
//! update the hex here: the failure shows the new bytes, and
//! `CONCLAVE_PRINT_GOLDEN=1 cargo test -p conclave-node --lib golden -- --nocapture
//! --test-threads=1` prints every case's current bytes ready to paste.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::OnceLock;

use serde::Serialize;

use super::barriers::{
    BarrierCommand, BarrierEvent, BarrierEventKind, BarrierResponse, BarrierStatus,
};
use super::coordination::{
    self, AgentSpec, AttemptOutcome, Backoff, Beat, BreakerState, CoordCommand, CoordEventKind,
    CoordResponse, DeadLetterReason, DeadLetterSelector, DecisionEventKind, DecisionGate,
    DecisionSpec, DecisionStatus, Electorate, Escalation, Lease, Revoked, Rule, TaskEventKind,
    TaskOp, TaskSpec, TaskState, TimerKind,
};
use super::locks::{
    Holder, LockCommand, LockEvent, LockEventKind, LockKind, LockOp, LockResponse, Timer,
};
use super::transaction::{self, Current, KeyOp, Op, OpResult};
use super::workflows::definition::{
    DecisionTemplate, FanOut, FanOutSource, JoinPolicy, StepDef, StepKind, TaskTemplate, When,
};
use super::workflows::{
    BranchState, Definition, StepState, WorkflowCommand, WorkflowEvent, WorkflowEventKind,
    WorkflowOp, WorkflowResponse, WorkflowState, WorkflowTimer,
};
use super::{
    Command, Compare, EventKind, Fence, KeyValue, Request, RequestId, Response, StateMachine,
    Transaction, TransactionResponse, TxnOp,
};
// topics
use super::topics::{
    DeadLetterSelector as TopicDeadLetters, GroupConfig, NewMessage, PendingState, Refusal,
    RefusalCode, StartPosition, TopicCommand, TopicConfig, TopicEvent, TopicEventKind, TopicOp,
    TopicResponse,
};
use crate::raft::{encode, Entry, LogId, NodeInfo, Vote};

// ---- Checking and printing ----

#[derive(Clone, Copy)]
enum Layout {
    Log,
    Snapshot,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Log => "log",
            Layout::Snapshot => "snapshot",
        }
    }

    fn format(self) -> &'static str {
        match self {
            Layout::Log => "LOG_FORMAT",
            Layout::Snapshot => "SNAPSHOT_FORMAT",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex as a Rust string literal: 64 digits a line, joined by `\` line continuations.
fn literal(hex: &str) -> String {
    let lines: Vec<&str> = hex
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("hex is ASCII"))
        .collect();
    format!("\"{}\"", lines.join("\\\n         "))
}

/// Compares `bytes` with the golden hex (whitespace in it ignored). With CONCLAVE_PRINT_GOLDEN
/// set, prints the current bytes first.
fn check(layout: Layout, name: &str, bytes: &[u8], golden: &str) {
    let now = hex(bytes);
    if std::env::var_os("CONCLAVE_PRINT_GOLDEN").is_some() {
        println!("{name}: {}", literal(&now));
    }
    let golden: String = golden.split_whitespace().collect();
    assert!(
        now == golden,
        "the {} encoding changed: if on purpose, bump {} and update the golden bytes.\n\
         {name} is now:\n{}",
        layout.name(),
        layout.format(),
        literal(&now)
    );
}

/// Every sample is encoded with the tag its code names, and the codes are 0, 1, 2, ...: one
/// sample per variant, in declaration order.
fn assert_tags<T: Serialize + Debug>(samples: &[T], code: impl Fn(&T) -> u16) {
    for (expected, sample) in samples.iter().enumerate() {
        let bytes = encode(sample);
        assert!(bytes[0] < 251, "a tag above one byte: {sample:?}");
        assert_eq!(
            u16::from(bytes[0]),
            code(sample),
            "{sample:?} is encoded with tag {} but its code is {}: a variant was inserted, \
             removed or moved (append new variants, with the next code), or the code table in \
             format.rs is wrong",
            bytes[0],
            code(sample)
        );
        assert_eq!(
            usize::from(code(sample)),
            expected,
            "samples in declaration order, one per variant: {sample:?}"
        );
    }
}

// ---- Samples: every command, with representative non-default values ----

const NOW_MS: u64 = 1_700_000_000_123;

fn request(command: Command) -> Request {
    Request {
        now_ms: NOW_MS,
        request_id: Some(RequestId {
            client_id: 0x00c0_ffee_1234_5678,
            serial: 300,
            min_pending_serial: 299,
        }),
        fence: None,
        command,
    }
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn put() -> Command {
    Command::Put {
        key: b"config/alpha".to_vec(),
        value: b"\x00\x01value".to_vec(),
        session_id: 7,
    }
}

fn delete() -> Command {
    Command::Delete {
        key: b"config/beta".to_vec(),
    }
}

fn compare_and_swap() -> Command {
    Command::CompareAndSwap {
        key: b"leader".to_vec(),
        expected_mod_revision: 41,
        value: Some(b"node-2".to_vec()),
    }
}

fn txn() -> Command {
    Command::Txn {
        compares: vec![
            Compare {
                key: b"a".to_vec(),
                mod_revision: 3,
            },
            Compare {
                key: b"b".to_vec(),
                mod_revision: 0,
            },
        ],
        ops: vec![
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            TxnOp::Delete { key: b"c".to_vec() },
        ],
    }
}

fn agent_spec() -> AgentSpec {
    AgentSpec {
        name: "agent-7".into(),
        capabilities: strings(&["gpu", "linux"]),
        labels: pairs(&[("zone", "eu-1")]),
        max_concurrent: 4,
        version: "1.2.3".into(),
        metadata: pairs(&[("pid", "4242")]),
        ttl_ms: 15_000,
        replace: true,
        breaker_failures: 5,
        breaker_cooldown_ms: 30_000,
    }
}

fn task_spec() -> TaskSpec {
    TaskSpec {
        queue: "emails".into(),
        payload: b"{\"to\":\"x\"}".to_vec(),
        content_type: "application/json".into(),
        capabilities: strings(&["smtp"]),
        priority: -5,
        max_attempts: 4,
        backoff: Backoff {
            initial_ms: 500,
            maximum_ms: 90_000,
            multiplier_permille: 1_500,
            jitter_permille: 250,
        },
        lease_ms: 20_000,
        deadline_ms: NOW_MS + 3_600_000,
        not_before_ms: NOW_MS + 1_000,
        idempotency_key: "mail-1".into(),
        correlation_id: "corr-9".into(),
        parent_id: 3,
        labels: pairs(&[("tenant", "acme")]),
        requires: Some(DecisionGate {
            decision_id: 2,
            option: "yes".into(),
        }),
    }
}

fn decision_spec() -> DecisionSpec {
    DecisionSpec {
        question: "ship it?".into(),
        options: vec!["yes".into(), "no".into(), "veto".into()],
        electorate: Electorate {
            agents: vec!["agent-7".into(), "agent-8".into()],
            capability: String::new(),
        },
        rule: Rule::AtLeast(2),
        weights: [("agent-7".to_string(), 3)].into_iter().collect(),
        veto_option: Some("veto".into()),
        deadline_ms: NOW_MS + 60_000,
        labels: pairs(&[("team", "infra")]),
    }
}

fn tick_retention() -> coordination::Retention {
    coordination::Retention {
        finished_max: 1_000,
        finished_age_ms: 86_400_000,
        idempotency_ms: 3_600_000,
        gone_agents_ms: 600_000,
    }
}

/// One of each coordination command, in declaration order.
fn coord_commands() -> Vec<CoordCommand> {
    vec![
        CoordCommand::RegisterAgent(agent_spec()),
        CoordCommand::Heartbeats {
            beats: vec![
                Beat {
                    session_id: 3,
                    load: 2,
                },
                Beat {
                    session_id: 900,
                    load: 0,
                },
            ],
        },
        CoordCommand::CloseSession { session_id: 3 },
        CoordCommand::SetDrained {
            name: "agent-7".into(),
            drained: true,
        },
        CoordCommand::Submit {
            tasks: vec![task_spec()],
        },
        CoordCommand::Assign {
            assignments: vec![(11, 3), (12, 900)],
        },
        CoordCommand::Complete {
            task_id: 11,
            token: 77,
            result: b"sent".to_vec(),
        },
        CoordCommand::Fail {
            task_id: 11,
            token: 77,
            error: "disk full".into(),
            retryable: true,
            retry_after_ms: 2_500,
        },
        CoordCommand::ExtendLease {
            task_id: 11,
            token: 77,
            lease_ms: 60_000,
        },
        CoordCommand::Progress {
            task_id: 11,
            token: 77,
            percent: 50,
            message: "half".into(),
            checkpoint: "offset=1024".into(),
            extend_lease: true,
        },
        CoordCommand::Release {
            task_id: 11,
            token: 77,
        },
        CoordCommand::Cancel {
            task_id: 11,
            reason: "operator".into(),
        },
        CoordCommand::Redrive {
            selector: DeadLetterSelector::Ids(vec![4, 5]),
        },
        CoordCommand::Purge {
            selector: DeadLetterSelector::Queue("emails".into()),
        },
        CoordCommand::Propose(decision_spec()),
        CoordCommand::Vote {
            session_id: 3,
            decision_id: 2,
            choice: "yes".into(),
            rationale: "tests pass".into(),
        },
        CoordCommand::Tick {
            refresh: true,
            retention: tick_retention(),
        },
        CoordCommand::Delegate {
            parent: 11,
            token: 77,
            tasks: vec![task_spec()],
            escalate_to: "senior".into(),
        },
    ]
}

/// One of each command, in declaration order (Coordination with its first command).
fn commands() -> Vec<Command> {
    vec![
        put(),
        delete(),
        compare_and_swap(),
        txn(),
        Command::Coordination(coord_commands().swap_remove(0)),
        Command::Locks(lock_commands().swap_remove(0)),
        Command::Barriers(barrier_enter()),
        Command::Workflows(workflow_commands().swap_remove(0)),
        Command::Topics(topic_commands().swap_remove(0)),
        Command::Transaction(transaction()),
    ]
}

/// A definition with every kind of step: a fan-out of two joined at least one, a vote, a step
/// run only when the vote says yes and undone by a compensation step.
fn workflow_definition() -> Definition {
    let template = |queue: &str| TaskTemplate {
        queue: queue.into(),
        capabilities: strings(&["gpu"]),
        params: "{\"depth\":2}".into(),
        priority: 3,
        max_attempts: 4,
        backoff: Backoff::default(),
        lease_ms: 30_000,
        deadline_ms: 600_000,
        labels: pairs(&[("team", "infra")]),
    };
    let step = |name: &str, after: &[u32], kind: StepKind| StepDef {
        name: name.into(),
        after: after.to_vec(),
        when: None,
        kind,
        compensate: None,
        compensation: false,
    };
    Definition {
        name: "research".into(),
        version: 2,
        deadline_ms: 3_600_000,
        steps: vec![
            step(
                "fetch",
                &[],
                StepKind::Task {
                    template: template("emails"),
                    fan_out: Some(FanOut {
                        source: FanOutSource::Count(2),
                        policy: JoinPolicy::AtLeast(1),
                        join_deadline_ms: 60_000,
                    }),
                },
            ),
            step(
                "approve",
                &[0],
                StepKind::Decision(DecisionTemplate {
                    question: "send?".into(),
                    options: vec!["yes".into(), "no".into()],
                    electorate: Electorate {
                        agents: Vec::new(),
                        capability: "gpu".into(),
                    },
                    rule: Rule::Majority,
                    weights: BTreeMap::new(),
                    veto_option: None,
                    deadline_ms: 120_000,
                    labels: BTreeMap::new(),
                }),
            ),
            StepDef {
                when: Some(When {
                    step: 1,
                    outcome: "yes".into(),
                }),
                compensate: Some(3),
                ..step(
                    "send",
                    &[1],
                    StepKind::Task {
                        template: template("reports"),
                        fan_out: None,
                    },
                )
            },
            StepDef {
                compensation: true,
                ..step(
                    "unsend",
                    &[],
                    StepKind::Task {
                        template: template("reports"),
                        fan_out: None,
                    },
                )
            },
        ],
    }
}

/// One of each workflow command, in declaration order.
fn workflow_commands() -> Vec<WorkflowCommand> {
    vec![
        WorkflowCommand::Start {
            definition: workflow_definition(),
            input: "{\"topic\":\"raft\"}".into(),
            idempotency_key: "wf-1".into(),
            deadline_ms: 0,
        },
        WorkflowCommand::Cancel {
            workflow_id: 1,
            reason: "stop".into(),
        },
        WorkflowCommand::Retry { workflow_id: 1 },
    ]
}

/// A transaction with one compare of each kind and one op of each kind, in declaration order
/// (the workflow's definition is pinned by `golden_workflow_start`; here it has no steps).
fn transaction() -> Transaction {
    Transaction {
        compares: transaction_compares(),
        ops: transaction_ops(),
    }
}

fn transaction_compares() -> Vec<transaction::Compare> {
    vec![
        transaction::Compare::Key {
            key: b"config".to_vec(),
            mod_revision: 7,
        },
        transaction::Compare::Holds {
            kind: LockKind::Lock,
            name: "report".into(),
            token: 42,
        },
        transaction::Compare::Task {
            task_id: 9,
            state: TaskState::Assigned,
            token: 12,
        },
    ]
}

/// One op of each kind: the keys' two, the tasks' two, the workflows' and the locks' one.
fn transaction_ops() -> Vec<Op> {
    vec![
        Op::Keys(KeyOp::Put {
            key: b"result/9".to_vec(),
            value: b"42".to_vec(),
        }),
        Op::Keys(KeyOp::Delete {
            key: b"claim/9".to_vec(),
        }),
        Op::Tasks(TaskOp::Complete {
            task_id: 9,
            token: 12,
            result: b"ok".to_vec(),
        }),
        Op::Tasks(TaskOp::Submit(Box::new(task_spec()))),
        Op::Workflows(WorkflowOp::Start {
            definition: Definition {
                name: "wf".into(),
                version: 1,
                deadline_ms: 0,
                steps: Vec::new(),
            },
            input: "{}".into(),
            idempotency_key: "wf-9".into(),
            deadline_ms: 0,
        }),
        Op::Locks(LockOp::Release {
            kind: LockKind::Lock,
            name: "report".into(),
            token: 42,
        }),
        Op::Topics(TopicOp::Publish(NewMessage {
            subject: "research.done".into(),
            key: Some(b"doc-9".to_vec()),
            headers: BTreeMap::from([("kind".to_string(), "draft".to_string())]),
            data: b"results/9".to_vec(),
            idempotency_key: "p9".into(),
        })),
    ]
}

fn op_results() -> Vec<OpResult> {
    vec![
        OpResult::KeyPut,
        OpResult::KeyDeleted { existed: true },
        OpResult::TaskCompleted { task_id: 9 },
        OpResult::TaskSubmitted {
            task_id: 10,
            existing: false,
        },
        OpResult::WorkflowStarted {
            workflow_id: 3,
            existing: true,
        },
        OpResult::LockReleased,
        OpResult::Published {
            topic: "research".into(),
            seq: 4,
            duplicate: false,
        },
    ]
}

fn transaction_responses() -> Vec<TransactionResponse> {
    vec![
        TransactionResponse::Committed {
            results: op_results(),
        },
        TransactionResponse::CompareFailed {
            failed: vec![
                (0, Current::Key { mod_revision: 8 }),
                (1, Current::Grants { tokens: vec![43] }),
                (
                    2,
                    Current::Task {
                        state: Some(TaskState::Pending),
                        token: 0,
                    },
                ),
            ],
        },
        TransactionResponse::OpRefused {
            index: 2,
            refusal: Box::new(Response::Coordination {
                revision: 8,
                response: CoordResponse::LeaseLost {
                    reason: "lease lost".into(),
                },
            }),
        },
        TransactionResponse::Invalid {
            reason: "interact".into(),
        },
    ]
}

fn lease_holder() -> Holder {
    Holder {
        session_id: 0,
        ttl_ms: 10_000,
        owner: "cron-1".into(),
    }
}

/// One of each lock command, in declaration order.
fn lock_commands() -> Vec<LockCommand> {
    vec![
        LockCommand::Acquire {
            kind: LockKind::Semaphore,
            name: "gpus".into(),
            holder: lease_holder(),
            permits: 2,
            limit: 8,
            wait_ms: 30_000,
            lock_delay_ms: 3_000,
            value: b"v".to_vec(),
        },
        LockCommand::Release {
            kind: LockKind::Lock,
            name: "report".into(),
            token: 42,
        },
        LockCommand::KeepAlive {
            kind: LockKind::Lock,
            name: "report".into(),
            token: 42,
        },
        LockCommand::Proclaim {
            name: "primary".into(),
            token: 43,
            value: b"node-2:7001".to_vec(),
        },
    ]
}

fn barrier_enter() -> BarrierCommand {
    BarrierCommand::Enter {
        name: "stage-1".into(),
        participant: "worker-3".into(),
        parties: 5,
        quorum: 4,
        timeout_ms: 60_000,
    }
}

fn key_value() -> KeyValue {
    KeyValue {
        key: b"k".to_vec(),
        value: Vec::new(),
        create_revision: 2,
        mod_revision: 5,
        version: 3,
        session_id: 0,
    }
}

fn responses() -> Vec<Response> {
    vec![
        Response::Empty,
        Response::Put {
            revision: 5,
            previous: Some(key_value()),
        },
        Response::Delete {
            revision: 6,
            previous: None,
        },
        Response::CompareAndSwap {
            revision: 7,
            succeeded: true,
            current: Some(key_value()),
        },
        Response::Txn {
            revision: 8,
            succeeded: false,
            failed_compares: vec![(1, 4)],
        },
        Response::QuotaExceeded {
            revision: 8,
            reason: "full".into(),
        },
        Response::RequestIdExpired { revision: 8 },
        Response::SessionNotLive {
            revision: 8,
            session_id: 3,
        },
        Response::Coordination {
            revision: 8,
            response: CoordResponse::Ok,
        },
        Response::Locks {
            revision: 8,
            response: LockResponse::Released,
        },
        Response::Barriers {
            revision: 8,
            response: BarrierResponse::Entered { counted: true },
        },
        Response::FenceLost {
            revision: 8,
            reason: "lock lost".into(),
        },
        Response::Workflows {
            revision: 8,
            response: WorkflowResponse::Started {
                workflow_id: 1,
                existing: false,
            },
        },
        Response::Topics {
            revision: 8,
            response: TopicResponse::Acked,
        },
        Response::Transaction {
            revision: 9,
            response: transaction_responses().swap_remove(0),
        },
    ]
}

fn lock_responses() -> Vec<LockResponse> {
    vec![
        LockResponse::Acquired {
            token: 42,
            granted: true,
            expires_at_ms: NOW_MS,
        },
        LockResponse::Busy,
        LockResponse::Released,
        LockResponse::KeptAlive {
            expires_at_ms: NOW_MS,
        },
        LockResponse::Proclaimed,
        LockResponse::LockLost {
            reason: "lock lost".into(),
        },
        LockResponse::Mismatch {
            reason: "limit".into(),
        },
        LockResponse::SessionNotLive { session_id: 3 },
        LockResponse::QuotaExceeded {
            reason: "full".into(),
        },
    ]
}

fn coord_responses() -> Vec<CoordResponse> {
    vec![
        CoordResponse::Registered {
            session_id: 3,
            ttl_ms: 15_000,
            expires_at_ms: NOW_MS,
        },
        CoordResponse::AgentExists {
            name: "agent-7".into(),
        },
        CoordResponse::Ok,
        CoordResponse::UnknownSession { session_id: 3 },
        CoordResponse::UnknownAgent {
            name: "agent-9".into(),
        },
        CoordResponse::UnknownTask { task_id: 11 },
        CoordResponse::UnknownDecision { decision_id: 2 },
        CoordResponse::Submitted {
            results: vec![(11, false), (4, true)],
        },
        CoordResponse::Assigned {
            tokens: vec![Some(77), None],
        },
        CoordResponse::Verb {
            state: TaskState::Assigned,
            lease_deadline_ms: NOW_MS,
        },
        CoordResponse::LeaseLost {
            reason: "lease lost".into(),
        },
        CoordResponse::Canceled {
            canceled: true,
            previous: TaskState::Pending,
        },
        CoordResponse::DeadLetters { count: 2 },
        CoordResponse::Closed { released: 1 },
        CoordResponse::Proposed { decision_id: 2 },
        CoordResponse::Voted { decision_id: 2 },
        CoordResponse::VoteRefused {
            reason: "closed".into(),
        },
        CoordResponse::Invalid {
            reason: "queue".into(),
        },
        CoordResponse::QuotaExceeded {
            reason: "full".into(),
        },
        CoordResponse::Ticked { fired: 3 },
    ]
}

fn coord_event_kinds() -> Vec<CoordEventKind> {
    vec![
        CoordEventKind::Task {
            task_id: 11,
            queue: "emails".into(),
            kind: TaskEventKind::Assigned,
            state: TaskState::Assigned,
            attempts: 1,
            lease: Some(Lease {
                session_id: 3,
                agent: "agent-7".into(),
                attempt: 1,
                token: 77,
                assigned_ms: NOW_MS,
                deadline_ms: NOW_MS + 20_000,
            }),
            revoked: Some(Revoked {
                session_id: 3,
                token: 76,
                canceled: false,
                reason: "the lease expired".into(),
            }),
        },
        CoordEventKind::Decision {
            decision_id: 2,
            kind: DecisionEventKind::Closed,
        },
        CoordEventKind::SessionClosed {
            session_id: 3,
            agent: "agent-7".into(),
            reason: "session closed".into(),
        },
        CoordEventKind::Lock(LockEvent {
            kind: LockEventKind::Lost,
            lock: LockKind::Election,
            name: "primary".into(),
            token: 43,
            session_id: 3,
            reason: "its session ended".into(),
        }),
        CoordEventKind::Barrier(BarrierEvent {
            kind: BarrierEventKind::Released,
            name: "stage-1".into(),
        }),
        CoordEventKind::Workflow(WorkflowEvent {
            workflow_id: 7,
            kind: WorkflowEventKind::StepSucceeded,
            step: "research".into(),
            state: WorkflowState::Running,
            reason: String::new(),
        }),
        CoordEventKind::Topic(TopicEvent {
            topic: "orders".into(),
            kind: TopicEventKind::Published {
                first_seq: 3,
                last_seq: 4,
            },
        }),
    ]
}

// ---- Tags equal codes ----

#[test]
fn golden_tags_of_log_enums_are_their_codes() {
    assert_tags(&commands(), Command::code);
    assert_tags(&coord_commands(), CoordCommand::code);
    assert_tags(
        &[
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            TxnOp::Delete { key: b"a".to_vec() },
        ],
        TxnOp::code,
    );
    assert_tags(
        &[
            DeadLetterSelector::Ids(vec![1]),
            DeadLetterSelector::Queue("q".into()),
        ],
        DeadLetterSelector::code,
    );
    assert_tags(
        &[
            Rule::Majority,
            Rule::Unanimous,
            Rule::AtLeast(2),
            Rule::Weighted,
        ],
        Rule::code,
    );
    assert_tags(&lock_commands(), LockCommand::code);
    assert_tags(
        &[LockKind::Lock, LockKind::Semaphore, LockKind::Election],
        LockKind::code,
    );
    assert_tags(&[barrier_enter()], BarrierCommand::code);
    assert_tags(&transaction_compares(), transaction::Compare::code);
    let ops = transaction_ops();
    assert_tags(&[&ops[0], &ops[2], &ops[4], &ops[5], &ops[6]], |op| {
        op.code()
    });
    let key_ops: Vec<&KeyOp> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Keys(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_tags(&key_ops, |op| op.code());
    let task_ops: Vec<&TaskOp> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Tasks(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_tags(&task_ops, |op| op.code());
    let other_ops: Vec<u16> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Workflows(op) => Some((encode(op)[0], op.code())),
            Op::Locks(op) => Some((encode(op)[0], op.code())),
            Op::Topics(op) => Some((encode(op)[0], op.code())),
            _ => None,
        })
        .map(|(tag, code)| {
            assert_eq!(
                u16::from(tag),
                code,
                "the workflows' and locks' one op each"
            );
            code
        })
        .collect();
    assert_eq!(other_ops, [0, 0, 0]);
}

#[test]
fn golden_tags_of_snapshot_enums_are_their_codes() {
    assert_tags(&responses(), Response::code);
    assert_tags(&transaction_responses(), TransactionResponse::code);
    assert_tags(&op_results(), OpResult::code);
    let TransactionResponse::CompareFailed { failed } = transaction_responses().swap_remove(1)
    else {
        unreachable!("the second sample is a failed compare")
    };
    let currents: Vec<Current> = failed.into_iter().map(|(_, current)| current).collect();
    assert_tags(&currents, Current::code);
    assert_tags(&coord_responses(), CoordResponse::code);
    assert_tags(&coord_event_kinds(), CoordEventKind::code);
    assert_tags(&lock_responses(), LockResponse::code);
    assert_tags(
        &[
            LockEventKind::Granted,
            LockEventKind::Released,
            LockEventKind::Lost,
            LockEventKind::Queued,
            LockEventKind::WaitEnded,
            LockEventKind::Proclaimed,
            LockEventKind::DelayEnded,
        ],
        LockEventKind::code,
    );
    assert_tags(
        &[Timer::DelayOver, Timer::HoldExpiry, Timer::WaitExpiry],
        Timer::code,
    );
    assert_tags(
        &[
            BarrierResponse::Entered { counted: false },
            BarrierResponse::Mismatch {
                reason: "parties".into(),
            },
            BarrierResponse::QuotaExceeded {
                reason: "full".into(),
            },
        ],
        BarrierResponse::code,
    );
    assert_tags(
        &[
            BarrierStatus::Waiting,
            BarrierStatus::Released,
            BarrierStatus::TimedOut,
        ],
        BarrierStatus::code,
    );
    assert_tags(
        &[
            BarrierEventKind::Entered,
            BarrierEventKind::Released,
            BarrierEventKind::TimedOut,
        ],
        BarrierEventKind::code,
    );
    assert_tags(&[EventKind::Put, EventKind::Delete], EventKind::code);
    assert_tags(&TaskState::ALL, TaskState::code);
    assert_tags(
        &[
            AttemptOutcome::Running,
            AttemptOutcome::Succeeded,
            AttemptOutcome::Failed,
            AttemptOutcome::LeaseExpired,
            AttemptOutcome::SessionLost,
            AttemptOutcome::Released,
            AttemptOutcome::Canceled,
            AttemptOutcome::DeadlineExceeded,
        ],
        AttemptOutcome::code,
    );
    assert_tags(
        &[
            DeadLetterReason::AttemptsExhausted,
            DeadLetterReason::NotRetryable,
            DeadLetterReason::DeadlineExceeded,
        ],
        DeadLetterReason::code,
    );
    assert_tags(
        &[
            TimerKind::TaskDeadline,
            TimerKind::LeaseExpiry,
            TimerKind::SessionExpiry,
            TimerKind::TaskReady,
            TimerKind::DecisionDeadline,
            TimerKind::BreakerReopen,
        ],
        TimerKind::code,
    );
    assert_tags(
        &[
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ],
        BreakerState::code,
    );
    assert_tags(
        &[
            DecisionStatus::Open,
            DecisionStatus::Decided,
            DecisionStatus::Rejected,
            DecisionStatus::NoQuorum,
        ],
        DecisionStatus::code,
    );
    assert_tags(
        &[
            TaskEventKind::Submitted,
            TaskEventKind::Assigned,
            TaskEventKind::Progress,
            TaskEventKind::LeaseExtended,
            TaskEventKind::Succeeded,
            TaskEventKind::Failed,
            TaskEventKind::RetryScheduled,
            TaskEventKind::Requeued,
            TaskEventKind::DeadLettered,
            TaskEventKind::Canceled,
            TaskEventKind::Redriven,
            TaskEventKind::Unblocked,
            TaskEventKind::Purged,
            TaskEventKind::Expired,
            TaskEventKind::Escalated,
        ],
        TaskEventKind::code,
    );
    assert_tags(
        &[
            Escalation::Manager,
            Escalation::Task(9),
            Escalation::Orphaned,
        ],
        Escalation::code,
    );
    assert_tags(
        &[
            DecisionEventKind::Proposed,
            DecisionEventKind::Voted,
            DecisionEventKind::Closed,
        ],
        DecisionEventKind::code,
    );
}

/// The tag check can fail: a value whose tag is not its code is caught.
#[test]
#[should_panic(expected = "is encoded with tag 1 but its code is 0")]
fn golden_tags_catch_a_moved_variant() {
    assert_tags(&[TaskState::Delayed], |_| 0);
}

// ---- Log: one full Request per command ----

fn check_request(command: Command, golden: &str) {
    check(
        Layout::Log,
        command.name(),
        &encode(&request(command)),
        golden,
    );
}

fn coord(index: usize) -> Command {
    Command::Coordination(coord_commands().swap_remove(index))
}

mod log {
    use super::*;

    fn lock(index: usize) -> Command {
        Command::Locks(lock_commands().swap_remove(index))
    }

    #[test]
    fn golden_lock_acquire() {
        check_request(
            lock(0),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100050001046770\
         757300fb10270663726f6e2d310208fb3075fbb80b0176",
        );
    }

    #[test]
    fn golden_lock_release() {
        check_request(
            lock(1),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100050100067265\
         706f72742a",
        );
    }

    #[test]
    fn golden_lock_keep_alive() {
        check_request(
            lock(2),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100050200067265\
         706f72742a",
        );
    }

    #[test]
    fn golden_lock_proclaim() {
        check_request(
            lock(3),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100050307707269\
         6d6172792b0b6e6f64652d323a37303031",
        );
    }

    #[test]
    fn golden_barrier_enter() {
        check_request(
            Command::Barriers(barrier_enter()),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100060007737461\
         67652d3108776f726b65722d330504fb60ea",
        );
    }

    #[test]
    fn golden_fenced_put() {
        let fenced = Request {
            fence: Some(Fence {
                kind: LockKind::Lock,
                name: "report".into(),
                token: 42,
            }),
            ..request(put())
        };
        check(
            Layout::Log,
            "fenced_put",
            &encode(&fenced),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010100067265706f\
         72742a000c636f6e6669672f616c70686107000176616c756507",
        );
    }

    #[test]
    fn golden_put() {
        check_request(
            put(),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100000c636f6e66\
         69672f616c70686107000176616c756507",
        );
    }

    #[test]
    fn golden_delete() {
        check_request(
            delete(),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100010b636f6e66\
         69672f62657461",
        );
    }

    #[test]
    fn golden_compare_and_swap() {
        check_request(
            compare_and_swap(),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010002066c656164\
         65722901066e6f64652d32",
        );
    }

    #[test]
    fn golden_txn() {
        check_request(
            txn(),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100030201610301\
         6200020001610131010163",
        );
    }

    #[test]
    fn golden_register_agent() {
        check_request(
            coord(0),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040007616765\
         6e742d370203677075056c696e757801047a6f6e650465752d310405312e322e\
         3301037069640434323432fb983a0105fb3075",
        );
    }

    #[test]
    fn golden_heartbeats() {
        check_request(
            coord(1),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000401020302fb\
         840300",
        );
    }

    #[test]
    fn golden_close_session() {
        check_request(
            coord(2),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040203",
        );
    }

    #[test]
    fn golden_set_drained() {
        check_request(
            coord(3),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040307616765\
         6e742d3701",
        );
    }

    #[test]
    fn golden_submit() {
        check_request(
            coord(4),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010004040106656d\
         61696c730a7b22746f223a2278227d106170706c69636174696f6e2f6a736f6e\
         0104736d74700904fbf401fc905f0100fbdc05fafb204efdfb561cd08b010000\
         fd636ce5cf8b010000066d61696c2d3106636f72722d3903010674656e616e74\
         0461636d65010203796573",
        );
    }

    #[test]
    fn golden_assign() {
        check_request(
            coord(5),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000405020b030c\
         fb8403",
        );
    }

    #[test]
    fn golden_complete() {
        check_request(
            coord(6),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010004060b4d0473\
         656e74",
        );
    }

    #[test]
    fn golden_fail() {
        check_request(
            coord(7),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010004070b4d0964\
         69736b2066756c6c01fbc409",
        );
    }

    #[test]
    fn golden_extend_lease() {
        check_request(
            coord(8),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010004080b4dfb60\
         ea",
        );
    }

    #[test]
    fn golden_progress() {
        check_request(
            coord(9),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010004090b4d3204\
         68616c660b6f66667365743d3130323401",
        );
    }

    #[test]
    fn golden_release() {
        check_request(
            coord(10),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040a0b4d",
        );
    }

    #[test]
    fn golden_cancel() {
        check_request(
            coord(11),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040b0b086f70\
         657261746f72",
        );
    }

    #[test]
    fn golden_redrive() {
        check_request(
            coord(12),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040c00020405",
        );
    }

    #[test]
    fn golden_purge() {
        check_request(
            coord(13),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040d0106656d\
         61696c73",
        );
    }

    #[test]
    fn golden_propose() {
        check_request(
            coord(14),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040e08736869\
         702069743f0303796573026e6f047665746f02076167656e742d37076167656e\
         742d3800020201076167656e742d370301047665746ffddb52e6cf8b01000001\
         047465616d05696e667261",
        );
    }

    #[test]
    fn golden_vote() {
        check_request(
            coord(15),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100040f03020379\
         65730a74657374732070617373",
        );
    }

    #[test]
    fn golden_tick() {
        check_request(
            coord(16),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100041001fbe803\
         fc005c2605fc80ee3600fcc0270900",
        );
    }

    #[test]
    fn golden_delegate() {
        check_request(
            coord(17),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010004110b4d0106\
         656d61696c730a7b22746f223a2278227d106170706c69636174696f6e2f6a73\
         6f6e0104736d74700904fbf401fc905f0100fbdc05fafb204efdfb561cd08b01\
         0000fd636ce5cf8b010000066d61696c2d3106636f72722d3903010674656e61\
         6e740461636d650102037965730673656e696f72",
        );
    }

    #[test]
    fn golden_workflow_start() {
        check_request(
            Command::Workflows(workflow_commands().swap_remove(0)),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100070008726573\
         656172636802fc80ee36000405666574636800000006656d61696c7301036770\
         750b7b226465707468223a327d060400000000fb3075fcc02709000104746561\
         6d05696e6672610100020201fb60ea000007617070726f766501000001057365\
         6e643f0203796573026e6f0003677075000000fcc0d401000000000473656e64\
         010101010379657300077265706f72747301036770750b7b226465707468223a\
         327d060400000000fb3075fcc027090001047465616d05696e66726100010300\
         06756e73656e64000000077265706f72747301036770750b7b22646570746822\
         3a327d060400000000fb3075fcc027090001047465616d05696e667261000001\
         107b22746f706963223a2272616674227d0477662d3100",
        );
    }

    #[test]
    fn golden_workflow_cancel() {
        check_request(
            Command::Workflows(workflow_commands().swap_remove(1)),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100070101047374\
         6f70",
        );
    }

    #[test]
    fn golden_workflow_retry() {
        check_request(
            Command::Workflows(workflow_commands().swap_remove(2)),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100070201",
        );
    }

    /// One compare and one op of each kind.
    #[test]
    fn golden_transaction() {
        check_request(
            Command::Transaction(transaction()),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b010009030006636f\
         6e666967070100067265706f72742a0209030c07000008726573756c742f3902\
         3432000107636c61696d2f390100090c026f6b010106656d61696c730a7b2274\
         6f223a2278227d106170706c69636174696f6e2f6a736f6e0104736d74700904\
         fbf401fc905f0100fbdc05fafb204efdfb561cd08b010000fd636ce5cf8b0100\
         00066d61696c2d3106636f72722d3903010674656e616e740461636d65010203\
         7965730200027766010000027b7d0477662d3900030000067265706f72742a04\
         000d72657365617263682e646f6e650105646f632d3901046b696e6405647261\
         667409726573756c74732f39027039",
        );
    }

    /// A request without a request id (the leader's Assign and Tick are proposed so).
    #[test]
    fn golden_request_without_id() {
        let request = Request {
            request_id: None,
            ..request(delete())
        };
        check(
            Layout::Log,
            "request_without_id",
            &encode(&request),
            "fd7b68e5cf8b0100000000010b636f6e6669672f62657461",
        );
    }

    // openraft's envelope around them: what the log store and the vote hold.

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        use openraft::vote::RaftLeaderId;
        openraft::LogId::new(
            openraft::vote::leader_id_adv::CommittedLeaderId::new(term, node),
            index,
        )
    }

    #[test]
    fn golden_entry_normal() {
        use openraft::entry::RaftEntry;
        let entry = Entry::new_normal(log_id(3, 2, 1_234), request(put()));
        check(
            Layout::Log,
            "entry_normal",
            &encode(&entry),
            "0302fbd20401fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100\
         000c636f6e6669672f616c70686107000176616c756507",
        );
    }

    #[test]
    fn golden_entry_blank() {
        use openraft::entry::RaftEntry;
        let entry = Entry::new_blank(log_id(3, 2, 1_235));
        check(Layout::Log, "entry_blank", &encode(&entry), "0302fbd30400");
    }

    #[test]
    fn golden_entry_membership() {
        use openraft::entry::RaftEntry;
        let node = |n: u64| NodeInfo {
            api_addr: format!("10.0.0.{n}:7000"),
            peer_addr: format!("10.0.0.{n}:7001"),
        };
        let nodes: BTreeMap<u64, NodeInfo> = (1..=4).map(|n| (n, node(n))).collect();
        let membership =
            openraft::Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).expect("valid");
        let entry = Entry::new_membership(log_id(3, 2, 1_236), membership);
        check(
            Layout::Log,
            "entry_membership",
            &encode(&entry),
            "0302fbd40402010301020304010d31302e302e302e313a373030300d31302e30\
            2e302e313a37303031020d31302e302e302e323a373030300d31302e302e302e\
            323a37303031030d31302e302e302e333a373030300d31302e302e302e333a37\
            303031040d31302e302e302e343a373030300d31302e302e302e343a37303031",
        );
    }

    #[test]
    fn golden_vote_and_log_id() {
        check(
            Layout::Log,
            "raft_vote",
            &encode(&Vote::new(7, 2)),
            "070200",
        );
        let committed = Vote::new_committed(7, 2);
        check(
            Layout::Log,
            "raft_vote_committed",
            &encode(&committed),
            "070201",
        );
        check(
            Layout::Log,
            "raft_log_id",
            &encode(&Some(log_id(7, 2, 99))),
            "01070263",
        );
    }
}

// ---- Snapshot: each section of a small deterministic state ----

/// A state in which every section holds something: keys (one attached to a session), remembered
/// results, history; live, drained and gone agents; tasks PENDING, DELAYED, BLOCKED, ASSIGNED, RETRY_WAIT,
/// SUCCEEDED and DEAD_LETTERED; an open and a decided decision; timers of most kinds; events.
struct Driver {
    sm: StateMachine,
    index: u64,
}

impl Driver {
    fn apply(&mut self, at: u64, command: Command) -> Response {
        self.index += 1;
        let serial = self.index;
        let request = Request {
            now_ms: NOW_MS + at,
            // Every other entry with a request id: some results are remembered, some not.
            request_id: (serial % 2 == 1).then_some(RequestId {
                client_id: 0xc1,
                serial,
                min_pending_serial: serial.saturating_sub(3),
            }),
            fence: None,
            command,
        };
        self.sm.apply(self.index, &request)
    }

    fn run(&mut self, at: u64, command: CoordCommand) -> CoordResponse {
        match self.apply(at, Command::Coordination(command)) {
            Response::Coordination { response, .. } => response,
            other => panic!("coordination answers Coordination, not {other:?}"),
        }
    }
}

fn snapshot_state() -> &'static StateMachine {
    static STATE: OnceLock<StateMachine> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut d = Driver {
            sm: StateMachine::new(100),
            index: 0,
        };
        let register = |name: &str| {
            CoordCommand::RegisterAgent(AgentSpec {
                name: name.into(),
                replace: false,
                ..agent_spec()
            })
        };
        let CoordResponse::Registered { session_id: a, .. } = d.run(0, register("agent-7")) else {
            panic!("registered")
        };
        let CoordResponse::Registered { session_id: b, .. } = d.run(1, register("agent-8")) else {
            panic!("registered")
        };
        let mut spec = decision_spec();
        spec.rule = Rule::Majority;
        spec.weights.clear();
        spec.veto_option = None;
        let CoordResponse::Proposed { decision_id: open } =
            d.run(2, CoordCommand::Propose(spec.clone()))
        else {
            panic!("proposed")
        };
        let CoordResponse::Proposed {
            decision_id: decided,
        } = d.run(3, CoordCommand::Propose(spec))
        else {
            panic!("proposed")
        };
        for session_id in [a, b] {
            d.run(
                4,
                CoordCommand::Vote {
                    session_id,
                    decision_id: decided,
                    choice: "yes".into(),
                    rationale: "ok".into(),
                },
            );
        }
        let plain = |n: u32| TaskSpec {
            capabilities: BTreeSet::new(),
            not_before_ms: 0,
            deadline_ms: 0,
            requires: None,
            idempotency_key: format!("key-{n}"),
            priority: i32::try_from(n).expect("small") - 3,
            ..task_spec()
        };
        let tasks = vec![
            plain(1),
            plain(2),
            plain(3),
            plain(4),
            TaskSpec {
                not_before_ms: NOW_MS + 600_000,
                ..plain(5)
            },
            TaskSpec {
                requires: Some(DecisionGate {
                    decision_id: open,
                    option: "yes".into(),
                }),
                ..plain(6)
            },
            TaskSpec {
                deadline_ms: NOW_MS + 900_000,
                queue: "reports".into(),
                ..plain(7)
            },
        ];
        let CoordResponse::Submitted { results } = d.run(5, CoordCommand::Submit { tasks }) else {
            panic!("submitted")
        };
        let ids: Vec<u64> = results.iter().map(|r| r.0).collect();
        let CoordResponse::Assigned { tokens } = d.run(
            6,
            CoordCommand::Assign {
                assignments: vec![(ids[0], a), (ids[1], a), (ids[2], b), (ids[6], b)],
            },
        ) else {
            panic!("assigned")
        };
        let token = |i: usize| tokens[i].expect("assigned");
        d.run(
            7,
            CoordCommand::Complete {
                task_id: ids[0],
                token: token(0),
                result: b"ok".to_vec(),
            },
        );
        d.run(
            8,
            CoordCommand::Fail {
                task_id: ids[1],
                token: token(1),
                error: "try again".into(),
                retryable: true,
                retry_after_ms: 0,
            },
        );
        d.run(
            9,
            CoordCommand::Fail {
                task_id: ids[2],
                token: token(2),
                error: "bad input".into(),
                retryable: false,
                retry_after_ms: 0,
            },
        );
        d.run(
            10,
            CoordCommand::Progress {
                task_id: ids[6],
                token: token(3),
                percent: 40,
                message: "working".into(),
                checkpoint: "page=2".into(),
                extend_lease: true,
            },
        );
        d.run(
            10,
            CoordCommand::Delegate {
                parent: ids[6],
                token: token(3),
                tasks: vec![TaskSpec {
                    idempotency_key: String::new(),
                    ..plain(8)
                }],
                escalate_to: "senior".into(),
            },
        );
        d.apply(
            11,
            Command::Put {
                key: b"lock/agent-7".to_vec(),
                value: b"held".to_vec(),
                session_id: a,
            },
        );
        let alpha = Command::Put {
            key: b"config/alpha".to_vec(),
            value: b"on".to_vec(),
            session_id: 0,
        };
        d.apply(12, alpha);
        let txn_puts = Command::Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                mod_revision: 0,
            }],
            ops: vec![
                TxnOp::Put {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                },
                TxnOp::Put {
                    key: b"b".to_vec(),
                    value: b"2".to_vec(),
                },
            ],
        };
        d.apply(13, txn_puts);
        // Fails its second compare: remembered with the failed compare's index.
        d.apply(13, txn());
        d.apply(
            14,
            Command::Delete {
                key: b"config/alpha".to_vec(),
            },
        );
        // A put to a session that is not live writes nothing.
        d.apply(14, put());
        d.run(
            15,
            CoordCommand::Heartbeats {
                beats: vec![Beat {
                    session_id: a,
                    load: 1,
                }],
            },
        );
        d.run(
            16,
            CoordCommand::SetDrained {
                name: "agent-7".into(),
                drained: true,
            },
        );
        let CoordResponse::Registered {
            session_id: gone, ..
        } = d.run(17, register("agent-9"))
        else {
            panic!("registered")
        };
        let lock = |n: usize| Command::Locks(lock_commands().swap_remove(n));
        d.apply(18, lock(0));
        let acquire_lock = |owner: &str| {
            Command::Locks(LockCommand::Acquire {
                kind: LockKind::Lock,
                name: "report".into(),
                holder: Holder {
                    session_id: if owner == "agent" { a } else { 0 },
                    ttl_ms: if owner == "agent" { 0 } else { 10_000 },
                    owner: owner.into(),
                },
                permits: 1,
                limit: 1,
                wait_ms: 60_000,
                lock_delay_ms: 3_000,
                value: Vec::new(),
            })
        };
        d.apply(18, acquire_lock("agent"));
        d.apply(18, acquire_lock("cron-2"));
        d.apply(18, Command::Barriers(barrier_enter()));
        d.run(18, CoordCommand::CloseSession { session_id: gone });
        d.run(
            19,
            CoordCommand::Tick {
                refresh: false,
                retention: tick_retention(),
            },
        );
        // A workflow whose fan-out has submitted its two branch tasks (their origin in `tasks`).
        d.apply(20, Command::Workflows(workflow_commands().swap_remove(0)));
        topics_state(&mut d);
        d.sm
    })
}

fn check_section(section: &str, golden: &str) {
    let sections = snapshot_sections();
    let bytes = &sections
        .iter()
        .find(|(name, _)| *name == section)
        .unwrap_or_else(|| panic!("no section {section}"))
        .1;
    check(Layout::Snapshot, section, bytes, golden);
}

/// Each field of `StateMachine` (destructured: a new field cannot be left out) and, in place of
/// `agents` and `tasks`, each of their fields.
fn snapshot_sections() -> Vec<(&'static str, Vec<u8>)> {
    let StateMachine {
        last_index,
        revision,
        now_ms,
        events,
        kv,
        sessions,
        history,
        agents,
        tasks,
        decisions,
        locks,
        barriers,
        workflows,
        topics,
    } = snapshot_state();
    let mut sections = vec![
        ("last_index", encode(last_index)),
        ("revision", encode(revision)),
        ("now_ms", encode(now_ms)),
        ("events", encode(events)),
        ("kv", encode(kv)),
        ("sessions", encode(sessions)),
        ("history", encode(history)),
    ];
    for (name, bytes) in agents.encoded_sections() {
        sections.push((agents_section(name), bytes));
    }
    for (name, bytes) in tasks.encoded_sections() {
        sections.push((tasks_section(name), bytes));
    }
    sections.push(("decisions", encode(decisions)));
    sections.push(("locks", encode(locks)));
    sections.push(("barriers", encode(barriers)));
    sections.push(("workflows", encode(workflows)));
    sections.push(("topics", encode(topics)));
    sections
}

/// The agents' fields that share their names with `StateMachine`'s or the tasks'.
fn agents_section(field: &'static str) -> &'static str {
    match field {
        "sessions" => "agent_sessions",
        "timers" => "agent_timers",
        "retention" => "agent_retention",
        other => other,
    }
}

/// The tasks' fields that share their names with the agents'.
fn tasks_section(field: &'static str) -> &'static str {
    match field {
        "timers" => "task_timers",
        "retention" => "task_retention",
        other => other,
    }
}

/// The sections are the snapshot: together, in order, they are the encoded state machine.
#[test]
fn golden_sections_make_up_the_snapshot() {
    let whole: Vec<u8> = snapshot_sections()
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(whole, encode(snapshot_state()));
    let tested: BTreeSet<&str> = SNAPSHOT_SECTIONS.iter().copied().collect();
    let named: BTreeSet<&str> = snapshot_sections().iter().map(|(name, _)| *name).collect();
    assert_eq!(tested, named, "every section has a golden test below");
}

macro_rules! snapshot_goldens {
    ($($section:ident => $golden:literal,)*) => {
        const SNAPSHOT_SECTIONS: &[&str] = &[$(stringify!($section)),*];
        mod snapshot {
            use super::check_section;
            $(
                #[test]
                fn $section() {
                    check_section(stringify!($section), $golden);
                }
            )*
        }
    };
}

snapshot_goldens! {
    children => "01070108",
    locks => "030200067265706f727400067265706f727401fbb80b0102020100056167656e\
         740100fd8d68e5cf8b0100000001030300fb10270663726f6e2d3201fded52e6\
         cf8b010000fd8d68e5cf8b01000000000301046770757301046770757308fbb8\
         0b01010100fb10270663726f6e2d3102fd9d8fe5cf8b010000fd8d68e5cf8b01\
         0000017600000102fd9d8fe5cf8b0100000101046770757301fded52e6cf8b01\
         00000200067265706f72740301010100067265706f727402",
    topics => "01066f7264657273066f726465727301086f72646572732e3efbe803fc000010\
         00fc80ee3600fd9068e5cf8b010000023a000201010e6f72646572732e65752e\
         706169640106637573742d310105747261636503742d310470616964fd9068e5\
         cf8b01000002020e6f72646572732e75732e7061696400010574726163650374\
         2d310470616964fd9068e5cf8b010000010469642d3101fd9068e5cf8b010000\
         01fd9068e5cf8b0100000469642d31010762696c6c696e670762696c6c696e67\
         0000fb30750101fd9068e5cf8b01000003010200010108776f726b65722d3102\
         fdc1dde5cf8b010000000108776f726b65722d31fd9168e5cf8b010000010202\
         0100000101010e6f72646572732e65752e706169640106637573742d31010574\
         7261636503742d310470616964fd9068e5cf8b0100002a6e61636b6564206f6e\
         2064656c69766572792031206f66203120286d61785f64656c69766572696573\
         2901fd9168e5cf8b01000020005a01fdc1dde5cf8b010000066f726465727307\
         62696c6c696e6702",
    workflows => "0101010108726573656172636802fc80ee36000405666574636800000006656d\
         61696c7301036770750b7b226465707468223a327d060400000000fb3075fcc0\
         27090001047465616d05696e6672610100020201fb60ea000007617070726f76\
         65010000010573656e643f0203796573026e6f0003677075000000fcc0d40100\
         0000000473656e64010101010379657300077265706f72747301036770750b7b\
         226465707468223a327d060400000000fb3075fcc027090001047465616d0569\
         6e6672610001030006756e73656e64000000077265706f72747301036770750b\
         7b226465707468223a327d060400000000fb3075fcc027090001047465616d05\
         696e667261000001107b22746f706963223a2272616674227d00040102090100\
         00000a010000000000fd8f68e5cf8b0100000000000001000000000000000000\
         0000000000000000000000000000000000000000000000000000fd8f68e5cf8b\
         010000fd8f68e5cf8b01000000fd0f571cd08b010000fc80ee36000477662d31\
         0010000004010477662d31010002fdef52e6cf8b010000010100fd0f571cd08b\
         01000000010000fbe803fc005c2605fc80ee3600fcc0270900",
    barriers => "010773746167652d310773746167652d310504000108776f726b65722d33fd8d\
         68e5cf8b010000fd8d68e5cf8b010000fded52e6cf8b0100000001fded52e6cf\
         8b0100000773746167652d3100",
    last_index => "0122",
    revision => "04",
    now_ms => "fd9168e5cf8b010000",
    events => "2201fd7d68e5cf8b01000001010002fd7e68e5cf8b01000001020003fd7f68e5\
         cf8b01000001020104fd7f68e5cf8b01000001020105fd7f68e5cf8b01000001\
         020206fd8068e5cf8b010000000106656d61696c73000000000007fd8068e5cf\
         8b010000000206656d61696c73000000000008fd8068e5cf8b01000000030665\
         6d61696c73000000000009fd8068e5cf8b010000000406656d61696c73000000\
         00000afd8068e5cf8b010000000506656d61696c7300010000000bfd8068e5cf\
         8b010000000606656d61696c7300020000000cfd8068e5cf8b01000000070772\
         65706f72747300000000000dfd8168e5cf8b010000000106656d61696c730103\
         010101076167656e742d370101fd8168e5cf8b010000fda1b6e5cf8b01000000\
         0efd8168e5cf8b010000000206656d61696c730103010101076167656e742d37\
         0102fd8168e5cf8b010000fda1b6e5cf8b010000000ffd8168e5cf8b01000000\
         0306656d61696c730103010102076167656e742d380103fd8168e5cf8b010000\
         fda1b6e5cf8b0100000010fd8168e5cf8b0100000007077265706f7274730103\
         010102076167656e742d380104fd8168e5cf8b010000fda1b6e5cf8b01000000\
         11fd8268e5cf8b010000000106656d61696c73040501000012fd8368e5cf8b01\
         0000000206656d61696c73050401000013fd8368e5cf8b010000000206656d61\
         696c73060401000014fd8468e5cf8b010000000306656d61696c730506010000\
         15fd8468e5cf8b010000000306656d61696c73080601000016fd8568e5cf8b01\
         00000007077265706f7274730203010102076167656e742d380104fd8168e5cf\
         8b010000fda5b6e5cf8b0100000017fd8568e5cf8b010000000806656d61696c\
         73000000000018fd8d68e5cf8b010000030001046770757301000019fd8d68e5\
         cf8b010000030000067265706f72740201001afd8d68e5cf8b01000003030006\
         7265706f727403000777616974696e671bfd8d68e5cf8b010000040007737461\
         67652d311cfd8d68e5cf8b0100000203076167656e742d390e73657373696f6e\
         20636c6f7365641dfd8f68e5cf8b0100000501000000001efd8f68e5cf8b0100\
         0005010105666574636800001ffd8f68e5cf8b010000000906656d61696c7300\
         0000000020fd8f68e5cf8b010000000a06656d61696c73000000000021fd9068\
         e5cf8b01000006066f726465727300010222fd9168e5cf8b01000006066f7264\
         657273010762696c6c696e6722fca0860100",
    kv => "03016101310303010001620132030301000c6c6f636b2f6167656e742d370468\
         656c640101010114fdc15431953496e4070101010c6c6f636b2f6167656e742d\
         37",
    sessions => "01c11e021f0d040202066f72646572730100066f72646572730200210d040502\
         010101020201fd9168e5cf8b01000001fd9168e5cf8b010000c1",
    history => "040101000c6c6f636b2f6167656e742d370468656c64010101010201000c636f\
         6e6669672f616c706861026f6e02020100030200016101310303010000016201\
         32030301000401010c636f6e6669672f616c7068610000040000fb1e010064",
    last_session_id => "03",
    agents => "03076167656e742d37076167656e742d370101076167656e742d370203677075\
         056c696e757801047a6f6e650465752d310405312e322e330103706964043432\
         3432fb983a0005fb3075fd22a3e5cf8b010000fd7b68e5cf8b010000fd8a68e5\
         cf8b010000010001000100010100076167656e742d38076167656e742d380201\
         076167656e742d380203677075056c696e757801047a6f6e650465752d310405\
         312e322e3301037069640434323432fb983a0005fb3075fd14a3e5cf8b010000\
         fd7c68e5cf8b010000fd7c68e5cf8b0100000001070000010000010007616765\
         6e742d39076167656e742d390300076167656e742d390203677075056c696e75\
         7801047a6f6e650465752d310405312e322e3301037069640434323432fb983a\
         0005fb3075fd24a3e5cf8b010000fd8c68e5cf8b010000fd8c68e5cf8b010000\
         0000000000000000fd8d68e5cf8b010000",
    agent_sessions => "0301076167656e742d3702076167656e742d3803076167656e742d39",
    gone_agents => "01fd8d68e5cf8b010000076167656e742d39",
    agent_timers => "02fd14a3e5cf8b0100000202fd22a3e5cf8b0100000201",
    agent_retention => "fbe803fc005c2605fc80ee3600fcc0270900",
    last_task_id => "0a",
    last_token => "04",
    tasks => "0a010106656d61696c730a7b22746f223a2278227d106170706c69636174696f\
         6e2f6a736f6e000304fbf401fc905f0100fbdc05fafb204e0000056b65792d31\
         06636f72722d3903010674656e616e740461636d650005fd8068e5cf8b010000\
         fd8268e5cf8b010000fd8068e5cf8b01000001000101076167656e742d3701fd\
         8168e5cf8b010000fd8268e5cf8b010000010000026f6b000000010000020206\
         656d61696c730a7b22746f223a2278227d106170706c69636174696f6e2f6a73\
         6f6e000104fbf401fc905f0100fbdc05fafb204e0000056b65792d3206636f72\
         722d3903010674656e616e740461636d650004fd8068e5cf8b010000fd8368e5\
         cf8b010000fd196ae5cf8b01000001000101076167656e742d3702fd8168e5cf\
         8b010000fd8368e5cf8b010000020974727920616761696e0000097472792061\
         6761696e0000020000030306656d61696c730a7b22746f223a2278227d106170\
         706c69636174696f6e2f6a736f6e000004fbf401fc905f0100fbdc05fafb204e\
         0000056b65792d3306636f72722d3903010674656e616e740461636d650006fd\
         8068e5cf8b010000fd8468e5cf8b010000fd8068e5cf8b010000010001010761\
         67656e742d3803fd8168e5cf8b010000fd8468e5cf8b01000002096261642069\
         6e70757400000962616420696e707574010100030000040406656d61696c730a\
         7b22746f223a2278227d106170706c69636174696f6e2f6a736f6e000204fbf4\
         01fc905f0100fbdc05fafb204e0000056b65792d3406636f72722d3903010674\
         656e616e740461636d650000fd8068e5cf8b010000fd8068e5cf8b010000fd80\
         68e5cf8b0100000000000000000000000000050506656d61696c730a7b22746f\
         223a2278227d106170706c69636174696f6e2f6a736f6e000404fbf401fc905f\
         0100fbdc05fafb204e00fd3b90eecf8b010000056b65792d3506636f72722d39\
         03010674656e616e740461636d650001fd8068e5cf8b010000fd8068e5cf8b01\
         0000fd3b90eecf8b0100000000000000000000000000060606656d61696c730a\
         7b22746f223a2278227d106170706c69636174696f6e2f6a736f6e000604fbf4\
         01fc905f0100fbdc05fafb204e0000056b65792d3606636f72722d3903010674\
         656e616e740461636d6501010379657302fd8068e5cf8b010000fd8068e5cf8b\
         010000fd8068e5cf8b01000000000000000000000000000707077265706f7274\
         730a7b22746f223a2278227d106170706c69636174696f6e2f6a736f6e000804\
         fbf401fc905f0100fbdc05fafb204efd1b24f3cf8b01000000056b65792d3706\
         636f72722d3903010674656e616e740461636d650003fd8068e5cf8b010000fd\
         8168e5cf8b010000fd8068e5cf8b010000010102076167656e742d380104fd81\
         68e5cf8b010000fda5b6e5cf8b0100000101076167656e742d3804fd8168e5cf\
         8b010000000000012807776f726b696e6706706167653d32fd8568e5cf8b0100\
         0000000000040000080806656d61696c730a7b22746f223a2278227d10617070\
         6c69636174696f6e2f6a736f6e000a04fbf401fc905f0100fbdc05fafb204efd\
         1b24f3cf8b010000000006636f72722d3907010674656e616e740461636d6500\
         00fd8568e5cf8b010000fd8568e5cf8b010000fd8568e5cf8b01000000000000\
         000000000000010704010673656e696f7200090906656d61696c73867b22776f\
         726b666c6f775f6964223a312c22776f726b666c6f77223a2272657365617263\
         68222c2273746570223a226665746368222c22696e707574223a7b22746f7069\
         63223a2272616674227d2c22706172616d73223a7b226465707468223a327d2c\
         22726573756c7473223a7b7d2c226272616e6368223a7b22696e646578223a30\
         7d7d106170706c69636174696f6e2f6a736f6e0103677075060400000000fb30\
         75fd4f90eecf8b010000000012776f726b666c6f772f312f66657463682f3000\
         01047465616d05696e6672610000fd8f68e5cf8b010000fd8f68e5cf8b010000\
         fd8f68e5cf8b01000000000000000000000001010000000a0a06656d61696c73\
         867b22776f726b666c6f775f6964223a312c22776f726b666c6f77223a227265\
         736561726368222c2273746570223a226665746368222c22696e707574223a7b\
         22746f706963223a2272616674227d2c22706172616d73223a7b226465707468\
         223a327d2c22726573756c7473223a7b7d2c226272616e6368223a7b22696e64\
         6578223a317d7d106170706c69636174696f6e2f6a736f6e0103677075060400\
         000000fb3075fd4f90eecf8b010000000012776f726b666c6f772f312f666574\
         63682f310001047465616d05696e6672610000fd8f68e5cf8b010000fd8f68e5\
         cf8b010000fd8f68e5cf8b0100000000000000000000000101000100",
    state_counts => "040101010101010000",
    by_queue_state => "0706656d61696c7300040408090a06656d61696c7301010506656d61696c7302\
         010606656d61696c7304010206656d61696c7305010106656d61696c73060103\
         077265706f727473030107",
    ready => "0106656d61696c730409fd1b24f3cf8b0100000805fd4f90eecf8b0100000905\
         fd4f90eecf8b0100000a01fdffffffffffffffff04",
    task_timers => "07fd196ae5cf8b0100000302fda5b6e5cf8b0100000107fd3b90eecf8b010000\
         0305fd4f90eecf8b0100000009fd4f90eecf8b010000000afd1b24f3cf8b0100\
         000007fd1b24f3cf8b0100000008",
    finished => "01fd8268e5cf8b01000001",
    dead_letters => "0103",
    dead_by_queue => "0106656d61696c730103",
    idempotency => "0706656d61696c73056b65792d3101fd8068e5cf8b01000006656d61696c7305\
         6b65792d3202fd8068e5cf8b01000006656d61696c73056b65792d3303fd8068\
         e5cf8b01000006656d61696c73056b65792d3404fd8068e5cf8b01000006656d\
         61696c73056b65792d3505fd8068e5cf8b01000006656d61696c73056b65792d\
         3606fd8068e5cf8b010000077265706f727473056b65792d3707fd8068e5cf8b\
         010000",
    idempotency_by_time => "07fd8068e5cf8b01000006656d61696c73056b65792d31fd8068e5cf8b010000\
         06656d61696c73056b65792d32fd8068e5cf8b01000006656d61696c73056b65\
         792d33fd8068e5cf8b01000006656d61696c73056b65792d34fd8068e5cf8b01\
         000006656d61696c73056b65792d35fd8068e5cf8b01000006656d61696c7305\
         6b65792d36fd8068e5cf8b010000077265706f727473056b65792d37",
    gates => "01010106",
    leases => "01020107",
    tasks_digest => "fd787194d475aec97b",
    task_retention => "fbe803fc005c2605fc80ee3600fcc0270900",
    last_assigned_queue => "077265706f727473",
    decisions => "0202010108736869702069743f0303796573026e6f047665746f02076167656e\
         742d37076167656e742d3800000000fddb52e6cf8b01000001047465616d0569\
         6e66726102076167656e742d37076167656e742d38000000fd7d68e5cf8b0100\
         000000020208736869702069743f0303796573026e6f047665746f0207616765\
         6e742d37076167656e742d3800000000fddb52e6cf8b01000001047465616d05\
         696e66726102076167656e742d37076167656e742d3801010379657302076167\
         656e742d3703796573026f6bfd7f68e5cf8b010000076167656e742d38037965\
         73026f6bfd7f68e5cf8b010000fd7e68e5cf8b010000fd7f68e5cf8b01000000\
         010101fd7f68e5cf8b0100000201fddb52e6cf8b0100000401fbe803fc005c26\
         05fc80ee3600fcc0270900",
}

/// The workflow enums: the commands and the definition's in the log (`Command::Workflows`),
/// the rest in the snapshot (the `workflows` section) and the responses remembered in it.
#[test]
fn golden_tags_of_workflow_enums_are_their_codes() {
    assert_tags(&workflow_commands(), WorkflowCommand::code);
    let state = WorkflowState::Failed;
    assert_tags(
        &[
            WorkflowResponse::Started {
                workflow_id: 1,
                existing: false,
            },
            WorkflowResponse::Canceled {
                canceled: true,
                state,
            },
            WorkflowResponse::Retried { state },
            WorkflowResponse::UnknownWorkflow { workflow_id: 1 },
            WorkflowResponse::NotRetryable { state },
            WorkflowResponse::Invalid {
                reason: "input".into(),
            },
            WorkflowResponse::QuotaExceeded {
                reason: "full".into(),
            },
        ],
        WorkflowResponse::code,
    );
    assert_tags(
        &[
            WorkflowState::Running,
            WorkflowState::Waiting,
            WorkflowState::Compensating,
            WorkflowState::Succeeded,
            WorkflowState::Failed,
            WorkflowState::Canceled,
            WorkflowState::TimedOut,
        ],
        WorkflowState::code,
    );
    assert_tags(
        &[
            StepState::Waiting,
            StepState::Running,
            StepState::Succeeded,
            StepState::Failed,
            StepState::Skipped,
            StepState::Canceled,
            StepState::TimedOut,
        ],
        StepState::code,
    );
    assert_tags(
        &[
            BranchState::Pending,
            BranchState::Running,
            BranchState::Succeeded,
            BranchState::Failed,
            BranchState::Canceled,
            BranchState::TimedOut,
        ],
        BranchState::code,
    );
    assert_tags(
        &[
            WorkflowEventKind::Started,
            WorkflowEventKind::StepStarted,
            WorkflowEventKind::StepSucceeded,
            WorkflowEventKind::StepFailed,
            WorkflowEventKind::StepSkipped,
            WorkflowEventKind::StepCanceled,
            WorkflowEventKind::StepTimedOut,
            WorkflowEventKind::Joined,
            WorkflowEventKind::Waiting,
            WorkflowEventKind::Compensating,
            WorkflowEventKind::Finished,
            WorkflowEventKind::Retried,
        ],
        WorkflowEventKind::code,
    );
    assert_tags(
        &[WorkflowTimer::Deadline, WorkflowTimer::JoinDeadline],
        WorkflowTimer::code,
    );
    assert_tags(
        &[
            StepKind::Task {
                template: TaskTemplate::default(),
                fan_out: None,
            },
            StepKind::Decision(super::workflows::definition::DecisionTemplate {
                question: "q".into(),
                options: vec!["a".into(), "b".into()],
                electorate: Electorate::default(),
                rule: Rule::Majority,
                weights: BTreeMap::new(),
                veto_option: None,
                deadline_ms: 0,
                labels: BTreeMap::new(),
            }),
        ],
        StepKind::code,
    );
    assert_tags(
        &[FanOutSource::Count(3), FanOutSource::Over(0)],
        FanOutSource::code,
    );
    assert_tags(
        &[JoinPolicy::All, JoinPolicy::Any, JoinPolicy::AtLeast(2)],
        JoinPolicy::code,
    );
}

// ---- Topics (`topics.rs`): their commands, enums and snapshot content ----

fn topic_message(subject: &str, key: Option<&[u8]>, id: &str) -> NewMessage {
    NewMessage {
        subject: subject.into(),
        key: key.map(<[u8]>::to_vec),
        headers: pairs(&[("trace", "t-1")]).into_iter().collect(),
        data: b"paid".to_vec(),
        idempotency_key: id.into(),
    }
}

fn group_config() -> GroupConfig {
    GroupConfig {
        filter: "orders.eu.*".into(),
        start: StartPosition::FromSeq(2),
        ack_wait_ms: 30_000,
        max_deliveries: 5,
        ordered_keys: true,
    }
}

/// One of each topic command, in declaration order.
fn topic_commands() -> Vec<TopicCommand> {
    let (topic, group) = (String::from("orders"), String::from("billing"));
    vec![
        TopicCommand::Create {
            name: topic.clone(),
            config: TopicConfig {
                subjects: vec!["orders.>".into()],
                max_msgs: 1000,
                max_bytes: 1 << 20,
                max_age_ms: 3_600_000,
            },
        },
        TopicCommand::Delete {
            name: topic.clone(),
        },
        TopicCommand::Publish {
            messages: vec![
                topic_message("orders.eu.paid", Some(b"cust-1"), "id-1"),
                topic_message("orders.us.paid", None, ""),
            ],
        },
        TopicCommand::CreateGroup {
            topic: topic.clone(),
            group: group.clone(),
            config: group_config(),
        },
        TopicCommand::DeleteGroup {
            topic: topic.clone(),
            group: group.clone(),
        },
        TopicCommand::Fetch {
            topic: topic.clone(),
            group: group.clone(),
            member: "worker-1".into(),
            max: 16,
            max_bytes: 1 << 21,
        },
        TopicCommand::Ack {
            topic: topic.clone(),
            group: group.clone(),
            seq: 3,
            token: 7,
        },
        TopicCommand::Nack {
            topic: topic.clone(),
            group: group.clone(),
            seq: 3,
            token: 7,
            delay_ms: 5_000,
        },
        TopicCommand::InProgress {
            topic: topic.clone(),
            group: group.clone(),
            seq: 3,
            token: 7,
        },
        TopicCommand::Redrive {
            topic: topic.clone(),
            group: group.clone(),
            selector: TopicDeadLetters::Seqs(vec![3, 4]),
        },
        TopicCommand::Purge {
            topic,
            group,
            selector: TopicDeadLetters::All,
        },
    ]
}

/// A topic with messages (one keyed, one deduplicated), a group with a delivery in flight, one
/// nacked and one dead letter, at the end of the snapshot state.
fn topics_state(d: &mut Driver) {
    let mut run = |at: u64, command: TopicCommand| match d.apply(at, Command::Topics(command)) {
        Response::Topics { response, .. } => response,
        other => panic!("topics answer Topics, not {other:?}"),
    };
    let commands = topic_commands();
    run(21, commands[0].clone());
    run(21, commands[2].clone());
    let group = GroupConfig {
        filter: String::new(),
        start: StartPosition::All,
        max_deliveries: 1,
        ..group_config()
    };
    run(
        21,
        TopicCommand::CreateGroup {
            topic: "orders".into(),
            group: "billing".into(),
            config: group,
        },
    );
    let TopicResponse::Fetched { deliveries } = run(22, commands[5].clone()) else {
        panic!("fetched")
    };
    run(
        22,
        TopicCommand::Nack {
            topic: "orders".into(),
            group: "billing".into(),
            seq: deliveries[0].seq,
            token: deliveries[0].token,
            delay_ms: 0,
        },
    );
}

#[test]
fn golden_tags_of_topic_enums_are_their_codes() {
    assert_tags(&topic_commands(), TopicCommand::code);
    assert_tags(
        &[
            StartPosition::All,
            StartPosition::New,
            StartPosition::FromSeq(2),
            StartPosition::FromTimeMs(NOW_MS),
        ],
        StartPosition::code,
    );
    assert_tags(
        &[TopicDeadLetters::Seqs(vec![1]), TopicDeadLetters::All],
        TopicDeadLetters::code,
    );
    let refusal = Refusal {
        code: RefusalCode::NotFound,
        reason: "no".into(),
    };
    assert_tags(
        &[
            TopicResponse::Created { existing: false },
            TopicResponse::Deleted,
            TopicResponse::Published {
                results: Vec::new(),
            },
            TopicResponse::GroupCreated { existing: true },
            TopicResponse::GroupDeleted,
            TopicResponse::Fetched {
                deliveries: Vec::new(),
            },
            TopicResponse::Acked,
            TopicResponse::Nacked,
            TopicResponse::Extended { deadline_ms: 1 },
            TopicResponse::Redriven {
                redriven: 1,
                discarded: 0,
            },
            TopicResponse::Purged { purged: 1 },
            TopicResponse::Refused(refusal),
        ],
        TopicResponse::code,
    );
    assert_tags(
        &[
            RefusalCode::NotFound,
            RefusalCode::AlreadyExists,
            RefusalCode::FailedPrecondition,
            RefusalCode::InvalidArgument,
            RefusalCode::ResourceExhausted,
            RefusalCode::StaleToken,
        ],
        RefusalCode::code,
    );
    assert_tags(
        &[
            TopicEventKind::Published {
                first_seq: 1,
                last_seq: 2,
            },
            TopicEventKind::GroupChanged {
                group: "billing".into(),
            },
            TopicEventKind::Deleted,
        ],
        TopicEventKind::code,
    );
    assert_tags(
        &[
            PendingState::Ready { at_ms: 0 },
            PendingState::InFlight {
                member: "worker-1".into(),
                token: 1,
                deadline_ms: NOW_MS,
            },
        ],
        PendingState::code,
    );
}

mod topic_log {
    use super::*;

    fn topic(index: usize) -> Command {
        Command::Topics(topic_commands().swap_remove(index))
    }

    #[test]
    fn golden_topic_create() {
        check_request(
            topic(0),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000800066f7264\
         65727301086f72646572732e3efbe803fc00001000fc80ee3600",
        );
    }

    #[test]
    fn golden_topic_delete() {
        check_request(
            topic(1),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000801066f7264\
         657273",
        );
    }

    #[test]
    fn golden_topic_publish() {
        check_request(
            topic(2),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000802020e6f72\
         646572732e65752e706169640106637573742d310105747261636503742d3104\
         706169640469642d310e6f72646572732e75732e706169640001057472616365\
         03742d31047061696400",
        );
    }

    #[test]
    fn golden_topic_group_create() {
        check_request(
            topic(3),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000803066f7264\
         6572730762696c6c696e670b6f72646572732e65752e2a0202fb30750501",
        );
    }

    #[test]
    fn golden_topic_group_delete() {
        check_request(
            topic(4),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000804066f7264\
         6572730762696c6c696e67",
        );
    }

    #[test]
    fn golden_topic_fetch() {
        check_request(
            topic(5),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000805066f7264\
         6572730762696c6c696e6708776f726b65722d3110fc00002000",
        );
    }

    #[test]
    fn golden_topic_ack() {
        check_request(
            topic(6),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000806066f7264\
         6572730762696c6c696e670307",
        );
    }

    #[test]
    fn golden_topic_nack() {
        check_request(
            topic(7),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000807066f7264\
         6572730762696c6c696e670307fb8813",
        );
    }

    #[test]
    fn golden_topic_in_progress() {
        check_request(
            topic(8),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000808066f7264\
         6572730762696c6c696e670307",
        );
    }

    #[test]
    fn golden_topic_redrive() {
        check_request(
            topic(9),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b01000809066f7264\
         6572730762696c6c696e6700020304",
        );
    }

    #[test]
    fn golden_topic_purge() {
        check_request(
            topic(10),
            "fd7b68e5cf8b01000001fd78563412eeffc000fb2c01fb2b0100080a066f7264\
         6572730762696c6c696e6701",
        );
    }
}
