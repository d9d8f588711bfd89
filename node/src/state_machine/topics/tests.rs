//! Table tests of topics through `StateMachine::apply`, with the invariants checked after every
//! command (`Topics::check_invariants`).

use std::collections::BTreeMap;

use super::*;
use crate::limits::{TOPICS_STORE_BYTES_MAX, TOPIC_DUPLICATE_WINDOW_MS};
use crate::state_machine::coordination::{CoordCommand, Retention};
use crate::state_machine::{Command, Request, Response, StateMachine};

const T0: u64 = 1_000_000;

struct Harness {
    sm: StateMachine,
    index: u64,
    now_ms: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            sm: StateMachine::new(100),
            index: 0,
            now_ms: T0,
        }
    }

    fn at(&mut self, now_ms: u64) -> &mut Self {
        self.now_ms = now_ms;
        self
    }

    fn run(&mut self, command: TopicCommand) -> TopicResponse {
        self.index += 1;
        let request = Request {
            now_ms: self.now_ms,
            request_id: None,
            fence: None,
            command: Command::Topics(command),
        };
        let response = match self.sm.apply(self.index, &request) {
            Response::Topics { response, .. } => response,
            other => panic!("{other:?}"),
        };
        self.sm.topics().check_invariants(self.sm.now_ms());
        response
    }

    fn tick(&mut self) {
        self.index += 1;
        let tick = CoordCommand::Tick {
            refresh: false,
            retention: Retention::default(),
        };
        let request = Request {
            now_ms: self.now_ms,
            request_id: None,
            fence: None,
            command: Command::Coordination(tick),
        };
        self.sm.apply(self.index, &request);
        self.sm.topics().check_invariants(self.sm.now_ms());
    }

    fn create(&mut self, name: &str, subjects: &[&str]) -> TopicResponse {
        self.create_with(name, subjects, 0, 0, 0)
    }

    fn create_with(
        &mut self,
        name: &str,
        subjects: &[&str],
        max_msgs: u64,
        max_bytes: u64,
        max_age_ms: u64,
    ) -> TopicResponse {
        self.run(TopicCommand::Create {
            name: name.into(),
            config: TopicConfig {
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                max_msgs,
                max_bytes,
                max_age_ms,
            },
        })
    }

    fn publish(&mut self, messages: Vec<NewMessage>) -> TopicResponse {
        self.run(TopicCommand::Publish { messages })
    }

    /// Publishes one message; answers its sequence.
    fn publish_one(&mut self, subject: &str, key: Option<&str>, data: &str) -> Seq {
        match self.publish(vec![msg(subject, key, data)]) {
            TopicResponse::Published { results } => results[0].seq,
            other => panic!("{other:?}"),
        }
    }

    fn group(&mut self, topic: &str, group: &str, config: GroupConfig) -> TopicResponse {
        self.run(TopicCommand::CreateGroup {
            topic: topic.into(),
            group: group.into(),
            config,
        })
    }

    fn fetch(&mut self, group: &str, member: &str, max: u32) -> Vec<Delivery> {
        match self.run(TopicCommand::Fetch {
            topic: "orders".into(),
            group: group.into(),
            member: member.into(),
            max,
            max_bytes: u64::MAX,
        }) {
            TopicResponse::Fetched { deliveries } => deliveries,
            other => panic!("{other:?}"),
        }
    }

    fn ack(&mut self, group: &str, d: Delivery) -> TopicResponse {
        self.run(TopicCommand::Ack {
            topic: "orders".into(),
            group: group.into(),
            seq: d.seq,
            token: d.token,
        })
    }

    fn nack(&mut self, group: &str, d: Delivery, delay_ms: u64) -> TopicResponse {
        self.run(TopicCommand::Nack {
            topic: "orders".into(),
            group: group.into(),
            seq: d.seq,
            token: d.token,
            delay_ms,
        })
    }

    fn stats(&self, group: &str) -> GroupStats {
        let topic = self.sm.topics().get("orders").expect("topic");
        topic
            .group(group)
            .expect("group")
            .stats(topic.first_seq(), topic.last_seq)
    }

    fn seqs(&self) -> Vec<Seq> {
        let topic = self.sm.topics().get("orders").expect("topic");
        topic.messages_from(0).map(|m| m.seq).collect()
    }
}

