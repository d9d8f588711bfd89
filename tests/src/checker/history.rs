//! The history of a register workload, in Jepsen's shape: invocations and completions per process.
//!
//! A history is a sequence of [`Op`]s in the order they were recorded. Every operation appears
//! twice: once as an `invoke` when a process starts it, once as a completion when the process
//! learns its outcome. The completion says what is known about the operation:
//!
//! - `ok`: it happened, exactly once, somewhere between its invocation and its completion, and
//!   `value` is what it returned (for a read, the value read).
//! - `fail`: it provably did not happen (the cluster rejected it, e.g. `client::Error::Rejected`,
//!   or a compare-and-swap whose expected value did not match).
//! - `info`: the outcome is unknown (a timeout, a dropped connection, a crashed client). It may take
//!   effect at any time after its invocation, or never: its completion time is +infinity. Like
//!   Jepsen, a process that records `info` should not invoke again; the worker takes a new process
//!   id, since the old one may still have an operation in flight.
//!
//! An invocation without a completion (the history ended first) is treated as `info`.
//!
//! The recording order is the real-time order: the checker uses positions in the history, not
//! timestamps, to decide which operations overlap. `time_ns` (one monotonic clock for every
//! process) is kept for people and tools reading the history, and must not decrease along it.
//!
//! On disk a history is JSON lines, one op per line, with Jepsen's field names plus `key`:
//! `{"index":0,"type":"invoke","f":"cas","process":3,"time":1200,"key":"k","value":[1,2]}`.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use anyhow::{bail, ensure, Context as _};
use serde::{Deserialize, Serialize};

/// One event of a history: an invocation or a completion, by one process, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, 0, 1, 2, ...
    pub index: u64,
    /// The client (logical thread) that issued the operation. At most one operation per process is
    /// outstanding at a time.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpKind,
    pub f: Function,
    pub key: String,
    /// Read: nil on invoke, the value read (nil if the key was absent) on `ok`. Write: the value
    /// written. Cas: `[expected, new]`. Completions repeat the invocation's value for write and cas.
    pub value: Value,
    /// Nanoseconds on the one monotonic clock shared by all processes of the run.
    #[serde(rename = "time")]
    pub time_ns: u64,
}

/// Whether an [`Op`] starts an operation or completes it, and what the completion proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Invoke,
    /// Happened, with this result.
    Ok,
    /// Provably did not happen.
    Fail,
    /// Unknown: may happen at any time after the invocation, or never.
    Info,
}

/// The register workload's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Reads the register (absent reads as nil).
    Read,
    /// Sets the register.
    Write,
    /// Sets the register to `new` if it holds `expected`; fails otherwise.
    Cas,
}

/// An op's value, as Jepsen writes it: nil, an integer, or a `[expected, new]` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Nil,
    Int(u64),
    Pair([u64; 2]),
}

impl From<Option<u64>> for Value {
    fn from(value: Option<u64>) -> Self {
        value.map_or(Value::Nil, Value::Int)
    }
}

impl Op {
    /// The invocation of a read.
    pub fn invoke_read(process: u64, key: impl Into<String>) -> Op {
        Op::new(process, OpKind::Invoke, Function::Read, key, Value::Nil)
    }

    /// The invocation of a write of `value`.
    pub fn invoke_write(process: u64, key: impl Into<String>, value: u64) -> Op {
        Op::new(
            process,
            OpKind::Invoke,
            Function::Write,
            key,
            Value::Int(value),
        )
    }

    /// The invocation of a compare-and-swap from `expected` to `new`.
    pub fn invoke_cas(process: u64, key: impl Into<String>, expected: u64, new: u64) -> Op {
        let value = Value::Pair([expected, new]);
        Op::new(process, OpKind::Invoke, Function::Cas, key, value)
    }

    /// The completion of this invocation with `kind`, repeating its value (a read's `ok` then sets
    /// the value read with [`Op::with_value`]).
    pub fn complete(&self, kind: OpKind) -> Op {
        assert_ne!(kind, OpKind::Invoke, "a completion is not an invocation");
        let value = if self.f == Function::Read {
            Value::Nil
        } else {
            self.value
        };
        Op::new(self.process, kind, self.f, self.key.clone(), value)
    }

    /// This op with another value, e.g. the value a read returned.
    pub fn with_value(mut self, value: impl Into<Value>) -> Op {
        self.value = value.into();
        self
    }

    /// An op not yet placed in a history: index and time are set by [`History::push`].
    fn new(process: u64, kind: OpKind, f: Function, key: impl Into<String>, value: Value) -> Op {
        Op {
            index: 0,
            process,
            kind,
            f,
            key: key.into(),
            value,
            time_ns: 0,
        }
    }
}

/// A recorded history: ops in recording (real-time) order, each `index` equal to its position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Op>,
}

