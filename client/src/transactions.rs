//! The cross-primitive transaction (transactions.proto): a builder of compares and ops, committed
//! as one write, all or nothing.
//!
//! ```no_run
//! # async fn example(client: conclave_client::Client) -> Result<(), conclave_client::Error> {
//! use conclave_client::TaskSpec;
//!
//! // An agent finishing task 7 (token 12): its result, its key and the follow-up, together.
//! let committed = client
//!     .transaction()
//!     .compare_task(7, conclave_client::TaskState::Assigned, 12)
//!     .complete_task(7, 12, "done")
//!     .put("results/7", "42")
//!     .submit(TaskSpec {
//!         queue: "review".into(),
//!         payload: b"results/7".to_vec(),
//!         ..TaskSpec::default()
//!     })
//!     .commit()
//!     .await?;
//! assert!(committed.succeeded);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use conclave_proto::limits::{
    MAX_PAYLOAD_BYTES, MAX_TRANSACTION_BYTES, MAX_TRANSACTION_COMPARES, MAX_TRANSACTION_OPS,
};
use conclave_proto::v1::transactions_client::TransactionsClient;
use conclave_proto::v1::{
    self as proto, failed_compare, op_result, transaction_compare, transaction_op, CommitRequest,
    Fence, LockKind, PublishMessage, TaskSpec, TaskState, WorkflowDefinition,
};
use conclave_proto::validate;
use prost::Message;
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, Client, MAX_RESPONSE_BYTES};
use crate::error::{Error, Result};
use crate::kv::Header;
use crate::locks::check_fence;
use crate::tasks::check_task_spec;
use crate::topics::check_publish;

/// A transaction being built: [`Client::transaction`], then compares and ops, then
/// [`TransactionBuilder::commit`]. Each op is checked locally by the rules the node applies.
#[derive(Debug, Clone)]
pub struct TransactionBuilder<'a> {
    client: &'a Client,
    request: CommitRequest,
    /// The first broken op or compare, reported by `commit` (so the builder chains).
    invalid: Option<Error>,
}

/// What a committed (or not committed) transaction answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    pub header: Header,
    /// True when every compare held and every op applied; false applied nothing.
    pub succeeded: bool,
    /// When succeeded: one per op, in order.
    pub results: Vec<OpOutcome>,
    /// When not succeeded: every compare that failed, in index order.
    pub failed_compares: Vec<CompareFailure>,
}

/// What one op did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    TaskCompleted {
        task_id: u64,
    },
    Put,
    /// `existed`: false when there was no key to delete.
    Deleted {
        existed: bool,
    },
    /// `existing`: the idempotency key matched an earlier task, whose id this is.
    TaskSubmitted {
        task_id: u64,
        existing: bool,
    },
    /// `existed`: the idempotency key matched a kept instance, whose id this is.
    WorkflowStarted {
        workflow_id: u64,
        existed: bool,
    },
    LockReleased,
    /// The message's topic and sequence; `duplicate`: its idempotency key was seen within the
    /// window (the original's sequence, nothing stored).
    Published {
        topic: String,
        seq: u64,
        duplicate: bool,
    },
}

/// A compare that did not hold, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareFailure {
    /// Its index among the compares, in the order they were added.
    pub index: usize,
    pub found: Found,
}

/// What a failed compare found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The key's mod_revision (0: absent).
    ModRevision(u64),
    /// The tokens of the lock's current grants (none: not held).
    Grants(Vec<u64>),
    /// The task's state (None: no such task) and its current lease's token (0: none).
    Task {
        state: Option<TaskState>,
        fencing_token: u64,
    },
}

impl Client {
    /// Starts a cross-primitive transaction: see [`TransactionBuilder`].
    pub fn transaction(&self) -> TransactionBuilder<'_> {
        TransactionBuilder {
            client: self,
            request: CommitRequest::default(),
            invalid: None,
        }
    }
}

impl<'a> TransactionBuilder<'a> {
    fn compare(mut self, compare: transaction_compare::Compare) -> Self {
        self.request.compares.push(proto::TransactionCompare {
            compare: Some(compare),
        });
        self
    }

    fn op(mut self, op: transaction_op::Op) -> Self {
        self.request.ops.push(proto::TransactionOp { op: Some(op) });
        self
    }

    fn check(mut self, checked: Result<()>) -> Self {
        if let (Err(error), None) = (checked, &self.invalid) {
            self.invalid = Some(error);
        }
        self
    }

