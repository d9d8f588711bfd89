//! Catch-up by snapshot: a follower that was down while the others snapshotted and purged the log
//! it missed must be sent a snapshot, and then serve every key.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{ensure, Context as _};
use conclave_proto::v1::ReadConsistency;
use conclave_tests::poll::eventually;
use conclave_tests::read::{get, list_all};
use conclave_tests::writer::Writer;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{key, text, value, CATCH_UP_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT};

/// Enough writes for several snapshots at `--snapshot-logs 50`.
const KEYS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_catch_up() -> anyhow::Result<()> {
    let config = ClusterConfig {
        snapshot_logs: Some(50),
        snapshot_keep_logs: Some(0),
        ..ClusterConfig::new(3)
    };
    let mut cluster = TestCluster::start_initialized(config).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];

    tracing::info!(
        follower,
        "stop a follower before the cluster has written anything much"
    );
    let before = cluster.status(follower).await?;
    let follower_last_log = before.last_log_index.unwrap_or(0);
    cluster.stop(follower).await?;

    tracing::info!(
        keys = KEYS,
        "write enough for the others to snapshot and purge the log"
    );
    let mut writer = Writer::new(
        cluster
            .api_addrs()
            .into_iter()
            .filter(|(id, _)| *id != follower)
            .collect(),
    );
    let mut acknowledged = BTreeMap::new();
    for index in 0..KEYS {
        let response = writer
            .put(
                key("snapshot/", index),
                value("snapshot/", index),
                WRITE_TIMEOUT,
            )
            .await?;
        acknowledged.insert(
            key("snapshot/", index),
            response.header.context("no header")?.revision,
        );
    }

    tracing::info!(
        follower_last_log,
        "the leader must have snapshotted and purged past the follower's log"
    );
    let leader_status = eventually(
        "the leader to purge the log the follower lacks",
        CATCH_UP_TIMEOUT,
        || {
            let cluster = &cluster;
            async move {
                let status = cluster.status(leader).await?;
                let snapshot = status.snapshot_index.unwrap_or(0);
                let purged = status.purged_index.unwrap_or(0);
                ensure!(
                    snapshot > follower_last_log && purged > follower_last_log,
                    "snapshot_index {snapshot}, purged_index {purged}"
                );
                Ok(status)
            }
        },
    )
    .await?;
    let committed = leader_status
        .committed_index
        .context("leader has no committed index")?;

    tracing::info!(
        follower,
        committed,
        "restart the follower; only a snapshot can bring it up to date"
    );
    cluster.restart(follower).await?;
    let caught_up = cluster
        .wait_for_applied(follower, committed, CATCH_UP_TIMEOUT)
        .await?;
    let snapshot_index = caught_up.snapshot_index.unwrap_or(0);
    assert!(
        snapshot_index > follower_last_log,
        "the follower must have installed a snapshot past its old log: {caught_up:?}"
    );

    tracing::info!(
        follower,
        "the follower serves every key, from its own state"
    );
    let kv = cluster.kv(follower);
    for (key, revision) in &acknowledged {
        let response = get(
            &kv,
            key.clone(),
            ReadConsistency::Serializable,
            READ_TIMEOUT,
        )
        .await?;
        let found = response
            .kv
            .with_context(|| format!("follower lacks {}", text(key)))?;
        let index: usize = text(&key["snapshot/".len()..]).parse()?;
        assert_eq!(found.value, value("snapshot/", index), "{}", text(key));
        assert_eq!(found.mod_revision, *revision, "{}", text(key));
    }
    let listed = list_all(
        &kv,
        b"snapshot/".to_vec(),
        ReadConsistency::Serializable,
        0,
        READ_TIMEOUT,
    )
    .await?;
    assert_eq!(
        listed.len(),
        KEYS,
        "the follower lists {} keys",
        listed.len()
    );

    tracing::info!("at rest, all three nodes have the same state");
    let statuses = cluster.wait_for_convergence(CATCH_UP_TIMEOUT).await?;
    let digests: BTreeSet<u64> = statuses
        .values()
        .map(|status| status.state_digest)
        .collect();
    assert_eq!(digests.len(), 1, "state digests differ: {statuses:#?}");

    cluster.shutdown().await
}
