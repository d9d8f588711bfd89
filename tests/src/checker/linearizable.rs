//! Linearizability checking of a register history: Wing & Gong's search with Lowe's memoization,
//! in the style of Porcupine (github.com/anishathalye/porcupine).
//!
//! # The algorithm
//!
//! A history is linearizable if its operations can be put in one order that (1) is legal for the
//! sequential [`Model`], and (2) respects real time: an operation that completed before another
//! was invoked comes first (Herlihy & Wing 1990). The search (Wing & Gong 1993) keeps the history
//! as a list of call and return events in real-time order and walks it from the front:
//!
//! - At a call event, it tries to linearize that operation now: if the model accepts the operation
//!   in the current state, the search takes the step, pushes it on a stack, removes the operation's
//!   call and return from the list, and starts again from the front.
//! - At a return event, the operation it returns should have been linearized already, and is not:
//!   the search backtracks by popping the last step, restoring its state and operation, and trying
//!   the next call after it.
//!
//! The list empties exactly when every operation has been linearized: the history is valid. The
//! stack empties while backtracking exactly when no order works: invalid.
//!
//! The plain search is exponential. Lowe (2017) observed that two paths that have linearized the
//! same *set* of operations and reached the same model state have the same future; so the search
//! remembers every (set of linearized operations, state) pair it has reached, as a bitset and a
//! state, and does not take a step into a pair it has seen before: that pair has either been
//! explored without success or is being explored now.
//!
//! Keys are independent registers, so the history is split by key and each key is checked alone
//! (linearizability is compositional, Herlihy & Wing §3.3): the cost is the sum over keys, not the
//! product.
//!
//! # Unknown outcomes
//!
//! `fail` operations provably did not happen: they are removed. An `info` operation (or one never
//! completed) may take effect at any time after its invocation, or never. It is given a return at
//! +infinity and an unconstrained output, [`RegisterOutput::Unknown`]: a write takes effect, a
//! compare-and-swap takes effect if the value matches, and "never" is the search placing it after
//! every other operation, where no read can see it. A read whose outcome is unknown constrains
//! nothing and changes nothing, so it is dropped. Each info write or cas stays concurrent with
//! everything after its invocation, so each one can double the search space.
//!
//! Most of them are pruned first: an `info` write or compare-and-swap whose value nothing observed
//! (no `ok` read returned it, no compare-and-swap that did or may have taken effect expected it) is
//! left out. This is sound both ways. A linearization without it extends to one with it, placed
//! last. A linearization with it becomes one without it: while the register held its value, no
//! read and no successful compare-and-swap can have been linearized (each would have observed the
//! value), a write there has the same effect from either state, and an `info` compare-and-swap
//! there can move to the end, where its effect is invisible.
//! Observed `info` operations stay and make the search exponential in their number: histories
//! recorded under faults with many of them are what the time budget is for.
//!
//! A compare-and-swap rejected because the value did not match is recorded as `fail`, as in Jepsen,
//! so the checker does not use it as evidence of the value (a conservative loss of information).
//!
//! # The budget
//!
//! Every check has a time budget, shared by all keys. When it runs out, or the memo cache reaches
//! [`MEMO_ENTRIES_MAX`], the key being checked and every key not yet checked are [`Verdict::Unknown`],
//! never valid. The combined verdict is invalid if any key is invalid, else unknown if any key is
//! unknown, else valid. The search reads the clock every [`STEPS_PER_CLOCK_READ`] steps (well under
//! a millisecond), but freeing a large memo cache afterwards can add a fraction of a second.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::history::{Function, History, Operation, Outcome, Value};
use super::model::{Model, Register, RegisterInput, RegisterOutput};

/// The most (set, state) pairs the memo cache of one key holds. Each entry costs a bitset of one bit
/// per operation of that key plus the state, so this bounds the checker's memory to a few hundred
/// MB on histories of a few thousand operations per key.
pub const MEMO_ENTRIES_MAX: usize = 2_000_000;

/// How often (in search steps) the search looks at the clock.
pub const STEPS_PER_CLOCK_READ: u64 = 1024;

/// The verdict of a check, for one key or combined over keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations are linearizable.
    Valid,
    /// The operations on `key` are not linearizable.
    Invalid {
        key: String,
        reason: String,
        counterexample: Counterexample,
    },
    /// The check of `key` did not finish; this says nothing either way.
    Unknown { key: String, reason: String },
}

/// Why the operations on one key are not linearizable: the deepest point the search reached.
///
/// The search found a linearization of `prefix`, ending in `state`; then `blocked` returned, but
/// no way to continue from `prefix` (taking any of the `pending` operations next, in any order)
/// could linearize it before its return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<Operation>,
    /// The register's value after `prefix`.
    pub state: Option<u64>,
    /// The operation whose return came before any linearization could include it.
    pub blocked: Operation,
    /// Every operation invoked before `blocked` returned and not in `prefix`, `blocked` included,
    /// in invocation order.
    pub pending: Vec<Operation>,
}

/// The result of checking a history: the combined verdict and the verdict of every key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    pub keys: BTreeMap<String, Verdict>,
    /// Operations searched: all but `fail` operations, `info` reads and pruned `info` operations.
    pub operations_checked: usize,
    /// `info` writes and compare-and-swaps left out because nothing observed their value.
    pub info_operations_pruned: usize,
    pub elapsed: Duration,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.verdict == Verdict::Valid
    }
}

/// Checks a history of the register workload (read, write, cas on independent keys) for
/// linearizability within `budget`. Errors only if the history is malformed (see
/// [`History::pair`]).
pub fn check(history: &History, budget: Duration) -> anyhow::Result<Report> {
    Ok(check_operations(&history.pair()?, budget))
}

