//! Jepsen-style scenarios: real node processes under kills, pauses, partitions and membership
//! changes, their histories checked (see `conclave_tests::jepsen` and tests/README.md).
//!
//! Each scenario runs about 30 s and writes a folder with its history, nemesis log, node logs,
//! results and `report.html` (path printed, with the seed; `CONCLAVE_JEPSEN_SEED` replays it).
//! `CONCLAVE_JEPSEN_LONG=1` turns `long_campaign` into the long campaign of `scripts/jepsen.sh`.
//!
//! Run `cargo build --workspace --bins` first: the scenarios spawn `target/debug/conclave-node`.

mod campaign;
mod regressions;
mod scenarios;

use conclave_tests::jepsen::{self, RunConfig};

/// Runs `config` and fails the test unless the run is valid, printing where its report is.
pub async fn run_and_expect_valid(config: RunConfig) -> anyhow::Result<jepsen::Results> {
    let results = jepsen::run(config).await?;
    assert!(
        results.passed,
        "jepsen run `{}` (seed {}) is {:?}:\n{}\nreport: {}",
        results.name,
        results.seed,
        results.verdict,
        results.problems.join("\n"),
        results.dir.join("report.html").display()
    );
    Ok(results)
}
