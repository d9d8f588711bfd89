#!/bin/sh
# A workflow agent's command: runs the script of the step's queue. A step that asks for no
# capability (plan, publish, archive) may go to any live agent, so every agent of the workflow
# examples runs this and does whatever step comes its way.
here=$(dirname "$0")
case "$CONCLAVE_QUEUE" in
research) exec "$here/researcher.sh" ;;
write) exec "$here/writer.sh" ;;
edit) exec "$here/editor.sh" ;;
plan) exec "$here/planner.sh" ;;
publish | archive) exec "$here/publisher.sh" ;;
*)
    echo "step.sh: no script for queue $CONCLAVE_QUEUE" >&2
    exit 2
    ;;
esac
