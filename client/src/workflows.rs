//! Workflows (workflows.proto): definition files read into the wire's `WorkflowDefinition` and
//! checked by the rules the node applies, and the calls: start, get, list, cancel, retry, watch
//! (resumable by event sequence) and wait until a workflow is terminal.

mod definition;

use std::time::Duration;

use conclave_proto::limits::{MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES};
use conclave_proto::v1::workflows_client::WorkflowsClient;
use conclave_proto::v1::{
    self as proto, CancelWorkflowRequest, GetWorkflowRequest, ListWorkflowsRequest,
    ReadConsistency, RetryWorkflowRequest, StartWorkflowRequest, WatchWorkflowsRequest, Workflow,
    WorkflowDefinition, WorkflowEvent, WorkflowEventKind, WorkflowState,
};
use conclave_proto::validate;
use futures::future::BoxFuture;
use futures::stream::StreamExt;
use futures::{FutureExt, TryFutureExt};
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

use crate::client::{served_by_header, CallKind, Client, MAX_RESPONSE_BYTES};
use crate::endpoint::Node;
use crate::error::{Error, Result};
use crate::feed::{self, FeedSpec, FeedStream, Mark, Messages, Resume};
use crate::kv::Header;

pub use definition::{
    human_millis, load_definition, parse_definition, parse_millis, step_summaries, DefinitionFormat,
};

/// How [`Client::start_workflow`] starts an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartWorkflowOptions {
    /// The input, JSON (empty: null), put into every step payload as "input".
    pub input_json: String,
    /// Optional: a second Start with the same key, while the first instance is kept, answers that
    /// instance (`existed`) and starts nothing.
    pub idempotency_key: String,
    /// Optional: this instance's deadline from its start, instead of the definition's.
    pub deadline: Option<Duration>,
}

/// The result of [`Client::start_workflow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowStarted {
    pub header: Header,
    pub workflow_id: u64,
    /// True when the idempotency key matched a kept instance, whose id this is.
    pub existed: bool,
}

/// One workflow as read.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRead {
    pub header: Header,
    pub workflow: Workflow,
}

/// What [`Client::list_workflows`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowListOptions {
    /// Only these states (empty: all).
    pub states: Vec<WorkflowState>,
    /// Only this definition name (empty: all).
    pub name: String,
    /// Start after this id (0: from the first).
    pub after_id: u64,
    /// 1 ..= 1000; 0 means 100.
    pub limit: u32,
    pub consistency: ReadConsistency,
}

/// One page of workflows, in id order, without inputs and results.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowPage {
    pub header: Header,
    pub workflows: Vec<Workflow>,
    /// True when more may follow: continue with `after_id` = `next_after_id`.
    pub more: bool,
    pub next_after_id: u64,
}

/// The result of [`Client::cancel_workflow`] and [`Client::retry_workflow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowChange {
    pub header: Header,
    /// For a cancel: false when the workflow was already compensating or finished. True for a
    /// retry.
    pub changed: bool,
    /// Its state after the call.
    pub state: WorkflowState,
}

/// What [`Client::watch_workflows`] watches, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowWatchOptions {
    /// One workflow (non-zero), or every workflow (0).
    pub workflow_id: u64,
    /// Resume an earlier watch: yield only the changes with a greater sequence (give that watch's
    /// [`WorkflowEventStream::cursor`]).
    pub after_sequence: Option<u64>,
}

/// True for SUCCEEDED, FAILED, CANCELED and TIMED_OUT (a FAILED or TIMED_OUT workflow may still be
/// retried).
pub fn is_workflow_terminal(state: WorkflowState) -> bool {
    matches!(
        state,
        WorkflowState::Succeeded
            | WorkflowState::Failed
            | WorkflowState::Canceled
            | WorkflowState::TimedOut
    )
}

