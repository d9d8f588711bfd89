//! An agent killed mid-task: its session expires, the task is assigned again (a greater fencing
//! token) and completes on another agent, while a completion with the old token is refused.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_proto::v1::{AttemptOutcome, TaskState};
use conclave_tests::fleet::{is_lease_lost, task_spec, ExecAgent, Fleet, TestAgent};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{process_exists, state, PUSH_TIMEOUT};

/// The exec agent's session TTL: short, so the test does not wait long for the expiry.
const TTL_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_task_completes_elsewhere() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut fleet = Fleet::new(cluster.api_addrs());
    let pid_file = cluster.dir().join("worker.pid");

    tracing::info!("an exec agent takes the task and works on it for a long time");
    let script = format!("echo $$ > {}; exec sleep 120", pid_file.display());
    let ttl = format!("{TTL_MS}ms");
    let mut doomed = ExecAgent::start(
        &fleet,
        cluster.dir(),
        "doomed",
        "work",
        1,
        &["--ttl", &ttl],
        &script,
    )?;
    let task_id = fleet
        .submit(task_spec("crash", b"payload", &["work"]))
        .await?
        .task_id;
    let first = eventually(
        "the task is assigned to the exec agent",
        PUSH_TIMEOUT,
        || async {
            let task = fleet.get_task(task_id).await?;
            let lease = task.lease.clone().context("no lease yet")?;
            ensure!(
                state(&task) == TaskState::Assigned && lease.agent == "doomed",
                "{task:?}"
            );
            Ok(lease)
        },
    )
    .await?;
    let worker_pid = eventually("the command started", PUSH_TIMEOUT, || async {
        let text = std::fs::read_to_string(&pid_file)?;
        Ok(text.trim().parse::<u32>()?)
    })
    .await?;

    tracing::info!(pid = doomed.pid(), worker_pid, "SIGKILL the agent");
    doomed.kill();
    let orphan = eventually("the command dies with its agent", PUSH_TIMEOUT, || async {
        ensure!(
            !process_exists(worker_pid),
            "process {worker_pid} still runs"
        );
        Ok(())
    })
    .await;
    // Whatever the outcome, the command must not outlive the test: stop it by PID.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &worker_pid.to_string()])
        .status();
    orphan?;

    tracing::info!("a second agent gets the task once the dead agent's session expires");
    let mut rescuer = TestAgent::register(&fleet, "rescuer", &["work"], 1, 10_000).await?;
    rescuer.connect(2).await?;
    let assignment = rescuer
        .next_assignment(Duration::from_millis(TTL_MS) + Duration::from_secs(10))
        .await?;
    ensure!(assignment.task_id == task_id, "assigned {assignment:?}");
    ensure!(
        assignment.attempt == 2,
        "the lost attempt must count: {assignment:?}"
    );
    ensure!(
        assignment.fencing_token > first.fencing_token,
        "the new token {} must exceed the old {}",
        assignment.fencing_token,
        first.fencing_token
    );

    tracing::info!("a completion with the dead agent's token is refused and changes nothing");
    let stale = rescuer
        .complete(task_id, first.fencing_token, b"stale result")
        .await?;
    let status = stale.err().context("a stale completion was accepted")?;
    ensure!(
        is_lease_lost(&status),
        "expected lease lost, got {status:?}"
    );
    let task = fleet.get_task(task_id).await?;
    ensure!(state(&task) == TaskState::Assigned, "{task:?}");
    ensure!(task.lease.as_ref().map(|l| l.fencing_token) == Some(assignment.fencing_token));

    tracing::info!("the current holder completes it");
    rescuer
        .complete(task_id, assignment.fencing_token, b"rescued")
        .await?
        .map_err(|status| anyhow::anyhow!(status).context("current completion refused"))?;
    let task = fleet.get_task(task_id).await?;
    ensure!(
        state(&task) == TaskState::Succeeded && task.result == b"rescued",
        "{task:?}"
    );
    ensure!(task.history.len() == 2, "{:?}", task.history);
    ensure!(
        task.history[0].outcome == AttemptOutcome::SessionLost as i32,
        "{:?}",
        task.history[0]
    );
    ensure!(
        task.history[1].outcome == AttemptOutcome::Succeeded as i32,
        "{:?}",
        task.history[1]
    );

    tracing::info!("and the old token still cannot complete it again");
    let again = rescuer
        .complete(task_id, first.fencing_token, b"stale again")
        .await?;
    ensure!(again.as_ref().err().is_some_and(is_lease_lost), "{again:?}");
    cluster.shutdown().await
}
