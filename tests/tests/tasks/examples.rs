//! `examples/run.sh` as a reader runs it, against three real nodes: the workflow examples (the
//! content pipeline, the fan-out with a partial deadline, the vote), the manager-worker tree and
//! the event-driven agents of a topic, each with its agents, end with exit 0, every workflow
//! SUCCEEDED, and every paper summarized once and announced to the subscriber.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use conclave_tests::fleet::cli_binary;
use conclave_tests::{ClusterConfig, TestCluster};

/// Bound on the walk-through: it takes about 25 s (the fan-out's partial deadline is 15 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sh_runs_the_workflow_examples() -> anyhow::Result<()> {
    let cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let endpoints: Vec<String> = cluster
        .api_addrs()
        .values()
        .map(|a| a.to_string())
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/run.sh");
    let log = cluster.dir().join("run-sh.log");
    let mut child = Command::new("bash")
        .arg(&script)
        .args(["workflows", "manager-worker", "events"])
        .env("CONCLAVE_ENDPOINTS", endpoints.join(","))
        .env("CONCLAVE_CLI", cli_binary()?)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("run examples/run.sh")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > RUN_TIMEOUT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let Some(status) = status else {
        // run.sh stops its agents by PID on SIGINT; then it goes.
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!(
            "run.sh did not finish within {RUN_TIMEOUT:?}; its output: {}",
            log.display()
        );
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    let output = std::fs::read_to_string(&log)?;
    ensure!(status.success(), "run.sh: {status}\n{stderr}\n{output}");
    for headline in [
        "content-pipeline v1: SUCCEEDED",
        "fan-out-research v1: SUCCEEDED",
        "vote-publish v2: SUCCEEDED",
        "manager-worker v2: SUCCEEDED",
    ] {
        ensure!(output.contains(headline), "no {headline:?} in:\n{output}");
    }
    ensure!(
        output.contains("written by the senior editor"),
        "the escalated section came back to the manager:\n{output}"
    );
    // Three papers (one published twice with the same idempotency key), three summaries.
    ensure!(
        output.contains("published research #1 (duplicate)"),
        "the resent paper was not deduplicated:\n{output}"
    );
    for announced in ["\"seq\": 1", "\"seq\": 2", "\"seq\": 3"] {
        let times = output.matches(announced).count();
        ensure!(times == 1, "{announced} announced {times} times:\n{output}");
    }
    cluster.shutdown().await
}