impl Client {
    /// Starts an instance of `definition` (checked locally by the rules the node applies). A
    /// retry after an unknown outcome carries the same request id, so it starts one instance.
    pub async fn start_workflow(
        &self,
        definition: WorkflowDefinition,
        options: StartWorkflowOptions,
    ) -> Result<WorkflowStarted> {
        validate::workflow::definition(&definition)?;
        validate::workflow::input_json("input", &options.input_json)?;
        validate::id_string("idempotency key", &options.idempotency_key)?;
        let request = StartWorkflowRequest {
            request_id: None,
            definition: Some(definition),
            input_json: options.input_json,
            idempotency_key: options.idempotency_key,
            deadline_ms: options.deadline.map_or(0, |d| d.as_millis() as u64),
        };
        if request.encoded_len() > MAX_REQUEST_BYTES {
            return Err(Error::invalid_input(format!(
                "the workflow start is {} bytes encoded; the limit is {MAX_REQUEST_BYTES}",
                request.encoded_len()
            )));
        }
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { workflows(channel).start(request).await }
            })
            .await?;
        Ok(WorkflowStarted {
            header: response.header.into(),
            workflow_id: response.workflow_id,
            existed: response.existed,
        })
    }

    /// Reads one workflow linearizably, with its steps, branches and results; an unknown (or
    /// forgotten) one is `Rejected { code: NotFound }`.
    pub async fn get_workflow(&self, workflow_id: u64) -> Result<WorkflowRead> {
        check_workflow_id(workflow_id)?;
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetWorkflowRequest {
                    workflow_id,
                    consistency: consistency.into(),
                };
                async move { workflows(channel).get(request).await }
            })
            .await?;
        Ok(WorkflowRead {
            header: response.header.into(),
            workflow: response.workflow.ok_or_else(|| Error::Unavailable {
                message: "the server's answer lacks its workflow".to_string(),
            })?,
        })
    }

    /// Reads one page of workflows in id order.
    pub async fn list_workflows(&self, options: WorkflowListOptions) -> Result<WorkflowPage> {
        if !options.name.is_empty() {
            validate::name("name", &options.name)?;
        }
        let consistency = options.consistency;
        let request = ListWorkflowsRequest {
            states: options.states.iter().map(|&s| s as i32).collect(),
            name: options.name,
            after_id: options.after_id,
            limit: options.limit,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { workflows(channel).list(request).await }
            })
            .await?;
        Ok(WorkflowPage {
            header: response.header.into(),
            workflows: response.workflows,
            more: response.more,
            next_after_id: response.next_after_id,
        })
    }

    /// Cancels a RUNNING or WAITING workflow: its running tasks are canceled, the compensations of
    /// its succeeded steps run. One already compensating or finished is left as it is
    /// (`changed == false`).
    pub async fn cancel_workflow(&self, workflow_id: u64, reason: &str) -> Result<WorkflowChange> {
        check_workflow_id(workflow_id)?;
        validate::max_bytes(
            "reason",
            reason.as_bytes(),
            MAX_MESSAGE_BYTES,
            "MAX_MESSAGE_BYTES",
        )?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CancelWorkflowRequest {
                    request_id: Some(pending.request_id()),
                    workflow_id,
                    reason: reason.to_string(),
                };
                async move { workflows(channel).cancel(request).await }
            })
            .await?;
        Ok(WorkflowChange {
            header: response.header.into(),
            changed: response.canceled,
            state: response.state(),
        })
    }

    /// Runs a FAILED or TIMED_OUT workflow again from its failed steps; another state is
    /// `Rejected { code: FailedPrecondition }`.
    pub async fn retry_workflow(&self, workflow_id: u64) -> Result<WorkflowChange> {
        check_workflow_id(workflow_id)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = RetryWorkflowRequest {
                    request_id: Some(pending.request_id()),
                    workflow_id,
                };
                async move { workflows(channel).retry(request).await }
            })
            .await?;
        Ok(WorkflowChange {
            header: response.header.into(),
            changed: true,
            state: response.state(),
        })
    }

    /// Watches one workflow or every workflow. When this returns, the watch is established at
    /// [`WorkflowEventStream::start_sequence`]: the stream yields the watched changes with a
    /// greater sequence, in commit order, each once. It survives node failures: it reconnects to
    /// another node and resumes after the last change it yielded (or the last BOOKMARK), with no
    /// gap and no repeat, as long as the cluster keeps the events after it; when it does not, the
    /// stream ends with `Rejected { code: OutOfRange }` (read the workflow and watch again).
    pub async fn watch_workflows(
        &self,
        options: WorkflowWatchOptions,
    ) -> Result<WorkflowEventStream> {
        let source = WorkflowFeed {
            workflow_id: options.workflow_id,
        };
        feed::follow(self, source, options.after_sequence).await
    }

    /// Waits until the workflow is terminal and answers it as read then (with its results). The
    /// watch opens before the first read, so no change between them is missed; a watch that can
    /// no longer resume opens again.
    pub async fn wait_workflow(&self, workflow_id: u64) -> Result<Workflow> {
        check_workflow_id(workflow_id)?;
        'watch: loop {
            let mut events = self
                .watch_workflows(WorkflowWatchOptions {
                    workflow_id,
                    after_sequence: None,
                })
                .await?;
            loop {
                let read = self.get_workflow(workflow_id).await?;
                if is_workflow_terminal(read.workflow.state()) {
                    return Ok(read.workflow);
                }
                loop {
                    match events.next().await {
                        Some(Ok(event)) if is_workflow_terminal(event.state()) => break,
                        Some(Ok(_)) => {}
                        Some(Err(Error::Rejected {
                            code: Code::OutOfRange,
                            ..
                        })) => continue 'watch,
                        Some(Err(error)) => return Err(error),
                        None => continue 'watch,
                    }
                }
            }
        }
    }
}

