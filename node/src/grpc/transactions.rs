//! The Transactions service (transactions.proto): every compare and op checked as its plain call
//! checks its fields (named `compares[i].` and `ops[i].`), interacting ops refused, the whole
//! written or forwarded as one `Command::Transaction`; a failed compare is an answer, a refused
//! op an error (`error::refused`, with `conclave-op-index`).

use conclave_proto::limits::{
    MAX_PAYLOAD_BYTES, MAX_TRANSACTION_BYTES, MAX_TRANSACTION_COMPARES, MAX_TRANSACTION_OPS,
};
use conclave_proto::v1 as pb;
use conclave_proto::v1::transactions_client::TransactionsClient;
use conclave_proto::v1::transactions_server::Transactions as TransactionsApi;
use std::collections::BTreeMap;

use conclave_proto::validate;
use conclave_proto::validate::topic as topic_rules;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert::{task_state, task_state_from};
use super::gateway::{invalid, request_id, unexpected, Gateway};
use super::validation::{self, name, non_zero, rule};
use super::workflows::start_definition;
use crate::limits::MAX_REQUEST_BYTES;
use crate::node::Consistency;
use crate::state_machine::coordination::TaskOp;
use crate::state_machine::locks::{LockKind, LockOp};
use crate::state_machine::topics::{NewMessage, TopicOp};
use crate::state_machine::transaction::{Compare, Current, KeyOp, Op, OpResult};
use crate::state_machine::workflows::WorkflowOp;
use crate::state_machine::{Command, Response as SmResponse, Transaction, TransactionResponse};

pub struct TransactionsService {
    gateway: Gateway,
}

impl TransactionsService {
    pub fn new(gateway: Gateway) -> Self {
        TransactionsService { gateway }
    }
}

/// The generated client, for forwarding, with the same message bounds as the server.
fn client(channel: Channel) -> TransactionsClient<Channel> {
    TransactionsClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

#[tonic::async_trait]
impl TransactionsApi for TransactionsService {
    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let traceparent = validation::traceparent_metadata(request.metadata())?;
        let (forwarded, mut req) = self.gateway.accept(request)?;
        if let Some(traceparent) = &traceparent {
            trace(&mut req, traceparent);
        }
        let size = req.encoded_len();
        if size > MAX_TRANSACTION_BYTES {
            return Err(invalid(format!(
                "request: {size} bytes is larger than the limit of {MAX_TRANSACTION_BYTES} bytes \
                 (MAX_TRANSACTION_BYTES)"
            )));
        }
        let request_id = request_id(req.request_id)?;
        let fence = validation::fence(req.fence.as_ref())?;
        let command = Command::Transaction(transaction(&req)?);
        let gateway = &self.gateway;
        gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, fence, command),
                |response| match response {
                    SmResponse::Transaction { revision, response } => {
                        let header = gateway.header(revision, Consistency::Linearizable);
                        Ok(Response::new(answer(header, response)?))
                    }
                    other => Err(unexpected(other)),
                },
                |c, r| async move { client(c).commit(r).await },
            )
            .await
    }
}

