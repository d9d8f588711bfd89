//! Task watches resume where they broke: a watch whose node is killed goes on through another node
//! after the last sequence it delivered, with no gap, no repeat and no snapshot. A resume after a
//! sequence not reached yet waits for it; a resume of a task purged meanwhile gets the events up to
//! PURGED; one from before the kept history is OUT_OF_RANGE, and the client library then starts
//! again from the current state. A watch of a quiet queue gets BOOKMARKs while other queues are
//! busy, and the client library resumes after them: a break after more than the history's worth of
//! other events needs no snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context as _};
use conclave_client::{Client, TaskEventStream, TaskWatchOptions};
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::{
    CancelTaskRequest, PurgeRequest, SubmitBatchRequest, TaskEvent, TaskEventKind, TaskSpec,
    WatchTasksRequest,
};
use conclave_proto::OLDEST_SEQUENCE_METADATA;
use conclave_tests::channel;
use conclave_tests::fleet::{task_spec, tasks_client, Fleet, TestAgent};
use conclave_tests::{ClusterConfig, TestCluster};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::{Code, Status};

use crate::{state, DRAIN_TIMEOUT, PUSH_TIMEOUT};

/// Tasks submitted while the watched node dies: every third is parked (it needs a capability no
/// agent has) and canceled; the agent completes the others.
const TASKS: usize = 30;
/// Events every node keeps (COORD_EVENTS_MAX in node/src/limits.rs).
const EVENTS_KEPT: usize = 100_000;
/// Tasks per SubmitBatch when filling the event history (MAX_SUBMIT_BATCH).
const BATCH: usize = 1000;
/// `--watch-progress-ms` for the tests of bookmarks: short, so they do not wait.
const BOOKMARK_MS: u64 = 100;

