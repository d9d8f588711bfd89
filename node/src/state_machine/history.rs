//! The bounded change history that watches replay: one entry per revision, oldest dropped first.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::kv::KeyValue;
use crate::limits::WATCH_HISTORY_BYTES_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One key's change. For a delete, `kv` holds the key, an empty value and the delete's revision
/// as `mod_revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Every event of one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub events: Vec<Event>,
}

impl Change {
    fn bytes(&self) -> u64 {
        self.events
            .iter()
            .map(|e| (e.kv.key.len() + e.kv.value.len() + 48) as u64)
            .sum()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    changes: VecDeque<Change>,
    bytes: u64,
    /// The highest revision no longer in the history (0 when nothing was dropped).
    compacted: u64,
    revisions_max: usize,
}

impl History {
    pub fn new(revisions_max: usize) -> Self {
        History {
            revisions_max: revisions_max.max(1),
            ..History::default()
        }
    }

    /// Changes the bound (a node option, so a snapshot from a peer may carry another one).
    pub fn set_revisions_max(&mut self, revisions_max: usize) {
        self.revisions_max = revisions_max.max(1);
        self.trim();
    }

    pub fn push(&mut self, change: Change) {
        debug_assert!(self
            .changes
            .back()
            .is_none_or(|last| last.revision < change.revision));
        self.bytes += change.bytes();
        self.changes.push_back(change);
        self.trim();
    }

    /// Forgets everything up to `revision`, as after installing a snapshot without history.
    pub fn compact_through(&mut self, revision: u64) {
        while self.changes.front().is_some_and(|c| c.revision <= revision) {
            self.drop_oldest();
        }
        self.compacted = self.compacted.max(revision);
    }

    /// The oldest revision a watch can start from.
    pub fn oldest_available(&self) -> u64 {
        self.compacted + 1
    }

    /// Changes with revision >= `from`, at most `max` of them, or `Err(oldest available)` when
    /// `from` is older than the history.
    pub fn since(&self, from: u64, max: usize) -> Result<Vec<Change>, u64> {
        if from <= self.compacted {
            return Err(self.oldest_available());
        }
        let start = self.changes.partition_point(|c| c.revision < from);
        Ok(self.changes.range(start..).take(max).cloned().collect())
    }

    fn trim(&mut self) {
        while self.changes.len() > self.revisions_max
            || (self.bytes > WATCH_HISTORY_BYTES_MAX && self.changes.len() > 1)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(change) = self.changes.pop_front() {
            self.bytes -= change.bytes();
            self.compacted = change.revision;
        }
    }
}
