//! The node's error type, and `refused`: the one table from the state machine's domain refusals
//! to it. `grpc/status.rs` is the one table that turns an error into a gRPC status.

use crate::raft::NodeId;
use crate::state_machine::coordination::{CoordResponse, DecisionId, TaskId};
use crate::state_machine::topics::{Refusal, RefusalCode};
use crate::state_machine::workflows::WorkflowId;
use crate::state_machine::{
    BarrierResponse, LockResponse, RequestId, Response, TopicResponse, TransactionResponse,
    WorkflowResponse,
};

/// The leader a node knows of, as a hint for clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: NodeId,
    pub api_addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing was applied.
    #[error("{0}")]
    InvalidArgument(String),
    /// This node is not the leader. `proposed` tells whether this node may have put the write in
    /// its log before finding out (then the outcome is unknown, not rejected).
    #[error("not the leader")]
    NotLeader {
        leader: Option<LeaderHint>,
        proposed: bool,
    },
    /// No leader could be reached within the bounded wait.
    #[error("{message}")]
    Unavailable {
        message: String,
        leader: Option<LeaderHint>,
        proposed: bool,
    },
    /// The write was proposed but not known to be committed in time: outcome unknown.
    #[error("{0}")]
    Timeout(String),
    /// A quota or node-local limit is full; nothing was applied.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A watch asked for history that is gone.
    #[error("compacted: revision {requested} is older than the retained history; the oldest available revision is {oldest_available}")]
    Compacted {
        requested: u64,
        oldest_available: u64,
    },
    /// A task watch asked for coordination events that are no longer kept.
    #[error("{message}")]
    EventsGone { message: String, oldest_kept: u64 },
    /// The task, agent, session or decision does not exist (any more); nothing was applied.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The node (this one, or the one that forwarded the request) is no longer a member of the
    /// cluster; another node may serve the call.
    #[error("node {0} has been removed from the cluster; ask another node")]
    NodeRemoved(NodeId),
    /// A task verb's fencing token is stale; the message starts with "lease lost".
    #[error("{0}")]
    LeaseLost(String),
    /// A fenced write's grant (or a lock verb's token) is no longer current; the message starts
    /// with "lock lost".
    #[error("{0}")]
    LockLost(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// An op of a cross-primitive transaction was refused with `error`, the error its plain
    /// command would have had; nothing of the transaction was applied.
    #[error("ops[{index}]: {error}")]
    OpRefused { index: u32, error: Box<Error> },
    /// The node cannot go on (storage failure); it stops serving.
    #[error("fatal: {0}")]
    Fatal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A task id that names no task (any more), from a write or a read.
    pub fn unknown_task(task_id: TaskId) -> Error {
        Error::NotFound(format!("task {task_id} does not exist"))
    }

    /// An agent name that no agent registered under.
    pub fn unknown_agent(name: &str) -> Error {
        Error::NotFound(format!("agent {name:?} is not registered"))
    }

    /// A decision id that names no decision (any more), from a write or a read.
    pub fn unknown_decision(decision_id: DecisionId) -> Error {
        Error::NotFound(format!("decision {decision_id} does not exist"))
    }

    /// A workflow id that names no workflow (never started, or forgotten after its retention).
    pub fn unknown_workflow(workflow_id: WorkflowId) -> Error {
        Error::NotFound(format!(
            "workflow_id: workflow {workflow_id} does not exist (or was forgotten after its retention)"
        ))
    }
}