fn msg(subject: &str, key: Option<&str>, data: &str) -> NewMessage {
    NewMessage {
        subject: subject.into(),
        key: key.map(|k| k.as_bytes().to_vec()),
        headers: BTreeMap::new(),
        data: data.as_bytes().to_vec(),
        idempotency_key: String::new(),
    }
}

fn with_id(mut message: NewMessage, id: &str) -> NewMessage {
    message.idempotency_key = id.into();
    message
}

fn config() -> GroupConfig {
    GroupConfig {
        filter: String::new(),
        start: StartPosition::All,
        ack_wait_ms: 10_000,
        max_deliveries: 3,
        ordered_keys: true,
    }
}

fn refusal(response: TopicResponse) -> (RefusalCode, String) {
    match response {
        TopicResponse::Refused(Refusal { code, reason }) => (code, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn seqs_of(deliveries: &[Delivery]) -> Vec<Seq> {
    deliveries.iter().map(|d| d.seq).collect()
}

/// An `orders` topic with one group `g`.
fn orders() -> Harness {
    let mut h = Harness::new();
    assert_eq!(
        h.create("orders", &[]),
        TopicResponse::Created { existing: false }
    );
    assert_eq!(
        h.group("orders", "g", config()),
        TopicResponse::GroupCreated { existing: false }
    );
    h
}

#[test]
fn subjects_route_and_overlapping_topics_are_refused() {
    let mut h = Harness::new();
    assert_eq!(
        h.create("research", &["research.papers.*", "research.code.>"]),
        TopicResponse::Created { existing: false }
    );
    let (code, reason) = refusal(h.create("papers", &["research.*.new"]));
    assert_eq!(code, RefusalCode::AlreadyExists);
    assert!(
        reason.contains("overlaps \"research.papers.*\""),
        "{reason}"
    );
    assert_eq!(
        h.create("research", &["research.papers.*", "research.code.>"]),
        TopicResponse::Created { existing: true }
    );
    assert_eq!(
        refusal(h.create("research", &["other"])).0,
        RefusalCode::AlreadyExists
    );
    // Default subjects: NAME and NAME.>.
    h.create("audit", &[]);
    assert_eq!(
        h.sm.topics().get("audit").unwrap().config.subjects,
        ["audit", "audit.>"]
    );
    assert_eq!(h.publish_one("research.papers.new", None, "a"), 1);
    assert_eq!(h.publish_one("research.code.rust.tokio", None, "b"), 2);
    assert_eq!(h.publish_one("audit.login", None, "c"), 1);
    let (code, reason) = refusal(h.publish(vec![msg("research.papers", None, "x")]));
    assert_eq!(code, RefusalCode::NotFound);
    assert!(reason.contains("\"research.papers\""), "{reason}");
    let (code, reason) = refusal(h.publish(vec![msg("research.*", None, "x")]));
    assert_eq!(code, RefusalCode::InvalidArgument);
    assert!(reason.starts_with("messages[0].subject"), "{reason}");
}

#[test]
fn a_batch_is_all_or_nothing_and_idempotency_keys_answer_the_original() {
    let mut h = orders();
    let batch = vec![
        with_id(msg("orders.eu", None, "1"), "a"),
        msg("orders.us", None, "2"),
        msg("nowhere", None, "3"),
    ];
    assert_eq!(refusal(h.publish(batch)).0, RefusalCode::NotFound);
    assert!(h.seqs().is_empty(), "nothing stored");
    let batch = vec![
        with_id(msg("orders.eu", None, "1"), "a"),
        msg("orders.us", None, "2"),
        with_id(msg("orders.eu", None, "1 again"), "a"),
    ];
    let TopicResponse::Published { results } = h.publish(batch) else {
        panic!()
    };
    let answers: Vec<(Seq, bool)> = results.iter().map(|r| (r.seq, r.duplicate)).collect();
    assert_eq!(answers, [(1, false), (2, false), (1, true)]);
    h.at(T0 + 1_000);
    let TopicResponse::Published { results } =
        h.publish(vec![with_id(msg("orders", None, "x"), "a")])
    else {
        panic!()
    };
    assert_eq!((results[0].seq, results[0].duplicate), (1, true));
    assert_eq!(h.seqs(), [1, 2]);
    // Past the window the key is new again (forgotten at the tick that passes it).
    h.at(T0 + TOPIC_DUPLICATE_WINDOW_MS + 1).tick();
    assert_eq!(h.publish_one("orders", None, "x"), 3);
    let TopicResponse::Published { results } =
        h.publish(vec![with_id(msg("orders", None, "y"), "a")])
    else {
        panic!()
    };
    assert_eq!((results[0].seq, results[0].duplicate), (4, false));
}

#[test]
fn deliveries_are_acked_with_their_token_and_stale_tokens_are_refused() {
    let mut h = orders();
    for i in 1..=3 {
        h.publish_one("orders.eu", None, &i.to_string());
    }
    let first = h.fetch("g", "a", 2);
    assert_eq!(seqs_of(&first), [1, 2]);
    assert_eq!(first[0].deliveries, 1);
    assert!(first[1].token > first[0].token, "tokens grow");
    let second = h.fetch("g", "b", 10);
    assert_eq!(seqs_of(&second), [3]);
    assert_eq!(h.fetch("g", "b", 10), []);
    assert_eq!(h.ack("g", first[0]), TopicResponse::Acked);
    let (code, reason) = refusal(h.ack("g", first[0]));
    assert_eq!(code, RefusalCode::StaleToken);
    assert!(reason.contains("no longer outstanding"), "{reason}");
    let wrong = Delivery {
        token: second[0].token,
        ..first[1]
    };
    let (_, reason) = refusal(h.ack("g", wrong));
    assert!(
        reason.contains("is stale") && reason.contains("\"a\""),
        "{reason}"
    );
    let stats = h.stats("g");
    assert_eq!(
        (
            stats.ack_floor,
            stats.last_delivered,
            stats.in_flight,
            stats.lag
        ),
        (1, 3, 2, 2)
    );
}

#[test]
fn a_nack_redelivers_after_its_delay_and_an_ack_wait_redelivers() {
    let mut h = orders();
    h.publish_one("orders.eu", None, "x");
    let d = h.fetch("g", "a", 1)[0];
    assert_eq!(h.nack("g", d, 5_000), TopicResponse::Nacked);
    assert_eq!(h.fetch("g", "a", 1), [], "not before the delay");
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 5_000));
    h.at(T0 + 5_000).tick();
    let again = h.fetch("g", "b", 1);
    assert_eq!((again[0].seq, again[0].deliveries), (1, 2));
    assert!(refusal(h.ack("g", d)).1.contains("is stale"));
    // Its ack wait passes: ready again at once, under a new token.
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 15_000));
    h.at(T0 + 15_000).tick();
    let (_, reason) = refusal(h.ack("g", again[0]));
    assert!(reason.contains("awaits redelivery"), "{reason}");
    let third = h.fetch("g", "c", 1);
    assert_eq!((third[0].deliveries, h.stats("g").redeliveries), (3, 2));
    assert_eq!(h.ack("g", third[0]), TopicResponse::Acked);
}

