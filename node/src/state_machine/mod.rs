//! The replicated data model: commands in, responses out, deterministically.
//!
//! Nothing here may read a clock, draw randomness or do I/O: every node applies the same log to
//! the same state and must reach the same result, also after a restart. The leader stamps its
//! time into each command (`Request::now_ms`); apply only ever uses that.

pub mod barriers;
pub mod command;
pub mod coordination;
pub mod history;
pub mod kv;
pub mod locks;
pub mod primitive;
pub mod sessions;

use serde::{Deserialize, Serialize};

pub use barriers::{BarrierCommand, BarrierResponse, Barriers};
pub use command::{Command, Compare, Fence, Request, RequestId, Response, TxnOp};
pub use locks::{LockCommand, LockKind, LockResponse, Locks};
use primitive::{Ctx, Effect, Primitive};
pub use coordination::{CoordCommand, CoordResponse, Coordination};
pub use history::{Change, Event, EventKind, History};
pub use kv::{KeyValue, KvStore};
use sessions::{Lookup, Sessions};

use crate::limits::{STORE_BYTES_MAX, STORE_KEYS_MAX};

/// How much of the past one node keeps for its streams. Neither bound changes what apply does,
/// only how far back a watch can resume on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Revisions of KV change history (--watch-history; also bounded by WATCH_HISTORY_BYTES_MAX).
    pub history_revisions_max: usize,
    /// Coordination events (--coord-events, COORD_EVENTS_MAX by default).
    pub coord_events_max: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    /// Log index of the last entry applied (openraft's first entry has index 0).
    last_index: Option<u64>,
    /// The store revision: bumped by one for every applied command that changed at least one key.
    revision: u64,
    /// The greatest leader time seen; cluster time never goes backwards here.
    now_ms: u64,
    kv: KvStore,
    sessions: Sessions,
    history: History,
    coordination: Coordination,
    locks: Locks,
    barriers: Barriers,
}

impl StateMachine {
    pub fn new(history_revisions_max: usize) -> Self {
        StateMachine {
            history: History::new(history_revisions_max),
            ..StateMachine::default()
        }
    }

    /// Applies one committed application entry at log index `index`.
    pub fn apply(&mut self, index: u64, request: &Request) -> Response {
        self.advance(index);
        self.now_ms = self.now_ms.max(request.now_ms);
        let Some(id) = request.request_id else {
            return self.execute_fenced(request);
        };
        match self.sessions.lookup(&id) {
            Lookup::Duplicate(response) => response,
            Lookup::Expired => Response::RequestIdExpired {
                revision: self.revision,
            },
            Lookup::Apply => {
                let response = self.execute_fenced(request);
                self.sessions.record(&id, self.now_ms, response.clone());
                response
            }
        }
    }

    /// A command without a request id (internal ones; tests): the fence is still checked.
    fn execute_fenced(&mut self, request: &Request) -> Response {
        match &request.fence {
            Some(fence) if !self.locks.holds(fence.kind, &fence.name, fence.token) => {
                Response::FenceLost {
                    revision: self.revision,
                    reason: format!(
                        "lock lost: token {} does not hold {} {:?}; nothing was applied",
                        fence.token,
                        fence.kind.noun(),
                        fence.name
                    ),
                }
            }
            _ => self.execute(&request.command),
        }
    }

    /// Records a blank or membership entry: it changes nothing but the applied index.
    pub fn apply_empty(&mut self, index: u64) -> Response {
        self.advance(index);
        Response::Empty
    }

    fn advance(&mut self, index: u64) {
        assert!(
            Some(index) > self.last_index,
            "log applied out of order: index {index} after {:?}",
            self.last_index
        );
        self.last_index = Some(index);
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn last_index(&self) -> Option<u64> {
        self.last_index
    }

    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.kv.get(key)
    }

