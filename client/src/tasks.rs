//! Task calls (tasks.proto): submit, read, list, watch, wait, cancel, and the dead-letter queue.

use std::collections::HashMap;
use std::time::Duration;

use conclave_proto::limits::{
    MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_BACKOFF_MULTIPLIER, MAX_LEASE_MS, MAX_PAYLOAD_BYTES,
    MAX_REQUEST_BYTES, MAX_SHORT_STRING_BYTES, MAX_SUBMIT_BATCH, MAX_TASK_LIST_LIMIT, MAX_WAIT_MS,
    MIN_LEASE_MS,
};
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::{
    self as proto, CancelTaskRequest, GetTaskRequest, ListDeadLettersRequest, ListTasksRequest,
    PurgeRequest, ReadConsistency, RedriveRequest, SubmitBatchRequest, SubmitRequest, Task,
    TaskEvent, TaskEventKind, TaskSpec, TaskState, WaitTaskRequest, WatchTasksRequest,
};
use conclave_proto::{validate, TRACEPARENT_METADATA};
use futures::future::BoxFuture;
use futures::stream::StreamExt;
use futures::{FutureExt, TryFutureExt};
use prost::Message;
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, CallTimes, Client, MAX_RESPONSE_BYTES};
use crate::endpoint::Node;
use crate::error::{Error, Result};
use crate::feed::{self, FeedSpec, FeedStream, Mark, Messages, Resume};
use crate::kv::Header;

/// The result of [`Client::submit`], and one entry of [`SubmitBatchResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitResult {
    pub header: Header,
    pub task_id: u64,
    /// True when the idempotency key matched an earlier submission, whose id this is; nothing new
    /// was created.
    pub existing: bool,
}

/// The result of [`Client::submit_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitBatchResult {
    pub header: Header,
    /// One per submitted spec, in the order given.
    pub results: Vec<SubmitResult>,
}

/// A task as read by [`Client::get_task`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRead {
    pub header: Header,
    pub task: Task,
}

/// What [`Client::list_tasks`] selects. Every filter given must match; empty filters match all.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskListOptions {
    /// Only this queue (empty: every queue).
    pub queue: String,
    /// Only these states (empty: every state).
    pub states: Vec<TaskState>,
    /// Only tasks carrying every one of these labels.
    pub labels: HashMap<String, String>,
    /// Only children of this task (0: any).
    pub parent_id: u64,
    /// Page size, 1 ..= 1000; 0 means 100.
    pub limit: u32,
    /// Only ids strictly greater than this one.
    pub after_id: u64,
    pub consistency: ReadConsistency,
    /// Leave payloads and results out.
    pub summary: bool,
}

impl Default for TaskListOptions {
    fn default() -> Self {
        TaskListOptions {
            queue: String::new(),
            states: Vec::new(),
            labels: HashMap::new(),
            parent_id: 0,
            limit: 0,
            after_id: 0,
            consistency: ReadConsistency::Linearizable,
            summary: false,
        }
    }
}

/// One page of tasks, in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    pub header: Header,
    pub tasks: Vec<Task>,
    /// True when more follow; continue with `after_id = next_after_id`.
    pub more: bool,
    pub next_after_id: u64,
}

/// What [`Client::list_dead_letters`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterListOptions {
    /// Only this queue (empty: every queue).
    pub queue: String,
    /// Page size, 1 ..= 1000; 0 means 100.
    pub limit: u32,
    pub after_id: u64,
    pub consistency: ReadConsistency,
}

impl Default for DeadLetterListOptions {
    fn default() -> Self {
        DeadLetterListOptions {
            queue: String::new(),
            limit: 0,
            after_id: 0,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// Which dead letters [`Client::redrive`] and [`Client::purge`] act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelector {
    /// These tasks (ids that are not dead letters are skipped).
    Ids(Vec<u64>),
    /// Every dead letter of this queue.
    Queue(String),
}

/// The result of [`Client::redrive`] and [`Client::purge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterResult {
    pub header: Header,
    /// How many dead letters were redriven or purged.
    pub count: u64,
}

/// The result of [`Client::wait_task`].
#[derive(Debug, Clone, PartialEq)]
pub struct WaitResult {
    pub header: Header,
    /// True when the task is terminal (SUCCEEDED, DEAD_LETTERED, CANCELED, EXPIRED); false when the
    /// wait ended first, and `task` is as it is now.
    pub terminal: bool,
    /// Includes the result when SUCCEEDED.
    pub task: Task,
}

/// The result of [`Client::cancel_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelResult {
    pub header: Header,
    /// False when the task was already terminal; it was left as it was.
    pub canceled: bool,
    /// The state the task was in before.
    pub previous_state: TaskState,
}

