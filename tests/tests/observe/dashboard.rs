//! The web dashboard in a real browser: a three-node cluster with metrics addresses, a task
//! submitted with the client library and run by an exec agent, one no agent can take, a
//! two-step workflow; each page loaded in headless Chromium from a node's metrics address, its
//! rendered DOM checked, and a screenshot saved. Then the leader is killed, and the cluster page
//! of a surviving node names the new leader.
//!
//! Chromium (Debian's `chromium`) must be installed: with CI=true its absence fails the test,
//! elsewhere the test says loudly that it skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use conclave_client::{parse_definition, Client, DefinitionFormat, StartWorkflowOptions};
use conclave_proto::v1::{DecisionSpec, Electorate, TaskState};
use conclave_tests::fleet::{task_spec, ExecAgent, Fleet};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};

use crate::chromium::{self, Chromium};
use crate::SETTLE_TIMEOUT;

/// The lock the agent's session holds.
const LOCK: &str = "dash-lock";
const QUEUE: &str = "dash-jobs";
const AGENT: &str = "painter";
const RATIONALE: &str = "blue matches the logo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_tasks_and_the_new_leader_in_a_browser() -> anyhow::Result<()> {
    let Some(binary) = chromium_or_skip()? else {
        return Ok(());
    };
    let config = ClusterConfig {
        metrics: true,
        ..ClusterConfig::new(3)
    };
    let mut cluster = TestCluster::start_initialized(config).await?;
    let leader = cluster.wait_for_leader(SETTLE_TIMEOUT).await?;
    let shots = screenshot_dir()?;
    let mut browser = Chromium::new(binary, &cluster.dir().join("chromium"))?;
    let fleet = Fleet::new(cluster.api_addrs());

    tracing::info!("an exec agent; a task it runs, one nobody can take, a two-step workflow");
    let _agent = ExecAgent::start(
        &fleet,
        cluster.dir(),
        AGENT,
        "paint",
        2,
        &[],
        "cat >/dev/null; printf done",
    )?;
    let client = Client::connect(cluster.api_addrs().values().map(|a| a.to_string()))?;
    let done = client
        .submit(task_spec(QUEUE, b"run me", &["paint"]))
        .await?
        .task_id;
    let stuck = client
        .submit(task_spec(QUEUE, b"nobody", &["nobody-has-this"]))
        .await?
        .task_id;
    let definition = parse_definition(
        "name: painted\nsteps:\n  - {name: prepare, queue: dash-steps, capabilities: [paint]}\n  - {name: finish, queue: dash-steps, capabilities: [paint], after: [prepare]}\n",
        DefinitionFormat::Yaml,
    )?;
    let workflow = client
        .start_workflow(definition, StartWorkflowOptions::default())
        .await?
        .workflow_id;
    wait_succeeded(&fleet, done).await?;
    let workflow_done = client.wait_workflow(workflow).await?;
    ensure!(workflow_done.steps.len() == 2, "workflow {workflow_done:?}");

    tracing::info!("a decision the agent votes in, with a rationale");
    let session_id = client.get_agent(AGENT).await?.agent.session_id;
    let decision = client
        .propose(DecisionSpec {
            question: "Paint it blue?".into(),
            options: vec!["yes".into(), "no".into()],
            electorate: Some(Electorate {
                agents: vec![AGENT.into()],
                ..Electorate::default()
            }),
            ..DecisionSpec::default()
        })
        .await?
        .decision
        .id;
    client.vote(session_id, decision, "yes", RATIONALE).await?;

    tracing::info!("a lock held by the agent's session");
    let options = conclave_client::AcquireOptions::session(session_id).owned_by(AGENT);
    let held = client.acquire_lock(LOCK, &options).await?;
    ensure!(held.acquired, "{held:?}");

    let follower = cluster.followers().await?[0];
    let base = format!("http://{}/?poll", metrics_addr(&cluster, follower)?);
    tracing::info!(follower, %base, "each page, loaded from a follower's dashboard");
    let dom = page(&mut browser, &base, "tasks", &shots.join("1-tasks.png")).await?;
    check_row(
        &dom,
        &format!("href=\"#task/{done}\""),
        &[QUEUE, "data-state=\"succeeded\""],
    )?;
    check_row(
        &dom,
        &format!("href=\"#task/{stuck}\""),
        &[QUEUE, "data-state=\"pending\""],
    )?;
    let dom = page(
        &mut browser,
        &base,
        &format!("task/{done}"),
        &shots.join("2-task.png"),
    )
    .await?;
    let attempts = dom.find("id=\"attempts\"").context("no attempts table")?;
    check_row(
        &dom[attempts..],
        &format!("<td>{AGENT}</td>"),
        &["data-state=\"succeeded\""],
    )?;
    let dom = page(
        &mut browser,
        &base,
        &format!("tasks?queue={QUEUE}&state=pending"),
        &shots.join("3-tasks-pending.png"),
    )
    .await?;
    ensure!(
        dom.contains(&format!("href=\"#task/{stuck}\""))
            && !dom.contains(&format!("href=\"#task/{done}\"")),
        "the search by state shows the pending task only"
    );
    let dom = page(&mut browser, &base, "queues", &shots.join("4-queues.png")).await?;
    check_row(
        &dom,
        &format!(">{QUEUE}</a>"),
        &["<td class=\"num\">1</td>"],
    )
    .context("the backlog of one")?;
    let dom = page(&mut browser, &base, "agents", &shots.join("5-agents.png")).await?;
    check_row(
        &dom,
        &format!("<td>{AGENT}</td>"),
        &["data-state=\"live\"", "paint", "data-state=\"closed\""],
    )?;
    let dom = page(
        &mut browser,
        &base,
        "workflows",
        &shots.join("6-workflows.png"),
    )
    .await?;
    ensure!(
        dom.contains(&format!("id=\"workflow-{workflow}\"")),
        "workflow {workflow} missing"
    );
    for step in ["prepare", "finish"] {
        ensure!(
            dom.contains(&format!("data-step=\"{step}\" data-state=\"succeeded\"")),
            "step {step} not drawn as succeeded"
        );
    }
    let dom = page(&mut browser, &base, "locks", &shots.join("7a-locks.png")).await?;
    check_row(
        &dom,
        &format!("<td>{LOCK}</td>"),
        &["lock", &format!("{AGENT} #{}", held.token), "1 / 1"],
    )?;
    let dom = page(
        &mut browser,
        &base,
        "decisions",
        &shots.join("7-decisions.png"),
    )
    .await?;
    let voted = dom
        .find(&format!("id=\"decision-{decision}\""))
        .context("no decision box")?;
    ensure!(
        dom[voted..].contains("data-state=\"decided\""),
        "decision {decision} not decided"
    );
    check_row(
        &dom[voted..],
        &format!("<td>{AGENT}</td>"),
        &["<td>yes</td>", RATIONALE],
    )?;
    let dom = page(&mut browser, &base, "cluster", &shots.join("8-cluster.png")).await?;
    check_leader(&dom, leader)?;

    tracing::info!(
        leader,
        "kill the leader; a surviving node's cluster page names the new one"
    );
    cluster.kill(leader)?;
    let new_leader = cluster.wait_for_leader(SETTLE_TIMEOUT).await?;
    ensure!(new_leader != leader, "the killed node {leader} still leads");
    let survivor = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader && *id != new_leader)
        .context("a third node")?;
    let base = format!("http://{}/?poll", metrics_addr(&cluster, survivor)?);
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    let dom = loop {
        let dom = page(
            &mut browser,
            &base,
            "cluster",
            &shots.join("9-cluster-survivor-after-kill.png"),
        )
        .await?;
        match check_leader(&dom, new_leader) {
            Ok(()) => break dom,
            Err(error) if std::time::Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    ensure!(
        !dom.contains(&format!("Leader: node {leader} ")),
        "the old leader is still named"
    );
    let base = format!("http://{}/?poll", metrics_addr(&cluster, new_leader)?);
    let dom = page(
        &mut browser,
        &base,
        "cluster",
        &shots.join("10-cluster-new-leader.png"),
    )
    .await?;
    check_leader(&dom, new_leader)?;
    check_row(
        &dom,
        &format!("<tr><td>{leader}"),
        &["data-state=\"unreachable\""],
    )
    .context("the new leader's page shows the killed node unreachable")?;
    let event = first_event(metrics_addr(&cluster, survivor)?)?;
    ensure!(
        event.contains(&format!("\"leader\":{new_leader}")),
        "the event stream's overview: {event}"
    );
    println!("dashboard screenshots: {}", shots.display());
    cluster.shutdown().await
}

/// Chromium's path; without it a failure under CI=true, elsewhere a loud skip.
fn chromium_or_skip() -> anyhow::Result<Option<PathBuf>> {
    if let Some(binary) = chromium::find() {
        return Ok(Some(binary));
    }
    let message =
        "the dashboard's browser test needs Chromium: install Debian's `chromium` package \
                   (apt-get install chromium chromium-driver; .ci/run does)";
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        bail!("{message}");
    }
    // Straight to stderr, not eprintln!: the test harness captures that for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED the dashboard's browser test: {message} !!!\n"
    );
    Ok(None)
}

