//! Loopback endpoints for the tests of the proxy: an echo server, and reads that either see the
//! expected bytes, see silence, or see the connection closed, each within a bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bound on anything that should happen at once on loopback.
pub const PROMPTLY: Duration = Duration::from_secs(2);
/// How long a read must stay unanswered to count as silence. The proxy's counters are checked
/// first, so this only confirms that dropped bytes did not arrive anyway.
pub const SILENCE: Duration = Duration::from_millis(100);

/// A listener on a free port of 127.0.0.1.
pub async fn listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind 127.0.0.1:0")
}

/// An echo server on 127.0.0.1: every connection gets back what it sends. It stops accepting when
/// the returned [`EchoServer`] is dropped.
pub async fn echo_server() -> (SocketAddr, EchoServer) {
    let listener = listener().await;
    let addr = listener.local_addr().expect("listener address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                // Ends when either side closes; nothing to report.
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    (addr, EchoServer(task))
}

/// Stops its echo server's listener on drop.
pub struct EchoServer(JoinHandle<()>);

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads exactly `length` bytes within [`PROMPTLY`].
pub async fn read_exactly(stream: &mut TcpStream, length: usize) -> anyhow::Result<Vec<u8>> {
    let mut buffer = vec![0_u8; length];
    tokio::time::timeout(PROMPTLY, stream.read_exact(&mut buffer))
        .await
        .with_context(|| format!("no {length} bytes within {PROMPTLY:?}"))?
        .context("read")?;
    Ok(buffer)
}

/// Sends `message` and expects it back (through an echo server).
pub async fn echo(stream: &mut TcpStream, message: &[u8]) -> anyhow::Result<()> {
    stream.write_all(message).await.context("write")?;
    let echoed = read_exactly(stream, message.len()).await?;
    anyhow::ensure!(echoed == message, "echoed {echoed:?}, sent {message:?}");
    Ok(())
}

/// Fails unless a read sees nothing for [`SILENCE`]: no bytes and no end of the connection.
pub async fn expect_silence(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut buffer = [0_u8; 64];
    match tokio::time::timeout(SILENCE, stream.read(&mut buffer)).await {
        Err(_elapsed) => Ok(()),
        Ok(Ok(0)) => bail!("the connection was closed"),
        Ok(Ok(length)) => bail!("received {:?}", &buffer[..length]),
        Ok(Err(error)) => bail!("the connection failed: {error}"),
    }
}

/// Fails unless the connection ends (end of stream or reset) within [`PROMPTLY`], without any
/// bytes arriving first.
pub async fn expect_closed(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut buffer = [0_u8; 64];
    match tokio::time::timeout(PROMPTLY, stream.read(&mut buffer)).await {
        Err(_elapsed) => bail!("still open after {PROMPTLY:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(length)) => bail!("received {:?} instead of the end", &buffer[..length]),
    }
}
