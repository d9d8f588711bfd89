//! Checkers for operation histories recorded under faults: pure functions of the history.
//!
//! - [`history`]: the history model, in Jepsen's shape: [`Op`]s (invoke, then ok / fail / info)
//!   per process, paired into [`Operation`]s; JSON lines on disk.
//! - [`model`]: sequential specifications ([`Model`]), and the one the register workload needs,
//!   [`Register`] (read, write, compare-and-swap on `Option<u64>`).
//! - [`linearizable`]: the linearizability checker (Wing & Gong's search with Lowe's memoization,
//!   as in Porcupine), per key, within a time budget: [`check`] gives a [`Report`] whose
//!   [`Verdict`] is valid, invalid (with a [`Counterexample`]) or unknown (budget exhausted).
//!
//! What the completions mean, which the checker relies on: `ok` happened; `fail` provably did not
//! happen; `info` is unknown, so the operation may take effect at any time after its invocation, or
//! never.

pub mod history;
pub mod linearizable;
pub mod model;

pub use history::{Function, History, Op, OpKind, Operation, Outcome, Value};
pub use linearizable::{check, check_operations, Counterexample, Report, Verdict};
pub use model::{Model, Register, RegisterInput, RegisterOutput};
