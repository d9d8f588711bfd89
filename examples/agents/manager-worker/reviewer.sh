#!/bin/sh
# The reviewer: reads the manager's result and signs it off.
python3 -c '
import json, sys
payload = json.load(sys.stdin)
report = payload["results"]["manage"]
print(json.dumps({"approved": True, "sections": len(report["sections"])}))'
