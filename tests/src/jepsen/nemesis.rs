//! Nemeses: the faults a run injects, each with its heal, and the record of what they did.
//!
//! A nemesis acts on the [`Control`] of the cluster under test: processes (SIGKILL and restart,
//! SIGSTOP and SIGCONT), the network between nodes (through [`Network`]), and the membership
//! (remove a voter, re-add it). Every fault is a [`FaultWindow`] from injection to heal, with the
//! evidence that it took effect: a killed process that had been running, a process the kernel
//! reports stopped, bytes a blackhole dropped or a delayed link carried, a membership without the
//! removed node, a node's wall clock read through its API at the offset set. A run whose faults
//! left no evidence proves nothing and is invalid.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use conclave_proto::v1::{StatusResponse, TransferLeaderRequest};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::history::Recorder;
use super::network::{Network, Traffic};
use crate::clock;
use crate::cluster::TestCluster;
use crate::net::FaultPlan;

/// Every fault a run can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// SIGKILL one random node; heal restarts it.
    KillOne,
    /// SIGKILL the leader.
    KillLeader,
    /// SIGKILL a minority of the nodes at once.
    KillMinority,
    /// SIGKILL every node; heal restarts them all from their data directories.
    KillAll,
    /// SIGSTOP the leader past the election timeout; heal continues it.
    PauseLeader,
    /// SIGSTOP one follower.
    PauseFollower,
    /// Cut one random node off from the others, both ways.
    IsolateOne,
    /// Cut the leader off from the others.
    IsolateLeader,
    /// Split the nodes into a random majority and minority.
    SplitMajority,
    /// Two halves that reach each other only through one bridge node (the leader in one half).
    Bridge,
    /// Drop the bytes one node sends another, one of them the leader.
    OneWay,
    /// Delay every link by a random 20-120 ms.
    Delay,
    /// Kill or isolate a node (the leader half the time), remove it from the membership while it
    /// is down, bring it back, then re-add it as a learner and promote it.
    Membership,
    /// Move one node's wall clock (the leader half the time) by 2-10 s, forward or back, and half
    /// the time make a skewed follower the leader, so that its clock stamps the commands; heal
    /// puts the clock back. Only `CLOCK_REALTIME` moves (libfaketime, [`crate::clock`]).
    ClockSkew,
}

impl Nemesis {
    pub const ALL: [Nemesis; 14] = [
        Nemesis::KillOne,
        Nemesis::KillLeader,
        Nemesis::KillMinority,
        Nemesis::KillAll,
        Nemesis::PauseLeader,
        Nemesis::PauseFollower,
        Nemesis::IsolateOne,
        Nemesis::IsolateLeader,
        Nemesis::SplitMajority,
        Nemesis::Bridge,
        Nemesis::OneWay,
        Nemesis::Delay,
        Nemesis::Membership,
        Nemesis::ClockSkew,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .expect("a unit variant serializes to its name")
    }

    /// Parses a name (`kill-leader`), or a group: `all`, `kill`, `pause`, `partition`, `clock`.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<Nemesis>> {
        let mut chosen = BTreeSet::new();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let group: Vec<Nemesis> = match name {
                "all" => Nemesis::ALL.to_vec(),
                "none" => Vec::new(),
                "kill" => vec![
                    Self::KillOne,
                    Self::KillLeader,
                    Self::KillMinority,
                    Self::KillAll,
                ],
                "pause" => vec![Self::PauseLeader, Self::PauseFollower],
                "partition" => vec![
                    Self::IsolateOne,
                    Self::IsolateLeader,
                    Self::SplitMajority,
                    Self::Bridge,
                    Self::OneWay,
                    Self::Delay,
                ],
                "clock" => vec![Self::ClockSkew],
                name => vec![serde_json::from_value(json!(name)).with_context(|| {
                    format!(
                        "no nemesis {name:?}; known: all, none, kill, pause, partition, clock, {}",
                        Nemesis::ALL.map(Nemesis::name).join(", ")
                    )
                })?],
            };
            chosen.extend(group);
        }
        Ok(chosen.into_iter().collect())
    }

    /// True for faults that need the proxy or namespace network.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            Self::IsolateOne
                | Self::IsolateLeader
                | Self::SplitMajority
                | Self::Bridge
                | Self::OneWay
                | Self::Delay
                | Self::Membership
        )
    }
}

