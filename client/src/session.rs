//! The agent side of the cluster: an [`AgentSession`] registers, keeps its session stream open to
//! some node, sends heartbeats, and hands what the cluster pushes (assignments, cancellations,
//! lost leases, ballots) to the caller as [`AgentEvent`]s.
//!
//! A background task owns the stream. When the stream breaks it reconnects, to another node if
//! need be, and re-opens the same session; the node then sends the current assignments and open
//! ballots again, which the session drops as repeats (an assignment is identified by task id and
//! fencing token, a ballot by decision id). If the session expired meanwhile (NOT_FOUND on open),
//! or the cluster closed it, the caller gets [`AgentEvent::Closed`] and must register again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use conclave_proto::v1::{
    session_event, session_request, Assignment, Decision, Fence, Heartbeat, HoldLost, Revocation,
    SessionEvent, SessionOpen, SessionOpened, SessionRequest,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::Code;

use crate::agents::{
    agents, check_session_id, AgentConfig, CloseResult, Failure, ProgressReport, VerbResult,
    VoteResult,
};
use crate::client::Client;
use crate::endpoint::Node;
use crate::error::{describe, Error, Result};

/// Finished assignments remembered so that a repeat sent after a reconnect is recognised.
const RECENT_ASSIGNMENTS_MAX: usize = 4096;
/// Ballots remembered for the same reason; the cluster keeps at most 10,000 decisions open.
const SEEN_BALLOTS_MAX: usize = 10_000;
/// Reconnect backoff bounds.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// Heartbeats never go more often than this, whatever the TTL.
const HEARTBEAT_MIN: Duration = Duration::from_millis(100);
/// Outgoing messages buffered on one stream: the open and a few heartbeats.
const OUTBOUND_BUFFER: usize = 8;

/// What the cluster tells an agent, in the order it was told.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The session stream is attached to node `node_id`: after registration, and again after each
    /// reconnect.
    Connected { node_id: u64 },
    /// The stream broke; the session is reconnecting by itself. Heartbeats pause until it is back;
    /// if that takes longer than the TTL, the session expires and [`AgentEvent::Closed`] follows.
    Disconnected { reason: String },
    /// A task to work on, under a lease; each assignment is delivered once.
    Assignment(Assignment),
    /// The task was canceled: stop working on it (its token is stale).
    Canceled(Revocation),
    /// The lease is gone (expired, revoked at the task's deadline, or reassigned): stop.
    LeaseLost(Revocation),
    /// A decision this agent may vote in; each ballot is delivered once.
    Ballot(Decision),
    /// A lock, semaphore permit or leadership held by this session (its holder's `session_id`) was
    /// lost: it expired with the session or was taken away. Its token is stale from now on: stop
    /// using it (fenced writes with it fail with [`Error::LockLost`]).
    HoldLost(HoldLost),
    /// The session is over: it expired, was closed, or was replaced by a newer registration of the
    /// same name. Its leases are gone. Nothing follows; register again to go on.
    Closed { reason: String },
}

/// A registered agent's live session: the verbs, fenced by each assignment's token, and the
/// heartbeats, sent in the background every third of the TTL with the number of assignments not
/// yet completed, failed or released as the load. Cheap to clone. When the last clone is dropped
/// the background task stops and the session expires after its TTL; [`AgentSession::close`] ends
/// it at once.
#[derive(Debug, Clone)]
pub struct AgentSession {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

/// The events of one session, from [`AgentSession::register`] or [`AgentSession::open`]. Ends
/// after [`AgentEvent::Closed`], or when the session is closed or dropped.
#[derive(Debug)]
pub struct AgentEvents {
    receiver: mpsc::UnboundedReceiver<AgentEvent>,
}

impl AgentEvents {
    /// The next event, or `None` once the session has ended.
    pub async fn recv(&mut self) -> Option<AgentEvent> {
        self.receiver.recv().await
    }
}

impl Stream for AgentEvents {
    type Item = AgentEvent;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        self.receiver.poll_recv(context)
    }
}

