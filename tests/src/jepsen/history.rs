//! The history of a run, in Jepsen's shape, for every workload at once: invocations and
//! completions of operations by logical processes, stamped by one monotonic clock.
//!
//! Unlike [`crate::checker::history`], which is the register checker's own model, an [`Event`]
//! here carries any workload's operation: `f` is a name the workload chooses and `value` is JSON.
//! Each workload's checker reads the events of its workload (`workload` field) and nothing else,
//! so workloads sharing one cluster and one history stay independent.
//!
//! What a completion means (the checkers rely on it, the clients must honour it):
//! - `ok`: the operation happened, with this result;
//! - `fail`: it provably did not happen (rejected before it was proposed, or a read that errored:
//!   reads have no effect);
//! - `info`: unknown; it may take effect at any time after its invocation, or never. The process
//!   that recorded it never invokes again (the client continues under a new process id).
//!
//! On disk, one event per line (`history.jsonl`):
//! `{"index":4,"type":"ok","f":"write","process":3,"time":1200,"workload":"register","key":"k","value":7,"node":2}`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use crate::checker::OpKind;

/// One invocation or completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history: 0, 1, 2, ...
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: OpKind,
    /// The operation, named by its workload (`read`, `write`, `cas`, `add`, `watch`, ...).
    pub f: String,
    /// The logical client; at most one operation outstanding per process.
    pub process: u64,
    /// Nanoseconds since the run started, on the one clock of the run; never decreases.
    #[serde(rename = "time")]
    pub time_ns: u64,
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What was asked (invocation) or what came back (completion); the workload defines it.
    #[serde(default)]
    pub value: Json,
    /// The node the process sent the operation to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Why a `fail` or `info` completion ended so (the gRPC status, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An operation as its client describes it, before the recorder stamps it.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSpec {
    pub f: String,
    pub key: Option<String>,
    pub value: Json,
}

impl OpSpec {
    pub fn new(f: impl Into<String>, key: Option<String>, value: Json) -> Self {
        Self {
            f: f.into(),
            key,
            value,
        }
    }
}

/// How an operation ended, as its client classified it.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    Ok(Json),
    Fail(String),
    Info(String),
}

impl Completion {
    pub fn kind(&self) -> OpKind {
        match self {
            Completion::Ok(_) => OpKind::Ok,
            Completion::Fail(_) => OpKind::Fail,
            Completion::Info(_) => OpKind::Info,
        }
    }
}

/// A recorded invocation, to be completed by [`Recorder::complete`].
#[derive(Clone, Debug)]
pub struct Invocation {
    pub index: u64,
    pub process: u64,
    pub workload: String,
    pub spec: OpSpec,
    pub node: Option<u64>,
    pub time_ns: u64,
}

/// Appends events to the run's history. Reading the clock and appending happen under one lock,
/// so the history order is the real-time order and times never decrease along it.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    state: Mutex<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    events: Vec<Event>,
    next_process: u64,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::new(RecorderState::default()),
        }
    }

    /// Nanoseconds since the run started, on the history's clock.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// A process id never used before in this run.
    pub fn new_process(&self) -> u64 {
        let mut state = self.lock();
        let process = state.next_process;
        state.next_process += 1;
        process
    }

    /// Records the invocation of `spec` by `process`.
    pub fn invoke(
        &self,
        workload: &str,
        process: u64,
        node: Option<u64>,
        spec: OpSpec,
    ) -> Invocation {
        let mut state = self.lock();
        let time_ns = self.now_ns();
        let index = state.events.len() as u64;
        state.events.push(Event {
            index,
            kind: OpKind::Invoke,
            f: spec.f.clone(),
            process,
            time_ns,
            workload: workload.to_string(),
            key: spec.key.clone(),
            value: spec.value.clone(),
            node,
            error: None,
        });
        Invocation {
            index,
            process,
            workload: workload.to_string(),
            spec,
            node,
            time_ns,
        }
    }

    /// Records the completion of `invocation`. A `fail` or `info` repeats the invocation's value.
    pub fn complete(&self, invocation: &Invocation, completion: &Completion) -> u64 {
        let (kind, value, error) = match completion {
            Completion::Ok(value) => (OpKind::Ok, value.clone(), None),
            Completion::Fail(error) => (OpKind::Fail, invocation.spec.value.clone(), Some(error)),
            Completion::Info(error) => (OpKind::Info, invocation.spec.value.clone(), Some(error)),
        };
        let mut state = self.lock();
        let time_ns = self.now_ns();
        let index = state.events.len() as u64;
        state.events.push(Event {
            index,
            kind,
            f: invocation.spec.f.clone(),
            process: invocation.process,
            time_ns,
            workload: invocation.workload.clone(),
            key: invocation.spec.key.clone(),
            value,
            node: invocation.node,
            error: error.cloned(),
        });
        time_ns
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // Every push leaves the state whole, so a poisoned lock still holds a valid history.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// One operation with its invocation and completion paired up.
#[derive(Clone, Debug, PartialEq)]
pub struct Paired<'a> {
    pub invoke: &'a Event,
    /// `None` when the history ended before the operation completed (treated as `info`).
    pub complete: Option<&'a Event>,
}

