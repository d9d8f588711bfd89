#!/usr/bin/env bash
# run.sh: a walk-through of tasks, agents and decisions on a running cluster.
#
# Starts three exec agents (`conclave agent run`) whose work is a shell script each: a researcher,
# a writer and an editor (agents/*.sh). Then:
#   1. three research -> write -> edit chains run side by side; each step is a task whose payload
#      is the previous step's result (the editor sometimes asks to be retried: exit 75);
#   2. the tasks, the fleet and one task's attempts are shown;
#   3. the three agents vote on publishing; a task gated on that decision runs once it is decided;
#   4. a task the editor refuses for good lands in the dead-letter queue, the cause is fixed, and
#      the task is redriven and succeeds.
# On exit (also on Ctrl-C) the agents are stopped by PID: SIGINT, then SIGKILL after 5 s.
#
# Needs a cluster (`scripts/cluster.sh up`) and the `conclave` binary: on PATH, in $CONCLAVE_CLI,
# or in the cargo target directory. Endpoints: $CONCLAVE_ENDPOINTS (default: the local cluster).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

die() {
    echo "run.sh: $*" >&2
    exit 1
}

conclave=${CONCLAVE_CLI:-}
if [[ -z $conclave ]]; then
    if command -v conclave >/dev/null 2>&1; then
        conclave=$(command -v conclave)
    else
        conclave=${CARGO_TARGET_DIR:-$repo/target}/release/conclave
    fi
fi
[[ -x $conclave ]] || die "no conclave binary at $conclave: build it (cargo build --release) or set CONCLAVE_CLI"

# Agent logs, the finished articles and the editor's style guide live here.
run_dir=$here/.run
rm -rf "$run_dir"
mkdir -p "$run_dir"
export EXAMPLE_STATE_DIR=$run_dir
# Every task of this run carries this label, so listings show this run only.
run_label="run=$(date +%s)"

agent_pids=()
stop_agents() {
    local pid
    for pid in "${agent_pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${agent_pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    agent_pids=()
}
trap stop_agents EXIT
trap 'exit 130' INT TERM

step() {
    printf '\n\033[1m== %s\033[0m\n' "$*"
}

# Prints a command line, then runs it.
show() {
    printf '$ conclave'
    printf ' %q' "$@"
    printf '\n'
    "$conclave" "$@"
}

"$conclave" cluster status >/dev/null 2>&1 ||
    die "no cluster answers at ${CONCLAVE_ENDPOINTS:-127.0.0.1:7001-7003}: start one with scripts/cluster.sh up"

step "Start three exec agents (logs in examples/.run/agent-*.log)"
start_agent() {
    local name=$1 capability=$2
    "$conclave" agent run --name "$name" --capability "$capability" --concurrency 2 \
        --shutdown-grace 5s -- "$here/agents/$name.sh" 2>>"$run_dir/agent-$name.log" &
    agent_pids+=("$!")
    echo "agent $name (capability $capability): pid $!"
}
start_agent researcher research
start_agent writer write
start_agent editor edit
for name in researcher writer editor; do
    for _ in $(seq 100); do
        "$conclave" agent get "$name" --json 2>/dev/null | grep -q '"status": "live"' && break
        sleep 0.1
    done
done
show agent ls

step "1. Three research -> write -> edit chains, side by side"
# One chain: each step is a task; its payload is the previous step's result.
chain() {
    local n=$1 topic=$2 research write edit notes draft
    research=$("$conclave" task submit research "$topic" --capability research \
        --label "$run_label" -q)
    notes=$("$conclave" task wait "$research")
    write=$(printf '%s' "$notes" | "$conclave" task submit write - --capability write \
        --parent "$research" --correlation-id "article-$n" --label "$run_label" -q)
    draft=$("$conclave" task wait "$write")
    edit=$(printf '%s' "$draft" | "$conclave" task submit edit - --capability edit \
        --parent "$write" --correlation-id "article-$n" --max-attempts 5 \
        --backoff-initial 500ms --label "$run_label" -q)
    echo "$edit" >"$run_dir/edit-task-$n"
    "$conclave" task wait "$edit" >"$run_dir/article-$n.md"
    echo "article $n ready: tasks $research -> $write -> $edit"
}
chain_pids=()
chain 1 "consensus protocols" &
chain_pids+=("$!")
chain 2 "fencing tokens" &
chain_pids+=("$!")
chain 3 "leases and heartbeats" &
chain_pids+=("$!")
for pid in "${chain_pids[@]}"; do
    wait "$pid"
done
echo
echo "--- examples/.run/article-2.md ---"
cat "$run_dir/article-2.md"

step "2. The tasks, the fleet, and the attempts of an edit"
show task ls --label "$run_label"
show agent ls
# The editor always sends back the first attempt at an even task id: show such an edit.
retried=$(cat "$run_dir/edit-task-1")
for n in 1 2 3; do
    id=$(cat "$run_dir/edit-task-$n")
    if ((id % 2 == 0)); then
        retried=$id
    fi
done
show task history "$retried"

step "3. A decision: the agents vote on publishing"
decision=$("$conclave" decision propose "Publish this week's articles?" --option yes --option no \
    --voter researcher --voter writer --voter editor -q)
echo "proposed decision $decision to researcher, writer and editor"
publish=$("$conclave" task submit publish "three articles" --capability write \
    --requires "$decision=yes" --label "$run_label" -q)
echo "task $publish waits for the decision:"
show task ls --label "$run_label" --state blocked
show decision vote "$decision" yes --as researcher --rationale "the notes hold up"
show decision vote "$decision" no --as editor --rationale "one more pass"
show decision vote "$decision" yes --as writer --rationale "ship it"
show decision get "$decision"
show task wait "$publish"
echo

step "4. A dead letter, and a redrive"
urgent=$("$conclave" task submit edit "URGENT: correction to article 2" --capability edit \
    --label "$run_label" -q)
echo "submitted task $urgent; the editor refuses urgent pieces without a style guide:"
if "$conclave" task wait "$urgent"; then
    die "task $urgent should have been dead-lettered"
fi
show dlq ls --queue edit
echo "write the style guide, then redrive the task"
echo "Be brief." >"$run_dir/style-guide.txt"
show dlq redrive "$urgent"
show task wait "$urgent"
show task history "$urgent"

step "Done: stopping the agents (each releases what it holds and closes its session)"
stop_agents
show agent ls --all
