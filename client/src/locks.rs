//! Lock calls (locks.proto): fenced locks and semaphores (the Locks service), leader elections (the
//! Elections service), their watches, and [`HeldLock`], which keeps a lease-held grant alive.
//!
//! Every grant carries a fencing token. Give it to the resources you protect: as a [`Fence`] on
//! key-value writes ([`Client::put_fenced`], ...) and task completions
//! ([`crate::AgentSession::complete_fenced`]), which the cluster applies only while the grant is
//! current, and to any other system as a number that only grows.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conclave_proto::limits::{
    MAX_ELECTION_VALUE_BYTES, MAX_LOCK_DELAY_MS, MAX_LOCK_TTL_MS, MAX_LOCK_WAIT_MS,
    MAX_SEMAPHORE_LIMIT, MAX_TASK_LIST_LIMIT, MIN_LOCK_TTL_MS,
};
use conclave_proto::v1::elections_client::ElectionsClient;
use conclave_proto::v1::locks_client::LocksClient;
use conclave_proto::v1::{
    self as proto, lock_event, AcquireRequest, CampaignRequest, Fence, FenceKind, GetLockRequest,
    Grant, Holder, KeepAliveRequest, LeaderRequest, ListLocksRequest, Lock, LockEvent, LockKind,
    ObserveRequest, ProclaimRequest, ReadConsistency, ReleaseLockRequest, ResignRequest,
    WatchLockRequest,
};
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic::Code;

use crate::client::{served_by_header, CallKind, CallTimes, Client, MAX_RESPONSE_BYTES};
use crate::endpoint::Node;
use crate::error::{describe, Error, Result};
use crate::feed::{IDLE_CHECK, STREAM_END_PAUSE};
use crate::kv::Header;
use crate::stream::{is_final, open_stream};
use conclave_proto::validate;

/// The shortest attempt of a keep-alive, and the shortest pause between keep-alives.
const KEEP_ALIVE_ATTEMPT_MIN: Duration = Duration::from_millis(250);
const KEEP_ALIVE_MIN: Duration = Duration::from_millis(100);

/// Who holds a grant: a lease the client keeps alive, or a live agent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockHolder {
    /// A lease with this TTL (1 s ..= 1 h), renewed by keep-alives ([`Client::keep_alive_lock`],
    /// or [`HeldLock`] in the background); lost when the TTL passes without one.
    Lease(Duration),
    /// The live agent session with this id: lost when the session ends, which the session is told
    /// as [`crate::AgentEvent::HoldLost`].
    Session(u64),
}

/// How [`Client::acquire_lock`], [`Client::acquire_semaphore`] and [`Client::campaign`] take a
/// grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireOptions {
    pub holder: LockHolder,
    /// A name for people (who holds it), at most 128 bytes.
    pub owner: String,
    /// How long to wait in the queue, at most 5 min; zero tries once. The call's deadline is this
    /// plus the client's deadline.
    pub wait: Duration,
    /// The lock-delay after a lost holder, at most 60 s, for a lock this call creates (`None`: the
    /// cluster's 3 s).
    pub lock_delay: Option<Duration>,
}

impl AcquireOptions {
    /// A lease holder with `ttl`, trying once.
    pub fn lease(ttl: Duration) -> AcquireOptions {
        AcquireOptions {
            holder: LockHolder::Lease(ttl),
            owner: String::new(),
            wait: Duration::ZERO,
            lock_delay: None,
        }
    }

    /// The agent session `session_id` as holder, trying once.
    pub fn session(session_id: u64) -> AcquireOptions {
        AcquireOptions {
            holder: LockHolder::Session(session_id),
            ..AcquireOptions::lease(Duration::ZERO)
        }
    }

    /// The same options, waiting up to `wait` in the queue.
    pub fn waiting(mut self, wait: Duration) -> AcquireOptions {
        self.wait = wait;
        self
    }

    /// The same options, naming the holder for people.
    pub fn owned_by(mut self, owner: impl Into<String>) -> AcquireOptions {
        self.owner = owner.into();
        self
    }
}

/// The result of an acquire or a campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Acquisition {
    pub header: Header,
    pub kind: LockKind,
    pub name: String,
    /// Whether the grant is held now. False when the wait ended first (not an error); the place
    /// in the queue was given up.
    pub acquired: bool,
    /// The grant's fencing token (when not acquired: the token the request was queued with, now
    /// given up).
    pub token: u64,
    /// A lease holder's expiry in cluster time (Unix ms); 0 for a session holder.
    pub expires_at_ms: u64,
    /// The lock as it stood when the call was answered.
    pub lock: Option<Lock>,
}

