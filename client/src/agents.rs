//! Agent calls (agents.proto): registration, the fenced task verbs, votes, closing a session, and
//! the operators' view of the fleet (list, get, drain, undrain). The session stream itself is
//! [`crate::AgentSession`].

use std::collections::HashMap;
use std::time::Duration;

use conclave_proto::limits::{
    MAX_CONCURRENT, MAX_LEASE_MS, MAX_PAYLOAD_BYTES, MAX_SHORT_STRING_BYTES, MAX_TTL_MS,
    MIN_LEASE_MS, MIN_TTL_MS,
};
use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::{
    self as proto, Agent, CloseSessionRequest, CompleteRequest, Decision, DelegateRequest,
    DrainRequest, ExtendLeaseRequest, FailRequest, GetAgentRequest, ListAgentsRequest,
    ReadConsistency, RegisterRequest, ReleaseRequest, ReportProgressRequest, TaskSpec, TaskState,
    VoteRequest,
};
use conclave_proto::validate;
use prost::Message;
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, CallTimes, Client, MAX_RESPONSE_BYTES};
use crate::decisions::check_decision_id;
use crate::error::{Error, Result};
use crate::kv::Header;
use crate::tasks::{check_batch, check_request_size, check_task_id, missing};

/// The shortest attempt of a lease extension (see [`Client::extend_lease`]).
const EXTEND_ATTEMPT_MIN: Duration = Duration::from_millis(250);

/// How an agent registers: who it is, what it can do, and how its session behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// 1 ..= 128 bytes of `[A-Za-z0-9._:/-]`.
    pub name: String,
    /// A task is assigned only to agents that have every capability it asks for.
    pub capabilities: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Most tasks held at once, 1 ..= 1024 (0 means 1).
    pub max_concurrent: u32,
    pub version: String,
    pub metadata: HashMap<String, String>,
    /// Session time-to-live, 1 s ..= 5 min (zero means the server's 10 s). Heartbeats go every
    /// third of it.
    pub ttl: Duration,
    /// Close a live session of the same name instead of failing with ALREADY_EXISTS: what a
    /// restarted agent wants.
    pub replace: bool,
    /// Consecutive failures that open the breaker (0 means 5).
    pub breaker_failures: u32,
    /// How long an open breaker quarantines the agent (zero means 30 s).
    pub breaker_cooldown: Duration,
}

impl AgentConfig {
    /// A config with the server's defaults for everything but the name.
    pub fn new(name: impl Into<String>) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            capabilities: Vec::new(),
            labels: HashMap::new(),
            max_concurrent: 0,
            version: String::new(),
            metadata: HashMap::new(),
            ttl: Duration::ZERO,
            replace: false,
            breaker_failures: 0,
            breaker_cooldown: Duration::ZERO,
        }
    }
}

/// The result of [`Client::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub header: Header,
    pub session_id: u64,
    /// The session's TTL as the server set it.
    pub ttl_ms: u64,
}

/// The result of a task verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbResult {
    pub header: Header,
    /// The task's state after the verb.
    pub state: TaskState,
    /// For extend and progress: the lease's new deadline (cluster time, Unix ms).
    pub lease_deadline_unix_ms: u64,
}

/// How an attempt failed, for [`Client::fail_task`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, at most 4096 bytes.
    pub error: String,
    /// False dead-letters the task at once (reason NOT_RETRYABLE).
    pub retryable: bool,
    /// When retryable: wait at least this long before the retry (overrides a shorter backoff).
    pub retry_after: Duration,
}

/// A progress report, for [`Client::report_progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressReport {
    /// 0 ..= 100.
    pub percent: u32,
    /// At most 1024 bytes.
    pub message: String,
    /// Where the work so far is saved (a key, a URL), at most 1024 bytes; a later attempt receives
    /// it in its assignment.
    pub checkpoint: String,
    /// Also extend the lease by the task's lease_ms.
    pub extend_lease: bool,
}

