//! Manager-worker trees on real nodes, with exec agents as a user runs them: a manager's command
//! delegates with `conclave task delegate --wait` and gets its workers' results and an escalated
//! dead letter; canceling the workflow whose step the manager runs cancels its subtree; and a
//! paused manager (SIGSTOP: its heartbeats stop) loses its lease and with it the subtree.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_client::{
    parse_definition, Client, DefinitionFormat, StartWorkflowOptions, TaskListOptions,
    WorkflowState,
};
use conclave_proto::v1::{AttemptOutcome, Task, TaskState};
use conclave_tests::fleet::{cli_binary, task_spec, ExecAgent, Fleet};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};
use serde_json::Value;

use crate::{state, DRAIN_TIMEOUT};

fn client_of(cluster: &TestCluster) -> anyhow::Result<Client> {
    let endpoints: Vec<String> = cluster
        .api_addrs()
        .values()
        .map(|addr| addr.to_string())
        .collect();
    Ok(Client::connect(endpoints)?)
}

/// The children of `parent`, in id order.
async fn children(client: &Client, parent: u64) -> anyhow::Result<Vec<Task>> {
    Ok(client
        .list_all_tasks(TaskListOptions {
            parent_id: parent,
            ..TaskListOptions::default()
        })
        .await?)
}

/// Waits until `parent` has `count` children, all assigned to agents.
async fn children_running(client: &Client, parent: u64, count: usize) -> anyhow::Result<Vec<Task>> {
    eventually("the delegated tasks run", DRAIN_TIMEOUT, || async {
        let tasks = children(client, parent).await?;
        let running = tasks
            .iter()
            .filter(|t| state(t) == TaskState::Assigned)
            .count();
        ensure!(running == count, "{running} of {count} running: {tasks:?}");
        Ok(tasks)
    })
    .await
}

/// Waits until every child of `parent` is canceled, with `reason`; and its agent was told.
async fn subtree_canceled(client: &Client, parent: u64, reason: &str) -> anyhow::Result<()> {
    let tasks = eventually("the subtree is canceled", DRAIN_TIMEOUT, || async {
        let tasks = children(client, parent).await?;
        ensure!(
            tasks.iter().all(|t| state(t) == TaskState::Canceled),
            "{tasks:?}"
        );
        Ok(tasks)
    })
    .await?;
    for task in tasks {
        ensure!(task.cancel_reason == reason, "{task:?}");
        let last = task.history.last().context("the child ran")?;
        ensure!(last.outcome() == AttemptOutcome::Canceled, "{task:?}");
    }
    Ok(())
}

