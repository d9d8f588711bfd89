//! Workflows on real nodes, driven as a user would through the client library: a pipeline whose
//! agents read the earlier steps' results, a fan-out joined by "at least 2" while two branches
//! never finish, and a fan-out across a leader crash that still completes once, every step
//! recorded once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_client::{
    parse_definition, AgentConfig, AgentEvent, AgentSession, Client, DefinitionFormat, Error,
    StartWorkflowOptions, Workflow, WorkflowBranchState, WorkflowEventKind, WorkflowState,
    WorkflowStepState, WorkflowWatchOptions,
};
use conclave_tests::{ClusterConfig, TestCluster};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;

/// Bound on a workflow reaching its end: liveness across a leader change, not performance.
const WORKFLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// What an agent does with a step payload: `Some(result)` completes the task, `None` holds it
/// (never answers; its lease is extended by nobody, so keep such tasks' leases long).
type Work = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

/// Every completion an agent had accepted: (task id, step, branch index).
type Completions = Arc<Mutex<Vec<(u64, String, u64)>>>;

fn client_of(cluster: &TestCluster) -> anyhow::Result<Client> {
    let endpoints: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.api_addr(id).to_string())
        .collect();
    Ok(Client::connect(endpoints)?)
}

/// An agent of the client library: each assignment's payload goes through `work` after `delay`;
/// a completion whose outcome is unknown is sent again (a second one after the first applied is
/// refused as lease lost, which is fine).
async fn spawn_agent(
    client: &Client,
    name: &str,
    delay: Duration,
    work: Work,
    completions: Completions,
) -> anyhow::Result<JoinHandle<()>> {
    let mut config = AgentConfig::new(name);
    config.max_concurrent = 8;
    let (session, mut events) = AgentSession::register(client, &config).await?;
    let session = Arc::new(session);
    Ok(tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let AgentEvent::Assignment(assignment) = event else {
                continue;
            };
            let session = Arc::clone(&session);
            let work = Arc::clone(&work);
            let completions = Arc::clone(&completions);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let payload: Value =
                    serde_json::from_slice(&assignment.payload).expect("step payloads are JSON");
                let Some(result) = work(&payload) else {
                    return;
                };
                let result = result.to_string().into_bytes();
                loop {
                    match session
                        .complete(assignment.task_id, assignment.fencing_token, result.clone())
                        .await
                    {
                        Ok(_) => {
                            let step = payload["step"].as_str().unwrap_or_default().to_string();
                            let branch = payload["branch"]["index"].as_u64().unwrap_or(0);
                            completions.lock().expect("not poisoned").push((
                                assignment.task_id,
                                step,
                                branch,
                            ));
                            return;
                        }
                        Err(Error::Indeterminate { .. }) | Err(Error::Unavailable { .. }) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    }))
}

/// Waits for the workflow to end, within WORKFLOW_TIMEOUT.
async fn wait(client: &Client, workflow_id: u64) -> anyhow::Result<Workflow> {
    tokio::time::timeout(WORKFLOW_TIMEOUT, client.wait_workflow(workflow_id))
        .await
        .with_context(|| format!("workflow {workflow_id} did not end in {WORKFLOW_TIMEOUT:?}"))?
        .map_err(Into::into)
}

fn step<'a>(workflow: &'a Workflow, name: &str) -> &'a conclave_client::WorkflowStepRun {
    workflow
        .steps
        .iter()
        .find(|s| s.name == name)
        .expect("the step exists")
}

