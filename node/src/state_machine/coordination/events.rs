//! The bounded ring of coordination events that session, task and decision streams follow.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::CoordEvent;
use crate::limits::COORD_EVENTS_MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRing {
    events: VecDeque<CoordEvent>,
    /// The sequence number of the last event appended (0 before any).
    last_seq: u64,
    max: usize,
}

impl Default for EventRing {
    fn default() -> Self {
        EventRing {
            events: VecDeque::new(),
            last_seq: 0,
            max: COORD_EVENTS_MAX,
        }
    }
}

impl EventRing {
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The oldest sequence number still kept (last_seq + 1 when none is).
    pub fn oldest_seq(&self) -> u64 {
        self.events.front().map_or(self.last_seq + 1, |e| e.seq)
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
        self.trim();
    }

    /// Appends an event, numbering it, and drops the oldest beyond the bound.
    pub fn push(&mut self, at_ms: u64, kind: super::CoordEventKind) {
        self.last_seq += 1;
        self.events.push_back(CoordEvent {
            seq: self.last_seq,
            at_ms,
            kind,
        });
        self.trim();
    }

    /// Every event after `seq`, or `Err(oldest kept)` when `seq + 1` is no longer kept.
    pub fn after(&self, seq: u64) -> Result<Vec<&CoordEvent>, u64> {
        let oldest = self.oldest_seq();
        if seq.saturating_add(1) < oldest {
            return Err(oldest);
        }
        let skip = (seq.saturating_add(1) - oldest).min(self.events.len() as u64) as usize;
        Ok(self.events.range(skip..).collect())
    }

    fn trim(&mut self) {
        while self.events.len() > self.max {
            self.events.pop_front();
        }
    }
}
