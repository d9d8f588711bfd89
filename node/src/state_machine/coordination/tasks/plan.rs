//! The leader's planning pass: which ready task goes to which agent next.

use std::collections::btree_set;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::{ReadyKey, Task};
use crate::state_machine::coordination::{Agent, SessionId, TaskId};

/// Ready tasks scanned per queue per plan at most, so planning cost does not grow with the queue.
pub const SCAN_PER_QUEUE: usize = 256;

/// The leader's planning pass: fair across queues (round-robin over the queues with ready tasks,
/// starting after `last_queue`, one task per queue per round), within a queue in ready order, each
/// task to the least-loaded eligible agent (running / max_concurrent, ties by name), capacity
/// counted within the plan. A task no agent can take now is skipped; at most SCAN_PER_QUEUE ready
/// tasks are looked at per queue, so the cost does not grow with the queue length. What an agent
/// runs is the tasks' count (`leases`).
pub(super) fn plan<'a>(
    ready: &'a BTreeMap<String, BTreeSet<ReadyKey>>,
    tasks: &'a BTreeMap<TaskId, Task>,
    leases: &BTreeMap<SessionId, BTreeSet<TaskId>>,
    agents: impl Iterator<Item = &'a Agent>,
    last_queue: &str,
    now_ms: u64,
    max: usize,
) -> Vec<(TaskId, SessionId)> {
    let mut plan = Vec::new();
    if max == 0 || ready.is_empty() {
        return plan;
    }
    let mut capacity = Capacity::new(agents, leases);
    let after = ready.range::<str, _>((Bound::Excluded(last_queue), Bound::Unbounded));
    let up_to = ready.range::<str, _>((Bound::Unbounded, Bound::Included(last_queue)));
    let mut cursors: Vec<Cursor> = after
        .chain(up_to)
        .map(|(_, keys)| Cursor {
            keys: keys.iter(),
            scanned: 0,
            done: false,
        })
        .collect();
    // Capability sets no agent with a free slot has: slots only fill up within a plan, so
    // such a set stays unplaceable until the plan ends.
    let mut unplaceable: BTreeSet<&BTreeSet<String>> = BTreeSet::new();
    loop {
        let mut placed_any = false;
        for cursor in cursors.iter_mut().filter(|c| !c.done) {
            if plan.len() >= max || capacity.is_full() {
                return plan;
            }
            if let Some(assignment) = cursor.place(tasks, &mut capacity, &mut unplaceable, now_ms) {
                plan.push(assignment);
                placed_any = true;
            }
        }
        if !placed_any {
            return plan;
        }
    }
}

/// An agent that accepts work, and what it runs and can still take within the plan.
struct Candidate<'a> {
    agent: &'a Agent,
    running: usize,
    free: usize,
}

impl Candidate<'_> {
    fn load_key(&self) -> u64 {
        ((self.running as u64) << 32) / u64::from(self.agent.spec.max_concurrent.max(1))
    }
}

/// The agents with a free slot, least loaded first.
struct Capacity<'a> {
    candidates: BTreeMap<&'a str, Candidate<'a>>,
    by_load: BTreeSet<(u64, &'a str)>,
}

impl<'a> Capacity<'a> {
    fn new(
        agents: impl Iterator<Item = &'a Agent>,
        leases: &BTreeMap<SessionId, BTreeSet<TaskId>>,
    ) -> Self {
        let candidates: BTreeMap<&str, Candidate> = agents
            .filter_map(|agent| {
                let running = leases.get(&agent.session_id).map_or(0, BTreeSet::len);
                let candidate = Candidate {
                    agent,
                    running,
                    free: agent.free_slots(running),
                };
                agent
                    .accepts_work(running)
                    .then_some((agent.name.as_str(), candidate))
            })
            .collect();
        let by_load = candidates
            .iter()
            .map(|(name, candidate)| (candidate.load_key(), *name))
            .collect();
        Capacity {
            candidates,
            by_load,
        }
    }

    fn is_full(&self) -> bool {
        self.by_load.is_empty()
    }

    /// Books one more task for the least-loaded agent with a free slot that has `needed`, and
    /// returns its session; None when no such agent is left.
    fn book(&mut self, needed: &BTreeSet<String>) -> Option<SessionId> {
        let key = self
            .by_load
            .iter()
            .find(|(_, name)| self.candidates[name].agent.has_capabilities(needed))
            .copied()?;
        let candidate = self
            .candidates
            .get_mut(key.1)
            .expect("by_load lists candidates");
        self.by_load.remove(&key);
        candidate.running += 1;
        candidate.free -= 1;
        if candidate.free > 0 {
            self.by_load.insert((candidate.load_key(), key.1));
        }
        Some(candidate.agent.session_id)
    }
}

/// Where the plan is in one queue's ready tasks.
struct Cursor<'a> {
    keys: btree_set::Iter<'a, ReadyKey>,
    scanned: usize,
    done: bool,
}

impl<'a> Cursor<'a> {
    /// The queue's next ready task some agent can take now, booked; None (and done) when the
    /// queue, or its scan bound, runs out first.
    fn place(
        &mut self,
        tasks: &'a BTreeMap<TaskId, Task>,
        capacity: &mut Capacity,
        unplaceable: &mut BTreeSet<&'a BTreeSet<String>>,
        now_ms: u64,
    ) -> Option<(TaskId, SessionId)> {
        loop {
            if self.scanned >= SCAN_PER_QUEUE {
                self.done = true;
                return None;
            }
            let Some(&(_, _, task_id)) = self.keys.next() else {
                self.done = true;
                return None;
            };
            self.scanned += 1;
            let Some(task) = tasks.get(&task_id) else {
                continue;
            };
            let needed = &task.spec.capabilities;
            if task.deadline_passed(now_ms) || unplaceable.contains(needed) {
                continue;
            }
            match capacity.book(needed) {
                Some(session_id) => return Some((task_id, session_id)),
                None => {
                    unplaceable.insert(needed);
                }
            }
        }
    }
}
