//! Conclave's wire contract: the generated gRPC messages, clients and servers.
//!
//! The `.proto` files in `proto/conclave/v1/` are the API reference.

/// Version 1 of the API (`package conclave.v1`).
pub mod v1 {
    tonic::include_proto!("conclave.v1");
}

/// Metadata key carrying the last known leader as `"<id>=<api address>"`.
pub const LEADER_METADATA: &str = "conclave-leader";
/// Metadata key set to `"rejected"` when a failed write was provably not proposed.
pub const OUTCOME_METADATA: &str = "conclave-outcome";
/// Value of [`OUTCOME_METADATA`] for writes that were provably not applied.
pub const OUTCOME_REJECTED: &str = "rejected";
/// Metadata key with the oldest revision a watch can still start from.
pub const COMPACT_REVISION_METADATA: &str = "conclave-compact-revision";
/// Metadata key set by a node that forwards a request to the leader, so it is not forwarded again.
pub const FORWARDED_METADATA: &str = "conclave-forwarded";

/// The request limits of the wire contract (kv.proto lists them). Every node enforces them, and
/// clients may check them before sending.
pub mod limits {
    /// Longest key, in bytes.
    pub const MAX_KEY_BYTES: usize = 4096;
    /// Largest value, in bytes.
    pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
    /// Most compares in one transaction.
    pub const MAX_TXN_COMPARES: usize = 128;
    /// Most puts and deletes in one transaction.
    pub const MAX_TXN_OPS: usize = 128;
    /// Largest encoded request, in bytes.
    pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
    /// Most keys in one page of a list.
    pub const MAX_LIST_LIMIT: u32 = 1000;
}
