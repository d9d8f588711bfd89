#!/bin/sh
# The writer: turns research notes into a draft. It also "publishes" (queue publish).
input=$(cat)
sleep 0.5
case "$CONCLAVE_QUEUE" in
publish)
    echo "published: $input"
    exit 0
    ;;
esac
title=$(printf '%s\n' "$input" | head -n 1 | sed 's/^Notes on //; s/:$//')
cat <<DRAFT
# $title

$(printf '%s\n' "$input" | tail -n +2 | sed 's/^- //')

(draft by $CONCLAVE_AGENT, task $CONCLAVE_TASK_ID)
DRAFT
