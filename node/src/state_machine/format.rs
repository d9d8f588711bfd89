//! The log and snapshot encodings as a contract: their format numbers and the code of every
//! variant of every enum they store.
//!
//! Both are bincode (`raft::encode`: `DefaultOptions`, varint integers) of the types in
//! `state_machine/`. bincode writes a struct as its fields in declaration order and an enum as
//! its variant's index in the declaration (a varint: one byte below 251) and then the variant's
//! fields. So old bytes mean something else, or nothing, after any of: inserting, removing,
//! reordering or retyping a field of a stored struct; inserting a variant anywhere but at the
//! end of a stored enum, or removing or reordering variants; and changes to openraft's entry,
//! vote or log id. Such a change must bump [`LOG_FORMAT`] (the log: `Request` and what it holds)
//! and/or [`SNAPSHOT_FORMAT`] (the snapshot: `StateMachine` and what it holds); a node refuses a
//! data directory, or a snapshot, of another format by name instead of misreading it.
//!
//! Two kinds of tests keep this honest (`golden_tests.rs`):
//! - the code tables below: `code()` is the tag each variant is encoded with, and a test fails
//!   when a variant's encoded tag differs from its code (someone inserted a variant in the
//!   middle). A new variant is appended, with the next code, and the tables say which formats it
//!   touches.
//! - golden bytes: the exact encoding of a full `Request` for every command, of each section of
//!   a small deterministic state, and of openraft's envelope, compared with hex kept in the
//!   source. A failure says the encoding changed: if on purpose, bump the format and update the
//!   golden bytes (`CONCLAVE_PRINT_GOLDEN=1 cargo test -p conclave-node --lib golden --
//!   --nocapture` prints the current ones).

use super::coordination::{
    AttemptOutcome, BreakerState, CoordCommand, CoordEventKind, CoordResponse, DeadLetterReason,
    DeadLetterSelector, DecisionEventKind, DecisionStatus, Escalation, Rule, TaskEventKind,
    TaskState, TimerKind,
};
use super::{Command, EventKind, Response, TxnOp};

/// The layout of the Raft log: openraft's entries around [`super::Request`]s, its votes and log
/// ids, each encoded with `raft::encode`. Written into the log store's metadata when a data
/// directory is created; a node opens only a data directory of this log format
/// (`storage/log_store.rs`).
///
/// - 1: the first marked format (`Backoff` in thousandths; `Request.fence`; the Locks and
///   Barriers commands). Data directories from before the marker carry none and are refused as
///   an older build's.
pub const LOG_FORMAT: u32 = 1;

/// The layout of snapshot data after its tag: the encoded [`super::StateMachine`]. A node reads
/// snapshots of this format only, from its disk or from a peer (`storage/state_machine_store.rs`).
///
/// - 1: the first tagged format.
/// - 2: `Backoff` holds its multiplier and jitter in thousandths (u32), not as doubles; the
///   `locks` and `barriers` sections.
/// - 3: the coordination primitive split up: the event ring (`events`) and cluster time leave
///   `Coordination` (the ring is a section of `StateMachine`, after `now_ms`; `Coordination`'s own
///   copy of cluster time is gone), and decisions are their own section (`decisions`: the
///   `Decisions` primitive, after `coordination`, with the last decision id, the open and closed
///   indexes and the decision deadline timers, which leave `Coordination`'s timers).
/// - 4: agents and tasks split up: `Coordination` leaves `StateMachine` and two primitives take
///   its place, `agents` (`Agents`: the last session id, agents, sessions, gone agents, the
///   session expiry and breaker timers, its retention) and then `tasks` (`Tasks`: the last task
///   id and token, tasks and their indexes, the task deadline, lease expiry and ready timers, a
///   new index of the leases each session holds (`leases`, after `gates`), its retention, the
///   last assigned queue). Every other section is unchanged.
/// - 5: workflows registered: a `workflows` section after `barriers` (`Workflows`: the last
///   workflow id, the instances with their definitions, the idempotency keys, the decision,
///   timer and finished indexes, its retention); a task remembers the workflow step it runs
///   (`Task.origin`, after `last_token`); a remembered result may be a `Response::Workflows`.
/// - 6: manager-worker trees: a task may be delegated by another (`Task.delegation`, after
///   `origin`), and `Tasks` keeps the delegated tasks not finished per manager (`children`, after
///   `last_assigned_queue`).
/// - 7: topics registered: a `topics` section after `workflows` (`Topics`: the topics with their
///   messages, idempotency keys and consumer groups, the store's byte count, the delivery
///   timers); the event ring may hold `CoordEventKind::Topic`; a remembered result may be a
///   `Response::Topics`.
pub const SNAPSHOT_FORMAT: u32 = 7;

