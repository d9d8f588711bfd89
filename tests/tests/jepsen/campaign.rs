//! The long campaign: `scripts/jepsen.sh` sets `CONCLAVE_JEPSEN_LONG=1` and the knobs below, then
//! runs this test; without `CONCLAVE_JEPSEN_LONG=1` it only says it was skipped.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CONCLAVE_JEPSEN_WORKLOADS` | `register,set,watch,tasks,decisions,locks,elections,workflows,topics,transactions` | workloads, all in every run |
//! | `CONCLAVE_JEPSEN_NEMESES` | `all` | nemeses or groups (`kill`, `pause`, `partition`, `clock`) or names (`membership`, `clock-skew`, ...) |
//! | `CONCLAVE_JEPSEN_DURATION` | `300` | seconds of faults in the whole campaign |
//! | `CONCLAVE_JEPSEN_RUN_SECS` | `60` | seconds of faults per run (each run checks its own history) |
//! | `CONCLAVE_JEPSEN_NODES` | `3` | nodes per cluster, 3 or 5 |
//! | `CONCLAVE_JEPSEN_SEED` | random | seed of the first run; run i uses seed + i |
//! | `CONCLAVE_JEPSEN_NET` | `proxy` | network backend |
//! | `CONCLAVE_JEPSEN_SNAPSHOT_LOGS` | `200` | `--snapshot-logs` (0: the node's default) |
//! | `CONCLAVE_JEPSEN_UNSAFE` | none | an `--unsafe-test-mode` to run with (expect failures) |

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use conclave_tests::jepsen::{self, Nemesis, RunConfig};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn number(name: &str, default: u64) -> anyhow::Result<u64> {
    var(name, &default.to_string())
        .trim()
        .parse()
        .with_context(|| format!("{name} must be a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_campaign() -> anyhow::Result<()> {
    if var("CONCLAVE_JEPSEN_LONG", "") != "1" {
        eprintln!("long_campaign skipped: set CONCLAVE_JEPSEN_LONG=1 (see scripts/jepsen.sh)");
        return Ok(());
    }
    let workloads: Vec<String> = var(
        "CONCLAVE_JEPSEN_WORKLOADS",
        "register,set,watch,tasks,decisions,locks,elections,workflows,topics,transactions",
    )
    .split(',')
    .map(|w| w.trim().to_string())
    .filter(|w| !w.is_empty())
    .collect();
    for workload in &workloads {
        jepsen::workload::build(workload)?;
    }
    let nemeses = Nemesis::parse_list(&var("CONCLAVE_JEPSEN_NEMESES", "all"))?;
    let duration = number("CONCLAVE_JEPSEN_DURATION", 300)?;
    let run_secs = number("CONCLAVE_JEPSEN_RUN_SECS", 60)?.max(10);
    let nodes = number("CONCLAVE_JEPSEN_NODES", 3)?;
    anyhow::ensure!(
        nodes == 3 || nodes == 5,
        "CONCLAVE_JEPSEN_NODES must be 3 or 5"
    );
    let snapshot_logs = number("CONCLAVE_JEPSEN_SNAPSHOT_LOGS", 200)?;
    let unsafe_mode = std::env::var("CONCLAVE_JEPSEN_UNSAFE").ok();
    let runs = duration.div_ceil(run_secs).max(1);
    let first_seed = jepsen::run::seed_from_env();

    let workload_names: Vec<&str> = workloads.iter().map(String::as_str).collect();
    let mut table = String::new();
    let mut all_passed = true;
    for run in 0..runs {
        let mut config = RunConfig::short(
            &format!("campaign-{nodes}n-r{:02}", run + 1),
            &workload_names,
            &nemeses,
        );
        config.seed = first_seed + run;
        config.nodes = nodes;
        config.faults = Duration::from_secs(run_secs);
        config.warmup = Duration::from_secs(3);
        config.quiesce = Duration::from_secs(5);
        // Three workloads share the cluster: fewer operations per client keep histories small.
        config.op_interval = Duration::from_millis(100);
        config.snapshot_logs = (snapshot_logs > 0).then_some(snapshot_logs);
        config.snapshot_keep_logs = (snapshot_logs > 0).then_some(snapshot_logs / 10);
        config.unsafe_mode = unsafe_mode.clone();
        config.min_ok_ops = 200;
        config.check_budget = Duration::from_secs(120);
        let line = match jepsen::run(config).await {
            Ok(results) => {
                all_passed &= results.passed;
                results.summary_line()
            }
            Err(error) => {
                all_passed = false;
                format!("run {} failed in the harness: {error:#}", run + 1)
            }
        };
        println!("{line}");
        let _ = writeln!(table, "{line}");
    }
    let summary = format!(
        "jepsen campaign: {runs} run(s) of {run_secs} s of faults, {nodes} nodes, workloads \
         {workloads:?}, nemeses {:?}, first seed {first_seed}\n{table}",
        nemeses.iter().map(|n| n.name()).collect::<Vec<_>>()
    );
    let base = RunConfig::short("campaign", &[], &[]).dir();
    let summary_path = base
        .parent()
        .expect("a run folder has a parent")
        .join("campaign-summary.txt");
    std::fs::write(&summary_path, &summary)?;
    println!("\n{summary}summary: {}", summary_path.display());
    assert!(all_passed, "some runs did not pass:\n{summary}");
    Ok(())
}