/// What two watches must agree on: (sequence, kind, task id) of each change.
type Change = (u64, TaskEventKind, u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_watch_resumes_on_another_node_without_gap_or_repeat() -> anyhow::Result<()> {
    const QUEUE: &str = "resume";
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let watched = cluster.followers().await?[0];
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!(
        watched,
        "a client library watch of the queue, on a follower (the first endpoint)"
    );
    let mut endpoints = vec![cluster.api_addr(watched).to_string()];
    endpoints.extend(
        cluster
            .node_ids()
            .into_iter()
            .filter(|id| *id != watched)
            .map(|id| cluster.api_addr(id).to_string()),
    );
    let client = Client::connect(endpoints)?;
    let stream = client
        .watch_tasks(TaskWatchOptions {
            queue: QUEUE.into(),
            ..TaskWatchOptions::default()
        })
        .await?;
    let start = stream.start_sequence();
    let mut watcher = forward(stream);

    tracing::info!(
        leader,
        "an agent on the leader completes every task it gets"
    );
    let mut agent = TestAgent::register(&fleet, "resumer", &["resume"], 4, 10_000).await?;
    agent.connect(leader).await?;
    let worker = tokio::spawn(async move {
        while let Ok(assignment) = agent.next_assignment(DRAIN_TIMEOUT).await {
            // A refused completion shows below as a task that never succeeds.
            let _ = agent
                .complete(assignment.task_id, assignment.fencing_token, b"ok")
                .await;
        }
    });

    tracing::info!(
        tasks = TASKS,
        watched,
        "submit, cancel and complete tasks; SIGKILL the watched node a third of the way in"
    );
    let mut submitted = BTreeSet::new();
    for index in 0..TASKS {
        if index == TASKS / 3 {
            cluster.kill(watched)?;
        }
        let parked = index % 3 == 2;
        let capability = if parked { "nobody" } else { "resume" };
        let task_id = fleet
            .submit(task_spec(QUEUE, b"", &[capability]))
            .await?
            .task_id;
        submitted.insert(task_id);
        if parked {
            cancel(&mut fleet, task_id).await?;
        }
    }

    tracing::info!("the watch, resumed on another node, sees every task finish");
    let seen = receive_until(&mut watcher, |events| all_finished(events, &submitted)).await?;
    ensure!(
        seen.iter().all(|e| e.kind() != TaskEventKind::Snapshot),
        "a resumed watch sent SNAPSHOT events: {:?}",
        changes(&seen)
    );
    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    ensure!(
        sequences.first().is_some_and(|first| *first > start)
            && sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "sequences not strictly increasing after the start {start}: {sequences:?}"
    );

    tracing::info!(
        leader,
        "a fresh watch resumed after the same start shows exactly the same changes"
    );
    let mut fresh = resume_watch(cluster.api_addr(leader), QUEUE, start).await?;
    let mut reference = Vec::new();
    while !all_finished(&reference, &submitted) {
        reference.push(next_event(&mut fresh).await?);
    }
    ensure!(
        changes(&seen) == changes(&reference),
        "the resumed watch and a fresh one differ:\n resumed {:?}\n fresh   {:?}",
        changes(&seen),
        changes(&reference)
    );

    tracing::info!("the last change the watch saw of each task is its final state");
    let last_seen: BTreeMap<u64, i32> = seen
        .iter()
        .filter_map(|e| e.task.as_ref().map(|task| (task.id, task.state)))
        .collect();
    let tasks = fleet.list_queue(QUEUE).await?;
    ensure!(
        tasks.iter().map(|t| t.id).collect::<BTreeSet<_>>() == submitted,
        "listed {:?}, submitted {submitted:?}",
        tasks.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    for task in &tasks {
        ensure!(
            last_seen.get(&task.id) == Some(&task.state),
            "task {} is {:?}, but the watch last saw {:?}",
            task.id,
            state(task),
            last_seen.get(&task.id)
        );
    }
    worker.abort();
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_a_sequence_not_reached_yet_waits_for_it() -> anyhow::Result<()> {
    const QUEUE: &str = "ahead";
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!("a resume that also asks for the initial state is INVALID_ARGUMENT naming both");
    let refused = open_watch(
        cluster.api_addr(follower),
        WatchTasksRequest {
            queue: QUEUE.into(),
            initial_state: true,
            after_sequence: Some(0),
            ..WatchTasksRequest::default()
        },
    )
    .await
    .err()
    .context("initial_state with after_sequence was accepted")?;
    ensure!(
        refused.code() == Code::InvalidArgument
            && refused.message().contains("after_sequence")
            && refused.message().contains("initial_state"),
        "{refused:?}"
    );

    tracing::info!(
        follower,
        "a resume after a sequence the cluster has not reached starts at once, then waits for it"
    );
    let (mut now, start) = watch_from_now(cluster.api_addr(leader), QUEUE).await?;
    let ahead = start + 2;
    let mut early = resume_watch(cluster.api_addr(follower), QUEUE, ahead).await?;
    for _ in 0..4 {
        fleet.submit(task_spec(QUEUE, b"", &["nobody"])).await?;
    }
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(next_event(&mut now).await?);
    }
    let expected: Vec<Change> = changes(&all)
        .into_iter()
        .filter(|(sequence, ..)| *sequence > ahead)
        .collect();
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_event(&mut early).await?);
    }
    ensure!(
        changes(&got) == expected,
        "after {ahead}: got {:?}, expected {expected:?} (all: {:?})",
        changes(&got),
        changes(&all)
    );

    tracing::info!("a resumed watch of a task purged meanwhile still gets its events up to PURGED");
    let deadline_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + 300;
    let task_id = fleet
        .submit(TaskSpec {
            deadline_unix_ms,
            ..task_spec(QUEUE, b"", &["nobody"])
        })
        .await?
        .task_id;
    let mut task_watch = open_watch(
        cluster.api_addr(leader),
        WatchTasksRequest {
            task_id,
            ..WatchTasksRequest::default()
        },
    )
    .await?;
    let cursor = next_event(&mut task_watch).await?.sequence;
    let expired = next_event(&mut task_watch).await?;
    ensure!(expired.kind() == TaskEventKind::Expired, "{expired:?}");
    // On the leader, which has applied the purge when it answers: the task is gone there.
    purge(&mut fleet, task_id).await?;
    let mut resumed = open_watch(
        cluster.api_addr(leader),
        WatchTasksRequest {
            task_id,
            after_sequence: Some(cursor),
            ..WatchTasksRequest::default()
        },
    )
    .await?;
    let mut kinds = Vec::new();
    while let Some(event) = resumed.message().await? {
        kinds.push(event.kind());
    }
    ensure!(
        kinds
            == [
                TaskEventKind::Started,
                TaskEventKind::Expired,
                TaskEventKind::Purged
            ],
        "{kinds:?}"
    );
    cluster.shutdown().await
}

