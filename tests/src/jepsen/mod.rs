//! Jepsen-style runs against real node processes: workloads recorded as histories while nemeses
//! kill, pause, partition and reconfigure the cluster, then checkers on the histories.
//!
//! - [`run`]: one run, phase by phase ([`run::RunConfig`] in, [`run::Results`] and a folder out).
//! - [`workload`]: the pluggable [`workload::Workload`]s (register, set, watch, tasks, decisions,
//!   locks, elections) and their checkers, pure functions of the history.
//! - [`nemesis`]: the faults and their heals, acting on [`nemesis::Control`].
//! - [`client`]: logical clients, one outstanding operation each, and the ok / fail / info rules.
//! - [`history`]: the run's history in Jepsen's shape, one monotonic clock, JSON lines.
//! - [`network`]: the network backends (userspace proxies; network namespaces).
//! - [`report`]: the self-contained `report.html`.

pub mod client;
pub mod history;
pub mod nemesis;
pub mod network;
pub mod report;
pub mod run;
pub mod workload;

pub use nemesis::Nemesis;
pub use run::{run, Results, RunConfig, RunVerdict};