#[derive(Debug)]
struct Shared {
    client: Client,
    name: String,
    session_id: u64,
    ttl: Duration,
    assignments: Mutex<Assignments>,
}

/// Signals the background task to stop when the last [`AgentSession`] clone goes.
#[derive(Debug)]
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl AgentSession {
    /// Registers `config` and opens its session stream. Returns once the stream is open, so that
    /// a failure to reach the cluster is an error here rather than an event.
    pub async fn register(
        client: &Client,
        config: &AgentConfig,
    ) -> Result<(AgentSession, AgentEvents)> {
        let registration = client.register(config).await?;
        Self::open(
            client,
            &config.name,
            registration.session_id,
            Duration::from_millis(registration.ttl_ms),
        )
        .await
    }

    /// Opens the stream of an existing session (registered by [`Client::register`]). A session
    /// that does not exist or has expired is `Rejected { code: NotFound }`.
    pub async fn open(
        client: &Client,
        name: &str,
        session_id: u64,
        ttl: Duration,
    ) -> Result<(AgentSession, AgentEvents)> {
        check_session_id(session_id)?;
        let established = open_first(client, session_id).await?;
        let ttl = match established.opened.ttl_ms {
            0 => ttl,
            ttl_ms => Duration::from_millis(ttl_ms),
        };
        let shared = Arc::new(Shared {
            client: client.clone(),
            name: name.to_string(),
            session_id,
            ttl: if ttl.is_zero() {
                Duration::from_millis(conclave_proto::limits::DEFAULT_TTL_MS)
            } else {
                ttl
            },
            assignments: Mutex::new(Assignments::default()),
        });
        let (stop_sender, stop) = watch::channel(false);
        let (events, receiver) = mpsc::unbounded_channel();
        let _ = events.send(AgentEvent::Connected {
            node_id: established.opened.node_id,
        });
        // The channel is unbounded, but what flows through it is bounded by the protocol: at most
        // max_concurrent assignments are outstanding, each revoked at most once, and at most
        // 10,000 decisions are open. Blocking here instead would delay the heartbeats.
        tokio::spawn(drive(Arc::clone(&shared), Some(established), events, stop));
        Ok((
            AgentSession {
                shared,
                _stop: Arc::new(StopOnDrop(stop_sender)),
            },
            AgentEvents { receiver },
        ))
    }

    pub fn session_id(&self) -> u64 {
        self.shared.session_id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The session's TTL; heartbeats go every third of it.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// The client the session's calls go through.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Assignments received and not yet completed, failed, released or revoked: the load the
    /// heartbeats report.
    pub fn load(&self) -> u32 {
        self.shared.assignments().active.len() as u32
    }

    /// Completes a task. [`Error::LeaseLost`] when the assignment is no longer current.
    pub async fn complete(
        &self,
        task_id: u64,
        fencing_token: u64,
        result: Vec<u8>,
    ) -> Result<VerbResult> {
        let outcome = self
            .shared
            .client
            .complete_task(task_id, fencing_token, result)
            .await;
        self.settle(task_id, fencing_token, &outcome);
        outcome
    }

    /// Completes a task only while `fence` also names a current grant (a lock this session holds,
    /// its leadership). [`Error::LeaseLost`] when the assignment is no longer current;
    /// [`Error::LockLost`] when the fence is stale, and then the assignment is still held.
    pub async fn complete_fenced(
        &self,
        task_id: u64,
        fencing_token: u64,
        result: Vec<u8>,
        fence: &Fence,
    ) -> Result<VerbResult> {
        let outcome = self
            .shared
            .client
            .complete_task_fenced(task_id, fencing_token, result, fence)
            .await;
        self.settle(task_id, fencing_token, &outcome);
        outcome
    }

    /// Fails an attempt. [`Error::LeaseLost`] when the assignment is no longer current.
    pub async fn fail(
        &self,
        task_id: u64,
        fencing_token: u64,
        failure: &Failure,
    ) -> Result<VerbResult> {
        let outcome = self
            .shared
            .client
            .fail_task(task_id, fencing_token, failure)
            .await;
        self.settle(task_id, fencing_token, &outcome);
        outcome
    }

    /// Gives a task back without counting the attempt. [`Error::LeaseLost`] when the assignment is
    /// no longer current.
    pub async fn release(&self, task_id: u64, fencing_token: u64) -> Result<VerbResult> {
        let outcome = self
            .shared
            .client
            .release_task(task_id, fencing_token)
            .await;
        self.settle(task_id, fencing_token, &outcome);
        outcome
    }

    /// Extends a lease to run `lease` from now (zero: the task's lease_ms). [`Error::LeaseLost`]
    /// when the assignment is no longer current.
    pub async fn extend_lease(
        &self,
        task_id: u64,
        fencing_token: u64,
        lease: Duration,
    ) -> Result<VerbResult> {
        let current = match lease.is_zero() {
            true => self.shared.assignments().lease(task_id),
            false => lease,
        };
        let outcome = self
            .shared
            .client
            .extend_lease_within(task_id, fencing_token, lease, current)
            .await;
        if matches!(outcome, Err(Error::LeaseLost { .. })) {
            self.shared.assignments().finish(task_id, fencing_token);
        }
        outcome
    }

    /// Reports progress. [`Error::LeaseLost`] when the assignment is no longer current.
    pub async fn report_progress(
        &self,
        task_id: u64,
        fencing_token: u64,
        report: &ProgressReport,
    ) -> Result<VerbResult> {
        let outcome = self
            .shared
            .client
            .report_progress(task_id, fencing_token, report)
            .await;
        if matches!(outcome, Err(Error::LeaseLost { .. })) {
            self.shared.assignments().finish(task_id, fencing_token);
        }
        outcome
    }

    /// Votes in a decision whose electorate includes this agent.
    pub async fn vote(
        &self,
        decision_id: u64,
        choice: &str,
        rationale: &str,
    ) -> Result<VoteResult> {
        self.shared
            .client
            .vote(self.shared.session_id, decision_id, choice, rationale)
            .await
    }

    /// Closes the session on purpose: leases still held are released without counting the
    /// attempt, the agent's ephemeral keys are deleted, and the background task stops.
    pub async fn close(&self) -> Result<CloseResult> {
        let result = self
            .shared
            .client
            .close_session(self.shared.session_id)
            .await;
        let _ = self._stop.0.send(true);
        result
    }

    /// Forgets the assignment once a verb has settled it: done, or definitely not ours any more.
    fn settle<T>(&self, task_id: u64, fencing_token: u64, outcome: &Result<T>) {
        if matches!(outcome, Ok(_) | Err(Error::LeaseLost { .. })) {
            self.shared.assignments().finish(task_id, fencing_token);
        }
    }
}

impl Shared {
    fn assignments(&self) -> std::sync::MutexGuard<'_, Assignments> {
        self.assignments.lock().expect("assignment set poisoned")
    }
}

