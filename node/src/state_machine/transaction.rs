//! The cross-primitive transaction: compares over keys, lock grants and tasks, then ops on keys,
//! tasks, workflows, locks and topics, in one log entry, all or nothing.
//!
//! Three phases, in `StateMachine::transaction`:
//! 1. Every compare is evaluated; if any fails, the answer names each failed one (its index and
//!    what it found) and nothing is applied.
//! 2. Every op is checked against the state as it is, by the primitive that owns it (a pure
//!    `check_txn` answering the refusal its plain command would); the first refusal, by op
//!    index, is the answer and nothing is applied.
//! 3. Every op is applied, in order, by its primitive's `apply_txn`, which cannot fail after
//!    the check. The key writes share one new store revision. The effects the ops raise (a
//!    completed task's `LeaseEnded`, a started workflow's step tasks, ...) are routed after the
//!    last op, so no op sees another's effects and the checks stay true through the apply.
//!
//! Ops that would interact within one transaction (two on the same key, task, lock, or
//! idempotency key) are refused as a whole (`Transaction::check_interactions`, which the gateway
//! runs first as INVALID_ARGUMENT), so checking each op against the state before any applies is
//! the same as checking it just before it applies.
//!
//! A new primitive's op is one variant of [`Op`] wrapping the primitive's own op enum, one arm
//! in `check_ops`, one in `apply_ops`, and that primitive's `check_txn` / `apply_txn`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::coordination::{FencingToken, TaskId, TaskOp, TaskState};
use super::locks::{LockKind, LockOp, Token};
use super::primitive::Ctx;
use super::topics::TopicOp;
use super::workflows::{WorkflowId, WorkflowOp};
use super::{delete_event, put_event, Event, Response, StateMachine};

/// One cross-primitive transaction (`Command::Transaction`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// A condition every op of the transaction depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's mod_revision is `mod_revision` (0: the key is absent).
    Key {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        mod_revision: u64,
    },
    /// `token` is a current grant of the lock, of permits of the semaphore, or the leadership of
    /// the election: "I still hold it".
    Holds {
        kind: LockKind,
        name: String,
        token: Token,
    },
    /// The task is in `state` and, when `token` is not 0, its current lease has that token.
    Task {
        task_id: TaskId,
        state: TaskState,
        token: FencingToken,
    },
}

/// What a failed compare found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Current {
    /// The key's mod_revision (0: absent).
    Key { mod_revision: u64 },
    /// The tokens of the current grants (none: not held, or no such lock).
    Grants { tokens: Vec<Token> },
    /// The task's state (None: no such task) and its current lease's token (0: none).
    Task {
        state: Option<TaskState>,
        token: FencingToken,
    },
}

/// One op, by the primitive that owns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Keys(KeyOp),
    Tasks(TaskOp),
    Workflows(WorkflowOp),
    Locks(LockOp),
    Topics(TopicOp),
}

/// A key op: the keys are the state machine's own (`kv.rs`), so their check and apply are here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOp {
    /// Sets a key (not attached to a session), creating it if absent.
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Deletes a key; an absent key is no change.
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// What one applied op did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    KeyPut,
    KeyDeleted {
        existed: bool,
    },
    TaskCompleted {
        task_id: TaskId,
    },
    TaskSubmitted {
        task_id: TaskId,
        existing: bool,
    },
    WorkflowStarted {
        workflow_id: WorkflowId,
        existing: bool,
    },
    LockReleased,
    /// The message's topic and sequence (`duplicate`: its idempotency key was seen within the
    /// window; the original's sequence, nothing stored).
    Published {
        topic: String,
        seq: u64,
        duplicate: bool,
    },
}

/// The outcome of a transaction (inside `Response::Transaction`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TransactionResponse {
    /// Every op applied; one result per op, in order.
    Committed { results: Vec<OpResult> },
    /// Nothing applied: these compares (index, what was found) failed.
    CompareFailed { failed: Vec<(u32, Current)> },
    /// Nothing applied: the op at `index` was refused with the answer its plain command would
    /// have had (`Response::Coordination { LeaseLost }`, `Response::QuotaExceeded`, ...).
    OpRefused { index: u32, refusal: Box<Response> },
    /// Nothing applied: the ops interact (the gateway refuses these before proposing).
    Invalid { reason: String },
}

/// What an op acts on, for finding ops that would interact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Key(Vec<u8>),
    Task(TaskId),
    TaskIdempotencyKey(String, String),
    WorkflowIdempotencyKey(String),
    Lock(LockKind, String),
    MessageIdempotencyKey(String),
}

impl Transaction {
    /// Refuses ops that would interact: two on the same key, the same task, the same lock, or
    /// two submits (starts) with the same idempotency key. Naming both op indexes.
    pub fn check_interactions(&self) -> Result<(), String> {
        let mut seen = BTreeMap::new();
        for (index, op) in self.ops.iter().enumerate() {
            let Some(target) = target(op) else {
                continue;
            };
            if let Some(first) = seen.insert(target.clone(), index) {
                return Err(format!(
                    "ops[{index}]: acts on {} as ops[{first}] does; the ops of one transaction \
                     must not interact",
                    describe(&target)
                ));
            }
        }
        Ok(())
    }
}