    pub fn list(&self, prefix: &[u8], start_after: &[u8], limit: usize) -> (Vec<KeyValue>, bool) {
        self.kv.list(prefix, start_after, limit)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Bounds what this copy keeps for streams: node options, so a state restored from a peer's
    /// snapshot takes this node's bounds, not the peer's.
    pub fn set_retention(&mut self, retention: Retention) {
        self.history
            .set_revisions_max(retention.history_revisions_max);
        self.coordination.set_events_max(retention.coord_events_max);
    }

    pub fn key_count(&self) -> u64 {
        self.kv.key_count()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.client_count()
    }

    /// Agents, tasks and decisions.
    pub fn coordination(&self) -> &Coordination {
        &self.coordination
    }

    /// Cluster time: the greatest leader stamp applied so far.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// A digest of the key-value content, the revision and the coordination state: equal on
    /// replicas with equal state.
    pub fn digest(&self) -> u64 {
        self.kv.digest()
            ^ self.revision.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ self.coordination.digest().rotate_left(17)
            ^ self.locks.digest().rotate_left(29)
            ^ self.barriers.digest().rotate_left(41)
    }

    fn execute(&mut self, command: &Command) -> Response {
        match command {
            Command::Put {
                key,
                value,
                session_id,
            } => self.put(key, value, *session_id),
            Command::Delete { key } => self.delete(key),
            Command::CompareAndSwap {
                key,
                expected_mod_revision,
                value,
            } => self.compare_and_swap(key, *expected_mod_revision, value.as_deref()),
            Command::Txn { compares, ops } => self.txn(compares, ops),
            Command::Coordination(command) => self.coordinate(command),
            Command::Locks(command) => {
                let response = self.with_ctx(|sm, ctx| sm.locks.apply(ctx, command));
                Response::Locks {
                    revision: self.revision,
                    response,
                }
            }
            Command::Barriers(command) => {
                let response = self.with_ctx(|sm, ctx| sm.barriers.apply(ctx, command));
                Response::Barriers {
                    revision: self.revision,
                    response,
                }
            }
        }
    }

    /// Runs `f` with the context the primitives share, then routes the effects it raised.
    fn with_ctx<R>(&mut self, f: impl FnOnce(&mut Primitives, &mut Ctx) -> R) -> R {
        let mut events = self.coordination.take_events();
        let coordination = &self.coordination;
        let live = |session_id| coordination.session_live(session_id);
        let mut ctx = Ctx::new(self.now_ms, &mut events, &live);
        let mut primitives = Primitives {
            locks: &mut self.locks,
            barriers: &mut self.barriers,
        };
        let result = f(&mut primitives, &mut ctx);
        let mut effects = ctx.take_effects();
        while !effects.is_empty() {
            for effect in std::mem::take(&mut effects) {
                for primitive in primitives.all() {
                    primitive.on_effect(&mut ctx, &effect);
                }
                effects.extend(ctx.take_effects());
            }
        }
        drop(ctx);
        self.coordination.put_events(events);
        result
    }

    /// Fires the other primitives' due timers (a `Tick`), after a new leader's refresh if asked.
    fn tick_primitives(&mut self, refresh: bool) {
        self.with_ctx(|primitives, ctx| {
            for primitive in primitives.all() {
                if refresh {
                    primitive.refresh(ctx);
                }
                primitive.tick(ctx);
            }
        });
    }

    /// Sessions that ended: their keys are deleted, and the other primitives are told.
    fn sessions_ended(&mut self, ended_sessions: &[u64]) {
        self.delete_session_keys(ended_sessions);
        for &session_id in ended_sessions {
            self.with_ctx(|_, ctx| ctx.raise(Effect::SessionEnded { session_id }));
        }
    }

    /// The earliest cluster time at which a `Tick` would change something, over every primitive.
    pub fn next_due_ms(&self) -> Option<u64> {
        [
            self.coordination.next_due_ms(),
            self.locks.next_due_ms(),
            self.barriers.next_due_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    pub fn barriers(&self) -> &Barriers {
        &self.barriers
    }

    fn coordinate(&mut self, command: &CoordCommand) -> Response {
        let mut ended_sessions = Vec::new();
        let response = self
            .coordination
            .apply(self.now_ms, command, &mut ended_sessions);
        self.sessions_ended(&ended_sessions);
        if let CoordCommand::Tick { refresh, .. } = command {
            self.tick_primitives(*refresh);
        }
        Response::Coordination {
            revision: self.revision,
            response,
        }
    }

    /// Deletes every key attached to the ended sessions, all in one new revision (none when
    /// they had no keys).
    fn delete_session_keys(&mut self, ended_sessions: &[u64]) {
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for session_id in ended_sessions {
            for key in self.kv.session_keys(*session_id) {
                if self.kv.remove(&key).is_some() {
                    events.push(delete_event(&key, revision));
                }
            }
        }
        if !events.is_empty() {
            self.commit_revision(events);
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8], session_id: u64) -> Response {
        if session_id != 0 && !self.coordination.session_live(session_id) {
            return Response::SessionNotLive {
                revision: self.revision,
                session_id,
            };
        }
        if let Err(reason) = self.check_quota(&[(key, Some(value))]) {
            return Response::QuotaExceeded {
                revision: self.revision,
                reason,
            };
        }
        let revision = self.revision + 1;
        let (written, previous) = self.kv.put(key, value.to_vec(), revision, session_id);
        self.commit_revision(vec![put_event(written)]);
        Response::Put {
            revision,
            previous: previous.map(|kv| kv.without_value()),
        }
    }

    fn delete(&mut self, key: &[u8]) -> Response {
        let Some(previous) = self.kv.remove(key) else {
            return Response::Delete {
                revision: self.revision,
                previous: None,
            };
        };
        let revision = self.revision + 1;
        self.commit_revision(vec![delete_event(key, revision)]);
        Response::Delete {
            revision,
            previous: Some(previous.without_value()),
        }
    }

    fn compare_and_swap(&mut self, key: &[u8], expected: u64, value: Option<&[u8]>) -> Response {
        if self.kv.mod_revision(key) != expected {
            return Response::CompareAndSwap {
                revision: self.revision,
                succeeded: false,
                current: self.kv.get(key).map(|kv| kv.without_value()),
            };
        }
        match value {
            Some(value) => match self.put(key, value, 0) {
                Response::Put { revision, .. } => Response::CompareAndSwap {
                    revision,
                    succeeded: true,
                    current: self.kv.get(key).map(|kv| kv.without_value()),
                },
                quota_exceeded => quota_exceeded,
            },
            None => {
                let revision = match self.delete(key) {
                    Response::Delete { revision, .. } => revision,
                    other => unreachable!("delete answers Delete, not {other:?}"),
                };
                Response::CompareAndSwap {
                    revision,
                    succeeded: true,
                    current: None,
                }
            }
        }
    }

    fn txn(&mut self, compares: &[Compare], ops: &[TxnOp]) -> Response {
        let failed_compares: Vec<(u32, u64)> = compares
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let current = self.kv.mod_revision(&c.key);
                (current != c.mod_revision).then_some((i as u32, current))
            })
            .collect();
        if !failed_compares.is_empty() {
            return Response::Txn {
                revision: self.revision,
                succeeded: false,
                failed_compares,
            };
        }
        let writes: Vec<(&[u8], Option<&[u8]>)> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => (key.as_slice(), Some(value.as_slice())),
                TxnOp::Delete { key } => (key.as_slice(), None),
            })
            .collect();
        if let Err(reason) = self.check_quota(&writes) {
            return Response::QuotaExceeded {
                revision: self.revision,
                reason,
            };
        }
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for (key, value) in writes {
            match value {
                Some(value) => {
                    events.push(put_event(self.kv.put(key, value.to_vec(), revision, 0).0))
                }
                None => {
                    if self.kv.remove(key).is_some() {
                        events.push(delete_event(key, revision));
                    }
                }
            }
        }
        let revision = if events.is_empty() {
            self.revision
        } else {
            self.commit_revision(events);
            revision
        };
        Response::Txn {
            revision,
            succeeded: true,
            failed_compares: Vec::new(),
        }
    }

    /// Rejects a set of writes (distinct keys; `None` deletes) that would take the store past
    /// STORE_KEYS_MAX or STORE_BYTES_MAX. Writes that shrink the store always pass.
    fn check_quota(&self, writes: &[(&[u8], Option<&[u8]>)]) -> Result<(), String> {
        let mut keys = self.kv.key_count() as i64;
        let mut bytes = self.kv.bytes() as i64;
        for (key, value) in writes {
            let old = self.kv.get(key);
            if let Some(old) = &old {
                keys -= 1;
                bytes -= (key.len() + old.value.len()) as i64;
            }
            if let Some(value) = value {
                keys += 1;
                bytes += (key.len() + value.len()) as i64;
            }
        }
        if keys > self.kv.key_count() as i64 && keys as u64 > STORE_KEYS_MAX {
            return Err(format!(
                "the store holds its maximum of {STORE_KEYS_MAX} keys (STORE_KEYS_MAX)"
            ));
        }
        if bytes > self.kv.bytes() as i64 && bytes as u64 > STORE_BYTES_MAX {
            return Err(format!(
                "the store holds its maximum of {STORE_BYTES_MAX} key and value bytes (STORE_BYTES_MAX)"
            ));
        }
        Ok(())
    }

    fn commit_revision(&mut self, events: Vec<Event>) {
        self.revision += 1;
        self.history.push(Change {
            revision: self.revision,
            events,
        });
    }
}

/// The primitives driven through the `Primitive` trait, borrowed together for one call.
struct Primitives<'a> {
    locks: &'a mut Locks,
    barriers: &'a mut Barriers,
}

impl Primitives<'_> {
    fn all(&mut self) -> [&mut dyn Primitive; 2] {
        [&mut *self.locks, &mut *self.barriers]
    }
}

fn put_event(kv: KeyValue) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
    }
}

fn delete_event(key: &[u8], revision: u64) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_vec(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            session_id: 0,
        },
    }
}

#[cfg(test)]
mod tests;
