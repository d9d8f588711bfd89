//! The standard gRPC health service (`grpc.health.v1.Health`), as Kubernetes probes and
//! grpc_health_probe ask it: NOT_SERVING before a node knows a leader, SERVING once the cluster
//! has one and the node caught up, NOT_SERVING on a leader that lost its quorum.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::ensure;
use conclave_tests::channel;
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::SETTLE_TIMEOUT;

async fn check(addr: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(channel::channel(addr, Some(Duration::from_secs(2))));
    let response = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}

async fn wait_for(addr: SocketAddr, node: u64, want: ServingStatus) -> anyhow::Result<()> {
    eventually(&format!("node {node} {want:?}"), SETTLE_TIMEOUT, || async {
        for service in ["", "conclave.v1.KV", "conclave.v1.Tasks"] {
            let status = check(addr, service).await?;
            ensure!(
                status == want,
                "node {node} service {service:?}: {status:?}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_leader_catch_up_and_quorum() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterConfig::new(3)).await?;
    let addrs = cluster.api_addrs();

    tracing::info!("pristine nodes know no leader: NOT_SERVING, for the server and each service");
    for (&node, &addr) in &addrs {
        for service in ["", "conclave.v1.KV", "conclave.v1.Tasks"] {
            let status = check(addr, service).await?;
            ensure!(
                status == ServingStatus::NotServing,
                "pristine node {node} service {service:?}: {status:?}"
            );
        }
    }

    tracing::info!("a service the node does not serve is NOT_FOUND, as the protocol says");
    let unknown = check(addrs[&1], "no.such.Service").await;
    ensure!(
        matches!(&unknown, Err(status) if status.code() == tonic::Code::NotFound),
        "unknown service: {unknown:?}"
    );

    tracing::info!("initialize: every node learns the leader, catches up and turns SERVING");
    cluster.initialize().await?;
    let leader = cluster.wait_for_leader(SETTLE_TIMEOUT).await?;
    for (&node, &addr) in &addrs {
        wait_for(addr, node, ServingStatus::Serving).await?;
    }

    tracing::info!(
        "under a steady stream of writes no node turns NOT_SERVING (applying lags by a moment)"
    );
    let client = conclave_client::Client::connect(addrs.values().map(|a| a.to_string()))?;
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let client = client.clone();
            tokio::spawn(async move {
                for put in 0..60 {
                    client
                        .put(format!("load/{writer}/{put}"), vec![0u8; 100])
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut checks = 0;
    while !writers.iter().all(|writer| writer.is_finished()) {
        for (&node, &addr) in &addrs {
            let status = check(addr, "").await?;
            ensure!(
                status == ServingStatus::Serving,
                "node {node} turned {status:?} under load"
            );
            checks += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for writer in writers {
        writer.await??;
    }
    tracing::info!(checks, "every check during the writes said SERVING");

    tracing::info!(
        leader,
        "pause both followers: the leader, without a quorum, turns NOT_SERVING"
    );
    let followers = cluster.followers().await?;
    for &follower in &followers {
        cluster.pause(follower)?;
    }
    wait_for(addrs[&leader], leader, ServingStatus::NotServing).await?;

    tracing::info!("resume them: the leader (this one or a new one) serves again, and so do all");
    for &follower in &followers {
        cluster.resume(follower)?;
    }
    cluster.wait_for_leader(SETTLE_TIMEOUT).await?;
    for (&node, &addr) in &addrs {
        wait_for(addr, node, ServingStatus::Serving).await?;
    }
    cluster.shutdown().await
}
