//! Linearizable reads across leader changes: a read that starts after a write was acknowledged
//! returns it (or something newer), on any node, even right after the leader changed.

use anyhow::Context as _;
use conclave_proto::v1::{GetResponse, ListRequest, ReadConsistency, TransferLeaderRequest};
use conclave_tests::poll::retry_transient;
use conclave_tests::read::get;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{text, READ_TIMEOUT, WRITE_TIMEOUT};

const KEY: &[u8] = b"linearizable/key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_read_after_leader_change() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut writer = cluster.writer();
    let old_leader = cluster.leader().await?;

    tracing::info!(
        old_leader,
        "write v1, then transfer leadership away from the leader"
    );
    let v1 = writer
        .put(KEY.to_vec(), b"v1".to_vec(), WRITE_TIMEOUT)
        .await?;
    let v1_revision = v1.header.context("no header")?.revision;
    let target = cluster.followers().await?[0];
    let transferred = retry_transient("transfer leader", WRITE_TIMEOUT, || {
        let mut client = cluster.cluster_client(old_leader);
        async move {
            client
                .transfer_leader(TransferLeaderRequest { to_node_id: target })
                .await
        }
    })
    .await?
    .into_inner();
    assert_eq!(
        transferred.leader_id, target,
        "TransferLeader returned {transferred:?}"
    );

    tracing::info!(
        target,
        "at once, a linearizable Get on every node returns v1, never older"
    );
    for id in cluster.node_ids() {
        let response = linearizable_get(&cluster, id).await?;
        assert_value(&response, id, b"v1", v1_revision);
    }

    tracing::info!("write v2 under the new leader; at once every node returns v2");
    let v2 = writer
        .put(KEY.to_vec(), b"v2".to_vec(), WRITE_TIMEOUT)
        .await?;
    let v2_revision = v2.header.context("no header")?.revision;
    for id in cluster.node_ids() {
        let response = linearizable_get(&cluster, id).await?;
        assert_value(&response, id, b"v2", v2_revision);
    }

    let leader = cluster.leader().await?;
    tracing::info!(
        leader,
        "write v3, SIGKILL the leader, and at once read through both survivors"
    );
    let v3 = writer
        .put(KEY.to_vec(), b"v3".to_vec(), WRITE_TIMEOUT)
        .await?;
    let v3_revision = v3.header.context("no header")?.revision;
    cluster.kill(leader)?;
    for id in cluster.running_node_ids() {
        // Retried while no leader is known; any answer must carry v3.
        let response = linearizable_get(&cluster, id).await?;
        assert_value(&response, id, b"v3", v3_revision);
    }

    let follower = cluster.followers().await?[0];
    tracing::info!(
        follower,
        "a Get with default consistency on a follower is linearizable and current"
    );
    let v4 = writer
        .put(KEY.to_vec(), b"v4".to_vec(), WRITE_TIMEOUT)
        .await?;
    let v4_revision = v4.header.context("no header")?.revision;
    let kv = cluster.kv(follower);
    let default_read = kv
        .clone()
        .get(conclave_proto::v1::GetRequest {
            key: KEY.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let header = default_read.header.context("no header")?;
    assert_eq!(
        header.consistency,
        ReadConsistency::Linearizable as i32,
        "{default_read:?}"
    );
    assert_value(&default_read, follower, b"v4", v4_revision);

    tracing::info!(
        follower,
        "a SERIALIZABLE Get and List on the follower say SERIALIZABLE"
    );
    let serializable = get(
        &kv,
        KEY.to_vec(),
        ReadConsistency::Serializable,
        READ_TIMEOUT,
    )
    .await?;
    let header = serializable.header.context("no header")?;
    assert_eq!(
        header.consistency,
        ReadConsistency::Serializable as i32,
        "{serializable:?}"
    );
    assert_eq!(header.node_id, follower, "{serializable:?}");
    let listed = kv
        .clone()
        .list(ListRequest {
            prefix: b"linearizable/".to_vec(),
            consistency: ReadConsistency::Serializable as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let header = listed.header.context("no header")?;
    assert_eq!(
        header.consistency,
        ReadConsistency::Serializable as i32,
        "{listed:?}"
    );
    let listed = kv
        .clone()
        .list(ListRequest {
            prefix: b"linearizable/".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let header = listed.header.context("no header")?;
    assert_eq!(
        header.consistency,
        ReadConsistency::Linearizable as i32,
        "{listed:?}"
    );
    assert_eq!(listed.kvs.len(), 1, "{listed:?}");
    assert_eq!(listed.kvs[0].value, b"v4", "{listed:?}");

    cluster.shutdown().await
}

/// A one-node cluster is its own quorum: a linearizable read there is served, not UNAVAILABLE
/// for want of a quorum acknowledgment no peer can send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_serves_linearizable_reads() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(1)).await?;
    let client = conclave_client::Client::connect([cluster.api_addr(1).to_string()])?;
    client.put(KEY, "one").await?;
    let read = client
        .get(KEY)
        .await
        .context("a linearizable get on a lone voter")?;
    let value = read.kv.map(|kv| kv.value).unwrap_or_default();
    anyhow::ensure!(value == b"one", "{value:?}");
    cluster.shutdown().await
}

async fn linearizable_get(cluster: &TestCluster, id: u64) -> anyhow::Result<GetResponse> {
    get(
        &cluster.kv(id),
        KEY.to_vec(),
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await
    .with_context(|| format!("linearizable Get on node {id}"))
}

fn assert_value(response: &GetResponse, id: u64, expected: &[u8], revision: u64) {
    let header = response.header.expect("every response has a header");
    assert_eq!(
        header.consistency,
        ReadConsistency::Linearizable as i32,
        "node {id}: {response:?}"
    );
    assert!(
        header.revision >= revision,
        "node {id} served at an older revision: {response:?}"
    );
    let kv = response
        .kv
        .as_ref()
        .unwrap_or_else(|| panic!("node {id} lost the key: {response:?}"));
    assert_eq!(
        kv.value,
        expected,
        "node {id} returned {} where {} was acknowledged: a stale read",
        text(&kv.value),
        text(expected)
    );
    assert_eq!(kv.mod_revision, revision, "node {id}: {response:?}");
}