/// The slowest test of the file (about 8 s in a debug build): it must fill the whole history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_the_kept_history_is_out_of_range() -> anyhow::Result<()> {
    const QUEUE: &str = "old";
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!(
        events = EVENTS_KEPT + BATCH,
        "four tasks, then more events than the history keeps"
    );
    let (_, start) = watch_from_now(cluster.api_addr(leader), QUEUE).await?;
    let mut parked = BTreeSet::new();
    for _ in 0..4 {
        parked.insert(
            fleet
                .submit(task_spec(QUEUE, b"", &["nobody"]))
                .await?
                .task_id,
        );
    }
    for _ in 0..=EVENTS_KEPT / BATCH {
        submit_batch(&mut fleet, vec![task_spec("bulk", b"", &["nobody"]); BATCH]).await?;
    }

    tracing::info!("a resume from before the kept history is OUT_OF_RANGE naming the oldest kept");
    let gone = open_watch(
        cluster.api_addr(leader),
        WatchTasksRequest {
            queue: QUEUE.into(),
            after_sequence: Some(start),
            ..WatchTasksRequest::default()
        },
    )
    .await
    .err()
    .context("a resume from before the kept history was accepted")?;
    let oldest: u64 = gone
        .metadata()
        .get(OLDEST_SEQUENCE_METADATA)
        .with_context(|| format!("no {OLDEST_SEQUENCE_METADATA} metadata: {gone:?}"))?
        .to_str()?
        .parse()?;
    ensure!(
        gone.code() == Code::OutOfRange
            && oldest > start + 1
            && gone.message().contains("after_sequence")
            && gone
                .message()
                .contains(&format!("the oldest kept is {oldest}")),
        "{gone:?}"
    );

    tracing::info!(
        oldest,
        "a resume right before the oldest kept event gets it"
    );
    let mut edge = open_watch(
        cluster.api_addr(leader),
        WatchTasksRequest {
            after_sequence: Some(oldest - 1),
            ..WatchTasksRequest::default()
        },
    )
    .await?;
    let started = next_event(&mut edge).await?;
    let first = next_event(&mut edge).await?;
    ensure!(
        started.kind() == TaskEventKind::Started
            && started.sequence == oldest - 1
            && first.sequence == oldest,
        "{started:?} then {first:?}"
    );

    tracing::info!("the client library then starts again from the current state: SNAPSHOT events");
    let client = Client::connect([cluster.api_addr(leader).to_string()])?;
    let mut stream = client
        .watch_tasks(TaskWatchOptions {
            queue: QUEUE.into(),
            after_sequence: Some(start),
            ..TaskWatchOptions::default()
        })
        .await?;
    ensure!(
        stream.start_sequence() >= oldest,
        "started at {}, before the oldest kept {oldest}",
        stream.start_sequence()
    );
    let mut snapshot = BTreeSet::new();
    for _ in 0..parked.len() {
        let event = tokio::time::timeout(PUSH_TIMEOUT, stream.next())
            .await
            .context("no SNAPSHOT event")?
            .context("the watch ended")??;
        ensure!(event.kind() == TaskEventKind::Snapshot, "{event:?}");
        snapshot.insert(event.task.context("a SNAPSHOT without a task")?.id);
    }
    ensure!(
        snapshot == parked,
        "a snapshot of {snapshot:?}, the queue holds {parked:?}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_resumes_after_its_bookmark() -> anyhow::Result<()> {
    const QUIET: &str = "quiet";
    /// Events every node keeps here (the hidden --coord-events).
    const KEPT: usize = 200;
    let config = ClusterConfig {
        extra_args: vec![
            format!("--coord-events={KEPT}"),
            format!("--watch-progress-ms={BOOKMARK_MS}"),
        ],
        ..ClusterConfig::new(3)
    };
    let mut cluster = TestCluster::start_initialized(config).await?;
    let leader = cluster.leader().await?;
    let watched = cluster.followers().await?[0];
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!(
        "a parked task in the quiet queue: a watch that had to start again from the state would show it"
    );
    let parked = fleet
        .submit(task_spec(QUIET, b"", &["nobody"]))
        .await?
        .task_id;

    tracing::info!(
        watched,
        "a client library watch of the quiet queue on a follower (its first endpoint), a raw one on the leader"
    );
    let mut endpoints = vec![cluster.api_addr(watched).to_string()];
    endpoints.extend(
        cluster
            .node_ids()
            .into_iter()
            .filter(|id| *id != watched)
            .map(|id| cluster.api_addr(id).to_string()),
    );
    // Both after the parked task's SUBMITTED, which the follower may not have applied yet.
    let (mut raw, start) = watch_from_now(cluster.api_addr(leader), QUIET).await?;
    let client = Client::connect(endpoints)?;
    let mut stream = client
        .watch_tasks(TaskWatchOptions {
            queue: QUIET.into(),
            after_sequence: Some(start),
            ..TaskWatchOptions::default()
        })
        .await?;

    tracing::info!(
        events = 3 * KEPT,
        kept = KEPT,
        "another queue fills the event history three times over"
    );
    for _ in 0..3 {
        submit_batch(&mut fleet, vec![task_spec("busy", b"", &["nobody"]); KEPT]).await?;
    }
    let (_, last) = watch_from_now(cluster.api_addr(leader), "busy").await?;

    tracing::info!(
        last,
        "the raw watch gets only BOOKMARKs, without a task, in increasing sequence, up to the last event"
    );
    let mut bookmarked = 0;
    while bookmarked < last {
        let bookmark = next_message(&mut raw).await?;
        ensure!(
            bookmark.kind() == TaskEventKind::Bookmark
                && bookmark.task.is_none()
                && bookmark.sequence > bookmarked,
            "after a bookmark at {bookmarked}: {bookmark:?}"
        );
        bookmarked = bookmark.sequence;
    }

    tracing::info!(
        start,
        "the history has moved on: a resume from where the watch started is OUT_OF_RANGE"
    );
    let gone = open_watch(
        cluster.api_addr(leader),
        WatchTasksRequest {
            queue: QUIET.into(),
            after_sequence: Some(start),
            ..WatchTasksRequest::default()
        },
    )
    .await
    .err()
    .context("a resume from before the kept history was accepted")?;
    ensure!(gone.code() == Code::OutOfRange, "{gone:?}");

    tracing::info!("the library watch takes its bookmark as its cursor and yields nothing");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while stream.cursor() < last {
        ensure!(
            Instant::now() < deadline,
            "the cursor is still {} after {DRAIN_TIMEOUT:?}",
            stream.cursor()
        );
        // The stream is an unfold: a `next` cut short resumes where it was when polled again.
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), stream.next()).await {
            bail!("the quiet watch yielded {item:?}");
        }
    }

    tracing::info!(
        watched,
        "SIGKILL the watched node, then submit to the quiet queue: the watch resumes elsewhere after its bookmark"
    );
    cluster.kill(watched)?;
    let submitted = fleet
        .submit(task_spec(QUIET, b"", &["nobody"]))
        .await?
        .task_id;
    let event = tokio::time::timeout(DRAIN_TIMEOUT, stream.next())
        .await
        .context("the watch yielded nothing")?
        .context("the watch ended")??;
    ensure!(
        event.kind() == TaskEventKind::Submitted
            && event.task.as_ref().map(|task| task.id) == Some(submitted),
        "expected SUBMITTED of task {submitted} (not a SNAPSHOT of {parked}): {event:?}"
    );
    cluster.shutdown().await
}

