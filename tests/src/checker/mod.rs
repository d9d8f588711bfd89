//! Checkers for operation histories recorded under faults: pure functions of the history.
//!
//! - [`history`]: the history model, in Jepsen's shape: [`Op`]s (invoke, then ok / fail / info)
//!   per process, paired into [`Operation`]s; JSON lines on disk.
//! - [`model`]: sequential specifications ([`Model`]), and the one the register workload needs,
//!   [`Register`] (read, write, compare-and-swap on `Option<u64>`).

pub mod history;
pub mod model;

pub use history::{Function, History, Op, OpKind, Operation, Outcome, Value};
pub use model::{Model, Register, RegisterInput, RegisterOutput};
