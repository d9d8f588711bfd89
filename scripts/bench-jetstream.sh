#!/usr/bin/env bash
# bench-jetstream.sh: NATS JetStream's figures beside `conclave bench topic` (issue 11, "Proof"), on
# this machine, with the same message size. Not part of CI: run by hand, a few minutes.
#
# Usage: scripts/bench-jetstream.sh [--sync default|always|both] [--nats-server PATH] [--keep]
#                                   [LOAD-GENERATOR FLAGS]
#
#   --sync MODE   the servers' fsync policy (default: both, one fresh cluster after the other):
#                   default  JetStream's own: no fsync per write. A publish is acked once a quorum
#                            of the stream's Raft group has written it, to the OS page cache; the
#                            file store is fsynced in the background every 2 minutes (2.9: the
#                            stream's store every 2 minutes and its Raft log every 5, fixed; 2.10+:
#                            `sync_interval`, default 2m). A power loss or kernel crash of a
#                            quorum can lose acknowledged messages.
#                   always   `sync_interval: always` (nats-server 2.10 or later): every write to the
#                            stream's store and Raft log is fsynced before it is acked, the policy
#                            closest to Conclave's (an entry is acked only after a quorum fsynced
#                            it). Skipped, saying so, with an older server.
#   --nats-server PATH   the nats-server binary (default: `nats-server` on PATH, installed from
#                 Debian's package when absent; bookworm's is 2.9.10, which cannot sync always;
#                 NATS_SERVER in the environment does the same). Debian trixie's package (2.10.27)
#                 can be unpacked beside bookworm's without installing it or touching apt's sources:
#                   T=/var/tmp/apt-trixie; mkdir -p $T/lists/partial $T/cache/archives/partial
#                   echo 'deb MIRROR trixie main' >$T/sources.list  # MIRROR: the one apt uses
#                   O="-o Dir::Etc::SourceList=$T/sources.list -o Dir::Etc::SourceParts=/dev/null
#                      -o Dir::State::Lists=$T/lists -o Dir::Cache=$T/cache"
#                   apt-get $O update && (cd $T && apt-get $O download nats-server)
#                   dpkg-deb -x $T/nats-server_*.deb /var/tmp/nats-trixie  # .../usr/sbin/nats-server
#   --keep        keep the servers' store dirs, configs and logs (printed at the end); they are
#                 also kept when something fails
#   LOAD-GENERATOR FLAGS go to scripts/bench_jetstream.py (see its --help and docstring), e.g.
#     --size 256          message payload bytes (default 256, as `conclave bench topic`)
#     --duration 10       measured seconds per figure (default 10), after --warmup 1
#     --figures abcdef    which figures: a/b 1 publisher not batched/batched (window --batch 256),
#                         c/d --publishers 256 not batched/batched (window --many-batch 16 each),
#                         e publish-to-delivery p50/p99 at --rate 1000/s to a group of --consumers 8
#                           (with sync=always 1,000/s, plus as many fsynced acks, is about what three
#                           servers on 2 cores sustain: try --rate 250 or 500 too),
#                         f a group of 8 draining --drain-messages 50000 (plain and double acks)
#
# Examples:
#   scripts/bench-jetstream.sh                                   # everything, both sync policies
#   scripts/bench-jetstream.sh --sync always --duration 5 --figures ab --nats-server /opt/nats/nats-server
#
# What it does: installs what is missing (Debian's nats-server with apt-get, as root or through
# password-less sudo; nats-py into a venv, $BENCH_JETSTREAM_VENV, default
# /var/tmp/conclave-jetstream-bench-venv, never into the checkout); starts three nats-servers on
# 127.0.0.1 on free ports (found by the kernel, so another cluster may be running), each with its
# own store dir under a temp dir ($TMPDIR or /tmp), one cluster route mesh, JetStream with file
# storage; then the load generator creates stream BENCH (subjects bench.>, 3 replicas, file
# storage) and prints one line per figure, e.g.
#   jetstream publish publishers=1 batch=1 size=256 sync=default: 3,210 msgs/s (p50 0.29 ms, ...
# The servers are stopped by the pids this script started (SIGTERM, then SIGKILL after 10 s) on
# exit, failure or Ctrl-C; never by name.
#
# Reading the figures: the load generator is one Python process (asyncio, nats-py) sharing this
# machine's cores with the three servers; each line ends with the CPU it and the servers used, so
# a figure bound by the client or by the machine shows as such, and its 1-minute load average
# (other work on the machine lowers every figure). Exit status: 0; 1 when a publish, delivery or ack
# failed (the FAILURES line says which) or the load generator failed; 2 on bad usage or setup.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${BENCH_JETSTREAM_VENV:-/var/tmp/conclave-jetstream-bench-venv}
readonly STOP_GRACE_SECS=10
readonly READY_TIMEOUT_SECS=30

