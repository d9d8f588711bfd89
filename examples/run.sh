#!/usr/bin/env bash
# run.sh: a walk-through of tasks, agents, decisions and workflows on a running cluster.
#
# Usage: examples/run.sh [SECTION...]     (no section: every one, in this order)
#
#   tasks      three exec agents (`conclave agent run`) whose work is a shell script each: a
#              researcher, a writer and an editor (agents/*.sh). Then:
#                1. three research -> write -> edit chains run side by side; each step is a task
#                   whose payload is the previous step's result (the editor sometimes asks to be
#                   retried: exit 75);
#                2. the tasks, the fleet and one task's attempts are shown;
#                3. the three agents vote on publishing; a task gated on that decision runs once it
#                   is decided;
#                4. a task the editor refuses for good lands in the dead-letter queue, the cause
#                   is fixed, and the task is redriven and succeeds.
#   workflows  the cluster runs the definitions of workflows/ with a fleet of exec agents that
#              read the workflow's envelope (agents/envelope.py):
#                5. content-pipeline.yaml: research -> write -> edit;
#                6. fan-out-research.yaml: five researchers in parallel, three of them slow; the
#                   join's partial deadline takes what the two fast ones found, and the aggregator
#                   says what is missing;
#                7. vote-publish.yaml: the workflow waits for a vote, three agents vote, and the
#                   outcome picks the branch (publish and announce; archive is skipped).
#   manager-worker
#              manager-worker.yaml: a planner lists the report's sections; the manager's agent
#                8. delegates one task per section to two writers under its own lease
#                   (`conclave task delegate ... --wait`, agents/manager-worker/manager.sh); a
#                   writer refuses the legal section for good, which escalates to the senior
#                   editor; the results come back to the manager, and a reviewer signs off.
#   events     event-driven agents on a topic:
#                9. a topic, a consumer group whose two members run agents/events/summarize.sh per
#                   message (`conclave topic consume`), and a broadcast subscriber;
#               10. a scout publishes three papers (keyed, with idempotency keys);
#               11. each summarizer stores its summary and announces it in one transaction
#                   (`conclave txn`: a conditional put and a publish); the subscriber sees all six.
#
# Each section starts its own agents and stops them when it ends. On exit (also on Ctrl-C) every
# agent still running is stopped by PID: SIGINT, then SIGKILL after 5 s.
#
# Needs a cluster (`scripts/cluster.sh up`), python3 (the workflow agents read JSON with it), and
# the `conclave` binary: on PATH, in $CONCLAVE_CLI, or in the cargo target directory. Endpoints:
# $CONCLAVE_ENDPOINTS (default: the local cluster).
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
[[ $conclave == /* ]] || conclave=$PWD/$conclave
# The commands shown name the workflow files as a person in the repository root would.
cd "$repo"

# Agent logs, the finished articles and the editor's style guide live here.
run_dir=$here/.run
rm -rf "$run_dir"
mkdir -p "$run_dir"
export EXAMPLE_STATE_DIR=$run_dir
# Every task of this run carries this label, so listings show this run only.
run_label="run=$(date +%s)"

# Every agent this script starts, and the workflow it waits for in the background: stopped by PID
# when a section ends and on exit.
background_pids=()
stop_background() {
    local pid
    for pid in "${background_pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${background_pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    background_pids=()
}
trap stop_background EXIT
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

# Starts an exec agent running agents/SCRIPT: start_agent NAME SCRIPT [agent run flags...]. Its log
# is examples/.run/agent-NAME.log.
start_agent() {
    local name=$1 script=$2
    shift 2
    "$conclave" agent run --name "$name" --shutdown-grace 5s "$@" -- "$here/agents/$script" \
        2>>"$run_dir/agent-$name.log" &
    background_pids+=("$!")
    echo "agent $name ($script $*): pid $!"
}

# Waits until every named agent is live (at most 10 s each).
wait_live() {
    local name
    for name in "$@"; do
        for _ in $(seq 100); do
            "$conclave" agent get "$name" --json 2>/dev/null | grep -q '"status": "live"' && break
            sleep 0.1
        done
    done
}

# Prints a field of a workflow step, read with `workflow get --json`: step_field ID STEP FIELD.
step_field() {
    "$conclave" workflow get "$1" --json | python3 -c '
import json, sys
step = next(s for s in json.load(sys.stdin)["steps"] if s["name"] == sys.argv[1])
value = step[sys.argv[2]]
print(value if isinstance(value, str) else json.dumps(value))
' "$2" "$3"
}

# The workflow id in what `workflow start --wait` printed ("workflow 7 content-pipeline v1: ...").
workflow_id_of() {
    sed -n 's/^workflow \([0-9][0-9]*\) .*/\1/p' "$1" | head -n 1
}

# Takes a process that has been waited for off the list stop_background signals.
forget_pid() {
    local pid kept=()
    for pid in "${background_pids[@]}"; do
        [[ $pid == "$1" ]] || kept+=("$pid")
    done
    background_pids=("${kept[@]}")
}

# --- Section: tasks ------------------------------------------------------------------------------

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

section_tasks() {
    step "Start three exec agents (logs in examples/.run/agent-*.log)"
    start_agent researcher researcher.sh --capability research --concurrency 2
    start_agent writer writer.sh --capability write --concurrency 2
    start_agent editor editor.sh --capability edit --concurrency 2
    wait_live researcher writer editor
    show agent ls

    step "1. Three research -> write -> edit chains, side by side"
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
    stop_background
    show agent ls --all
}

# --- Section: workflows --------------------------------------------------------------------------

section_workflows() {
    step "Start the workflow agents (logs in examples/.run/agent-*.log)"
    # Each runs agents/step.sh, which picks the script by the step's queue: a step that asks for no
    # capability (plan, publish, archive) may go to any live agent. Three of them are reviewers,
    # the electorate of vote-publish's vote.
    start_agent researcher-1 step.sh --capability search --capability reviewer
    start_agent researcher-2 step.sh --capability search
    start_agent writer step.sh --capability writing --capability reviewer --concurrency 2
    start_agent editor step.sh --capability editing --capability reviewer --concurrency 2
    wait_live researcher-1 researcher-2 writer editor
    show agent ls

    step "5. A content pipeline, run by the cluster: research -> write -> edit"
    # Each step's task payload is the workflow's envelope: the input, the step's params and the
    # results of the steps it follows. The editor may ask to be retried (exit 75): the step's task
    # runs again after its backoff, and the workflow goes on.
    show workflow check examples/workflows/content-pipeline.yaml
    show workflow start examples/workflows/content-pipeline.yaml \
        --input '{"topic":"consensus protocols"}' --wait | tee "$run_dir/content-pipeline.txt"
    pipeline=$(workflow_id_of "$run_dir/content-pipeline.txt")
    echo
    echo "--- the edit step's result (workflow $pipeline) ---"
    step_field "$pipeline" edit result

    step "6. Five researchers in parallel; the join's deadline takes what the fast ones found"
    # Three more researchers, slow ones: each takes a minute, longer than the join's deadline
    # (15 s). The join wants three results; only the two fast researchers deliver in time, so at
    # the deadline the slow branches time out (their tasks are canceled, their commands stopped)
    # and the aggregator writes from the two it has, naming the missing angles.
    for n in 3 4 5; do
        RESEARCH_SECONDS=60 start_agent "researcher-$n" step.sh --capability search
    done
    wait_live researcher-3 researcher-4 researcher-5
    show workflow start examples/workflows/fan-out-research.yaml \
        --input '{"topic":"fencing tokens"}' --wait | tee "$run_dir/fan-out-research.txt"
    fan_out=$(workflow_id_of "$run_dir/fan-out-research.txt")
    echo
    echo "--- the aggregate step's result (workflow $fan_out) ---"
    step_field "$fan_out" aggregate result

    step "7. A vote decides: publish and announce, or archive"
    printf '$ conclave workflow start examples/workflows/vote-publish.yaml --input %q --wait &\n' \
        '{"topic":"leases"}'
    "$conclave" workflow start examples/workflows/vote-publish.yaml --input '{"topic":"leases"}' \
        --wait >"$run_dir/vote-publish.txt" 2>"$run_dir/vote-publish.err" &
    local waiter=$!
    background_pids+=("$waiter")
    local vote_publish="" decision=0
    for _ in $(seq 200); do
        vote_publish=$(sed -n 's/^workflow \([0-9][0-9]*\) started.*/\1/p' "$run_dir/vote-publish.err")
        if [[ -n $vote_publish ]]; then
            decision=$(step_field "$vote_publish" vote decision_id)
            ((decision != 0)) && break
        fi
        sleep 0.1
    done
    ((decision != 0)) || die "workflow ${vote_publish:-?} did not open its vote: $(cat "$run_dir/vote-publish.err")"
    echo "workflow $vote_publish waits for decision $decision (WAITING: input required):"
    show workflow get "$vote_publish"
    show decision vote "$decision" no --as researcher-1 --rationale "one more source"
    show decision vote "$decision" yes --as writer --rationale "it reads well"
    show decision vote "$decision" yes --as editor --rationale "edited and approved"
    wait "$waiter" || die "workflow $vote_publish did not succeed: $(cat "$run_dir/vote-publish.txt")"
    forget_pid "$waiter"
    cat "$run_dir/vote-publish.txt"
    echo
    echo "--- the announce step's result (workflow $vote_publish) ---"
    step_field "$vote_publish" announce result

    step "Done: stopping the workflow agents (each releases what it holds and closes its session)"
    stop_background
    show workflow ls --after "$((pipeline - 1))"
}

# --- Section: manager-worker --------------------------------------------------------------------

section_manager_worker() {
    step "Start the manager-worker agents (logs in examples/.run/agent-*.log)"
    # The manager's command delegates the sections itself (`conclave task delegate`, which finds
    # the task, its fencing token and the cluster in the environment `conclave agent run` sets);
    # the writers refuse the legal section for good, which escalates to the senior editor.
    local tree=manager-worker
    CONCLAVE_CLI=$conclave start_agent planner "$tree/planner.sh" --capability planner
    CONCLAVE_CLI=$conclave start_agent manager "$tree/manager.sh" --capability manager
    start_agent section-writer-1 "$tree/writer.sh" --capability writing --concurrency 3
    start_agent section-writer-2 "$tree/writer.sh" --capability writing --concurrency 3
    start_agent senior-editor "$tree/senior-editor.sh" --capability senior-editor
    start_agent reviewer "$tree/reviewer.sh" --capability reviewer
    wait_live planner manager section-writer-1 section-writer-2 senior-editor reviewer

    step "8. A manager delegates the sections; a refused one escalates to the senior editor"
    show workflow start examples/workflows/manager-worker.yaml --wait | tee "$run_dir/manager-worker.txt"
    local tree_id manager
    tree_id=$(workflow_id_of "$run_dir/manager-worker.txt")
    manager=$("$conclave" workflow get "$tree_id" --json | python3 -c '
import json, sys
step = next(s for s in json.load(sys.stdin)["steps"] if s["name"] == "manage")
print(step["branches"][0]["task_id"])')
    echo
    echo "--- the tasks the manager (task $manager) delegated, the escalation among them ---"
    show task ls --parent "$manager"
    echo
    echo "--- the manager's result (workflow $tree_id) ---"
    step_field "$tree_id" manage result

    step "Done: stopping the manager-worker agents"
    stop_background
}

# --- Section: events ----------------------------------------------------------------------------

section_events() {
    # The topic research captures research.>; a previous run's is deleted first. Summaries go
    # under a prefix of this run's.
    local topic=research prefix
    prefix=summaries/$(date +%s)/
    "$conclave" topic delete "$topic" >/dev/null 2>&1 || true
    step "9. Event-driven agents: a topic, a consumer group of summarizers and a broadcast subscriber"
    show topic create "$topic" --subjects 'research.>'
    show topic group create "$topic" summarizers --filter 'research.papers.>' --max-deliveries 3
    # Each summarizer is a member of the group: `topic consume` runs agents/events/summarize.sh once
    # per message (each message to one member), acks on exit 0, nacks otherwise.
    local n
    for n in 1 2; do
        CONCLAVE_CLI=$conclave SUMMARY_PREFIX=$prefix "$conclave" topic consume "$topic" summarizers --member "summarizer-$n" \
            -- "$here/agents/events/summarize.sh" >>"$run_dir/summarizer-$n.log" 2>&1 &
        background_pids+=("$!")
        echo "summarizer-$n (topic consume ... -- agents/events/summarize.sh): pid $!"
    done
    # A broadcast subscriber sees everything under research.>, in publish order: three papers and
    # the three announcements the summarizers publish.
    printf '$ conclave topic tail %q --topic %s --all --count 6 &\n' 'research.>' "$topic"
    "$conclave" topic tail 'research.>' --topic "$topic" --all --count 6 >"$run_dir/events-tail.txt" &
    local tail_pid=$!
    background_pids+=("$tail_pid")

    step "10. The scout publishes three papers it found, keyed by desk (one desk's papers in order)"
    show topic publish research.papers.found '{"title":"Paxos made simple"}' --key consensus --id paper-1
    show topic publish research.papers.found '{"title":"In search of an understandable consensus algorithm"}' \
        --key consensus --id paper-2
    show topic publish research.papers.found '{"title":"Leases: an efficient fault-tolerant mechanism"}' \
        --key leases --id paper-3
    echo "(publishing paper-1 again with the same --id stores nothing new:)"
    show topic publish research.papers.found '{"title":"Paxos made simple"}' --key consensus --id paper-1

    step "11. Each summary is stored and announced in one transaction (conclave txn): wait for three"
    local count=0
    for _ in $(seq 300); do
        count=$("$conclave" kv ls "$prefix" 2>/dev/null | grep -c "^$prefix" || true)
        ((count >= 3)) && break
        sleep 0.1
    done
    ((count >= 3)) || die "only $count summaries after 30 s; see $run_dir/summarizer-*.log"
    show kv ls "$prefix"
    wait "$tail_pid" || die "the subscriber did not see six messages: $(cat "$run_dir/events-tail.txt")"
    forget_pid "$tail_pid"
    echo "--- what the broadcast subscriber saw ---"
    cat "$run_dir/events-tail.txt"
    show topic get "$topic"

    step "Done: stopping the summarizers"
    stop_background
    show topic delete "$topic"
}

# --- Run the sections asked for --------------------------------------------------------------------

sections_known=(tasks workflows manager-worker events)
sections=("$@")
if ((${#sections[@]} == 0)); then
    sections=("${sections_known[@]}")
fi
for section in "${sections[@]}"; do
    case " ${sections_known[*]} " in
    *" $section "*) ;;
    *) die "no section '$section': choose from ${sections_known[*]}" ;;
    esac
done

"$conclave" cluster status >/dev/null 2>&1 ||
    die "no cluster answers at ${CONCLAVE_ENDPOINTS:-127.0.0.1:7001-7003}: start one with scripts/cluster.sh up"

for section in "${sections[@]}"; do
    "section_${section//-/_}"
done