/// The assignments this session holds, and what it has seen, to drop repeats.
#[derive(Debug, Default)]
struct Assignments {
    /// Task id -> fencing token of the current assignment.
    active: HashMap<u64, u64>,
    /// Task id -> lease length of the current assignment, in ms (0: the server's default).
    lease_ms: HashMap<u64, u64>,
    /// Finished (task id, token) pairs, oldest first, bounded.
    recent: VecDeque<(u64, u64)>,
    recent_set: HashSet<(u64, u64)>,
    ballots: VecDeque<u64>,
    ballot_set: HashSet<u64>,
}

impl Assignments {
    /// Records an assignment; false when it is a repeat of one already delivered.
    fn accept(&mut self, task_id: u64, token: u64) -> bool {
        if self.active.get(&task_id) == Some(&token) || self.recent_set.contains(&(task_id, token))
        {
            return false;
        }
        if let Some(old) = self.active.insert(task_id, token) {
            // A newer assignment of the same task makes the older one stale.
            if old > token {
                self.active.insert(task_id, old);
                return false;
            }
            self.remember(task_id, old);
        }
        true
    }

    /// Marks an assignment finished. True when it was the current one.
    fn finish(&mut self, task_id: u64, token: u64) -> bool {
        let current = self.active.get(&task_id) == Some(&token);
        if current {
            self.active.remove(&task_id);
            self.lease_ms.remove(&task_id);
        }
        self.remember(task_id, token);
        current
    }