impl Acquisition {
    /// The fence for writes made under this grant.
    pub fn fence(&self) -> Fence {
        fence(self.kind, &self.name, self.token)
    }
}

/// The result of a keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptAlive {
    pub header: Header,
    /// The new expiry in cluster time (Unix ms).
    pub expires_at_ms: u64,
}

/// One lock (or election) as read.
#[derive(Debug, Clone, PartialEq)]
pub struct LockRead {
    pub header: Header,
    pub lock: Lock,
}

/// Who leads an election.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderRead {
    pub header: Header,
    /// The leader's grant (token, holder, value); `None` while only candidates wait (a lost
    /// leader's lock-delay).
    pub leader: Option<Grant>,
    pub election: Option<Lock>,
}

/// What [`Client::list_locks`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockListOptions {
    /// Names strictly after this one (empty: from the start).
    pub after: String,
    /// Page size, 1 ..= 1000; 0 means 100.
    pub limit: u32,
    pub consistency: ReadConsistency,
}

impl Default for LockListOptions {
    fn default() -> Self {
        LockListOptions {
            after: String::new(),
            limit: 0,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// One page of locks, in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct LockPage {
    pub header: Header,
    pub locks: Vec<Lock>,
    /// True when more follow; continue with `after` set to the last name.
    pub more: bool,
}

/// A fence naming the grant `token` of `kind` `name`.
pub fn fence(kind: LockKind, name: &str, token: u64) -> Fence {
    Fence {
        kind: fence_kind(kind) as i32,
        name: name.to_string(),
        token,
    }
}

/// The fence kind of a lock kind.
pub fn fence_kind(kind: LockKind) -> FenceKind {
    match kind {
        LockKind::Lock => FenceKind::Lock,
        LockKind::Semaphore => FenceKind::Semaphore,
        LockKind::Election => FenceKind::Election,
    }
}

impl Client {
    /// Takes the lock `name`. With `options.wait` zero it tries once; otherwise it joins the queue
    /// and waits its turn for up to that long. Not granted in time is `acquired == false`, not an
    /// error. A retry after an unknown outcome carries the same request id, so it finds the same
    /// place in the queue (and the same token).
    pub async fn acquire_lock(&self, name: &str, options: &AcquireOptions) -> Result<Acquisition> {
        self.acquire(LockKind::Lock, name, 0, 0, options).await
    }

    /// Takes `permits` (1 ..= `limit`; 0 means 1) of the semaphore `name`, which has `limit`
    /// permits (1 ..= 10,000, fixed by the request that creates it: another limit later is
    /// `Rejected { code: FailedPrecondition }`). Waiting as [`Client::acquire_lock`].
    pub async fn acquire_semaphore(
        &self,
        name: &str,
        limit: u32,
        permits: u32,
        options: &AcquireOptions,
    ) -> Result<Acquisition> {
        if !(1..=MAX_SEMAPHORE_LIMIT).contains(&limit) {
            return Err(Error::invalid_input(format!(
                "limit is {limit}; it must be within 1 ..= {MAX_SEMAPHORE_LIMIT}"
            )));
        }
        if permits > limit {
            return Err(Error::invalid_input(format!(
                "permits is {permits}; it must be within 1 ..= the limit of {limit}"
            )));
        }
        self.acquire(LockKind::Semaphore, name, permits, limit, options)
            .await
    }

    async fn acquire(
        &self,
        kind: LockKind,
        name: &str,
        permits: u32,
        limit: u32,
        options: &AcquireOptions,
    ) -> Result<Acquisition> {
        validate::name("name", name)?;
        let (holder, wait_ms, lock_delay_ms) = check_acquire(options)?;
        let request = AcquireRequest {
            request_id: None,
            kind: kind as i32,
            name: name.to_string(),
            holder: Some(holder),
            permits,
            limit,
            wait_ms,
            lock_delay_ms,
        };
        let pending = self.begin_write();
        let response = self
            .call_with(CallKind::Write, waiting(options.wait), |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { locks(channel).acquire(request).await }
            })
            .await?;
        Ok(Acquisition {
            header: response.header.into(),
            kind,
            name: name.to_string(),
            acquired: response.acquired,
            token: response.token,
            expires_at_ms: response.expires_at_ms,
            lock: response.lock,
        })
    }

    /// Gives the grant `token` of a lock or semaphore back (no lock-delay), or leaves the queue. A
    /// grant that is no longer current is [`Error::LockLost`].
    pub async fn release_lock(&self, kind: LockKind, name: &str, token: u64) -> Result<Header> {
        if kind == LockKind::Election {
            return self.resign(name, token).await;
        }
        check_lock_verb(name, token)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = ReleaseLockRequest {
                    request_id: Some(pending.request_id()),
                    kind: kind as i32,
                    name: name.to_string(),
                    token,
                };
                async move { locks(channel).release(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Renews a lease holder's TTL from now. [`Error::LockLost`] once the grant is gone: stop
    /// using the token. [`HeldLock`] does this in the background.
    pub async fn keep_alive_lock(
        &self,
        kind: LockKind,
        name: &str,
        token: u64,
    ) -> Result<KeptAlive> {
        self.keep_alive_within(kind, name, token, Duration::ZERO)
            .await
    }

    /// [`Client::keep_alive_lock`] for a lease of `ttl` (zero: unknown): each attempt gets at most
    /// a quarter of it, since a keep-alive held up past the TTL is worthless.
    pub(crate) async fn keep_alive_within(
        &self,
        kind: LockKind,
        name: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<KeptAlive> {
        check_lock_verb(name, token)?;
        let times = CallTimes {
            server_wait: Duration::ZERO,
            attempt_limit: (!ttl.is_zero()).then(|| (ttl / 4).max(KEEP_ALIVE_ATTEMPT_MIN)),
        };
        let pending = self.begin_write();
        let response = self
            .call_with(CallKind::Write, times, |channel| {
                let request = KeepAliveRequest {
                    request_id: Some(pending.request_id()),
                    kind: kind as i32,
                    name: name.to_string(),
                    token,
                };
                async move { locks(channel).keep_alive(request).await }
            })
            .await?;
        Ok(KeptAlive {
            header: response.header.into(),
            expires_at_ms: response.expires_at_ms,
        })
    }

    /// Reads one lock or semaphore linearizably; one nobody holds or waits for is
    /// `Rejected { code: NotFound }`.
    pub async fn get_lock(&self, kind: LockKind, name: &str) -> Result<LockRead> {
        self.get_lock_with(kind, name, ReadConsistency::Linearizable)
            .await
    }

    /// Reads one lock or semaphore with the given consistency.
    pub async fn get_lock_with(
        &self,
        kind: LockKind,
        name: &str,
        consistency: ReadConsistency,
    ) -> Result<LockRead> {
        validate::name("name", name)?;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetLockRequest {
                    kind: kind as i32,
                    name: name.to_string(),
                    consistency: consistency.into(),
                };
                async move { locks(channel).get_lock(request).await }
            })
            .await?;
        Ok(LockRead {
            header: response.header.into(),
            lock: response.lock.ok_or_else(|| missing("lock"))?,
        })
    }

    /// Reads one page of the locks (or semaphores) in name order.
    pub async fn list_locks(&self, kind: LockKind, options: LockListOptions) -> Result<LockPage> {
        check_page(&options.after, options.limit)?;
        let consistency = options.consistency;
        let request = ListLocksRequest {
            kind: kind as i32,
            after: options.after,
            limit: options.limit,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { locks(channel).list_locks(request).await }
            })
            .await?;
        Ok(LockPage {
            header: response.header.into(),
            locks: response.locks,
            more: response.more,
        })
    }

    /// Watches one lock or semaphore: yields its state now (a `CURRENT` event, with `lock` absent
    /// when nobody holds or waits for it), then one event per change. Survives node failures: a
    /// reconnect yields the state again as `CURRENT` (unless nothing changed since the last event
    /// yielded), so changes made while disconnected are summed up, not replayed.
    pub async fn watch_lock(&self, kind: LockKind, name: &str) -> Result<LockEventStream> {
        validate::name("name", name)?;
        let target = WatchTarget::Lock(kind, name.to_string());
        LockEventStream::open(self.clone(), target).await
    }

    /// Joins the election `election` as a candidate publishing `value` (at most 4096 bytes), and
    /// waits up to `options.wait` to lead (zero: tries once). `acquired` says whether it leads; the
    /// token is its term's fencing token. Retried as [`Client::acquire_lock`].
    pub async fn campaign(
        &self,
        election: &str,
        value: impl Into<Vec<u8>>,
        options: &AcquireOptions,
    ) -> Result<Acquisition> {
        validate::name("election", election)?;
        let value = value.into();
        check_value(&value)?;
        let (holder, wait_ms, lock_delay_ms) = check_acquire(options)?;
        let request = CampaignRequest {
            request_id: None,
            election: election.to_string(),
            holder: Some(holder),
            value,
            wait_ms,
            lock_delay_ms,
        };
        let pending = self.begin_write();
        let response = self
            .call_with(CallKind::Write, waiting(options.wait), |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { elections(channel).campaign(request).await }
            })
            .await?;
        Ok(Acquisition {
            header: response.header.into(),
            kind: LockKind::Election,
            name: election.to_string(),
            acquired: response.elected,
            token: response.token,
            expires_at_ms: response.expires_at_ms,
            lock: response.election,
        })
    }

    /// Replaces the leader's value. [`Error::LockLost`] when `token` no longer leads.
    pub async fn proclaim(
        &self,
        election: &str,
        token: u64,
        value: impl Into<Vec<u8>>,
    ) -> Result<Header> {
        check_lock_verb(election, token)?;
        let value = value.into();
        check_value(&value)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = ProclaimRequest {
                    request_id: Some(pending.request_id()),
                    election: election.to_string(),
                    token,
                    value: value.clone(),
                };
                async move { elections(channel).proclaim(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Gives leadership up (the next candidate leads at once), or leaves the queue.
    /// [`Error::LockLost`] when `token` no longer leads or waits.
    pub async fn resign(&self, election: &str, token: u64) -> Result<Header> {
        check_lock_verb(election, token)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = ResignRequest {
                    request_id: Some(pending.request_id()),
                    election: election.to_string(),
                    token,
                };
                async move { elections(channel).resign(request).await }
            })
            .await?;
        Ok(response.header.into())
    }

    /// Reads who leads `election`, linearizably; an election nobody leads or campaigns in is
    /// `Rejected { code: NotFound }`.
    pub async fn election_leader(&self, election: &str) -> Result<LeaderRead> {
        self.election_leader_with(election, ReadConsistency::Linearizable)
            .await
    }

    /// Reads who leads `election` with the given consistency.
    pub async fn election_leader_with(
        &self,
        election: &str,
        consistency: ReadConsistency,
    ) -> Result<LeaderRead> {
        validate::name("election", election)?;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = LeaderRequest {
                    election: election.to_string(),
                    consistency: consistency.into(),
                };
                async move { elections(channel).leader(request).await }
            })
            .await?;
        Ok(LeaderRead {
            header: response.header.into(),
            leader: response.leader,
            election: response.election,
        })
    }

