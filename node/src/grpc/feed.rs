//! The one feed engine: every watch that follows a cursor through this node's applied state (KV
//! watches over the change history; task, workflow, decision and lock watches over the
//! coordination event ring) is a [`FeedSource`] served by [`serve`].
//!
//! A source says what its cursor counts (a store revision, an event sequence), where it starts,
//! how it reads the watched messages after its cursor, what its progress message (BOOKMARK) looks
//! like and when it ends. The engine does the rest, once: it holds the watch slot for the stream's
//! life, marks the apply notification seen before every read (so a change applied after the read
//! is always noticed), reads under the state's read lock and sends after releasing it (the
//! channel's bound is the back-pressure), sends a progress message when a caught-up stream has
//! been silent for `--watch-progress-ms` while its cursor moved (`progress.rs`), and ends the
//! stream when the source ends it or fails it (falling behind the kept history), when the client
//! goes, or with UNAVAILABLE when the node stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::gateway::Gateway;
use super::progress::{self, Progress};
use super::status::to_status;
use super::streams::{shutting_down, stopped, EventStream};
use crate::error::Error;
use crate::limits::STREAM_BUFFER_EVENTS;
use crate::state_machine::coordination::CoordEvent;
use crate::state_machine::StateMachine;
use crate::storage::SharedState;

/// Most events one read takes from the event ring, so a stream far behind does not hold the
/// state's read lock (and so apply) for long.
pub const EVENTS_PER_READ: usize = 1024;

/// The apply notification after which a source may find something new. It must fire for every
/// apply that can change what the source reads: a source over data that neither the store
/// revision nor the event sequence marks waits for `Applied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The store revision advanced (KV changes).
    Revision,
    /// Coordination events were appended to the ring.
    Events,
    /// Any entry was applied or a snapshot installed: always enough, but it also wakes for
    /// entries that change nothing the source reads (heartbeat batches, KV writes), one read
    /// each; a busy source may deserve a signal of its own in `SharedState`.
    Applied,
}

impl Wake {
    fn subscribe(self, state: &SharedState) -> watch::Receiver<u64> {
        match self {
            Wake::Revision => state.subscribe(),
            Wake::Events => state.subscribe_events(),
            Wake::Applied => state.subscribe_applied(),
        }
    }
}

/// What one read of a source found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// The new cursor: every watched message up to it has been appended.
    pub cursor: u64,
    /// False when the read stopped at its bound with more to read: the engine reads again at
    /// once instead of waiting for an apply.
    pub caught_up: bool,
    /// The stream ends once the appended messages are sent (e.g. a watched task was purged).
    pub ended: bool,
}

/// One kind of watch, served by [`serve`]. Its methods run under the state's read lock, so each
/// read is bounded.
pub trait FeedSource: Send + 'static {
    type Message: Send + 'static;
    /// Which apply notification can change what `read` finds.
    const WAKE: Wake;

    /// Where the stream starts: its cursor and the messages that open it (STARTED, SNAPSHOT
    /// events, a current state), or the refusal (a resume point no longer kept).
    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<Self::Message>), Status>;

    /// Appends the watched messages after `cursor` to `out`; an error ends the stream once what
    /// was appended is sent (it fell behind the kept history).
    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<Self::Message>,
    ) -> Result<Read, Status>;

    /// The progress message telling the client `cursor` (a BOOKMARK), or `None` for a feed
    /// without one.
    fn bookmark(&self, cursor: u64) -> Option<Self::Message>;

    /// The cursor a message tells the client once sent; 0 for one that carries none (a
    /// SNAPSHOT event), which still counts as activity.
    fn cursor_of(message: &Self::Message) -> u64;
}

/// Serves `source` on this node until it ends, holding `permit` (the watch slot) meanwhile. The
/// start is read before this returns, so a refused start is the call's status.
pub fn serve<S: FeedSource>(
    gateway: &Gateway,
    permit: OwnedSemaphorePermit,
    source: S,
) -> Result<EventStream<S::Message>, Status> {
    let node = &gateway.node;
    let feed = Feed {
        state: node.state.clone(),
        wake: S::WAKE.subscribe(&node.state),
        stopping: gateway.stopping.clone(),
        progress_interval: Duration::from_millis(node.config.watch_progress_ms),
    };
    feed.spawn(source, permit)
}

/// Read access to the applied state: the node's, or a test's.
pub trait Applied: Send + Sync + 'static {
    fn with_machine<R>(&self, read: impl FnOnce(&StateMachine) -> R) -> R;
}

impl Applied for SharedState {
    fn with_machine<R>(&self, read: impl FnOnce(&StateMachine) -> R) -> R {
        read(&self.read().machine)
    }
}

/// One stream being served.
struct Feed<A> {
    state: Arc<A>,
    /// The apply notification the source asked for.
    wake: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    progress_interval: Duration,
}

