#!/bin/sh
# A writer: drafts one section. It refuses anything legal for good (exit 2: not retryable), so
# that section dead-letters and escalates to the senior editor.
section=$(cat)
case "$section" in
*legal*)
    echo "a writer does not sign off on $section" >&2
    exit 2
    ;;
esac
sleep 0.2
echo "\"$section: drafted by $CONCLAVE_AGENT\""
