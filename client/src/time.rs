//! Wall-clock time in the wire contract's unit, Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// This machine's wall clock in Unix milliseconds. Cluster time is the leader's clock; the two
/// differ by the clocks' skew, which callers comparing them must allow for.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
