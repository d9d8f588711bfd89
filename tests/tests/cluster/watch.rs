//! Watches: a prefix watch resumed across leader changes and node deaths sees every change to the
//! prefix exactly once, in revision order, and a watch older than the history fails as compacted.
//! A watch of a quiet key gets progress notices while other keys change, and the client library's
//! watch resumes after them: a break after more than the history's worth of other writes loses
//! nothing and is not compacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use conclave_client::{Client, WatchOptions, WatchStream};
use conclave_proto::v1::{EventType, TransferLeaderRequest, WatchRequest, WatchResponse};
use conclave_proto::COMPACT_REVISION_METADATA;
use conclave_tests::channel;
use conclave_tests::poll::{eventually, retry_transient};
use conclave_tests::writer::Writer;
use conclave_tests::{ClusterConfig, TestCluster};
use futures::StreamExt as _;
use tokio::sync::watch;
use tonic::codec::Streaming;
use tonic::Code;

use crate::WRITE_TIMEOUT;

const PREFIX: &[u8] = b"watched/";
/// Bound on the whole watch, reconnections included.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the writer reaching the next number of acknowledged writes.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);
/// `--watch-progress-ms` for the tests of progress notices: short, so they do not wait.
const NOTICE_MS: u64 = 100;

/// One acknowledged write: its revision, key and value.
type Acknowledged = (u64, Vec<u8>, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_across_leader_change() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut writer = cluster.writer();

    tracing::info!("write some history, inside and outside the watched prefix");
    let mut history: Vec<Acknowledged> = Vec::new();
    for index in 0..10 {
        let key = if index % 2 == 0 {
            format!("watched/{index:05}")
        } else {
            format!("other/{index:05}")
        };
        let value = format!("early {index}").into_bytes();
        let response = writer
            .put(key.clone(), value.clone(), WRITE_TIMEOUT)
            .await?;
        history.push((
            response.header.context("no header")?.revision,
            key.into_bytes(),
            value,
        ));
    }
    let start_revision = history[0].0;

    let watch_node = cluster.followers().await?[0];
    tracing::info!(
        watch_node,
        start_revision,
        "open a prefix watch on a follower, from the first revision"
    );
    let mut watch_addrs: Vec<(u64, SocketAddr)> = cluster.api_addrs().into_iter().collect();
    let watch_node_index = watch_addrs.iter().position(|(id, _)| *id == watch_node);
    watch_addrs.rotate_left(watch_node_index.expect("the watch node is in the cluster"));
    let (target_sender, target) = watch::channel(None);
    let watcher = tokio::spawn(watch_resuming(watch_addrs, start_revision, target));

    tracing::info!("keep writing in the background, inside and outside the prefix");
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let background = tokio::spawn(write_until_stopped(
        writer,
        stop.clone(),
        acknowledged_count.clone(),
    ));
    wait_for_writes(&acknowledged_count, 20).await?;

    let leader = cluster.leader().await?;
    tracing::info!(
        leader,
        watch_node,
        "transfer leadership to the watch's node while writing"
    );
    let transferred = retry_transient("transfer leader", WRITE_TIMEOUT, || {
        let mut client = cluster.cluster_client(leader);
        async move {
            client
                .transfer_leader(TransferLeaderRequest {
                    to_node_id: watch_node,
                })
                .await
        }
    })
    .await?
    .into_inner();
    assert_eq!(transferred.leader_id, watch_node, "{transferred:?}");
    wait_for_writes(&acknowledged_count, 40).await?;

    tracing::info!(
        watch_node,
        "SIGKILL the watch's node, now the leader; the watch resumes on another node"
    );
    cluster.kill(watch_node)?;
    cluster.leader().await?;
    wait_for_writes(&acknowledged_count, 70).await?;
    stop.store(true, Ordering::SeqCst);
    history.extend(background.await??);

    let watched: Vec<&Acknowledged> = history
        .iter()
        .filter(|(_, key, _)| key.starts_with(PREFIX))
        .collect();
    let last = watched.last().expect("prefix keys were written").0;
    tracing::info!(
        writes = history.len(),
        watched = watched.len(),
        last,
        "wait for the watch to reach the last acknowledged revision"
    );
    target_sender.send(Some(last))?;
    let responses = tokio::time::timeout(WATCH_TIMEOUT, watcher)
        .await
        .map_err(|_| {
            anyhow!("the watch did not reach revision {last} within {WATCH_TIMEOUT:?}")
        })???;

    tracing::info!(
        "every acknowledged write to the prefix is seen exactly once, in order, and nothing else"
    );
    let mut seen: Vec<Acknowledged> = Vec::new();
    let mut previous_revision = 0;
    for response in &responses {
        assert!(
            response.revision > previous_revision,
            "revision {} after {previous_revision}: duplicate or out of order",
            response.revision
        );
        previous_revision = response.revision;
        for event in &response.events {
            assert_eq!(
                event.r#type,
                EventType::Put as i32,
                "only puts were written: {event:?}"
            );
            let kv = event.kv.as_ref().context("event without kv")?;
            assert_eq!(kv.mod_revision, response.revision, "{response:?}");
            seen.push((response.revision, kv.key.clone(), kv.value.clone()));
        }
    }
    let expected: Vec<Acknowledged> = watched.into_iter().cloned().collect();
    if seen != expected {
        let seen_revisions: Vec<u64> = seen.iter().map(|(revision, _, _)| *revision).collect();
        let expected_revisions: Vec<u64> =
            expected.iter().map(|(revision, _, _)| *revision).collect();
        panic!(
            "the watch saw other changes than were acknowledged\nseen revisions:     {seen_revisions:?}\nexpected revisions: {expected_revisions:?}\nfirst difference: {:?}",
            seen.iter().zip(&expected).find(|(seen, expected)| seen != expected)
        );
    }

    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_before_history_is_out_of_range() -> anyhow::Result<()> {
    let config = ClusterConfig {
        watch_history: Some(10),
        ..ClusterConfig::new(1)
    };
    let cluster = TestCluster::start_initialized(config).await?;
    let mut writer = cluster.writer();

    tracing::info!("write 50 revisions with a history of 10");
    let mut revisions = BTreeMap::new();
    for index in 0..50 {
        let key = format!("watched/{index:05}").into_bytes();
        let response = writer
            .put(key.clone(), b"v".to_vec(), WRITE_TIMEOUT)
            .await?;
        revisions.insert(response.header.context("no header")?.revision, key);
    }
    let last = *revisions.keys().next_back().expect("written");

    tracing::info!("a watch from revision 1 fails OUT_OF_RANGE naming the oldest revision kept");
    let mut client = cluster.watch_kv(1);
    let request = WatchRequest {
        key: PREFIX.to_vec(),
        prefix: true,
        start_revision: 1,
    };
    let status = match client.watch(request).await {
        Err(status) => status,
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status,
            Ok(message) => bail!("a watch from compacted revision 1 delivered {message:?}"),
        },
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let oldest: u64 = status
        .metadata()
        .get(COMPACT_REVISION_METADATA)
        .with_context(|| format!("no {COMPACT_REVISION_METADATA} metadata: {status:?}"))?
        .to_str()?
        .parse()?;
    assert!(
        oldest > 1 && oldest <= last,
        "oldest available revision {oldest}, last {last}"
    );
    assert!(
        last + 1 - oldest >= 10,
        "a history of 10 keeps at least the last 10 revisions; oldest is {oldest} of {last}"
    );

    tracing::info!(
        oldest,
        "a watch from the oldest available revision replays from there"
    );
    let mut stream = client
        .watch(WatchRequest {
            key: PREFIX.to_vec(),
            prefix: true,
            start_revision: oldest,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|revision| *revision < last) {
        let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .context("the watch stalled")??
            .context("the watch ended")?;
        if !response.events.is_empty() {
            seen.push(response.revision);
        }
    }
    let expected: Vec<u64> = (oldest..=last).collect();
    assert_eq!(seen, expected, "replayed revisions");

    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_resumes_after_its_progress_notice() -> anyhow::Result<()> {
    const QUIET: &[u8] = b"quiet";
    const HISTORY: u64 = 20;
    let config = ClusterConfig {
        watch_history: Some(HISTORY),
        extra_args: vec![format!("--watch-progress-ms={NOTICE_MS}")],
        ..ClusterConfig::new(3)
    };
    let mut cluster = TestCluster::start_initialized(config).await?;
    let leader = cluster.leader().await?;
    let watched = cluster.followers().await?[0];
    let mut writer = cluster.writer();

    tracing::info!(
        watched,
        "a client library watch of a quiet key on a follower (its first endpoint), a raw one on the leader"
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
    let mut watch = client.watch(QUIET, WatchOptions::default()).await?;
    let start = watch.start_revision();
    let mut raw = channel::watch_client(cluster.api_addr(leader))
        .watch(WatchRequest {
            key: QUIET.to_vec(),
            prefix: false,
            start_revision: start,
        })
        .await?
        .into_inner();
    let established = next_response(&mut raw).await?;
    ensure!(
        established.events.is_empty() && established.revision == 0,
        "{established:?}"
    );

    let writes = 3 * HISTORY;
    tracing::info!(
        writes,
        history = HISTORY,
        "other keys change three histories' worth"
    );
    let mut last = 0;
    for index in 0..writes {
        let response = writer
            .put(format!("busy/{index:05}"), b"v".to_vec(), WRITE_TIMEOUT)
            .await?;
        last = response.header.context("no header")?.revision;
    }

    tracing::info!(
        last,
        "the raw watch gets only notices, in increasing revisions, up to the last write"
    );
    let mut noticed = 0;
    while noticed < last {
        let notice = next_response(&mut raw).await?;
        ensure!(
            notice.events.is_empty()
                && notice.revision > noticed
                && notice.revision <= last
                && notice.header.as_ref().map(|h| h.revision) == Some(notice.revision),
            "after a notice of r{noticed}: {notice:?}"
        );
        noticed = notice.revision;
    }

    tracing::info!(
        start,
        "the history has moved on: a resume from where the watch started is compacted"
    );
    let compacted = match channel::watch_client(cluster.api_addr(leader))
        .watch(WatchRequest {
            key: QUIET.to_vec(),
            prefix: false,
            start_revision: start,
        })
        .await
    {
        Err(status) => status,
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status,
            Ok(message) => bail!("a watch from compacted r{start} delivered {message:?}"),
        },
    };
    ensure!(compacted.code() == Code::OutOfRange, "{compacted:?}");

    tracing::info!("the library watch takes its notice as its resume point and yields nothing");
    poll_quietly(&mut watch, |watch| watch.next_revision() > last).await?;

    tracing::info!(
        watched,
        "SIGKILL the watch's node, then change the quiet key: the watch resumes elsewhere and sees it"
    );
    cluster.kill(watched)?;
    let changed = writer
        .put(QUIET.to_vec(), b"changed".to_vec(), WRITE_TIMEOUT)
        .await?
        .header
        .context("no header")?
        .revision;
    let response = tokio::time::timeout(WATCH_TIMEOUT, watch.next())
        .await
        .context("the watch did not deliver the change")?
        .context("the watch ended")??;
    let kv = response
        .events
        .first()
        .and_then(|event| event.kv.as_ref())
        .context("a response without events")?;
    ensure!(
        response.revision == changed && kv.key == QUIET && kv.value == b"changed",
        "{response:?}"
    );

    cluster.shutdown().await
}

/// Polls the library's `watch` (so that it reads its stream) until `done` holds; it must yield
/// nothing meanwhile.
async fn poll_quietly(
    watch: &mut WatchStream,
    done: impl Fn(&WatchStream) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
    while !done(watch) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "still at r{} after {WATCH_TIMEOUT:?}",
            watch.next_revision()
        );
        // A watch stream is an unfold: a `next` cut short resumes where it was when polled again.
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), watch.next()).await {
            bail!("the watch yielded {item:?}");
        }
    }
    Ok(())
}

