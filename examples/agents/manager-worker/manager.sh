#!/bin/sh
# The manager: reads its step payload (the workflow envelope, where the planner's result is the
# list of sections), delegates one task per section to the writers under its own lease, waits
# for them (escalations included), and answers what came back as one JSON document.
#
# `conclave task delegate` takes the task and its fencing token from CONCLAVE_TASK_ID and
# CONCLAVE_FENCING_TOKEN and the cluster from CONCLAVE_ENDPOINTS, which `conclave agent run` sets.
set -eu
conclave=${CONCLAVE_CLI:-conclave}
payload=$(cat)
read_payload() {
    printf '%s' "$payload" | python3 -c "import json, sys; p = json.load(sys.stdin); $1"
}
queue=$(read_payload "print(p['params']['sections_queue'])")
capability=$(read_payload "print(p['params']['worker_capability'])")
escalate_to=$(read_payload "print(p['params']['escalate_to'])")
# One section a line on stdin: one delegated task each. A section that did not succeed is the
# manager's to judge, so the exit status of --wait (1) is not the manager's failure.
outcomes=$(read_payload "print('\n'.join(p['results']['plan']))" |
    "$conclave" task delegate "$queue" - --capability "$capability" \
        --escalate-to "$escalate_to" --max-attempts 1 --wait) || true
printf '%s\n' "$outcomes" | python3 -c '
import json, sys
outcomes = [json.loads(line) for line in sys.stdin if line.strip()]
done = [o["result"] for o in outcomes if o["state"] == "succeeded"]
print(json.dumps({"sections": done, "delegated": len(outcomes)}))'
