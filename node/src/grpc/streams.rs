//! The long-lived calls: agent session streams, task, decision and workflow watches, and
//! WaitTask. Every one is served from this node's applied state and follows the coordination event
//! ring, woken by the apply notification (`SharedState::subscribe_events`), never by polling.
//!
//! The watches are feed sources (`feed.rs`, which serves them: start, reads bounded per lock,
//! sending, BOOKMARKs, falling behind, shutdown); a session stream, which also reads the agent's
//! heartbeats and resyncs instead of failing when it falls behind, keeps its own loop of the same
//! pattern: mark the notification seen, read the state, take the events after the cursor, build
//! the messages under the read lock, release it, send, wait for the next notification.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1 as pb;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::session_request::Kind as RequestKind;
use futures::Stream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert;
use super::feed::{self, FeedSource, Read, Wake, EVENTS_PER_READ};
use super::gateway::{invalid, Gateway};
use super::status::to_status;
use crate::error::Error;
use crate::limits::{STREAM_BUFFER_EVENTS, WATCH_SNAPSHOT_TASKS_MAX};
use crate::node::Node;
use crate::state_machine::coordination::{
    CoordEvent, CoordEventKind, DecisionEventKind, DecisionStatus, SessionId, TaskEventKind,
    TaskFilter, TaskId, TaskState,
};
use crate::state_machine::locks::{LockEventKind, LockKind};
use crate::state_machine::{StateMachine, Tasks};

/// How long a new session stream may take to send its `open` message.
const SESSION_OPEN_WAIT: Duration = Duration::from_secs(10);

pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Resolves once the node stops (the guard `wait_for` returns is dropped here, not held across
/// the awaits of a select arm).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

pub(crate) fn shutting_down() -> Status {
    Status::unavailable("the node is shutting down; reconnect to another node")
}

/// Waits until `present` holds on this node's applied state. A follower may not have applied
/// what a client just wrote through the leader, and cannot prove that something does not exist
/// without the leader: the leader answers after one ReadIndex, a follower after it has waited
/// up to the leader wait for its state to catch up.
pub async fn await_visible(gateway: &Gateway, present: impl Fn(&StateMachine) -> bool) -> bool {
    let node = &gateway.node;
    let mut changes = node.state.subscribe_coordination();
    let deadline = Instant::now() + node.leader_wait();
    let mut linearized = false;
    loop {
        changes.borrow_and_update();
        if present(&node.state.read().machine) {
            return true;
        }
        if linearized {
            return false;
        }
        if node.raft.is_leader() && node.linearize().await.is_ok() {
            linearized = true;
            continue;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return false },
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

// --- agent sessions ----------------------------------------------------------------------------

/// Attaches an agent's stream to its session: reads `open`, checks the session, then serves it.
pub async fn session(
    gateway: &Gateway,
    permit: OwnedSemaphorePermit,
    mut inbound: Streaming<pb::SessionRequest>,
) -> Result<EventStream<pb::SessionEvent>, Status> {
    let first = tokio::time::timeout(SESSION_OPEN_WAIT, inbound.message())
        .await
        .map_err(|_| {
            invalid(format!(
                "open: no open message within {} ms of opening the stream",
                SESSION_OPEN_WAIT.as_millis()
            ))
        })??;
    let session_id = match first.and_then(|m| m.kind) {
        Some(RequestKind::Open(open)) => open.session_id,
        _ => {
            return Err(invalid(
                "open: the first message on a session stream must be open",
            ))
        }
    };
    super::validation::non_zero("open.session_id", session_id)?;
    await_visible(gateway, |m| {
        m.agents().agent_by_session(session_id).is_some()
    })
    .await;
    let agent = {
        let state = gateway.node.state.read();
        match state.machine.agents().agent_by_session(session_id) {
            Some(agent) if agent.live && agent.session_id == session_id => agent.name.clone(),
            Some(_) => {
                return Err(to_status(Error::NotFound(format!(
                    "session {session_id} has ended (expired, closed or replaced); register again"
                ))))
            }
            None => {
                return Err(to_status(Error::NotFound(format!(
                    "session {session_id} does not exist; register first"
                ))))
            }
        }
    };
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
    let node = gateway.node.clone();
    let stopping = gateway.stopping.clone();
    tokio::spawn(async move {
        let _permit = permit;
        tracing::debug!(session_id, agent, "session stream opened");
        let reader = tokio::spawn(read_session(
            node.clone(),
            session_id,
            inbound,
            sender.clone(),
        ));
        serve_session(node, stopping, session_id, agent, sender, reader).await;
        tracing::debug!(session_id, "session stream ended");
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Records the agent's heartbeats for the node's next batch until the agent closes its side.
async fn read_session(
    node: Arc<Node>,
    session_id: SessionId,
    mut inbound: Streaming<pb::SessionRequest>,
    sender: mpsc::Sender<Result<pb::SessionEvent, Status>>,
) {
    loop {
        match inbound.message().await {
            Ok(Some(pb::SessionRequest {
                kind: Some(RequestKind::Heartbeat(beat)),
            })) => {
                if !node.heartbeats.beat(session_id, beat.load) {
                    tracing::warn!(session_id, "heartbeat batch full; beat dropped");
                }
            }
            Ok(Some(pb::SessionRequest {
                kind: Some(RequestKind::Open(_)),
            })) => {
                let _ = sender
                    .send(Err(invalid(
                        "open: only the first message on a session stream may be open",
                    )))
                    .await;
                return;
            }
            Ok(Some(pb::SessionRequest { kind: None })) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

async fn serve_session(
    node: Arc<Node>,
    mut stopping: watch::Receiver<bool>,
    session_id: SessionId,
    agent: String,
    sender: mpsc::Sender<Result<pb::SessionEvent, Status>>,
    mut reader: tokio::task::JoinHandle<()>,
) {
    let mut events = node.state.subscribe_events();
    events.borrow_and_update();
    let (mut messages, mut ended, mut cursor) = {
        let state = node.state.read();
        let mut messages = vec![event(EventKind::Opened(pb::SessionOpened {
            session_id,
            agent: agent.clone(),
            ttl_ms: state
                .machine
                .agents()
                .agent(&agent)
                .map_or(0, |agent| agent.spec.ttl_ms),
            node_id: node.id,
        }))];
        let ended = session_snapshot(&state.machine, session_id, &agent, &mut messages);
        (messages, ended, state.machine.last_event_seq())
    };
    loop {
        for message in messages.drain(..) {
            if sender.send(Ok(message)).await.is_err() {
                reader.abort();
                return;
            }
        }
        if ended {
            break;
        }
        let caught_up;
        {
            events.borrow_and_update();
            let state = node.state.read();
            (ended, caught_up) = match state.machine.events_after(cursor) {
                Ok(new) => {
                    let caught_up = new.len() <= EVENTS_PER_READ;
                    let mut ended = false;
                    let mut new = new.into_iter().take(EVENTS_PER_READ);
                    while let Some(e) = new.by_ref().next() {
                        cursor = e.seq;
                        if session_event(&state.machine, session_id, &agent, e, &mut messages) {
                            // The session's holdings are lost by the same entry that ended it,
                            // in the events right after: tell them before `closed`.
                            let closed = messages.pop();
                            for later in new.by_ref() {
                                messages.extend(hold_lost(session_id, &later.kind));
                            }
                            messages.extend(closed);
                            ended = true;
                            break;
                        }
                    }
                    (ended, caught_up)
                }
                Err(oldest) => {
                    // The ring moved past the cursor: send the current state again (the agent
                    // treats a repeated assignment as one).
                    tracing::debug!(session_id, cursor, oldest, "session stream resyncs");
                    cursor = state.machine.last_event_seq();
                    (
                        session_snapshot(&state.machine, session_id, &agent, &mut messages),
                        true,
                    )
                }
            };
        }
        if !messages.is_empty() || ended || !caught_up {
            continue;
        }
        tokio::select! {
            changed = events.changed() => if changed.is_err() { break },
            () = sender.closed() => break,
            _ = &mut reader => break,
            () = stopped(&mut stopping) => {
                let _ = sender.send(Err(shutting_down())).await;
                break;
            }
        }
    }
    reader.abort();
}

fn event(kind: EventKind) -> pb::SessionEvent {
    pb::SessionEvent { kind: Some(kind) }
}

/// Every current assignment and open ballot of the session, or `closed` when it is no longer
/// live (then returns true: the stream ends).
fn session_snapshot(
    machine: &StateMachine,
    session_id: SessionId,
    agent: &str,
    messages: &mut Vec<pb::SessionEvent>,
) -> bool {
    let live = machine
        .agents()
        .agent_by_session(session_id)
        .is_some_and(|a| a.live && a.session_id == session_id);
    if !live {
        messages.push(event(EventKind::Closed(pb::SessionClosed {
            reason: format!("session {session_id} has ended"),
        })));
        return true;
    }
    for task in machine.tasks().assignments(session_id) {
        messages.extend(convert::assignment(task).map(|a| event(EventKind::Assignment(a))));
    }
    for decision in machine.decisions().open_ballots(agent) {
        messages.push(event(EventKind::Ballot(pb::Ballot {
            decision: Some(convert::decision(decision)),
        })));
    }
    false
}

/// What one event means to one session; true when the session ended.
fn session_event(
    machine: &StateMachine,
    session_id: SessionId,
    agent: &str,
    event_: &CoordEvent,
    messages: &mut Vec<pb::SessionEvent>,
) -> bool {
    match &event_.kind {
        CoordEventKind::Task {
            task_id,
            kind,
            lease,
            revoked,
            ..
        } => {
            if let Some(revoked) = revoked.as_ref().filter(|r| r.session_id == session_id) {
                let revocation = pb::Revocation {
                    task_id: *task_id,
                    fencing_token: revoked.token,
                    reason: revoked.reason.clone(),
                };
                messages.push(event(if revoked.canceled {
                    EventKind::Canceled(revocation)
                } else {
                    EventKind::LeaseLost(revocation)
                }));
            }
            let assigned_here = *kind == TaskEventKind::Assigned
                && lease.as_ref().is_some_and(|l| l.session_id == session_id);
            if assigned_here {
                // Built from the current task, and only while that assignment is current: an
                // agent is never sent work whose token is already stale.
                let token = lease.as_ref().map(|l| l.token);
                let current = machine
                    .tasks()
                    .task(*task_id)
                    .filter(|t| t.lease.as_ref().map(|l| l.token) == token);
                if let Some(assignment) = current.and_then(convert::assignment) {
                    if !assignment.traceparent.is_empty() {
                        tracing::debug!(
                            task_id = assignment.task_id,
                            fencing_token = assignment.fencing_token,
                            traceparent = %assignment.traceparent,
                            "assignment sent"
                        );
                        crate::otel::mark(
                            "conclave.task.assigned",
                            &assignment.traceparent,
                            assignment.task_id,
                        );
                    }
                    messages.push(event(EventKind::Assignment(assignment)));
                }
            }
            false
        }
        CoordEventKind::Decision {
            decision_id,
            kind: DecisionEventKind::Proposed,
        } => {
            let ballot = machine
                .decisions()
                .decision(*decision_id)
                .filter(|d| d.is_open() && d.is_voter(agent) && !d.has_voted(agent));
            if let Some(decision) = ballot {
                messages.push(event(EventKind::Ballot(pb::Ballot {
                    decision: Some(convert::decision(decision)),
                })));
            }
            false
        }
        CoordEventKind::Decision { .. } => false,
        CoordEventKind::Lock(_) => {
            messages.extend(hold_lost(session_id, &event_.kind));
            false
        }
        CoordEventKind::Barrier(_) | CoordEventKind::Workflow(_) | CoordEventKind::Topic(_) => {
            false
        }
        CoordEventKind::SessionClosed {
            session_id: closed,
            reason,
            ..
        } => {
            if *closed != session_id {
                return false;
            }
            messages.push(event(EventKind::Closed(pb::SessionClosed {
                reason: reason.clone(),
            })));
            true
        }
    }
}

/// A HoldLost message when the event is the loss of a grant held by `session_id`.
fn hold_lost(session_id: SessionId, kind: &CoordEventKind) -> Option<pb::SessionEvent> {
    let CoordEventKind::Lock(lost) = kind else {
        return None;
    };
    if lost.kind != LockEventKind::Lost || lost.session_id != session_id {
        return None;
    }
    let kind = match lost.lock {
        LockKind::Lock => pb::FenceKind::Lock,
        LockKind::Semaphore => pb::FenceKind::Semaphore,
        LockKind::Election => pb::FenceKind::Election,
    };
    Some(event(EventKind::HoldLost(pb::HoldLost {
        kind: kind as i32,
        name: lost.name.clone(),
        token: lost.token,
        reason: lost.reason.clone(),
    })))
}

// --- task watches ------------------------------------------------------------------------------

/// What a task watch tells a client whose resume point is gone.
const TASKS_THEN: &str = "watch again with initial_state";

/// WatchTasks: one task (task_id), a queue, or every task. Opens with STARTED (the cursor), then
/// SNAPSHOT events if asked for, then every watched event after the cursor: after the current last
/// event, or after `after_sequence` for a resume (tasks.proto, WatchTasksRequest). While nothing
/// watched happens but other events go by, a BOOKMARK every --watch-progress-ms carries the cursor.
pub async fn watch_tasks(
    gateway: &Gateway,
    req: pb::WatchTasksRequest,
) -> Result<EventStream<pb::TaskEvent>, Status> {
    let permit = gateway.watch_slot()?;
    let task_id = req.task_id;
    let resume = req.after_sequence;
    // A resumed watch of a task purged while the watcher was away still gets the events up to
    // PURGED, which are in the history although the task is gone.
    let known = |m: &StateMachine| {
        m.tasks().task(task_id).is_some() || resume.is_some_and(|after| {
            in_history(
                m,
                after,
                |kind| matches!(kind, CoordEventKind::Task { task_id: id, .. } if *id == task_id),
            )
        })
    };
    if task_id != 0 && !await_visible(gateway, known).await {
        return Err(to_status(Error::unknown_task(task_id)));
    }
    feed::serve(gateway, permit, TaskFeed { req })
}

/// The feed of a task watch: the task events of the ring, as tasks.proto describes them.
struct TaskFeed {
    req: pb::WatchTasksRequest,
}

impl TaskFeed {
    fn watches(&self, task_id: TaskId, queue: &str) -> bool {
        if self.req.task_id != 0 {
            task_id == self.req.task_id
        } else {
            self.req.queue.is_empty() || queue == self.req.queue
        }
    }
}

impl FeedSource for TaskFeed {
    type Message = pb::TaskEvent;
    const WAKE: Wake = Wake::Events;

    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<pb::TaskEvent>), Status> {
        let cursor = feed::ring_start(machine, self.req.after_sequence, TASKS_THEN)?;
        let mut messages = vec![pb::TaskEvent {
            sequence: cursor,
            kind: pb::TaskEventKind::Started as i32,
            task: None,
        }];
        if self.req.initial_state {
            // Read under the same lock as the cursor: the state at exactly that sequence.
            task_snapshot(machine.tasks(), &self.req, &mut messages);
        }
        Ok((cursor, messages))
    }

    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<pb::TaskEvent>,
    ) -> Result<Read, Status> {
        let tasks = machine.tasks();
        feed::ring_read(machine, cursor, |e| {
            let CoordEventKind::Task {
                task_id,
                queue,
                kind,
                ..
            } = &e.kind
            else {
                return false;
            };
            if !self.watches(*task_id, queue) {
                return false;
            }
            out.push(pb::TaskEvent {
                sequence: e.seq,
                kind: convert::task_event_kind(*kind) as i32,
                task: Some(event_task(tasks, e)),
            });
            // A purged task is gone: nothing more will happen to it.
            self.req.task_id != 0 && *kind == TaskEventKind::Purged
        })
        .map_err(|oldest| feed::fell_behind(cursor, oldest, TASKS_THEN))
    }

    fn bookmark(&self, cursor: u64) -> Option<pb::TaskEvent> {
        Some(pb::TaskEvent {
            sequence: cursor,
            kind: pb::TaskEventKind::Bookmark as i32,
            task: None,
        })
    }

    fn cursor_of(message: &pb::TaskEvent) -> u64 {
        message.sequence
    }
}

/// The SNAPSHOT events of a watch asked for the initial state: the task, or the queue's tasks
/// still in play (finished ones can be listed), at most WATCH_SNAPSHOT_TASKS_MAX.
fn task_snapshot(tasks: &Tasks, req: &pb::WatchTasksRequest, messages: &mut Vec<pb::TaskEvent>) {
    let snapshot = |task| pb::TaskEvent {
        sequence: 0,
        kind: pb::TaskEventKind::Snapshot as i32,
        task: Some(convert::task(task, true)),
    };
    if req.task_id != 0 {
        messages.extend(tasks.task(req.task_id).map(snapshot));
    } else {
        let filter = TaskFilter {
            queue: req.queue.clone(),
            states: TaskState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .collect(),
            ..TaskFilter::default()
        };
        let listing = tasks.list_tasks(&filter, 0, WATCH_SNAPSHOT_TASKS_MAX);
        messages.extend(listing.tasks.into_iter().map(snapshot));
    }
}

/// True when the kept events after `after` include one that `about` picks: a resumed watch of
/// something gone since (a purged task) still gets the events that are left of it.
fn in_history(machine: &StateMachine, after: u64, about: impl Fn(&CoordEventKind) -> bool) -> bool {
    machine
        .events_after(after)
        .is_ok_and(|events| events.iter().any(|e| about(&e.kind)))
}

/// The task as one event left it: its state, attempts and lease as of the event (the task may
/// have moved on since), everything else as it is now, without payload and result.
fn event_task(tasks: &Tasks, event_: &CoordEvent) -> pb::Task {
    let CoordEventKind::Task {
        task_id,
        queue,
        state,
        attempts,
        lease,
        ..
    } = &event_.kind
    else {
        unreachable!("called for task events only");
    };
    let mut task = match tasks.task(*task_id) {
        Some(task) => convert::task(task, true),
        None => pb::Task {
            id: *task_id,
            spec: Some(pb::TaskSpec {
                queue: queue.clone(),
                ..pb::TaskSpec::default()
            }),
            ..pb::Task::default()
        },
    };
    task.state = convert::task_state(*state) as i32;
    task.attempts = *attempts;
    task.lease = lease.as_ref().map(convert::lease);
    task
}

/// WaitTask, after the caller made the local state linearizable: waits on the apply
/// notification until the task is terminal or `timeout` passes. Returns (terminal, task with its
/// result, store revision).
pub async fn wait_task(
    gateway: &Gateway,
    task_id: TaskId,
    timeout: Duration,
) -> Result<(bool, pb::Task, u64), Status> {
    let node = &gateway.node;
    let mut stopping = gateway.stopping.clone();
    let mut events = node.state.subscribe_events();
    let deadline = Instant::now() + timeout;
    loop {
        events.borrow_and_update();
        let timed_out = Instant::now() >= deadline;
        {
            let state = node.state.read();
            let task = state
                .machine
                .tasks()
                .task(task_id)
                .ok_or_else(|| to_status(Error::unknown_task(task_id)))?;
            let terminal = task.state.is_terminal();
            if terminal || timed_out {
                return Ok((
                    terminal,
                    convert::task(task, false),
                    state.machine.revision(),
                ));
            }
        }
        tokio::select! {
            changed = events.changed() => if changed.is_err() { return Err(shutting_down()) },
            () = tokio::time::sleep_until(deadline) => {}
            () = stopped(&mut stopping) => return Err(shutting_down()),
        }
    }
}

// --- decision watches --------------------------------------------------------------------------

/// WatchDecision: the decision now, then after every accepted vote, until the outcome.
pub async fn watch_decision(
    gateway: &Gateway,
    decision_id: u64,
) -> Result<EventStream<pb::DecisionEvent>, Status> {
    let permit = gateway.watch_slot()?;
    if !await_visible(gateway, |m| m.decisions().decision(decision_id).is_some()).await {
        return Err(to_status(Error::unknown_decision(decision_id)));
    }
    let source = DecisionFeed {
        decision_id,
        sent: None,
    };
    feed::serve(gateway, permit, source)
}

/// The feed of a decision watch: the decision as it is whenever an event of it went by (and
/// again after falling behind the ring), each state once; it ends with the outcome.
struct DecisionFeed {
    decision_id: u64,
    /// What was last sent: (votes, status).
    sent: Option<(usize, DecisionStatus)>,
}

impl DecisionFeed {
    fn push(&mut self, machine: &StateMachine, out: &mut Vec<pb::DecisionEvent>) {
        let Some(decision) = machine.decisions().decision(self.decision_id) else {
            return;
        };
        let now = (decision.votes.len(), decision.status);
        if self.sent != Some(now) {
            self.sent = Some(now);
            out.push(pb::DecisionEvent {
                decision: Some(convert::decision(decision)),
            });
        }
    }
}

impl FeedSource for DecisionFeed {
    type Message = pb::DecisionEvent;
    const WAKE: Wake = Wake::Events;

    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<pb::DecisionEvent>), Status> {
        let mut messages = Vec::new();
        self.push(machine, &mut messages);
        Ok((machine.last_event_seq(), messages))
    }

    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<pb::DecisionEvent>,
    ) -> Result<Read, Status> {
        let id = self.decision_id;
        let mut changed = false;
        let watched = |e: &CoordEvent| {
            changed |=
                matches!(e.kind, CoordEventKind::Decision { decision_id, .. } if decision_id == id);
            false
        };
        let mut read = feed::ring_read(machine, cursor, watched).unwrap_or_else(|_| {
            // Fell behind the ring: the decision as it is now.
            changed = true;
            Read {
                cursor: machine.last_event_seq(),
                caught_up: true,
                ended: false,
            }
        });
        if changed {
            self.push(machine, out);
        }
        // Forgotten after its retention: it was closed long ago.
        read.ended = machine
            .decisions()
            .decision(id)
            .is_none_or(|decision| !decision.is_open());
        Ok(read)
    }

    fn bookmark(&self, _cursor: u64) -> Option<pb::DecisionEvent> {
        None
    }

    fn cursor_of(_message: &pb::DecisionEvent) -> u64 {
        0
    }
}

// --- workflow watches --------------------------------------------------------------------------

/// What a workflow watch tells a client whose resume point is gone.
const WORKFLOWS_THEN: &str = "get the workflow and watch again from now";

/// Watch (workflows.proto): one workflow (workflow_id) or every workflow. Opens with STARTED (the
/// cursor), then every watched event after it: after the current last event, or after
/// `after_sequence` for a resume. While nothing watched happens but other events go by, a
/// BOOKMARK every --watch-progress-ms carries the cursor.
pub async fn watch_workflows(
    gateway: &Gateway,
    req: pb::WatchWorkflowsRequest,
) -> Result<EventStream<pb::WorkflowEvent>, Status> {
    let permit = gateway.watch_slot()?;
    let workflow_id = req.workflow_id;
    let resume = req.after_sequence;
    let known = |m: &StateMachine| {
        m.workflows().get(workflow_id).is_some() || resume.is_some_and(|after| {
            in_history(
                m,
                after,
                |kind| matches!(kind, CoordEventKind::Workflow(w) if w.workflow_id == workflow_id),
            )
        })
    };
    if workflow_id != 0 && !await_visible(gateway, known).await {
        return Err(to_status(Error::unknown_workflow(workflow_id)));
    }
    feed::serve(gateway, permit, WorkflowFeed { req })
}

/// The feed of a workflow watch: the workflow events of the ring.
struct WorkflowFeed {
    req: pb::WatchWorkflowsRequest,
}

impl FeedSource for WorkflowFeed {
    type Message = pb::WorkflowEvent;
    const WAKE: Wake = Wake::Events;

    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<pb::WorkflowEvent>), Status> {
        let cursor = feed::ring_start(machine, self.req.after_sequence, WORKFLOWS_THEN)?;
        let started = pb::WorkflowEvent {
            sequence: cursor,
            kind: pb::WorkflowEventKind::Started as i32,
            ..pb::WorkflowEvent::default()
        };
        Ok((cursor, vec![started]))
    }

    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<pb::WorkflowEvent>,
    ) -> Result<Read, Status> {
        let workflow_id = self.req.workflow_id;
        feed::ring_read(machine, cursor, |e| {
            if let CoordEventKind::Workflow(change) = &e.kind {
                if workflow_id == 0 || change.workflow_id == workflow_id {
                    out.push(super::workflows::event(e.seq, change));
                }
            }
            false
        })
        .map_err(|oldest| feed::fell_behind(cursor, oldest, WORKFLOWS_THEN))
    }

    fn bookmark(&self, cursor: u64) -> Option<pb::WorkflowEvent> {
        Some(pb::WorkflowEvent {
            sequence: cursor,
            kind: pb::WorkflowEventKind::Bookmark as i32,
            ..pb::WorkflowEvent::default()
        })
    }

    fn cursor_of(message: &pb::WorkflowEvent) -> u64 {
        message.sequence
    }
}
