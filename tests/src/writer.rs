//! Writes that are retried until acknowledged, applied once thanks to their request id.
//!
//! A write that fails with an unknown outcome (the node died, the leader changed, a deadline
//! passed) is resent with the SAME request id, to any node, until one acknowledges it. So every
//! write the writer gives up on is reported as an error, and every write it returns was applied
//! exactly once at the returned revision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::{PutRequest, PutResponse, RequestId};
use rand::Rng as _;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::channel;
use crate::poll::{is_transient, POLL_INTERVAL};

/// Request ids of one client: a random non-zero client id and serials 1, 2, 3, ...
#[derive(Clone, Debug)]
pub struct RequestIds {
    client_id: u64,
    last_serial: u64,
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            client_id: rand::thread_rng().gen_range(1..=u64::MAX),
            last_serial: 0,
        }
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The id for the next new write.
    pub fn next_id(&mut self) -> RequestId {
        self.last_serial += 1;
        RequestId {
            client_id: self.client_id,
            serial: self.last_serial,
            min_pending_serial: 0,
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends puts to a set of nodes, moving on to the next node after a transient error.
#[derive(Clone, Debug)]
pub struct Writer {
    request_ids: RequestIds,
    nodes: Vec<(u64, KvClient<Channel>)>,
    /// Index into `nodes` of the node to try first: the last one that acknowledged.
    preferred: usize,
}

impl Writer {
    pub fn new(api_addrs: BTreeMap<u64, SocketAddr>) -> Self {
        assert!(!api_addrs.is_empty(), "a writer needs at least one node");
        let nodes = api_addrs
            .into_iter()
            .map(|(id, addr)| (id, channel::kv_client(addr)))
            .collect();
        Self {
            request_ids: RequestIds::new(),
            nodes,
            preferred: 0,
        }
    }

    pub fn request_ids(&mut self) -> &mut RequestIds {
        &mut self.request_ids
    }

    /// Puts `key = value` as one new write and returns its acknowledgement, retrying it (same
    /// request id) on every node in turn until one acknowledges or `timeout` passes.
    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<PutResponse> {
        let request = PutRequest {
            request_id: Some(self.request_ids.next_id()),
            key: key.into(),
            value: value.into(),
            session_id: 0,
            fence: None,
        };
        self.send_put(request, timeout).await
    }

    /// Sends `request` as it is (keeping its request id) until acknowledged; see [`Self::put`].
    pub async fn send_put(
        &mut self,
        request: PutRequest,
        timeout: Duration,
    ) -> anyhow::Result<PutResponse> {
        let deadline = Instant::now() + timeout;
        let mut failures: Vec<String> = Vec::new();
        loop {
            for offset in 0..self.nodes.len() {
                let index = (self.preferred + offset) % self.nodes.len();
                let (id, client) = &mut self.nodes[index];
                match client.put(request.clone()).await {
                    Ok(response) => {
                        self.preferred = index;
                        return Ok(response.into_inner());
                    }
                    Err(status) if is_transient(&status) => {
                        failures.push(format!(
                            "node {id}: {:?} {}",
                            status.code(),
                            status.message()
                        ));
                    }
                    Err(status) => {
                        return Err(anyhow!(status)
                            .context(format!("put {:?} via node {id}", request.request_id)))
                    }
                }
            }
            if Instant::now() >= deadline {
                let recent = &failures[failures.len().saturating_sub(2 * self.nodes.len())..];
                bail!(
                    "put {:?} not acknowledged within {timeout:?}; recent failures: {recent:#?}",
                    request.request_id
                );
            }
            tokio::time::sleep(POLL_INTERVAL * 4).await;
        }
    }
}
