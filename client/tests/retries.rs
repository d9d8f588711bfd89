//! The client's routing and retry rules against in-process mock KV servers that fail on purpose:
//! leader hints, same-id retries, and where Rejected ends and Indeterminate begins.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_client::{Client, ClientOptions, Code, Error, WatchOptions};
use conclave_proto::v1::kv_server::{Kv, KvServer};
use conclave_proto::v1::{
    CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest, DeleteResponse, Event,
    GetRequest, GetResponse, KeyValue, ListRequest, ListResponse, PutRequest, PutResponse,
    RequestId, ResponseHeader, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use conclave_proto::{LEADER_METADATA, OUTCOME_METADATA, OUTCOME_REJECTED};
use futures::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

type PutHandler = dyn Fn(usize) -> Result<PutResponse, Status> + Send + Sync;
type WatchItems = Vec<Result<WatchResponse, Status>>;
type WatchHandler = dyn Fn(usize, u64) -> WatchItems + Send + Sync;
type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// A KV node whose answers are scripted per call number.
struct MockKv {
    put: Box<PutHandler>,
    watch: Box<WatchHandler>,
    puts: Arc<Mutex<Vec<RequestId>>>,
    watches: Arc<Mutex<Vec<u64>>>,
}

#[tonic::async_trait]
impl Kv for MockKv {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let id = request
            .into_inner()
            .request_id
            .expect("writes carry a request id");
        let attempt = {
            let mut puts = self.puts.lock().expect("not poisoned");
            puts.push(id);
            puts.len() - 1
        };
        (self.put)(attempt).map(Response::new)
    }

    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn compare_and_swap(
        &self,
        _: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let start = request.into_inner().start_revision;
        let attempt = {
            let mut watches = self.watches.lock().expect("not poisoned");
            watches.push(start);
            watches.len() - 1
        };
        let items = (self.watch)(attempt, start);
        // After its scripted items, the stream stays open and quiet.
        let stream = futures::stream::iter(items).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Node {
    address: SocketAddr,
    puts: Arc<Mutex<Vec<RequestId>>>,
    watches: Arc<Mutex<Vec<u64>>>,
}

async fn start(
    put: impl Fn(usize) -> Result<PutResponse, Status> + Send + Sync + 'static,
    watch: impl Fn(usize, u64) -> WatchItems + Send + Sync + 'static,
) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let address = listener.local_addr().expect("bound");
    let puts = Arc::new(Mutex::new(Vec::new()));
    let watches = Arc::new(Mutex::new(Vec::new()));
    let mock = MockKv {
        put: Box::new(put),
        watch: Box::new(watch),
        puts: Arc::clone(&puts),
        watches: Arc::clone(&watches),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(mock))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Node {
        address,
        puts,
        watches,
    }
}

async fn start_put(
    put: impl Fn(usize) -> Result<PutResponse, Status> + Send + Sync + 'static,
) -> Node {
    start(put, |_, _| Vec::new()).await
}

fn ok(node_id: u64, revision: u64) -> Result<PutResponse, Status> {
    Ok(PutResponse {
        header: Some(ResponseHeader {
            revision,
            node_id,
            ..ResponseHeader::default()
        }),
        previous: None,
    })
}

fn with_metadata(mut status: Status, key: &'static str, value: &str) -> Status {
    status
        .metadata_mut()
        .insert(key, MetadataValue::try_from(value).expect("ascii metadata"));
    status
}

fn options(deadline_ms: u64) -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_millis(deadline_ms),
        request_timeout: Duration::from_millis(deadline_ms),
        ..ClientOptions::default()
    }
}

fn client(nodes: &[&Node], deadline_ms: u64) -> Client {
    let endpoints: Vec<String> = nodes.iter().map(|node| node.address.to_string()).collect();
    Client::connect_with(endpoints, options(deadline_ms)).expect("valid endpoints")
}