/// What [`Client::watch_tasks`] watches, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskWatchOptions {
    /// One task (non-zero), or every task of `queue` (0).
    pub task_id: u64,
    /// With `task_id` 0: the queue to watch (empty: every task).
    pub queue: String,
    /// Start with one SNAPSHOT event per watched task (for a queue, those not terminal, at most
    /// 1000) before the changes. Not with `after_sequence`.
    pub initial_state: bool,
    /// Resume an earlier watch (of another process, say): yield only the changes with a greater
    /// sequence. Give that watch's [`TaskEventStream::cursor`] (or the sequence of the last change
    /// it yielded, or its [`TaskEventStream::start_sequence`] when it yielded none). When the
    /// cluster no longer keeps the events after it, the watch starts from the current state
    /// instead, as after a long disconnection (see [`Client::watch_tasks`]). Not with
    /// `initial_state`.
    pub after_sequence: Option<u64>,
}

impl Client {
    /// Submits one task. With an idempotency key already used in the queue within the retention
    /// window, the original task's id is returned with `existing == true`.
    pub async fn submit(&self, spec: TaskSpec) -> Result<SubmitResult> {
        self.submit_traced(spec, None).await
    }

    /// [`Client::submit`] with a W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`), sent as
    /// the `traceparent` metadata: the task keeps it and its agent receives it with every
    /// assignment (`Assignment.traceparent`; the exec agent's command as TRACEPARENT).
    pub async fn submit_traced(
        &self,
        spec: TaskSpec,
        traceparent: Option<&str>,
    ) -> Result<SubmitResult> {
        check_task_spec(&spec)?;
        let traceparent = traceparent_metadata(traceparent)?;
        let request = SubmitRequest {
            request_id: None,
            task: Some(spec),
        };
        check_request_size("task", request.encoded_len())?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                let mut request = tonic::Request::new(request);
                if let Some(value) = &traceparent {
                    request
                        .metadata_mut()
                        .insert(TRACEPARENT_METADATA, value.clone());
                }
                async move { tasks(channel).submit(request).await }
            })
            .await?;
        Ok(submit_result(response))
    }

    /// Submits up to 1000 tasks in one replicated entry: all of them or none.
    pub async fn submit_batch(&self, specs: Vec<TaskSpec>) -> Result<SubmitBatchResult> {
        check_batch(&specs)?;
        let request = SubmitBatchRequest {
            request_id: None,
            tasks: specs,
        };
        check_request_size("batch", request.encoded_len())?;
        let count = request.tasks.len();
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { tasks(channel).submit_batch(request).await }
            })
            .await?;
        if response.results.len() != count {
            // The batch was applied (the call succeeded), so this is not "unavailable": the ids
            // are simply not known.
            return Err(Error::Indeterminate {
                message: format!(
                    "the server answered a batch of {count} with {} results",
                    response.results.len()
                ),
            });
        }
        Ok(SubmitBatchResult {
            header: response.header.into(),
            results: response.results.into_iter().map(submit_result).collect(),
        })
    }

    /// Reads one task linearizably. An unknown id is `Rejected { code: NotFound }`
    /// ([`Error::is_not_found`]).
    pub async fn get_task(&self, task_id: u64) -> Result<TaskRead> {
        self.get_task_with(task_id, ReadConsistency::Linearizable)
            .await
    }

    /// Reads one task with the given consistency.
    pub async fn get_task_with(
        &self,
        task_id: u64,
        consistency: ReadConsistency,
    ) -> Result<TaskRead> {
        check_task_id(task_id)?;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetTaskRequest {
                    task_id,
                    consistency: consistency.into(),
                };
                async move { tasks(channel).get_task(request).await }
            })
            .await?;
        let task = response.task.ok_or_else(|| missing("task"))?;
        Ok(TaskRead {
            header: response.header.into(),
            task,
        })
    }

    /// Reads one page of tasks in id order.
    pub async fn list_tasks(&self, options: TaskListOptions) -> Result<TaskPage> {
        check_page_limit(options.limit)?;
        if !options.queue.is_empty() {
            validate::name("queue", &options.queue)?;
        }
        validate::labels("label filter", &options.labels)?;
        let consistency = options.consistency;
        let request = ListTasksRequest {
            queue: options.queue,
            states: options.states.into_iter().map(i32::from).collect(),
            labels: options.labels,
            parent_id: options.parent_id,
            limit: options.limit,
            after_id: options.after_id,
            consistency: consistency.into(),
            summary: options.summary,
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { tasks(channel).list_tasks(request).await }
            })
            .await?;
        Ok(task_page(response))
    }

    /// Reads every page of a listing, from `options.after_id` on. Pages are each consistent at their
    /// own revision; the listing as a whole is not one snapshot.
    pub async fn list_all_tasks(&self, options: TaskListOptions) -> Result<Vec<Task>> {
        let mut options = options;
        let mut all = Vec::new();
        loop {
            let page = self.list_tasks(options.clone()).await?;
            all.extend(page.tasks);
            if !page.more {
                return Ok(all);
            }
            if page.next_after_id <= options.after_id {
                return Err(Error::Unavailable {
                    message: "the server reported more tasks but listed none".to_string(),
                });
            }
            options.after_id = page.next_after_id;
        }
    }

    /// Waits until the task is terminal or `wait` has passed, and returns it as it is then
    /// (`terminal` says which). Long waits are split into requests of at most five minutes.
    pub async fn wait_task(&self, task_id: u64, wait: Duration) -> Result<WaitResult> {
        check_task_id(task_id)?;
        let until = tokio::time::Instant::now() + wait;
        loop {
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            // 0 would mean the server's default of 30 s.
            let timeout_ms = (remaining.as_millis() as u64).clamp(1, MAX_WAIT_MS);
            let server_wait = Duration::from_millis(timeout_ms);
            let response = self
                .call_with(
                    CallKind::Read(ReadConsistency::Linearizable),
                    CallTimes {
                        server_wait,
                        attempt_limit: None,
                    },
                    |channel| {
                        let request = WaitTaskRequest {
                            task_id,
                            timeout_ms,
                        };
                        async move { tasks(channel).wait_task(request).await }
                    },
                )
                .await?;
            let task = response.task.ok_or_else(|| missing("task"))?;
            let done = response.terminal || is_terminal(task.state());
            if done || tokio::time::Instant::now() >= until {
                return Ok(WaitResult {
                    header: response.header.into(),
                    terminal: done,
                    task,
                });
            }
        }
    }

    /// Cancels a task that is not terminal. An assigned task's lease is revoked and its agent told.
    /// A task that is already terminal is left as it is (`canceled == false`).
    pub async fn cancel_task(&self, task_id: u64, reason: &str) -> Result<CancelResult> {
        check_task_id(task_id)?;
        validate::max_bytes(
            "cancel reason",
            reason.as_bytes(),
            conclave_proto::limits::MAX_LABEL_VALUE_BYTES,
            "MAX_LABEL_VALUE_BYTES",
        )?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CancelTaskRequest {
                    request_id: Some(pending.request_id()),
                    task_id,
                    reason: reason.to_string(),
                };
                async move { tasks(channel).cancel_task(request).await }
            })
            .await?;
        Ok(CancelResult {
            header: response.header.into(),
            canceled: response.canceled,
            previous_state: response.previous_state(),
        })
    }

    /// Reads one page of dead letters (DEAD_LETTERED and EXPIRED tasks) in id order.
    pub async fn list_dead_letters(&self, options: DeadLetterListOptions) -> Result<TaskPage> {
        check_page_limit(options.limit)?;
        if !options.queue.is_empty() {
            validate::name("queue", &options.queue)?;
        }
        let consistency = options.consistency;
        let request = ListDeadLettersRequest {
            queue: options.queue,
            limit: options.limit,
            after_id: options.after_id,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { tasks(channel).list_dead_letters(request).await }
            })
            .await?;
        Ok(task_page(response))
    }

    /// Puts dead letters back in their queues as new (attempts reset, the attempt log kept).
    pub async fn redrive(&self, selector: DeadLetterSelector) -> Result<DeadLetterResult> {
        let (task_ids, queue) = selector_parts(selector)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = RedriveRequest {
                    request_id: Some(pending.request_id()),
                    task_ids: task_ids.clone(),
                    queue: queue.clone(),
                };
                async move { tasks(channel).redrive(request).await }
            })
            .await?;
        Ok(DeadLetterResult {
            header: response.header.into(),
            count: response.count,
        })
    }

    /// Forgets dead letters.
    pub async fn purge(&self, selector: DeadLetterSelector) -> Result<DeadLetterResult> {
        let (task_ids, queue) = selector_parts(selector)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = PurgeRequest {
                    request_id: Some(pending.request_id()),
                    task_ids: task_ids.clone(),
                    queue: queue.clone(),
                };
                async move { tasks(channel).purge(request).await }
            })
            .await?;
        Ok(DeadLetterResult {
            header: response.header.into(),
            count: response.count,
        })
    }

    /// Watches one task or a queue. When this returns, the watch is established on some node at
    /// [`TaskEventStream::start_sequence`]: the stream yields the watched changes with a greater
    /// sequence, in sequence (commit) order, each once.
    ///
    /// The stream survives node failures: it reconnects to another node and resumes after the
    /// sequence of the last change it yielded (sequences are the same on every node), so no change
    /// is skipped and none is repeated, as long as the cluster still keeps the events after it
    /// (its last 100,000 events of all kinds). When it no longer does, the watch starts again from
    /// the current state: one SNAPSHOT event per watched task (for a queue, those not terminal, at
    /// most 1000), then the changes after that state. A SNAPSHOT event after the start therefore
    /// means "changes were skipped; this is the task now". Nodes send a BOOKMARK (consumed here,
    /// not yielded) when a watch has been quiet for a few seconds while other events went by, and
    /// the resume point moves with it, so a quiet watch does not fall behind the kept events just
    /// because the rest of the cluster is busy; only a break longer than the history lasts does.
    ///
    /// SNAPSHOT events carry sequence 0; every other event carries its own. To continue in a later
    /// process, give [`TaskEventStream::cursor`] as [`TaskWatchOptions::after_sequence`].
    pub async fn watch_tasks(&self, options: TaskWatchOptions) -> Result<TaskEventStream> {
        if options.task_id == 0 && !options.queue.is_empty() {
            validate::name("queue", &options.queue)?;
        }
        if options.initial_state && options.after_sequence.is_some() {
            return Err(Error::invalid_input(
                "a watch resumed after a sequence cannot also start with the initial state",
            ));
        }
        let after = options.after_sequence;
        feed::follow(self, TaskFeed { options }, after).await
    }
}

