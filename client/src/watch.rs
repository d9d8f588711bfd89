//! Watches that survive node failures: a stream of changes that reconnects to any endpoint and
//! resumes after the last revision it delivered, so the caller sees no gap and no duplicate. The
//! node's progress notices (kv.proto WatchResponse) move the resume point while the watched keys
//! are quiet; they are not yielded.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conclave_proto::v1::{ReadConsistency, WatchRequest, WatchResponse};
use conclave_proto::validate;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::Code;

use crate::client::{Backoff, CallKind, Client};
use crate::endpoint::Node;
use crate::error::{compact_revision, describe, Error, Result};
use crate::kv::kv;

/// How long a watch may be silent before the client checks that its node still serves.
const WATCH_IDLE_CHECK: Duration = Duration::from_secs(5);

/// What to watch besides the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch every key starting with the given key (an empty key then watches everything).
    pub prefix: bool,
    /// The first revision to deliver; 0 means "changes after the current revision".
    pub start_revision: u64,
}

/// The changes to a key or prefix, one [`WatchResponse`] per revision, in increasing revision order.
/// Only responses carrying events are delivered (confirmations and progress notices are consumed
/// here). The stream ends after yielding an error: [`Error::Compacted`] when the history it needs
/// is gone, [`Error::Unavailable`] when no endpoint could be reached for the client's deadline,
/// [`Error::Rejected`] when a node refused the watch.
pub struct WatchStream {
    inner: BoxStream<'static, Result<WatchResponse>>,
    start_revision: u64,
    next_revision: Arc<AtomicU64>,
}

impl WatchStream {
    /// The first revision this watch delivers; resolved from the current revision when the caller
    /// passed 0.
    pub fn start_revision(&self) -> u64 {
        self.start_revision
    }

    /// Where this watch would resume now: every change to the watched keys below this revision has
    /// been yielded. It is the revision after the last change yielded, or later when the node
    /// reported that nothing watched changed since (a progress notice). To continue the watch in
    /// another process, pass it as [`WatchOptions::start_revision`].
    pub fn next_revision(&self) -> u64 {
        self.next_revision.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WatchStream")
            .field("start_revision", &self.start_revision)
            .finish_non_exhaustive()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

impl Client {
    /// Watches `key` (or every key under it, with `options.prefix`). When this returns, the watch is
    /// established: every change at or after [`WatchStream::start_revision`] will be delivered.
    ///
    /// With `start_revision == 0`, the current revision is read linearizably first and the watch
    /// starts right after it, so that a reconnect before the first event cannot lose changes.
    ///
    /// A broken stream resumes on another node at [`WatchStream::next_revision`]. While the watched
    /// keys are quiet and other keys change, the node reports every few seconds how far the stream
    /// has come, and the resume point moves with it: a quiet watch fails as compacted only when it
    /// was cut off for longer than the history lasts, not because other keys were busy.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        let key = key.into();
        if !options.prefix {
            validate::key("key", &key)?;
        }
        let start_revision = match options.start_revision {
            0 => self.current_revision().await? + 1,
            revision => revision,
        };
        let next_revision = Arc::new(AtomicU64::new(start_revision));
        let mut watcher = Watcher {
            client: self.clone(),
            key,
            prefix: options.prefix,
            next_revision: Arc::clone(&next_revision),
            stream: None,
            done: false,
        };
        watcher.open().await?;
        let inner = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        })
        .boxed();
        Ok(WatchStream {
            inner,
            start_revision,
            next_revision,
        })
    }

    /// The store's current revision, read linearizably.
    async fn current_revision(&self) -> Result<u64> {
        let response = self
            .call(CallKind::Read(ReadConsistency::Linearizable), |channel| {
                let request = conclave_proto::v1::ListRequest {
                    limit: 1,
                    keys_only: true,
                    ..Default::default()
                };
                async move { kv(channel).list(request).await }
            })
            .await?;
        Ok(response.header.map_or(0, |header| header.revision))
    }
}

/// The state behind a [`WatchStream`].
struct Watcher {
    client: Client,
    key: Vec<u8>,
    prefix: bool,
    /// The lowest revision not yet delivered, nor covered by a progress notice; a reconnect asks
    /// for it. Shared with the [`WatchStream`], which reports it.
    next_revision: Arc<AtomicU64>,
    stream: Option<(Arc<Node>, Streaming<WatchResponse>)>,
    done: bool,
}

impl Watcher {
    fn next_revision(&self) -> u64 {
        self.next_revision.load(Ordering::Acquire)
    }

