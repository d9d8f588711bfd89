//! The one resumable stream behind every watch (keys, tasks, workflows): a stream of changes
//! that reconnects to another node after a failure and resumes after the last cursor it saw (a
//! change's, or a progress message's), so the caller sees no gap and no repeat.
//!
//! A watch is a [`FeedSpec`]: how to open its stream after a cursor, what each message means to
//! the cursor ([`Mark`]), when it ends, and what a lost resume point (OUT_OF_RANGE) becomes. The
//! rest is here, once: choosing a node and moving past failed ones until the client's deadline,
//! reading STARTED, skipping repeats, consuming progress messages, checking a silent node still
//! serves, and ending with an error that says what happened.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{Backoff, Client};
use crate::endpoint::Node;
use crate::error::{describe, Error, Result};
use crate::stream::is_final;

/// How long a watch may be silent before the client checks that its node still serves (also the
/// decision and lock watches, which are not feeds: they start from the state every time).
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Pause before reopening a stream the server ended, so a node that ends streams at once
/// (shutting down) does not make the watch spin.
pub(crate) const STREAM_END_PAUSE: Duration = Duration::from_millis(100);

/// A server stream as a feed reads it.
pub(crate) type Messages<M> = BoxStream<'static, std::result::Result<M, Status>>;

/// What one message means to the stream's cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// The stream starts here (the first message of a feed with [`FeedSpec::STARTED`]).
    Started(u64),
    /// Every watched change up to here was sent (a BOOKMARK, a progress notice): consumed.
    Progress(u64),
    /// A change at this cursor: yielded once.
    Change(u64),
    /// A message outside the cursor order (a SNAPSHOT event): yielded as it comes.
    Unordered,
}

/// Where the next stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// After this cursor.
    After(u64),
    /// Where the caller asked, before any stream started.
    Beginning,
    /// From the current state, as the resume point is gone ([`FeedSpec::gone`] answered `None`).
    Again,
}

/// One kind of watch, followed by [`Feed`].
pub(crate) trait FeedSpec: Send + 'static {
    type Message: Send + 'static;
    /// What the watch is called in errors and logs ("task watch").
    const WHAT: &'static str;
    /// Whether every stream opens with a STARTED message carrying its cursor; without, the
    /// cursor must be known before the first stream opens.
    const STARTED: bool;

    /// Opens a stream on `channel` starting at `resume`.
    fn open(
        &self,
        channel: Channel,
        resume: Resume,
    ) -> BoxFuture<'static, std::result::Result<Messages<Self::Message>, Status>>;

    /// What `message` means to the cursor.
    fn mark(&self, message: &Self::Message) -> Mark;

    /// True when nothing can follow `message` (a purged task): the watch ends after yielding it.
    fn ends_after(&self, _message: &Self::Message) -> bool {
        false
    }

    /// The resume point is no longer kept (`status`, OUT_OF_RANGE, from `node`): the error that
    /// ends the watch, or `None` to start again from the current state (only a feed with
    /// STARTED can: the new stream's STARTED says where the state is).
    fn gone(&self, node: &Node, status: &Status) -> Option<Error>;
}

/// The stream a watch call returns: its changes, where it started and where it would resume.
pub struct FeedStream<M> {
    inner: BoxStream<'static, Result<M>>,
    start: u64,
    cursor: Arc<AtomicU64>,
}

impl<M> FeedStream<M> {
    /// Where the watch started: the cursor of the first stream (the STARTED sequence, or the one
    /// the caller gave); the changes it yields come after it.
    pub fn start_sequence(&self) -> u64 {
        self.start
    }

    /// Where this watch would resume now: every watched change up to this cursor has been
    /// yielded (or a node said nothing watched happened up to it).
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }
}

impl<M> std::fmt::Debug for FeedStream<M> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FeedStream")
            .field("start", &self.start)
            .field("cursor", &self.cursor())
            .finish_non_exhaustive()
    }
}

