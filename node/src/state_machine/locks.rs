//! Fenced locks, semaphores and leader elections (locks.proto): one primitive, three namespaces.
//!
//! A lock is a semaphore of one permit; an election is a lock whose holder publishes a value.
//! Every request gets a token from one counter when it arrives, and grants follow arrival order,
//! so the tokens of one lock grow with every grant and are never reused (a forgotten lock's next
//! grant still gets a larger one). A holder lost rather than released (its TTL passed, its
//! session ended) starts the lock-delay: nobody is granted the lock until it ends.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::coordination::{CoordEventKind, SessionId};
use super::kv::Fnv;
use super::primitive::{Ctx, Effect, Primitive};
use super::transaction::OpResult;
use crate::limits::{LOCKS_MAX, LOCK_WAITERS_MAX, TXN_COMPARE_TOKENS_MAX};

pub type Token = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockKind {
    Lock,
    Semaphore,
    Election,
}

impl LockKind {
    pub fn noun(self) -> &'static str {
        match self {
            LockKind::Lock => "lock",
            LockKind::Semaphore => "semaphore",
            LockKind::Election => "election",
        }
    }
}

/// Who holds a grant or waits for one: an agent session (`session_id`) or a lease of `ttl_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub session_id: SessionId,
    pub ttl_ms: u64,
    pub owner: String,
}

/// A grant held, or a request waiting for one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub token: Token,
    pub holder: Holder,
    pub permits: u32,
    /// Lease holders: when the lease expires (0 for sessions). Waiters: when the wait ends.
    pub expires_at_ms: u64,
    /// Granted at (holders) or queued at (waiters).
    pub since_ms: u64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub kind: LockKind,
    pub name: String,
    pub limit: u32,
    pub lock_delay_ms: u64,
    /// Current grants by token.
    pub holders: BTreeMap<Token, Grant>,
    /// The queue by token: tokens are issued on arrival, so token order is arrival order.
    pub waiters: BTreeMap<Token, Grant>,
    /// Nobody is granted the lock before this cluster time (a lost holder's lock-delay).
    pub unavailable_until_ms: u64,
    pub last_token: Token,
}

impl Lock {
    fn free_permits(&self) -> u32 {
        self.limit - self.holders.values().map(|g| g.permits).sum::<u32>()
    }