fn target(op: &Op) -> Option<Target> {
    Some(match op {
        Op::Keys(KeyOp::Put { key, .. } | KeyOp::Delete { key }) => Target::Key(key.clone()),
        Op::Tasks(TaskOp::Complete { task_id, .. }) => Target::Task(*task_id),
        Op::Tasks(TaskOp::Submit(spec)) if !spec.idempotency_key.is_empty() => {
            Target::TaskIdempotencyKey(spec.queue.clone(), spec.idempotency_key.clone())
        }
        Op::Tasks(TaskOp::Submit(_)) => return None,
        Op::Workflows(WorkflowOp::Start {
            idempotency_key, ..
        }) if !idempotency_key.is_empty() => {
            Target::WorkflowIdempotencyKey(idempotency_key.clone())
        }
        Op::Workflows(WorkflowOp::Start { .. }) => return None,
        Op::Locks(LockOp::Release { kind, name, .. }) => Target::Lock(*kind, name.clone()),
        Op::Topics(TopicOp::Publish(message)) if !message.idempotency_key.is_empty() => {
            Target::MessageIdempotencyKey(message.idempotency_key.clone())
        }
        Op::Topics(TopicOp::Publish(_)) => return None,
    })
}

fn describe(target: &Target) -> String {
    match target {
        Target::Key(key) => format!("key {:?}", String::from_utf8_lossy(key)),
        Target::Task(task_id) => format!("task {task_id}"),
        Target::TaskIdempotencyKey(queue, key) => {
            format!("idempotency key {key:?} of queue {queue:?}")
        }
        Target::WorkflowIdempotencyKey(key) => format!("workflow idempotency key {key:?}"),
        Target::Lock(kind, name) => format!("{} {name:?}", kind.noun()),
        Target::MessageIdempotencyKey(key) => format!("message idempotency key {key:?}"),
    }
}

impl StateMachine {
    /// Applies a transaction: compares, then checks, then every op (see the module comment).
    pub(super) fn transaction(&mut self, transaction: &Transaction) -> Response {
        let response = self.run_transaction(transaction);
        Response::Transaction {
            revision: self.revision,
            response,
        }
    }

    fn run_transaction(&mut self, transaction: &Transaction) -> TransactionResponse {
        if let Err(reason) = transaction.check_interactions() {
            return TransactionResponse::Invalid { reason };
        }
        let failed: Vec<(u32, Current)> = transaction
            .compares
            .iter()
            .enumerate()
            .filter_map(|(index, compare)| {
                let (holds, current) = self.compare(compare);
                (!holds).then_some((index as u32, current))
            })
            .collect();
        if !failed.is_empty() {
            return TransactionResponse::CompareFailed { failed };
        }
        if let Err((index, refusal)) = self.check_ops(&transaction.ops) {
            return TransactionResponse::OpRefused {
                index,
                refusal: Box::new(refusal),
            };
        }
        TransactionResponse::Committed {
            results: self.apply_ops(&transaction.ops),
        }
    }

    /// Whether a compare holds, and what it found.
    fn compare(&self, compare: &Compare) -> (bool, Current) {
        match compare {
            Compare::Key { key, mod_revision } => {
                let current = self.kv.mod_revision(key);
                (
                    current == *mod_revision,
                    Current::Key {
                        mod_revision: current,
                    },
                )
            }
            Compare::Holds { kind, name, token } => (
                self.locks.holds(*kind, name, *token),
                Current::Grants {
                    tokens: self.locks.grant_tokens(*kind, name),
                },
            ),
            Compare::Task {
                task_id,
                state,
                token,
            } => {
                let found = self.tasks.state_and_token(*task_id);
                let holds = found.is_some_and(|(now, leased)| {
                    now == *state && (*token == 0 || leased == *token)
                });
                let current = Current::Task {
                    state: found.map(|(now, _)| now),
                    token: found.map_or(0, |(_, leased)| leased),
                };
                (holds, current)
            }
        }
    }

