//! One run: start a cluster behind a fault network, run workloads while nemeses act, heal, check.
//!
//! Phases, each logged and timed on the history's clock:
//! 1. **set-up**: N nodes whose peer traffic goes through the network backend; initialize.
//! 2. **warm-up**: clients run, no faults.
//! 3. **faults**: the nemeses take turns (a shuffled round of the configured ones, again and
//!    again): quiet, inject, hold, heal.
//! 4. **heal**: every fault is undone: network healed, paused nodes continued, dead nodes
//!    restarted, removed nodes re-added.
//! 5. **quiesce**: clients keep running against the healed cluster (liveness), then stop; their
//!    last operations drain.
//! 6. **final reads**: convergence (every node applies the same index to the same state digest),
//!    a probe write and read through every node, then each workload reads the final state.
//! 7. **checks**: each workload's checker on the history, the validity rules (enough operations,
//!    faults that took effect, operations succeeding after the heal), then the run's folder.
//!
//! One seed drives the nemeses' schedule and every client's choices; it is printed, and
//! `CONCLAVE_JEPSEN_SEED` replays it (timing still varies, as with any real cluster).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use conclave_proto::v1::{PutRequest, ReadConsistency};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::{mix, name_hash, ClientContext};
use super::history::{self, Event, Recorder};
use super::nemesis::{Control, FaultWindow, Nemesis};
use super::network::{Backend, Network};
use super::report;
use super::workload::{self, outcome_counts, CheckResult, Verdict, Workload, FINAL_READ};
use crate::cluster::{ClusterConfig, TestCluster};
use crate::net::{NamespaceNetwork, ProxyNetwork};
use crate::writer::RequestIds;

/// Environment variable: the seed to replay.
pub const SEED_ENV: &str = "CONCLAVE_JEPSEN_SEED";
/// Environment variable: where runs write their folders (default `$TMPDIR/conclave-jepsen`).
pub const DIR_ENV: &str = "CONCLAVE_JEPSEN_DIR";
/// Environment variable: the network backend, `proxy` (default) or `netns`.
pub const NET_ENV: &str = "CONCLAVE_JEPSEN_NET";

/// Everything that defines a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub name: String,
    pub seed: u64,
    pub nodes: u64,
    pub workloads: Vec<String>,
    pub nemeses: Vec<Nemesis>,
    pub warmup: Duration,
    /// Length of the fault phase.
    pub faults: Duration,
    /// How long each fault is held, at random in this range.
    pub hold: (Duration, Duration),
    /// Quiet time before each fault, at random in this range.
    pub quiet: (Duration, Duration),
    pub quiesce: Duration,
    pub clients_per_node: usize,
    /// Mean pause between two operations of one client.
    pub op_interval: Duration,
    pub op_timeout: Duration,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    pub leader_wait_ms: u64,
    /// `--snapshot-logs` and `--snapshot-keep-logs`: low values make snapshots and installs happen.
    pub snapshot_logs: Option<u64>,
    pub snapshot_keep_logs: Option<u64>,
    /// The hidden `--unsafe-test-mode`, to prove the checkers can fail.
    pub unsafe_mode: Option<String>,
    /// Fewer `ok` operations than this in any workload makes the run invalid.
    pub min_ok_ops: usize,
    /// Time budget of each checker.
    pub check_budget: Duration,
    pub network: Backend,
}

impl RunConfig {
    /// A short run (about 30 s) of `workloads` under `nemeses` on three nodes, with the seed from
    /// `CONCLAVE_JEPSEN_SEED` or a random one, and the backend from `CONCLAVE_JEPSEN_NET`.
    pub fn short(name: &str, workloads: &[&str], nemeses: &[Nemesis]) -> Self {
        Self {
            name: name.to_string(),
            seed: seed_from_env(),
            nodes: 3,
            workloads: workloads.iter().map(|w| w.to_string()).collect(),
            nemeses: nemeses.to_vec(),
            warmup: Duration::from_secs(2),
            faults: Duration::from_secs(18),
            hold: (Duration::from_millis(2000), Duration::from_millis(3500)),
            quiet: (Duration::from_millis(800), Duration::from_millis(2000)),
            quiesce: Duration::from_secs(3),
            clients_per_node: 3,
            op_interval: Duration::from_millis(40),
            op_timeout: Duration::from_secs(4),
            heartbeat_ms: 50,
            election_timeout_ms: (300, 600),
            leader_wait_ms: 2000,
            snapshot_logs: None,
            snapshot_keep_logs: None,
            unsafe_mode: None,
            min_ok_ops: 100,
            check_budget: Duration::from_secs(30),
            network: network_from_env(),
        }
    }