    /// The leader of an election (its one holder).
    pub fn leader(&self) -> Option<&Grant> {
        self.holders.values().next()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    Acquire {
        kind: LockKind,
        name: String,
        holder: Holder,
        permits: u32,
        limit: u32,
        /// 0: try once.
        wait_ms: u64,
        lock_delay_ms: u64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Release {
        kind: LockKind,
        name: String,
        token: Token,
    },
    KeepAlive {
        kind: LockKind,
        name: String,
        token: Token,
    },
    Proclaim {
        name: String,
        token: Token,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

impl LockCommand {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            LockCommand::Acquire { .. } => "lock_acquire",
            LockCommand::Release { .. } => "lock_release",
            LockCommand::KeepAlive { .. } => "lock_keep_alive",
            LockCommand::Proclaim { .. } => "lock_proclaim",
        }
    }
}

/// A lock op of a transaction (`state_machine::transaction`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Gives a grant back, or leaves the queue, as `Release` does.
    Release {
        kind: LockKind,
        name: String,
        token: Token,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockResponse {
    /// Granted now (`granted`), or queued with this token until the grant or the end of the wait.
    Acquired {
        token: Token,
        granted: bool,
        expires_at_ms: u64,
    },
    /// A try-once request found the lock taken; nothing was queued.
    Busy,
    Released,
    KeptAlive {
        expires_at_ms: u64,
    },
    Proclaimed,
    /// The token does not hold (or wait for) the lock: nothing changed.
    LockLost {
        reason: String,
    },
    /// The request disagrees with the lock as it exists (another semaphore limit).
    Mismatch {
        reason: String,
    },
    SessionNotLive {
        session_id: SessionId,
    },
    QuotaExceeded {
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockEventKind {
    Granted,
    Released,
    Lost,
    Queued,
    WaitEnded,
    Proclaimed,
    DelayEnded,
}

/// One change to one lock, in the coordination event ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEvent {
    pub kind: LockEventKind,
    pub lock: LockKind,
    pub name: String,
    pub token: Token,
    /// The session of the grant the change is about (0: a lease or none): a lost grant is pushed
    /// on that session's stream.
    pub session_id: SessionId,
    pub reason: String,
}

/// What a timer does when it fires; the order breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    DelayOver,
    HoldExpiry,
    WaitExpiry,
}

/// (due at, what, lock kind, lock name, token; 0 for DelayOver).
type TimerEntry = (u64, Timer, LockKind, String, Token);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Locks {
    last_token: Token,
    locks: BTreeMap<(LockKind, String), Lock>,
    timers: BTreeSet<TimerEntry>,
    /// Grants and waiters held by agent sessions, for a session's end.
    by_session: BTreeMap<SessionId, BTreeSet<(LockKind, String, Token)>>,
}

impl Locks {
    pub fn apply(&mut self, ctx: &mut Ctx, command: &LockCommand) -> LockResponse {
        match command {
            LockCommand::Acquire {
                kind,
                name,
                holder,
                permits,
                limit,
                wait_ms,
                lock_delay_ms,
                value,
            } => self.acquire(
                ctx,
                (*kind, name),
                holder,
                (*permits, *limit),
                *wait_ms,
                *lock_delay_ms,
                value,
            ),
            LockCommand::Release { kind, name, token } => self.release(ctx, (*kind, name), *token),
            LockCommand::KeepAlive { kind, name, token } => {
                self.keep_alive(ctx, (*kind, name), *token)
            }
            LockCommand::Proclaim { name, token, value } => self.proclaim(ctx, name, *token, value),
        }
    }

    pub fn get(&self, kind: LockKind, name: &str) -> Option<&Lock> {
        self.locks.get(&(kind, name.to_string()))
    }

    /// Locks of `kind` named after `after`, in name order, at most `limit`, and whether more follow.
    pub fn list(&self, kind: LockKind, after: &str, limit: usize) -> (Vec<&Lock>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = (kind, after.to_string());
        let mut matching = self
            .locks
            .range((Excluded(start), Unbounded))
            .take_while(|((k, _), _)| *k == kind)
            .map(|(_, lock)| lock);
        let page: Vec<&Lock> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// Whether `token` is a current grant of the lock: what a fenced write requires.
    pub fn holds(&self, kind: LockKind, name: &str, token: Token) -> bool {
        self.get(kind, name)
            .is_some_and(|lock| lock.holders.contains_key(&token))
    }

    pub fn count(&self) -> usize {
        self.locks.len()
    }

    /// The tokens of the current grants of a lock, the lowest TXN_COMPARE_TOKENS_MAX (none: not
    /// held, or no such lock): what a transaction's failed compare on it reports.
    pub fn grant_tokens(&self, kind: LockKind, name: &str) -> Vec<Token> {
        self.get(kind, name)
            .map(|lock| {
                let tokens = lock.holders.keys().copied();
                tokens.take(TXN_COMPARE_TOKENS_MAX).collect()
            })
            .unwrap_or_default()
    }

    /// Checks the lock ops of one transaction (`(op index, op)`) without changing anything: the
    /// first refusal is the one `Release` would answer (`LockLost`).
    pub fn check_txn(&self, ops: &[(u32, &LockOp)]) -> Result<(), (u32, LockResponse)> {
        for &(index, op) in ops {
            let LockOp::Release { kind, name, token } = op;
            let key = (*kind, name.clone());
            let known = self.locks.get(&key).is_some_and(|lock| {
                lock.holders.contains_key(token) || lock.waiters.contains_key(token)
            });
            if !known {
                return Err((index, lost(&key, *token)));
            }
        }
        Ok(())
    }

    /// Applies one lock op that `check_txn` passed.
    pub fn apply_txn(&mut self, ctx: &mut Ctx, op: &LockOp) -> OpResult {
        let LockOp::Release { kind, name, token } = op;
        match self.release(ctx, (*kind, name), *token) {
            LockResponse::Released => OpResult::LockReleased,
            other => unreachable!("a checked release answered {other:?}"),
        }
    }

    /// Every lock, semaphore and election, by kind and name.
    pub fn iter(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values()
    }

    #[allow(clippy::too_many_arguments)] // the Acquire command's fields, one each
    fn acquire(
        &mut self,
        ctx: &mut Ctx,
        (kind, name): (LockKind, &str),
        holder: &Holder,
        (permits, limit): (u32, u32),
        wait_ms: u64,
        lock_delay_ms: u64,
        value: &[u8],
    ) -> LockResponse {
        if holder.session_id != 0 && !ctx.session_live(holder.session_id) {
            return LockResponse::SessionNotLive {
                session_id: holder.session_id,
            };
        }
        let key = (kind, name.to_string());
        if let Some(lock) = self.locks.get(&key) {
            if lock.limit != limit {
                return LockResponse::Mismatch {
                    reason: format!(
                        "{} {name:?} has {} permits, not {limit}",
                        kind.noun(),
                        lock.limit
                    ),
                };
            }
            let available = lock.waiters.is_empty()
                && lock.unavailable_until_ms <= ctx.now_ms
                && lock.free_permits() >= permits;
            if !available && wait_ms == 0 {
                return LockResponse::Busy;
            }
            if !available && lock.waiters.len() >= LOCK_WAITERS_MAX {
                return LockResponse::QuotaExceeded {
                    reason: format!(
                        "{} {name:?} already has {LOCK_WAITERS_MAX} waiters (LOCK_WAITERS_MAX)",
                        kind.noun()
                    ),
                };
            }
        } else if self.locks.len() >= LOCKS_MAX {
            return LockResponse::QuotaExceeded {
                reason: format!(
                    "the cluster holds its maximum of {LOCKS_MAX} locks, semaphores and elections (LOCKS_MAX)"
                ),
            };
        }
        self.last_token += 1;
        let token = self.last_token;
        let lock = self.locks.entry(key.clone()).or_insert_with(|| Lock {
            kind,
            name: name.to_string(),
            limit,
            lock_delay_ms,
            holders: BTreeMap::new(),
            waiters: BTreeMap::new(),
            unavailable_until_ms: 0,
            last_token: 0,
        });
        lock.last_token = token;
        let grant = Grant {
            token,
            holder: holder.clone(),
            permits,
            expires_at_ms: ctx.now_ms.saturating_add(wait_ms),
            since_ms: ctx.now_ms,
            value: value.to_vec(),
        };
        self.index_session(&key, &grant, true);
        self.enqueue(ctx, &key, grant);
        self.advance(ctx, &key);
        match self.locks[&key].holders.get(&token) {
            Some(grant) => LockResponse::Acquired {
                token,
                granted: true,
                expires_at_ms: grant.expires_at_ms,
            },
            None => LockResponse::Acquired {
                token,
                granted: false,
                expires_at_ms: 0,
            },
        }
    }

    fn enqueue(&mut self, ctx: &mut Ctx, key: &(LockKind, String), grant: Grant) {
        let lock = self.locks.get_mut(key).expect("created by acquire");
        let available = lock.waiters.is_empty()
            && lock.unavailable_until_ms <= ctx.now_ms
            && lock.free_permits() >= grant.permits;
        if !available {
            self.timers.insert((
                grant.expires_at_ms,
                Timer::WaitExpiry,
                key.0,
                key.1.clone(),
                grant.token,
            ));
            ctx.event(lock_event(
                LockEventKind::Queued,
                key,
                &grant,
                "waiting".into(),
            ));
        }
        lock.waiters.insert(grant.token, grant);
    }

    /// Grants waiters in arrival order while the first one fits (strictly first come, first
    /// served: a large request at the head is not overtaken by smaller ones).
    fn advance(&mut self, ctx: &mut Ctx, key: &(LockKind, String)) {
        loop {
            let Some(lock) = self.locks.get_mut(key) else {
                return;
            };
            if lock.unavailable_until_ms > ctx.now_ms {
                return;
            }
            let Some((&token, first)) = lock.waiters.first_key_value() else {
                return;
            };
            if first.permits > lock.free_permits() {
                return;
            }
            let mut grant = lock.waiters.remove(&token).expect("first");
            self.timers.remove(&(
                grant.expires_at_ms,
                Timer::WaitExpiry,
                key.0,
                key.1.clone(),
                token,
            ));
            grant.since_ms = ctx.now_ms;
            grant.expires_at_ms = if grant.holder.session_id == 0 {
                ctx.now_ms.saturating_add(grant.holder.ttl_ms)
            } else {
                0
            };
            if grant.expires_at_ms != 0 {
                self.timers.insert((
                    grant.expires_at_ms,
                    Timer::HoldExpiry,
                    key.0,
                    key.1.clone(),
                    token,
                ));
            }
            ctx.event(lock_event(
                LockEventKind::Granted,
                key,
                &grant,
                String::new(),
            ));
            lock.holders.insert(token, grant);
        }
    }

    fn release(&mut self, ctx: &mut Ctx, key: (LockKind, &str), token: Token) -> LockResponse {
        let key = (key.0, key.1.to_string());
        let Some(grant) = self.remove_grant(&key, token) else {
            return lost(&key, token);
        };
        let kind = if grant.1 {
            LockEventKind::Released
        } else {
            LockEventKind::WaitEnded
        };
        ctx.event(lock_event(kind, &key, &grant.0, "released".into()));
        self.advance(ctx, &key);
        self.forget_if_idle(ctx, &key);
        LockResponse::Released
    }

    fn keep_alive(&mut self, ctx: &mut Ctx, key: (LockKind, &str), token: Token) -> LockResponse {
        let key = (key.0, key.1.to_string());
        let Some(grant) = self
            .locks
            .get_mut(&key)
            .and_then(|lock| lock.holders.get_mut(&token))
        else {
            return lost(&key, token);
        };
        if grant.holder.session_id != 0 {
            return LockResponse::KeptAlive { expires_at_ms: 0 };
        }
        let old = grant.expires_at_ms;
        grant.expires_at_ms = old.max(ctx.now_ms.saturating_add(grant.holder.ttl_ms));
        let new = grant.expires_at_ms;
        self.retime(&key, token, old, new);
        LockResponse::KeptAlive { expires_at_ms: new }
    }

    fn proclaim(&mut self, ctx: &mut Ctx, name: &str, token: Token, value: &[u8]) -> LockResponse {
        let key = (LockKind::Election, name.to_string());
        let Some(grant) = self
            .locks
            .get_mut(&key)
            .and_then(|lock| lock.holders.get_mut(&token))
        else {
            return lost(&key, token);
        };
        grant.value = value.to_vec();
        let event = lock_event(LockEventKind::Proclaimed, &key, grant, String::new());
        ctx.event(event);
        LockResponse::Proclaimed
    }

    /// Takes a grant away from its holder (not released): the lock-delay starts.
    fn lose(&mut self, ctx: &mut Ctx, key: &(LockKind, String), token: Token, reason: &str) {
        let Some((grant, true)) = self.remove_grant(key, token) else {
            return;
        };
        ctx.event(lock_event(LockEventKind::Lost, key, &grant, reason.into()));
        let lock = self.locks.get_mut(key).expect("the grant was in it");
        if lock.lock_delay_ms > 0 {
            let until = ctx.now_ms.saturating_add(lock.lock_delay_ms);
            if until > lock.unavailable_until_ms {
                let old = lock.unavailable_until_ms;
                lock.unavailable_until_ms = until;
                self.timers
                    .remove(&(old, Timer::DelayOver, key.0, key.1.clone(), 0));
                self.timers
                    .insert((until, Timer::DelayOver, key.0, key.1.clone(), 0));
            }
        }
        self.advance(ctx, key);
        self.forget_if_idle(ctx, key);
    }

    /// Removes a grant (true) or a waiter (false) with its timer and session index entry.
    fn remove_grant(&mut self, key: &(LockKind, String), token: Token) -> Option<(Grant, bool)> {
        let lock = self.locks.get_mut(key)?;
        let (grant, held) = match lock.holders.remove(&token) {
            Some(grant) => (grant, true),
            None => (lock.waiters.remove(&token)?, false),
        };
        let timer = if held {
            Timer::HoldExpiry
        } else {
            Timer::WaitExpiry
        };
        self.timers
            .remove(&(grant.expires_at_ms, timer, key.0, key.1.clone(), token));
        self.index_session(key, &grant, false);
        Some((grant, held))
    }

    fn retime(&mut self, key: &(LockKind, String), token: Token, old: u64, new: u64) {
        self.timers
            .remove(&(old, Timer::HoldExpiry, key.0, key.1.clone(), token));
        self.timers
            .insert((new, Timer::HoldExpiry, key.0, key.1.clone(), token));
    }

    fn forget_if_idle(&mut self, ctx: &Ctx, key: &(LockKind, String)) {
        if self.locks.get(key).is_some_and(|lock| {
            lock.holders.is_empty()
                && lock.waiters.is_empty()
                && lock.unavailable_until_ms <= ctx.now_ms
        }) {
            self.locks.remove(key);
        }
    }

    fn index_session(&mut self, key: &(LockKind, String), grant: &Grant, insert: bool) {
        let session_id = grant.holder.session_id;
        if session_id == 0 {
            return;
        }
        let entry = (key.0, key.1.clone(), grant.token);
        if insert {
            self.by_session.entry(session_id).or_default().insert(entry);
        } else if let Some(set) = self.by_session.get_mut(&session_id) {
            set.remove(&entry);
            if set.is_empty() {
                self.by_session.remove(&session_id);
            }
        }
    }

    fn fire(&mut self, ctx: &mut Ctx, (_, timer, kind, name, token): TimerEntry) {
        let key = (kind, name);
        match timer {
            Timer::HoldExpiry => self.lose(ctx, &key, token, "its TTL passed without a keep-alive"),
            Timer::WaitExpiry => {
                if let Some((grant, _)) = self.remove_grant(&key, token) {
                    let event =
                        lock_event(LockEventKind::WaitEnded, &key, &grant, "wait ended".into());
                    ctx.event(event);
                    self.advance(ctx, &key);
                    self.forget_if_idle(ctx, &key);
                }
            }
            Timer::DelayOver => {
                if let Some(lock) = self.locks.get_mut(&key) {
                    lock.unavailable_until_ms = 0;
                    ctx.event(CoordEventKind::Lock(LockEvent {
                        kind: LockEventKind::DelayEnded,
                        lock: key.0,
                        name: key.1.clone(),
                        token: 0,
                        session_id: 0,
                        reason: String::new(),
                    }));
                }
                self.advance(ctx, &key);
                self.forget_if_idle(ctx, &key);
            }
        }
    }
}

impl Primitive for Locks {
    fn tick(&mut self, ctx: &mut Ctx) {
        while let Some(first) = self.timers.first() {
            if first.0 > ctx.now_ms {
                break;
            }
            let timer = self.timers.pop_first().expect("first");
            self.fire(ctx, timer);
        }
    }

    fn refresh(&mut self, ctx: &mut Ctx) {
        let leases: Vec<((LockKind, String), Token, u64, u64)> = self
            .locks
            .iter()
            .flat_map(|(key, lock)| {
                lock.holders
                    .values()
                    .filter(|g| g.holder.session_id == 0)
                    .map(move |g| (key.clone(), g.token, g.expires_at_ms, g.holder.ttl_ms))
            })
            .collect();
        for (key, token, old, ttl_ms) in leases {
            let new = old.max(ctx.now_ms.saturating_add(ttl_ms));
            if new != old {
                let lock = self.locks.get_mut(&key).expect("listed above");
                lock.holders
                    .get_mut(&token)
                    .expect("listed above")
                    .expires_at_ms = new;
                self.retime(&key, token, old, new);
            }
        }
    }

    fn on_effect(&mut self, ctx: &mut Ctx, effect: &Effect) {
        let Effect::SessionEnded { session_id, .. } = effect else {
            return;
        };
        let Some(held) = self.by_session.remove(session_id) else {
            return;
        };
        for (kind, name, token) in held {
            let key = (kind, name);
            let holding = self
                .locks
                .get(&key)
                .is_some_and(|lock| lock.holders.contains_key(&token));
            if holding {
                self.lose(ctx, &key, token, "its session ended");
            } else if let Some((grant, _)) = self.remove_grant(&key, token) {
                ctx.event(lock_event(
                    LockEventKind::WaitEnded,
                    &key,
                    &grant,
                    "its session ended".into(),
                ));
                self.advance(ctx, &key);
                self.forget_if_idle(ctx, &key);
            }
        }
    }

    fn next_due_ms(&self, _now_ms: u64) -> Option<u64> {
        self.timers.first().map(|timer| timer.0)
    }

    fn digest(&self) -> u64 {
        let mut hash = Fnv::default();
        hash.write(&self.last_token.to_be_bytes());
        for ((kind, name), lock) in &self.locks {
            hash.write(&[*kind as u8]);
            hash.write(&(name.len() as u64).to_be_bytes());
            hash.write(name.as_bytes());
            hash.write(&lock.unavailable_until_ms.to_be_bytes());
            for grant in lock.holders.values().chain(lock.waiters.values()) {
                for n in [grant.token, grant.expires_at_ms, u64::from(grant.permits)] {
                    hash.write(&n.to_be_bytes());
                }
                hash.write(&(grant.value.len() as u64).to_be_bytes());
                hash.write(&grant.value);
            }
        }
        hash.finish()
    }
}

fn lost(key: &(LockKind, String), token: Token) -> LockResponse {
    LockResponse::LockLost {
        reason: format!(
            "lock lost: token {token} does not hold or wait for {} {:?}",
            key.0.noun(),
            key.1
        ),
    }
}

fn lock_event(
    kind: LockEventKind,
    key: &(LockKind, String),
    grant: &Grant,
    reason: String,
) -> CoordEventKind {
    CoordEventKind::Lock(LockEvent {
        kind,
        lock: key.0,
        name: key.1.clone(),
        token: grant.token,
        session_id: grant.holder.session_id,
        reason,
    })
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT (commands, kinds) or SNAPSHOT_FORMAT (the rest). ----

impl LockKind {
    pub const fn code(&self) -> u16 {
        match self {
            LockKind::Lock => 0,
            LockKind::Semaphore => 1,
            LockKind::Election => 2,
        }
    }
}

impl LockCommand {
    pub const fn code(&self) -> u16 {
        match self {
            LockCommand::Acquire { .. } => 0,
            LockCommand::Release { .. } => 1,
            LockCommand::KeepAlive { .. } => 2,
            LockCommand::Proclaim { .. } => 3,
        }
    }
}

impl LockOp {
    pub const fn code(&self) -> u16 {
        match self {
            LockOp::Release { .. } => 0,
        }
    }
}

impl LockResponse {
    pub const fn code(&self) -> u16 {
        match self {
            LockResponse::Acquired { .. } => 0,
            LockResponse::Busy => 1,
            LockResponse::Released => 2,
            LockResponse::KeptAlive { .. } => 3,
            LockResponse::Proclaimed => 4,
            LockResponse::LockLost { .. } => 5,
            LockResponse::Mismatch { .. } => 6,
            LockResponse::SessionNotLive { .. } => 7,
            LockResponse::QuotaExceeded { .. } => 8,
        }
    }
}

impl LockEventKind {
    pub const fn code(&self) -> u16 {
        match self {
            LockEventKind::Granted => 0,
            LockEventKind::Released => 1,
            LockEventKind::Lost => 2,
            LockEventKind::Queued => 3,
            LockEventKind::WaitEnded => 4,
            LockEventKind::Proclaimed => 5,
            LockEventKind::DelayEnded => 6,
        }
    }
}

impl Timer {
    pub const fn code(&self) -> u16 {
        match self {
            Timer::DelayOver => 0,
            Timer::HoldExpiry => 1,
            Timer::WaitExpiry => 2,
        }
    }
}

#[cfg(test)]
mod tests;
