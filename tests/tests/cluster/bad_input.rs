//! Limits and malformed requests: each is INVALID_ARGUMENT naming the field, on the leader and on
//! a follower alike, and changes nothing. Values at the limits are accepted.

use std::future::Future;
use std::pin::Pin;

use anyhow::Context as _;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::{
    txn_op, Compare, CompareAndSwapRequest, DeleteRequest, GetRequest, ListRequest, PutRequest,
    ReadConsistency, RequestId, TxnDelete, TxnOp, TxnPut, TxnRequest,
};
use conclave_tests::read::{get, list_all};
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::transport::Channel;
use tonic::Code;

use crate::{READ_TIMEOUT, WRITE_TIMEOUT};

const MAX_KEY_BYTES: usize = 4096;
const MAX_VALUE_BYTES: usize = 1024 * 1024;
const MAX_TXN_OPS: usize = 128;
const MAX_TXN_COMPARES: usize = 128;
const MAX_LIST_LIMIT: u32 = 1000;

type Call = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// One invalid request: what it breaks, the field its error must name, and how to send it.
struct Case {
    what: &'static str,
    field: &'static str,
    send: fn(KvClient<Channel>, RequestId) -> Call,
}

fn put_call(mut client: KvClient<Channel>, request: PutRequest) -> Call {
    Box::pin(async move { client.put(request).await.map(drop) })
}

fn txn_call(mut client: KvClient<Channel>, request: TxnRequest) -> Call {
    Box::pin(async move { client.txn(request).await.map(drop) })
}