    /// Reads one page of elections in name order.
    pub async fn list_elections(&self, options: LockListOptions) -> Result<LockPage> {
        self.list_locks(LockKind::Election, options).await
    }

    /// Observes an election: its state now, then every change of leader or value, as
    /// [`Client::watch_lock`].
    pub async fn observe(&self, election: &str) -> Result<LockEventStream> {
        validate::name("election", election)?;
        let target = WatchTarget::Election(election.to_string());
        LockEventStream::open(self.clone(), target).await
    }
}

/// A lease-held grant kept alive in the background: a keep-alive every third of the TTL. The
/// grant counts as lost when a keep-alive is answered [`Error::LockLost`] (or refused for good), or
/// when no keep-alive has succeeded within the TTL by this process's clock, counted from when the
/// last successful one was sent: past that point the cluster may have given the lock to someone
/// else, so it must be treated as lost even if the cluster cannot be reached to say so.
///
/// Dropping it stops the keep-alives (the lease then expires after its TTL, and the lock-delay
/// applies); [`HeldLock::release`] gives it back at once.
#[derive(Debug)]
pub struct HeldLock {
    client: Client,
    kind: LockKind,
    name: String,
    token: u64,
    ttl: Duration,
    lost: watch::Receiver<Option<LockLoss>>,
    keeper: tokio::task::JoinHandle<()>,
}

