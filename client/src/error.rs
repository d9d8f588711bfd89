//! The client's error type, and the one table that turns a gRPC status into a retry decision.
//!
//! The distinction that matters to every caller is whether a failed write may still take effect.
//! [`Error::Rejected`] and [`Error::InvalidInput`] mean it definitely did not; [`Error::Indeterminate`]
//! means it may have committed, or may still commit later.

use std::error::Error as StdError;

use conclave_proto::{
    COMPACT_REVISION_METADATA, LEADER_METADATA, OP_INDEX_METADATA, OUTCOME_METADATA,
    OUTCOME_REJECTED, REASON_LEASE_LOST, REASON_LOCK_LOST, REASON_METADATA, REASON_NODE_REMOVED,
};
use tonic::{Code, Status};

/// Result alias used throughout the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request was definitely not applied: the server refused it before proposing it (for
    /// example INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ALREADY_EXISTS, or any status
    /// marked `conclave-outcome: rejected`), or no attempt ever reached a server. A write that failed
    /// this way is safe to retry as a new write.
    #[error("rejected ({code:?}): {message}")]
    Rejected {
        /// The status code that decided it; `Unavailable` when no attempt reached a server.
        code: Code,
        /// What the server (or the transport) said.
        message: String,
    },
    /// The outcome of a write or membership change is unknown: it may have committed, or may still
    /// commit. Only a later read can tell.
    #[error("outcome unknown: {message}")]
    Indeterminate {
        /// The last failure seen, with the endpoint it came from.
        message: String,
    },
    /// A read could not be served by any endpoint within the deadline. Reads change nothing, so this
    /// never hides an applied write.
    #[error("unavailable: {message}")]
    Unavailable {
        /// The last failure seen, with the endpoint it came from.
        message: String,
    },
    /// A watch asked for history the cluster no longer retains.
    #[error("revision compacted: the oldest revision still available is {oldest_revision}")]
    Compacted {
        /// The oldest revision a watch can start from (0 when the server did not say).
        oldest_revision: u64,
    },
    /// A task verb (complete, fail, extend, progress, release) carried a fencing token that is no
    /// longer current: the lease expired or was revoked, or the task was reassigned, canceled or
    /// expired. The verb changed nothing, and retrying it cannot succeed: stop working on the task.
    #[error("{message}")]
    LeaseLost {
        /// The server's explanation, starting "lease lost".
        message: String,
    },
    /// A fenced write (a [`crate::Fence`] on a put, delete, compare-and-swap, transaction or task
    /// completion), or a lock verb (release, keep-alive, proclaim, resign), named a grant of a lock,
    /// semaphore or election that is no longer current: it was released, its TTL passed, its session
    /// ended, or its holder was deposed. Nothing was applied, and retrying cannot succeed: stop
    /// using the token. Recognised from `conclave-reason: lock-lost`, never from the message.
    #[error("{message}")]
    LockLost {
        /// The server's explanation.
        message: String,
    },
    /// An op of a cross-primitive transaction ([`crate::TransactionBuilder`]) was refused: `error`
    /// is what the op's plain call would have answered ([`Error::LeaseLost`] for a stale task
    /// token, [`Error::LockLost`], a [`Error::Rejected`] with its code), and nothing of the
    /// transaction was applied. Recognised from `conclave-op-index`, never from the message.
    #[error("{error}")]
    OpRefused {
        /// The op's index in the transaction.
        index: usize,
        /// The op's own refusal (its message starts `ops[<index>]: `).
        error: Box<Error>,
    },
    /// The request was invalid before it was sent (a bad endpoint, an empty key, a limit exceeded);
    /// nothing was sent.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// True when the request definitely did not take effect: [`Error::Rejected`],
    /// [`Error::InvalidInput`], [`Error::LeaseLost`], [`Error::LockLost`], and the errors of calls that change nothing
    /// ([`Error::Unavailable`], [`Error::Compacted`]). False only for [`Error::Indeterminate`].
    pub fn is_definitely_not_applied(&self) -> bool {
        !matches!(self, Error::Indeterminate { .. })
    }

    /// True for [`Error::Indeterminate`].
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate { .. })
    }

    /// The gRPC code behind a [`Error::Rejected`], if that is what this is.
    pub fn rejected_code(&self) -> Option<Code> {
        match self {
            Error::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for [`Error::LeaseLost`].
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost { .. })
    }

    /// True for [`Error::LockLost`].
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// True when the server answered NOT_FOUND (an unknown task, decision, agent or session).
    pub fn is_not_found(&self) -> bool {
        self.rejected_code() == Some(Code::NotFound)
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Error {
        Error::InvalidInput {
            message: message.into(),
        }
    }
}

/// A rule of the wire contract broken before sending (`conclave_proto::validate`, the rules the
/// server checks too): nothing was sent.
impl From<conclave_proto::validate::Invalid> for Error {
    fn from(invalid: conclave_proto::validate::Invalid) -> Error {
        Error::invalid_input(invalid)
    }
}

