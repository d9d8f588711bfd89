//! openraft's type configuration, the node address record, and the outbound peer network.

pub mod heartbeats;
pub mod metrics;
pub mod network;
pub mod scheduler;
pub mod snapshots;

use std::fmt;

use bincode::Options as _;
use serde::{Deserialize, Serialize};

use crate::state_machine::{Request, Response};

openraft::declare_raft_types!(
    /// Conclave's Raft types: application entries are [`Request`]s, answered by [`Response`]s.
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = NodeInfo,
);

pub type NodeId = u64;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachineStore>;

/// Where a member can be reached. Stored in the membership, so every node knows every address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Clients and agents.
    pub api_addr: String,
    /// Raft peers.
    pub peer_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "api={} peer={}", self.api_addr, self.peer_addr)
    }
}

/// Encodes a peer message or a stored record. bincode: compact, fast, and every node runs the
/// same build (see ARCHITECTURE.md, "Peer transport").
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec()
        .serialize(value)
        .expect("serializing to memory cannot fail")
}

/// Decodes bytes from disk or the network; never trusted to be well-formed, so a corrupt length
/// prefix fails instead of allocating without bound.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::io::Result<T> {
    codec()
        .deserialize(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Largest record the codec decodes: above the largest snapshot the store quotas allow.
const CODEC_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;

fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_limit(CODEC_BYTES_MAX)
}
