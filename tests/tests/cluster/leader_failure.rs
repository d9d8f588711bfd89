//! Losing the leader to SIGKILL: a new leader serves writes, acknowledged writes survive, and the
//! old leader rejoins as a follower when it comes back.

use std::time::Duration;

use anyhow::Context as _;
use conclave_proto::v1::{ReadConsistency, Role};
use conclave_tests::cluster::LEADER_TIMEOUT;
use conclave_tests::read::get;
use conclave_tests::{ClusterConfig, TestCluster};
use tokio::time::Instant;

use crate::{key, value, CATCH_UP_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT};

const KEYS: usize = 20;
/// Bound on the first write acknowledged after the kill: many election timeouts (300-600 ms).
const FAILOVER_MAX: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let old_leader = cluster.leader().await?;
    let mut writer = cluster.writer();

    tracing::info!(
        old_leader,
        keys = KEYS,
        "write keys and keep each acknowledged revision"
    );
    let mut acknowledged = Vec::new();
    for index in 0..KEYS {
        let response = writer
            .put(
                key("failover/", index),
                value("failover/", index),
                WRITE_TIMEOUT,
            )
            .await?;
        acknowledged.push(response.header.context("put without header")?.revision);
    }

    tracing::info!(
        old_leader,
        "SIGKILL the leader; a new one must serve writes within {FAILOVER_MAX:?}"
    );
    let killed_at = Instant::now();
    cluster.kill(old_leader)?;
    let new_leader = cluster.wait_for_leader(FAILOVER_MAX).await?;
    assert_ne!(new_leader, old_leader, "a killed node cannot lead");
    let after = writer
        .put(b"failover/after".to_vec(), b"after".to_vec(), FAILOVER_MAX)
        .await?;
    let failover = killed_at.elapsed();
    tracing::info!(
        new_leader,
        ?failover,
        "first write after the kill acknowledged"
    );
    assert!(failover < FAILOVER_MAX, "failover took {failover:?}");
    let after_revision = after.header.context("put without header")?.revision;
    assert!(
        after_revision > *acknowledged.last().expect("keys were written"),
        "revisions go on increasing across leaders"
    );

    tracing::info!(
        "every write acknowledged before the kill is readable linearizably on both survivors"
    );
    for id in cluster.running_node_ids() {
        let kv = cluster.kv(id);
        for (index, revision) in acknowledged.iter().enumerate() {
            let response = get(
                &kv,
                key("failover/", index),
                ReadConsistency::Linearizable,
                READ_TIMEOUT,
            )
            .await?;
            let kv = response
                .kv
                .with_context(|| format!("node {id} lost acknowledged key {index}"))?;
            assert_eq!(kv.value, value("failover/", index), "node {id} key {index}");
            assert_eq!(kv.mod_revision, *revision, "node {id} key {index}");
        }
    }

    tracing::info!(
        old_leader,
        "the old leader restarts, follows the new leader and has every write"
    );
    cluster.restart(old_leader).await?;
    let statuses = cluster.wait_for_convergence(CATCH_UP_TIMEOUT).await?;
    let rejoined = &statuses[&old_leader];
    assert_eq!(rejoined.role, Role::Follower as i32, "{rejoined:?}");
    assert_eq!(rejoined.revision, after_revision, "{rejoined:?}");
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    assert_eq!(rejoined.state_digest, statuses[&leader].state_digest);

    cluster.shutdown().await
}