/// What one failed attempt tells us about the request it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server answered and refused the request before proposing it; retrying the same request
    /// cannot change the answer (except FAILED_PRECONDITION, which is per node).
    Refused,
    /// The request provably did not take effect (never sent, or the server says it was not
    /// proposed); it is safe to try again.
    NotApplied,
    /// The request may have been proposed: a write must be retried with the same request id, and
    /// may end as [`Error::Indeterminate`].
    Unknown,
}

/// Status codes that a server only sends for a request it refused before proposing it.
const REFUSAL_CODES: [Code; 9] = [
    Code::InvalidArgument,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::OutOfRange,
    Code::AlreadyExists,
    Code::NotFound,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::Unimplemented,
];

/// Classifies one failed attempt. See the error table in `kv.proto`.
pub(crate) fn classify(status: &Status) -> Verdict {
    if REFUSAL_CODES.contains(&status.code()) {
        return Verdict::Refused;
    }
    if outcome_rejected(status) || never_connected(status) {
        return Verdict::NotApplied;
    }
    Verdict::Unknown
}

/// True when the server marked the failure `conclave-outcome: rejected` (provably not proposed).
pub(crate) fn outcome_rejected(status: &Status) -> bool {
    status
        .metadata()
        .get(OUTCOME_METADATA)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim() == OUTCOME_REJECTED)
}

