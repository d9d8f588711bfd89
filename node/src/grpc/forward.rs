//! Getting a request to the leader: waiting out elections, and forwarding from a follower.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::{FORWARDED_METADATA, OUTCOME_METADATA};
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::error::{Error, LeaderHint};
use crate::node::Node;
use crate::raft::NodeId;

/// How often a node without a leader re-checks while it waits for one.
const LEADER_POLL: Duration = Duration::from_millis(20);

/// One cached channel per leader API address.
#[derive(Clone, Default)]
pub struct Forwarder {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Forwarder {
    pub fn channel(&self, api_addr: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().expect("forward channel cache lock");
        if let Some(channel) = channels.get(api_addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{api_addr}"))
            .map_err(|e| Error::Fatal(format!("leader address {api_addr:?} is not valid: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(api_addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Wraps a request for the leader: marked as forwarded by this node (so it is not forwarded
    /// again, and the leader can refuse nodes no longer in the cluster) and bounded by the node's
    /// leader wait plus slack for the leader's own wait.
    pub fn request<T>(&self, from: NodeId, message: T, leader_wait: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(FORWARDED_METADATA, MetadataValue::from(from));
        request.set_timeout(leader_wait * 2);
        request
    }
}

impl Forwarder {
    /// Forwards a request this node could not serve to the leader named in `error`, once: a
    /// request that was already forwarded, or an error that is not "another node leads", is
    /// answered with the error. `call` makes the call with the service's own generated client.
    ///
    /// If this node put the write in its own log before finding out it no longer leads
    /// (`proposed`), that entry may still commit: whatever the leader answers, a failure is then no
    /// proof of "not applied", so the `conclave-outcome: rejected` mark is removed.
    ///
    /// When another node becomes leader while the call is out, the call is abandoned: the old
    /// leader may be paused or cut off and hold it for the whole deadline, while the new one could
    /// serve it now. The caller gets UNAVAILABLE naming the new leader, with an unknown outcome
    /// (the old leader may have proposed the write), so it retries with the same request id.
    pub async fn forward<Req, Resp, F, Fut>(
        &self,
        node: &Node,
        error: Error,
        forwarded: bool,
        request: Req,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        match error {
            Error::NotLeader {
                leader: Some(LeaderHint { id, api_addr }),
                proposed,
            } if !forwarded => {
                let channel = self.channel(&api_addr).map_err(to_status)?;
                let result = tokio::select! {
                    result = call(channel, self.request(node.id, request, node.leader_wait())) => result,
                    leader = node.leader_other_than(id) => Err(to_status(Error::Unavailable {
                        message: format!(
                            "node {id}, to which the request was forwarded, is no longer the \
                             leader; the outcome is unknown"
                        ),
                        leader,
                        proposed: true,
                    })),
                };
                result.map_err(|mut status| {
                    if proposed {
                        status.metadata_mut().remove(OUTCOME_METADATA);
                    }
                    status
                })
            }
            error => Err(to_status(error)),
        }
    }
}

pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_METADATA)
}

/// Refuses a request forwarded by a node that is no longer a member: a removed node may not have
/// learned of its removal (the leader stops replicating to it), so the leader tells it.
pub fn check_forwarder<T>(node: &Node, request: &Request<T>) -> Result<(), Error> {
    let Some(value) = request.metadata().get(FORWARDED_METADATA) else {
        return Ok(());
    };
    let from = value.to_str().ok().and_then(|v| v.parse::<NodeId>().ok());
    match from {
        Some(from) if !node.is_member_id(from) && node.raft.is_leader() => {
            Err(Error::NodeRemoved(from))
        }
        _ => Ok(()),
    }
}

/// Runs `attempt` until it succeeds, fails for a reason other than leadership, or finds that
/// another node leads (returned as NotLeader with the hint, for the caller to forward). While no
/// leader is known it waits, up to the node's leader wait, then answers Unavailable.
pub async fn until_leader<T, F, Fut>(node: &Node, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + node.leader_wait();
    let mut proposed = false;
    loop {
        match attempt().await {
            Err(Error::NotLeader {
                leader,
                proposed: this_proposed,
            }) => {
                proposed |= this_proposed;
                match leader {
                    Some(hint) if hint.id != node.id => {
                        return Err(Error::NotLeader {
                            leader: Some(hint),
                            proposed,
                        });
                    }
                    leader if Instant::now() >= deadline => {
                        return Err(Error::Unavailable {
                            message: format!(
                                "no leader was reachable within {} ms",
                                node.config.leader_wait_ms
                            ),
                            leader,
                            proposed,
                        });
                    }
                    _ => tokio::time::sleep(LEADER_POLL).await,
                }
            }
            other => return other,
        }
    }
}
