//! Checkers for operation histories recorded under faults: pure functions of the history.
//!
//! - [`history`]: the history model, in Jepsen's shape: [`Op`]s (invoke, then ok / fail / info)
//!   per process, paired into [`Operation`]s; JSON lines on disk.

pub mod history;

pub use history::{Function, History, Op, OpKind, Operation, Outcome, Value};
