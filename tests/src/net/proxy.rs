//! A userspace TCP proxy for one directed link between two nodes, with faults set at run time.
//!
//! The proxy for the link A -> B listens on 127.0.0.1 and forwards every connection it accepts to
//! B's peer address; A dials it instead of B (`--peer-dial`). Bytes from A to B flow *forward*,
//! B's responses on the same connections flow *backward*.
//!
//! A blackhole reads the bytes of its direction and drops them, without closing anything, so the
//! peers see timeouts as in a partition. It never hands a reader a stream with a hole in it, which
//! a real network cannot produce either (TCP delivers in order or not at all): a connection that
//! lost bytes (or its FIN) in a direction delivers nothing more in that direction and is closed as
//! soon as that direction is no longer blackholed, like a TCP connection whose retransmissions gave
//! up. A gRPC client then reconnects; the calls in flight on the closed connection fail. A
//! connection that lost nothing during the blackhole simply carries traffic again after the heal.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most bytes read from a socket at once; one read becomes one chunk in a direction's queue.
pub const CHUNK_BYTES_MAX: usize = 16 * 1024;
/// Most chunks queued per direction of one connection, waiting for their delay or for the other
/// socket to accept them. A full queue stops the proxy reading, which pushes back on the sender as
/// a slow network would. The bound is `QUEUE_CHUNKS_MAX * CHUNK_BYTES_MAX` bytes per direction.
pub const QUEUE_CHUNKS_MAX: usize = 1024;
/// How long the proxy waits for the target to accept a connection before closing the client's.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which bytes of a link a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the dialing node to the target (requests).
    Forward,
    /// From the target back to the dialing node (responses).
    Backward,
    Both,
}

/// A fault on one link, the shorthand for the common cases of [`LinkFaults`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every byte is delivered at once.
    None,
    /// The bytes of `direction` are read and dropped; connections stay open.
    Blackhole { direction: Direction },
    /// Every chunk, in both directions, is delivered this long after it was read, in order.
    Delay(Duration),
    /// New connections are accepted and closed at once; open connections are closed.
    Refuse,
}

/// Everything a link does to its traffic; [`Fault`] converts into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    pub forward: DirectionFaults,
    pub backward: DirectionFaults,
    /// Connections are closed: open ones when this is set, new ones as soon as they are accepted.
    pub refuse: bool,
}

/// What a link does to the bytes of one direction. A blackhole wins over a delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionFaults {
    pub blackhole: bool,
    /// Added to the time each chunk is delivered; order is kept.
    pub delay: Duration,
}

/// What a link has done since it started, to check that a fault took effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub connections_accepted: u64,
    /// Accepted and closed at once because of [`Fault::Refuse`] (included in `accepted`).
    pub connections_refused: u64,
    /// Accepted and closed at once because the target did not accept (included in `accepted`).
    pub connections_unreachable: u64,
    /// Closed by the proxy while open: by a refusal, [`LinkProxy::reset_connections`], or because
    /// they lost bytes to a blackhole that has ended.
    pub connections_reset: u64,
    /// Forwarded connections open now.
    pub connections_open: u64,
    pub forward: DirectionCounters,
    pub backward: DirectionCounters,
}

/// Bytes of one direction of a link. Read bytes not yet delivered or dropped are in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    pub bytes_read: u64,
    pub bytes_delivered: u64,
    pub bytes_dropped: u64,
}

/// A running proxy for one link. Clones are handles to the same proxy, which stops (listener and
/// every connection) on [`LinkProxy::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct LinkProxy {
    inner: Arc<Inner>,
}