/// One fault from injection to heal, as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub nemesis: Nemesis,
    pub description: String,
    /// Nodes the fault acted on.
    pub targets: Vec<u64>,
    /// On the history's clock.
    pub start_ns: u64,
    pub end_ns: u64,
    pub took_effect: bool,
    /// Why it counts as having taken effect, or why not.
    pub evidence: String,
}

/// A fault in force, with what its heal must undo.
#[derive(Debug)]
pub struct Fault {
    nemesis: Nemesis,
    description: String,
    targets: Vec<u64>,
    start_ns: u64,
    killed: Vec<u64>,
    paused: Vec<u64>,
    /// Pairs whose bytes are dropped, and delayed, by this fault.
    blackholed: BTreeSet<(u64, u64)>,
    delayed: BTreeSet<(u64, u64)>,
    traffic_before: BTreeMap<(u64, u64), Traffic>,
    /// Node removed from the membership, to re-add at the heal.
    removed: Option<u64>,
    /// Node whose wall clock was moved, to put back at the heal.
    skewed: Option<u64>,
    /// Evidence gathered while injecting (kills, pauses, the membership change).
    evidence: Vec<String>,
    took_effect: bool,
    /// Whether dropped or delayed bytes prove the fault (not for the membership nemesis, whose
    /// isolation only sets the stage for the change that must happen).
    network_is_evidence: bool,
}

/// The cluster under test and everything the nemeses may do to it.
pub struct Control {
    pub cluster: TestCluster,
    pub network: Network,
    recorder: Arc<Recorder>,
    log: BufWriter<File>,
    pub windows: Vec<FaultWindow>,
    /// Election timeout upper bound: pauses and partitions last longer than this.
    pub election_timeout_max: Duration,
}

/// How long to wait for a leader when a nemesis needs to know it.
const LEADER_LOOKUP: Duration = Duration::from_secs(3);

/// Magnitudes of the clock-skew nemesis's offsets, in ms (either sign). From 2 s, beyond any
/// heartbeat or election timeout, so that stamps visibly move; to 10 s, twice the longest timer
/// of the workloads (leases 2 s, session TTLs 2-4 s, decision deadlines 1.5-5 s), so that a
/// forward skew on the leader expires them all at once and a backward one holds cluster time
/// still past them. Not further: cluster time, which never goes back, then stays ahead of every
/// clock for as long as the skew, and clients with true clocks can propose no short deadline
/// meanwhile. With up to 30 s, seed 11000 had 63 of 76 proposals refused (tests/README.md).
pub const CLOCK_SKEW_MS: (i64, i64) = (2_000, 10_000);

impl Control {
    pub fn new(
        cluster: TestCluster,
        network: Network,
        recorder: Arc<Recorder>,
        log_path: &Path,
        election_timeout_max: Duration,
    ) -> anyhow::Result<Self> {
        let log =
            File::create(log_path).with_context(|| format!("create {}", log_path.display()))?;
        Ok(Self {
            cluster,
            network,
            recorder,
            log: BufWriter::new(log),
            windows: Vec::new(),
            election_timeout_max,
        })
    }

    /// Appends a line to `nemesis.log`: `{"time": ns, "event": ..., ...}`.
    pub fn log(&mut self, event: &str, detail: serde_json::Value) {
        let mut line = json!({"time": self.recorder.now_ns(), "event": event});
        if let (Some(line), Some(detail)) = (line.as_object_mut(), detail.as_object()) {
            line.extend(detail.clone());
        }
        tracing::info!("nemesis: {line}");
        let _ = writeln!(self.log, "{line}");
        let _ = self.log.flush();
    }

    /// The leader, if one is agreed on within a short wait.
    pub async fn leader(&mut self) -> Option<u64> {
        self.cluster.wait_for_leader(LEADER_LOOKUP).await.ok()
    }

    fn voters(&self) -> Vec<u64> {
        self.cluster.voters().iter().copied().collect()
    }

