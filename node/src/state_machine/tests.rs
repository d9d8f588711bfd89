//! Table-driven tests of apply: commands in, responses and state out.

use super::*;

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
        session_id: 0,
    }
}

fn del(key: &str) -> Command {
    Command::Delete { key: key.into() }
}

fn cas(key: &str, expected: u64, value: Option<&str>) -> Command {
    Command::CompareAndSwap {
        key: key.into(),
        expected_mod_revision: expected,
        value: value.map(Into::into),
    }
}

fn meta(key: &str, create: u64, modified: u64, version: u64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Vec::new(),
        create_revision: create,
        mod_revision: modified,
        version,
        session_id: 0,
    }
}

fn request(command: Command) -> Request {
    Request {
        now_ms: 1_000,
        request_id: None,
        fence: None,
        command,
    }
}

/// Applies `commands` in order to a fresh state machine and checks each response.
fn check(cases: Vec<(Command, Response)>) -> StateMachine {
    let mut sm = StateMachine::new(100);
    for (i, (command, expected)) in cases.into_iter().enumerate() {
        let got = sm.apply(i as u64 + 1, &request(command.clone()));
        assert_eq!(got, expected, "step {i}: {command:?}");
    }
    sm
}

#[test]
fn put_get_delete() {
    let sm = check(vec![
        (
            put("a", "1"),
            Response::Put {
                revision: 1,
                previous: None,
            },
        ),
        (
            put("a", "2"),
            Response::Put {
                revision: 2,
                previous: Some(meta("a", 1, 1, 1)),
            },
        ),
        (
            put("b", "3"),
            Response::Put {
                revision: 3,
                previous: None,
            },
        ),
        (
            del("b"),
            Response::Delete {
                revision: 4,
                previous: Some(meta("b", 3, 3, 1)),
            },
        ),
        // Deleting an absent key changes nothing, so the revision stays.
        (
            del("b"),
            Response::Delete {
                revision: 4,
                previous: None,
            },
        ),
        (
            put("b", "4"),
            Response::Put {
                revision: 5,
                previous: None,
            },
        ),
    ]);
    let a = sm.get(b"a").expect("a exists");
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"2"[..], 1, 2, 2)
    );
    let b = sm.get(b"b").expect("b was recreated");
    assert_eq!(
        (b.create_revision, b.version),
        (5, 1),
        "recreation starts a new life"
    );
    assert_eq!(sm.revision(), 5);
}

#[test]
fn compare_and_swap() {
    let sm = check(vec![
        // Create-if-absent succeeds once.
        (
            cas("k", 0, Some("v1")),
            Response::CompareAndSwap {
                revision: 1,
                succeeded: true,
                current: Some(meta("k", 1, 1, 1)),
            },
        ),
        (
            cas("k", 0, Some("v2")),
            Response::CompareAndSwap {
                revision: 1,
                succeeded: false,
                current: Some(meta("k", 1, 1, 1)),
            },
        ),
        // The right revision swaps; a stale one does not.
        (
            cas("k", 1, Some("v3")),
            Response::CompareAndSwap {
                revision: 2,
                succeeded: true,
                current: Some(meta("k", 1, 2, 2)),
            },
        ),
        (
            cas("k", 1, Some("v4")),
            Response::CompareAndSwap {
                revision: 2,
                succeeded: false,
                current: Some(meta("k", 1, 2, 2)),
            },
        ),
        // Compare-and-delete.
        (
            cas("k", 2, None),
            Response::CompareAndSwap {
                revision: 3,
                succeeded: true,
                current: None,
            },
        ),
        (
            cas("k", 2, None),
            Response::CompareAndSwap {
                revision: 3,
                succeeded: false,
                current: None,
            },
        ),
    ]);
    assert_eq!(sm.get(b"k"), None);
}

#[test]
fn txn_is_all_or_nothing() {
    let ops = vec![
        TxnOp::Put {
            key: "x".into(),
            value: "1".into(),
        },
        TxnOp::Put {
            key: "y".into(),
            value: "2".into(),
        },
        TxnOp::Delete { key: "a".into() },
    ];
    let compares = |rev_a: u64, rev_x: u64| {
        vec![
            Compare {
                key: "a".into(),
                mod_revision: rev_a,
            },
            Compare {
                key: "x".into(),
                mod_revision: rev_x,
            },
        ]
    };
    let sm = check(vec![
        (
            put("a", "0"),
            Response::Put {
                revision: 1,
                previous: None,
            },
        ),
        // One compare fails: nothing is applied, and the failure names it with the current revision.
        (
            Command::Txn {
                compares: compares(1, 7),
                ops: ops.clone(),
            },
            Response::Txn {
                revision: 1,
                succeeded: false,
                failed_compares: vec![(1, 0)],
            },
        ),
        // All compares hold: every op lands at one revision.
        (
            Command::Txn {
                compares: compares(1, 0),
                ops,
            },
            Response::Txn {
                revision: 2,
                succeeded: true,
                failed_compares: vec![],
            },
        ),
    ]);
    assert_eq!(sm.get(b"x").map(|kv| kv.mod_revision), Some(2));
    assert_eq!(sm.get(b"y").map(|kv| kv.mod_revision), Some(2));
    assert_eq!(sm.get(b"a"), None);
    let change = &sm.history().since(2, 10).expect("in history")[0];
    assert_eq!(
        change.events.len(),
        3,
        "one event per changed key, all at revision 2"
    );
}