    /// Holds when `key`'s mod_revision is `mod_revision` (0: the key is absent).
    pub fn compare_key(self, key: impl Into<Vec<u8>>, mod_revision: u64) -> Self {
        let key = key.into();
        let checked = validate::key("compare key", &key).map_err(Error::from);
        self.check(checked)
            .compare(transaction_compare::Compare::Key(proto::KeyCompare {
                key,
                mod_revision,
            }))
    }

    /// Holds while `token` is a current grant of the lock (semaphore permits, election
    /// leadership): "I still hold it".
    pub fn compare_lock(self, kind: LockKind, name: &str, token: u64) -> Self {
        let checked = check_grant("compare lock", name, token);
        self.check(checked)
            .compare(transaction_compare::Compare::Holds(proto::HoldsCompare {
                kind: kind as i32,
                name: name.to_string(),
                token,
            }))
    }

    /// Holds when the task is in `state` and, when `fencing_token` is not 0, its current lease
    /// has that token.
    pub fn compare_task(self, task_id: u64, state: TaskState, fencing_token: u64) -> Self {
        let checked = if task_id == 0 || state == TaskState::Unspecified {
            Err(Error::invalid_input(
                "compare task: give a task id and a state",
            ))
        } else {
            Ok(())
        };
        self.check(checked)
            .compare(transaction_compare::Compare::Task(proto::TaskCompare {
                task_id,
                state: state as i32,
                fencing_token,
            }))
    }

    /// Completes the task held under `fencing_token` with `result`.
    pub fn complete_task(
        self,
        task_id: u64,
        fencing_token: u64,
        result: impl Into<Vec<u8>>,
    ) -> Self {
        let result = result.into();
        let checked = if task_id == 0 || fencing_token == 0 {
            Err(Error::invalid_input(
                "complete: give the task id and its non-zero fencing token",
            ))
        } else {
            validate::max_bytes("result", &result, MAX_PAYLOAD_BYTES, "MAX_PAYLOAD_BYTES")
                .map_err(Error::from)
        };
        self.check(checked)
            .op(transaction_op::Op::CompleteTask(proto::CompleteTaskOp {
                task_id,
                fencing_token,
                result,
            }))
    }

    /// Sets `key` to `value`.
    pub fn put(self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        let (key, value) = (key.into(), value.into());
        let checked = validate::key("put key", &key)
            .and_then(|()| validate::value("put value", &value))
            .map_err(Error::from);
        self.check(checked)
            .op(transaction_op::Op::Put(proto::TxnPut { key, value }))
    }

    /// Deletes `key` (an absent key is no change).
    pub fn delete(self, key: impl Into<Vec<u8>>) -> Self {
        let key = key.into();
        let checked = validate::key("delete key", &key).map_err(Error::from);
        self.check(checked)
            .op(transaction_op::Op::Delete(proto::TxnDelete { key }))
    }

    /// Submits one task, as [`Client::submit`] does.
    pub fn submit(self, spec: TaskSpec) -> Self {
        let checked = check_task_spec(&spec);
        self.check(checked)
            .op(transaction_op::Op::Submit(proto::SubmitTaskOp {
                task: Some(spec),
            }))
    }

    /// Starts a workflow, as [`Client::start_workflow`] does.
    pub fn start_workflow(
        self,
        definition: WorkflowDefinition,
        input_json: &str,
        idempotency_key: &str,
        deadline: Option<Duration>,
    ) -> Self {
        let checked = validate::workflow::definition(&definition)
            .and_then(|()| validate::workflow::input_json("input", input_json))
            .and_then(|()| validate::id_string("idempotency key", idempotency_key))
            .map_err(Error::from);
        self.check(checked)
            .op(transaction_op::Op::StartWorkflow(proto::StartWorkflowOp {
                definition: Some(definition),
                input_json: input_json.to_string(),
                idempotency_key: idempotency_key.to_string(),
                deadline_ms: deadline.map_or(0, |d| d.as_millis() as u64),
            }))
    }

    /// Gives a grant back (or leaves the lock's queue).
    pub fn release_lock(self, kind: LockKind, name: &str, token: u64) -> Self {
        let checked = check_grant("release lock", name, token);
        self.check(checked)
            .op(transaction_op::Op::ReleaseLock(proto::ReleaseLockOp {
                kind: kind as i32,
                name: name.to_string(),
                token,
            }))
    }

