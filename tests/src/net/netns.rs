//! The network-namespace backend of [`NetworkFaults`]: one namespace per node, each joined by a
//! veth pair to a bridge that lives in a namespace of its own, and packet filters for the faults.
//! Needs root, `ip` (iproute2) and `iptables`.
//!
//! ```text
//!   root namespace (the test process, its clients)      10.A.B.254 ─┐
//!   <name>-br:  bridge br0 ─┬─ veth ── <name>-n1: 10.A.B.1 (node 1)  │ veth
//!                           ├─ veth ── <name>-n2: 10.A.B.2 (node 2)  │
//!                           ├─ ...                                   │
//!                           └─ veth ─────────────────────────────────┘
//! ```
//!
//! Unlike the proxies, this cuts everything between nodes, including requests a follower forwards
//! to the leader's API address, and TCP sees a real loss (retransmissions, then recovery), not a
//! closed connection. "From A to B" is a DROP rule in A's OUTPUT chain for B's address: A's
//! requests to B and A's answers to B are lost. The test process (10.A.B.254) is never cut off.
//!
//! Counting: every node's OUTPUT chain has one rule per peer without a target, below the DROP
//! rules, so its byte counter is what was delivered; DROP rules count what was dropped, and their
//! counts are kept when a heal removes them.
//!
//! Delays need the `netem` queueing discipline, which not every kernel has: [`FaultPlan::delay`]
//! changes fail here when it is missing.
//!
//! Namespaces are named `conclave-<pid>-<n>-...` and removed by [`NamespaceNetwork::destroy`] (also
//! on drop). Namespaces of dead test processes are removed when a new network is created.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{bail, Context as _};

use super::plan::FaultPlan;
use super::{NetworkFaults, NodeId};

/// Bytes one node sent another, as the packet filters counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairCounters {
    pub bytes_delivered: u64,
    pub bytes_dropped: u64,
}

/// Networks created by this process, for unique names.
static CREATED: AtomicU32 = AtomicU32::new(0);

/// The namespaces, links and rules of one cluster.
#[derive(Debug)]
pub struct NamespaceNetwork {
    name: String,
    bridge_namespace: String,
    host_link: String,
    host_ip: Ipv4Addr,
    nodes: BTreeMap<NodeId, Ipv4Addr>,
    plan: Mutex<FaultPlan>,
    /// Bytes counted by DROP rules already removed.
    dropped_before: Mutex<BTreeMap<(NodeId, NodeId), u64>>,
    destroyed: AtomicBool,
}

impl NamespaceNetwork {
    /// Creates the bridge namespace, one namespace per node with its address, and the link from
    /// this (the root) namespace. Fails without root or without `ip`/`iptables`.
    pub fn create(nodes: impl IntoIterator<Item = NodeId>) -> anyhow::Result<Self> {
        let nodes: Vec<NodeId> = nodes.into_iter().collect();
        anyhow::ensure!(
            nodes.iter().all(|node| (1..=250).contains(node)),
            "node ids must be 1..=250 to be addresses"
        );
        run(&["iptables", "--version"]).context("the netns backend needs iptables")?;
        remove_stale_namespaces();
        let number = CREATED.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("conclave-{pid}-{number}");
        // Interface names are at most 15 bytes and only the host link's lives in the root
        // namespace for good; the others are moved into namespaces right after creation.
        let tag = format!(
            "{:05x}",
            (pid.wrapping_mul(31).wrapping_add(number)) & 0xf_ffff
        );
        let subnet = free_subnet(pid, number)?;
        let address = |host: u8| Ipv4Addr::new(10, subnet.0, subnet.1, host);
        let mut network = Self {
            bridge_namespace: format!("{name}-br"),
            host_link: format!("cj{tag}h"),
            host_ip: address(254),
            nodes: nodes
                .iter()
                .map(|&node| (node, address(node as u8)))
                .collect(),
            plan: Mutex::new(FaultPlan::new(nodes.iter().copied())),
            dropped_before: Mutex::new(BTreeMap::new()),
            destroyed: AtomicBool::new(false),
            name,
        };
        if let Err(error) = network.build(&tag) {
            network.destroy();
            return Err(error);
        }
        tracing::info!(name = %network.name, host = %network.host_ip, "network namespaces created");
        Ok(network)
    }