fn check_workflow_id(workflow_id: u64) -> Result<()> {
    if workflow_id == 0 {
        return Err(Error::invalid_input("workflow id 0 names no workflow"));
    }
    Ok(())
}

/// The changes of watched workflows, in commit order (see [`Client::watch_workflows`]).
/// [`FeedStream::start_sequence`] is where the watch started (the changes it yields have greater
/// sequences), [`FeedStream::cursor`] where it would resume now (give it as
/// [`WorkflowWatchOptions::after_sequence`]).
pub type WorkflowEventStream = FeedStream<WorkflowEvent>;

/// A workflow watch as a feed: like the task watch's, without snapshots; a lost resume point ends
/// it (read the workflow and watch again).
struct WorkflowFeed {
    workflow_id: u64,
}

impl FeedSpec for WorkflowFeed {
    type Message = WorkflowEvent;
    const WHAT: &'static str = "workflow watch";
    const STARTED: bool = true;

    fn open(
        &self,
        channel: Channel,
        resume: Resume,
    ) -> BoxFuture<'static, std::result::Result<Messages<WorkflowEvent>, tonic::Status>> {
        let request = WatchWorkflowsRequest {
            workflow_id: self.workflow_id,
            after_sequence: match resume {
                Resume::After(cursor) => Some(cursor),
                Resume::Beginning | Resume::Again => None,
            },
        };
        let opening = async move { workflows(channel).watch(request).await };
        opening.map_ok(|r| r.into_inner().boxed()).boxed()
    }

    fn mark(&self, event: &WorkflowEvent) -> Mark {
        match event.kind() {
            WorkflowEventKind::Started => Mark::Started(event.sequence),
            WorkflowEventKind::Bookmark => Mark::Progress(event.sequence),
            _ => Mark::Change(event.sequence),
        }
    }

    fn gone(&self, node: &Node, status: &tonic::Status) -> Option<Error> {
        Some(feed::rejected(node, status))
    }
}

/// A Workflows stub on `channel`, accepting responses up to the client's bound.
fn workflows(channel: Channel) -> WorkflowsClient<Channel> {
    WorkflowsClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

served_by_header!(
    proto::StartWorkflowResponse,
    proto::GetWorkflowResponse,
    proto::ListWorkflowsResponse,
    proto::CancelWorkflowResponse,
    proto::RetryWorkflowResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workflow_calls_check_locally() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        let invalid = |result: Result<WorkflowRead>| match result {
            Err(Error::InvalidInput { message }) => message,
            other => panic!("expected invalid input, got {other:?}"),
        };
        assert!(invalid(client.get_workflow(0).await).contains("workflow id 0"));
        let started = client
            .start_workflow(
                WorkflowDefinition::default(),
                StartWorkflowOptions::default(),
            )
            .await;
        assert!(
            matches!(started, Err(Error::InvalidInput { .. })),
            "{started:?}"
        );
    }
}
