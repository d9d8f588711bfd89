//! Topics on real nodes, through the client library and the CLI: publish, fetch and ack with
//! fenced deliveries (a stale token refused), per-key order, a subscription; no acknowledged
//! publish lost across a leader kill; the CLI's publish and tail round trip.
//!
//! Run `cargo build --workspace --bins` first: the tests spawn `target/debug/conclave-node` and
//! `target/debug/conclave`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_client::{
    Client, Error, GroupOptions, PublishMessage, PublishMessageExt, TopicOptions, TopicStart,
};
use conclave_tests::fleet::cli_binary;
use conclave_tests::{ClusterConfig, TestCluster};
use tokio_stream::StreamExt as _;

/// Bound on a subscription or fetch seeing what it waits for: liveness, not performance.
const SEE_TIMEOUT: Duration = Duration::from_secs(30);

fn endpoints(cluster: &TestCluster) -> Vec<String> {
    cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.api_addr(id).to_string())
        .collect()
}

fn client_of(cluster: &TestCluster) -> anyhow::Result<Client> {
    Ok(Client::connect(endpoints(cluster))?)
}

/// A client of one node only (a follower), so the calls are forwarded.
fn client_at(cluster: &TestCluster, id: u64) -> anyhow::Result<Client> {
    Ok(Client::connect([cluster.api_addr(id).to_string()])?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fetch_ack_with_fenced_deliveries_and_a_subscription() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let follower = cluster.followers().await?[0];
    let client = client_at(&cluster, follower)?;
    tracing::info!(follower, "create a topic and a group through a follower");
    ensure!(
        !client
            .create_topic("orders", &TopicOptions::default())
            .await?
    );
    let group = GroupOptions {
        ack_wait: Duration::from_secs(2),
        ..GroupOptions::default()
    };
    ensure!(!client.create_group("orders", "billing", &group).await?);
    let mut subscription = client.subscribe("orders.>", "", TopicStart::All).await?;

    tracing::info!("publish a batch: two messages of key k1, one of k2");
    let batch = vec![
        PublishMessage::new("orders.eu.paid", "a").with_key("k1"),
        PublishMessage::new("orders.eu.paid", "b").with_key("k1"),
        PublishMessage::new("orders.us.paid", "c").with_key("k2"),
    ];
    let published = client.publish(batch).await?;
    let seqs: Vec<u64> = published.results.iter().map(|r| r.seq).collect();
    ensure!(seqs == [1, 2, 3], "sequences {seqs:?}");
    let refused = client
        .publish(vec![PublishMessage::new("nowhere", "x")])
        .await;
    ensure!(
        matches!(
            &refused,
            Err(Error::Rejected {
                code: tonic::Code::NotFound,
                ..
            })
        ),
        "a subject no topic captures: {refused:?}"
    );

    tracing::info!("member a fetches: k1's first and k2's; k1's second waits for its first");
    let a = client
        .fetch("orders", "billing", "a", 10, Duration::ZERO)
        .await?;
    let fetched: Vec<u64> = a
        .iter()
        .filter_map(|d| d.message.as_ref())
        .map(|m| m.seq)
        .collect();
    ensure!(fetched == [1, 3], "fetched {fetched:?}");

    tracing::info!("a is lost: its ack wait passes, b gets k1's first under a new token");
    let b = client
        .fetch("orders", "billing", "b", 10, SEE_TIMEOUT)
        .await?;
    let first = b
        .iter()
        .find(|d| d.message.as_ref().is_some_and(|m| m.seq == 1))
        .context("b gets message 1")?;
    ensure!(first.token > a[0].token && first.deliveries == 2);
    let stale = client.ack("orders", "billing", 1, a[0].token).await;
    ensure!(
        matches!(stale, Err(Error::LeaseLost { .. })),
        "stale ack: {stale:?}"
    );
    for delivery in &b {
        let seq = delivery.message.as_ref().context("message")?.seq;
        client.ack("orders", "billing", seq, delivery.token).await?;
    }
    let second = client
        .fetch("orders", "billing", "a", 10, SEE_TIMEOUT)
        .await?;
    let seq = second[0].message.as_ref().context("message")?.seq;
    ensure!(seq == 2, "k1's second after its first, got {seq}");
    client.ack("orders", "billing", 2, second[0].token).await?;
    let position = client.get_group("orders", "billing").await?;
    ensure!(
        position.ack_floor == 3 && position.lag == 0 && position.in_flight == 0,
        "{position:?}"
    );

    tracing::info!("the subscription saw the three messages in order");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(SEE_TIMEOUT, subscription.next())
            .await?
            .context("subscription ended")??;
        seen.push((message.seq, String::from_utf8(message.data)?));
    }
    ensure!(
        seen == [(1, "a".into()), (2, "b".into()), (3, "c".into())],
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_while_publishing_loses_no_acknowledged_message() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let client = client_of(&cluster)?;
    client
        .create_topic("events", &TopicOptions::default())
        .await?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (client, acked, stop) = (client.clone(), Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut acknowledged = BTreeMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Acquire) {
                let message = PublishMessage::new("events.n", format!("m{i}"))
                    .with_idempotency_key(format!("id-{i}"));
                match client.publish(vec![message]).await {
                    Ok(published) => {
                        acknowledged.insert(published.results[0].seq, format!("m{i}"));
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(error) => tracing::info!(i, %error, "a publish not acknowledged"),
                }
                i += 1;
            }
            acknowledged
        })
    };
    let until = |n: u64| {
        let acked = Arc::clone(&acked);
        async move {
            while acked.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::time::timeout(SEE_TIMEOUT, until(50)).await?;
    let leader = cluster.leader().await?;
    let before = acked.load(Ordering::Acquire);
    tracing::info!(leader, before, "kill the leader while publishing");
    cluster.kill(leader)?;
    tokio::time::timeout(SEE_TIMEOUT, until(before + 50))
        .await
        .context("publishing goes on under the new leader")?;
    stop.store(true, Ordering::Release);
    let acknowledged = publisher.await?;

    tracing::info!("every acknowledged message is in the topic, once, under its sequence");
    let topic = client.get_topic("events").await?;
    let mut subscription = client.subscribe("", "events", TopicStart::All).await?;
    let mut stored = BTreeMap::new();
    while (stored.len() as u64) < topic.last_seq {
        let message = tokio::time::timeout(SEE_TIMEOUT, subscription.next())
            .await?
            .context("subscription ended")??;
        stored.insert(message.seq, String::from_utf8(message.data)?);
    }
    for (seq, data) in &acknowledged {
        ensure!(
            stored.get(seq) == Some(data),
            "acknowledged {seq} {data} lost"
        );
    }
    let mut datas: Vec<&String> = stored.values().collect();
    datas.sort();
    datas.dedup();
    ensure!(datas.len() == stored.len(), "a message was stored twice");
    Ok(())
}

fn cli(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(cli_binary()?)
        .arg("--endpoints")
        .arg(endpoints(cluster).join(","))
        .args(args)
        .output()?;
    ensure!(
        output.status.success(),
        "conclave {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_and_tails() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    tracing::info!("create, publish two messages, tail them back");
    cli(
        &cluster,
        &["topic", "create", "research", "--max-msgs", "100"],
    )?;
    cli(
        &cluster,
        &["topic", "group", "create", "research", "readers"],
    )?;
    let published = cli(
        &cluster,
        &[
            "topic",
            "publish",
            "research.papers.new",
            "raft",
            "--key",
            "p1",
            "--header",
            "lang=en",
        ],
    )?;
    ensure!(published.trim() == "published research #1", "{published}");
    cli(&cluster, &["topic", "publish", "research.code", "tokio"])?;
    let tailed = cli(
        &cluster,
        &["topic", "tail", "research.>", "--all", "--count", "2"],
    )?;
    let lines: Vec<&str> = tailed.lines().collect();
    ensure!(
        lines
            == [
                "#1 research.papers.new key=p1 lang=en raft",
                "#2 research.code tokio"
            ],
        "{tailed}"
    );
    let consumed = cli(
        &cluster,
        &[
            "topic",
            "tail",
            "research.papers.*",
            "--topic",
            "research",
            "--group",
            "readers",
            "--count",
            "2",
        ],
    )?;
    ensure!(consumed.lines().count() == 2, "{consumed}");
    let group = cli(
        &cluster,
        &["--json", "topic", "group", "get", "research", "readers"],
    )?;
    let group: serde_json::Value = serde_json::from_str(&group)?;
    ensure!(group["ack_floor"] == 2 && group["lag"] == 0, "{group}");
    let shown = cli(&cluster, &["topic", "get", "research"])?;
    ensure!(shown.contains("readers"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_redrive_and_a_subscription_past_retention() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let client = client_of(&cluster)?;
    let retention = TopicOptions {
        max_msgs: 5,
        ..TopicOptions::default()
    };
    client.create_topic("jobs", &retention).await?;
    let group = GroupOptions {
        ack_wait: Duration::from_secs(1),
        max_deliveries: 1,
        ..GroupOptions::default()
    };
    client.create_group("jobs", "workers", &group).await?;
    client
        .publish(vec![PublishMessage::new("jobs.resize", "img-1")])
        .await?;

    tracing::info!("a delivery never acked within its one allowed delivery is dead-lettered");
    let lost = client
        .fetch("jobs", "workers", "w1", 1, Duration::ZERO)
        .await?;
    ensure!(lost.len() == 1);
    let deadline = tokio::time::Instant::now() + SEE_TIMEOUT;
    while client.get_group("jobs", "workers").await?.dead_letters == 0 {
        ensure!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = cli(&cluster, &["topic", "dlq", "ls", "jobs", "workers"])?;
    ensure!(
        listed.contains("img-1") && listed.contains("ack wait (1000 ms) passed on delivery 1 of 1"),
        "{listed}"
    );
    let redriven = cli(
        &cluster,
        &["topic", "dlq", "redrive", "jobs", "workers", "--all"],
    )?;
    ensure!(redriven.starts_with("redriven 1;"), "{redriven}");
    let again = client
        .fetch("jobs", "workers", "w2", 1, SEE_TIMEOUT)
        .await?;
    ensure!(again.len() == 1 && again[0].deliveries == 1, "{again:?}");
    client.ack("jobs", "workers", 1, again[0].token).await?;

    tracing::info!("retention keeps the last 5; a subscription from before them is OUT_OF_RANGE");
    let batch: Vec<PublishMessage> = (0..10)
        .map(|i| PublishMessage::new("jobs.resize", format!("img-{}", i + 2)))
        .collect();
    client.publish(batch).await?;
    let topic = client.get_topic("jobs").await?;
    ensure!(
        (topic.first_seq, topic.last_seq, topic.discarded) == (7, 11, 6),
        "{topic:?}"
    );
    let gone = client.subscribe("", "jobs", TopicStart::Sequence(2)).await;
    ensure!(
        matches!(
            &gone,
            Err(Error::Rejected {
                code: tonic::Code::OutOfRange,
                ..
            })
        ),
        "{gone:?}"
    );
    let mut kept = client
        .subscribe("", "jobs", TopicStart::Sequence(7))
        .await?;
    let first = tokio::time::timeout(SEE_TIMEOUT, kept.next())
        .await?
        .context("subscription ended")??;
    ensure!(first.seq == 7 && first.data == b"img-7", "{first:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_submits_one_task_per_matching_message() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let client = client_of(&cluster)?;
    client
        .create_topic("news", &TopicOptions::default())
        .await?;
    let trigger = conclave_client::TopicTrigger {
        name: "summarize".to_string(),
        subject: "news.papers.>".to_string(),
        action: Some(conclave_client::TriggerAction::Task(
            conclave_client::TaskSpec {
                queue: "summaries".to_string(),
                ..conclave_client::TaskSpec::default()
            },
        )),
        ..conclave_client::TopicTrigger::default()
    };
    ensure!(!client.create_trigger("news", trigger.clone()).await?);
    ensure!(
        client.create_trigger("news", trigger).await?,
        "the same trigger again is `existing`"
    );

    tracing::info!("a batch of three, two matching; then one matching message published twice");
    client
        .publish(vec![
            PublishMessage::new("news.papers.raft", "a").with_key("k1"),
            PublishMessage::new("news.other", "b"),
            PublishMessage::new("news.papers.paxos", "c").with_idempotency_key("c"),
        ])
        .await?;
    let again = client
        .publish(vec![
            PublishMessage::new("news.papers.paxos", "c").with_idempotency_key("c")
        ])
        .await?;
    ensure!(again.results[0].duplicate, "the resend is a duplicate");

    let options = conclave_client::TaskListOptions {
        queue: "summaries".to_string(),
        ..conclave_client::TaskListOptions::default()
    };
    let tasks = client.list_tasks(options).await?.tasks;
    let fired: BTreeMap<String, String> = tasks
        .iter()
        .map(|task| {
            let spec = task.spec.clone().unwrap_or_default();
            let seq = spec.labels.get("conclave.seq").cloned().unwrap_or_default();
            (seq, String::from_utf8_lossy(&spec.payload).into_owned())
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("1".to_string(), "a".to_string()),
        ("3".to_string(), "c".to_string()),
    ]
    .into();
    ensure!(
        fired == expected,
        "one task per matching message, got {fired:?}"
    );
    let listed = client.list_triggers("news").await?;
    ensure!(
        listed.len() == 1 && listed[0].fired == 2 && listed[0].failed == 0,
        "{listed:?}"
    );

    tracing::info!("deleted, the trigger fires no more");
    client.delete_trigger("news", "summarize").await?;
    client
        .publish(vec![PublishMessage::new("news.papers.later", "d")])
        .await?;
    let options = conclave_client::TaskListOptions {
        queue: "summaries".to_string(),
        ..conclave_client::TaskListOptions::default()
    };
    ensure!(client.list_tasks(options).await?.tasks.len() == 2);
    cluster.shutdown().await
}
