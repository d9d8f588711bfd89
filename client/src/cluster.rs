//! Operator calls: node status, cluster initialization and membership changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use conclave_proto::v1::cluster_client::ClusterClient;
use conclave_proto::v1::{
    AddLearnerRequest, InitializeRequest, Member, MembershipResponse, PromoteRequest,
    RemoveRequest, StatusRequest, StatusResponse, TransferLeaderRequest, TransferLeaderResponse,
};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::client::{Backoff, CallKind, Client, ServedBy, MAX_RESPONSE_BYTES};
use crate::endpoint::{normalize_endpoint, Node};
use crate::error::{classify, describe, Error, Result, Verdict};

/// One node's answer to a status request, as gathered by [`Client::status_all`].
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// The normalised address that was asked.
    pub endpoint: String,
    /// The node's status, or why it could not be had.
    pub status: Result<StatusResponse>,
}

impl Client {
    /// The status of the node at `endpoint` (which need not be one of the client's endpoints): one
    /// attempt, bounded by the request timeout.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        let node = self.node(endpoint)?;
        self.status_of(&node).await
    }

    /// The status of every endpoint and of every member named in any reachable node's membership,
    /// asked concurrently, in the order they were found (endpoints first).
    pub async fn status_all(&self) -> Vec<EndpointStatus> {
        let mut asked: Vec<String> = Vec::new();
        let mut to_ask: Vec<String> = self.endpoints();
        let mut answers: Vec<EndpointStatus> = Vec::new();
        // Each round asks addresses not asked before; memberships are finite, so this ends.
        while !to_ask.is_empty() {
            asked.extend(to_ask.iter().cloned());
            let round = futures::future::join_all(to_ask.iter().map(|endpoint| async move {
                EndpointStatus {
                    endpoint: endpoint.clone(),
                    status: self.status(endpoint).await,
                }
            }))
            .await;
            let mut discovered = BTreeSet::new();
            for answer in &round {
                let Ok(status) = &answer.status else { continue };
                for member in &status.members {
                    match normalize_endpoint(&member.api_addr) {
                        Ok(address) if !asked.contains(&address) => {
                            discovered.insert(address);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(member = member.node_id, %error, "member has a bad api address")
                        }
                    }
                }
            }
            answers.extend(round);
            to_ask = discovered.into_iter().collect();
        }
        answers
    }

    /// Creates the cluster with `members` as its voters, sending the request to the first endpoint
    /// (which must be one of them). Retried while the node cannot be reached, so it can be called
    /// right after starting the nodes. Fails with `Rejected { code: AlreadyExists }` when the node
    /// is already initialized.
    pub async fn initialize(&self, members: Vec<Member>) -> Result<()> {
        let first = self
            .endpoints()
            .into_iter()
            .next()
            .expect("a client has at least one endpoint");
        self.initialize_at(&first, members).await
    }

    /// Like [`Client::initialize`], sent to `endpoint`.
    pub async fn initialize_at(&self, endpoint: &str, members: Vec<Member>) -> Result<()> {
        if members.is_empty() {
            return Err(Error::invalid_input("a cluster needs at least one member"));
        }
        for member in &members {
            if member.node_id == 0 {
                return Err(Error::invalid_input("node id 0 is reserved"));
            }
            normalize_endpoint(&member.api_addr)?;
            normalize_endpoint(&member.peer_addr)?;
        }
        let node = self.node(endpoint)?;
        let options = self.options();
        let deadline = Instant::now() + options.deadline;
        let mut backoff = Backoff::new();
        let request = InitializeRequest { members };
        let mut last_failure = String::from("no attempt was made");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Only attempts that provably did nothing lead back here.
            if remaining.is_zero() {
                return Err(Error::Rejected {
                    code: tonic::Code::Unavailable,
                    message: format!(
                        "not delivered within {:?}; last failure: {last_failure}",
                        options.deadline
                    ),
                });
            }
            let mut stub = cluster(node.channel());
            let attempt = stub.initialize(request.clone());
            let status = match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(Error::Indeterminate {
                        message: format!(
                            "{}: no answer within {:?}",
                            node.address, options.deadline
                        ),
                    })
                }
            };
            let failure = format!("{}: {}", node.address, describe(&status));
            match classify(&status) {
                Verdict::Refused => {
                    return Err(Error::Rejected {
                        code: status.code(),
                        message: failure,
                    })
                }
                Verdict::Unknown => return Err(Error::Indeterminate { message: failure }),
                Verdict::NotApplied => {
                    tracing::debug!(%failure, "initialize not delivered; retrying");
                    last_failure = failure;
                    backoff.wait(deadline).await;
                }
            }
        }
    }

    /// Adds a learner and waits until it has caught up with the leader's log.
    pub async fn add_learner(
        &self,
        node_id: u64,
        api_addr: &str,
        peer_addr: &str,
    ) -> Result<MembershipResponse> {
        if node_id == 0 {
            return Err(Error::invalid_input("node id 0 is reserved"));
        }
        let member = Member {
            node_id,
            api_addr: normalize_endpoint(api_addr)?,
            peer_addr: normalize_endpoint(peer_addr)?,
            voter: false,
        };
        self.call(CallKind::Membership, |channel| {
            let request = AddLearnerRequest {
                member: Some(member.clone()),
            };
            async move { cluster(channel).add_learner(request).await }
        })
        .await
    }

    /// Makes learners voters.
    pub async fn promote(&self, node_ids: &[u64]) -> Result<MembershipResponse> {
        let node_ids = checked_node_ids(node_ids)?;
        self.call(CallKind::Membership, |channel| {
            let request = PromoteRequest {
                node_ids: node_ids.clone(),
            };
            async move { cluster(channel).promote(request).await }
        })
        .await
    }

    /// Takes nodes out of the cluster.
    pub async fn remove(&self, node_ids: &[u64]) -> Result<MembershipResponse> {
        let node_ids = checked_node_ids(node_ids)?;
        let result = self
            .call(CallKind::Membership, |channel| {
                let request = RemoveRequest {
                    node_ids: node_ids.clone(),
                };
                async move { cluster(channel).remove(request).await }
            })
            .await;
        // The leader may have removed itself; ask again next time.
        self.forget_leader();
        result
    }

    /// Asks the leader to hand leadership to voter `to_node_id`; returns the leader when the call
    /// returned.
    pub async fn transfer_leader(&self, to_node_id: u64) -> Result<u64> {
        checked_node_ids(&[to_node_id])?;
        let result = self
            .call(CallKind::Membership, |channel| {
                let request = TransferLeaderRequest { to_node_id };
                async move { cluster(channel).transfer_leader(request).await }
            })
            .await;
        self.forget_leader();
        Ok(result?.leader_id)
    }

    async fn status_of(&self, node: &Arc<Node>) -> Result<StatusResponse> {
        let timeout = self.options().request_timeout;
        let mut stub = cluster(node.channel());
        let attempt = stub.status(StatusRequest {});
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                let message = format!("{}: {}", node.address, describe(&status));
                match classify(&status) {
                    Verdict::Refused => Err(Error::Rejected {
                        code: status.code(),
                        message,
                    }),
                    _ => Err(Error::Unavailable { message }),
                }
            }
            Err(_) => Err(Error::Unavailable {
                message: format!("{}: no answer within {timeout:?}", node.address),
            }),
        }
    }
}

fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn checked_node_ids(node_ids: &[u64]) -> Result<Vec<u64>> {
    if node_ids.is_empty() {
        return Err(Error::invalid_input("no node ids given"));
    }
    if node_ids.contains(&0) {
        return Err(Error::invalid_input("node id 0 is reserved"));
    }
    Ok(node_ids.to_vec())
}

impl ServedBy for MembershipResponse {
    fn served_by(&self) -> u64 {
        0
    }
}

impl ServedBy for TransferLeaderResponse {
    fn served_by(&self) -> u64 {
        0
    }
}