/// Runs the client library's stream in the background, so it follows the cluster while the test
/// acts, and hands over what it yields.
fn forward(mut stream: TaskEventStream) -> mpsc::UnboundedReceiver<anyhow::Result<TaskEvent>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            if sender.send(item.map_err(anyhow::Error::from)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Events from `events` until `done` holds for all of them.
async fn receive_until(
    events: &mut mpsc::UnboundedReceiver<anyhow::Result<TaskEvent>>,
    done: impl Fn(&[TaskEvent]) -> bool,
) -> anyhow::Result<Vec<TaskEvent>> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut received = Vec::new();
    while !done(&received) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => received.push(event?),
            Ok(None) => bail!("the watch ended after {:?}", changes(&received)),
            Err(_) => bail!(
                "the watch did not get there within {DRAIN_TIMEOUT:?}: {:?}",
                changes(&received)
            ),
        }
    }
    Ok(received)
}

/// True once every task of `tasks` has a SUCCEEDED or CANCELED event.
fn all_finished(events: &[TaskEvent], tasks: &BTreeSet<u64>) -> bool {
    let finished: BTreeSet<u64> = events
        .iter()
        .filter(|e| matches!(e.kind(), TaskEventKind::Succeeded | TaskEventKind::Canceled))
        .filter_map(|e| e.task.as_ref().map(|task| task.id))
        .collect();
    tasks.is_subset(&finished)
}