/// Why a [`HeldLock`] was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLoss {
    /// True when the cluster said so (a keep-alive answered lock-lost, or refused for good); false
    /// when the TTL passed with no keep-alive acknowledged, so it may in fact still be held until
    /// its expiry, but no longer safely.
    pub confirmed: bool,
    /// What happened.
    pub reason: String,
}

impl std::fmt::Display for LockLoss {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.reason)
    }
}

impl HeldLock {
    /// Takes the lock `name` under a lease of `ttl`, waiting up to `wait`, and keeps it alive.
    /// `Ok(None)` when it was not granted within the wait.
    pub async fn acquire_lock(
        client: &Client,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<HeldLock>> {
        let options = AcquireOptions::lease(ttl).waiting(wait);
        let sent = Instant::now();
        let acquired = client.acquire_lock(name, &options).await?;
        Self::start(client, &acquired, ttl, sent).await
    }

    /// Like [`HeldLock::acquire_lock`] for `permits` of the semaphore `name` of `limit` permits.
    pub async fn acquire_semaphore(
        client: &Client,
        name: &str,
        limit: u32,
        permits: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<HeldLock>> {
        let options = AcquireOptions::lease(ttl).waiting(wait);
        let sent = Instant::now();
        let acquired = client
            .acquire_semaphore(name, limit, permits, &options)
            .await?;
        Self::start(client, &acquired, ttl, sent).await
    }

    /// Campaigns in `election` with `value` under a lease of `ttl`, waiting up to `wait` to lead,
    /// and keeps the leadership alive. `Ok(None)` when not elected within the wait.
    pub async fn campaign(
        client: &Client,
        election: &str,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<HeldLock>> {
        let options = AcquireOptions::lease(ttl).waiting(wait);
        let sent = Instant::now();
        let acquired = client.campaign(election, value, &options).await?;
        Self::start(client, &acquired, ttl, sent).await
    }

    /// Keeps alive a grant acquired with a lease of `ttl` by a call sent at `sent` (this process's
    /// monotonic clock). A grant acquired after a long wait is kept alive once before this returns,
    /// since its expiry cannot be bounded by the local clock otherwise.
    pub async fn start(
        client: &Client,
        acquired: &Acquisition,
        ttl: Duration,
        sent: Instant,
    ) -> Result<Option<HeldLock>> {
        if !acquired.acquired {
            return Ok(None);
        }
        if ttl.is_zero() {
            return Err(Error::invalid_input(
                "a HeldLock keeps a lease alive; give the lease's TTL",
            ));
        }
        // The grant happened at some moment between `sent` and now, so its expiry is at least
        // `sent + ttl` away from `sent`. After a long wait that bound is too close: renew first.
        let mut valid_until = sent + ttl;
        if valid_until.saturating_duration_since(Instant::now()) < ttl * 2 / 3 {
            let renewed = Instant::now();
            let kept = client
                .keep_alive_within(acquired.kind, &acquired.name, acquired.token, ttl)
                .await;
            if let Err(error) = kept {
                // Not usable without a bound on its expiry: give it back rather than leave it to
                // expire (and hold up others for the lock-delay).
                let _ = client
                    .release_lock(acquired.kind, &acquired.name, acquired.token)
                    .await;
                return Err(error);
            }
            valid_until = renewed + ttl;
        }
        let (report, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(
            client.clone(),
            acquired.kind,
            acquired.name.clone(),
            acquired.token,
            ttl,
            valid_until,
            report,
        ));
        Ok(Some(HeldLock {
            client: client.clone(),
            kind: acquired.kind,
            name: acquired.name.clone(),
            token: acquired.token,
            ttl,
            lost,
            keeper,
        }))
    }

    pub fn kind(&self) -> LockKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The grant's fencing token.
    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fence for writes made under this grant.
    pub fn fence(&self) -> Fence {
        fence(self.kind, &self.name, self.token)
    }

    /// Why the grant was lost, if it has been.
    pub fn loss(&self) -> Option<LockLoss> {
        self.lost.borrow().clone()
    }

    /// True once the grant is lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Resolves when the grant is lost (at once if it already is). Cancel-safe.
    pub async fn lost(&self) -> LockLoss {
        let mut lost = self.lost.clone();
        let loss = match lost.wait_for(Option::is_some).await {
            Ok(loss) => loss.clone(),
            Err(_) => None,
        };
        // The keeper ended without reporting: it can only have been aborted, by drop.
        loss.unwrap_or_else(|| LockLoss {
            confirmed: false,
            reason: "the keep-alives stopped".to_string(),
        })
    }

    /// Stops the keep-alives and gives the grant back (resigns, for an election). A grant already
    /// lost is [`Error::LockLost`] (when the cluster says so).
    pub async fn release(self) -> Result<Header> {
        self.keeper.abort();
        self.client
            .release_lock(self.kind, &self.name, self.token)
            .await
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The keep-alive loop of a [`HeldLock`]: one every third of the TTL; reports the loss and ends.
async fn keep_alive(
    client: Client,
    kind: LockKind,
    name: String,
    token: u64,
    ttl: Duration,
    mut valid_until: Instant,
    report: watch::Sender<Option<LockLoss>>,
) {
    let every = (ttl / 3).max(KEEP_ALIVE_MIN);
    let mut next = Instant::now() + every;
    let mut last_error = String::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(valid_until) => {
                let _ = report.send(Some(expired(ttl, &last_error)));
                return;
            }
        }
        let sent = Instant::now();
        let attempt = client.keep_alive_within(kind, &name, token, ttl);
        let outcome = match tokio::time::timeout_at(valid_until, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let _ = report.send(Some(expired(ttl, &last_error)));
                return;
            }
        };
        match outcome {
            Ok(_) => {
                valid_until = sent + ttl;
                next = sent + every;
                last_error.clear();
            }
            Err(Error::LockLost { message }) => {
                let _ = report.send(Some(LockLoss {
                    confirmed: true,
                    reason: format!("lock lost: {message}"),
                }));
                return;
            }
            // Refused for good: retrying the same keep-alive cannot succeed.
            Err(error @ (Error::Rejected { .. } | Error::InvalidInput { .. }))
                if !matches!(
                    error.rejected_code(),
                    Some(Code::Unavailable | Code::ResourceExhausted)
                ) =>
            {
                let _ = report.send(Some(LockLoss {
                    confirmed: true,
                    reason: format!("a keep-alive was refused: {error}"),
                }));
                return;
            }
            Err(error) => {
                tracing::debug!(%name, token, %error, "a keep-alive failed; trying again");
                last_error = error.to_string();
                next = Instant::now() + KEEP_ALIVE_MIN.max(every / 4);
            }
        }
    }
}

fn expired(ttl: Duration, last_error: &str) -> LockLoss {
    LockLoss {
        confirmed: false,
        reason: format!(
            "no keep-alive succeeded within the TTL of {ttl:?}{}",
            if last_error.is_empty() {
                String::new()
            } else {
                format!("; last failure: {last_error}")
            }
        ),
    }
}

/// What a [`LockEventStream`] follows.
#[derive(Debug, Clone)]
enum WatchTarget {
    Lock(LockKind, String),
    Election(String),
}

/// The events of one lock, semaphore or election: `CURRENT` first (and again after a reconnect),
/// then one per change. Ends only after an error.
pub struct LockEventStream {
    inner: BoxStream<'static, Result<LockEvent>>,
}

impl std::fmt::Debug for LockEventStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LockEventStream")
            .finish_non_exhaustive()
    }
}