/// True when the channel failed to open a connection, so the request never left this process.
/// tonic keeps the connector's [`tonic::ConnectError`] in the status' source chain.
pub(crate) fn never_connected(status: &Status) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The op a refused transaction names (`conclave-op-index`, transactions.proto), if any.
pub(crate) fn op_index(status: &Status) -> Option<usize> {
    status
        .metadata()
        .get(OP_INDEX_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// True when a FAILED_PRECONDITION says the fencing token of a task verb is stale
/// (`conclave-reason: lease-lost`, agents.proto).
pub(crate) fn lease_lost(status: &Status) -> bool {
    failed_because(status, REASON_LEASE_LOST)
}

/// True when a FAILED_PRECONDITION says a fence or a lock token is stale
/// (`conclave-reason: lock-lost`, locks.proto).
pub(crate) fn lock_lost(status: &Status) -> bool {
    failed_because(status, REASON_LOCK_LOST)
}

/// True when a FAILED_PRECONDITION says the node that sent it, or the node that forwarded the call,
/// has been removed from the cluster (`conclave-reason: node-removed`, kv.proto), so another node
/// may still serve the call. Other FAILED_PRECONDITION answers (a stale fencing token, a vote
/// already cast, a session that is not live) are about the request and would be the same on every
/// node.
pub(crate) fn node_removed(status: &Status) -> bool {
    failed_because(status, REASON_NODE_REMOVED)
}

fn failed_because(status: &Status, reason: &str) -> bool {
    status.code() == Code::FailedPrecondition
        && status
            .metadata()
            .get(REASON_METADATA)
            .is_some_and(|value| value.as_bytes() == reason.as_bytes())
}

/// A leader named by a `conclave-leader` metadata value or by a node's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id.
    pub node_id: u64,
    /// The leader's API address as the node reported it.
    pub api_addr: String,
}

/// Parses a `conclave-leader` value, `"<id>=<api addr>"`. Returns `None` for anything else, since a
/// malformed hint is only a missed shortcut.
pub fn parse_leader_hint(value: &str) -> Option<LeaderHint> {
    let (id, addr) = value.trim().split_once('=')?;
    let node_id: u64 = id.trim().parse().ok()?;
    let api_addr = addr.trim();
    if node_id == 0 || api_addr.is_empty() {
        return None;
    }
    Some(LeaderHint {
        node_id,
        api_addr: api_addr.to_string(),
    })
}

/// The leader hint carried by a failed call, if any.
pub(crate) fn leader_hint(status: &Status) -> Option<LeaderHint> {
    let value = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
    parse_leader_hint(value)
}

/// The oldest retained revision named by an OUT_OF_RANGE watch failure (0 when absent).
pub(crate) fn compact_revision(status: &Status) -> u64 {
    status
        .metadata()
        .get(COMPACT_REVISION_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// One line describing a status: its code, its message and the transport's cause, which tonic
/// keeps in the source chain ("tcp connect error" alone does not say "connection refused").
pub(crate) fn describe(status: &Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(error) = source {
        let cause = error.to_string();
        if !cause.is_empty() && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn status_with(code: Code, metadata: &[(&'static str, &str)]) -> Status {
        let mut status = Status::new(code, "test");
        for (key, value) in metadata {
            status.metadata_mut().insert(
                *key,
                MetadataValue::try_from(*value).expect("test metadata is ascii"),
            );
        }
        status
    }

    #[test]
    fn classify_follows_the_error_table() {
        let cases = [
            (Code::InvalidArgument, &[][..], Verdict::Refused),
            (Code::ResourceExhausted, &[], Verdict::Refused),
            (Code::FailedPrecondition, &[], Verdict::Refused),
            (Code::OutOfRange, &[], Verdict::Refused),
            (Code::AlreadyExists, &[], Verdict::Refused),
            (Code::Unavailable, &[], Verdict::Unknown),
            (Code::DeadlineExceeded, &[], Verdict::Unknown),
            (Code::Internal, &[], Verdict::Unknown),
            (Code::Unknown, &[], Verdict::Unknown),
            (Code::Cancelled, &[], Verdict::Unknown),
            (
                Code::Unavailable,
                &[(OUTCOME_METADATA, OUTCOME_REJECTED)],
                Verdict::NotApplied,
            ),
            (
                Code::Unavailable,
                &[(OUTCOME_METADATA, "maybe")],
                Verdict::Unknown,
            ),
            (
                Code::Unavailable,
                &[(LEADER_METADATA, "2=127.0.0.1:7002")],
                Verdict::Unknown,
            ),
            (
                Code::InvalidArgument,
                &[(OUTCOME_METADATA, OUTCOME_REJECTED)],
                Verdict::Refused,
            ),
        ];
        for (code, metadata, expected) in cases {
            let status = status_with(code, metadata);
            assert_eq!(classify(&status), expected, "{code:?} with {metadata:?}");
        }
    }

    #[test]
    fn connect_errors_are_not_applied() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(classify(&status), Verdict::NotApplied);
        assert!(
            describe(&status).contains("refused"),
            "{}",
            describe(&status)
        );
    }

    #[test]
    fn leader_hints_parse() {
        let hint = |id, addr: &str| {
            Some(LeaderHint {
                node_id: id,
                api_addr: addr.to_string(),
            })
        };
        assert_eq!(
            parse_leader_hint("2=127.0.0.1:7002"),
            hint(2, "127.0.0.1:7002")
        );
        assert_eq!(parse_leader_hint(" 3 = host:1 "), hint(3, "host:1"));
        assert_eq!(
            parse_leader_hint("4=http://10.0.0.1:7001"),
            hint(4, "http://10.0.0.1:7001")
        );
        assert_eq!(parse_leader_hint(""), None);
        assert_eq!(parse_leader_hint("2"), None);
        assert_eq!(parse_leader_hint("0=127.0.0.1:7002"), None);
        assert_eq!(parse_leader_hint("x=127.0.0.1:7002"), None);
        assert_eq!(parse_leader_hint("2="), None);

        let status = status_with(Code::Unavailable, &[(LEADER_METADATA, "1=a:1")]);
        assert_eq!(leader_hint(&status), hint(1, "a:1"));
        assert_eq!(leader_hint(&Status::unavailable("x")), None);
    }

    #[test]
    fn compact_revision_reads_metadata() {
        let status = status_with(Code::OutOfRange, &[(COMPACT_REVISION_METADATA, "42")]);
        assert_eq!(compact_revision(&status), 42);
        assert_eq!(compact_revision(&Status::out_of_range("old")), 0);
    }

    #[test]
    fn failed_preconditions_are_told_apart() {
        let stale = status_with(
            Code::FailedPrecondition,
            &[(REASON_METADATA, REASON_LEASE_LOST)],
        );
        assert!(lease_lost(&stale));
        assert!(!node_removed(&stale));
        let removed = status_with(
            Code::FailedPrecondition,
            &[(REASON_METADATA, REASON_NODE_REMOVED)],
        );
        assert!(node_removed(&removed));
        assert!(!lease_lost(&removed));
        // The message is for people; only the metadata decides.
        let voted =
            Status::failed_precondition("already voted; node 3 has been removed from the cluster");
        assert!(!lease_lost(&voted) && !node_removed(&voted));
        let other_code = status_with(
            Code::InvalidArgument,
            &[(REASON_METADATA, REASON_LEASE_LOST)],
        );
        assert!(!lease_lost(&other_code));
        let lock = status_with(
            Code::FailedPrecondition,
            &[(REASON_METADATA, REASON_LOCK_LOST)],
        );
        assert!(lock_lost(&lock) && !lease_lost(&lock) && !node_removed(&lock));
        assert!(!lock_lost(&stale));
        assert!(!lock_lost(&Status::failed_precondition("lock lost")));
    }

    #[test]
    fn only_indeterminate_may_have_applied() {
        let rejected = Error::Rejected {
            code: Code::InvalidArgument,
            message: String::new(),
        };
        assert!(rejected.is_definitely_not_applied());
        assert_eq!(rejected.rejected_code(), Some(Code::InvalidArgument));
        let unknown = Error::Indeterminate {
            message: String::new(),
        };
        assert!(!unknown.is_definitely_not_applied());
        assert!(unknown.is_indeterminate());
    }
}
