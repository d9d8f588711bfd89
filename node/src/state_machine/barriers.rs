//! Barriers (barriers.proto): a named meeting point released once `quorum` of `parties`
//! participants have entered, or timed out at its deadline with the list of who arrived.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::coordination::CoordEventKind;
use super::kv::Fnv;
use super::primitive::{Ctx, Primitive};
use crate::limits::{BARRIERS_MAX, BARRIER_KEEP_MS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierStatus {
    Waiting,
    Released,
    TimedOut,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub name: String,
    pub parties: u32,
    pub quorum: u32,
    pub status: BarrierStatus,
    /// Who entered, in order of arrival, with when.
    pub arrived: Vec<(String, u64)>,
    pub created_ms: u64,
    pub deadline_ms: u64,
    pub closed_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierCommand {
    Enter {
        name: String,
        participant: String,
        parties: u32,
        /// 1 ..= parties (validated).
        quorum: u32,
        timeout_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierResponse {
    /// `counted`: false when the barrier had already closed.
    Entered {
        counted: bool,
    },
    Mismatch {
        reason: String,
    },
    QuotaExceeded {
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierEventKind {
    Entered,
    Released,
    TimedOut,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierEvent {
    pub kind: BarrierEventKind,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Barriers {
    barriers: BTreeMap<String, Barrier>,
    /// Deadlines of waiting barriers.
    deadlines: BTreeSet<(u64, String)>,
    /// Closed barriers by (closed at, name), forgotten BARRIER_KEEP_MS later.
    closed: BTreeSet<(u64, String)>,
}

impl Barriers {
    pub fn apply(&mut self, ctx: &mut Ctx, command: &BarrierCommand) -> BarrierResponse {
        match command {
            BarrierCommand::Enter {
                name,
                participant,
                parties,
                quorum,
                timeout_ms,
            } => self.enter(ctx, name, participant, (*parties, *quorum), *timeout_ms),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Barrier> {
        self.barriers.get(name)
    }

    /// Barriers named after `after`, at most `limit`, and whether more follow.
    pub fn list(&self, after: &str, limit: usize) -> (Vec<&Barrier>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut matching = self
            .barriers
            .range::<str, _>((Excluded(after), Unbounded))
            .map(|(_, barrier)| barrier);
        let page: Vec<&Barrier> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    fn enter(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        participant: &str,
        (parties, quorum): (u32, u32),
        timeout_ms: u64,
    ) -> BarrierResponse {
        let Some(barrier) = self.barriers.get(name) else {
            if self.barriers.len() >= BARRIERS_MAX {
                return BarrierResponse::QuotaExceeded {
                    reason: format!(
                        "the cluster holds its maximum of {BARRIERS_MAX} barriers (BARRIERS_MAX)"
                    ),
                };
            }
            let deadline_ms = ctx.now_ms.saturating_add(timeout_ms);
            self.barriers.insert(
                name.to_string(),
                Barrier {
                    name: name.to_string(),
                    parties,
                    quorum,
                    status: BarrierStatus::Waiting,
                    arrived: Vec::new(),
                    created_ms: ctx.now_ms,
                    deadline_ms,
                    closed_ms: 0,
                },
            );
            self.deadlines.insert((deadline_ms, name.to_string()));
            return self.arrive(ctx, name, participant);
        };
        if barrier.parties != parties || barrier.quorum != quorum {
            return BarrierResponse::Mismatch {
                reason: format!(
                    "barrier {name:?} waits for {} of {} parties, not {quorum} of {parties}",
                    barrier.quorum, barrier.parties
                ),
            };
        }
        if barrier.status != BarrierStatus::Waiting {
            let counted = barrier.arrived.iter().any(|(p, _)| p == participant);
            return BarrierResponse::Entered { counted };
        }
        self.arrive(ctx, name, participant)
    }

    fn arrive(&mut self, ctx: &mut Ctx, name: &str, participant: &str) -> BarrierResponse {
        let barrier = self.barriers.get_mut(name).expect("exists");
        if barrier.arrived.iter().any(|(p, _)| p == participant) {
            return BarrierResponse::Entered { counted: true };
        }
        barrier.arrived.push((participant.to_string(), ctx.now_ms));
        ctx.event(barrier_event(BarrierEventKind::Entered, name));
        if barrier.arrived.len() as u32 >= barrier.quorum {
            self.close(ctx, name, BarrierStatus::Released);
        }
        BarrierResponse::Entered { counted: true }
    }

    fn close(&mut self, ctx: &mut Ctx, name: &str, status: BarrierStatus) {
        let barrier = self.barriers.get_mut(name).expect("exists");
        barrier.status = status;
        barrier.closed_ms = ctx.now_ms;
        self.deadlines
            .remove(&(barrier.deadline_ms, name.to_string()));
        self.closed.insert((ctx.now_ms, name.to_string()));
        let kind = match status {
            BarrierStatus::Released => BarrierEventKind::Released,
            _ => BarrierEventKind::TimedOut,
        };
        ctx.event(barrier_event(kind, name));
    }
}

impl Primitive for Barriers {
    fn tick(&mut self, ctx: &mut Ctx) {
        while let Some((deadline_ms, name)) = self.deadlines.first().cloned() {
            if deadline_ms > ctx.now_ms {
                break;
            }
            self.close(ctx, &name, BarrierStatus::TimedOut);
        }
        while let Some((closed_ms, name)) = self.closed.first().cloned() {
            if closed_ms.saturating_add(BARRIER_KEEP_MS) > ctx.now_ms {
                break;
            }
            self.closed.pop_first();
            self.barriers.remove(&name);
        }
    }

    fn next_due_ms(&self, _now_ms: u64) -> Option<u64> {
        let deadline = self.deadlines.first().map(|d| d.0);
        let forget = self
            .closed
            .first()
            .map(|c| c.0.saturating_add(BARRIER_KEEP_MS));
        deadline.into_iter().chain(forget).min()
    }

    fn digest(&self) -> u64 {
        let mut hash = Fnv::default();
        for barrier in self.barriers.values() {
            hash.write(&(barrier.name.len() as u64).to_be_bytes());
            hash.write(barrier.name.as_bytes());
            hash.write(&[barrier.status as u8]);
            for n in [
                barrier.arrived.len() as u64,
                barrier.deadline_ms,
                barrier.closed_ms,
            ] {
                hash.write(&n.to_be_bytes());
            }
        }
        hash.finish()
    }
}

fn barrier_event(kind: BarrierEventKind, name: &str) -> CoordEventKind {
    CoordEventKind::Barrier(BarrierEvent {
        kind,
        name: name.to_string(),
    })
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT (the command) or SNAPSHOT_FORMAT (the rest). ----

impl BarrierCommand {
    pub const fn code(&self) -> u16 {
        match self {
            BarrierCommand::Enter { .. } => 0,
        }
    }
}

impl BarrierResponse {
    pub const fn code(&self) -> u16 {
        match self {
            BarrierResponse::Entered { .. } => 0,
            BarrierResponse::Mismatch { .. } => 1,
            BarrierResponse::QuotaExceeded { .. } => 2,
        }
    }
}

impl BarrierStatus {
    pub const fn code(&self) -> u16 {
        match self {
            BarrierStatus::Waiting => 0,
            BarrierStatus::Released => 1,
            BarrierStatus::TimedOut => 2,
        }
    }
}

impl BarrierEventKind {
    pub const fn code(&self) -> u16 {
        match self {
            BarrierEventKind::Entered => 0,
            BarrierEventKind::Released => 1,
            BarrierEventKind::TimedOut => 2,
        }
    }
}

#[cfg(test)]
mod tests;
