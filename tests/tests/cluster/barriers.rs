//! Barriers on real nodes: participants entering through different nodes are released together
//! once the quorum has entered, also across a leader crash; a barrier short of its quorum times
//! out with the list of who arrived.

use std::time::Duration;

use anyhow::ensure;
use conclave_proto::v1::barriers_client::BarriersClient;
use conclave_proto::v1::{BarrierStatus, EnterRequest, EnterResponse};
use conclave_tests::channel::channel;
use conclave_tests::poll::retry_transient;
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::transport::Channel;

const ENTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Enters through the nodes in turn (starting at `first`), retrying transient failures with the
/// same request id, and waits up to `wait_ms` for the barrier to close.
async fn enter(
    clients: Vec<BarriersClient<Channel>>,
    first: usize,
    request: EnterRequest,
) -> anyhow::Result<EnterResponse> {
    let mut turn = first;
    let answer = retry_transient("enter", ENTER_TIMEOUT, || {
        let mut client = clients[turn % clients.len()].clone();
        turn += 1;
        let request = request.clone();
        async move { client.enter(request).await }
    })
    .await?;
    Ok(answer.into_inner())
}

fn clients(cluster: &TestCluster) -> Vec<BarriersClient<Channel>> {
    cluster
        .node_ids()
        .into_iter()
        .map(|id| BarriersClient::new(channel(cluster.api_addr(id), Some(Duration::from_secs(40)))))
        .collect()
}

fn request(ids: &mut RequestIds, name: &str, who: &str, quorum: u32, wait_ms: u64) -> EnterRequest {
    EnterRequest {
        request_id: Some(ids.next_id()),
        name: name.into(),
        participant: who.into(),
        parties: 3,
        quorum,
        timeout_ms: 30_000,
        wait_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_are_released_together_across_a_leader_crash() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let mut ids = RequestIds::new();
    let first = tokio::spawn(enter(
        clients(&cluster),
        0,
        request(&mut ids, "stage", "p1", 3, 20_000),
    ));
    let second = tokio::spawn(enter(
        clients(&cluster),
        1,
        request(&mut ids, "stage", "p2", 3, 20_000),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tracing::info!(leader, "kill the leader while two participants wait");
    cluster.kill(leader)?;
    let third = enter(
        clients(&cluster),
        2,
        request(&mut ids, "stage", "p3", 3, 20_000),
    )
    .await?;
    for answer in [first.await??, second.await??, third] {
        let barrier = answer.barrier.clone().unwrap_or_default();
        ensure!(answer.counted, "every participant counted: {answer:?}");
        ensure!(
            barrier.status == BarrierStatus::Released as i32,
            "released for everyone: {barrier:?}"
        );
        let mut arrived = barrier.arrived.clone();
        arrived.sort();
        ensure!(
            arrived == ["p1", "p2", "p3"],
            "each participant once: {barrier:?}"
        );
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_short_of_its_quorum_times_out_naming_who_arrived() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    cluster.leader().await?;
    let mut ids = RequestIds::new();
    let mut short = request(&mut ids, "short", "p1", 2, 10_000);
    short.timeout_ms = 1_000;
    let answer = enter(clients(&cluster), 0, short).await?;
    let barrier = answer.barrier.unwrap_or_default();
    ensure!(
        barrier.status == BarrierStatus::TimedOut as i32,
        "timed out at its deadline: {barrier:?}"
    );
    ensure!(barrier.arrived == ["p1"], "names who arrived: {barrier:?}");
    let late = enter(clients(&cluster), 1, request(&mut ids, "short", "p2", 2, 0)).await?;
    ensure!(
        !late.counted,
        "an Enter after the close does not count: {late:?}"
    );
    cluster.shutdown().await
}
