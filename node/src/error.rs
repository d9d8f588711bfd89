//! The node's error type. `grpc/status.rs` is the one table that turns it into a gRPC status.

use crate::raft::NodeId;

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
    /// The node cannot go on (storage failure); it stops serving.
    #[error("fatal: {0}")]
    Fatal(String),
}

pub type Result<T> = std::result::Result<T, Error>;