    /// Publishes one message, as [`Client::publish`] does (build it with
    /// [`crate::PublishMessageExt`]).
    pub fn publish(self, message: PublishMessage) -> Self {
        let checked = check_publish(std::slice::from_ref(&message));
        self.check(checked).op(transaction_op::Op::Publish(message))
    }

    /// Applies the whole only while `fence` names a current grant (a stale one is
    /// [`Error::LockLost`], nothing applied).
    pub fn fence(mut self, fence: Fence) -> Self {
        let checked = check_fence(Some(&fence));
        self.request.fence = Some(fence);
        self.check(checked)
    }

    /// Commits the transaction: one write, retried with the same request id until it has a
    /// definite answer. A failed compare is `succeeded == false` (nothing applied); a refused op
    /// is [`Error::OpRefused`] with the op's index and its own error (nothing applied).
    pub async fn commit(self) -> Result<TransactionResult> {
        if let Some(invalid) = self.invalid {
            return Err(invalid);
        }
        let request = self.request;
        check_limits(&request)?;
        let pending = self.client.begin_write();
        let response = self
            .client
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { transactions(channel).commit(request).await }
            })
            .await?;
        Ok(TransactionResult {
            header: response.header.into(),
            succeeded: response.succeeded,
            results: response.results.iter().filter_map(outcome).collect(),
            failed_compares: response
                .failed_compares
                .iter()
                .filter_map(failure)
                .collect(),
        })
    }
}

fn check_grant(what: &str, name: &str, token: u64) -> Result<()> {
    validate::name(&format!("{what} name"), name)?;
    if token == 0 {
        return Err(Error::invalid_input(format!(
            "{what}: give the grant's non-zero token"
        )));
    }
    Ok(())
}

fn check_limits(request: &CommitRequest) -> Result<()> {
    if request.compares.len() > MAX_TRANSACTION_COMPARES {
        return Err(Error::invalid_input(format!(
            "{} compares; a transaction holds at most {MAX_TRANSACTION_COMPARES} \
             (MAX_TRANSACTION_COMPARES)",
            request.compares.len()
        )));
    }
    if request.ops.is_empty() || request.ops.len() > MAX_TRANSACTION_OPS {
        return Err(Error::invalid_input(format!(
            "{} ops; a transaction holds 1 ..= {MAX_TRANSACTION_OPS} (MAX_TRANSACTION_OPS)",
            request.ops.len()
        )));
    }
    let bytes = request.encoded_len();
    if bytes > MAX_TRANSACTION_BYTES {
        return Err(Error::invalid_input(format!(
            "the transaction is {bytes} bytes encoded; the limit is {MAX_TRANSACTION_BYTES} \
             (MAX_TRANSACTION_BYTES)"
        )));
    }
    Ok(())
}

fn outcome(result: &proto::OpResult) -> Option<OpOutcome> {
    use op_result::Result as Wire;
    Some(match result.result.as_ref()? {
        Wire::CompletedTaskId(task_id) => OpOutcome::TaskCompleted { task_id: *task_id },
        Wire::Put(_) => OpOutcome::Put,
        Wire::Deleted(existed) => OpOutcome::Deleted { existed: *existed },
        Wire::Submitted(submitted) => OpOutcome::TaskSubmitted {
            task_id: submitted.task_id,
            existing: submitted.existing,
        },
        Wire::StartedWorkflow(started) => OpOutcome::WorkflowStarted {
            workflow_id: started.workflow_id,
            existed: started.existed,
        },
        Wire::Released(_) => OpOutcome::LockReleased,
        Wire::Published(published) => OpOutcome::Published {
            topic: published.topic.clone(),
            seq: published.seq,
            duplicate: published.duplicate,
        },
    })
}

fn failure(failed: &proto::FailedCompare) -> Option<CompareFailure> {
    use failed_compare::Current;
    let found = match failed.current.as_ref()? {
        Current::ModRevision(revision) => Found::ModRevision(*revision),
        Current::Grants(grants) => Found::Grants(grants.tokens.clone()),
        Current::Task(task) => Found::Task {
            state: TaskState::try_from(task.state)
                .ok()
                .filter(|state| *state != TaskState::Unspecified),
            fencing_token: task.fencing_token,
        },
    };
    Some(CompareFailure {
        index: failed.index as usize,
        found,
    })
}

served_by_header!(proto::CommitResponse);

/// A Transactions stub on `channel`, accepting responses up to the client's bound.
fn transactions(channel: Channel) -> TransactionsClient<Channel> {
    TransactionsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}