impl Paired<'_> {
    /// The completion's kind; an operation never completed is `info`.
    pub fn outcome(&self) -> OpKind {
        self.complete.map_or(OpKind::Info, |event| event.kind)
    }

    pub fn is_ok(&self) -> bool {
        self.outcome() == OpKind::Ok
    }

    /// Position of the completion, `None` (+infinity) for `info` and unfinished operations.
    pub fn complete_index(&self) -> Option<u64> {
        match self.complete {
            Some(event) if event.kind != OpKind::Info => Some(event.index),
            _ => None,
        }
    }

    /// The completion's value for `ok`, else the invocation's.
    pub fn value(&self) -> &Json {
        match self.complete {
            Some(event) if event.kind == OpKind::Ok => &event.value,
            _ => &self.invoke.value,
        }
    }
}

/// Pairs the events of `workload` (all workloads when `None`) into operations, in invocation order.
/// Errors on a malformed history: a completion without an outstanding invocation, a second
/// invocation while one is outstanding, or a completion whose `f` or key differs from its
/// invocation's.
pub fn pair<'a>(events: &'a [Event], workload: Option<&str>) -> anyhow::Result<Vec<Paired<'a>>> {
    let mut operations: Vec<Paired<'a>> = Vec::new();
    let mut outstanding: HashMap<u64, usize> = HashMap::new();
    for event in events {
        if workload.is_some_and(|workload| workload != event.workload) {
            continue;
        }
        if event.kind == OpKind::Invoke {
            if let Some(&previous) = outstanding.get(&event.process) {
                bail!(
                    "process {} invokes at index {} while its invocation at index {} is outstanding",
                    event.process,
                    event.index,
                    operations[previous].invoke.index
                );
            }
            outstanding.insert(event.process, operations.len());
            operations.push(Paired {
                invoke: event,
                complete: None,
            });
            continue;
        }
        let Some(position) = outstanding.remove(&event.process) else {
            bail!(
                "{:?} at index {} by process {} completes nothing",
                event.kind,
                event.index,
                event.process
            );
        };
        let operation = &mut operations[position];
        ensure!(
            operation.invoke.f == event.f && operation.invoke.key == event.key,
            "completion at index {} ({} on {:?}) does not match its invocation at index {} ({} on {:?})",
            event.index,
            event.f,
            event.key,
            operation.invoke.index,
            operation.invoke.f,
            operation.invoke.key
        );
        operation.complete = Some(event);
    }
    Ok(operations)
}

/// Writes events as JSON lines.
pub fn write_jsonl(events: &[Event], mut writer: impl Write) -> anyhow::Result<()> {
    for event in events {
        serde_json::to_writer(&mut writer, event).context("encoding an event")?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(())
}

/// Reads events written by [`write_jsonl`], checking that indexes are positions and time never
/// goes backwards.
pub fn read_jsonl(reader: impl BufRead) -> anyhow::Result<Vec<Event>> {
    let mut events: Vec<Event> = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event =
            serde_json::from_str(&line).with_context(|| format!("line {}: {line}", number + 1))?;
        ensure!(
            event.index == events.len() as u64,
            "line {}: index {} at position {}",
            number + 1,
            event.index,
            events.len()
        );
        if let Some(last) = events.last() {
            ensure!(
                event.time_ns >= last.time_ns,
                "line {}: time goes backwards",
                number + 1
            );
        }
        events.push(event);
    }
    Ok(events)
}

