//! A cluster of real `conclave-node` processes on 127.0.0.1, for black-box tests.
//!
//! The harness only starts, stops and kills processes and polls their public API; every check of
//! behaviour is in the tests. Every process is killed by PID when the cluster is dropped, also when
//! the test panics; a cluster dropped without [`TestCluster::shutdown`] counts as failed, and then
//! its directory (data and node logs) is kept and the tail of each node's log is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use conclave_proto::v1::cluster_client::ClusterClient;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::{
    AddLearnerRequest, InitializeRequest, Member, MembershipResponse, PromoteRequest,
    RemoveRequest, Role, StatusRequest, StatusResponse,
};
use tempfile::TempDir;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::Channel;

use crate::channel;
use crate::clock::FakeClock;
use crate::node_process::{NodeProcess, NodeSpec, StartError};
use crate::poll::{eventually, retry_transient};
use crate::ports::PortReservation;
use crate::writer::Writer;

/// How long a node may take from spawn to answering Status.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped node may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Bound for electing a leader: many election timeouts, as this is liveness, not performance.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one Status call while polling: a node slower than this counts as not answering.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Environment variable: how many clusters of one test binary may run at once (default 2).
pub const CLUSTERS_MAX_ENV: &str = "CONCLAVE_TEST_CLUSTERS_MAX";
/// Environment variable: keep every cluster's directory, also after a passing test.
pub const KEEP_DIR_ENV: &str = "CONCLAVE_TEST_KEEP_DIR";

/// First starts retried on new ports when a port turned out to be taken.
const START_ATTEMPTS_MAX: usize = 5;

/// Limits concurrently running clusters, so parallel test threads do not overload a small machine
/// into missed heartbeats and spurious elections.
static CLUSTER_SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let slots = std::env::var(CLUSTERS_MAX_ENV)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2);
    Arc::new(Semaphore::new(slots))
});

/// Timings and settings for every node of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Nodes started by [`TestCluster::start`]; all are voters after initialization.
    pub nodes: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// `--snapshot-logs`, when set.
    pub snapshot_logs: Option<u64>,
    /// `--snapshot-keep-logs`, when set.
    pub snapshot_keep_logs: Option<u64>,
    /// `--watch-history`, when set.
    pub watch_history: Option<u64>,
    /// `--leader-wait-ms`, when set.
    pub leader_wait_ms: Option<u64>,
    /// More flags for every node (e.g. the hidden `--unsafe-test-mode`), after all others.
    pub extra_args: Vec<String>,
    /// Run every node under this libfaketime library ([`crate::clock::libfaketime`]), so that
    /// [`TestCluster::set_clock_offset`] can move its wall clock. None: the real clock, untouched.
    pub faketime: Option<PathBuf>,
    /// Give every node a metrics address (`--metrics-addr`, [`TestCluster::metrics_addr`]).
    pub metrics: bool,
}

impl ClusterConfig {
    /// `nodes` nodes with the short test timings: heartbeat 50 ms, election timeout 300-600 ms.
    pub fn new(nodes: u64) -> Self {
        Self {
            nodes,
            heartbeat_ms: 50,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
            snapshot_logs: None,
            snapshot_keep_logs: None,
            watch_history: None,
            leader_wait_ms: None,
            extra_args: Vec::new(),
            faketime: None,
            metrics: false,
        }
    }