    /// The run's folder: `$CONCLAVE_JEPSEN_DIR/<name>-<seed>/`.
    pub fn dir(&self) -> PathBuf {
        let base = std::env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("conclave-jepsen"));
        base.join(format!("{}-{}", self.name, self.seed))
    }
}

/// The seed in `CONCLAVE_JEPSEN_SEED`, else a random one.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a u64")),
        Err(_) => rand::thread_rng().gen_range(1..1_000_000_000),
    }
}

fn network_from_env() -> Backend {
    let text = std::env::var(NET_ENV).unwrap_or_default();
    text.parse()
        .unwrap_or_else(|error| panic!("{NET_ENV}: {error:#}"))
}

/// The verdict of a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunVerdict {
    /// Every check passed and the run was valid.
    Valid,
    /// A safety property was broken: a checker found a violation, or nodes diverged.
    Invalid,
    /// A checker could not decide (time budget): never a pass.
    Unknown,
    /// Not a valid experiment, or not live: too few operations, faults that never took effect,
    /// no leader or no progress after healing.
    Failed,
}

/// Facts about one node at the end.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeSummary {
    pub id: u64,
    pub applied_index: Option<u64>,
    pub state_digest: u64,
    pub revision: u64,
    pub term: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// "built snapshot" lines in the node's log.
    pub snapshots_built: usize,
    /// "received snapshot" lines: installs streamed from a leader.
    pub snapshots_received: usize,
}

/// What a run found; written as `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub name: String,
    pub seed: u64,
    pub verdict: RunVerdict,
    pub passed: bool,
    /// Every problem, prefixed by its kind (`safety:`, `liveness:`, `validity:`, `unknown:`).
    pub problems: Vec<String>,
    pub config: RunConfig,
    pub checks: Vec<CheckResult>,
    /// Per workload, per f, per outcome.
    pub ops: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    pub faults: Vec<FaultWindow>,
    pub nodes: Vec<NodeSummary>,
    /// Phase boundaries on the history's clock, in nanoseconds.
    pub phases: BTreeMap<String, u64>,
    pub dir: PathBuf,
    pub elapsed_ms: u64,
}

impl Results {
    /// One line for summaries: name, seed, verdict, ops, faults.
    pub fn summary_line(&self) -> String {
        let ok: u64 = self
            .ops
            .values()
            .flat_map(|fs| fs.values())
            .filter_map(|outcomes| outcomes.get("ok"))
            .sum();
        let all: u64 = self
            .ops
            .values()
            .flat_map(|fs| fs.values())
            .flat_map(|outcomes| outcomes.values())
            .sum();
        let effective = self.faults.iter().filter(|w| w.took_effect).count();
        format!(
            "{:<28} seed {:<10} {:<8} ops {:>6} ({:>6} ok) faults {:>3} ({:>3} effective) {:>5.1}s  {}",
            self.name,
            self.seed,
            format!("{:?}", self.verdict).to_lowercase(),
            all,
            ok,
            self.faults.len(),
            effective,
            self.elapsed_ms as f64 / 1000.0,
            self.dir.join("report.html").display()
        )
    }
}