/// Builds histories by hand, for the checkers' unit tests: each call records at the next tick.
#[derive(Debug, Default)]
pub struct Script {
    events: Vec<Event>,
    open: HashMap<u64, usize>,
    workload: String,
}

impl Script {
    pub fn new(workload: &str) -> Self {
        Self {
            workload: workload.to_string(),
            ..Self::default()
        }
    }

    /// Invokes `f` on `key` with `value` as `process`.
    pub fn invoke(mut self, process: u64, f: &str, key: Option<&str>, value: Json) -> Self {
        self.open.insert(process, self.events.len());
        self.push(OpKind::Invoke, process, f, key.map(str::to_string), value);
        self
    }

    /// Completes `process`'s operation as `ok` with `value`.
    pub fn ok(self, process: u64, value: Json) -> Self {
        self.complete(process, OpKind::Ok, Some(value))
    }

    /// Completes `process`'s operation as `fail`.
    pub fn fail(self, process: u64) -> Self {
        self.complete(process, OpKind::Fail, None)
    }

    /// Completes `process`'s operation as `fail`, with `error` as the reason (a refusal's words).
    pub fn fail_with(mut self, process: u64, error: &str) -> Self {
        self = self.complete(process, OpKind::Fail, None);
        self.events.last_mut().expect("just completed").error = Some(error.to_string());
        self
    }

    /// Completes `process`'s operation as `info`.
    pub fn info(self, process: u64) -> Self {
        self.complete(process, OpKind::Info, None)
    }

    pub fn events(self) -> Vec<Event> {
        self.events
    }

    fn complete(mut self, process: u64, kind: OpKind, value: Option<Json>) -> Self {
        let position = self
            .open
            .remove(&process)
            .unwrap_or_else(|| panic!("process {process} has nothing outstanding"));
        let invoke = self.events[position].clone();
        let value = value.unwrap_or(invoke.value);
        self.push(kind, process, &invoke.f, invoke.key, value);
        self
    }

    fn push(&mut self, kind: OpKind, process: u64, f: &str, key: Option<String>, value: Json) {
        let index = self.events.len() as u64;
        self.events.push(Event {
            index,
            kind,
            f: f.to_string(),
            process,
            time_ns: index * 1_000,
            workload: self.workload.clone(),
            key,
            value,
            node: None,
            error: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn recorder_pairs_and_round_trips_through_json_lines() {
        let recorder = Recorder::new();
        let writer = recorder.new_process();
        let reader = recorder.new_process();
        assert_ne!(writer, reader);
        let write = recorder.invoke(
            "register",
            writer,
            Some(1),
            OpSpec::new("write", Some("k".into()), json!(7)),
        );
        let read = recorder.invoke(
            "register",
            reader,
            Some(2),
            OpSpec::new("read", Some("k".into()), Json::Null),
        );
        recorder.complete(&write, &Completion::Info("deadline".into()));
        recorder.complete(&read, &Completion::Ok(json!(7)));
        let events = recorder.events();
        assert_eq!(events.len(), 4);
        assert_eq!(events[2].kind, OpKind::Info);
        assert_eq!(
            events[2].value,
            json!(7),
            "info repeats the invocation's value"
        );
        assert_eq!(events[2].error.as_deref(), Some("deadline"));

        let mut bytes = Vec::new();
        write_jsonl(&events, &mut bytes).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text
            .lines()
            .next()
            .unwrap()
            .starts_with(r#"{"index":0,"type":"invoke","f":"write""#));
        assert_eq!(read_jsonl(&bytes[..]).unwrap(), events);

        let operations = pair(&events, Some("register")).unwrap();
        assert_eq!(operations.len(), 2);
        assert_eq!(operations[0].outcome(), OpKind::Info);
        assert_eq!(operations[0].complete_index(), None);
        assert_eq!(operations[1].value(), &json!(7));
        assert!(pair(&events, Some("set")).unwrap().is_empty());
    }

    #[test]
    fn malformed_histories_are_errors() {
        let twice = Script::new("w")
            .invoke(1, "read", None, Json::Null)
            .invoke(1, "read", None, Json::Null)
            .events();
        assert!(pair(&twice, None).is_err());
        let mut orphan = Script::new("w")
            .invoke(1, "read", None, Json::Null)
            .ok(1, json!(1))
            .events();
        orphan.remove(0);
        assert!(pair(&orphan, None).is_err());
    }
}
