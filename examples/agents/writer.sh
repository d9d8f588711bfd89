#!/bin/sh
# The writer: turns research notes into a draft. It also "publishes" (queue publish).
# As a workflow step the notes are the results of the steps it follows (for an aggregator, what
# the researchers who finished found, and which did not), and the title is the input's "topic".
here=$(dirname "$0")
input=$(cat)
title=""
if printf '%s' "$input" | "$here/envelope.py" is; then
    title=$(printf '%s' "$input" | "$here/envelope.py" get input.topic "an unnamed topic")
    notes=$(printf '%s' "$input" | "$here/envelope.py" results)
    input=${notes:-"- a first draft on $title, from what the writer already knows."}
fi
sleep 0.5
case "$CONCLAVE_QUEUE" in
publish)
    echo "published: $input"
    exit 0
    ;;
esac
if [ -z "$title" ]; then
    title=$(printf '%s\n' "$input" | head -n 1 | sed 's/^Notes on //; s/:$//')
fi
cat <<DRAFT
# $title

$(printf '%s\n' "$input" | sed '/^Notes on /d; s/^- //')

(draft by $CONCLAVE_AGENT, task $CONCLAVE_TASK_ID)
DRAFT