impl LinkProxy {
    /// Starts a proxy on a port of 127.0.0.1 chosen by the kernel, forwarding to `target`. The port
    /// stays bound until the proxy stops, so nothing else can take it in between.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), target).await
    }

    /// Starts a proxy listening on `listen_addr` (e.g. a port from
    /// [`crate::ports::PortReservation`]), forwarding to `target`.
    pub async fn bind(listen_addr: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen_addr)
            .await
            .with_context(|| format!("proxy: bind {listen_addr}"))?;
        let listen_addr = listener.local_addr().context("proxy: local address")?;
        let shared = Arc::new(Shared {
            faults: watch::Sender::new(LinkFaults::default()),
            connections: Mutex::new(Connections::default()),
            counters: Counters::default(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), target));
        tracing::debug!(%listen_addr, %target, "proxy started");
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                listen_addr,
                target,
                accept_task: Mutex::new(Some(accept_task)),
            }),
        })
    }

    /// The address the proxy listens on: what the dialing node is given instead of the target.
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen_addr
    }

    /// The address every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.inner.target
    }

    /// Applies `fault` to open and new connections at once, replacing the faults in force.
    pub fn set_fault(&self, fault: Fault) {
        self.set_faults(fault.into());
    }

    /// Applies `faults` to open and new connections at once, replacing the faults in force.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.inner.shared.faults.send_replace(faults);
        if faults.refuse {
            self.inner.shared.close_connections();
        }
    }

    /// The faults in force.
    pub fn faults(&self) -> LinkFaults {
        self.inner.shared.faults()
    }

    /// Removes every fault: open connections that lost no bytes carry traffic again, those that
    /// did are closed (see the module comment), new connections are forwarded.
    pub fn heal(&self) {
        self.set_fault(Fault::None);
    }

    /// Closes every open connection, so that the peers reconnect at once instead of after their
    /// own timeouts. The faults in force stay.
    pub fn reset_connections(&self) {
        self.inner.shared.close_connections();
    }

    pub fn counters(&self) -> LinkCounters {
        self.inner.shared.counters()
    }

    /// Stops the proxy: once this returns, its port is closed and so is every connection it
    /// forwarded. Other handles see a stopped proxy.
    pub async fn shutdown(&self) {
        let accept_task = self.inner.stop();
        let connections = self.inner.shared.connections().drain();
        for task in accept_task.into_iter().chain(connections) {
            task.abort();
            // Cancelled (or already finished): either way its sockets are closed now.
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for LinkProxy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LinkProxy")
            .field("listen_addr", &self.inner.listen_addr)
            .field("target", &self.inner.target)
            .field("faults", &self.faults())
            .finish()
    }
}

impl From<Fault> for LinkFaults {
    fn from(fault: Fault) -> Self {
        let blackhole = |blackhole| DirectionFaults {
            blackhole,
            delay: Duration::ZERO,
        };
        match fault {
            Fault::None => LinkFaults::default(),
            Fault::Blackhole { direction } => LinkFaults {
                forward: blackhole(direction != Direction::Backward),
                backward: blackhole(direction != Direction::Forward),
                refuse: false,
            },
            Fault::Delay(delay) => LinkFaults {
                forward: DirectionFaults {
                    blackhole: false,
                    delay,
                },
                backward: DirectionFaults {
                    blackhole: false,
                    delay,
                },
                refuse: false,
            },
            Fault::Refuse => LinkFaults {
                refuse: true,
                ..LinkFaults::default()
            },
        }
    }
}

impl LinkFaults {
    fn direction(&self, flow: Flow) -> DirectionFaults {
        match flow {
            Flow::Forward => self.forward,
            Flow::Backward => self.backward,
        }
    }
}

/// One direction of a connection: [`Direction`] without `Both`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Forward,
    Backward,
}

/// Owned by the handles; stopping it on drop is what makes dropping the last handle stop the proxy.
struct Inner {
    shared: Arc<Shared>,
    listen_addr: SocketAddr,
    target: SocketAddr,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Marks the proxy stopped, so the accept loop forwards nothing more, and returns the accept
    /// task if it was not taken yet.
    fn stop(&self) -> Option<JoinHandle<()>> {
        self.shared.connections().stopped = true;
        self.accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(accept_task) = self.stop() {
            accept_task.abort();
        }
        for task in self.shared.connections().drain() {
            task.abort();
        }
    }
}

/// State shared by the handles and the proxy's tasks (which must not own [`Inner`]).
struct Shared {
    faults: watch::Sender<LinkFaults>,
    connections: Mutex<Connections>,
    counters: Counters,
}

