//! Many tasks over three exec agents: every task completes, each exactly once.

use std::collections::BTreeMap;

use anyhow::ensure;
use conclave_proto::v1::{AttemptOutcome, TaskState};
use conclave_tests::fleet::{task_spec, ExecAgent, Fleet};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{state, DRAIN_TIMEOUT};

const TASKS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_over_three_exec_agents() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut fleet = Fleet::new(cluster.api_addrs());
    let ledger = cluster.dir().join("ledger");

    tracing::info!("start three exec agents; each run appends its task id to one ledger file");
    // Lines shorter than PIPE_BUF appended with O_APPEND never interleave.
    let script = format!(
        "cat >/dev/null; echo \"$CONCLAVE_TASK_ID $CONCLAVE_FENCING_TOKEN\" >> {}; echo \"done $CONCLAVE_TASK_ID\"",
        ledger.display()
    );
    let mut agents = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        agents.push(ExecAgent::start(
            &fleet,
            cluster.dir(),
            name,
            "work",
            4,
            &[],
            &script,
        )?);
    }

    tracing::info!(tasks = TASKS, "submit the tasks");
    let mut ids = Vec::new();
    for index in 0..TASKS {
        let payload = format!("task {index}");
        let submitted = fleet
            .submit(task_spec("jobs", payload.as_bytes(), &["work"]))
            .await?;
        ensure!(
            !submitted.existing,
            "a task without idempotency key was found existing"
        );
        ids.push(submitted.task_id);
    }

    tracing::info!("every task must succeed");
    let tasks = eventually("every task succeeded", DRAIN_TIMEOUT, || async {
        let tasks = fleet.list_queue("jobs").await?;
        let done = tasks
            .iter()
            .filter(|t| state(t) == TaskState::Succeeded)
            .count();
        ensure!(done == TASKS, "{done} of {TASKS} succeeded");
        Ok(tasks)
    })
    .await?;

    tracing::info!("each exactly once: one attempt, one ledger line, the agent's own result");
    let mut per_agent: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        ensure!(
            ids.contains(&task.id),
            "task {} was never submitted",
            task.id
        );
        ensure!(
            task.attempts == 1,
            "task {} took {} attempts",
            task.id,
            task.attempts
        );
        ensure!(
            task.history.len() == 1,
            "task {} has {} attempts in its log",
            task.id,
            task.history.len()
        );
        let attempt = &task.history[0];
        ensure!(
            attempt.outcome == AttemptOutcome::Succeeded as i32,
            "task {}: {attempt:?}",
            task.id
        );
        ensure!(
            task.result == format!("done {}\n", task.id).into_bytes(),
            "task {} result {:?}",
            task.id,
            String::from_utf8_lossy(&task.result)
        );
        *per_agent.entry(attempt.agent.clone()).or_default() += 1;
    }
    let ledger = std::fs::read_to_string(&ledger)?;
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for line in ledger.lines() {
        let id: u64 = line.split_whitespace().next().unwrap_or("").parse()?;
        *runs.entry(id).or_default() += 1;
    }
    for id in &ids {
        ensure!(
            runs.get(id) == Some(&1),
            "task {id} ran {:?} times",
            runs.get(id)
        );
    }
    ensure!(runs.len() == TASKS, "the ledger names {} tasks", runs.len());
    tracing::info!(?per_agent, "tasks per agent");
    ensure!(
        per_agent.len() >= 2,
        "one agent did all the work: {per_agent:?}"
    );

    drop(agents);
    cluster.shutdown().await
}
