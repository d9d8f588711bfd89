//! Agents and tasks on three real nodes: exec agents, agent and leader crashes, fencing,
//! decisions, cancellation and resumed task watches, driven through the public Tasks, Agents and
//! Decisions APIs.
//!
//! Run `cargo build --workspace --bins` first: the tests spawn `target/debug/conclave-node` and,
//! for the exec agents, `target/debug/conclave`.

mod agent_crash;
mod bad_input;
mod cancel;
mod decision;
mod delegation;
mod examples;
mod exec_agents;
mod leader_crash;
mod transaction;
mod watch_resume;

use std::time::Duration;

use conclave_proto::v1::{Task, TaskState};

/// Bound on a whole queue draining: liveness, not performance.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one push reaching an agent's stream.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub fn state(task: &Task) -> TaskState {
    TaskState::try_from(task.state).unwrap_or(TaskState::Unspecified)
}

/// True while process `pid` runs (a zombie, dead but not yet reaped, does not count).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