/// A manager command that delegates `children` to `work` agents and waits for them; its result
/// is their outcomes, one JSON line each (`|| true`: a child that did not succeed is news for
/// the manager, not a failure of its own).
fn manager_script(children: &str, extra: &str) -> anyhow::Result<String> {
    Ok(format!(
        "cat >/dev/null; '{}' task delegate work {children} --capability work {extra} --wait \
         --max-wait 60s || true",
        cli_binary()?.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_gets_its_workers_results_and_an_escalated_dead_letter() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut fleet = Fleet::new(cluster.api_addrs());
    let client = client_of(&cluster)?;
    let dir = cluster.dir();
    tracing::info!("a manager, a worker that refuses `fail`, a senior who handles escalations");
    let script = manager_script("a b fail", "--max-attempts 1 --escalate-to senior")?;
    let _manager = ExecAgent::start(&fleet, dir, "manager", "manage", 1, &[], &script)?;
    let worker = "p=$(cat); if [ \"$p\" = fail ]; then echo cannot >&2; exit 2; fi; \
                  echo \"\\\"did $p\\\"\"";
    let _worker = ExecAgent::start(&fleet, dir, "worker", "work", 4, &[], worker)?;
    let senior = "cat >/dev/null; echo '\"handled\"'";
    let _senior = ExecAgent::start(&fleet, dir, "senior", "senior", 1, &[], senior)?;

    let manager = fleet
        .submit(task_spec("reports", b"split it", &["manage"]))
        .await?
        .task_id;
    let waited = client.wait_task(manager, DRAIN_TIMEOUT).await?;
    ensure!(waited.terminal, "{:?}", waited.task);
    let task = waited.task;
    ensure!(state(&task) == TaskState::Succeeded, "{task:?}");
    let tasks = children(&client, manager).await?;
    ensure!(
        tasks.len() == 4,
        "three delegated and one escalation: {tasks:?}"
    );
    let by_payload = |payload: &str| {
        tasks
            .iter()
            .find(|t| {
                t.spec
                    .as_ref()
                    .is_some_and(|s| s.payload == payload.as_bytes())
            })
            .with_context(|| format!("no child {payload}"))
    };
    for name in ["a", "b"] {
        let child = by_payload(name)?;
        ensure!(state(child) == TaskState::Succeeded, "{child:?}");
        let result = String::from_utf8_lossy(&child.result);
        ensure!(result.trim() == format!("\"did {name}\""), "{child:?}");
    }
    let failed = by_payload("fail")?;
    ensure!(state(failed) == TaskState::DeadLettered, "{failed:?}");
    let delegation = failed.delegation.as_ref().context("delegated")?;
    let handler = tasks
        .iter()
        .find(|t| t.id == delegation.escalation_task_id)
        .context("the escalation task is a child too")?;
    ensure!(state(handler) == TaskState::Succeeded, "{handler:?}");
    let payload: Value = serde_json::from_slice(&handler.spec.as_ref().unwrap().payload)?;
    ensure!(payload["escalated_task_id"] == failed.id, "{payload}");
    ensure!(payload["payload"] == "fail", "{payload}");

    tracing::info!("the manager's command printed every outcome, the escalation's included");
    let outcomes: Vec<Value> = String::from_utf8_lossy(&task.result)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(outcomes.len() == 4, "{outcomes:?}");
    let outcome_of = |id: u64| outcomes.iter().find(|o| o["task_id"] == id);
    let refused = outcome_of(failed.id).context("the dead letter's outcome")?;
    ensure!(refused["state"] == "dead_lettered", "{refused}");
    ensure!(refused["escalated_to"] == handler.id, "{refused}");
    let handled = outcome_of(handler.id).context("the escalation's outcome")?;
    ensure!(handled["result"] == "handled", "{handled}");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_the_workflow_cancels_the_managers_subtree() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let fleet = Fleet::new(cluster.api_addrs());
    let client = client_of(&cluster)?;
    let dir = cluster.dir();
    let script = manager_script("x y", "")?;
    let _manager = ExecAgent::start(&fleet, dir, "manager", "manage", 1, &[], &script)?;
    let _worker = ExecAgent::start(&fleet, dir, "worker", "work", 4, &[], "sleep 600")?;
    let definition = parse_definition(
        "name: managed\nsteps:\n  - {name: manage, queue: manage, capabilities: [manage]}\n",
        DefinitionFormat::Yaml,
    )?;
    let started = client
        .start_workflow(definition, StartWorkflowOptions::default())
        .await?;
    let id = started.workflow_id;
    let manager = eventually("the manager's step runs", DRAIN_TIMEOUT, || async {
        let workflow = client.get_workflow(id).await?.workflow;
        let task_id = workflow.steps[0].branches.first().map_or(0, |b| b.task_id);
        ensure!(task_id != 0, "{workflow:?}");
        Ok(task_id)
    })
    .await?;
    children_running(&client, manager, 2).await?;

    tracing::info!("cancel the workflow: its step's task, and so the subtree");
    client.cancel_workflow(id, "not needed").await?;
    subtree_canceled(
        &client,
        manager,
        &format!("its manager, task {manager}, was canceled"),
    )
    .await?;
    let workflow = client.get_workflow(id).await?.workflow;
    ensure!(workflow.state() == WorkflowState::Canceled, "{workflow:?}");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_manager_loses_its_lease_and_its_subtree() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let mut fleet = Fleet::new(cluster.api_addrs());
    let client = client_of(&cluster)?;
    let dir = cluster.dir();
    let script = manager_script("x y", "")?;
    let mut manager_agent = ExecAgent::start(
        &fleet,
        dir,
        "manager",
        "manage",
        1,
        &["--ttl", "2s"],
        &script,
    )?;
    let _worker = ExecAgent::start(&fleet, dir, "worker", "work", 4, &[], "sleep 600")?;
    let mut spec = task_spec("reports", b"split it", &["manage"]);
    spec.max_attempts = 1;
    let manager = fleet.submit(spec).await?.task_id;
    children_running(&client, manager, 2).await?;

    tracing::info!("SIGSTOP the manager agent: its heartbeats stop, its session expires");
    let pid = manager_agent.pid().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()?;
    ensure!(stopped.success(), "kill -STOP {pid}");
    let reason = format!("its manager, task {manager}, lost its lease (its agent's session ended)");
    let result = subtree_canceled(&client, manager, &reason).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    manager_agent.interrupt(Duration::from_secs(5))?;
    result?;
    let task = client.get_task(manager).await?.task;
    let last = task.history.last().context("the manager ran")?;
    ensure!(last.outcome() == AttemptOutcome::SessionLost, "{task:?}");
    cluster.shutdown().await
}