#[test]
fn max_deliveries_dead_letters_with_the_reason_then_redrive_and_purge() {
    let mut h = orders();
    h.publish_one("orders.eu", None, "x");
    h.publish_one("orders.eu", None, "y");
    for n in 0..3u64 {
        let d = h.fetch("g", "a", 1);
        assert_eq!(d[0].seq, 1);
        h.at(T0 + (n + 1) * 10_000).tick();
    }
    let topic = h.sm.topics().get("orders").unwrap();
    let dead: Vec<&DeadLetter> = topic.group("g").unwrap().dead_letters().collect();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].message.seq, dead[0].deliveries), (1, 3));
    assert!(dead[0]
        .reason
        .contains("ack wait (10000 ms) passed on delivery 3 of 3"));
    let bytes = h.sm.topics().bytes();
    let d = h.fetch("g", "a", 1)[0];
    assert_eq!(h.nack("g", d, 0), TopicResponse::Nacked);
    let d = h.fetch("g", "a", 1)[0];
    h.nack("g", d, 0);
    let d = h.fetch("g", "a", 1)[0];
    assert_eq!((d.seq, d.deliveries), (2, 3));
    h.nack("g", d, 0);
    assert_eq!(h.stats("g").dead_letters, 2);
    assert!(h.sm.topics().bytes() > bytes, "dead letters count");
    let redrive = TopicCommand::Redrive {
        topic: "orders".into(),
        group: "g".into(),
        selector: DeadLetterSelector::Seqs(vec![1]),
    };
    assert_eq!(
        h.run(redrive),
        TopicResponse::Redriven {
            redriven: 1,
            discarded: 0
        }
    );
    let d = h.fetch("g", "a", 5);
    assert_eq!((seqs_of(&d), d[0].deliveries), (vec![1], 1));
    let purge = TopicCommand::Purge {
        topic: "orders".into(),
        group: "g".into(),
        selector: DeadLetterSelector::All,
    };
    assert_eq!(h.run(purge), TopicResponse::Purged { purged: 1 });
    assert_eq!(h.stats("g").dead_letters, 0);
}