/// The changes of watched tasks, in commit order (see [`Client::watch_tasks`]). Ends after
/// yielding an error: [`Error::Rejected`] when a node refused the watch (an unknown task is
/// NOT_FOUND; a node too old to say where its stream starts is UNIMPLEMENTED),
/// [`Error::Unavailable`] when no node could be reached for the client's deadline.
///
/// [`FeedStream::start_sequence`]: the sequence of the last event its first state reflects (the
/// SNAPSHOT events asked for with `initial_state` show the tasks as of it).
/// [`FeedStream::cursor`]: the sequence of the last change yielded (or the start), or later when
/// a node reported that nothing watched happened since (a BOOKMARK); pass it as
/// [`TaskWatchOptions::after_sequence`] to continue in another process. After the watch had to
/// start again from the current state, it is that state's sequence as soon as the new stream
/// starts, before its SNAPSHOT events are yielded.
pub type TaskEventStream = FeedStream<TaskEvent>;

/// A task watch as a feed: the request for its next stream is a resume after the cursor once
/// there is one, the current state again once the events after it are lost, and before either
/// what the caller asked for.
struct TaskFeed {
    options: TaskWatchOptions,
}

impl FeedSpec for TaskFeed {
    type Message = TaskEvent;
    const WHAT: &'static str = "task watch";
    const STARTED: bool = true;

