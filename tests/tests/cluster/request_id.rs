//! Request ids: resending a write with the same (client_id, serial) applies it once and returns
//! the original result, whichever node the retry goes to.

use anyhow::Context as _;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::PutResponse;
use conclave_proto::v1::{PutRequest, ReadConsistency, RequestId};
use conclave_tests::poll::retry_transient;
use conclave_tests::read::get;
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::transport::Channel;

use crate::{READ_TIMEOUT, WRITE_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_applies_once() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];
    let mut request_ids = RequestIds::new();
    let first_id = request_ids.next_id();

    tracing::info!(
        leader,
        ?first_id,
        "put `first` with a request id through the leader"
    );
    let first = put(&cluster.kv(leader), first_id, b"dedup/key", b"first").await?;
    let first_revision = first.header.context("no header")?.revision;

    tracing::info!(
        follower,
        "resend the same request id with another value through a follower"
    );
    let again = put(&cluster.kv(follower), first_id, b"dedup/key", b"second").await?;
    let again_header = again.header.context("no header")?;
    assert_eq!(
        again_header.revision, first_revision,
        "the retry must return the original revision"
    );
    assert_eq!(
        again.previous, first.previous,
        "the retry must return the original result"
    );

    tracing::info!(
        "the key holds the first value at the first revision; the store revision did not move"
    );
    for id in cluster.node_ids() {
        let response = get(
            &cluster.kv(id),
            b"dedup/key".to_vec(),
            ReadConsistency::Linearizable,
            READ_TIMEOUT,
        )
        .await?;
        let header = response.header.context("no header")?;
        assert_eq!(
            header.revision, first_revision,
            "node {id}: a resent write bumped the revision"
        );
        let kv = response.kv.context("key missing")?;
        assert_eq!(
            kv.value, b"first",
            "node {id}: the resent write was applied again"
        );
        assert_eq!(kv.mod_revision, first_revision, "node {id}");
        assert_eq!(kv.version, 1, "node {id}: the key was written twice");
    }

    tracing::info!(
        "after newer writes of the same client, resending the old id still returns its result"
    );
    let second_id = request_ids.next_id();
    let other = put(&cluster.kv(leader), second_id, b"dedup/other", b"x").await?;
    let other_revision = other.header.context("no header")?.revision;
    assert_eq!(other_revision, first_revision + 1);
    let late = put(&cluster.kv(follower), first_id, b"dedup/key", b"third").await?;
    assert_eq!(late.header.context("no header")?.revision, first_revision);
    let response = get(
        &cluster.kv(leader),
        b"dedup/key".to_vec(),
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await?;
    assert_eq!(
        response.header.context("no header")?.revision,
        other_revision,
        "the revision moved"
    );
    assert_eq!(response.kv.context("key missing")?.value, b"first");

    tracing::info!("the same serial under another client id is another write");
    let stranger = RequestId {
        client_id: first_id.client_id.checked_add(1).unwrap_or(1),
        ..first_id
    };
    let applied = put(&cluster.kv(leader), stranger, b"dedup/key", b"stranger").await?;
    assert_eq!(
        applied.header.context("no header")?.revision,
        other_revision + 1
    );

    cluster.shutdown().await
}

async fn put(
    client: &KvClient<Channel>,
    request_id: RequestId,
    key: &[u8],
    value: &[u8],
) -> anyhow::Result<PutResponse> {
    let request = PutRequest {
        request_id: Some(request_id),
        key: key.to_vec(),
        value: value.to_vec(),
        session_id: 0,
        fence: None,
    };
    let response = retry_transient("put", WRITE_TIMEOUT, || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.put(request).await }
    })
    .await?;
    Ok(response.into_inner())
}
