//! Cancellation reaches a running exec agent: its command is terminated and the task is CANCELED.

use anyhow::{ensure, Context as _};
use conclave_proto::v1::{CancelTaskRequest, TaskState};
use conclave_tests::fleet::{task_spec, tasks_client, ExecAgent, Fleet};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{process_exists, state, PUSH_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_running_exec_agent() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut fleet = Fleet::new(cluster.api_addrs());
    let pid_file = cluster.dir().join("command.pid");

    tracing::info!("an exec agent runs a command that would take two minutes");
    let script = format!("echo $$ > {}; exec sleep 120", pid_file.display());
    let agent = ExecAgent::start(&fleet, cluster.dir(), "sleeper", "nap", 1, &[], &script)?;
    let task_id = fleet
        .submit(task_spec("naps", b"", &["nap"]))
        .await?
        .task_id;
    let pid = eventually("the command started", PUSH_TIMEOUT, || async {
        Ok(std::fs::read_to_string(&pid_file)?.trim().parse::<u32>()?)
    })
    .await?;
    ensure!(process_exists(pid), "the command {pid} is not running");

    tracing::info!(task_id, pid, "cancel the task");
    let request = CancelTaskRequest {
        request_id: Some(fleet.next_request_id()),
        task_id,
        reason: "changed my mind".into(),
    };
    let canceled = fleet
        .retry("cancel", |addr| {
            let request = request.clone();
            async move {
                tasks_client(addr)
                    .cancel_task(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?
        .map_err(|status| anyhow::anyhow!(status))?;
    ensure!(canceled.canceled, "{canceled:?}");
    ensure!(
        canceled.previous_state == TaskState::Assigned as i32,
        "{canceled:?}"
    );

    tracing::info!("the agent hears of it and terminates the command");
    eventually("the command is gone", PUSH_TIMEOUT, || async {
        ensure!(!process_exists(pid), "process {pid} still runs");
        Ok(())
    })
    .await
    .with_context(|| format!("agent log:\n{}", agent.log()))?;
    let task = fleet.get_task(task_id).await?;
    ensure!(state(&task) == TaskState::Canceled, "{task:?}");
    ensure!(task.cancel_reason == "changed my mind", "{task:?}");

    tracing::info!("the agent is free again: the next task runs");
    let _ = std::fs::remove_file(&pid_file);
    let next = fleet
        .submit(task_spec("naps", b"", &["nap"]))
        .await?
        .task_id;
    eventually("the next task is assigned", PUSH_TIMEOUT, || async {
        let task = fleet.get_task(next).await?;
        ensure!(state(&task) == TaskState::Assigned, "{task:?}");
        Ok(())
    })
    .await?;
    let next_pid = eventually("the next command started", PUSH_TIMEOUT, || async {
        Ok(std::fs::read_to_string(&pid_file)?.trim().parse::<u32>()?)
    })
    .await?;
    // The command dies with its agent (dropped below); stop it by PID as well, in case it does not.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &next_pid.to_string()])
        .status();
    drop(agent);
    cluster.shutdown().await
}