impl Stream for LockEventStream {
    type Item = Result<LockEvent>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

impl LockEventStream {
    async fn open(client: Client, target: WatchTarget) -> Result<LockEventStream> {
        let mut watcher = LockWatcher {
            client,
            target,
            stream: None,
            last_sequence: None,
            done: false,
        };
        watcher.connect().await?;
        let inner = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        })
        .boxed();
        Ok(LockEventStream { inner })
    }
}

struct LockWatcher {
    client: Client,
    target: WatchTarget,
    stream: Option<(Arc<Node>, Streaming<LockEvent>)>,
    /// The sequence of the last event yielded.
    last_sequence: Option<u64>,
    done: bool,
}

impl LockWatcher {
    async fn connect(&mut self) -> Result<()> {
        let opened = match &self.target {
            WatchTarget::Lock(kind, name) => {
                let request = WatchLockRequest {
                    kind: *kind as i32,
                    name: name.clone(),
                };
                open_stream(&self.client, "lock watch", |channel| {
                    let request = request.clone();
                    async move { locks(channel).watch_lock(request).await }
                })
                .await?
            }
            WatchTarget::Election(election) => {
                let request = ObserveRequest {
                    election: election.clone(),
                };
                open_stream(&self.client, "election observer", |channel| {
                    let request = request.clone();
                    async move { elections(channel).observe(request).await }
                })
                .await?
            }
        };
        self.stream = Some(opened);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<LockEvent>> {
        loop {
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                if let Err(error) = self.connect().await {
                    self.done = true;
                    return Some(Err(error));
                }
                continue;
            }
            let (node, stream) = self.stream.as_mut().expect("connected above");
            let message = tokio::select! {
                message = stream.message() => message,
                () = tokio::time::sleep(IDLE_CHECK) => {
                    let node = Arc::clone(node);
                    if !self.client.node_serves(&node).await {
                        self.client.node_failed(&node);
                        self.stream = None;
                    }
                    continue;
                }
            };
            match message {
                Ok(Some(event)) => {
                    // After a reconnect the state comes again; nothing new if no event went by.
                    let repeat = event.kind == lock_event::Kind::Current as i32
                        && self.last_sequence == Some(event.sequence);
                    if repeat {
                        continue;
                    }
                    self.last_sequence = Some(event.sequence);
                    return Some(Ok(event));
                }
                Ok(None) => {
                    self.stream = None;
                    tokio::time::sleep(STREAM_END_PAUSE).await;
                }
                Err(status) => {
                    let (node, _) = self.stream.take().expect("still open");
                    if is_final(&status) {
                        self.done = true;
                        return Some(Err(Error::Rejected {
                            code: status.code(),
                            message: format!("{}: {}", node.address, describe(&status)),
                        }));
                    }
                    self.client.node_failed(&node);
                }
            }
        }
    }
}

