//! The leader killed during a burst of submissions and completions: afterwards every acknowledged
//! submission is finished or still queued, none is lost, and none was accepted as completed twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_proto::v1::{AttemptOutcome, TaskState};
use conclave_tests::fleet::{is_lease_lost, task_spec, Fleet, TestAgent};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{state, DRAIN_TIMEOUT};

const TASKS: usize = 120;

/// Accepted completions per task, as the agents saw them.
type Accepted = Arc<Mutex<BTreeMap<u64, Vec<u64>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_burst() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let followers = cluster.followers().await?;
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!(
        ?followers,
        "two agents, streaming from the followers, complete whatever they get"
    );
    let accepted: Accepted = Arc::default();
    let mut workers = Vec::new();
    for (index, node) in followers.iter().enumerate() {
        let mut agent =
            TestAgent::register(&fleet, &format!("worker-{index}"), &["burst"], 8, 10_000).await?;
        agent.connect(*node).await?;
        let accepted = accepted.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Ok(assignment) = agent.next_assignment(Duration::from_secs(120)).await else {
                    return agent;
                };
                match agent
                    .complete(assignment.task_id, assignment.fencing_token, b"ok")
                    .await
                {
                    Ok(Ok(_)) => accepted
                        .lock()
                        .expect("lock")
                        .entry(assignment.task_id)
                        .or_default()
                        .push(assignment.fencing_token),
                    Ok(Err(status)) if is_lease_lost(&status) => {
                        tracing::info!(task = assignment.task_id, %status, "completion fenced off")
                    }
                    Ok(Err(status)) => panic!("completion refused: {status:?}"),
                    Err(error) => tracing::warn!(%error, "completion without a definite answer"),
                }
            }
        }));
    }

    tracing::info!(
        tasks = TASKS,
        leader,
        "submit a burst and SIGKILL the leader a third of the way in"
    );
    let mut acknowledged = BTreeSet::new();
    for index in 0..TASKS {
        if index == TASKS / 3 {
            cluster.kill(leader)?;
        }
        let submitted = fleet
            .submit(task_spec(
                "burst",
                format!("{index}").as_bytes(),
                &["burst"],
            ))
            .await?;
        ensure!(
            acknowledged.insert(submitted.task_id),
            "task id {} acknowledged twice",
            submitted.task_id
        );
    }

    tracing::info!("bring the old leader back; every acknowledged task must finish");
    cluster.restart(leader).await?;
    let tasks = eventually(
        "every acknowledged task succeeded",
        DRAIN_TIMEOUT,
        || async {
            let tasks = fleet.list_queue("burst").await?;
            let done = tasks
                .iter()
                .filter(|t| state(t) == TaskState::Succeeded)
                .count();
            ensure!(
                done == acknowledged.len(),
                "{done} of {} succeeded",
                acknowledged.len()
            );
            Ok(tasks)
        },
    )
    .await?;

    tracing::info!("nothing lost, nothing unexpected, at most one accepted completion per task");
    let listed: BTreeSet<u64> = tasks.iter().map(|t| t.id).collect();
    ensure!(
        listed == acknowledged,
        "listed {listed:?} != acknowledged {acknowledged:?}"
    );
    let accepted = accepted.lock().expect("lock").clone();
    for task in &tasks {
        let successes = task
            .history
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Succeeded as i32)
            .count();
        ensure!(
            successes == 1,
            "task {} has {successes} successful attempts",
            task.id
        );
        let tokens = accepted
            .get(&task.id)
            .context(format!("no agent saw task {} accepted", task.id))?;
        ensure!(
            tokens.len() == 1,
            "task {} accepted {} completions: {tokens:?}",
            task.id,
            tokens.len()
        );
    }
    for worker in workers {
        worker.abort();
    }
    cluster.shutdown().await
}
