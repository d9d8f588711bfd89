//! Replication: writes to the leader reach every node, at the same revisions, and a write sent to
//! a follower is forwarded to the leader and readable linearizably everywhere.

use std::collections::BTreeSet;

use anyhow::{ensure, Context as _};
use conclave_proto::v1::{
    txn_op, DeleteRequest, PutRequest, ReadConsistency, TxnOp, TxnPut, TxnRequest,
};
use conclave_tests::poll::{eventually, retry_transient};
use conclave_tests::read::get;
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{key, text, value, CATCH_UP_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT};

const KEYS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;

    tracing::info!(
        leader,
        keys = KEYS,
        "one client writes to the leader; each write is one new revision"
    );
    let leader_kv = cluster.kv(leader);
    let mut request_ids = RequestIds::new();
    let mut revisions = Vec::new();
    for index in 0..KEYS {
        let request = PutRequest {
            request_id: Some(request_ids.next_id()),
            key: key("replication/", index),
            value: value("replication/", index),
            session_id: 0,
            fence: None,
        };
        let response = retry_transient("put", WRITE_TIMEOUT, || {
            let mut client = leader_kv.clone();
            let request = request.clone();
            async move { client.put(request).await }
        })
        .await?
        .into_inner();
        let header = response.header.context("put response without header")?;
        assert!(
            response.previous.is_none(),
            "a new key has no previous version"
        );
        revisions.push(header.revision);
    }
    for pair in revisions.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "sequential writes of one client: revisions {revisions:?}"
        );
    }

    tracing::info!(
        "every node must serve every key with a serializable read once it has applied it"
    );
    for id in cluster.node_ids() {
        let kv = cluster.kv(id);
        let last = key("replication/", KEYS - 1);
        eventually(
            &format!("node {id} to apply the last write"),
            CATCH_UP_TIMEOUT,
            || {
                let kv = kv.clone();
                let last = last.clone();
                async move {
                    let response =
                        get(&kv, last, ReadConsistency::Serializable, READ_TIMEOUT).await?;
                    ensure!(
                        response.kv.is_some(),
                        "not yet at revision {:?}",
                        response.header
                    );
                    Ok(())
                }
            },
        )
        .await?;
        for (index, revision) in revisions.iter().enumerate() {
            let response = get(
                &kv,
                key("replication/", index),
                ReadConsistency::Serializable,
                READ_TIMEOUT,
            )
            .await?;
            let header = response.header.context("get response without header")?;
            assert_eq!(
                header.node_id, id,
                "a serializable read is served by the node asked"
            );
            assert_eq!(header.consistency, ReadConsistency::Serializable as i32);
            let kv = response
                .kv
                .with_context(|| format!("node {id} lacks key {index}"))?;
            assert_eq!(
                kv.value,
                value("replication/", index),
                "node {id} key {index}"
            );
            assert_eq!(
                kv.mod_revision, *revision,
                "node {id} key {index} mod_revision"
            );
            assert_eq!(
                kv.create_revision, *revision,
                "node {id} key {index} create_revision"
            );
            assert_eq!(kv.version, 1, "node {id} key {index} version");
        }
    }

    tracing::info!("at rest, every node has applied the same index to the same state and revision");
    let statuses = cluster.wait_for_convergence(CATCH_UP_TIMEOUT).await?;
    let digests: BTreeSet<u64> = statuses
        .values()
        .map(|status| status.state_digest)
        .collect();
    let store_revisions: BTreeSet<u64> = statuses.values().map(|status| status.revision).collect();
    assert_eq!(
        digests.len(),
        1,
        "state digests differ at one applied index: {statuses:#?}"
    );
    assert_eq!(
        store_revisions.into_iter().collect::<Vec<_>>(),
        vec![*revisions.last().expect("keys were written")],
        "store revisions: {statuses:#?}"
    );

    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_follower() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let followers = cluster.followers().await?;
    let follower = followers[0];
    let follower_kv = cluster.kv(follower);
    let mut request_ids = RequestIds::new();

    tracing::info!(
        follower,
        "a Put sent to a follower is forwarded to the leader and succeeds"
    );
    let put = PutRequest {
        request_id: Some(request_ids.next_id()),
        key: b"forwarded/put".to_vec(),
        value: b"through a follower".to_vec(),
        session_id: 0,
        fence: None,
    };
    let put_revision = retry_transient("put via follower", WRITE_TIMEOUT, || {
        let mut client = follower_kv.clone();
        let request = put.clone();
        async move { client.put(request).await }
    })
    .await?
    .into_inner()
    .header
    .context("put response without header")?
    .revision;

    tracing::info!(
        "right after the acknowledgement, a linearizable Get on every node sees the write"
    );
    for id in cluster.node_ids() {
        let response = get(
            &cluster.kv(id),
            put.key.clone(),
            ReadConsistency::Linearizable,
            READ_TIMEOUT,
        )
        .await?;
        let header = response.header.context("get response without header")?;
        assert_eq!(
            header.consistency,
            ReadConsistency::Linearizable as i32,
            "node {id}"
        );
        assert!(
            header.revision >= put_revision,
            "node {id} served at {header:?}"
        );
        let kv = response
            .kv
            .with_context(|| format!("node {id} does not see the forwarded put"))?;
        assert_eq!(kv.value, put.value, "node {id}: {}", text(&kv.value));
        assert_eq!(kv.mod_revision, put_revision, "node {id}");
    }

    tracing::info!(
        follower,
        "a Txn and a Delete sent to the follower are forwarded as well"
    );
    let txn = TxnRequest {
        request_id: Some(request_ids.next_id()),
        compares: vec![],
        ops: vec![TxnOp {
            op: Some(txn_op::Op::Put(TxnPut {
                key: b"forwarded/txn".to_vec(),
                value: b"txn through a follower".to_vec(),
            })),
        }],
        fence: None,
    };
    let txn_response = retry_transient("txn via follower", WRITE_TIMEOUT, || {
        let mut client = follower_kv.clone();
        let request = txn.clone();
        async move { client.txn(request).await }
    })
    .await?
    .into_inner();
    assert!(
        txn_response.succeeded,
        "a txn without compares succeeds: {txn_response:?}"
    );
    let delete = DeleteRequest {
        request_id: Some(request_ids.next_id()),
        key: put.key.clone(),
        fence: None,
    };
    let delete_response = retry_transient("delete via follower", WRITE_TIMEOUT, || {
        let mut client = follower_kv.clone();
        let request = delete.clone();
        async move { client.delete(request).await }
    })
    .await?
    .into_inner();
    assert!(delete_response.deleted, "{delete_response:?}");
    for id in cluster.node_ids() {
        let kv = cluster.kv(id);
        let deleted = get(
            &kv,
            put.key.clone(),
            ReadConsistency::Linearizable,
            READ_TIMEOUT,
        )
        .await?;
        assert!(
            deleted.kv.is_none(),
            "node {id} still sees the deleted key: {deleted:?}"
        );
        let written = get(
            &kv,
            b"forwarded/txn".to_vec(),
            ReadConsistency::Linearizable,
            READ_TIMEOUT,
        )
        .await?;
        assert_eq!(
            written.kv.map(|kv| kv.value),
            Some(b"txn through a follower".to_vec()),
            "node {id} after the forwarded txn"
        );
    }

    cluster.shutdown().await
}