    fn build(&mut self, tag: &str) -> anyhow::Result<()> {
        let bridge = self.bridge_namespace.clone();
        run(&["ip", "netns", "add", &bridge])?;
        in_namespace(&bridge, &["ip", "link", "set", "lo", "up"])?;
        in_namespace(&bridge, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_namespace(&bridge, &["ip", "link", "set", "br0", "up"])?;
        for (&node, ip) in &self.nodes {
            let namespace = self.namespace(node);
            let (outer, inner) = (format!("cj{tag}a{node}"), format!("cj{tag}b{node}"));
            run(&["ip", "netns", "add", &namespace])?;
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &outer, "netns", &bridge])?;
            run(&["ip", "link", "set", &inner, "netns", &namespace])?;
            in_namespace(&bridge, &["ip", "link", "set", &outer, "master", "br0"])?;
            in_namespace(&bridge, &["ip", "link", "set", &outer, "up"])?;
            in_namespace(&namespace, &["ip", "link", "set", &inner, "name", "eth0"])?;
            in_namespace(
                &namespace,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            in_namespace(&namespace, &["ip", "link", "set", "eth0", "up"])?;
            in_namespace(&namespace, &["ip", "link", "set", "lo", "up"])?;
            for (&peer, peer_ip) in &self.nodes {
                if peer != node {
                    // A counting rule: no target, so it only counts what passed the DROP rules.
                    in_namespace(
                        &namespace,
                        &["iptables", "-A", "OUTPUT", "-d", &peer_ip.to_string()],
                    )?;
                }
            }
        }
        let host_peer = format!("cj{tag}g");
        run(&[
            "ip",
            "link",
            "add",
            &self.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &host_peer,
        ])?;
        run(&["ip", "link", "set", &host_peer, "netns", &bridge])?;
        in_namespace(&bridge, &["ip", "link", "set", &host_peer, "master", "br0"])?;
        in_namespace(&bridge, &["ip", "link", "set", &host_peer, "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.host_ip),
            "dev",
            &self.host_link,
        ])?;
        run(&["ip", "link", "set", &self.host_link, "up"])?;
        Ok(())
    }

    /// The namespace node `node` runs in.
    pub fn namespace(&self, node: NodeId) -> String {
        format!("{}-n{node}", self.name)
    }

    /// The node's address inside its namespace.
    pub fn ip(&self, node: NodeId) -> Ipv4Addr {
        self.nodes[&node]
    }

    /// The command prefix that runs a program in the node's namespace: `ip netns exec <ns>`,
    /// which execs the program in place, so the PID spawned is the program's.
    pub fn launcher(&self, node: NodeId) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace(node),
        ]
    }

    /// Bytes per directed pair `(from, to)` since the network was created.
    pub fn counters(&self) -> BTreeMap<(NodeId, NodeId), PairCounters> {
        let dropped_before = self.dropped_before();
        let mut counters = BTreeMap::new();
        for &from in self.nodes.keys() {
            let rules = self.output_rules(from).unwrap_or_default();
            for (&to, ip) in &self.nodes {
                if to == from {
                    continue;
                }
                let mut pair = PairCounters {
                    bytes_dropped: dropped_before.get(&(from, to)).copied().unwrap_or(0),
                    ..PairCounters::default()
                };
                for rule in rules.iter().filter(|rule| rule.destination == *ip) {
                    if rule.drop {
                        pair.bytes_dropped += rule.bytes;
                    } else {
                        pair.bytes_delivered += rule.bytes;
                    }
                }
                counters.insert((from, to), pair);
            }
        }
        counters
    }

    /// Removes every namespace and link; idempotent. Processes still running in a namespace keep
    /// it alive (without a name) until they exit.
    pub fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::SeqCst) {
            return;
        }
        for &node in self.nodes.keys() {
            let _ = run(&["ip", "netns", "del", &self.namespace(node)]);
        }
        let _ = run(&["ip", "link", "del", &self.host_link]);
        let _ = run(&["ip", "netns", "del", &self.bridge_namespace]);
        tracing::info!(name = %self.name, "network namespaces removed");
    }

    fn dropped_before(&self) -> MutexGuard<'_, BTreeMap<(NodeId, NodeId), u64>> {
        self.dropped_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn locked_plan(&self) -> MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn output_rules(&self, node: NodeId) -> anyhow::Result<Vec<Rule>> {
        let listing = in_namespace(
            &self.namespace(node),
            &["iptables", "-L", "OUTPUT", "-v", "-x", "-n"],
        )?;
        Ok(parse_rules(&listing))
    }

    fn update_now<F>(&self, change: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()>,
    {
        let mut plan = self.locked_plan();
        let mut changed = plan.clone();
        change(&mut changed)?;
        anyhow::ensure!(
            changed.nodes() == plan.nodes(),
            "a fault change may not change the set of nodes"
        );
        for &from in self.nodes.keys() {
            for (&to, ip) in &self.nodes {
                if from == to {
                    continue;
                }
                if changed.delay_of(from, to) != plan.delay_of(from, to) {
                    bail!(
                        "the netns backend cannot delay links: this kernel has no netem queueing \
                         discipline here (use the proxy backend for delays)"
                    );
                }
                let (was, will) = (
                    plan.is_blackholed(from, to),
                    changed.is_blackholed(from, to),
                );
                let namespace = self.namespace(from);
                let destination = ip.to_string();
                if will && !was {
                    in_namespace(
                        &namespace,
                        &[
                            "iptables",
                            "-I",
                            "OUTPUT",
                            "1",
                            "-d",
                            &destination,
                            "-j",
                            "DROP",
                        ],
                    )?;
                } else if was && !will {
                    let dropped: u64 = self
                        .output_rules(from)?
                        .iter()
                        .filter(|rule| rule.drop && rule.destination == *ip)
                        .map(|rule| rule.bytes)
                        .sum();
                    *self.dropped_before().entry((from, to)).or_default() += dropped;
                    in_namespace(
                        &namespace,
                        &["iptables", "-D", "OUTPUT", "-d", &destination, "-j", "DROP"],
                    )?;
                }
            }
        }
        *plan = changed;
        Ok(())
    }
}

