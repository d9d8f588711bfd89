#!/usr/bin/env bash
# cluster.sh: a three-node Conclave cluster on this machine, for trying things by hand.
#
# Usage: scripts/cluster.sh COMMAND [ARGS]
#
#   up               build the binaries if needed, start nodes 1-3, initialize the cluster on its
#                    first start, wait until a leader serves reads, print the cluster status.
#                    Nodes already running are left alone, so running it twice is harmless.
#   down             stop every node: SIGTERM, then SIGKILL after a grace period.
#   status [FLAGS]   each node's process, then `conclave [FLAGS] cluster status` (e.g. --json).
#   start N          start node N (1-3) again with its data.
#   stop N           stop node N: SIGTERM, then SIGKILL after a grace period.
#   kill N           SIGKILL node N (a crash).
#   logs N [--no-follow]
#                    follow node N's log (tail -F); with --no-follow print it and return.
#   clean            down, then delete the cluster's data and logs.
#   help             this text.
#
# Nodes listen on 127.0.0.1: API ports 7001-7003, peer ports 7101-7103, Prometheus metrics on
# http://127.0.0.1:7201-7203/metrics (moved by CONCLAVE_API_PORT_BASE, CONCLAVE_PEER_PORT_BASE and
# CONCLAVE_METRICS_PORT_BASE, to run beside another cluster; give every command of that cluster
# the same values and its own CONCLAVE_HOME). Everything a node has lives
# under $CONCLAVE_HOME (default: .conclave in the checkout):
#   nodeN/data       the node's data directory (RocksDB: Raft log, vote, snapshots)
#   nodeN/node.log   the node's stderr and stdout, appended across restarts
#   nodeN/pid        the pid of the running node
#   initialized      marker: `conclave cluster init` has succeeded for this home
#
# Environment:
#   CONCLAVE_HOME        where the nodes keep their data (default: <checkout>/.conclave)
#   CONCLAVE_BIN_DIR     use the prebuilt conclave-node and conclave found there; build nothing
#   CONCLAVE_PROFILE     cargo profile to build and run: release (default) or debug
#   CARGO_TARGET_DIR     cargo's target directory (default: <checkout>/target)
#   CONCLAVE_NODE_ARGS   extra flags for every node, split on spaces, e.g. "--heartbeat-ms 100"
#   CONCLAVE_API_PORT_BASE      node N's API port is this + N (default 7000)
#   CONCLAVE_PEER_PORT_BASE     node N's peer port is this + N (default 7100)
#   CONCLAVE_METRICS_PORT_BASE  node N's metrics port is this + N (default 7200)
#   CONCLAVE_UP_TIMEOUT_SECS    how long `up` waits for a serving leader (default 30)
#   CONCLAVE_STOP_GRACE_SECS    how long stop/down wait after SIGTERM before SIGKILL (default 10)
#   Node settings can also be given as the node's own variables (CONCLAVE_LOG, CONCLAVE_HEARTBEAT_MS...).
#
# Processes are only ever signalled by the pid in their pid file, and only after /proc/PID/cmdline
# shows that it is conclave-node running on that node's data directory: never by name.
set -euo pipefail

readonly NODE_IDS=(1 2 3)
readonly API_PORT_BASE=${CONCLAVE_API_PORT_BASE:-7000}
readonly PEER_PORT_BASE=${CONCLAVE_PEER_PORT_BASE:-7100}
readonly METRICS_PORT_BASE=${CONCLAVE_METRICS_PORT_BASE:-7200}
readonly HOST=127.0.0.1
# A key no one writes: reading it linearizably proves that a leader serves.
readonly PROBE_KEY=__cluster_sh_probe
readonly HOME_MARKER=.cluster-sh-home

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home_dir=${CONCLAVE_HOME:-$repo_root/.conclave}
profile=${CONCLAVE_PROFILE:-release}
up_timeout_secs=${CONCLAVE_UP_TIMEOUT_SECS:-30}
stop_grace_secs=${CONCLAVE_STOP_GRACE_SECS:-10}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

for base in "$API_PORT_BASE" "$PEER_PORT_BASE" "$METRICS_PORT_BASE"; do
    if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1024 || base > 65000)); then
        die "a port base must be a number from 1024 to 65000, got '$base'"
    fi
done

say() {
    echo "cluster.sh: $*"
}

