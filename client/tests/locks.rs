//! The lock calls' retry rules and [`HeldLock`]'s loss detection against in-process mock Locks
//! servers that answer as scripted: `lock-lost` is a definite answer (never retried elsewhere, never
//! Indeterminate), an unknown-outcome acquire is retried with the same request id, an acquire's
//! deadline covers its wait, and a HeldLock reports its loss.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_client::{AcquireOptions, Client, ClientOptions, Code, Error, HeldLock, LockKind};
use conclave_proto::v1::locks_server::{Locks, LocksServer};
use conclave_proto::v1::{
    AcquireRequest, AcquireResponse, GetLockRequest, GetLockResponse, KeepAliveRequest,
    KeepAliveResponse, ListLocksRequest, ListLocksResponse, LockEvent, ReleaseLockRequest,
    ReleaseLockResponse, RequestId, ResponseHeader, WatchLockRequest,
};
use conclave_proto::{REASON_LOCK_LOST, REASON_METADATA};
use futures::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

type Answer<T> = dyn Fn(usize) -> Result<T, Status> + Send + Sync;

/// What the mock saw: the request id of every call of each verb, and the acquires' waits.
#[derive(Default)]
struct Seen {
    acquires: Vec<(RequestId, u64)>,
    releases: Vec<RequestId>,
    keep_alives: Vec<RequestId>,
}

/// A Locks node whose acquire, release and keep-alive answers are scripted per call number, each
/// after `delay` (which may depend on the request).
struct MockLocks {
    acquire: Box<Answer<AcquireResponse>>,
    acquire_delay: Box<dyn Fn(&AcquireRequest) -> Duration + Send + Sync>,
    release: Box<Answer<ReleaseLockResponse>>,
    keep_alive: Box<Answer<KeepAliveResponse>>,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl Locks for MockLocks {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let request = request.into_inner();
        let attempt = {
            let mut seen = self.seen.lock().expect("not poisoned");
            seen.acquires.push((
                request.request_id.expect("writes carry a request id"),
                request.wait_ms,
            ));
            seen.acquires.len() - 1
        };
        tokio::time::sleep((self.acquire_delay)(&request)).await;
        (self.acquire)(attempt).map(Response::new)
    }

    async fn release(
        &self,
        request: Request<ReleaseLockRequest>,
    ) -> Result<Response<ReleaseLockResponse>, Status> {
        let attempt = {
            let mut seen = self.seen.lock().expect("not poisoned");
            seen.releases
                .push(request.into_inner().request_id.expect("an id"));
            seen.releases.len() - 1
        };
        (self.release)(attempt).map(Response::new)
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        let attempt = {
            let mut seen = self.seen.lock().expect("not poisoned");
            seen.keep_alives
                .push(request.into_inner().request_id.expect("an id"));
            seen.keep_alives.len() - 1
        };
        (self.keep_alive)(attempt).map(Response::new)
    }

    async fn get_lock(
        &self,
        _: Request<GetLockRequest>,
    ) -> Result<Response<GetLockResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn list_locks(
        &self,
        _: Request<ListLocksRequest>,
    ) -> Result<Response<ListLocksResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    type WatchLockStream = Pin<Box<dyn Stream<Item = Result<LockEvent, Status>> + Send>>;

    async fn watch_lock(
        &self,
        _: Request<WatchLockRequest>,
    ) -> Result<Response<Self::WatchLockStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

struct Node {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

/// Scripts for one mock node; unset verbs answer UNIMPLEMENTED.
struct Script {
    acquire: Box<Answer<AcquireResponse>>,
    acquire_delay: Box<dyn Fn(&AcquireRequest) -> Duration + Send + Sync>,
    release: Box<Answer<ReleaseLockResponse>>,
    keep_alive: Box<Answer<KeepAliveResponse>>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            acquire: Box::new(|_| Err(Status::unimplemented("mock"))),
            acquire_delay: Box::new(|_| Duration::ZERO),
            release: Box::new(|_| Err(Status::unimplemented("mock"))),
            keep_alive: Box::new(|_| Err(Status::unimplemented("mock"))),
        }
    }
}

async fn start(script: Script) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let address = listener.local_addr().expect("bound");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mock = MockLocks {
        acquire: script.acquire,
        acquire_delay: script.acquire_delay,
        release: script.release,
        keep_alive: script.keep_alive,
        seen: Arc::clone(&seen),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LocksServer::new(mock))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Node { address, seen }
}

fn header(node_id: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: 5,
        node_id,
        ..ResponseHeader::default()
    })
}

