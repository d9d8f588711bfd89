//! The Decisions service: propose (through the leader), read (linearizable unless asked
//! otherwise), and watch a decision until its outcome (any node).

use conclave_proto::v1 as pb;
use conclave_proto::v1::decisions_client::DecisionsClient;
use conclave_proto::v1::decisions_server::Decisions;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert;
use super::gateway::{
    bounded_page, check_request_size, coordination, read_consistency, request_id,
    unexpected_coordination, Gateway,
};
use super::status::to_status;
use super::streams::{self, EventStream};
use super::validation::{self, non_zero};
use crate::error::Error;
use crate::limits::MAX_REQUEST_BYTES;
use crate::node::{wall_clock_ms, Consistency};
use crate::state_machine::coordination::{CoordCommand, CoordResponse};
use crate::state_machine::Command;

pub struct DecisionsService {
    gateway: Gateway,
}

impl DecisionsService {
    pub fn new(gateway: Gateway) -> Self {
        DecisionsService { gateway }
    }
}

/// The generated client, for forwarding, with the same message bounds as the server.
pub fn client(channel: Channel) -> DecisionsClient<Channel> {
    DecisionsClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

#[tonic::async_trait]
impl Decisions for DecisionsService {
    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        // The default deadline and its bound are taken from this node's clock; the leader's
        // stamp on the entry may differ by the clock skew between them, and cluster time may be
        // ahead of both: a deadline cluster time has reached is refused at apply.
        let spec = validation::decision_spec(req.decision.as_ref(), wall_clock_ms())?;
        let command = Command::Coordination(CoordCommand::Propose(spec));
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Proposed { decision_id } => {
                        let state = self.gateway.node.state.read();
                        Ok(Response::new(pb::ProposeResponse {
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
                |c, r| async move { client(c).propose(r).await },
            )
            .await
    }

    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::GetDecisionResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        non_zero("decision_id", req.decision_id)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).get_decision(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let decision = state
            .machine
            .decisions()
            .decision(req.decision_id)
            .ok_or_else(|| to_status(Error::unknown_decision(req.decision_id)))?;
        Ok(Response::new(pb::GetDecisionResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            decision: Some(convert::decision(decision)),
        }))
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let statuses = validation::decision_statuses(&req.statuses)?;
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_decisions(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (decisions, more) =
            state
                .machine
                .decisions()
                .list_decisions(&statuses, req.after_id, limit);
        let (decisions, more) = bounded_page(decisions.into_iter().map(convert::decision), more);
        Ok(Response::new(pb::ListDecisionsResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            decisions,
            more,
        }))
    }

    type WatchDecisionStream = EventStream<pb::DecisionEvent>;

    async fn watch_decision(
        &self,
        request: Request<pb::WatchDecisionRequest>,
    ) -> Result<Response<Self::WatchDecisionStream>, Status> {
        let req = request.into_inner();
        non_zero("decision_id", req.decision_id)?;
        let stream = streams::watch_decision(&self.gateway, req.decision_id).await?;
        Ok(Response::new(stream))
    }
}
