#!/bin/sh
# The planner: splits a topic into angles to research, one per researcher. Its result is a JSON
# list, which each fan-out branch of the research step finds in its payload (results.plan) and
# takes the item at its own index of.
here=$(dirname "$0")
payload=$(cat)
angles=$(printf '%s' "$payload" | "$here/envelope.py" get params.angles 5)
sleep 0.2
python3 -c '
import json, sys
names = ["history", "algorithms", "failure modes", "tooling", "open problems", "case studies"]
count = int(sys.argv[1])
print(json.dumps([names[i % len(names)] for i in range(count)]))
' "$angles"