fn changes(events: &[TaskEvent]) -> Vec<Change> {
    events
        .iter()
        .map(|e| (e.sequence, e.kind(), e.task.as_ref().map_or(0, |t| t.id)))
        .collect()
}

/// A raw watch of `queue` on one node from its current state, and the sequence it starts at.
async fn watch_from_now(
    addr: SocketAddr,
    queue: &str,
) -> anyhow::Result<(Streaming<TaskEvent>, u64)> {
    let mut stream = open_watch(
        addr,
        WatchTasksRequest {
            queue: queue.into(),
            ..WatchTasksRequest::default()
        },
    )
    .await?;
    let started = next_event(&mut stream).await?;
    ensure!(
        started.kind() == TaskEventKind::Started && started.task.is_none(),
        "{started:?} came first"
    );
    Ok((stream, started.sequence))
}

/// A raw watch of `queue` on one node resumed after `after`, which its STARTED must name.
async fn resume_watch(
    addr: SocketAddr,
    queue: &str,
    after: u64,
) -> anyhow::Result<Streaming<TaskEvent>> {
    let mut stream = open_watch(
        addr,
        WatchTasksRequest {
            queue: queue.into(),
            after_sequence: Some(after),
            ..WatchTasksRequest::default()
        },
    )
    .await?;
    let started = next_event(&mut stream).await?;
    ensure!(
        started.kind() == TaskEventKind::Started && started.sequence == after,
        "expected STARTED at {after}, got {started:?}"
    );
    Ok(stream)
}

/// A raw task watch on one node, without the per-call timeout that would cut a stream.
async fn open_watch(
    addr: SocketAddr,
    request: WatchTasksRequest,
) -> Result<Streaming<TaskEvent>, Status> {
    let mut client = TasksClient::new(channel::channel(addr, None));
    Ok(client.watch_tasks(request).await?.into_inner())
}

/// The next message that is not a BOOKMARK (which a raw stream may send whenever it was quiet for
/// a while).
async fn next_event(stream: &mut Streaming<TaskEvent>) -> anyhow::Result<TaskEvent> {
    loop {
        let event = next_message(stream).await?;
        if event.kind() != TaskEventKind::Bookmark {
            return Ok(event);
        }
    }
}

async fn next_message(stream: &mut Streaming<TaskEvent>) -> anyhow::Result<TaskEvent> {
    match tokio::time::timeout(PUSH_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(event))) => Ok(event),
        Ok(Ok(None)) => bail!("the watch ended"),
        Ok(Err(status)) => Err(anyhow!(status).context("the watch failed")),
        Err(_) => bail!("no event within {PUSH_TIMEOUT:?}"),
    }
}

async fn cancel(fleet: &mut Fleet, task_id: u64) -> anyhow::Result<()> {
    let request = CancelTaskRequest {
        request_id: Some(fleet.next_request_id()),
        task_id,
        reason: "parked".into(),
    };
    let canceled = fleet
        .retry("cancel", |addr| {
            let request = request.clone();
            async move {
                tasks_client(addr)
                    .cancel_task(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?
        .map_err(|status| anyhow!(status).context(format!("cancel {task_id}")))?;
    ensure!(canceled.canceled, "task {task_id}: {canceled:?}");
    Ok(())
}

async fn purge(fleet: &mut Fleet, task_id: u64) -> anyhow::Result<()> {
    let request = PurgeRequest {
        request_id: Some(fleet.next_request_id()),
        task_ids: vec![task_id],
        queue: String::new(),
    };
    let purged = fleet
        .retry("purge", |addr| {
            let request = request.clone();
            async move {
                tasks_client(addr)
                    .purge(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?
        .map_err(|status| anyhow!(status).context(format!("purge {task_id}")))?;
    ensure!(purged.count == 1, "task {task_id}: {purged:?}");
    Ok(())
}

async fn submit_batch(fleet: &mut Fleet, tasks: Vec<TaskSpec>) -> anyhow::Result<()> {
    let request = SubmitBatchRequest {
        request_id: Some(fleet.next_request_id()),
        tasks,
    };
    fleet
        .retry("submit batch", |addr| {
            let request = request.clone();
            async move {
                tasks_client(addr)
                    .submit_batch(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?
        .map_err(|status| anyhow!(status).context("submit batch"))?;
    Ok(())
}