/// Like [`check`], on operations already paired by [`History::pair`] (which checks the shape of
/// their values; a read with a pair value here is a bug, and panics).
pub fn check_operations(operations: &[Operation], budget: Duration) -> Report {
    let started = Instant::now();
    let deadline = started.checked_add(budget);
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in operations {
        by_key.entry(&operation.key).or_default().push(operation);
    }

    let mut keys = BTreeMap::new();
    let mut operations_checked = 0;
    let mut info_operations_pruned = 0;
    for (key, operations) in by_key {
        let observed = observed_values(&operations);
        let mut kept: Vec<&Operation> = Vec::with_capacity(operations.len());
        let mut calls: Vec<Call<RegisterInput, RegisterOutput>> =
            Vec::with_capacity(operations.len());
        for operation in operations {
            if let Some(call) = register_call(operation) {
                if is_unobserved_info(&call, &observed) {
                    info_operations_pruned += 1;
                    continue;
                }
                kept.push(operation);
                calls.push(call);
            }
        }
        operations_checked += kept.len();
        let verdict = match check_calls(&Register, &calls, deadline) {
            Search::Linearizable => Verdict::Valid,
            Search::Unknown(reason) => Verdict::Unknown {
                key: key.to_string(),
                reason,
            },
            Search::NotLinearizable(failure) => {
                let counterexample = Counterexample {
                    prefix: failure.prefix.iter().map(|&i| kept[i].clone()).collect(),
                    state: failure.state,
                    blocked: kept[failure.blocked].clone(),
                    pending: failure.pending.iter().map(|&i| kept[i].clone()).collect(),
                };
                Verdict::Invalid {
                    key: key.to_string(),
                    reason: describe_failure(&counterexample, kept.len()),
                    counterexample,
                }
            }
        };
        keys.insert(key.to_string(), verdict);
    }

    let verdict = combine(&keys);
    Report {
        verdict,
        keys,
        operations_checked,
        info_operations_pruned,
        elapsed: started.elapsed(),
    }
}

/// Any invalid key makes the history invalid; else any unknown key makes it unknown.
fn combine(keys: &BTreeMap<String, Verdict>) -> Verdict {
    let first = |invalid: bool| {
        keys.values().find(|verdict| match verdict {
            Verdict::Invalid { .. } => invalid,
            Verdict::Unknown { .. } => !invalid,
            Verdict::Valid => false,
        })
    };
    first(true)
        .or_else(|| first(false))
        .cloned()
        .unwrap_or(Verdict::Valid)
}

/// One operation as the search sees it: what it asked, what it returned, and when. `invoke` and
/// `complete` are positions on one real-time axis (history indices); `complete: None` is +infinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call<I, O> {
    pub input: I,
    pub output: O,
    pub invoke: u64,
    pub complete: Option<u64>,
}

/// The outcome of [`check_calls`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Search<S> {
    Linearizable,
    NotLinearizable(Failure<S>),
    /// The deadline passed or the memo cache filled up; the reason says which.
    Unknown(String),
}

/// The deepest point of a failed search, as indices into the calls searched. See
/// [`Counterexample`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure<S> {
    pub prefix: Vec<usize>,
    pub state: S,
    pub blocked: usize,
    pub pending: Vec<usize>,
}

/// Searches for a linearization of `calls` under `model`, until `deadline` (`None`: no deadline).
///
/// Events at the same position are ordered calls first, so such operations count as concurrent.
pub fn check_calls<M: Model>(
    model: &M,
    calls: &[Call<M::Input, M::Output>],
    deadline: Option<Instant>,
) -> Search<M::State> {
    let out_of_time = || deadline.is_some_and(|deadline| Instant::now() >= deadline);
    if calls.is_empty() {
        return Search::Linearizable;
    }
    if out_of_time() {
        return Search::Unknown(budget_exhausted(0, calls.len()));
    }

    let mut events = EventList::new(calls);
    let mut linearized = Bitset::new(calls.len());
    let mut memo: HashSet<(Bitset, M::State)> = HashSet::new();
    // The linearization so far: each step's call event and the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut deepest: Option<Failure<M::State>> = None;
    let mut steps_until_clock_read = STEPS_PER_CLOCK_READ;

    let mut event = events.first();
    while !events.is_empty() {
        steps_until_clock_read -= 1;
        if steps_until_clock_read == 0 {
            if out_of_time() {
                return Search::Unknown(budget_exhausted(stack.len(), calls.len()));
            }
            steps_until_clock_read = STEPS_PER_CLOCK_READ;
        }
        let id = events.call_id(event);
        if events.is_call(event) {
            let call = &calls[id];
            if let Some(next_state) = model.step(&state, &call.input, &call.output) {
                linearized.set(id);
                if memo.insert((linearized.clone(), next_state.clone())) {
                    if memo.len() > MEMO_ENTRIES_MAX {
                        return Search::Unknown(format!(
                            "memo cache full ({MEMO_ENTRIES_MAX} entries) after linearizing {} of \
                             {} operations",
                            stack.len(),
                            calls.len()
                        ));
                    }
                    stack.push((event, std::mem::replace(&mut state, next_state)));
                    events.lift(event);
                    event = events.first();
                    continue;
                }
                linearized.clear(id);
            }
            event = events.next(event);
        } else {
            // `id` returns here unlinearized: the prefix on the stack cannot be extended past this
            // point, so undo its last step and try the next candidate instead.
            if deepest
                .as_ref()
                .is_none_or(|failure| stack.len() > failure.prefix.len())
            {
                deepest = Some(Failure {
                    prefix: stack
                        .iter()
                        .map(|&(call, _)| events.call_id(call))
                        .collect(),
                    state: state.clone(),
                    blocked: id,
                    pending: events.calls_before(event),
                });
            }
            let Some((call_event, previous_state)) = stack.pop() else {
                return Search::NotLinearizable(deepest.expect("recorded just above"));
            };
            state = previous_state;
            linearized.clear(events.call_id(call_event));
            events.unlift(call_event);
            event = events.next(call_event);
        }
    }
    Search::Linearizable
}