impl Command {
    /// The tag of each variant in the log. New variants are appended with the next code; any other
    /// change bumps LOG_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            Command::Put { .. } => 0,
            Command::Delete { .. } => 1,
            Command::CompareAndSwap { .. } => 2,
            Command::Txn { .. } => 3,
            Command::Coordination(_) => 4,
            Command::Locks(_) => 5,
            Command::Barriers(_) => 6,
            Command::Workflows(_) => 7,
            Command::Topics(_) => 8,
            Command::Transaction(_) => 9,
        }
    }
}

impl TxnOp {
    /// The tag of each variant in the log (Txn). New variants are appended with the next code; any
    /// other change bumps LOG_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            TxnOp::Put { .. } => 0,
            TxnOp::Delete { .. } => 1,
        }
    }
}

impl CoordCommand {
    /// The tag of each variant in the log (Command::Coordination). New variants are appended with
    /// the next code; any other change bumps LOG_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            CoordCommand::RegisterAgent(_) => 0,
            CoordCommand::Heartbeats { .. } => 1,
            CoordCommand::CloseSession { .. } => 2,
            CoordCommand::SetDrained { .. } => 3,
            CoordCommand::Submit { .. } => 4,
            CoordCommand::Assign { .. } => 5,
            CoordCommand::Complete { .. } => 6,
            CoordCommand::Fail { .. } => 7,
            CoordCommand::ExtendLease { .. } => 8,
            CoordCommand::Progress { .. } => 9,
            CoordCommand::Release { .. } => 10,
            CoordCommand::Cancel { .. } => 11,
            CoordCommand::Redrive { .. } => 12,
            CoordCommand::Purge { .. } => 13,
            CoordCommand::Propose(_) => 14,
            CoordCommand::Vote { .. } => 15,
            CoordCommand::Tick { .. } => 16,
            CoordCommand::Delegate { .. } => 17,
        }
    }
}

impl DeadLetterSelector {
    /// The tag of each variant in the log (Redrive, Purge). New variants are appended with the next
    /// code; any other change bumps LOG_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            DeadLetterSelector::Ids(_) => 0,
            DeadLetterSelector::Queue(_) => 1,
        }
    }
}

impl Rule {
    /// The tag of each variant in the log (Propose) and the snapshot (decisions). New variants are
    /// appended with the next code; any other change bumps LOG_FORMAT and SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            Rule::Majority => 0,
            Rule::Unanimous => 1,
            Rule::AtLeast(_) => 2,
            Rule::Weighted => 3,
        }
    }
}

impl Response {
    /// The tag of each variant in the snapshot (remembered results per client, `sessions.rs`). New
    /// variants are appended with the next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            Response::Empty => 0,
            Response::Put { .. } => 1,
            Response::Delete { .. } => 2,
            Response::CompareAndSwap { .. } => 3,
            Response::Txn { .. } => 4,
            Response::QuotaExceeded { .. } => 5,
            Response::RequestIdExpired { .. } => 6,
            Response::SessionNotLive { .. } => 7,
            Response::Coordination { .. } => 8,
            Response::Locks { .. } => 9,
            Response::Barriers { .. } => 10,
            Response::FenceLost { .. } => 11,
            Response::Workflows { .. } => 12,
            Response::Topics { .. } => 13,
            Response::Transaction { .. } => 14,
        }
    }
}

impl CoordResponse {
    /// The tag of each variant in the snapshot (inside Response::Coordination). New variants are
    /// appended with the next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            CoordResponse::Registered { .. } => 0,
            CoordResponse::AgentExists { .. } => 1,
            CoordResponse::Ok => 2,
            CoordResponse::UnknownSession { .. } => 3,
            CoordResponse::UnknownAgent { .. } => 4,
            CoordResponse::UnknownTask { .. } => 5,
            CoordResponse::UnknownDecision { .. } => 6,
            CoordResponse::Submitted { .. } => 7,
            CoordResponse::Assigned { .. } => 8,
            CoordResponse::Verb { .. } => 9,
            CoordResponse::LeaseLost { .. } => 10,
            CoordResponse::Canceled { .. } => 11,
            CoordResponse::DeadLetters { .. } => 12,
            CoordResponse::Closed { .. } => 13,
            CoordResponse::Proposed { .. } => 14,
            CoordResponse::Voted { .. } => 15,
            CoordResponse::VoteRefused { .. } => 16,
            CoordResponse::Invalid { .. } => 17,
            CoordResponse::QuotaExceeded { .. } => 18,
            CoordResponse::Ticked { .. } => 19,
        }
    }
}