impl<A: Applied> Feed<A> {
    /// Reads the start and serves the rest in a task of its own, which holds `slot`.
    fn spawn<S: FeedSource>(
        mut self,
        mut source: S,
        slot: impl Send + 'static,
    ) -> Result<EventStream<S::Message>, Status> {
        // Seen before the read: a change applied after it is always noticed.
        self.wake.borrow_and_update();
        let (cursor, opening) = self.state.with_machine(|machine| source.start(machine))?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
        tokio::spawn(async move {
            let _slot = slot;
            self.run(source, &sender, cursor, opening).await;
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    async fn run<S: FeedSource>(
        mut self,
        mut source: S,
        sender: &mpsc::Sender<Result<S::Message, Status>>,
        mut cursor: u64,
        mut messages: Vec<S::Message>,
    ) {
        // What the client knows is the start's cursor, then every message's.
        let mut progress = Progress::new(self.progress_interval, cursor, Instant::now());
        // Set when the stream ends once `messages` are sent: cleanly, or with the error.
        let mut end: Option<Result<(), Status>> = None;
        loop {
            for message in messages.drain(..) {
                let told = S::cursor_of(&message);
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
                progress.sent(told, Instant::now());
            }
            if let Some(end) = end {
                if let Err(status) = end {
                    let _ = sender.send(Err(status)).await;
                }
                return;
            }
            self.wake.borrow_and_update();
            let read = self
                .state
                .with_machine(|machine| source.read(machine, cursor, &mut messages));
            let read = match read {
                Ok(read) => read,
                Err(status) => {
                    end = Some(Err(status));
                    continue;
                }
            };
            cursor = read.cursor;
            if read.ended {
                end = Some(Ok(()));
            }
            if !messages.is_empty() || end.is_some() || !read.caught_up {
                continue;
            }
            // Caught up with nothing to send: everything watched up to `cursor` was sent.
            if let Some(due) = progress.due(cursor, Instant::now()) {
                if let Some(bookmark) = source.bookmark(due) {
                    if sender.send(Ok(bookmark)).await.is_err() {
                        return;
                    }
                }
                progress.sent(due, Instant::now());
            }
            if !self.wait(sender, progress.deadline(cursor)).await {
                return;
            }
        }
    }

    /// Waits for the next apply or the progress deadline; false when the stream is over (the
    /// client went, the node stops).
    async fn wait<M>(
        &mut self,
        sender: &mpsc::Sender<Result<M, Status>>,
        deadline: Option<Instant>,
    ) -> bool {
        tokio::select! {
            changed = self.wake.changed() => changed.is_ok(),
            () = sender.closed() => false,
            () = progress::until(deadline) => true,
            () = stopped(&mut self.stopping) => {
                let _ = sender.send(Err(shutting_down())).await;
                false
            }
        }
    }
}

// --- sources over the event ring ----------------------------------------------------------------

/// Where a ring feed starts: after `resume` while the events after it are still kept (else
/// EventsGone, telling the client to `then`), or at the last event. A node that has not applied
/// `resume` yet finds nothing after it and waits like any caught-up stream.
pub fn ring_start(machine: &StateMachine, resume: Option<u64>, then: &str) -> Result<u64, Status> {
    let Some(after) = resume else {
        return Ok(machine.last_event_seq());
    };
    match machine.events_after(after) {
        Ok(_) => Ok(after),
        Err(oldest) => Err(to_status(Error::EventsGone {
            message: format!(
                "after_sequence: event {} is no longer kept (the oldest kept is {oldest}); {then}",
                after.saturating_add(1)
            ),
            oldest_kept: oldest,
        })),
    }
}

/// Reads at most [`EVENTS_PER_READ`] events after `cursor`, giving each to `each` until it
/// answers true (the stream ends after that event). `Err(oldest kept)` when the ring moved past
/// the cursor.
pub fn ring_read(
    machine: &StateMachine,
    cursor: u64,
    mut each: impl FnMut(&CoordEvent) -> bool,
) -> Result<Read, u64> {
    let new = machine.events_after(cursor)?;
    let mut read = Read {
        cursor,
        caught_up: new.len() <= EVENTS_PER_READ,
        ended: false,
    };
    for event in new.into_iter().take(EVENTS_PER_READ) {
        read.cursor = event.seq;
        if each(event) {
            read.ended = true;
            break;
        }
    }
    Ok(read)
}

/// A ring feed at `cursor` whose next event fell out of the ring (the oldest kept is `oldest`):
/// EventsGone, telling the client to `then`.
pub fn fell_behind(cursor: u64, oldest: u64, then: &str) -> Status {
    to_status(Error::EventsGone {
        message: format!(
            "the watch fell behind the event history (event {} is gone; the oldest kept is {oldest}); {then}",
            cursor + 1
        ),
        oldest_kept: oldest,
    })
}

#[cfg(test)]
mod tests;