/// One operation with its invocation and completion paired up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub process: u64,
    pub f: Function,
    pub key: String,
    /// The invocation's value: what was asked.
    pub input: Value,
    pub outcome: Outcome,
    /// Position of the invocation in the history.
    pub invoke_index: u64,
    /// Position of the completion; `None` for `info` and for invocations never completed, whose
    /// completion is at +infinity.
    pub complete_index: Option<u64>,
    pub invoke_time_ns: u64,
    pub complete_time_ns: Option<u64>,
}

/// What a completion proves about an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Happened, returning this value.
    Ok(Value),
    /// Did not happen.
    Fail,
    /// May have happened at any time after the invocation, or never. Also the outcome of an
    /// invocation the history never completed.
    Info,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// A history of already-indexed ops, e.g. read back from a file. Checks that every index equals
    /// its position and that time never goes backwards.
    pub fn from_ops(ops: Vec<Op>) -> anyhow::Result<History> {
        let mut last_time_ns = 0;
        for (position, op) in ops.iter().enumerate() {
            ensure!(
                op.index == position as u64,
                "op at position {position} has index {}",
                op.index
            );
            ensure!(
                op.time_ns >= last_time_ns,
                "time goes backwards at index {}: {} ns after {} ns",
                op.index,
                op.time_ns,
                last_time_ns
            );
            last_time_ns = op.time_ns;
        }
        Ok(History { ops })
    }

    /// Appends `op` at `time_ns`, setting its index. Panics if time goes backwards: the recorder
    /// must read the clock and append under one lock.
    pub fn push(&mut self, mut op: Op, time_ns: u64) -> &Op {
        let last_time_ns = self.ops.last().map_or(0, |last| last.time_ns);
        assert!(
            time_ns >= last_time_ns,
            "time goes backwards: {time_ns} ns after {last_time_ns} ns"
        );
        op.index = self.ops.len() as u64;
        op.time_ns = time_ns;
        self.ops.push(op);
        self.ops.last().expect("just pushed")
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Pairs every invocation with the next completion of the same process, in invocation order.
    ///
    /// Errors on a malformed history: a completion with no outstanding invocation, a second
    /// invocation while one is outstanding, or a completion whose f or key differs from its
    /// invocation's (or, for an `ok` write or cas, whose value does). Invocations left outstanding become [`Outcome::Info`].
    pub fn pair(&self) -> anyhow::Result<Vec<Operation>> {
        let mut operations: Vec<Operation> = Vec::new();
        // Per process, the position in `operations` of its outstanding invocation.
        let mut outstanding: HashMap<u64, usize> = HashMap::new();
        for op in &self.ops {
            if op.kind == OpKind::Invoke {
                if let Some(&previous) = outstanding.get(&op.process) {
                    bail!(
                        "process {} invokes at index {} while its invocation at index {} is \
                         outstanding",
                        op.process,
                        op.index,
                        operations[previous].invoke_index
                    );
                }
                check_value_shape(op)?;
                outstanding.insert(op.process, operations.len());
                operations.push(Operation {
                    process: op.process,
                    f: op.f,
                    key: op.key.clone(),
                    input: op.value,
                    outcome: Outcome::Info,
                    invoke_index: op.index,
                    complete_index: None,
                    invoke_time_ns: op.time_ns,
                    complete_time_ns: None,
                });
                continue;
            }
            let Some(position) = outstanding.remove(&op.process) else {
                bail!(
                    "{:?} at index {} by process {} completes nothing",
                    op.kind,
                    op.index,
                    op.process
                );
            };
            let operation = &mut operations[position];
            ensure!(
                op.f == operation.f && op.key == operation.key,
                "completion at index {} ({:?} on {:?}) does not match its invocation at index {} \
                 ({:?} on {:?})",
                op.index,
                op.f,
                op.key,
                operation.invoke_index,
                operation.f,
                operation.key
            );
            if op.kind == OpKind::Ok && op.f != Function::Read {
                ensure!(
                    op.value == operation.input,
                    "completion at index {} has value {:?}, its invocation at index {} {:?}",
                    op.index,
                    op.value,
                    operation.invoke_index,
                    operation.input
                );
            }
            match op.kind {
                OpKind::Invoke => unreachable!("handled above"),
                OpKind::Ok => {
                    check_value_shape(op)?;
                    operation.outcome = Outcome::Ok(op.value);
                    operation.complete_index = Some(op.index);
                    operation.complete_time_ns = Some(op.time_ns);
                }
                OpKind::Fail => {
                    operation.outcome = Outcome::Fail;
                    operation.complete_index = Some(op.index);
                    operation.complete_time_ns = Some(op.time_ns);
                }
                // The completion time of an unknown outcome is +infinity, whenever it was recorded.
                OpKind::Info => operation.outcome = Outcome::Info,
            }
        }
        Ok(operations)
    }

    /// Writes the history as JSON lines, one op per line.
    pub fn write_jsonl(&self, mut writer: impl Write) -> anyhow::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut writer, op).context("encoding an op")?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Reads a history written by [`History::write_jsonl`]; blank lines are skipped.
    pub fn read_jsonl(reader: impl BufRead) -> anyhow::Result<History> {
        let mut ops = Vec::new();
        for (number, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line)
                .with_context(|| format!("line {}: {line}", number + 1))?;
            ops.push(op);
        }
        History::from_ops(ops)
    }
}

