//! The resume rules of [`follow`] against a fake feed whose streams are scripted: no node is
//! contacted (a channel connects lazily, and a fake never uses it).

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::FutureExt;

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    Started(u64),
    Bookmark(u64),
    Change(u64),
    Snapshot,
}

/// One scripted answer to an open: refused, or a stream of these messages that then ends or
/// stays open.
enum Script {
    Refused(Status),
    Stream(Vec<std::result::Result<Msg, Status>>, Then),
}

#[derive(Clone, Copy)]
enum Then {
    End,
    StayOpen,
}

/// A feed answering opens from its script, recording where each open asked to start.
struct Fake<const STARTED: bool> {
    script: Arc<Mutex<VecDeque<Script>>>,
    asked: Arc<Mutex<Vec<Resume>>>,
    /// `gone` starts again (a task watch) instead of failing (a workflow watch).
    start_again: bool,
    /// The change after which nothing can follow.
    last: Option<u64>,
}

impl<const STARTED: bool> FeedSpec for Fake<STARTED> {
    type Message = Msg;
    const WHAT: &'static str = "fake watch";
    const STARTED: bool = STARTED;

    fn open(
        &self,
        _channel: Channel,
        resume: Resume,
    ) -> BoxFuture<'static, std::result::Result<Messages<Msg>, Status>> {
        self.asked.lock().expect("not poisoned").push(resume);
        let next = self.script.lock().expect("not poisoned").pop_front();
        let answer = match next.expect("an open beyond the script") {
            Script::Refused(status) => Err(status),
            Script::Stream(messages, then) => {
                let messages = futures::stream::iter(messages);
                Ok(match then {
                    Then::End => messages.boxed(),
                    Then::StayOpen => messages.chain(futures::stream::pending()).boxed(),
                })
            }
        };
        async move { answer }.boxed()
    }

    fn mark(&self, message: &Msg) -> Mark {
        match message {
            Msg::Started(at) => Mark::Started(*at),
            Msg::Bookmark(at) => Mark::Progress(*at),
            Msg::Change(at) => Mark::Change(*at),
            Msg::Snapshot => Mark::Unordered,
        }
    }

    fn ends_after(&self, message: &Msg) -> bool {
        matches!(message, Msg::Change(at) if Some(*at) == self.last)
    }

    fn gone(&self, node: &Node, status: &Status) -> Option<Error> {
        (!self.start_again).then(|| rejected(node, status))
    }
}

struct Run<const STARTED: bool> {
    client: Client,
    fake: Fake<STARTED>,
    asked: Arc<Mutex<Vec<Resume>>>,
}

fn scripted<const STARTED: bool>(script: Vec<Script>) -> Run<STARTED> {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        script: Arc::new(Mutex::new(script.into())),
        asked: Arc::clone(&asked),
        start_again: false,
        last: None,
    };
    let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
    Run {
        client,
        fake,
        asked,
    }
}

fn stream(messages: Vec<std::result::Result<Msg, Status>>, then: Then) -> Script {
    Script::Stream(messages, then)
}

/// The next `n` items of `feed`, with a bound on how long that may take.
async fn take<M>(feed: &mut FeedStream<M>, n: usize) -> Vec<Result<M>> {
    let items = tokio::time::timeout(Duration::from_secs(10), feed.take(n).collect::<Vec<_>>());
    items.await.expect("the items in time")
}

fn changes(items: Vec<Result<Msg>>) -> Vec<Msg> {
    items
        .into_iter()
        .map(|item| item.expect("a change"))
        .collect()
}

#[tokio::test]
async fn a_broken_stream_resumes_after_the_last_change_or_bookmark_without_gap_or_repeat() {
    let run = scripted::<true>(vec![
        stream(
            vec![
                Ok(Msg::Started(10)),
                Ok(Msg::Change(11)),
                Ok(Msg::Change(12)),
                Err(Status::unavailable("the node is shutting down")),
            ],
            Then::End,
        ),
        stream(
            vec![
                Ok(Msg::Started(12)),
                Ok(Msg::Change(12)), // a repeat: skipped
                Ok(Msg::Change(13)),
                Ok(Msg::Bookmark(20)),
                Ok(Msg::Bookmark(15)), // stale: ignored
            ],
            Then::End,
        ),
        stream(
            vec![Ok(Msg::Started(20)), Ok(Msg::Change(21))],
            Then::StayOpen,
        ),
    ]);
    let mut feed = follow(&run.client, run.fake, None).await.expect("opens");
    assert_eq!(feed.start_sequence(), 10);
    let items = changes(take(&mut feed, 4).await);
    assert_eq!(
        items,
        [
            Msg::Change(11),
            Msg::Change(12),
            Msg::Change(13),
            Msg::Change(21)
        ]
    );
    assert_eq!(feed.cursor(), 21);
    assert_eq!(
        *run.asked.lock().unwrap(),
        [Resume::Beginning, Resume::After(12), Resume::After(20)]
    );
}