    fn node_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--heartbeat-ms={}", self.heartbeat_ms),
            format!("--election-timeout-min-ms={}", self.election_timeout_ms_min),
            format!("--election-timeout-max-ms={}", self.election_timeout_ms_max),
        ];
        let optional = [
            ("--snapshot-logs", self.snapshot_logs),
            ("--snapshot-keep-logs", self.snapshot_keep_logs),
            ("--watch-history", self.watch_history),
            ("--leader-wait-ms", self.leader_wait_ms),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
        if self.snapshot_logs.is_some() {
            // Tests that set a low threshold want snapshots that often, whatever the state's size.
            args.push("--snapshot-log-percent=0".to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Running node processes plus the harness's record of the intended membership.
pub struct TestCluster {
    name: String,
    config: ClusterConfig,
    nodes: BTreeMap<u64, NodeProcess>,
    /// Voters as last set through this harness (initialize, promote, remove).
    voters: BTreeSet<u64>,
    /// Learners as last set through this harness (add_learner, promote, remove).
    learners: BTreeSet<u64>,
    ports: PortReservation,
    /// Each node's faked wall clock, when [`ClusterConfig::faketime`] is set.
    clocks: BTreeMap<u64, FakeClock>,
    dir: Option<TempDir>,
    finished: bool,
    _slot: OwnedSemaphorePermit,
}

impl TestCluster {
    /// Starts `config.nodes` pristine nodes (ids 1..=n) and waits until each answers Status.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Self> {
        let mut cluster = Self::empty(config).await?;
        for id in 1..=cluster.config.nodes {
            cluster.launch_node(id).await?;
        }
        Ok(cluster)
    }

    /// A cluster of no nodes yet, holding its directory and a cluster slot.
    async fn empty(config: ClusterConfig) -> anyhow::Result<Self> {
        crate::init_tracing();
        let slot = CLUSTER_SLOTS
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // The test harness names each test's thread after the test.
        let name = std::thread::current()
            .name()
            .unwrap_or("cluster")
            .replace("::", "-");
        let dir = tempfile::Builder::new()
            .prefix(&format!("conclave-{name}-"))
            .tempdir()
            .context("create the cluster directory")?;
        tracing::info!(dir = %dir.path().display(), nodes = config.nodes, "starting cluster");
        Ok(Self {
            name,
            config,
            nodes: BTreeMap::new(),
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            ports: PortReservation::new(),
            clocks: BTreeMap::new(),
            dir: Some(dir),
            finished: false,
            _slot: slot,
        })
    }

    /// Reserves ports and directories for `config.nodes` nodes (ids 1..=n) without starting any,
    /// so that something can be set up between knowing their addresses and starting them (a proxy
    /// per peer link, say: see [`TestCluster::add_node_args`]). Start them with
    /// [`TestCluster::start_prepared`].
    pub async fn prepare(config: ClusterConfig) -> anyhow::Result<Self> {
        let mut cluster = Self::empty(config).await?;
        for id in 1..=cluster.config.nodes {
            let spec = cluster.node_spec(id)?;
            cluster.nodes.insert(id, NodeProcess::new(spec));
        }
        Ok(cluster)
    }

    /// Node `id`'s metrics address (with [`ClusterConfig::metrics`]).
    pub fn metrics_addr(&self, id: u64) -> Option<SocketAddr> {
        self.node(id).spec().metrics_addr
    }

    /// Every node's peer address (where its Raft peers reach it), running or not.
    pub fn peer_addrs(&self) -> BTreeMap<u64, SocketAddr> {
        self.nodes
            .iter()
            .map(|(id, node)| (*id, node.spec().peer_addr))
            .collect()
    }

    /// Moves a prepared node that has not started to other addresses, run under `launcher` (a
    /// network namespace, say: see [`crate::net::netns`]). Its reserved ports stay reserved.
    pub fn set_node_network(
        &mut self,
        id: u64,
        api_addr: SocketAddr,
        peer_addr: SocketAddr,
        launcher: Vec<String>,
    ) {
        let node = self.node_mut(id);
        node.set_addrs(api_addr, peer_addr);
        node.set_launcher(launcher);
    }

    /// Appends flags to the node's command line, from its next start on.
    pub fn add_node_args(&mut self, id: u64, args: impl IntoIterator<Item = String>) {
        self.node_mut(id).add_args(args);
    }

    /// Starts every node that is not running, on its reserved ports (retried on the same ports
    /// if one is briefly taken: other processes may already know the addresses).
    pub async fn start_prepared(&mut self) -> anyhow::Result<()> {
        for id in self.node_ids() {
            if !self.is_running(id) {
                self.start_on_reserved_ports(id).await?;
            }
        }
        Ok(())
    }

    /// Starts the nodes, initializes the cluster with all of them as voters, and waits for a leader.
    pub async fn start_initialized(config: ClusterConfig) -> anyhow::Result<Self> {
        let mut cluster = Self::start(config).await?;
        cluster.initialize().await?;
        cluster.wait_for_leader(LEADER_TIMEOUT).await?;
        Ok(cluster)
    }

    /// The directory holding every node's data directory and log.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the cluster")
            .path()
    }

    /// Every node the harness has started, member or not, running or not.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Nodes whose process is running.
    pub fn running_node_ids(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|(id, node)| node.is_running().then_some(*id))
            .collect()
    }

    pub fn voters(&self) -> &BTreeSet<u64> {
        &self.voters
    }

    /// Replaces the harness's record of the membership with `members` as a node reported them
    /// (Status, or a membership change's response): after a change whose answer was lost, the
    /// cluster may hold a membership the harness did not record.
    pub fn adopt_membership(&mut self, members: &[Member]) {
        self.voters = members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect();
        self.learners = members
            .iter()
            .filter(|m| !m.voter)
            .map(|m| m.node_id)
            .collect();
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        self.node_mut(id).is_running()
    }

    pub fn api_addr(&self, id: u64) -> SocketAddr {
        self.node(id).spec().api_addr
    }

    /// Every node's API address, running or not.
    pub fn api_addrs(&self) -> BTreeMap<u64, SocketAddr> {
        self.nodes
            .iter()
            .map(|(id, node)| (*id, node.spec().api_addr))
            .collect()
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.node(id).spec().log_path.clone()
    }

    /// The output of the node's current (or last) start.
    pub fn current_log(&self, id: u64) -> String {
        self.node(id).current_log()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).pid()
    }

    /// The node as a voting member, for Initialize and AddLearner.
    pub fn member(&self, id: u64) -> Member {
        let spec = self.node(id).spec();
        Member {
            node_id: id,
            api_addr: spec.api_addr.to_string(),
            peer_addr: spec.peer_addr.to_string(),
            voter: true,
        }
    }

    /// A KV client for unary calls to the node.
    pub fn kv(&self, id: u64) -> KvClient<Channel> {
        channel::kv_client(self.api_addr(id))
    }

    /// A KV client for watch streams on the node (no per-call timeout).
    pub fn watch_kv(&self, id: u64) -> KvClient<Channel> {
        channel::watch_client(self.api_addr(id))
    }

    pub fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        channel::cluster_client(self.api_addr(id))
    }

    /// A writer that sends to every node the harness has started, retrying until acknowledged.
    pub fn writer(&self) -> Writer {
        Writer::new(self.api_addrs())
    }

    /// The node's own view, as reported by Status.
    pub async fn status(&self, id: u64) -> anyhow::Result<StatusResponse> {
        status_of(id, self.api_addr(id)).await
    }

    /// Sends Initialize to the lowest-numbered node with every started node as a voter.
    pub async fn initialize(&mut self) -> anyhow::Result<()> {
        let members: Vec<Member> = self.nodes.keys().map(|id| self.member(*id)).collect();
        let first = *self.nodes.keys().next().context("a cluster has nodes")?;
        tracing::info!(
            node = first,
            members = members.len(),
            "initializing the cluster"
        );
        let client = self.cluster_client(first);
        retry_transient("initialize", LEADER_TIMEOUT, || {
            let mut client = client.clone();
            let request = InitializeRequest {
                members: members.clone(),
            };
            async move { client.initialize(request).await }
        })
        .await
        .context("Initialize")?;
        self.voters = self.nodes.keys().copied().collect();
        Ok(())
    }

    /// Polls Status on every running voter until a majority of the voters agree on one leader, in
    /// one term, and that leader reports itself leader in that term. Returns the leader's id.
    ///
    /// Two nodes that both claim leadership of the same term break Raft's Election Safety
    /// (Raft §5.2): that panics at once.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let quorum = self.voters.len() / 2 + 1;
        let running: Vec<u64> = self.running_node_ids();
        let voters: Vec<(u64, SocketAddr)> = running
            .into_iter()
            .filter(|id| self.voters.contains(id))
            .map(|id| (id, self.api_addr(id)))
            .collect();
        eventually(
            "a leader agreed on by a majority of voters",
            timeout,
            || {
                let voters = voters.clone();
                async move {
                    let statuses = statuses_of(&voters).await;
                    let mut leaders_by_term: BTreeMap<u64, u64> = BTreeMap::new();
                    for status in statuses.values() {
                        if status.role == Role::Leader as i32 {
                            if let Some(other) = leaders_by_term.insert(status.term, status.node_id)
                            {
                                panic!(
                                "nodes {other} and {} both lead term {}: Election Safety violated",
                                status.node_id, status.term
                            );
                            }
                        }
                    }
                    for (term, leader) in leaders_by_term.iter().rev() {
                        let agreeing = statuses
                            .values()
                            .filter(|status| {
                                status.term == *term && status.leader_id == Some(*leader)
                            })
                            .count();
                        if agreeing >= quorum {
                            return Ok(*leader);
                        }
                    }
                    let views: Vec<String> = statuses
                        .values()
                        .map(|status| {
                            format!(
                                "node {} role {:?} term {} leader {:?}",
                                status.node_id,
                                Role::try_from(status.role).unwrap_or(Role::Unknown),
                                status.term,
                                status.leader_id
                            )
                        })
                        .collect();
                    Err(anyhow!(
                        "{} of {} voters answered: {views:?}",
                        statuses.len(),
                        voters.len()
                    ))
                }
            },
        )
        .await
    }

    /// The current leader, waiting up to [`LEADER_TIMEOUT`] for one.
    pub async fn leader(&mut self) -> anyhow::Result<u64> {
        self.wait_for_leader(LEADER_TIMEOUT).await
    }

    /// The running voters other than the current leader.
    pub async fn followers(&mut self) -> anyhow::Result<Vec<u64>> {
        let leader = self.leader().await?;
        let running = self.running_node_ids();
        Ok(running
            .into_iter()
            .filter(|id| *id != leader && self.voters.contains(id))
            .collect())
    }

    /// Stops the node gracefully: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        self.node_mut(id).stop(STOP_GRACE).await?;
        Ok(())
    }

    /// Kills the node with SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.node_mut(id).kill()?;
        Ok(())
    }

    /// Starts a stopped or killed node again, with the same id, addresses and data directory.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        tracing::info!(node = id, "restarting node from its data directory");
        self.start_on_reserved_ports(id).await
    }

    /// Stops the node's process with SIGSTOP (see [`NodeProcess::pause`]).
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.node_mut(id).pause()
    }

    /// Continues a paused node with SIGCONT; a node that is not paused is left alone.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.node_mut(id).resume()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.node(id).is_paused()
    }

    /// The kernel's scheduling state of the node's process (see [`NodeProcess::scheduler_state`]).
    pub fn scheduler_state(&self, id: u64) -> Option<char> {
        self.node(id).scheduler_state()
    }

    /// True when the nodes run under libfaketime ([`ClusterConfig::faketime`]).
    pub fn has_fake_clocks(&self) -> bool {
        !self.clocks.is_empty()
    }

    /// Moves node `id`'s wall clock to real time + `offset_ms`, running or not (a restart keeps
    /// it); the running process sees it within [`crate::clock::PICKUP`]. Fails unless the cluster
    /// was configured with [`ClusterConfig::faketime`].
    pub fn set_clock_offset(&mut self, id: u64, offset_ms: i64) -> anyhow::Result<()> {
        let clock = self
            .clocks
            .get_mut(&id)
            .with_context(|| format!("node {id} has no fake clock: set ClusterConfig::faketime"))?;
        clock.set_offset_ms(offset_ms)?;
        tracing::info!(node = id, offset_ms, "wall clock offset set");
        Ok(())
    }

    /// The offset of node `id`'s wall clock last set (0 without a fake clock).
    pub fn clock_offset(&self, id: u64) -> i64 {
        self.clocks.get(&id).map_or(0, FakeClock::offset_ms)
    }

    async fn start_on_reserved_ports(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match node.start(START_TIMEOUT).await {
                Ok(()) => return Ok(()),
                // Its addresses are part of the membership, so it must get the same ports back;
                // one may be briefly held by a connection of another process.
                Err(StartError::AddrInUse(log)) if attempts < START_ATTEMPTS_MAX => {
                    tracing::warn!(node = id, attempts, "a port is in use, retrying: {log}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(anyhow!(error).context(format!("start node {id}"))),
            }
        }
    }

    /// Stops every running node gracefully.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        for id in self.node_ids() {
            self.stop(id).await?;
        }
        Ok(())
    }

    /// Restarts every node that is not running.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        for id in self.node_ids() {
            if !self.is_running(id) {
                self.restart(id).await?;
            }
        }
        Ok(())
    }

    /// Starts a new pristine node with the next free id; it is no member until added.
    pub async fn add_node(&mut self) -> anyhow::Result<u64> {
        let id = self.nodes.keys().next_back().map_or(1, |last| last + 1);
        self.launch_node(id).await?;
        Ok(id)
    }

    /// Sends AddLearner for the node through `via` (any member; followers forward).
    pub async fn add_learner(&mut self, via: u64, id: u64) -> anyhow::Result<MembershipResponse> {
        let member = Member {
            voter: false,
            ..self.member(id)
        };
        let client = self.cluster_client(via);
        let response = retry_transient("add learner", LEADER_TIMEOUT, || {
            let mut client = client.clone();
            let request = AddLearnerRequest {
                member: Some(member.clone()),
            };
            async move { client.add_learner(request).await }
        })
        .await
        .with_context(|| format!("AddLearner {id} via {via}"))?
        .into_inner();
        self.learners.insert(id);
        Ok(response)
    }

    /// Sends Promote for the learners through `via`.
    pub async fn promote(&mut self, via: u64, ids: &[u64]) -> anyhow::Result<MembershipResponse> {
        let client = self.cluster_client(via);
        let response = retry_transient("promote", LEADER_TIMEOUT, || {
            let mut client = client.clone();
            let request = PromoteRequest {
                node_ids: ids.to_vec(),
            };
            async move { client.promote(request).await }
        })
        .await
        .with_context(|| format!("Promote {ids:?} via {via}"))?
        .into_inner();
        for id in ids {
            self.learners.remove(id);
            self.voters.insert(*id);
        }
        Ok(response)
    }

    /// Sends Remove for the members through `via`.
    pub async fn remove(&mut self, via: u64, ids: &[u64]) -> anyhow::Result<MembershipResponse> {
        let client = self.cluster_client(via);
        let response = retry_transient("remove", LEADER_TIMEOUT, || {
            let mut client = client.clone();
            let request = RemoveRequest {
                node_ids: ids.to_vec(),
            };
            async move { client.remove(request).await }
        })
        .await
        .with_context(|| format!("Remove {ids:?} via {via}"))?
        .into_inner();
        for id in ids {
            self.learners.remove(id);
            self.voters.remove(id);
        }
        Ok(response)
    }

    /// Waits until the node has applied at least `index`.
    pub async fn wait_for_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> anyhow::Result<StatusResponse> {
        let addr = self.api_addr(id);
        eventually(
            &format!("node {id} to apply index {index}"),
            timeout,
            || async move {
                let status = status_of(id, addr).await?;
                match status.applied_index {
                    Some(applied) if applied >= index => Ok(status),
                    applied => Err(anyhow!("applied index {applied:?}")),
                }
            },
        )
        .await
    }

    /// Waits until every running member (voter or learner) has applied everything the leader has
    /// committed and the leader has no uncommitted entries; returns every member's Status.
    /// Only meaningful while nothing is being written.
    pub async fn wait_for_convergence(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<u64, StatusResponse>> {
        let leader = self.wait_for_leader(timeout).await?;
        let running = self.running_node_ids();
        let members: Vec<(u64, SocketAddr)> = running
            .into_iter()
            .filter(|id| self.voters.contains(id) || self.learners.contains(id))
            .map(|id| (id, self.api_addr(id)))
            .collect();
        eventually(
            "every running member to apply the leader's log",
            timeout,
            || {
                let members = members.clone();
                async move {
                    let statuses = statuses_of(&members).await;
                    if statuses.len() < members.len() {
                        bail!(
                            "only {} of {} members answered",
                            statuses.len(),
                            members.len()
                        );
                    }
                    let leader_status = statuses.get(&leader).context("the leader answered")?;
                    let committed = leader_status.committed_index;
                    if leader_status.last_log_index != committed {
                        bail!("leader has uncommitted entries: {leader_status:?}");
                    }
                    let behind: Vec<(u64, Option<u64>)> = statuses
                        .values()
                        .filter(|status| status.applied_index != committed)
                        .map(|status| (status.node_id, status.applied_index))
                        .collect();
                    if !behind.is_empty() {
                        bail!("leader committed {committed:?}; behind (node, applied): {behind:?}");
                    }
                    Ok(statuses)
                }
            },
        )
        .await
    }

    /// Stops every node gracefully and marks the test as passed, so the directory is removed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for id in self.node_ids() {
            let exit = self.node_mut(id).stop(STOP_GRACE).await?;
            if let Some(exit) = exit.filter(|exit| !exit.success()) {
                tracing::warn!(node = id, %exit, "node exited unsuccessfully on SIGTERM");
            }
        }
        self.finished = true;
        Ok(())
    }

    fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// The spec of node `id` on newly reserved ports.
    fn node_spec(&mut self, id: u64) -> anyhow::Result<NodeSpec> {
        let node_dir = self.dir().join(format!("node-{id}"));
        let mut env = Vec::new();
        if let Some(library) = self.config.faketime.clone() {
            let file = self.dir().join(format!("node-{id}.faketime"));
            let clock = FakeClock::create(library, file)?;
            env = clock.env();
            self.clocks.insert(id, clock);
        }
        Ok(NodeSpec {
            id,
            api_addr: self.ports.reserve()?,
            peer_addr: self.ports.reserve()?,
            metrics_addr: if self.config.metrics {
                Some(self.ports.reserve()?)
            } else {
                None
            },
            data_dir: node_dir.join("data"),
            log_path: self.dir().join(format!("node-{id}.log")),
            args: self.config.node_args(),
            launcher: Vec::new(),
            env,
        })
    }

    /// Reserves ports for a new node and starts it, on new ports if its first ones were taken.
    async fn launch_node(&mut self, id: u64) -> anyhow::Result<()> {
        let spec = self.node_spec(id)?;
        let mut node = NodeProcess::new(spec);
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            match node.start(START_TIMEOUT).await {
                Ok(()) => break Ok(()),
                Err(StartError::AddrInUse(log)) if attempts < START_ATTEMPTS_MAX => {
                    tracing::warn!(
                        node = id,
                        attempts,
                        "a port is in use, trying new ones: {log}"
                    );
                    self.ports.release(node.spec().api_addr);
                    self.ports.release(node.spec().peer_addr);
                    node.set_addrs(self.ports.reserve()?, self.ports.reserve()?);
                    if let Some(metrics_addr) = node.spec().metrics_addr {
                        self.ports.release(metrics_addr);
                        node.set_metrics_addr(Some(self.ports.reserve()?));
                    }
                }
                Err(error) => break Err(anyhow!(error).context(format!("start node {id}"))),
            }
        };
        // Inserted even on failure so that the drop report shows its log.
        self.nodes.insert(id, node);
        result
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Err(error) = node.kill() {
                eprintln!("failed to kill node {}: {error:#}", node.spec().id);
            }
        }
        let failed = !self.finished || std::thread::panicking();
        let keep = failed || std::env::var_os(KEEP_DIR_ENV).is_some();
        let Some(dir) = self.dir.take() else { return };
        if failed {
            eprintln!(
                "\n===== cluster of test `{}` did not shut down cleanly (the test failed); \
                 its directory is kept: {}",
                self.name,
                dir.path().display()
            );
            for node in self.nodes.values() {
                let spec = node.spec();
                eprintln!(
                    "----- node {} (api {}, peer {}) log {}; last lines:\n{}",
                    spec.id,
                    spec.api_addr,
                    spec.peer_addr,
                    spec.log_path.display(),
                    node.log_tail(30)
                );
            }
        }
        if keep {
            let _ = dir.keep();
        }
    }
}

/// One node's Status, bounded by [`STATUS_TIMEOUT`].
pub async fn status_of(id: u64, addr: SocketAddr) -> anyhow::Result<StatusResponse> {
    let mut client = channel::cluster_client_with_timeout(addr, STATUS_TIMEOUT);
    let status = client
        .status(StatusRequest {})
        .await
        .with_context(|| format!("Status of node {id} at {addr}"))?
        .into_inner();
    Ok(status)
}

/// The Status of each node that answers, by node id, queried concurrently.
pub async fn statuses_of(nodes: &[(u64, SocketAddr)]) -> BTreeMap<u64, StatusResponse> {
    let answers =
        futures::future::join_all(nodes.iter().map(|(id, addr)| status_of(*id, *addr))).await;
    nodes
        .iter()
        .zip(answers)
        .filter_map(|((id, _), answer)| answer.ok().map(|status| (*id, status)))
        .collect()
}
