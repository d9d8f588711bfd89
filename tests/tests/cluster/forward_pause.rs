//! A write forwarded to a leader that then stops (SIGSTOP, a long GC pause) is answered as soon as
//! the follower knows of a new leader: UNAVAILABLE naming it, with an unknown outcome, and the
//! retry with the same request id applies once. Without that, the follower would hold the call for
//! its whole forward deadline (twice the leader wait) while a new leader is already serving.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use conclave_proto::v1::{PutRequest, ReadConsistency};
use conclave_proto::{LEADER_METADATA, OUTCOME_METADATA};
use conclave_tests::poll::retry_transient;
use conclave_tests::read::get;
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::Code;

use crate::{READ_TIMEOUT, WRITE_TIMEOUT};

/// The nodes' leader wait: a forwarded call may take twice this before the follower gives up.
const LEADER_WAIT_MS: u64 = 30_000;
/// Bound on the answer to the forwarded write: many election timeouts (300-600 ms), and far
/// below the forward deadline of 60 s.
const ANSWER_MAX: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_write_to_a_paused_leader_moves_on_to_the_new_leader() -> anyhow::Result<()> {
    let mut config = ClusterConfig::new(3);
    config.leader_wait_ms = Some(LEADER_WAIT_MS);
    let mut cluster = TestCluster::start_initialized(config).await?;
    let old_leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];
    let mut request_ids = RequestIds::new();

    tracing::info!(
        old_leader,
        follower,
        "a write through the follower opens its forward channel"
    );
    let warm_up = PutRequest {
        request_id: Some(request_ids.next_id()),
        key: b"forward/warm-up".to_vec(),
        value: b"1".to_vec(),
        session_id: 0,
        fence: None,
    };
    let follower_kv = cluster.kv(follower);
    retry_transient("put through the follower", WRITE_TIMEOUT, || {
        let mut client = follower_kv.clone();
        let request = warm_up.clone();
        async move { client.put(request).await }
    })
    .await?;

    tracing::info!(
        old_leader,
        "pause the leader, then write through the follower"
    );
    cluster.pause(old_leader)?;
    let request = PutRequest {
        request_id: Some(request_ids.next_id()),
        key: b"forward/during-pause".to_vec(),
        value: b"once".to_vec(),
        session_id: 0,
        fence: None,
    };
    let answer = tokio::time::timeout(ANSWER_MAX, follower_kv.clone().put(request.clone())).await;
    let outcome = match answer {
        Err(_) => {
            cluster.resume(old_leader)?;
            bail!("the follower held the forwarded write for over {ANSWER_MAX:?}")
        }
        Ok(outcome) => outcome,
    };
    let new_leader = match outcome {
        // The follower learnt of the new leader before forwarding, and it served the write.
        Ok(_) => None,
        Err(status) => {
            ensure!(status.code() == Code::Unavailable, "{status:?}");
            ensure!(
                status.metadata().get(OUTCOME_METADATA).is_none(),
                "the paused leader may have proposed the write: its outcome is unknown, \
                 not rejected: {status:?}"
            );
            let hint = status
                .metadata()
                .get(LEADER_METADATA)
                .context("the answer names the new leader")?
                .to_str()?
                .to_string();
            let id: u64 = hint
                .split_once('=')
                .and_then(|(id, _)| id.parse().ok())
                .with_context(|| format!("leader hint {hint:?}"))?;
            ensure!(id != old_leader, "the hint names the paused leader: {hint}");
            Some(id)
        }
    };

    if let Some(new_leader) = new_leader {
        tracing::info!(
            new_leader,
            "retry with the same request id on the new leader"
        );
        let kv = cluster.kv(new_leader);
        retry_transient("retry on the new leader", WRITE_TIMEOUT, || {
            let mut client = kv.clone();
            let request = request.clone();
            async move { client.put(request).await }
        })
        .await?;
    }

    tracing::info!(
        old_leader,
        "resume the old leader; the write is there, once"
    );
    cluster.resume(old_leader)?;
    let leader = cluster.leader().await?;
    let read = get(
        &cluster.kv(leader),
        request.key.clone(),
        ReadConsistency::Linearizable,
        READ_TIMEOUT,
    )
    .await?;
    let kv = read.kv.context("the write is readable")?;
    ensure!(kv.value == b"once", "{kv:?}");
    ensure!(
        kv.version == 1,
        "the retried write applied more than once: {kv:?}"
    );
    cluster.shutdown().await
}
