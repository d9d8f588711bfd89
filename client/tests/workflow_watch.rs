//! The workflow watcher's resume rules against an in-process mock Workflows server with scripted
//! streams: STARTED and BOOKMARK are consumed, a broken stream resumes after the last event
//! yielded or bookmarked (no gap, no repeat), and a lost history ends the watch with OUT_OF_RANGE.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_client::{Client, ClientOptions, Code, Error, WorkflowWatchOptions};
use conclave_proto::v1::workflows_server::{Workflows, WorkflowsServer};
use conclave_proto::v1::{
    CancelWorkflowRequest, CancelWorkflowResponse, GetWorkflowRequest, GetWorkflowResponse,
    ListWorkflowsRequest, ListWorkflowsResponse, RetryWorkflowRequest, RetryWorkflowResponse,
    StartWorkflowRequest, StartWorkflowResponse, WatchWorkflowsRequest, WorkflowEvent,
    WorkflowEventKind,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type Script = dyn Fn(usize) -> Vec<Result<WorkflowEvent, Status>> + Send + Sync;
type EventStream = Pin<Box<dyn Stream<Item = Result<WorkflowEvent, Status>> + Send>>;

/// A Workflows node whose watch streams are scripted per call number; everything else is
/// unimplemented. Records each watch's `after_sequence`.
struct MockWorkflows {
    watch: Box<Script>,
    asked: Arc<Mutex<Vec<Option<u64>>>>,
}

fn mock() -> Status {
    Status::unimplemented("mock")
}

#[tonic::async_trait]
impl Workflows for MockWorkflows {
    async fn start(
        &self,
        _: Request<StartWorkflowRequest>,
    ) -> Result<Response<StartWorkflowResponse>, Status> {
        Err(mock())
    }

    async fn get(
        &self,
        _: Request<GetWorkflowRequest>,
    ) -> Result<Response<GetWorkflowResponse>, Status> {
        Err(mock())
    }

    async fn list(
        &self,
        _: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        Err(mock())
    }

    async fn cancel(
        &self,
        _: Request<CancelWorkflowRequest>,
    ) -> Result<Response<CancelWorkflowResponse>, Status> {
        Err(mock())
    }

    async fn retry(
        &self,
        _: Request<RetryWorkflowRequest>,
    ) -> Result<Response<RetryWorkflowResponse>, Status> {
        Err(mock())
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<WatchWorkflowsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let attempt = {
            let mut asked = self.asked.lock().expect("not poisoned");
            asked.push(request.into_inner().after_sequence);
            asked.len() - 1
        };
        // After its scripted items, the stream stays open and quiet.
        let stream = futures::stream::iter((self.watch)(attempt)).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Node {
    address: SocketAddr,
    asked: Arc<Mutex<Vec<Option<u64>>>>,
}

impl Node {
    async fn start(
        watch: impl Fn(usize) -> Vec<Result<WorkflowEvent, Status>> + Send + Sync + 'static,
    ) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let address = listener.local_addr().expect("bound");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mock = MockWorkflows {
            watch: Box::new(watch),
            asked: Arc::clone(&asked),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkflowsServer::new(mock))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Node { address, asked }
    }

    fn client(&self) -> Client {
        let options = ClientOptions {
            deadline: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        Client::connect_with([self.address.to_string()], options).expect("a valid endpoint")
    }

    fn asked(&self) -> Vec<Option<u64>> {
        self.asked.lock().expect("not poisoned").clone()
    }
}

fn event(sequence: u64, kind: WorkflowEventKind) -> Result<WorkflowEvent, Status> {
    Ok(WorkflowEvent {
        sequence,
        kind: kind as i32,
        workflow_id: if sequence == 0 { 0 } else { 7 },
        ..WorkflowEvent::default()
    })
}

#[tokio::test]
async fn a_broken_watch_resumes_after_the_last_bookmark_without_repeats() {
    let node = Node::start(|attempt| match attempt {
        0 => vec![
            event(10, WorkflowEventKind::Started),
            event(11, WorkflowEventKind::StepStarted),
            event(15, WorkflowEventKind::Bookmark),
            Err(Status::unavailable("the node is shutting down")),
        ],
        _ => vec![
            event(15, WorkflowEventKind::Started),
            // A repeat would be the server's bug: skipped, not yielded.
            event(11, WorkflowEventKind::StepStarted),
            event(16, WorkflowEventKind::StepSucceeded),
            event(17, WorkflowEventKind::Finished),
        ],
    })
    .await;
    let stream = node
        .client()
        .watch_workflows(WorkflowWatchOptions {
            workflow_id: 7,
            after_sequence: None,
        })
        .await
        .expect("the watch opens");
    assert_eq!(stream.start_sequence(), 10);
    let yielded: Vec<(u64, WorkflowEventKind)> = stream
        .take(3)
        .map(|event| {
            let event = event.expect("no error");
            (event.sequence, event.kind())
        })
        .collect()
        .await;
    assert_eq!(
        yielded,
        [
            (11, WorkflowEventKind::StepStarted),
            (16, WorkflowEventKind::StepSucceeded),
            (17, WorkflowEventKind::Finished),
        ]
    );
    assert_eq!(node.asked(), [None, Some(15)]);
}

#[tokio::test]
async fn a_lost_history_ends_the_watch_with_out_of_range() {
    let node = Node::start(|attempt| match attempt {
        0 => vec![
            event(20, WorkflowEventKind::Started),
            event(21, WorkflowEventKind::StepStarted),
            Err(Status::out_of_range(
                "the watch fell behind the event history",
            )),
        ],
        _ => vec![event(99, WorkflowEventKind::Started)],
    })
    .await;
    let mut stream = node
        .client()
        .watch_workflows(WorkflowWatchOptions {
            workflow_id: 0,
            after_sequence: Some(19),
        })
        .await
        .expect("the watch opens");
    let first = stream.next().await.expect("an event").expect("no error");
    assert_eq!(first.sequence, 21);
    match stream.next().await {
        Some(Err(Error::Rejected {
            code: Code::OutOfRange,
            ..
        })) => {}
        other => panic!("expected OUT_OF_RANGE, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the watch has ended");
    assert_eq!(node.asked(), [Some(19)]);
}
