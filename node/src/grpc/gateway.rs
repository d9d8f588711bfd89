//! What every coordination handler shares: the in-flight write bound, waiting for a leader,
//! forwarding to it, linearizable reads, the stream bounds and the response header.

use std::future::Future;
use std::sync::Arc;

use conclave_proto::v1 as pb;
use prost::Message;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert;
use super::forward::{check_forwarder, is_forwarded, until_leader, Forwarder};
use super::status::to_status;
use crate::error::Error;
use crate::limits::{MAX_INFLIGHT_WRITES, MAX_REQUEST_BYTES, WATCH_STREAMS_MAX};
use crate::node::{Consistency, Node};
use crate::state_machine::{Command, CoordResponse, Fence, RequestId, Response as SmResponse};

/// Shared by the Tasks, Agents and Decisions services of one node.
#[derive(Clone)]
pub struct Gateway {
    pub node: Arc<Node>,
    pub forwarder: Forwarder,
    write_slots: Arc<Semaphore>,
    /// Task and decision watches and waiting WaitTask calls (WATCH_STREAMS_MAX).
    watch_slots: Arc<Semaphore>,
    /// Becomes true when the node stops; open streams end then.
    pub stopping: watch::Receiver<bool>,
}

impl Gateway {
    pub fn new(
        node: Arc<Node>,
        forwarder: Forwarder,
        write_slots: Arc<Semaphore>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Gateway {
            node,
            forwarder,
            write_slots,
            watch_slots: Arc::new(Semaphore::new(WATCH_STREAMS_MAX)),
            stopping,
        }
    }

    /// Unwraps a request after the checks every handler shares: whether another node forwarded
    /// it, and if so whether that node is still a member.
    pub fn accept<T>(&self, request: Request<T>) -> Result<(bool, T), Status> {
        let forwarded = is_forwarded(&request);
        check_forwarder(&self.node, &request).map_err(to_status)?;
        Ok((forwarded, request.into_inner()))
    }

    /// Proposes a write here if this node leads; otherwise hands back the leader to forward to.
    pub async fn write(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<SmResponse, Error> {
        self.write_fenced(request_id, None, command).await
    }

    /// `write`, applied only while `fence` holds.
    pub async fn write_fenced(
        &self,
        request_id: RequestId,
        fence: Option<Fence>,
        command: Command,
    ) -> Result<SmResponse, Error> {
        let _slot = self.write_slots.try_acquire().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this node already has {MAX_INFLIGHT_WRITES} writes in flight (MAX_INFLIGHT_WRITES); retry later"
            ))
        })?;
        let node = &self.node;
        until_leader(node, || {
            node.write_fenced(request_id, fence.clone(), command.clone())
        })
        .await
    }

    /// Makes local reads linearizable (Raft ReadIndex), or hands back the leader to forward to.
    /// A read that asked for SERIALIZABLE, and the test-only stale-reads mode, skip it.
    pub async fn linearize(&self, consistency: Consistency) -> Result<(), Error> {
        if consistency == Consistency::Serializable
            || self.node.config.unsafe_test_mode == crate::config::UnsafeTestMode::StaleReads
        {
            return Ok(());
        }
        let node = &self.node;
        until_leader(node, || node.linearize()).await
    }

    /// Forwards the request to the leader named in `error`, once; see `Forwarder::forward`.
    pub async fn forward<Req, Resp, F, Fut>(
        &self,
        error: Error,
        forwarded: bool,
        request: Req,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.forwarder
            .forward(&self.node, error, forwarded, request, call)
            .await
    }

    /// Proposes a coordination write and answers with `answer(revision, response)`; on a node
    /// that does not lead, forwards the request to the leader (once) with `call` instead.
    #[allow(clippy::too_many_arguments)] // each is one part of the one shape every write handler has
    pub async fn write_or_forward<Req, Resp, A, F, Fut>(
        &self,
        forwarded: bool,
        request: Req,
        request_id: RequestId,
        command: Command,
        answer: A,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        A: FnOnce(u64, CoordResponse) -> Result<Response<Resp>, Status>,
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let write = (request_id, None, command);
        self.write_or_forward_fenced(forwarded, request, write, answer, call)
            .await
    }

    /// `write_or_forward` of a (request id, fence, command) write.
    pub async fn write_or_forward_fenced<Req, Resp, A, F, Fut>(
        &self,
        forwarded: bool,
        request: Req,
        (request_id, fence, command): (RequestId, Option<Fence>, Command),
        answer: A,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        A: FnOnce(u64, CoordResponse) -> Result<Response<Resp>, Status>,
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let written = self.write_fenced(request_id, fence, command).await;
        match written.and_then(coordination) {
            Ok((revision, response)) => answer(revision, response),
            Err(e) => self.forward(e, forwarded, request, call).await,
        }
    }

    /// A slot for one more watch or wait on this node, held until it ends.
    pub fn watch_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.watch_slots.clone().try_acquire_owned().map_err(|_| {
            to_status(Error::ResourceExhausted(format!(
                "this node already serves {WATCH_STREAMS_MAX} task and decision watches and waits (WATCH_STREAMS_MAX)"
            )))
        })
    }

    pub fn header(&self, revision: u64, consistency: Consistency) -> Option<pb::ResponseHeader> {
        Some(header(
            self.node.id,
            self.node.term(),
            revision,
            consistency,
        ))
    }
}

