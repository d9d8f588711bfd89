//! The task watcher's resume rules against an in-process mock Tasks server with scripted streams:
//! STARTED and BOOKMARK are consumed, a broken stream resumes after the last event yielded or
//! bookmarked (no snapshot, no repeat), and only a lost history makes it start again from the
//! state (SNAPSHOT events).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_client::{Client, ClientOptions, Code, Error, TaskWatchOptions};
use conclave_proto::v1::tasks_server::{Tasks, TasksServer};
use conclave_proto::v1::{
    CancelTaskRequest, CancelTaskResponse, DeadLetterResponse, GetTaskRequest, GetTaskResponse,
    ListDeadLettersRequest, ListTasksRequest, ListTasksResponse, PurgeRequest, RedriveRequest,
    SubmitBatchRequest, SubmitBatchResponse, SubmitRequest, SubmitResponse, Task, TaskEvent,
    TaskEventKind, WaitTaskRequest, WaitTaskResponse, WatchTasksRequest,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type Script = dyn Fn(usize) -> Result<Vec<Result<TaskEvent, Status>>, Status> + Send + Sync;
type EventStream = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;

/// What one watch call asked for: (initial_state, after_sequence).
type Asked = (bool, Option<u64>);

/// A Tasks node whose watch streams are scripted per call number; everything else is
/// unimplemented.
struct MockTasks {
    watch: Box<Script>,
    asked: Arc<Mutex<Vec<Asked>>>,
}

fn mock() -> Status {
    Status::unimplemented("mock")
}

#[tonic::async_trait]
impl Tasks for MockTasks {
    async fn submit(&self, _: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        Err(mock())
    }

    async fn submit_batch(
        &self,
        _: Request<SubmitBatchRequest>,
    ) -> Result<Response<SubmitBatchResponse>, Status> {
        Err(mock())
    }

    async fn get_task(
        &self,
        _: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        Err(mock())
    }

    async fn list_tasks(
        &self,
        _: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        Err(mock())
    }

    type WatchTasksStream = EventStream;

    async fn watch_tasks(
        &self,
        request: Request<WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let request = request.into_inner();
        let attempt = {
            let mut asked = self.asked.lock().expect("not poisoned");
            asked.push((request.initial_state, request.after_sequence));
            asked.len() - 1
        };
        let items = (self.watch)(attempt)?;
        // After its scripted items, the stream stays open and quiet.
        let stream = futures::stream::iter(items).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn wait_task(
        &self,
        _: Request<WaitTaskRequest>,
    ) -> Result<Response<WaitTaskResponse>, Status> {
        Err(mock())
    }

    async fn cancel_task(
        &self,
        _: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        Err(mock())
    }

    async fn list_dead_letters(
        &self,
        _: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        Err(mock())
    }

    async fn redrive(
        &self,
        _: Request<RedriveRequest>,
    ) -> Result<Response<DeadLetterResponse>, Status> {
        Err(mock())
    }

    async fn purge(
        &self,
        _: Request<PurgeRequest>,
    ) -> Result<Response<DeadLetterResponse>, Status> {
        Err(mock())
    }
}

struct Node {
    address: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Node {
    async fn start(
        watch: impl Fn(usize) -> Result<Vec<Result<TaskEvent, Status>>, Status> + Send + Sync + 'static,
    ) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let address = listener.local_addr().expect("bound");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mock = MockTasks {
            watch: Box::new(watch),
            asked: Arc::clone(&asked),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TasksServer::new(mock))
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

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().expect("not poisoned").clone()
    }
}

fn started(sequence: u64) -> Result<TaskEvent, Status> {
    Ok(TaskEvent {
        sequence,
        kind: TaskEventKind::Started as i32,
        task: None,
    })
}

fn snapshot(task_id: u64) -> Result<TaskEvent, Status> {
    change(0, TaskEventKind::Snapshot, task_id)
}

fn change(sequence: u64, kind: TaskEventKind, task_id: u64) -> Result<TaskEvent, Status> {
    Ok(TaskEvent {
        sequence,
        kind: kind as i32,
        task: Some(Task {
            id: task_id,
            ..Task::default()
        }),
    })
}

/// (sequence, kind, task id) of the first `count` events the watch yields.
async fn yielded(
    stream: conclave_client::TaskEventStream,
    count: usize,
) -> Vec<(u64, TaskEventKind, u64)> {
    stream
        .take(count)
        .map(|event| {
            let event = event.expect("no error");
            (event.sequence, event.kind(), event.task.map_or(0, |t| t.id))
        })
        .collect()
        .await
}

#[tokio::test]
async fn a_broken_watch_resumes_after_the_last_event_without_a_snapshot() {
    let node = Node::start(|attempt| {
        Ok(match attempt {
            0 => vec![
                started(10),
                snapshot(1),
                change(11, TaskEventKind::Submitted, 2),
                change(13, TaskEventKind::Assigned, 2),
                Err(Status::unavailable("leader changed")),
            ],
            // A server that repeated an event must not make the client yield it twice.
            1 => vec![
                started(13),
                change(13, TaskEventKind::Assigned, 2),
                change(14, TaskEventKind::Succeeded, 2),
                Err(Status::internal("connection reset")),
            ],
            _ => vec![started(14), change(20, TaskEventKind::Submitted, 3)],
        })
    })
    .await;
    let stream = node
        .client()
        .watch_tasks(TaskWatchOptions {
            queue: "docs".into(),
            initial_state: true,
            ..TaskWatchOptions::default()
        })
        .await
        .expect("established");
    assert_eq!(stream.start_sequence(), 10);
    assert_eq!(
        yielded(stream, 5).await,
        [
            (0, TaskEventKind::Snapshot, 1),
            (11, TaskEventKind::Submitted, 2),
            (13, TaskEventKind::Assigned, 2),
            (14, TaskEventKind::Succeeded, 2),
            (20, TaskEventKind::Submitted, 3),
        ]
    );
    assert_eq!(
        node.asked(),
        [(true, None), (false, Some(13)), (false, Some(14))]
    );
}

fn bookmark(sequence: u64) -> Result<TaskEvent, Status> {
    Ok(TaskEvent {
        sequence,
        kind: TaskEventKind::Bookmark as i32,
        task: None,
    })
}

#[tokio::test]
async fn a_quiet_watch_resumes_after_its_last_bookmark() {
    let node = Node::start(|attempt| {
        Ok(match attempt {
            // One change of the queue, then 90,000 events of others went by: the node says so.
            0 => vec![
                started(10),
                change(11, TaskEventKind::Submitted, 2),
                bookmark(90_000),
                Err(Status::unavailable("leader changed")),
            ],
            // A stale bookmark (behind the cursor) must not move it back.
            1 => vec![
                started(90_000),
                bookmark(50),
                change(90_001, TaskEventKind::Assigned, 2),
                bookmark(95_000),
                Err(Status::internal("connection reset")),
            ],
            _ => vec![started(95_000), change(95_003, TaskEventKind::Succeeded, 2)],
        })
    })
    .await;
    let mut stream = node
        .client()
        .watch_tasks(TaskWatchOptions {
            queue: "quiet".into(),
            ..TaskWatchOptions::default()
        })
        .await
        .expect("established");
    assert_eq!((stream.start_sequence(), stream.cursor()), (10, 10));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = stream.next().await.expect("an item").expect("no error");
        seen.push((event.sequence, event.kind(), stream.cursor()));
    }
    assert_eq!(
        seen,
        [
            (11, TaskEventKind::Submitted, 11),
            (90_001, TaskEventKind::Assigned, 90_001),
            (95_003, TaskEventKind::Succeeded, 95_003),
        ],
        "bookmarks are not yielded"
    );
    assert_eq!(
        node.asked(),
        [(false, None), (false, Some(90_000)), (false, Some(95_000))],
        "each resume starts after the last bookmark, not after the last change"
    );
}

#[tokio::test]
async fn a_watch_whose_history_is_gone_starts_again_from_the_state() {
    let node = Node::start(|attempt| match attempt {
        // The resume the caller asked for is refused at once: its history is gone.
        0 => Err(Status::out_of_range(
            "after_sequence: event 6 is no longer kept",
        )),
        1 => Ok(vec![
            started(900),
            snapshot(7),
            change(901, TaskEventKind::Assigned, 7),
            // Then this stream falls behind.
            Err(Status::out_of_range(
                "the watch fell behind the event history",
            )),
        ]),
        _ => Ok(vec![
            started(2000),
            snapshot(7),
            change(2001, TaskEventKind::Succeeded, 7),
        ]),
    })
    .await;
    let stream = node
        .client()
        .watch_tasks(TaskWatchOptions {
            task_id: 7,
            after_sequence: Some(5),
            ..TaskWatchOptions::default()
        })
        .await
        .expect("established from the state instead");
    assert_eq!(stream.start_sequence(), 900);
    assert_eq!(
        yielded(stream, 4).await,
        [
            (0, TaskEventKind::Snapshot, 7),
            (901, TaskEventKind::Assigned, 7),
            (0, TaskEventKind::Snapshot, 7),
            (2001, TaskEventKind::Succeeded, 7),
        ]
    );
    assert_eq!(node.asked(), [(false, Some(5)), (true, None), (true, None)]);
}

#[tokio::test]
async fn a_node_that_does_not_say_where_the_watch_starts_is_refused() {
    let node = Node::start(|_| Ok(vec![change(3, TaskEventKind::Submitted, 1)])).await;
    let error = node
        .client()
        .watch_tasks(TaskWatchOptions::default())
        .await
        .expect_err("no STARTED");
    assert!(
        matches!(
            error,
            Error::Rejected {
                code: Code::Unimplemented,
                ..
            }
        ),
        "{error:?}"
    );
}