/// Runs `config` and writes its folder. Errors only when the harness itself fails (a node that
/// cannot be started, a folder that cannot be written); findings about Conclave are in the
/// [`Results`].
pub async fn run(mut config: RunConfig) -> anyhow::Result<Results> {
    crate::init_tracing();
    if config.network == Backend::Netns && config.nemeses.contains(&Nemesis::Delay) {
        // Packet filters drop; delaying needs netem, which kernels (this one) may lack.
        tracing::warn!("the netns backend cannot delay links: leaving out the delay nemesis");
        config.nemeses.retain(|nemesis| *nemesis != Nemesis::Delay);
    }
    let dir = config.dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let banner = format!(
        "jepsen run `{}`: seed {} (replay with {SEED_ENV}={}), {} nodes, workloads {:?}, nemeses \
         {:?}, network {:?}; output in {}",
        config.name,
        config.seed,
        config.seed,
        config.nodes,
        config.workloads,
        config.nemeses.iter().map(|n| n.name()).collect::<Vec<_>>(),
        config.network,
        dir.display()
    );
    eprintln!("{banner}");
    tracing::info!("{banner}");

    let started = Instant::now();
    let recorder = Arc::new(Recorder::new());
    let workloads: Vec<Box<dyn Workload>> = config
        .workloads
        .iter()
        .map(|name| workload::build(name))
        .collect::<anyhow::Result<_>>()?;
    let mut run = Run {
        config: config.clone(),
        dir: dir.clone(),
        recorder: Arc::clone(&recorder),
        workloads,
        phases: BTreeMap::new(),
        problems: Vec::new(),
        nodes: Vec::new(),
        control: None,
        stop: watch::Sender::new(false),
        client_contexts: Vec::new(),
    };
    let outcome = run.phases().await;
    // Whatever happened, leave a folder to look at.
    let harness_error = outcome.err();
    if let Some(error) = &harness_error {
        run.problems
            .push(format!("harness: the run did not complete: {error:#}"));
    }
    let results = run.finish(started).await?;
    eprintln!(
        "jepsen run `{}` seed {}: {:?}",
        results.name, results.seed, results.verdict
    );
    for problem in &results.problems {
        eprintln!("  - {}", first_lines(problem, 12));
    }
    eprintln!("  report: {}", dir.join("report.html").display());
    match harness_error {
        Some(error) => Err(error.context(format!("run folder {}", dir.display()))),
        None => Ok(results),
    }
}

struct Run {
    config: RunConfig,
    dir: PathBuf,
    recorder: Arc<Recorder>,
    workloads: Vec<Box<dyn Workload>>,
    phases: BTreeMap<String, u64>,
    problems: Vec<String>,
    nodes: Vec<NodeSummary>,
    control: Option<Control>,
    stop: watch::Sender<bool>,
    client_contexts: Vec<ClientContext>,
}

impl Run {
    fn phase(&mut self, name: &str, why: &str) {
        let now = self.recorder.now_ns();
        self.phases.insert(name.to_string(), now);
        tracing::info!(phase = name, "{why}");
        if let Some(control) = self.control.as_mut() {
            control.log("phase", json!({"phase": name}));
        }
    }

    fn control(&mut self) -> &mut Control {
        self.control.as_mut().expect("the cluster is up")
    }

    async fn phases(&mut self) -> anyhow::Result<()> {
        self.phase(
            "setup",
            "start the nodes behind the fault network and initialize them",
        );
        self.setup().await?;

        self.phase("warmup", "clients start; no faults yet");
        for workload in &self.workloads {
            let context = self.client_context(workload.name());
            workload.start(context.clone());
            self.client_contexts.push(context);
        }
        tokio::time::sleep(self.config.warmup).await;

        self.phase("faults", "the nemeses take turns while the clients run");
        self.fault_phase().await?;

        self.phase(
            "heal",
            "undo every fault; a leader must be elected and serve again",
        );
        self.control().heal_everything().await?;
        let heal_deadline = Duration::from_secs(20);
        if let Err(error) = self.control().cluster.wait_for_leader(heal_deadline).await {
            self.problems
                .push(format!("liveness: no leader after healing: {error:#}"));
        }

        self.phase("quiesce", "clients keep running against the healed cluster");
        tokio::time::sleep(self.config.quiesce).await;
        self.stop.send_replace(true);
        self.phase(
            "drain",
            "clients stop; their last operations complete or time out",
        );
        for workload in &self.workloads {
            if let Err(error) = workload.drain().await {
                self.problems.push(format!(
                    "liveness: {} did not drain: {error:#}",
                    workload.name()
                ));
            }
        }

        self.phase(
            "final",
            "nodes converge; every node serves a write and a read; final reads",
        );
        self.converge().await;
        self.probe().await;
        for (workload, context) in self.workloads.iter().zip(&self.client_contexts) {
            if let Err(error) = workload.final_reads(context).await {
                self.problems.push(format!(
                    "liveness: {} final reads: {error:#}",
                    workload.name()
                ));
            }
        }
        self.phase("checks", "check the history");
        Ok(())
    }

