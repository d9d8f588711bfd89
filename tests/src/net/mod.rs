//! Network fault injection between nodes on loopback.
//!
//! - [`proxy`]: [`LinkProxy`], a userspace TCP proxy for one directed link with faults set at run
//!   time.

#[cfg(test)]
mod loopback;
pub mod proxy;

pub use proxy::{Direction, Fault, LinkCounters, LinkFaults, LinkProxy};
