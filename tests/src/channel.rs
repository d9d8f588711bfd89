//! gRPC clients for a node's API address, built on lazily connecting channels.
//!
//! Channels connect on first use and reconnect on later calls, so a client made for a node that is
//! down fails each call quickly (UNAVAILABLE) instead of failing to be made, and works again once
//! the node is back.

use std::net::SocketAddr;
use std::time::Duration;

use conclave_proto::v1::cluster_client::ClusterClient;
use conclave_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt may take; nodes are local, so this only bounds a hung accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one unary call. Generous: it only keeps a hung node from hanging the test; the node's
/// own bounded waits (leader wait, proposal timeout) are much shorter.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A channel to `addr` whose calls each end after `request_timeout`, if given.
pub fn channel(addr: SocketAddr, request_timeout: Option<Duration>) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("an IP socket address is a valid URI authority")
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let endpoint = match request_timeout {
        Some(timeout) => endpoint.timeout(timeout),
        None => endpoint,
    };
    endpoint.connect_lazy()
}

/// A KV client for unary calls, each bounded by [`REQUEST_TIMEOUT`].
pub fn kv_client(addr: SocketAddr) -> KvClient<Channel> {
    KvClient::new(channel(addr, Some(REQUEST_TIMEOUT)))
}

/// A KV client for watch streams: no per-call timeout, which would cut a long-lived stream.
pub fn watch_client(addr: SocketAddr) -> KvClient<Channel> {
    KvClient::new(channel(addr, None))
}

/// A Cluster client, each call bounded by [`REQUEST_TIMEOUT`].
pub fn cluster_client(addr: SocketAddr) -> ClusterClient<Channel> {
    ClusterClient::new(channel(addr, Some(REQUEST_TIMEOUT)))
}

/// A Cluster client whose calls end after `timeout`: for polling Status, where a slow answer is as
/// good as none.
pub fn cluster_client_with_timeout(addr: SocketAddr, timeout: Duration) -> ClusterClient<Channel> {
    ClusterClient::new(channel(addr, Some(timeout)))
}