#[tokio::test]
async fn a_lost_resume_point_starts_again_from_the_state_when_the_feed_says_so() {
    let mut run = scripted::<true>(vec![
        // The caller's resume point is gone at once.
        Script::Refused(Status::out_of_range("event 6 is gone")),
        stream(
            vec![
                Ok(Msg::Started(50)),
                Ok(Msg::Snapshot),
                Ok(Msg::Change(51)),
                Err(Status::out_of_range("fell behind")),
            ],
            Then::End,
        ),
        stream(
            vec![Ok(Msg::Started(90)), Ok(Msg::Snapshot)],
            Then::StayOpen,
        ),
    ]);
    run.fake.start_again = true;
    let mut feed = follow(&run.client, run.fake, Some(5)).await.expect("opens");
    assert_eq!(feed.start_sequence(), 50);
    let items = changes(take(&mut feed, 3).await);
    assert_eq!(items, [Msg::Snapshot, Msg::Change(51), Msg::Snapshot]);
    assert_eq!(feed.cursor(), 90, "the new state's sequence");
    assert_eq!(
        *run.asked.lock().unwrap(),
        [Resume::After(5), Resume::Again, Resume::Again]
    );
}

#[tokio::test]
async fn a_lost_resume_point_ends_the_watch_with_out_of_range_otherwise() {
    let run = scripted::<true>(vec![stream(
        vec![
            Ok(Msg::Started(1)),
            Ok(Msg::Change(2)),
            Err(Status::out_of_range("fell behind")),
        ],
        Then::End,
    )]);
    let mut feed = follow(&run.client, run.fake, None).await.expect("opens");
    let mut items = take(&mut feed, 3).await.into_iter();
    assert_eq!(items.next().map(|i| i.ok()), Some(Some(Msg::Change(2))));
    match items.next() {
        Some(Err(Error::Rejected {
            code: Code::OutOfRange,
            ..
        })) => {}
        other => panic!("expected OUT_OF_RANGE, got {other:?}"),
    }
    assert!(items.next().is_none(), "the watch ended");

    // At open, too.
    let run = scripted::<true>(vec![Script::Refused(Status::out_of_range("gone"))]);
    let opened = follow(&run.client, run.fake, Some(3)).await;
    assert!(
        matches!(
            opened,
            Err(Error::Rejected {
                code: Code::OutOfRange,
                ..
            })
        ),
        "{opened:?}"
    );
}

#[tokio::test]
async fn the_watch_ends_after_its_last_change_and_on_a_final_refusal() {
    let mut run = scripted::<true>(vec![stream(
        vec![Ok(Msg::Started(1)), Ok(Msg::Change(7))],
        Then::StayOpen,
    )]);
    run.fake.last = Some(7);
    let mut feed = follow(&run.client, run.fake, None).await.expect("opens");
    let items = take(&mut feed, 2).await;
    assert_eq!(items.len(), 1, "nothing after the last change: {items:?}");

    let run = scripted::<true>(vec![stream(
        vec![Ok(Msg::Started(1)), Err(Status::invalid_argument("bad"))],
        Then::StayOpen,
    )]);
    let mut feed = follow(&run.client, run.fake, None).await.expect("opens");
    let items = take(&mut feed, 2).await;
    assert!(
        matches!(
            items.as_slice(),
            [Err(Error::Rejected {
                code: Code::InvalidArgument,
                ..
            })]
        ),
        "{items:?}"
    );
}

#[tokio::test]
async fn a_stream_must_open_with_started_and_unavailable_nodes_are_passed_over() {
    let run = scripted::<true>(vec![
        Script::Refused(Status::unavailable("down")),
        Script::Refused(Status::resource_exhausted("full")),
        stream(vec![Ok(Msg::Change(4))], Then::StayOpen),
    ]);
    let opened = follow(&run.client, run.fake, None).await;
    match opened {
        Err(Error::Rejected {
            code: Code::Unimplemented,
            message,
        }) => assert!(message.contains("instead of STARTED"), "{message}"),
        other => panic!("expected UNIMPLEMENTED, got {other:?}"),
    }
    assert_eq!(run.asked.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_feed_without_started_resumes_after_its_known_cursor() {
    let run = scripted::<false>(vec![
        stream(
            vec![
                Ok(Msg::Bookmark(0)), // a confirmation: below the cursor, ignored
                Ok(Msg::Change(8)),
            ],
            Then::End,
        ),
        stream(vec![Ok(Msg::Change(9))], Then::StayOpen),
    ]);
    let mut feed = follow(&run.client, run.fake, Some(7)).await.expect("opens");
    assert_eq!(feed.start_sequence(), 7);
    let items = changes(take(&mut feed, 2).await);
    assert_eq!(items, [Msg::Change(8), Msg::Change(9)]);
    assert_eq!(
        *run.asked.lock().unwrap(),
        [Resume::After(7), Resume::After(8)]
    );
}
