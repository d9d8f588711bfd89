//! Key watches that survive node failures: a feed (`feed.rs`) that reconnects to any endpoint and
//! resumes after the last revision it delivered, so the caller sees no gap and no duplicate. The
//! node's progress notices (kv.proto WatchResponse) move the resume point while the watched keys
//! are quiet; they are not yielded.

use std::pin::Pin;
use std::task::{Context, Poll};

use conclave_proto::v1::{ReadConsistency, WatchRequest, WatchResponse};
use conclave_proto::validate;
use futures::future::BoxFuture;
use futures::stream::{Stream, StreamExt};
use futures::{FutureExt, TryFutureExt};
use tonic::transport::Channel;

use crate::client::{CallKind, Client};
use crate::endpoint::Node;
use crate::error::{compact_revision, Error, Result};
use crate::feed::{self, FeedSpec, FeedStream, Mark, Messages, Resume};
use crate::kv::kv;

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
    /// The feed's cursor is the last revision covered: one below the next to deliver.
    inner: FeedStream<WatchResponse>,
}

impl WatchStream {
    /// The first revision this watch delivers; resolved from the current revision when the caller
    /// passed 0.
    pub fn start_revision(&self) -> u64 {
        self.inner.start_sequence() + 1
    }

    /// Where this watch would resume now: every change to the watched keys below this revision has
    /// been yielded. It is the revision after the last change yielded, or later when the node
    /// reported that nothing watched changed since (a progress notice). To continue the watch in
    /// another process, pass it as [`WatchOptions::start_revision`].
    pub fn next_revision(&self) -> u64 {
        self.inner.cursor() + 1
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WatchStream")
            .field("start_revision", &self.start_revision())
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
        let source = KvFeed {
            key,
            prefix: options.prefix,
        };
        let inner = feed::follow(self, source, Some(start_revision - 1)).await?;
        Ok(WatchStream { inner })
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

/// A KV watch as a feed. Its cursor is the last revision covered; a stream opens at the next one
/// (the node's first message, a confirmation at revision 0, tells nothing new). A message
/// without events is a progress notice.
struct KvFeed {
    key: Vec<u8>,
    prefix: bool,
}

impl FeedSpec for KvFeed {
    type Message = WatchResponse;
    const WHAT: &'static str = "watch";
    const STARTED: bool = false;

    fn open(
        &self,
        channel: Channel,
        resume: Resume,
    ) -> BoxFuture<'static, std::result::Result<Messages<WatchResponse>, tonic::Status>> {
        let Resume::After(cursor) = resume else {
            unreachable!("a KV watch knows its cursor before it opens and never starts again");
        };
        let request = WatchRequest {
            key: self.key.clone(),
            prefix: self.prefix,
            start_revision: cursor + 1,
        };
        let opening = async move { kv(channel).watch(request).await };
        opening.map_ok(|r| r.into_inner().boxed()).boxed()
    }

    fn mark(&self, response: &WatchResponse) -> Mark {
        if response.events.is_empty() {
            Mark::Progress(response.revision)
        } else {
            Mark::Change(response.revision)
        }
    }

    fn gone(&self, _node: &Node, status: &tonic::Status) -> Option<Error> {
        Some(Error::Compacted {
            oldest_revision: compact_revision(status),
        })
    }
}
