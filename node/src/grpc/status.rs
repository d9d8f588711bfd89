//! The one table from node::Error to gRPC status, with the metadata clients act on.

use conclave_proto::{
    COMPACT_REVISION_METADATA, LEADER_METADATA, OLDEST_SEQUENCE_METADATA, OP_INDEX_METADATA,
    OUTCOME_METADATA, OUTCOME_REJECTED, REASON_LEASE_LOST, REASON_LOCK_LOST, REASON_METADATA,
    REASON_NODE_REMOVED,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{Error, LeaderHint};

pub fn to_status(error: Error) -> Status {
    if let Error::OpRefused { index, error } = error {
        return op_refused(index, *error);
    }
    let message = error.to_string();
    let reason = match error {
        Error::NodeRemoved(_) => Some(REASON_NODE_REMOVED),
        Error::LeaseLost(_) => Some(REASON_LEASE_LOST),
        Error::LockLost(_) => Some(REASON_LOCK_LOST),
        _ => None,
    };
    // `oldest`: the metadata key and value naming the oldest history still kept.
    let (code, leader, rejected, oldest) = match error {
        Error::InvalidArgument(_) => (Code::InvalidArgument, None, true, None),
        Error::NotLeader { leader, proposed } => (Code::Unavailable, leader, !proposed, None),
        Error::Unavailable {
            leader, proposed, ..
        } => (Code::Unavailable, leader, !proposed, None),
        Error::Timeout(_) => (Code::DeadlineExceeded, None, false, None),
        Error::ResourceExhausted(_) => (Code::ResourceExhausted, None, true, None),
        Error::Compacted {
            oldest_available, ..
        } => (
            Code::OutOfRange,
            None,
            true,
            Some((COMPACT_REVISION_METADATA, oldest_available)),
        ),
        Error::EventsGone { oldest_kept, .. } => (
            Code::OutOfRange,
            None,
            true,
            Some((OLDEST_SEQUENCE_METADATA, oldest_kept)),
        ),
        Error::NotFound(_) => (Code::NotFound, None, true, None),
        Error::FailedPrecondition(_)
        | Error::NodeRemoved(_)
        | Error::LeaseLost(_)
        | Error::LockLost(_) => (Code::FailedPrecondition, None, true, None),
        Error::AlreadyExists(_) => (Code::AlreadyExists, None, true, None),
        Error::OpRefused { .. } => unreachable!("answered by op_refused"),
        Error::Fatal(_) => (Code::Internal, None, false, None),
    };
    let message = match (&leader, code) {
        (Some(hint), Code::Unavailable) => {
            format!("{message}; leader is node {} at {}", hint.id, hint.api_addr)
        }
        _ => message,
    };
    let mut status = Status::new(code, message);
    let metadata = status.metadata_mut();
    if let Some(LeaderHint { id, api_addr }) = leader {
        if let Ok(value) = MetadataValue::try_from(format!("{id}={api_addr}")) {
            metadata.insert(LEADER_METADATA, value);
        }
    }
    if rejected {
        metadata.insert(
            OUTCOME_METADATA,
            MetadataValue::from_static(OUTCOME_REJECTED),
        );
    }
    if let Some(reason) = reason {
        metadata.insert(REASON_METADATA, MetadataValue::from_static(reason));
    }
    if let Some((key, oldest)) = oldest {
        metadata.insert(key, MetadataValue::from(oldest));
    }
    status
}

/// A transaction's refused op: the status its plain call would have had, its message prefixed
/// with the op (`ops[2]: lease lost: ...`), and the op's index in `conclave-op-index`.
fn op_refused(index: u32, error: Error) -> Status {
    let inner = to_status(error);
    let mut metadata = inner.metadata().clone();
    metadata.insert(OP_INDEX_METADATA, MetadataValue::from(index));
    Status::with_metadata(
        inner.code(),
        format!("ops[{index}]: {}", inner.message()),
        metadata,
    )
}
