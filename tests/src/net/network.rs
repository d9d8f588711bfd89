//! The proxy backend of [`NetworkFaults`]: one [`LinkProxy`] per directed pair of nodes.
//!
//! The proxy of the link (A, B) carries the connections A opens to B, so it sees bytes from A to B
//! going forward and bytes from B to A coming back. A fault "from A to B" therefore acts on two
//! proxies: forward on (A, B), for A's requests, and backward on (B, A), for A's responses.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{ensure, Context as _};

use super::plan::FaultPlan;
use super::proxy::{DirectionFaults, LinkCounters, LinkFaults, LinkProxy};
use super::{NetworkFaults, NodeId};

/// One proxy per directed pair of nodes. Start it before the nodes, and start node N with
/// [`ProxyNetwork::dial_args`]`(N)`: every Raft connection between the nodes then passes through
/// a proxy. The proxies stop when the network is dropped.
#[derive(Debug)]
pub struct ProxyNetwork {
    links: BTreeMap<(NodeId, NodeId), LinkProxy>,
    plan: Mutex<FaultPlan>,
}

impl ProxyNetwork {
    /// Starts a proxy for every ordered pair of the nodes in `peer_addrs` (node id to its real
    /// peer address), each on a port of 127.0.0.1 chosen by the kernel.
    pub async fn start(peer_addrs: &BTreeMap<NodeId, SocketAddr>) -> anyhow::Result<Self> {
        let mut links = BTreeMap::new();
        for &from in peer_addrs.keys() {
            for (&to, &target) in peer_addrs {
                if from != to {
                    let proxy = LinkProxy::start(target)
                        .await
                        .with_context(|| format!("start the proxy from node {from} to {to}"))?;
                    links.insert((from, to), proxy);
                }
            }
        }
        Ok(Self {
            links,
            plan: Mutex::new(FaultPlan::new(peer_addrs.keys().copied())),
        })
    }

    /// The proxy carrying the connections `from` opens to `to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<&LinkProxy> {
        self.links.get(&(from, to))
    }

    /// Every proxy, by `(from, to)`.
    pub fn links(&self) -> &BTreeMap<(NodeId, NodeId), LinkProxy> {
        &self.links
    }

    /// The flags that make `node` dial every peer through its proxy:
    /// `--peer-dial <peer>=<proxy address>` for each other node.
    pub fn dial_args(&self, node: NodeId) -> Vec<String> {
        self.links
            .iter()
            .filter(|((from, _), _)| *from == node)
            .flat_map(|((_, to), proxy)| {
                [
                    "--peer-dial".to_string(),
                    format!("{to}={}", proxy.listen_addr()),
                ]
            })
            .collect()
    }

    /// Every link's counters, by `(from, to)`.
    pub fn counters(&self) -> BTreeMap<(NodeId, NodeId), LinkCounters> {
        self.links
            .iter()
            .map(|(pair, proxy)| (*pair, proxy.counters()))
            .collect()
    }

    /// Closes every connection of every link, so the nodes reconnect at once; the faults stay.
    pub fn reset_connections(&self) {
        for proxy in self.links.values() {
            proxy.reset_connections();
        }
    }

    /// Stops every proxy: once this returns, their ports and connections are closed.
    pub async fn shutdown(&self) {
        for proxy in self.links.values() {
            proxy.shutdown().await;
        }
    }

    fn locked_plan(&self) -> MutexGuard<'_, FaultPlan> {
        // The plan is replaced whole, never left half-changed, so a poisoned lock holds a valid one.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_now<F>(&self, change: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()>,
    {
        let mut plan = self.locked_plan();
        let mut changed = plan.clone();
        change(&mut changed)?;
        ensure!(
            changed.nodes() == plan.nodes(),
            "a fault change may not change the set of nodes"
        );
        // Applied under the lock, so concurrent changes reach the proxies in the order of the plan.
        for (&(from, to), proxy) in &self.links {
            let faults = link_faults(&changed, from, to);
            if proxy.faults() != faults {
                proxy.set_faults(faults);
            }
        }
        *plan = changed;
        Ok(())
    }
}

impl NetworkFaults for ProxyNetwork {
    fn update<F>(&self, change: F) -> impl Future<Output = anyhow::Result<()>> + Send
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()> + Send,
    {
        // A proxy applies a fault synchronously; there is nothing to wait for.
        std::future::ready(self.update_now(change))
    }

    fn plan(&self) -> FaultPlan {
        self.locked_plan().clone()
    }
}

