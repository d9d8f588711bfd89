#!/bin/sh
# The researcher: reads a topic on stdin and prints research notes on stdout.
# `conclave agent run` passes the payload on stdin and the task in CONCLAVE_* variables; stdout is
# the result, the exit status decides what happens to the task.
# As a workflow step the payload is the workflow's envelope (JSON): the topic is the input's
# "topic", and a fan-out branch researches the angle the planner listed at its index. It takes
# $RESEARCH_SECONDS (default 0.5): examples/run.sh makes some researchers slow.
here=$(dirname "$0")
payload=$(cat)
topic=$payload
if printf '%s' "$payload" | "$here/envelope.py" is; then
    topic=$(printf '%s' "$payload" | "$here/envelope.py" get input.topic "an unnamed topic")
    index=$(printf '%s' "$payload" | "$here/envelope.py" get branch.index)
    if [ -n "$index" ]; then
        angle=$(printf '%s' "$payload" | "$here/envelope.py" get "results.plan.$index" "angle $index")
        topic="$topic ($angle)"
    fi
fi
sleep "${RESEARCH_SECONDS:-0.5}"
echo "[researcher] looking up \"$topic\" (task $CONCLAVE_TASK_ID, attempt $CONCLAVE_ATTEMPT)" >&2
cat <<NOTES
Notes on $topic:
- $topic: how a fleet of agents keeps shared state consistent.
- Known approaches trade availability for consistency; quorums keep both in check.
NOTES