fn budget_exhausted(linearized: usize, total: usize) -> String {
    format!("time budget exhausted after linearizing {linearized} of {total} operations")
}

/// The register call for an operation, or `None` if it constrains nothing: a `fail` did not
/// happen, and a read with an unknown result neither changes nor reveals the value.
fn register_call(operation: &Operation) -> Option<Call<RegisterInput, RegisterOutput>> {
    let input = match (operation.f, operation.input) {
        (Function::Read, _) => RegisterInput::Read,
        (Function::Write, Value::Int(value)) => RegisterInput::Write(value),
        (Function::Cas, Value::Pair([expected, new])) => RegisterInput::Cas { expected, new },
        (f, value) => panic!("{f:?} with value {value:?}: History::pair checks the shapes"),
    };
    let output = match (operation.outcome, input) {
        (Outcome::Fail, _) | (Outcome::Info, RegisterInput::Read) => return None,
        (Outcome::Info, _) => RegisterOutput::Unknown,
        (Outcome::Ok(Value::Nil), RegisterInput::Read) => RegisterOutput::Read(None),
        (Outcome::Ok(Value::Int(value)), RegisterInput::Read) => RegisterOutput::Read(Some(value)),
        (Outcome::Ok(value), RegisterInput::Read) => {
            panic!("read returned {value:?}: History::pair checks the shapes")
        }
        (Outcome::Ok(_), _) => RegisterOutput::Applied,
    };
    Some(Call {
        input,
        output,
        invoke: operation.invoke_index,
        complete: operation.complete_index,
    })
}

/// The values some operation of one key saw: returned by an `ok` read, or expected by a
/// compare-and-swap that did or may have taken effect.
fn observed_values(operations: &[&Operation]) -> HashSet<u64> {
    operations
        .iter()
        .filter_map(
            |operation| match (operation.f, operation.input, operation.outcome) {
                (Function::Read, _, Outcome::Ok(Value::Int(value))) => Some(value),
                (Function::Cas, Value::Pair([expected, _]), Outcome::Ok(_) | Outcome::Info) => {
                    Some(expected)
                }
                _ => None,
            },
        )
        .collect()
}

/// Whether `call` is an `info` write or compare-and-swap whose value no operation observed, so
/// that "it never took effect" explains the history whenever anything does (see the module docs).
fn is_unobserved_info(call: &Call<RegisterInput, RegisterOutput>, observed: &HashSet<u64>) -> bool {
    match (call.input, call.output) {
        (
            RegisterInput::Write(value) | RegisterInput::Cas { new: value, .. },
            RegisterOutput::Unknown,
        ) => !observed.contains(&value),
        _ => false,
    }
}

fn describe_failure(counterexample: &Counterexample, total: usize) -> String {
    format!(
        "{} cannot be linearized: the longest linearizable prefix found has {} of {} operations \
         and leaves the register at {}; from there no order of the {} operations pending before \
         it returned works",
        describe(&counterexample.blocked),
        counterexample.prefix.len(),
        total,
        describe_value(counterexample.state),
        counterexample.pending.len(),
    )
}

/// One operation in a line: `process 3 read -> 5 [12, 17]`, `process 1 write 4 [3, info]`.
pub fn describe(operation: &Operation) -> String {
    let what = match (operation.f, operation.input, operation.outcome) {
        (Function::Read, _, Outcome::Ok(Value::Int(value))) => format!("read -> {value}"),
        (Function::Read, _, Outcome::Ok(_)) => "read -> nil".to_string(),
        (Function::Read, _, _) => "read".to_string(),
        (Function::Write, Value::Int(value), _) => format!("write {value}"),
        (Function::Cas, Value::Pair([expected, new]), _) => format!("cas {expected} -> {new}"),
        (f, value, _) => format!("{f:?} {value:?}"),
    };
    let completion = match (operation.outcome, operation.complete_index) {
        (Outcome::Fail, Some(index)) => format!("{index} fail"),
        (_, Some(index)) => index.to_string(),
        (_, None) => "info".to_string(),
    };
    format!(
        "process {} {what} [{}, {completion}]",
        operation.process, operation.invoke_index
    )
}

fn describe_value(value: Option<u64>) -> String {
    value.map_or("nil".to_string(), |value| value.to_string())
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid => write!(f, "valid"),
            Verdict::Unknown { key, reason } => write!(f, "unknown on key {key:?}: {reason}"),
            Verdict::Invalid {
                key,
                reason,
                counterexample,
            } => write!(f, "invalid on key {key:?}: {reason}\n{counterexample}"),
        }
    }
}

impl fmt::Display for Counterexample {
    /// The end of the prefix and every pending operation, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PREFIX_LINES_MAX: usize = 10;
        let skipped = self.prefix.len().saturating_sub(PREFIX_LINES_MAX);
        writeln!(f, "  linearized ({} operations):", self.prefix.len())?;
        if skipped > 0 {
            writeln!(f, "    ... {skipped} earlier")?;
        }
        for operation in &self.prefix[skipped..] {
            writeln!(f, "    {}", describe(operation))?;
        }
        writeln!(f, "  register: {}", describe_value(self.state))?;
        writeln!(f, "  pending:")?;
        for operation in &self.pending {
            let marker = if *operation == self.blocked {
                "  <- returned unlinearized"
            } else {
                ""
            };
            writeln!(f, "    {}{marker}", describe(operation))?;
        }
        Ok(())
    }
}