/// Checks that an invocation or `ok` carries the value shape its function needs.
fn check_value_shape(op: &Op) -> anyhow::Result<()> {
    let fits = matches!(
        (op.f, op.kind, op.value),
        (Function::Read, OpKind::Invoke, Value::Nil)
            | (Function::Read, OpKind::Ok, Value::Nil | Value::Int(_))
            | (Function::Write, _, Value::Int(_))
            | (Function::Cas, _, Value::Pair(_))
    );
    ensure!(
        fits,
        "{:?} {:?} at index {} has value {:?}",
        op.f,
        op.kind,
        op.index,
        op.value
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut history = History::new();
        let read = Op::invoke_read(1, "a");
        let write = Op::invoke_write(2, "a", 7);
        let cas = Op::invoke_cas(3, "b", 7, 8);
        history.push(read.clone(), 10);
        history.push(write.clone(), 11);
        history.push(cas.clone(), 12);
        history.push(write.complete(OpKind::Ok), 13);
        history.push(read.complete(OpKind::Ok).with_value(Some(7)), 14);
        history.push(cas.complete(OpKind::Info), 15);
        history.push(Op::invoke_read(4, "b"), 16);
        history
    }

    #[test]
    fn json_lines_use_jepsen_field_names_and_round_trip() {
        let history = sample();
        let mut bytes = Vec::new();
        history.write_jsonl(&mut bytes).expect("writing to memory");
        let text = String::from_utf8(bytes.clone()).expect("JSON is UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), history.len());
        assert_eq!(
            lines[2],
            r#"{"index":2,"process":3,"type":"invoke","f":"cas","key":"b","value":[7,8],"time":12}"#
        );
        assert_eq!(
            lines[0],
            r#"{"index":0,"process":1,"type":"invoke","f":"read","key":"a","value":null,"time":10}"#
        );
        assert!(lines[4].contains(r#""type":"ok""#) && lines[4].contains(r#""value":7"#));
        assert!(lines[5].contains(r#""type":"info""#));

        let read_back = History::read_jsonl(&bytes[..]).expect("reading back");
        assert_eq!(read_back, history);
    }

    #[test]
    fn pairs_invocations_with_completions_per_process() {
        let operations = sample().pair().expect("well formed");
        let summary: Vec<(u64, Function, Outcome, u64, Option<u64>)> = operations
            .iter()
            .map(|o| (o.process, o.f, o.outcome, o.invoke_index, o.complete_index))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, Function::Read, Outcome::Ok(Value::Int(7)), 0, Some(4)),
                (2, Function::Write, Outcome::Ok(Value::Int(7)), 1, Some(3)),
                // Info and never-completed invocations complete at +infinity.
                (3, Function::Cas, Outcome::Info, 2, None),
                (4, Function::Read, Outcome::Info, 6, None),
            ]
        );
    }

    #[test]
    fn malformed_histories_are_rejected() {
        let write = Op::invoke_write(1, "a", 1);
        let cases: Vec<(&str, Vec<Op>, &str)> = vec![
            (
                "completion without invocation",
                vec![write.complete(OpKind::Ok)],
                "completes nothing",
            ),
            (
                "second invocation while one is outstanding",
                vec![write.clone(), Op::invoke_read(1, "a")],
                "outstanding",
            ),
            (
                "completion on another key",
                vec![
                    write.clone(),
                    Op::invoke_write(1, "b", 1).complete(OpKind::Ok),
                ],
                "does not match",
            ),
            (
                "completion with another value",
                vec![
                    write.clone(),
                    write.complete(OpKind::Ok).with_value(Some(2)),
                ],
                "has value",
            ),
            (
                "write without a value",
                vec![write.clone().with_value(None)],
                "has value",
            ),
        ];
        for (name, ops, expected) in cases {
            let mut history = History::new();
            for (time_ns, op) in ops.into_iter().enumerate() {
                history.push(op, time_ns as u64);
            }
            let error = history.pair().expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
    }

    #[test]
    fn indices_must_match_positions_and_time_must_not_go_backwards() {
        let mut ops = sample().into_ops();
        ops[3].time_ns = 1;
        let error = History::from_ops(ops).expect_err("time goes backwards");
        assert!(error.to_string().contains("backwards"), "{error}");

        let mut ops = sample().into_ops();
        ops.swap(0, 1);
        let error = History::from_ops(ops).expect_err("indices out of order");
        assert!(error.to_string().contains("index"), "{error}");
    }
}
