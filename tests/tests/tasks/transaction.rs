//! The cross-primitive transaction on real nodes: the transactional outbox (an agent completes
//! its task, writes its result key and submits the follow-up in one transaction), a stale token's
//! transaction that applies nothing, and `conclave txn FILE` from the command line.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_client::{
    AgentConfig, AgentEvent, AgentEvents, AgentSession, Client, Error, Found, OpOutcome,
    TaskListOptions, TaskSpec, TaskState, TopicOptions,
};
use conclave_tests::fleet::cli_binary;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::{state, PUSH_TIMEOUT};

fn client_of(cluster: &TestCluster) -> anyhow::Result<Client> {
    let endpoints: Vec<String> = cluster
        .api_addrs()
        .values()
        .map(|addr| addr.to_string())
        .collect();
    Ok(Client::connect(endpoints)?)
}

/// The next assignment on the session: (task id, fencing token).
async fn next_assignment(events: &mut AgentEvents) -> anyhow::Result<(u64, u64)> {
    let deadline = tokio::time::Instant::now() + PUSH_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no assignment in time")?
            .context("the session ended")?;
        if let AgentEvent::Assignment(task) = event {
            return Ok((task.task_id, task.fencing_token));
        }
    }
}

async fn tasks_of(client: &Client, queue: &str) -> anyhow::Result<Vec<conclave_client::Task>> {
    Ok(client
        .list_all_tasks(TaskListOptions {
            queue: queue.to_string(),
            ..TaskListOptions::default()
        })
        .await?)
}

