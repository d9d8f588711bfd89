//! Progress notices of watch streams: a stream that has sent nothing for a while, although its
//! cursor moved past changes it does not watch, tells its client how far it has come, so that the
//! client's resume point stays inside the node's history (kv.proto WatchResponse, tasks.proto
//! BOOKMARK; etcd's progress notifications, Kubernetes' bookmarks).
//!
//! A stream's cursor is the revision or event sequence up to which it has scanned the history and
//! sent every watched change. `Progress` only decides when a notice is due; the stream sends it.

use std::future;
use std::time::Duration;

use tokio::time::Instant;

/// What one stream last told its client, and when.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// How long the stream stays silent before a notice; `None` sends no notices.
    interval: Option<Duration>,
    /// The cursor the client knows: that of the stream's start, its last change or its last
    /// notice.
    sent_cursor: u64,
    sent_at: Instant,
}

impl Progress {
    /// A stream that has just told its client `cursor` (where it starts). An interval of zero
    /// turns notices off.
    pub fn new(interval: Duration, cursor: u64, now: Instant) -> Self {
        Progress {
            interval: (!interval.is_zero()).then_some(interval),
            sent_cursor: cursor,
            sent_at: now,
        }
    }

    /// Records a message sent to the client: a change at `cursor`, or a notice of it. Messages
    /// that carry no cursor of their own (SNAPSHOT events) pass 0: they still count as activity.
    pub fn sent(&mut self, cursor: u64, now: Instant) {
        self.sent_cursor = self.sent_cursor.max(cursor);
        self.sent_at = now;
    }

    /// The cursor a notice should carry now, if one is due: the stream has scanned past what the
    /// client knows (`scanned`, the cursor of everything read so far, never ahead of it) and has
    /// sent nothing for the interval.
    pub fn due(&self, scanned: u64, now: Instant) -> Option<u64> {
        let deadline = self.deadline(scanned)?;
        (now >= deadline).then_some(scanned)
    }

    /// When a notice for `scanned` falls due; `None` while the client already knows it (nothing to
    /// wait for).
    pub fn deadline(&self, scanned: u64) -> Option<Instant> {
        let interval = self.interval?;
        (scanned > self.sent_cursor).then(|| self.sent_at + interval)
    }
}

/// Resolves at `deadline`, or never without one: a `select!` arm for [`Progress::deadline`].
pub async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    #[test]
    fn a_notice_is_due_only_after_the_interval_and_only_when_the_cursor_moved() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let progress = Progress::new(INTERVAL, 10, start);
        // (scanned, now) -> the notice due
        let cases = [
            ((10, 0), None),
            ((10, 60_000), None), // nothing moved: no notice however long the silence
            ((9, 60_000), None),  // a cursor never goes back
            ((11, 0), None),
            ((11, 4_999), None),
            ((11, 5_000), Some(11)),
            ((500, 9_000), Some(500)),
        ];
        for ((scanned, now), expected) in cases {
            assert_eq!(
                progress.due(scanned, at(now)),
                expected,
                "scanned {scanned} at {now} ms"
            );
        }
        assert_eq!(progress.deadline(10), None);
        assert_eq!(progress.deadline(11), Some(at(5_000)));
    }

    #[test]
    fn every_message_sent_restarts_the_interval_and_raises_the_cursor() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut progress = Progress::new(INTERVAL, 10, start);

        // A change at 12 was sent at 3 s: the client knows 12, the silence starts again.
        progress.sent(12, at(3_000));
        assert_eq!(progress.due(12, at(60_000)), None);
        assert_eq!(progress.due(20, at(7_999)), None);
        assert_eq!(progress.due(20, at(8_000)), Some(20));

        // A snapshot event (no cursor of its own) restarts the interval but keeps the cursor.
        progress.sent(0, at(8_000));
        assert_eq!(progress.due(20, at(12_999)), None);
        assert_eq!(progress.due(20, at(13_000)), Some(20));

        // The notice itself is a message: the next one waits for new progress and a new interval.
        progress.sent(20, at(13_000));
        assert_eq!(progress.due(20, at(60_000)), None);
        assert_eq!(progress.deadline(21), Some(at(18_000)));
    }

    #[test]
    fn an_interval_of_zero_sends_no_notices() {
        let start = Instant::now();
        let progress = Progress::new(Duration::ZERO, 10, start);
        assert_eq!(progress.due(1_000, start + Duration::from_secs(3600)), None);
        assert_eq!(progress.deadline(1_000), None);
    }
}
