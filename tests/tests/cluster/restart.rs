//! Restarts from the data directory: a follower that missed writes catches up, and a whole
//! cluster stopped and started again keeps every acknowledged write.

use std::collections::BTreeSet;

use anyhow::Context as _;
use conclave_proto::v1::ReadConsistency;
use conclave_tests::cluster::LEADER_TIMEOUT;
use conclave_tests::read::{get, list_all};
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{key, value, CATCH_UP_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT};

const KEYS_PER_PHASE: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_data_dir() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let follower = cluster.followers().await?[0];
    let mut writer = cluster.writer();
    let mut acknowledged: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();

    tracing::info!("write the first keys while every node is up");
    for index in 0..KEYS_PER_PHASE {
        let (key, value) = (key("restart/a/", index), value("restart/a/", index));
        let response = writer
            .put(key.clone(), value.clone(), WRITE_TIMEOUT)
            .await?;
        acknowledged.push((key, value, response.header.context("no header")?.revision));
    }

    tracing::info!(
        follower,
        "stop a follower (SIGTERM) and write more: the other two are a quorum"
    );
    cluster.stop(follower).await?;
    for index in 0..KEYS_PER_PHASE {
        let (key, value) = (key("restart/b/", index), value("restart/b/", index));
        let response = writer
            .put(key.clone(), value.clone(), WRITE_TIMEOUT)
            .await?;
        acknowledged.push((key, value, response.header.context("no header")?.revision));
    }

    tracing::info!(
        follower,
        "restart the follower from its data directory; it must catch up"
    );
    cluster.restart(follower).await?;
    let leader = cluster.leader().await?;
    let committed = cluster
        .status(leader)
        .await?
        .committed_index
        .context("no committed index")?;
    cluster
        .wait_for_applied(follower, committed, CATCH_UP_TIMEOUT)
        .await?;
    assert_serves(
        &cluster,
        follower,
        &acknowledged,
        ReadConsistency::Serializable,
    )
    .await?;

    tracing::info!("stop every node, start them all again: every acknowledged write must remain");
    cluster.stop_all().await?;
    cluster.restart_all().await?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    for id in cluster.node_ids() {
        assert_serves(&cluster, id, &acknowledged, ReadConsistency::Linearizable).await?;
    }

    tracing::info!("the restarted cluster takes writes, continuing the revision sequence");
    let last_revision = acknowledged.last().expect("keys were written").2;
    let response = writer
        .put(b"restart/c".to_vec(), b"after".to_vec(), WRITE_TIMEOUT)
        .await?;
    let revision = response.header.context("no header")?.revision;
    assert_eq!(
        revision,
        last_revision + 1,
        "the first write after the restart"
    );
    let statuses = cluster.wait_for_convergence(CATCH_UP_TIMEOUT).await?;
    let digests: BTreeSet<u64> = statuses
        .values()
        .map(|status| status.state_digest)
        .collect();
    assert_eq!(digests.len(), 1, "state digests differ: {statuses:#?}");

    cluster.shutdown().await
}

/// Asserts that node `id` serves exactly the `acknowledged` keys under `restart/`, each with its
/// value and mod_revision.
async fn assert_serves(
    cluster: &TestCluster,
    id: u64,
    acknowledged: &[(Vec<u8>, Vec<u8>, u64)],
    consistency: ReadConsistency,
) -> anyhow::Result<()> {
    let kv = cluster.kv(id);
    for (key, value, revision) in acknowledged {
        let response = get(&kv, key.clone(), consistency, READ_TIMEOUT).await?;
        let found = response
            .kv
            .with_context(|| format!("node {id} lost {}", crate::text(key)))?;
        assert_eq!(&found.value, value, "node {id} {}", crate::text(key));
        assert_eq!(
            found.mod_revision,
            *revision,
            "node {id} {}",
            crate::text(key)
        );
    }
    let listed = list_all(&kv, b"restart/".to_vec(), consistency, 7, READ_TIMEOUT).await?;
    let listed_keys: Vec<&[u8]> = listed.iter().map(|kv| kv.key.as_slice()).collect();
    let expected_keys: Vec<&[u8]> = acknowledged
        .iter()
        .map(|(key, _, _)| key.as_slice())
        .collect();
    assert_eq!(
        listed_keys, expected_keys,
        "node {id} lists other keys than were written"
    );
    Ok(())
}