/// Where the screenshots go: kept after the test, under cargo's target tmp directory.
fn screenshot_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn metrics_addr(cluster: &TestCluster, node: u64) -> anyhow::Result<SocketAddr> {
    cluster
        .metrics_addr(node)
        .context("the cluster was configured with metrics")
}

async fn wait_succeeded(fleet: &Fleet, task_id: u64) -> anyhow::Result<()> {
    eventually(
        &format!("task {task_id} succeeded"),
        SETTLE_TIMEOUT,
        || async {
            let task = fleet.get_task(task_id).await?;
            ensure!(
                task.state == TaskState::Succeeded as i32,
                "task {task_id}: {:?}",
                task.state
            );
            Ok(())
        },
    )
    .await
}

/// The rendered DOM of page `hash`, and its screenshot at `shot` (Chromium runs on a blocking
/// thread: it takes a second or two).
async fn page(
    browser: &mut Chromium,
    base: &str,
    hash: &str,
    shot: &Path,
) -> anyhow::Result<String> {
    let url = format!("{base}#{hash}");
    tokio::task::block_in_place(|| {
        let dom = browser.dump_dom(&url)?;
        ensure!(
            dom.contains("data-page="),
            "{url}: the page did not render: {dom}"
        );
        browser.screenshot(&url, shot)?;
        Ok(dom)
    })
}