impl EventKind {
    /// The tag of each variant in the snapshot (KV change history). New variants are appended with
    /// the next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        }
    }
}

impl TaskState {
    /// The tag of each variant in the snapshot (tasks, the (queue, state) index, events,
    /// responses); also the index of `state_counts`. New variants are appended with the next code;
    /// any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            TaskState::Pending => 0,
            TaskState::Delayed => 1,
            TaskState::Blocked => 2,
            TaskState::Assigned => 3,
            TaskState::RetryWait => 4,
            TaskState::Succeeded => 5,
            TaskState::DeadLettered => 6,
            TaskState::Canceled => 7,
            TaskState::Expired => 8,
        }
    }
}

impl AttemptOutcome {
    /// The tag of each variant in the snapshot (attempt history). New variants are appended with
    /// the next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            AttemptOutcome::Running => 0,
            AttemptOutcome::Succeeded => 1,
            AttemptOutcome::Failed => 2,
            AttemptOutcome::LeaseExpired => 3,
            AttemptOutcome::SessionLost => 4,
            AttemptOutcome::Released => 5,
            AttemptOutcome::Canceled => 6,
            AttemptOutcome::DeadlineExceeded => 7,
        }
    }
}

impl DeadLetterReason {
    /// The tag of each variant in the snapshot (tasks). New variants are appended with the next
    /// code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            DeadLetterReason::AttemptsExhausted => 0,
            DeadLetterReason::NotRetryable => 1,
            DeadLetterReason::DeadlineExceeded => 2,
        }
    }
}

impl Escalation {
    /// The tag of each variant in the snapshot (a delegated task). New variants are appended
    /// with the next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            Escalation::Manager => 0,
            Escalation::Task(_) => 1,
            Escalation::Orphaned => 2,
        }
    }
}

impl TimerKind {
    /// The tag of each variant in the snapshot (timers); its order also breaks ties between timers
    /// due together. New variants are appended with the next code; any other change bumps
    /// SNAPSHOT_FORMAT.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const fn code(&self) -> u16 {
        match self {
            TimerKind::TaskDeadline => 0,
            TimerKind::LeaseExpiry => 1,
            TimerKind::SessionExpiry => 2,
            TimerKind::TaskReady => 3,
            TimerKind::DecisionDeadline => 4,
            TimerKind::BreakerReopen => 5,
        }
    }
}

impl BreakerState {
    /// The tag of each variant in the snapshot (agents). New variants are appended with the next
    /// code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

impl DecisionStatus {
    /// The tag of each variant in the snapshot (decisions). New variants are appended with the next
    /// code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            DecisionStatus::Open => 0,
            DecisionStatus::Decided => 1,
            DecisionStatus::Rejected => 2,
            DecisionStatus::NoQuorum => 3,
        }
    }
}

impl CoordEventKind {
    /// The tag of each variant in the snapshot (the event ring). New variants are appended with the
    /// next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            CoordEventKind::Task { .. } => 0,
            CoordEventKind::Decision { .. } => 1,
            CoordEventKind::SessionClosed { .. } => 2,
            CoordEventKind::Lock(_) => 3,
            CoordEventKind::Barrier(_) => 4,
            CoordEventKind::Workflow(_) => 5,
            CoordEventKind::Topic(_) => 6,
        }
    }
}

impl TaskEventKind {
    /// The tag of each variant in the snapshot (the event ring). New variants are appended with the
    /// next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            TaskEventKind::Submitted => 0,
            TaskEventKind::Assigned => 1,
            TaskEventKind::Progress => 2,
            TaskEventKind::LeaseExtended => 3,
            TaskEventKind::Succeeded => 4,
            TaskEventKind::Failed => 5,
            TaskEventKind::RetryScheduled => 6,
            TaskEventKind::Requeued => 7,
            TaskEventKind::DeadLettered => 8,
            TaskEventKind::Canceled => 9,
            TaskEventKind::Redriven => 10,
            TaskEventKind::Unblocked => 11,
            TaskEventKind::Purged => 12,
            TaskEventKind::Expired => 13,
            TaskEventKind::Escalated => 14,
        }
    }
}

impl DecisionEventKind {
    /// The tag of each variant in the snapshot (the event ring). New variants are appended with the
    /// next code; any other change bumps SNAPSHOT_FORMAT.
    pub const fn code(&self) -> u16 {
        match self {
            DecisionEventKind::Proposed => 0,
            DecisionEventKind::Voted => 1,
            DecisionEventKind::Closed => 2,
        }
    }
}
