//! The Cluster service: this node's status, and membership changes (forwarded to the leader).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use conclave_proto::v1 as pb;
use conclave_proto::v1::cluster_client::ClusterClient;
use conclave_proto::v1::cluster_server::Cluster;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::forward::{is_forwarded, until_leader, Forwarder};
use super::status::to_status;
use crate::error::Error;
use crate::node::{wall_clock_ms, Node};
use crate::raft::{NodeId, NodeInfo};

pub struct ClusterService {
    node: Arc<Node>,
    forwarder: Forwarder,
}

impl ClusterService {
    pub fn new(node: Arc<Node>, forwarder: Forwarder) -> Self {
        ClusterService { node, forwarder }
    }

    fn members(&self) -> Vec<pb::Member> {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, info)| pb::Member {
                node_id: *id,
                api_addr: info.api_addr.clone(),
                peer_addr: info.peer_addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// Answers a membership change done here, or forwards it to the leader the way writes are
    /// (abandoned when another node becomes leader; "rejected" only if this node never proposed
    /// it). `forward` makes the call; the forwarded request is bounded like a write's.
    async fn membership_reply<Req, F, Fut>(
        &self,
        result: Result<u64, Error>,
        forwarded: bool,
        request: Req,
        forward: F,
    ) -> Result<Response<pb::MembershipResponse>, Status>
    where
        F: FnOnce(ClusterClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<pb::MembershipResponse>, Status>>,
    {
        match result {
            Ok(log_index) => Ok(Response::new(pb::MembershipResponse {
                log_index,
                members: self.members(),
            })),
            Err(error) => {
                self.forwarder
                    .forward(&self.node, error, forwarded, request, |channel, request| {
                        forward(ClusterClient::new(channel), request)
                    })
                    .await
            }
        }
    }
}

fn invalid(message: impl Into<String>) -> Status {
    to_status(Error::InvalidArgument(message.into()))
}

fn node_info(field: &str, member: &pb::Member) -> Result<(NodeId, NodeInfo), Status> {
    if member.node_id == 0 {
        return Err(invalid(format!("{field}.node_id: must be non-zero")));
    }
    for (name, addr) in [
        ("api_addr", &member.api_addr),
        ("peer_addr", &member.peer_addr),
    ] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(format!(
                "{field}.{name}: {addr:?} is not an ip:port address"
            )));
        }
    }
    Ok((
        member.node_id,
        NodeInfo {
            api_addr: member.api_addr.clone(),
            peer_addr: member.peer_addr.clone(),
        },
    ))
}

fn node_ids(ids: &[u64]) -> Result<BTreeSet<NodeId>, Status> {
    if ids.is_empty() || ids.contains(&0) {
        return Err(invalid("node_ids: give at least one non-zero node id"));
    }
    Ok(ids.iter().copied().collect())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let role = match metrics.state {
            ServerState::Leader => pb::Role::Leader,
            ServerState::Follower if membership.voter_ids().any(|id| id == self.node.id) => {
                pb::Role::Follower
            }
            ServerState::Follower | ServerState::Learner => pb::Role::Learner,
            ServerState::Candidate => pb::Role::Candidate,
            ServerState::Shutdown => pb::Role::Shutdown,
        };
        let last_log_index = metrics.last_log_index;
        let replication = metrics
            .replication
            .iter()
            .flat_map(|progress| progress.iter())
            .filter(|(id, _)| **id != self.node.id)
            .map(|(id, matched)| {
                let matched_index = matched.as_ref().map(|log_id| log_id.index());
                pb::ReplicationProgress {
                    node_id: *id,
                    matched_index,
                    lag: last_log_index
                        .unwrap_or(0)
                        .saturating_sub(matched_index.unwrap_or(0)),
                }
            })
            .collect();
        #[allow(deprecated)]
        // the replacement is an Instant; this is the same figure in milliseconds
        let millis_since_quorum_ack = metrics.millis_since_quorum_ack;
        let initialized = membership.nodes().next().is_some();
        let leader = self.node.leader_hint();
        let (revision, state_digest, cluster_time_ms) = {
            let state = self.node.state.read();
            (
                state.machine.revision(),
                state.machine.digest(),
                state.machine.now_ms(),
            )
        };
        Ok(Response::new(pb::StatusResponse {
            node_id: self.node.id,
            api_addr: self.node.config.api_addr.clone(),
            peer_addr: self.node.config.peer_addr.clone(),
            role: role as i32,
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_api_addr: leader.map(|hint| hint.api_addr),
            last_log_index,
            committed_index: metrics
                .cluster_committed
                .as_ref()
                .or(metrics.local_committed.as_ref())
                .map(|id| id.index()),
            applied_index: metrics.last_applied.as_ref().map(|id| id.index()),
            snapshot_index: metrics.snapshot.as_ref().map(|id| id.index()),
            purged_index: metrics.purged.as_ref().map(|id| id.index()),
            members: self.members(),
            replication,
            revision,
            millis_since_quorum_ack,
            initialized,
            version: env!("CARGO_PKG_VERSION").to_string(),
            state_digest,
            wall_clock_ms: wall_clock_ms(),
            cluster_time_ms,
        }))
    }

    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        let req = request.into_inner();
        if req.members.is_empty() {
            return Err(invalid("members: give at least one initial voter"));
        }
        let mut members = BTreeMap::new();
        for (i, member) in req.members.iter().enumerate() {
            let (id, info) = node_info(&format!("members[{i}]"), member)?;
            if members.insert(id, info).is_some() {
                return Err(invalid(format!("members[{i}].node_id: {id} appears twice")));
            }
        }
        self.node.initialize(members).await.map_err(to_status)?;
        Ok(Response::new(pb::InitializeResponse {}))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let member = req
            .member
            .as_ref()
            .ok_or_else(|| invalid("member: required"))?;
        let (id, info) = node_info("member", member)?;
        let node = &self.node;
        let result = until_leader(node, || node.add_learner(id, info.clone())).await;
        // Adding a learner waits for it to catch up (bounded by the leader), which may take long.
        let wait = crate::node::LEARNER_CATCH_UP_WAIT + node.leader_wait() * 2;
        self.membership_reply(result, forwarded, req, |mut c, mut r| async move {
            r.set_timeout(wait);
            c.add_learner(r).await
        })
        .await
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let ids = node_ids(&req.node_ids)?;
        let node = &self.node;
        let result =
            until_leader(node, || node.change_membership(Node::promote(ids.clone()))).await;
        self.membership_reply(result, forwarded, req, |mut c, r| async move {
            c.promote(r).await
        })
        .await
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let ids = node_ids(&req.node_ids)?;
        let node = &self.node;
        let result = until_leader(node, || node.remove(ids.clone())).await;
        self.membership_reply(result, forwarded, req, |mut c, r| async move {
            c.remove(r).await
        })
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if req.to_node_id == 0 {
            return Err(invalid("to_node_id: must be non-zero"));
        }
        let node = &self.node;
        match until_leader(node, || node.transfer_leader(req.to_node_id)).await {
            Ok(leader_id) => Ok(Response::new(pb::TransferLeaderResponse { leader_id })),
            Err(error) => {
                self.forwarder
                    .forward(node, error, forwarded, req, |channel, request| async move {
                        ClusterClient::new(channel).transfer_leader(request).await
                    })
                    .await
            }
        }
    }
}
