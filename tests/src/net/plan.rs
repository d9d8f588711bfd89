//! The network faults in force between nodes, as data: which directed pairs lose their bytes and
//! which are delayed. Pure, so the nemeses' topologies are unit tested without sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure};

use super::NodeId;

/// Faults between the nodes of one cluster. Every change adds to the faults in force; only
/// [`FaultPlan::heal`] removes them. A change with invalid arguments fails and changes nothing.
///
/// "From A to B" always means the bytes A sends to B, whichever node opened the connection: a
/// blackhole from A to B drops A's requests to B and A's responses to B's requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    nodes: BTreeSet<NodeId>,
    /// Directed pairs `(from, to)` whose bytes are dropped.
    blackholed: BTreeSet<(NodeId, NodeId)>,
    /// Directed pairs `(from, to)` whose bytes are delivered late; never zero.
    delays: BTreeMap<(NodeId, NodeId), Duration>,
}

impl FaultPlan {
    /// No faults between `nodes`.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            nodes: nodes.into_iter().collect(),
            ..Self::default()
        }
    }

    pub fn nodes(&self) -> &BTreeSet<NodeId> {
        &self.nodes
    }

    /// True when no fault is in force.
    pub fn is_healed(&self) -> bool {
        self.blackholed.is_empty() && self.delays.is_empty()
    }

    /// The directed pairs `(from, to)` whose bytes are dropped.
    pub fn blackholed(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.blackholed
    }

    pub fn is_blackholed(&self, from: NodeId, to: NodeId) -> bool {
        self.blackholed.contains(&(from, to))
    }

    /// The latency added to the bytes from `from` to `to` (zero when none).
    pub fn delay_of(&self, from: NodeId, to: NodeId) -> Duration {
        self.delays
            .get(&(from, to))
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: NodeId) -> anyhow::Result<()> {
        self.check_known(node)?;
        let others: Vec<NodeId> = self.nodes.iter().copied().filter(|n| *n != node).collect();
        self.cut_between(&[node], &others);
        Ok(())
    }

    /// Cuts every link between nodes of different groups, both ways. Every node must be in exactly
    /// one group.
    pub fn partition<G: AsRef<[NodeId]>>(&mut self, groups: &[G]) -> anyhow::Result<()> {
        let groups: Vec<&[NodeId]> = groups.iter().map(AsRef::as_ref).collect();
        self.check_cover(&groups)?;
        for (position, group) in groups.iter().enumerate() {
            for other in &groups[position + 1..] {
                self.cut_between(group, other);
            }
        }
        Ok(())
    }

    /// Cuts `a_side` off from `b_side`, both ways, while `bridge` still reaches both sides (Jepsen's
    /// bridge: a majority exists only through one node). Every node must be in exactly one of the
    /// three.
    pub fn bridge(
        &mut self,
        a_side: &[NodeId],
        bridge: NodeId,
        b_side: &[NodeId],
    ) -> anyhow::Result<()> {
        self.check_cover(&[a_side, &[bridge], b_side])?;
        self.cut_between(a_side, b_side);
        Ok(())
    }

    /// Drops the bytes from `from` to `to` only: `to` still reaches `from`, but gets no answer.
    pub fn one_way(&mut self, from: NodeId, to: NodeId) -> anyhow::Result<()> {
        self.check_pair(from, to)?;
        self.blackholed.insert((from, to));
        Ok(())
    }

    /// Delivers the bytes from `from` to `to` `delay` late (replacing an earlier delay of the
    /// pair; zero removes it).
    pub fn delay(&mut self, from: NodeId, to: NodeId, delay: Duration) -> anyhow::Result<()> {
        self.check_pair(from, to)?;
        if delay.is_zero() {
            self.delays.remove(&(from, to));
        } else {
            self.delays.insert((from, to), delay);
        }
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&mut self) {
        self.blackholed.clear();
        self.delays.clear();
    }

    fn cut_between(&mut self, group: &[NodeId], other: &[NodeId]) {
        for &a in group {
            for &b in other {
                self.blackholed.insert((a, b));
                self.blackholed.insert((b, a));
            }
        }
    }

    fn check_known(&self, node: NodeId) -> anyhow::Result<()> {
        ensure!(
            self.nodes.contains(&node),
            "node {node} is not one of {:?}",
            self.nodes
        );
        Ok(())
    }

    fn check_pair(&self, from: NodeId, to: NodeId) -> anyhow::Result<()> {
        self.check_known(from)?;
        self.check_known(to)?;
        ensure!(
            from != to,
            "a link joins two different nodes, not {from} to itself"
        );
        Ok(())
    }

    /// Every node in exactly one group.
    fn check_cover(&self, groups: &[&[NodeId]]) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        for &node in groups.iter().flat_map(|group| group.iter()) {
            self.check_known(node)?;
            if !seen.insert(node) {
                bail!("node {node} is in more than one group of {groups:?}");
            }
        }
        ensure!(
            seen == self.nodes,
            "groups {groups:?} leave out nodes {:?}",
            self.nodes.difference(&seen).collect::<Vec<_>>()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions of every listed pair, sorted.
    fn both_ways(pairs: &[(NodeId, NodeId)]) -> BTreeSet<(NodeId, NodeId)> {
        pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
    }

    #[test]
    fn isolating_one_of_three_cuts_its_four_directed_links() {
        let mut plan = FaultPlan::new(1..=3);
        plan.isolate(2).unwrap();
        assert_eq!(plan.blackholed(), &both_ways(&[(2, 1), (2, 3)]));
        assert!(!plan.is_blackholed(1, 3));
    }

    #[test]
    fn isolating_one_of_five_cuts_its_eight_directed_links() {
        let mut plan = FaultPlan::new(1..=5);
        plan.isolate(5).unwrap();
        assert_eq!(
            plan.blackholed(),
            &both_ways(&[(5, 1), (5, 2), (5, 3), (5, 4)])
        );
    }

    #[test]
    fn partition_of_three_into_one_and_two_equals_isolating_the_one() {
        let mut partitioned = FaultPlan::new(1..=3);
        partitioned.partition(&[&[1][..], &[2, 3]]).unwrap();
        let mut isolated = FaultPlan::new(1..=3);
        isolated.isolate(1).unwrap();
        assert_eq!(partitioned, isolated);
    }

    #[test]
    fn partition_of_five_cuts_exactly_the_links_crossing_groups() {
        let mut plan = FaultPlan::new(1..=5);
        plan.partition(&[vec![1, 2], vec![3, 4, 5]]).unwrap();
        let crossing: Vec<(NodeId, NodeId)> = [1, 2]
            .iter()
            .flat_map(|&a| [3, 4, 5].map(|b| (a, b)))
            .collect();
        assert_eq!(plan.blackholed(), &both_ways(&crossing));
        assert_eq!(plan.blackholed().len(), 12);
    }

    #[test]
    fn partition_of_five_into_three_groups() {
        let mut plan = FaultPlan::new(1..=5);
        plan.partition(&[&[1][..], &[2, 3], &[4, 5]]).unwrap();
        let expected = both_ways(&[
            (1, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (2, 4),
            (2, 5),
            (3, 4),
            (3, 5),
        ]);
        assert_eq!(plan.blackholed(), &expected);
        assert!(!plan.is_blackholed(2, 3) && !plan.is_blackholed(4, 5));
    }

    #[test]
    fn bridge_of_five_keeps_the_bridge_connected_to_both_sides() {
        let mut plan = FaultPlan::new(1..=5);
        plan.bridge(&[1, 2], 3, &[4, 5]).unwrap();
        assert_eq!(
            plan.blackholed(),
            &both_ways(&[(1, 4), (1, 5), (2, 4), (2, 5)])
        );
        for other in [1, 2, 4, 5] {
            assert!(!plan.is_blackholed(3, other) && !plan.is_blackholed(other, 3));
        }
    }

    #[test]
    fn bridge_of_three_cuts_only_the_two_ends() {
        let mut plan = FaultPlan::new(1..=3);
        plan.bridge(&[1], 2, &[3]).unwrap();
        assert_eq!(plan.blackholed(), &both_ways(&[(1, 3)]));
    }

    #[test]
    fn one_way_cuts_a_single_direction_and_faults_add_up_until_healed() {
        let mut plan = FaultPlan::new(1..=3);
        plan.one_way(1, 2).unwrap();
        assert_eq!(plan.blackholed(), &BTreeSet::from([(1, 2)]));
        plan.one_way(3, 1).unwrap();
        plan.delay(2, 3, Duration::from_millis(40)).unwrap();
        assert_eq!(plan.blackholed(), &BTreeSet::from([(1, 2), (3, 1)]));
        assert_eq!(plan.delay_of(2, 3), Duration::from_millis(40));
        assert_eq!(plan.delay_of(3, 2), Duration::ZERO);
        plan.heal();
        assert!(plan.is_healed());
        assert_eq!(plan, FaultPlan::new(1..=3));
    }

    #[test]
    fn invalid_topologies_are_rejected() {
        let plan = FaultPlan::new(1..=5);
        let rejects = |change: &dyn Fn(&mut FaultPlan) -> anyhow::Result<()>| {
            let mut changed = plan.clone();
            change(&mut changed).is_err()
        };
        assert!(rejects(&|p| p.isolate(6)));
        assert!(rejects(&|p| p.one_way(1, 1)));
        assert!(rejects(&|p| p.one_way(1, 9)));
        assert!(rejects(&|p| p.delay(0, 2, Duration::from_millis(1))));
        assert!(
            rejects(&|p| p.partition(&[&[1, 2][..], &[3, 4]])),
            "5 left out"
        );
        assert!(
            rejects(&|p| p.partition(&[&[1, 2][..], &[2, 3, 4, 5]])),
            "2 twice"
        );
        assert!(rejects(&|p| p.bridge(&[1, 2], 2, &[3, 4, 5])), "2 twice");
        assert!(rejects(&|p| p.bridge(&[1], 2, &[3, 4])), "5 left out");
    }
}
