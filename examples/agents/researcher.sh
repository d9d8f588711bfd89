#!/bin/sh
# The researcher: reads a topic on stdin and prints research notes on stdout.
# `conclave agent run` passes the payload on stdin and the task in CONCLAVE_* variables; stdout is
# the result, the exit status decides what happens to the task.
topic=$(cat)
sleep 0.5
echo "[researcher] looking up \"$topic\" (task $CONCLAVE_TASK_ID, attempt $CONCLAVE_ATTEMPT)" >&2
cat <<NOTES
Notes on $topic:
- $topic: how a fleet of agents keeps shared state consistent.
- Known approaches trade availability for consistency; quorums keep both in check.
NOTES