impl Drop for NamespaceNetwork {
    fn drop(&mut self) {
        self.destroy();
    }
}

impl NetworkFaults for NamespaceNetwork {
    fn update<F>(&self, change: F) -> impl Future<Output = anyhow::Result<()>> + Send
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()> + Send,
    {
        // iptables runs to completion before this returns: the rules are in force.
        std::future::ready(self.update_now(change))
    }

    fn plan(&self) -> FaultPlan {
        self.locked_plan().clone()
    }
}

/// One line of `iptables -L OUTPUT -v -x -n`.
#[derive(Debug, PartialEq, Eq)]
struct Rule {
    bytes: u64,
    drop: bool,
    destination: Ipv4Addr,
}

/// Parses the listing: `pkts bytes [target] prot opt in out source destination`. Rules without a
/// target have one column fewer.
fn parse_rules(listing: &str) -> Vec<Rule> {
    listing
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let bytes = columns.get(1)?.parse().ok()?;
            let drop = columns.get(2) == Some(&"DROP");
            let destination = columns.last()?.parse().ok()?;
            Some(Rule {
                bytes,
                drop,
                destination,
            })
        })
        .collect()
}

/// A /24 under 10.0.0.0/8 that no interface of the root namespace uses.
fn free_subnet(pid: u32, number: u32) -> anyhow::Result<(u8, u8)> {
    let addresses = run(&["ip", "-o", "-4", "addr", "show"])?;
    for attempt in 0..64_u32 {
        let seed = pid.wrapping_mul(7919).wrapping_add(number * 64 + attempt);
        let subnet = (200 + (seed % 50) as u8, ((seed / 50) % 250) as u8);
        if !addresses.contains(&format!(" 10.{}.{}.", subnet.0, subnet.1)) {
            return Ok(subnet);
        }
    }
    bail!("no free 10.x.y.0/24 subnet found")
}

/// Removes `conclave-<pid>-...` namespaces whose process is gone (a run killed before cleanup).
fn remove_stale_namespaces() {
    let Ok(listing) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in listing.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("conclave-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(namespace = name, "removing a stale network namespace");
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

fn in_namespace(namespace: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["ip", "netns", "exec", namespace];
    full.extend_from_slice(command);
    run(&full)
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(command: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", command.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            command.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_rows_parse_with_and_without_a_target() {
        let listing = "Chain OUTPUT (policy ACCEPT 10 packets, 600 bytes)\n\
            \x20   pkts      bytes target     prot opt in     out     source               destination\n\
            \x20     3      180 DROP       0    --  *      *       0.0.0.0/0            10.200.1.2\n\
            \x20    12     2048            0    --  *      *       0.0.0.0/0            10.200.1.2\n\
            \x20     0        0            0    --  *      *       0.0.0.0/0            10.200.1.3\n";
        let rules = parse_rules(listing);
        let ip = |last| Ipv4Addr::new(10, 200, 1, last);
        assert_eq!(
            rules,
            vec![
                Rule {
                    bytes: 180,
                    drop: true,
                    destination: ip(2)
                },
                Rule {
                    bytes: 2048,
                    drop: false,
                    destination: ip(2)
                },
                Rule {
                    bytes: 0,
                    drop: false,
                    destination: ip(3)
                },
            ]
        );
    }
}
