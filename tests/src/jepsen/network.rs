//! The network backend of a run: the userspace proxies (default), or network namespaces with
//! packet filters (`CONCLAVE_JEPSEN_NET=netns`, root only). Both take the same [`FaultPlan`]
//! changes; both count, per directed pair of nodes, the bytes delivered and dropped, which is how
//! a nemesis proves its fault took effect.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::net::{FaultPlan, NamespaceNetwork, NetworkFaults as _, ProxyNetwork};

/// Which backend carries the traffic between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Proxy,
    Netns,
}

impl FromStr for Backend {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "proxy" | "" => Ok(Backend::Proxy),
            "netns" => Ok(Backend::Netns),
            other => anyhow::bail!("no network backend {other:?}: proxy or netns"),
        }
    }
}

/// Bytes from one node to another since the network started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub delivered: u64,
    pub dropped: u64,
}

/// The network between the nodes of a run.
pub enum Network {
    Proxy(ProxyNetwork),
    Netns(NamespaceNetwork),
}

impl Network {
    pub fn backend(&self) -> Backend {
        match self {
            Network::Proxy(_) => Backend::Proxy,
            Network::Netns(_) => Backend::Netns,
        }
    }

    /// Applies `change` to the faults in force (see [`crate::net::NetworkFaults::update`]).
    pub async fn update<F>(&self, change: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()> + Send,
    {
        match self {
            Network::Proxy(network) => network.update(change).await,
            Network::Netns(network) => network.update(change).await,
        }
    }

    pub fn plan(&self) -> FaultPlan {
        match self {
            Network::Proxy(network) => network.plan(),
            Network::Netns(network) => network.plan(),
        }
    }

    pub async fn heal_all(&self) -> anyhow::Result<()> {
        self.update(|plan| {
            plan.heal();
            Ok(())
        })
        .await
    }

    /// Bytes per directed pair `(sender, receiver)`.
    pub fn traffic(&self) -> BTreeMap<(u64, u64), Traffic> {
        match self {
            Network::Proxy(network) => {
                let counters = network.counters();
                let mut traffic: BTreeMap<(u64, u64), Traffic> = BTreeMap::new();
                for (&(from, to), link) in &counters {
                    // Connections `from` opens to `to` carry from -> to forward, to -> from back.
                    let forward = traffic.entry((from, to)).or_default();
                    forward.delivered += link.forward.bytes_delivered;
                    forward.dropped += link.forward.bytes_dropped;
                    let backward = traffic.entry((to, from)).or_default();
                    backward.delivered += link.backward.bytes_delivered;
                    backward.dropped += link.backward.bytes_dropped;
                }
                traffic
            }
            Network::Netns(network) => network
                .counters()
                .into_iter()
                .map(|(pair, counters)| {
                    let traffic = Traffic {
                        delivered: counters.bytes_delivered,
                        dropped: counters.bytes_dropped,
                    };
                    (pair, traffic)
                })
                .collect(),
        }
    }

    pub async fn shutdown(&self) {
        match self {
            Network::Proxy(network) => network.shutdown().await,
            Network::Netns(network) => network.destroy(),
        }
    }
}
