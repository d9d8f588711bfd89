//! Endpoint addresses and the lazily connected gRPC channels kept for each of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// Interval of HTTP/2 keep-alive pings, so a connection to a partitioned node fails within about
/// two intervals instead of hanging until the request timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Normalises an endpoint to `host:port`. Accepts `host:port`, `http://host:port` and a trailing
/// `/`; refuses other schemes (this client speaks plaintext HTTP/2 only), paths and missing ports.
pub fn normalize_endpoint(endpoint: &str) -> Result<String> {
    let trimmed = endpoint.trim();
    let without_scheme = match trimmed.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(Error::invalid_input(format!(
                "endpoint {trimmed:?}: scheme {scheme:?} is not supported (use host:port or http://host:port)"
            )))
        }
        None => trimmed,
    };
    let address = without_scheme.strip_suffix('/').unwrap_or(without_scheme);
    let invalid = |why: &str| Error::invalid_input(format!("endpoint {trimmed:?}: {why}"));
    if address.contains('/') {
        return Err(invalid("paths are not supported"));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid("missing host"));
    }
    let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
    if port == 0 {
        return Err(invalid("port 0"));
    }
    Ok(format!("{host}:{port}"))
}

/// Settings shared by every channel the client opens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSettings {
    pub connect_timeout: Duration,
    pub channels_per_endpoint: usize,
}

/// One server address and its channels. Channels are opened on first use (they need a tokio
/// runtime) and reconnect by themselves after a failure.
#[derive(Debug)]
pub(crate) struct Node {
    /// Normalised `host:port`.
    pub address: String,
    endpoint: Endpoint,
    channels_per_endpoint: usize,
    channels: OnceLock<Vec<Channel>>,
    next_channel: AtomicUsize,
}

impl Node {
    pub fn new(address: &str, settings: ChannelSettings) -> Result<Node> {
        let address = normalize_endpoint(address)?;
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| Error::invalid_input(format!("endpoint {address:?}: {error}")))?
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        Ok(Node {
            address,
            endpoint,
            channels_per_endpoint: settings.channels_per_endpoint.max(1),
            channels: OnceLock::new(),
            next_channel: AtomicUsize::new(0),
        })
    }

    /// One of this node's channels, round-robin, so that concurrent requests spread over several
    /// HTTP/2 connections instead of queueing on one.
    pub fn channel(&self) -> Channel {
        let channels = self.channels.get_or_init(|| {
            (0..self.channels_per_endpoint)
                .map(|_| self.endpoint.connect_lazy())
                .collect()
        });
        let index = self.next_channel.fetch_add(1, Ordering::Relaxed) % channels.len();
        channels[index].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise_to_host_port() {
        let ok = [
            ("127.0.0.1:7001", "127.0.0.1:7001"),
            (" 127.0.0.1:7001 ", "127.0.0.1:7001"),
            ("http://127.0.0.1:7001", "127.0.0.1:7001"),
            ("http://localhost:7001/", "localhost:7001"),
            ("[::1]:7001", "[::1]:7001"),
            ("http://[::1]:7001", "[::1]:7001"),
            ("node-1.example:80", "node-1.example:80"),
        ];
        for (input, expected) in ok {
            assert_eq!(
                normalize_endpoint(input).as_deref(),
                Ok(expected),
                "{input}"
            );
        }
        let bad = [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            ":7001",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "https://127.0.0.1:7001",
            "grpc://127.0.0.1:7001",
            "http://127.0.0.1:7001/kv",
        ];
        for input in bad {
            assert!(
                matches!(normalize_endpoint(input), Err(Error::InvalidInput { .. })),
                "{input:?} should be refused"
            );
        }
    }
}