    fn set_next_revision(&mut self, revision: u64) {
        self.next_revision.store(revision, Ordering::Release);
    }

    /// The next item, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        if self.done {
            return None;
        }
        loop {
            if self.stream.is_none() {
                if let Err(error) = self.open().await {
                    self.done = true;
                    return Some(Err(error));
                }
            }
            let (node, stream) = self.stream.as_mut().expect("opened above");
            let message = tokio::select! {
                message = stream.message() => message,
                () = tokio::time::sleep(WATCH_IDLE_CHECK) => {
                    // Keep-alive pings cannot tell a quiet watch from one held open by a node that
                    // stopped serving (a draining server answers pings). Ask the node itself;
                    // moving costs nothing, as the new stream resumes at `next_revision`.
                    let node = Arc::clone(node);
                    if !self.client.node_serves(&node).await {
                        tracing::debug!(node = %node.address, "watch node stopped serving; moving");
                        self.client.node_failed(&node);
                        self.stream = None;
                    }
                    continue;
                }
            };
            let (node, _) = self.stream.as_ref().expect("still open");
            match message {
                Ok(Some(response)) => {
                    let next_revision = self.next_revision();
                    // A revision below the next one is a repeat of what an earlier stream already
                    // delivered (or a stale notice).
                    if response.revision < next_revision {
                        continue;
                    }
                    self.set_next_revision(response.revision + 1);
                    // Without events: a progress notice (the confirmation that opens a stream has
                    // revision 0, skipped above). Every watched change up to its revision was
                    // delivered, so a resume starts after it.
                    if response.events.is_empty() {
                        continue;
                    }
                    return Some(Ok(response));
                }
                Ok(None) => {
                    tracing::debug!(node = %node.address, "watch stream ended; reconnecting");
                    self.stream = None;
                }
                Err(status) => {
                    tracing::debug!(node = %node.address, status = %describe(&status), "watch stream failed; reconnecting");
                    match status.code() {
                        Code::OutOfRange => {
                            self.done = true;
                            return Some(Err(Error::Compacted {
                                oldest_revision: compact_revision(&status),
                            }));
                        }
                        Code::InvalidArgument => {
                            self.done = true;
                            return Some(Err(Error::Rejected {
                                code: status.code(),
                                message: format!("{}: {}", node.address, describe(&status)),
                            }));
                        }
                        _ => {
                            let node = Arc::clone(node);
                            self.client.node_failed(&node);
                            self.stream = None;
                        }
                    }
                }
            }
        }
    }

    /// Opens a stream from `next_revision` on some endpoint, moving through the rotation, until one
    /// accepts or the client's deadline passes.
    async fn open(&mut self) -> Result<()> {
        let options = self.client.options();
        let deadline = Instant::now() + options.deadline;
        let mut backoff = Backoff::new();
        let mut last_failure = String::from("no attempt was made");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable {
                    message: format!(
                        "could not (re)establish the watch within {:?}; last failure: {last_failure}",
                        options.deadline
                    ),
                });
            }
            let node = self.client.cursor_node();
            let request = WatchRequest {
                key: self.key.clone(),
                prefix: self.prefix,
                start_revision: self.next_revision(),
            };
            let mut stub = kv(node.channel());
            let attempt = stub.watch(request);
            let status =
                match tokio::time::timeout(options.request_timeout.min(remaining), attempt).await {
                    Ok(Ok(response)) => {
                        self.stream = Some((node, response.into_inner()));
                        backoff.reset();
                        return Ok(());
                    }
                    Ok(Err(status)) => status,
                    Err(_) => {
                        last_failure = format!("{}: no answer", node.address);
                        self.client.node_failed(&node);
                        backoff.wait(deadline).await;
                        continue;
                    }
                };
            last_failure = format!("{}: {}", node.address, describe(&status));
            match status.code() {
                Code::OutOfRange => {
                    return Err(Error::Compacted {
                        oldest_revision: compact_revision(&status),
                    })
                }
                Code::InvalidArgument | Code::Unimplemented | Code::PermissionDenied => {
                    return Err(Error::Rejected {
                        code: status.code(),
                        message: last_failure,
                    })
                }
                // Anything else, including a node's full watch quota (RESOURCE_EXHAUSTED) or its
                // removal (FAILED_PRECONDITION), may go better on another node.
                _ => {
                    self.client.node_failed(&node);
                    backoff.wait(deadline).await;
                }
            }
        }
    }
}