#[test]
fn per_key_order_holds_across_a_lost_member() {
    let mut h = orders();
    h.publish_one("orders.eu", Some("k1"), "k1-a");
    h.publish_one("orders.eu", Some("k1"), "k1-b");
    h.publish_one("orders.eu", Some("k2"), "k2-a");
    h.publish_one("orders.eu", None, "free");
    // A owns k1 (seq 1); k1's seq 2 waits; k2 and the unkeyed message go out.
    let a = h.fetch("g", "a", 10);
    assert_eq!(seqs_of(&a), [1, 3, 4]);
    assert_eq!(h.fetch("g", "b", 10), [], "k1's next waits for its first");
    // A is lost: its deliveries time out, B gets k1 under a new token.
    h.at(T0 + 10_000).tick();
    let b = h.fetch("g", "b", 10);
    assert_eq!(seqs_of(&b), [1, 3, 4]);
    assert!(b[0].token > a[0].token);
    let (code, _) = refusal(h.ack("g", a[0]));
    assert_eq!(code, RefusalCode::StaleToken, "A's ack is refused");
    assert_eq!(h.fetch("g", "a", 10), [], "k1 stays with B");
    assert_eq!(h.ack("g", b[0]), TopicResponse::Acked);
    let next = h.fetch("g", "a", 10);
    assert_eq!(seqs_of(&next), [2], "k1's second after its first");
    // Without key order every message goes out at once.
    let mut unordered = config();
    unordered.ordered_keys = false;
    h.group("orders", "u", unordered);
    assert_eq!(seqs_of(&h.fetch("u", "a", 10)), [1, 2, 3, 4]);
}