    /// Injects `nemesis`, choosing its targets with `rng`.
    pub async fn inject(&mut self, nemesis: Nemesis, rng: &mut StdRng) -> anyhow::Result<Fault> {
        let nodes = self.cluster.node_ids();
        let mut fault = Fault {
            nemesis,
            description: String::new(),
            targets: Vec::new(),
            start_ns: self.recorder.now_ns(),
            killed: Vec::new(),
            paused: Vec::new(),
            blackholed: BTreeSet::new(),
            delayed: BTreeSet::new(),
            traffic_before: self.network.traffic(),
            removed: None,
            skewed: None,
            evidence: Vec::new(),
            took_effect: false,
            network_is_evidence: nemesis != Nemesis::Membership,
        };
        match nemesis {
            Nemesis::KillOne | Nemesis::KillLeader | Nemesis::KillMinority | Nemesis::KillAll => {
                let targets = match nemesis {
                    Nemesis::KillOne => vec![*nodes.choose(rng).expect("nodes")],
                    Nemesis::KillLeader => vec![self.leader_or_random(rng).await],
                    Nemesis::KillMinority => minority(&nodes, rng),
                    _ => nodes.clone(),
                };
                fault.description = format!("SIGKILL {targets:?}");
                for node in targets {
                    self.kill(&mut fault, node);
                }
            }
            Nemesis::PauseLeader | Nemesis::PauseFollower => {
                let leader = self.leader().await;
                let node = match (nemesis, leader) {
                    (Nemesis::PauseLeader, Some(leader)) => leader,
                    (Nemesis::PauseFollower, Some(leader)) => *self
                        .voters()
                        .iter()
                        .filter(|node| **node != leader)
                        .collect::<Vec<_>>()
                        .choose(rng)
                        .copied()
                        .unwrap_or(&leader),
                    _ => *nodes.choose(rng).expect("nodes"),
                };
                fault.description = format!(
                    "SIGSTOP node {node} ({})",
                    if leader == Some(node) {
                        "the leader"
                    } else {
                        "not the leader"
                    }
                );
                fault.targets.push(node);
                match self.cluster.pause(node) {
                    Ok(()) => {
                        fault.paused.push(node);
                        // The signal is delivered asynchronously: give the kernel a moment.
                        let mut state = self.cluster.scheduler_state(node);
                        for _ in 0..50 {
                            if state == Some('T') {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            state = self.cluster.scheduler_state(node);
                        }
                        if state == Some('T') {
                            fault.took_effect = true;
                            fault
                                .evidence
                                .push(format!("node {node} is stopped (state T)"));
                        } else {
                            fault
                                .evidence
                                .push(format!("node {node} has state {state:?}, not T"));
                        }
                    }
                    Err(error) => fault.evidence.push(format!("pause {node}: {error:#}")),
                }
            }
            Nemesis::IsolateOne | Nemesis::IsolateLeader => {
                let node = if nemesis == Nemesis::IsolateLeader {
                    self.leader_or_random(rng).await
                } else {
                    *nodes.choose(rng).expect("nodes")
                };
                fault.description = format!("isolate node {node}");
                fault.targets.push(node);
                self.network_fault(&mut fault, move |plan| plan.isolate(node))
                    .await?;
            }
            Nemesis::SplitMajority => {
                let minority = minority(&nodes, rng);
                let majority: Vec<u64> = nodes
                    .iter()
                    .copied()
                    .filter(|n| !minority.contains(n))
                    .collect();
                fault.description = format!("split {minority:?} | {majority:?}");
                fault.targets = minority.clone();
                self.network_fault(&mut fault, move |plan| {
                    plan.partition(&[minority.as_slice(), majority.as_slice()])
                })
                .await?;
            }
            Nemesis::Bridge => {
                // The leader on one side and the bridge a follower, so that the leader's links
                // to the far side (which carry heartbeats) are the ones cut.
                let leader = self.leader_or_random(rng).await;
                let mut others: Vec<u64> = nodes.iter().copied().filter(|n| *n != leader).collect();
                others.shuffle(rng);
                let bridge = others.remove(0);
                let half = nodes.len().saturating_sub(1) / 2;
                let mut a_side = vec![leader];
                a_side.extend(others.drain(..half.saturating_sub(1)));
                let b_side = others;
                fault.description =
                    format!("bridge {a_side:?} - {bridge} - {b_side:?} (leader {leader})");
                fault.targets = vec![bridge];
                self.network_fault(&mut fault, move |plan| {
                    plan.bridge(&a_side, bridge, &b_side)
                })
                .await?;
            }
            Nemesis::OneWay => {
                // One end is the leader: links between followers carry no Raft traffic.
                let leader = self.leader_or_random(rng).await;
                let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != leader).collect();
                let follower = *others.choose(rng).expect("at least two nodes");
                let (from, to) = if rng.gen_bool(0.5) {
                    (leader, follower)
                } else {
                    (follower, leader)
                };
                fault.description = format!("drop bytes from {from} to {to} (leader {leader})");
                fault.targets = vec![from, to];
                self.network_fault(&mut fault, move |plan| plan.one_way(from, to))
                    .await?;
            }
            Nemesis::Delay => {
                let delay = Duration::from_millis(rng.gen_range(20..=120));
                fault.description = format!("delay every link by {delay:?}");
                fault.targets = nodes.clone();
                let pairs: Vec<(u64, u64)> = nodes
                    .iter()
                    .flat_map(|&a| nodes.iter().filter(move |&&b| b != a).map(move |&b| (a, b)))
                    .collect();
                self.network_fault(&mut fault, move |plan| {
                    pairs
                        .iter()
                        .try_for_each(|&(from, to)| plan.delay(from, to, delay))
                })
                .await?;
            }
            Nemesis::Membership => self.membership(&mut fault, rng).await?,
            Nemesis::ClockSkew => self.clock_skew(&mut fault, rng).await?,
        }
        self.log(
            "start",
            json!({"nemesis": nemesis, "description": fault.description, "targets": fault.targets}),
        );
        Ok(fault)
    }