    /// Checks every op against the state, each by its primitive; the refusal of the lowest op
    /// index, as the plain command's response.
    fn check_ops(&mut self, ops: &[Op]) -> Result<(), (u32, Response)> {
        let revision = self.revision;
        let (mut keys, mut tasks, mut workflows, mut locks) = (vec![], vec![], vec![], vec![]);
        let mut topics = vec![];
        for (index, op) in ops.iter().enumerate() {
            let index = index as u32;
            match op {
                Op::Keys(op) => keys.push((index, op)),
                Op::Tasks(op) => tasks.push((index, op)),
                Op::Workflows(op) => workflows.push((index, op)),
                Op::Locks(op) => locks.push((index, op)),
                Op::Topics(op) => topics.push((index, op)),
            }
        }
        let keys = self.check_key_ops(&keys).err();
        let ctx = Ctx::new(self.now_ms, &mut self.events)
            .with_agents(&self.agents)
            .with_decisions(&self.decisions);
        let refusals = [
            keys,
            self.tasks
                .check_txn(&ctx, &tasks)
                .err()
                .map(|(index, response)| (index, Response::Coordination { revision, response })),
            self.workflows
                .check_txn(&ctx, &workflows)
                .err()
                .map(|(index, response)| (index, Response::Workflows { revision, response })),
            self.locks
                .check_txn(&locks)
                .err()
                .map(|(index, response)| (index, Response::Locks { revision, response })),
            self.topics
                .check_txn(ctx.now_ms, &topics)
                .err()
                .map(|(index, response)| (index, Response::Topics { revision, response })),
        ];
        match refusals
            .into_iter()
            .flatten()
            .min_by_key(|(index, _)| *index)
        {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// The key ops' check: the store quotas, over all of them together as the KV `Txn` checks
    /// them; a refusal names the first op at which the writes so far are over a quota.
    fn check_key_ops(&self, ops: &[(u32, &KeyOp)]) -> Result<(), (u32, Response)> {
        let writes: Vec<(&[u8], Option<&[u8]>)> = ops
            .iter()
            .map(|(_, op)| match op {
                KeyOp::Put { key, value } => (key.as_slice(), Some(value.as_slice())),
                KeyOp::Delete { key } => (key.as_slice(), None),
            })
            .collect();
        if self.check_quota(&writes).is_ok() {
            return Ok(());
        }
        let (end, reason) = (1..=writes.len())
            .find_map(|end| self.check_quota(&writes[..end]).err().map(|r| (end, r)))
            .expect("the whole set is one of its prefixes");
        let response = Response::QuotaExceeded {
            revision: self.revision,
            reason,
        };
        Err((ops[end - 1].0, response))
    }

    /// Applies every op, in order; the key writes at one new revision; then routes the effects
    /// the ops raised, in the order raised.
    fn apply_ops(&mut self, ops: &[Op]) -> Vec<OpResult> {
        let revision = self.revision + 1;
        let mut key_events = Vec::new();
        let mut effects = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let mut ctx = Ctx::new(self.now_ms, &mut self.events)
                .with_agents(&self.agents)
                .with_decisions(&self.decisions);
            let result = match op {
                Op::Keys(op) => apply_key_op(&mut self.kv, op, revision, &mut key_events),
                Op::Tasks(op) => self.tasks.apply_txn(&mut ctx, op),
                Op::Workflows(op) => self.workflows.apply_txn(&mut ctx, op),
                Op::Locks(op) => self.locks.apply_txn(&mut ctx, op),
                Op::Topics(op) => self.topics.apply_txn(&mut ctx, op),
            };
            effects.extend(ctx.take_effects());
            results.push(result);
        }
        if !key_events.is_empty() {
            self.commit_revision(key_events);
        }
        self.route(effects);
        results
    }
}

/// Applies one key op at `revision`, adding its event (none for the delete of an absent key).
fn apply_key_op(
    kv: &mut super::KvStore,
    op: &KeyOp,
    revision: u64,
    events: &mut Vec<Event>,
) -> OpResult {
    match op {
        KeyOp::Put { key, value } => {
            events.push(put_event(kv.put(key, value.clone(), revision, 0).0));
            OpResult::KeyPut
        }
        KeyOp::Delete { key } => {
            let existed = kv.remove(key).is_some();
            if existed {
                events.push(delete_event(key, revision));
            }
            OpResult::KeyDeleted { existed }
        }
    }
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT (the command's) or SNAPSHOT_FORMAT (the response's,
// remembered per request id). ----

impl Compare {
    pub const fn code(&self) -> u16 {
        match self {
            Compare::Key { .. } => 0,
            Compare::Holds { .. } => 1,
            Compare::Task { .. } => 2,
        }
    }
}

impl Op {
    pub const fn code(&self) -> u16 {
        match self {
            Op::Keys(_) => 0,
            Op::Tasks(_) => 1,
            Op::Workflows(_) => 2,
            Op::Locks(_) => 3,
            Op::Topics(_) => 4,
        }
    }
}

impl KeyOp {
    pub const fn code(&self) -> u16 {
        match self {
            KeyOp::Put { .. } => 0,
            KeyOp::Delete { .. } => 1,
        }
    }
}

impl Current {
    pub const fn code(&self) -> u16 {
        match self {
            Current::Key { .. } => 0,
            Current::Grants { .. } => 1,
            Current::Task { .. } => 2,
        }
    }
}

impl OpResult {
    pub const fn code(&self) -> u16 {
        match self {
            OpResult::KeyPut => 0,
            OpResult::KeyDeleted { .. } => 1,
            OpResult::TaskCompleted { .. } => 2,
            OpResult::TaskSubmitted { .. } => 3,
            OpResult::WorkflowStarted { .. } => 4,
            OpResult::LockReleased => 5,
            OpResult::Published { .. } => 6,
        }
    }
}

impl TransactionResponse {
    pub const fn code(&self) -> u16 {
        match self {
            TransactionResponse::Committed { .. } => 0,
            TransactionResponse::CompareFailed { .. } => 1,
            TransactionResponse::OpRefused { .. } => 2,
            TransactionResponse::Invalid { .. } => 3,
        }
    }
}

#[cfg(test)]
mod tests;