impl<M> Stream for FeedStream<M> {
    type Item = Result<M>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

/// Opens `spec`'s first stream (after `cursor`, when given) and answers the resumable stream.
/// When this returns, the watch is established on some node.
pub(crate) async fn follow<S: FeedSpec>(
    client: &Client,
    spec: S,
    cursor: Option<u64>,
) -> Result<FeedStream<S::Message>> {
    assert!(
        S::STARTED || cursor.is_some(),
        "a feed without STARTED needs its cursor before it opens"
    );
    let shared = Arc::new(AtomicU64::new(cursor.unwrap_or(0)));
    let mut feed = Feed {
        client: client.clone(),
        spec,
        cursor,
        again: false,
        shared: Arc::clone(&shared),
        stream: None,
        done: false,
    };
    feed.open().await?;
    let start = feed.cursor.expect("an open stream has a cursor");
    let inner = futures::stream::unfold(feed, |mut feed| async move {
        let item = feed.next().await?;
        Some((item, feed))
    })
    .boxed();
    Ok(FeedStream {
        inner,
        start,
        cursor: shared,
    })
}

/// The state behind a [`FeedStream`].
struct Feed<S: FeedSpec> {
    client: Client,
    spec: S,
    /// The last cursor reflected by what was yielded (a STARTED's, a change's, a progress
    /// message's); a new stream resumes after it. `None` only before the first STARTED.
    cursor: Option<u64>,
    /// The resume point is gone: the next stream starts from the current state.
    again: bool,
    /// The cursor for [`FeedStream::cursor`].
    shared: Arc<AtomicU64>,
    stream: Option<(Arc<Node>, Messages<S::Message>)>,
    done: bool,
}

/// What became of one attempt to open a stream.
enum Opened {
    Yes,
    /// The resume point is gone: ask again at once, from the current state.
    Again,
    /// Pass this node over: the failure.
    No(String),
}

impl<S: FeedSpec> Feed<S> {
    fn set_cursor(&mut self, cursor: u64) {
        self.cursor = Some(cursor);
        self.shared.store(cursor, Ordering::Release);
    }

    fn resume(&self) -> Resume {
        match (self.again, self.cursor) {
            (true, _) => Resume::Again,
            (false, Some(cursor)) => Resume::After(cursor),
            (false, None) => Resume::Beginning,
        }
    }