    fn open(
        &self,
        channel: Channel,
        resume: Resume,
    ) -> BoxFuture<'static, std::result::Result<Messages<TaskEvent>, tonic::Status>> {
        let request = watch_request(&self.options, resume);
        let opening = async move { tasks(channel).watch_tasks(request).await };
        opening.map_ok(|r| r.into_inner().boxed()).boxed()
    }

    fn mark(&self, event: &TaskEvent) -> Mark {
        match event.kind() {
            TaskEventKind::Started => Mark::Started(event.sequence),
            TaskEventKind::Bookmark => Mark::Progress(event.sequence),
            TaskEventKind::Snapshot => Mark::Unordered,
            _ => Mark::Change(event.sequence),
        }
    }

    /// A purged task is gone: the server ends its watch, and so does this one.
    fn ends_after(&self, event: &TaskEvent) -> bool {
        self.options.task_id != 0 && event.kind() == TaskEventKind::Purged
    }

    /// The events after the cursor are gone: start again from the current state.
    fn gone(&self, _node: &Node, _status: &tonic::Status) -> Option<Error> {
        None
    }
}

/// The request for a task watch's next stream (see [`TaskFeed`]).
fn watch_request(options: &TaskWatchOptions, resume: Resume) -> WatchTasksRequest {
    let (initial_state, after_sequence) = match resume {
        Resume::Again => (true, None),
        Resume::After(cursor) => (false, Some(cursor)),
        Resume::Beginning => (options.initial_state, None),
    };
    WatchTasksRequest {
        task_id: options.task_id,
        queue: options.queue.clone(),
        initial_state,
        after_sequence,
    }
}