async fn next_response(stream: &mut Streaming<WatchResponse>) -> anyhow::Result<WatchResponse> {
    tokio::time::timeout(WATCH_TIMEOUT, stream.message())
        .await
        .context("no message")??
        .context("the stream ended")
}

/// Watches [`PREFIX`] from `start_revision`, moving to the next node in `addrs` whenever a stream
/// fails or ends, resuming from the revision after the last one seen. Returns the messages that
/// carried events once one at or past the revision sent on `target` has been seen.
async fn watch_resuming(
    addrs: Vec<(u64, SocketAddr)>,
    start_revision: u64,
    mut target: watch::Receiver<Option<u64>>,
) -> anyhow::Result<Vec<WatchResponse>> {
    let mut responses: Vec<WatchResponse> = Vec::new();
    let mut next_revision = start_revision;
    let reached = |next_revision: u64, target: &watch::Receiver<Option<u64>>| matches!(*target.borrow(), Some(last) if next_revision > last);
    let mut attempt = 0;
    loop {
        let (id, addr) = addrs[attempt % addrs.len()];
        attempt += 1;
        let request = WatchRequest {
            key: PREFIX.to_vec(),
            prefix: true,
            start_revision: next_revision,
        };
        let mut stream = match channel::watch_client(addr).watch(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::info!(
                    node = id,
                    next_revision,
                    ?status,
                    "watch not opened; trying the next node"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::info!(node = id, next_revision, "watch open");
        loop {
            if reached(next_revision, &target) {
                return Ok(responses);
            }
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(response)) if response.events.is_empty() => {}
                    Ok(Some(response)) => {
                        next_revision = response.revision + 1;
                        responses.push(response);
                    }
                    Ok(None) => {
                        tracing::info!(node = id, next_revision, "watch stream ended; resuming elsewhere");
                        break;
                    }
                    Err(status) => {
                        tracing::info!(node = id, next_revision, ?status, "watch stream failed; resuming elsewhere");
                        break;
                    }
                },
                changed = target.changed() => changed?,
            }
        }
    }
}

