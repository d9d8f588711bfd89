//! Compare-and-swap and transactions end to end: a compare that fails changes nothing; one that
//! holds applies everything at one new revision.

use anyhow::Context as _;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::{
    txn_op, Compare, CompareAndSwapRequest, CompareAndSwapResponse, KeyValue, ReadConsistency,
    TxnDelete, TxnOp, TxnPut, TxnRequest, TxnResponse,
};
use conclave_tests::poll::retry_transient;
use conclave_tests::read::get;
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::transport::Channel;

use crate::{READ_TIMEOUT, WRITE_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_and_txn() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let follower = cluster.followers().await?[0];
    // Through a follower: the compare must be evaluated against the leader's committed state.
    let kv = cluster.kv(follower);
    let mut ids = RequestIds::new();

    tracing::info!("create-if-absent (expected mod_revision 0) succeeds once, then fails");
    let created = cas(&kv, &mut ids, b"cas/a", 0, Some(b"1")).await?;
    assert!(created.succeeded, "{created:?}");
    let created_revision = revision(&created)?;
    let current = created
        .current
        .as_ref()
        .context("a successful CAS returns the key as written")?;
    assert_eq!(
        (
            current.mod_revision,
            current.create_revision,
            current.version
        ),
        (created_revision, created_revision, 1)
    );
    let again = cas(&kv, &mut ids, b"cas/a", 0, Some(b"2")).await?;
    assert!(
        !again.succeeded,
        "create-if-absent succeeded on an existing key: {again:?}"
    );
    assert_eq!(
        revision(&again)?,
        created_revision,
        "a failed CAS must not bump the revision"
    );
    let current = again
        .current
        .as_ref()
        .context("a failed CAS returns the existing key")?;
    assert_eq!(current.mod_revision, created_revision);
    assert_eq!(
        read(&kv, b"cas/a").await?.map(|kv| kv.value),
        Some(b"1".to_vec())
    );

    tracing::info!("a CAS with the current mod_revision succeeds; with a stale one it fails");
    let swapped = cas(&kv, &mut ids, b"cas/a", created_revision, Some(b"3")).await?;
    assert!(swapped.succeeded, "{swapped:?}");
    let swapped_revision = revision(&swapped)?;
    assert_eq!(swapped_revision, created_revision + 1);
    let stale = cas(&kv, &mut ids, b"cas/a", created_revision, Some(b"4")).await?;
    assert!(
        !stale.succeeded,
        "a CAS with a stale mod_revision succeeded: {stale:?}"
    );
    assert_eq!(revision(&stale)?, swapped_revision);
    let found = read(&kv, b"cas/a").await?.context("cas/a vanished")?;
    assert_eq!(
        (found.value.as_slice(), found.mod_revision, found.version),
        (&b"3"[..], swapped_revision, 2)
    );

    tracing::info!("a CAS delete with the current mod_revision removes the key");
    let deleted = cas(&kv, &mut ids, b"cas/a", swapped_revision, None).await?;
    assert!(
        deleted.succeeded && deleted.current.is_none(),
        "{deleted:?}"
    );
    assert_eq!(revision(&deleted)?, swapped_revision + 1);
    assert_eq!(read(&kv, b"cas/a").await?, None);

    tracing::info!("a txn with one failing compare applies none of its ops");
    let x = cas(&kv, &mut ids, b"txn/x", 0, Some(b"x1")).await?;
    let y = cas(&kv, &mut ids, b"txn/y", 0, Some(b"y1")).await?;
    let (x_revision, y_revision) = (revision(&x)?, revision(&y)?);
    let ops = vec![
        put_op(b"txn/x", b"x2"),
        put_op(b"txn/z", b"z1"),
        delete_op(b"txn/y"),
    ];
    let failed = txn(
        &kv,
        &mut ids,
        vec![
            compare(b"txn/x", x_revision),
            compare(b"txn/y", y_revision + 100),
        ],
        ops.clone(),
    )
    .await?;
    assert!(!failed.succeeded, "{failed:?}");
    assert_eq!(failed.failed_compares, vec![1], "{failed:?}");
    assert_eq!(
        failed.failed_current_mod_revisions,
        vec![y_revision],
        "{failed:?}"
    );
    assert_eq!(
        failed.header.context("no header")?.revision,
        y_revision,
        "a failed txn bumped the revision"
    );
    assert_eq!(
        read(&kv, b"txn/x").await?.map(|kv| kv.value),
        Some(b"x1".to_vec())
    );
    assert_eq!(
        read(&kv, b"txn/y").await?.map(|kv| kv.value),
        Some(b"y1".to_vec())
    );
    assert_eq!(read(&kv, b"txn/z").await?, None, "a failed txn wrote txn/z");

    tracing::info!(
        "when every compare holds (0 = absent included), all ops apply at one new revision"
    );
    let compares = vec![
        compare(b"txn/x", x_revision),
        compare(b"txn/y", y_revision),
        compare(b"txn/z", 0),
    ];
    let applied = txn(&kv, &mut ids, compares, ops).await?;
    assert!(applied.succeeded, "{applied:?}");
    let applied_revision = applied.header.context("no header")?.revision;
    assert_eq!(
        applied_revision,
        y_revision + 1,
        "a txn is exactly one revision"
    );
    for (key, value) in [(&b"txn/x"[..], &b"x2"[..]), (b"txn/z", b"z1")] {
        let found = read(&kv, key).await?.context("txn key missing")?;
        assert_eq!(
            (found.value.as_slice(), found.mod_revision),
            (value, applied_revision)
        );
    }
    assert_eq!(
        read(&kv, b"txn/y").await?,
        None,
        "the txn's delete did not apply"
    );

    cluster.shutdown().await
}