fn json_of(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_and_partial_join() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    cluster.leader().await?;
    let client = client_of(&cluster)?;
    let completions: Completions = Arc::default();
    // Each step answers its name and what it saw of the steps before it; branches 2 and 3 of the
    // fan-out never answer.
    let work: Work = Arc::new(|payload: &Value| {
        let branch = payload["branch"]["index"].as_u64();
        if payload["step"] == "research" && branch.is_some_and(|b| b >= 2) {
            return None;
        }
        Some(json!({
            "step": payload["step"],
            "input": payload["input"],
            "saw": payload["results"],
            "branch": branch,
        }))
    });
    let agent = spawn_agent(
        &client,
        "worker",
        Duration::ZERO,
        work,
        Arc::clone(&completions),
    )
    .await?;

    tracing::info!("a three-step pipeline: each step receives the result of the one before");
    let pipeline = parse_definition(
        r#"
name: pipeline
steps:
  - {name: research, queue: research}
  - {name: write, after: [research], queue: write}
  - {name: edit, after: [write], queue: edit}
"#,
        DefinitionFormat::Yaml,
    )?;
    let started = client
        .start_workflow(
            pipeline,
            StartWorkflowOptions {
                input_json: r#"{"topic":"raft"}"#.into(),
                ..StartWorkflowOptions::default()
            },
        )
        .await?;
    let workflow = wait(&client, started.workflow_id).await?;
    ensure!(workflow.state() == WorkflowState::Succeeded, "{workflow:?}");
    let research = json_of(&step(&workflow, "research").result_json)?;
    let write = json_of(&step(&workflow, "write").result_json)?;
    let edit = json_of(&step(&workflow, "edit").result_json)?;
    ensure!(research["input"]["topic"] == "raft", "{research}");
    ensure!(write["saw"]["research"] == research, "{write}");
    ensure!(edit["saw"]["write"] == write, "{edit}");

    tracing::info!("a fan-out of 4 joined by at least 2: two branches succeed, two never answer");
    let fan_out = parse_definition(
        r#"
name: fan-out
steps:
  - name: research
    queue: research
    lease: 5m
    fan_out: {count: 4, join: {policy: at_least, k: 2}}
  - {name: aggregate, after: [research], queue: write}
"#,
        DefinitionFormat::Yaml,
    )?;
    let started = client
        .start_workflow(fan_out, StartWorkflowOptions::default())
        .await?;
    let workflow = wait(&client, started.workflow_id).await?;
    ensure!(workflow.state() == WorkflowState::Succeeded, "{workflow:?}");
    let research = step(&workflow, "research");
    let states: Vec<WorkflowBranchState> = research.branches.iter().map(|b| b.state()).collect();
    ensure!(
        states
            == [
                WorkflowBranchState::Succeeded,
                WorkflowBranchState::Succeeded,
                WorkflowBranchState::Canceled,
                WorkflowBranchState::Canceled
            ],
        "{states:?}"
    );
    let joined = json_of(&research.result_json)?;
    ensure!(
        joined["succeeded"] == 2 && joined["canceled"] == 2,
        "{joined}"
    );
    let aggregate = json_of(&step(&workflow, "aggregate").result_json)?;
    ensure!(aggregate["saw"]["research"] == joined, "{aggregate}");

    agent.abort();
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_fan_out() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let client = client_of(&cluster)?;
    let completions: Completions = Arc::default();
    let work: Work = Arc::new(|payload: &Value| {
        Some(json!({"step": payload["step"], "branch": payload["branch"]["index"]}))
    });
    // Slow enough that the leader dies with branches still running.
    let agent = spawn_agent(
        &client,
        "worker",
        Duration::from_millis(1500),
        work,
        Arc::clone(&completions),
    )
    .await?;
    let mut watch = client
        .watch_workflows(WorkflowWatchOptions::default())
        .await?;

    tracing::info!("a fan-out of 6 between two plain steps; SIGKILL the leader while it runs");
    let definition = parse_definition(
        r#"
name: fan-out-crash
steps:
  - {name: plan, queue: plan}
  - name: research
    after: [plan]
    queue: research
    fan_out: {count: 6}
  - {name: aggregate, after: [research], queue: write}
"#,
        DefinitionFormat::Yaml,
    )?;
    let started = client
        .start_workflow(definition, StartWorkflowOptions::default())
        .await?;
    let workflow_id = started.workflow_id;
    let deadline = tokio::time::Instant::now() + WORKFLOW_TIMEOUT;
    loop {
        let read = client.get_workflow(workflow_id).await?;
        if step(&read.workflow, "research").state() == WorkflowStepState::Running {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the fan-out never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(leader, "the fan-out runs: kill the leader");
    cluster.kill(leader)?;
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    ensure!(new_leader != leader);

    let workflow = wait(&client, workflow_id).await?;
    ensure!(workflow.state() == WorkflowState::Succeeded, "{workflow:?}");

    tracing::info!("every step recorded once: one task per branch, one join, one success each");
    let research = step(&workflow, "research");
    ensure!(research.branches.len() == 6, "{research:?}");
    let task_ids: BTreeSet<u64> = research.branches.iter().map(|b| b.task_id).collect();
    ensure!(
        task_ids.len() == 6 && !task_ids.contains(&0),
        "{task_ids:?}"
    );
    for (index, branch) in research.branches.iter().enumerate() {
        ensure!(
            branch.state() == WorkflowBranchState::Succeeded,
            "{branch:?}"
        );
        ensure!(
            json_of(&branch.result_json)?["branch"] == index,
            "{branch:?}"
        );
    }
    let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
    let mut joins = 0;
    let mut finished = 0;
    while finished == 0 {
        let event = tokio::time::timeout(WORKFLOW_TIMEOUT, watch.next())
            .await
            .context("the watch went quiet before FINISHED")?
            .context("the watch ended")??;
        if event.workflow_id != workflow_id {
            continue;
        }
        match event.kind() {
            WorkflowEventKind::StepSucceeded => *succeeded.entry(event.step).or_default() += 1,
            WorkflowEventKind::Joined => joins += 1,
            WorkflowEventKind::Finished => finished += 1,
            _ => {}
        }
    }
    let once: BTreeMap<String, usize> = ["aggregate", "plan", "research"]
        .into_iter()
        .map(|s| (s.to_string(), 1))
        .collect();
    ensure!(succeeded == once, "{succeeded:?}");
    ensure!(joins == 1, "{joins} joins");
    // A completion the agent saw accepted is one per task: no task was completed twice.
    let accepted = completions.lock().expect("not poisoned").clone();
    let distinct: BTreeSet<u64> = accepted.iter().map(|(task, _, _)| *task).collect();
    ensure!(distinct.len() == accepted.len(), "{accepted:?}");

    agent.abort();
    cluster.shutdown().await
}
