#!/usr/bin/env python3
"""Reads a workflow step's payload (the envelope JSON of workflows.proto, "Payload") on stdin.

The agent scripts use it to tell a workflow step from a plain task and to take what they need:

  envelope.py is                 exit 0 when stdin is a workflow step's envelope, 1 otherwise
  envelope.py get PATH [DEFAULT] the value at a dotted PATH (input.topic, branch.index, step):
                                 a string as it is, anything else as JSON; DEFAULT (or nothing)
                                 when it is missing or null
  envelope.py results            the results of the steps this one follows, as text: a string
                                 result as it is; a fan-out's joined result as its succeeded
                                 branches' results, then a line naming the branches that did not
                                 succeed; a decision as its outcome; other JSON as JSON
"""
import json
import sys


def text(value):
    return value if isinstance(value, str) else json.dumps(value)


def lookup(envelope, path):
    value = envelope
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def joined(result):
    """A fan-out's result: what its branches found, and what is missing."""
    lines = [text(b.get("result")) for b in result["branches"] if b["state"] == "succeeded"]
    missing = [f"branch {b['index']} {b['state']}" for b in result["branches"]
               if b["state"] != "succeeded"]
    if missing:
        lines.append(f"(missing: {', '.join(missing)})")
    return "\n".join(lines)


def results(envelope):
    parts = []
    for step, result in (envelope.get("results") or {}).items():
        if isinstance(result, dict) and "branches" in result:
            parts.append(joined(result))
        elif isinstance(result, dict) and "decision_id" in result:
            parts.append(f"{step}: {result.get('outcome') or result.get('status')}")
        elif result is not None:
            parts.append(text(result))
    return "\n".join(parts)


def main(argv):
    try:
        envelope = json.load(sys.stdin)
    except ValueError:
        envelope = None
    is_envelope = isinstance(envelope, dict) and "workflow_id" in envelope and "step" in envelope
    if not argv or argv[0] == "is":
        return 0 if is_envelope else 1
    if not is_envelope:
        print("envelope.py: stdin is not a workflow step's payload", file=sys.stderr)
        return 2
    if argv[0] == "get" and len(argv) in (2, 3):
        value = lookup(envelope, argv[1])
        if value is None:
            value = argv[2] if len(argv) == 3 else ""
        print(text(value))
        return 0
    if argv[0] == "results":
        print(results(envelope))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