/// The result of [`Client::vote`].
#[derive(Debug, Clone, PartialEq)]
pub struct VoteResult {
    pub header: Header,
    /// The decision after this vote.
    pub decision: Decision,
}

/// The result of [`Client::close_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseResult {
    pub header: Header,
    /// Leases released because the session closed.
    pub released: u32,
}

/// What [`Client::list_agents`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentListOptions {
    /// Only agents with this capability (empty: all).
    pub capability: String,
    /// Include agents whose session is gone (kept for an hour).
    pub include_gone: bool,
    pub consistency: ReadConsistency,
}

impl Default for AgentListOptions {
    fn default() -> Self {
        AgentListOptions {
            capability: String::new(),
            include_gone: false,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// Agents as read by [`Client::list_agents`], in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentList {
    pub header: Header,
    pub agents: Vec<Agent>,
}

/// One agent as read by [`Client::get_agent`], [`Client::drain`] or [`Client::undrain`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRead {
    pub header: Header,
    pub agent: Agent,
}

impl Client {
    /// Registers an agent and creates its session. A name with a live session is
    /// `Rejected { code: AlreadyExists }` unless `config.replace`. Most agents want
    /// [`crate::AgentSession::register`], which also keeps the session alive.
    pub async fn register(&self, config: &AgentConfig) -> Result<Registration> {
        let request = register_request(config)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { agents(channel).register(request).await }
            })
            .await?;
        Ok(Registration {
            header: response.header.into(),
            session_id: response.session_id,
            ttl_ms: response.ttl_ms,
        })
    }

    /// Ends a session on purpose: its leases are released without counting the attempt, and its
    /// ephemeral keys are deleted.
    pub async fn close_session(&self, session_id: u64) -> Result<CloseResult> {
        check_session_id(session_id)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CloseSessionRequest {
                    request_id: Some(pending.request_id()),
                    session_id,
                };
                async move { agents(channel).close_session(request).await }
            })
            .await?;
        Ok(CloseResult {
            header: response.header.into(),
            released: response.released,
        })
    }

    /// Completes a task with its result (at most 1 MiB). A stale token is [`Error::LeaseLost`].
    pub async fn complete_task(
        &self,
        task_id: u64,
        fencing_token: u64,
        result: Vec<u8>,
    ) -> Result<VerbResult> {
        self.complete_task_with_fence(task_id, fencing_token, result, None)
            .await
    }

    /// Completes a task only while `fence` also names a current grant of a lock, semaphore or
    /// election (the agent's leadership, say). A stale task token is [`Error::LeaseLost`]; a stale
    /// fence is [`Error::LockLost`] (the task's lease is unaffected).
    pub async fn complete_task_fenced(
        &self,
        task_id: u64,
        fencing_token: u64,
        result: Vec<u8>,
        fence: &proto::Fence,
    ) -> Result<VerbResult> {
        self.complete_task_with_fence(task_id, fencing_token, result, Some(fence.clone()))
            .await
    }

    async fn complete_task_with_fence(
        &self,
        task_id: u64,
        fencing_token: u64,
        result: Vec<u8>,
        fence: Option<proto::Fence>,
    ) -> Result<VerbResult> {
        check_verb(task_id, fencing_token)?;
        crate::locks::check_fence(fence.as_ref())?;
        validate::max_bytes("result", &result, MAX_PAYLOAD_BYTES, "MAX_PAYLOAD_BYTES")?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CompleteRequest {
                    request_id: Some(pending.request_id()),
                    task_id,
                    fencing_token,
                    result: result.clone(),
                    fence: fence.clone(),
                };
                async move { agents(channel).complete(request).await }
            })
            .await?;
        Ok(verb_result(response))
    }

    /// Fails an attempt: retried after the backoff when `failure.retryable` and attempts remain,
    /// dead-lettered otherwise. A stale token is [`Error::LeaseLost`].
    pub async fn fail_task(
        &self,
        task_id: u64,
        fencing_token: u64,
        failure: &Failure,
    ) -> Result<VerbResult> {
        check_verb(task_id, fencing_token)?;
        validate::message("error", &failure.error)?;
        let retry_after_ms = failure.retry_after.as_millis() as u64;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = FailRequest {
                    request_id: Some(pending.request_id()),
                    task_id,
                    fencing_token,
                    error: failure.error.clone(),
                    retryable: failure.retryable,
                    retry_after_ms,
                };
                async move { agents(channel).fail(request).await }
            })
            .await?;
        Ok(verb_result(response))
    }

    /// Extends a lease to run `lease` from now (cluster time); zero means the task's lease_ms. A
    /// stale token is [`Error::LeaseLost`].
    ///
    /// An extension is useless once the lease has run out, so with a non-zero `lease` each attempt
    /// gets at most a quarter of it before the client tries again (another node, if this one has
    /// stopped answering): a leader that hangs must not hold the extension past the lease.
    pub async fn extend_lease(
        &self,
        task_id: u64,
        fencing_token: u64,
        lease: Duration,
    ) -> Result<VerbResult> {
        self.extend_lease_within(task_id, fencing_token, lease, lease)
            .await
    }

    /// [`Client::extend_lease`] for a lease of `current` length (zero: unknown).
    pub(crate) async fn extend_lease_within(
        &self,
        task_id: u64,
        fencing_token: u64,
        lease: Duration,
        current: Duration,
    ) -> Result<VerbResult> {
        check_verb(task_id, fencing_token)?;
        let lease_ms = lease.as_millis() as u64;
        validate::in_range_or_default("lease_ms", lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
        let times = CallTimes {
            server_wait: Duration::ZERO,
            attempt_limit: (!current.is_zero()).then(|| (current / 4).max(EXTEND_ATTEMPT_MIN)),
        };
        let pending = self.begin_write();
        let response = self
            .call_with(CallKind::Write, times, |channel| {
                let request = ExtendLeaseRequest {
                    request_id: Some(pending.request_id()),
                    task_id,
                    fencing_token,
                    lease_ms,
                };
                async move { agents(channel).extend_lease(request).await }
            })
            .await?;
        Ok(verb_result(response))
    }

    /// Reports progress (and a checkpoint a later attempt can resume from). A stale token is
    /// [`Error::LeaseLost`].
    pub async fn report_progress(
        &self,
        task_id: u64,
        fencing_token: u64,
        report: &ProgressReport,
    ) -> Result<VerbResult> {
        check_verb(task_id, fencing_token)?;
        if report.percent > 100 {
            return Err(Error::invalid_input(format!(
                "percent is {}; it must be within 0 ..= 100",
                report.percent
            )));
        }
        validate::progress_text("progress message", &report.message)?;
        validate::progress_text("checkpoint", &report.checkpoint)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = ReportProgressRequest {
                    request_id: Some(pending.request_id()),
                    task_id,
                    fencing_token,
                    percent: report.percent,
                    message: report.message.clone(),
                    checkpoint: report.checkpoint.clone(),
                    extend_lease: report.extend_lease,
                };
                async move { agents(channel).report_progress(request).await }
            })
            .await?;
        Ok(verb_result(response))
    }

    /// Gives a task back to its queue without counting the attempt. A stale token is
    /// [`Error::LeaseLost`].
    pub async fn release_task(&self, task_id: u64, fencing_token: u64) -> Result<VerbResult> {
        check_verb(task_id, fencing_token)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = ReleaseRequest {
                    request_id: Some(pending.request_id()),
                    task_id,
                    fencing_token,
                };
                async move { agents(channel).release(request).await }
            })
            .await?;
        Ok(verb_result(response))
    }

    /// Delegates tasks on behalf of the task held under `fencing_token` (a manager-worker tree,
    /// agents.proto `Delegate`): all or none, each a child of `task_id` that lives as long as this
    /// lease (it is canceled when the lease ends) and whose dead letter escalates to
    /// `escalate_to` ("" for the manager). Answers the children's ids in order. A stale token is
    /// [`Error::LeaseLost`]; the children of a task are listed with
    /// [`TaskListOptions::parent_id`](crate::TaskListOptions).
    pub async fn delegate(
        &self,
        task_id: u64,
        fencing_token: u64,
        specs: Vec<TaskSpec>,
        escalate_to: &str,
    ) -> Result<Vec<u64>> {
        check_verb(task_id, fencing_token)?;
        check_batch(&specs)?;
        if !escalate_to.is_empty() {
            validate::capabilities("escalate_to", &[escalate_to.to_string()])?;
        }
        let request = DelegateRequest {
            request_id: None,
            task_id,
            fencing_token,
            tasks: specs,
            escalate_to: escalate_to.to_string(),
        };
        check_request_size("delegation", request.encoded_len())?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { agents(channel).delegate(request).await }
            })
            .await?;
        if response.task_ids.len() != request.tasks.len() {
            return Err(Error::Indeterminate {
                message: format!(
                    "the server answered a delegation of {} with {} ids",
                    request.tasks.len(),
                    response.task_ids.len()
                ),
            });
        }
        Ok(response.task_ids)
    }

    /// Casts the vote of the agent whose live session is `session_id`. A second vote, or a vote
    /// after the outcome is fixed, is `Rejected { code: FailedPrecondition }`; an option that is
    /// not in the decision is `Rejected { code: InvalidArgument }`.
    pub async fn vote(
        &self,
        session_id: u64,
        decision_id: u64,
        choice: &str,
        rationale: &str,
    ) -> Result<VoteResult> {
        check_session_id(session_id)?;
        check_decision_id(decision_id)?;
        validate::short_string("choice", choice)?;
        validate::message("rationale", rationale)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = VoteRequest {
                    request_id: Some(pending.request_id()),
                    session_id,
                    decision_id,
                    choice: choice.to_string(),
                    rationale: rationale.to_string(),
                };
                async move { agents(channel).vote(request).await }
            })
            .await?;
        Ok(VoteResult {
            header: response.header.into(),
            decision: response.decision.ok_or_else(|| missing("decision"))?,
        })
    }

    /// Lists agents in name order.
    pub async fn list_agents(&self, options: AgentListOptions) -> Result<AgentList> {
        if !options.capability.is_empty() {
            validate::short_string("capability", &options.capability)?;
        }
        let consistency = options.consistency;
        let request = ListAgentsRequest {
            capability: options.capability,
            include_gone: options.include_gone,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { agents(channel).list_agents(request).await }
            })
            .await?;
        Ok(AgentList {
            header: response.header.into(),
            agents: response.agents,
        })
    }

    /// Reads one agent linearizably; an unknown name is `Rejected { code: NotFound }`.
    pub async fn get_agent(&self, name: &str) -> Result<AgentRead> {
        validate::name("agent name", name)?;
        let consistency = ReadConsistency::Linearizable;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetAgentRequest {
                    name: name.to_string(),
                    consistency: consistency.into(),
                };
                async move { agents(channel).get_agent(request).await }
            })
            .await?;
        Ok(AgentRead {
            header: response.header.into(),
            agent: response.agent.ok_or_else(|| missing("agent"))?,
        })
    }

    /// Stops new assignments to an agent; its running tasks go on.
    pub async fn drain(&self, name: &str) -> Result<AgentRead> {
        self.set_drained(name, true).await
    }

    /// Lets a drained agent take new work again.
    pub async fn undrain(&self, name: &str) -> Result<AgentRead> {
        self.set_drained(name, false).await
    }

    async fn set_drained(&self, name: &str, drained: bool) -> Result<AgentRead> {
        validate::name("agent name", name)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = DrainRequest {
                    request_id: Some(pending.request_id()),
                    name: name.to_string(),
                };
                async move {
                    let mut stub = agents(channel);
                    if drained {
                        stub.drain(request).await
                    } else {
                        stub.undrain(request).await
                    }
                }
            })
            .await?;
        Ok(AgentRead {
            header: response.header.into(),
            agent: response.agent.ok_or_else(|| missing("agent"))?,
        })
    }
}