/// A `traceparent` in the call's metadata (tasks.proto, Tracing) becomes the reserved label of
/// every task submitted and of every task step of every workflow started, in the request body, so
/// it survives forwarding (as Submit and Workflows.Start do).
fn trace(req: &mut pb::CommitRequest, traceparent: &str) {
    use pb::transaction_op::Op as Given;
    for op in &mut req.ops {
        match op.op.as_mut() {
            Some(Given::Submit(submit)) => {
                if let Some(spec) = submit.task.as_mut() {
                    validation::set_traceparent(spec, traceparent);
                }
            }
            Some(Given::StartWorkflow(start)) => {
                let steps = start.definition.iter_mut().flat_map(|d| d.steps.iter_mut());
                for step in steps {
                    if let Some(pb::workflow_step::Kind::Task(template)) = step.kind.as_mut() {
                        template.labels.insert(
                            conclave_proto::TRACEPARENT_LABEL.to_string(),
                            traceparent.to_string(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The request as a checked transaction: the limits, every compare and op, no interacting ops.
fn transaction(req: &pb::CommitRequest) -> Result<Transaction, Status> {
    if req.compares.len() > MAX_TRANSACTION_COMPARES {
        return Err(invalid(format!(
            "compares: {} is more than the limit of {MAX_TRANSACTION_COMPARES} \
             (MAX_TRANSACTION_COMPARES)",
            req.compares.len()
        )));
    }
    if req.ops.is_empty() || req.ops.len() > MAX_TRANSACTION_OPS {
        return Err(invalid(format!(
            "ops: {} ops; give 1 ..= {MAX_TRANSACTION_OPS} (MAX_TRANSACTION_OPS)",
            req.ops.len()
        )));
    }
    let compares = req
        .compares
        .iter()
        .enumerate()
        .map(|(i, c)| compare(&format!("compares[{i}]"), c))
        .collect::<Result<Vec<_>, Status>>()?;
    let ops = req
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| self::op(&format!("ops[{i}]"), op))
        .collect::<Result<Vec<_>, Status>>()?;
    let transaction = Transaction { compares, ops };
    transaction.check_interactions().map_err(invalid)?;
    Ok(transaction)
}

fn compare(at: &str, compare: &pb::TransactionCompare) -> Result<Compare, Status> {
    use pb::transaction_compare::Compare as Given;
    match &compare.compare {
        Some(Given::Key(key)) => {
            rule(validate::key(&format!("{at}.key.key"), &key.key))?;
            Ok(Compare::Key {
                key: key.key.clone(),
                mod_revision: key.mod_revision,
            })
        }
        Some(Given::Holds(holds)) => Ok(Compare::Holds {
            kind: lock_kind(&format!("{at}.holds.kind"), holds.kind)?,
            name: lock_name(&format!("{at}.holds.name"), &holds.name)?,
            token: grant_token(&format!("{at}.holds.token"), holds.token)?,
        }),
        Some(Given::Task(task)) => {
            non_zero(&format!("{at}.task.task_id"), task.task_id)?;
            let state = task_state_from(task.state).ok_or_else(|| {
                invalid(format!(
                    "{at}.task.state: {} is not a task state",
                    task.state
                ))
            })?;
            Ok(Compare::Task {
                task_id: task.task_id,
                state,
                token: task.fencing_token,
            })
        }
        None => Err(invalid(format!("{at}: set one of key, holds and task"))),
    }
}

fn op(at: &str, op: &pb::TransactionOp) -> Result<Op, Status> {
    use pb::transaction_op::Op as Given;
    Ok(match &op.op {
        Some(Given::CompleteTask(complete)) => {
            non_zero(&format!("{at}.complete_task.task_id"), complete.task_id)?;
            non_zero(
                &format!("{at}.complete_task.fencing_token"),
                complete.fencing_token,
            )?;
            validation::max_bytes(
                &format!("{at}.complete_task.result"),
                &complete.result,
                MAX_PAYLOAD_BYTES,
                "MAX_PAYLOAD_BYTES",
            )?;
            Op::Tasks(TaskOp::Complete {
                task_id: complete.task_id,
                token: complete.fencing_token,
                result: complete.result.clone(),
            })
        }
        Some(Given::Put(put)) => {
            rule(validate::key(&format!("{at}.put.key"), &put.key))?;
            rule(validate::value(&format!("{at}.put.value"), &put.value))?;
            Op::Keys(KeyOp::Put {
                key: put.key.clone(),
                value: put.value.clone(),
            })
        }
        Some(Given::Delete(delete)) => {
            rule(validate::key(&format!("{at}.delete.key"), &delete.key))?;
            Op::Keys(KeyOp::Delete {
                key: delete.key.clone(),
            })
        }
        Some(Given::Submit(submit)) => {
            let field = format!("{at}.submit.task");
            let spec = submit
                .task
                .as_ref()
                .ok_or_else(|| invalid(format!("{field}: required")))?;
            Op::Tasks(TaskOp::Submit(Box::new(validation::task_spec(
                &field, spec,
            )?)))
        }
        Some(Given::StartWorkflow(start)) => start_op(&format!("{at}.start_workflow"), start)?,
        Some(Given::ReleaseLock(release)) => Op::Locks(LockOp::Release {
            kind: lock_kind(&format!("{at}.release_lock.kind"), release.kind)?,
            name: lock_name(&format!("{at}.release_lock.name"), &release.name)?,
            token: grant_token(&format!("{at}.release_lock.token"), release.token)?,
        }),
        Some(Given::Publish(message)) => Op::Topics(TopicOp::Publish(publish_op(
            &format!("{at}.publish"),
            message,
        )?)),
        None => {
            return Err(invalid(format!(
                "{at}: set one of complete_task, put, delete, submit, start_workflow, \
                 release_lock and publish"
            )))
        }
    })
}

/// A start op, checked as Workflows.Start checks its request (its messages prefixed with `at`).
fn start_op(at: &str, start: &pb::StartWorkflowOp) -> Result<Op, Status> {
    let definition = start_definition(
        start.definition.as_ref(),
        &start.input_json,
        &start.idempotency_key,
        start.deadline_ms,
    )
    .map_err(|status| invalid(format!("{at}.{}", status.message())))?;
    Ok(Op::Workflows(WorkflowOp::Start {
        definition,
        input: start.input_json.clone(),
        idempotency_key: start.idempotency_key.clone(),
        deadline_ms: 0,
    }))
}

/// A publish op's message, checked as Topics.Publish checks one (`validate::topic`).
fn publish_op(field: &str, message: &pb::PublishMessage) -> Result<NewMessage, Status> {
    let headers: BTreeMap<String, String> = message
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    rule(topic_rules::subject(
        &format!("{field}.subject"),
        &message.subject,
    ))?;
    rule(topic_rules::message(
        field,
        message.key.as_deref().unwrap_or_default(),
        &headers,
        &message.data,
        &message.idempotency_key,
    ))?;
    Ok(NewMessage {
        subject: message.subject.clone(),
        key: message.key.clone(),
        headers,
        data: message.data.clone(),
        idempotency_key: message.idempotency_key.clone(),
    })
}

fn lock_kind(field: &str, kind: i32) -> Result<LockKind, Status> {
    match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::Lock) => Ok(LockKind::Lock),
        Ok(pb::LockKind::Semaphore) => Ok(LockKind::Semaphore),
        Ok(pb::LockKind::Election) => Ok(LockKind::Election),
        Err(_) => Err(invalid(format!("{field}: unknown value {kind}"))),
    }
}

fn lock_name(field: &str, value: &str) -> Result<String, Status> {
    name(field, value)?;
    Ok(value.to_string())
}

fn grant_token(field: &str, token: u64) -> Result<u64, Status> {
    if token == 0 {
        return Err(invalid(format!(
            "{field}: must be the non-zero token of the grant"
        )));
    }
    Ok(token)
}

/// The applied transaction on the wire: its results, or the compares that failed.
fn answer(
    header: Option<pb::ResponseHeader>,
    response: TransactionResponse,
) -> Result<pb::CommitResponse, Status> {
    match response {
        TransactionResponse::Committed { results } => Ok(pb::CommitResponse {
            header,
            succeeded: true,
            results: results.into_iter().map(op_result_to_pb).collect(),
            failed_compares: Vec::new(),
        }),
        TransactionResponse::CompareFailed { failed } => Ok(pb::CommitResponse {
            header,
            succeeded: false,
            results: Vec::new(),
            failed_compares: failed
                .into_iter()
                .map(|(index, current)| failed_compare_to_pb(index, current))
                .collect(),
        }),
        refusal @ (TransactionResponse::OpRefused { .. } | TransactionResponse::Invalid { .. }) => {
            Err(Status::internal(format!(
                "a refused transaction reached the answer: {refusal:?}"
            )))
        }
    }
}

fn op_result_to_pb(result: OpResult) -> pb::OpResult {
    use pb::op_result::Result as Wire;
    let result = match result {
        OpResult::KeyPut => Wire::Put(true),
        OpResult::KeyDeleted { existed } => Wire::Deleted(existed),
        OpResult::TaskCompleted { task_id } => Wire::CompletedTaskId(task_id),
        OpResult::TaskSubmitted { task_id, existing } => {
            Wire::Submitted(pb::SubmittedTask { task_id, existing })
        }
        OpResult::WorkflowStarted {
            workflow_id,
            existing,
        } => Wire::StartedWorkflow(pb::StartedWorkflow {
            workflow_id,
            existed: existing,
        }),
        OpResult::LockReleased => Wire::Released(true),
        OpResult::Published {
            topic,
            seq,
            duplicate,
        } => Wire::Published(pb::PublishResult {
            topic,
            seq,
            duplicate,
        }),
    };
    pb::OpResult {
        result: Some(result),
    }
}

fn failed_compare_to_pb(index: u32, current: Current) -> pb::FailedCompare {
    use pb::failed_compare::Current as Wire;
    let current = match current {
        Current::Key { mod_revision } => Wire::ModRevision(mod_revision),
        Current::Grants { tokens } => Wire::Grants(pb::Grants { tokens }),
        Current::Task { state, token } => Wire::Task(pb::TaskNow {
            state: state.map_or(pb::TaskState::Unspecified, task_state) as i32,
            fencing_token: token,
        }),
    };
    pb::FailedCompare {
        index,
        current: Some(current),
    }
}