/// True for the states a task does not leave by itself: SUCCEEDED, DEAD_LETTERED, CANCELED and
/// EXPIRED (the last two of which a redrive can still revive).
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Succeeded | TaskState::DeadLettered | TaskState::Canceled | TaskState::Expired
    )
}

/// A Tasks stub on `channel`, accepting responses up to the client's bound.
pub(crate) fn tasks(channel: Channel) -> TasksClient<Channel> {
    TasksClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Checks a task spec against the limits of tasks.proto.
/// 1 ..= MAX_SUBMIT_BATCH specs, each valid (a batch, or a delegation).
pub(crate) fn check_batch(specs: &[TaskSpec]) -> Result<()> {
    if specs.is_empty() {
        return Err(Error::invalid_input("an empty batch"));
    }
    if specs.len() > MAX_SUBMIT_BATCH {
        return Err(Error::invalid_input(format!(
            "{} tasks in one batch; the limit is {MAX_SUBMIT_BATCH}",
            specs.len()
        )));
    }
    for (index, spec) in specs.iter().enumerate() {
        check_task_spec(spec).map_err(|error| match error {
            Error::InvalidInput { message } => Error::InvalidInput {
                message: format!("task {index} of the batch: {message}"),
            },
            other => other,
        })?;
    }
    Ok(())
}

/// A traceparent checked by the wire rule, as metadata.
fn traceparent_metadata(
    traceparent: Option<&str>,
) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> {
    let Some(traceparent) = traceparent else {
        return Ok(None);
    };
    validate::traceparent("traceparent", traceparent)?;
    let value = traceparent
        .parse()
        .expect("a valid traceparent is printable ASCII");
    Ok(Some(value))
}

pub(crate) fn check_task_spec(spec: &TaskSpec) -> Result<()> {
    validate::name("queue", &spec.queue)?;
    validate::max_bytes(
        "payload",
        &spec.payload,
        MAX_PAYLOAD_BYTES,
        "MAX_PAYLOAD_BYTES",
    )?;
    validate::max_bytes(
        "content type",
        spec.content_type.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    validate::capabilities("capabilities", &spec.capabilities)?;
    validate::priority("priority", spec.priority)?;
    validate::in_range_or_default(
        "max attempts",
        u64::from(spec.max_attempts),
        1,
        u64::from(MAX_ATTEMPTS),
    )?;
    validate::in_range_or_default("lease_ms", spec.lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
    if let Some(backoff) = &spec.backoff {
        validate::in_range("backoff initial_ms", backoff.initial_ms, 0, MAX_BACKOFF_MS)?;
        validate::in_range("backoff maximum_ms", backoff.maximum_ms, 0, MAX_BACKOFF_MS)?;
        if backoff.maximum_ms != 0 && backoff.maximum_ms < backoff.initial_ms {
            return Err(Error::invalid_input(format!(
                "backoff maximum_ms {} is below initial_ms {}",
                backoff.maximum_ms, backoff.initial_ms
            )));
        }
        let multiplier = backoff.multiplier;
        if !(multiplier == 0.0 || (1.0..=MAX_BACKOFF_MULTIPLIER).contains(&multiplier)) {
            return Err(Error::invalid_input(format!(
                "backoff multiplier {multiplier} is outside 1.0 ..= {MAX_BACKOFF_MULTIPLIER}"
            )));
        }
        if !(0.0..=1.0).contains(&backoff.jitter) {
            return Err(Error::invalid_input(format!(
                "backoff jitter {} is outside 0.0 ..= 1.0",
                backoff.jitter
            )));
        }
    }
    validate::id_string("idempotency key", &spec.idempotency_key)?;
    validate::id_string("correlation id", &spec.correlation_id)?;
    validate::labels("labels", &spec.labels)?;
    if let Some(gate) = &spec.requires {
        if gate.decision_id == 0 {
            return Err(Error::invalid_input("requires: decision id 0"));
        }
        validate::short_string("requires option", &gate.option)?;
    }
    Ok(())
}

pub(crate) fn check_request_size(what: &str, encoded_len: usize) -> Result<()> {
    if encoded_len > MAX_REQUEST_BYTES {
        return Err(Error::invalid_input(format!(
            "the {what} is {encoded_len} bytes encoded; the limit is {MAX_REQUEST_BYTES}"
        )));
    }
    Ok(())
}

pub(crate) fn check_task_id(task_id: u64) -> Result<()> {
    if task_id == 0 {
        return Err(Error::invalid_input("task id 0 does not exist"));
    }
    Ok(())
}

pub(crate) fn check_page_limit(limit: u32) -> Result<()> {
    if limit > MAX_TASK_LIST_LIMIT {
        return Err(Error::invalid_input(format!(
            "list limit {limit} is above the maximum page of {MAX_TASK_LIST_LIMIT}"
        )));
    }
    Ok(())
}

fn selector_parts(selector: DeadLetterSelector) -> Result<(Vec<u64>, String)> {
    match selector {
        DeadLetterSelector::Ids(ids) if ids.is_empty() => {
            Err(Error::invalid_input("no task ids given"))
        }
        DeadLetterSelector::Ids(ids) => {
            ids.iter().try_for_each(|id| check_task_id(*id))?;
            Ok((ids, String::new()))
        }
        DeadLetterSelector::Queue(queue) => {
            validate::name("queue", &queue)?;
            Ok((Vec::new(), queue))
        }
    }
}

fn submit_result(response: proto::SubmitResponse) -> SubmitResult {
    SubmitResult {
        header: response.header.into(),
        task_id: response.task_id,
        existing: response.existing,
    }
}

fn task_page(response: proto::ListTasksResponse) -> TaskPage {
    // A node that does not say where the next page starts: after the last task listed.
    let next_after_id = match response.next_after_id {
        0 => response.tasks.last().map_or(0, |task| task.id),
        next => next,
    };
    TaskPage {
        header: response.header.into(),
        tasks: response.tasks,
        more: response.more,
        next_after_id,
    }
}

pub(crate) fn missing(what: &str) -> Error {
    Error::Unavailable {
        message: format!("the server's answer carried no {what}"),
    }
}

served_by_header!(
    proto::SubmitResponse,
    proto::SubmitBatchResponse,
    proto::GetTaskResponse,
    proto::ListTasksResponse,
    proto::WaitTaskResponse,
    proto::CancelTaskResponse,
    proto::DeadLetterResponse,
);

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::v1::{Backoff, DecisionGate};

    fn spec() -> TaskSpec {
        TaskSpec {
            queue: "research".to_string(),
            payload: b"topic".to_vec(),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn specs_are_checked_against_the_limits() {
        assert!(check_task_spec(&spec()).is_ok());
        let cases: Vec<(&str, TaskSpec)> = vec![
            (
                "bad queue",
                TaskSpec {
                    queue: "a b".into(),
                    ..spec()
                },
            ),
            (
                "payload",
                TaskSpec {
                    payload: vec![0; MAX_PAYLOAD_BYTES + 1],
                    ..spec()
                },
            ),
            (
                "priority",
                TaskSpec {
                    priority: 1001,
                    ..spec()
                },
            ),
            (
                "priority",
                TaskSpec {
                    priority: -1001,
                    ..spec()
                },
            ),
            (
                "attempts",
                TaskSpec {
                    max_attempts: 101,
                    ..spec()
                },
            ),
            (
                "lease",
                TaskSpec {
                    lease_ms: 999,
                    ..spec()
                },
            ),
            (
                "lease",
                TaskSpec {
                    lease_ms: MAX_LEASE_MS + 1,
                    ..spec()
                },
            ),
            (
                "backoff",
                TaskSpec {
                    backoff: Some(Backoff {
                        initial_ms: 10,
                        maximum_ms: 5,
                        ..Backoff::default()
                    }),
                    ..spec()
                },
            ),
            (
                "multiplier",
                TaskSpec {
                    backoff: Some(Backoff {
                        multiplier: 0.5,
                        ..Backoff::default()
                    }),
                    ..spec()
                },
            ),
            (
                "jitter",
                TaskSpec {
                    backoff: Some(Backoff {
                        jitter: 1.5,
                        ..Backoff::default()
                    }),
                    ..spec()
                },
            ),
            (
                "idempotency",
                TaskSpec {
                    idempotency_key: "k".repeat(257),
                    ..spec()
                },
            ),
            (
                "gate",
                TaskSpec {
                    requires: Some(DecisionGate {
                        decision_id: 0,
                        option: "yes".into(),
                    }),
                    ..spec()
                },
            ),
        ];
        for (what, spec) in cases {
            assert!(
                matches!(check_task_spec(&spec), Err(Error::InvalidInput { .. })),
                "{what} should be refused"
            );
        }
        let fine = TaskSpec {
            priority: -1000,
            max_attempts: 100,
            lease_ms: 1_000,
            backoff: Some(Backoff {
                initial_ms: 0,
                maximum_ms: 0,
                multiplier: 10.0,
                jitter: 1.0,
            }),
            ..spec()
        };
        assert!(check_task_spec(&fine).is_ok());
    }

    #[tokio::test]
    async fn local_validation_sends_nothing() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        assert!(matches!(
            client.get_task(0).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client.submit_batch(Vec::new()).await,
            Err(Error::InvalidInput { .. })
        ));
        let big = (0..3)
            .map(|_| TaskSpec {
                payload: vec![0; MAX_PAYLOAD_BYTES],
                ..spec()
            })
            .collect();
        assert!(matches!(
            client.submit_batch(big).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client.redrive(DeadLetterSelector::Ids(Vec::new())).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client.purge(DeadLetterSelector::Queue(String::new())).await,
            Err(Error::InvalidInput { .. })
        ));
        let options = TaskListOptions {
            limit: MAX_TASK_LIST_LIMIT + 1,
            ..Default::default()
        };
        assert!(matches!(
            client.list_tasks(options).await,
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn a_watch_resumes_after_its_cursor_and_starts_over_only_when_the_history_is_lost() {
        let queue = |initial_state, after_sequence| TaskWatchOptions {
            task_id: 0,
            queue: "docs".into(),
            initial_state,
            after_sequence,
        };
        // (options, where the stream starts) -> (initial_state, after_sequence) asked for. A
        // watch given `after_sequence` starts after it (the feed's first cursor).
        let cases = [
            (queue(false, None), Resume::Beginning, (false, None)),
            (queue(true, None), Resume::Beginning, (true, None)),
            (queue(false, Some(7)), Resume::After(7), (false, Some(7))),
            (queue(false, Some(0)), Resume::After(0), (false, Some(0))),
            // A reconnect resumes, whatever the first stream asked for: no second snapshot.
            (queue(true, None), Resume::After(42), (false, Some(42))),
            (queue(false, None), Resume::After(0), (false, Some(0))),
            // The events after the cursor are gone: the state again, as SNAPSHOT events.
            (queue(false, None), Resume::Again, (true, None)),
            (queue(false, Some(7)), Resume::Again, (true, None)),
        ];
        for (options, resume, (initial_state, after_sequence)) in cases {
            let request = watch_request(&options, resume);
            assert_eq!(
                (request.initial_state, request.after_sequence),
                (initial_state, after_sequence),
                "{options:?}, {resume:?}"
            );
            assert_eq!(request.queue, "docs");
        }
    }

    #[tokio::test]
    async fn a_resume_cannot_also_ask_for_the_initial_state() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        let options = TaskWatchOptions {
            queue: "docs".into(),
            initial_state: true,
            after_sequence: Some(3),
            ..TaskWatchOptions::default()
        };
        assert!(matches!(
            client.watch_tasks(options).await,
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn terminal_states() {
        assert!(is_terminal(TaskState::Succeeded));
        assert!(is_terminal(TaskState::Expired));
        assert!(!is_terminal(TaskState::RetryWait));
        assert!(!is_terminal(TaskState::Assigned));
    }
}
