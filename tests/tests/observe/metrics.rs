//! `GET /metrics` on every node of a three-node cluster: valid text exposition, the families an
//! operator alerts on, and values that agree with the cluster.

use anyhow::{ensure, Context};
use conclave_tests::fleet::{task_spec, Fleet};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::exposition::{self, Exposition, Kind};
use crate::SETTLE_TIMEOUT;

/// Families every node serves, with their type.
const FAMILIES: &[(&str, Kind)] = &[
    ("conclave_raft_term", Kind::Gauge),
    ("conclave_raft_state", Kind::Gauge),
    ("conclave_raft_is_leader", Kind::Gauge),
    ("conclave_raft_has_leader", Kind::Gauge),
    ("conclave_raft_leader_id", Kind::Gauge),
    ("conclave_raft_last_log_index", Kind::Gauge),
    ("conclave_raft_commit_index", Kind::Gauge),
    ("conclave_raft_applied_index", Kind::Gauge),
    ("conclave_raft_apply_lag_entries", Kind::Gauge),
    ("conclave_raft_snapshot_index", Kind::Gauge),
    ("conclave_raft_voters", Kind::Gauge),
    ("conclave_raft_leader_changes_seen_total", Kind::Counter),
    ("conclave_raft_elections_started_total", Kind::Counter),
    ("conclave_raft_vote_requests_total", Kind::Counter),
    ("conclave_raft_append_batch_entries", Kind::Histogram),
    ("conclave_raft_apply_batch_entries", Kind::Histogram),
    ("conclave_raft_write_batch_entries", Kind::Histogram),
    ("conclave_storage_fsync_seconds", Kind::Histogram),
    ("conclave_storage_log_appended_bytes_total", Kind::Counter),
    ("conclave_snapshot_build_seconds", Kind::Histogram),
    ("conclave_snapshot_install_seconds", Kind::Histogram),
    ("conclave_snapshot_size_bytes", Kind::Gauge),
    ("grpc_server_handled_total", Kind::Counter),
    ("grpc_server_handling_seconds", Kind::Histogram),
    ("conclave_kv_keys", Kind::Gauge),
    ("conclave_kv_revision", Kind::Gauge),
    ("conclave_tasks", Kind::Gauge),
    ("conclave_queue_pending_tasks", Kind::Gauge),
    ("conclave_queue_oldest_pending_age_seconds", Kind::Gauge),
    ("conclave_dead_letter_tasks", Kind::Gauge),
    ("conclave_metrics_queues_omitted", Kind::Gauge),
    ("conclave_agents", Kind::Gauge),
    ("conclave_agents_drained", Kind::Gauge),
    ("conclave_agents_breaker_open", Kind::Gauge),
    ("conclave_decisions_open", Kind::Gauge),
    ("conclave_workflows", Kind::Gauge),
    ("conclave_locks_held", Kind::Gauge),
    ("conclave_lock_waiters", Kind::Gauge),
    ("process_cpu_seconds_total", Kind::Counter),
    ("process_resident_memory_bytes", Kind::Gauge),
    ("process_virtual_memory_bytes", Kind::Gauge),
    ("process_open_fds", Kind::Gauge),
    ("process_max_fds", Kind::Gauge),
    ("process_start_time_seconds", Kind::Gauge),
];

