//! The engine against a fake source over a scripted log (sequence, watched): what it sends, in
//! which order, when it reads again, and how a stream ends.

use std::sync::Mutex;

use futures::StreamExt;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Started,
    Change,
    Bookmark,
}

type Msg = (Kind, u64);

#[derive(Default)]
struct Log {
    /// (sequence, watched), in sequence order.
    entries: Vec<(u64, bool)>,
    /// Cursors below this are no longer kept.
    kept_from: u64,
    /// The most entries one read took.
    largest_read: usize,
}

struct Fake {
    log: Arc<Mutex<Log>>,
    start: Result<u64, Status>,
    per_read: usize,
    /// The stream ends after this change.
    last: Option<u64>,
}

impl FeedSource for Fake {
    type Message = Msg;
    const WAKE: Wake = Wake::Applied;

    fn start(&mut self, _machine: &StateMachine) -> Result<(u64, Vec<Msg>), Status> {
        let start = self.start.clone()?;
        Ok((start, vec![(Kind::Started, start)]))
    }

    fn read(
        &mut self,
        _machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<Msg>,
    ) -> Result<Read, Status> {
        let mut log = self.log.lock().expect("not poisoned");
        if cursor < log.kept_from {
            // What this read found before it noticed still goes out, then the error.
            out.push((Kind::Change, log.kept_from));
            return Err(Status::out_of_range("fell behind"));
        }
        let after: Vec<(u64, bool)> = log
            .entries
            .iter()
            .copied()
            .filter(|(seq, _)| *seq > cursor)
            .collect();
        let taken = after.len().min(self.per_read);
        log.largest_read = log.largest_read.max(taken);
        let mut read = Read {
            cursor,
            caught_up: after.len() <= self.per_read,
            ended: false,
        };
        for (seq, watched) in after.into_iter().take(self.per_read) {
            read.cursor = seq;
            if watched {
                out.push((Kind::Change, seq));
            }
            if Some(seq) == self.last {
                read.ended = true;
                break;
            }
        }
        Ok(read)
    }

    fn bookmark(&self, cursor: u64) -> Option<Msg> {
        Some((Kind::Bookmark, cursor))
    }

    fn cursor_of(message: &Msg) -> u64 {
        message.1
    }
}

struct Machine(StateMachine);

impl Applied for Machine {
    fn with_machine<R>(&self, read: impl FnOnce(&StateMachine) -> R) -> R {
        read(&self.0)
    }
}

struct Harness {
    log: Arc<Mutex<Log>>,
    applied: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    stream: EventStream<Msg>,
    /// Held by the stream's task while it runs.
    slot: Arc<()>,
}

impl Harness {
    /// Appends an entry and notifies, as an apply would.
    fn append(&self, seq: u64, watched: bool) {
        self.log
            .lock()
            .expect("not poisoned")
            .entries
            .push((seq, watched));
        self.applied.send_modify(|n| *n += 1);
    }

    async fn next(&mut self) -> Option<Result<Msg, Status>> {
        tokio::time::timeout(Duration::from_secs(5), self.stream.next())
            .await
            .expect("a message or the end in time")
    }

    async fn next_ok(&mut self) -> Msg {
        self.next().await.expect("not ended").expect("not an error")
    }

    /// True when nothing arrives for a while.
    async fn silent(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self.stream.next())
            .await
            .is_err()
    }
}

fn serve_fake(fake: Fake, progress: Duration) -> Result<Harness, Status> {
    let (applied, wake) = watch::channel(0);
    let (stop, stopping) = watch::channel(false);
    let feed = Feed {
        state: Arc::new(Machine(StateMachine::default())),
        wake,
        stopping,
        progress_interval: progress,
    };
    let log = Arc::clone(&fake.log);
    let slot = Arc::new(());
    let stream = feed.spawn(fake, Arc::clone(&slot))?;
    Ok(Harness {
        log,
        applied,
        stop,
        stream,
        slot,
    })
}

fn fake(start: u64) -> Fake {
    Fake {
        log: Arc::default(),
        start: Ok(start),
        per_read: 1024,
        last: None,
    }
}

const NO_BOOKMARKS: Duration = Duration::ZERO;

