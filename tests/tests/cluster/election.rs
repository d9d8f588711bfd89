//! Leader election on a new cluster.

use std::time::Duration;

use anyhow::{anyhow, ensure};
use conclave_proto::v1::{InitializeRequest, Role};
use conclave_tests::cluster::{statuses_of, LEADER_TIMEOUT};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterConfig::new(3)).await?;

    tracing::info!("pristine nodes are not initialized and know no leader");
    for id in cluster.node_ids() {
        let status = cluster.status(id).await?;
        assert!(
            !status.initialized,
            "node {id} is initialized before Initialize: {status:?}"
        );
        assert_eq!(
            status.leader_id, None,
            "node {id} knows a leader before Initialize"
        );
        assert!(
            status.members.is_empty(),
            "node {id} has members before Initialize: {status:?}"
        );
    }

    tracing::info!("Initialize through node 1 with all three as voters; a leader must be elected");
    cluster.initialize().await?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;

    tracing::info!(
        leader,
        "every node must come to agree on that leader and its term, and exactly one leads"
    );
    let addrs: Vec<_> = cluster.api_addrs().into_iter().collect();
    let statuses = eventually(
        "all three nodes to agree on the leader",
        Duration::from_secs(5),
        || {
            let addrs = addrs.clone();
            async move {
                let statuses = statuses_of(&addrs).await;
                ensure!(statuses.len() == 3, "{} of 3 answered", statuses.len());
                let leader_term = statuses[&leader].term;
                let disagreeing: Vec<_> = statuses
                    .values()
                    .filter(|status| status.leader_id != Some(leader) || status.term != leader_term)
                    .map(|status| (status.node_id, status.leader_id, status.term))
                    .collect();
                ensure!(
                    disagreeing.is_empty(),
                    "(node, leader, term) not agreeing: {disagreeing:?}"
                );
                Ok(statuses)
            }
        },
    )
    .await?;
    let leaders: Vec<u64> = statuses
        .values()
        .filter(|status| status.role == Role::Leader as i32)
        .map(|status| status.node_id)
        .collect();
    assert_eq!(
        leaders,
        vec![leader],
        "exactly the agreed leader must report the leader role"
    );
    let term = statuses[&leader].term;
    assert!(
        term >= 1,
        "a leader is elected in a term after 0, got {term}"
    );
    for status in statuses.values() {
        assert!(
            status.initialized,
            "node {} is not initialized: {status:?}",
            status.node_id
        );
        if status.node_id != leader {
            assert_eq!(
                status.role,
                Role::Follower as i32,
                "node {}: {status:?}",
                status.node_id
            );
        }
        let mut voters: Vec<u64> = status
            .members
            .iter()
            .filter(|member| member.voter)
            .map(|member| member.node_id)
            .collect();
        voters.sort_unstable();
        assert_eq!(
            voters,
            vec![1, 2, 3],
            "node {} members: {:?}",
            status.node_id,
            status.members
        );
    }
    assert_eq!(
        statuses[&leader].leader_api_addr.as_deref(),
        Some(cluster.api_addr(leader).to_string().as_str()),
        "the leader's own status names its API address"
    );

    tracing::info!("a second Initialize must fail with ALREADY_EXISTS: the cluster exists");
    let members: Vec<_> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.member(id))
        .collect();
    let error = cluster
        .cluster_client(2)
        .initialize(InitializeRequest { members })
        .await
        .err()
        .ok_or_else(|| anyhow!("a second Initialize succeeded"))?;
    assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");

    cluster.shutdown().await
}