/// An applied write's answer with the state machine's domain refusals as node errors, each one
/// "nothing applied": a KV refusal (quota, session not live, request id expired) or a coordination
/// refusal (lease lost, unknown session, agent, task or decision, agent exists, vote refused,
/// invalid, quota). Successes are handed back for the caller to convert. `request_id` is the
/// write's, named in the "expired" message.
pub fn refused(response: Response, request_id: Option<RequestId>) -> Result<Response> {
    match response {
        Response::QuotaExceeded { reason, .. } => Err(Error::ResourceExhausted(reason)),
        Response::SessionNotLive { session_id, .. } => Err(Error::FailedPrecondition(format!(
            "session_id: session {session_id} is not live (unknown, expired or closed); nothing was written"
        ))),
        Response::RequestIdExpired { .. } => {
            let (client_id, serial) = request_id.map_or((0, 0), |id| (id.client_id, id.serial));
            Err(Error::FailedPrecondition(format!(
                "request id serial {serial} of client {client_id} is below the client's min_pending_serial; its result is no longer known"
            )))
        }
        Response::Coordination { revision, response } => {
            coordination_refused(response).map(|response| Response::Coordination { revision, response })
        }
        Response::FenceLost { reason, .. } => Err(Error::LockLost(reason)),
        Response::Locks { revision, response } => {
            lock_refused(response).map(|response| Response::Locks { revision, response })
        }
        Response::Barriers { revision, response } => {
            barrier_refused(response).map(|response| Response::Barriers { revision, response })
        }
        Response::Workflows { revision, response } => {
            workflow_refused(response).map(|response| Response::Workflows { revision, response })
        }
        Response::Topics { revision, response } => {
            topic_refused(response).map(|response| Response::Topics { revision, response })
        }
        Response::Transaction { revision, response } => {
            transaction_refused(response, request_id)
                .map(|response| Response::Transaction { revision, response })
        }
        success => Ok(success),
    }
}

/// The topics half of [`refused`]: a refusal's code picks the error; its reason names the field
/// or the limit.
fn topic_refused(response: TopicResponse) -> Result<TopicResponse> {
    match response {
        TopicResponse::Refused(refusal) => Err(topic_refusal(refusal)),
        success => Ok(success),
    }
}

/// A topic command's refusal as a node error (also for other modules that check a publish).
pub fn topic_refusal(Refusal { code, reason }: Refusal) -> Error {
    match code {
        RefusalCode::NotFound => Error::NotFound(reason),
        RefusalCode::AlreadyExists => Error::AlreadyExists(reason),
        RefusalCode::FailedPrecondition => Error::FailedPrecondition(reason),
        RefusalCode::InvalidArgument => Error::InvalidArgument(reason),
        RefusalCode::ResourceExhausted => Error::ResourceExhausted(reason),
        RefusalCode::StaleToken => Error::LeaseLost(format!("lease lost: {reason}")),
    }
}

/// The transactions part of [`refused`]: a refused op is the error its plain command would
/// have had, marked with its index; a failed compare is an answer, not an error (like the KV
/// `Txn`'s).
fn transaction_refused(
    response: TransactionResponse,
    request_id: Option<RequestId>,
) -> Result<TransactionResponse> {
    match response {
        TransactionResponse::OpRefused { index, refusal } => {
            let error = match refused(*refusal, request_id) {
                Err(error) => error,
                Ok(success) => Error::Fatal(format!(
                    "a transaction's op {index} was refused with a success: {success:?}"
                )),
            };
            Err(Error::OpRefused {
                index,
                error: Box::new(error),
            })
        }
        TransactionResponse::Invalid { reason } => Err(Error::InvalidArgument(reason)),
        answer @ (TransactionResponse::Committed { .. }
        | TransactionResponse::CompareFailed { .. }) => Ok(answer),
    }
}

/// The workflows half of [`refused`]. A cancel of a workflow that is no longer running or
/// waiting is not a refusal: it answers `Canceled { canceled: false }` with the state, as a
/// task's cancel does, so a retried cancel succeeds.
fn workflow_refused(response: WorkflowResponse) -> Result<WorkflowResponse> {
    match response {
        WorkflowResponse::UnknownWorkflow { workflow_id } => {
            Err(Error::unknown_workflow(workflow_id))
        }
        WorkflowResponse::NotRetryable { state } => Err(Error::FailedPrecondition(format!(
            "workflow_id: the workflow is {state:?}; only a FAILED or TIMED_OUT workflow can be retried"
        ))),
        WorkflowResponse::Invalid { reason } => Err(Error::InvalidArgument(reason)),
        WorkflowResponse::QuotaExceeded { reason } => Err(Error::ResourceExhausted(reason)),
        success @ (WorkflowResponse::Started { .. }
        | WorkflowResponse::Canceled { .. }
        | WorkflowResponse::Retried { .. }) => Ok(success),
    }
}