usage() {
    # The header comment above is the help text.
    sed -n '2,/^set -euo pipefail$/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# --- layout ----------------------------------------------------------------------------------------

# Creates the home directory and makes $home_dir absolute: node command lines name their data
# directory by absolute path, which is how running_pid recognizes them.
create_home() {
    mkdir -p "$home_dir"
    resolve_home
    # Marks the directory as ours, so that `clean` never deletes in a directory it did not make.
    touch "$home_dir/$HOME_MARKER"
}

resolve_home() {
    if [[ -d $home_dir ]]; then
        home_dir=$(cd "$home_dir" && pwd)
    elif [[ $home_dir != /* ]]; then
        home_dir=$PWD/$home_dir
    fi
}

node_dir() { echo "$home_dir/node$1"; }
data_dir() { echo "$home_dir/node$1/data"; }
log_file() { echo "$home_dir/node$1/node.log"; }
pid_file() { echo "$home_dir/node$1/pid"; }
api_addr() { echo "$HOST:$((API_PORT_BASE + $1))"; }
peer_addr() { echo "$HOST:$((PEER_PORT_BASE + $1))"; }
metrics_addr() { echo "$HOST:$((METRICS_PORT_BASE + $1))"; }

endpoints() {
    local id list=()
    for id in "${NODE_IDS[@]}"; do list+=("$(api_addr "$id")"); done
    (IFS=,; echo "${list[*]}")
}

check_node_id() {
    [[ ${1:-} =~ ^[1-3]$ ]] || die "expected a node id 1-3, got '${1:-}' (see: $0 help)"
}

# --- binaries --------------------------------------------------------------------------------------

profile_dir() {
    case $profile in
        release) echo release ;;
        debug | dev) echo debug ;;
        *) echo "$profile" ;;
    esac
}

bin_dir() {
    if [[ -n ${CONCLAVE_BIN_DIR:-} ]]; then
        echo "$CONCLAVE_BIN_DIR"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$repo_root/target}
    # A relative CARGO_TARGET_DIR is relative to where cargo runs: the checkout (see build).
    [[ $target == /* ]] || target=$repo_root/$target
    echo "$target/$(profile_dir)"
}

node_bin() { echo "$(bin_dir)/conclave-node"; }
cli_bin() { echo "$(bin_dir)/conclave"; }

build() {
    if [[ -n ${CONCLAVE_BIN_DIR:-} ]]; then
        say "using prebuilt binaries in $CONCLAVE_BIN_DIR"
    else
        local profile_flag=(--profile "$profile")
        [[ $profile == debug ]] && profile_flag=(--profile dev)
        say "building ($profile): cargo build ${profile_flag[*]} --bins -p conclave-node -p conclave-client"
        (cd "$repo_root" && cargo build "${profile_flag[@]}" --bins -p conclave-node -p conclave-client) ||
            die "build failed"
    fi
    require_binaries
}

require_binaries() {
    local bin
    for bin in "$(node_bin)" "$(cli_bin)"; do
        [[ -x $bin ]] || die "missing $bin (run '$0 up' to build it, or set CONCLAVE_BIN_DIR)"
    done
}

# Runs the CLI against the three local nodes, bounded in time so that a hung node cannot hang us.
cli() {
    timeout "${cli_timeout_secs:-20}" "$(cli_bin)" --endpoints "$(endpoints)" "$@"
}

# --- processes -------------------------------------------------------------------------------------

# Prints the pid of node $1 if it is running, and fails otherwise. Running means: the pid file names a
# live process whose command line is conclave-node with this node's data directory.
running_pid() {
    local id=$1 pid
    pid=$(cat "$(pid_file "$id")" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    is_our_node "$pid" "$id" || return 1
    echo "$pid"
}

is_our_node() {
    local pid=$1 id=$2 args=() arg
    # A zombie or a vanished process has an empty or unreadable command line.
    mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || return 1
    ((${#args[@]} > 0)) || return 1
    [[ $(basename -- "${args[0]}") == conclave-node ]] || return 1
    for arg in "${args[@]}"; do
        [[ $arg == "$(data_dir "$id")" ]] && return 0
    done
    return 1
}

port_in_use() {
    # Connecting succeeds only if something listens there.
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

log_tail() {
    local id=$1
    echo "--- last lines of $(log_file "$id") ---" >&2
    tail -n 30 "$(log_file "$id")" >&2 2>/dev/null || true
    echo "---" >&2
}

start_node() {
    local id=$1 pid pidfile
    if pid=$(running_pid "$id"); then
        say "node $id already running (pid $pid)"
        return 0
    fi
    pidfile=$(pid_file "$id")
    rm -f "$pidfile"
    local port
    for port in $((API_PORT_BASE + id)) $((PEER_PORT_BASE + id)) $((METRICS_PORT_BASE + id)); do
        if port_in_use "$port"; then
            die "node $id: port $port is already in use by another process (another cluster? see: ss -ltnp | grep :$port)"
        fi
    done
    mkdir -p "$(data_dir "$id")"

    local extra_args=()
    read -r -a extra_args <<<"${CONCLAVE_NODE_ARGS:-}"
    local args=(
        --id "$id"
        --api-addr "$(api_addr "$id")"
        --peer-addr "$(peer_addr "$id")"
        --metrics-addr "$(metrics_addr "$id")"
        --data-dir "$(data_dir "$id")"
        "${extra_args[@]}"
    )
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) cluster.sh: starting $(node_bin) ${args[*]}" >>"$(log_file "$id")"
    # The inner shell writes its own pid and then becomes the node (exec), so the pid file names the
    # node itself. setsid detaches it from this terminal: closing it or Ctrl-C here does not stop it.
    local launcher=()
    command -v setsid >/dev/null && launcher=(setsid)
    # shellcheck disable=SC2016 # $$ and $0 belong to the inner shell.
    "${launcher[@]}" bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" \
        "$(node_bin)" "${args[@]}" </dev/null >>"$(log_file "$id")" 2>&1 &

    # Wait until the pid file names the running node, then a moment more to catch an immediate exit
    # (a bad flag, a locked data directory).
    local waited=0
    until pid=$(running_pid "$id"); do
        if ((waited >= 50)); then
            log_tail "$id"
            die "node $id did not start"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    sleep 0.3
    if ! running_pid "$id" >/dev/null; then
        log_tail "$id"
        die "node $id exited right after starting"
    fi
    say "node $id started (pid $pid, api $(api_addr "$id"), log $(log_file "$id"))"
}

# Sends $2 to node $1 and waits for it to exit; after SIGTERM, escalates to SIGKILL after the grace
# period.
signal_node() {
    local id=$1 signal=$2 pid
    if ! pid=$(running_pid "$id"); then
        say "node $id is not running"
        rm -f "$(pid_file "$id")"
        return 0
    fi
    kill "-$signal" "$pid"
    say "node $id: sent SIG$signal to pid $pid"
    wait_for_exit "$id" "$pid" "$signal"
}

wait_for_exit() {
    local id=$1 pid=$2 signal=$3 deadline
    if [[ $signal == KILL ]]; then
        deadline=$((SECONDS + 5))
    else
        deadline=$((SECONDS + stop_grace_secs))
    fi
    while is_our_node "$pid" "$id"; do
        if ((SECONDS >= deadline)); then
            if [[ $signal == KILL ]]; then
                die "node $id (pid $pid) still alive after SIGKILL"
            fi
            say "node $id (pid $pid) did not exit within ${stop_grace_secs}s of SIGTERM: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            signal=KILL
            deadline=$((SECONDS + 5))
        fi
        sleep 0.1
    done
    rm -f "$(pid_file "$id")"
    say "node $id stopped"
}

# --- cluster ---------------------------------------------------------------------------------------

# Initializes the cluster once per home. "Already initialized" counts as success: the marker may have
# been lost, or an earlier attempt may have succeeded without us seeing the answer.
initialize() {
    local marker=$home_dir/initialized output deadline
    [[ -e $marker ]] && return 0
    say "initializing the cluster (nodes 1-3) through node 1"
    # The members by their addresses: the CLI's default is the default ports.
    local id members=()
    for id in "${NODE_IDS[@]}"; do members+=(--member "$id=$(api_addr "$id")/$(peer_addr "$id")"); done
    deadline=$((SECONDS + up_timeout_secs))
    while true; do
        if output=$(cli cluster init "${members[@]}" 2>&1); then
            [[ -n $output ]] && echo "$output"
            break
        fi
        if grep -qiE 'already.?(initialized|exists)' <<<"$output"; then
            say "the cluster was already initialized"
            break
        fi
        if ((SECONDS >= deadline)); then
            echo "$output" >&2
            log_tail 1
            die "cluster init did not succeed within ${up_timeout_secs}s"
        fi
        sleep 0.5
    done
    touch "$marker"
}

# Waits until a linearizable read succeeds, which takes a leader that a quorum follows. The probe key
# does not exist, so the CLI exits 1 ("not found") even then; with --json it prints the read's
# response header only when the read itself succeeded.
wait_for_leader() {
    local deadline output id
    deadline=$((SECONDS + up_timeout_secs))
    say "waiting up to ${up_timeout_secs}s for a leader to serve"
    while true; do
        output=$(cli_timeout_secs=5 cli --json kv get "$PROBE_KEY" 2>&1) || true
        if grep -q '"header"' <<<"$output"; then
            say "a leader serves"
            return 0
        fi
        for id in "${NODE_IDS[@]}"; do
            if ! running_pid "$id" >/dev/null; then
                log_tail "$id"
                die "node $id exited while waiting for a leader"
            fi
        done
        if ((SECONDS >= deadline)); then
            echo "last probe (conclave kv get $PROBE_KEY): $output" >&2
            for id in "${NODE_IDS[@]}"; do log_tail "$id"; done
            die "no leader served within ${up_timeout_secs}s"
        fi
        sleep 0.5
    done
}

print_processes() {
    local id pid
    for id in "${NODE_IDS[@]}"; do
        if pid=$(running_pid "$id"); then
            echo "node $id: running (pid $pid), api $(api_addr "$id"), peer $(peer_addr "$id"), metrics http://$(metrics_addr "$id")/metrics"
        else
            echo "node $id: not running"
        fi
    done
}

cmd_up() {
    build
    create_home
    local id
    for id in "${NODE_IDS[@]}"; do start_node "$id"; done
    initialize
    wait_for_leader
    cmd_status
    print_endpoints
}

# The line that points the CLI (and the client library's examples) at this cluster.
print_endpoints() {
    echo
    echo "# the CLI talks to this cluster with:"
    echo "export CONCLAVE_ENDPOINTS=$(endpoints)"
}

cmd_down() {
    resolve_home
    local id pid pids=()
    # SIGTERM all first so that the nodes shut down in parallel, then wait for each.
    for id in "${NODE_IDS[@]}"; do
        if pid=$(running_pid "$id"); then
            kill -TERM "$pid"
            say "node $id: sent SIGTERM to pid $pid"
            pids[id]=$pid
        else
            rm -f "$(pid_file "$id")"
        fi
    done
    for id in "${!pids[@]}"; do wait_for_exit "$id" "${pids[id]}" TERM; done
    ((${#pids[@]} > 0)) || say "no node was running"
}

cmd_status() {
    resolve_home
    require_binaries
    print_processes
    cli "$@" cluster status
}

cmd_logs() {
    check_node_id "${1:-}"
    resolve_home
    local log
    log=$(log_file "$1")
    [[ -e $log ]] || die "no log yet at $log"
    case ${2:-} in
        "") exec tail -n 50 -F "$log" ;;
        --no-follow | -n) cat "$log" ;;
        *) die "unknown option '$2' for logs (see: $0 help)" ;;
    esac
}

cmd_clean() {
    resolve_home
    if [[ ! -d $home_dir ]]; then
        say "nothing to clean: $home_dir does not exist"
        return 0
    fi
    cmd_down
    # Delete only what this script creates, and only in a directory it marked as its own.
    [[ -e $home_dir/$HOME_MARKER ]] || die "refusing to clean $home_dir: it has no $HOME_MARKER marker"
    local id
    for id in "${NODE_IDS[@]}"; do rm -rf -- "$(node_dir "$id")"; done
    rm -f -- "$home_dir/initialized" "$home_dir/$HOME_MARKER"
    rmdir -- "$home_dir" 2>/dev/null || say "left $home_dir in place: it holds files this script did not make"
    say "removed the cluster's data under $home_dir"
}

main() {
    local command=${1:-help}
    (($# > 0)) && shift
    case $command in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status "$@" ;;
        start)
            check_node_id "${1:-}"
            require_binaries
            create_home
            start_node "$1"
            ;;
        stop)
            check_node_id "${1:-}"
            resolve_home
            signal_node "$1" TERM
            ;;
        kill)
            check_node_id "${1:-}"
            resolve_home
            signal_node "$1" KILL
            ;;
        logs) cmd_logs "$@" ;;
        clean) cmd_clean ;;
        help | -h | --help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