async fn cas(
    kv: &KvClient<Channel>,
    ids: &mut RequestIds,
    key: &[u8],
    expected_mod_revision: u64,
    value: Option<&[u8]>,
) -> anyhow::Result<CompareAndSwapResponse> {
    let request = CompareAndSwapRequest {
        request_id: Some(ids.next_id()),
        key: key.to_vec(),
        expected_mod_revision,
        value: value.unwrap_or_default().to_vec(),
        delete: value.is_none(),
        fence: None,
    };
    let response = retry_transient("compare-and-swap", WRITE_TIMEOUT, || {
        let mut kv = kv.clone();
        let request = request.clone();
        async move { kv.compare_and_swap(request).await }
    })
    .await?;
    Ok(response.into_inner())
}

async fn txn(
    kv: &KvClient<Channel>,
    ids: &mut RequestIds,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
) -> anyhow::Result<TxnResponse> {
    let request = TxnRequest {
        request_id: Some(ids.next_id()),
        compares,
        ops,
        fence: None,
    };
    let response = retry_transient("txn", WRITE_TIMEOUT, || {
        let mut kv = kv.clone();
        let request = request.clone();
        async move { kv.txn(request).await }
    })
    .await?;
    Ok(response.into_inner())
}

async fn read(kv: &KvClient<Channel>, key: &[u8]) -> anyhow::Result<Option<KeyValue>> {
    Ok(get(
        kv,
        key.to_vec(),
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await?
    .kv)
}

fn revision(response: &CompareAndSwapResponse) -> anyhow::Result<u64> {
    Ok(response.header.context("no header")?.revision)
}

fn compare(key: &[u8], mod_revision: u64) -> Compare {
    Compare {
        key: key.to_vec(),
        mod_revision,
    }
}

fn put_op(key: &[u8], value: &[u8]) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Put(TxnPut {
            key: key.to_vec(),
            value: value.to_vec(),
        })),
    }
}

fn delete_op(key: &[u8]) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Delete(TxnDelete { key: key.to_vec() })),
    }
}
