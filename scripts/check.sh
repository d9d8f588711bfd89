#!/usr/bin/env bash
# check.sh: the one gate. Run it before you commit; .ci/run runs it on every submission.
#
# Steps, in order, stopping at the first failure:
#   fmt      cargo fmt --all -- --check
#   clippy   cargo clippy --workspace --all-targets -- -D warnings
#   build    cargo build --workspace --bins   (the black-box tests spawn target/debug/conclave-node)
#   test     cargo test --workspace
# and first, where shellcheck is installed, shellcheck on the scripts (skipped where it is not).
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
    echo "==> check.sh: $name: $*"
    if ! "$@"; then
        echo "==> check.sh: FAILED at $name after $((SECONDS - step_started))s: $*" >&2
        exit 1
    fi
    echo "==> check.sh: $name ok ($((SECONDS - step_started))s)"
}

echo "==> check.sh: target dir ${CARGO_TARGET_DIR:-./target}"
if command -v shellcheck >/dev/null; then
    step shellcheck shellcheck scripts/*.sh .ci/run
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
step build cargo build "${locked[@]}" --workspace --bins
step test cargo test "${locked[@]}" --workspace -- "${test_args[@]}"
echo
echo "==> check.sh: all steps passed ($((SECONDS - started))s)"