fn spec(queue: &str, payload: &str) -> TaskSpec {
    TaskSpec {
        queue: queue.to_string(),
        payload: payload.as_bytes().to_vec(),
        ..TaskSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transactional_outbox_applies_all_or_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let client = client_of(&cluster)?;
    let mut config = AgentConfig::new("writer");
    config.ttl = Duration::from_secs(30);
    let (session, mut events) = AgentSession::register(&client, &config).await?;
    let task_id = client.submit(spec("drafts", "chapter 1")).await?.task_id;
    let (assigned, stale) = next_assignment(&mut events).await?;
    ensure!(assigned == task_id);

    tracing::info!("the agent gives the task back and gets it again: its first token is stale");
    session.release(task_id, stale).await?;
    let (assigned, token) = next_assignment(&mut events).await?;
    ensure!(
        assigned == task_id && token > stale,
        "{token} after {stale}"
    );

    tracing::info!(
        "the stale token's transaction is refused at its completion and applies nothing"
    );
    let refused = client
        .transaction()
        .complete_task(task_id, stale, "late draft")
        .put("results/chapter-1", "late draft")
        .submit(spec("reviews", "chapter 1"))
        .commit()
        .await;
    match refused {
        Err(Error::OpRefused { index: 0, error }) if error.is_lease_lost() => {}
        other => anyhow::bail!("expected the completion refused as lease lost: {other:?}"),
    }
    ensure!(client.get("results/chapter-1").await?.kv.is_none());
    ensure!(tasks_of(&client, "reviews").await?.is_empty());
    let task = client.get_task(task_id).await?.task;
    ensure!(state(&task) == TaskState::Assigned, "{task:?}");

    tracing::info!(
        "the current token's transaction completes, writes and submits, at one revision"
    );
    let committed = client
        .transaction()
        .compare_task(task_id, TaskState::Assigned, token)
        .compare_key("results/chapter-1", 0)
        .complete_task(task_id, token, "draft")
        .put("results/chapter-1", "draft")
        .submit(spec("reviews", "chapter 1"))
        .commit()
        .await?;
    ensure!(committed.succeeded, "{committed:?}");
    let [OpOutcome::TaskCompleted { .. }, OpOutcome::Put, OpOutcome::TaskSubmitted {
        task_id: review,
        existing: false,
    }] = committed.results.as_slice()
    else {
        anyhow::bail!("one result per op: {:?}", committed.results);
    };
    let task = client.get_task(task_id).await?.task;
    ensure!(
        state(&task) == TaskState::Succeeded && task.result == b"draft",
        "{task:?}"
    );
    let written = client
        .get("results/chapter-1")
        .await?
        .kv
        .context("written")?;
    ensure!(
        written.mod_revision == committed.header.revision,
        "{written:?}"
    );
    let reviews = tasks_of(&client, "reviews").await?;
    ensure!(
        reviews.len() == 1 && reviews[0].id == *review,
        "{reviews:?}"
    );

    tracing::info!("the same compares now fail, each named with what it found, and apply nothing");
    let again = client
        .transaction()
        .compare_task(task_id, TaskState::Assigned, token)
        .compare_key("results/chapter-1", 0)
        .submit(spec("reviews", "chapter 1 again"))
        .commit()
        .await?;
    ensure!(!again.succeeded, "{again:?}");
    let found: Vec<&Found> = again.failed_compares.iter().map(|f| &f.found).collect();
    ensure!(
        found
            == [
                &Found::Task {
                    state: Some(TaskState::Succeeded),
                    fencing_token: 0
                },
                &Found::ModRevision(written.mod_revision),
            ],
        "{again:?}"
    );
    ensure!(tasks_of(&client, "reviews").await?.len() == 1);
    session.close().await?;
    Ok(())
}

/// Runs `conclave txn FILE` against the cluster: (exit code, stdout, stderr).
fn conclave_txn(
    cluster: &TestCluster,
    file: &std::path::Path,
) -> anyhow::Result<(i32, String, String)> {
    let endpoints: Vec<String> = cluster
        .api_addrs()
        .values()
        .map(|addr| addr.to_string())
        .collect();
    let output = std::process::Command::new(cli_binary()?)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .arg("txn")
        .arg(file)
        .output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclave_txn_runs_a_script_round_trip() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let client = client_of(&cluster)?;
    let dir = cluster.dir();
    std::fs::write(
        dir.join("flow.yaml"),
        "name: review\nversion: 1\nsteps:\n  - name: read\n    queue: readers\n",
    )?;
    client
        .create_topic("chapters", &TopicOptions::default())
        .await?;
    let script = dir.join("publish.txn");
    std::fs::write(
        &script,
        "# publish chapter 2 and start its review\n\
         compare key chapters/2 0\n\
         put chapters/2 \"the second chapter\"\n\
         submit editors chapters/2 priority=5 label=book=raft\n\
         workflow start @flow.yaml {\"chapter\":2}\n\
         publish chapters.2 ready key=chapter-2\n",
    )?;

    tracing::info!("the script applies: the key, the task and the workflow, each printed");
    let (code, stdout, stderr) = conclave_txn(&cluster, &script)?;
    ensure!(code == 0, "exit {code}: {stdout} {stderr}");
    ensure!(stdout.starts_with("OK revision "), "{stdout}");
    ensure!(stdout.contains("line 3: put"), "{stdout}");
    ensure!(stdout.contains("line 4: submitted task "), "{stdout}");
    ensure!(stdout.contains("line 5: started workflow "), "{stdout}");
    ensure!(
        stdout.contains("line 6: published to chapters as sequence 1"),
        "{stdout}"
    );
    let value = client.get("chapters/2").await?.kv.context("written")?.value;
    ensure!(value == b"the second chapter");
    let editors = tasks_of(&client, "editors").await?;
    ensure!(editors.len() == 1, "{editors:?}");
    let spec = editors[0].spec.as_ref().context("a spec")?;
    ensure!(spec.priority == 5 && spec.labels.get("book").map(String::as_str) == Some("raft"));
    ensure!(!client
        .list_workflows(Default::default())
        .await?
        .workflows
        .is_empty());

    tracing::info!("run again, its compare fails: exit 1, the line named, nothing applied");
    let (code, stdout, stderr) = conclave_txn(&cluster, &script)?;
    ensure!(code == 1, "exit {code}: {stdout} {stderr}");
    ensure!(
        stderr.contains("the compare on line 2 failed: the key has mod_revision"),
        "{stderr}"
    );
    ensure!(tasks_of(&client, "editors").await?.len() == 1);

    tracing::info!("a refused op names its line; a broken line is a usage error (exit 2)");
    let refused = dir.join("refused.txn");
    std::fs::write(&refused, "put notes/x 1\ncomplete 999 5 done\n")?;
    let (code, _, stderr) = conclave_txn(&cluster, &refused)?;
    ensure!(code == 1, "exit {code}: {stderr}");
    ensure!(stderr.contains("the op on line 2 was refused"), "{stderr}");
    ensure!(client.get("notes/x").await?.kv.is_none());
    let broken = dir.join("broken.txn");
    std::fs::write(&broken, "complete 9 x done\n")?;
    let (code, _, stderr) = conclave_txn(&cluster, &broken)?;
    ensure!(code == 2, "exit {code}: {stderr}");
    ensure!(
        stderr.contains("line 1: token \"x\" is not a number"),
        "{stderr}"
    );
    Ok(())
}