#[tokio::test]
async fn follows_the_leader_hint_and_retries_with_the_same_id() {
    let leader = start_put(|attempt| match attempt {
        // The first attempt's outcome is unknown; the retry must reuse the request id, and go to
        // the same node, which is still there.
        0 => Err(Status::deadline_exceeded("commit not confirmed in time")),
        _ => ok(2, 7),
    })
    .await;
    let hint = format!("2={}", leader.address);
    let follower = start_put(move |_| {
        Err(with_metadata(
            Status::unavailable("not the leader"),
            LEADER_METADATA,
            &hint,
        ))
    })
    .await;
    let client = client(&[&follower], 5_000);

    let put = client
        .put("k", "v")
        .await
        .expect("the leader accepts the retry");
    assert_eq!(put.header.revision, 7);
    let leader_ids = leader.puts.lock().expect("not poisoned").clone();
    assert_eq!(leader_ids.len(), 2);
    assert_eq!(
        leader_ids[0], leader_ids[1],
        "a retry reuses the request id"
    );
    assert_eq!(leader_ids[0].client_id, client.client_id());
    assert_eq!(leader_ids[0].serial, 1);
    assert_eq!(
        follower.puts.lock().expect("not poisoned")[0],
        leader_ids[0]
    );
    let known = client.leader().expect("the hint was adopted");
    assert_eq!(known.node_id, 2);
    assert_eq!(known.api_addr, leader.address.to_string());
    assert!(client.endpoints().contains(&leader.address.to_string()));

    // The next write goes straight to the leader, with the next serial.
    client.put("k", "w").await.expect("accepted");
    let leader_ids = leader.puts.lock().expect("not poisoned").clone();
    assert_eq!(leader_ids.len(), 3);
    assert_eq!(leader_ids[2].serial, 2);
    assert_eq!(leader_ids[2].min_pending_serial, 2);
    assert_eq!(follower.puts.lock().expect("not poisoned").len(), 1);
}