    async fn setup(&mut self) -> anyhow::Result<()> {
        let config = &self.config;
        let mut extra_args = Vec::new();
        if let Some(mode) = &config.unsafe_mode {
            extra_args.push(format!("--unsafe-test-mode={mode}"));
        }
        // Only a run that skews clocks preloads libfaketime; without it that run cannot be one.
        let faketime = if config.nemeses.contains(&Nemesis::ClockSkew) {
            Some(crate::clock::libfaketime().context("the clock-skew nemesis needs libfaketime")?)
        } else {
            None
        };
        let cluster_config = ClusterConfig {
            heartbeat_ms: config.heartbeat_ms,
            election_timeout_ms_min: config.election_timeout_ms.0,
            election_timeout_ms_max: config.election_timeout_ms.1,
            snapshot_logs: config.snapshot_logs,
            snapshot_keep_logs: config.snapshot_keep_logs,
            leader_wait_ms: Some(config.leader_wait_ms),
            extra_args,
            faketime,
            ..ClusterConfig::new(config.nodes)
        };
        let (cluster, network) = start_cluster(cluster_config, config.network).await?;
        let election_timeout_max = Duration::from_millis(config.election_timeout_ms.1);
        let control = Control::new(
            cluster,
            network,
            Arc::clone(&self.recorder),
            &self.dir.join("nemesis.log"),
            election_timeout_max,
        )?;
        self.control = Some(control);
        Ok(())
    }

    fn client_context(&self, workload: &'static str) -> ClientContext {
        let control = self.control.as_ref().expect("the cluster is up");
        ClientContext {
            recorder: Arc::clone(&self.recorder),
            workload,
            nodes: control.cluster.api_addrs(),
            op_timeout: self.config.op_timeout,
            op_interval: self.config.op_interval,
            clients_per_node: self.config.clients_per_node,
            seed: self.config.seed,
            stop: self.stop.subscribe(),
        }
    }

    async fn fault_phase(&mut self) -> anyhow::Result<()> {
        let mut rng = StdRng::seed_from_u64(mix(self.config.seed, &[name_hash("nemesis")]));
        let deadline = Instant::now() + self.config.faults;
        let mut round: Vec<Nemesis> = Vec::new();
        let random_in = |rng: &mut StdRng, (low, high): (Duration, Duration)| {
            Duration::from_millis(rng.gen_range(low.as_millis() as u64..=high.as_millis() as u64))
        };
        if self.config.nemeses.is_empty() {
            tokio::time::sleep(self.config.faults).await;
            return Ok(());
        }
        while Instant::now() < deadline {
            tokio::time::sleep(random_in(&mut rng, self.config.quiet)).await;
            if round.is_empty() {
                round = self.config.nemeses.clone();
                round.shuffle(&mut rng);
            }
            let nemesis = round.pop().expect("refilled above");
            let mut hold = random_in(&mut rng, self.config.hold);
            if matches!(nemesis, Nemesis::PauseLeader | Nemesis::PauseFollower) {
                // Past the election timeout, so the rest of the cluster elects a new leader.
                hold = hold.max(3 * self.control().election_timeout_max);
            }
            let fault = match self.control().inject(nemesis, &mut rng).await {
                Ok(fault) => fault,
                Err(error) => {
                    let message = format!("{error:#}");
                    self.control()
                        .log("error", json!({"nemesis": nemesis, "error": message}));
                    self.control().heal_everything().await?;
                    continue;
                }
            };
            tokio::time::sleep(hold).await;
            self.control().heal(fault).await?;
        }
        Ok(())
    }

    /// Waits until every node applied the same index, and compares their state digests.
    async fn converge(&mut self) {
        let cluster = &mut self.control.as_mut().expect("the cluster is up").cluster;
        match cluster.wait_for_convergence(Duration::from_secs(30)).await {
            Ok(statuses) => {
                let applied: BTreeMap<u64, (Option<u64>, u64)> = statuses
                    .iter()
                    .map(|(id, status)| (*id, (status.applied_index, status.state_digest)))
                    .collect();
                let first = applied.values().next().copied();
                if applied.values().any(|view| Some(*view) != first) {
                    self.problems.push(format!(
                        "safety: nodes diverged: (applied index, state digest) by node {applied:?}"
                    ));
                }
                if statuses.len() < cluster.node_ids().len() {
                    self.problems.push(format!(
                        "liveness: only nodes {:?} are members at the end",
                        statuses.keys().collect::<Vec<_>>()
                    ));
                }
            }
            Err(error) => self
                .problems
                .push(format!("liveness: the nodes did not converge: {error:#}")),
        }
    }