    /// Undoes `fault` and records its window.
    pub async fn heal(&mut self, mut fault: Fault) -> anyhow::Result<()> {
        if !fault.blackholed.is_empty() || !fault.delayed.is_empty() {
            let after = self.network.traffic();
            let dropped: u64 = fault
                .blackholed
                .iter()
                .map(|pair| after.get(pair).map_or(0, |t| t.dropped) - before(&fault, pair).dropped)
                .sum();
            let delayed: u64 = fault
                .delayed
                .iter()
                .map(|pair| {
                    after.get(pair).map_or(0, |t| t.delivered) - before(&fault, pair).delivered
                })
                .sum();
            if !fault.blackholed.is_empty() {
                fault.evidence.push(format!("{dropped} bytes dropped"));
                fault.took_effect |= fault.network_is_evidence && dropped > 0;
            }
            if !fault.delayed.is_empty() {
                fault
                    .evidence
                    .push(format!("{delayed} bytes delivered late"));
                fault.took_effect |= fault.network_is_evidence && delayed > 0;
            }
            self.network.heal_all().await?;
        }
        for node in std::mem::take(&mut fault.paused) {
            self.cluster.resume(node)?;
        }
        for node in std::mem::take(&mut fault.killed) {
            self.cluster
                .restart(node)
                .await
                .with_context(|| format!("restart node {node}"))?;
        }
        if let Some(node) = fault.removed.take() {
            self.re_add(node, &mut fault.evidence).await;
        }
        if let Some(node) = fault.skewed.take() {
            self.unskew(node, &mut fault.evidence).await?;
        }
        let window = FaultWindow {
            nemesis: fault.nemesis,
            description: fault.description,
            targets: fault.targets,
            start_ns: fault.start_ns,
            end_ns: self.recorder.now_ns(),
            took_effect: fault.took_effect,
            evidence: fault.evidence.join("; "),
        };
        self.log(
            "heal",
            json!({
                "nemesis": window.nemesis,
                "took_effect": window.took_effect,
                "evidence": window.evidence,
            }),
        );
        self.windows.push(window);
        Ok(())
    }