fn granted(token: u64) -> Result<AcquireResponse, Status> {
    Ok(AcquireResponse {
        header: header(1),
        acquired: true,
        token,
        expires_at_ms: 1,
        lock: None,
    })
}

fn lock_lost() -> Status {
    let mut status = Status::failed_precondition("lock lost: token 7 is not current");
    status.metadata_mut().insert(
        REASON_METADATA,
        MetadataValue::from_static(REASON_LOCK_LOST),
    );
    status
}

fn client(nodes: &[&Node], deadline_ms: u64) -> Client {
    let endpoints: Vec<String> = nodes.iter().map(|node| node.address.to_string()).collect();
    let options = ClientOptions {
        deadline: Duration::from_millis(deadline_ms),
        request_timeout: Duration::from_millis(deadline_ms),
        ..ClientOptions::default()
    };
    Client::connect_with(endpoints, options).expect("valid endpoints")
}

fn lease() -> AcquireOptions {
    AcquireOptions::lease(Duration::from_secs(10))
}

#[tokio::test]
async fn lock_lost_is_definite_and_not_tried_elsewhere() {
    // The first node answers lock-lost; the second would accept. A lock-lost answer is the same on
    // every node, so the client must stop at the first.
    let first = start(Script {
        release: Box::new(|_| Err(lock_lost())),
        keep_alive: Box::new(|_| Err(lock_lost())),
        ..Script::default()
    })
    .await;
    let second = start(Script {
        release: Box::new(|_| Ok(ReleaseLockResponse { header: header(2) })),
        keep_alive: Box::new(|_| {
            Ok(KeepAliveResponse {
                header: header(2),
                expires_at_ms: 1,
            })
        }),
        ..Script::default()
    })
    .await;
    let client = client(&[&first, &second], 2_000);
    let error = client
        .release_lock(LockKind::Lock, "db", 7)
        .await
        .expect_err("lock lost");
    assert!(matches!(error, Error::LockLost { .. }), "{error:?}");
    assert!(error.is_definitely_not_applied());
    let error = client
        .keep_alive_lock(LockKind::Lock, "db", 7)
        .await
        .expect_err("lock lost");
    assert!(error.is_lock_lost(), "{error:?}");
    assert_eq!(first.seen.lock().expect("not poisoned").releases.len(), 1);
    assert_eq!(
        first.seen.lock().expect("not poisoned").keep_alives.len(),
        1
    );
    let second_seen = second.seen.lock().expect("not poisoned");
    assert!(second_seen.releases.is_empty() && second_seen.keep_alives.is_empty());
}

#[tokio::test]
async fn lock_lost_after_an_unknown_outcome_is_still_definite() {
    // A retry carries the same request id: had the first attempt been applied, the server would
    // have answered with its result. So lock-lost stays definite, never Indeterminate.
    let node = start(Script {
        release: Box::new(|attempt| match attempt {
            0 => Err(Status::deadline_exceeded("proposed, not committed in time")),
            _ => Err(lock_lost()),
        }),
        ..Script::default()
    })
    .await;
    let error = client(&[&node], 2_000)
        .release_lock(LockKind::Semaphore, "pool", 7)
        .await
        .expect_err("lock lost");
    assert!(matches!(error, Error::LockLost { .. }), "{error:?}");
    let seen = node.seen.lock().expect("not poisoned");
    assert_eq!(seen.releases.len(), 2);
    assert_eq!(
        seen.releases[0], seen.releases[1],
        "the retry reuses the id"
    );
}