impl Shared {
    fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }

    /// The map only ever holds complete entries, so a panic while it was locked left it usable.
    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn close_connections(&self) {
        let tasks = self.connections().drain();
        self.counters.add(&self.counters.reset, tasks.len());
        for task in tasks {
            task.abort();
        }
    }

    fn counters(&self) -> LinkCounters {
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LinkCounters {
            connections_accepted: load(&counters.accepted),
            connections_refused: load(&counters.refused),
            connections_unreachable: load(&counters.unreachable),
            connections_reset: load(&counters.reset),
            connections_open: self.connections().open.len() as u64,
            forward: DirectionCounters {
                bytes_read: load(&counters.forward_read),
                bytes_delivered: load(&counters.forward_delivered),
                bytes_dropped: load(&counters.forward_dropped),
            },
            backward: DirectionCounters {
                bytes_read: load(&counters.backward_read),
                bytes_delivered: load(&counters.backward_delivered),
                bytes_dropped: load(&counters.backward_dropped),
            },
        }
    }
}

/// The forwarded connections, each a task that owns both sockets: ending the task closes them.
#[derive(Default)]
struct Connections {
    open: HashMap<u64, JoinHandle<()>>,
    next_id: u64,
    /// Set when the proxy stops; the accept loop then forwards nothing more.
    stopped: bool,
}

impl Connections {
    fn drain(&mut self) -> Vec<JoinHandle<()>> {
        self.open.drain().map(|(_, task)| task).collect()
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    unreachable: AtomicU64,
    reset: AtomicU64,
    forward_read: AtomicU64,
    forward_delivered: AtomicU64,
    forward_dropped: AtomicU64,
    backward_read: AtomicU64,
    backward_delivered: AtomicU64,
    backward_dropped: AtomicU64,
}

impl Counters {
    fn add(&self, counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }

    fn read(&self, flow: Flow) -> &AtomicU64 {
        match flow {
            Flow::Forward => &self.forward_read,
            Flow::Backward => &self.backward_read,
        }
    }

    fn delivered(&self, flow: Flow) -> &AtomicU64 {
        match flow {
            Flow::Forward => &self.forward_delivered,
            Flow::Backward => &self.backward_delivered,
        }
    }

    fn dropped(&self, flow: Flow) -> &AtomicU64 {
        match flow {
            Flow::Forward => &self.forward_dropped,
            Flow::Backward => &self.backward_dropped,
        }
    }
}

/// Removes a connection from the open set when its task ends, however it ends.
struct ConnectionGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.connections().open.remove(&self.id);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, target: SocketAddr) {
    loop {
        let (client, client_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.counters.add(&shared.counters.accepted, 1);
        // The refusal is decided under the lock that `close_connections` takes after a refusal
        // is set, so a connection is either refused here or closed there.
        let mut connections = shared.connections();
        if connections.stopped {
            return;
        }
        if shared.faults().refuse {
            drop(connections);
            shared.counters.add(&shared.counters.refused, 1);
            tracing::debug!(%client_addr, %target, "proxy: connection refused");
            continue;
        }
        let id = connections.next_id;
        connections.next_id += 1;
        let guard = ConnectionGuard {
            shared: Arc::clone(&shared),
            id,
        };
        let task_shared = Arc::clone(&shared);
        // Spawned and registered under the lock, so the guard cannot remove the entry before it
        // exists.
        let task = tokio::spawn(async move {
            let _guard = guard;
            forward_connection(&task_shared, client, client_addr, target).await;
        });
        connections.open.insert(id, task);
    }
}

async fn forward_connection(
    shared: &Shared,
    mut client: TcpStream,
    client_addr: SocketAddr,
    target: SocketAddr,
) {
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            shared.counters.add(&shared.counters.unreachable, 1);
            tracing::debug!(%client_addr, %target, %error, "proxy: target unreachable");
            return;
        }
        Err(_) => {
            shared.counters.add(&shared.counters.unreachable, 1);
            tracing::debug!(%client_addr, %target, "proxy: connect to target timed out");
            return;
        }
    };
    // The peers set no-delay themselves; the proxy must not add Nagle's latency behind them.
    // Failing to set it only costs latency.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let result = tokio::try_join!(
        pump(shared, Flow::Forward, client_read, upstream_write),
        pump(shared, Flow::Backward, upstream_read, client_write),
    );
    match result {
        Ok(_) => tracing::debug!(%client_addr, %target, "proxy: connection closed by the peers"),
        Err(error) => tracing::debug!(%client_addr, %target, %error, "proxy: connection closed"),
    }
}

