//! Waiting on conditions with a deadline, never sleeping and hoping.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;
use tonic::Code;

/// Pause between two checks of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Checks `check` every [`POLL_INTERVAL`] until it returns `Some`, or fails after `timeout` with
/// `what` and the last observation (`check`'s `Err`, kept as the reason it was not yet true).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last observation: {last:#}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// True for errors after which the same request may succeed later or elsewhere: no leader yet, the
/// node is down or unreachable, or the outcome of a write is unknown. Resending a write is safe
/// only with the same request id.
pub fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

/// Calls `call` until it succeeds, retrying transient errors (see [`is_transient`]) until
/// `timeout`; any other error is returned at once.
pub async fn retry_transient<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(status) if is_transient(&status) && Instant::now() < deadline => {
                tracing::debug!(what, code = ?status.code(), message = status.message(), "retrying");
                tokio::time::sleep(POLL_INTERVAL * 2).await;
            }
            Err(status) => return Err(status),
        }
    }
}