/// The set of linearized operations: one bit per call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// The doubly linked list of call and return events in real-time order. Node 0 is the head
/// sentinel; call `i` has its call event at node `2i + 1` and its return at `2i + 2`. Lifting a
/// call unlinks both of its events; unlifting relinks them, in the reverse order of lifting.
struct EventList {
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl EventList {
    fn new<I, O>(calls: &[Call<I, O>]) -> EventList {
        // (position, returns after calls at the same position, node); +infinity sorts last.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * calls.len());
        for (id, call) in calls.iter().enumerate() {
            let complete = call.complete.unwrap_or(u64::MAX);
            assert!(
                complete >= call.invoke,
                "call {id} completes at {complete} before its invocation at {}",
                call.invoke
            );
            order.push((call.invoke, false, 2 * id + 1));
            order.push((complete, true, 2 * id + 2));
        }
        order.sort_unstable();
        let nodes = 2 * calls.len() + 1;
        let mut list = EventList {
            prev: vec![NIL; nodes],
            next: vec![NIL; nodes],
        };
        let mut last = HEAD;
        for &(_, _, node) in &order {
            list.next[last] = node;
            list.prev[node] = last;
            last = node;
        }
        list
    }

    fn is_empty(&self) -> bool {
        self.next[HEAD] == NIL
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    fn is_call(&self, node: usize) -> bool {
        node % 2 == 1
    }

    fn call_id(&self, node: usize) -> usize {
        (node - 1) / 2
    }

    /// Unlinks a call event and its return.
    fn lift(&mut self, call: usize) {
        let ret = call + 1;
        self.unlink(call);
        self.unlink(ret);
    }

    /// Relinks what [`EventList::lift`] unlinked; only valid for the most recently lifted call.
    fn unlift(&mut self, call: usize) {
        let ret = call + 1;
        self.relink(ret);
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// The ids of the calls whose call event is still listed before `node`.
    fn calls_before(&self, node: usize) -> Vec<usize> {
        let mut ids = Vec::new();
        let mut cursor = self.first();
        while cursor != node && cursor != NIL {
            if self.is_call(cursor) {
                ids.push(self.call_id(cursor));
            }
            cursor = self.next(cursor);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;
    use crate::checker::history::{Op, OpKind};

    const BUDGET: Duration = Duration::from_secs(5);

    /// Builds a history event by event; completions name only the process.
    struct Script {
        history: History,
        outstanding: HashMap<u64, Op>,
        key: String,
    }

    impl Script {
        fn new() -> Script {
            Script {
                history: History::new(),
                outstanding: HashMap::new(),
                key: "k".to_string(),
            }
        }

        /// Later invocations are on `key` (the default is "k").
        fn on(mut self, key: &str) -> Script {
            self.key = key.to_string();
            self
        }

        fn read(self, process: u64) -> Script {
            let op = Op::invoke_read(process, self.key.clone());
            self.invoke(op)
        }

        fn write(self, process: u64, value: u64) -> Script {
            let op = Op::invoke_write(process, self.key.clone(), value);
            self.invoke(op)
        }

        fn cas(self, process: u64, expected: u64, new: u64) -> Script {
            let op = Op::invoke_cas(process, self.key.clone(), expected, new);
            self.invoke(op)
        }

        fn ok(self, process: u64) -> Script {
            self.complete(process, OpKind::Ok, None)
        }

        /// A read by `process` returns `value`.
        fn returns(self, process: u64, value: Option<u64>) -> Script {
            self.complete(process, OpKind::Ok, Some(value))
        }

        fn fail(self, process: u64) -> Script {
            self.complete(process, OpKind::Fail, None)
        }

        fn info(self, process: u64) -> Script {
            self.complete(process, OpKind::Info, None)
        }

        fn invoke(mut self, op: Op) -> Script {
            self.outstanding.insert(op.process, op.clone());
            self.push(op)
        }

        fn complete(mut self, process: u64, kind: OpKind, read: Option<Option<u64>>) -> Script {
            let invocation = self
                .outstanding
                .remove(&process)
                .expect("the script completes only what it invoked");
            let mut op = invocation.complete(kind);
            if let Some(value) = read {
                op = op.with_value(value);
            }
            self.push(op)
        }

        fn push(mut self, op: Op) -> Script {
            let time_ns = self.history.len() as u64 * 1_000;
            self.history.push(op, time_ns);
            self
        }
    }

    #[derive(Debug, PartialEq)]
    enum Expect {
        Valid,
        /// Invalid on this key.
        Invalid(&'static str),
    }

    fn verdict_kind(report: &Report) -> Expect {
        match &report.verdict {
            Verdict::Valid => Expect::Valid,
            Verdict::Invalid { key, .. } => match key.as_str() {
                "k" => Expect::Invalid("k"),
                "a" => Expect::Invalid("a"),
                "b" => Expect::Invalid("b"),
                other => panic!("invalid on unexpected key {other:?}"),
            },
            Verdict::Unknown { .. } => panic!("unknown within {BUDGET:?}: {}", report.verdict),
        }
    }

    #[test]
    fn hand_made_histories() {
        use Expect::{Invalid, Valid};
        // Events happen in the order written, one line per invocation with its completion when
        // nothing happens in between; `returns` completes a read with the value it read.
        #[rustfmt::skip]
        let cases: Vec<(&str, Script, Expect)> = vec![
            ("empty", Script::new(), Valid),
            (
                "sequential read, write, read, cas, read",
                Script::new()
                    .read(1).returns(1, None)
                    .write(1, 1).ok(1)
                    .read(2).returns(2, Some(1))
                    .cas(2, 1, 2).ok(2)
                    .read(1).returns(1, Some(2)),
                Valid,
            ),
            (
                "a read overlapping a write may see the old value",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(1, 2)
                    .read(2).returns(2, Some(1))
                    .ok(1),
                Valid,
            ),
            (
                "a read overlapping a write may see the new value",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(1, 2)
                    .read(2).returns(2, Some(2))
                    .ok(1),
                Valid,
            ),
            (
                "reads during a write may see old then new, but not new then old",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(1, 2)
                    .read(2).returns(2, Some(2))
                    .read(3).returns(3, Some(1))
                    .ok(1),
                Invalid("k"),
            ),
            (
                "a stale read after a completed write",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(1, 2).ok(1)
                    .read(2).returns(2, Some(1)),
                Invalid("k"),
            ),
            (
                "a read of a value never written",
                Script::new()
                    .write(1, 1).ok(1)
                    .read(2).returns(2, Some(7)),
                Invalid("k"),
            ),
            (
                "a read of nil after a completed write",
                Script::new()
                    .write(1, 1).ok(1)
                    .read(2).returns(2, None),
                Invalid("k"),
            ),
            (
                "a lost acknowledged write: a later read sees the older value",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(2, 2).ok(2)
                    .read(3).returns(3, Some(2))
                    .write(1, 3).ok(1)
                    .read(2).returns(2, Some(2)),
                Invalid("k"),
            ),
            (
                "an info write that a later read sees took effect",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(2, 2).info(2)
                    .read(3).returns(3, Some(1))
                    .read(3).returns(3, Some(2)),
                Valid,
            ),
            (
                "an info write may take effect long after its process gave up",
                Script::new()
                    .write(2, 2).info(2)
                    .write(1, 1).ok(1)
                    .read(3).returns(3, Some(1))
                    .read(3).returns(3, Some(2))
                    .read(3).returns(3, Some(2)),
                Valid,
            ),
            (
                "an info write that never appears",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(2, 2).info(2)
                    .read(3).returns(3, Some(1))
                    .read(3).returns(3, Some(1)),
                Valid,
            ),
            (
                "an info write takes effect once: it cannot reappear after being overwritten",
                Script::new()
                    .write(2, 2).info(2)
                    .read(3).returns(3, Some(2))
                    .write(1, 1).ok(1)
                    .read(3).returns(3, Some(1))
                    .read(3).returns(3, Some(2)),
                Invalid("k"),
            ),
            (
                "an info write cannot be seen before its invocation",
                Script::new()
                    .read(3).returns(3, Some(2))
                    .write(2, 2).info(2),
                Invalid("k"),
            ),
            (
                "an invocation never completed is an info",
                Script::new()
                    .write(2, 2)
                    .read(3).returns(3, Some(2)),
                Valid,
            ),
            (
                "an info read constrains nothing",
                Script::new()
                    .write(1, 1).ok(1)
                    .read(2).info(2),
                Valid,
            ),
            (
                "a successful cas needs the expected value",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(1, 2, 3).ok(1),
                Invalid("k"),
            ),
            (
                "a successful cas on an absent key",
                Script::new()
                    .cas(1, 0, 3).ok(1),
                Invalid("k"),
            ),
            (
                "a cas takes effect: later reads see its new value",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(1, 1, 3).ok(1)
                    .read(2).returns(2, Some(1)),
                Invalid("k"),
            ),
            (
                "concurrent cas ops chain in some order",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(1, 2, 3)
                    .cas(2, 1, 2)
                    .ok(1)
                    .ok(2)
                    .read(3).returns(3, Some(3)),
                Valid,
            ),
            (
                "two cas ops from the same value cannot both succeed",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(1, 1, 2)
                    .cas(2, 1, 3)
                    .ok(1)
                    .ok(2),
                Invalid("k"),
            ),
            (
                "a failed cas did not happen, whatever the value was",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(2, 1, 2).fail(2)
                    .read(3).returns(3, Some(1)),
                Valid,
            ),
            (
                "an info cas may have taken effect",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(2, 1, 2).info(2)
                    .read(3).returns(3, Some(2)),
                Valid,
            ),
            (
                "an info cas whose expected value never held cannot take effect",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(2, 5, 2).info(2)
                    .read(3).returns(3, Some(2)),
                Invalid("k"),
            ),
            (
                "a failed write whose effect is observed",
                Script::new()
                    .write(1, 1).ok(1)
                    .write(2, 2).fail(2)
                    .read(3).returns(3, Some(2)),
                Invalid("k"),
            ),
            (
                "a failed cas whose effect is observed",
                Script::new()
                    .write(1, 1).ok(1)
                    .cas(2, 1, 2).fail(2)
                    .read(3).returns(3, Some(2)),
                Invalid("k"),
            ),
            (
                "independent keys, both valid",
                Script::new()
                    .on("a").write(1, 1)
                    .on("b").write(2, 1)
                    .ok(1)
                    .ok(2)
                    .on("a").read(3).returns(3, Some(1))
                    .on("b").read(3).returns(3, Some(1)),
                Valid,
            ),
            (
                "two keys, only b is bad",
                Script::new()
                    .on("a").write(1, 1).ok(1)
                    .on("b").write(1, 2).ok(1)
                    .on("a").read(2).returns(2, Some(1))
                    .on("b").read(2).returns(2, Some(1)),
                Invalid("b"),
            ),
        ];
        for (name, script, expected) in cases {
            let report = check(&script.history, BUDGET).expect(name);
            assert_eq!(
                verdict_kind(&report),
                expected,
                "{name}: {}",
                report.verdict
            );
        }
    }

    #[test]
    fn the_counterexample_names_the_blocked_read_and_the_longest_prefix() {
        let script = Script::new()
            .write(1, 1)
            .ok(1)
            .write(1, 2)
            .ok(1)
            .read(2)
            .returns(2, Some(1));
        let report = check(&script.history, BUDGET).expect("well formed");
        let Verdict::Invalid {
            key,
            reason,
            counterexample,
        } = &report.verdict
        else {
            panic!("expected invalid, got {}", report.verdict);
        };
        assert_eq!(key, "k");
        assert_eq!(counterexample.blocked.f, Function::Read);
        assert_eq!(counterexample.blocked.outcome, Outcome::Ok(Value::Int(1)));
        let prefix: Vec<Value> = counterexample.prefix.iter().map(|o| o.input).collect();
        assert_eq!(prefix, vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(counterexample.state, Some(2));
        assert_eq!(counterexample.pending, vec![counterexample.blocked.clone()]);
        assert!(reason.contains("process 2 read -> 1 [4, 5]"), "{reason}");
        assert!(reason.contains("2 of 3 operations"), "{reason}");
        let shown = report.verdict.to_string();
        assert!(shown.contains("<- returned unlinearized"), "{shown}");
    }

    #[test]
    fn info_writes_nobody_observed_are_pruned() {
        let unobserved = Script::new()
            .write(1, 1)
            .ok(1)
            .write(2, 2)
            .info(2)
            .cas(3, 1, 3)
            .info(3)
            .read(4)
            .returns(4, Some(1));
        let report = check(&unobserved.history, BUDGET).expect("well formed");
        assert_eq!(
            (report.info_operations_pruned, report.operations_checked),
            (2, 2)
        );
        assert!(report.is_valid(), "{}", report.verdict);

        let observed = Script::new()
            .write(1, 1)
            .ok(1)
            .write(2, 2)
            .info(2)
            .cas(3, 2, 3)
            .info(3)
            .read(4)
            .returns(4, Some(3));
        let report = check(&observed.history, BUDGET).expect("well formed");
        assert_eq!(
            (report.info_operations_pruned, report.operations_checked),
            (0, 4)
        );
        assert!(report.is_valid(), "{}", report.verdict);
    }

    #[test]
    fn malformed_history_is_an_error_not_a_verdict() {
        let mut history = History::new();
        history.push(Op::invoke_read(1, "k").complete(OpKind::Ok), 0);
        assert!(check(&history, BUDGET).is_err());
    }

    #[test]
    fn a_zero_budget_is_unknown_never_valid() {
        let history = simulate(1, &SimulationConfig::default());
        let report = check(&history, Duration::ZERO).expect("well formed");
        match &report.verdict {
            Verdict::Unknown { key, reason } => {
                assert_eq!(key, "k");
                assert!(reason.contains("time budget exhausted"), "{reason}");
            }
            other => panic!("expected unknown, got {other}"),
        }
        assert!(!report.is_valid());
    }

    #[test]
    fn invalid_beats_unknown_and_unknown_beats_valid() {
        let invalid = Verdict::Invalid {
            key: "b".to_string(),
            reason: String::new(),
            counterexample: Counterexample {
                prefix: Vec::new(),
                state: None,
                blocked: Script::new()
                    .read(1)
                    .returns(1, Some(1))
                    .history
                    .pair()
                    .unwrap()[0]
                    .clone(),
                pending: Vec::new(),
            },
        };
        let unknown = Verdict::Unknown {
            key: "a".to_string(),
            reason: String::new(),
        };
        let cases = vec![
            (vec![Verdict::Valid, Verdict::Valid], Verdict::Valid),
            (vec![unknown.clone(), Verdict::Valid], unknown.clone()),
            (vec![unknown.clone(), invalid.clone()], invalid.clone()),
            (vec![invalid.clone(), Verdict::Valid], invalid.clone()),
        ];
        for (verdicts, expected) in cases {
            let keys: BTreeMap<String, Verdict> = verdicts
                .into_iter()
                .enumerate()
                .map(|(i, verdict)| (i.to_string(), verdict))
                .collect();
            assert_eq!(combine(&keys), expected);
        }
    }

    /// Linearizability straight from its definition, by trying every order: some operation may go
    /// next if no other remaining one completed before it was invoked. `fail` operations are left
    /// out; `info` ones never complete, and their outcome is free. Exponential: tiny histories only.
    fn brute_force(operations: &[Operation]) -> bool {
        fn search(remaining: &mut Vec<&Operation>, register: Option<u64>) -> bool {
            if remaining.is_empty() {
                return true;
            }
            let first_completion = remaining
                .iter()
                .filter_map(|o| o.complete_index)
                .min()
                .unwrap_or(u64::MAX);
            for position in 0..remaining.len() {
                let operation = remaining[position];
                if operation.invoke_index > first_completion {
                    continue;
                }
                let known = operation.outcome != Outcome::Info;
                let next = match (operation.f, operation.input, operation.outcome) {
                    (Function::Read, _, Outcome::Ok(value)) => {
                        (value == Value::from(register)).then_some(register)
                    }
                    (Function::Read, _, _) => Some(register),
                    (Function::Write, Value::Int(value), _) => Some(Some(value)),
                    (Function::Cas, Value::Pair([expected, new]), _) => {
                        if register == Some(expected) {
                            Some(Some(new))
                        } else if known {
                            None
                        } else {
                            Some(register)
                        }
                    }
                    other => unreachable!("{other:?}"),
                };
                let Some(next) = next else { continue };
                let operation = remaining.remove(position);
                let found = search(remaining, next);
                remaining.insert(position, operation);
                if found {
                    return true;
                }
            }
            false
        }
        let mut remaining: Vec<&Operation> = operations
            .iter()
            .filter(|o| o.outcome != Outcome::Fail)
            .collect();
        search(&mut remaining, None)
    }

    /// A random tiny history on one key, with small values so that it is often not linearizable.
    fn random_tiny_history(rng: &mut StdRng) -> History {
        let processes = 3;
        let operations = rng.gen_range(1..=7);
        let mut script = Script::new();
        let mut outstanding = [false; 3];
        let mut invoked = 0;
        while invoked < operations || outstanding.iter().any(|o| *o) {
            let process = rng.gen_range(0..processes);
            if !outstanding[process] {
                if invoked == operations {
                    continue;
                }
                invoked += 1;
                outstanding[process] = true;
                let process = process as u64;
                script = match rng.gen_range(0..3) {
                    0 => script.read(process),
                    1 => script.write(process, rng.gen_range(1..=3)),
                    _ => script.cas(process, rng.gen_range(1..=3), rng.gen_range(1..=3)),
                };
                continue;
            }
            outstanding[process] = false;
            let process_id = process as u64;
            let is_read = script.outstanding[&process_id].f == Function::Read;
            script = match rng.gen_range(0..10) {
                0 => script.fail(process_id),
                1 => script.info(process_id),
                // Left outstanding for good: the history ends without its completion.
                2 if invoked == operations => {
                    script.outstanding.remove(&process_id);
                    script
                }
                _ if is_read => {
                    let value = [None, Some(1), Some(2), Some(3)][rng.gen_range(0..4)];
                    script.returns(process_id, value)
                }
                _ => script.ok(process_id),
            };
        }
        script.history
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_random_histories() {
        let seed = seed();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut invalid = 0;
        let mut pruned = 0;
        for round in 0..3_000 {
            let history = random_tiny_history(&mut rng);
            let expected = brute_force(&history.pair().expect("well formed"));
            let report = check(&history, BUDGET).expect("well formed");
            assert!(
                !matches!(report.verdict, Verdict::Unknown { .. }),
                "seed {seed} round {round}: {}",
                report.verdict
            );
            if report.is_valid() != expected {
                let mut jsonl = Vec::new();
                history.write_jsonl(&mut jsonl).expect("to memory");
                panic!(
                    "seed {seed} round {round}: brute force says {expected}, the checker {}\n{}",
                    report.verdict,
                    String::from_utf8_lossy(&jsonl)
                );
            }
            invalid += usize::from(!expected);
            pruned += report.info_operations_pruned;
        }
        println!("{invalid} of 3000 tiny histories invalid; {pruned} info operations pruned");
        assert!(
            pruned > 100,
            "the pruning of unobserved info operations is exercised"
        );
        assert!(
            (300..2_700).contains(&invalid),
            "the generator should make many valid and many invalid histories"
        );
    }

    /// A random history of a real (atomic) register: valid by construction.
    struct SimulationConfig {
        processes: usize,
        operations: usize,
        keys: Vec<&'static str>,
        /// Chance that a process gives up on its operation and records `info`.
        info_probability: f64,
    }

    impl Default for SimulationConfig {
        fn default() -> Self {
            SimulationConfig {
                processes: 5,
                operations: 200,
                keys: vec!["k"],
                info_probability: 0.02,
            }
        }
    }

    /// What a simulated operation did when it took effect.
    #[derive(Clone, Copy)]
    enum Effect {
        Read(Option<u64>),
        Applied,
        CasMismatch,
    }

    /// Simulates `config.processes` clients on registers that apply each operation atomically at a
    /// random moment between its invocation and its completion. A client that gives up (`info`)
    /// takes a new process id; its operation takes effect later, or never.
    fn simulate(seed: u64, config: &SimulationConfig) -> History {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut history = History::new();
        let mut time_ns = 0;
        let mut registers: HashMap<&str, Option<u64>> = HashMap::new();
        let mut last_value = 0;
        let mut process_ids: Vec<u64> = (0..config.processes as u64).collect();
        let mut next_process_id = config.processes as u64;
        // Per client: its invocation and, once it took effect, what it did.
        let mut in_flight: Vec<Option<(Op, Option<Effect>)>> = vec![None; config.processes];
        // Operations whose client gave up before they took effect.
        let mut abandoned: Vec<Op> = Vec::new();
        let mut invoked = 0;

        let apply = |registers: &mut HashMap<&str, Option<u64>>, op: &Op| {
            let key = config
                .keys
                .iter()
                .find(|k| **k == op.key)
                .expect("known key");
            let register = registers.entry(key).or_default();
            match (op.f, op.value) {
                (Function::Read, _) => Effect::Read(*register),
                (Function::Write, Value::Int(value)) => {
                    *register = Some(value);
                    Effect::Applied
                }
                (Function::Cas, Value::Pair([expected, new])) if *register == Some(expected) => {
                    *register = Some(new);
                    Effect::Applied
                }
                (Function::Cas, _) => Effect::CasMismatch,
                (f, value) => unreachable!("{f:?} {value:?}"),
            }
        };

        while invoked < config.operations || in_flight.iter().any(Option::is_some) {
            time_ns += rng.gen_range(1..1_000);
            if !abandoned.is_empty() && rng.gen_bool(0.05) {
                let op = abandoned.swap_remove(rng.gen_range(0..abandoned.len()));
                apply(&mut registers, &op);
            }
            let client = rng.gen_range(0..config.processes);
            let process = process_ids[client];
            match in_flight[client].take() {
                None if invoked < config.operations => {
                    invoked += 1;
                    let key = config.keys[rng.gen_range(0..config.keys.len())];
                    let op = match rng.gen_range(0..4) {
                        0 | 1 => Op::invoke_read(process, key),
                        2 => {
                            last_value += 1;
                            Op::invoke_write(process, key, last_value)
                        }
                        _ => {
                            // Mostly the current value, so that most cas ops succeed.
                            let current = registers.get(key).copied().flatten().unwrap_or(0);
                            let expected = if rng.gen_bool(0.7) {
                                current
                            } else {
                                rng.gen_range(0..=last_value)
                            };
                            last_value += 1;
                            Op::invoke_cas(process, key, expected, last_value)
                        }
                    };
                    history.push(op.clone(), time_ns);
                    in_flight[client] = Some((op, None));
                }
                None => {}
                Some((op, effect)) if rng.gen_bool(config.info_probability) => {
                    history.push(op.complete(OpKind::Info), time_ns);
                    if effect.is_none() {
                        abandoned.push(op);
                    }
                    process_ids[client] = next_process_id;
                    next_process_id += 1;
                }
                Some((op, None)) => {
                    let effect = apply(&mut registers, &op);
                    in_flight[client] = Some((op, Some(effect)));
                }
                Some((op, Some(effect))) => {
                    let completion = match effect {
                        Effect::Read(value) => op.complete(OpKind::Ok).with_value(value),
                        Effect::Applied => op.complete(OpKind::Ok),
                        Effect::CasMismatch => op.complete(OpKind::Fail),
                    };
                    history.push(completion, time_ns);
                }
            }
        }
        history
    }

    /// The seed for a randomized test: `CONCLAVE_CHECKER_SEED` to replay one, else random.
    fn seed() -> u64 {
        let seed = std::env::var("CONCLAVE_CHECKER_SEED")
            .ok()
            .map(|seed| seed.parse().expect("CONCLAVE_CHECKER_SEED is a u64"))
            .unwrap_or_else(|| rand::thread_rng().gen());
        println!("seed {seed} (replay with CONCLAVE_CHECKER_SEED={seed})");
        seed
    }

    /// Makes one `ok` read return the value of a write invoked only after the read completed: values
    /// are unique, so no linearization can explain it. Returns the corrupted op's index.
    fn corrupt_one_read(history: &History, rng: &mut StdRng) -> (History, u64) {
        let operations = history.pair().expect("well formed");
        let candidates: Vec<(u64, u64)> = operations
            .iter()
            .filter(|read| read.f == Function::Read && matches!(read.outcome, Outcome::Ok(_)))
            .filter_map(|read| {
                let completed = read.complete_index?;
                let write = operations
                    .iter()
                    .find(|write| write.f == Function::Write && write.invoke_index > completed)?;
                let Value::Int(value) = write.input else {
                    unreachable!("a write has an integer value")
                };
                Some((completed, value))
            })
            .collect();
        assert!(!candidates.is_empty(), "no read is followed by a write");
        let (index, value) = candidates[rng.gen_range(0..candidates.len())];
        let mut ops = history.clone().into_ops();
        ops[index as usize].value = Value::Int(value);
        (History::from_ops(ops).expect("still well formed"), index)
    }

    #[test]
    fn a_random_register_history_is_valid_and_one_corrupted_read_makes_it_invalid() {
        tracing::info!("a real register with 5 concurrent clients: valid within a second");
        let seed = seed();
        let config = SimulationConfig::default();
        let history = simulate(seed, &config);
        let operations = history.pair().expect("well formed");
        let infos = operations
            .iter()
            .filter(|o| o.outcome == Outcome::Info)
            .count();
        let report = check(&history, Duration::from_secs(1)).expect("well formed");
        println!(
            "{} operations ({infos} info): {} in {:?}",
            operations.len(),
            report.verdict,
            report.elapsed
        );
        assert_eq!(operations.len(), config.operations);
        assert_eq!(report.verdict, Verdict::Valid, "seed {seed}");

        tracing::info!("the same history with one read from the future is invalid");
        let mut rng = StdRng::seed_from_u64(seed);
        let (corrupted, index) = corrupt_one_read(&history, &mut rng);
        let report = check(&corrupted, Duration::from_secs(1)).expect("well formed");
        println!(
            "corrupted index {index}: {} in {:?}",
            report.verdict, report.elapsed
        );
        let Verdict::Invalid { counterexample, .. } = &report.verdict else {
            panic!("seed {seed}: expected invalid, got {}", report.verdict);
        };
        assert!(
            counterexample
                .pending
                .iter()
                .any(|o| o.complete_index == Some(index)),
            "seed {seed}: the corrupted read is among the pending operations"
        );
    }

    #[test]
    fn random_histories_on_several_keys_are_valid() {
        let seed = seed();
        let config = SimulationConfig {
            operations: 300,
            keys: vec!["a", "b", "c"],
            ..SimulationConfig::default()
        };
        let history = simulate(seed, &config);
        let report = check(&history, Duration::from_secs(5)).expect("well formed");
        println!(
            "{}: {} in {:?}",
            report.keys.len(),
            report.verdict,
            report.elapsed
        );
        assert_eq!(report.keys.len(), 3, "seed {seed}");
        assert_eq!(report.verdict, Verdict::Valid, "seed {seed}");
    }
}