#[tokio::test]
async fn started_comes_first_then_the_watched_changes_in_order_as_they_are_applied() {
    let mut feed = serve_fake(fake(10), NO_BOOKMARKS).expect("starts");
    assert_eq!(feed.next_ok().await, (Kind::Started, 10));
    feed.append(11, true);
    assert_eq!(feed.next_ok().await, (Kind::Change, 11));
    feed.append(12, false);
    feed.append(13, true);
    assert_eq!(feed.next_ok().await, (Kind::Change, 13));
    assert!(feed.silent().await);
}

#[tokio::test]
async fn a_feed_far_behind_reads_bounded_batches_without_waiting_for_an_apply() {
    let source = Fake {
        per_read: 3,
        ..fake(0)
    };
    source.log.lock().unwrap().entries = (1..=20).map(|seq| (seq, seq % 2 == 0)).collect();
    let mut feed = serve_fake(source, NO_BOOKMARKS).expect("starts");
    assert_eq!(feed.next_ok().await, (Kind::Started, 0));
    for seq in (2..=20).step_by(2) {
        assert_eq!(feed.next_ok().await, (Kind::Change, seq));
    }
    assert_eq!(feed.log.lock().unwrap().largest_read, 3);
}

#[tokio::test]
async fn a_quiet_feed_whose_cursor_moved_sends_a_bookmark_after_the_interval() {
    let mut feed = serve_fake(fake(10), Duration::from_millis(50)).expect("starts");
    assert_eq!(feed.next_ok().await, (Kind::Started, 10));
    // Nothing moved: no bookmark, however long the silence.
    assert!(feed.silent().await);
    feed.append(11, false);
    feed.append(12, false);
    assert_eq!(feed.next_ok().await, (Kind::Bookmark, 12));
    assert!(feed.silent().await, "one bookmark per move");
    feed.append(13, true);
    assert_eq!(feed.next_ok().await, (Kind::Change, 13));
    assert!(feed.silent().await, "the change told the cursor");
}

#[tokio::test]
async fn the_source_ends_the_stream_after_its_last_message() {
    let source = Fake {
        last: Some(12),
        ..fake(10)
    };
    let mut feed = serve_fake(source, NO_BOOKMARKS).expect("starts");
    feed.append(11, true);
    feed.append(12, true);
    feed.append(13, true);
    assert_eq!(feed.next_ok().await, (Kind::Started, 10));
    assert_eq!(feed.next_ok().await, (Kind::Change, 11));
    assert_eq!(feed.next_ok().await, (Kind::Change, 12));
    assert!(feed.next().await.is_none());
}

#[tokio::test]
async fn falling_behind_is_the_streams_last_message() {
    let mut feed = serve_fake(fake(10), NO_BOOKMARKS).expect("starts");
    assert_eq!(feed.next_ok().await, (Kind::Started, 10));
    feed.log.lock().unwrap().kept_from = 50;
    feed.append(60, true);
    assert_eq!(feed.next_ok().await, (Kind::Change, 50));
    let status = feed
        .next()
        .await
        .expect("not ended")
        .expect_err("fell behind");
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(feed.next().await.is_none());
}

#[tokio::test]
async fn a_refused_start_is_the_calls_status() {
    let source = Fake {
        start: Err(Status::out_of_range("gone")),
        ..fake(0)
    };
    let refused = serve_fake(source, NO_BOOKMARKS).err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::OutOfRange);
}

#[tokio::test]
async fn the_node_stopping_ends_the_stream_with_unavailable() {
    let mut feed = serve_fake(fake(1), NO_BOOKMARKS).expect("starts");
    assert_eq!(feed.next_ok().await, (Kind::Started, 1));
    feed.stop.send_replace(true);
    let status = feed.next().await.expect("not ended").expect_err("stopping");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(feed.next().await.is_none());
}

#[tokio::test]
async fn a_client_gone_frees_the_watch_slot() {
    let feed = serve_fake(fake(1), NO_BOOKMARKS).expect("starts");
    let slot = Arc::clone(&feed.slot);
    drop(feed.stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&slot) > 2 {
        assert!(Instant::now() < deadline, "the slot is still held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
