//! Typed async client for a Conclave cluster: key-value calls, watches, cluster operations, tasks,
//! decisions, the agent fleet, [`AgentSession`] for writing agents, and fenced locks, semaphores,
//! leader elections and barriers ([`HeldLock`] keeps a lease-held grant alive).
//!
//! ```no_run
//! # async fn example() -> Result<(), conclave_client::Error> {
//! use conclave_client::{CasAction, Client};
//!
//! let client = Client::connect(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])?;
//! let put = client.put("config/mode", "blue").await?;
//! let swapped = client
//!     .compare_and_swap("config/mode", put.header.revision, CasAction::Put(b"green".to_vec()))
//!     .await?;
//! assert!(swapped.succeeded);
//! # Ok(())
//! # }
//! ```
//!
//! Every call finds the leader by itself (following `conclave-leader` hints and asking nodes for
//! their status), retries within a deadline, and reports failures as [`Error`], which keeps
//! "definitely not applied" ([`Error::Rejected`]) apart from "outcome unknown"
//! ([`Error::Indeterminate`]). Writes carry a request id, so a retry after an unknown outcome is
//! applied at most once.
//!
//! Tasks and agents:
//!
//! ```no_run
//! # async fn example() -> Result<(), conclave_client::Error> {
//! use conclave_client::{AgentConfig, AgentEvent, AgentSession, Client, TaskSpec};
//!
//! let client = Client::connect(["127.0.0.1:7001"])?;
//! let submitted = client
//!     .submit(TaskSpec {
//!         queue: "research".to_string(),
//!         payload: b"quorum systems".to_vec(),
//!         capabilities: vec!["search".to_string()],
//!         ..TaskSpec::default()
//!     })
//!     .await?;
//!
//! let mut config = AgentConfig::new("researcher-1");
//! config.capabilities = vec!["search".to_string()];
//! config.replace = true;
//! let (session, mut events) = AgentSession::register(&client, &config).await?;
//! while let Some(event) = events.recv().await {
//!     if let AgentEvent::Assignment(task) = event {
//!         let result = format!("notes on {}", String::from_utf8_lossy(&task.payload));
//!         match session.complete(task.task_id, task.fencing_token, result.into_bytes()).await {
//!             Ok(_) | Err(conclave_client::Error::LeaseLost { .. }) => {}
//!             Err(error) => return Err(error),
//!         }
//!         if task.task_id == submitted.task_id {
//!             break;
//!         }
//!     }
//! }
//! session.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Locks: take one under a lease, kept alive in the background, and fence writes with its token,
//! so that a holder that lost the lock (paused, cut off, expired) can never write after it. A
//! stale fence or token is [`Error::LockLost`]: definite, nothing applied, never retried.
//!
//! ```no_run
//! # async fn example() -> Result<(), conclave_client::Error> {
//! use std::time::Duration;
//! use conclave_client::{Client, HeldLock};
//!
//! let client = Client::connect(["127.0.0.1:7001"])?;
//! let ttl = Duration::from_secs(10);
//! let wait = Duration::from_secs(30);
//! let Some(lock) = HeldLock::acquire_lock(&client, "reports/daily", ttl, wait).await? else {
//!     return Ok(()); // someone else held it for the whole wait
//! };
//! let fence = lock.fence();
//! tokio::select! {
//!     written = client.put_fenced("reports/daily/status", "done", &fence) => {
//!         written?;
//!     }
//!     loss = lock.lost() => eprintln!("stopped: {loss}"),
//! }
//! lock.release().await?;
//! # Ok(())
//! # }
//! ```

mod agents;
mod barriers;
mod client;
mod cluster;
mod decisions;
mod endpoint;
mod error;
mod feed;
mod kv;
mod locks;
mod request_id;
mod session;
mod stream;
mod tasks;
mod time;
mod topics;
mod transactions;
mod watch;
mod workflows;

pub use agents::{
    AgentConfig, AgentList, AgentListOptions, AgentRead, CloseResult, Failure, ProgressReport,
    Registration, VerbResult, VoteResult,
};
pub use barriers::{BarrierEntry, BarrierOptions, BarrierPage, BarrierRead};
pub use conclave_proto::v1::{PublishMessage, PublishResult};
pub use decisions::{DecisionListOptions, DecisionPage, DecisionRead, DecisionStream};
pub use locks::{
    fence, fence_kind, AcquireOptions, Acquisition, HeldLock, KeptAlive, LeaderRead,
    LockEventStream, LockHolder, LockListOptions, LockLoss, LockPage, LockRead,
};
pub use session::{AgentEvent, AgentEvents, AgentSession};
pub use tasks::{
    is_terminal, CancelResult, DeadLetterListOptions, DeadLetterResult, DeadLetterSelector,
    SubmitBatchResult, SubmitResult, TaskEventStream, TaskListOptions, TaskPage, TaskRead,
    TaskWatchOptions, WaitResult,
};
pub use time::unix_ms_now;
pub use topics::{
    sorted_headers, Delivery, GroupInfo, GroupOptions, PublishMessageExt, Published, Subscription,
    TopicDeadLetter, TopicInfo, TopicMessage, TopicOptions, TopicPage, TopicStart, TopicTrigger,
    TriggerAction,
};
pub use transactions::{CompareFailure, Found, OpOutcome, TransactionBuilder, TransactionResult};

pub use client::{Client, ClientOptions};
pub use cluster::EndpointStatus;
pub use endpoint::normalize_endpoint;
pub use error::{parse_leader_hint, Error, LeaderHint, Result};
pub use feed::FeedStream;
pub use kv::{
    CasAction, CasResult, Compare, DeleteResult, FailedCompare, GetResult, Header, ListAll,
    ListOptions, ListPage, PutOptions, PutResult, TxnOp, TxnResult, MAX_KEY_BYTES, MAX_LIST_LIMIT,
    MAX_REQUEST_BYTES, MAX_TXN_COMPARES, MAX_TXN_OPS, MAX_VALUE_BYTES,
};
pub use watch::{WatchOptions, WatchStream};
pub use workflows::{
    human_millis, is_workflow_terminal, load_definition, parse_definition, parse_millis,
    step_summaries, DefinitionFormat, StartWorkflowOptions, WorkflowChange, WorkflowEventStream,
    WorkflowListOptions, WorkflowPage, WorkflowRead, WorkflowStarted, WorkflowWatchOptions,
};

/// The request limits of the wire contract (queue names, payloads, leases, ...).
pub use conclave_proto::limits;
/// Wire types the client's API exposes, re-exported so callers need not depend on
/// `conclave-proto` for them.
pub use conclave_proto::v1::{
    lock_event, Agent, AgentStatus, Assignment, Attempt, AttemptOutcome, Backoff, Barrier,
    BarrierStatus, BreakerState, DeadLetterReason, Decision, DecisionGate, DecisionRule,
    DecisionSpec, DecisionStatus, Delegation, Electorate, EscalationKind, Event, EventType, Fence,
    FenceKind, Grant, HoldLost, Holder, KeyValue, Lease, Lock, LockEvent, LockKind, Member,
    MembershipResponse, Progress, ReadConsistency, ReplicationProgress, Revocation, Role,
    StatusResponse, Task, TaskEvent, TaskEventKind, TaskSpec, TaskState, Vote, WatchResponse,
    Workflow, WorkflowBranch, WorkflowBranchState, WorkflowDefinition, WorkflowEvent,
    WorkflowEventKind, WorkflowOrigin, WorkflowState, WorkflowStep, WorkflowStepRun,
    WorkflowStepState,
};
/// gRPC status codes, as carried by [`Error::Rejected`].
pub use tonic::Code;