    /// Heals everything whatever faults are in force: the network, paused and dead nodes, and
    /// nodes that are no longer voters. For the heal phase and for cleaning up after an error.
    pub async fn heal_everything(&mut self) -> anyhow::Result<()> {
        self.network.heal_all().await?;
        for node in self.cluster.node_ids() {
            if self.cluster.clock_offset(node) != 0 {
                self.cluster.set_clock_offset(node, 0)?;
                self.log("clock", json!({"node": node, "offset_ms": 0}));
            }
        }
        for node in self.cluster.node_ids() {
            self.cluster.resume(node)?;
            if !self.cluster.is_running(node) {
                self.cluster.restart(node).await?;
            }
        }
        // The membership as the cluster has it: a Remove whose answer was lost may have applied.
        if let Some(leader) = self.leader().await {
            match self.cluster.status(leader).await {
                Ok(status) => self.cluster.adopt_membership(&status.members),
                Err(error) => self.log("error", json!({"membership": format!("{error:#}")})),
            }
        }
        let voters = self.voters();
        for node in self.cluster.node_ids() {
            if !voters.contains(&node) {
                let mut evidence = Vec::new();
                self.re_add(node, &mut evidence).await;
                self.log("re-add", json!({"node": node, "evidence": evidence}));
            }
        }
        Ok(())
    }