    /// Opens a stream on some node (reading its STARTED), moving past nodes that fail, until one
    /// serves or the client's deadline passes ([`Error::Unavailable`]).
    async fn open(&mut self) -> Result<()> {
        let options = self.client.options();
        let deadline = Instant::now() + options.deadline;
        let mut backoff = Backoff::new();
        loop {
            let node = self.client.cursor_node();
            let failure = match self.attempt(&node, deadline).await? {
                Opened::Yes => return Ok(()),
                Opened::Again => continue,
                Opened::No(failure) => failure,
            };
            tracing::debug!(node = %node.address, %failure, "{} did not open; moving on", S::WHAT);
            self.client.node_failed(&node);
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    message: format!(
                        "could not open the {} within {:?}; last failure: {}: {failure}",
                        S::WHAT,
                        options.deadline,
                        node.address
                    ),
                });
            }
            backoff.wait(deadline).await;
        }
    }

    /// One attempt on `node`: `Err` for a failure no node would answer differently.
    async fn attempt(&mut self, node: &Arc<Node>, deadline: Instant) -> Result<Opened> {
        let timeout = self
            .client
            .options()
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let opening = self.spec.open(node.channel(), self.resume());
        let mut stream = match within(timeout, opening).await {
            Some(Ok(stream)) => stream,
            Some(Err(status)) => return self.refused(node, &status),
            None => return Ok(Opened::No("no answer".to_string())),
        };
        if !S::STARTED {
            self.stream = Some((Arc::clone(node), stream));
            return Ok(Opened::Yes);
        }
        // Every stream opens with STARTED at once, also on a node that has yet to catch up.
        let first = within(self.client.options().request_timeout, stream.next()).await;
        match first {
            Some(Some(Ok(message))) => match self.spec.mark(&message) {
                Mark::Started(cursor) => {
                    self.set_cursor(cursor);
                    self.again = false;
                    self.stream = Some((Arc::clone(node), stream));
                    Ok(Opened::Yes)
                }
                other => Err(Error::Rejected {
                    code: Code::Unimplemented,
                    message: format!(
                        "{}: the {} began with {other:?} instead of STARTED (a node of an older version?)",
                        node.address,
                        S::WHAT
                    ),
                }),
            },
            Some(Some(Err(status))) => self.refused(node, &status),
            Some(None) => Ok(Opened::No("the stream ended before STARTED".to_string())),
            None => Ok(Opened::No("no STARTED in time".to_string())),
        }
    }

    /// A node refused to open the stream.
    fn refused(&mut self, node: &Node, status: &Status) -> Result<Opened> {
        if status.code() == Code::OutOfRange && !self.again {
            return match self.spec.gone(node, status) {
                Some(error) => Err(error),
                None => {
                    self.start_again(status);
                    Ok(Opened::Again)
                }
            };
        }
        if is_final(status) {
            return Err(rejected(node, status));
        }
        // Anything else, including a node's full watch quota (RESOURCE_EXHAUSTED) or its
        // removal (FAILED_PRECONDITION), may go better on another node.
        Ok(Opened::No(describe(status)))
    }

    fn start_again(&mut self, status: &Status) {
        assert!(S::STARTED, "only a feed with STARTED can start again");
        tracing::warn!(
            cursor = ?self.cursor,
            status = %describe(status),
            "the {} cannot resume (its events are no longer kept); starting again from the current state",
            S::WHAT
        );
        self.again = true;
    }

    /// The next item, or `None` once the watch has ended.
    async fn next(&mut self) -> Option<Result<S::Message>> {
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
            let node = Arc::clone(node);
            let message = within(IDLE_CHECK, stream.next()).await;
            let Some(message) = message else {
                // Keep-alive pings cannot tell a quiet watch from one held open by a node that
                // stopped serving (a draining node answers pings): ask the node itself. Moving
                // costs nothing, as the new stream resumes after the cursor.
                if !self.client.node_serves(&node).await {
                    tracing::debug!(node = %node.address, "{} node stopped serving; moving", S::WHAT);
                    self.client.node_failed(&node);
                    self.stream = None;
                }
                continue;
            };
            match message {
                Some(Ok(message)) => {
                    if let Some(item) = self.deliver(&node, message) {
                        return Some(item);
                    }
                }
                None => {
                    tracing::debug!(node = %node.address, "{} stream ended; resuming", S::WHAT);
                    self.stream = None;
                    tokio::time::sleep(STREAM_END_PAUSE).await;
                }
                Some(Err(status)) => {
                    self.stream = None;
                    if let Some(error) = self.failed(&node, &status) {
                        self.done = true;
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// What to do with one message: yield it, or consume it (`None`).
    fn deliver(&mut self, node: &Node, message: S::Message) -> Option<Result<S::Message>> {
        let cursor = self.cursor.expect("an open stream has a cursor");
        match self.spec.mark(&message) {
            Mark::Unordered => return Some(Ok(message)),
            Mark::Started(_) => {
                tracing::warn!(node = %node.address, "a {} sent STARTED twice; ignored", S::WHAT);
            }
            // A progress message at or below the cursor is stale: nothing to learn.
            Mark::Progress(at) if at > cursor => self.set_cursor(at),
            Mark::Progress(_) => {}
            Mark::Change(at) if at <= cursor => {
                // The server resumes after the cursor; a repeat would be its bug.
                tracing::warn!(node = %node.address, at, cursor, "a {} repeated a change; skipped", S::WHAT);
            }
            Mark::Change(at) => {
                self.set_cursor(at);
                self.done = self.spec.ends_after(&message);
                return Some(Ok(message));
            }
        }
        None
    }

    /// The stream failed with `status`: the error that ends the watch, or `None` to resume.
    fn failed(&mut self, node: &Arc<Node>, status: &Status) -> Option<Error> {
        tracing::debug!(node = %node.address, status = %describe(status), "{} failed", S::WHAT);
        if status.code() == Code::OutOfRange {
            // This stream fell behind the node's history.
            let error = self.spec.gone(node, status);
            if error.is_none() {
                self.start_again(status);
            }
            return error;
        }
        if is_final(status) {
            return Some(rejected(node, status));
        }
        self.client.node_failed(node);
        None
    }
}

/// `future`'s output, or `None` when `timeout` passes first.
async fn within<F: Future>(timeout: Duration, future: F) -> Option<F::Output> {
    tokio::time::timeout(timeout, future).await.ok()
}

/// A refusal that another node would repeat, as the error of the watch.
pub(crate) fn rejected(node: &Node, status: &Status) -> Error {
    Error::Rejected {
        code: status.code(),
        message: format!("{}: {}", node.address, describe(status)),
    }
}

#[cfg(test)]
mod tests;
