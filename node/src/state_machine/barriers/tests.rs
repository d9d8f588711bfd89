//! Table tests of barriers through `StateMachine::apply`.

use super::*;
use crate::state_machine::coordination::{CoordCommand, Retention};
use crate::state_machine::{Command, Request, Response, StateMachine};

const T0: u64 = 1_000_000;

struct Harness {
    sm: StateMachine,
    index: u64,
}

impl Harness {
    fn apply(&mut self, now_ms: u64, command: Command) -> Response {
        self.index += 1;
        self.sm.apply(
            self.index,
            &Request {
                now_ms,
                request_id: None,
                fence: None,
                command,
            },
        )
    }

    fn enter(
        &mut self,
        now_ms: u64,
        name: &str,
        who: &str,
        parties: u32,
        quorum: u32,
    ) -> BarrierResponse {
        let command = BarrierCommand::Enter {
            name: name.into(),
            participant: who.into(),
            parties,
            quorum,
            timeout_ms: 10_000,
        };
        match self.apply(now_ms, Command::Barriers(command)) {
            Response::Barriers { response, .. } => response,
            other => panic!("{other:?}"),
        }
    }

    fn tick(&mut self, now_ms: u64) {
        let tick = CoordCommand::Tick {
            refresh: false,
            retention: Retention::default(),
        };
        self.apply(now_ms, Command::Coordination(tick));
    }

    fn status(&self, name: &str) -> Option<BarrierStatus> {
        self.sm.barriers().get(name).map(|b| b.status)
    }
}

fn harness() -> Harness {
    Harness {
        sm: StateMachine::new(100),
        index: 0,
    }
}

#[test]
fn released_when_the_quorum_has_entered() {
    let mut h = harness();
    let counted = BarrierResponse::Entered { counted: true };
    assert_eq!(h.enter(T0, "b", "p1", 3, 2), counted);
    assert_eq!(
        h.enter(T0, "b", "p1", 3, 2),
        counted,
        "entering again is idempotent"
    );
    assert_eq!(h.status("b"), Some(BarrierStatus::Waiting));
    assert_eq!(h.enter(T0 + 1, "b", "p2", 3, 2), counted);
    assert_eq!(h.status("b"), Some(BarrierStatus::Released));
    assert_eq!(
        h.enter(T0 + 2, "b", "p3", 3, 2),
        BarrierResponse::Entered { counted: false }
    );
    let arrived: Vec<&str> =
        h.sm.barriers()
            .get("b")
            .unwrap()
            .arrived
            .iter()
            .map(|a| a.0.as_str())
            .collect();
    assert_eq!(arrived, ["p1", "p2"]);
}

#[test]
fn times_out_at_the_deadline_with_who_arrived_then_is_forgotten() {
    let mut h = harness();
    h.enter(T0, "b", "p1", 3, 3);
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 10_000));
    h.tick(T0 + 9_999);
    assert_eq!(h.status("b"), Some(BarrierStatus::Waiting));
    h.tick(T0 + 10_000);
    assert_eq!(h.status("b"), Some(BarrierStatus::TimedOut));
    assert_eq!(h.sm.barriers().get("b").unwrap().arrived.len(), 1);
    assert_eq!(h.sm.next_due_ms(), Some(T0 + 10_000 + BARRIER_KEEP_MS));
    h.tick(T0 + 10_000 + BARRIER_KEEP_MS);
    assert_eq!(h.status("b"), None);
}

#[test]
fn a_different_shape_is_refused() {
    let mut h = harness();
    h.enter(T0, "b", "p1", 3, 3);
    assert!(matches!(
        h.enter(T0, "b", "p2", 4, 4),
        BarrierResponse::Mismatch { .. }
    ));
    assert_eq!(h.sm.barriers().get("b").unwrap().arrived.len(), 1);
}
