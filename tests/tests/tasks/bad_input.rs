//! Bad task and agent input is INVALID_ARGUMENT naming the field, on leader and follower alike,
//! and changes nothing; an unknown queue name is fine.

use anyhow::ensure;
use conclave_proto::limits::MAX_PAYLOAD_BYTES;
use conclave_proto::v1::{
    CompleteRequest, ListTasksRequest, RegisterRequest, SubmitRequest, TaskSpec,
};
use conclave_tests::fleet::{agents_client, task_spec, tasks_client, Fleet};
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_bad_input_is_rejected() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.followers().await?[0];
    let mut fleet = Fleet::new(cluster.api_addrs());

    let good = || task_spec("bad-input", b"ok", &["work"]);
    let cases: Vec<(&str, &str, TaskSpec)> = vec![
        (
            "payload one byte over the limit",
            "payload",
            TaskSpec {
                payload: vec![0; MAX_PAYLOAD_BYTES + 1],
                ..good()
            },
        ),
        (
            "an empty capability name",
            "capabilities",
            TaskSpec {
                capabilities: vec![String::new()],
                ..good()
            },
        ),
        (
            "priority above the range",
            "priority",
            TaskSpec {
                priority: 1001,
                ..good()
            },
        ),
        (
            "priority below the range",
            "priority",
            TaskSpec {
                priority: -1001,
                ..good()
            },
        ),
        (
            "an empty queue name",
            "queue",
            TaskSpec {
                queue: String::new(),
                ..good()
            },
        ),
        (
            "a queue name with a space",
            "queue",
            TaskSpec {
                queue: "no spaces".into(),
                ..good()
            },
        ),
        (
            "too many attempts",
            "max_attempts",
            TaskSpec {
                max_attempts: 101,
                ..good()
            },
        ),
    ];
    for node in [leader, follower] {
        for (what, field, spec) in &cases {
            tracing::info!(
                node,
                what,
                "submit must be INVALID_ARGUMENT naming `{field}`"
            );
            let status = tasks_client(fleet.addr(node))
                .submit(SubmitRequest {
                    request_id: Some(fleet.next_request_id()),
                    task: Some(spec.clone()),
                })
                .await
                .expect_err(what);
            ensure!(status.code() == Code::InvalidArgument, "{what}: {status:?}");
            ensure!(
                status.message().contains(field),
                "{what}: {:?} does not name {field}",
                status.message()
            );
        }

        tracing::info!(node, "a zero (malformed) fencing token is INVALID_ARGUMENT");
        let status = agents_client(fleet.addr(node))
            .complete(CompleteRequest {
                request_id: Some(fleet.next_request_id()),
                task_id: 1,
                fencing_token: 0,
                result: Vec::new(),
                fence: None,
            })
            .await
            .expect_err("token 0");
        ensure!(
            status.code() == Code::InvalidArgument && status.message().contains("fencing_token"),
            "{status:?}"
        );

        tracing::info!(
            node,
            "an agent with an empty capability or name is INVALID_ARGUMENT"
        );
        for (field, request) in [
            (
                "capabilities",
                RegisterRequest {
                    name: "bad".into(),
                    capabilities: vec![String::new()],
                    ..RegisterRequest::default()
                },
            ),
            (
                "name",
                RegisterRequest {
                    name: String::new(),
                    capabilities: vec!["work".into()],
                    ..RegisterRequest::default()
                },
            ),
        ] {
            let request = RegisterRequest {
                request_id: Some(fleet.next_request_id()),
                ..request
            };
            let status = agents_client(fleet.addr(node))
                .register(request)
                .await
                .expect_err(field);
            ensure!(
                status.code() == Code::InvalidArgument && status.message().contains(field),
                "{status:?}"
            );
        }
    }

    tracing::info!("nothing was stored by any of it");
    let listed = tasks_client(fleet.addr(leader))
        .list_tasks(ListTasksRequest::default())
        .await?
        .into_inner();
    ensure!(listed.tasks.is_empty(), "tasks exist: {:?}", listed.tasks);

    tracing::info!("an unknown queue name is fine, and so is a payload of exactly the limit");
    let created = fleet
        .submit(task_spec("brand-new-queue", b"hello", &[]))
        .await?;
    let big = fleet
        .submit(TaskSpec {
            payload: vec![7; MAX_PAYLOAD_BYTES],
            ..good()
        })
        .await?;
    ensure!(fleet.get_task(created.task_id).await?.spec.is_some());
    ensure!(
        fleet
            .get_task(big.task_id)
            .await?
            .spec
            .map(|s| s.payload.len())
            == Some(MAX_PAYLOAD_BYTES)
    );
    cluster.shutdown().await
}