/// An Agents stub on `channel`, accepting responses up to the client's bound.
pub(crate) fn agents(channel: Channel) -> AgentsClient<Channel> {
    AgentsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// The register request for `config`, checked against the limits of agents.proto.
fn register_request(config: &AgentConfig) -> Result<RegisterRequest> {
    validate::name("agent name", &config.name)?;
    validate::capabilities("capabilities", &config.capabilities)?;
    validate::labels("labels", &config.labels)?;
    validate::labels("metadata", &config.metadata)?;
    validate::max_bytes(
        "version",
        config.version.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    validate::in_range_or_default(
        "max_concurrent",
        u64::from(config.max_concurrent),
        1,
        u64::from(MAX_CONCURRENT),
    )?;
    let ttl_ms = config.ttl.as_millis() as u64;
    validate::in_range_or_default("ttl_ms", ttl_ms, MIN_TTL_MS, MAX_TTL_MS)?;
    Ok(RegisterRequest {
        request_id: None,
        name: config.name.clone(),
        capabilities: config.capabilities.clone(),
        labels: config.labels.clone(),
        max_concurrent: config.max_concurrent,
        version: config.version.clone(),
        metadata: config.metadata.clone(),
        ttl_ms,
        replace: config.replace,
        breaker_failures: config.breaker_failures,
        breaker_cooldown_ms: config.breaker_cooldown.as_millis() as u64,
    })
}

fn check_verb(task_id: u64, fencing_token: u64) -> Result<()> {
    check_task_id(task_id)?;
    if fencing_token == 0 {
        return Err(Error::invalid_input("fencing token 0 is never issued"));
    }
    Ok(())
}

pub(crate) fn check_session_id(session_id: u64) -> Result<()> {
    if session_id == 0 {
        return Err(Error::invalid_input("session id 0 does not exist"));
    }
    Ok(())
}

fn verb_result(response: proto::TaskVerbResponse) -> VerbResult {
    VerbResult {
        header: response.header.into(),
        state: response.state(),
        lease_deadline_unix_ms: response.lease_deadline_unix_ms,
    }
}

served_by_header!(
    proto::RegisterResponse,
    proto::CloseSessionResponse,
    proto::TaskVerbResponse,
    proto::DelegateResponse,
    proto::VoteResponse,
    proto::ListAgentsResponse,
    proto::GetAgentResponse,
    proto::DrainResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked_against_the_limits() {
        let mut config = AgentConfig::new("writer-1");
        assert!(register_request(&config).is_ok());
        config.ttl = Duration::from_millis(500);
        assert!(register_request(&config).is_err());
        config.ttl = Duration::from_secs(10);
        config.max_concurrent = MAX_CONCURRENT + 1;
        assert!(register_request(&config).is_err());
        config.max_concurrent = 16;
        config.name = "bad name".to_string();
        assert!(register_request(&config).is_err());
    }

    #[tokio::test]
    async fn verbs_check_before_sending() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        assert!(matches!(
            client.complete_task(1, 0, Vec::new()).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client
                .complete_task(1, 1, vec![0; MAX_PAYLOAD_BYTES + 1])
                .await,
            Err(Error::InvalidInput { .. })
        ));
        let report = ProgressReport {
            percent: 101,
            ..ProgressReport::default()
        };
        assert!(matches!(
            client.report_progress(1, 1, &report).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client.vote(1, 1, "", "").await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client.extend_lease(1, 1, Duration::from_millis(10)).await,
            Err(Error::InvalidInput { .. })
        ));
    }
}
