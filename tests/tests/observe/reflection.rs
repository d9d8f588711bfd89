//! gRPC server reflection, as grpcurl uses it: the services listed, and a service's descriptor
//! found by its name.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use conclave_tests::channel;
use conclave_tests::{ClusterConfig, TestCluster};
use prost::Message;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_and_describes_them() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(1)).await?;
    let addr = cluster.api_addr(1);
    let mut client =
        ServerReflectionClient::new(channel::channel(addr, Some(Duration::from_secs(5))));

    tracing::info!("list the services, then ask for the file that defines conclave.v1.Tasks");
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("conclave.v1.Tasks".to_string()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await?
        .into_inner();

    let listed = responses
        .message()
        .await?
        .context("no answer to ListServices")?;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        bail!("ListServices answered {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "conclave.v1.KV",
        "conclave.v1.Cluster",
        "conclave.v1.Tasks",
        "conclave.v1.Agents",
        "conclave.v1.Decisions",
        "conclave.v1.Locks",
        "conclave.v1.Elections",
        "conclave.v1.Barriers",
        "conclave.v1.Workflows",
        "conclave.v1.Topics",
        "conclave.v1.Transactions",
        "grpc.health.v1.Health",
    ] {
        ensure!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    ensure!(
        !names.iter().any(|n| n == "conclave.v1.RaftPeer"),
        "the peer service is listed on the API address: {names:?}"
    );

    let described = responses
        .message()
        .await?
        .context("no answer to FileContainingSymbol")?;
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        bail!("FileContainingSymbol answered {described:?}");
    };
    let mut found = false;
    for bytes in &files.file_descriptor_proto {
        let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())?;
        if file.package() == "conclave.v1" && file.service.iter().any(|s| s.name() == "Tasks") {
            let tasks = file
                .service
                .iter()
                .find(|s| s.name() == "Tasks")
                .expect("found");
            ensure!(
                tasks.method.iter().any(|m| m.name() == "Submit"),
                "Tasks without Submit"
            );
            found = true;
        }
    }
    ensure!(
        found,
        "no descriptor of conclave.v1.Tasks among {} files",
        files.file_descriptor_proto.len()
    );
    cluster.shutdown().await
}
