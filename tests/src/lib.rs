//! Black-box cluster tests for Conclave: real `conclave-node` processes on 127.0.0.1, driven only
//! through the public gRPC API (the generated clients of `conclave-proto`).
//!
//! - [`cluster`]: [`cluster::TestCluster`], N node processes with their data and logs in one
//!   temporary directory; start, stop, kill, restart, initialize, membership, wait for a leader.
//! - [`node_process`]: one node process, always addressed by PID, killed on drop.
//! - [`clock`]: node wall clocks moved at run time (libfaketime), for the clock-skew nemesis.
//! - [`ports`]: free ports reserved across concurrently running test processes.
//! - [`writer`]: writes retried with their request id until acknowledged.
//! - [`read`]: reads of one key or of every key under a prefix.
//! - [`poll`]: waiting on a condition with a deadline.
//! - [`channel`]: gRPC clients for a node's API address.
//! - [`fleet`]: agents and tasks: a raw-API test agent, exec agent processes, retried task calls.
//! - [`checker`]: checkers of recorded histories (linearizability and friends).
//! - [`net`]: network faults between nodes (a userspace TCP proxy per directed pair).
//! - [`jepsen`]: Jepsen-style runs: workloads, nemeses, histories, checkers and reports.

pub mod channel;
pub mod checker;
pub mod clock;
pub mod cluster;
pub mod fleet;
pub mod jepsen;
pub mod net;
pub mod node_process;
pub mod poll;
pub mod ports;
pub mod read;
pub mod writer;

pub use cluster::{ClusterConfig, TestCluster};

/// Installs the tracing subscriber for test output, once per process. `RUST_LOG` filters it
/// (default `info`); output goes through the test harness's capture.
pub fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .with_thread_names(true)
            .with_ansi(false)
            .try_init();
    });
}
