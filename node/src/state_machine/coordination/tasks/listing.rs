//! Task listings: a filter, checked against the (queue, state) index first and then task by task,
//! and pages of bounded work.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::{Task, TaskState, Tasks};
use crate::state_machine::coordination::TaskId;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// "": any queue.
    pub queue: String,
    /// Empty: any state.
    pub states: Vec<TaskState>,
    /// Every label given must match.
    pub labels: BTreeMap<String, String>,
    /// 0: any.
    pub parent_id: TaskId,
}

impl Tasks {
    /// Tasks with ids after `after_id` that match `filter`, in id order, at most `limit`.
    ///
    /// Queue and state come from an index; labels and parent are checked task by task, at most
    /// TASK_LIST_SCAN_MAX of them per call: when that runs out first, the page ends early (maybe
    /// empty) with `more` set and `next_after_id` at the last task examined.
    pub fn list_tasks(
        &self,
        filter: &TaskFilter,
        after_id: TaskId,
        limit: usize,
    ) -> TaskListing<'_> {
        let mut listing = TaskListing {
            tasks: Vec::new(),
            more: false,
            next_after_id: after_id,
        };
        for (examined, id) in self.candidate_ids(filter, after_id).enumerate() {
            if examined == crate::limits::TASK_LIST_SCAN_MAX {
                listing.more = true;
                return listing;
            }
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            let full = listing.tasks.len() == limit;
            if filter.matches(task) {
                if full {
                    listing.more = true;
                    return listing;
                }
                listing.tasks.push(task);
            }
            if !full {
                listing.next_after_id = id;
            }
        }
        listing
    }

    /// Ids after `after_id`, in id order, of the tasks in the filter's queue and states (any when
    /// not given): from the (queue, state) index when either is given, else every task.
    fn candidate_ids<'a>(
        &'a self,
        filter: &TaskFilter,
        after_id: TaskId,
    ) -> Box<dyn Iterator<Item = TaskId> + 'a> {
        let from = after_id.saturating_add(1);
        if filter.queue.is_empty() && filter.states.is_empty() {
            return Box::new(self.tasks.range(from..).map(|(id, _)| *id));
        }
        let wanted = |state: &TaskState| filter.states.is_empty() || filter.states.contains(state);
        let sets: Vec<&BTreeSet<TaskId>> = if filter.queue.is_empty() {
            self.by_queue_state
                .iter()
                .filter(|((_, state), _)| wanted(state))
                .map(|(_, ids)| ids)
                .collect()
        } else {
            TaskState::ALL
                .iter()
                .filter(|state| wanted(state))
                .filter_map(|state| self.by_queue_state.get(&(filter.queue.clone(), *state)))
                .collect()
        };
        Box::new(MergedIds::new(
            sets.into_iter()
                .map(|ids| Box::new(ids.range(from..).copied()) as Box<dyn Iterator<Item = TaskId>>)
                .collect(),
        ))
    }
}

/// One page of [`Tasks::list_tasks`].
#[derive(Debug)]
pub struct TaskListing<'a> {
    pub tasks: Vec<&'a Task>,
    /// More tasks may match after `next_after_id`.
    pub more: bool,
    /// Where the next page starts: the last task listed, or the last examined when the scan
    /// bound ended the page.
    pub next_after_id: TaskId,
}

impl TaskFilter {
    fn matches(&self, task: &Task) -> bool {
        (self.queue.is_empty() || task.spec.queue == self.queue)
            && (self.states.is_empty() || self.states.contains(&task.state))
            && (self.parent_id == 0 || task.spec.parent_id == self.parent_id)
            && self
                .labels
                .iter()
                .all(|(k, v)| task.spec.labels.get(k) == Some(v))
    }
}

/// Ascending ids merged from ascending, disjoint iterators.
struct MergedIds<'a> {
    sources: Vec<Box<dyn Iterator<Item = TaskId> + 'a>>,
    heads: BinaryHeap<Reverse<(TaskId, usize)>>,
}

impl<'a> MergedIds<'a> {
    fn new(mut sources: Vec<Box<dyn Iterator<Item = TaskId> + 'a>>) -> Self {
        let heads = sources
            .iter_mut()
            .enumerate()
            .filter_map(|(source, ids)| ids.next().map(|id| Reverse((id, source))))
            .collect();
        MergedIds { sources, heads }
    }
}

impl Iterator for MergedIds<'_> {
    type Item = TaskId;

    fn next(&mut self) -> Option<TaskId> {
        let Reverse((id, source)) = self.heads.pop()?;
        if let Some(next) = self.sources[source].next() {
            self.heads.push(Reverse((next, source)));
        }
        Some(id)
    }
}
