//! The Agents service: registration, the session stream (served by any node), the fenced task
//! verbs, votes, and the operators' view of the fleet. Writes and linearizable reads that reach a
//! follower are forwarded to the leader.

use std::sync::Arc;

use conclave_proto::v1 as pb;
use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::agents_server::Agents;
use conclave_proto::validate;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::gateway::{
    check_request_size, coordination, invalid, read_consistency, request_id,
    unexpected_coordination, Gateway,
};
use super::status::to_status;
use super::streams::{self, EventStream};
use super::validation::{self, fencing_token, non_zero};
use crate::error::Error;
use crate::limits::*;
use crate::node::Consistency;
use crate::state_machine::coordination::{CoordCommand, CoordResponse, TaskId};
use crate::state_machine::{Command, Fence, RequestId};

pub struct AgentsService {
    gateway: Gateway,
    session_slots: Arc<Semaphore>,
}

impl AgentsService {
    pub fn new(gateway: Gateway) -> Self {
        AgentsService {
            gateway,
            session_slots: Arc::new(Semaphore::new(SESSION_STREAMS_MAX)),
        }
    }

    /// A task verb: proposes it and answers the task's state after it, or forwards it.
    async fn verb<Req, F, Fut>(
        &self,
        forwarded: bool,
        (request_id, fence): (RequestId, Option<Fence>),
        command: CoordCommand,
        req: Req,
        forward: F,
    ) -> Result<Response<pb::TaskVerbResponse>, Status>
    where
        F: FnOnce(AgentsClient<Channel>, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<pb::TaskVerbResponse>, Status>>,
    {
        self.gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, fence, Command::Coordination(command)),
                coordination(|revision, response| match response {
                    CoordResponse::Verb {
                        state,
                        lease_deadline_ms,
                    } => Ok(Response::new(pb::TaskVerbResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                        state: convert::task_state(state) as i32,
                        lease_deadline_unix_ms: lease_deadline_ms,
                    })),
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| forward(client(c), r),
            )
            .await
    }

    /// The lease an extension asks for: as given, or (0) the task's own lease_ms. A task this
    /// node does not know may be one it has not applied yet: the leader decides.
    async fn lease_ms(&self, task_id: TaskId, lease_ms: u64) -> Result<u64, Error> {
        if lease_ms != 0 {
            validate::in_range("lease_ms", lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)
                .map_err(|e| Error::InvalidArgument(e.into()))?;
            return Ok(lease_ms);
        }
        let known = |gateway: &Gateway| {
            let state = gateway.node.state.read();
            state.machine.tasks().task(task_id).map(|t| t.spec.lease_ms)
        };
        if let Some(lease_ms) = known(&self.gateway) {
            return Ok(lease_ms);
        }
        self.gateway.linearize(Consistency::Linearizable).await?;
        known(&self.gateway).ok_or_else(|| Error::unknown_task(task_id))
    }

    fn agent_reply(&self, name: &str, revision: u64) -> Result<pb::DrainResponse, Status> {
        let state = self.gateway.node.state.read();
        let agent = state
            .machine
            .agents()
            .agent(name)
            .ok_or_else(|| to_status(Error::unknown_agent(name)))?;
        Ok(pb::DrainResponse {
            header: self.gateway.header(revision, Consistency::Linearizable),
            agent: Some(convert::agent(agent)),
        })
    }