fn txn_put(key: Vec<u8>) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Put(TxnPut {
            key,
            value: b"v".to_vec(),
        })),
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "put with a key of MAX_KEY_BYTES + 1",
            field: "key",
            send: |client, id| {
                put_call(
                    client,
                    PutRequest {
                        request_id: Some(id),
                        key: vec![b'k'; MAX_KEY_BYTES + 1],
                        value: b"v".to_vec(),
                        session_id: 0,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "put with an empty key",
            field: "key",
            send: |client, id| {
                put_call(
                    client,
                    PutRequest {
                        request_id: Some(id),
                        key: vec![],
                        value: b"v".to_vec(),
                        session_id: 0,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "put with a value of MAX_VALUE_BYTES + 1",
            field: "value",
            send: |client, id| {
                put_call(
                    client,
                    PutRequest {
                        request_id: Some(id),
                        key: b"bad/value".to_vec(),
                        value: vec![b'v'; MAX_VALUE_BYTES + 1],
                        session_id: 0,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "put without a request id",
            field: "request_id",
            send: |client, _| {
                put_call(
                    client,
                    PutRequest {
                        request_id: None,
                        key: b"bad/no-id".to_vec(),
                        value: b"v".to_vec(),
                        session_id: 0,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "put with client_id 0",
            field: "client_id",
            send: |client, id| {
                put_call(
                    client,
                    PutRequest {
                        request_id: Some(RequestId { client_id: 0, ..id }),
                        key: b"bad/zero-client".to_vec(),
                        value: b"v".to_vec(),
                        session_id: 0,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "put with serial 0",
            field: "serial",
            send: |client, id| {
                put_call(
                    client,
                    PutRequest {
                        request_id: Some(RequestId { serial: 0, ..id }),
                        key: b"bad/zero-serial".to_vec(),
                        value: b"v".to_vec(),
                        session_id: 0,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "txn with MAX_TXN_OPS + 1 ops",
            field: "ops",
            send: |client, id| {
                let ops = (0..=MAX_TXN_OPS)
                    .map(|index| txn_put(format!("bad/txn/{index}").into_bytes()))
                    .collect();
                txn_call(
                    client,
                    TxnRequest {
                        request_id: Some(id),
                        compares: vec![],
                        ops,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "txn with MAX_TXN_COMPARES + 1 compares",
            field: "compares",
            send: |client, id| {
                let compares = (0..=MAX_TXN_COMPARES)
                    .map(|index| Compare {
                        key: format!("bad/txn/{index}").into_bytes(),
                        mod_revision: 0,
                    })
                    .collect();
                txn_call(
                    client,
                    TxnRequest {
                        request_id: Some(id),
                        compares,
                        ops: vec![txn_put(b"bad/txn".to_vec())],
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "txn with an op without a put or delete",
            field: "ops",
            send: |client, id| {
                txn_call(
                    client,
                    TxnRequest {
                        request_id: Some(id),
                        compares: vec![],
                        ops: vec![TxnOp { op: None }],
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "txn touching one key twice",
            field: "ops",
            send: |client, id| {
                let ops = vec![
                    txn_put(b"bad/twice".to_vec()),
                    TxnOp {
                        op: Some(txn_op::Op::Delete(TxnDelete {
                            key: b"bad/twice".to_vec(),
                        })),
                    },
                ];
                txn_call(
                    client,
                    TxnRequest {
                        request_id: Some(id),
                        compares: vec![],
                        ops,
                        fence: None,
                    },
                )
            },
        },
        Case {
            what: "compare-and-swap with an empty key",
            field: "key",
            send: |mut client, id| {
                Box::pin(async move {
                    let request = CompareAndSwapRequest {
                        request_id: Some(id),
                        key: vec![],
                        expected_mod_revision: 0,
                        value: b"v".to_vec(),
                        delete: false,
                        fence: None,
                    };
                    client.compare_and_swap(request).await.map(drop)
                })
            },
        },
        Case {
            what: "delete with an empty key",
            field: "key",
            send: |mut client, id| {
                Box::pin(async move {
                    client
                        .delete(DeleteRequest {
                            request_id: Some(id),
                            key: vec![],
                            fence: None,
                        })
                        .await
                        .map(drop)
                })
            },
        },
        Case {
            what: "get with an empty key",
            field: "key",
            send: |mut client, _| {
                Box::pin(async move {
                    client
                        .get(GetRequest {
                            key: vec![],
                            consistency: 0,
                        })
                        .await
                        .map(drop)
                })
            },
        },
        Case {
            what: "get with a key of MAX_KEY_BYTES + 1",
            field: "key",
            send: |mut client, _| {
                Box::pin(async move {
                    client
                        .get(GetRequest {
                            key: vec![b'k'; MAX_KEY_BYTES + 1],
                            consistency: 0,
                        })
                        .await
                        .map(drop)
                })
            },
        },
        Case {
            what: "list with limit MAX_LIST_LIMIT + 1",
            field: "limit",
            send: |mut client, _| {
                Box::pin(async move {
                    client
                        .list(ListRequest {
                            limit: MAX_LIST_LIMIT + 1,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                })
            },
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_inclusive() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];
    let mut writer = cluster.writer();
    let mut request_ids = RequestIds::new();

    tracing::info!("a key of MAX_KEY_BYTES is accepted and replicated");
    let longest_key = vec![b'k'; MAX_KEY_BYTES];
    writer
        .put(longest_key.clone(), b"longest key".to_vec(), WRITE_TIMEOUT)
        .await?;
    let found = get(
        &cluster.kv(follower),
        longest_key,
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await?;
    assert_eq!(found.kv.map(|kv| kv.value), Some(b"longest key".to_vec()));

    tracing::info!("a txn of MAX_TXN_OPS ops and MAX_TXN_COMPARES holding compares is accepted");
    let ops = (0..MAX_TXN_OPS)
        .map(|index| txn_put(format!("limits/txn/{index:03}").into_bytes()))
        .collect();
    let compares = (0..MAX_TXN_COMPARES)
        .map(|index| Compare {
            key: format!("limits/absent/{index:03}").into_bytes(),
            mod_revision: 0,
        })
        .collect();
    let txn = cluster
        .kv(leader)
        .txn(TxnRequest {
            request_id: Some(request_ids.next_id()),
            compares,
            ops,
            fence: None,
        })
        .await?
        .into_inner();
    assert!(txn.succeeded, "{txn:?}");

    tracing::info!("a list with limit MAX_LIST_LIMIT is accepted");
    let page = cluster
        .kv(follower)
        .list(ListRequest {
            prefix: b"limits/txn/".to_vec(),
            limit: MAX_LIST_LIMIT,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(page.kvs.len(), MAX_TXN_OPS, "{page:?}");

    tracing::info!("a value of MAX_VALUE_BYTES is accepted and replicated to every node");
    let largest = writer
        .put(
            b"limits/largest-value".to_vec(),
            vec![b'v'; MAX_VALUE_BYTES],
            WRITE_TIMEOUT,
        )
        .await?;
    let revision = largest.header.context("no header")?.revision;
    for id in cluster.node_ids() {
        let found = get(
            &cluster.kv(id),
            b"limits/largest-value".to_vec(),
            ReadConsistency::Linearizable,
            READ_TIMEOUT,
        )
        .await?
        .kv
        .with_context(|| format!("node {id} lacks the largest value"))?;
        assert_eq!(
            (found.value.len(), found.mod_revision),
            (MAX_VALUE_BYTES, revision),
            "node {id}"
        );
    }

    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];
    let mut writer = cluster.writer();
    let mut request_ids = RequestIds::new();

    tracing::info!("write some data that the rejected requests must leave alone");
    for index in 0..5 {
        writer
            .put(
                format!("bad/existing/{index}"),
                b"v".to_vec(),
                WRITE_TIMEOUT,
            )
            .await?;
    }

    let before = snapshot(&cluster, leader).await?;
    for case in cases() {
        for id in [leader, follower] {
            tracing::info!(
                node = id,
                case = case.what,
                field = case.field,
                "must be INVALID_ARGUMENT naming the field"
            );
            let result = (case.send)(cluster.kv(id), request_ids.next_id()).await;
            let status = match result {
                Ok(()) => panic!("node {id} accepted a {}", case.what),
                Err(status) => status,
            };
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "node {id}, {}: {status:?}",
                case.what
            );
            assert!(
                status.message().contains(case.field),
                "node {id}, {}: the message {:?} does not name the field `{}`",
                case.what,
                status.message(),
                case.field
            );
        }
    }

    tracing::info!("after all the rejected requests, the store's revision and data are unchanged");
    let after = snapshot(&cluster, leader).await?;
    assert_eq!(after.0, before.0, "the store revision moved");
    assert!(after.1 == before.1, "the store's data changed");

    cluster.shutdown().await
}

/// The store's revision and every key-value pair, read linearizably through `id`.
async fn snapshot(
    cluster: &TestCluster,
    id: u64,
) -> anyhow::Result<(u64, Vec<conclave_proto::v1::KeyValue>)> {
    let kv = cluster.kv(id);
    let revision = get(
        &kv,
        b"bad/existing/0".to_vec(),
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await?
    .header
    .context("no header")?
    .revision;
    let kvs = list_all(
        &kv,
        Vec::new(),
        ReadConsistency::Linearizable,
        100,
        READ_TIMEOUT,
    )
    .await?;
    Ok((revision, kvs))
}