#[test]
fn groups_filter_and_start_where_they_are_told() {
    let mut h = orders();
    h.publish_one("orders.eu", None, "1");
    h.at(T0 + 100);
    h.publish_one("orders.us", None, "2");
    h.publish_one("orders.eu", None, "3");
    let mut eu = config();
    eu.filter = "orders.eu".into();
    h.group("orders", "eu", eu);
    assert_eq!(seqs_of(&h.fetch("eu", "a", 10)), [1, 3]);
    let mut new = config();
    new.start = StartPosition::New;
    h.group("orders", "new", new);
    assert_eq!(h.fetch("new", "a", 10), []);
    let mut from = config();
    from.start = StartPosition::FromSeq(2);
    h.group("orders", "from", from);
    assert_eq!(seqs_of(&h.fetch("from", "a", 10)), [2, 3]);
    let mut since = config();
    since.start = StartPosition::FromTimeMs(T0 + 50);
    h.group("orders", "since", since);
    assert_eq!(seqs_of(&h.fetch("since", "a", 10)), [2, 3]);
    let (code, _) = refusal(h.group("orders", "eu", config()));
    assert_eq!(code, RefusalCode::AlreadyExists);
    let (code, _) = refusal(h.group("nope", "g", config()));
    assert_eq!(code, RefusalCode::NotFound);
}

#[test]
fn retention_by_count_bytes_and_age_discards_the_oldest() {
    let mut h = Harness::new();
    h.create_with("orders", &[], 3, 0, 0);
    h.group("orders", "g", config());
    for i in 0..5 {
        h.publish_one("orders", None, &i.to_string());
    }
    assert_eq!(h.seqs(), [3, 4, 5]);
    // An in-flight delivery of a discarded message can no longer be acked.
    let d = h.fetch("g", "a", 1)[0];
    assert_eq!(d.seq, 3);
    h.publish_one("orders", None, "6");
    assert!(refusal(h.ack("g", d)).1.contains("discarded"));
    assert_eq!(h.stats("g").in_flight, 0);

    let mut h = Harness::new();
    // Each message is "orders" (6 bytes) + 4 bytes of data.
    h.create_with("orders", &[], 0, 25, 0);
    for _ in 0..3 {
        h.publish_one("orders", None, "abcd");
    }
    assert_eq!(h.seqs(), [2, 3]);
    let big = "x".repeat(30);
    let (code, reason) = refusal(h.publish(vec![msg("orders", None, &big)]));
    assert_eq!(code, RefusalCode::InvalidArgument);
    assert!(reason.contains("max_bytes 25"), "{reason}");

    let mut h = Harness::new();
    h.create_with("orders", &[], 0, 0, 60_000);
    h.publish_one("orders", None, "old");
    h.at(T0 + 30_000);
    h.publish_one("orders", None, "new");
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 60_000));
    h.at(T0 + 60_000).tick();
    assert_eq!(h.seqs(), [2]);
    assert_eq!(h.sm.topics().get("orders").unwrap().discarded, 1);
}

#[test]
fn the_store_quota_refuses_a_publish_past_it_and_stores_nothing() {
    let mut h = Harness::new();
    h.create("orders", &[]);
    h.create_with("capped", &[], 1, 0, 0);
    let data = "x".repeat(1024 * 1024);
    let per_message = 6 + data.len() as u64;
    let fit = TOPICS_STORE_BYTES_MAX / per_message;
    for _ in 0..fit {
        h.publish_one("orders", None, &data);
    }
    let before = h.sm.topics().bytes();
    let (code, reason) = refusal(h.publish(vec![msg("orders", None, &data)]));
    assert_eq!(code, RefusalCode::ResourceExhausted);
    assert!(reason.contains("TOPICS_STORE_BYTES_MAX"), "{reason}");
    assert_eq!(h.sm.topics().bytes(), before);
    // A topic whose retention frees what it stores still takes messages... once it holds one.
    let (code, _) = refusal(h.publish(vec![msg("capped", None, &data)]));
    assert_eq!(code, RefusalCode::ResourceExhausted);
    h.run(TopicCommand::Delete {
        name: "orders".into(),
    });
    assert_eq!(h.sm.topics().bytes(), 0);
    h.publish_one("capped", None, &data);
    h.publish_one("capped", None, &data);
    assert_eq!(h.sm.topics().bytes(), 6 + data.len() as u64);
}

