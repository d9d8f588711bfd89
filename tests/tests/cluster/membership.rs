//! Membership changes: add a learner, promote it, remove a voter, and keep serving throughout.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_proto::v1::{PutRequest, ReadConsistency, Role};
use conclave_tests::poll::eventually;
use conclave_tests::read::get;
use conclave_tests::writer::{RequestIds, Writer};
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::Code;

use crate::{key, value, CATCH_UP_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT};

const KEYS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let mut writer = cluster.writer();
    for index in 0..KEYS {
        writer
            .put(
                key("members/a/", index),
                value("members/a/", index),
                WRITE_TIMEOUT,
            )
            .await?;
    }

    tracing::info!("start node 4 and add it as a learner; AddLearner returns once it caught up");
    let new_node = cluster.add_node().await?;
    let added = cluster.add_learner(leader, new_node).await?;
    let learner = added
        .members
        .iter()
        .find(|member| member.node_id == new_node)
        .context("AddLearner's membership lacks the learner")?;
    assert!(!learner.voter, "a learner is no voter: {added:?}");
    assert_eq!(voter_ids(&added.members), BTreeSet::from([1, 2, 3]));
    let committed = cluster
        .status(leader)
        .await?
        .committed_index
        .context("no committed index")?;
    let status = cluster
        .wait_for_applied(new_node, committed, CATCH_UP_TIMEOUT)
        .await?;
    assert_eq!(status.role, Role::Learner as i32, "{status:?}");
    let kv = cluster.kv(new_node);
    for index in 0..KEYS {
        let response = get(
            &kv,
            key("members/a/", index),
            ReadConsistency::Serializable,
            READ_TIMEOUT,
        )
        .await?;
        assert_eq!(
            response.kv.map(|kv| kv.value),
            Some(value("members/a/", index))
        );
    }

    tracing::info!("promote the learner through a follower (forwarded); four voters now");
    let via = cluster.followers().await?[0];
    let promoted = cluster.promote(via, &[new_node]).await?;
    assert_eq!(
        voter_ids(&promoted.members),
        BTreeSet::from([1, 2, 3, new_node])
    );
    let new_leader = cluster.leader().await?;
    let removed = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != new_leader && *id != new_node)
        .context("a voter other than the leader and the new node")?;

    tracing::info!(
        removed,
        "remove a voter that is not the leader; three voters remain"
    );
    let after_remove = cluster.remove(new_leader, &[removed]).await?;
    assert!(
        after_remove
            .members
            .iter()
            .all(|member| member.node_id != removed),
        "Remove's membership still has node {removed}: {after_remove:?}"
    );
    let remaining: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != removed)
        .collect();
    assert_eq!(
        voter_ids(&after_remove.members),
        remaining.iter().copied().collect()
    );

    tracing::info!(
        ?remaining,
        "every remaining member's status must list exactly the remaining voters"
    );
    for id in &remaining {
        let id = *id;
        eventually(
            &format!("node {id} to apply the removal"),
            CATCH_UP_TIMEOUT,
            || {
                let cluster = &cluster;
                let remaining = &remaining;
                async move {
                    let status = cluster.status(id).await?;
                    let voters = voter_ids(&status.members);
                    ensure!(
                        voters == remaining.iter().copied().collect::<BTreeSet<_>>()
                            && status.members.len() == remaining.len(),
                        "members {:?}",
                        status.members
                    );
                    Ok(())
                }
            },
        )
        .await?;
    }

    tracing::info!(
        "the remaining three keep serving writes and linearizable reads, through each of them"
    );
    let mut writer = Writer::new(
        cluster
            .api_addrs()
            .into_iter()
            .filter(|(id, _)| *id != removed)
            .collect(),
    );
    for index in 0..KEYS {
        writer
            .put(
                key("members/b/", index),
                value("members/b/", index),
                WRITE_TIMEOUT,
            )
            .await?;
    }
    for id in &remaining {
        let kv = cluster.kv(*id);
        for index in 0..KEYS {
            let response = get(
                &kv,
                key("members/b/", index),
                ReadConsistency::Linearizable,
                READ_TIMEOUT,
            )
            .await?;
            assert_eq!(
                response.kv.map(|kv| kv.value),
                Some(value("members/b/", index))
            );
        }
    }

    tracing::info!(
        removed,
        "the removed node must refuse writes, with FAILED_PRECONDITION"
    );
    let mut request_ids = RequestIds::new();
    let refused = PutRequest {
        request_id: Some(request_ids.next_id()),
        key: b"members/refused".to_vec(),
        value: b"must not be written".to_vec(),
        session_id: 0,
        fence: None,
    };
    let removed_kv = cluster.kv(removed);
    let code = eventually(
        "the removed node to answer FAILED_PRECONDITION",
        Duration::from_secs(5),
        || {
            let mut client = removed_kv.clone();
            let request = refused.clone();
            async move {
                match client.put(request).await {
                    Ok(response) => panic!("removed node {removed} accepted a write: {response:?}"),
                    Err(status) if status.code() == Code::FailedPrecondition => {
                        // The mark a client acts on to try another node.
                        let reason = status.metadata().get(conclave_proto::REASON_METADATA);
                        assert_eq!(
                            reason.map(|v| v.as_bytes()),
                            Some(conclave_proto::REASON_NODE_REMOVED.as_bytes()),
                            "{status:?}"
                        );
                        Ok(status.code())
                    }
                    Err(status) => Err(anyhow::anyhow!("{status:?}")),
                }
            }
        },
    )
    .await?;
    assert_eq!(code, Code::FailedPrecondition);
    let leader = cluster.leader().await?;
    let response = get(
        &cluster.kv(leader),
        refused.key.clone(),
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await?;
    assert!(
        response.kv.is_none(),
        "a write refused by the removed node was applied: {response:?}"
    );

    cluster.shutdown().await
}

fn voter_ids(members: &[conclave_proto::v1::Member]) -> BTreeSet<u64> {
    members
        .iter()
        .filter(|member| member.voter)
        .map(|member| member.node_id)
        .collect()
}