    /// A revocation applies to the current assignment it names (a token of 0 names any).
    fn revoke(&mut self, task_id: u64, token: u64) -> bool {
        match self.active.get(&task_id) {
            Some(&current) if token == 0 || token == current => self.finish(task_id, current),
            _ => false,
        }
    }

    fn remember(&mut self, task_id: u64, token: u64) {
        if self.recent_set.insert((task_id, token)) {
            self.recent.push_back((task_id, token));
            if self.recent.len() > RECENT_ASSIGNMENTS_MAX {
                if let Some(oldest) = self.recent.pop_front() {
                    self.recent_set.remove(&oldest);
                }
            }
        }
    }

    /// Records a ballot; false when it was delivered before.
    fn accept_ballot(&mut self, decision_id: u64) -> bool {
        if !self.ballot_set.insert(decision_id) {
            return false;
        }
        self.ballots.push_back(decision_id);
        if self.ballots.len() > SEEN_BALLOTS_MAX {
            if let Some(oldest) = self.ballots.pop_front() {
                self.ballot_set.remove(&oldest);
            }
        }
        true
    }

    fn clear(&mut self) {
        self.active.clear();
        self.lease_ms.clear();
    }

    /// The lease length of a current assignment (the server's default when it did not say).
    fn lease(&self, task_id: u64) -> Duration {
        match self.lease_ms.get(&task_id) {
            Some(0) | None => Duration::from_millis(conclave_proto::limits::DEFAULT_LEASE_MS),
            Some(&ms) => Duration::from_millis(ms),
        }
    }
}

/// An open session stream.
struct Established {
    node: Arc<Node>,
    inbound: Streaming<SessionEvent>,
    outbound: mpsc::Sender<SessionRequest>,
    opened: SessionOpened,
}

/// Why opening a stream on one node did not work.
enum OpenFailure {
    /// The session does not exist or has expired, or the node said it is closed: final.
    Ended(String),
    /// This node could not do it; another may.
    Failed(String),
}

/// Opens the stream on one node: sends `open`, waits for `opened`.
async fn open_on(
    node: &Arc<Node>,
    session_id: u64,
) -> std::result::Result<Established, OpenFailure> {
    let (outbound, receiver) = mpsc::channel(OUTBOUND_BUFFER);
    let open = SessionRequest {
        kind: Some(session_request::Kind::Open(SessionOpen { session_id })),
    };
    outbound
        .send(open)
        .await
        .expect("the receiver is alive until the call below takes it");
    let failure = |status: tonic::Status| {
        let message = format!("{}: {}", node.address, describe(&status));
        if status.code() == Code::NotFound {
            OpenFailure::Ended(format!(
                "session {session_id} does not exist or has expired ({message})"
            ))
        } else {
            OpenFailure::Failed(message)
        }
    };
    let mut inbound = agents(node.channel())
        .session(ReceiverStream::new(receiver))
        .await
        .map_err(failure)?
        .into_inner();
    match inbound.message().await {
        Ok(Some(SessionEvent {
            kind: Some(session_event::Kind::Opened(opened)),
        })) => Ok(Established {
            node: Arc::clone(node),
            inbound,
            outbound,
            opened,
        }),
        Ok(Some(SessionEvent {
            kind: Some(session_event::Kind::Closed(closed)),
        })) => Err(OpenFailure::Ended(closed.reason)),
        Ok(Some(other)) => Err(OpenFailure::Failed(format!(
            "{}: the session stream began with {other:?} instead of `opened`",
            node.address
        ))),
        Ok(None) => Err(OpenFailure::Failed(format!(
            "{}: the session stream ended before it opened",
            node.address
        ))),
        Err(status) => Err(failure(status)),
    }
}

