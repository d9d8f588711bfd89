//! A W3C `traceparent` given on Submit travels with the task: kept as its label, handed to the
//! agent in the assignment, and to the exec agent's command as TRACEPARENT, whose output (the
//! task's result) shows it arrived unchanged; the same from a workflow's start to its step's task.
//! A malformed one is refused by name.

use anyhow::{ensure, Context};
use conclave_client::{parse_definition, Client, DefinitionFormat};
use conclave_proto::v1::workflows_client::WorkflowsClient;
use conclave_proto::v1::{StartWorkflowRequest, SubmitRequest, TaskState};
use conclave_proto::{TRACEPARENT_LABEL, TRACEPARENT_METADATA};
use conclave_tests::channel;
use conclave_tests::fleet::{task_spec, tasks_client, ExecAgent, Fleet};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::SETTLE_TIMEOUT;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OTHER_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_traceparent_reaches_the_exec_agents_command() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    cluster.wait_for_leader(SETTLE_TIMEOUT).await?;
    let follower = cluster.followers().await?[0];
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!("an exec agent whose command prints $TRACEPARENT as the task's result");
    let _agent = ExecAgent::start(
        &fleet,
        cluster.dir(),
        "tracer",
        "trace",
        2,
        &[],
        "cat >/dev/null; printf '%s' \"${TRACEPARENT:-none}\"",
    )?;

    tracing::info!(
        follower,
        "submit with traceparent metadata to a follower, which forwards it"
    );
    let mut request = tonic::Request::new(SubmitRequest {
        request_id: Some(fleet.next_request_id()),
        task: Some(task_spec("traced", b"payload", &["trace"])),
    });
    request
        .metadata_mut()
        .insert(TRACEPARENT_METADATA, TRACEPARENT.parse()?);
    let traced = tasks_client(cluster.api_addr(follower))
        .submit(request)
        .await?
        .into_inner()
        .task_id;

    tracing::info!("submit through the client library, and one task without a traceparent");
    let client = Client::connect(cluster.api_addrs().values().map(|a| a.to_string()))?;
    let library = client
        .submit_traced(
            task_spec("traced", b"payload", &["trace"]),
            Some(OTHER_TRACEPARENT),
        )
        .await?
        .task_id;
    let untraced = fleet
        .submit(task_spec("traced", b"payload", &["trace"]))
        .await?
        .task_id;

    tracing::info!("each command saw its task's traceparent, and the task keeps it as a label");
    for (task_id, expected) in [
        (traced, Some(TRACEPARENT)),
        (library, Some(OTHER_TRACEPARENT)),
        (untraced, None),
    ] {
        let task = eventually(
            &format!("task {task_id} succeeded"),
            SETTLE_TIMEOUT,
            || async {
                let task = fleet.get_task(task_id).await?;
                ensure!(
                    task.state == TaskState::Succeeded as i32,
                    "task {task_id} is {:?}",
                    TaskState::try_from(task.state)
                );
                Ok(task)
            },
        )
        .await?;
        let result = String::from_utf8(task.result.clone()).context("the result is text")?;
        ensure!(
            result == expected.unwrap_or("none"),
            "task {task_id}: the command saw TRACEPARENT {result:?}, expected {expected:?}"
        );
        let label = task
            .spec
            .as_ref()
            .and_then(|spec| spec.labels.get(TRACEPARENT_LABEL));
        ensure!(
            label.map(String::as_str) == expected,
            "task {task_id}: label {label:?}"
        );
    }

    tracing::info!("a workflow started with a traceparent hands it to its step's task");
    let definition = parse_definition(
        "name: traced\nsteps:\n  - {name: only, queue: traced-steps, capabilities: [trace]}\n",
        DefinitionFormat::Yaml,
    )?;
    let mut request = tonic::Request::new(StartWorkflowRequest {
        request_id: Some(fleet.next_request_id()),
        definition: Some(definition),
        ..StartWorkflowRequest::default()
    });
    request
        .metadata_mut()
        .insert(TRACEPARENT_METADATA, TRACEPARENT.parse()?);
    WorkflowsClient::new(channel::channel(cluster.api_addr(follower), None))
        .start(request)
        .await?;
    let step_task = eventually("the step's task succeeded", SETTLE_TIMEOUT, || async {
        let tasks = fleet.list_queue("traced-steps").await?;
        let task = tasks.first().context("no step task yet")?;
        ensure!(
            task.state == TaskState::Succeeded as i32,
            "step task {task:?}"
        );
        Ok(task.clone())
    })
    .await?;
    ensure!(
        step_task.result == TRACEPARENT.as_bytes(),
        "the step's command saw TRACEPARENT {:?}",
        String::from_utf8_lossy(&step_task.result)
    );

    tracing::info!("a malformed traceparent is INVALID_ARGUMENT naming it, on metadata or label");
    let mut request = tonic::Request::new(SubmitRequest {
        request_id: Some(fleet.next_request_id()),
        task: Some(task_spec("traced", b"payload", &["trace"])),
    });
    request.metadata_mut().insert(
        TRACEPARENT_METADATA,
        "00-nothex-00f067aa0ba902b7-01".parse()?,
    );
    let refused = tasks_client(cluster.api_addr(follower))
        .submit(request)
        .await
        .expect_err("a malformed traceparent is refused");
    ensure!(
        refused.code() == tonic::Code::InvalidArgument && refused.message().contains("traceparent"),
        "metadata: {refused:?}"
    );
    let mut spec = task_spec("traced", b"payload", &["trace"]);
    spec.labels
        .insert(TRACEPARENT_LABEL.to_string(), "01-abc".to_string());
    let refused = tasks_client(cluster.api_addr(follower))
        .submit(SubmitRequest {
            request_id: Some(fleet.next_request_id()),
            task: Some(spec),
        })
        .await
        .expect_err("a malformed traceparent label is refused");
    ensure!(
        refused.code() == tonic::Code::InvalidArgument
            && refused.message().contains(TRACEPARENT_LABEL),
        "label: {refused:?}"
    );
    cluster.shutdown().await
}
