//! Opening a server stream (decision and lock watches, agent sessions) on whichever node of the
//! rotation answers, moving past nodes that fail until the client's deadline. The resumable
//! watches (keys, tasks, workflows) open theirs in `feed.rs`.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{Backoff, Client};
use crate::endpoint::Node;
use crate::error::{describe, Error, Result};

/// True for a stream failure that another node or a later attempt would answer the same way: the
/// request itself is wrong (INVALID_ARGUMENT), names something that does not exist (NOT_FOUND), or
/// the server cannot serve it at all.
pub(crate) fn is_final(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::OutOfRange
    )
}

/// Opens a stream with `open` on the current node of the rotation, moving on after failures,
/// until one node accepts or the client's deadline passes ([`Error::Unavailable`]). A final
/// failure ([`is_final`]) is returned at once as [`Error::Rejected`].
pub(crate) async fn open_stream<T, Open, Fut>(
    client: &Client,
    what: &str,
    mut open: Open,
) -> Result<(Arc<Node>, Streaming<T>)>
where
    Open: FnMut(Channel) -> Fut,
    Fut: Future<Output = std::result::Result<tonic::Response<Streaming<T>>, Status>>,
{
    let options = client.options();
    let deadline = Instant::now() + options.deadline;
    let mut backoff = Backoff::new();
    let mut last_failure = String::from("no attempt was made");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Unavailable {
                message: format!(
                    "could not open the {what} within {:?}; last failure: {last_failure}",
                    options.deadline
                ),
            });
        }
        let node = client.cursor_node();
        let attempt = open(node.channel());
        match tokio::time::timeout(options.request_timeout.min(remaining), attempt).await {
            Ok(Ok(response)) => return Ok((node, response.into_inner())),
            Ok(Err(status)) => {
                last_failure = format!("{}: {}", node.address, describe(&status));
                if is_final(&status) {
                    return Err(Error::Rejected {
                        code: status.code(),
                        message: last_failure,
                    });
                }
            }
            Err(_) => last_failure = format!("{}: no answer", node.address),
        }
        tracing::debug!(%what, failure = %last_failure, "opening a stream failed; moving on");
        client.node_failed(&node);
        backoff.wait(deadline).await;
    }
}
