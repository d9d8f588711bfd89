use std::time::Duration;

use anyhow::ensure;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::*;
use crate::net::loopback::{
    echo, echo_server, expect_closed, expect_silence, listener, read_exactly, PROMPTLY,
};
use crate::poll::eventually;

/// A proxy in front of a listener the test accepts on itself, so it holds both ends of every
/// proxied connection: the dialing node's (`client`) and the target's (`server`).
struct Link {
    proxy: LinkProxy,
    target: TcpListener,
}

impl Link {
    async fn start() -> Self {
        let target = listener().await;
        let proxy = LinkProxy::start(target.local_addr().unwrap())
            .await
            .unwrap();
        Self { proxy, target }
    }

    /// A connection through the proxy: `(client, server)`.
    async fn connect(&self) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(self.proxy.listen_addr()).await.unwrap();
        let (server, _) = tokio::time::timeout(PROMPTLY, self.target.accept())
            .await
            .expect("the proxy connects to the target promptly")
            .unwrap();
        (client, server)
    }

    /// Waits until the counters satisfy `condition`.
    async fn counters_reach(&self, what: &str, condition: impl Fn(&LinkCounters) -> bool) {
        eventually(what, PROMPTLY, || async {
            let counters = self.proxy.counters();
            ensure!(condition(&counters), "{counters:?}");
            Ok(())
        })
        .await
        .unwrap();
    }
}

/// Sends `message` from `sender` and expects `receiver` to get exactly it.
async fn pass(sender: &mut TcpStream, receiver: &mut TcpStream, message: &[u8]) {
    sender.write_all(message).await.unwrap();
    assert_eq!(
        read_exactly(receiver, message.len()).await.unwrap(),
        message
    );
}

#[tokio::test]
async fn traffic_flows_both_ways_through_an_echo_server() {
    let (echo_addr, _echo_server) = echo_server().await;
    let proxy = LinkProxy::start(echo_addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.listen_addr()).await.unwrap();
    echo(&mut client, b"hello").await.unwrap();
    echo(&mut client, &[7; 3 * CHUNK_BYTES_MAX]).await.unwrap();

    let counters = proxy.counters();
    assert_eq!(counters.connections_accepted, 1);
    assert_eq!(counters.connections_open, 1);
    let bytes = 5 + 3 * CHUNK_BYTES_MAX as u64;
    assert_eq!(counters.forward.bytes_delivered, bytes);
    assert_eq!(counters.backward.bytes_delivered, bytes);
    assert_eq!(
        counters.forward.bytes_dropped + counters.backward.bytes_dropped,
        0
    );
}

#[tokio::test]
async fn blackhole_both_silences_open_and_new_connections_without_closing_them() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    pass(&mut client, &mut server, b"before").await;

    tracing::info!("blackhole both ways: bytes are dropped, connections stay open");
    link.proxy.set_fault(Fault::Blackhole {
        direction: Direction::Both,
    });
    client.write_all(b"request").await.unwrap();
    server.write_all(b"response").await.unwrap();
    link.counters_reach("both directions dropped", |c| {
        c.forward.bytes_dropped == 7 && c.backward.bytes_dropped == 8
    })
    .await;
    expect_silence(&mut server).await.unwrap();
    expect_silence(&mut client).await.unwrap();

    tracing::info!("a new connection is accepted but carries nothing either");
    let (mut new_client, mut new_server) = link.connect().await;
    new_client.write_all(b"new").await.unwrap();
    link.counters_reach("new request dropped", |c| c.forward.bytes_dropped == 10)
        .await;
    expect_silence(&mut new_server).await.unwrap();
    assert_eq!(link.proxy.counters().connections_open, 2);
}

#[tokio::test]
async fn forward_blackhole_drops_requests_and_delivers_responses() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    link.proxy.set_fault(Fault::Blackhole {
        direction: Direction::Forward,
    });

    client.write_all(b"request").await.unwrap();
    link.counters_reach("request dropped", |c| c.forward.bytes_dropped == 7)
        .await;
    expect_silence(&mut server).await.unwrap();
    pass(&mut server, &mut client, b"response").await;
    assert_eq!(link.proxy.counters().backward.bytes_dropped, 0);
}

#[tokio::test]
async fn backward_blackhole_drops_responses_and_delivers_requests() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    link.proxy.set_fault(Fault::Blackhole {
        direction: Direction::Backward,
    });

    pass(&mut client, &mut server, b"request").await;
    server.write_all(b"response").await.unwrap();
    link.counters_reach("response dropped", |c| c.backward.bytes_dropped == 8)
        .await;
    expect_silence(&mut client).await.unwrap();
    assert_eq!(link.proxy.counters().forward.bytes_dropped, 0);
}