    /// Waits (up to 10 s) for a leader other than `node`, agreed on by a majority of voters.
    async fn leader_other_than(&mut self, node: u64) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Some(leader) = self.leader().await.filter(|leader| *leader != node) {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn leader_or_random(&mut self, rng: &mut StdRng) -> u64 {
        match self.leader().await {
            Some(leader) => leader,
            None => {
                let nodes = self.cluster.node_ids();
                let node = *nodes.choose(rng).expect("nodes");
                self.log("no-leader", json!({"instead": node}));
                node
            }
        }
    }

    fn kill(&mut self, fault: &mut Fault, node: u64) {
        fault.targets.push(node);
        let was_running = self.cluster.is_running(node);
        match self.cluster.kill(node) {
            Ok(()) if was_running => {
                fault.killed.push(node);
                fault.took_effect = true;
                fault.evidence.push(format!("node {node} killed"));
            }
            Ok(()) => fault.evidence.push(format!("node {node} was not running")),
            Err(error) => fault.evidence.push(format!("kill {node}: {error:#}")),
        }
    }

    async fn network_fault<F>(&mut self, fault: &mut Fault, change: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut FaultPlan) -> anyhow::Result<()> + Send,
    {
        let before = self.network.plan();
        self.network.update(change).await?;
        let after = self.network.plan();
        fault.blackholed = after
            .blackholed()
            .difference(before.blackholed())
            .copied()
            .collect();
        fault.delayed = after
            .nodes()
            .iter()
            .flat_map(|&a| after.nodes().iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a != b && !after.delay_of(a, b).is_zero())
            .collect();
        Ok(())
    }

    /// Takes a node down (killed or isolated), removes it from the membership through another
    /// voter, and leaves its re-adding to the heal.
    async fn membership(&mut self, fault: &mut Fault, rng: &mut StdRng) -> anyhow::Result<()> {
        let voters = self.voters();
        if voters.len() < 3 {
            fault.description = format!("no membership change: only {} voters", voters.len());
            fault.evidence.push(fault.description.clone());
            return Ok(());
        }
        let node = if rng.gen_bool(0.5) {
            self.leader_or_random(rng).await
        } else {
            *voters.choose(rng).expect("voters")
        };
        let kill = rng.gen_bool(0.5);
        if kill {
            self.kill(fault, node);
            // What counts here is the membership change, not the kill.
            fault.took_effect = false;
        } else {
            fault.targets.push(node);
            self.network_fault(fault, move |plan| plan.isolate(node))
                .await?;
        }
        // Sent to the leader the others elect, not through any voter: a follower may still name
        // the cut-off node as leader and forward there, and a membership change on a leader
        // without quorum never answers (the open bug pinned by
        // `regressions::membership_change_on_an_isolated_leader_answers_within_the_leader_wait`).
        let Some(via) = self.leader_other_than(node).await else {
            fault.description = format!("no leader without node {node}: no membership change");
            fault.evidence.push(fault.description.clone());
            return Ok(());
        };
        fault.description = format!(
            "{} node {node}, remove it from the membership (via the new leader {via}), re-add it \
             at the heal",
            if kill { "kill" } else { "isolate" }
        );
        match tokio::time::timeout(Duration::from_secs(15), self.cluster.remove(via, &[node])).await
        {
            Ok(Ok(response)) => {
                let members: Vec<u64> = response.members.iter().map(|m| m.node_id).collect();
                if members.contains(&node) {
                    fault
                        .evidence
                        .push(format!("Remove answered, yet members are {members:?}"));
                } else {
                    fault.took_effect = true;
                    fault.evidence.push(format!(
                        "removed {node}: members {members:?} at index {}",
                        response.log_index
                    ));
                }
                fault.removed = Some(node);
            }
            Ok(Err(error)) => {
                fault
                    .evidence
                    .push(format!("Remove {node} failed: {error:#}"));
                // It may have been removed anyway; the final heal re-adds whoever is missing.
            }
            Err(_) => fault
                .evidence
                .push(format!("Remove {node} did not answer within 15 s")),
        }
        Ok(())
    }

    /// Moves one node's wall clock (see [`Nemesis::ClockSkew`]). Evidence: the node's own clock,
    /// read through Status, at the offset set from the harness's.
    async fn clock_skew(&mut self, fault: &mut Fault, rng: &mut StdRng) -> anyhow::Result<()> {
        if !self.cluster.has_fake_clocks() {
            bail!(
                "clock-skew: the nodes do not run under libfaketime (ClusterConfig::faketime, \
                 which a run with this nemesis sets)"
            );
        }
        // Every draw is made whatever the cluster looks like, so a seed replays the same offsets.
        let pick_leader = rng.gen_bool(0.5);
        let magnitude_ms = rng.gen_range(CLOCK_SKEW_MS.0..=CLOCK_SKEW_MS.1);
        let forward = rng.gen_bool(0.5);
        let transfer = rng.gen_bool(0.5);
        let random_node = *self.cluster.node_ids().choose(rng).expect("nodes");
        let offset_ms = if forward { magnitude_ms } else { -magnitude_ms };

        let leader = self.leader().await;
        let node = match leader {
            Some(leader) if pick_leader => leader,
            _ => random_node,
        };
        let transfer = transfer && leader.is_some_and(|leader| leader != node);
        fault.targets.push(node);
        fault.skewed = Some(node);
        self.cluster.set_clock_offset(node, offset_ms)?;
        match clock::wait_for_offset(&self.cluster, node, offset_ms).await {
            Ok(observed_ms) => {
                fault.took_effect = true;
                fault.evidence.push(format!(
                    "node {node}'s wall clock reads {} from the harness's",
                    clock::seconds(observed_ms)
                ));
            }
            Err(error) => fault.evidence.push(format!("{error:#}")),
        }
        let role = if leader == Some(node) {
            "the leader".to_string()
        } else if transfer {
            let leader = leader.expect("transfer only from a known leader");
            let request = TransferLeaderRequest { to_node_id: node };
            let mut client = self.cluster.cluster_client(leader);
            match tokio::time::timeout(LEADER_LOOKUP, client.transfer_leader(request)).await {
                Ok(Ok(response)) if response.get_ref().leader_id == node => fault
                    .evidence
                    .push(format!("node {node} leads (TransferLeader)")),
                Ok(Ok(response)) => fault.evidence.push(format!(
                    "TransferLeader to {node}: node {} leads",
                    response.get_ref().leader_id
                )),
                Ok(Err(status)) => fault
                    .evidence
                    .push(format!("TransferLeader to {node}: {status}")),
                Err(_) => fault.evidence.push(format!(
                    "TransferLeader to {node}: no answer within {LEADER_LOOKUP:?}"
                )),
            }
            format!("a follower, made leader from {leader}")
        } else {
            "not the leader".to_string()
        };
        fault.description = format!(
            "skew node {node}'s wall clock by {} ({role})",
            clock::seconds(offset_ms)
        );
        Ok(())
    }

    /// Puts a skewed node's clock back, noting first where cluster time stands on it.
    async fn unskew(&mut self, node: u64, evidence: &mut Vec<String>) -> anyhow::Result<()> {
        if let Ok((status, harness_ms)) = self.status_and_time(node).await {
            evidence.push(format!(
                "cluster time on node {node} {} from the harness's",
                clock::seconds(status.cluster_time_ms as i64 - harness_ms as i64)
            ));
        }
        self.cluster.set_clock_offset(node, 0)?;
        match clock::wait_for_offset(&self.cluster, node, 0).await {
            Ok(_) => evidence.push(format!("node {node}'s clock is back")),
            Err(error) => evidence.push(format!("{error:#}")),
        }
        Ok(())
    }

    /// Node `node`'s Status and the harness's clock halfway through the call.
    async fn status_and_time(&mut self, node: u64) -> anyhow::Result<(StatusResponse, u64)> {
        let before = clock::unix_ms();
        let status = self.cluster.status(node).await?;
        let after = clock::unix_ms();
        Ok((status, before + (after - before) / 2))
    }

    /// Adds `node` back as a learner and promotes it, through any running voter.
    async fn re_add(&mut self, node: u64, evidence: &mut Vec<String>) {
        let result = async {
            let via = *self
                .voters()
                .iter()
                .find(|voter| **voter != node)
                .context("no voter to re-add through")?;
            tokio::time::timeout(Duration::from_secs(30), async {
                self.cluster.add_learner(via, node).await?;
                self.cluster.promote(via, &[node]).await
            })
            .await
            .context("no answer within 30 s")?
        }
        .await;
        match result {
            Ok(response) => evidence.push(format!(
                "re-added {node}: members {:?}",
                response
                    .members
                    .iter()
                    .map(|m| m.node_id)
                    .collect::<Vec<_>>()
            )),
            Err(error) => evidence.push(format!("re-adding {node} failed: {error:#}")),
        }
    }

    /// Checks that every node is a voter again (the membership nemesis re-added what it removed).
    pub fn all_voters(&self) -> anyhow::Result<()> {
        let voters = self.voters();
        let missing: Vec<u64> = self
            .cluster
            .node_ids()
            .into_iter()
            .filter(|n| !voters.contains(n))
            .collect();
        if !missing.is_empty() {
            bail!("nodes {missing:?} are not voters after healing");
        }
        Ok(())
    }
}

fn before(fault: &Fault, pair: &(u64, u64)) -> Traffic {
    fault.traffic_before.get(pair).copied().unwrap_or_default()
}

/// A random minority: at least one node, fewer than half.
fn minority(nodes: &[u64], rng: &mut StdRng) -> Vec<u64> {
    let size = ((nodes.len() - 1) / 2).max(1);
    let mut chosen: Vec<u64> = nodes.choose_multiple(rng, size).copied().collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn names_round_trip_and_groups_expand() {
        for nemesis in Nemesis::ALL {
            assert_eq!(Nemesis::parse_list(&nemesis.name()).unwrap(), vec![nemesis]);
        }
        assert_eq!(
            Nemesis::parse_list("all").unwrap().len(),
            Nemesis::ALL.len()
        );
        assert_eq!(
            Nemesis::parse_list("pause, kill-one").unwrap(),
            vec![
                Nemesis::KillOne,
                Nemesis::PauseLeader,
                Nemesis::PauseFollower
            ]
        );
        assert!(Nemesis::parse_list("nope").is_err());
        assert!(Nemesis::parse_list("none").unwrap().is_empty());
        assert_eq!(
            Nemesis::parse_list("clock").unwrap(),
            vec![Nemesis::ClockSkew]
        );
        assert_eq!(Nemesis::ClockSkew.name(), "clock-skew");
    }

    #[test]
    fn a_minority_is_less_than_half() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(minority(&[1, 2, 3], &mut rng).len(), 1);
        assert_eq!(minority(&[1, 2, 3, 4, 5], &mut rng).len(), 2);
    }
}