sync_modes=(default always)
keep=false
nats_server=${NATS_SERVER:-}
generator_args=()
while (($# > 0)); do
    case $1 in
    --sync)
        [[ $# -ge 2 ]] || { echo "bench-jetstream: --sync needs default, always or both" >&2; exit 2; }
        case $2 in
        default | always) sync_modes=("$2") ;;
        both) sync_modes=(default always) ;;
        *) echo "bench-jetstream: --sync takes default, always or both, not '$2'" >&2; exit 2 ;;
        esac
        shift 2
        ;;
    --keep) keep=true; shift ;;
    --nats-server)
        [[ $# -ge 2 ]] || { echo "bench-jetstream: --nats-server needs a path" >&2; exit 2; }
        nats_server=$2
        shift 2
        ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) generator_args+=("$1"); shift ;;
    esac
done

as_root() {
    if (($(id -u) == 0)); then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        echo "bench-jetstream: not root and no password-less sudo: cannot run: $*" >&2
        return 1
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # Stale or missing package lists: update only when the first try fails (as .ci/run does).
    as_root apt-get install -y --no-install-recommends "$@" ||
        { as_root apt-get update && as_root apt-get install -y --no-install-recommends "$@"; }
}

setup() {
    if [[ -n $nats_server ]]; then
        [[ -x $nats_server ]] || { echo "bench-jetstream: $nats_server is not an executable" >&2; exit 2; }
    else
        if ! command -v nats-server >/dev/null; then
            echo "nats-server: missing, installing Debian's package"
            apt_install nats-server || { echo "bench-jetstream: could not install nats-server" >&2; exit 2; }
        fi
        nats_server=$(command -v nats-server)
    fi
    if [[ ! -x $venv/bin/python ]]; then
        echo "venv: creating $venv"
        python3 -m venv "$venv" || {
            # Debian's python3 needs python3-venv for `-m venv` (ensurepip).
            rm -rf "$venv"
            apt_install python3-venv && python3 -m venv "$venv"
        } || { echo "bench-jetstream: could not create a venv at $venv" >&2; exit 2; }
    fi
    if ! "$venv/bin/python" -c 'import nats' 2>/dev/null; then
        echo "nats-py: missing, installing it into $venv"
        "$venv/bin/pip" install --quiet nats-py || { echo "bench-jetstream: could not pip install nats-py" >&2; exit 2; }
    fi
}

# --- the cluster -----------------------------------------------------------------------------------

work_dir=
server_pids=()
generator_pid=
status=0

# Six free loopback ports, chosen by the kernel (bound together so that none repeats).
free_ports() {
    "$venv/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

write_config() { # DIR N CLIENT_PORT ROUTE_PORT SYNC ROUTES...
    local dir=$1 n=$2 client_port=$3 route_port=$4 sync=$5
    shift 5
    local routes=("$@") sync_line=
    [[ $sync == always ]] && sync_line='  sync_interval: always'
    cat >"$dir/n$n.conf" <<EOF
server_name: n$n
listen: 127.0.0.1:$client_port
jetstream {
  store_dir: "$dir/n$n"
$sync_line
}
cluster {
  name: bench
  listen: 127.0.0.1:$route_port
  routes: [$(printf 'nats-route://127.0.0.1:%s, ' "${routes[@]}" | sed 's/, $//')]
}
EOF
}

# Our server, still running: a child of this shell (so its pid cannot have been reused: we reap
# our children only after they are gone) that is not a zombie. Checked by pid, never by name.
is_ours() {
    local pid=$1 state ppid
    [[ -r /proc/$pid/stat ]] || return 1
    read -r state ppid < <(cut -d ')' -f 2- "/proc/$pid/stat" 2>/dev/null | cut -d ' ' -f 2,3) || return 1
    [[ $ppid == "$$" && $state != Z ]]
}

stop_servers() {
    local pid waited=0 alive
    for pid in "${server_pids[@]}"; do
        if is_ours "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    while :; do
        alive=()
        for pid in "${server_pids[@]}"; do is_ours "$pid" && alive+=("$pid"); done
        ((${#alive[@]} == 0)) && break
        if ((waited >= STOP_GRACE_SECS * 10)); then
            echo "bench-jetstream: servers ${alive[*]} still up after ${STOP_GRACE_SECS}s: SIGKILL" >&2
            for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    server_pids=()
}

wait_ready() { # DIR N PORT: server nN listens on PORT
    local dir=$1 n=$2 port=$3 i=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! is_ours "${server_pids[n - 1]}"; then
            echo "bench-jetstream: server n$n exited; its log:" >&2
            tail -n 20 "$dir/n$n.log" >&2
            return 1
        fi
        if ((i++ >= READY_TIMEOUT_SECS * 10)); then
            echo "bench-jetstream: server n$n not listening on $port after ${READY_TIMEOUT_SECS}s" >&2
            return 1
        fi
        sleep 0.1
    done
}

start_cluster() { # SYNC -> sets cluster_urls
    local sync=$1 dir n m ports others
    dir="$work_dir/sync-$sync"
    mkdir -p "$dir"
    read -r -a ports <<<"$(free_ports)"
    for n in 1 2 3; do
        mkdir -p "$dir/n$n"
        # Routes to the two others only: a route to itself makes each server open and then drop
        # a duplicate route at start.
        others=()
        for m in 1 2 3; do ((m == n)) || others+=("${ports[m + 2]}"); done
        write_config "$dir" "$n" "${ports[n - 1]}" "${ports[n + 2]}" "$sync" "${others[@]}"
        "$nats_server" -c "$dir/n$n.conf" >"$dir/n$n.log" 2>&1 &
        server_pids+=("$!")
        # One after the other: 2.10.27 started all at once sometimes never offered a peer for
        # placement ("no suitable peers for placement" for a minute).
        wait_ready "$dir" "$n" "${ports[n - 1]}"
    done
    cluster_urls="nats://127.0.0.1:${ports[0]},nats://127.0.0.1:${ports[1]},nats://127.0.0.1:${ports[2]}"
    echo "# cluster sync=$sync: servers n1-n3 on $cluster_urls (pids ${server_pids[*]}), data $dir"
}

# shellcheck disable=SC2317 # run by the EXIT trap
on_exit() {
    local code=$?
    if [[ -n $generator_pid ]]; then
        kill -TERM "$generator_pid" 2>/dev/null || true
        wait "$generator_pid" 2>/dev/null || true
    fi
    stop_servers
    if [[ -n $work_dir ]]; then
        if [[ $keep == true || $code -ne 0 ]]; then
            echo "# kept: $work_dir (configs, store dirs, server logs)"
        else
            rm -rf "$work_dir"
        fi
    fi
    exit "$code"
}

supports_sync_always() { # VERSION (vMAJOR.MINOR.PATCH)
    local major minor
    IFS=. read -r major minor _ <<<"${1#v}"
    ((major > 2 || (major == 2 && minor >= 10)))
}

# --- main ------------------------------------------------------------------------------------------

setup
version=$("$nats_server" --version | grep -o 'v[0-9][0-9.]*' | head -n 1)
echo "# $nats_server: nats-server $version, nats-py $("$venv/bin/python" -c 'import nats.aio.client as c; print(c.__version__)'), $("$venv/bin/python" --version)"
runnable=()
for sync in "${sync_modes[@]}"; do
    if [[ $sync == always ]] && ! supports_sync_always "$version"; then
        echo "# sync=always: skipped: nats-server $version has no sync_interval (it came in 2.10.0); give --nats-server a 2.10+ binary"
    else
        runnable+=("$sync")
    fi
done
((${#runnable[@]} > 0)) || exit 2

trap on_exit EXIT
trap 'exit 130' INT TERM
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-jetstream.XXXXXX")
echo "# $(nproc) cores, $(uname -sr), store dirs on $(df -h --output=source,fstype "$work_dir" | tail -n 1 | tr -s ' ')"
for sync in "${runnable[@]}"; do
    start_cluster "$sync"
    echo "# load average before: $(cut -d ' ' -f 1-3 /proc/loadavg)"
    pids_csv=$(IFS=,; echo "${server_pids[*]}")
    # In the background so that a signal interrupts `wait` and the EXIT trap stops everything now.
    "$venv/bin/python" "$repo_root/scripts/bench_jetstream.py" --servers "$cluster_urls" \
        --server-names n1,n2,n3 --server-pids "$pids_csv" --label "sync=$sync" \
        "${generator_args[@]}" &
    generator_pid=$!
    wait "$generator_pid" || status=$?
    generator_pid=
    stop_servers
    ((status == 0)) || break
done
exit "$status"