#[test]
fn in_progress_extends_the_ack_wait() {
    let mut h = orders();
    h.publish_one("orders", None, "x");
    let d = h.fetch("g", "a", 1)[0];
    h.at(T0 + 8_000);
    let extend = TopicCommand::InProgress {
        topic: "orders".into(),
        group: "g".into(),
        seq: d.seq,
        token: d.token,
    };
    assert_eq!(
        h.run(extend),
        TopicResponse::Extended {
            deadline_ms: T0 + 18_000
        }
    );
    h.at(T0 + 10_000).tick();
    assert_eq!(h.ack("g", d), TopicResponse::Acked);
}

#[test]
fn a_snapshot_round_trip_keeps_the_state_and_its_digest() {
    let mut h = orders();
    h.publish_one("orders", Some("k"), "x");
    h.publish(vec![with_id(msg("orders.eu", None, "y"), "id-1")]);
    let d = h.fetch("g", "a", 1)[0];
    h.nack("g", d, 5_000);
    let bytes = crate::raft::encode(&h.sm);
    let decoded: StateMachine = crate::raft::decode(&bytes).expect("decodes");
    assert_eq!(decoded, h.sm);
    assert_eq!(decoded.digest(), h.sm.digest());
    let before = h.sm.digest();
    h.ack("g", Delivery { token: 99, ..d });
    assert_eq!(h.sm.digest(), before, "a refused ack changes nothing");
    h.at(T0 + 5_000).tick();
    assert_ne!(h.sm.digest(), before);
}

#[test]
fn a_fetch_stops_at_its_byte_budget_but_always_leases_one() {
    let mut h = orders();
    for _ in 0..3 {
        h.publish_one("orders", None, "abcd");
    }
    let fetch = |max_bytes| TopicCommand::Fetch {
        topic: "orders".into(),
        group: "g".into(),
        member: "a".into(),
        max: 10,
        max_bytes,
    };
    // Each message is 10 bytes: the second passes 15, and the third is left.
    let TopicResponse::Fetched { deliveries } = h.run(fetch(15)) else {
        panic!()
    };
    assert_eq!(seqs_of(&deliveries), [1, 2]);
    let TopicResponse::Fetched { deliveries } = h.run(fetch(1)) else {
        panic!()
    };
    assert_eq!(seqs_of(&deliveries), [3]);
}

// ---- Triggers (`triggers.rs`) ----

mod triggers {
    use std::collections::BTreeSet;

    use super::*;
    use crate::state_machine::coordination::{Backoff, TaskSpec};
    use crate::state_machine::transaction::{Op, Transaction};
    use crate::state_machine::workflows::tests::pipeline;

    fn template(queue: &str, lease_ms: u64) -> TaskSpec {
        TaskSpec {
            queue: queue.into(),
            payload: Vec::new(),
            content_type: String::new(),
            capabilities: BTreeSet::new(),
            priority: 3,
            max_attempts: 2,
            backoff: Backoff {
                initial_ms: 1_000,
                maximum_ms: 60_000,
                multiplier_permille: 2_000,
                jitter_permille: 0,
            },
            lease_ms,
            deadline_ms: 0,
            not_before_ms: 0,
            idempotency_key: String::new(),
            correlation_id: String::new(),
            parent_id: 0,
            labels: [("team".to_string(), "billing".to_string())].into(),
            requires: None,
        }
    }

    fn create(h: &mut Harness, name: &str, subject: &str, action: TriggerAction) -> TopicResponse {
        h.run(TopicCommand::CreateTrigger {
            topic: "orders".into(),
            name: name.into(),
            subject: subject.into(),
            action,
        })
    }

    fn submit(queue: &str) -> TriggerAction {
        TriggerAction::SubmitTask(Box::new(template(queue, 30_000)))
    }

    fn trigger(h: &Harness, name: &str) -> Trigger {
        let topic = h.sm.topics().get("orders").expect("topic");
        topic
            .triggers()
            .find(|t| t.name == name)
            .expect("trigger")
            .clone()
    }

    fn task_count(h: &Harness) -> u64 {
        (1..100)
            .filter(|id| h.sm.tasks().task(*id).is_some())
            .count() as u64
    }