#[tokio::test]
async fn heal_closes_connections_that_lost_bytes_and_resumes_the_others() {
    let link = Link::start().await;
    let (mut damaged_client, mut damaged_server) = link.connect().await;
    let (mut idle_client, mut idle_server) = link.connect().await;
    link.proxy.set_fault(Fault::Blackhole {
        direction: Direction::Both,
    });
    damaged_client.write_all(b"lost").await.unwrap();
    link.counters_reach("request dropped", |c| c.forward.bytes_dropped == 4)
        .await;

    tracing::info!("heal: the stream with a hole is closed, never resumed");
    link.proxy.heal();
    expect_closed(&mut damaged_client).await.unwrap();
    expect_closed(&mut damaged_server).await.unwrap();
    link.counters_reach("one connection reset", |c| {
        c.connections_reset == 1 && c.connections_open == 1
    })
    .await;

    tracing::info!("the connection that lost nothing carries traffic again");
    pass(&mut idle_client, &mut idle_server, b"request").await;
    pass(&mut idle_server, &mut idle_client, b"response").await;

    tracing::info!("new connections carry traffic");
    let (mut client, mut server) = link.connect().await;
    pass(&mut client, &mut server, b"request").await;
    pass(&mut server, &mut client, b"response").await;
}

#[tokio::test]
async fn a_fin_lost_to_a_blackhole_closes_the_connection_on_heal() {
    let link = Link::start().await;
    let (client, mut server) = link.connect().await;
    link.proxy.set_fault(Fault::Blackhole {
        direction: Direction::Forward,
    });
    drop(client);
    // The FIN is not counted as bytes; the target must not see the end while the blackhole lasts.
    expect_silence(&mut server).await.unwrap();
    link.proxy.heal();
    expect_closed(&mut server).await.unwrap();
}

#[tokio::test]
async fn delay_adds_at_least_the_delay_each_way_and_keeps_order() {
    let delay = Duration::from_millis(80);
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    link.proxy.set_fault(Fault::Delay(delay));

    let sent_at = Instant::now();
    for part in [&b"one "[..], b"two ", b"three"] {
        client.write_all(part).await.unwrap();
    }
    assert_eq!(
        read_exactly(&mut server, 13).await.unwrap(),
        b"one two three"
    );
    assert!(sent_at.elapsed() >= delay, "{:?}", sent_at.elapsed());

    let sent_at = Instant::now();
    pass(&mut server, &mut client, b"response").await;
    assert!(sent_at.elapsed() >= delay, "{:?}", sent_at.elapsed());

    tracing::info!("bytes sent after the delay is lifted still arrive after the delayed ones");
    client.write_all(b"late ").await.unwrap();
    link.counters_reach("the delayed chunk is read", |c| c.forward.bytes_read == 18)
        .await;
    link.proxy.heal();
    client.write_all(b"early").await.unwrap();
    assert_eq!(read_exactly(&mut server, 10).await.unwrap(), b"late early");
}

#[tokio::test]
async fn refuse_closes_open_connections_and_new_ones_at_once() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;

    link.proxy.set_fault(Fault::Refuse);
    expect_closed(&mut client).await.unwrap();
    expect_closed(&mut server).await.unwrap();
    let mut refused = TcpStream::connect(link.proxy.listen_addr()).await.unwrap();
    expect_closed(&mut refused).await.unwrap();
    let counters = link.proxy.counters();
    assert_eq!(counters.connections_accepted, 2);
    assert_eq!(counters.connections_refused, 1);
    assert_eq!(counters.connections_reset, 1);

    link.proxy.heal();
    let (mut client, mut server) = link.connect().await;
    pass(&mut client, &mut server, b"request").await;
}

#[tokio::test]
async fn reset_connections_closes_open_connections_and_keeps_the_faults() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    let fault = Fault::Delay(Duration::from_millis(1));
    link.proxy.set_fault(fault);

    link.proxy.reset_connections();
    expect_closed(&mut client).await.unwrap();
    expect_closed(&mut server).await.unwrap();
    assert_eq!(link.proxy.faults(), LinkFaults::from(fault));
    let (mut client, mut server) = link.connect().await;
    pass(&mut client, &mut server, b"request").await;
}

#[tokio::test]
async fn an_unreachable_target_closes_the_connection() {
    let target = listener().await.local_addr().unwrap();
    // The listener is dropped: nothing accepts at `target` any more.
    let proxy = LinkProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.listen_addr()).await.unwrap();
    expect_closed(&mut client).await.unwrap();
    assert_eq!(proxy.counters().connections_unreachable, 1);
}

#[tokio::test]
async fn shutdown_closes_the_port_and_the_connections() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    let handle = link.proxy.clone();

    handle.shutdown().await;
    TcpStream::connect(link.proxy.listen_addr())
        .await
        .expect_err("the port is closed");
    expect_closed(&mut client).await.unwrap();
    expect_closed(&mut server).await.unwrap();
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_port_and_the_connections() {
    let link = Link::start().await;
    let (mut client, mut server) = link.connect().await;
    let listen_addr = link.proxy.listen_addr();
    let Link {
        proxy,
        target: _target,
    } = link;
    let clone = proxy.clone();

    drop(proxy);
    pass(&mut client, &mut server, b"a clone keeps the proxy running").await;
    drop(clone);
    eventually("the port closes", PROMPTLY, || async {
        match TcpStream::connect(listen_addr).await {
            Ok(_) => anyhow::bail!("still accepting"),
            Err(_) => Ok(()),
        }
    })
    .await
    .unwrap();
    expect_closed(&mut client).await.unwrap();
    expect_closed(&mut server).await.unwrap();
}
