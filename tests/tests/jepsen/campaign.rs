//! The long campaign, selected by `CONCLAVE_JEPSEN_LONG=1` (see scripts/jepsen.sh).
