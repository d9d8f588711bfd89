#!/usr/bin/env bash
# check.sh: the one gate. Run it before you commit; .ci/run runs it on every submission.
#
# Steps, in order, stopping at the first failure:
#   lint        shellcheck on the scripts, where it is installed (skipped where it is not)
#   fmt         cargo fmt --all -- --check
#   clippy      cargo clippy --workspace --all-targets -- -D warnings
#   build       cargo build --workspace --all-targets
#   test        cargo test --workspace, then one line totalling the tests: "tests: N passed, N failed, N skipped"
#
# The build step builds the binaries that the black-box tests spawn (target/debug/conclave-node) and
# the test executables. It says --all-targets rather than --bins on purpose: without the test targets
# the dev-dependencies drop out, a few crates that RocksDB's build script needs (bitflags, via
# bindgen) stop being shared with them and get the build-override profile instead, and cargo
# compiles RocksDB's C++ a second time: about 9 minutes and 1 GB more on a cold target directory.
# With --all-targets the build step and `cargo test` build exactly the same units. (Clippy, in check
# mode, still has its own RocksDB build; `[profile.dev.build-override] debug = true` in the root
# manifest would let all three share one.)
#
# Environment:
#   CARGO_TARGET_DIR       honoured as cargo honours it (CI sets /var/tmp/conclave-target)
#   CONCLAVE_SKIP_CLIPPY=1 skip the clippy step, for a quick local loop; CI never sets it
#   CI=true                also pass --locked, so that a Cargo.lock out of step with the manifests
#                          fails instead of being rewritten on the fly
# Arguments after `--` go to `cargo test` (e.g. scripts/check.sh -- --nocapture).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

test_args=()
if (($# > 0)); then
    [[ $1 == -- ]] || {
        sed -n '2,/^set -euo pipefail$/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
        exit 2
    }
    shift
    test_args=("$@")
fi

locked=()
[[ ${CI:-} == true ]] && locked=(--locked)

started=$SECONDS
step() {
    local name=$1 step_started=$SECONDS
    shift
    echo
    if [[ $(type -t "$1") == function ]]; then
        echo "==> check.sh: $name"
    else
        echo "==> check.sh: $name: $*"
    fi
    if ! "$@"; then
        echo "==> check.sh: FAILED at $name after $((SECONDS - step_started))s: $*" >&2
        exit 1
    fi
    echo "==> check.sh: $name ok ($((SECONDS - step_started))s)"
}

echo "==> check.sh: target dir ${CARGO_TARGET_DIR:-./target}"
if command -v shellcheck >/dev/null; then
    step lint shellcheck scripts/*.sh .ci/run
else
    echo "==> check.sh: shellcheck not installed: scripts not linted"
fi
step fmt cargo fmt --all -- --check
if [[ ${CONCLAVE_SKIP_CLIPPY:-} == 1 ]]; then
    echo
    echo "==> check.sh: clippy SKIPPED (CONCLAVE_SKIP_CLIPPY=1)"
else
    step clippy cargo clippy "${locked[@]}" --workspace --all-targets -- -D warnings
fi
step build cargo build "${locked[@]}" --workspace --all-targets

# Runs the tests and ends with one line that totals every test binary's result, because cargo's own
# last line belongs to whichever binary ran last (often a doc-test run of zero tests).
run_tests() {
    local output status=0
    output=$(mktemp)
    echo "cargo test ${locked[*]} --workspace -- ${test_args[*]}"
    cargo test "${locked[@]}" --workspace -- "${test_args[@]}" 2>&1 | tee "$output" || status=$?
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed/) passed += $i
                if ($(i + 1) ~ /^failed/) failed += $i
                if ($(i + 1) ~ /^ignored/) ignored += $i
            }
        }
        END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$output"
    rm -f "$output"
    return "$status"
}
step test run_tests
echo
echo "==> check.sh: all steps passed ($((SECONDS - started))s)"
