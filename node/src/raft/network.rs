//! Outbound Raft traffic: one cached gRPC channel per peer, openraft's deadlines applied to every
//! call, and failures classified so openraft backs off from peers it cannot reach.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::v1::raft_peer_client::RaftPeerClient;
use conclave_proto::v1::{RaftMessage, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::{decode, encode, NodeId, NodeInfo, Snapshot, TypeConfig, Vote};
use crate::limits::{MAX_PEER_MESSAGE_BYTES, SNAPSHOT_CHUNK_BYTES};
use crate::state_machine::{Command, RequestId, Response};

/// Creates peer clients; channels are cached per (node, address) and shared by every client of
/// that peer, so replication, heartbeats and snapshots reuse one HTTP/2 connection.
#[derive(Clone, Default)]
pub struct PeerNetwork {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// Test-only rewrites of peer addresses (a fault-injecting proxy sits at the rewritten one).
    dial_overrides: Arc<HashMap<NodeId, String>>,
    /// The least time an append may take before it counts as failed; see `PeerClient::call`.
    append_timeout_min: Duration,
}

impl PeerNetwork {
    pub fn new(dial_overrides: HashMap<NodeId, String>, append_timeout_min: Duration) -> Self {
        PeerNetwork {
            channels: Arc::default(),
            dial_overrides: Arc::new(dial_overrides),
            append_timeout_min,
        }
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, String> {
        let addr = self
            .dial_overrides
            .get(&target)
            .map_or(addr, String::as_str);
        let mut channels = self.channels.lock().expect("channel cache lock");
        if let Some((cached_addr, channel)) = channels.get(&target) {
            if cached_addr == addr {
                return Ok(channel.clone());
            }
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(target, (addr.to_string(), channel.clone()));
        Ok(channel)
    }
}

impl PeerNetwork {
    /// Hands a node-internal command (batched heartbeats) to the leader to propose, over the peer
    /// address (raft.proto `Propose`), and returns the leader's response.
    pub async fn propose(
        &self,
        leader: NodeId,
        peer_addr: &str,
        request_id: RequestId,
        command: Command,
        timeout: Duration,
    ) -> Result<Response, String> {
        let channel = self.channel(leader, peer_addr)?;
        let mut client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let mut request = tonic::Request::new(RaftMessage {
            data: encode(&(request_id, command)),
        });
        request.set_timeout(timeout);
        let response = client
            .propose(request)
            .await
            .map_err(|status| format!("leader {leader}: {}", status.message()))?;
        decode(&response.into_inner().data).map_err(|e| format!("leader {leader}: {e}"))
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            target,
            channel: self.channel(target, &node.peer_addr),
            append_timeout_min: self.append_timeout_min,
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    channel: Result<Channel, String>,
    append_timeout_min: Duration,
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, Unreachable<TypeConfig>> {
        let channel = self.channel.as_ref().map_err(Unreachable::from_string)?;
        Ok(RaftPeerClient::new(channel.clone())
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// One request-response RPC with openraft's deadline, raised to `timeout_min`.
    async fn call<Req, Resp, F, Fut>(
        &self,
        request: &Req,
        option: &RPCOption,
        timeout_min: Duration,
        send: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self.client()?;
        let mut grpc_request = tonic::Request::new(RaftMessage {
            data: encode(request),
        });
        grpc_request.set_timeout(option.hard_ttl().max(timeout_min));
        let response = send(client, grpc_request)
            .await
            .map_err(|status| classify(self.target, &status))?;
        decode(&response.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// Unreachable makes openraft back off; a plain network error is retried at once. A peer that
/// refuses connections or is shut down is unreachable; a timeout or reset is transient.
fn classify(target: NodeId, status: &tonic::Status) -> RPCError<TypeConfig> {
    tracing::debug!(target, code = ?status.code(), message = status.message(), "peer call failed");
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(status)),
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft derives the append deadline from the heartbeat interval, too short for a large
        // batch fsynced on a busy disk: a timed-out append is resent, so a deadline shorter than
        // one append can take stalls replication for good. Heartbeats (empty appends) keep
        // openraft's deadline.
        let timeout_min = if rpc.entries.is_empty() {
            Duration::ZERO
        } else {
            self.append_timeout_min
        };
        self.call(&rpc, &option, timeout_min, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, Duration::ZERO, |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, Duration::ZERO, |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, Duration::ZERO, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let chunk_bytes = option
            .snapshot_chunk_size()
            .unwrap_or(SNAPSHOT_CHUNK_BYTES)
            .clamp(1, SNAPSHOT_CHUNK_BYTES);
        let Snapshot {
            meta,
            snapshot: data,
        } = snapshot;
        let total = data.len();
        let header = SnapshotChunk {
            meta: encode(&(vote, meta)),
            data: Vec::new(),
        };
        // Chunks are produced lazily as the stream is polled, so at most a few are in memory
        // beyond the snapshot itself.
        let data = Arc::new(data);
        let chunks = (0..total.div_ceil(chunk_bytes)).map(move |i| {
            let end = ((i + 1) * chunk_bytes).min(total);
            SnapshotChunk {
                meta: Vec::new(),
                data: data[i * chunk_bytes..end].to_vec(),
            }
        });
        let stream = tokio_stream::iter(std::iter::once(header).chain(chunks));
        let mut request = tonic::Request::new(stream);
        request.set_timeout(option.hard_ttl().max(Duration::from_secs(60)));
        tracing::info!(target = self.target, bytes = total, "sending snapshot");
        let response = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            response = client.install_snapshot(request) => response,
        };
        let response = response.map_err(|status| match classify(self.target, &status) {
            RPCError::Unreachable(e) => StreamingError::Unreachable(e),
            _ => StreamingError::Network(NetworkError::new(&status)),
        })?;
        decode(&response.into_inner().data)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