const QUEUE: &str = "observed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_valid_prometheus_metrics() -> anyhow::Result<()> {
    let config = ClusterConfig {
        metrics: true,
        ..ClusterConfig::new(3)
    };
    let mut cluster = TestCluster::start_initialized(config).await?;
    let leader = cluster.wait_for_leader(SETTLE_TIMEOUT).await?;
    let nodes = cluster.node_ids();

    tracing::info!("submit two tasks no agent can take: the queue has a backlog");
    let mut fleet = Fleet::new(cluster.api_addrs());
    for payload in ["one", "two"] {
        fleet
            .submit(task_spec(QUEUE, payload.as_bytes(), &["nobody-has-this"]))
            .await?;
    }

    tracing::info!("every node's scrape parses, passes every property and has every family");
    let mut scrapes = Vec::new();
    for &node in &nodes {
        let addr = cluster
            .metrics_addr(node)
            .context("the cluster was configured with metrics")?;
        let exposition = eventually("the tasks applied on this node", SETTLE_TIMEOUT, || async {
            let text = tokio::task::spawn_blocking(move || exposition::scrape(addr)).await??;
            let exposition = exposition::parse(&text)?;
            let pending =
                exposition.value("conclave_tasks", &[("queue", QUEUE), ("state", "pending")])?;
            ensure!(pending == 2.0, "node {node}: {pending} pending tasks");
            Ok((text, exposition))
        })
        .await?;
        let (text, exposition) = exposition;
        exposition::check_all(&exposition).with_context(|| format!("node {node}"))?;
        for (name, kind) in FAMILIES {
            let family = exposition
                .family(name)
                .with_context(|| format!("node {node}"))?;
            ensure!(
                family.kind == Some(*kind),
                "node {node}: {name} is {:?}, not {kind:?}",
                family.kind
            );
            ensure!(
                !family.samples.is_empty(),
                "node {node}: {name} has no sample"
            );
        }
        promtool_check(&text).with_context(|| format!("node {node}"))?;
        scrapes.push((node, exposition));
    }

    tracing::info!(leader, "the values agree with the cluster");
    check_raft(&scrapes, leader)?;
    for (node, exposition) in &scrapes {
        let node = *node;
        ensure!(
            exposition.value("conclave_queue_pending_tasks", &[("queue", QUEUE)])? == 2.0,
            "node {node}: backlog"
        );
        let age = exposition.value(
            "conclave_queue_oldest_pending_age_seconds",
            &[("queue", QUEUE)],
        )?;
        ensure!(
            (0.0..60.0).contains(&age),
            "node {node}: oldest pending age {age}"
        );
        ensure!(
            exposition.value("conclave_storage_fsync_seconds_count", &[])? > 0.0,
            "node {node}: no fsync was timed"
        );
        // Every node answered the harness's Status calls.
        let status_calls = exposition.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", "conclave.v1.Cluster"),
                ("grpc_method", "Status"),
                ("grpc_code", "OK"),
            ],
        )?;
        ensure!(
            status_calls >= 1.0,
            "node {node}: {status_calls} Status calls"
        );
        ensure!(
            exposition.value("process_resident_memory_bytes", &[])? > 1e6,
            "node {node}: resident memory"
        );
        ensure!(
            exposition.value("process_open_fds", &[])? > 0.0,
            "node {node}: open fds"
        );
    }
    let leader_scrape = &scrapes
        .iter()
        .find(|(node, _)| *node == leader)
        .context("leader")?
        .1;
    let submits = leader_scrape.value(
        "grpc_server_handled_total",
        &[
            ("grpc_service", "conclave.v1.Tasks"),
            ("grpc_method", "Submit"),
            ("grpc_code", "OK"),
        ],
    )?;
    ensure!(submits >= 1.0, "the leader answered {submits} Submits");
    cluster.shutdown().await
}

/// One leader, named alike by every node, in the same term; indexes in order.
fn check_raft(scrapes: &[(u64, Exposition)], leader: u64) -> anyhow::Result<()> {
    let mut leaders = 0;
    let term = scrapes[0].1.value("conclave_raft_term", &[])?;
    for (node, exposition) in scrapes {
        let node = *node;
        let is_leader = exposition.value("conclave_raft_is_leader", &[])?;
        leaders += is_leader as u64;
        ensure!(
            (is_leader == 1.0) == (node == leader),
            "node {node}: is_leader {is_leader}, the leader is {leader}"
        );
        let state = if node == leader { "leader" } else { "follower" };
        ensure!(
            exposition.value("conclave_raft_state", &[("state", state)])? == 1.0,
            "node {node}: not a {state}"
        );
        ensure!(
            exposition.value("conclave_raft_leader_id", &[])? == leader as f64,
            "node {node} names another leader"
        );
        ensure!(exposition.value("conclave_raft_has_leader", &[])? == 1.0);
        ensure!(
            exposition.value("conclave_raft_term", &[])? == term,
            "node {node}: term"
        );
        ensure!(
            exposition.value("conclave_raft_voters", &[])? == 3.0,
            "node {node}: voters"
        );
        let committed = exposition.value("conclave_raft_commit_index", &[])?;
        let applied = exposition.value("conclave_raft_applied_index", &[])?;
        let last = exposition.value("conclave_raft_last_log_index", &[])?;
        ensure!(
            0.0 < applied && applied <= committed && committed <= last,
            "node {node}: applied {applied}, committed {committed}, last {last}"
        );
        ensure!(
            exposition.value("conclave_raft_leader_changes_seen_total", &[])? >= 1.0,
            "node {node} saw no leader"
        );
    }
    ensure!(leaders == 1, "{leaders} nodes report leading");
    let leader_scrape = &scrapes
        .iter()
        .find(|(node, _)| *node == leader)
        .context("leader")?
        .1;
    ensure!(
        leader_scrape.value("conclave_raft_elections_started_total", &[])? >= 1.0,
        "the leader started no election"
    );
    let age = leader_scrape.value("conclave_raft_quorum_ack_age_seconds", &[])?;
    ensure!(age < 5.0, "the leader's quorum acknowledged it {age} s ago");
    Ok(())
}

/// `promtool check metrics` (Debian's `prometheus` package) on the text, when it is installed.
fn promtool_check(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        tracing::info!("promtool is not installed: skipping `promtool check metrics`");
        return Ok(());
    };
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
