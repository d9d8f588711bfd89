//! Black-box cluster scenarios: each test starts its own cluster of `conclave-node` processes and
//! talks to it only through the public gRPC API. One test binary keeps link time down; its tests
//! run in parallel threads, with at most two clusters at a time (see `TestCluster::start`).
//!
//! Run `cargo build --workspace --bins` first: the tests spawn `target/debug/conclave-node`.

mod bad_input;
mod barriers;
mod compare_and_swap;
mod election;
mod forward_pause;
mod leader_failure;
mod linearizable_read;
mod locks;
mod membership;
mod replication;
mod request_id;
mod restart;
mod snapshot;
mod watch;
mod workflows;

use std::time::Duration;

/// Bound on getting one write acknowledged, retries included: liveness, not performance.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one read, retries of transient errors included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a restarted or new node catching up with the leader.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// The key `prefix` followed by `index`, zero-padded so that byte order is numeric order.
pub fn key(prefix: &str, index: usize) -> Vec<u8> {
    format!("{prefix}{index:05}").into_bytes()
}

/// The value written to [`key`]`(prefix, index)` by the tests that write many keys.
pub fn value(prefix: &str, index: usize) -> Vec<u8> {
    format!("value of {prefix}{index:05}").into_bytes()
}

/// Bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
