//! The network-namespace backend (placeholder until implemented): one namespace per node, veth
//! pairs to a bridge, iptables DROP rules for faults.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::network::Traffic;
use crate::net::FaultPlan;

/// Not constructible yet: selecting the backend fails before a run starts.
pub struct NamespaceNetwork {
    never: Infallible,
}

impl NamespaceNetwork {
    pub async fn update<F>(&self, _change: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()> + Send,
    {
        match self.never {}
    }

    pub fn plan(&self) -> FaultPlan {
        match self.never {}
    }

    pub fn traffic(&self) -> BTreeMap<(u64, u64), Traffic> {
        match self.never {}
    }

    pub fn shutdown(&self) {
        match self.never {}
    }
}