#[tokio::test]
async fn provably_not_proposed_everywhere_is_rejected() {
    let node = start_put(|_| {
        Err(with_metadata(
            Status::unavailable("no leader"),
            OUTCOME_METADATA,
            OUTCOME_REJECTED,
        ))
    })
    .await;
    let error = client(&[&node], 400)
        .put("k", "v")
        .await
        .expect_err("never accepted");
    assert!(
        matches!(
            error,
            Error::Rejected {
                code: Code::Unavailable,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        node.puts.lock().expect("not poisoned").len() > 1,
        "it was retried"
    );
}

#[tokio::test]
async fn an_unknown_outcome_stays_unknown() {
    // Once an attempt may have been proposed, no later refusal proves the write was not applied.
    let node = start_put(|attempt| match attempt {
        0 => Err(Status::deadline_exceeded("proposed, not committed in time")),
        _ => Err(with_metadata(
            Status::unavailable("no leader"),
            OUTCOME_METADATA,
            OUTCOME_REJECTED,
        )),
    })
    .await;
    let error = client(&[&node], 400)
        .put("k", "v")
        .await
        .expect_err("never accepted");
    assert!(matches!(error, Error::Indeterminate { .. }), "{error:?}");
}

#[tokio::test]
async fn refusals_are_not_retried() {
    for (status, code) in [
        (
            Status::invalid_argument("key too long"),
            Code::InvalidArgument,
        ),
        (Status::resource_exhausted("quota"), Code::ResourceExhausted),
    ] {
        let status = Arc::new(Mutex::new(Some(status)));
        let node = start_put(move |_| {
            Err(status
                .lock()
                .expect("not poisoned")
                .take()
                .unwrap_or_else(|| Status::internal("called twice")))
        })
        .await;
        let error = client(&[&node], 2_000)
            .put("k", "v")
            .await
            .expect_err("refused");
        assert_eq!(error.rejected_code(), Some(code), "{error:?}");
        assert_eq!(node.puts.lock().expect("not poisoned").len(), 1);
    }
}

#[tokio::test]
async fn a_removed_node_sends_the_write_elsewhere() {
    let removed = start_put(|_| {
        let mut status = Status::failed_precondition("node 1 has been removed from the cluster");
        status.metadata_mut().insert(
            conclave_proto::REASON_METADATA,
            MetadataValue::from_static(conclave_proto::REASON_NODE_REMOVED),
        );
        Err(status)
    })
    .await;
    let member = start_put(|_| ok(3, 11)).await;
    let put = client(&[&removed, &member], 2_000)
        .put("k", "v")
        .await
        .expect("another node serves it");
    assert_eq!(put.header.node_id, 3);
}

#[tokio::test]
async fn a_watch_resumes_after_the_last_delivered_revision() {
    fn at(revision: u64) -> Result<WatchResponse, Status> {
        Ok(WatchResponse {
            header: None,
            revision,
            events: vec![Event {
                r#type: 0,
                kv: Some(KeyValue {
                    key: b"k".to_vec(),
                    mod_revision: revision,
                    ..KeyValue::default()
                }),
            }],
        })
    }
    let node = start(
        |_| ok(1, 1),
        |attempt, start| match attempt {
            0 => vec![
                Ok(WatchResponse::default()),
                at(start),
                at(start + 1),
                Err(Status::unavailable("leader changed")),
            ],
            // A server that repeats a revision must not make the client deliver it twice.
            _ => vec![at(start - 1), at(start), at(start + 2)],
        },
    )
    .await;
    let client = client(&[&node], 5_000);
    let watch = client
        .watch(
            "k",
            WatchOptions {
                prefix: false,
                start_revision: 5,
            },
        )
        .await
        .expect("established");
    assert_eq!(watch.start_revision(), 5);
    let revisions: Vec<u64> = watch
        .take(4)
        .map(|response| response.expect("no error").revision)
        .collect()
        .await;
    assert_eq!(revisions, [5, 6, 7, 9]);
    assert_eq!(*node.watches.lock().expect("not poisoned"), [5, 7]);
}

#[tokio::test]
async fn a_watch_resumes_after_a_progress_notice() {
    fn at(revision: u64) -> Result<WatchResponse, Status> {
        Ok(WatchResponse {
            header: None,
            revision,
            events: vec![Event {
                r#type: 0,
                kv: Some(KeyValue {
                    key: b"quiet".to_vec(),
                    mod_revision: revision,
                    ..KeyValue::default()
                }),
            }],
        })
    }
    fn notice(revision: u64) -> Result<WatchResponse, Status> {
        Ok(WatchResponse {
            header: Some(ResponseHeader {
                revision,
                ..ResponseHeader::default()
            }),
            revision,
            events: Vec::new(),
        })
    }
    let node = start(
        |_| ok(1, 1),
        |attempt, _| match attempt {
            // Other keys went by up to 5000 while the watched one changed once: the node says so.
            0 => vec![
                Ok(WatchResponse::default()),
                at(5),
                notice(5000),
                Err(Status::unavailable("connection reset")),
            ],
            // A stale notice (below what is known) must not move the resume point back.
            1 => vec![
                Ok(WatchResponse::default()),
                notice(4000),
                at(5001),
                Err(Status::unavailable("connection reset")),
            ],
            _ => vec![Ok(WatchResponse::default()), at(5003)],
        },
    )
    .await;
    let client = client(&[&node], 5_000);
    let mut watch = client
        .watch(
            "quiet",
            WatchOptions {
                prefix: false,
                start_revision: 5,
            },
        )
        .await
        .expect("established");
    let mut revisions = Vec::new();
    let mut resume_points = Vec::new();
    for _ in 0..3 {
        let response = watch.next().await.expect("an item").expect("no error");
        assert!(
            !response.events.is_empty(),
            "a notice was yielded: {response:?}"
        );
        revisions.push(response.revision);
        resume_points.push(watch.next_revision());
    }
    assert_eq!(revisions, [5, 5001, 5003], "notices are not yielded");
    assert_eq!(resume_points, [6, 5002, 5004]);
    assert_eq!(
        *node.watches.lock().expect("not poisoned"),
        [5, 5001, 5002],
        "the first resume starts after the notice, not after the last change"
    );
}

#[tokio::test]
async fn a_compacted_watch_names_the_oldest_revision() {
    // The mock refuses through the stream: its first item is the OUT_OF_RANGE status.
    let node = start(
        |_| ok(1, 1),
        |_, _| {
            vec![Err(with_metadata(
                Status::out_of_range("compacted"),
                conclave_proto::COMPACT_REVISION_METADATA,
                "40",
            ))]
        },
    )
    .await;
    let mut watch = client(&[&node], 2_000)
        .watch(
            "k",
            WatchOptions {
                prefix: false,
                start_revision: 3,
            },
        )
        .await
        .expect("the stream opens, then fails");
    let error = watch
        .next()
        .await
        .expect("one item")
        .expect_err("compacted");
    assert_eq!(
        error,
        Error::Compacted {
            oldest_revision: 40
        }
    );
    assert!(
        watch.next().await.is_none(),
        "the stream ends after the error"
    );
}