/// What the proxy of the connections `from` opens to `to` must do under `plan`: its forward bytes
/// go from `from` to `to`, its backward bytes from `to` to `from`.
pub fn link_faults(plan: &FaultPlan, from: NodeId, to: NodeId) -> LinkFaults {
    let direction = |sender, receiver| DirectionFaults {
        blackhole: plan.is_blackholed(sender, receiver),
        delay: plan.delay_of(sender, receiver),
    };
    LinkFaults {
        forward: direction(from, to),
        backward: direction(to, from),
        refuse: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;

    use super::*;
    use crate::net::loopback::{echo, echo_server, expect_silence, PROMPTLY};
    use crate::net::proxy::Fault;
    use crate::poll::eventually;

    async fn connect(network: &ProxyNetwork, from: NodeId, to: NodeId) -> TcpStream {
        let proxy = network.link(from, to).expect("a link between two nodes");
        TcpStream::connect(proxy.listen_addr()).await.unwrap()
    }

    async fn link_counters_reach(
        network: &ProxyNetwork,
        (from, to): (NodeId, NodeId),
        condition: impl Fn(&LinkCounters) -> bool,
    ) {
        let proxy = network.link(from, to).unwrap();
        eventually("link counters", PROMPTLY, || async {
            let counters = proxy.counters();
            ensure!(condition(&counters), "{from}->{to}: {counters:?}");
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Three "nodes" that are echo servers: a node answers every request with its bytes.
    #[tokio::test]
    async fn faults_reach_the_right_proxies_and_heal_restores_traffic() {
        let mut peer_addrs = BTreeMap::new();
        let mut _servers = Vec::new();
        for node in 1..=3 {
            let (addr, server) = echo_server().await;
            peer_addrs.insert(node, addr);
            _servers.push(server);
        }
        let network = Arc::new(ProxyNetwork::start(&peer_addrs).await.unwrap());
        assert_eq!(network.links().len(), 6);
        assert_eq!(
            network.dial_args(1),
            [
                "--peer-dial".to_string(),
                format!("2={}", network.link(1, 2).unwrap().listen_addr()),
                "--peer-dial".to_string(),
                format!("3={}", network.link(1, 3).unwrap().listen_addr()),
            ]
        );

        tracing::info!("one way 1->2: 1's requests to 2 and 1's responses to 2 are lost");
        network.one_way(1, 2).await.unwrap();
        let mut from_1_to_2 = connect(&network, 1, 2).await;
        from_1_to_2.write_all(b"ping").await.unwrap();
        link_counters_reach(&network, (1, 2), |c| c.forward.bytes_dropped == 4).await;
        expect_silence(&mut from_1_to_2).await.unwrap();
        let mut from_2_to_1 = connect(&network, 2, 1).await;
        from_2_to_1.write_all(b"ping").await.unwrap();
        link_counters_reach(&network, (2, 1), |c| {
            c.forward.bytes_delivered == 4 && c.backward.bytes_dropped == 4
        })
        .await;
        expect_silence(&mut from_2_to_1).await.unwrap();
        echo(&mut connect(&network, 1, 3).await, b"ping")
            .await
            .unwrap();
        echo(&mut connect(&network, 3, 2).await, b"ping")
            .await
            .unwrap();

        tracing::info!("an invalid partition fails and changes nothing");
        let before = network.plan();
        assert!(network.partition(&[&[1], &[2]]).await.is_err());
        assert_eq!(network.plan(), before);

        tracing::info!("isolate 3 from a spawned nemesis: every link touching 3 is cut both ways");
        let nemesis_network = Arc::clone(&network);
        tokio::spawn(async move { nemesis_network.isolate(3).await })
            .await
            .unwrap()
            .unwrap();
        let both = LinkFaults::from(Fault::Blackhole {
            direction: crate::net::Direction::Both,
        });
        for pair in [(1, 3), (3, 1), (2, 3), (3, 2)] {
            assert_eq!(network.link(pair.0, pair.1).unwrap().faults(), both);
        }

        tracing::info!("heal: every link is clear and new connections carry traffic");
        network.heal_all().await.unwrap();
        assert!(network.plan().is_healed());
        for proxy in network.links().values() {
            assert_eq!(proxy.faults(), LinkFaults::default());
        }
        for (from, to) in [(1, 2), (2, 1), (3, 1)] {
            echo(&mut connect(&network, from, to).await, b"ping")
                .await
                .unwrap();
        }
        network.shutdown().await;
    }

    #[test]
    fn one_way_acts_on_the_requests_of_one_link_and_the_responses_of_the_other() {
        let mut plan = FaultPlan::new(1..=3);
        plan.one_way(1, 2).unwrap();
        plan.delay(2, 1, Duration::from_millis(30)).unwrap();
        let forward_only = link_faults(&plan, 1, 2);
        assert!(forward_only.forward.blackhole && !forward_only.backward.blackhole);
        assert_eq!(forward_only.backward.delay, Duration::from_millis(30));
        let backward_only = link_faults(&plan, 2, 1);
        assert!(!backward_only.forward.blackhole && backward_only.backward.blackhole);
        assert_eq!(backward_only.forward.delay, Duration::from_millis(30));
        assert_eq!(link_faults(&plan, 1, 3), LinkFaults::default());
        assert_eq!(link_faults(&plan, 3, 2), LinkFaults::default());
    }
}