/// The locks half of [`refused`].
fn lock_refused(response: LockResponse) -> Result<LockResponse> {
    match response {
        LockResponse::LockLost { reason } => Err(Error::LockLost(reason)),
        LockResponse::Mismatch { reason } => Err(Error::FailedPrecondition(reason)),
        LockResponse::SessionNotLive { session_id } => Err(Error::FailedPrecondition(format!(
            "holder.session_id: session {session_id} is not live (unknown, expired or closed)"
        ))),
        LockResponse::QuotaExceeded { reason } => Err(Error::ResourceExhausted(reason)),
        success => Ok(success),
    }
}

/// The barriers half of [`refused`].
fn barrier_refused(response: BarrierResponse) -> Result<BarrierResponse> {
    match response {
        BarrierResponse::Mismatch { reason } => Err(Error::FailedPrecondition(reason)),
        BarrierResponse::QuotaExceeded { reason } => Err(Error::ResourceExhausted(reason)),
        success => Ok(success),
    }
}

/// The coordination half of [`refused`].
fn coordination_refused(response: CoordResponse) -> Result<CoordResponse> {
    match response {
        CoordResponse::LeaseLost { reason } => {
            Err(Error::LeaseLost(if reason.starts_with("lease lost") {
                reason
            } else {
                format!("lease lost: {reason}")
            }))
        }
        CoordResponse::UnknownSession { session_id } => Err(Error::NotFound(format!(
            "session {session_id} does not exist or has ended; register again"
        ))),
        CoordResponse::UnknownAgent { name } => Err(Error::unknown_agent(&name)),
        CoordResponse::UnknownTask { task_id } => Err(Error::unknown_task(task_id)),
        CoordResponse::UnknownDecision { decision_id } => Err(Error::unknown_decision(decision_id)),
        CoordResponse::AgentExists { name } => Err(Error::AlreadyExists(format!(
            "agent {name:?} already has a live session; set replace to close it"
        ))),
        CoordResponse::VoteRefused { reason } => Err(Error::FailedPrecondition(reason)),
        CoordResponse::Invalid { reason } => Err(Error::InvalidArgument(reason)),
        CoordResponse::QuotaExceeded { reason } => Err(Error::ResourceExhausted(reason)),
        success => Ok(success),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordination(response: CoordResponse) -> Result<Response> {
        refused(
            Response::Coordination {
                revision: 4,
                response,
            },
            None,
        )
    }

    #[test]
    fn coordination_refusals_map_to_their_errors() {
        let lost = coordination(CoordResponse::LeaseLost {
            reason: "the lease expired".into(),
        });
        assert!(matches!(&lost, Err(Error::LeaseLost(m)) if m == "lease lost: the lease expired"));
        let lost = coordination(CoordResponse::LeaseLost {
            reason: "lease lost: task 7 was canceled".into(),
        });
        assert!(
            matches!(&lost, Err(Error::LeaseLost(m)) if m == "lease lost: task 7 was canceled")
        );
        assert!(matches!(
            coordination(CoordResponse::UnknownTask { task_id: 7 }),
            Err(Error::NotFound(m)) if m == "task 7 does not exist"
        ));
        assert!(matches!(
            coordination(CoordResponse::AgentExists { name: "a".into() }),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            coordination(CoordResponse::QuotaExceeded {
                reason: "full".into()
            }),
            Err(Error::ResourceExhausted(_))
        ));
        assert!(matches!(
            coordination(CoordResponse::Ok),
            Ok(Response::Coordination {
                revision: 4,
                response: CoordResponse::Ok
            })
        ));
    }

    #[test]
    fn workflow_refusals_map_to_their_errors() {
        let workflows = |response| {
            refused(
                Response::Workflows {
                    revision: 4,
                    response,
                },
                None,
            )
        };
        use crate::state_machine::workflows::WorkflowState;
        assert!(matches!(
            workflows(WorkflowResponse::UnknownWorkflow { workflow_id: 7 }),
            Err(Error::NotFound(m)) if m.starts_with("workflow_id: workflow 7 does not exist")
        ));
        assert!(matches!(
            workflows(WorkflowResponse::NotRetryable { state: WorkflowState::Running }),
            Err(Error::FailedPrecondition(m)) if m.starts_with("workflow_id: the workflow is Running")
        ));
        assert!(matches!(
            workflows(WorkflowResponse::Invalid { reason: "input: not JSON".into() }),
            Err(Error::InvalidArgument(m)) if m == "input: not JSON"
        ));
        assert!(matches!(
            workflows(WorkflowResponse::QuotaExceeded { reason: "WORKFLOWS_OPEN_MAX".into() }),
            Err(Error::ResourceExhausted(m)) if m == "WORKFLOWS_OPEN_MAX"
        ));
        assert!(matches!(
            workflows(WorkflowResponse::Canceled {
                canceled: false,
                state: WorkflowState::Succeeded
            }),
            Ok(Response::Workflows {
                revision: 4,
                response: WorkflowResponse::Canceled {
                    canceled: false,
                    ..
                }
            })
        ));
    }

    #[test]
    fn a_refused_transaction_op_is_its_plain_error_with_its_index() {
        use crate::state_machine::TransactionResponse;
        let refused_op = refused(
            Response::Transaction {
                revision: 4,
                response: TransactionResponse::OpRefused {
                    index: 2,
                    refusal: Box::new(Response::Coordination {
                        revision: 4,
                        response: CoordResponse::LeaseLost {
                            reason: "lease lost: task 7 was canceled".into(),
                        },
                    }),
                },
            },
            None,
        );
        let Err(Error::OpRefused { index: 2, error }) = refused_op else {
            panic!("an op refusal: {refused_op:?}");
        };
        assert!(matches!(*error, Error::LeaseLost(_)));
        let status = crate::grpc::status::to_status(Error::OpRefused { index: 2, error });
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "ops[2]: lease lost: task 7 was canceled");
        let metadata = status.metadata();
        assert_eq!(
            metadata.get(conclave_proto::OP_INDEX_METADATA).unwrap(),
            "2"
        );
        assert_eq!(
            metadata.get(conclave_proto::REASON_METADATA).unwrap(),
            "lease-lost"
        );
        assert_eq!(
            metadata.get(conclave_proto::OUTCOME_METADATA).unwrap(),
            "rejected"
        );
        let compare_failed = TransactionResponse::CompareFailed { failed: vec![] };
        assert!(refused(
            Response::Transaction {
                revision: 4,
                response: compare_failed
            },
            None
        )
        .is_ok());
    }

    #[test]
    fn kv_refusals_map_to_their_errors() {
        assert!(matches!(
            refused(
                Response::QuotaExceeded {
                    revision: 1,
                    reason: "full".into()
                },
                None
            ),
            Err(Error::ResourceExhausted(m)) if m == "full"
        ));
        assert!(matches!(
            refused(
                Response::SessionNotLive {
                    revision: 1,
                    session_id: 9
                },
                None
            ),
            Err(Error::FailedPrecondition(m)) if m.starts_with("session_id: session 9 is not live")
        ));
        let id = RequestId {
            client_id: 3,
            serial: 5,
            min_pending_serial: 6,
        };
        assert!(matches!(
            refused(Response::RequestIdExpired { revision: 1 }, Some(id)),
            Err(Error::FailedPrecondition(m)) if m.starts_with("request id serial 5 of client 3 ")
        ));
        assert!(matches!(
            refused(
                Response::Put {
                    revision: 2,
                    previous: None
                },
                Some(id)
            ),
            Ok(Response::Put { revision: 2, .. })
        ));
    }
}
