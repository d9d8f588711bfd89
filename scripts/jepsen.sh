#!/usr/bin/env bash
# jepsen.sh: the long Jepsen-style campaign against real node processes (tests/README.md explains
# the runs, the reports and the checkers). Each run starts a fresh cluster, runs every chosen
# workload while the chosen nemeses take turns, heals, checks, and writes a folder with its
# history, nemesis log, node logs, results.json and report.html. At the end a summary table lists
# every run with its verdict and report.
#
# Usage: scripts/jepsen.sh [options]
#   -w, --workloads LIST   register,set,watch,tasks,decisions,locks,elections,workflows,
#                          topics,transactions (default: all ten)
#   -n, --nemeses LIST     nemeses or groups: all (default), none, kill, pause, partition, clock, or
#                          names: kill-one kill-leader kill-minority kill-all pause-leader
#                          pause-follower isolate-one isolate-leader split-majority bridge one-way
#                          delay membership clock-skew (clock-skew needs libfaketime: the Debian
#                          package faketime)
#   -d, --duration SECS    seconds of faults in the whole campaign (default 300)
#   -r, --run SECS         seconds of faults per run (default 60); runs = duration / run
#   -N, --nodes 3|5        nodes per cluster (default 3)
#   -s, --seed N           seed of the first run (default random); run i uses seed + i
#       --net proxy|netns  network backend (default proxy; netns needs root and iptables)
#       --snapshot-logs N  --snapshot-logs of the nodes (default 200; 0 for the node's default)
#       --unsafe MODE      run the nodes in a test-only unsafe mode (stale-reads, ack-before-fsync,
#                          skip-fence, stale-step-result, topic-stale-ack, topic-unordered,
#                          txn-partial): the campaign should then FAIL, which proves the checkers can
#   -o, --out DIR          where run folders go (default $TMPDIR/conclave-jepsen)
#   -h, --help
#
# Example: scripts/jepsen.sh --duration 1800 --nodes 5 --nemeses partition,kill,membership
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
    -w | --workloads) export CONCLAVE_JEPSEN_WORKLOADS=$2; shift 2 ;;
    -n | --nemeses) export CONCLAVE_JEPSEN_NEMESES=$2; shift 2 ;;
    -d | --duration) export CONCLAVE_JEPSEN_DURATION=$2; shift 2 ;;
    -r | --run) export CONCLAVE_JEPSEN_RUN_SECS=$2; shift 2 ;;
    -N | --nodes) export CONCLAVE_JEPSEN_NODES=$2; shift 2 ;;
    -s | --seed) export CONCLAVE_JEPSEN_SEED=$2; shift 2 ;;
    --net) export CONCLAVE_JEPSEN_NET=$2; shift 2 ;;
    --snapshot-logs) export CONCLAVE_JEPSEN_SNAPSHOT_LOGS=$2; shift 2 ;;
    --unsafe) export CONCLAVE_JEPSEN_UNSAFE=$2; shift 2 ;;
    -o | --out) export CONCLAVE_JEPSEN_DIR=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "jepsen.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

export CONCLAVE_JEPSEN_LONG=1
out=${CONCLAVE_JEPSEN_DIR:-${TMPDIR:-/tmp}/conclave-jepsen}
rm -f "$out/campaign-summary.txt"
echo "jepsen.sh: building the node and the test binary"
cargo build --workspace --all-targets
cargo test -p conclave-tests --test jepsen --no-run

echo "jepsen.sh: running the campaign; run folders go to $out"
status=0
# --nocapture shows the seed and progress of every run as it happens; the table follows at the end.
RUST_LOG=${RUST_LOG:-warn} cargo test -p conclave-tests --test jepsen long_campaign -- \
    --nocapture --test-threads=1 || status=$?

echo
if [[ -f "$out/campaign-summary.txt" ]]; then
    echo "=== summary ($out/campaign-summary.txt)"
    cat "$out/campaign-summary.txt"
fi
if [[ $status -eq 0 ]]; then
    echo "jepsen.sh: every run passed"
else
    echo "jepsen.sh: some runs FAILED (see the problems above and each report.html)"
fi
exit "$status"