    async fn set_drained(
        &self,
        request: Request<pb::DrainRequest>,
        drained: bool,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        validation::name("name", &req.name)?;
        let name = req.name.clone();
        let command = Command::Coordination(CoordCommand::SetDrained {
            name: name.clone(),
            drained,
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Ok => Ok(Response::new(self.agent_reply(&name, revision)?)),
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move {
                    if drained {
                        client(c).drain(r).await
                    } else {
                        client(c).undrain(r).await
                    }
                },
            )
            .await
    }
}

/// The generated client, for forwarding, with the same message bounds as the server.
pub fn client(channel: Channel) -> AgentsClient<Channel> {
    AgentsClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

#[tonic::async_trait]
impl Agents for AgentsService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let spec = validation::agent_spec(&req)?;
        let command = Command::Coordination(CoordCommand::RegisterAgent(spec));
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Registered {
                        session_id, ttl_ms, ..
                    } => Ok(Response::new(pb::RegisterResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                        session_id,
                        ttl_ms,
                    })),
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).register(r).await },
            )
            .await
    }

    type SessionStream = EventStream<pb::SessionEvent>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let permit = self.session_slots.clone().try_acquire_owned().map_err(|_| {
            to_status(Error::ResourceExhausted(format!(
                "this node already serves {SESSION_STREAMS_MAX} session streams (SESSION_STREAMS_MAX); connect to another node"
            )))
        })?;
        let stream = streams::session(&self.gateway, permit, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("session_id", req.session_id)?;
        let command = Command::Coordination(CoordCommand::CloseSession {
            session_id: req.session_id,
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Closed { released } => {
                        Ok(Response::new(pb::CloseSessionResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            released,
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).close_session(r).await },
            )
            .await
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::TaskVerbResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        let token = fencing_token(req.fencing_token)?;
        validation::max_bytes(
            "result",
            &req.result,
            MAX_PAYLOAD_BYTES,
            "MAX_PAYLOAD_BYTES",
        )?;
        let fence = validation::fence(req.fence.as_ref())?;
        let command = CoordCommand::Complete {
            task_id: req.task_id,
            token,
            result: req.result.clone(),
        };
        self.verb(
            forwarded,
            (request_id, fence),
            command,
            req,
            |mut c, r| async move { c.complete(r).await },
        )
        .await
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::TaskVerbResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        let token = fencing_token(req.fencing_token)?;
        validation::message("error", &req.error)?;
        if req.retry_after_ms > MAX_BACKOFF_MS {
            return Err(invalid(format!(
                "retry_after_ms: {} exceeds the limit of {MAX_BACKOFF_MS} (MAX_BACKOFF_MS)",
                req.retry_after_ms
            )));
        }
        let command = CoordCommand::Fail {
            task_id: req.task_id,
            token,
            error: req.error.clone(),
            retryable: req.retryable,
            retry_after_ms: req.retry_after_ms,
        };
        self.verb(
            forwarded,
            (request_id, None),
            command,
            req,
            |mut c, r| async move { c.fail(r).await },
        )
        .await
    }

    async fn extend_lease(
        &self,
        request: Request<pb::ExtendLeaseRequest>,
    ) -> Result<Response<pb::TaskVerbResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        let token = fencing_token(req.fencing_token)?;
        let lease_ms = match self.lease_ms(req.task_id, req.lease_ms).await {
            Ok(lease_ms) => lease_ms,
            Err(e) => {
                return self
                    .gateway
                    .forward(e, forwarded, req, |c, r| async move {
                        client(c).extend_lease(r).await
                    })
                    .await
            }
        };
        let command = CoordCommand::ExtendLease {
            task_id: req.task_id,
            token,
            lease_ms,
        };
        self.verb(
            forwarded,
            (request_id, None),
            command,
            req,
            |mut c, r| async move { c.extend_lease(r).await },
        )
        .await
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::TaskVerbResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        let token = fencing_token(req.fencing_token)?;
        if req.percent > 100 {
            return Err(invalid(format!(
                "percent: {} is outside the allowed range 0 ..= 100",
                req.percent
            )));
        }
        validation::progress_text("message", &req.message)?;
        validation::progress_text("checkpoint", &req.checkpoint)?;
        let command = CoordCommand::Progress {
            task_id: req.task_id,
            token,
            percent: req.percent,
            message: req.message.clone(),
            checkpoint: req.checkpoint.clone(),
            extend_lease: req.extend_lease,
        };
        self.verb(
            forwarded,
            (request_id, None),
            command,
            req,
            |mut c, r| async move { c.report_progress(r).await },
        )
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::TaskVerbResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        let token = fencing_token(req.fencing_token)?;
        let command = CoordCommand::Release {
            task_id: req.task_id,
            token,
        };
        self.verb(
            forwarded,
            (request_id, None),
            command,
            req,
            |mut c, r| async move { c.release(r).await },
        )
        .await
    }

    async fn delegate(
        &self,
        request: Request<pb::DelegateRequest>,
    ) -> Result<Response<pb::DelegateResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        let token = fencing_token(req.fencing_token)?;
        let command = CoordCommand::Delegate {
            parent: req.task_id,
            token,
            tasks: validation::task_specs(&req.tasks)?,
            escalate_to: validation::escalate_to(&req.escalate_to)?,
        };
        self.gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, None, Command::Coordination(command)),
                coordination(|revision, response| match response {
                    CoordResponse::Submitted { results } => {
                        Ok(Response::new(pb::DelegateResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            task_ids: results.into_iter().map(|(task_id, _)| task_id).collect(),
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).delegate(r).await },
            )
            .await
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("session_id", req.session_id)?;
        non_zero("decision_id", req.decision_id)?;
        validation::rule(validate::short_string("choice", &req.choice))?;
        validation::message("rationale", &req.rationale)?;
        let command = Command::Coordination(CoordCommand::Vote {
            session_id: req.session_id,
            decision_id: req.decision_id,
            choice: req.choice.clone(),
            rationale: req.rationale.clone(),
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Voted { decision_id } => {
                        let state = self.gateway.node.state.read();
                        Ok(Response::new(pb::VoteResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            decision: state
                                .machine
                                .decisions()
                                .decision(decision_id)
                                .map(convert::decision),
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).vote(r).await },
            )
            .await
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        validation::max_bytes(
            "capability",
            req.capability.as_bytes(),
            MAX_SHORT_STRING_BYTES,
            "MAX_SHORT_STRING_BYTES",
        )?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_agents(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let agents = state
            .machine
            .agents()
            .iter()
            .filter(|a| req.include_gone || a.live)
            .filter(|a| req.capability.is_empty() || a.spec.capabilities.contains(&req.capability))
            .map(convert::agent)
            .collect();
        let response = pb::ListAgentsResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            agents,
        };
        let bytes = prost::Message::encoded_len(&response);
        if bytes > AGENT_LIST_BYTES_MAX {
            return Err(to_status(Error::ResourceExhausted(format!(
                "the agent list is {bytes} bytes, more than {AGENT_LIST_BYTES_MAX} (AGENT_LIST_BYTES_MAX); filter by capability"
            ))));
        }
        Ok(Response::new(response))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        validation::name("name", &req.name)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).get_agent(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let agent = state
            .machine
            .agents()
            .agent(&req.name)
            .ok_or_else(|| to_status(Error::unknown_agent(&req.name)))?;
        Ok(Response::new(pb::GetAgentResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            agent: Some(convert::agent(agent)),
        }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        self.set_drained(request, true).await
    }

    async fn undrain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        self.set_drained(request, false).await
    }
}
