//! The long-lived calls: agent session streams, task and decision watches, and WaitTask. Every
//! one is served from this node's applied state and follows the coordination event ring, woken
//! by the apply notification (`SharedState::subscribe_events`), never by polling.
//!
//! Pattern, the same in each: mark the notification seen, then read the state (so a change
//! applied after the read is always noticed), take the events after the stream's cursor, build
//! the messages under the read lock, release it, send, and wait for the next notification. A task
//! watch that is caught up and has sent nothing for a while although its cursor moved sends a
//! BOOKMARK (`progress.rs`), so its client's resume point keeps up with the ring.

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
use super::gateway::{invalid, Gateway};
use super::progress::{self, Progress};
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

/// Most events one stream takes from the ring per read of the state, so a stream far behind
/// does not hold the state's read lock (and so apply) for long.
const EVENTS_PER_READ: usize = 1024;
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
        m.tasks().task(task_id).is_some()
            || resume.is_some_and(|after| task_in_history(m, after, task_id))
    };
    if task_id != 0 && !await_visible(gateway, known).await {
        return Err(to_status(Error::unknown_task(task_id)));
    }
    let node = gateway.node.clone();
    let mut stopping = gateway.stopping.clone();
    let mut events = node.state.subscribe_events();
    events.borrow_and_update();
    let (mut messages, mut cursor) = {
        let state = node.state.read();
        let tasks = state.machine.tasks();
        // A node that has not applied `after` yet finds nothing after it: the loop below waits for
        // the events as they are applied, exactly as for a watcher that is up to date.
        let cursor = start_cursor(&state.machine, resume, "watch again with initial_state")?;
        let mut messages = vec![pb::TaskEvent {
            sequence: cursor,
            kind: pb::TaskEventKind::Started as i32,
            task: None,
        }];
        if req.initial_state {
            // Read under the same lock as the cursor: the state at exactly that sequence.
            let snapshot = |task| pb::TaskEvent {
                sequence: 0,
                kind: pb::TaskEventKind::Snapshot as i32,
                task: Some(convert::task(task, true)),
            };
            if task_id != 0 {
                messages.extend(tasks.task(task_id).map(snapshot));
            } else {
                // The tasks still in play; finished ones can be listed.
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
        (messages, cursor)
    };
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
    let progress_interval = Duration::from_millis(node.config.watch_progress_ms);
    tokio::spawn(async move {
        let _permit = permit;
        // `cursor` is the stream's: every watched event up to it has been read (and is sent at
        // the top of the loop). What the client knows is STARTED's cursor, then its last change.
        let mut progress = Progress::new(progress_interval, cursor, Instant::now());
        loop {
            for message in messages.drain(..) {
                let sequence = message.sequence;
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
                progress.sent(sequence, Instant::now());
            }
            let step = {
                events.borrow_and_update();
                let state = node.state.read();
                let tasks = state.machine.tasks();
                match state.machine.events_after(cursor) {
                    Ok(new) => {
                        let caught_up = new.len() <= EVENTS_PER_READ;
                        let mut ended = false;
                        for e in new.into_iter().take(EVENTS_PER_READ) {
                            cursor = e.seq;
                            let CoordEventKind::Task {
                                task_id: id,
                                queue,
                                kind,
                                ..
                            } = &e.kind
                            else {
                                continue;
                            };
                            let watched = if task_id != 0 {
                                *id == task_id
                            } else {
                                req.queue.is_empty() || *queue == req.queue
                            };
                            if watched {
                                messages.push(pb::TaskEvent {
                                    sequence: e.seq,
                                    kind: convert::task_event_kind(*kind) as i32,
                                    task: Some(event_task(tasks, e)),
                                });
                                // A purged task is gone: nothing more will happen to it.
                                ended = task_id != 0 && *kind == TaskEventKind::Purged;
                                if ended {
                                    break;
                                }
                            }
                        }
                        Ok((caught_up, ended))
                    }
                    Err(oldest) => Err(fell_behind(
                        cursor,
                        oldest,
                        "watch again with initial_state",
                    )),
                }
            };
            let (caught_up, ended) = match step {
                Ok(step) => step,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            };
            if ended {
                for message in messages.drain(..) {
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                return;
            }
            if !messages.is_empty() || !caught_up {
                continue;
            }
            // Caught up with nothing to send: `cursor` is the node's last event sequence (or a
            // resume point the node has not reached), and everything up to it was scanned.
            if let Some(cursor) = progress.due(cursor, Instant::now()) {
                let bookmark = pb::TaskEvent {
                    sequence: cursor,
                    kind: pb::TaskEventKind::Bookmark as i32,
                    task: None,
                };
                if sender.send(Ok(bookmark)).await.is_err() {
                    return;
                }
                progress.sent(cursor, Instant::now());
            }
            tokio::select! {
                changed = events.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
                () = progress::until(progress.deadline(cursor)) => {}
                () = stopped(&mut stopping) => {
                    let _ = sender.send(Err(shutting_down())).await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// True when the kept events after `after` include one of task `task_id`.
fn task_in_history(machine: &StateMachine, after: u64, task_id: TaskId) -> bool {
    machine.events_after(after).is_ok_and(|events| {
        events
            .iter()
            .any(|e| matches!(e.kind, CoordEventKind::Task { task_id: id, .. } if id == task_id))
    })
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
    let node = gateway.node.clone();
    let mut stopping = gateway.stopping.clone();
    let mut events = node.state.subscribe_events();
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
    tokio::spawn(async move {
        let _permit = permit;
        // What was last sent: (votes, status); the same state is not sent twice.
        let mut sent: Option<(usize, DecisionStatus)> = None;
        let mut cursor = None;
        loop {
            let (message, ended, caught_up) = {
                events.borrow_and_update();
                let state = node.state.read();
                let mut caught_up = true;
                let last_event_seq = state.machine.last_event_seq();
                let changed = match cursor {
                    None => {
                        cursor = Some(last_event_seq);
                        true
                    }
                    Some(seq) => match state.machine.events_after(seq) {
                        Ok(new) => {
                            caught_up = new.len() <= EVENTS_PER_READ;
                            let mut changed = false;
                            for e in new.into_iter().take(EVENTS_PER_READ) {
                                cursor = Some(e.seq);
                                changed |= matches!(
                                    e.kind,
                                    CoordEventKind::Decision { decision_id: id, .. } if id == decision_id
                                );
                            }
                            changed
                        }
                        Err(_) => {
                            cursor = Some(last_event_seq);
                            true
                        }
                    },
                };
                match state.machine.decisions().decision(decision_id) {
                    // Forgotten after its retention: it was closed long ago.
                    None => (None, true, true),
                    Some(decision) => {
                        let now = (decision.votes.len(), decision.status);
                        let message = (changed && sent != Some(now)).then(|| {
                            sent = Some(now);
                            pb::DecisionEvent {
                                decision: Some(convert::decision(decision)),
                            }
                        });
                        (message, !decision.is_open(), caught_up)
                    }
                }
            };
            if let Some(message) = message {
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            if ended {
                return;
            }
            if !caught_up {
                continue;
            }
            tokio::select! {
                changed = events.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
                () = stopped(&mut stopping) => {
                    let _ = sender.send(Err(shutting_down())).await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

// --- workflow watches --------------------------------------------------------------------------

/// Watch (workflows.proto): one workflow (workflow_id) or every workflow. Opens with STARTED (the
/// cursor), then every watched event after it: after the current last event, or after
/// `after_sequence` for a resume. While nothing watched happens but other events go by, a
/// BOOKMARK every --watch-progress-ms carries the cursor. The same loop as `watch_tasks`.
pub async fn watch_workflows(
    gateway: &Gateway,
    req: pb::WatchWorkflowsRequest,
) -> Result<EventStream<pb::WorkflowEvent>, Status> {
    let permit = gateway.watch_slot()?;
    let workflow_id = req.workflow_id;
    let resume = req.after_sequence;
    let known = |m: &StateMachine| {
        m.workflows().get(workflow_id).is_some()
            || resume.is_some_and(|after| {
                m.events_after(after).is_ok_and(|events| {
                    events.iter().any(|e| {
                        matches!(&e.kind, CoordEventKind::Workflow(w) if w.workflow_id == workflow_id)
                    })
                })
            })
    };
    if workflow_id != 0 && !await_visible(gateway, known).await {
        return Err(to_status(Error::unknown_workflow(workflow_id)));
    }
    let node = gateway.node.clone();
    let mut stopping = gateway.stopping.clone();
    let mut events = node.state.subscribe_events();
    events.borrow_and_update();
    let mut cursor = {
        let state = node.state.read();
        start_cursor(
            &state.machine,
            resume,
            "get the workflow and watch again from now",
        )?
    };
    let mut messages = vec![pb::WorkflowEvent {
        sequence: cursor,
        kind: pb::WorkflowEventKind::Started as i32,
        ..pb::WorkflowEvent::default()
    }];
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
    let progress_interval = Duration::from_millis(node.config.watch_progress_ms);
    tokio::spawn(async move {
        let _permit = permit;
        let mut progress = Progress::new(progress_interval, cursor, Instant::now());
        loop {
            for message in messages.drain(..) {
                let sequence = message.sequence;
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
                progress.sent(sequence, Instant::now());
            }
            let step = {
                events.borrow_and_update();
                let state = node.state.read();
                match state.machine.events_after(cursor) {
                    Ok(new) => {
                        let caught_up = new.len() <= EVENTS_PER_READ;
                        for e in new.into_iter().take(EVENTS_PER_READ) {
                            cursor = e.seq;
                            if let CoordEventKind::Workflow(change) = &e.kind {
                                if workflow_id == 0 || change.workflow_id == workflow_id {
                                    messages.push(super::workflows::event(e.seq, change));
                                }
                            }
                        }
                        Ok(caught_up)
                    }
                    Err(oldest) => Err(fell_behind(
                        cursor,
                        oldest,
                        "get the workflow and watch again from now",
                    )),
                }
            };
            let caught_up = match step {
                Ok(caught_up) => caught_up,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            };
            if !messages.is_empty() || !caught_up {
                continue;
            }
            if let Some(cursor) = progress.due(cursor, Instant::now()) {
                let bookmark = pb::WorkflowEvent {
                    sequence: cursor,
                    kind: pb::WorkflowEventKind::Bookmark as i32,
                    ..pb::WorkflowEvent::default()
                };
                if sender.send(Ok(bookmark)).await.is_err() {
                    return;
                }
                progress.sent(cursor, Instant::now());
            }
            tokio::select! {
                changed = events.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
                () = progress::until(progress.deadline(cursor)) => {}
                () = stopped(&mut stopping) => {
                    let _ = sender.send(Err(shutting_down())).await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Where a watch starts: after `resume` while the events after it are still kept (else
/// EventsGone, telling the client to `then`), or at the last event.
fn start_cursor(
    machine: &crate::state_machine::StateMachine,
    resume: Option<u64>,
    then: &str,
) -> Result<u64, Status> {
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

/// A watch at `cursor` whose next event fell out of the event ring (the oldest kept is
/// `oldest`): EventsGone, telling the client to `then`.
fn fell_behind(cursor: u64, oldest: u64, then: &str) -> Status {
    to_status(Error::EventsGone {
        message: format!(
            "the watch fell behind the event history (event {} is gone; the oldest kept is {oldest}); {then}",
            cursor + 1
        ),
        oldest_kept: oldest,
    })
}