/// Opens the first stream, trying nodes until the client's deadline.
async fn open_first(client: &Client, session_id: u64) -> Result<Established> {
    let options = client.options();
    let deadline = Instant::now() + options.deadline;
    let mut delay = RECONNECT_FIRST;
    loop {
        let node = client.cursor_node();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let failure = match tokio::time::timeout(
            options.request_timeout.min(remaining),
            open_on(&node, session_id),
        )
        .await
        {
            Ok(Ok(established)) => return Ok(established),
            Ok(Err(OpenFailure::Ended(reason))) => {
                return Err(Error::Rejected {
                    code: Code::NotFound,
                    message: reason,
                })
            }
            Ok(Err(OpenFailure::Failed(failure))) => failure,
            Err(_) => format!("{}: no answer", node.address),
        };
        client.node_failed(&node);
        if Instant::now() + delay >= deadline {
            return Err(Error::Unavailable {
                message: format!(
                    "could not open session {session_id} within {:?}; last failure: {failure}",
                    options.deadline
                ),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// The background task: heartbeats, events, reconnects.
async fn drive(
    shared: Arc<Shared>,
    mut established: Option<Established>,
    events: mpsc::UnboundedSender<AgentEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let heartbeat_every = (shared.ttl / 3).max(HEARTBEAT_MIN);
    // A node that has sent nothing for this long is asked whether it still serves and knows a
    // leader: keep-alive pings cannot tell a node cut off from the majority, and the session
    // would expire before they noticed.
    let idle_check = heartbeat_every.max(Duration::from_secs(2));
    loop {
        let current = match established.take() {
            Some(current) => current,
            None => match reconnect(&shared, &mut stop).await {
                Some(Ok(current)) => {
                    let _ = events.send(AgentEvent::Connected {
                        node_id: current.opened.node_id,
                    });
                    current
                }
                Some(Err(reason)) => {
                    shared.assignments().clear();
                    let _ = events.send(AgentEvent::Closed { reason });
                    return;
                }
                None => return,
            },
        };
        let Established {
            node,
            mut inbound,
            outbound,
            opened: _,
        } = current;
        let mut ticker = tokio::time::interval(heartbeat_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard_at = Instant::now();
        let broke = loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
                _ = ticker.tick() => {
                    let load = shared.assignments().active.len() as u32;
                    let beat = SessionRequest {
                        kind: Some(session_request::Kind::Heartbeat(Heartbeat { load })),
                    };
                    // Never wait here: a full buffer means earlier beats are still queued (the
                    // server is behind), and waiting would stall the events too.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = outbound.try_send(beat) {
                        break "the stream stopped taking heartbeats".to_string();
                    }
                    if heard_at.elapsed() >= idle_check {
                        if !shared.client.node_serves_with_leader(&node).await {
                            break format!("{} stopped serving or lost its leader", node.address);
                        }
                        heard_at = Instant::now();
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(event)) => {
                        heard_at = Instant::now();
                        if let Some(reason) = handle(&shared, event, &events) {
                            shared.assignments().clear();
                            let _ = events.send(AgentEvent::Closed { reason });
                            return;
                        }
                    }
                    Ok(None) => break format!("{}: the session stream ended", node.address),
                    Err(status) if status.code() == Code::NotFound => {
                        shared.assignments().clear();
                        let _ = events.send(AgentEvent::Closed {
                            reason: format!(
                                "session {} does not exist or has expired ({}: {})",
                                shared.session_id,
                                node.address,
                                describe(&status)
                            ),
                        });
                        return;
                    }
                    Err(status) => break format!("{}: {}", node.address, describe(&status)),
                },
            }
        };
        tracing::debug!(session = shared.session_id, reason = %broke, "session stream broke; reconnecting");
        shared.client.node_failed(&node);
        let _ = events.send(AgentEvent::Disconnected { reason: broke });
    }
}

/// Delivers one pushed event. Returns the reason when the session has ended.
fn handle(
    shared: &Shared,
    event: SessionEvent,
    events: &mpsc::UnboundedSender<AgentEvent>,
) -> Option<String> {
    let deliver = match event.kind? {
        session_event::Kind::Opened(_) => None,
        session_event::Kind::Assignment(assignment) => {
            let mut assignments = shared.assignments();
            let new = assignments.accept(assignment.task_id, assignment.fencing_token);
            if new {
                assignments
                    .lease_ms
                    .insert(assignment.task_id, assignment.lease_ms);
            }
            new.then_some(AgentEvent::Assignment(assignment))
        }
        session_event::Kind::Canceled(revocation) => shared
            .assignments()
            .revoke(revocation.task_id, revocation.fencing_token)
            .then_some(AgentEvent::Canceled(revocation)),
        session_event::Kind::LeaseLost(revocation) => shared
            .assignments()
            .revoke(revocation.task_id, revocation.fencing_token)
            .then_some(AgentEvent::LeaseLost(revocation)),
        session_event::Kind::Ballot(ballot) => ballot.decision.and_then(|decision| {
            shared
                .assignments()
                .accept_ballot(decision.id)
                .then_some(AgentEvent::Ballot(decision))
        }),
        session_event::Kind::HoldLost(lost) => Some(AgentEvent::HoldLost(lost)),
        session_event::Kind::Closed(closed) => return Some(closed.reason),
    };
    if let Some(event) = deliver {
        let _ = events.send(event);
    }
    None
}

/// Opens a new stream for the session, trying node after node until one accepts. `None` when
/// asked to stop; `Some(Err(reason))` when the session has ended.
async fn reconnect(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
) -> Option<std::result::Result<Established, String>> {
    let mut delay = RECONNECT_FIRST;
    let attempt_timeout = shared.client.options().request_timeout;
    loop {
        if *stop.borrow() {
            return None;
        }
        let node = shared.client.cursor_node();
        let attempt = tokio::time::timeout(attempt_timeout, open_on(&node, shared.session_id));
        let failure = tokio::select! {
            outcome = attempt => match outcome {
                Ok(Ok(established)) => return Some(Ok(established)),
                Ok(Err(OpenFailure::Ended(reason))) => return Some(Err(reason)),
                Ok(Err(OpenFailure::Failed(failure))) => failure,
                Err(_) => format!("{}: no answer", node.address),
            },
            _ = stop.changed() => return None,
        };
        tracing::debug!(session = shared.session_id, %failure, "reconnecting the session failed");
        shared.client.node_failed(&node);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return None,
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_assignments_are_delivered_once() {
        let mut assignments = Assignments::default();
        assert!(assignments.accept(7, 1));
        assert!(!assignments.accept(7, 1), "a repeat after a reconnect");
        assert!(assignments.finish(7, 1));
        assert!(
            !assignments.accept(7, 1),
            "a repeat of a finished assignment"
        );
        assert!(assignments.accept(7, 5), "a new attempt of the same task");
        assert!(
            !assignments.accept(7, 3),
            "an older token after a newer one"
        );
        assert_eq!(assignments.active.get(&7), Some(&5));
        assert!(
            !assignments.revoke(7, 4),
            "a revocation of another assignment"
        );
        assert!(assignments.revoke(7, 5));
        assert!(assignments.active.is_empty());
        assert!(!assignments.revoke(7, 5), "revoked once");
    }

    #[test]
    fn the_memory_of_finished_assignments_is_bounded() {
        let mut assignments = Assignments::default();
        for task in 0..(RECENT_ASSIGNMENTS_MAX as u64 + 10) {
            assert!(assignments.accept(task, 1));
            assignments.finish(task, 1);
        }
        assert_eq!(assignments.recent.len(), RECENT_ASSIGNMENTS_MAX);
        assert_eq!(assignments.recent_set.len(), RECENT_ASSIGNMENTS_MAX);
    }

    #[test]
    fn ballots_are_delivered_once() {
        let mut assignments = Assignments::default();
        assert!(assignments.accept_ballot(3));
        assert!(!assignments.accept_ballot(3));
        assert!(assignments.accept_ballot(4));
    }
}