#[tokio::test]
async fn only_the_reason_metadata_makes_lock_lost() {
    // The message is for people: a FAILED_PRECONDITION saying "lock lost" without the metadata is
    // an ordinary refusal.
    let node = start(Script {
        release: Box::new(|_| Err(Status::failed_precondition("lock lost"))),
        ..Script::default()
    })
    .await;
    let error = client(&[&node], 2_000)
        .release_lock(LockKind::Lock, "db", 7)
        .await
        .expect_err("refused");
    assert_eq!(
        error.rejected_code(),
        Some(Code::FailedPrecondition),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unknown_outcome_acquire_is_retried_with_the_same_id() {
    let node = start(Script {
        acquire: Box::new(|attempt| match attempt {
            0 => Err(Status::unavailable("leader changed while proposing")),
            _ => granted(42),
        }),
        ..Script::default()
    })
    .await;
    let client = client(&[&node], 3_000);
    let acquired = client
        .acquire_lock("db", &lease().waiting(Duration::from_secs(2)))
        .await
        .expect("the retry is answered");
    assert!(acquired.acquired);
    assert_eq!(acquired.token, 42);
    assert_eq!(acquired.fence().token, 42);
    let seen = node.seen.lock().expect("not poisoned");
    assert_eq!(seen.acquires.len(), 2);
    assert_eq!(seen.acquires[0].0, seen.acquires[1].0, "same request id");
    assert_eq!(seen.acquires[0].0.client_id, client.client_id());
    assert_eq!(seen.acquires[0].1, 2_000, "the wait is sent");
}

#[tokio::test]
async fn an_acquire_may_wait_longer_than_the_normal_deadline() {
    // The server holds the call for the wait; the client's deadline (300 ms) must stretch by it.
    let node = start(Script {
        acquire: Box::new(|_| granted(9)),
        acquire_delay: Box::new(|request| Duration::from_millis(request.wait_ms * 4 / 5)),
        ..Script::default()
    })
    .await;
    let acquired = client(&[&node], 300)
        .acquire_lock("db", &lease().waiting(Duration::from_millis(1_000)))
        .await
        .expect("answered within wait + deadline");
    assert_eq!(acquired.token, 9);
    assert_eq!(node.seen.lock().expect("not poisoned").acquires.len(), 1);
}

#[tokio::test]
async fn a_held_lock_reports_loss_when_a_keep_alive_answers_lock_lost() {
    let node = start(Script {
        acquire: Box::new(|_| granted(7)),
        keep_alive: Box::new(|_| Err(lock_lost())),
        ..Script::default()
    })
    .await;
    let client = client(&[&node], 2_000);
    let held = HeldLock::acquire_lock(&client, "db", Duration::from_secs(1), Duration::ZERO)
        .await
        .expect("acquired")
        .expect("granted");
    assert_eq!(held.token(), 7);
    assert!(!held.is_lost());
    let loss = tokio::time::timeout(Duration::from_secs(3), held.lost())
        .await
        .expect("the loss is reported within the TTL");
    assert!(loss.confirmed, "{loss:?}");
    assert!(held.is_lost());
    assert_eq!(
        node.seen.lock().expect("not poisoned").keep_alives.len(),
        1,
        "no keep-alive after lock-lost"
    );
}

#[tokio::test]
async fn a_held_lock_without_keep_alives_is_lost_after_its_ttl() {
    // Every keep-alive fails without an answer the client can trust: once the TTL has passed since
    // the last success, the lock must count as lost.
    let node = start(Script {
        acquire: Box::new(|_| granted(7)),
        keep_alive: Box::new(|_| Err(Status::unavailable("no leader"))),
        ..Script::default()
    })
    .await;
    let client = client(&[&node], 5_000);
    let started = tokio::time::Instant::now();
    let held = HeldLock::acquire_lock(&client, "db", Duration::from_secs(1), Duration::ZERO)
        .await
        .expect("acquired")
        .expect("granted");
    let loss = tokio::time::timeout(Duration::from_secs(3), held.lost())
        .await
        .expect("lost by the local clock");
    assert!(!loss.confirmed, "{loss:?}");
    assert!(
        started.elapsed() <= Duration::from_millis(1_300),
        "lost only {:?} after the acquire was sent",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_held_lock_kept_alive_stays_held_and_releases() {
    let node = start(Script {
        acquire: Box::new(|_| granted(7)),
        keep_alive: Box::new(|_| {
            Ok(KeepAliveResponse {
                header: header(1),
                expires_at_ms: 1,
            })
        }),
        release: Box::new(|_| Ok(ReleaseLockResponse { header: header(1) })),
        ..Script::default()
    })
    .await;
    let client = client(&[&node], 2_000);
    let held = HeldLock::acquire_lock(&client, "db", Duration::from_secs(1), Duration::ZERO)
        .await
        .expect("acquired")
        .expect("granted");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(!held.is_lost(), "{:?}", held.loss());
    held.release().await.expect("released");
    let seen = node.seen.lock().expect("not poisoned");
    assert!(
        seen.keep_alives.len() >= 4,
        "{} keep-alives",
        seen.keep_alives.len()
    );
    assert_eq!(seen.releases.len(), 1);
}

#[tokio::test]
async fn not_granted_is_not_an_error() {
    let node = start(Script {
        acquire: Box::new(|_| {
            Ok(AcquireResponse {
                header: header(1),
                acquired: false,
                token: 8,
                expires_at_ms: 0,
                lock: None,
            })
        }),
        ..Script::default()
    })
    .await;
    let client = client(&[&node], 2_000);
    let held = HeldLock::acquire_lock(&client, "db", Duration::from_secs(5), Duration::ZERO)
        .await
        .expect("answered");
    assert!(held.is_none());
}
