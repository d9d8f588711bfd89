//! Network fault injection between nodes on loopback.
//!
//! - [`plan`]: [`FaultPlan`], the faults in force as data (which directed pairs are blackholed or
//!   delayed) and the nemeses' topologies: isolate, partition, bridge, one way, delay.
//! - [`proxy`]: [`LinkProxy`], a userspace TCP proxy for one directed link with faults set at run
//!   time.
//! - [`network`]: [`ProxyNetwork`], one proxy per directed pair of nodes, the first backend of
//!   [`NetworkFaults`].
//! - [`netns`]: [`NamespaceNetwork`], one network namespace per node and packet filters, the
//!   second backend (root only).
//!
//! The nemeses are written against [`NetworkFaults`], so another backend (network namespaces and
//! packet filters, say) can take the proxies' place without changing them.

use std::future::Future;
use std::time::Duration;

#[cfg(test)]
mod loopback;
pub mod netns;
pub mod network;
pub mod plan;
pub mod proxy;

pub use netns::NamespaceNetwork;
pub use network::ProxyNetwork;
pub use plan::FaultPlan;
pub use proxy::{Direction, Fault, LinkCounters, LinkFaults, LinkProxy};

/// A node id, as in the cluster's membership.
pub type NodeId = u64;

/// Network faults between the nodes of one cluster. Every change adds to the faults in force
/// (see [`FaultPlan`]) and is in effect, for open and new connections, when its future completes;
/// [`NetworkFaults::heal_all`] removes them all.
pub trait NetworkFaults {
    /// Applies `change` to the faults in force, atomically with respect to other changes: the
    /// faults stay as they were when `change` fails.
    fn update<F>(&self, change: F) -> impl Future<Output = anyhow::Result<()>> + Send
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()> + Send;

    /// The faults in force.
    fn plan(&self) -> FaultPlan;

    /// Cuts `node` off from every other node, both ways.
    fn isolate(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.update(move |plan| plan.isolate(node))
    }

    /// Cuts every link between nodes of different groups; every node is in exactly one group.
    fn partition(&self, groups: &[&[NodeId]]) -> impl Future<Output = anyhow::Result<()>> + Send {
        let groups: Vec<Vec<NodeId>> = groups.iter().map(|group| group.to_vec()).collect();
        self.update(move |plan| plan.partition(&groups))
    }

    /// Cuts `a_side` off from `b_side` while `bridge` reaches both.
    fn bridge(
        &self,
        a_side: &[NodeId],
        bridge: NodeId,
        b_side: &[NodeId],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let (a_side, b_side) = (a_side.to_vec(), b_side.to_vec());
        self.update(move |plan| plan.bridge(&a_side, bridge, &b_side))
    }

    /// Drops the bytes from `from` to `to` only.
    fn one_way(&self, from: NodeId, to: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.update(move |plan| plan.one_way(from, to))
    }

    /// Delivers the bytes from `from` to `to` `delay` late (zero removes the delay).
    fn delay(
        &self,
        from: NodeId,
        to: NodeId,
        delay: Duration,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.update(move |plan| plan.delay(from, to, delay))
    }

    /// Removes every fault.
    fn heal_all(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.update(|plan| {
            plan.heal();
            Ok(())
        })
    }
}
