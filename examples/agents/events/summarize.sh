#!/bin/sh
# The summarizer, a consumer of the research topic's "summarizers" group: reads one paper (JSON)
# on stdin and, in ONE transaction, stores its summary under $SUMMARY_PREFIX<seq> and tells the others
# by publishing research.summaries.ready. `conclave topic consume` runs it once per message with
# the delivery in CONCLAVE_* variables; exit 0 acks the message, any other exit nacks it.
#
# A message can be delivered again (its ack was lost, the member paused past the ack wait), so the
# transaction is conditional: `compare key <prefix><seq> 0` holds only while no summary exists,
# and the publish carries an idempotency key. A redelivery finds the summary and just acks.
set -eu
conclave=${CONCLAVE_CLI:-conclave}
paper=$(cat)
title=$(printf '%s' "$paper" | python3 -c 'import json,sys; print(json.load(sys.stdin)["title"])')
key=${SUMMARY_PREFIX:-summaries/}$CONCLAVE_SEQ
sleep "${SUMMARIZE_SECONDS:-0.3}"
summary="$title: a summary for the ${CONCLAVE_KEY:-general} desk (by $CONCLAVE_MEMBER)"
echo "[summarizer $CONCLAVE_MEMBER] seq $CONCLAVE_SEQ ($CONCLAVE_SUBJECT, delivery $CONCLAVE_DELIVERIES): $title" >&2
announcement=$(python3 -c 'import json,sys; print(json.dumps({"seq": int(sys.argv[1]), "summary": sys.argv[2]}))' \
    "$CONCLAVE_SEQ" "$summary")
if ! "$conclave" txn - >&2 <<TXN; then
compare key $key 0
put $key "$summary"
publish research.summaries.ready $(printf '%s' "$announcement" | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"/') key=${CONCLAVE_KEY:-general} idempotency-key=summary-$CONCLAVE_SEQ
TXN
    # The compare failed because an earlier delivery already did the work: nothing to redo.
    "$conclave" kv get "$key" >/dev/null 2>&1 || exit 1
fi
