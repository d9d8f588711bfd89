//! The replicated commands and their responses: what the Raft log carries and what apply returns.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::barriers::{BarrierCommand, BarrierResponse};
use super::coordination::{CoordCommand, CoordResponse};
use super::kv::KeyValue;
use super::locks::{LockCommand, LockKind, LockResponse, Token};
use super::transaction::{Transaction, TransactionResponse};
use super::workflows::{WorkflowCommand, WorkflowResponse};
// topics
use super::topics::{TopicCommand, TopicResponse};

/// Identifies one logical client write so that a retry applies it once (Raft thesis §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client_id: u64,
    pub serial: u64,
    /// The client will never retry serials below this one; their results may be forgotten.
    pub min_pending_serial: u64,
}

/// One entry of the application log: a command stamped by the leader that proposed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The proposing leader's wall clock in milliseconds. Apply uses this, never its own clock.
    pub now_ms: u64,
    pub request_id: Option<RequestId>,
    /// Apply only while this grant is current (a fenced write); checked in the same entry.
    pub fence: Option<Fence>,
    pub command: Command,
}

/// "Only if I hold `name` under `token`": a lock, a semaphore's permits or an election's
/// leadership (`locks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub kind: LockKind,
    pub name: String,
    pub token: Token,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Attach the key to this live agent session (0: none); it is deleted when the session
        /// ends. A put without a session detaches the key.
        session_id: u64,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Writes `value` (or deletes, when `value` is `None`) if the key's mod_revision equals
    /// `expected_mod_revision`; 0 expects the key to be absent.
    CompareAndSwap {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected_mod_revision: u64,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    Txn {
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    },
    /// Agents, tasks and decisions (`coordination`).
    Coordination(CoordCommand),
    /// Locks, semaphores and elections (`locks`).
    Locks(LockCommand),
    /// Barriers (`barriers`).
    Barriers(BarrierCommand),
    /// Workflows (`workflows`).
    Workflows(WorkflowCommand),
    /// Topics and their consumer groups (`topics`).
    Topics(TopicCommand),
    /// The cross-primitive transaction (`transaction`): compares over keys, lock grants and
    /// tasks, then ops on keys, tasks, workflows and locks, in this one entry, all or nothing.
    Transaction(Transaction),
}

impl Command {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Delete { .. } => "delete",
            Command::CompareAndSwap { .. } => "compare_and_swap",
            Command::Txn { .. } => "txn",
            Command::Coordination(command) => command.name(),
            Command::Locks(command) => command.name(),
            Command::Barriers(_) => "barrier_enter",
            Command::Workflows(command) => command.name(),
            Command::Topics(command) => command.name(),
            Command::Transaction(_) => "transaction",
        }
    }
}

/// Holds when the key's mod_revision equals `mod_revision` (0: the key is absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub mod_revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// The outcome of applying one entry. Domain failures (a failed compare, a full quota) are
/// responses, not errors: apply itself cannot fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// For blank and membership entries.
    Empty,
    Put {
        revision: u64,
        previous: Option<KeyValue>,
    },
    Delete {
        revision: u64,
        previous: Option<KeyValue>,
    },
    CompareAndSwap {
        revision: u64,
        succeeded: bool,
        current: Option<KeyValue>,
    },
    Txn {
        revision: u64,
        succeeded: bool,
        /// (index into the compares, the key's current mod_revision) for each failed compare.
        failed_compares: Vec<(u32, u64)>,
    },
    /// The write would exceed a store-wide quota; nothing was applied.
    QuotaExceeded { revision: u64, reason: String },
    /// The request id's serial is below what its client said it would still retry, so its
    /// original result is forgotten. Nothing was applied by this entry.
    RequestIdExpired { revision: u64 },
    /// A put named a session that is not live; nothing was written.
    SessionNotLive { revision: u64, session_id: u64 },
    /// The outcome of a coordination command; `revision` is the store revision after the entry
    /// (session ends delete ephemeral keys, which bumps it).
    Coordination {
        revision: u64,
        response: CoordResponse,
    },
    Locks {
        revision: u64,
        response: LockResponse,
    },
    Barriers {
        revision: u64,
        response: BarrierResponse,
    },
    /// The request's fence no longer holds: nothing was applied.
    FenceLost { revision: u64, reason: String },
    Workflows {
        revision: u64,
        response: WorkflowResponse,
    },
    Topics {
        revision: u64,
        response: TopicResponse,
    },
    /// The outcome of a cross-primitive transaction; `revision` is the store revision after it.
    Transaction {
        revision: u64,
        response: TransactionResponse,
    },
}

impl Response {
    /// The store revision after this response was produced.
    pub fn revision(&self) -> u64 {
        match self {
            Response::Empty => 0,
            Response::Put { revision, .. }
            | Response::Delete { revision, .. }
            | Response::CompareAndSwap { revision, .. }
            | Response::Txn { revision, .. }
            | Response::QuotaExceeded { revision, .. }
            | Response::RequestIdExpired { revision }
            | Response::SessionNotLive { revision, .. }
            | Response::Coordination { revision, .. }
            | Response::Locks { revision, .. }
            | Response::Barriers { revision, .. }
            | Response::FenceLost { revision, .. }
            | Response::Workflows { revision, .. }
            | Response::Topics { revision, .. } => *revision,
            Response::Transaction { revision, .. } => *revision,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.command {
            Command::Put {
                key,
                value,
                session_id,
            } => {
                write!(
                    f,
                    "put({}, {} bytes, session {session_id})",
                    String::from_utf8_lossy(key),
                    value.len()
                )
            }
            Command::Delete { key } => write!(f, "delete({})", String::from_utf8_lossy(key)),
            Command::CompareAndSwap {
                key,
                expected_mod_revision,
                ..
            } => write!(
                f,
                "cas({}, expect {})",
                String::from_utf8_lossy(key),
                expected_mod_revision
            ),
            Command::Txn { compares, ops } => {
                write!(f, "txn({} compares, {} ops)", compares.len(), ops.len())
            }
            Command::Coordination(command) => write!(f, "{}", command.name()),
            Command::Transaction(transaction) => write!(
                f,
                "transaction({} compares, {} ops)",
                transaction.compares.len(),
                transaction.ops.len()
            ),
            Command::Locks(_)
            | Command::Barriers(_)
            | Command::Workflows(_)
            | Command::Topics(_) => {
                write!(f, "{}", self.command.name())
            }
        }
    }
}