pub fn header(
    node_id: u64,
    raft_term: u64,
    revision: u64,
    consistency: Consistency,
) -> pb::ResponseHeader {
    pb::ResponseHeader {
        revision,
        node_id,
        raft_term,
        consistency: match consistency {
            Consistency::Linearizable => pb::ReadConsistency::Linearizable,
            Consistency::Serializable => pb::ReadConsistency::Serializable,
        } as i32,
    }
}

/// Most encoded bytes of items in one list page: a page that would be larger ends early with
/// `more` set, so payloads and results cannot make a response larger than clients accept.
pub const LIST_PAGE_BYTES_MAX: usize = MAX_REQUEST_BYTES;

/// Collects a page of converted items, ending it early (with `more`) at LIST_PAGE_BYTES_MAX.
/// The first item is always included.
pub fn bounded_page<T: Message>(items: impl Iterator<Item = T>, more: bool) -> (Vec<T>, bool) {
    let mut page = Vec::new();
    let mut bytes = 0;
    for item in items {
        bytes += item.encoded_len();
        if !page.is_empty() && bytes > LIST_PAGE_BYTES_MAX {
            return (page, true);
        }
        page.push(item);
    }
    (page, more)
}

pub fn invalid(message: impl Into<String>) -> Status {
    to_status(Error::InvalidArgument(message.into()))
}

pub fn read_consistency(consistency: i32) -> Result<Consistency, Status> {
    match pb::ReadConsistency::try_from(consistency) {
        Ok(pb::ReadConsistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(pb::ReadConsistency::Serializable) => Ok(Consistency::Serializable),
        Err(_) => Err(invalid(format!("consistency: unknown value {consistency}"))),
    }
}

pub fn request_id(id: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let id =
        id.ok_or_else(|| invalid("request_id: required on every write, so a retry applies once"))?;
    if id.client_id == 0 || id.serial == 0 {
        return Err(invalid("request_id: client_id and serial must be non-zero"));
    }
    Ok(RequestId {
        client_id: id.client_id,
        serial: id.serial,
        min_pending_serial: id.min_pending_serial,
    })
}

pub fn check_request_size<M: Message>(request: &M) -> Result<(), Status> {
    let size = request.encoded_len();
    if size > MAX_REQUEST_BYTES {
        return Err(invalid(format!(
            "request: {size} bytes is larger than the limit of {MAX_REQUEST_BYTES} bytes (MAX_REQUEST_BYTES)"
        )));
    }
    Ok(())
}

pub fn unexpected(response: SmResponse) -> Status {
    Status::internal(format!("unexpected state machine response {response:?}"))
}

pub fn unexpected_coordination(response: CoordResponse) -> Status {
    Status::internal(format!("unexpected coordination response {response:?}"))
}

/// A coordination write's outcome: the store revision and the success, or the domain failure as
/// a node error (nothing applied).
fn coordination(response: SmResponse) -> Result<(u64, CoordResponse), Error> {
    match response {
        SmResponse::Coordination { revision, response } => {
            convert::outcome(response).map(|response| (revision, response))
        }
        other => Err(Error::Fatal(format!(
            "a coordination command was answered {other:?}"
        ))),
    }
}
