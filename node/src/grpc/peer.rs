//! Inbound Raft traffic on the peer address: openraft messages in bincode envelopes.

use std::sync::Arc;

use conclave_proto::v1::raft_peer_server::RaftPeer;
use conclave_proto::v1::{RaftMessage, SnapshotChunk};
use tonic::{Request, Response, Status, Streaming};

use super::status::to_status;
use crate::limits::STORE_BYTES_MAX;
use crate::node::Node;
use crate::raft::{decode, encode, Snapshot, SnapshotMeta, Vote};
use crate::state_machine::coordination::CoordCommand;
use crate::state_machine::{Command, RequestId};

pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        PeerService { node }
    }
}

fn bad_message(e: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn reply<T: serde::Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    match result {
        Ok(value) => Ok(Response::new(RaftMessage {
            data: encode(&value),
        })),
        // The local Raft is shutting down or failed: to the sender this peer is unreachable.
        Err(e) => Err(Status::unavailable(e.to_string())),
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_message)?;
        reply(self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_message)?;
        reply(self.node.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_message)?;
        reply(self.node.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_message)?;
        reply(self.node.raft.handle_transfer_leader(rpc).await)
    }

    /// A follower's batched agent heartbeats, proposed here on the leader. Only node-internal
    /// commands are accepted: clients write through the API address, with its checks.
    async fn propose(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (request_id, command): (RequestId, Command) =
            decode(&request.into_inner().data).map_err(bad_message)?;
        if !matches!(
            command,
            Command::Coordination(CoordCommand::Heartbeats { .. })
        ) {
            return Err(Status::invalid_argument(
                "peers may propose batched heartbeats only",
            ));
        }
        let response = self
            .node
            .write(request_id, command)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RaftMessage {
            data: encode(&response),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("snapshot stream is empty"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.meta).map_err(bad_message)?;
        let mut data = first.data;
        while let Some(chunk) = chunks.message().await? {
            data.extend_from_slice(&chunk.data);
            // A snapshot is an encoding of a store within quota; anything much larger is garbage.
            if data.len() as u64 > 2 * STORE_BYTES_MAX + (64 << 20) {
                return Err(Status::invalid_argument(
                    "snapshot larger than any valid store",
                ));
            }
        }
        tracing::info!(?vote, last_log_id = ?meta.last_log_id, bytes = data.len(), "received snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        reply(self.node.raft.install_full_snapshot(vote, snapshot).await)
    }
}