    /// A write and a linearizable read through every node: the healed cluster serves.
    async fn probe(&mut self) {
        let nodes = self.control().cluster.api_addrs();
        for (node, addr) in nodes {
            let key = format!("jepsen/probe/{node}");
            let mut kv = crate::channel::kv_client(addr);
            let request = PutRequest {
                request_id: Some(RequestIds::new().next_id()),
                key: key.clone().into_bytes(),
                value: b"probe".to_vec(),
                ..PutRequest::default()
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            let written = loop {
                match kv.put(request.clone()).await {
                    Ok(_) => break Ok(()),
                    Err(status) if Instant::now() < deadline => {
                        tracing::debug!(node, "probe write: {status}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(status) => break Err(status),
                }
            };
            if let Err(status) = written {
                self.problems.push(format!(
                    "liveness: node {node} does not serve writes: {status}"
                ));
                continue;
            }
            match crate::read::get(&kv, key, ReadConsistency::Linearizable, Duration::from_secs(10))
                .await
            {
                Ok(response) if response.kv.as_ref().is_some_and(|kv| kv.value == b"probe") => {}
                Ok(response) => self.problems.push(format!(
                    "safety: node {node} does not read its own acknowledged probe write: {response:?}"
                )),
                Err(error) => {
                    self.problems.push(format!("liveness: node {node} does not serve reads: {error:#}"))
                }
            }
        }
    }

    /// Stops the cluster, writes the folder and decides the verdict.
    async fn finish(mut self, started: Instant) -> anyhow::Result<Results> {
        self.stop.send_replace(true);
        let events = self.recorder.events();
        let history_path = self.dir.join("history.jsonl");
        history::write_jsonl(
            &events,
            std::io::BufWriter::new(std::fs::File::create(&history_path)?),
        )?;

        let mut faults = Vec::new();
        if let Some(mut control) = self.control.take() {
            faults = control.windows.clone();
            self.nodes = node_summaries(&mut control.cluster).await;
            if let Err(error) = control.cluster.stop_all().await {
                tracing::warn!("stopping the nodes: {error:#}");
            }
            for id in control.cluster.node_ids() {
                let log = control.cluster.log_path(id);
                let copy = self.dir.join(format!("node-{id}.log"));
                if let Err(error) = std::fs::copy(&log, &copy) {
                    tracing::warn!("copy {}: {error}", log.display());
                }
                let text = std::fs::read_to_string(&copy).unwrap_or_default();
                if let Some(node) = self.nodes.iter_mut().find(|node| node.id == id) {
                    node.snapshots_built = text.matches("built snapshot").count();
                    node.snapshots_received = text.matches("received snapshot").count();
                }
            }
            control.network.shutdown().await;
            control.cluster.shutdown().await?;
        }

        self.phases.insert("end".into(), self.recorder.now_ns());
        let checks: Vec<CheckResult> = self
            .workloads
            .iter()
            .map(|workload| {
                let result = workload.check(&events, self.config.check_budget);
                tracing::info!(workload = workload.name(), verdict = ?result.verdict, "checked");
                result
            })
            .collect();
        let ops: BTreeMap<String, _> = self
            .workloads
            .iter()
            .map(|workload| {
                (
                    workload.name().to_string(),
                    outcome_counts(&events, workload.name()),
                )
            })
            .collect();
        self.validity(&events, &faults);

        let mut problems = Vec::new();
        for check in &checks {
            let kind = match check.verdict {
                Verdict::Valid => continue,
                Verdict::Invalid => "safety",
                Verdict::Unknown => "unknown",
            };
            for problem in &check.problems {
                problems.push(format!("{kind}: {}: {problem}", check.workload));
            }
        }
        problems.append(&mut self.problems);
        let has = |kind: &str| problems.iter().any(|p| p.starts_with(kind));
        let verdict = if has("safety:") {
            RunVerdict::Invalid
        } else if has("liveness:") || has("validity:") || has("harness:") {
            RunVerdict::Failed
        } else if has("unknown:") {
            RunVerdict::Unknown
        } else {
            RunVerdict::Valid
        };
        let results = Results {
            name: self.config.name.clone(),
            seed: self.config.seed,
            verdict,
            passed: verdict == RunVerdict::Valid,
            problems,
            config: self.config.clone(),
            checks,
            ops,
            faults,
            nodes: self.nodes,
            phases: self.phases,
            dir: self.dir.clone(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        std::fs::write(
            self.dir.join("results.json"),
            serde_json::to_string_pretty(&results)?,
        )?;
        std::fs::write(
            self.dir.join("report.html"),
            report::html(&results, &events),
        )?;
        Ok(results)
    }

    /// The rules that make a run an experiment: enough operations, faults that took effect, and
    /// operations that succeeded after the heal.
    fn validity(&mut self, events: &[Event], faults: &[FaultWindow]) {
        let healed = self.phases.get("quiesce").copied().unwrap_or(u64::MAX);
        for workload in &self.workloads {
            let name = workload.name();
            let Ok(operations) = history::pair(events, Some(name)) else {
                continue;
            };
            let during_run = |f: &str| f != FINAL_READ && !f.starts_with("final-");
            let ok = operations
                .iter()
                .filter(|o| o.is_ok() && during_run(&o.invoke.f))
                .count();
            if ok < self.config.min_ok_ops {
                self.problems.push(format!(
                    "validity: {name}: only {ok} ok operations, fewer than the {} a run needs",
                    self.config.min_ok_ops
                ));
            }
            let after_heal = operations
                .iter()
                .filter(|o| o.is_ok() && during_run(&o.invoke.f) && o.invoke.time_ns >= healed)
                .count();
            if after_heal == 0 {
                self.problems.push(format!(
                    "liveness: {name}: no operation invoked after the heal succeeded"
                ));
            }
        }
        if !self.config.nemeses.is_empty() {
            if faults.is_empty() {
                self.problems.push("validity: no fault was injected".into());
            }
            for nemesis in &self.config.nemeses {
                let windows: Vec<&FaultWindow> =
                    faults.iter().filter(|w| w.nemesis == *nemesis).collect();
                if !windows.is_empty() && !windows.iter().any(|w| w.took_effect) {
                    self.problems.push(format!(
                        "validity: {} never took effect in {} attempt(s): {}",
                        nemesis.name(),
                        windows.len(),
                        windows
                            .iter()
                            .map(|w| w.evidence.as_str())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ));
                }
            }
            let effective = faults.iter().filter(|w| w.took_effect).count();
            if !faults.is_empty() && effective * 2 < faults.len() {
                self.problems.push(format!(
                    "validity: only {effective} of {} faults took effect",
                    faults.len()
                ));
            }
        }
    }
}

/// Starts and initializes a cluster whose nodes reach each other only through `backend`: the
/// proxies (`--peer-dial` through them) or one network namespace per node. Waits for a leader.
pub async fn start_cluster(
    config: ClusterConfig,
    backend: Backend,
) -> anyhow::Result<(TestCluster, Network)> {
    let mut cluster = TestCluster::prepare(config).await?;
    let network = match backend {
        Backend::Proxy => {
            let proxies = ProxyNetwork::start(&cluster.peer_addrs()).await?;
            for id in cluster.node_ids() {
                cluster.add_node_args(id, proxies.dial_args(id));
            }
            Network::Proxy(proxies)
        }
        Backend::Netns => {
            let namespaces = NamespaceNetwork::create(cluster.node_ids())?;
            for id in cluster.node_ids() {
                let ip = std::net::IpAddr::V4(namespaces.ip(id));
                let api_addr = std::net::SocketAddr::new(ip, cluster.api_addr(id).port());
                let peer_addr = std::net::SocketAddr::new(ip, cluster.peer_addrs()[&id].port());
                cluster.set_node_network(id, api_addr, peer_addr, namespaces.launcher(id));
            }
            Network::Netns(namespaces)
        }
    };
    cluster.start_prepared().await?;
    cluster.initialize().await?;
    cluster
        .wait_for_leader(crate::cluster::LEADER_TIMEOUT)
        .await?;
    Ok((cluster, network))
}

async fn node_summaries(cluster: &mut TestCluster) -> Vec<NodeSummary> {
    let mut summaries = Vec::new();
    for id in cluster.node_ids() {
        let mut summary = NodeSummary {
            id,
            ..NodeSummary::default()
        };
        if let Ok(status) = cluster.status(id).await {
            summary.applied_index = status.applied_index;
            summary.state_digest = status.state_digest;
            summary.revision = status.revision;
            summary.term = status.term;
            summary.snapshot_index = status.snapshot_index;
            summary.purged_index = status.purged_index;
        }
        summaries.push(summary);
    }
    summaries
}

fn first_lines(text: &str, lines: usize) -> String {
    let mut kept: Vec<&str> = text.lines().take(lines).collect();
    if text.lines().count() > lines {
        kept.push("...");
    }
    kept.join("\n    ")
}

/// Reads a run folder's results back (for the campaign summary).
pub fn read_results(dir: &Path) -> anyhow::Result<Results> {
    let text = std::fs::read_to_string(dir.join("results.json"))?;
    Ok(serde_json::from_str(&text)?)
}