/// Writes alternately inside and outside [`PREFIX`] until `stop` is set; returns what was
/// acknowledged. Each write is retried (same request id) until acknowledged.
async fn write_until_stopped(
    mut writer: Writer,
    stop: Arc<AtomicBool>,
    acknowledged_count: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Acknowledged>> {
    let mut acknowledged = Vec::new();
    let mut index = 0;
    while !stop.load(Ordering::SeqCst) {
        index += 1;
        let key = if index % 3 == 2 {
            format!("other/late/{index:05}")
        } else {
            format!("watched/late/{index:05}")
        };
        let value = format!("late {index}").into_bytes();
        let response = writer
            .put(key.clone(), value.clone(), WRITE_TIMEOUT)
            .await?;
        acknowledged.push((
            response.header.context("no header")?.revision,
            key.into_bytes(),
            value,
        ));
        acknowledged_count.fetch_add(1, Ordering::SeqCst);
    }
    tracing::info!(writes = acknowledged.len(), "background writer stopped");
    Ok(acknowledged)
}

async fn wait_for_writes(acknowledged_count: &AtomicUsize, count: usize) -> anyhow::Result<()> {
    eventually(
        &format!("{count} background writes"),
        PROGRESS_TIMEOUT,
        || async move {
            let done = acknowledged_count.load(Ordering::SeqCst);
            if done >= count {
                Ok(())
            } else {
                Err(anyhow!("{done} acknowledged"))
            }
        },
    )
    .await
}
