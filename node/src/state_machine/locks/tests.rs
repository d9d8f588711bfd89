//! Table tests of locks, semaphores and elections through `StateMachine::apply`: grant order,
//! lock-delay, TTLs, session ends, timers across a leader change, and fenced writes.

use std::collections::BTreeMap;

use super::*;
use crate::state_machine::coordination::{AgentSpec, CoordCommand, CoordResponse, Retention};
use crate::state_machine::{Command, Fence, Request, Response, StateMachine};

const T0: u64 = 1_000_000;
const TTL: u64 = 10_000;
const DELAY: u64 = 3_000;

struct Harness {
    sm: StateMachine,
    index: u64,
    now_ms: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            sm: StateMachine::new(1000),
            index: 0,
            now_ms: T0,
        }
    }

    fn at(&mut self, now_ms: u64) -> &mut Self {
        self.now_ms = now_ms;
        self
    }

    fn apply_fenced(&mut self, fence: Option<Fence>, command: Command) -> Response {
        self.index += 1;
        let response = self.sm.apply(
            self.index,
            &Request {
                now_ms: self.now_ms,
                request_id: None,
                fence,
                command,
            },
        );
        self.check_invariants();
        response
    }

    fn run(&mut self, command: LockCommand) -> LockResponse {
        match self.apply_fenced(None, Command::Locks(command)) {
            Response::Locks { response, .. } => response,
            other => panic!("locks answer Locks, not {other:?}"),
        }
    }

    fn coord(&mut self, command: CoordCommand) -> CoordResponse {
        match self.apply_fenced(None, Command::Coordination(command)) {
            Response::Coordination { response, .. } => response,
            other => panic!("{other:?}"),
        }
    }

    fn tick(&mut self, refresh: bool) {
        self.coord(CoordCommand::Tick {
            refresh,
            retention: Retention::default(),
        });
    }

    fn register(&mut self, name: &str) -> SessionId {
        let spec = AgentSpec {
            name: name.into(),
            capabilities: Default::default(),
            labels: BTreeMap::new(),
            max_concurrent: 1,
            version: "1".into(),
            metadata: BTreeMap::new(),
            ttl_ms: 5_000,
            replace: false,
            breaker_failures: 3,
            breaker_cooldown_ms: 30_000,
        };
        match self.coord(CoordCommand::RegisterAgent(spec)) {
            CoordResponse::Registered { session_id, .. } => session_id,
            other => panic!("register: {other:?}"),
        }
    }

    fn acquire(
        &mut self,
        kind: LockKind,
        name: &str,
        holder: Holder,
        permits: u32,
        limit: u32,
        wait_ms: u64,
    ) -> LockResponse {
        self.run(LockCommand::Acquire {
            kind,
            name: name.into(),
            holder,
            permits,
            limit,
            wait_ms,
            lock_delay_ms: DELAY,
            value: Vec::new(),
        })
    }

    fn lock(&mut self, name: &str, wait_ms: u64) -> LockResponse {
        self.acquire(LockKind::Lock, name, lease("a"), 1, 1, wait_ms)
    }

    fn get(&self, kind: LockKind, name: &str) -> Option<&Lock> {
        self.sm.locks().get(kind, name)
    }

    fn holders(&self, kind: LockKind, name: &str) -> Vec<Token> {
        self.get(kind, name)
            .map(|l| l.holders.keys().copied().collect())
            .unwrap_or_default()
    }

    fn release(&mut self, kind: LockKind, name: &str, token: Token) -> LockResponse {
        self.run(LockCommand::Release {
            kind,
            name: name.into(),
            token,
        })
    }

    fn put_fenced(&mut self, name: &str, token: Token) -> Response {
        let fence = Fence {
            kind: LockKind::Lock,
            name: name.into(),
            token,
        };
        self.apply_fenced(
            Some(fence),
            Command::Put {
                key: b"k".to_vec(),
                value: token.to_be_bytes().to_vec(),
                session_id: 0,
            },
        )
    }

    /// Indexes agree with the locks: timers, the session index, permits within the limit, and
    /// idle locks forgotten.
    fn check_invariants(&self) {
        let locks = &self.sm.locks;
        let mut timers = BTreeSet::new();
        let mut by_session: BTreeMap<SessionId, BTreeSet<(LockKind, String, Token)>> =
            BTreeMap::new();
        for ((kind, name), lock) in &locks.locks {
            assert!(lock.free_permits() <= lock.limit);
            assert!(
                !(lock.holders.is_empty()
                    && lock.waiters.is_empty()
                    && lock.unavailable_until_ms == 0),
                "idle lock {name} kept"
            );
            assert!(lock
                .holders
                .keys()
                .chain(lock.waiters.keys())
                .all(|t| *t <= locks.last_token));
            for grant in lock.holders.values() {
                if grant.expires_at_ms != 0 {
                    timers.insert((
                        grant.expires_at_ms,
                        Timer::HoldExpiry,
                        *kind,
                        name.clone(),
                        grant.token,
                    ));
                }
            }
            for grant in lock.waiters.values() {
                timers.insert((
                    grant.expires_at_ms,
                    Timer::WaitExpiry,
                    *kind,
                    name.clone(),
                    grant.token,
                ));
            }
            if lock.unavailable_until_ms != 0 {
                timers.insert((
                    lock.unavailable_until_ms,
                    Timer::DelayOver,
                    *kind,
                    name.clone(),
                    0,
                ));
            }
            for grant in lock.holders.values().chain(lock.waiters.values()) {
                if grant.holder.session_id != 0 {
                    by_session
                        .entry(grant.holder.session_id)
                        .or_default()
                        .insert((*kind, name.clone(), grant.token));
                }
            }
        }
        assert_eq!(locks.timers, timers, "timers");
        assert_eq!(locks.by_session, by_session, "session index");
    }
}