#[test]
fn retried_request_id_applies_once() {
    let mut sm = StateMachine::new(100);
    let id = RequestId {
        client_id: 7,
        serial: 1,
        min_pending_serial: 1,
    };
    let first = Request {
        now_ms: 1,
        request_id: Some(id),
        fence: None,
        command: put("k", "first"),
    };
    let retry = Request {
        now_ms: 2,
        request_id: Some(id),
        fence: None,
        command: put("k", "second"),
    };
    let original = sm.apply(1, &first);
    assert_eq!(
        sm.apply(2, &retry),
        original,
        "a retry returns the original result"
    );
    assert_eq!(sm.get(b"k").expect("k").value, b"first");
    assert_eq!(sm.revision(), 1, "the retry did not write");

    // Once the client says it will not retry serial 1, its result is forgotten.
    let next = RequestId {
        client_id: 7,
        serial: 2,
        min_pending_serial: 2,
    };
    sm.apply(
        3,
        &Request {
            now_ms: 3,
            request_id: Some(next),
            fence: None,
            command: put("k", "third"),
        },
    );
    assert_eq!(
        sm.apply(4, &retry),
        Response::RequestIdExpired { revision: 2 }
    );
}

#[test]
fn idle_sessions_expire_on_cluster_time() {
    let mut sm = StateMachine::new(100);
    let a = RequestId {
        client_id: 1,
        serial: 1,
        min_pending_serial: 0,
    };
    let b = RequestId {
        client_id: 2,
        serial: 1,
        min_pending_serial: 0,
    };
    sm.apply(
        1,
        &Request {
            now_ms: 0,
            request_id: Some(a),
            fence: None,
            command: put("a", ""),
        },
    );
    let later = crate::limits::SESSION_IDLE_MS + 1;
    sm.apply(
        2,
        &Request {
            now_ms: later,
            request_id: Some(b),
            fence: None,
            command: put("b", ""),
        },
    );
    assert_eq!(sm.session_count(), 1, "client 1 was idle too long");
}

#[test]
fn history_is_bounded_and_reports_compaction() {
    let mut sm = StateMachine::new(3);
    for i in 1..=5u64 {
        sm.apply(i, &request(put("k", &i.to_string())));
    }
    assert_eq!(
        sm.history().since(1, 10),
        Err(3),
        "revisions 1 and 2 are gone"
    );
    let revisions: Vec<u64> = sm
        .history()
        .since(3, 10)
        .expect("kept")
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(revisions, vec![3, 4, 5]);
    assert_eq!(
        sm.history().since(6, 10),
        Ok(vec![]),
        "the next revision is not compacted"
    );
}

#[test]
fn list_pages_by_prefix() {
    let mut sm = StateMachine::new(100);
    for (i, key) in ["a/1", "a/2", "a/3", "b/1"].iter().enumerate() {
        sm.apply(i as u64 + 1, &request(put(key, "v")));
    }
    let keys = |page: &[KeyValue]| {
        page.iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect::<Vec<_>>()
    };
    let (page, more) = sm.list(b"a/", b"", 2);
    assert_eq!(
        (keys(&page), more),
        (vec!["a/1".to_string(), "a/2".to_string()], true)
    );
    let (page, more) = sm.list(b"a/", b"a/2", 2);
    assert_eq!((keys(&page), more), (vec!["a/3".to_string()], false));
    let (page, _) = sm.list(b"", b"", 10);
    assert_eq!(page.len(), 4);
}

#[test]
fn digest_depends_on_content_not_history() {
    let mut one = StateMachine::new(100);
    one.apply(1, &request(put("a", "1")));
    one.apply(2, &request(put("b", "2")));
    let mut two = StateMachine::new(5);
    two.apply(1, &request(put("a", "1")));
    two.apply(2, &request(put("b", "2")));
    assert_eq!(one.digest(), two.digest());
    two.apply(3, &request(put("b", "3")));
    assert_ne!(one.digest(), two.digest());
}

#[test]
#[should_panic(expected = "log applied out of order")]
fn applying_out_of_order_panics() {
    let mut sm = StateMachine::new(10);
    sm.apply(2, &request(put("a", "1")));
    sm.apply(2, &request(put("a", "1")));
}

/// The state machine must stay deterministic: no clock, randomness, I/O, async runtime or
/// floating point.
#[test]
fn state_machine_imports_nothing_nondeterministic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/state_machine");
    let forbidden = [
        "tokio",
        "tonic",
        "rocksdb",
        "rand::",
        "SystemTime",
        "Instant",
        "std::fs",
        "std::net",
        "HashMap",
        // Floating point rounds differently across platforms and builds (`powi` promises no
        // precision at all): apply computes in integers.
        "f32",
        "f64",
    ];
    let mut dirs = vec![std::path::PathBuf::from(dir)];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("state_machine dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // Test code (`tests.rs`, `golden_tests.rs`, whose hex may spell "f64") and test data
            // (`testdata/`) are exempt.
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with("tests.rs") || !name.ends_with(".rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("source file");
            for word in forbidden {
                assert!(!source.contains(word), "{} mentions {word}", path.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "the sources of coordination/ are checked too"
    );
}