/// The table row holding `marker` contains each of `expected`.
fn check_row(dom: &str, marker: &str, expected: &[&str]) -> anyhow::Result<()> {
    let at = dom
        .find(marker)
        .with_context(|| format!("no {marker:?} in the page"))?;
    let start = dom[..at].rfind("<tr").context("not in a table row")?;
    let end = at + dom[at..].find("</tr>").context("an unclosed row")?;
    let row = &dom[start..end];
    for text in expected {
        ensure!(
            row.contains(text),
            "the row of {marker:?} lacks {text:?}: {row}"
        );
    }
    Ok(())
}

/// The cluster page names `leader`, and its members table marks it the leader.
fn check_leader(dom: &str, leader: u64) -> anyhow::Result<()> {
    ensure!(
        dom.contains(&format!("Leader: node {leader} ")),
        "the page does not name node {leader} the leader"
    );
    let member = format!("<tr><td>{leader}");
    check_row(dom, &member, &["data-state=\"leader\""])
}

/// The data of the first `overview` server-sent event of `/api/events` (the response is
/// chunked: the event's data line is found in the bytes as they come).
fn first_event(addr: SocketAddr) -> anyhow::Result<String> {
    const MARKER: &str = "event: overview\ndata: ";
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        let read = stream.read(&mut buffer)?;
        ensure!(read > 0, "the event stream ended");
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received);
        if let Some((_, data)) = text.split_once(MARKER) {
            if let Some((line, _)) = data.split_once('\n') {
                return Ok(line.to_string());
            }
        }
    }
    bail!(
        "no overview event within 10 s: {}",
        String::from_utf8_lossy(&received)
    )
}