fn lease(owner: &str) -> Holder {
    Holder {
        session_id: 0,
        ttl_ms: TTL,
        owner: owner.into(),
    }
}

fn session(session_id: SessionId) -> Holder {
    Holder {
        session_id,
        ttl_ms: 0,
        owner: String::new(),
    }
}

fn granted(response: &LockResponse) -> Token {
    match response {
        LockResponse::Acquired {
            token,
            granted: true,
            ..
        } => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn queued(response: &LockResponse) -> Token {
    match response {
        LockResponse::Acquired {
            token,
            granted: false,
            ..
        } => *token,
        other => panic!("expected to be queued, got {other:?}"),
    }
}

#[test]
fn waiters_are_granted_first_come_first_served_with_growing_tokens() {
    let mut h = Harness::new();
    let first = granted(&h.lock("l", 0));
    let second = queued(&h.lock("l", 60_000));
    let third = queued(&h.lock("l", 60_000));
    assert!(first < second && second < third);
    assert_eq!(
        h.lock("l", 0),
        LockResponse::Busy,
        "try-once does not queue"
    );
    assert_eq!(
        h.release(LockKind::Lock, "l", first),
        LockResponse::Released
    );
    assert_eq!(h.holders(LockKind::Lock, "l"), vec![second]);
    assert_eq!(
        h.release(LockKind::Lock, "l", second),
        LockResponse::Released
    );
    assert_eq!(h.holders(LockKind::Lock, "l"), vec![third]);
    assert_eq!(
        h.release(LockKind::Lock, "l", third),
        LockResponse::Released
    );
    assert!(
        h.get(LockKind::Lock, "l").is_none(),
        "an idle lock is forgotten"
    );
    let again = granted(&h.lock("l", 0));
    assert!(again > third, "tokens are never reused");
}

#[test]
fn a_stale_token_changes_nothing() {
    let mut h = Harness::new();
    let token = granted(&h.lock("l", 0));
    h.release(LockKind::Lock, "l", token);
    let digest = h.sm.digest();
    assert!(matches!(
        h.release(LockKind::Lock, "l", token),
        LockResponse::LockLost { .. }
    ));
    assert!(matches!(
        h.run(LockCommand::KeepAlive {
            kind: LockKind::Lock,
            name: "l".into(),
            token
        }),
        LockResponse::LockLost { .. }
    ));
    assert_eq!(h.sm.digest(), digest);
}

#[test]
fn an_expired_lease_starts_the_lock_delay_then_the_next_waiter_gets_it() {
    let mut h = Harness::new();
    let first = granted(&h.lock("l", 0));
    let second = queued(&h.lock("l", 60_000));
    h.at(T0 + TTL - 1).tick(false);
    assert_eq!(
        h.holders(LockKind::Lock, "l"),
        vec![first],
        "not before the TTL"
    );
    h.at(T0 + TTL).tick(false);
    assert!(h.holders(LockKind::Lock, "l").is_empty(), "lost at the TTL");
    assert_eq!(
        h.get(LockKind::Lock, "l").unwrap().unavailable_until_ms,
        T0 + TTL + DELAY
    );
    assert_eq!(h.sm.next_due_ms(), Some(T0 + TTL + DELAY));
    h.at(T0 + TTL + DELAY - 1).tick(false);
    assert!(
        h.holders(LockKind::Lock, "l").is_empty(),
        "nobody during the lock-delay"
    );
    h.at(T0 + TTL + DELAY).tick(false);
    assert_eq!(h.holders(LockKind::Lock, "l"), vec![second]);
}

#[test]
fn a_released_lock_has_no_lock_delay() {
    let mut h = Harness::new();
    let first = granted(&h.lock("l", 0));
    let second = queued(&h.lock("l", 60_000));
    h.release(LockKind::Lock, "l", first);
    assert_eq!(h.holders(LockKind::Lock, "l"), vec![second]);
    assert_eq!(h.get(LockKind::Lock, "l").unwrap().unavailable_until_ms, 0);
}

#[test]
fn keep_alive_extends_the_lease_and_a_wait_ends_at_its_deadline() {
    let mut h = Harness::new();
    let first = granted(&h.lock("l", 0));
    let waiter = queued(&h.lock("l", 2_000));
    h.at(T0 + 2_000).tick(false);
    assert!(
        h.get(LockKind::Lock, "l").unwrap().waiters.is_empty(),
        "the wait ended"
    );
    h.at(T0 + 5_000);
    let kept = h.run(LockCommand::KeepAlive {
        kind: LockKind::Lock,
        name: "l".into(),
        token: first,
    });
    assert_eq!(
        kept,
        LockResponse::KeptAlive {
            expires_at_ms: T0 + 5_000 + TTL
        }
    );
    h.at(T0 + TTL).tick(false);
    assert_eq!(
        h.holders(LockKind::Lock, "l"),
        vec![first],
        "kept alive past the first TTL"
    );
    assert!(matches!(
        h.release(LockKind::Lock, "l", waiter),
        LockResponse::LockLost { .. }
    ));
}

#[test]
fn a_session_end_loses_its_grants_and_its_places_in_queues() {
    let mut h = Harness::new();
    let s1 = h.register("a1");
    let s2 = h.register("a2");
    let held = granted(&h.acquire(LockKind::Lock, "l", session(s1), 1, 1, 0));
    granted(&h.acquire(LockKind::Lock, "m", lease("x"), 1, 1, 0));
    queued(&h.acquire(LockKind::Lock, "m", session(s1), 1, 1, 60_000));
    let next = queued(&h.acquire(LockKind::Lock, "l", session(s2), 1, 1, 60_000));
    let seq = h.sm.last_event_seq();
    h.coord(CoordCommand::CloseSession { session_id: s1 });
    assert!(h.holders(LockKind::Lock, "l").is_empty());
    assert_eq!(h.get(LockKind::Lock, "m").unwrap().waiters.len(), 0);
    let lost: Vec<_> =
        h.sm.events_after(seq)
            .unwrap()
            .into_iter()
            .filter_map(|e| match &e.kind {
                CoordEventKind::Lock(l) if l.kind == LockEventKind::Lost => {
                    Some((l.token, l.session_id))
                }
                _ => None,
            })
            .collect();
    assert_eq!(
        lost,
        vec![(held, s1)],
        "the loss names the session, for its stream"
    );
    h.at(T0 + DELAY).tick(false);
    assert_eq!(h.holders(LockKind::Lock, "l"), vec![next]);
    assert!(matches!(
        h.acquire(LockKind::Lock, "n", session(s1), 1, 1, 0),
        LockResponse::SessionNotLive { .. }
    ));
}

#[test]
fn semaphore_permits_are_counted_and_the_head_of_the_queue_is_not_overtaken() {
    let mut h = Harness::new();
    let s = LockKind::Semaphore;
    let a = granted(&h.acquire(s, "s", lease("a"), 2, 3, 0));
    let big = queued(&h.acquire(s, "s", lease("b"), 2, 3, 60_000));
    let small = queued(&h.acquire(s, "s", lease("c"), 1, 3, 60_000));
    assert_eq!(
        h.holders(s, "s"),
        vec![a],
        "one permit is free but the head wants two"
    );
    assert!(matches!(
        h.acquire(s, "s", lease("d"), 1, 4, 0),
        LockResponse::Mismatch { .. }
    ));
    h.release(s, "s", a);
    assert_eq!(h.holders(s, "s"), vec![big, small]);
    assert!(
        h.get(LockKind::Lock, "s").is_none(),
        "kinds are separate namespaces"
    );
}

#[test]
fn a_fenced_write_applies_only_under_the_current_token() {
    let mut h = Harness::new();
    let first = granted(&h.lock("l", 0));
    assert!(matches!(h.put_fenced("l", first), Response::Put { .. }));
    let second = queued(&h.lock("l", 60_000));
    h.at(T0 + TTL).tick(false);
    let revision = h.sm.revision();
    let digest = h.sm.digest();
    assert!(
        matches!(h.put_fenced("l", first), Response::FenceLost { .. }),
        "lost holder"
    );
    assert_eq!(
        (h.sm.revision(), h.sm.digest()),
        (revision, digest),
        "nothing applied"
    );
    assert!(
        matches!(h.put_fenced("l", second), Response::FenceLost { .. }),
        "still waiting"
    );
    h.at(T0 + TTL + DELAY).tick(false);
    assert!(matches!(h.put_fenced("l", second), Response::Put { .. }));
    assert!(matches!(
        h.put_fenced("other", second),
        Response::FenceLost { .. }
    ));
}

#[test]
fn a_new_leaders_refresh_extends_leases_but_not_past_grants() {
    let mut h = Harness::new();
    let token = granted(&h.lock("l", 0));
    // The old leader's keep-alives could not commit during an election.
    h.at(T0 + TTL - 1).tick(true);
    assert_eq!(
        h.get(LockKind::Lock, "l").unwrap().holders[&token].expires_at_ms,
        T0 + TTL - 1 + TTL
    );
    h.at(T0 + TTL).tick(false);
    assert_eq!(h.holders(LockKind::Lock, "l"), vec![token]);
    h.at(T0 + 2 * TTL - 1).tick(false);
    assert!(h.holders(LockKind::Lock, "l").is_empty());
}

#[test]
fn an_election_leader_proclaims_and_the_next_candidate_takes_over_on_resign() {
    let mut h = Harness::new();
    let e = LockKind::Election;
    let leader = granted(&h.acquire(e, "e", lease("a"), 1, 1, 0));
    let candidate = queued(&h.acquire(e, "e", lease("b"), 1, 1, 60_000));
    let proclaimed = h.run(LockCommand::Proclaim {
        name: "e".into(),
        token: leader,
        value: b"v2".to_vec(),
    });
    assert_eq!(proclaimed, LockResponse::Proclaimed);
    assert_eq!(h.get(e, "e").unwrap().leader().unwrap().value, b"v2");
    let stale = h.run(LockCommand::Proclaim {
        name: "e".into(),
        token: candidate,
        value: b"x".to_vec(),
    });
    assert!(
        matches!(stale, LockResponse::LockLost { .. }),
        "a candidate cannot proclaim"
    );
    h.release(e, "e", leader);
    assert_eq!(h.get(e, "e").unwrap().leader().unwrap().token, candidate);
}

#[test]
fn quotas_are_enforced() {
    let mut h = Harness::new();
    granted(&h.lock("l", 0));
    for _ in 0..LOCK_WAITERS_MAX {
        queued(&h.lock("l", 60_000));
    }
    assert!(matches!(
        h.lock("l", 60_000),
        LockResponse::QuotaExceeded { .. }
    ));
}
