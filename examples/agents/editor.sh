#!/bin/sh
# The editor: polishes a draft. It is moody: the first attempt at a task with an even id, and one
# other attempt in three, it asks to be tried again later (exit 75, a retryable failure: the task
# runs again after its backoff). A draft marked URGENT needs the style guide; without it the
# editor refuses for good (exit 2: the task is dead-lettered, with the end of stderr as its error).
# As a workflow step the draft is the result of the step it follows (the workflow's envelope JSON
# is on stdin).
here=$(dirname "$0")
draft=$(cat)
if printf '%s' "$draft" | "$here/envelope.py" is; then
    draft=$(printf '%s' "$draft" | "$here/envelope.py" results)
fi
sleep 0.3
case "$draft" in
*URGENT*)
    if [ ! -f "${EXAMPLE_STATE_DIR:-.}/style-guide.txt" ]; then
        echo "editor: urgent pieces need the style guide, and there is none" >&2
        exit 2
    fi
    ;;
esac
attempt=${CONCLAVE_ATTEMPT:-1}
if { [ "$attempt" -eq 1 ] && [ $((CONCLAVE_TASK_ID % 2)) -eq 0 ]; } ||
    { [ "$attempt" -lt 3 ] && [ $(($(od -An -N1 -tu1 /dev/urandom) % 3)) -eq 0 ]; }; then
    echo "editor: coffee break, try me again (attempt $CONCLAVE_ATTEMPT)" >&2
    exit 75
fi
printf '%s\n' "$draft" | sed 's/^# \(.*\)$/# \1 (edited)/'
echo
echo "Approved by the editor."
