//! The Barriers service (barriers.proto): validate, write or forward, wait for the barrier to
//! close, convert.

use std::time::Duration;

use conclave_proto::v1 as pb;
use conclave_proto::v1::barriers_client::BarriersClient;
use conclave_proto::v1::barriers_server::Barriers as BarriersApi;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::gateway::{bounded_page, invalid, read_consistency, request_id, Gateway};
use super::status::to_status;
use super::streams::stopped;
use super::validation::{self, name};
use crate::error::Error;
use crate::limits::{
    MAX_BARRIER_PARTIES, MAX_BARRIER_TIMEOUT_MS, MAX_LOCK_WAIT_MS, MAX_REQUEST_BYTES,
};
use crate::node::Consistency;
use crate::state_machine::barriers::{Barrier, BarrierCommand, BarrierResponse, BarrierStatus};
use crate::state_machine::{Command, Response as SmResponse};

pub struct BarriersService {
    gateway: Gateway,
}

impl BarriersService {
    pub fn new(gateway: Gateway) -> Self {
        BarriersService { gateway }
    }
}

fn client(channel: Channel) -> BarriersClient<Channel> {
    BarriersClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

/// (parties, quorum) as the state machine keeps them: quorum 0 means all parties.
fn shape(parties: u32, quorum: u32) -> Result<(u32, u32), Status> {
    if !(1..=MAX_BARRIER_PARTIES).contains(&parties) {
        return Err(invalid(format!(
            "parties: {parties} is outside 1 ..= {MAX_BARRIER_PARTIES} (MAX_BARRIER_PARTIES)"
        )));
    }
    if quorum > parties {
        return Err(invalid(format!(
            "quorum: {quorum} is more than the {parties} parties"
        )));
    }
    Ok((parties, if quorum == 0 { parties } else { quorum }))
}

fn outcome(response: SmResponse) -> Result<(u64, bool), Error> {
    match response {
        SmResponse::Barriers { revision, response } => match response {
            BarrierResponse::Entered { counted } => Ok((revision, counted)),
            BarrierResponse::Mismatch { reason } => Err(Error::FailedPrecondition(reason)),
            BarrierResponse::QuotaExceeded { reason } => Err(Error::ResourceExhausted(reason)),
        },
        other => Err(Error::Fatal(format!(
            "a barrier command was answered {other:?}"
        ))),
    }
}

pub fn barrier_to_pb(barrier: &Barrier) -> pb::Barrier {
    pb::Barrier {
        name: barrier.name.clone(),
        parties: barrier.parties,
        quorum: barrier.quorum,
        status: match barrier.status {
            BarrierStatus::Waiting => pb::BarrierStatus::Waiting,
            BarrierStatus::Released => pb::BarrierStatus::Released,
            BarrierStatus::TimedOut => pb::BarrierStatus::TimedOut,
        } as i32,
        arrived: barrier.arrived.iter().map(|(p, _)| p.clone()).collect(),
        created_ms: barrier.created_ms,
        deadline_ms: barrier.deadline_ms,
        closed_ms: barrier.closed_ms,
    }
}

/// Waits until the barrier is no longer waiting (or forgotten), or `until`; answers it as it is.
async fn wait_closed(gateway: &Gateway, barrier: &str, until: Instant) -> Option<pb::Barrier> {
    let mut events = gateway.node.state.subscribe_events();
    let mut stopping = gateway.stopping.clone();
    loop {
        events.borrow_and_update();
        let current = {
            let state = gateway.node.state.read();
            state.machine.barriers().get(barrier).map(barrier_to_pb)
        };
        let waiting = current
            .as_ref()
            .is_some_and(|b| b.status == pb::BarrierStatus::Waiting as i32);
        if !waiting {
            return current;
        }
        tokio::select! {
            changed = events.changed() => if changed.is_err() { return current },
            () = tokio::time::sleep_until(until) => return current,
            () = stopped(&mut stopping) => return current,
        }
    }
}

#[tonic::async_trait]
impl BarriersApi for BarriersService {
    async fn enter(
        &self,
        request: Request<pb::EnterRequest>,
    ) -> Result<Response<pb::EnterResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        name("name", &req.name)?;
        name("participant", &req.participant)?;
        let (parties, quorum) = shape(req.parties, req.quorum)?;
        if !(1..=MAX_BARRIER_TIMEOUT_MS).contains(&req.timeout_ms) {
            return Err(invalid(format!(
                "timeout_ms: {} is outside 1 ..= {MAX_BARRIER_TIMEOUT_MS} (MAX_BARRIER_TIMEOUT_MS)",
                req.timeout_ms
            )));
        }
        if req.wait_ms > MAX_LOCK_WAIT_MS {
            return Err(invalid(format!(
                "wait_ms: {} exceeds the limit of {MAX_LOCK_WAIT_MS} (MAX_LOCK_WAIT_MS)",
                req.wait_ms
            )));
        }
        let started = Instant::now();
        let command = Command::Barriers(BarrierCommand::Enter {
            name: req.name.clone(),
            participant: req.participant.clone(),
            parties,
            quorum,
            timeout_ms: req.timeout_ms,
        });
        match self
            .gateway
            .write(request_id, command)
            .await
            .and_then(outcome)
        {
            Ok((revision, counted)) => {
                let until = started + Duration::from_millis(req.wait_ms);
                let barrier = wait_closed(&self.gateway, &req.name, until).await;
                Ok(Response::new(pb::EnterResponse {
                    header: self.gateway.header(revision, Consistency::Linearizable),
                    barrier,
                    counted,
                }))
            }
            Err(e) => {
                let wait = Duration::from_millis(req.wait_ms);
                let forward_deadline = self.gateway.node.leader_wait() * 2 + wait;
                self.gateway
                    .forward(e, forwarded, req, |c, mut r| async move {
                        r.set_timeout(forward_deadline);
                        client(c).enter(r).await
                    })
                    .await
            }
        }
    }

    async fn get_barrier(
        &self,
        request: Request<pb::GetBarrierRequest>,
    ) -> Result<Response<pb::GetBarrierResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        name("name", &req.name)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).get_barrier(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let barrier = state.machine.barriers().get(&req.name).ok_or_else(|| {
            to_status(Error::NotFound(format!(
                "barrier {:?} does not exist",
                req.name
            )))
        })?;
        Ok(Response::new(pb::GetBarrierResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            barrier: Some(barrier_to_pb(barrier)),
        }))
    }

    async fn list_barriers(
        &self,
        request: Request<pb::ListBarriersRequest>,
    ) -> Result<Response<pb::ListBarriersResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        validation::optional_name("after", &req.after)?;
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_barriers(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (barriers, more) = state.machine.barriers().list(&req.after, limit);
        let (barriers, more) = bounded_page(barriers.into_iter().map(barrier_to_pb), more);
        Ok(Response::new(pb::ListBarriersResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            barriers,
            more,
        }))
    }
}
