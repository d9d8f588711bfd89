#!/bin/sh
# The publisher: the steps of queue publish and archive. What it does is the step's name in the
# workflow's envelope: publish, announce (on the channel in its params), unpublish (the
# compensation that takes a publication down) or archive.
here=$(dirname "$0")
payload=$(cat)
get() {
    printf '%s' "$payload" | "$here/envelope.py" get "$@"
}
step=$(get step "$CONCLAVE_QUEUE")
workflow=$(get workflow_id)
sleep 0.2
case "$step" in
publish) echo "published the draft of workflow $workflow" ;;
announce) echo "announced workflow $workflow's piece on $(get params.channel '#general')" ;;
unpublish) echo "took down the piece of workflow $workflow ($(get params.action 'take down'))" ;;
archive) echo "archived the draft of workflow $workflow: $(get results.vote.outcome) to publishing" ;;
*)
    echo "publisher: no such step: $step" >&2
    exit 2
    ;;
esac