/// Carries one direction of a connection until its reader ends and everything read is handled.
async fn pump<R, W>(shared: &Shared, flow: Flow, reader: R, writer: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (queue_sender, queue_receiver) = mpsc::channel(QUEUE_CHUNKS_MAX);
    tokio::try_join!(
        receive(shared, flow, reader, queue_sender),
        deliver(shared, flow, queue_receiver, writer),
    )?;
    Ok(())
}

/// Bytes read from one socket, to be written to the other at `deliver_at`; `End` is the FIN.
enum Segment {
    Data { bytes: Vec<u8>, deliver_at: Instant },
    End { deliver_at: Instant },
}

/// Reads as fast as the queue allows and stamps each chunk with the delay in force when it was
/// read, so a delay applies to bytes sent after it is set.
async fn receive<R>(
    shared: &Shared,
    flow: Flow,
    mut reader: R,
    queue: mpsc::Sender<Segment>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let mut buffer = vec![0_u8; CHUNK_BYTES_MAX];
    loop {
        let length = reader.read(&mut buffer).await?;
        shared.counters.add(shared.counters.read(flow), length);
        let deliver_at = Instant::now() + shared.faults().direction(flow).delay;
        let segment = if length == 0 {
            Segment::End { deliver_at }
        } else {
            Segment::Data {
                bytes: buffer[..length].to_vec(),
                deliver_at,
            }
        };
        // A closed queue means the writer has failed, and the connection is closing with it.
        if queue.send(segment).await.is_err() || length == 0 {
            return Ok(());
        }
    }
}

/// Writes the queued chunks in order, each at its time, unless its direction is blackholed when it
/// is due. After the first loss the direction is damaged: it drops everything, and the connection
/// is closed when the blackhole ends (the module comment says why).
async fn deliver<W>(
    shared: &Shared,
    flow: Flow,
    mut queue: mpsc::Receiver<Segment>,
    mut writer: W,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let blackholed = || shared.faults().direction(flow).blackhole;
    let mut fault_changes = shared.faults.subscribe();
    let mut damaged = false;
    loop {
        if damaged && !blackholed() {
            shared.counters.add(&shared.counters.reset, 1);
            return Err(io::Error::other(format!(
                "{flow:?} bytes were lost to a blackhole that has ended"
            )));
        }
        let segment = tokio::select! {
            segment = queue.recv() => segment,
            // Only a damaged direction waits for the blackhole to end (checked at the top).
            _ = fault_changes.changed(), if damaged => continue,
        };
        match segment {
            Some(Segment::Data { bytes, deliver_at }) => {
                if !damaged && !blackholed() {
                    wait_until(deliver_at).await;
                }
                // Checked again after the delay: a blackhole set meanwhile drops these bytes too.
                if damaged || blackholed() {
                    damaged = true;
                    shared
                        .counters
                        .add(shared.counters.dropped(flow), bytes.len());
                    continue;
                }
                writer.write_all(&bytes).await?;
                shared
                    .counters
                    .add(shared.counters.delivered(flow), bytes.len());
            }
            Some(Segment::End { deliver_at }) => {
                if !damaged && !blackholed() {
                    wait_until(deliver_at).await;
                }
                if damaged || blackholed() {
                    // The FIN is lost: the reader of this direction must not see a clean end.
                    damaged = true;
                    continue;
                }
                writer.shutdown().await?;
            }
            None if damaged => {
                // The reader has ended; wait for the blackhole to end, then close (at the top).
                if fault_changes.changed().await.is_err() {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

/// Sleeps until `deadline`, without arming a timer when it has passed (the common case: no delay).
async fn wait_until(deadline: Instant) {
    if deadline > Instant::now() {
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests;