    fn apply(h: &mut Harness, command: Command) -> Response {
        h.index += 1;
        let request = Request {
            now_ms: h.now_ms,
            request_id: None,
            fence: None,
            command,
        };
        let response = h.sm.apply(h.index, &request);
        h.sm.topics().check_invariants(h.sm.now_ms());
        response
    }

    #[test]
    fn a_task_trigger_fires_once_per_matching_message_with_the_message_as_payload() {
        let mut h = orders();
        let created = create(&mut h, "bill", "orders.eu.*", submit("billing"));
        assert_eq!(created, TopicResponse::TriggerCreated { existing: false });
        assert_eq!(
            create(&mut h, "bill", "orders.eu.*", submit("billing")),
            TopicResponse::TriggerCreated { existing: true }
        );
        let (code, _) = refusal(create(&mut h, "bill", "orders.>", submit("billing")));
        assert_eq!(code, RefusalCode::AlreadyExists);
        let seq = h.publish_one("orders.eu.paid", Some("cust-1"), "paid 10");
        h.publish_one("orders.us.paid", None, "not matched");
        assert_eq!(task_count(&h), 1, "the pattern filters");
        let task = h.sm.tasks().task(1).expect("the trigger's task");
        assert_eq!(task.spec.payload, b"paid 10");
        assert_eq!(task.spec.queue, "billing");
        assert_eq!(task.spec.priority, 3);
        assert_eq!(
            task.spec.idempotency_key,
            format!("trigger/bill/orders/{seq}")
        );
        let labels = &task.spec.labels;
        assert_eq!(labels["conclave.topic"], "orders");
        assert_eq!(labels["conclave.seq"], seq.to_string());
        assert_eq!(labels["conclave.subject"], "orders.eu.paid");
        assert_eq!(labels["conclave.key"], "cust-1");
        assert_eq!(labels["team"], "billing");
        // A batch: each matching message fires once.
        h.publish(vec![
            msg("orders.eu.a", None, "1"),
            msg("orders.eu.b", None, "2"),
            msg("orders.x", None, "3"),
        ]);
        assert_eq!(task_count(&h), 3);
        // A transaction's publish op goes through the same store.
        let txn = Transaction {
            compares: Vec::new(),
            ops: vec![Op::Topics(TopicOp::Publish(msg("orders.eu.c", None, "4")))],
        };
        apply(&mut h, Command::Transaction(txn));
        assert_eq!(task_count(&h), 4);
        let t = trigger(&h, "bill");
        assert_eq!((t.fired, t.failed), (4, 0));
    }

    #[test]
    fn a_duplicate_publish_fires_nothing() {
        let mut h = orders();
        create(&mut h, "bill", ">", submit("billing"));
        let message = with_id(msg("orders.eu", None, "x"), "id-1");
        h.publish(vec![message.clone()]);
        h.publish(vec![message.clone(), message]);
        assert_eq!(task_count(&h), 1);
        assert_eq!(trigger(&h, "bill").fired, 1);
    }