/// A Locks stub on `channel`, accepting responses up to the client's bound.
fn locks(channel: Channel) -> LocksClient<Channel> {
    LocksClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// An Elections stub on `channel`.
fn elections(channel: Channel) -> ElectionsClient<Channel> {
    ElectionsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// A call that the server may hold for `wait`: each attempt and the whole call get that long more.
pub(crate) fn waiting(wait: Duration) -> CallTimes {
    CallTimes {
        server_wait: wait,
        attempt_limit: None,
    }
}

fn missing(field: &str) -> Error {
    Error::Unavailable {
        message: format!("the server's answer lacks its {field}"),
    }
}

/// Checks a holder, a wait and a lock-delay; returns them as the wire has them.
fn check_acquire(options: &AcquireOptions) -> Result<(Holder, u64, Option<u64>)> {
    validate::max_bytes(
        "owner",
        options.owner.as_bytes(),
        conclave_proto::limits::MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    let holder = match options.holder {
        LockHolder::Lease(ttl) => {
            let ttl_ms = ttl.as_millis() as u64;
            if !(MIN_LOCK_TTL_MS..=MAX_LOCK_TTL_MS).contains(&ttl_ms) {
                return Err(Error::invalid_input(format!(
                    "ttl is {ttl_ms} ms; it must be within {MIN_LOCK_TTL_MS} ..= {MAX_LOCK_TTL_MS} ms"
                )));
            }
            Holder {
                session_id: 0,
                ttl_ms,
                owner: options.owner.clone(),
            }
        }
        LockHolder::Session(session_id) => {
            if session_id == 0 {
                return Err(Error::invalid_input("session id 0 does not exist"));
            }
            Holder {
                session_id,
                ttl_ms: 0,
                owner: options.owner.clone(),
            }
        }
    };
    let wait_ms = check_wait(options.wait)?;
    let lock_delay_ms = match options.lock_delay {
        None => None,
        Some(delay) => {
            let ms = delay.as_millis() as u64;
            if ms > MAX_LOCK_DELAY_MS {
                return Err(Error::invalid_input(format!(
                    "lock_delay is {ms} ms; the limit is {MAX_LOCK_DELAY_MS} ms"
                )));
            }
            Some(ms)
        }
    };
    Ok((holder, wait_ms, lock_delay_ms))
}

/// A wait in a queue (or at a barrier): at most 5 minutes.
pub(crate) fn check_wait(wait: Duration) -> Result<u64> {
    let wait_ms = wait.as_millis() as u64;
    if wait_ms > MAX_LOCK_WAIT_MS {
        return Err(Error::invalid_input(format!(
            "wait is {wait_ms} ms; the limit is {MAX_LOCK_WAIT_MS} ms"
        )));
    }
    Ok(wait_ms)
}

fn check_lock_verb(name: &str, token: u64) -> Result<()> {
    validate::name("name", name)?;
    if token == 0 {
        return Err(Error::invalid_input(
            "token is 0; give the grant's non-zero fencing token",
        ));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_ELECTION_VALUE_BYTES {
        return Err(Error::invalid_input(format!(
            "value is {} bytes; the limit is {MAX_ELECTION_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// A page cursor and size: `after` empty or a name, `limit` at most 1000.
pub(crate) fn check_page(after: &str, limit: u32) -> Result<()> {
    if !after.is_empty() {
        validate::name("after", after)?;
    }
    if limit > MAX_TASK_LIST_LIMIT {
        return Err(Error::invalid_input(format!(
            "limit is {limit}; a page holds at most {MAX_TASK_LIST_LIMIT}"
        )));
    }
    Ok(())
}

/// A fence, when given: a kind the wire knows, a name, a non-zero token.
pub(crate) fn check_fence(fence: Option<&Fence>) -> Result<()> {
    let Some(fence) = fence else {
        return Ok(());
    };
    if FenceKind::try_from(fence.kind).is_err() {
        return Err(Error::invalid_input(format!(
            "fence.kind {} is not a fence kind",
            fence.kind
        )));
    }
    validate::name("fence.name", &fence.name)?;
    if fence.token == 0 {
        return Err(Error::invalid_input(
            "fence.token is 0; give the grant's non-zero fencing token",
        ));
    }
    Ok(())
}

served_by_header!(
    proto::AcquireResponse,
    proto::ReleaseLockResponse,
    proto::KeepAliveResponse,
    proto::GetLockResponse,
    proto::ListLocksResponse,
    proto::CampaignResponse,
    proto::ProclaimResponse,
    proto::ResignResponse,
    proto::LeaderResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_options_are_checked_naming_the_field() {
        let message = |options: &AcquireOptions| match check_acquire(options) {
            Err(Error::InvalidInput { message }) => message,
            other => panic!("expected invalid input, got {other:?}"),
        };
        assert!(check_acquire(&AcquireOptions::lease(Duration::from_secs(10))).is_ok());
        assert!(message(&AcquireOptions::lease(Duration::from_millis(999))).starts_with("ttl"));
        assert!(message(&AcquireOptions::lease(Duration::from_secs(3601))).starts_with("ttl"));
        assert!(message(
            &AcquireOptions::lease(Duration::from_secs(10)).waiting(Duration::from_secs(301))
        )
        .starts_with("wait"));
        let mut delay = AcquireOptions::lease(Duration::from_secs(10));
        delay.lock_delay = Some(Duration::from_secs(61));
        assert!(message(&delay).starts_with("lock_delay"));
        assert!(message(&AcquireOptions::session(0)).contains("session"));
        let owner = AcquireOptions::session(3).owned_by("o".repeat(129));
        assert!(message(&owner).starts_with("owner"));
        assert_eq!(
            check_acquire(&AcquireOptions::session(3)).expect("valid").0,
            Holder {
                session_id: 3,
                ttl_ms: 0,
                owner: String::new()
            }
        );
    }

    #[test]
    fn fences_are_checked() {
        assert!(check_fence(None).is_ok());
        assert!(check_fence(Some(&fence(LockKind::Lock, "db", 7))).is_ok());
        assert!(check_fence(Some(&fence(LockKind::Lock, "db", 0))).is_err());
        assert!(check_fence(Some(&fence(LockKind::Lock, "has space", 7))).is_err());
        let mut bad_kind = fence(LockKind::Lock, "db", 7);
        bad_kind.kind = 9;
        assert!(check_fence(Some(&bad_kind)).is_err());
        assert_eq!(
            fence(LockKind::Election, "e", 1).kind,
            FenceKind::Election as i32
        );
        assert_eq!(
            fence(LockKind::Semaphore, "s", 1).kind,
            FenceKind::Semaphore as i32
        );
    }

    #[tokio::test]
    async fn local_checks_send_nothing() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        let lease = AcquireOptions::lease(Duration::from_secs(10));
        fn invalid<T>(result: Result<T>) -> bool {
            matches!(result, Err(Error::InvalidInput { .. }))
        }
        assert!(invalid(client.acquire_semaphore("s", 0, 1, &lease).await));
        assert!(invalid(client.acquire_semaphore("s", 2, 3, &lease).await));
        assert!(invalid(
            client.acquire_semaphore("s", 10_001, 1, &lease).await
        ));
        assert!(invalid(client.acquire_lock("", &lease).await));
        assert!(invalid(
            client.release_lock(LockKind::Lock, "l", 0).await.map(drop)
        ));
        assert!(invalid(
            client
                .campaign("e", vec![0; MAX_ELECTION_VALUE_BYTES + 1], &lease)
                .await
        ));
        assert!(invalid(
            client
                .list_locks(
                    LockKind::Lock,
                    LockListOptions {
                        limit: 1001,
                        ..LockListOptions::default()
                    }
                )
                .await
        ));
        assert!(invalid(
            client
                .put_fenced("k", "v", &fence(LockKind::Lock, "l", 0))
                .await
        ));
    }
}