    #[test]
    fn a_refused_submit_is_counted_and_recorded_not_silent() {
        let mut h = orders();
        let bad = TriggerAction::SubmitTask(Box::new(template("billing", 0)));
        create(&mut h, "bad", ">", bad);
        let after = h.sm.events_after(0).map_or(0, |e| e.len());
        let seq = h.publish_one("orders.eu", None, "x");
        assert_eq!(task_count(&h), 0);
        let t = trigger(&h, "bad");
        assert_eq!((t.fired, t.failed), (0, 1));
        assert!(t.last_error.contains("lease_ms"), "{}", t.last_error);
        let events = h.sm.events_after(0).expect("events");
        assert!(events.len() > after);
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            CoordEventKind::Topic(TopicEvent {
                kind: TopicEventKind::TriggerFailed { trigger, seq: s, .. },
                ..
            }) if trigger == "bad" && *s == seq
        )));
    }

    #[test]
    fn a_template_with_its_own_key_or_an_unknown_topic_is_refused_and_limits_hold() {
        let mut h = orders();
        let mut keyed = template("billing", 30_000);
        keyed.idempotency_key = "k".into();
        let (code, _) = refusal(create(
            &mut h,
            "k",
            ">",
            TriggerAction::SubmitTask(Box::new(keyed)),
        ));
        assert_eq!(code, RefusalCode::InvalidArgument);
        let (code, _) = refusal(h.run(TopicCommand::CreateTrigger {
            topic: "nope".into(),
            name: "t".into(),
            subject: ">".into(),
            action: submit("q"),
        }));
        assert_eq!(code, RefusalCode::NotFound);
        for i in 0..crate::limits::TOPIC_TRIGGERS_MAX {
            let created = create(&mut h, &format!("t{i}"), ">", submit("q"));
            assert_eq!(created, TopicResponse::TriggerCreated { existing: false });
        }
        let (code, reason) = refusal(create(&mut h, "one-more", ">", submit("q")));
        assert_eq!(code, RefusalCode::ResourceExhausted);
        assert!(reason.contains("TOPIC_TRIGGERS_MAX"));
    }

    #[test]
    fn a_deleted_trigger_stops_firing() {
        let mut h = orders();
        create(&mut h, "bill", ">", submit("billing"));
        h.publish_one("orders.a", None, "1");
        let deleted = h.run(TopicCommand::DeleteTrigger {
            topic: "orders".into(),
            name: "bill".into(),
        });
        assert_eq!(deleted, TopicResponse::TriggerDeleted);
        h.publish_one("orders.b", None, "2");
        assert_eq!(task_count(&h), 1);
        let (code, _) = refusal(h.run(TopicCommand::DeleteTrigger {
            topic: "orders".into(),
            name: "bill".into(),
        }));
        assert_eq!(code, RefusalCode::NotFound);
    }

    #[test]
    fn a_workflow_trigger_starts_one_workflow_per_message_with_the_envelope() {
        let mut h = orders();
        let action = TriggerAction::StartWorkflow(Box::new(pipeline()));
        create(&mut h, "flow", "orders.eu.>", action);
        let seq = h.publish_one("orders.eu.paid", Some("k"), "{\"x\":1}");
        h.publish(vec![NewMessage {
            data: vec![0xff, 0x00],
            ..msg("orders.eu.raw", None, "")
        }]);
        h.publish_one("orders.us", None, "skipped");
        let workflows: Vec<_> = h.sm.workflows().iter().collect();
        assert_eq!(workflows.len(), 2);
        let input: serde_json::Value = serde_json::from_str(&workflows[0].input).expect("json");
        assert_eq!(input["topic"], "orders");
        assert_eq!(input["seq"], seq);
        assert_eq!(input["subject"], "orders.eu.paid");
        assert_eq!(input["key"], "k");
        assert_eq!(input["data"], "{\"x\":1}");
        let raw: serde_json::Value = serde_json::from_str(&workflows[1].input).expect("json");
        assert_eq!(raw["data_base64"], "/wA=");
        assert_eq!(raw["key"], serde_json::Value::Null);
        assert_eq!(trigger(&h, "flow").fired, 2);
        assert!(
            task_count(&h) >= 2,
            "each workflow's first step submitted its task"
        );
    }

    #[test]
    fn triggers_survive_a_snapshot_round_trip() {
        let mut h = orders();
        create(&mut h, "bill", ">", submit("billing"));
        create(
            &mut h,
            "bad",
            ">",
            TriggerAction::SubmitTask(Box::new(template("q", 0))),
        );
        h.publish_one("orders.a", None, "1");
        let bytes = crate::raft::encode(&h.sm);
        let decoded: StateMachine = crate::raft::decode(&bytes).expect("decodes");
        assert_eq!(decoded, h.sm);
        assert_eq!(decoded.digest(), h.sm.digest());
        let before = h.sm.digest();
        h.publish_one("orders.b", None, "2");
        assert_ne!(h.sm.digest(), before);
    }
}
